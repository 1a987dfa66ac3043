"""The held-out yardstick: intervals, paired verdicts, fold tests and confound flags from stored predictions.

Everything here is recomputed from ``predictions/<task>.tsv`` and ``folds/<task>.tsv`` (no model runs), with the
statistics of `aam.evaluation.stats`:

- per task and model, each metric on the pooled held-out predictions of every fold with a 95% bootstrap interval
  over the task's groups (subjects, houses, sampling events; samples in an ungrouped task);
- a model against a reference (``rf500-rel``, ``best-classical``, ``rf500``, ``constant``): the paired
  difference with its interval; "ahead" / "behind" only when the interval excludes parity, else "level";
- over every task-fold, the per-fold gains with a sign test and a Wilcoxon signed-rank test;
- confounds: a task where reads per sample alone (the ``depth`` row) scores within 0.05 of the best model (accuracy
  or AUC; R² for regression) is flagged "confounded";
- subject-level scores where the label is constant within every group (the mean predicted probability of a group).

Results are cached in ``yardstick.json`` beside results.json, keyed by a hash of the files they come from.
"""
import hashlib
import json
import os
from dataclasses import asdict

import numpy as np
import pandas as pd

from aam.evaluation import stats as S
from benchmarks.heldout_store import atomic_write, folds_path, json_default, predictions_path, read_predictions

#: the engine's default (AAM with its ensemble) and the references it is judged against
DEFAULT = "aam+rf-axes-1se"
REFERENCES = ("rf500-rel", "best-classical", "rf500", "constant")
N_RESAMPLES = 1000
SEED = 20261203
CONFOUND_MARGIN = 0.05
CACHE = "yardstick.json"
VERSION = 2  # bump when what is computed changes, so cached entries are recomputed


def headline(kind):
    """The metric a verdict is given on: MAE (regression) or accuracy (classification)."""
    return "mae" if kind == "regression" else "accuracy"


def task_metrics(kind, classes):
    """Metrics reported for a task: MAE and R²; accuracy, balanced accuracy, AUC (and AUPRC when binary)."""
    if kind == "regression":
        return list(S.REGRESSION_METRICS)
    return ["accuracy", "balanced_accuracy", "auc"] + (["auprc"] if classes and len(classes) == 2 else [])


# ------------------------------------------------------------------------------------------------ pooling

def _common_rows(preds):
    """Rows of the samples every model predicted in its fold (the set the per-fold tables score), fraction 1."""
    preds = preds[preds["label_fraction"] == 1.0]
    keep = []
    for _, grp in preds.groupby("fold"):
        counts = grp.groupby("sample_id")["model"].nunique()
        keep.append(grp[grp["sample_id"].isin(counts.index[counts == grp["model"].nunique()])])
    return pd.concat(keep) if keep else preds


def pooled(preds, folds, model, entry):
    """One model's pooled held-out predictions as a `Scored`, with the sample IDs and their groups.

    Returns
    -------
    (aam.evaluation.stats.Scored, numpy.ndarray of sample IDs, numpy.ndarray of groups)
    """
    rows = preds[preds["model"] == model].sort_values("sample_id", kind="stable")
    ids = rows["sample_id"].to_numpy()
    groups = folds.set_index("sample_id").loc[ids, "group"].astype(str).to_numpy()
    classes = entry.get("classes")
    if entry["kind"] == "regression":
        scored = S.Scored(rows["truth"].to_numpy(float), rows["prediction"].to_numpy(float))
    else:
        cols = [f"p:{c}" for c in classes]
        prob = rows[cols].to_numpy(float) if rows[cols].notna().all().all() else None
        # AUC and AUPRC per fold, then averaged: each fold's model has probabilities of its own scale
        scored = S.Scored(rows["truth"].astype(str).to_numpy(), rows["prediction"].astype(str).to_numpy(), prob,
                          tuple(classes), entry.get("positive"), rows["fold"].to_numpy())
    return scored, ids, groups


def by_group(scored, groups):
    """Group-level predictions of a task whose label is the group's: the mean class probabilities of each group's
    samples and the class they favour (ties to the first class). Returns (Scored, group labels) or None when a
    group holds two labels or probabilities are missing."""
    if scored.probabilities is None:
        return None
    frame = pd.DataFrame(scored.probabilities, columns=list(scored.classes))
    frame["group"], frame["truth"], frame["fold"] = groups, scored.truth, scored.strata
    if (frame.groupby("group")["truth"].nunique() > 1).any():
        return None
    mean = frame.groupby("group", sort=True)[list(scored.classes)].mean()
    first = frame.groupby("group", sort=True)[["truth", "fold"]].first().loc[mean.index]
    prediction = np.asarray(scored.classes)[mean.to_numpy().argmax(axis=1)]
    strata = None if scored.strata is None else first["fold"].to_numpy()
    return S.Scored(first["truth"].to_numpy(), prediction, mean.to_numpy(), scored.classes, scored.positive,
                    strata), mean.index.to_numpy()


# ------------------------------------------------------------------------------------------------ one task

def task_yardstick(entry, preds, folds, models, n_resamples=N_RESAMPLES, seed=SEED):
    """Intervals of every model in `models`, comparisons with the references, subject-level scores of one task.

    Every model is scored on the same resamples of the task's groups (so the comparisons are paired).

    Returns
    -------
    dict
        ``intervals`` {model: {metric: Interval dict}}, ``comparisons`` {reference: {model: {metric: {difference,
        verdict, higher_is_better}}}}, ``subject_level`` (the same at group level, or None), ``n_samples``,
        ``n_groups``.
    """
    common = _common_rows(preds)
    present = [m for m in models if (common["model"] == m).any()]
    if not present:
        return {"intervals": {}, "comparisons": {}, "subject_level": None, "n_samples": 0, "n_groups": 0}
    metrics = task_metrics(entry["kind"], entry.get("classes"))
    pools = {m: pooled(common, folds, m, entry) for m in present}
    _, ids, groups = pools[present[0]]
    for m, (_, other_ids, _) in pools.items():
        if not np.array_equal(other_ids, ids):
            raise ValueError(f"task {entry.get('description')}: model {m} was not scored on the common samples")
    out = paired_scores({m: p[0] for m, p in pools.items()}, groups, metrics, n_resamples, seed)
    out.update(n_samples=len(ids), n_groups=int(len(set(groups))), subject_level=None)
    if entry["kind"] == "classification" and out["n_groups"] < out["n_samples"]:
        grouped = {m: by_group(p[0], p[2]) for m, p in pools.items()}
        if all(g is not None for g in grouped.values()):
            out["subject_level"] = paired_scores({m: g[0] for m, g in grouped.items()}, None, metrics,
                                                 n_resamples, seed)
            out["subject_level"]["n_groups"] = len(next(iter(grouped.values()))[1])
    return out


def paired_scores(scored, groups, metrics, n_resamples, seed):
    """Intervals of each model's metrics and comparisons with each reference present, on one set of resamples.

    Parameters
    ----------
    scored : dict of str to aam.evaluation.stats.Scored
        Every model's predictions of the same samples, in the same order.
    groups : numpy.ndarray or None
    metrics : list of str
    n_resamples, seed : int
    """
    n = len(next(iter(scored.values())))
    groups = np.arange(n) if groups is None else groups
    resamples = S.group_bootstrap_indices(groups, n_resamples, seed)
    n_groups = len(set(np.asarray(groups).astype(str)))
    res = {m: {k: S.Resampled(k, sc, resamples, n_groups) for k in metrics} for m, sc in scored.items()}
    out = {"intervals": {m: {k: asdict(r.interval()) for k, r in per.items()} for m, per in res.items()},
           "comparisons": {}}
    for ref in [r for r in REFERENCES if r in res]:
        out["comparisons"][ref] = {m: {k: _comparison_dict(r.against(res[ref][k])) for k, r in per.items()}
                                   for m, per in res.items() if m != ref}
    return out


def _comparison_dict(comparison):
    d = asdict(comparison)
    return {"difference": d["difference"], "verdict": d["verdict"], "higher_is_better": d["higher_is_better"]}


# ------------------------------------------------------------------------------------------------ all tasks

def _fingerprint(out_dir, name, models):
    digest = hashlib.sha256(f"{VERSION}|{N_RESAMPLES}|{SEED}|{sorted(models)}".encode())
    for path in (predictions_path(out_dir, name), folds_path(out_dir, name)):
        with open(path, "rb") as fh:
            digest.update(fh.read())
    return digest.hexdigest()[:16]


def compute(results, out_dir, models_of=None, log=None):
    """The yardstick of every stored task, from the cache where its files have not changed.

    Parameters
    ----------
    results : dict
        The stored results.json.
    out_dir : str
        Results folder (predictions, folds, the cache).
    models_of : callable, optional
        ``models_of(task_name, models_present) -> list`` of models to give intervals (default: every model).
    log : callable, optional

    Returns
    -------
    dict
        Task name -> `task_yardstick` result.
    """
    cache_path = os.path.join(out_dir, CACHE)
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as fh:
            cache = json.load(fh)
    out = {}
    for name, entry in results["tasks"].items():
        if not os.path.exists(predictions_path(out_dir, name)):
            continue
        preds = read_predictions(out_dir, name, entry.get("classes"))
        present = sorted(set(preds.loc[preds["label_fraction"] == 1.0, "model"]))
        models = models_of(name, present) if models_of else present
        key = _fingerprint(out_dir, name, models)
        if cache.get(name, {}).get("key") == key:
            out[name] = cache[name]["yardstick"]
            continue
        if log:
            log(f"{name}: bootstrap intervals of {len(models)} models ({N_RESAMPLES} resamples over groups)")
        folds = pd.read_csv(folds_path(out_dir, name), sep="\t", dtype={"sample_id": str, "group": str})
        out[name] = task_yardstick(entry, preds, folds, models)
        cache[name] = {"key": key, "yardstick": out[name]}
    atomic_write(cache_path, json.dumps({k: cache[k] for k in out}, indent=1, default=json_default) + "\n")
    return out


def fold_gains(results, model, reference, tasks=None):
    """Per task-fold gain of `model` over `reference` on the headline metric (positive: better): accuracy
    difference, or 1 - MAE ratio, from the per-fold scores on common samples in results.json."""
    gains = []
    for name, entry in results["tasks"].items():
        if tasks is not None and name not in tasks:
            continue
        res = entry.get("results", {}).get("1", {})
        if model not in res or reference not in res:
            continue
        metric = headline(entry["kind"])
        for a, b in zip(res[model]["folds"], res[reference]["folds"]):
            x, y = a.get(metric), b.get(metric)
            if x is None or y is None:
                continue
            gains.append((1 - x / y) if metric == "mae" and y else (x - y) if metric != "mae" else None)
    return [g for g in gains if g is not None]


def confound(entry, yard):
    """Whether reads per sample alone explain a task: the ``depth`` row scores within `CONFOUND_MARGIN` of the best
    other model and at least `CONFOUND_MARGIN` above the constant (so it has learnt something), on accuracy or AUC
    (classification) or R² (regression). Returns (flag or None without a depth row, {metric: (depth, best model,
    its value, constant)})."""
    intervals = yard.get("intervals", {})
    if "depth" not in intervals:
        return None, {}
    metrics = ("r2",) if entry["kind"] == "regression" else ("accuracy", "auc")
    found, flag = {}, False
    for metric in metrics:
        depth = intervals["depth"][metric]["estimate"]
        const = intervals.get("constant", {}).get(metric, {}).get("estimate")
        others = {m: iv[metric]["estimate"] for m, iv in intervals.items()
                  if m != "depth" and iv[metric]["estimate"] is not None}
        if depth is None or not others:
            continue
        best = max(others, key=others.get)
        found[metric] = (depth, best, others[best], const)
        learnt = const is None or depth >= const + CONFOUND_MARGIN
        flag = flag or (learnt and depth >= others[best] - CONFOUND_MARGIN)
    return flag, found
