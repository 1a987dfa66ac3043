"""The engine's public workflows: pretrain, train (fine-tune), predict, embed, embed_features.

The ``aam`` CLI and the QIIME 2 plugin are thin layers over these functions. Inputs are plain objects or paths
(biom.Table, skbio.TreeNode, skbio.DistanceMatrix, pandas DataFrames, FASTA paths); options are the names of
`aam.options` (``embedding_dim=64``, ``epochs=20``, ...), resolved and validated here once for both front ends
into one typed `aam.options.Options`. Each function is a short facade over its workflow (`aam.workflows`):

    pretrain  options -> run context -> run directory -> aam.workflows.pretrain
    train     options -> run context -> run directory -> aam.workflows.finetune (network, ensemble members, blend)
    predict   options -> model -> aam.workflows.infer (SampleFeatures -> every member -> the blend)
"""
from typing import Optional

import pandas as pd

from aam import options as O
from aam.errors import AAMInputError
from aam.workflows.common import TrainResult, load_model, resolve, run_directory, start

__all__ = ["TrainResult", "pretrain", "train", "predict", "feature_importance", "embed", "embed_features",
           "cross_validate"]


def pretrain(table, sequences=None, tree=None, distance_matrix=None, distance_ids=None, taxonomy=None,
             metadata=None, output_dir=None, progress=True, log=None, context=None, **options) -> TrainResult:
    """Self-supervised pretraining of the base model (`SequenceEncoder`).

    The objective is chosen by ``encoder_type``: 'unifrac' fits pairwise Euclidean distances between sample
    embeddings to `distance_matrix` (or to unweighted UniFrac computed from `tree`), 'faith_pd' and 'taxonomy'
    predict those, 'combined' does all three; masked-nucleotide prediction is added with ``nuc_penalty``.

    Parameters
    ----------
    table : str or biom.Table
    sequences : None, dict, pd.Series or FASTA path
        Needed when feature IDs are not DNA sequences.
    tree : skbio.TreeNode or Newick path, optional
    distance_matrix : skbio.DistanceMatrix or path (.npy, .h5, .csv, .tsv, lsmat), optional
    distance_ids : list of str, optional
        Sample IDs for a bare .npy matrix.
    taxonomy : pd.Series or pd.DataFrame, optional
    metadata : str or pd.DataFrame, optional
        Only for ``group_column``.
    output_dir : str, optional
        The run directory (see `aam.rundir`); None uses a temporary one.
    progress : bool
    log : callable, optional
        Receives progress lines (default: print to stderr).
    context : aam.training.context.RunContext, optional
        Built from the options when not given (the CLI passes the one it made under torchrun).
    **options
        Any option of `aam.options` for 'pretrain'.

    Returns
    -------
    TrainResult
    """
    from aam.workflows.pretrain import run_pretraining
    opts = resolve(O.PRETRAIN, options)
    ctx = start(opts, context)
    inputs = dict(table=table, sequences=sequences, tree=tree, distance_matrix=distance_matrix,
                  distance_ids=distance_ids, taxonomy=taxonomy, metadata=metadata)
    with run_directory(output_dir, opts, ctx) as run_dir:
        return run_pretraining(run_dir, opts, ctx, inputs, progress, log)


def train(table, metadata, column, classifier=False, out_dim=None, sequences=None, tree=None,
          distance_matrix=None, distance_ids=None, pretrained=None, categorical_columns=None, output_dir=None,
          progress=True, log=None, context=None, numeric_columns=None, **options) -> TrainResult:
    """Fine-tune a predictor of a metadata column (regression, or classification with `classifier`).

    The network (`SequencePredictor`) is blended with the member the ``ensemble`` option names, the weights
    chosen on validation samples that chose nothing else (`aam.ensemble`).

    Parameters
    ----------
    table : str or biom.Table
    metadata : str or pd.DataFrame
        Sample metadata holding `column` (and the categorical covariates and group column).
    column : str
        The target.
    classifier : bool
        Classification (categorical target) instead of regression.
    out_dim : int, optional
        Number of classes; inferred from the training samples, and checked against them when given.
    sequences, tree, distance_matrix, distance_ids
        As in `pretrain`; a tree or matrix adds the UniFrac loss (weighted by ``penalty``) while the base trains.
    pretrained : str or Checkpoint, optional
        A pretrained encoder; its architecture replaces the architecture options.
    categorical_columns : list of str, optional
        Metadata columns used as categorical covariates.
    numeric_columns : list of str, optional
        Metadata columns used as numeric covariates (`aam.options.COVARIATE_HELP` says how missing values are read).
    output_dir, progress, log, context, **options
        As in `pretrain` (options of 'train', e.g. ``missing_samples='ignore'``).

    Returns
    -------
    TrainResult
    """
    from aam.workflows.finetune import TrainInputs, fine_tune
    opts = resolve(O.TRAIN, options)
    ctx = start(opts, context)
    inputs = TrainInputs(table, metadata, column, classifier, out_dim, sequences, tree, distance_matrix,
                         distance_ids, pretrained, categorical_columns, numeric_columns)
    with run_directory(output_dir, opts, ctx) as run_dir:
        return fine_tune(run_dir, opts, ctx, inputs, progress, log)


def predict(model, table, sequences=None, metadata=None, log=None, context=None, **options) -> pd.DataFrame:
    """Predict a trained model's target for the samples of a table.

    Features never seen in training are fine: the model reads their sequences. Samples without reads are left
    out and reported. Samples deeper than the training rarefaction depth are rarefied to it ``rarefaction_draws``
    times (seeded) and the predictions averaged (class probabilities, or regression outputs in the training
    scale); shallower ones are used as they are.

    Parameters
    ----------
    model : str or Checkpoint
        A predictor from `train`.
    table : str or biom.Table
    sequences : optional
        Needed when feature IDs are not DNA.
    metadata : str or pd.DataFrame, optional
        Needed when the model uses covariates (categorical: a missing value maps to 'unknown'; numeric: to the
        training median, as in training).
    log : callable, optional
    context : aam.training.context.RunContext, optional
    **options
        'predict' options (batch_size, device, mixed_precision, seed, rarefaction_draws, ...).

    Returns
    -------
    pd.DataFrame
        Indexed by sample ID: ``prediction`` in the target's units (regression) or the predicted class, plus one
        ``probability_<class>`` column per class for classifiers. An ensemble adds each member's own outputs
        under its name (``<member>``, or ``<member>_probability_<class>``; `aam.ensemble.member_outputs` reads
        them back) and its share of each sample's blend (``<member>_share``). Every table ends with how much of
        each sample the training data covers: ``seen_feature_share`` (reads in features seen in training) and
        ``region_share`` (reads starting like the training reads; low for another 16S region).
    """
    from aam.workflows.infer import predict_table
    log = log or (lambda s: print(s, flush=True))
    opts = resolve(O.PREDICT, options)
    ctx = start(opts, context)
    return predict_table(load_model(model, "predictor"), table, sequences, metadata, opts, ctx, log)


def feature_importance(model, table, metadata, sequences=None, taxonomy=None, group_column=None, log=None,
                       context=None, cache_dir=None, **options) -> pd.DataFrame:
    """Which feature groups a predictor's predictions depend on: permutation importance, per member and blended.

    Each group (the features of one taxon at ``rank`` when a `taxonomy` is given, else features whose abundances
    correlate above ``correlation``) is permuted across samples ``repeats`` times; its importance is the mean
    increase of the loss, with a 95% interval over samples (or the groups of `group_column`) and a p-value corrected
    over groups (Benjamini-Hochberg). Use samples the model did not train on. The cost (groups x repeats prediction
    passes) is printed before it starts.

    Parameters
    ----------
    model : str or Checkpoint
    table : str or biom.Table
    metadata : str or pd.DataFrame
        Holds the model's target column (the truth) and `group_column`.
    sequences : optional
    taxonomy : pd.Series, optional
        Feature ID -> lineage.
    group_column : str, optional
    cache_dir : str, optional
        Where finished groups are kept (default: the user's cache, named by the inputs, removed at the end); the
        same call after an interruption measures only the groups not yet finished.
    **options
        'importance' options (rank, correlation, top, repeats) and 'predict' options (seed, batch_size,
        rarefaction_draws, device, ...).

    Returns
    -------
    pd.DataFrame
        See `aam.interpret.importance.permutation_importance`.
    """
    from aam.workflows.importance import importance_table
    log = log or (lambda s: print(s, flush=True))
    own = {o.name for o in O.options_for(O.IMPORTANCE)}
    groups_opts = resolve(O.IMPORTANCE, {k: v for k, v in options.items() if k in own})
    opts = resolve(O.PREDICT, {k: v for k, v in options.items() if k not in own})
    return importance_table(load_model(model, "predictor"), table, sequences, metadata, taxonomy, opts, groups_opts,
                            start(opts, context), log, group_column, cache_dir)


def cross_validate(table, metadata, column, classifier=False, sequences=None, tree=None, distance_matrix=None,
                   distance_ids=None, categorical_columns=None, final=False, cleanup=True, log=None, context=None,
                   numeric_columns=None, taxonomy=None, **options):
    """Grouped, stratified k-fold cross-validation of AAM beside q2-sample-classifier's random forest.

    Every sample is predicted once, by the models fit to the other folds: AAM as `train` fits it (on the training
    folds' table, distances, covariates and targets only) and the forest (``forest_trees`` trees on relative
    abundances). Folds keep the groups of ``group_column`` whole and balance classes. Each finished fold is kept in
    ``cv_dir`` (default: a directory of the user's cache named by the inputs and options, removed at the end), so
    a run interrupted and started again with the same inputs and options resumes after its last finished fold.

    Parameters
    ----------
    table, metadata, column, classifier, sequences, tree, distance_matrix, distance_ids, categorical_columns
        As in `train`; each fold's fit reads the distances of its training samples only.
    numeric_columns : list of str, optional
        As in `train` (each fold's fit centres and scales them on its training samples; the comparison forest
        reads the abundances alone, as q2-sample-classifier's).
    taxonomy : pd.Series or pd.DataFrame, optional
        Feature ID -> lineage: the feature importance measured in every fold (option ``importance``) groups
        features by taxon at ``rank``; without it, by correlation.
    final : bool
        Also fit the model on every sample (`train`), returned as ``result.final``.
    cleanup : bool
        Remove the default run directory (no ``cv_dir`` given) when done; a caller with steps of its own after
        this one passes False and calls `aam.workflows.crossval.finish_run` when they are done too.
    log : callable, optional
        Receives progress lines (one per fold, and the models' own).
    context : aam.training.context.RunContext, optional
    **options
        Options of 'train' and of 'crossval' (``cv``, ``cv_dir``, and the importance's ``importance``, ``rank``,
        ``correlation``, ``top``, ``repeats``).

    Returns
    -------
    aam.workflows.crossval.CrossValResult
        Out-of-fold predictions of every sample by both models, the folds, AAM's out-of-fold feature importance,
        and the final model when asked for.
    """
    from aam.workflows.crossval import CrossValInputs, Engine, cross_validate as run, resolve_options
    log = log or (lambda s: print(s, flush=True))
    opts = resolve_options(options)
    inputs = CrossValInputs(table, metadata, column, classifier, sequences, tree, distance_matrix,
                            categorical_columns, distance_ids, numeric_columns, taxonomy)
    return run(inputs, opts, options, log, Engine(train, predict, start(opts, context)), final, cleanup)


def embed(model, table, sequences=None, log=None, context=None, **options):
    """Sample embeddings of any AAM model, and the distances between samples the model implies.

    Returns
    -------
    (pd.DataFrame, skbio.DistanceMatrix)
        Embeddings (samples x dimensions) and pairwise Euclidean distances between the UniFrac-space
        embeddings (for a UniFrac-pretrained base these approximate UniFrac), or between sample embeddings.
    """
    from aam.workflows.infer import embed_table
    opts = resolve(O.PREDICT, options)
    ctx = start(opts, context)
    return embed_table(load_model(model), table, sequences, opts, ctx)


def embed_features(sequences, model=None, asv_encoder: Optional[str] = None, log=None, context=None,
                   **options) -> pd.DataFrame:
    """Per-feature embeddings: where each ASV sits in a model's (or a reference encoder's) sequence space.

    Parameters
    ----------
    sequences : dict, pd.Series, FASTA path or list of str
        The features' DNA sequences (IDs -> sequences).
    model : str or Checkpoint, optional
        Any AAM model: its nucleotide-level encoder embeds the sequences. Without a model, the reference encoder
        `asv_encoder` does (default: the one `aam.options` names for pretraining).
    asv_encoder : str, optional
        A shipped reference encoder's name.
    **options
        'predict' options (device, batch_size, asv_chunk_size, num_threads, seed).

    Returns
    -------
    pd.DataFrame
        Features x embedding dimensions (``aam_1`` ...), indexed by feature ID.
    """
    from aam.data.sequences import as_mapping
    from aam.reference.selected import check_region
    from aam.workflows.infer import embed_sequences
    opts = resolve(O.PREDICT, options)
    ctx = start(opts, context)
    mapping = as_mapping(sequences)
    if not mapping:
        raise AAMInputError("no sequences to embed; pass the features' sequences ({input:sequences}).")
    if model is not None:
        net = load_model(model).build_model()
        encoder = getattr(net, "base", net).asv_encoder
    else:
        from aam.reference.shipped import build_encoder
        name = asv_encoder or O.BY_NAME["asv_encoder"].default
        if name == "none":
            raise AAMInputError("embedding features needs a model or a reference encoder ({opt:asv_encoder}).")
        encoder = build_encoder(name)
        check_region([str(mapping[i]) for i in mapping], name)
    return embed_sequences(encoder, mapping, opts, ctx)
