"""Scoring of the held-out benchmark: metrics per model, label fraction and fold, on the samples every model scored.

`score_task` turns a task's stored predictions into the per-fold metrics and summaries of results.json;
`rescore` does it again for every stored task from the files alone (``--report-only``).
"""
import os
import warnings

import numpy as np
import pandas as pd

from benchmarks.heldout_store import FRACTION_FMT, read_predictions

REFERENCE = "rf500"  # relative MAE is MAE / this model's MAE on the same fold and samples


def regression_metrics(truth, pred):
    """MAE and R^2 of predictions against the truth (same index)."""
    from sklearn.metrics import mean_absolute_error, r2_score
    y, p = truth.to_numpy(dtype=float), pred.to_numpy(dtype=float)
    if len(y) == 0:
        return {"mae": None, "r2": None}
    return {"mae": float(mean_absolute_error(y, p)), "r2": float(r2_score(y, p)) if len(y) > 1 else None}


def classification_metrics(truth, pred, prob, classes, positive=None):
    """Accuracy, balanced accuracy and AUC (binary: of the positive class; multiclass: macro one-vs-rest over the
    classes present among the held-out samples)."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    if len(truth) == 0:
        return {"accuracy": None, "balanced_accuracy": None, "auc": None}
    y, p = truth.astype(str).to_numpy(), pred.astype(str).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # predicted classes absent from the truth of a fold
        out = {"accuracy": float(accuracy_score(y, p)), "balanced_accuracy": float(balanced_accuracy_score(y, p))}
    auc = None
    if prob is not None:
        if len(classes) == 2:
            pos = positive or classes[1]
            if len(set(y)) == 2:
                auc = float(roc_auc_score(y == pos, prob[pos].to_numpy()))
        else:
            per_class = [roc_auc_score(y == c, prob[c].to_numpy()) for c in classes if 0 < (y == c).sum() < len(y)]
            auc = float(np.mean(per_class)) if per_class else None
    out["auc"] = auc
    return out


def metric_names(kind):
    """Metrics of a task kind; the last compares with the reference forest on the same fold (paired)."""
    if kind == "regression":
        return ["mae", "r2", "mae_vs_" + REFERENCE]
    return ["accuracy", "balanced_accuracy", "auc", "accuracy_vs_" + REFERENCE]


def summarize(values):
    """Mean, standard deviation (ddof 1), min and max of the defined values."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else None, "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def score_task(entry, preds, data, folds_frame):
    """Metrics per model, label fraction and fold, on the held-out samples every model of the task scored.

    For each fold and label fraction, the scored set is the fold's held-out samples (reads >= depth) predicted by
    every model that ran without error; each model's unscored samples (of the held-out ones) are listed.
    """
    scored_rows = folds_frame[folds_frame["scored"] == "yes"]
    heldout = {int(f): list(grp["sample_id"]) for f, grp in scored_rows.groupby("fold")}
    folds_all = sorted(set(folds_frame["fold"].astype(int)))
    out = {}
    for fkey, models in sorted(_models_ran(entry).items(), key=lambda kv: float(kv[0])):
        by_fraction = preds[preds["label_fraction"].map(FRACTION_FMT.format) == fkey] if len(preds) else \
            pd.DataFrame(columns=["model", "fold", "sample_id", "prediction"])
        res_f = {m: {"folds": []} for m in models}
        for fold in folds_all:
            per_model = _score_fold(entry, by_fraction[by_fraction["fold"] == fold], data, models, fkey, fold,
                                    heldout.get(fold, []))
            for m in models:
                res_f[m]["folds"].append(per_model[m])
        for m in models:
            res_f[m]["summary"] = _summary(entry, res_f[m]["folds"], data.task.kind, f"{m}@{fkey}")
        out[fkey] = res_f
    return out


def _models_ran(entry):
    """Label fraction key -> sorted models that ran (every one is listed, even one that failed everywhere and
    predicted nothing)."""
    ran = {}
    for key in entry["timing"]:
        model, fkey = key.rsplit("@", 1)
        ran.setdefault(fkey, set()).add(model)
    return {fkey: sorted(models) for fkey, models in ran.items()}


def _score_fold(entry, sub, data, models, fkey, fold, test):
    """Each model's metrics on one fold's common samples (`sub`: the fold's prediction rows of this fraction)."""
    scored = {m: set(sub.loc[sub["model"] == m, "sample_id"]) for m in models}
    # a model that failed on this fold is reported as failed, not allowed to empty the common set
    ok = [m for m in models if not _failed(entry, m, fkey, fold)]
    common = [s for s in test if all(s in scored[m] for m in ok)]
    per_model = {}
    for m in models:
        t = _timing(entry, m, fkey, fold)
        item = {"fold": fold, "n_heldout": len(test), "n_common": len(common),
                "unscored": sorted(set(test) - scored[m]), "seconds": t.get("seconds"), "error": t.get("error"),
                "n_train": t.get("n_train")}
        if m in ok and common:
            item.update(_metrics_of(sub[sub["model"] == m].set_index("sample_id").loc[common], data, common))
        per_model[m] = item
    if REFERENCE in per_model:
        _paired_with_reference(per_model, data.task.kind)
    return per_model


def _metrics_of(rows, data, common):
    if data.task.kind == "regression":
        return regression_metrics(data.y.loc[common], rows["prediction"])
    prob_cols = [f"p:{c}" for c in data.classes]
    prob = rows[prob_cols].rename(columns=lambda c: c[2:]) if rows[prob_cols].notna().all().all() else None
    return classification_metrics(data.y.loc[common], rows["prediction"], prob, data.classes, data.task.positive)


def _paired_with_reference(per_model, kind):
    """Paired with the forest on the same samples: MAE ratio, accuracy difference (in place)."""
    if kind == "regression":
        ref = per_model[REFERENCE].get("mae")
        for item in per_model.values():
            mae = item.get("mae")
            item["mae_vs_" + REFERENCE] = (mae / ref) if (mae is not None and ref) else None
    else:
        ref = per_model[REFERENCE].get("accuracy")
        for item in per_model.values():
            acc = item.get("accuracy")
            item["accuracy_vs_" + REFERENCE] = (acc - ref) if (acc is not None and ref is not None) else None


def _summary(entry, folds, kind, key):
    summary = {k: summarize([f.get(k) for f in folds]) for k in metric_names(kind)}
    summary["seconds"] = summarize([f.get("seconds") for f in folds])
    summary["unscored"] = int(sum(len(f["unscored"]) for f in folds))
    summary["n_heldout"] = int(sum(f["n_heldout"] for f in folds))
    summary["n_common"] = int(sum(f["n_common"] for f in folds))
    summary["failed_folds"] = int(sum(1 for f in folds if f.get("error")))
    summary["run"] = entry["runs_by_model"].get(key)
    return summary


def rescore(results, out_dir):
    """Score every stored task again from its folds and predictions files (no data or models needed), e.g. after
    a change of the metrics."""
    import types
    for name, entry in results["tasks"].items():
        frame = pd.read_csv(os.path.join(out_dir, entry["folds_file"]), sep="\t",
                            dtype={"sample_id": str, "group": str, "target": str})
        y = frame.set_index("sample_id")["target"]
        if entry["kind"] == "regression":
            y = y.astype(float)
        data = types.SimpleNamespace(task=types.SimpleNamespace(kind=entry["kind"], positive=entry.get("positive")),
                                     y=y, classes=entry.get("classes"))
        entry["results"] = score_task(entry, read_predictions(out_dir, name, entry.get("classes")), data, frame)


def _timing(entry, model, fkey, fold):
    for item in entry["timing"].get(f"{model}@{fkey}", []):
        if item["fold"] == fold:
            return item
    return {}


def _failed(entry, model, fkey, fold):
    return bool(_timing(entry, model, fkey, fold).get("error"))
