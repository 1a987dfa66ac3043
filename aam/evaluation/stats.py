"""Uncertainty of held-out scores: bootstrap intervals over whole groups, paired model comparisons, fold tests.

Samples of one subject (or house) are not independent: a subject held out with twenty samples is one draw of the
population, not twenty. Every interval here therefore resamples whole groups with replacement (samples when no
group is given): `group_bootstrap_indices` is the only hand-written resampling; metrics come from scikit-learn
and the fold tests from `scipy.stats` (`wilcoxon`, `binomtest`).

Three uses:

- `metric_interval`: one model's metric (MAE, R², accuracy, balanced accuracy, AUC, AUPRC) with its 95% interval.
- `compare`: two models scored on the same samples; the difference of a metric (model minus reference) with its
  interval, resampled in pairs (the same groups for both models), and a verdict: "ahead" or "behind" only when the
  interval excludes parity, otherwise "level".
- `fold_tests`: over many task-folds, how often a model wins, with a sign test and a Wilcoxon signed-rank test.

Scikit-learn and SciPy are imported inside the functions: importing this module costs nothing.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np

#: metric name -> whether a higher value is better
METRICS: Dict[str, bool] = {"mae": False, "r2": True, "accuracy": True, "balanced_accuracy": True, "auc": True,
                            "auprc": True}
REGRESSION_METRICS = ("mae", "r2")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "auc", "auprc")
VERDICTS = ("ahead", "level", "behind")


@dataclass(frozen=True)
class Scored:
    """Held-out predictions of one model with their truth, aligned by position.

    Attributes
    ----------
    truth : numpy.ndarray
        [N] true values (float) or class labels (str).
    prediction : numpy.ndarray
        [N] predicted values or class labels.
    probabilities : numpy.ndarray, optional
        [N, C] class probabilities in the order of `classes` (classification; needed for AUC and AUPRC).
    classes : tuple of str, optional
        Class labels of a classification task.
    positive : str, optional
        Positive class of a binary task (default: the last of `classes`).
    strata : numpy.ndarray, optional
        [N] the model that scored each sample, e.g. its cross-validation fold. Ranking metrics (AUC, AUPRC) are
        then the mean over strata of each stratum's value: probabilities of models fitted on different folds are
        not on one scale (a constant predictor's training class shares differ by fold, and pooled over folds they
        rank samples against their own class balance).
    """

    truth: np.ndarray
    prediction: np.ndarray
    probabilities: Optional[np.ndarray] = None
    classes: Optional[tuple] = None
    positive: Optional[str] = None
    strata: Optional[np.ndarray] = None

    def __post_init__(self):
        n = len(self.truth)
        if len(self.prediction) != n:
            raise ValueError(f"{len(self.prediction)} predictions for {n} true values; align them by sample first")
        if self.probabilities is not None:
            if self.classes is None:
                raise ValueError("probabilities were given without the classes naming their columns")
            if np.shape(self.probabilities) != (n, len(self.classes)):
                raise ValueError(f"probabilities have shape {np.shape(self.probabilities)}, expected "
                                 f"({n}, {len(self.classes)}): one row per sample, one column per class")
        if self.strata is not None and len(self.strata) != n:
            raise ValueError(f"{len(self.strata)} strata for {n} samples")

    def __len__(self):
        return len(self.truth)

    def take(self, index):
        """The samples at positions `index` (repeats allowed), as a new `Scored`."""
        prob = None if self.probabilities is None else self.probabilities[index]
        strata = None if self.strata is None else self.strata[index]
        return Scored(self.truth[index], self.prediction[index], prob, self.classes, self.positive, strata)


@dataclass(frozen=True)
class Interval:
    """A statistic on all samples and its bootstrap percentile interval.

    Attributes
    ----------
    metric : str
    estimate : float or None
        The statistic on every sample (None when undefined, e.g. AUC with one class).
    low, high : float or None
        Bounds of the `level` percentile interval over the resamples where the statistic is defined.
    level : float
    n_samples, n_groups : int
    n_resamples : int
        Resamples drawn; `n_undefined` of them left the statistic undefined (a class missing) and are not used.
    n_undefined : int
    """

    metric: str
    estimate: Optional[float]
    low: Optional[float]
    high: Optional[float]
    level: float
    n_samples: int
    n_groups: int
    n_resamples: int
    n_undefined: int = 0

    def contains(self, value):
        """Whether `value` lies within [low, high] (False when the interval is undefined)."""
        return self.low is not None and self.low <= value <= self.high


@dataclass(frozen=True)
class Comparison:
    """A model against a reference on the same samples: the paired difference of a metric and the verdict.

    Attributes
    ----------
    metric : str
    difference : Interval
        model minus reference (for MAE a negative difference is better), with its interval over paired resamples.
    model, reference : Interval
        Each model's own metric and interval (the same resamples).
    higher_is_better : bool
    verdict : {'ahead', 'level', 'behind'}
        'ahead' / 'behind' only when the difference's interval excludes 0 on the better / worse side.
    """

    metric: str
    difference: Interval
    model: Interval
    reference: Interval
    higher_is_better: bool
    verdict: str


@dataclass(frozen=True)
class FoldTests:
    """Paired per-fold gains of a model over a reference, pooled over task-folds.

    Attributes
    ----------
    n : int
        Task-folds compared.
    wins, losses, ties : int
        Folds where the gain is positive, negative, zero (within `tie_tolerance`).
    median_gain : float or None
    sign_p : float or None
        Two-sided exact binomial test of wins against losses (ties left out); None without wins or losses.
    wilcoxon_p : float or None
        Two-sided Wilcoxon signed-rank test of the non-zero gains; None without any.
    gains : tuple of float
    """

    n: int
    wins: int
    losses: int
    ties: int
    median_gain: Optional[float]
    sign_p: Optional[float]
    wilcoxon_p: Optional[float]
    gains: tuple = field(default_factory=tuple, repr=False)


# ---------------------------------------------------------------------------------------------- metrics

def _class_labels(scored):
    if scored.classes is None:
        raise ValueError("a classification metric needs Scored.classes")
    return list(scored.classes)


def _positive_scores(scored):
    """(is_positive [N] bool, probability of the positive class [N]) of a binary task."""
    classes = _class_labels(scored)
    positive = scored.positive if scored.positive is not None else classes[-1]
    if positive not in classes:
        raise ValueError(f"positive class {positive!r} is not one of the classes {classes}")
    column = classes.index(positive)
    return np.asarray(scored.truth) == positive, scored.probabilities[:, column]


def _auc(scored):
    """ROC AUC: of the positive class (binary) or macro one-vs-rest over the classes present (multiclass); by the
    rank-sum formula of `aam.evaluation.metrics` (scikit-learn's ``roc_auc_score`` gives the same, slower)."""
    from aam.evaluation.metrics import _binary_auc
    if scored.probabilities is None:
        return None
    classes = _class_labels(scored)
    truth = np.asarray(scored.truth)
    if len(classes) == 2:
        is_pos, score = _positive_scores(scored)
        return _binary_auc(is_pos.astype(np.int64), score)
    per_class = [_binary_auc((truth == c).astype(np.int64), scored.probabilities[:, j])
                 for j, c in enumerate(classes) if 0 < (truth == c).sum() < len(truth)]
    return float(np.mean(per_class)) if per_class else None


def average_precision(is_positive, score):
    """Average precision: scikit-learn's ``average_precision_score`` (the same value, ties included) without its
    input checks, which cost more than the sum itself when a bootstrap calls it thousands of times.

    AP = sum over distinct score thresholds (highest first) of (recall gained) x (precision at the threshold).
    """
    is_positive = np.asarray(is_positive, dtype=float)
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="mergesort")
    ranked = score[order]
    last_of_threshold = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_positives = np.cumsum(is_positive[order])[last_of_threshold]
    precision = true_positives / (last_of_threshold + 1)
    recall = true_positives / true_positives[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _auprc(scored):
    """Area under the precision-recall curve (average precision) of the positive class; macro over classes
    present for a multiclass task."""
    if scored.probabilities is None:
        return None
    classes = _class_labels(scored)
    truth = np.asarray(scored.truth)
    if len(classes) == 2:
        is_pos, score = _positive_scores(scored)
        return average_precision(is_pos, score) if is_pos.any() else None
    per_class = [average_precision(truth == c, scored.probabilities[:, j]) for j, c in enumerate(classes)
                 if (truth == c).any()]
    return float(np.mean(per_class)) if per_class else None


def _r2(scored):
    truth = np.asarray(scored.truth, dtype=float)
    ss_tot = float(((truth - truth.mean()) ** 2).sum())
    if len(truth) < 2 or ss_tot == 0:
        return None
    from sklearn.metrics import r2_score
    return float(r2_score(truth, np.asarray(scored.prediction, dtype=float)))


def _balanced_accuracy(scored):
    """Mean recall over the classes present in the truth (scikit-learn's ``balanced_accuracy_score``)."""
    truth = np.asarray(scored.truth, dtype=str)
    prediction = np.asarray(scored.prediction, dtype=str)
    return float(np.mean([np.mean(prediction[truth == c] == c) for c in np.unique(truth)]))


def _mae(scored):
    return float(np.mean(np.abs(np.asarray(scored.prediction, dtype=float) - np.asarray(scored.truth, dtype=float))))


def _accuracy(scored):
    return float(np.mean(np.asarray(scored.prediction, dtype=str) == np.asarray(scored.truth, dtype=str)))


_METRIC_FUNCTIONS: Dict[str, Callable] = {"mae": _mae, "r2": _r2, "accuracy": _accuracy,
                                          "balanced_accuracy": _balanced_accuracy, "auc": _auc, "auprc": _auprc}


def metric_value(metric, scored):
    """One metric of held-out predictions.

    Parameters
    ----------
    metric : {'mae', 'r2', 'accuracy', 'balanced_accuracy', 'auc', 'auprc'}
    scored : Scored

    Returns
    -------
    float or None
        None when undefined on these samples (no samples; R² of a constant truth; AUC or AUPRC without
        probabilities or without both classes).
    """
    if metric not in _METRIC_FUNCTIONS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(_METRIC_FUNCTIONS)}")
    if len(scored) == 0:
        return None
    if scored.strata is not None and metric in ("auc", "auprc"):
        return _mean_over_strata(metric, scored)
    value = _METRIC_FUNCTIONS[metric](scored)
    return None if value is None or not np.isfinite(value) else float(value)


def _mean_over_strata(metric, scored):
    """Mean of a ranking metric over the strata where it is defined (None when it is nowhere)."""
    values = []
    for stratum in np.unique(scored.strata):
        part = scored.take(np.flatnonzero(scored.strata == stratum))
        value = _METRIC_FUNCTIONS[metric](Scored(part.truth, part.prediction, part.probabilities, part.classes,
                                                 part.positive))
        if value is not None and np.isfinite(value):
            values.append(value)
    return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------------------- resampling

def group_bootstrap_indices(groups, n_resamples, seed):
    """Bootstrap resamples that draw whole groups with replacement.

    Each resample draws as many groups as there are, with replacement, and takes every sample of each drawn
    group (a group drawn twice contributes its samples twice). A group is never split.

    Parameters
    ----------
    groups : array_like
        [N] group label of each sample (None: every sample is its own group).
    n_resamples : int
    seed : int

    Returns
    -------
    list of numpy.ndarray
        `n_resamples` integer arrays of sample positions.
    """
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    labels = np.asarray(groups)
    _, codes = np.unique(labels.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    members = np.split(order, np.cumsum(counts)[:-1])  # positions of each group's samples
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(members), size=(n_resamples, len(members)))
    return [np.concatenate([members[g] for g in draw]) for draw in draws]


def _groups_or_samples(groups, n):
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group labels for {n} samples")
    return groups


def _percentile_bounds(values, level):
    values = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if values.size == 0:
        return None, None
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _interval(name, estimate, values, level, n_samples, n_groups):
    """An `Interval` from a statistic's value on every sample and its values on the resamples (None: undefined)."""
    low, high = _percentile_bounds(values, level)
    return Interval(name, estimate, low, high, level, int(n_samples), int(n_groups), len(values),
                    int(sum(v is None for v in values)))


def bootstrap_interval(statistic, n, groups=None, n_resamples=1000, seed=0, level=0.95, name="statistic"):
    """Percentile interval of any statistic of sample positions, resampling whole groups.

    Parameters
    ----------
    statistic : callable
        ``statistic(index) -> float or None`` on an integer array of sample positions.
    n : int
        Number of samples.
    groups : array_like, optional
        [N] group labels (None: samples are resampled one by one).
    n_resamples, seed, level
        Bootstrap resamples, their seed, and the interval's coverage.
    name : str
        Label stored in the result.

    Returns
    -------
    Interval
    """
    groups = _groups_or_samples(groups, n)
    values = [statistic(idx) for idx in group_bootstrap_indices(groups, n_resamples, seed)]
    return _interval(name, statistic(np.arange(n)), values, level, n, len(np.unique(groups.astype(str))))


def _resampled_fast(metric, scored, resamples):
    """The metric on each resample from per-sample arrays computed once (MAE, accuracy, balanced accuracy, R²,
    binary AUC); the same values as `metric_value` on ``scored.take(idx)``. None for the other metrics."""
    if len(scored) == 0:
        return None
    if metric in ("mae", "r2"):
        truth = np.asarray(scored.truth, dtype=float)
        err = np.asarray(scored.prediction, dtype=float) - truth
        if metric == "mae":
            return [float(np.abs(err[idx]).mean()) for idx in resamples]
        return [_r2_of(truth[idx], err[idx]) for idx in resamples]
    if metric in ("accuracy", "balanced_accuracy"):
        truth = np.asarray(scored.truth, dtype=str)
        correct = (np.asarray(scored.prediction, dtype=str) == truth).astype(float)
        if metric == "accuracy":
            return [float(correct[idx].mean()) for idx in resamples]
        _, codes = np.unique(truth, return_inverse=True)
        return [_balanced_of(codes[idx], correct[idx]) for idx in resamples]
    if metric == "auc" and scored.probabilities is not None and len(_class_labels(scored)) == 2 \
            and scored.strata is None:
        from aam.evaluation.metrics import _binary_auc
        is_pos, score = _positive_scores(scored)
        is_pos = is_pos.astype(np.int64)
        return [_binary_auc(is_pos[idx], score[idx]) for idx in resamples]
    return None


def _r2_of(truth, err):
    ss_tot = float(((truth - truth.mean()) ** 2).sum())
    return None if len(truth) < 2 or ss_tot == 0 else 1.0 - float((err * err).sum()) / ss_tot


def _balanced_of(codes, correct):
    """Mean recall over the classes present: per class, the share of its samples predicted right."""
    count = np.bincount(codes)
    right = np.bincount(codes, weights=correct, minlength=len(count))
    present = count > 0
    return float(np.mean(right[present] / count[present]))


class Resampled:
    """One model's metric on all samples and on fixed resamples, so that intervals and paired differences of many
    models reuse one set of resamples (each model's metric is computed once per resample).

    Parameters
    ----------
    metric : str
    scored : Scored
    resamples : list of numpy.ndarray
        From `group_bootstrap_indices` (the same list for every model compared).
    n_groups : int
    """

    def __init__(self, metric, scored, resamples, n_groups):
        self.metric, self.n_samples, self.n_groups = metric, len(scored), n_groups
        self.estimate = metric_value(metric, scored)
        fast = _resampled_fast(metric, scored, resamples)
        self.values = fast if fast is not None else [metric_value(metric, scored.take(idx)) for idx in resamples]

    def interval(self, level=0.95):
        """This model's `Interval`."""
        return _interval(self.metric, self.estimate, self.values, level, self.n_samples, self.n_groups)

    def against(self, reference, level=0.95):
        """`Comparison` of this model with `reference` (a `Resampled` of the same metric, samples and resamples)."""
        if (reference.metric, reference.n_samples, len(reference.values)) != \
                (self.metric, self.n_samples, len(self.values)):
            raise ValueError("a comparison needs the same metric, samples and resamples for both models")
        diff = [None if a is None or b is None else a - b for a, b in zip(self.values, reference.values)]
        estimate = None if self.estimate is None or reference.estimate is None else \
            self.estimate - reference.estimate
        difference = _interval(self.metric, estimate, diff, level, self.n_samples, self.n_groups)
        better = METRICS[self.metric]
        return Comparison(self.metric, difference, self.interval(level), reference.interval(level), better,
                          verdict(difference.low, difference.high, better))


def metric_interval(metric, scored, groups=None, n_resamples=1000, seed=0, level=0.95):
    """A metric of one model's held-out predictions with its bootstrap interval over groups.

    Parameters
    ----------
    metric : {'mae', 'r2', 'accuracy', 'balanced_accuracy', 'auc', 'auprc'}
    scored : Scored
    groups : array_like, optional
        [N] group (subject, house) of each sample; None resamples samples.
    n_resamples : int
    seed : int
    level : float

    Returns
    -------
    Interval
    """
    return bootstrap_interval(lambda idx: metric_value(metric, scored.take(idx)), len(scored), groups,
                              n_resamples, seed, level, metric)


def score_interval(metric, truth, prediction, groups=None, n_resamples=1000, seed=0, level=0.95):
    """A validation score with its bootstrap interval, as plain JSON (what a model record stores).

    Parameters
    ----------
    metric : {'mae', 'accuracy', ...}
        As `metric_interval`.
    truth, prediction : array_like
        [N] true and predicted values (or class labels / indices).
    groups : array_like, optional
        [N] group of each sample; None resamples samples.
    n_resamples, seed, level
        As `metric_interval`.

    Returns
    -------
    dict
        ``metric``, ``estimate``, ``low``, ``high``, ``level``, ``n_samples``, ``n_groups`` and ``grouped``
        (whether whole groups were resampled).
    """
    scored = Scored(np.asarray(truth), np.asarray(prediction))
    iv = metric_interval(metric, scored, groups, n_resamples, seed, level)
    return {"metric": metric, "estimate": iv.estimate, "low": iv.low, "high": iv.high, "level": level,
            "n_samples": iv.n_samples, "n_groups": iv.n_groups, "grouped": groups is not None}


def verdict(low, high, higher_is_better):
    """'ahead' / 'behind' when the interval of (model - reference) excludes 0 on the better / worse side, else
    'level' (also when the interval is undefined)."""
    if low is None or high is None:
        return "level"
    if low > 0:
        return "ahead" if higher_is_better else "behind"
    if high < 0:
        return "behind" if higher_is_better else "ahead"
    return "level"


def compare(metric, model, reference, groups=None, n_resamples=1000, seed=0, level=0.95):
    """Paired comparison of two models' predictions of the same samples.

    Both models are scored on the same resamples of whole groups; the interval is that of the difference
    ``metric(model) - metric(reference)``.

    Parameters
    ----------
    metric : {'mae', 'r2', 'accuracy', 'balanced_accuracy', 'auc', 'auprc'}
    model, reference : Scored
        Predictions of the same samples in the same order (their truths must be equal).
    groups : array_like, optional
        [N] group of each sample; None resamples samples.
    n_resamples, seed, level

    Returns
    -------
    Comparison
    """
    if len(model) != len(reference) or not np.array_equal(np.asarray(model.truth), np.asarray(reference.truth)):
        raise ValueError("the two models must be scored on the same samples in the same order (equal truths)")
    groups = _groups_or_samples(groups, len(model))
    resamples = group_bootstrap_indices(groups, n_resamples, seed)
    n_groups = len(np.unique(groups.astype(str)))
    return Resampled(metric, model, resamples, n_groups).against(Resampled(metric, reference, resamples, n_groups),
                                                                 level)


def fold_tests(gains: Sequence[float], tie_tolerance=1e-9):
    """Sign test and Wilcoxon signed-rank test of per-fold gains of a model over a reference.

    Parameters
    ----------
    gains : sequence of float
        One paired gain per task-fold, oriented so that positive means the model did better (e.g. accuracy
        difference; 1 - MAE ratio). None or NaN entries are left out.
    tie_tolerance : float
        Gains within this of 0 count as ties (left out of both tests).

    Returns
    -------
    FoldTests
    """
    from scipy.stats import binomtest, wilcoxon
    values = np.asarray([g for g in gains if g is not None and np.isfinite(g)], dtype=float)
    wins = int((values > tie_tolerance).sum())
    losses = int((values < -tie_tolerance).sum())
    nonzero = values[np.abs(values) > tie_tolerance]
    sign_p = float(binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else None
    wilcoxon_p = float(wilcoxon(nonzero).pvalue) if nonzero.size else None
    return FoldTests(int(values.size), wins, losses, int(values.size - wins - losses),
                     float(np.median(values)) if values.size else None, sign_p, wilcoxon_p, tuple(values.tolist()))
