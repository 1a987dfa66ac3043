"""The held-out yardstick: selection without the held-out labels, the depth confound flag, depth-matched tasks,
the baselines, and the intervals recomputed from stored predictions."""
import dataclasses

import biom
import numpy as np
import pandas as pd
import pytest

from benchmarks import heldout, heldout_baselines as B, heldout_models as M, heldout_select as SEL
from benchmarks import heldout_tasks as T
from benchmarks import heldout_yardstick as Y

QUICK = T.task_table(quick=True)


def _fold(task, index=0, data=None, fold_of=None):
    data = data or T.load_task(task)
    fold_of = T.assign_folds(data, 3, 42) if fold_of is None else fold_of
    return T.FoldSplit(data, fold_of, index, 0.9, 42).fold(1.0), data


def test_selection_never_reads_the_heldout_labels():
    task = QUICK["mp-bodysite"]
    data = T.load_task(task)
    fold_of = T.assign_folds(data, 3, 42)  # the folds stay those of the true labels (they are stratified by them)
    fold, _ = _fold(task, data=data, fold_of=fold_of)
    budget = M.Budget(quick=True)
    first = SEL.choose(fold, 42, budget, ["rf100", "clr-linear", "knn"])
    # shuffle the held-out samples' labels among themselves and give them classes no training sample has
    shuffled = data.y.copy()
    test = list(fold.test.ids)
    rng = np.random.default_rng(0)
    shuffled.loc[test] = rng.permutation(shuffled.loc[test].to_numpy())
    shuffled.loc[test[:2]] = "never-seen"
    again, _ = _fold(task, data=dataclasses.replace(data, y=shuffled), fold_of=fold_of)
    second = SEL.choose(again, 42, budget, ["rf100", "clr-linear", "knn"])
    assert second.recipe == first.recipe
    assert second.scores == first.scores
    assert first.n_inner >= 2 and all(v is not None for v in first.scores.values())


def test_inner_folds_are_grouped_and_hide_their_targets():
    fold, data = _fold(QUICK["mp-days"])
    inner = SEL.inner_folds(fold, 3, 42)
    assert len(inner) == 3
    seen = set()
    for sub, truth in inner:
        assert not set(sub.train.ids) & set(sub.test.ids)
        assert not set(sub.train.groups) & set(sub.test.groups)  # a sampling event never on both sides
        assert sub.test.y is None and data.task.column not in sub.test.metadata.columns
        assert set(sub.train.ids) | set(sub.test.ids) <= set(fold.train.ids)
        assert list(truth.index) == list(sub.test.ids)
        seen |= set(sub.test.ids)
    assert seen == set(fold.train.ids)


def test_selection_pools_by_mean_rank_and_resumes(tmp_path):
    argv = ["--quick", "--tasks", "mp-bodysite", "mp-days", "--select", "rf100", "constant", "--out", str(tmp_path)]
    assert heldout.main(argv) == 0
    cached = sorted((tmp_path / "select").glob("*.fold*.json"))
    assert len(cached) == 6
    stamp = [p.stat().st_mtime_ns for p in cached]
    assert heldout.main(argv) == 0  # resumed: every task-fold from its cache
    assert [p.stat().st_mtime_ns for p in cached] == stamp
    pooled = SEL.pool_choices([{"metric": "mae", "chosen": "a", "scores": {"a": 1.0, "b": 2.0}},
                               {"metric": "mae", "chosen": "b", "scores": {"a": 3.0, "b": 2.0}},
                               {"metric": "accuracy", "chosen": "a", "scores": {"a": 0.9, "b": None}}], ["a", "b"])
    assert pooled["chosen"] == "a" and pooled["mean_rank"] == {"a": pytest.approx(4 / 3), "b": pytest.approx(5 / 3)}
    with pytest.raises(SystemExit, match="2 to 3 candidate"):
        heldout.main(["--quick", "--tasks", "mp-days", "--select", "rf100", "knn", "pcoa", "constant", "--out",
                      str(tmp_path)])


def _depth_study(folder):
    """40 samples of 20 subjects whose class is how deeply they were sequenced (compositions all alike)."""
    rng = np.random.default_rng(1)
    n_features, ids, rows, md = 30, [], [], []
    base = rng.dirichlet(np.ones(n_features))
    for subject in range(20):
        label = "deep" if subject % 2 else "shallow"
        for rep in range(2):
            reads = int(rng.integers(6000, 9000) if label == "deep" else rng.integers(800, 1200))
            sid = f"s{subject}.{rep}"
            ids.append(sid)
            rows.append(rng.multinomial(reads, base))
            md.append({"sample-id": sid, "label": label, "subject": f"p{subject}"})
    table = biom.Table(np.array(rows).T, [f"f{i}" for i in range(n_features)], ids)
    folder.mkdir()
    with biom.util.biom_open(str(folder / "table.biom"), "w") as fh:
        table.to_hdf5(fh, "depth test")
    pd.DataFrame(md).to_csv(folder / "metadata.tsv", sep="\t", index=False)


def test_a_task_depth_alone_predicts_is_flagged_confounded(tmp_path, monkeypatch):
    _depth_study(tmp_path / "study")
    task = T.Task("depth-test", "depth-test", "label", "classification", "table.biom", "metadata.tsv", None, None,
                  "braycurtis", ("subject",), "grouped by subject", description="label = sequencing depth",
                  root=str(tmp_path / "study"))
    monkeypatch.setattr(T, "QUICK_TASKS", [task])
    out, docs = tmp_path / "out", tmp_path / "docs" / "science.md"
    heldout.main(["--quick", "--tasks", "depth-test", "--models", "rf100", "depth", "constant", "--out", str(out),
                  "--docs", str(docs), "--strict"])
    text = docs.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| depth-test |") and "confounded" in line]
    assert rows, "the confound table does not flag the depth task"
    results = heldout.load_results(str(out))
    yard = Y.compute(results, str(out))
    flag, found = Y.confound(results["tasks"]["depth-test"], yard["depth-test"])
    assert flag and found["accuracy"][0] > 0.9


def test_depth_matched_task_gives_every_model_the_rarefied_draw():
    task = dataclasses.replace(QUICK["keyboard-subject"], depth_matched=True, fixed_depth=500)
    fold, _ = _fold(task)
    assert fold.depth == 500
    for side in (fold.train, fold.pool, fold.test):
        assert set(np.asarray(side.table.sum(axis="sample"))) == {500}
        assert side.table is side.rarefied
    # reads per sample carry nothing there: the depth baseline predicts one class for every sample
    assert B.depth_only(fold, 0, M.Budget()).values.nunique() == 1


def test_baselines_predict_every_heldout_sample():
    for name in ("mp-bodysite", "mp-days"):
        fold, _ = _fold(QUICK[name])
        for recipe in ("constant", "depth", "et100", "gb100", "clr-linear", "knn", "best-classical"):
            pred = M.RECIPES[recipe].fn(fold, 0, M.Budget(quick=True))
            assert sorted(pred.values.index.astype(str)) == sorted(fold.test.ids), (name, recipe)
            if fold.task.classifier:
                assert np.allclose(pred.probabilities.sum(axis=1), 1.0)
    fold, _ = _fold(QUICK["mp-days"])
    assert (B.constant(fold, 0, None).values == fold.train.y.mean()).all()
    chosen = B.best_classical(fold, 0, M.Budget(quick=True)).info
    assert chosen["chosen"] in B.CLASSICAL_CANDIDATES and set(chosen["inner_scores"]) == set(B.CLASSICAL_CANDIDATES)


def test_resume_takes_finished_units_from_the_cache(tmp_path):
    argv = ["--quick", "--tasks", "mp-days", "mp-bodysite", "--models", "constant", "rf100", "--out", str(tmp_path),
            "--no-docs", "--resume", "--strict"]
    heldout.main(argv)
    first = heldout.load_results(str(tmp_path))
    predictions = (tmp_path / "predictions" / "mp-days.tsv").read_text()
    cached = sorted((tmp_path / "cache").glob("*.json"))
    assert len(cached) == 3  # one unit per fold (both tasks share their folds)
    # recipes that fail if called: the second sitting must take every unit from the cache
    monkey = {name: M.RECIPES[name] for name in ("constant", "rf100")}
    try:
        for name in monkey:
            M.RECIPES[name] = dataclasses.replace(monkey[name], fn=_never_called)
        heldout.main(argv)
    finally:
        M.RECIPES.update(monkey)
    again = heldout.load_results(str(tmp_path))
    assert (tmp_path / "predictions" / "mp-days.tsv").read_text() == predictions
    for name in ("mp-days", "mp-bodysite"):
        for model, res in first["tasks"][name]["results"]["1"].items():
            summary = {k: v for k, v in res["summary"].items() if k != "run"}
            assert summary == {k: v for k, v in again["tasks"][name]["results"]["1"][model]["summary"].items()
                               if k != "run"}


def _never_called(fold, seed, budget):
    raise AssertionError("a cached unit ran again")


def test_confound_flag_needs_depth_to_have_learnt_something():
    def yard(depth, constant, best):
        est = {"depth": depth, "constant": constant, "rf500": best}
        return {"intervals": {m: {"accuracy": {"estimate": v}, "auc": {"estimate": 0.5}} for m, v in est.items()}}
    entry = {"kind": "classification"}
    assert Y.confound(entry, yard(0.95, 0.6, 0.74))[0]  # ibd-ibd: depth alone beats every model
    assert not Y.confound(entry, yard(0.6, 0.6, 0.6))[0]  # depth-matched: depth is the constant, nothing learnt
    assert not Y.confound(entry, yard(0.7, 0.6, 0.9))[0]  # depth learns something, the models far more
    assert Y.confound({"kind": "regression"}, {"intervals": {}}) == (None, {})
