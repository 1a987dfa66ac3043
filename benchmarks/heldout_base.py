"""Rows of the held-out benchmark that start from the shipped sample-level base (``aam/assets/bases``, issue 23).

- ``base+rf``: ``aam.api.train`` with ``base=BASE`` and every other option the engine's default: no pretraining on
  the study; the default head (a sample-level transformer and MLP) trains over the frozen base, and the ensemble's
  forest reads the relative abundances and 20 axes of the base's distance embedding.
- ``base``: the same fit with ``ensemble none`` (the base and its head alone: what transfers to a study whose
  features the forest never saw).
- ``base-continued+rf``: ``aam.api.pretrain`` with ``base=BASE`` on the fold's training tables (the base continued on
  the study; pretraining's epoch budget), then fine-tuning from it as ``aam+rf-axes-1se`` does.

The base was pretrained on American Gut and PGP only; rows on tasks of those studies are transductive (it saw
their tables, never their labels) and must be read as such (``aam.base.corpus`` lists what it read).
"""
import time

import pandas as pd

from benchmarks.heldout_models import (EMBEDDING_AXES, ONE_SE, QUICK_AAM, Prediction, aam_fit_predict, progress,
                                       recipe)

#: the shipped base the rows start from
BASE = "ag-pgp-v4"


def fit_from_base(table, metadata, column, classifier, sequences, group_column, options, log):
    """``aam.api.train`` from the shipped base: (TrainResult, seconds)."""
    from aam import api
    t0 = time.perf_counter()
    res = api.train(table, metadata, column, classifier=classifier, sequences=sequences, base=BASE,
                    group_column=group_column, progress=False, log=log, **options)
    return res, time.perf_counter() - t0


def predict_probabilities(out, classifier):
    """(predictions, probabilities or None) of an `aam.api.predict` frame."""
    if not classifier:
        return out["prediction"], None
    cols = [c for c in out.columns if c.startswith("probability_")]
    return out["prediction"], out[cols].rename(columns=lambda c: c[len("probability_"):])


def _base_row(fold, seed, budget, train_options):
    from aam import api
    data = fold.data
    options = dict(rarefy_depth=fold.depth, seed=seed, num_threads=budget.threads, **train_options)
    if budget.quick:
        options.update({k: v for k, v in QUICK_AAM.items() if k != "token_limit"})
    log = progress(f"{data.task.name} fold {fold.index + 1} f={fold.label_fraction:g} {BASE}")
    res, fit_seconds = fit_from_base(fold.train.table, fold.train.metadata, data.task.column, data.task.classifier,
                                     data.sequences, data.group_column, options, log)
    t0 = time.perf_counter()
    out = api.predict(res.checkpoint, fold.test.table, sequences=data.sequences, log=log,
                      num_threads=budget.threads, seed=seed)
    values, prob = predict_probabilities(out, data.task.classifier)
    info = {"base": BASE, "train_seconds": round(fit_seconds, 1),
            "predict_seconds": round(time.perf_counter() - t0, 1), "train_options": options,
            "pretrained_on_task_tables": data.task.folder in ("american-gut", "pgp")}
    ensemble = res.checkpoint.record.ensemble
    if ensemble is not None:
        info.update(ensemble_share=ensemble.weight("network"), ensemble_share_choice=ensemble.choice)
    if "seen_feature_share" in out.columns:
        info["mean_seen_feature_share"] = float(pd.to_numeric(out["seen_feature_share"]).mean())
    return Prediction(values, prob, info)


@recipe("base+rf", f"the shipped base {BASE} (no pretraining on the study) with the engine's other defaults: the "
        "default head trained over the frozen base, blended with a forest on relative abundances and 20 axes of "
        "the base's distance embedding", default=False)
def base_ensemble(fold, seed, budget):
    return _base_row(fold, seed, budget, {})


@recipe("base", f"the shipped base {BASE} and the default head alone (ensemble none; no pretraining on the "
        "study)", default=False)
def base_alone(fold, seed, budget):
    return _base_row(fold, seed, budget, {"ensemble": "none"})


@recipe("base-continued+rf", f"the shipped base {BASE} continued by pretraining on the fold's training tables "
        "(pretrain base), then fine-tuned as aam+rf-axes-1se", default=False, uses_budget=True)
def base_continued_ensemble(fold, seed, budget):
    return aam_fit_predict(fold, seed, budget, pretrain_options={"base": BASE},
                           train_options={**EMBEDDING_AXES, **ONE_SE})
