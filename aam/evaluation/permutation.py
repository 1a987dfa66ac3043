"""Paired permutation test of two models scored on the same samples.

Under the null hypothesis that the two models predict equally well, which model made which prediction of a
subject is exchangeable: each resample swaps the two models' predictions for a random half of the groups
(subjects; samples without groups), whole groups at a time, and recomputes the metric's difference. The p-value is
two-sided: the share of resamples with a difference at least as large in magnitude as the observed one. The
interval of the same difference comes from `aam.evaluation.stats.compare` (one implementation of the bootstrap).
"""
import numpy as np

from aam.evaluation.stats import Scored, metric_value


def paired_permutation_p(metric, model, reference, groups=None, n_resamples=1000, seed=0):
    """Two-sided p-value of ``metric(model) - metric(reference)`` by swapping predictions within whole groups.

    Parameters
    ----------
    metric : str
        A metric of `aam.evaluation.stats.METRICS`.
    model, reference : aam.evaluation.stats.Scored
        The same samples in the same order.
    groups : array_like, optional
        [N] group of each sample.
    n_resamples : int
    seed : int

    Returns
    -------
    float or None
        None when the metric is undefined on these samples.
    """
    a, b = metric_value(metric, model), metric_value(metric, reference)
    if a is None or b is None:
        return None
    observed = abs(a - b)
    n = len(model)
    labels = np.asarray(groups if groups is not None else np.arange(n)).astype(str)
    _, codes = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    hits, used = 0, 0
    for _ in range(n_resamples):
        swap = rng.random(codes.max() + 1) < 0.5
        rows = swap[codes]                                                    # [N] samples whose pair is swapped
        x, y = _swapped(model, reference, rows), _swapped(reference, model, rows)
        va, vb = metric_value(metric, x), metric_value(metric, y)
        if va is None or vb is None:
            continue
        used += 1
        hits += abs(va - vb) >= observed - 1e-12
    return None if used == 0 else (1 + hits) / (1 + used)


def _swapped(first, second, rows):
    """`first` with the predictions (and probabilities) of `second` at `rows`."""
    prediction = np.where(rows, second.prediction, first.prediction)
    probabilities = None
    if first.probabilities is not None and second.probabilities is not None:
        probabilities = np.where(rows[:, None], second.probabilities, first.probabilities)
    return Scored(first.truth, prediction, probabilities, first.classes, first.positive)
