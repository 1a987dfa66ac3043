"""Choosing among recipes without the held-out fold: grouped inner cross-validation on a fold's training samples.

`inner_folds` cuts a `Fold`'s labelled training samples into k grouped (and, for classification, stratified) inner
folds, each a `Fold` of its own with the same depth and rarefied draw (a subset of the outer fold's); the inner
held-out samples come without their targets, exactly as the outer ones do. `choose` runs every candidate recipe on
every inner fold and picks the one with the best pooled inner score (MAE for regression, balanced accuracy for
classification; ties go to the earlier candidate). Nothing here reads the outer held-out samples' targets, so
shuffling them cannot change a choice (tests/test_heldout_yardstick.py checks it).
"""
from dataclasses import dataclass
from typing import Dict, Sequence

import numpy as np

from benchmarks import heldout_models as M
from benchmarks import heldout_tasks as T

INNER_FOLDS = 3


@dataclass(frozen=True)
class Choice:
    """The recipe an inner CV chose, and each candidate's inner score (None: it failed or had nothing to score).

    Attributes
    ----------
    recipe : str
    scores : dict of str to float or None
        Pooled inner score per candidate (MAE, lower better; or balanced accuracy, higher better).
    metric : str
    n_inner : int
        Inner folds used (0: too few groups to cut any, the first candidate is taken).
    """

    recipe: str
    scores: Dict[str, float]
    metric: str
    n_inner: int


def _subset(samples, ids, with_target):
    from aam.data.table import drop_empty
    md = samples.metadata.loc[ids]
    return T.Samples(list(ids), drop_empty(samples.table.filter(ids, axis="sample", inplace=False)),
                     drop_empty(samples.rarefied.filter(ids, axis="sample", inplace=False)), md,
                     samples.y.loc[ids] if with_target else None, samples.groups.loc[ids])


def inner_folds(fold, k, seed):
    """Grouped inner folds of ``fold.train`` (stratified by class for classification), as `Fold` objects.

    Returns
    -------
    list of (Fold, pandas.Series)
        Each inner fold and the targets of its held-out samples (from the training labels); an empty list when
        the training samples have fewer than 2 groups.
    """
    from aam.data.splits import kfold_splits
    ids = list(fold.train.ids)
    groups = fold.train.groups.loc[ids].astype(str)
    k = min(k, groups.nunique())
    if k < 2:
        return []
    stratify = list(fold.train.y.loc[ids].astype(str)) if fold.task.classifier else None
    out = []
    for _, test in kfold_splits(ids, k=k, seed=seed, stratify=stratify, groups=list(groups)):
        held = set(test)
        train_ids = [s for s in ids if s not in held]
        test_ids = [s for s in ids if s in held]
        pool_ids = [s for s in fold.pool.ids if s not in held]
        test_samples = _subset(fold.train, test_ids, False)
        test_samples.metadata = test_samples.metadata.drop(columns=[fold.task.column])
        inner = T.Fold(fold.data, fold.index, fold.depth, fold.label_fraction, _subset(fold.train, train_ids, True),
                       _subset(fold.pool, pool_ids, False), test_samples, [], [], fold._cache)
        out.append((inner, fold.train.y.loc[test_ids]))
    return out


def selection_metric(classifier):
    """The inner score and whether higher is better: balanced accuracy (classification) or MAE (regression)."""
    return ("balanced_accuracy", True) if classifier else ("mae", False)


def inner_scores(fold, seed, budget, candidates, k=INNER_FOLDS):
    """Each candidate's inner score pooled over the inner folds' held-out samples (None when it failed).

    Returns
    -------
    (dict of str to float or None, int)
        Scores and the number of inner folds.
    """
    from aam.evaluation import stats
    folds = inner_folds(fold, k, seed)
    metric, _ = selection_metric(fold.task.classifier)
    scores = {}
    for name in candidates:
        truth, pred = [], []
        try:
            for inner, y in folds:
                p = M.RECIPES[name].fn(inner, seed, budget).values
                p.index = p.index.astype(str)
                truth.append(y.to_numpy())
                pred.append(p.reindex(y.index).to_numpy())
        except Exception as err:  # a candidate that fails inside the training fold cannot be chosen
            M.progress("select")(f"{name} failed on an inner fold of fold {fold.index}: {err}")
            scores[name] = None
            continue
        if not folds:
            scores[name] = None
            continue
        t, p = np.concatenate(truth), np.concatenate(pred)
        if fold.task.classifier:
            t, p = t.astype(str), p.astype(str)
        else:
            t, p = t.astype(float), p.astype(float)
        scores[name] = stats.metric_value(metric, stats.Scored(t, p))
    return scores, len(folds)


def choose(fold, seed, budget, candidates: Sequence[str], k=INNER_FOLDS):
    """The candidate recipe with the best inner score on ``fold.train`` (the first when none can be scored).

    Returns
    -------
    Choice
    """
    unknown = [c for c in candidates if c not in M.RECIPES]
    if unknown:
        raise ValueError(f"unknown candidate recipe(s) {unknown}; choose from {sorted(M.RECIPES)}")
    scores, n_inner = inner_scores(fold, seed, budget, candidates, k)
    metric, higher = selection_metric(fold.task.classifier)
    valid = [c for c in candidates if scores.get(c) is not None]
    if not valid:
        return Choice(candidates[0], scores, metric, n_inner)
    best = max(valid, key=lambda c: scores[c]) if higher else min(valid, key=lambda c: scores[c])
    return Choice(best, scores, metric, n_inner)
