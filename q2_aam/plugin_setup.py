"""Registration of the q2-aam plugin: types, formats, actions and visualizers.

No torch and no engine import here: QIIME 2 imports every plugin for every command, so the actions import the
engine when they run. (`aam.options`, `aam.record`, `aam.rundir` and `aam.checkpoint` are torch-free at import
time.)

The hyperparameters of pretrain / fit-* / predict-* / embed are not listed here: they are built from the
engine's option table (`aam.options`), the one definition shared with the ``aam`` command line.
"""
import importlib

from qiime2.plugin import (Choices, Citations, List, Metadata, MetadataColumn, Categorical, Numeric,
                           Plugin, Str, Visualization)
from q2_types.distance_matrix import DistanceMatrix
from q2_types.feature_data import FeatureData, Sequence, Taxonomy
from q2_types.feature_table import FeatureTable, Frequency
from q2_types.ordination import PCoAResults
from q2_types.sample_data import SampleData
from q2_types.tree import Phylogeny, Rooted
from q2_sample_classifier import (ClassifierPredictions, Importance, ImportanceDirectoryFormat, Probabilities,
                                  RegressorPredictions)

from aam import options as O

import q2_aam
from q2_aam import _methods, _pipelines, _visualizers
from q2_aam._examples import EXAMPLES
from q2_aam._format import (AAMConfigFormat, AAMHistoryFormat, AAMModelDirFmt, AAMWeightsFormat, PNGFormat,
                            SVGFormat, TensorBoardEventsFormat)
from q2_aam._params import (CLASSIFICATION_ONLY, REGRESSION_ONLY, option_table, parameters_for,
                            q2_render, with_signature)
from q2_aam._type import AAMClassifier, AAMImportance, AAMModel, AAMPretrained, AAMRegressor

citations = Citations.load("citations.bib", package="q2_aam")

plugin = Plugin(
    name="aam",
    version=q2_aam.__version__,
    website="https://github.com/q2-aam/q2-aam",
    package="q2_aam",
    citations=[citations["cantrell2024aam"], citations["paszke2019pytorch"]],
    short_description="Attention All Microbes: transformer models of 16S amplicon data.",
    description=(
        "Pretrain sample embeddings on UniFrac (or any distance matrix) plus masked-nucleotide prediction, "
        "fine-tune regressors and classifiers on sample metadata, and predict for new samples. The model reads "
        "the ASV sequences themselves, so features unseen in training still contribute."
    ),
)

# --- types and formats -------------------------------------------------------------------------------------------
plugin.register_semantic_types(AAMModel, AAMPretrained, AAMRegressor, AAMClassifier, AAMImportance)
plugin.register_formats(AAMModelDirFmt, AAMWeightsFormat, AAMConfigFormat, AAMHistoryFormat, PNGFormat, SVGFormat,
                        TensorBoardEventsFormat)

_ARTIFACT_LAYOUT = (" The artifact holds model.pt (tensors only, loaded with torch.load(weights_only=True)), "
                    "config.json (architecture, data summary, hyperparameters, the seed and device used, "
                    "per-epoch history), history.tsv, the validation figures of the best epoch and the TensorBoard "
                    "logs of the run.")
plugin.register_artifact_class(
    AAMModel[AAMPretrained], AAMModelDirFmt,
    description="A pretrained AAM base model: a transformer over ASV sequences whose sample embeddings were "
                "fit to UniFrac distances (or Faith PD / taxonomy), ready to be fine-tuned." + _ARTIFACT_LAYOUT)
plugin.register_artifact_class(
    AAMModel[AAMRegressor], AAMModelDirFmt,
    description="An AAM model predicting a numeric sample metadata column." + _ARTIFACT_LAYOUT)
plugin.register_artifact_class(
    AAMModel[AAMClassifier], AAMModelDirFmt,
    description="An AAM model predicting a categorical sample metadata column." + _ARTIFACT_LAYOUT)

plugin.register_artifact_class(
    FeatureData[AAMImportance], ImportanceDirectoryFormat,
    description="Permutation importance of the features of an AAM model, one row per feature (a feature group's "
                "figures given to each of its features), every column numeric: the group's rank, the blended "
                "importance with its 95% interval, p-value and q-value, whether it is called important, its "
                "direction, the group's size, whether the training table had the feature, and each ensemble "
                "member's importance. View it with `qiime metadata tabulate` or `qiime aam summarize-importance`.")


def _check_task(data, expected, semantic_type):
    from qiime2.plugin import ValidationError
    task = data.read_record().task
    if task != expected:
        raise ValidationError(f"this model was trained for {task!r}, so it is not an {semantic_type} (which "
                              f"holds a {expected!r} model). Import it as the matching AAMModel type.")


@plugin.register_validator(AAMModel[AAMPretrained])
def validate_pretrained(data: AAMModelDirFmt, level):
    _check_task(data, "pretrain", "AAMModel[AAMPretrained]")


@plugin.register_validator(AAMModel[AAMRegressor])
def validate_regressor(data: AAMModelDirFmt, level):
    _check_task(data, "regression", "AAMModel[AAMRegressor]")


@plugin.register_validator(AAMModel[AAMClassifier])
def validate_classifier(data: AAMModelDirFmt, level):
    _check_task(data, "classification", "AAMModel[AAMClassifier]")


importlib.import_module("q2_aam._transformer")

# --- shared inputs, parameters and their descriptions -----------------------------------------------------------------
_MODEL_ANY = AAMModel[AAMPretrained | AAMRegressor | AAMClassifier]
_C = citations

INPUT_DESCRIPTIONS = {
    "table": "Feature table of read counts (samples x features). Samples are rarefied to --p-rarefy-depth for "
             "training (samples with fewer reads are left out and listed); each feature is read through its DNA "
             "sequence.",
    "new_table": "Feature table of the samples to process (read counts). Samples deeper than the model's training "
                 "rarefaction depth are rarefied to it; features never seen in training are fine.",
    "sequences": "The DNA sequence of each feature. Needed when the feature IDs are not the sequences themselves "
                 "(e.g. MD5 hashes); the model reads these sequences, so unseen features still count.",
    "phylogeny": "Rooted tree whose tips include the table's features. Unweighted UniFrac between the rarefied "
                 "samples is computed from it as the distance target (unless --i-distance-matrix is given), "
                 "and Faith PD for --p-encoder-type faith_pd or combined.",
    "distance_matrix": "Distances between the table's samples (any metric, e.g. weighted UniFrac from "
                       "q2-diversity), used as the distance target instead of UniFrac computed from the "
                       "phylogeny. It must contain every sample of the table.",
    "taxonomy": "Taxonomy of the features, for --p-encoder-type taxonomy or combined (each ASV's name at "
                "--p-taxonomy-level is predicted).",
    "pretrained": "A pretrained base model from `qiime aam pretrain`. Its architecture (and tokenizer) is "
                  "used, so architecture parameters given here are ignored. Without it, the base is trained "
                  "from scratch.",
    "model": "A model trained by q2-aam.",
}
FIT_INPUT_DESCRIPTIONS = {
    **{k: INPUT_DESCRIPTIONS[k] for k in ("table", "sequences", "pretrained")},
    "phylogeny": "Optional rooted tree of the table's features: while the base trains (with "
                 "--p-no-freeze-base, or without --i-pretrained), a UniFrac loss weighted by --p-penalty keeps "
                 "its embeddings faithful to the community distances.",
    "distance_matrix": "Optional distances between the table's samples, used like --i-phylogeny's UniFrac "
                       "(and instead of it).",
}
SAMPLE_METADATA = {
    "pretrain": "Sample metadata holding the --p-group-column (only used for the grouped validation split).",
    "fit": "Sample metadata holding the --p-categorical-columns, the --p-numeric-columns and the "
           "--p-group-column (it may be the same file as the target's metadata).",
    "predict": "Sample metadata holding the model's covariates (only needed when the model was trained with "
               "--p-categorical-columns or --p-numeric-columns; a sample without a value is treated as unknown, or "
               "at the training median, as in training).",
}
FIT_PARAMETERS = {
    "categorical_columns": List[Str],
    "numeric_columns": List[Str],
}
FIT_PARAMETER_DESCRIPTIONS = {
    "categorical_columns": "Names of sample metadata columns (in --m-sample-metadata-file) given to the model "
                           "as categorical covariates, one name per entry (e.g. body-site, sex). Each column "
                           "gets a learned embedding of --p-categorical-embed-dim values; a value never seen in "
                           "training is treated as unknown. The target column cannot be one of them.",
    "numeric_columns": "Names of numeric sample metadata columns (in --m-sample-metadata-file), one name per "
                       "entry. " + q2_render(O.NUMERIC_COLUMNS_HELP),
}


def _register_method(function, command, inputs, outputs, name, description, input_descriptions,
                     output_descriptions, citations, parameters=None, parameter_descriptions=None,
                     exclude_options=()):
    options, option_descriptions, _ = parameters_for(command, exclude_options)
    plugin.methods.register_function(
        function=with_signature(function, option_table(command, exclude_options)),
        inputs=inputs,
        parameters={**(parameters or {}), **options},
        outputs=outputs,
        input_descriptions=input_descriptions,
        parameter_descriptions={**(parameter_descriptions or {}), **option_descriptions},
        output_descriptions=output_descriptions,
        name=name,
        description=description,
        citations=citations,
        examples=EXAMPLES[function.__name__],
    )


# the shipped reference encoder (the default start of every fit) was trained on Greengenes 13_8
_GREENGENES = [_C["mcdonald2012greengenes"], _C["desantis2006greengenes"]]
_FIT_CITATIONS = [_C["cantrell2024aam"], _C["vaswani2017attention"], _C["devlin2019bert"],
                  _C["paszke2019pytorch"], _C["lozupone2005unifrac"], _C["mcdonald2018striped"],
                  _C["mcdonald2012biom"]] + _GREENGENES
# fit-regressor / fit-classifier also train q2-sample-classifier's random forest (the default ensemble)
_TARGET_FIT_CITATIONS = _FIT_CITATIONS + [_C["bokulich2018q2sampleclassifier"]]

# --- methods ---------------------------------------------------------------------------------------------------------
_register_method(
    _methods.pretrain, "pretrain",
    inputs={"table": FeatureTable[Frequency], "sequences": FeatureData[Sequence],
            "phylogeny": Phylogeny[Rooted], "distance_matrix": DistanceMatrix,
            "taxonomy": FeatureData[Taxonomy]},
    parameters={"sample_metadata": Metadata},
    parameter_descriptions={"sample_metadata": SAMPLE_METADATA["pretrain"]},
    outputs=[("model", AAMModel[AAMPretrained])],
    name="Pretrain an AAM base model (self-supervised)",
    description=(
        "Train the base of an Attention All Microbes model without labels. A transformer reads each ASV's "
        "nucleotides, a second one combines a sample's ASVs (weighted by abundance) into a sample embedding. "
        "The base learns to (1) place samples so that distances between embeddings match UniFrac computed from "
        "the phylogeny (or the given distance matrix), and/or to predict Faith PD or each ASV's taxon "
        "(--p-encoder-type), and (2) fill in masked nucleotides. Pass the result to fit-regressor / "
        "fit-classifier with --i-pretrained. Progress per epoch is printed with --verbose; the best epoch by "
        "validation loss is kept."),
    input_descriptions={k: INPUT_DESCRIPTIONS[k] for k in
                        ("table", "sequences", "phylogeny", "distance_matrix", "taxonomy")},
    output_descriptions={"model": "The pretrained base model, with its training history, validation figures "
                                  "and TensorBoard logs (see `qiime aam summarize`)."},
    citations=_FIT_CITATIONS + [_C["faith1992pd"]],
)

_FIT_OUTPUT = {"model": "The trained model (weights of the best validation epoch), with its training history, "
                        "validation figures and TensorBoard logs (see `qiime aam summarize`)."}
_FIT_DESCRIPTION = (
    "Train an Attention All Microbes model to predict {what} from the ASVs of each sample (and optional "
    "categorical covariates). Starting from a pretrained base (--i-pretrained) is recommended: by default it is "
    "kept frozen and only the prediction layers train, which is much faster (--p-no-freeze-base fine-tunes it "
    "too). Samples are split into "
    "training and validation sets (--p-validation-fraction, grouped by --p-group-column so that samples of one "
    "subject stay together); the epoch with the best validation {metric} is kept. By default the model also holds "
    "q2-sample-classifier's random forest fit to the same samples, reading their relative abundances and 20 axes "
    "of the pretrained base's sample embedding (--p-forest-embedding-axes), and blends the two, giving the network "
    "a share only where validation samples clearly favour it (--p-ensemble-share-rule; --p-ensemble none keeps "
    "the network alone). Fails with a clear message "
    "when fewer than 4 samples have a value{extra}. Progress per epoch is printed with --verbose.")

_register_method(
    _methods.fit_regressor, "train",
    inputs={"table": FeatureTable[Frequency], "sequences": FeatureData[Sequence],
            "pretrained": AAMModel[AAMPretrained], "phylogeny": Phylogeny[Rooted],
            "distance_matrix": DistanceMatrix},
    parameters={"metadata": MetadataColumn[Numeric], "sample_metadata": Metadata, **FIT_PARAMETERS},
    parameter_descriptions={"metadata": "Numeric metadata column to predict. Samples without a value are left "
                                        "out (and listed in the model summary).",
                            "sample_metadata": SAMPLE_METADATA["fit"], **FIT_PARAMETER_DESCRIPTIONS},
    exclude_options=CLASSIFICATION_ONLY,
    outputs=[("model", AAMModel[AAMRegressor])],
    name="Train an AAM regressor",
    description=_FIT_DESCRIPTION.format(what="a numeric metadata column", metric="mean absolute error",
                                        extra=""),
    input_descriptions=FIT_INPUT_DESCRIPTIONS,
    output_descriptions=_FIT_OUTPUT,
    citations=_TARGET_FIT_CITATIONS,
)

_register_method(
    _methods.fit_classifier, "train",
    inputs={"table": FeatureTable[Frequency], "sequences": FeatureData[Sequence],
            "pretrained": AAMModel[AAMPretrained], "phylogeny": Phylogeny[Rooted],
            "distance_matrix": DistanceMatrix},
    parameters={"metadata": MetadataColumn[Categorical], "sample_metadata": Metadata, **FIT_PARAMETERS},
    parameter_descriptions={"metadata": "Categorical metadata column to predict (at least 2 classes among the "
                                        "usable samples). Samples without a value are left out.",
                            "sample_metadata": SAMPLE_METADATA["fit"], **FIT_PARAMETER_DESCRIPTIONS},
    exclude_options=REGRESSION_ONLY,
    outputs=[("model", AAMModel[AAMClassifier])],
    name="Train an AAM classifier",
    description=_FIT_DESCRIPTION.format(what="a categorical metadata column", metric="accuracy",
                                        extra=" or only one class occurs"),
    input_descriptions=FIT_INPUT_DESCRIPTIONS,
    output_descriptions=_FIT_OUTPUT,
    citations=_TARGET_FIT_CITATIONS,
)

_PREDICT_CITATIONS = [_C["cantrell2024aam"], _C["paszke2019pytorch"], _C["bokulich2018q2sampleclassifier"]]
_PREDICT_DESCRIPTION = (
    "Predict the target of a trained AAM {kind} for every sample of a table that has reads. The table may "
    "hold features the model never saw: the model reads their sequences. Samples deeper than the training "
    "rarefaction depth are rarefied to it (seeded by --p-seed). The output is the same type q2-sample-classifier "
    "writes, so its visualizers ({viz}) and `--m-metadata-file` work on it.")

_register_method(
    _methods.predict_regression, "predict",
    inputs={"model": AAMModel[AAMRegressor], "table": FeatureTable[Frequency],
            "sequences": FeatureData[Sequence]},
    parameters={"sample_metadata": Metadata},
    parameter_descriptions={"sample_metadata": SAMPLE_METADATA["predict"]},
    outputs=[("predictions", SampleData[RegressorPredictions])],
    name="Predict a numeric column with an AAM regressor",
    description=_PREDICT_DESCRIPTION.format(kind="regressor", viz="scatterplot"),
    input_descriptions={"model": "A regressor from `qiime aam fit-regressor`.",
                        "table": INPUT_DESCRIPTIONS["new_table"], "sequences": INPUT_DESCRIPTIONS["sequences"]},
    output_descriptions={"predictions": "The predicted value of each sample, in the target's units."},
    citations=_PREDICT_CITATIONS,
)

_register_method(
    _methods.predict_classification, "predict",
    inputs={"model": AAMModel[AAMClassifier], "table": FeatureTable[Frequency],
            "sequences": FeatureData[Sequence]},
    parameters={"sample_metadata": Metadata},
    parameter_descriptions={"sample_metadata": SAMPLE_METADATA["predict"]},
    outputs=[("predictions", SampleData[ClassifierPredictions]), ("probabilities", SampleData[Probabilities])],
    name="Predict a categorical column with an AAM classifier",
    description=_PREDICT_DESCRIPTION.format(kind="classifier", viz="confusion-matrix"),
    input_descriptions={"model": "A classifier from `qiime aam fit-classifier`.",
                        "table": INPUT_DESCRIPTIONS["new_table"], "sequences": INPUT_DESCRIPTIONS["sequences"]},
    output_descriptions={"predictions": "The most probable class of each sample.",
                         "probabilities": "The probability of every class for each sample (one column per "
                                          "class)."},
    citations=_PREDICT_CITATIONS,
)

_register_method(
    _methods.embed, "predict",
    inputs={"model": _MODEL_ANY, "table": FeatureTable[Frequency], "sequences": FeatureData[Sequence]},
    outputs=[("embedding", PCoAResults), ("distance_matrix", DistanceMatrix)],
    name="Embed samples with an AAM model",
    description=(
        "Compute the sample embeddings of any AAM model (pretrained, regressor or classifier) for the samples "
        "of a table that have reads. The embeddings are returned as principal coordinates (a PCA of the "
        "centered embeddings, i.e. a PCoA of their Euclidean distances) for `qiime emperor plot` and other "
        "ordination tools, together with the distances between samples the model predicts (for a "
        "UniFrac-pretrained base these approximate UniFrac)."),
    input_descriptions={"model": "Any model trained by q2-aam (pretrained base, regressor or classifier): its base "
                                 "embeds the samples.",
                        "table": INPUT_DESCRIPTIONS["new_table"],
                        "sequences": INPUT_DESCRIPTIONS["sequences"]},
    output_descriptions={"embedding": "Principal coordinates of the sample embeddings.",
                         "distance_matrix": "Pairwise distances between the samples' embeddings in the model's "
                                            "distance space."},
    citations=[_C["cantrell2024aam"], _C["paszke2019pytorch"]],
)

_register_method(
    _methods.embed_features, "predict",
    inputs={"sequences": FeatureData[Sequence], "model": _MODEL_ANY},
    parameters={"asv_encoder": Str % Choices([c for c in O.BY_NAME["asv_encoder"].choices if c != "none"])},
    parameter_descriptions={"asv_encoder": "The reference encoder that embeds the sequences when no --i-model is "
                                           "given (see `qiime aam pretrain --help`, --p-asv-encoder)."},
    exclude_options=("rarefaction_draws", "asv_dedup", "seed"),
    outputs=[("embedding", PCoAResults)],
    name="Embed ASV sequences (per-feature embeddings)",
    description=(
        "Place each feature (ASV) in the sequence space of an AAM model's nucleotide-level encoder, or of the "
        "reference encoder shipped with q2-aam when no model is given: similar sequences land near each other, "
        "so an ordination colored by taxonomy (`qiime emperor plot` with the taxonomy as feature metadata) shows "
        "what the encoder has learned. The embeddings are returned as principal coordinates of the features."),
    input_descriptions={"sequences": "The DNA sequence of each feature to embed.",
                        "model": "Optional: any model trained by q2-aam, whose own nucleotide-level encoder embeds "
                                 "the sequences."},
    output_descriptions={"embedding": "Principal coordinates of the feature embeddings (one point per feature)."},
    citations=[_C["cantrell2024aam"], _C["paszke2019pytorch"]] + _GREENGENES,
)

# --- visualizers -----------------------------------------------------------------------------------------------------
plugin.visualizers.register_function(
    function=_visualizers.summarize,
    inputs={"model": _MODEL_ANY},
    parameters={},
    input_descriptions={"model": "A model trained by q2-aam (pretrained base, regressor or classifier); its "
                                 "training record is what the card shows."},
    parameter_descriptions={},
    name="Summarize an AAM model (model card)",
    description=(
        "A model card: what the model predicts, the data it was trained on (samples, features, rarefaction "
        "depth, training/validation split), its hyperparameters (changed ones marked), the seed and device "
        "actually used, training curves of every loss and metric, the best epoch, the validation figure at the "
        "best epoch, and the training history (TSV) and TensorBoard logs to download."),
    citations=[_C["cantrell2024aam"]],
    examples=EXAMPLES["summarize"],
)

plugin.visualizers.register_function(
    function=_visualizers.evaluate,
    inputs={"predictions": SampleData[RegressorPredictions | ClassifierPredictions],
            "probabilities": SampleData[Probabilities],
            "other_predictions": SampleData[RegressorPredictions | ClassifierPredictions],
            "other_probabilities": SampleData[Probabilities]},
    parameters={"truth": MetadataColumn[Numeric | Categorical], "name": Str, "other_name": Str,
                "missing_samples": Str % Choices(["error", "ignore"]), "group": MetadataColumn[Categorical],
                "folds": MetadataColumn[Categorical]},
    input_descriptions={
        "predictions": "Predictions to evaluate (from q2-aam or any other tool writing these types, e.g. "
                       "q2-sample-classifier).",
        "probabilities": "Class probabilities belonging to --i-predictions (classification only; adds log loss "
                         "and, for two classes, ROC AUC).",
        "other_predictions": "A second set of predictions of the same column, e.g. from q2-sample-classifier, "
                             "shown side by side; both are scored on the samples they share.",
        "other_probabilities": "Class probabilities belonging to --i-other-predictions.",
    },
    parameter_descriptions={
        "truth": "The true values: a numeric column for regression predictions (metrics: MAE, RMSE, R², "
                 "Pearson r; predicted-vs-actual scatter with the fit and the 1:1 line) or a categorical column "
                 "for class predictions (accuracy, balanced accuracy, macro F1; confusion matrix). Samples "
                 "without a value are left out.",
        "name": "Label of --i-predictions in tables and figures.",
        "other_name": "Label of --i-other-predictions in tables and figures.",
        "missing_samples": "What to do with predicted samples that are not in the metadata: 'error' stops "
                           "with their IDs, 'ignore' leaves them out.",
        "group": "The group (subject, house) of each sample: the 95% intervals resample whole groups, since "
                 "samples of one subject are not independent (without it, samples are resampled one by one).",
        "folds": "For out-of-fold predictions of a cross-validation: the fold of each sample. Adds every model's "
                 "metrics on each fold (table and figure), and ROC AUC / AUPRC become the mean over folds, since "
                 "probabilities of models fit to different folds are not on one scale.",
    },
    name="Evaluate predictions against the truth",
    description=(
        "Compare predictions with the true values of a metadata column: a metrics table with 95% bootstrap "
        "intervals (over subjects when a group column is given) and a predicted-vs-actual scatter "
        "(regression) or confusion matrix (classification), for one model or two side by side; two models get "
        "a paired comparison (the difference of each metric with its interval, and a permutation p-value). "
        "Figures are provided as PNG and SVG; the metrics, intervals and per-sample values as TSV."),
    citations=[_C["cantrell2024aam"], _C["bokulich2018q2sampleclassifier"]],
    examples=EXAMPLES["evaluate"],
)

# --- pipelines: cross-validation in one command --------------------------------------------------------------------
_CV_DESCRIPTION = (
    "Cross-validate an Attention All Microbes {kind} of {what} in one command, beside q2-sample-classifier's random "
    "forest: grouped (--p-group-column: no subject on both sides of a fold), {stratified}k-fold cross-validation "
    "(--p-cv). In each fold AAM is fit to the training folds only, exactly as fit-{action} fits it (any "
    "--i-phylogeny or --i-distance-matrix loss is computed on the training samples alone), and the forest "
    "(--p-forest-trees trees on relative abundances, as q2-sample-classifier's) on the same samples; both predict "
    "the held-out fold. Outputs: the out-of-fold AAM predictions of every sample (q2-sample-classifier's types, so "
    "its {viz} work on them), the final model fit to every sample by fit-{action} with the same options, and a "
    "visualization by `qiime aam evaluate` of both models' out-of-fold predictions: every metric with its 95% "
    "interval (resampling whole groups), their paired comparison, and every fold's scores. Feature importance is "
    "measured out of fold: in each fold, the AAM model fit to the other folds predicts the held-out samples again "
    "with each feature group (a taxon at --p-rank with --i-taxonomy, else correlated features) permuted "
    "--p-repeats times, and the increases of every sample's loss are pooled over the folds into one importance "
    "per group with its 95% interval and q-value, as `qiime aam feature-importance` reports it (it adds about "
    "--p-top x --p-repeats prediction passes of a fold's held-out samples to each fold; the estimate is printed). "
    "Progress is printed per fold with --verbose. Each finished fold is kept in the user's cache until the run "
    "completes, so an interrupted run started again with the same inputs and options resumes after its last "
    "finished fold.")
_CV_OUTPUT_DESCRIPTIONS = {
    "predictions": "The out-of-fold prediction of every sample: made by the AAM model fit to the other folds.",
    "probabilities": "The out-of-fold probability of every class for each sample (AAM).",
    "model": "The final model: fit-{action} on every sample with the same options.",
    "visualization": "Both models' out-of-fold predictions evaluated (`qiime aam evaluate`): metrics with 95% "
                     "intervals, the paired comparison AAM against the random forest, per-fold scores, figures.",
    "feature_importance": "AAM's out-of-fold importance of each measured feature (its group's, blended over the "
                          "ensemble's members): the one column q2-sample-classifier's `heatmap` ranks features by.",
    "importance_details": "Every figure of the out-of-fold importance of each measured feature, as `qiime aam "
                          "feature-importance` gives them: its group's rank, importance with its 95% interval over "
                          "groups, p-value and q-value, direction, size, whether a fold's training table lacked it, "
                          "and each ensemble member's importance.",
    "importance_visualization": "The out-of-fold importance drawn (`qiime aam summarize-importance`): groups ranked "
                                "with their taxonomy, intervals, direction and the ensemble's members.",
}


def _register_pipeline(function, classifier):
    action = "classifier" if classifier else "regressor"
    exclude = REGRESSION_ONLY if classifier else CLASSIFICATION_ONLY
    options, option_descriptions, _ = parameters_for("train", exclude)
    cv_options, cv_descriptions, _ = parameters_for(O.CROSSVAL)
    outputs = ([("predictions", SampleData[ClassifierPredictions]), ("probabilities", SampleData[Probabilities]),
                ("model", AAMModel[AAMClassifier])] if classifier else
               [("predictions", SampleData[RegressorPredictions]), ("model", AAMModel[AAMRegressor])])
    outputs += [("visualization", Visualization), ("feature_importance", FeatureData[Importance]),
                ("importance_details", FeatureData[AAMImportance]), ("importance_visualization", Visualization)]
    target = (MetadataColumn[Categorical], "Categorical metadata column to predict (at least 2 classes, each with "
              "at least --p-cv samples and groups). Samples without a value are left out.") if classifier else \
        (MetadataColumn[Numeric], "Numeric metadata column to predict. Samples without a value are left out.")
    plugin.pipelines.register_function(
        function=with_signature(getattr(_pipelines, function),
                                option_table(O.CROSSVAL) + option_table("train", exclude), annotate=False),
        inputs={"table": FeatureTable[Frequency], "sequences": FeatureData[Sequence],
                "phylogeny": Phylogeny[Rooted], "distance_matrix": DistanceMatrix, "taxonomy": FeatureData[Taxonomy]},
        parameters={"metadata": target[0], "sample_metadata": Metadata, **FIT_PARAMETERS, **cv_options, **options},
        outputs=outputs,
        input_descriptions={**{k: v for k, v in FIT_INPUT_DESCRIPTIONS.items() if k != "pretrained"},
                            "taxonomy": "Taxonomy of every feature of the table: the out-of-fold feature importance "
                                        "groups features by their taxon at --p-rank and labels them with it. Without "
                                        "it, features whose abundances correlate above --p-correlation form the "
                                        "groups."},
        parameter_descriptions={"metadata": target[1], "sample_metadata": SAMPLE_METADATA["fit"],
                                **FIT_PARAMETER_DESCRIPTIONS, **cv_descriptions, **option_descriptions},
        output_descriptions={k: v.format(action=action) for k, v in _CV_OUTPUT_DESCRIPTIONS.items()
                             if k in dict(outputs)},
        name=f"Cross-validate an AAM {action} beside a random forest",
        description=_CV_DESCRIPTION.format(
            kind=action, what="a categorical metadata column" if classifier else "a numeric metadata column",
            stratified="class-balanced " if classifier else "", action=action,
            viz="confusion-matrix" if classifier else "scatterplot"),
        citations=_TARGET_FIT_CITATIONS,
        examples=EXAMPLES[function],
    )


_register_pipeline("classify_samples", classifier=True)
_register_pipeline("regress_samples", classifier=False)
# --- feature importance (a pipeline: two artifacts and their page) ----------------------------------------------------
_importance = importlib.import_module("q2_aam._importance")
_IMPORTANCE_OPTIONS, _IMPORTANCE_OPTION_DESCRIPTIONS, _ = parameters_for("predict")
_GROUP_OPTIONS, _GROUP_OPTION_DESCRIPTIONS, _ = parameters_for(O.IMPORTANCE)

plugin.pipelines.register_function(
    function=with_signature(_importance.feature_importance, option_table(O.IMPORTANCE) + option_table("predict"),
                            annotate=False),
    inputs={"model": AAMModel[AAMRegressor | AAMClassifier], "table": FeatureTable[Frequency],
            "sequences": FeatureData[Sequence], "taxonomy": FeatureData[Taxonomy]},
    parameters={"metadata": Metadata, "group_column": Str, **_GROUP_OPTIONS, **_IMPORTANCE_OPTIONS},
    outputs=[("importance", FeatureData[Importance]), ("details", FeatureData[AAMImportance]),
             ("visualization", Visualization)],
    input_descriptions={
        "model": "A regressor or classifier from `qiime aam fit-regressor` / `fit-classifier`.",
        "table": "Feature table of labelled samples to measure on (read counts). Use samples the model did not "
                 "train on: a model that memorized its training samples loses accuracy on them whatever is "
                 "permuted.",
        "sequences": INPUT_DESCRIPTIONS["sequences"],
        "taxonomy": "Taxonomy of every feature of the table: features are grouped by their taxon at --p-rank and "
                    "groups are labelled with it. Without it, features whose abundances correlate above "
                    "--p-correlation form the groups."},
    parameter_descriptions={
        "metadata": "Sample metadata holding the model's target column (the true values; samples without one are "
                    "left out), its categorical covariates if it has any, and --p-group-column.",
        "group_column": "A column of --m-metadata-file (e.g. subject) whose groups of samples the intervals and "
                        "tests resample whole, since samples of one subject are not independent.",
        **_GROUP_OPTION_DESCRIPTIONS, **_IMPORTANCE_OPTION_DESCRIPTIONS},
    output_descriptions={
        "importance": "The blended model's importance of each measured feature (its group's), the one column "
                      "q2-sample-classifier's `heatmap` ranks features by.",
        "details": "Every figure of each measured feature: its group's rank, importance with its 95% interval, "
                   "p-value and q-value, direction, size, whether the training table had the feature, and each "
                   "ensemble member's importance.",
        "visualization": "The groups ranked, with their taxonomy, intervals, direction, the ensemble's members "
                         "beside the blend, and the features the training table never had."},
    name="Which features drive a model's predictions (permutation importance)",
    description=(
        "Permutation importance of feature groups for a fitted AAM model on labelled samples: the abundances of "
        "a group (a taxon at --p-rank, or correlated features) are permuted across samples --p-repeats times and "
        "the increase of the loss (absolute error, or log loss of the true class) is averaged, for the blended "
        "prediction and for each member of the ensemble. Each group gets a 95% bootstrap interval, a "
        "one-sided p-value corrected over groups (Benjamini-Hochberg) and a direction (which way the prediction, "
        "or which class, moves with its abundance). Cost: groups x repeats prediction passes, each encoding "
        "nothing again; the estimate is printed before it starts (--verbose shows it). Each finished group is "
        "kept in the user's cache until the run completes, so the same command after an interruption measures "
        "only the groups left. The importance output works with `qiime sample-classifier heatmap`."),
    citations=[_C["cantrell2024aam"], _C["bokulich2018q2sampleclassifier"]],
    examples=EXAMPLES["feature_importance"],
)

plugin.visualizers.register_function(
    function=_importance.summarize_importance,
    inputs={"details": FeatureData[AAMImportance], "taxonomy": FeatureData[Taxonomy]},
    parameters={},
    input_descriptions={"details": "The details output of `qiime aam feature-importance`.",
                        "taxonomy": "Taxonomy of the features, to label each group with the lineage its features "
                                    "share."},
    parameter_descriptions={},
    name="Summarize feature importance",
    description=(
        "The page of `qiime aam feature-importance`: its groups ranked by the blended importance with their 95% "
        "intervals, q-values and directions, each ensemble member beside the blend, and the features the model's "
        "training table never had; the tables as TSV."),
    citations=[_C["cantrell2024aam"]],
    examples=EXAMPLES["summarize_importance"],
)
