"""The pipelines of q2-aam: `classify_samples` and `regress_samples`, cross-validation in one command.

Each runs four steps, in this order (the first is the long one, resumable, so it comes first):

1. the engine's grouped, stratified k-fold cross-validation (`aam.api.cross_validate`): AAM and
   q2-sample-classifier's random forest fit to each fold's training samples, predicting its held-out ones, and
   AAM's permutation importance measured on them; the out-of-fold predictions become q2-sample-classifier's types,
   the pooled importance the artifacts of `feature-importance` (`q2_aam._importance.importance_artifacts`);
2. the final model: this plugin's `fit-classifier` / `fit-regressor` on every sample, with the same options;
3. this plugin's `evaluate` on the out-of-fold predictions of both models: metrics with intervals over groups,
   their paired comparison, one row per fold, and the figures;
4. this plugin's `summarize-importance` on the out-of-fold importance.

Steps 2 to 4 are this plugin's own actions, so their provenance is recorded inside the pipeline's. The engine (and
torch) is imported only when a pipeline runs.
"""
import pandas as pd
import qiime2

from aam import options as O
from q2_aam._methods import _log, _options, _plugin_errors, _sequences, _training_metadata, _tree

#: the cross-validation's own options, and its importance's (the others are the fit's)
CV_OPTIONS = frozenset(o.name for o in O.options_for(O.CROSSVAL, "cli"))
MODEL_NAMES = {"aam": "AAM", "forest": "random forest"}


def _views(table, sequences, phylogeny, distance_matrix):
    """The engine's inputs from the pipeline's artifacts."""
    import biom
    import skbio

    from q2_types.tree import NewickFormat
    return {"table": table.view(biom.Table),
            "sequences": None if sequences is None else _sequences(sequences.view(pd.Series)),
            "tree": None if phylogeny is None else _tree(phylogeny.view(NewickFormat)),
            "distance_matrix": None if distance_matrix is None else distance_matrix.view(skbio.DistanceMatrix)}


def _column(values, name):
    """A categorical metadata column of text values by sample ID."""
    series = pd.Series([str(v) for v in values], index=pd.Index(values.index.astype(str), name="id"), name=name)
    return qiime2.CategoricalMetadataColumn(series)


def _prediction_artifacts(ctx, result, classifier):
    """Each model's out-of-fold predictions (and class probabilities) as q2-sample-classifier's types."""
    kind = "SampleData[ClassifierPredictions]" if classifier else "SampleData[RegressorPredictions]"
    made = {}
    for model in MODEL_NAMES:
        values, probabilities = result.model_predictions(model)
        values.index = values.index.astype(str)
        values.index.name = "SampleID"
        values.name = "prediction"
        predictions = ctx.make_artifact(kind, values)
        made[model] = (predictions, None if probabilities is None else
                       ctx.make_artifact("SampleData[Probabilities]", probabilities))
    return made


def _cross_validate(ctx, classifier, table, metadata, sequences, phylogeny, distance_matrix, taxonomy,
                    sample_metadata, categorical_columns, numeric_columns, options):
    from aam import api
    from aam.workflows.crossval import finish_run
    from q2_aam._importance import importance_artifacts

    frame, column, covariates = _training_metadata(metadata, sample_metadata, categorical_columns, options,
                                                   numeric_columns)
    given = _options(options)
    with _plugin_errors():
        result = api.cross_validate(metadata=frame, column=column, classifier=classifier,
                                    categorical_columns=covariates or None,
                                    numeric_columns=list(numeric_columns or []) or None, log=_log, cleanup=False,
                                    taxonomy=None if taxonomy is None else taxonomy.view(pd.DataFrame),
                                    importance=True, **_views(table, sequences, phylogeny, distance_matrix),
                                    **given)
    made = _prediction_artifacts(ctx, result, classifier)
    importance, details = importance_artifacts(result.importance, result.classes)
    importance = ctx.make_artifact("FeatureData[Importance]", importance)
    details = ctx.make_artifact("FeatureData[AAMImportance]", details)

    fit = ctx.get_action("aam", "fit_classifier" if classifier else "fit_regressor")
    _log(f"the final model: {'fit-classifier' if classifier else 'fit-regressor'} on every sample")
    model, = fit(table=table, metadata=metadata, sequences=sequences, phylogeny=phylogeny,
                 distance_matrix=distance_matrix, sample_metadata=sample_metadata,
                 categorical_columns=categorical_columns, numeric_columns=numeric_columns,
                 **{k: v for k, v in options.items() if k not in CV_OPTIONS})

    group = None
    if options.get("group_column"):
        group = _column(result.predictions["group"], options["group_column"])
    evaluate = ctx.get_action("aam", "evaluate")
    (aam_predictions, aam_probabilities), (rf_predictions, rf_probabilities) = made["aam"], made["forest"]
    visualization, = evaluate(predictions=aam_predictions, probabilities=aam_probabilities,
                              other_predictions=rf_predictions, other_probabilities=rf_probabilities, truth=metadata,
                              name=MODEL_NAMES["aam"], other_name=MODEL_NAMES["forest"], group=group,
                              folds=_column(result.predictions["fold"], "fold"))
    importance_visualization, = ctx.get_action("aam", "summarize_importance")(details=details, taxonomy=taxonomy)
    finish_run(result, keep=False)  # every step is done: the folds kept for a resume are no longer needed
    both = (visualization, importance, details, importance_visualization)
    if classifier:
        return (aam_predictions, aam_probabilities, model) + both
    return (aam_predictions, model) + both


def classify_samples(ctx, table, metadata, sequences=None, phylogeny=None, distance_matrix=None, taxonomy=None,
                     sample_metadata=None, categorical_columns=None, numeric_columns=None, **options):
    return _cross_validate(ctx, True, table, metadata, sequences, phylogeny, distance_matrix, taxonomy,
                           sample_metadata, categorical_columns, numeric_columns, options)


def regress_samples(ctx, table, metadata, sequences=None, phylogeny=None, distance_matrix=None, taxonomy=None,
                    sample_metadata=None, categorical_columns=None, numeric_columns=None, **options):
    return _cross_validate(ctx, False, table, metadata, sequences, phylogeny, distance_matrix, taxonomy,
                           sample_metadata, categorical_columns, numeric_columns, options)
