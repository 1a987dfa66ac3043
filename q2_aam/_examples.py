"""Usage examples of every q2-aam action (QIIME 2 Usage API).

They show in ``qiime aam <action> --help``, ``--example-data`` writes their inputs, the test suite executes them,
and q2galaxy turns each of them into the Galaxy test of its tool. A Galaxy test runs one tool, so every example
runs exactly one action: inputs that other actions make (a trained model, predictions) come from
``use.init_artifact`` factories that build them with this plugin's own actions at the tiny settings below. Building
them instead of bundling model files keeps the examples valid whatever the model format becomes.

The data are the Moving Pictures tutorial files bundled inside the package (``q2_aam/assets/example-data``), so
the examples never need the network or a particular working directory. The models the examples train are short
runs (two epochs, few ASVs per sample) on top of the shipped, frozen reference encoder, so each runs in seconds on
a CPU; real models keep the defaults.
"""
import functools
import os

import qiime2

EXAMPLE_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "example-data")
DAYS = "days-since-experiment-start"

#: short runs: each example trains in a few seconds on one CPU thread (the settings a reader sees). The
#: nucleotide level is the shipped reference encoder, kept frozen (the defaults), so only the sample level trains.
TINY = dict(token_limit=32, batch_size=8, epochs=2, num_threads=1)
#: the models the input factories build: one epoch (nobody reads these settings)
FACTORY_TINY = dict(token_limit=16, batch_size=8, epochs=1, num_threads=1)
# architecture options come from a pretrained base when there is one
_ARCHITECTURE = ("embedding_dim", "attention_heads", "attention_layers", "token_limit", "max_bp")
_TINY_NOTE = ("The short settings (--p-epochs 2, --p-token-limit 32) make this example run in seconds; leave them "
              "at their defaults for real models.")
# q2galaxy writes a comment as a reStructuredText line block; the blank line this newline leaves after it ends
# the block (without it `planemo lint` warns HelpInvalidRST). q2cli re-wraps comments, so it does not show there.
_END = "\n"


def example_path(name):
    """Absolute path of a bundled example file."""
    return os.path.join(EXAMPLE_DATA, name)


def _artifact(name):
    def factory():
        return qiime2.Artifact.load(example_path(name))
    return factory


def _metadata():
    return qiime2.Metadata.load(example_path("sample-metadata.tsv"))


# --- inputs built by this plugin's actions (one build per process, shared by every example that needs it) ---------

@functools.lru_cache(maxsize=None)
def example_inputs():
    """The bundled example data, loaded: table, sequences, phylogeny (artifacts) and metadata."""
    return {"table": qiime2.Artifact.load(example_path("table.qza")),
            "sequences": qiime2.Artifact.load(example_path("rep-seqs.qza")),
            "phylogeny": qiime2.Artifact.load(example_path("rooted-tree.qza")),
            "metadata": _metadata()}


def _plugin(name):
    import importlib
    return importlib.import_module(f"qiime2.plugins.{name}")


@functools.lru_cache(maxsize=None)
def tiny_model(kind):
    """A tiny model built with this plugin's actions: 'pretrained', 'regressor' (days since the experiment
    started) or 'classifier' (body site). Seeded, so every build is the same; seconds on one CPU thread."""
    aam, d = _plugin("aam"), example_inputs()
    common = dict(table=d["table"], sequences=d["sequences"], **FACTORY_TINY)
    if kind == "pretrained":
        model, = aam.methods.pretrain(phylogeny=d["phylogeny"], **common)
    elif kind == "regressor":
        model, = aam.methods.fit_regressor(metadata=d["metadata"].get_column(DAYS), **common)
    elif kind == "classifier":
        model, = aam.methods.fit_classifier(metadata=d["metadata"].get_column("body-site"), **common)
    else:
        raise ValueError(f"unknown tiny model {kind!r}: 'pretrained', 'regressor' or 'classifier'")
    return model


@functools.lru_cache(maxsize=None)
def tiny_regression_predictions():
    """The tiny regressor's predictions for the samples it was trained on."""
    d = example_inputs()
    predictions, = _plugin("aam").methods.predict_regression(model=tiny_model("regressor"), table=d["table"],
                                                             sequences=d["sequences"], num_threads=1)
    return predictions


@functools.lru_cache(maxsize=None)
def held_out_regression_predictions():
    """Predictions of days since the experiment started for a held-out quarter of the samples, by a tiny AAM
    regressor and by q2-sample-classifier's random forest, both trained on the other samples."""
    aam, sample_classifier, d = _plugin("aam"), _plugin("sample_classifier"), example_inputs()
    days = d["metadata"].get_column(DAYS)
    training, test, _, _ = sample_classifier.methods.split_table(table=d["table"], metadata=days, test_size=0.25,
                                                                random_state=0, stratify=False)
    model, = aam.methods.fit_regressor(table=training, metadata=days, sequences=d["sequences"], **FACTORY_TINY)
    aam_predictions, = aam.methods.predict_regression(model=model, table=test, sequences=d["sequences"],
                                                      num_threads=1)
    forest, _ = sample_classifier.methods.fit_regressor(table=training, metadata=days, n_estimators=20,
                                                        random_state=0, n_jobs=1)
    rf_predictions, = sample_classifier.methods.predict_regression(table=test, sample_estimator=forest, n_jobs=1)
    return {"aam": aam_predictions, "random_forest": rf_predictions}


# --- shared steps of the examples ----------------------------------------------------------------------------------

def _inputs(use):
    table = use.init_artifact("table", _artifact("table.qza"))
    sequences = use.init_artifact("rep_seqs", _artifact("rep-seqs.qza"))
    return table, sequences


def _model_input(use, name, kind):
    return use.init_artifact(name, lambda: tiny_model(kind))


def _aam(use, action, inputs, outputs):
    return use.action(use.UsageAction(plugin_id="aam", action_id=action), use.UsageInputs(**inputs),
                      use.UsageOutputNames(**outputs))


def _days(use):
    md = use.init_metadata("sample_metadata", _metadata)
    return md, use.get_metadata_column("days", DAYS, md)


# --- the examples ----------------------------------------------------------------------------------------------------

def pretrain_unifrac(use):
    use.comment("Pretrain a base model whose sample embeddings reproduce the unweighted UniFrac distances "
                "computed from the tree, while it learns to fill in masked nucleotides of the ASV sequences. "
                + _TINY_NOTE + _END)
    table, sequences = _inputs(use)
    tree = use.init_artifact("rooted_tree", _artifact("rooted-tree.qza"))
    model, = _aam(use, "pretrain", dict(table=table, sequences=sequences, phylogeny=tree, **TINY),
                  dict(model="pretrained_model"))
    model.assert_output_type("AAMModel[AAMPretrained]")


def fit_regressor_pretrained(use):
    use.comment("Fine-tune a pretrained base (from `qiime aam pretrain`) to predict a numeric column, keeping the "
                "base frozen (only the prediction layers learn), giving the model each sample's body site as a "
                "categorical covariate, and keeping each subject's samples on one side of the validation split. "
                + _TINY_NOTE + _END)
    table, sequences = _inputs(use)
    pretrained = _model_input(use, "pretrained_model", "pretrained")
    md, days = _days(use)
    model, = _aam(use, "fit_regressor",
                  dict(table=table, metadata=days, sequences=sequences, pretrained=pretrained, freeze_base=True,
                       sample_metadata=md, categorical_columns=["body-site"], group_column="subject",
                       **{k: v for k, v in TINY.items() if k not in _ARCHITECTURE}),
                  dict(model="regressor"))
    model.assert_output_type("AAMModel[AAMRegressor]")


def fit_classifier_body_site(use):
    use.comment("Train a classifier of body site from scratch (no pretrained base). " + _TINY_NOTE + _END)
    table, sequences = _inputs(use)
    md = use.init_metadata("sample_metadata", _metadata)
    body_site = use.get_metadata_column("body_site", "body-site", md)
    model, = _aam(use, "fit_classifier", dict(table=table, metadata=body_site, sequences=sequences, **TINY),
                  dict(model="classifier"))
    model.assert_output_type("AAMModel[AAMClassifier]")


def predict_regression_days(use):
    use.comment("Predict the target of a regressor (from `qiime aam fit-regressor`) for the samples of a table "
                "(here the table it was trained on; in practice, new samples)." + _END)
    table, sequences = _inputs(use)
    model = _model_input(use, "regressor", "regressor")
    predictions, = _aam(use, "predict_regression", dict(model=model, table=table, sequences=sequences,
                                                        num_threads=1),
                        dict(predictions="predictions"))
    predictions.assert_output_type("SampleData[RegressorPredictions]")


def predict_classification_body_site(use):
    use.comment("Predict the class of each sample with a classifier (from `qiime aam fit-classifier`), and the "
                "probability of every class." + _END)
    table, sequences = _inputs(use)
    model = _model_input(use, "classifier", "classifier")
    predictions, probabilities = _aam(use, "predict_classification",
                                      dict(model=model, table=table, sequences=sequences, num_threads=1),
                                      dict(predictions="predictions", probabilities="probabilities"))
    predictions.assert_output_type("SampleData[ClassifierPredictions]")
    probabilities.assert_output_type("SampleData[Probabilities]")


def embed_pretrained(use):
    use.comment("Embed samples with a pretrained model: a PCoA of the embeddings (view it with `qiime emperor "
                "plot`) and the distances between samples the model predicts." + _END)
    table, sequences = _inputs(use)
    model = _model_input(use, "pretrained_model", "pretrained")
    embedding, distances = _aam(use, "embed", dict(model=model, table=table, sequences=sequences,
                                                   num_threads=1),
                                dict(embedding="embedding", distance_matrix="distance_matrix"))
    embedding.assert_output_type("PCoAResults")
    distances.assert_output_type("DistanceMatrix")


def summarize_regressor(use):
    use.comment("A model card of a regressor: data, hyperparameters, training curves, validation at the best "
                "epoch, and the history and TensorBoard logs for download." + _END)
    model = _model_input(use, "regressor", "regressor")
    _aam(use, "summarize", dict(model=model), dict(visualization="model_summary"))


def evaluate_regression(use):
    use.comment("Compare a regressor's predictions (from `qiime aam predict-regression`) with the true values "
                "of the column." + _END)
    predictions = use.init_artifact("predictions", tiny_regression_predictions)
    _, days = _days(use)
    _aam(use, "evaluate", dict(predictions=predictions, truth=days), dict(visualization="evaluation"))


def evaluate_against_sample_classifier(use):
    use.comment("Compare AAM with q2-sample-classifier's random forest on held-out samples: `qiime "
                "sample-classifier split-table` set a quarter of the samples aside, an AAM regressor and a random "
                "forest were trained on the rest, and both predicted the held-out samples (`qiime aam "
                "predict-regression`, `qiime sample-classifier predict-regression`)." + _END)
    aam_predictions = use.init_artifact("aam_predictions", lambda: held_out_regression_predictions()["aam"])
    rf_predictions = use.init_artifact("rf_predictions",
                                       lambda: held_out_regression_predictions()["random_forest"])
    _, days = _days(use)
    _aam(use, "evaluate", dict(predictions=aam_predictions, truth=days, other_predictions=rf_predictions,
                               name="AAM", other_name="random forest"),
         dict(visualization="comparison"))


def embed_features_reference(use):
    use.comment("Place every ASV in the sequence space of the reference encoder shipped with q2-aam (pretrained on "
                "Greengenes 13_8 V4 amplicons); color the ordination by taxonomy with `qiime emperor plot`." + _END)
    sequences = use.init_artifact("rep_seqs", _artifact("rep-seqs.qza"))
    embedding, = _aam(use, "embed_features", dict(sequences=sequences, num_threads=1),
                      dict(embedding="feature_embedding"))
    embedding.assert_output_type("PCoAResults")


_CV_NOTE = ("Moving Pictures has two subjects only, too few for folds grouped by subject; on a study with several, "
            "add --p-group-column subject with --m-sample-metadata-file so that no subject is on both sides of a "
            "fold. " + _TINY_NOTE + " (--p-forest-trees 50, --p-top 8 and --p-repeats 2 too: the defaults are 500, "
            "20 and 3.)")
#: the cross-validation examples: two folds of the short runs, the comparison forest smaller, the importance of a
#: few groups (defaults: 20 groups, 3 permutations)
_CV_TINY = dict(cv=2, forest_trees=50, top=8, repeats=2, **TINY)
_CV_IMPORTANCE_OUTPUTS = dict(feature_importance="importance", importance_details="importance_details",
                              importance_visualization="importance_summary")


def classify_samples_body_site(use):
    use.comment("Cross-validate a body-site classifier beside q2-sample-classifier's random forest: every sample "
                "is predicted by the models fit to the other folds; the final model is fit to every sample; the "
                "importance of feature groups is measured in every fold on its held-out samples. " + _CV_NOTE + _END)
    table, sequences = _inputs(use)
    md = use.init_metadata("sample_metadata", _metadata)
    body_site = use.get_metadata_column("body_site", "body-site", md)
    predictions, probabilities, model, _, importance, _, _ = _aam(
        use, "classify_samples", dict(table=table, metadata=body_site, sequences=sequences, **_CV_TINY),
        dict(predictions="predictions", probabilities="probabilities", model="classifier",
             visualization="cross_validation", **_CV_IMPORTANCE_OUTPUTS))
    importance.assert_output_type("FeatureData[Importance]")
    predictions.assert_output_type("SampleData[ClassifierPredictions]")
    probabilities.assert_output_type("SampleData[Probabilities]")
    model.assert_output_type("AAMModel[AAMClassifier]")


def regress_samples_days(use):
    use.comment("Cross-validate a regressor of the days since the experiment started beside q2-sample-classifier's "
                "random forest. " + _CV_NOTE + _END)
    table, sequences = _inputs(use)
    _, days = _days(use)
    predictions, model, _, _, details, _ = _aam(
        use, "regress_samples", dict(table=table, metadata=days, sequences=sequences, **_CV_TINY),
        dict(predictions="predictions", model="regressor", visualization="cross_validation",
             **_CV_IMPORTANCE_OUTPUTS))
    details.assert_output_type("FeatureData[AAMImportance]")
    predictions.assert_output_type("SampleData[RegressorPredictions]")
    model.assert_output_type("AAMModel[AAMRegressor]")
# --- feature importance ----------------------------------------------------------------------------------------------
#: settings of the importance examples: few groups and permutations, so they run in seconds (defaults: 50 and 5)
IMPORTANCE_TINY = dict(top=8, repeats=2, num_threads=1)


@functools.lru_cache(maxsize=None)
def classified_table():
    """The example table without the 36 features the bundled taxonomy does not classify (importance grouped by
    taxon needs a lineage for every feature), as `qiime feature-table filter-features` would make it."""
    import pandas as pd
    taxonomy = qiime2.Artifact.load(example_path("taxonomy.qza")).view(pd.DataFrame)
    filtered, = _plugin("feature_table").methods.filter_features(
        table=example_inputs()["table"], metadata=qiime2.Metadata(taxonomy[["Taxon"]]))
    return filtered


@functools.lru_cache(maxsize=None)
def tiny_importance():
    """The tiny body-site classifier's feature importance by genus (the three outputs of feature-importance)."""
    d = example_inputs()
    return _plugin("aam").pipelines.feature_importance(
        model=tiny_model("classifier"), table=classified_table(), sequences=d["sequences"],
        taxonomy=qiime2.Artifact.load(example_path("taxonomy.qza")), metadata=d["metadata"], **IMPORTANCE_TINY)


def feature_importance_body_site(use):
    use.comment("Which genera a body-site classifier (from `qiime aam fit-classifier`) relies on: each genus's "
                "abundances are permuted across the samples and the loss of accuracy measured, with a 95% "
                "interval, a q-value and the body site it favours. The table holds the features the taxonomy "
                "classifies (`qiime feature-table filter-features`). Measure on samples the model did not train "
                "on (here, to stay short, its own); --p-top 8 --p-repeats 2 keep the example to seconds (defaults "
                "50 and 5)." + _END)
    table = use.init_artifact("classified_table", classified_table)
    sequences = use.init_artifact("rep_seqs", _artifact("rep-seqs.qza"))
    taxonomy = use.init_artifact("taxonomy", _artifact("taxonomy.qza"))
    model = _model_input(use, "classifier", "classifier")
    md = use.init_metadata("sample_metadata", _metadata)
    importance, details, _ = _aam(use, "feature_importance",
                                  dict(model=model, table=table, sequences=sequences, taxonomy=taxonomy,
                                       metadata=md, rank="genus", **IMPORTANCE_TINY),
                                  dict(importance="importance", details="importance_details",
                                       visualization="importance_summary"))
    importance.assert_output_type("FeatureData[Importance]")
    details.assert_output_type("FeatureData[AAMImportance]")


def summarize_importance_genera(use):
    use.comment("Draw again the page of the details `qiime aam feature-importance` wrote, its groups labelled "
                "with the taxonomy." + _END)
    details = use.init_artifact("importance_details", lambda: tiny_importance()[1])
    taxonomy = use.init_artifact("taxonomy", _artifact("taxonomy.qza"))
    _aam(use, "summarize_importance", dict(details=details, taxonomy=taxonomy),
         dict(visualization="importance_summary"))


EXAMPLES = {
    "pretrain": {"pretrain_unifrac": pretrain_unifrac},
    "fit_regressor": {"fit_regressor_pretrained_frozen": fit_regressor_pretrained},
    "fit_classifier": {"fit_classifier_body_site": fit_classifier_body_site},
    "predict_regression": {"predict_regression_days": predict_regression_days},
    "predict_classification": {"predict_classification_body_site": predict_classification_body_site},
    "embed": {"embed_pretrained": embed_pretrained},
    "embed_features": {"embed_features_reference": embed_features_reference},
    "summarize": {"summarize_regressor": summarize_regressor},
    "evaluate": {"evaluate_regression": evaluate_regression,
                 "evaluate_against_sample_classifier": evaluate_against_sample_classifier},
    "classify_samples": {"classify_samples_body_site": classify_samples_body_site},
    "regress_samples": {"regress_samples_days": regress_samples_days},
    "feature_importance": {"feature_importance_body_site": feature_importance_body_site},
    "summarize_importance": {"summarize_importance_genera": summarize_importance_genera},
}
