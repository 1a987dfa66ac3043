"""Model recipes of the held-out benchmark: a registry of name -> function(fold, seed, budget) -> Prediction.

A recipe trains on ``fold.train`` (and may pretrain on ``fold.pool``, the training samples without labels), and
predicts every sample of ``fold.test``. The harness times the call, checks the output and scores it; a sample the
recipe leaves out (or predicts as NaN) is counted as unscored for it. Hyperparameters may only be chosen from
training samples (inner cross-validation or a validation split of ``fold.train``).

Adding a model::

    from benchmarks.heldout_models import Prediction, recipe

    @recipe("my-model", "one line for the docs")
    def my_model(fold, seed, budget):
        ...
        return Prediction(values, probabilities, info={"what it did": ...})

then ``python -m benchmarks.heldout --models my-model`` (a recipe in another module: ``--recipes that.module``,
which worker processes of ``--jobs`` import too). AAM variants can call `aam_fit_predict` with their own
pretraining / fine-tuning options.

The recipes here: the random forest as q2-sample-classifier trains it (``rf100``, ``rf500``), PCoA of the
study's distances + ridge / logistic regression (``pcoa``, and ``pcoa-all`` whose ordination also sees the
held-out samples' tables), AAM with the engine's defaults (``aam``) and with its base fine-tuned too
(``aam-unfrozen``, not run by default). Semi-supervised recipes, which also read the unlabelled training tables,
are in `benchmarks.heldout_semi`.
"""
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pandas as pd


def progress(prefix):
    """A log function for a recipe's long steps (an engine's per-epoch lines): timestamped lines on stderr."""
    import sys

    def say(line):
        print(f"[heldout {time.strftime('%H:%M:%S')}] {prefix}: {line}", file=sys.stderr, flush=True)
    return say


@dataclass
class Budget:
    """Compute a run may spend on the models that train for epochs, and what else a recipe needs to know.

    Attributes
    ----------
    pretrain_epochs, train_epochs : int or None
        Epoch limits for AAM pretraining and fine-tuning; None (the default) runs the engine's defaults, which is
        what the AAM rows should measure: the model a user gets without tuning.
    threads : int
        CPU threads per model (torch and BLAS; forests use n_jobs=1 as q2-sample-classifier does).
    quick : bool
        Smoke-test mode: recipes use tiny architectures.
    """

    pretrain_epochs: Optional[int] = None
    train_epochs: Optional[int] = None
    threads: int = 1
    quick: bool = False

    def to_dict(self):
        return dict(self.__dict__)


@dataclass
class Prediction:
    """What a recipe returns.

    Attributes
    ----------
    values : pandas.Series
        Prediction per held-out sample ID (a number, or a class label).
    probabilities : pandas.DataFrame, optional
        Classifiers: one column per class label, rows indexed by sample ID.
    info : dict
        What the recipe did and chose (settings, epochs run, selected hyperparameters, sub-timings); JSON-able.
    """

    values: pd.Series
    probabilities: Optional[pd.DataFrame] = None
    info: Dict = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A registered model: its function, a one-line description, and what it needs from the fold."""

    name: str
    fn: Callable
    description: str
    needs_distances: bool = False
    kinds: Tuple[str, ...] = ("regression", "classification")
    default: bool = True
    uses_budget: bool = False


RECIPES: Dict[str, Recipe] = {}


def recipe(name, description, needs_distances=False, kinds=("regression", "classification"), default=True,
           uses_budget=False):
    """Register ``fn(fold, seed, budget) -> Prediction`` under `name`.

    Parameters
    ----------
    name : str
    description : str
        One line shown in the docs' model list.
    needs_distances : bool
        The harness computes ``fold.distances()`` before timing the recipe (shared by every model of the fold).
    kinds : tuple of str
        Task kinds the recipe handles.
    default : bool
        Part of a run when ``--models`` is not given.
    uses_budget : bool
        Its cost depends on the `Budget` (epochs): the docs then state the run's budget.
    """
    def register(fn):
        RECIPES[name] = Recipe(name, fn, description, needs_distances, tuple(kinds), default, uses_budget)
        return fn
    return register


# ------------------------------------------------------------------------------------------ random forest

def _feature_dicts(table):
    """One {feature ID: count} dict per sample, as q2-sample-classifier's `_extract_features` builds them."""
    ids = table.ids("observation")
    matrix = table.matrix_data.T.tocsr()  # [N, F]
    return [{ids[j]: v for j, v in zip(matrix[i].indices, matrix[i].data)} for i in range(matrix.shape[0])]


def forest(fold, seed, n_estimators):
    """scikit-learn's random forest exactly as q2-sample-classifier's fit-classifier / fit-regressor builds it.

    q2-sample-classifier (2022.11, `utilities._set_parameters_and_estimator`) wraps the estimator in
    ``Pipeline([('dv', DictVectorizer()), ('est', RandomForest...(n_jobs=1, n_estimators=100,
    random_state=None))])`` fed with the table's counts as given (no normalization), with feature selection
    and parameter tuning off by default; prediction uses the same pipeline (features unseen in training are
    ignored by the DictVectorizer). Here the table is the fold's shared rarefied draw (so counts are
    proportional to relative abundance, to which trees are indifferent anyway) and random_state is the seed,
    as ``--p-random-state`` would set it.
    """
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.pipeline import Pipeline
    est = (RandomForestClassifier if fold.task.classifier else RandomForestRegressor)(
        n_jobs=1, n_estimators=n_estimators, random_state=seed)
    model = Pipeline([("dv", DictVectorizer()), ("est", est)])
    y = fold.train.y.loc[fold.train.rarefied.ids()]
    model.fit(_feature_dicts(fold.train.rarefied), y.to_numpy())
    test = fold.test.rarefied
    X = _feature_dicts(test)
    values = pd.Series(model.predict(X), index=[str(s) for s in test.ids()])
    prob = None
    if fold.task.classifier:
        prob = pd.DataFrame(model.predict_proba(X), index=values.index, columns=list(model.classes_))
    return Prediction(values, prob, {"n_estimators": n_estimators, "n_jobs": 1, "random_state": seed,
                                     "features": len(model.named_steps["dv"].feature_names_)})


@recipe("rf100", "random forest, 100 trees (q2-sample-classifier's default), rarefied counts")
def rf100(fold, seed, budget):
    return forest(fold, seed, 100)


@recipe("rf500", "random forest, 500 trees, otherwise as rf100 (the reference for relative MAE)")
def rf500(fold, seed, budget):
    return forest(fold, seed, 500)


def _relative(table, features):
    """Relative abundances of a biom table in the column order of `features` (absent features are 0): [N, F]."""
    counts = table.to_dataframe(dense=True).T.reindex(columns=features, fill_value=0).to_numpy(np.float64)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


@recipe("rf500-rel", "random forest, 500 trees, on the inputs of AAM's ensemble forest: relative abundances of "
        "every read (no rarefaction) of the training and the held-out samples")
def rf500_relative(fold, seed, budget):
    # the +rf ensembles' forest is fit to the relative abundances of the unrarefied tables (the engine keeps every
    # read of a sample for it), which alone moves some tasks a lot (ibd-ibd): this row is that forest without the
    # network, so a +rf row is compared with its own forest
    features = list(fold.train.table.ids("observation"))
    return _forest_on(fold, seed, _relative(fold.train.table, features), _relative(fold.test.table, features),
                      {"features": len(features)})


def _forest_on(fold, seed, x_train, x_test, info, y=None):
    """A 500-tree forest (scikit-learn defaults, as q2-sample-classifier's) on feature matrices whose rows are the
    samples of ``fold.train.table`` and ``fold.test.table`` in table order (or, with targets `y` of its own rows,
    any training matrix)."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    if y is None:
        y = fold.train.y.loc[[str(s) for s in fold.train.table.ids()]].to_numpy()
    est = (RandomForestClassifier if fold.task.classifier else RandomForestRegressor)(
        n_jobs=1, n_estimators=500, random_state=seed).fit(x_train, y)
    ids = [str(s) for s in fold.test.table.ids()]
    values = pd.Series(est.predict(x_test), index=ids)
    prob = (pd.DataFrame(est.predict_proba(x_test), index=ids, columns=list(est.classes_))
            if fold.task.classifier else None)
    return Prediction(values, prob, {"n_estimators": 500, "n_jobs": 1, "random_state": seed, **info})


# ------------------------------------------------------------------------------------------ PCoA + linear

def pcoa_project(train_d, cross_d):
    """Principal coordinates of training samples, and the same axes for new samples (Gower 1968).

    With A = -D**2 / 2 and B the double-centred A = V diag(lam) V^T, training coordinates are V sqrt(lam); a new
    sample with squared distances d**2 to the training samples has b = a - mean(a) - (rowmeans(A) - mean(A))
    with a = -d**2 / 2, and coordinates diag(lam)**-1/2 V^T b (which gives back a training sample's own row).

    Parameters
    ----------
    train_d : np.ndarray [N, N]
        Distances between training samples.
    cross_d : np.ndarray [M, N]
        Distances from new samples to the training samples.

    Returns
    -------
    (np.ndarray [N, K], np.ndarray [M, K])
        Coordinates on the K axes with positive eigenvalues, largest first.
    """
    A = -0.5 * np.asarray(train_d, dtype=np.float64) ** 2              # [N, N]
    row = A.mean(axis=1)                                              # [N]
    grand = A.mean()
    B = A - row[:, None] - row[None, :] + grand                       # [N, N]
    lam, V = np.linalg.eigh(B)
    order = np.argsort(lam)[::-1]
    lam, V = lam[order], V[:, order]
    pos = lam > 1e-10 * max(lam[0], 1e-300)
    lam, V = lam[pos], V[:, pos]                                      # [K], [N, K]
    a = -0.5 * np.asarray(cross_d, dtype=np.float64) ** 2             # [M, N]
    b = a - a.mean(axis=1, keepdims=True) - (row - grand)[None, :]    # [M, N]
    return V * np.sqrt(lam), (b @ V) / np.sqrt(lam)


AXES_GRID = (2, 5, 10, 20, 40)
ALPHA_GRID = np.logspace(-2, 4, 13)   # ridge penalty on standardized axes
C_GRID = np.logspace(-3, 2, 11)       # inverse logistic penalty


class FirstAxes:
    """Keep the first `k` columns (principal axes); a transformer so that inner CV can choose k."""

    def __init__(self, k=10):
        self.k = k

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X[:, : self.k]

    def get_params(self, deep=True):
        return {"k": self.k}

    def set_params(self, **params):
        self.k = params.get("k", self.k)
        return self


def inner_cv(fold, seed):
    """Cross-validation over the labelled training samples, grouped like the task (None if too few groups)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
    groups = fold.train.groups.loc[fold.train.ids].to_numpy()
    n_groups = len(set(groups))
    if n_groups < 3:
        return None, None
    k = min(5, n_groups)
    if fold.task.classifier:
        smallest = fold.train.y.value_counts().min()
        k = max(2, min(k, int(smallest))) if smallest >= 2 else None
        if k is None:
            return None, None
        return StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed), groups
    return GroupKFold(n_splits=k), groups


def ordination(fold, basis):
    """PCoA of the fold's distances between the samples `basis`, and ``fold.test`` placed on its axes
    (`pcoa_project`): ([len(basis), K], [len(fold.test.ids), K]) in the order of `basis` and ``fold.test.ids``."""
    dm = fold.distances()
    d_test = np.stack([dm.data[dm.index(s)] for s in fold.test.ids])[:, [dm.index(s) for s in basis]] \
        if fold.test.ids else np.zeros((0, len(basis)))
    return pcoa_project(dm.filter(basis).data, d_test)


def pcoa_linear(fold, seed, transductive=False):
    """Ridge (regression) or logistic regression (classification) on the first PCoA axes of the study's distances.

    The ordination is fitted on the training samples (all of them: labels are not used), held-out samples are
    placed on its axes (`pcoa_project`); with `transductive`, the ordination is of training and held-out samples
    together (labels still unused), as in the issue's anchor. The number of axes and the penalty are chosen by
    grouped inner cross-validation on the labelled training samples (MAE / accuracy).
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    basis = fold.pool.ids + (fold.test.ids if transductive else [])
    coords, test_coords = ordination(fold, basis)
    where = {s: i for i, s in enumerate(basis)}
    X = coords[[where[s] for s in fold.train.ids]]
    y = fold.train.y.loc[fold.train.ids].to_numpy()
    axes = [k for k in AXES_GRID if k <= coords.shape[1]] or [coords.shape[1]]
    if fold.task.classifier:
        est, grid, scoring = LogisticRegression(max_iter=5000), {"est__C": list(C_GRID)}, "accuracy"
    else:
        est, grid, scoring = Ridge(), {"est__alpha": list(ALPHA_GRID)}, "neg_mean_absolute_error"
    pipe = Pipeline([("axes", FirstAxes()), ("scale", StandardScaler()), ("est", est)])
    grid["axes__k"] = axes
    cv, groups = inner_cv(fold, seed)
    if cv is None:
        # too few groups to validate: a middle setting rather than a choice on the training fit
        pipe.set_params(axes__k=axes[min(2, len(axes) - 1)])
        model, chosen = pipe.fit(X, y), {"inner_cv": "none (fewer than 3 groups or classes too small)"}
    else:
        search = GridSearchCV(pipe, grid, scoring=scoring, cv=cv, error_score=np.nan)
        search.fit(X, y, groups=groups)
        model = search.best_estimator_
        chosen = {k.split("__")[-1]: (float(v) if not isinstance(v, (int, np.integer)) else int(v))
                  for k, v in search.best_params_.items()}
        chosen["inner_folds"] = cv.get_n_splits()
    values = pd.Series(model.predict(test_coords), index=list(fold.test.ids))
    prob = None
    if fold.task.classifier:
        prob = pd.DataFrame(model.predict_proba(test_coords), index=values.index,
                            columns=list(model.named_steps["est"].classes_))
    return Prediction(values, prob, {"axes_available": int(coords.shape[1]), "ordination_samples": len(basis),
                                     "transductive": transductive, **chosen})


@recipe("pcoa", "PCoA of the study's distances (UniFrac or Bray-Curtis) on the training samples, held-out samples "
        "projected; ridge / logistic regression, axes and penalty by grouped inner CV", needs_distances=True)
def pcoa(fold, seed, budget):
    return pcoa_linear(fold, seed, transductive=False)


@recipe("pcoa-all", "as pcoa, but the ordination also includes the held-out samples' tables (labels unused; "
        "transductive, as in the issue's anchor)", needs_distances=True)
def pcoa_all(fold, seed, budget):
    return pcoa_linear(fold, seed, transductive=True)


@recipe("rf500-rel+pcoa", "as rf500-rel, with the first 20 PCoA axes of the study's distances (training-only "
        "ordination, held-out samples projected) beside the relative abundances: does the forest gain from a "
        "community-level summary it cannot build from single-ASV splits?", needs_distances=True, default=False)
def rf500_relative_pcoa(fold, seed, budget):
    features = list(fold.train.table.ids("observation"))
    coords, test_coords = ordination(fold, fold.pool.ids)
    k = min(20, coords.shape[1])
    where = {s: i for i, s in enumerate(fold.pool.ids)}
    test_where = {s: i for i, s in enumerate(fold.test.ids)}
    train_axes = coords[[where[str(s)] for s in fold.train.table.ids()], :k]
    test_axes = test_coords[[test_where[str(s)] for s in fold.test.table.ids()], :k]
    return _forest_on(fold, seed, np.hstack([_relative(fold.train.table, features), train_axes]),
                      np.hstack([_relative(fold.test.table, features), test_axes]),
                      {"features": len(features), "axes": k})


# ------------------------------------------------------------------------------------------ AAM

#: the ensemble as it was the default until 2026-12-01: its forest reads abundances only, the lowest loss sets the share
FIRST_ENSEMBLE = {"ensemble": "forest", "forest_embedding_axes": 0, "ensemble_share_rule": "lowest-loss"}


# tiny architecture for --quick (a smoke test of the harness, not a model worth scoring)
QUICK_AAM = dict(token_limit=32, batch_size=4, asv_chunk_size=64)


def aam_options(fold, seed, budget, pretrain_options=None):
    """Options every AAM call of a fold shares (depth, seed, threads; the quick slice's small sizes), and the
    pretraining's on top (grouped validation split, the budget's epochs): (common, pretraining) dicts. Recipes that
    pretrain through `pretrained_encoder` with these share one pretraining per fold."""
    common = dict(rarefy_depth=fold.depth, seed=seed, num_threads=budget.threads)
    if budget.quick:
        common.update(QUICK_AAM)
    pre_kw = {**common, "group_column": fold.data.group_column, **(pretrain_options or {})}
    if budget.pretrain_epochs:
        pre_kw["epochs"] = budget.pretrain_epochs
    return common, pre_kw


def aam_fit_predict(fold, seed, budget, pretrain_options=None, train_options=None, transductive=False):
    """AAM through the engine's Python API, as the README's workflow runs it.

    ``aam.api.pretrain`` on the training samples' tables (``fold.pool``; UniFrac from the task's tree, or the
    fold's distances without one) -> ``aam.api.train`` on the labelled training samples with
    ``pretrained=...`` (its base frozen, the default) -> ``aam.api.predict`` on the held-out samples. Everything not
    given here is the engine's default; the rarefaction depth is the fold's, the epochs come from `budget`.
    Extra options for a variant go in `pretrain_options` / `train_options`.
    """
    from aam import api
    from aam.ensemble import Ensemble, member_outputs
    data = fold.data
    common, pre_kw = aam_options(fold, seed, budget, pretrain_options)
    group = data.group_column
    log = progress(f"{data.task.name} fold {fold.index + 1} f={fold.label_fraction:g} aam")
    t0 = time.perf_counter()
    pre, reused = pretrained_encoder(fold, pre_kw, log, transductive=transductive)
    t1 = time.perf_counter()
    train_kw = {**common, **({"epochs": budget.train_epochs} if budget.train_epochs else {}), "group_column": group,
                **(train_options or {})}
    res = api.train(fold.train.table, fold.train.metadata, data.task.column, classifier=data.task.classifier,
                    sequences=data.sequences, pretrained=pre.checkpoint, progress=False, log=log, **train_kw)
    t2 = time.perf_counter()
    out = api.predict(res.checkpoint, fold.test.table, sequences=data.sequences, log=log,
                      num_threads=budget.threads, seed=seed)
    t3 = time.perf_counter()
    prob = None
    if data.task.classifier:
        cols = [c for c in out.columns if c.startswith("probability_")]
        prob = out[cols].rename(columns=lambda c: c[len("probability_"):])
    pretrain_seconds = reused if reused is not None else t1 - t0
    info = {"pretrain_epochs": budget.pretrain_epochs, "pretrain_epochs_run": len(pre.history),
            "train_epochs": budget.train_epochs, "train_epochs_run": len(res.history),
            "pretrain_seconds": round(pretrain_seconds, 1), "pretrain_reused": reused is not None,
            "train_seconds": round(t2 - t1, 1),
            "predict_seconds": round(t3 - t2, 1), "pretrain_options": pre_kw, "train_options": train_kw,
            "pretrained_on_heldout_tables": transductive}
    if reused is not None:
        # the harness adds this to the measured time: the row's seconds are what the model costs on the fold
        info["reused_seconds"] = round(reused, 1)
    ensemble = res.checkpoint.record.ensemble
    if ensemble is not None:
        forest = Ensemble.from_checkpoint(res.checkpoint)["forest"] if "forest" in ensemble.names else None
        info.update(ensemble_share=ensemble.weight("network"), ensemble_share_choice=ensemble.choice,
                    forest_embedding_axes=0 if forest is None or forest.axes is None else len(forest.axes.components))
    info.update(_history_summary(pre.history, "pretrain"))
    info.update(_history_summary(res.history, "train"))
    result = Prediction(out["prediction"], prob, info)
    if (train_options or {}).get("ensemble") == "forest":
        # the ensemble's forest is a row of its own (rf500-rel+aam): keep its predictions for that row. Its network
        # is the network-alone row only with a linear head; a transformer head inside an ensemble chooses its epoch
        # on half of the validation split (the other half chooses the share), so alone it is another model
        # (until 2026-12-01 04:13 the harness reused it anyway: see docs/science-notes.md)
        parts = ("network", "forest") if (train_options or {}).get("head") == "linear" else ("forest",)
        outputs = member_outputs(out, res.checkpoint.record)
        for part in parts:
            predictions, part_prob = outputs[part]
            found = Prediction(predictions, part_prob, dict(info))
            _PARTS[(part, _part_key(part, fold, pretrain_options, train_options, transductive))] = \
                (found, pretrain_seconds + t2 - t1)
        while len(_PARTS) > 2 * _PRETRAINED_KEEP:
            _PARTS.popitem(last=False)
    return result


_PARTS = OrderedDict()  # ("network" | "forest", fold and options) -> (Prediction, seconds it took): an ensemble's parts

#: ensemble options that do not change the network inside the ensemble
_FOREST_OPTIONS = ("ensemble", "forest_trees", "forest_embedding_axes", "ensemble_share_rule")


def _network_options(train_options):
    """The options of an ensemble's network trained alone: the same, without the forest's."""
    return {k: v for k, v in (train_options or {}).items() if k not in _FOREST_OPTIONS} or None


def _part_key(part, fold, pretrain_options, train_options, transductive):
    """Which rows may share an ensemble's part: its network depends on every option but the forest's; its forest
    (refit on every labelled sample, on axes of the pretrained base) only on the pretraining and the forest's."""
    if part == "forest":
        train_options = {k: v for k, v in (train_options or {}).items()
                         if k in ("forest_trees", "forest_embedding_axes")}
    else:
        train_options = _network_options(train_options)
    return _network_key(fold, pretrain_options, train_options, transductive)


def _network_key(fold, pretrain_options, train_options, transductive=False):
    import json
    train_options = {k: v for k, v in (train_options or {}).items() if k != "ensemble"} or None
    return (fold.data.task.name, fold.index, fold.label_fraction, tuple(fold.test.ids),
            json.dumps([pretrain_options, train_options], sort_keys=True, default=str), transductive)


_PRETRAINED = OrderedDict()  # pretraining inputs -> (TrainResult, seconds it took); a few recent ones
_PRETRAINED_KEEP = 6


def pretrained_encoder(fold, options, log, transductive=False):
    """``aam.api.pretrain`` on the fold's training tables, or the result of an identical earlier call of this run.

    Pretraining does not see labels, so the label fractions of a fold, and tasks of one study that share folds
    (ibd-ibd and ibd-age), can share it. With `transductive`, the held-out samples' tables are pretrained on as
    well (labels are never given to pretraining; as a user pretrains on every table of a study before predicting
    some of its samples). Returns (TrainResult, seconds of the original call or None if it ran now).
    """
    import json
    from aam import api
    data = fold.data
    key = (data.task.folder, data.task.table, tuple(fold.pool.ids), tuple(fold.test.ids), fold.depth,
           json.dumps(options, sort_keys=True, default=str), transductive)
    if key in _PRETRAINED:
        _PRETRAINED.move_to_end(key)
        pre, seconds = _PRETRAINED[key]
        return pre, seconds
    t0 = time.perf_counter()
    table, metadata, ids = fold.pool.table, fold.pool.metadata, list(fold.pool.ids)
    if transductive:
        table = table.merge(fold.test.table)
        metadata = pd.concat([metadata, fold.test.metadata])
        ids += list(fold.test.ids)
    if data.tree is not None:
        pre = api.pretrain(table, sequences=data.sequences, tree=data.tree, metadata=metadata,
                           progress=False, log=log, **options)
    else:
        pre = api.pretrain(table, sequences=data.sequences, distance_matrix=fold.distances(ids),
                           metadata=metadata, progress=False, log=log, **options)
    _PRETRAINED[key] = (pre, time.perf_counter() - t0)
    while len(_PRETRAINED) > _PRETRAINED_KEEP:
        _PRETRAINED.popitem(last=False)
    return pre, None


def _history_summary(history, prefix):
    """Best epoch and its validation loss from an engine history (rows of per-epoch metrics)."""
    if not history:
        return {}
    key = next((k for k in ("val/total_loss", "val/loss") if k in history[-1]), None)
    if key is None:
        return {}
    losses = [row.get(key, np.nan) for row in history]
    best = int(np.nanargmin(losses)) if np.isfinite(losses).any() else -1
    return {f"{prefix}_best_epoch": best + 1, f"{prefix}_best_val_loss": float(losses[best]) if best >= 0 else None}


def aam_network(fold, seed, budget, pretrain_options=None, train_options=None, transductive=False):
    """`aam_fit_predict`, or the network part of the matching ensemble row when that ran first on this fold in this
    process (its training seconds are counted here as well)."""
    key = ("network", _part_key("network", fold, pretrain_options, train_options, transductive))
    if key in _PARTS:
        network, seconds = _PARTS.pop(key)
        network.info["reused_seconds"] = round(seconds, 1)
        return network
    return aam_fit_predict(fold, seed, budget, pretrain_options, train_options, transductive)


def aam_forest_part(fold, seed, budget, pretrain_options=None, train_options=None, transductive=False):
    """The forest inside an AAM ensemble (`train_options` with ensemble forest), predicting alone: from the matching
    ensemble row when that ran first on this fold in this process, else trained here."""
    key = ("forest", _part_key("forest", fold, pretrain_options, train_options, transductive))
    if key not in _PARTS:
        aam_fit_predict(fold, seed, budget, pretrain_options, train_options, transductive)
        forest, _ = _PARTS.pop(key)
        return forest
    forest, seconds = _PARTS.pop(key)
    forest.info["reused_seconds"] = round(seconds, 1)
    return forest


@recipe("aam", "AAM's network alone: pretrain on the training samples, fine-tune with the frozen base, predict "
        "(ensemble none; everything else the engine's defaults, epochs set by the budget; not in a default run: "
        "it trains a second network per fold, which would take make heldout past an hour)", default=False,
        uses_budget=True)
def aam_alone(fold, seed, budget):
    return aam_network(fold, seed, budget, train_options={"ensemble": "none"})


@recipe("aam-unfrozen", "as aam, but fine-tuning also updates the pretrained base (freeze_base=False); slower",
        default=False, uses_budget=True)
def aam_unfrozen(fold, seed, budget):
    return aam_network(fold, seed, budget, train_options={"freeze_base": False, "ensemble": "none"})


@recipe("aam-unfrozen+rf", "as aam+rf, but fine-tuning also updates the pretrained base (freeze_base=False)",
        default=False, uses_budget=True)
def aam_unfrozen_ensemble(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options={**FIRST_ENSEMBLE, "freeze_base": False})


# pretraining ran into its 30-epoch cap on most ecam and keyboard folds (the epochs table of docs/science.md)
LONG_PRETRAINING = {"epochs": 100}


@recipe("aam-all", "as aam, but pretraining also reads the held-out samples' tables (labels are never used in "
        "pretraining; transductive, as pcoa-all: what a user gets by pretraining on every table of a study)",
        default=False, uses_budget=True)
def aam_all(fold, seed, budget):
    return aam_network(fold, seed, budget, train_options={"ensemble": "none"}, transductive=True)


@recipe("aam-all+rf", "as aam+rf, with aam-all's pretraining (held-out tables included, labels unused)",
        default=False, uses_budget=True)
def aam_all_ensemble(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options=FIRST_ENSEMBLE, transductive=True)


@recipe("aam-long", "as aam, but pretraining may run 100 epochs (early stopping after 10 without improvement) "
        "instead of 30", default=False, uses_budget=True)
def aam_long(fold, seed, budget):
    return aam_network(fold, seed, budget, pretrain_options=LONG_PRETRAINING, train_options={"ensemble": "none"})


@recipe("aam-long+rf", "as aam+rf, with aam-long's pretraining", default=False, uses_budget=True)
def aam_long_ensemble(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, pretrain_options=LONG_PRETRAINING,
                           train_options=FIRST_ENSEMBLE)


# ---- the variants of the method work (docs/science.md, ablations) ----------------------------------------------------
# Every variant starts from the shipped reference encoder, frozen (the engine's default), pretrains the sample level on
# the fold's training tables (UniFrac, or the task's distances without a tree) and fine-tunes on the training labels.

@recipe("aam-scratch", "as aam, but the nucleotide level is trained from random weights on the study "
        "(asv_encoder none), as AAM 0.1 did", default=False, uses_budget=True)
def aam_scratch(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, pretrain_options={"asv_encoder": "none"},
                           train_options={"asv_encoder": "none", "ensemble": "none"})


@recipe("aam-enc-tuned", "as aam, but pretraining also fine-tunes the shipped reference encoder "
        "(freeze_asv_encoder False: every ASV re-encoded each step, masked-nucleotide loss on)", default=False,
        uses_budget=True)
def aam_encoder_tuned(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, pretrain_options={"freeze_asv_encoder": False},
                           train_options={"freeze_asv_encoder": False, "ensemble": "none"})


@recipe("aam-linear", "as aam, with a linear head (ridge / logistic regression on the frozen base's sample "
        "embeddings, penalty by grouped CV on the training samples) instead of the transformer head",
        default=False, uses_budget=True)
def aam_linear(fold, seed, budget):
    return aam_network(fold, seed, budget, train_options={"head": "linear", "ensemble": "none"})


@recipe("aam+rf", "AAM's ensemble as it was the default until 2026-12-01 (forest_embedding_axes 0, "
        "ensemble_share_rule lowest-loss): as aam, blended in one model with a 500-tree random forest on relative "
        "abundances, the network's share the one with the lowest validation loss (untagged rows: on the samples "
        "that also chose the epoch, the first rule; :split rows: on a half of the validation split that chose "
        "nothing else, the engine's rule since)", default=False, uses_budget=True)
def aam_ensemble(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options=FIRST_ENSEMBLE)


#: the ensemble's forest also reads this many axes of the pretrained sample embedding (forest_embedding_axes)
EMBEDDING_AXES = {"ensemble": "forest", "forest_embedding_axes": 20, "ensemble_share_rule": "lowest-loss"}


@recipe("aam+rf-axes", "as aam+rf, with the ensemble's forest also reading the first 20 principal axes of the "
        "frozen pretrained base's distance embedding (forest_embedding_axes 20): AAM's ordination of each sample "
        "beside its relative abundances", default=False, uses_budget=True)
def aam_ensemble_axes(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options=EMBEDDING_AXES)


#: fine-tuning scores and keeps an average of the weights over about 2 epochs (ema_epochs)
WEIGHT_AVERAGE = {"ema_epochs": 2.0}


@recipe("aam-ema", "as aam, scoring and keeping an exponential moving average of the fine-tuned weights over about "
        "2 epochs (ema_epochs 2) instead of the raw weights", default=False, uses_budget=True)
def aam_ema(fold, seed, budget):
    return aam_network(fold, seed, budget, train_options={**WEIGHT_AVERAGE, "ensemble": "none"})


#: the network's share is the one nearest the forest alone within one standard error of the lowest validation loss
ONE_SE = {"ensemble_share_rule": "one-se"}


@recipe("aam+rf-axes-1se", "as aam+rf-axes, the network's share chosen by the one-se rule (ensemble_share_rule "
        "one-se: the share nearest the forest alone whose validation loss is within one standard error, over "
        "subjects, of the lowest): AAM with the engine's defaults since 2026-12-01", uses_budget=True)
def aam_ensemble_axes_one_se(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options={**EMBEDDING_AXES, **ONE_SE})


@recipe("rf500-rel+aam", "the forest inside aam+rf-axes and aam+rf-axes-1se (the same forest) predicting alone: "
        "500 trees on the relative abundances and 20 axes of AAM's pretrained sample embedding (compare "
        "rf500-rel+pcoa, the same with the study's PCoA)",
        uses_budget=True)
def rf500_relative_aam(fold, seed, budget):
    return aam_forest_part(fold, seed, budget, train_options=EMBEDDING_AXES)


@recipe("aam-ema+rf-axes-1se", "as aam+rf-axes-1se with aam-ema's network (weights averaged over about 2 epochs)",
        default=False, uses_budget=True)
def aam_ema_ensemble_axes_one_se(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options={**WEIGHT_AVERAGE, **EMBEDDING_AXES, **ONE_SE})


@recipe("aam-linear+rf", "as aam-linear, averaged with a 500-tree random forest (ensemble forest; equal shares: a "
        "linear head keeps no validation samples)", default=False, uses_budget=True)
def aam_linear_ensemble(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, train_options={**FIRST_ENSEMBLE, "head": "linear"})
