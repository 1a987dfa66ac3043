"""The blend of an ensemble: which validation samples choose the weights, the grid of shares, and the rules.

The network's share is chosen on validation samples that chose nothing else (`share_split`): on the samples that
also picked the network's epoch the network looks better than it is on new samples, and the blend would lean
towards it (docs/science.md). The other member's output on them comes from a copy fitted on every other labelled
sample (`aam.ensemble.member.Member.held_out_outputs`).
"""
import numpy as np
import pandas as pd

#: shares of the network the blend may take; the other member takes the rest
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
RULES = ("lowest-loss", "one-se")


def share_split(val_ids, labels, classifier, groups, seed):
    """Split the validation samples of an ensemble in two: those that choose the network's best epoch, and those
    that choose the network's share of the blend.

    Parameters
    ----------
    val_ids : list of str
    labels : dict of str -> object
        Target value of each validation sample (classes stratify the split).
    classifier : bool
    groups : dict of str -> str, optional
        Group of each sample: the split never divides a group.
    seed : int

    Returns
    -------
    (list of str, list of str)
        Epoch samples and share samples; the second is empty when the validation split is too small to halve
        (fewer than 4 samples, or a single group), and the ensemble then averages with equal shares.
    """
    from aam.data.splits import train_val_split
    val_groups = [groups[s] for s in val_ids] if groups else None
    if len(val_ids) < 4 or (val_groups is not None and len(set(val_groups)) < 2):
        return list(val_ids), []
    stratify = [str(labels[s]) for s in val_ids] if classifier else None
    return train_val_split(list(val_ids), val_fraction=0.5, seed=seed + 1, stratify=stratify, groups=val_groups)


def sample_losses(pred, truth, classifier):
    """Per-sample loss of a blend: log loss of class probabilities [V, K], or absolute error of values [V, 1]: [V]."""
    if classifier:
        return -np.log(np.clip(pred[np.arange(len(truth)), truth], 1e-15, 1.0))
    return np.abs(pred[:, 0] - truth)


def choose_share(losses, rule, groups=None):
    """The network's share of the blend from per-sample validation losses of each share.

    Parameters
    ----------
    losses : dict of float -> np.ndarray [V]
        Per-sample losses of each share in `SHARES`.
    rule : {'lowest-loss', 'one-se'}
        lowest-loss: the share with the lowest mean loss. one-se: the share nearest the other member alone (0)
        whose mean loss is within one standard error of the lowest; the standard error is that of the paired loss
        differences, over groups (subjects) when given, since samples of one subject are not independent. With
        fewer than 2 groups (or samples) no difference can be judged and the other member alone is kept.
    groups : list, optional
        Group of each validation sample.

    Returns
    -------
    float
    """
    mean = {w: float(np.mean(v)) for w, v in losses.items()}
    best = min(losses, key=lambda w: (mean[w], abs(w - 0.5)))
    if rule == "lowest-loss":
        return best
    keys = pd.Series(groups if groups is not None else np.arange(len(losses[best])))
    if keys.nunique() < 2:
        return min(losses)

    def within_one_se(w):
        diff = pd.Series(losses[w] - losses[best]).groupby(keys.to_numpy()).mean()       # [G]
        return diff.mean() <= diff.std(ddof=1) / np.sqrt(len(diff))
    return min(w for w in losses if within_one_se(w))


def choose_weights(network, other, truth, classifier, rule, groups=None, other_name="the other member"):
    """The network's share from both members' held-out outputs on the share samples, and why.

    Parameters
    ----------
    network, other : np.ndarray, shape [V, K]
    truth : np.ndarray, shape [V]
        Class indices or values.
    classifier : bool
    rule : {'lowest-loss', 'one-se'}
    groups : list, optional
    other_name : str
        How the explanation names the other member.

    Returns
    -------
    (float, str)
    """
    per_sample = {w: sample_losses(w * network + (1 - w) * other, truth, classifier) for w in SHARES}
    share = choose_share(per_sample, rule, groups)
    losses = {w: float(np.mean(v)) for w, v in per_sample.items()}
    name = "log loss" if classifier else "MAE"
    how = ("the lowest" if rule == "lowest-loss" else
           f"the share nearest the {other_name} within one standard error of the lowest")
    return share, (f"{how} validation {name}, {losses[share]:.4g} on {len(truth)} samples (network alone "
                   f"{losses[1.0]:.4g}, {other_name} alone {losses[0.0]:.4g})")
