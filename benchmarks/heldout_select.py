"""Choosing among recipes without the held-out fold: grouped inner cross-validation on a fold's training samples.

`inner_folds` cuts a `Fold`'s labelled training samples into k grouped (and, for classification, stratified) inner
folds, each a `Fold` of its own with the same depth and rarefied draw (a subset of the outer fold's); the inner
held-out samples come without their targets, exactly as the outer ones do. `choose` runs every candidate recipe on
every inner fold and picks the one with the best pooled inner score (MAE for regression, balanced accuracy for
classification; ties go to the earlier candidate). Nothing here reads the outer held-out samples' targets, so
shuffling them cannot change a choice (tests/test_heldout_yardstick.py checks it).

``python -m benchmarks.heldout --select A B C`` (``make heldout-select``) is the nested selection of a default:
each training fold of each task scores at most 3 candidate recipes by the inner CV (cached per task-fold in
``select/``, so an interrupted run resumes), and the choices are pooled over tasks by mean inner rank. The outer
held-out folds are never read.
"""
import hashlib
import json
import os
import time
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


# ------------------------------------------------------------------------------------------------ --select mode

MAX_CANDIDATES = 3


def selection_dir(out_dir):
    return os.path.join(out_dir, "select")


def _cache_path(out_dir, task, fold_index, candidates):
    tag = hashlib.sha256(json.dumps(list(candidates)).encode()).hexdigest()[:8]
    return os.path.join(selection_dir(out_dir), f"{task}.fold{fold_index}.{tag}.json")


def select_fold(task, fold_index, settings, candidates, out_dir, log):
    """Inner scores of the candidates on one training fold, from its cache file or computed and cached (so an
    interrupted selection resumes where it stopped)."""
    from benchmarks.heldout_store import atomic_write
    path = _cache_path(out_dir, task.name, fold_index, candidates)
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    data = T.load_task(task, seed=settings["seed"])
    fold_of = T.assign_folds(data, settings["folds"], settings["seed"])
    split = T.FoldSplit(data, fold_of, fold_index, settings["keep_fraction"], settings["seed"])
    budget = M.Budget(**settings["budget"])
    t0 = time.perf_counter()
    choice = choose(split.fold(1.0), settings["seed"], budget, candidates)
    record = {"task": task.name, "fold": fold_index, "candidates": list(candidates), "chosen": choice.recipe,
              "scores": choice.scores, "metric": choice.metric, "inner_folds": choice.n_inner,
              "seconds": round(time.perf_counter() - t0, 1), "test_ids": list(split.test_ids)}
    atomic_write(path, json.dumps(record, indent=1) + "\n")
    log(f"{task.name} fold {fold_index + 1}: inner {choice.metric} {choice.scores} -> {choice.recipe} "
        f"({record['seconds']} s)")
    return record


def pool_choices(records, candidates):
    """One choice over every task-fold: the candidate with the best mean rank of its inner scores (rank 1 best;
    a failed candidate ranks last; ties go to the earlier candidate).

    Returns
    -------
    dict
        ``chosen``, ``mean_rank`` per candidate, ``wins`` (task-folds where each candidate was chosen).
    """
    ranks = {c: [] for c in candidates}
    wins = {c: 0 for c in candidates}
    for rec in records:
        higher = rec["metric"] != "mae"
        valid = sorted((c for c in candidates if rec["scores"].get(c) is not None),
                       key=lambda c: (-rec["scores"][c] if higher else rec["scores"][c], candidates.index(c)))
        for c in candidates:
            ranks[c].append(valid.index(c) + 1 if c in valid else len(candidates))
        wins[rec["chosen"]] += 1
    mean_rank = {c: float(np.mean(r)) if r else None for c, r in ranks.items()}
    chosen = min(candidates, key=lambda c: (mean_rank[c], candidates.index(c)))
    return {"chosen": chosen, "mean_rank": mean_rank, "wins": wins, "task_folds": len(records)}


def run_selection(names, tasks, candidates, settings, out_dir, log):
    """``--select``: inner-CV scores of at most `MAX_CANDIDATES` recipes on every training fold of `names`,
    pooled into one choice; writes ``select/selection.json`` and returns it."""
    from benchmarks.heldout_store import atomic_write
    if not 1 < len(candidates) <= MAX_CANDIDATES:
        raise SystemExit(f"--select takes 2 to {MAX_CANDIDATES} candidate recipes (got {len(candidates)}): each one "
                         "costs an inner 3-fold CV on every training fold")
    unknown = [c for c in candidates if c not in M.RECIPES]
    if unknown:
        raise SystemExit(f"--select: unknown recipe(s) {unknown}; choose from {sorted(M.RECIPES)}")
    t0 = time.perf_counter()
    records = [select_fold(tasks[n], i, settings, list(candidates), out_dir, log)
               for n in names for i in range(settings["folds"])]
    pooled = pool_choices(records, list(candidates))
    out = {"candidates": list(candidates), "tasks": list(names), "folds": settings["folds"], "seed": settings["seed"],
           "inner_folds": INNER_FOLDS, **pooled, "per_fold": [{k: r[k] for k in ("task", "fold", "chosen", "scores",
                                                                                  "metric", "seconds")}
                                                              for r in records],
           "seconds_this_sitting": round(time.perf_counter() - t0, 1),
           "seconds_total": round(sum(r["seconds"] for r in records), 1)}
    atomic_write(os.path.join(selection_dir(out_dir), "selection.json"), json.dumps(out, indent=1) + "\n")
    log(f"selection over {len(records)} task-folds: {pooled['chosen']} (mean inner rank {pooled['mean_rank']}; "
        f"chosen per fold {pooled['wins']})")
    return out
