"""Permutation importance of feature groups, for every member of a fitted model and for their blend.

For a group of features (a genus, or correlated features), its abundances are permuted across samples (one
permutation of the samples for the whole group, so the group stays intact inside each sample) and the model
predicts again; the importance is the mean increase of the per-sample loss (absolute error, or log loss of the
true class) over `repeats` permutations:

    baseline  ensemble.predict(features)                                 {member: [N, K]}
    group g   ensemble.predict(features with g's columns permuted) x R   {member: [N, K]}
    loss increase per sample, averaged over repeats -> importance, interval, p-value, direction

Every permutation reads the same `SampleFeatures` encoding: an ASV's embedding does not depend on its sample, so
only the sample-level layers and the members run again. The interval is a bootstrap over whole groups of samples
(subjects; `aam.evaluation.stats.bootstrap_interval`); the p-value a one-sided sign-flip test over those groups,
corrected over feature groups by Benjamini-Hochberg. Measure importance on samples the model did not train on:
a model that memorized its training samples loses accuracy on them whatever is permuted.
"""
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from aam.ensemble.blend import sample_losses

BLEND = "prediction"


@dataclass(frozen=True)
class ImportanceSettings:
    """How importance is measured.

    Attributes
    ----------
    repeats : int
        Permutations per group.
    resamples : int
        Bootstrap resamples of the interval, and sign flips of the test.
    alpha : float
        False discovery rate at which a group is called important.
    seed : int
    """

    repeats: int = 5
    resamples: int = 2000
    alpha: float = 0.05
    seed: int = 0


def permuted_table(table, columns, order, rng=None):
    """`table` (a PreparedTable) with the reads of `columns` taken from the samples `order` [N]: the group's
    abundances permuted across samples, every other feature left in place. A sample that would be left without
    reads keeps its own."""
    counts = table.counts.tocsr().astype(np.float64)
    mask = np.zeros(counts.shape[1])
    mask[list(columns)] = 1.0
    group = sp.diags(mask)
    rest = sp.diags(1.0 - mask)
    permuted = (counts @ rest + counts[order] @ group).tocsr()
    empty = np.flatnonzero(np.asarray(permuted.sum(axis=1)).ravel() <= 0)
    if len(empty):
        keep = sp.diags(np.isin(np.arange(counts.shape[0]), empty).astype(np.float64))
        permuted = (sp.diags(1.0 - keep.diagonal()) @ permuted + keep @ counts).tocsr()
    out = table.subset(list(table.sample_ids))
    out.counts = permuted
    return out


def _losses(outputs, truth, classifier):
    return {name: sample_losses(np.asarray(out, dtype=np.float64), truth, classifier) for name, out in outputs.items()
            if name != "shares"}


def _sign_flip_p(per_group, resamples, rng):
    """One-sided p-value that the mean of `per_group` [G] exceeds 0, by random sign flips (exact when few)."""
    observed = per_group.mean()
    G = len(per_group)
    if G <= 12:
        signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * G)).reshape(G, -1).T     # every flip: [2^G, G]
    else:
        signs = rng.choice([-1.0, 1.0], size=(resamples, G))
    null = (signs * per_group).mean(axis=1)
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def benjamini_hochberg(p):
    """Benjamini-Hochberg adjusted p-values (q-values) of `p` [M]."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p)
    ranked = p[order] * len(p) / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(q)
    out[order] = np.minimum(q, 1.0)
    return out


def _direction(abundance, outputs, class_labels):
    """Which way the blend moves with the group: '+' / '-' (regression), or the class whose probability rises
    most with the group's abundance."""
    from scipy.stats import spearmanr
    if np.ptp(abundance) == 0:
        return ""
    blend = outputs[BLEND]
    if class_labels is None:
        rho = spearmanr(abundance, blend[:, 0]).correlation
        return "" if not np.isfinite(rho) else ("+" if rho > 0 else "-")
    rhos = [spearmanr(abundance, blend[:, k]).correlation for k in range(blend.shape[1])]
    rhos = [r if np.isfinite(r) else -np.inf for r in rhos]
    return class_labels[int(np.argmax(rhos))]


def permutation_importance(ensemble, features, truth, feature_groups, record, sample_groups=None,
                           settings=ImportanceSettings(), log=None, cache=None):
    """Importance of each feature group for every member and the blend.

    Parameters
    ----------
    ensemble : aam.ensemble.Ensemble
    features : aam.inference.SampleFeatures
        The samples to measure on (not the training samples, ideally).
    truth : np.ndarray, shape [N]
        Class indices or values, in the order of ``features.sample_ids``.
    feature_groups : list of aam.interpret.groups.FeatureGroup
    record : aam.record.ModelRecord
    sample_groups : list of str, optional
        Subject of each sample: intervals and tests resample subjects, not samples.
    settings : ImportanceSettings
    log : callable, optional
        Receives the cost estimate and progress.
    cache : aam.interpret.resume.GroupCache, optional
        Finished groups are kept there and read back instead of measured again (a resumed run). Each group draws
        its permutations and sign flips from its own stream (seeded by the seed and its index), so a resumed run
        gives what an uninterrupted one gives.

    Returns
    -------
    pd.DataFrame
        One row per (group, member): ``group``, ``member`` (a member's name, or ``prediction`` for the blend),
        ``importance`` (mean loss increase), ``low`` / ``high`` (95% interval), ``p_value``, ``q_value``,
        ``important`` (q below alpha and the interval above 0), ``direction``, ``n_features``,
        ``unseen_features`` (features the training table never had: the model reads them by sequence only),
        ``feature_ids`` (the group's features, a tuple) and ``unseen_ids`` (those of them never seen, a tuple).
    """
    log = log or (lambda line: None)
    classifier = record.is_classifier
    t0 = time.perf_counter()
    base, base_loss = base_losses(ensemble, features, truth, classifier)
    log("feature importance: " + cost_line(len(feature_groups), settings.repeats, len(truth),
                                           time.perf_counter() - t0))
    seen = set((record.data.signature or {}).get("feature_digests") or [])
    abundance = features.abundances_by_column()
    labels = record.target.class_labels if classifier else None
    rows, read_back = [], 0
    for i, group in enumerate(feature_groups):
        rng = np.random.default_rng([settings.seed, i])
        increase = cache.load(i) if cache is not None else None
        if increase is None or set(increase) != set(base_loss):
            increase = loss_increase(ensemble, features, truth, group, base_loss, classifier, settings, rng)
            if cache is not None:
                cache.save(i, increase)
        else:
            read_back += 1
            for _ in range(settings.repeats):  # the draws the measurement made: the sign flips match a fresh run's
                rng.permutation(len(truth))
        unseen = unseen_features(group, features, record, seen)
        group_abundance = abundance[:, list(group.features)].sum(axis=1)
        rows += summary_rows(group, increase, group_abundance, base[BLEND], labels, sample_groups, settings, unseen,
                             rng)
        if (i + 1) % 10 == 0 or i + 1 == len(feature_groups):
            log(f"feature importance: {i + 1}/{len(feature_groups)} groups"
                + (f" ({read_back} read back from an interrupted run)" if read_back else ""))
    return importance_frame(rows, settings)


def cost_line(n_groups, repeats, n_samples, seconds):
    """What a measurement will cost: its prediction passes and their time at `seconds` a pass."""
    n_passes = n_groups * repeats
    total = seconds * n_passes
    return (f"{n_groups} feature groups x {repeats} permutations = {n_passes} prediction passes of {n_samples} "
            f"samples; about {f'{total / 60:.1f} min' if total >= 60 else f'{total:.0f} s'} at {seconds:.2f} s a "
            "pass")


def importance_frame(rows, settings):
    """The rows of every (group, member) as one table: q-values over the groups of each member, the call, the
    order (most important first)."""
    frame = pd.DataFrame(rows)
    frame["q_value"] = frame.groupby("member")["p_value"].transform(lambda p: benjamini_hochberg(p.to_numpy()))
    frame["important"] = (frame["q_value"] < settings.alpha) & (frame["low"] > 0)
    return frame.sort_values(["member", "importance"], ascending=[True, False]).reset_index(drop=True)


def loss_increase(ensemble, features, truth, group, base_loss, classifier, settings, rng):
    """{member: per-sample loss increase} of permuting `group`, averaged over the repeats."""
    increase = {name: np.zeros(len(truth)) for name in base_loss}
    for _ in range(settings.repeats):
        order = rng.permutation(len(truth))
        permuted = features.with_table(permuted_table(features.table, group.features, order))
        out = ensemble.predict(permuted, features.opts.coverage_floor)
        for name, loss in _losses(out, truth, classifier).items():
            increase[name] += (loss - base_loss[name]) / settings.repeats
    return increase


def base_losses(ensemble, features, truth, classifier):
    """The unpermuted outputs {member: [N, K]} and per-sample losses {member: [N]}."""
    base = ensemble.predict(features, features.opts.coverage_floor)
    return base, _losses(base, truth, classifier)


def unseen_features(group, features, record, seen):
    """The IDs of `group`'s features that the model's training table never had (`seen`: its sequence digests)."""
    from aam.data.novelty import sequence_digest
    return tuple(fid for j, fid in zip(group.features, group.feature_ids)
                 if seen and sequence_digest(features.table.sequences[j], record.max_bp) not in seen)


def summary_rows(group, increase, group_abundance, blend, class_labels, sample_groups, settings, unseen, rng):
    """One row per member of `group`'s importance: the mean of the per-sample increases [N], its interval over
    whole sample groups, the sign-flip p-value over them, and the direction of the blend [N, K] with the group's
    abundance [N]."""
    from aam.evaluation.stats import bootstrap_interval
    n = len(next(iter(increase.values())))
    subjects = np.asarray(sample_groups if sample_groups is not None else np.arange(n)).astype(str)
    _, codes = np.unique(subjects, return_inverse=True)
    direction = _direction(group_abundance, {BLEND: blend}, class_labels)
    rows = []
    for name, diff in increase.items():
        interval = bootstrap_interval(lambda idx, d=diff: float(np.mean(d[idx])), n, subjects,
                                      n_resamples=settings.resamples, seed=settings.seed)
        per_subject = np.bincount(codes, weights=diff) / np.bincount(codes)
        rows.append({"group": group.name, "member": name, "importance": float(diff.mean()), "low": interval.low,
                     "high": interval.high, "p_value": _sign_flip_p(per_subject, settings.resamples, rng),
                     "direction": direction, "n_features": len(group.feature_ids), "unseen_features": len(unseen),
                     "feature_ids": group.feature_ids, "unseen_ids": tuple(unseen)})
    return rows
