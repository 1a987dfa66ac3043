"""The methods of q2-aam: pretrain, fit_regressor, fit_classifier, predict_regression, predict_classification,
embed.

Each is a thin layer over ``aam.api``: it turns QIIME 2 views into the engine's inputs, checks what only the
plugin knows about (which artifact or metadata input is missing), and returns the engine's results as views.
The engine (and with it torch) is imported inside the function bodies, so loading the plugin stays cheap.
Option parameters (architecture, optimization, hardware, seed, ...) reach the functions as keyword arguments;
`q2_aam._params.with_signature` gives each function its full signature at registration.
"""
import contextlib

import biom
import pandas as pd
import qiime2
import skbio

from aam.checkpoint import Checkpoint
from aam.errors import AAMInputError, preview

from q2_types.tree import NewickFormat

from q2_aam._model import TrainedModel
from q2_aam._params import q2_flags

#: prefix of the probability columns of ``aam.api.predict``
_PROBABILITY = "probability_"


def _log(line):
    """Progress lines: printed and flushed, so ``--verbose`` shows them as they come."""
    print(line, flush=True)


@contextlib.contextmanager
def _plugin_errors():
    """Pass the engine's input errors on with the plugin's spelling of flags (``--p-epochs``, ``--i-phylogeny``)."""
    try:
        yield
    except AAMInputError as err:
        raise AAMInputError(q2_flags(str(err))) from None


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

    objective = options.get("encoder_type") or "unifrac"
    if objective in ("unifrac", "combined") and phylogeny is None and distance_matrix is None:
        raise AAMInputError(f"--p-encoder-type {objective} fits sample embeddings to pairwise distances: pass a "
                            "rooted phylogeny of the table's features (--i-phylogeny, Phylogeny[Rooted]; "
                            "unweighted UniFrac is computed from it) or a distance matrix of its samples "
                            "(--i-distance-matrix). Without either, use --p-encoder-type taxonomy with "
                            "--i-taxonomy.")
    if objective in ("faith_pd", "combined") and phylogeny is None:
        raise AAMInputError(f"--p-encoder-type {objective} predicts Faith's phylogenetic diversity: pass a "
                            "rooted phylogeny of the table's features (--i-phylogeny).")
    if objective in ("taxonomy", "combined") and taxonomy is None:
        raise AAMInputError(f"--p-encoder-type {objective} predicts each feature's taxon: pass the features' "
                            "taxonomy (--i-taxonomy, FeatureData[Taxonomy]).")
    frame = None if sample_metadata is None else sample_metadata.to_dataframe()
    _group_check(frame, options)
    with _plugin_errors():
        result = api.pretrain(table, sequences=_sequences(sequences), tree=_tree(phylogeny),
                              distance_matrix=distance_matrix, taxonomy=taxonomy, metadata=frame,
                              output_dir=None, progress=True, log=_log, **_options(options))
    return TrainedModel.from_result(result)


# --- fit_regressor / fit_classifier ------------------------------------------------------------------------------

def _training_metadata(metadata, sample_metadata, categorical_columns, options):
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
    _group_check(extra, options)
    if options.get("group_column") == column:
        raise AAMInputError(f"--p-group-column is the target column {column!r}; choose the column whose "
                            "groups (e.g. subjects) must not be split between training and validation.")
    if extra is not None:
        wanted = categorical_columns + ([options["group_column"]] if options.get("group_column") else [])
        extra = extra[[c for c in dict.fromkeys(wanted) if c != column]]
        frame = frame.join(extra, how="outer")
    frame.index.name = "sample-id"
    return frame, column, categorical_columns


def _fit(classifier, table, metadata, sequences, phylogeny, distance_matrix, pretrained, sample_metadata,
         categorical_columns, missing_samples, options):
    from aam import api

    if options.get("freeze_base") and pretrained is None:
        raise AAMInputError("--p-freeze-base keeps a pretrained base fixed, but no pretrained model was given; "
                            "pass one from `qiime aam pretrain` with --i-pretrained, or leave out "
                            "--p-freeze-base.")
    if pretrained is not None and pretrained.model_type != "encoder":
        raise AAMInputError("--i-pretrained must be a pretrained base model (AAMModel[AAMPretrained], from "
                            "`qiime aam pretrain`), not a trained regressor or classifier.")
    frame, column, covariates = _training_metadata(metadata, sample_metadata, categorical_columns, options)
    with _plugin_errors():
        result = api.train(table, frame, column, classifier=classifier, sequences=_sequences(sequences),
                           tree=_tree(phylogeny), distance_matrix=distance_matrix, pretrained=pretrained,
                           categorical_columns=covariates or None, missing_samples=missing_samples,
                           output_dir=None, progress=True, log=_log, **_options(options))
    return TrainedModel.from_result(result)


def fit_regressor(table: biom.Table, metadata: qiime2.NumericMetadataColumn, sequences: pd.Series = None,
                  pretrained: Checkpoint = None, phylogeny: NewickFormat = None,
                  distance_matrix: skbio.DistanceMatrix = None, sample_metadata: qiime2.Metadata = None,
                  categorical_columns: list = None, missing_samples: str = "error",
                  **options) -> TrainedModel:
    return _fit(False, table, metadata, sequences, phylogeny, distance_matrix, pretrained, sample_metadata,
                categorical_columns, missing_samples, options)


def fit_classifier(table: biom.Table, metadata: qiime2.CategoricalMetadataColumn, sequences: pd.Series = None,
                   pretrained: Checkpoint = None, phylogeny: NewickFormat = None,
                   distance_matrix: skbio.DistanceMatrix = None, sample_metadata: qiime2.Metadata = None,
                   categorical_columns: list = None, missing_samples: str = "error",
                   **options) -> TrainedModel:
    return _fit(True, table, metadata, sequences, phylogeny, distance_matrix, pretrained, sample_metadata,
                categorical_columns, missing_samples, options)


# --- predict ----------------------------------------------------------------------------------------------------

def _predict(model, task, table, sequences, sample_metadata, batch_size, options):
    from aam import api

    trained = model.config.get("task")
    if trained != task:
        other = "predict-classification" if trained == "classification" else "predict-regression"
        raise AAMInputError(f"this model was trained for {trained}, not {task}; use {other}.")
    frame = None if sample_metadata is None else sample_metadata.to_dataframe()
    with _plugin_errors():
        predictions = api.predict(model, table, sequences=_sequences(sequences), metadata=frame,
                                  batch_size=batch_size, log=_log, **_options(options))
    if len(predictions) == 0:
        raise AAMInputError("no sample of the table has reads, so there is nothing to predict; check that the "
                            "table is the one you meant (qiime feature-table summarize).")
    predictions.index = predictions.index.astype(str)
    predictions.index.name = "SampleID"
    return predictions


def predict_regression(model: Checkpoint, table: biom.Table, sequences: pd.Series = None,
                       sample_metadata: qiime2.Metadata = None, batch_size: int = 32, **options) -> pd.Series:
    frame = _predict(model, "regression", table, sequences, sample_metadata, batch_size, options)
    series = pd.to_numeric(frame["prediction"]).astype(float)
    series.name = "prediction"
    return series


def predict_classification(model: Checkpoint, table: biom.Table, sequences: pd.Series = None,
                           sample_metadata: qiime2.Metadata = None, batch_size: int = 32,
                           **options) -> (pd.Series, pd.DataFrame):
    frame = _predict(model, "classification", table, sequences, sample_metadata, batch_size, options)
    series = frame["prediction"].astype(str)
    series.name = "prediction"
    probabilities = frame[[c for c in frame.columns if c.startswith(_PROBABILITY)]].astype(float)
    probabilities.columns = [c[len(_PROBABILITY):] for c in probabilities.columns]
    return series, probabilities


# --- embed ------------------------------------------------------------------------------------------------------

def embed(model: Checkpoint, table: biom.Table, sequences: pd.Series = None, batch_size: int = 32,
          **options) -> (skbio.OrdinationResults, skbio.DistanceMatrix):
    from aam import api

    with _plugin_errors():
        frame, distances = api.embed(model, table, sequences=_sequences(sequences), batch_size=batch_size,
                                     log=_log, **_options(options))
        if len(frame) < 2:
            raise AAMInputError(f"only {len(frame)} sample(s) of the table have reads; embeddings are compared "
                                "between samples, so at least 2 are needed.")
        ordination = api.ordination(frame)
    return ordination, distances
