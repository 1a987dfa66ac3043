"""Grouped, stratified k-fold cross-validation of AAM beside q2-sample-classifier's random forest.

    labelled samples (reads and a target value) -> folds (grouped, stratified by class) -> key of inputs + options
      -> feature groups for importance, formed once from the whole table (`aam.interpret.outoffold`; no label)
      -> per fold: AAM fit to the training folds only (as `aam.api.train` fits), predicting the held-out fold,
         then the same held-out samples with each feature group permuted (importance); the forest (500 trees on
         relative abundances, as ``rf500-rel`` of the benchmark) on the same folds
      -> each finished fold written to the run directory (an interrupted run reads them back)
      -> out-of-fold predictions of every sample, by both models; AAM's importance pooled over every sample

Nothing of a held-out fold reaches its models: the table, tree or distance matrix, covariates and target are cut
to the training samples before `aam.api.train` sees them, so the rarefaction depth, the target's scale, the
validation split and the forest are all chosen on training samples. The model fitted on every sample is the
caller's next step (`aam.api.cross_validate` with ``final=True``, or the plugin's pipelines).
"""
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import pandas as pd

from aam import options as O
from aam.errors import AAMInputError, preview

#: what the run directory holds besides the folds
KEY_FILE = "key.json"
#: prefix of a probability column (as `aam.api.predict` writes them)
PROBABILITY = "probability_"
#: the two models of a cross-validation, as the outputs name them
AAM, FOREST = "aam", "forest"
# options that say where and how fast a run computes, not what (a device may change the last digits): a run
# resumed with other values of these still reads its finished folds
_SPEED_OPTIONS = ("num_threads", "num_workers", "cv_dir", "device", "asv_chunk_size")


@dataclass
class CrossValInputs:
    """The data arguments of `aam.api.cross_validate` (see there)."""

    table: object
    metadata: object
    column: str
    classifier: bool = False
    sequences: object = None
    tree: object = None
    distance_matrix: object = None
    categorical_columns: Optional[list] = None
    distance_ids: Optional[list] = None
    numeric_columns: Optional[list] = None
    taxonomy: object = None


@dataclass
class Labelled:
    """The samples that can be cross-validated: reads and a target value."""

    table: object                   # biom.Table of these samples (features without reads dropped)
    y: pd.Series                    # target by sample ID (str labels or floats)
    metadata: pd.DataFrame          # the metadata rows of these samples
    groups: Optional[List[str]]     # group of each sample (order of y), or None

    @property
    def ids(self):
        return list(self.y.index)


@dataclass
class CrossValResult:
    """Out-of-fold predictions of every sample by AAM and by the forest.

    Attributes
    ----------
    predictions : pd.DataFrame
        Indexed by sample ID: ``fold`` (1..k), ``truth``, ``group`` (or the sample ID without a group column),
        then ``aam_prediction`` and ``forest_prediction`` and, for a classifier, ``aam_probability_<class>`` and
        ``forest_probability_<class>`` for every class.
    folds : pd.DataFrame
        One row per fold: training and held-out samples and groups, seconds, and whether it was read back.
    classes : list of str or None
        The classes of a classifier.
    column : str
    run_dir : str
        Where the folds are kept.
    final : aam.workflows.common.TrainResult, optional
        The model fitted on every sample, when asked for.
    importance : pd.DataFrame, optional
        Out-of-fold permutation importance of AAM's feature groups (`aam.interpret.outoffold`; the columns of
        `aam.interpret.importance.permutation_importance`), when measured (option ``importance``).
    """

    predictions: pd.DataFrame
    folds: pd.DataFrame
    classes: Optional[List[str]]
    column: str
    run_dir: str
    final: object = None
    report: List[str] = field(default_factory=list)
    importance: Optional[pd.DataFrame] = None

    def model_predictions(self, model):
        """One model's predictions (pd.Series) and class probabilities (pd.DataFrame, None for a regressor)."""
        if model not in (AAM, FOREST):
            raise ValueError(f"model must be {AAM!r} or {FOREST!r}, not {model!r}")
        values = self.predictions[f"{model}_prediction"].rename("prediction")
        if self.classes is None:
            return values.astype(float), None
        columns = [f"{model}_{PROBABILITY}{c}" for c in self.classes]
        probabilities = self.predictions[columns].astype(float)
        probabilities.columns = list(self.classes)
        return values.astype(str), probabilities


def own_options():
    """The names of the cross-validation's own options (``cv``, ``cv_dir``, the importance's); the others are the
    fits'."""
    return {o.name for o in O.options_for(O.CROSSVAL, "cli")}


def resolve_options(options):
    """The 'train' options of the models with the cross-validation's own (`own_options`), each validated."""
    from dataclasses import replace
    own = own_options()
    opts = O.resolve(O.TRAIN, **{k: v for k, v in options.items() if k not in own})
    cv = O.resolve(O.CROSSVAL, **{k: v for k, v in options.items() if k in own})
    return replace(opts, **{name: getattr(cv, name) for name in own})


# ---- the samples and the folds ----------------------------------------------------------------------------------
def labelled_samples(inputs, opts):
    """The samples with reads and a value of the target column, their groups and metadata rows."""
    from aam.data.loaders import group_labels
    from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
    from aam.data.table import drop_empty, load_table, sample_depths
    table = load_table(inputs.table)
    with_reads = [s for s, depth in sample_depths(table).items() if depth > 0]
    md = select_samples(load_metadata(inputs.metadata), with_reads, missing=opts.missing_samples)
    y, _ = (categorical_target if inputs.classifier else numeric_target)(md, inputs.column)
    ids = [s for s in md.index if s in y.index]
    if len(ids) < 2 * opts.cv:
        raise AAMInputError(f"only {len(ids)} sample(s) have both reads and a value for {inputs.column!r}; "
                            f"{opts.cv}-fold cross-validation needs at least {2 * opts.cv} (two per fold). "
                            "Lower {opt:cv} or add samples.")
    table = drop_empty(table.filter(ids, axis="sample", inplace=False))
    return Labelled(table, y.loc[ids], md.loc[ids], group_labels(md, opts.group_column, ids))


def check_classes(y, groups, cv, column):
    """Every class must have at least `cv` samples (and `cv` groups): else a fold trains without it, or
    stratification cannot place one of it in every fold."""
    for label, members in y.groupby(y.astype(str)):
        n = len(members)
        n_groups = len({groups[i] for i in np.flatnonzero(y.astype(str).to_numpy() == label)}) if groups else n
        if min(n, n_groups) < cv:
            held = f"{n} sample(s)" + (f" in {n_groups} group(s)" if groups else "")
            raise AAMInputError(f"class {label!r} of {column!r} has {held}, fewer than the {cv} folds of the "
                                f"cross-validation, so some folds would train without it. Lower {{opt:cv}} to "
                                f"{max(2, min(n, n_groups))} or less, or leave the class out of the metadata.")


def make_folds(labelled, opts, classifier):
    """``[(train_ids, test_ids)]`` per fold: grouped by ``opts.group_column``, stratified by class, seeded."""
    from aam.data.splits import kfold_splits
    stratify = list(labelled.y.astype(str)) if classifier else None
    n_groups = len(set(labelled.groups)) if labelled.groups else None
    if n_groups is not None and n_groups < opts.cv:
        raise AAMInputError(f"{opts.group_column!r} has {n_groups} groups, fewer than the {opts.cv} folds of the "
                            "cross-validation (a group is never split between folds). Lower {opt:cv} to "
                            f"{max(2, n_groups)} or less, or choose a group column with more groups.")
    if classifier:
        check_classes(labelled.y, labelled.groups, opts.cv, labelled.y.name)
    folds = kfold_splits(labelled.ids, k=opts.cv, seed=opts.seed, stratify=stratify, groups=labelled.groups)
    _check_training_groups(folds, labelled, opts)
    return folds


def _check_training_groups(folds, labelled, opts):
    """Each fold's fit holds out validation samples by group too: its training samples need 2 groups or more."""
    if not labelled.groups or opts.validation_fraction <= 0 or opts.head == "linear":
        return
    group_of = dict(zip(labelled.ids, labelled.groups))
    fewest = min(len({group_of[s] for s in train}) for train, _ in folds)
    if fewest < 2:
        n = len(set(labelled.groups))
        raise AAMInputError(f"grouped by {opts.group_column!r} ({n} groups), a fold of the {opts.cv}-fold "
                            f"cross-validation trains on {fewest} group, but each fit holds out whole groups of its "
                            "training samples for validation and needs at least 2. Use a group column with more "
                            "groups, or {opt:validation_fraction} 0.")


# ---- the key of a run: what its folds depend on -----------------------------------------------------------------
def _digest_of(obj, h):
    """Feed `h` with a stable text of `obj` (tables, trees, matrices, frames by content; paths by their bytes)."""
    import biom
    if obj is None:
        h.update(b"none")
    elif isinstance(obj, biom.Table):
        m = obj.matrix_data.tocsc()
        for part in (list(map(str, obj.ids())), list(map(str, obj.ids("observation")))):
            h.update(json.dumps(part).encode())
        for array in (m.data.astype(np.float64), m.indices.astype(np.int64), m.indptr.astype(np.int64)):
            h.update(array.tobytes())
    elif isinstance(obj, (str, os.PathLike)) and os.path.isfile(obj):
        with open(obj, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    elif isinstance(obj, (pd.Series, pd.DataFrame)):
        h.update(obj.to_csv().encode())
    elif hasattr(obj, "ids") and hasattr(obj, "data"):  # skbio.DistanceMatrix
        h.update(json.dumps(list(map(str, obj.ids))).encode())
        h.update(np.asarray(obj.data, dtype=np.float64).tobytes())
    else:
        h.update(str(obj).encode())


def run_key(labelled, inputs, opts, folds):
    """A digest of everything the folds' predictions depend on: data, target, groups, folds and options."""
    from aam import __version__
    h = hashlib.sha256()
    _digest_of(labelled.table, h)
    for part in (inputs.sequences, inputs.tree, inputs.distance_matrix, labelled.y.astype(str)):
        _digest_of(part, h)
    covariates = list(inputs.categorical_columns or []) + list(inputs.numeric_columns or [])
    _digest_of(labelled.metadata[covariates] if covariates else None, h)
    _digest_of(inputs.taxonomy, h)
    settings = {k: v for k, v in opts.to_dict().items() if k not in _SPEED_OPTIONS}
    importance = {name: getattr(opts, name) for name in sorted(own_options() - {"cv", "cv_dir"})}
    h.update(json.dumps({"classifier": inputs.classifier, "column": inputs.column, "options": settings,
                         "importance": importance, "folds": [test for _, test in folds], "aam": __version__},
                        sort_keys=True).encode())
    return h.hexdigest()


def default_run_dir(key):
    """Where a run keeps its folds when no ``cv_dir`` is given: the user's cache, named by the run's key."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "q2-aam", "crossval", key[:20])


def claim_run_dir(path, key):
    """Create `path` for a run with `key`, or check that the run it already holds is this one."""
    key_file = os.path.join(path, KEY_FILE)
    if os.path.isfile(key_file):
        with open(key_file) as fh:
            held = json.load(fh).get("key")
        if held != key:
            raise AAMInputError(f"{{opt:cv_dir}} {path!r} holds the folds of another cross-validation (other "
                                "inputs or options), which this run must not mix with its own. Give another "
                                "directory, or delete that one to start over.")
        return
    if os.path.isdir(path) and os.listdir(path):
        raise AAMInputError(f"{{opt:cv_dir}} {path!r} is not empty and holds no cross-validation; give an empty or "
                            "new directory.")
    os.makedirs(path, exist_ok=True)
    _write_atomic(key_file, json.dumps({"key": key}))


def _write_atomic(path, text):
    """Write `text` to `path` so that an interruption leaves either no file or the whole file."""
    partial = path + ".partial"
    with open(partial, "w") as fh:
        fh.write(text)
    os.replace(partial, path)


def _fold_file(run_dir, k):
    return os.path.join(run_dir, f"fold-{k}.tsv")


def _importance_file(run_dir, k):
    return os.path.join(run_dir, f"fold-{k}-importance.npz")


def read_fold(run_dir, k, classifier):
    """A finished fold's predictions (None when the fold has not finished)."""
    path = _fold_file(run_dir, k)
    if not os.path.isfile(path):
        return None
    frame = pd.read_csv(path, sep="\t", index_col=0, dtype=str, keep_default_na=False)
    frame.index = frame.index.astype(str)
    labels = [f"{m}_prediction" for m in (AAM, FOREST)] if classifier else []
    for column in frame.columns:
        if column not in labels:
            frame[column] = frame[column].astype(float)
    return frame


def write_fold(run_dir, k, frame):
    """Keep a finished fold's predictions (written whole or not at all)."""
    frame = frame.copy()
    frame.index.name = "sample_id"
    _write_atomic(_fold_file(run_dir, k), frame.to_csv(sep="\t"))


# ---- one fold -----------------------------------------------------------------------------------------------------
def _train_options(opts):
    """The 'train' options of the models every fold fits (the cross-validation's own options left out)."""
    return {o.name: getattr(opts, o.name) for o in O.options_for(O.TRAIN, "plugin")}


def _predict_options(opts):
    """The 'predict' options a fold's held-out samples are predicted with: those of the fit (seed, hardware,
    rarefaction draws), the batch size left at prediction's own default."""
    return {o.name: getattr(opts, o.name) for o in O.options_for(O.PREDICT, "plugin")
            if O.TRAIN in o.commands and o.name != "batch_size"}


@dataclass
class Engine:
    """The engine's fitting and predicting functions (`aam.api.train`, `aam.api.predict`), handed down by the
    caller so that this module does not import the facade that imports it."""

    train: object
    predict: object
    context: object = None


def fit_aam(engine, labelled, inputs, train_ids, opts, log):
    """`aam.api.train` on the training samples only (their table, distances and metadata)."""
    distance_matrix = inputs.distance_matrix
    if distance_matrix is not None:
        distance_matrix = distance_matrix.filter([s for s in train_ids if s in distance_matrix], strict=False)
    table = labelled.table.filter(train_ids, axis="sample", inplace=False)
    table = table.remove_empty(axis="observation", inplace=False)
    return engine.train(table, labelled.metadata.loc[train_ids], inputs.column, classifier=inputs.classifier,
                        sequences=inputs.sequences, tree=inputs.tree, distance_matrix=distance_matrix,
                        categorical_columns=inputs.categorical_columns or None,
                        numeric_columns=inputs.numeric_columns or None, output_dir=None, progress=True,
                        log=log, context=engine.context, **_train_options(opts))


def predict_aam(engine, result, labelled, inputs, test_ids, opts, log):
    """The fold's AAM predictions of its held-out samples, as `aam.api.predict` writes them."""
    table = labelled.table.filter(test_ids, axis="sample", inplace=False)
    frame = engine.predict(result.checkpoint, table, sequences=inputs.sequences, metadata=labelled.metadata,
                           log=log, context=engine.context, **_predict_options(opts))
    frame.index = frame.index.astype(str)
    return frame


def forest_predictions(labelled, train_ids, test_ids, opts, classifier):
    """q2-sample-classifier's random forest ({opt:forest_trees} trees, scikit-learn defaults otherwise) fit to the
    relative abundances of every read of the training samples, predicting the held-out ones (``rf500-rel``)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    from aam.forest import relative_abundance
    train = labelled.table.filter(train_ids, axis="sample", inplace=False)
    features = list(train.ids("observation"))
    x_train = relative_abundance(train.matrix_data.T.tocsr())
    test = labelled.table.filter(test_ids, axis="sample", inplace=False)
    x_test = relative_abundance(test.to_dataframe(dense=True).T.reindex(columns=features, fill_value=0).to_numpy())
    y = labelled.y.loc[[str(s) for s in train.ids()]]
    threads = opts.num_threads or os.cpu_count() or 1
    forest = (RandomForestClassifier if classifier else RandomForestRegressor)(
        n_estimators=opts.forest_trees, random_state=opts.seed, n_jobs=threads)
    forest.fit(x_train, y.astype(str).to_numpy() if classifier else y.to_numpy(float))
    ids = [str(s) for s in test.ids()]
    frame = pd.DataFrame({"prediction": forest.predict(x_test)}, index=ids)
    if classifier:
        for j, label in enumerate(forest.classes_):
            frame[PROBABILITY + str(label)] = forest.predict_proba(x_test)[:, j]
    return frame


def _model_columns(frame, model, classes):
    """A model's prediction (and probability of every class, 0 for a class its fold never trained on)."""
    out = pd.DataFrame({f"{model}_prediction": frame["prediction"]}, index=frame.index)
    for label in classes or []:
        column = PROBABILITY + label
        out[f"{model}_{column}"] = frame[column].astype(float) if column in frame.columns else 0.0
    return out


def run_fold(k, train_ids, test_ids, labelled, inputs, opts, classes, log, engine, plan=None):
    """Both models fit to one fold's training samples: their predictions of its held-out samples, and (with a
    `plan`) AAM's feature importance measured on them."""
    result = fit_aam(engine, labelled, inputs, train_ids, opts, log)
    importance = None
    try:
        aam = predict_aam(engine, result, labelled, inputs, test_ids, opts, log)
        if plan is not None:
            importance = _fold_importance(k, result, labelled, inputs, test_ids, opts, log, engine, plan)
    finally:
        result.run_dir.cleanup()  # the fold's model is not kept: its predictions (and importance) are
    forest = forest_predictions(labelled, train_ids, test_ids, opts, inputs.classifier)
    missing = [s for s in test_ids if s not in aam.index]
    if missing:
        raise AAMInputError(f"fold {k}: AAM predicted no value for held-out sample(s) {preview(missing)}; every "
                            "sample of a cross-validation must have reads.")
    frame = pd.concat([_model_columns(aam.loc[test_ids], AAM, classes),
                       _model_columns(forest.loc[test_ids], FOREST, classes)], axis=1)
    frame.insert(0, "fold", k)
    return frame, importance


def _fold_importance(k, result, labelled, inputs, test_ids, opts, log, engine, plan):
    """AAM's loss increases on the fold's held-out samples when each group of `plan` is permuted."""
    from aam.interpret.outoffold import measure_fold
    table = labelled.table.filter(test_ids, axis="sample", inplace=False)
    predict_opts = O.resolve(O.PREDICT, **_predict_options(opts))
    return measure_fold(result.checkpoint, table, inputs.sequences, labelled.metadata, labelled.y, plan,
                        predict_opts, engine.context, log, k)


# ---- the whole run --------------------------------------------------------------------------------------------------
def _fold_line(k, cv, train_ids, test_ids, groups_of):
    line = f"fold {k}/{cv}: {len(train_ids)} training / {len(test_ids)} held-out samples"
    if groups_of is not None:
        line += (f" ({len({groups_of[s] for s in train_ids})} / {len({groups_of[s] for s in test_ids})} groups, none "
                 "on both sides)")
    return line


def _fold_score(frame, truth, classifier):
    """A fold's line of scores: accuracy or MAE of each model on its held-out samples."""
    truth = truth.loc[frame.index]
    parts = []
    for model, name in ((AAM, "AAM"), (FOREST, "forest")):
        values = frame[f"{model}_prediction"]
        if classifier:
            parts.append(f"{name} accuracy {np.mean(values.astype(str) == truth.astype(str)):.3f}")
        else:
            parts.append(f"{name} MAE {np.mean(np.abs(values.astype(float) - truth.astype(float))):.4g}")
    return ", ".join(parts)


def _fold_row(k, train_ids, test_ids, groups_of, seconds, resumed):
    row = {"fold": k, "training samples": len(train_ids), "held-out samples": len(test_ids),
           "seconds": round(seconds, 1), "read back": resumed}
    if groups_of is not None:
        row["training groups"] = len({groups_of[s] for s in train_ids})
        row["held-out groups"] = len({groups_of[s] for s in test_ids})
    return row


def cross_validate_run(inputs, opts, log, engine):
    """Every fold of a cross-validation, resuming from the finished folds its run directory holds.

    Parameters
    ----------
    inputs : CrossValInputs
    opts : aam.options.Options
        Resolved for 'crossval': the 'train' options of the models and ``cv``, ``cv_dir``.
    log : callable
    engine : Engine
        The functions that fit and predict AAM, and the run's context.

    Returns
    -------
    CrossValResult
    """
    inputs = _with_distances_loaded(inputs)
    labelled = labelled_samples(inputs, opts)
    folds = make_folds(labelled, opts, inputs.classifier)
    classes = sorted(labelled.y.astype(str).unique()) if inputs.classifier else None
    plan = _importance_plan(labelled, inputs, opts)  # a taxonomy that does not fit is refused before anything is made
    key = run_key(labelled, inputs, opts, folds)
    run_dir = opts.cv_dir or default_run_dir(key)
    claim_run_dir(run_dir, key)
    groups_of = dict(zip(labelled.ids, labelled.groups)) if labelled.groups else None
    log(f"{opts.cv}-fold cross-validation of {inputs.column!r} on {len(labelled.ids)} samples"
        + (f" in {len(set(labelled.groups))} groups of {opts.group_column!r}" if groups_of else "")
        + f"; finished folds are kept in {run_dir}")
    if plan is not None:
        how = (f"taxa at rank {opts.rank}" if inputs.taxonomy is not None else
               f"features correlated above {opts.correlation:g}")
        log(f"feature importance in every fold: the {len(plan.groups)} most abundant groups ({how}) x "
            f"{opts.repeats} permutations, on the fold's held-out samples")
    frames, measured, rows = [], [], []
    for k, (train_ids, test_ids) in enumerate(folds, start=1):
        start = time.time()
        frame, importance = _read_back(run_dir, k, inputs.classifier, plan)
        resumed = frame is not None
        log(_fold_line(k, opts.cv, train_ids, test_ids, groups_of) + (": read back (finished before)" if resumed
                                                                      else ""))
        if not resumed:
            frame, importance = run_fold(k, train_ids, test_ids, labelled, inputs, opts, classes, log, engine, plan)
            if importance is not None:  # before the fold's predictions: a fold file means the fold is whole
                importance.save(_importance_file(run_dir, k))
            write_fold(run_dir, k, frame)
        log(f"fold {k}/{opts.cv} done in {time.time() - start:.0f} s: "
            f"{_fold_score(frame, labelled.y, inputs.classifier)}")
        frames.append(frame)
        measured.append(importance)
        rows.append(_fold_row(k, train_ids, test_ids, groups_of, time.time() - start, resumed))
    predictions = _out_of_fold(frames, labelled)
    result = CrossValResult(predictions, pd.DataFrame(rows), classes, inputs.column, run_dir)
    if plan is not None:
        result.importance = _pooled(measured, plan, result, groups_of)
    return result


def _importance_plan(labelled, inputs, opts):
    """The feature groups every fold measures (None when importance is off)."""
    if not opts.importance:
        return None
    from aam.interpret.outoffold import plan_importance
    return plan_importance(labelled.table, inputs.taxonomy, opts)


def _read_back(run_dir, k, classifier, plan):
    """A finished fold's predictions and importance; (None, None) when any part of it is missing."""
    from aam.interpret.outoffold import FoldImportance
    frame = read_fold(run_dir, k, classifier)
    if frame is None or plan is None:
        return frame, None
    importance = FoldImportance.load(_importance_file(run_dir, k))
    return (frame, importance) if importance is not None else (None, None)


def _pooled(measured, plan, result, groups_of):
    """Every fold's importance pooled over all samples, the direction read from the out-of-fold predictions."""
    from aam.interpret.outoffold import pooled_importance
    ids = plan.sample_ids
    values, probabilities = result.model_predictions(AAM)
    blend = (probabilities.loc[ids].to_numpy(float) if result.classes is not None else
             values.loc[ids].to_numpy(float)[:, None])
    groups = [groups_of[s] for s in ids] if groups_of is not None else None
    return pooled_importance(measured, plan, groups, blend, result.classes)


def _with_distances_loaded(inputs):
    """The inputs with a distance matrix file read once (each fold takes its training samples' rows)."""
    from dataclasses import replace

    from aam.data.distances import load_distance_matrix
    if inputs.distance_matrix is None:
        return inputs
    return replace(inputs, distance_matrix=load_distance_matrix(inputs.distance_matrix, ids=inputs.distance_ids),
                   distance_ids=None)


def _out_of_fold(frames, labelled):
    """Every fold's predictions in the samples' order, with the truth and the group of each sample."""
    frame = pd.concat(frames).loc[labelled.ids]
    frame.insert(1, "truth", labelled.y.loc[labelled.ids])
    frame.insert(2, "group", labelled.groups if labelled.groups else labelled.ids)
    frame["fold"] = frame["fold"].astype(int)
    frame.index.name = "sample_id"
    return frame


def finish_run(result, keep):
    """Remove the run directory of a completed cross-validation unless it was asked for (``cv_dir``)."""
    if not keep and os.path.isdir(result.run_dir):
        shutil.rmtree(result.run_dir, ignore_errors=True)


def cross_validate(inputs, opts, options, log, engine, final=False, cleanup=True):
    """`aam.api.cross_validate`: the folds (`cross_validate_run`), then the final model on every sample when
    asked for (`options`: the caller's own, `opts` their resolved form), then the run directory removed unless
    kept (``cv_dir``, or `cleanup` False for a caller with steps of its own, which calls `finish_run` itself)."""
    result = cross_validate_run(inputs, opts, log, engine)
    if final:
        log(f"the final model: fit to all {len(result.predictions)} samples")
        train_options = {k: v for k, v in options.items() if k not in own_options()}
        result.final = engine.train(inputs.table, inputs.metadata, inputs.column, classifier=inputs.classifier,
                                    sequences=inputs.sequences, tree=inputs.tree,
                                    distance_matrix=inputs.distance_matrix, distance_ids=inputs.distance_ids,
                                    categorical_columns=inputs.categorical_columns,
                                    numeric_columns=inputs.numeric_columns, log=log, context=engine.context,
                                    **train_options)
    finish_run(result, keep=opts.cv_dir is not None or not cleanup)
    return result
