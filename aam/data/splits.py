"""Train/validation splits of sample IDs: random, stratified by class, or grouped (e.g. by subject).

All splits are deterministic for a given seed and return sample IDs in their original order, so the same
command reproduces the same split and the lists written to a run's summary are easy to compare. Neither side
of a split is ever empty: a validation set of zero samples would silently disable early stopping and model
selection.
"""
import math
import warnings

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from aam.errors import AAMInputError, preview

# How many random group orders are tried when grouping and stratifying at once; the best-balanced is kept.
_GROUP_STRATIFY_TRIALS = 32


# --------------------------------------------------------------------------------------------- single split

def train_val_split(sample_ids, val_fraction=0.2, seed=42, stratify=None, groups=None):
    """Split samples into training and validation sets.

    Parameters
    ----------
    sample_ids : sequence of str
        Unique sample IDs.
    val_fraction : float
        Fraction of samples for validation, in (0, 1). The validation set gets ``round(val_fraction * N)``
        samples, at least 1 and at most N - 1 (approximately, for stratified and grouped splits).
    seed : int
        Random seed; the same seed gives the same split.
    stratify : sequence of str, optional
        Class label of each sample (aligned with `sample_ids`). Each class with at least 2 samples gets at
        least one sample on each side, even if that makes the validation set a little larger than
        requested; classes with a single sample go to training.
    groups : sequence of str, optional
        Group of each sample (aligned with `sample_ids`), e.g. the subject. Whole groups go to one side, so
        no group is on both sides. Groups are shuffled with `seed` and added to validation until it holds
        about ``round(val_fraction * N)`` samples. Needs at least 2 groups. When `stratify` is also given,
        grouping wins: several group orders are tried and the one that best puts every class on both sides
        is kept, so stratification is only approximate.

    Returns
    -------
    train_ids, val_ids : list of str
        Both non-empty, disjoint, covering `sample_ids`, each in the order of `sample_ids`.

    Raises
    ------
    ValueError
        If `val_fraction` is not in (0, 1) or `stratify` / `groups` are not aligned with `sample_ids`.
    AAMInputError
        If there are fewer than 2 samples, duplicated IDs, or a single group.
    """
    ids = _check_sample_ids(sample_ids)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction!r}")
    if len(ids) < 2:
        raise AAMInputError(f"a train/validation split needs at least 2 samples, got {len(ids)}; add samples "
                            "or train without validation (validation fraction 0).")
    labels = _aligned(stratify, len(ids), "stratify")
    group_of = _aligned(groups, len(ids), "groups")
    rng = np.random.default_rng(seed)
    if group_of is not None:
        in_val = _grouped_mask(group_of, val_fraction, rng, labels)
    elif labels is not None:
        in_val = _stratified_mask(labels, val_fraction, rng)
    else:
        in_val = _random_mask(len(ids), val_fraction, rng)
    train = [s for s, v in zip(ids, in_val) if not v]
    val = [s for s, v in zip(ids, in_val) if v]
    return train, val


def _n_val(n, val_fraction):
    """round(val_fraction * n), half up (Python's round would send 2.5 to 2), kept within [1, n - 1]."""
    return min(max(int(math.floor(val_fraction * n + 0.5)), 1), n - 1)


def _random_mask(n, val_fraction, rng):
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:_n_val(n, val_fraction)]] = True
    return mask


def _stratified_mask(labels, val_fraction, rng):
    """Validation mask with every class of >= 2 samples on both sides."""
    labels = np.asarray(labels, dtype=object)
    classes = sorted(set(labels))  # sorted so the draw does not depend on sample order
    members = [np.flatnonzero(labels == c) for c in classes]
    eligible = [m for m in members if len(m) >= 2]
    if not eligible:
        warnings.warn("every class has a single sample, so the split cannot be stratified; splitting at random",
                      stacklevel=3)
        return _random_mask(len(labels), val_fraction, rng)
    sizes = np.array([len(m) for m in eligible])
    # singletons stay in training, so the fraction applies to the samples of the eligible classes
    total = min(max(_n_val(int(sizes.sum()), val_fraction), len(sizes)), int((sizes - 1).sum()))
    counts = _allocate(sizes, val_fraction, total)
    mask = np.zeros(len(labels), dtype=bool)
    for m, c in zip(eligible, counts):
        mask[rng.permutation(m)[:c]] = True
    return mask


def _allocate(sizes, val_fraction, total):
    """Validation count per class: near ``val_fraction * size``, in [1, size - 1], summing to `total`.

    `total` must lie in ``[len(sizes), sum(sizes - 1)]``. Counts start at the rounded-down ideal and are then
    moved one at a time where the shortfall (or excess) is largest, which is the largest-remainder method.
    """
    ideal = val_fraction * sizes
    counts = np.clip(np.floor(ideal).astype(int), 1, sizes - 1)
    while counts.sum() < total:
        room = np.where(counts < sizes - 1, ideal - counts, -np.inf)
        counts[int(np.argmax(room))] += 1
    while counts.sum() > total:
        excess = np.where(counts > 1, ideal - counts, np.inf)
        counts[int(np.argmin(excess))] -= 1
    return counts


def _grouped_mask(group_of, val_fraction, rng, labels=None):
    """Validation mask made of whole groups; with `labels`, the best of several group orders."""
    group_of = np.asarray(group_of, dtype=object)
    names, inverse, sizes = np.unique(group_of.astype(str), return_inverse=True, return_counts=True)
    if len(names) < 2:
        raise AAMInputError(f"grouped validation needs at least 2 groups, but all {len(group_of)} samples are "
                            f"in group {names[0]!r}; choose a group column with more groups or split without "
                            "groups.")
    n = len(group_of)
    target = _n_val(n, val_fraction)
    trials = 1 if labels is None else _GROUP_STRATIFY_TRIALS
    best, best_score = None, None
    for _ in range(trials):
        chosen = _fill_groups(rng.permutation(len(names)), sizes, target, n)
        mask = chosen[inverse]
        score = (_classes_on_one_side(labels, mask), abs(int(mask.sum()) - target))
        if best_score is None or score < best_score:
            best, best_score = mask, score
    return best


def _fill_groups(order, sizes, target, n):
    """Groups (boolean per group) added in `order` until validation holds about `target` samples."""
    chosen = np.zeros(len(sizes), dtype=bool)
    val = 0
    for g in order:
        size = int(sizes[g])
        if val + size >= n:
            continue  # training would be empty
        # take the group if it fits, or if overshooting the target is closer than stopping short of it
        if val + size <= target or (val + size - target) < (target - val):
            chosen[g] = True
            val += size
        if val >= target:
            break
    if not chosen.any():
        # every group overshoots by more than the target: the smallest one is the closest non-empty choice
        # (there are >= 2 groups, so it leaves training non-empty)
        chosen[order[int(np.argmin(sizes[order]))]] = True
    return chosen


def _classes_on_one_side(labels, mask):
    """Number of classes with >= 2 samples that are missing from training or from validation."""
    if labels is None:
        return 0
    labels = np.asarray(labels, dtype=object)
    missing = 0
    for c in set(labels):
        in_class = labels == c
        if in_class.sum() >= 2 and (mask[in_class].all() or not mask[in_class].any()):
            missing += 1
    return missing


# --------------------------------------------------------------------------------------------- k-fold

def kfold_splits(sample_ids, k=5, seed=42, stratify=None, groups=None):
    """K-fold cross-validation splits.

    Parameters
    ----------
    sample_ids : sequence of str
        Unique sample IDs.
    k : int
        Number of folds, at least 2.
    seed : int
        Random seed for shuffling.
    stratify : sequence of str, optional
        Class label of each sample; folds keep the class proportions (`sklearn.model_selection.StratifiedKFold`).
    groups : sequence of str, optional
        Group of each sample; a group is never split across folds (`GroupKFold`, with groups relabelled at
        random so the seed matters). With `stratify` too, `StratifiedGroupKFold` balances classes as far as
        whole groups allow.

    Returns
    -------
    list of (list of str, list of str)
        ``(train_ids, val_ids)`` per fold, each in the order of `sample_ids`; every sample is in exactly one
        validation fold.

    Raises
    ------
    ValueError
        If `k` is not an integer >= 2 or `stratify` / `groups` are not aligned with `sample_ids`.
    AAMInputError
        If `k` exceeds the number of samples (or groups, or the size of the largest class).
    """
    ids = _check_sample_ids(sample_ids)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k must be an integer >= 2, not {k!r}")
    n = len(ids)
    if k > n:
        raise AAMInputError(f"{k}-fold cross-validation needs at least {k} samples, got {n}; lower k.")
    labels = _aligned(stratify, n, "stratify")
    group_of = _aligned(groups, n, "groups")
    X = np.zeros((n, 1))
    if group_of is not None:
        folds = _group_folds(X, group_of, labels, k, seed)
    elif labels is not None:
        largest = max(labels.count(c) for c in set(labels))
        if k > largest:
            raise AAMInputError(f"stratified {k}-fold cross-validation needs a class with at least {k} "
                                f"samples, but the largest has {largest}; lower k.")
        folds = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(X, labels))
    else:
        folds = list(KFold(n_splits=k, shuffle=True, random_state=seed).split(X))
    # sklearn gives shuffled test indices; sorting restores the order of sample_ids
    return [([ids[i] for i in sorted(tr)], [ids[i] for i in sorted(te)]) for tr, te in folds]


def _group_folds(X, group_of, labels, k, seed):
    names, inverse = np.unique(np.asarray(group_of, dtype=str), return_inverse=True)
    if k > len(names):
        raise AAMInputError(f"grouped {k}-fold cross-validation needs at least {k} groups, got {len(names)} "
                            f"({preview(names)}); lower k or choose a group column with more groups.")
    if labels is not None:
        folds = list(StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
                     .split(X, labels, inverse))
        if all(len(tr) and len(te) for tr, te in folds):
            return folds
        # its greedy class balancing can leave a fold empty with few groups; plain grouping cannot
        warnings.warn("class-balanced grouped folds left a fold empty; using grouped folds without class "
                      "balancing", stacklevel=3)
    # GroupKFold (sklearn 1.2) does not shuffle and breaks ties by label, so random labels bring in the seed
    codes = np.random.default_rng(seed).permutation(len(names))[inverse]
    return list(GroupKFold(n_splits=k).split(X, groups=codes))


# --------------------------------------------------------------------------------------------- checks

def _check_sample_ids(sample_ids):
    ids = [str(s) for s in sample_ids]
    seen, dup = set(), []
    for s in ids:
        if s in seen:
            dup.append(s)
        seen.add(s)
    if dup:
        raise AAMInputError(f"sample ID(s) {preview(sorted(set(dup)))} are listed more than once; each "
                            "sample can be on one side of a split only.")
    return ids


def _aligned(values, n, name):
    """Labels as a list of str, checked to have one per sample (None stays None)."""
    if values is None:
        return None
    values = [str(v) for v in values]
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} labels for {n} samples; give one label per sample")
    return values
