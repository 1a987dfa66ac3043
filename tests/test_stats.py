"""aam.evaluation.stats on constructed cases at fixed seeds: group resampling, intervals, verdicts, fold tests."""
import numpy as np
import pytest
from sklearn import metrics as skm

from aam.evaluation import stats as S


def _regression(truth, prediction):
    return S.Scored(np.asarray(truth, dtype=float), np.asarray(prediction, dtype=float))


def test_group_bootstrap_never_splits_a_group():
    groups = np.repeat(["a", "b", "c", "d", "e"], [1, 3, 5, 2, 4])
    rng = np.random.default_rng(3)
    groups = groups[rng.permutation(len(groups))]  # members of a group are not next to each other
    size = {g: int((groups == g).sum()) for g in set(groups)}
    for idx in S.group_bootstrap_indices(groups, 200, seed=11):
        drawn = groups[idx]
        for g in set(drawn):
            # every drawn group comes whole: its samples appear a multiple of its size, each sample equally often
            positions = idx[drawn == g]
            assert len(positions) % size[g] == 0
            counts = np.bincount(positions, minlength=len(groups))[groups == g]
            assert len(set(counts)) == 1
        assert len(np.unique(drawn)) <= 5


def test_group_bootstrap_fixed_by_seed():
    groups = np.arange(10) // 2
    a = S.group_bootstrap_indices(groups, 5, seed=1)
    b = S.group_bootstrap_indices(groups, 5, seed=1)
    c = S.group_bootstrap_indices(groups, 5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_known_paired_difference_inside_its_interval():
    # the model's absolute errors are the reference's minus 0.5 plus noise: the true MAE difference is -0.5
    rng = np.random.default_rng(0)
    n, subjects = 300, 60
    groups = np.repeat(np.arange(subjects), n // subjects)
    truth = rng.normal(size=n)
    ref_err = 1.0 + rng.uniform(0, 1, size=n)
    model_err = ref_err - 0.5 + rng.normal(scale=0.05, size=n)
    sign = rng.choice([-1, 1], size=n)
    ref = _regression(truth, truth + sign * ref_err)
    model = _regression(truth, truth + sign * model_err)
    result = S.compare("mae", model, ref, groups=groups, n_resamples=500, seed=4)
    assert result.difference.contains(-0.5)
    assert result.difference.high < 0
    assert result.verdict == "ahead"
    # the other way round it is behind
    assert S.compare("mae", ref, model, groups=groups, n_resamples=200, seed=4).verdict == "behind"
    assert result.difference.n_groups == subjects and result.difference.n_samples == n


def test_a_tie_is_level():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=80)
    pred = truth + rng.normal(size=80)
    same = S.compare("mae", _regression(truth, pred), _regression(truth, pred.copy()), n_resamples=100, seed=0)
    assert same.verdict == "level" and same.difference.estimate == 0.0
    # two models equally good on different samples: a difference whose interval includes 0
    labels = np.array(["x", "y"] * 50)
    right_a = rng.permutation(np.r_[np.ones(50, bool), np.zeros(50, bool)])
    right_b = ~right_a
    other = {"x": "y", "y": "x"}
    pa = np.where(right_a, labels, [other[v] for v in labels])
    pb = np.where(right_b, labels, [other[v] for v in labels])
    cls = ("x", "y")
    res = S.compare("accuracy", S.Scored(labels, pa, classes=cls), S.Scored(labels, pb, classes=cls),
                    n_resamples=300, seed=2)
    assert res.difference.estimate == 0.0
    assert res.difference.low < 0 < res.difference.high
    assert res.verdict == "level"


def test_verdict_rule():
    assert S.verdict(0.01, 0.2, True) == "ahead"
    assert S.verdict(-0.2, -0.01, True) == "behind"
    assert S.verdict(-0.2, -0.01, False) == "ahead"  # an MAE difference below 0 is better
    assert S.verdict(-0.1, 0.1, True) == "level"
    assert S.verdict(0.0, 0.1, True) == "level"  # parity on the edge is not excluded
    assert S.verdict(None, None, True) == "level"


def test_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    classes = ("Control", "Crohns")
    truth = rng.choice(classes, size=60)
    prob = np.clip(rng.uniform(size=60) * 0.6 + (truth == "Crohns") * 0.35, 0, 1)
    probabilities = np.c_[1 - prob, prob]
    pred = np.where(prob > 0.5, "Crohns", "Control")
    scored = S.Scored(truth, pred, probabilities, classes, "Crohns")
    assert S.metric_value("accuracy", scored) == pytest.approx(skm.accuracy_score(truth, pred))
    assert S.metric_value("balanced_accuracy", scored) == pytest.approx(skm.balanced_accuracy_score(truth, pred))
    assert S.metric_value("auc", scored) == pytest.approx(skm.roc_auc_score(truth == "Crohns", prob))
    assert S.metric_value("auprc", scored) == pytest.approx(skm.average_precision_score(truth == "Crohns", prob))
    y = rng.normal(size=30)
    p = y + rng.normal(size=30)
    assert S.metric_value("r2", _regression(y, p)) == pytest.approx(skm.r2_score(y, p))
    assert S.metric_value("r2", _regression(np.ones(5), np.ones(5))) is None
    one_class = S.Scored(np.array(["Crohns"] * 3), np.array(["Crohns"] * 3), np.full((3, 2), 0.5), classes)
    assert S.metric_value("auc", one_class) is None


def test_metric_interval_over_groups_skips_undefined_resamples():
    # 4 subjects, each of one class: some resamples hold one class only, where AUC is undefined
    classes = ("a", "b")
    truth = np.array(["a"] * 6 + ["b"] * 6)
    prob_b = np.r_[np.linspace(0.1, 0.6, 6), np.linspace(0.4, 0.9, 6)]
    scored = S.Scored(truth, np.where(prob_b > 0.5, "b", "a"), np.c_[1 - prob_b, prob_b], classes)
    groups = np.repeat(["s1", "s2", "s3", "s4"], 3)
    iv = S.metric_interval("auc", scored, groups=groups, n_resamples=200, seed=0)
    assert iv.n_groups == 4 and iv.n_undefined > 0
    assert iv.low <= iv.estimate <= iv.high


def test_fold_tests():
    res = S.fold_tests([0.1, 0.2, 0.05, -0.01, 0.0, 0.3, 0.15, 0.12, 0.08, 0.09, None])
    assert (res.n, res.wins, res.losses, res.ties) == (10, 8, 1, 1)
    assert res.sign_p == pytest.approx(0.0390625)
    assert 0 < res.wilcoxon_p < 0.05
    balanced = S.fold_tests([0.1, -0.1, 0.2, -0.2, 0.0])
    assert balanced.sign_p == pytest.approx(1.0) and balanced.wilcoxon_p == pytest.approx(1.0)
    nothing = S.fold_tests([0.0, 0.0])
    assert nothing.sign_p is None and nothing.wilcoxon_p is None and nothing.ties == 2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="2 predictions for 3 true values"):
        _regression([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="same samples"):
        S.compare("mae", _regression([1, 2], [1, 2]), _regression([1, 3], [1, 2]))
    with pytest.raises(ValueError, match="unknown metric 'rmse'"):
        S.metric_value("rmse", _regression([1], [1]))
    with pytest.raises(ValueError, match="3 group labels for 2 samples"):
        S.metric_interval("mae", _regression([1, 2], [1, 2]), groups=[1, 2, 3])


@pytest.mark.parametrize("metric", ["mae", "r2", "accuracy", "balanced_accuracy", "auc", "auprc"])
def test_resampled_values_equal_the_metric_on_each_resample(metric):
    # the per-sample fast paths give what metric_value gives on the resampled predictions
    rng = np.random.default_rng(8)
    groups = np.repeat(np.arange(15), 4)
    if metric in ("mae", "r2"):
        y = rng.normal(size=60)
        scored = _regression(y, y + rng.normal(size=60))
    else:
        classes = ("a", "b")
        truth = rng.choice(classes, size=60)
        prob = rng.uniform(size=60)
        scored = S.Scored(truth, np.where(prob > 0.4, "b", "a"), np.c_[1 - prob, prob], classes)
    resamples = S.group_bootstrap_indices(groups, 30, seed=1)
    fast = S.Resampled(metric, scored, resamples, 15).values
    slow = [S.metric_value(metric, scored.take(idx)) for idx in resamples]
    assert fast == pytest.approx(slow)


def test_ranking_metrics_average_over_strata():
    # a constant predictor fitted on two folds: its probabilities differ by fold and, pooled, would rank one fold's
    # samples above the other's; per fold it ranks nothing (AUC 0.5)
    classes = ("a", "b")
    truth = np.array(["a", "a", "a", "b", "a", "b", "b", "b"])
    prob_b = np.array([0.3] * 4 + [0.6] * 4)
    strata = np.array([0] * 4 + [1] * 4)
    pooled = S.Scored(truth, np.where(prob_b > 0.5, "b", "a"), np.c_[1 - prob_b, prob_b], classes)
    per_fold = S.Scored(pooled.truth, pooled.prediction, pooled.probabilities, classes, strata=strata)
    assert S.metric_value("auc", pooled) > 0.7
    assert S.metric_value("auc", per_fold) == pytest.approx(0.5)
    assert S.metric_value("accuracy", per_fold) == S.metric_value("accuracy", pooled)
    resampled = S.Resampled("auc", per_fold, S.group_bootstrap_indices(np.arange(8), 20, 0), 8).values
    assert all(v is None or v == pytest.approx(0.5) for v in resampled)
