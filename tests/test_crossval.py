"""Cross-validation in one command: the engine (`aam.api.cross_validate`), the pipelines `classify-samples` /
`regress-samples` from the QIIME 2 Python API and from q2cli, grouped folds, resuming an interrupted run, and
q2-sample-classifier's visualizers on the out-of-fold predictions."""
import os
import re
import zipfile

import numpy as np
import pandas as pd
import pytest
import qiime2

from aam import api
from aam.errors import AAMInputError
from aam.evaluation.stats import average_precision
from aam.workflows import crossval
from tests.conftest import CROSSVAL_SETTINGS, KB, MP, TINY, run_qiime

KB_TABLE, KB_SEQS, KB_MD = (os.path.join(KB, f) for f in ("table.qza", "rep-seqs.qza", "sample-metadata.tsv"))
MP_TABLE, MP_SEQS, MP_MD = (os.path.join(MP, f) for f in ("table.qza", "rep-seqs.qza", "sample-metadata.tsv"))


def _keyboard(**options):
    opts = crossval.resolve_options({"group_column": "Subject", **CROSSVAL_SETTINGS, **options})
    inputs = crossval.CrossValInputs(KB_TABLE, KB_MD, "SampleType", classifier=True, sequences=KB_SEQS)
    return inputs, opts


# ---- folds ----------------------------------------------------------------------------------------------------------
def test_grouped_folds_keep_every_subject_on_one_side_and_predict_every_sample_once():
    inputs, opts = _keyboard()
    labelled = crossval.labelled_samples(inputs, opts)
    folds = crossval.make_folds(labelled, opts, classifier=True)
    subject = dict(zip(labelled.ids, labelled.groups))
    assert len(folds) == 3 and len(set(subject.values())) == 6
    for train, test in folds:
        assert not {subject[s] for s in train} & {subject[s] for s in test}
        assert set(labelled.y.loc[train]) == {"keyboard", "skin"}  # stratified: both classes train in every fold
    held_out = [s for _, test in folds for s in test]
    assert sorted(held_out) == sorted(labelled.ids)


def test_a_class_with_fewer_members_than_folds_is_one_clear_error():
    # Moving Pictures slice: 16 samples, each body site 4 times
    with pytest.raises(AAMInputError, match=r"class '\w[\w ]*' of 'body-site' has 4 sample\(s\), fewer than the 5 "
                                            r"folds.*Lower --cv to 4 or less"):
        api.cross_validate(MP_TABLE, MP_MD, "body-site", classifier=True, sequences=MP_SEQS, cv=5, **TINY)
    with pytest.raises(AAMInputError, match=r"in 3 group\(s\), fewer than the 4 folds"):
        api.cross_validate(KB_TABLE, KB_MD, "SampleType", classifier=True, sequences=KB_SEQS, cv=4,
                           group_column="Subject", **TINY)


def test_folds_that_train_on_a_single_group_are_refused_before_any_training():
    # two subjects in two folds: each fit would have one subject, none left for its grouped validation split
    with pytest.raises(AAMInputError, match=r"trains on 1 group.*--validation-fraction 0"):
        api.cross_validate(MP_TABLE, MP_MD, "days-since-experiment-start", sequences=MP_SEQS, cv=2,
                           group_column="subject", **TINY)
    with pytest.raises(AAMInputError, match=r"'subject' has 2 groups, fewer than the 3 folds.*Lower --cv to 2"):
        api.cross_validate(MP_TABLE, MP_MD, "days-since-experiment-start", sequences=MP_SEQS, cv=3,
                           group_column="subject", **TINY)


# ---- resuming ---------------------------------------------------------------------------------------------------
def test_an_interrupted_run_resumes_after_its_last_finished_fold(tmp_path, monkeypatch):
    run_dir = str(tmp_path / "cv")
    real = crossval.run_fold
    calls = []

    def interrupted(k, *args, **kwargs):
        calls.append(k)
        if k == 2:
            raise KeyboardInterrupt  # the user stops the run while fold 2 trains
        return real(k, *args, **kwargs)

    options = dict(group_column="Subject", cv_dir=run_dir, **CROSSVAL_SETTINGS)
    monkeypatch.setattr(crossval, "run_fold", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.cross_validate(KB_TABLE, KB_MD, "SampleType", classifier=True, sequences=KB_SEQS, **options)
    # fold 1 whole: its predictions and its importance; nothing of fold 2
    assert sorted(os.listdir(run_dir)) == ["fold-1-importance.npz", "fold-1.tsv", "key.json"]
    first = pd.read_csv(os.path.join(run_dir, "fold-1.tsv"), sep="\t", index_col=0)

    monkeypatch.setattr(crossval, "run_fold", lambda k, *a, **kw: calls.append(k) or real(k, *a, **kw))
    lines = []
    result = api.cross_validate(KB_TABLE, KB_MD, "SampleType", classifier=True, sequences=KB_SEQS, log=lines.append,
                                **options)
    assert calls == [1, 2, 2, 3]  # fold 1 was read back, not trained again
    assert any(re.match(r"fold 1/3: .*read back", line) for line in lines), lines
    assert list(result.folds["read back"]) == [True, False, False]
    assert len(result.predictions) == 24 and set(result.predictions["fold"]) == {1, 2, 3}
    back = result.predictions[result.predictions["fold"] == 1]
    assert np.allclose(back["aam_probability_skin"], first.loc[back.index, "aam_probability_skin"])
    assert (back["aam_prediction"] == first.loc[back.index, "aam_prediction"]).all()
    assert os.path.isdir(run_dir)  # a directory the user named is kept
    # the importance read back is the one measured before the interruption: an uninterrupted run gives the same
    fresh = api.cross_validate(KB_TABLE, KB_MD, "SampleType", classifier=True, sequences=KB_SEQS,
                               **{**options, "cv_dir": str(tmp_path / "fresh")})
    columns = ["group", "member", "importance", "low", "high", "p_value"]
    pd.testing.assert_frame_equal(result.importance[columns], fresh.importance[columns])

    # the same directory with other options holds another run's folds: refused before any training
    with pytest.raises(AAMInputError, match="holds the folds of another cross-validation"):
        api.cross_validate(KB_TABLE, KB_MD, "SampleType", classifier=True, sequences=KB_SEQS,
                           **{**options, "epochs": 3})


def test_average_precision_is_scikit_learns():
    from sklearn.metrics import average_precision_score
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 30))
        positive = rng.random(n) < 0.4
        positive[0] = True
        score = np.round(rng.random(n), 1)  # ties
        assert average_precision(positive, score) == pytest.approx(average_precision_score(positive, score))


# ---- the pipelines ----------------------------------------------------------------------------------------------
def _zip_names(path):
    with zipfile.ZipFile(path) as zf:
        return [n.split("/", 1)[1] for n in zf.namelist()]


def _read(path, name):
    with zipfile.ZipFile(path) as zf:
        member = next(n for n in zf.namelist() if n.split("/", 1)[1] == name)
        return zf.read(member).decode()


def test_classify_samples_from_the_python_api(crossval_outputs):
    types = {name: qiime2.Artifact.peek(crossval_outputs[name]).type
             for name in ("predictions", "probabilities", "model")}
    assert types == {"predictions": "SampleData[ClassifierPredictions]",
                     "probabilities": "SampleData[Probabilities]", "model": "AAMModel[AAMClassifier]"}
    predictions = qiime2.Artifact.load(crossval_outputs["predictions"]).view(pd.Series)
    assert len(predictions) == 24 and set(predictions) <= {"keyboard", "skin"}
    log = crossval_outputs["log"]
    for k in (1, 2, 3):
        assert re.search(rf"^fold {k}/3: 16 training / 8 held-out samples \(4 / 2 groups, none on both sides\)$",
                         log, re.M), log
        assert re.search(rf"^fold {k}/3 done in \d+ s: AAM accuracy [\d.]+, forest accuracy [\d.]+$", log, re.M)
    assert "the final model: fit-classifier on every sample" in log
    # the final model saw every sample; the run's folds were removed from the cache once it completed
    from q2_aam._format import AAMModelDirFmt
    data = qiime2.Artifact.load(crossval_outputs["model"]).view(AAMModelDirFmt).read_record().data
    assert data.n_samples + len(data.dropped_low_depth) == 24
    assert not os.listdir(os.path.join(crossval_outputs["cache"], "q2-aam", "crossval"))


def test_the_visualization_holds_both_models_every_fold_and_the_comparison(crossval_outputs):
    viz = crossval_outputs["visualization"]
    names = _zip_names(viz)
    for name in ("data/index.html", "data/per-fold.tsv", "data/per-fold.png", "data/comparison.tsv",
                 "data/intervals.tsv", "data/confusion-matrix.png", "data/confusion-matrix-2.png"):
        assert name in names, name
    per_fold = pd.read_csv(pd.io.common.StringIO(_read(viz, "data/per-fold.tsv")), sep="\t")
    assert list(per_fold["fold"]) == [1, 1, 2, 2, 3, 3]
    assert list(per_fold["model"]) == ["AAM", "random forest"] * 3 and set(per_fold["samples"]) == {8}
    intervals = pd.read_csv(pd.io.common.StringIO(_read(viz, "data/intervals.tsv")), sep="\t")
    assert set(intervals["model"]) == {"AAM", "random forest"}
    assert "AAM - random forest" in _read(viz, "data/comparison.tsv")
    assert "whole groups of &#39;Subject&#39;" in _read(viz, "data/index.html")


def test_classify_samples_measures_importance_in_every_fold_on_its_held_out_samples(crossval_outputs):
    log = crossval_outputs["log"]
    assert "feature importance in every fold: the 6 most abundant groups (features correlated above 0.7)" in log
    for k in (1, 2, 3):  # each fold's model, on its 8 held-out samples
        assert re.search(rf"^fold {k} feature importance: 6 feature groups x 2 permutations = 12 prediction passes "
                         r"of 8 samples", log, re.M), log
    importance = qiime2.Artifact.load(crossval_outputs["feature_importance"])
    details = qiime2.Artifact.load(crossval_outputs["importance_details"]).view(pd.DataFrame)
    assert str(importance.type) == "FeatureData[Importance]"
    assert list(importance.view(pd.DataFrame).columns) == ["importance"]
    assert sorted(details["group"].unique()) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert {"network_importance", "forest_importance", "direction_keyboard", "direction_skin"} <= set(details)
    names = _zip_names(crossval_outputs["importance_visualization"])
    assert {"data/index.html", "data/importance-per-group.tsv", "data/importance.png"} <= set(names)
    # q2-sample-classifier's heatmap reads the out-of-fold importance as it reads its own estimators'
    from qiime2.plugins import sample_classifier
    md = qiime2.Metadata.load(KB_MD)
    heatmap, _ = sample_classifier.pipelines.heatmap(
        table=qiime2.Artifact.load(KB_TABLE), importance=importance, sample_metadata=md.get_column("SampleType"),
        feature_count=5)
    assert str(heatmap.type) == "Visualization"


def test_q2_sample_classifier_confusion_matrix_takes_the_out_of_fold_predictions(crossval_outputs):
    from qiime2.plugins import sample_classifier
    md = qiime2.Metadata.load(KB_MD)
    visualization, = sample_classifier.visualizers.confusion_matrix(
        predictions=qiime2.Artifact.load(crossval_outputs["predictions"]),
        probabilities=qiime2.Artifact.load(crossval_outputs["probabilities"]), truth=md.get_column("SampleType"))
    assert "index.html" in [os.path.basename(p) for p in _zip_names_of(visualization)]


def _zip_names_of(visualization):
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = visualization.save(os.path.join(tmp, "v.qzv"))
        return _zip_names(path)


def test_regress_samples_from_q2cli_and_scatterplot(q2cli_env, tmp_path):
    out = {name: str(tmp_path / name) for name in ("predictions.qza", "model.qza", "cv.qzv", "importance.qza",
                                                   "details.qza", "importance.qzv")}
    tiny = ["--p-asv-encoder", "none", "--p-embedding-dim", "16", "--p-attention-heads", "2",
            "--p-attention-layers", "1", "--p-token-limit", "32", "--p-max-bp", "48", "--p-batch-size", "4",
            "--p-epochs", "2", "--p-num-threads", "1", "--p-forest-trees", "20", "--p-top", "5", "--p-repeats", "2"]
    environ = dict(q2cli_env, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = run_qiime(["aam", "regress-samples", "--i-table", MP_TABLE, "--i-sequences", MP_SEQS,
                      "--m-metadata-file", MP_MD, "--m-metadata-column", "days-since-experiment-start",
                      "--p-cv", "2", *tiny, "--o-predictions", out["predictions.qza"], "--o-model",
                      out["model.qza"], "--o-visualization", out["cv.qzv"], "--o-feature-importance",
                      out["importance.qza"], "--o-importance-details", out["details.qza"],
                      "--o-importance-visualization", out["importance.qzv"], "--verbose"], environ)
    assert re.search(r"^fold 2/2 done in \d+ s: AAM MAE [\d.e+]+, forest MAE", proc.stdout, re.M), proc.stdout
    assert qiime2.Artifact.peek(out["predictions.qza"]).type == "SampleData[RegressorPredictions]"
    assert qiime2.Artifact.peek(out["model.qza"]).type == "AAMModel[AAMRegressor]"
    assert "data/per-fold.tsv" in _zip_names(out["cv.qzv"])
    assert qiime2.Artifact.peek(out["importance.qza"]).type == "FeatureData[Importance]"
    assert re.search(r"^fold 1 feature importance: 5 feature groups x 2 permutations", proc.stdout, re.M)
    assert "data/importance-per-group.tsv" in _zip_names(out["importance.qzv"])
    from qiime2.plugins import sample_classifier
    scatter, = sample_classifier.visualizers.scatterplot(
        predictions=qiime2.Artifact.load(out["predictions.qza"]),
        truth=qiime2.Metadata.load(MP_MD).get_column("days-since-experiment-start"))
    assert "index.html" in [os.path.basename(p) for p in _zip_names_of(scatter)]
    # a bad option is one clear line, naming it as q2cli spells it
    bad = run_qiime(["aam", "classify-samples", "--i-table", MP_TABLE, "--i-sequences", MP_SEQS,
                     "--m-metadata-file", MP_MD, "--m-metadata-column", "body-site", "--p-cv", "5", *tiny,
                     "--o-predictions", str(tmp_path / "p"), "--o-probabilities", str(tmp_path / "q"),
                     "--o-model", str(tmp_path / "m"), "--o-visualization", str(tmp_path / "v"),
                     "--o-feature-importance", str(tmp_path / "i"), "--o-importance-details", str(tmp_path / "d"),
                     "--o-importance-visualization", str(tmp_path / "iv")], environ,
                    expect_ok=False)
    assert bad.returncode != 0 and "--p-cv" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_aam_crossval_command_fits_each_fold_on_its_training_samples_distances(tmp_path, capsys):
    from aam.cli import main
    output = tmp_path / "oof.tsv"
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    code = main(["crossval", "--table", MP_TABLE, "--sequences", MP_SEQS, "--tree", os.path.join(MP, "tree.nwk"),
                 "--metadata", MP_MD, "--metadata-column", "days-since-experiment-start", "--cv", "2", "--epochs", "1",
                 "--forest-trees", "10", "--top", "4", "--repeats", "2", "--cv-dir", str(tmp_path / "cv"),
                 "--output", str(output), *tiny])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    # the UniFrac loss of each fold's fit is computed on that fold's 8 training samples, never on all 16
    assert len(re.findall(r"^distances: unweighted UniFrac of the rarefied table, 8 samples", printed.out,
                          re.M)) == 2, printed.out
    frame = pd.read_csv(output, sep="\t", index_col=0)
    assert len(frame) == 16 and sorted(set(frame["fold"])) == [1, 2]
    assert {"truth", "aam_prediction", "forest_prediction"} <= set(frame.columns)
    assert np.isfinite(frame["aam_prediction"]).all() and np.isfinite(frame["forest_prediction"]).all()
    assert sorted(os.listdir(tmp_path / "cv")) == ["fold-1-importance.npz", "fold-1.tsv", "fold-2-importance.npz",
                                                   "fold-2.tsv", "key.json"]
    importance = pd.read_csv(tmp_path / "oof.importance.tsv", sep="\t")
    assert set(importance["member"]) >= {"prediction"} and importance["group"].nunique() == 4
    assert "out-of-fold feature importance of 4 groups written to" in printed.out


def test_a_taxonomy_missing_features_is_refused_before_any_fold_trains(monkeypatch):
    # the bundled example taxonomy does not classify some of the table's features: grouped by taxon, they would form
    # a group 'unassigned' measured as if it were one
    from q2_aam._examples import example_path
    taxonomy = qiime2.Artifact.load(example_path("taxonomy.qza")).view(pd.DataFrame)
    monkeypatch.setattr(crossval, "run_fold", lambda *a, **k: pytest.fail("a fold trained"))
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "q2-aam", "crossval")
    before = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    with pytest.raises(AAMInputError, match=r"has no lineage for \d+ of the table's \d+ features.*leave the "
                                            r"taxonomy out to group features by correlation"):
        api.cross_validate(MP_TABLE, MP_MD, "days-since-experiment-start", sequences=MP_SEQS, cv=2,
                           taxonomy=taxonomy, **TINY)
    after = set(os.listdir(cache)) if os.path.isdir(cache) else set()
    assert after == before  # refused before any run directory was made
