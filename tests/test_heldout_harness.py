"""The held-out benchmark harness (benchmarks/heldout.py) on small slices: that it works, not how accurate it is.

Checks that folds are disjoint by group and fixed by the seed, that every model is scored on the same held-out
samples, that a sample a model does not predict is reported against it, that the JSON has its schema and merges
later runs, that the docs and figures are written, and that the forest is q2-sample-classifier's.
"""
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import heldout, heldout_models as M, heldout_tasks as T
from tests.conftest import locked, shared_dir

QUICK = T.task_table(quick=True)


@pytest.fixture(scope="module")
def refuser():
    """A test recipe that leaves out the first held-out sample of every fold (so the harness must report it)."""
    @M.recipe("test-refuser", "test only: rf100 without the first held-out sample", default=False)
    def refuse(fold, seed, budget):
        pred = M.forest(fold, seed, 10)
        keep = pred.values.index[1:]
        return M.Prediction(pred.values.loc[keep], pred.probabilities.loc[keep] if pred.probabilities is not None
                            else None, {"left out": pred.values.index[0]})
    yield "test-refuser"
    M.RECIPES.pop("test-refuser", None)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory, refuser):
    # one run for every pytest-xdist worker: the first builds it, the others wait for it
    out = shared_dir(tmp_path_factory, "aam-heldout-quick")
    docs = out / "docs" / "science.md"
    with locked(str(out) + ".lock"):
        if not (out / "done").exists():
            heldout.main(["--quick", "--tasks", "mp-bodysite", "mp-days", "keyboard-subject", "--models", "rf100",
                          "pcoa", "aam", refuser, "--out", str(out), "--docs", str(docs), "--strict"])
            (out / "done").touch()
    with open(out / "results.json") as fh:
        return out, docs, json.load(fh)


def test_folds_disjoint_by_group_and_fixed_by_seed(quick_run):
    out, _, results = quick_run
    for name in ("mp-bodysite", "mp-days"):
        folds = pd.read_csv(out / "folds" / f"{name}.tsv", sep="\t", dtype={"sample_id": str, "group": str})
        assert folds["sample_id"].is_unique
        # a group never spans two folds
        assert (folds.groupby("group")["fold"].nunique() == 1).all()
        assert sorted(folds["fold"].unique()) == [0, 1, 2]
    # the same seed gives the same folds; another seed other folds (ungrouped, stratified task)
    data = T.load_task(QUICK["keyboard-subject"])
    a, b = T.assign_folds(data, 3, 42), T.assign_folds(data, 3, 42)
    assert a.equals(b)
    assert not a.equals(T.assign_folds(data, 3, 7))


def test_every_model_scored_on_the_same_samples(quick_run, refuser):
    out, _, results = quick_run
    for name in ("mp-bodysite", "mp-days", "keyboard-subject"):
        folds = pd.read_csv(out / "folds" / f"{name}.tsv", sep="\t", dtype={"sample_id": str})
        preds = pd.read_csv(out / "predictions" / f"{name}.tsv", sep="\t", dtype={"sample_id": str})
        scored = set(folds.loc[folds["scored"] == "yes", "sample_id"])
        below = set(folds.loc[folds["scored"] != "yes", "sample_id"])
        for model in ("rf100", "pcoa", "aam"):
            got = preds[preds["model"] == model]
            assert set(got["sample_id"]) == scored, (name, model)
            assert not set(got["sample_id"]) & below
            # a prediction belongs to the sample's own held-out fold
            merged = got.merge(folds, on="sample_id", suffixes=("", "_assigned"))
            assert (merged["fold"] == merged["fold_assigned"]).all()
        res = results["tasks"][name]["results"]["1"]
        for model in ("rf100", "pcoa", "aam", refuser):
            for fold in res[model]["folds"]:
                # metrics over the samples every model predicted: all but the one the refuser left out
                assert fold["n_common"] == fold["n_heldout"] - 1
        assert res["rf100"]["summary"]["unscored"] == 0
        refused = res[refuser]["summary"]["unscored"]
        assert refused == 3 and sum(len(f["unscored"]) for f in res[refuser]["folds"]) == 3


def test_below_depth_samples_reported(quick_run):
    out, _, results = quick_run
    task = results["tasks"]["keyboard-subject"]
    folds = pd.read_csv(out / "folds" / "keyboard-subject.tsv", sep="\t")
    below = folds[folds["scored"] != "yes"]
    assert sum(f["n_test_below_depth"] for f in task["folds"]) == len(below)
    # below depth means fewer reads than the depth chosen on that fold's training samples
    assert (below["reads"] < below["fold_depth"]).all()
    assert (folds.loc[folds["scored"] == "yes", "reads"] >= folds.loc[folds["scored"] == "yes", "fold_depth"]).all()


def test_results_schema(quick_run):
    _, _, results = quick_run
    assert results["schema"] == heldout.SCHEMA
    run = next(iter(results["runs"].values()))
    for key in ("command", "date", "machine", "budget", "seed", "folds"):
        assert key in run
    assert run["machine"]["cores"] >= 1
    for name, task in results["tasks"].items():
        assert {"kind", "grouping", "folds", "fingerprint", "results", "timing"} <= set(task)
        metrics = ["mae", "r2"] if task["kind"] == "regression" else ["accuracy", "balanced_accuracy", "auc"]
        for model, res in task["results"]["1"].items():
            assert len(res["folds"]) == 3
            for m in metrics + ["seconds"]:
                assert {"mean", "sd", "min", "max"} <= set(res["summary"][m])
            assert res["summary"]["seconds"]["mean"] > 0
            assert res["summary"]["run"] in results["runs"]
        if task["kind"] == "classification":
            acc = task["results"]["1"]["rf100"]["summary"]["accuracy"]["mean"]
            assert 0.0 <= acc <= 1.0


def test_docs_and_figures_written(quick_run):
    _, docs, results = quick_run
    text = docs.read_text()
    assert "python -m benchmarks.heldout --quick" in text
    assert "cores" in text
    for name in results["tasks"]:
        assert f"## {name}" in text
        assert (docs.parent / "figures" / "heldout" / f"{name}.png").stat().st_size > 1000


def test_merge_keeps_other_models(quick_run, tmp_path):
    out, docs, results = quick_run
    import shutil
    work = tmp_path / "merge"
    shutil.copytree(out, work)
    heldout.main(["--quick", "--tasks", "keyboard-subject", "--models", "rf500", "--out", str(work), "--no-docs",
                  "--strict"])
    with open(work / "results.json") as fh:
        merged = json.load(fh)
    res = merged["tasks"]["keyboard-subject"]["results"]["1"]
    assert {"rf100", "pcoa", "aam", "rf500"} <= set(res)
    before = results["tasks"]["keyboard-subject"]["results"]["1"]["rf100"]["summary"]["accuracy"]
    assert res["rf100"]["summary"]["accuracy"] == before
    assert set(merged["tasks"]) == set(results["tasks"])


def test_label_fractions_nested_with_fixed_test(tmp_path):
    data = T.load_task(QUICK["keyboard-subject"])
    fold_of = T.assign_folds(data, 3, 42)
    split = T.FoldSplit(data, fold_of, 0, 0.9, 42)
    small, half, full = (split.fold(f) for f in (0.25, 0.5, 1.0))
    assert set(small.train.ids) <= set(half.train.ids) <= set(full.train.ids) == set(full.pool.ids)
    assert small.test.ids == full.test.ids and small.pool.ids == full.pool.ids
    assert small.train.y.nunique() >= 2
    # held-out samples carry no target
    assert small.test.y is None and data.task.column not in small.test.metadata.columns


def test_pcoa_projection_places_training_samples_back():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(12, 3))
    d = np.linalg.norm(points[:, None] - points[None], axis=-1)
    coords, again = M.pcoa_project(d, d)
    np.testing.assert_allclose(again, coords, atol=1e-8)
    # Euclidean distances are reproduced by the principal coordinates
    np.testing.assert_allclose(np.linalg.norm(coords[:, None] - coords[None], axis=-1), d, atol=1e-8)
    new = rng.normal(size=(4, 3))
    cross = np.linalg.norm(new[:, None] - points[None], axis=-1)
    _, placed = M.pcoa_project(d, cross)
    placed_d = np.linalg.norm(placed[:, None] - coords[None], axis=-1)
    np.testing.assert_allclose(placed_d, cross, atol=1e-8)


def test_forest_is_q2_sample_classifiers():
    """Same predictions as q2-sample-classifier's fit-classifier + predict-classification with the same seed."""
    qiime2 = pytest.importorskip("qiime2")
    classify = pytest.importorskip("q2_sample_classifier.classify")
    data = T.load_task(QUICK["mp-bodysite"])
    fold = T.FoldSplit(data, T.assign_folds(data, 3, 42), 0, 0.9, 42).fold(1.0)
    ours = M.forest(fold, 3, 100)
    column = qiime2.CategoricalMetadataColumn(fold.train.y.rename_axis("id").rename("body-site"))
    estimator, _ = classify.fit_classifier(fold.train.rarefied, column, random_state=3, n_jobs=1)
    theirs, probs = classify.predict_classification(fold.test.rarefied, estimator, n_jobs=1)
    assert list(theirs.loc[ours.values.index]) == list(ours.values)
    np.testing.assert_allclose(probs.loc[ours.values.index, ours.probabilities.columns].to_numpy(),
                               ours.probabilities.to_numpy())


def test_shared_ecam_slice_grouped_by_infant(tmp_path):
    task = QUICK["ecam-month"]
    if not T.available(task):
        pytest.skip(f"../shared/data/ecam not found at {task.folder}: the ecam slice is checked only beside it")
    heldout.main(["--quick", "--tasks", "ecam-month", "--models", "rf100", "pcoa", "--out", str(tmp_path),
                  "--no-docs", "--strict"])
    folds = pd.read_csv(tmp_path / "folds" / "ecam-month.tsv", sep="\t", dtype={"group": str})
    assert (folds.groupby("group")["fold"].nunique() == 1).all()
    with open(tmp_path / "results.json") as fh:
        res = json.load(fh)["tasks"]["ecam-month"]
    assert res["n_groups"] == 9 and res["results"]["1"]["pcoa"]["summary"]["mae"]["mean"] > 0


def test_failing_model_is_reported_not_fatal(tmp_path):
    @M.recipe("test-fails", "test only: fails on the second fold", default=False)
    def fails(fold, seed, budget):
        if fold.index == 1:
            raise RuntimeError("out of memory (simulated)")
        return M.forest(fold, seed, 10)
    try:
        heldout.main(["--quick", "--tasks", "keyboard-subject", "--models", "rf100", "test-fails", "--out",
                      str(tmp_path), "--no-docs"])
    finally:
        M.RECIPES.pop("test-fails", None)
    with open(tmp_path / "results.json") as fh:
        res = json.load(fh)["tasks"]["keyboard-subject"]["results"]["1"]
    failed = res["test-fails"]
    assert failed["summary"]["failed_folds"] == 1
    assert "out of memory" in failed["folds"][1]["error"] and failed["folds"][1].get("accuracy") is None
    # the failure does not shrink the samples the other model is scored on
    assert res["rf100"]["summary"]["unscored"] == 0
    assert res["rf100"]["summary"]["n_common"] == res["rf100"]["summary"]["n_heldout"]
    assert failed["summary"]["accuracy"]["n"] == 2


def test_report_only_scores_the_files_again_identically(quick_run, tmp_path):
    out, _, results = quick_run
    import shutil
    work = tmp_path / "again"
    shutil.copytree(out, work)
    heldout.main(["--report-only", "--out", str(work), "--docs", str(work / "page.md")])
    with open(work / "results.json") as fh:
        again = json.load(fh)
    for name, task in results["tasks"].items():
        assert again["tasks"][name]["results"] == task["results"], name
    assert "## keyboard-subject" in (work / "page.md").read_text()


def test_a_cross_study_fit_interrupted_with_the_sitting_continues_from_its_last_checkpoint(tmp_path, monkeypatch):
    """benchmarks.heldout_cross keeps each source's fit on disk: a fit stopped mid-run resumes from its last
    checkpoint (the engine's resume), a finished one is read back, and the seconds of every sitting add up."""
    import os

    from aam.workflows import common
    from benchmarks import heldout_cross as X
    run_dir = str(tmp_path / "fits" / "american-gut-aam" / "pretrain")
    calls = []

    class Result:
        checkpoint = "the fitted model"

    def fit(table, output_dir, resume, **kwargs):
        calls.append(resume)
        os.makedirs(os.path.join(output_dir, "checkpoints"), exist_ok=True)
        last = os.path.join(output_dir, "checkpoints", "last_checkpoint.pt")
        if not calls[:-1]:  # the first sitting ends during the fit
            open(last, "w").close()
            raise KeyboardInterrupt
        open(os.path.join(output_dir, "model.pt"), "w").close()
        return Result()

    with pytest.raises(KeyboardInterrupt):
        X.resumable_fit(fit, run_dir, table="t")
    assert os.path.isfile(os.path.join(run_dir, "seconds.json"))   # the interrupted sitting's time is kept
    checkpoint, _ = X.resumable_fit(fit, run_dir, table="t")
    assert checkpoint == "the fitted model"
    assert calls == [None, os.path.join(run_dir, "checkpoints", "last_checkpoint.pt")]
    monkeypatch.setattr(common, "load_model", lambda path: f"read back {os.path.basename(path)}")
    checkpoint, _ = X.resumable_fit(fit, run_dir, table="t")
    assert checkpoint == "read back model.pt" and len(calls) == 2  # finished: not fitted again
