"""The methods of q2-aam: pretrain, fit_regressor, fit_classifier, predict_regression, predict_classification,
embed.

Each is a thin layer over ``aam.api``: it turns QIIME 2 views into the engine's inputs, checks what only the
plugin knows about (which artifact or metadata input is missing), and returns the engine's results as views.
The engine (and with it torch) is imported inside the function bodies, so loading the plugin stays cheap.
Option parameters (architecture, optimization, hardware, seed, ...) reach the functions as keyword arguments;
`q2_aam._params.with_signature` gives each function its full signature at registration.
"""
import contextlib
import warnings

import biom
import pandas as pd
import qiime2
import skbio

from aam.checkpoint import Checkpoint
from aam.errors import AAMInputError, AAMTrainingError, AAMWarning, preview
from aam.safety import plain_warnings

from q2_types.tree import NewickFormat

from q2_aam._model import TrainedModel
from q2_aam._params import Q2

#: prefix of the probability columns of ``aam.api.predict``
_PROBABILITY = "probability_"


def _log(line):
    """Progress lines: printed and flushed, so ``--verbose`` shows them as they come."""
    print(line, flush=True)


@contextlib.contextmanager
def _plugin_errors():
    """The engine's errors and warnings in the plugin's spelling of what they name (``--p-epochs``,
    ``--i-phylogeny``): errors raised again, warnings issued again when the engine's work ends, each printed as
    one plain ``warning: ...`` line."""
    caught = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AAMWarning)
            yield
    except (AAMInputError, AAMTrainingError) as err:
        raise type(err)(err.render(Q2)) from None
    finally:
        with plain_warnings():  # one line each, like every other message (no Python source location)
            for w in caught:
                if isinstance(w.message, AAMWarning):
                    warnings.warn(w.message.render(Q2), UserWarning, stacklevel=3)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _options(options):
    """Options left at None mean "the engine's default"."""
    return {k: v for k, v in options.items() if v is not None}


def _check_metadata_columns(sample_metadata, columns, parameter):
    """Every name in `columns` must be a column of `sample_metadata`."""
    if not columns:
        return
    if sample_metadata is None:
        raise AAMInputError(f"--p-{parameter.replace('_', '-')} names metadata column(s) {preview(columns)}, "
                            "but no sample metadata was given; pass it with --m-sample-metadata-file "
                            "(Python API: sample_metadata=).")
    available = list(sample_metadata.columns)
    absent = [c for c in columns if c not in available]
    if absent:
        raise AAMInputError(f"--p-{parameter.replace('_', '-')}: column(s) {preview(absent)} are not in the "
                            f"sample metadata; available columns: {preview(available, 10)}. Names are "
                            "case-sensitive.")


def _sequences(sequences):
    """FeatureData[Sequence] as a Series of plain strings (the engine also takes skbio.DNA)."""
    if sequences is None:
        return None
    return sequences.astype(str)


def _group_check(sample_metadata, options):
    group = options.get("group_column")
    if group is not None:
        _check_metadata_columns(sample_metadata, [group], "group_column")


# --- pretrain ---------------------------------------------------------------------------------------------------

def _tree(phylogeny):
    """The Newick file's path: unifrac reads it natively (a 200,000-tip SEPP tree in a second, where parsing it
    into a scikit-bio TreeNode takes minutes)."""
    return None if phylogeny is None else str(phylogeny)


def pretrain(table: biom.Table, sequences: pd.Series = None, phylogeny: NewickFormat = None,
             distance_matrix: skbio.DistanceMatrix = None, taxonomy: pd.DataFrame = None,
             sample_metadata: qiime2.Metadata = None, **options) -> TrainedModel:
    from aam import api

    frame = None if sample_metadata is None else sample_metadata.to_dataframe()
    _group_check(frame, options)
    with _plugin_errors():
        result = api.pretrain(table, sequences=_sequences(sequences), tree=_tree(phylogeny),
                              distance_matrix=distance_matrix, taxonomy=taxonomy, metadata=frame,
                              output_dir=None, progress=True, log=_log, **_options(options))
    return TrainedModel.from_result(result)


# --- fit_regressor / fit_classifier ------------------------------------------------------------------------------

def _training_metadata(metadata, sample_metadata, categorical_columns, options, numeric_columns=None):
    """One frame holding the target column, the covariates and the group column."""
    column = metadata.name
    frame = metadata.to_series().to_frame(column)
    extra = None if sample_metadata is None else sample_metadata.to_dataframe()
    categorical_columns = list(categorical_columns or [])
    if column in categorical_columns:
        raise AAMInputError(f"--p-categorical-columns lists the target column {column!r}; a model given its "
                            "own target as input learns nothing. Remove it from the covariates.")
    repeated = sorted({c for c in categorical_columns if categorical_columns.count(c) > 1})
    if repeated:
        raise AAMInputError(f"--p-categorical-columns lists {preview(repeated)} more than once; list each "
                            "column once.")
    _check_metadata_columns(extra, categorical_columns, "categorical_columns")
    _check_metadata_columns(extra, list(numeric_columns or []), "numeric_columns")
    _group_check(extra, options)
    if options.get("group_column") == column:
        raise AAMInputError(f"--p-group-column is the target column {column!r}; choose the column whose "
                            "groups (e.g. subjects) must not be split between training and validation.")
    if extra is not None:
        wanted = (categorical_columns + list(numeric_columns or []) +
                  ([options["group_column"]] if options.get("group_column") else []))
        extra = extra[[c for c in dict.fromkeys(wanted) if c != column]]
        frame = frame.join(extra, how="outer")
    frame.index.name = "sample-id"
    return frame, column, categorical_columns


def _fit(classifier, table, metadata, sequences, phylogeny, distance_matrix, pretrained, sample_metadata,
         categorical_columns, options, numeric_columns=None):
    from aam import api

    frame, column, covariates = _training_metadata(metadata, sample_metadata, categorical_columns, options,
                                                   numeric_columns)
    with _plugin_errors():
        result = api.train(table, frame, column, classifier=classifier, sequences=_sequences(sequences),
                           tree=_tree(phylogeny), distance_matrix=distance_matrix, pretrained=pretrained,
                           categorical_columns=covariates or None, numeric_columns=list(numeric_columns or []) or None,
                           output_dir=None, progress=True, log=_log, **_options(options))
    return TrainedModel.from_result(result)


def fit_regressor(table: biom.Table, metadata: qiime2.NumericMetadataColumn, sequences: pd.Series = None,
                  pretrained: Checkpoint = None, phylogeny: NewickFormat = None,
                  distance_matrix: skbio.DistanceMatrix = None, sample_metadata: qiime2.Metadata = None,
                  categorical_columns: list = None, numeric_columns: list = None, **options) -> TrainedModel:
    return _fit(False, table, metadata, sequences, phylogeny, distance_matrix, pretrained, sample_metadata,
                categorical_columns, options, numeric_columns)


def fit_classifier(table: biom.Table, metadata: qiime2.CategoricalMetadataColumn, sequences: pd.Series = None,
                   pretrained: Checkpoint = None, phylogeny: NewickFormat = None,
                   distance_matrix: skbio.DistanceMatrix = None, sample_metadata: qiime2.Metadata = None,
                   categorical_columns: list = None, numeric_columns: list = None, **options) -> TrainedModel:
    return _fit(True, table, metadata, sequences, phylogeny, distance_matrix, pretrained, sample_metadata,
                categorical_columns, options, numeric_columns)


# --- predict ----------------------------------------------------------------------------------------------------

def _predict(model, task, table, sequences, sample_metadata, options):
    from aam import api

    record = model.record
    if record.task != task:
        if record.task == "pretrain":
            use = ("it is a pretrained base: embed samples with `qiime aam embed`, or fine-tune it with "
                   "`qiime aam fit-regressor` / `fit-classifier` --i-pretrained")
        else:
            use = "use predict-" + record.task
        raise AAMInputError(f"this model is a {record.title}, not a model for {task}; {use}.")
    frame = None if sample_metadata is None else sample_metadata.to_dataframe()
    with _plugin_errors():
        predictions = api.predict(model, table, sequences=_sequences(sequences), metadata=frame, log=_log,
                                  **_options(options))
    predictions.index = predictions.index.astype(str)
    predictions.index.name = "SampleID"
    return predictions


def predict_regression(model: Checkpoint, table: biom.Table, sequences: pd.Series = None,
                       sample_metadata: qiime2.Metadata = None, **options) -> pd.Series:
    frame = _predict(model, "regression", table, sequences, sample_metadata, options)
    series = pd.to_numeric(frame["prediction"]).astype(float)
    series.name = "prediction"
    return series


def predict_classification(model: Checkpoint, table: biom.Table, sequences: pd.Series = None,
                           sample_metadata: qiime2.Metadata = None,
                           **options) -> (pd.Series, pd.DataFrame):
    frame = _predict(model, "classification", table, sequences, sample_metadata, options)
    series = frame["prediction"].astype(str)
    series.name = "prediction"
    probabilities = frame[[c for c in frame.columns if c.startswith(_PROBABILITY)]].astype(float)
    probabilities.columns = [c[len(_PROBABILITY):] for c in probabilities.columns]
    return series, probabilities


# --- embed ------------------------------------------------------------------------------------------------------

def embed(model: Checkpoint, table: biom.Table, sequences: pd.Series = None,
          **options) -> (skbio.OrdinationResults, skbio.DistanceMatrix):
    from aam import api
    from aam.evaluation.ordination import ordination

    with _plugin_errors():
        frame, distances = api.embed(model, table, sequences=_sequences(sequences), log=_log, **_options(options))
        if len(frame) < 2:
            raise AAMInputError(f"only {len(frame)} sample(s) of the table have reads; embeddings are compared "
                                "between samples, so at least 2 are needed.")
        result = ordination(frame)
    return result, distances


# --- embed_features ---------------------------------------------------------------------------------------------

def embed_features(sequences: pd.Series, model: Checkpoint = None, asv_encoder: str = None,
                   **options) -> skbio.OrdinationResults:
    from aam import api
    from aam.evaluation.ordination import ordination

    with _plugin_errors():
        frame = api.embed_features(_sequences(sequences), model=model, asv_encoder=asv_encoder, log=_log,
                                   **_options(options))
        if len(frame) < 2:
            raise AAMInputError("only one feature was given; an ordination of features needs at least 2.")
        return ordination(frame, method_name="AAM feature embedding")
