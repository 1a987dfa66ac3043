"""Out-of-fold permutation importance: each fold's model measured on the samples it never trained on, pooled.

    labelled table (every sample) -> feature groups (taxa at a rank, or correlated clusters; the most abundant)
        formed once and without the labels, so that every fold measures the same groups       ImportancePlan
    fold k: its model + its held-out samples -> SampleFeatures -> per group, per sample loss increase
                                                                                               FoldImportance
    every fold -> the increase of every sample (each is held out once) -> mean, 95% interval over subjects,
        sign-flip p-value, q-value over groups, direction (from the out-of-fold predictions)  importance table

A cross-validation's importance says which features the models need to predict samples they did not see; the same
permutation on training samples would measure what a model memorized. The table has the columns of
`aam.interpret.importance.permutation_importance`, so every reader of that table reads this one.
"""
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from aam.errors import AAMInputError
from aam.interpret.groups import FeatureGroup, correlation_groups, most_abundant, taxonomy_groups
from aam.interpret.importance import (BLEND, ImportanceSettings, base_losses, cost_line, importance_frame,
                                      loss_increase, summary_rows)


@dataclass(frozen=True)
class ImportancePlan:
    """What every fold measures: the same feature groups, the same settings.

    Attributes
    ----------
    groups : list of FeatureGroup
        Positions and IDs in the labelled table's feature order.
    settings : ImportanceSettings
    abundance : np.ndarray, shape [N, G]
        Each group's relative abundance in every labelled sample (the direction reads it).
    sample_ids : list of str
        The labelled samples, in the order of `abundance`'s rows.
    """

    groups: List[FeatureGroup]
    settings: ImportanceSettings
    abundance: np.ndarray
    sample_ids: List[str]

    def digest(self):
        """What the folds' measurements depend on besides the data and the models."""
        return hashlib.sha256(json.dumps({"groups": [list(g.feature_ids) for g in self.groups],
                                          "repeats": self.settings.repeats, "seed": self.settings.seed}).encode()
                              ).hexdigest()


def plan_importance(table, taxonomy, opts):
    """The groups every fold measures, from the whole labelled table's abundances (no label is read).

    Parameters
    ----------
    table : biom.Table
        Every labelled sample of the cross-validation.
    taxonomy : pd.Series or pd.DataFrame, optional
        Feature ID -> lineage (a ``Taxon`` column); groups are taxa at ``opts.rank``. Without it, features whose
        abundances correlate above ``opts.correlation`` form the groups.
    opts : aam.options.Options
        ``rank``, ``correlation``, ``top``, ``repeats``, ``seed``.

    Returns
    -------
    ImportancePlan
    """
    from aam.forest import relative_abundance
    from aam.workflows.importance import lineages_of
    ids = [str(f) for f in table.ids("observation")]
    abundance = relative_abundance(table.matrix_data.T.tocsr())                       # [N, F]
    if taxonomy is not None:
        groups = taxonomy_groups(ids, lineages_of(taxonomy, ids), opts.rank)
    else:
        groups = correlation_groups(abundance, ids, opts.correlation)
    groups = most_abundant(groups, abundance, opts.top)
    by_group = np.stack([abundance[:, list(g.features)].sum(axis=1) for g in groups], axis=1)   # [N, G]
    return ImportancePlan(groups, ImportanceSettings(repeats=opts.repeats, seed=opts.seed), by_group,
                          [str(s) for s in table.ids()])


@dataclass
class FoldImportance:
    """One fold's measurement: the loss increase of each of its held-out samples, per group and member.

    Attributes
    ----------
    sample_ids : list of str                                    # [N_k]
    members : list of str
        The ensemble's members by name, then the blend (``prediction``).
    increases : np.ndarray, shape [G, M, N_k]
        Mean loss increase of permuting group g, for member m, of each sample.
    unseen : tuple of str
        Features of the groups held out in this fold that the fold's training table never had (the model read
        them by sequence only).
    """

    sample_ids: List[str]
    members: List[str]
    increases: np.ndarray
    unseen: Tuple[str, ...]

    def save(self, path):
        """Written whole or not at all; plain arrays, read back without pickle."""
        partial = path + ".partial.npz"
        np.savez(partial, sample_ids=np.asarray(self.sample_ids, dtype=str),
                 members=np.asarray(self.members, dtype=str), increases=self.increases.astype(np.float64),
                 unseen=np.asarray(self.unseen, dtype=str))
        os.replace(partial, path)

    @classmethod
    def load(cls, path):
        """The fold's measurement, or None when it has not finished."""
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            return cls(list(map(str, data["sample_ids"])), list(map(str, data["members"])),
                       np.asarray(data["increases"], dtype=np.float64), tuple(map(str, data["unseen"])))


def _truth(record, y, sample_ids, fold):
    """The held-out samples' true values as the model's loss reads them (class indices for a classifier)."""
    values = y.loc[sample_ids]
    if not record.is_classifier:
        return values.to_numpy(np.float64)
    index = {c: i for i, c in enumerate(record.target.class_labels)}
    unknown = sorted(set(values.astype(str)) - set(index))
    if unknown:
        raise AAMInputError(f"fold {fold}: held-out classes {unknown} were not in the fold's training samples; "
                            "lower {opt:cv} so that every fold trains on every class.")
    return values.astype(str).map(index).to_numpy(np.int64)


def measure_fold(checkpoint, table, sequences, metadata, y, plan, opts, ctx, log, fold):
    """The loss increases of one fold's held-out samples when each group of `plan` is permuted.

    Parameters
    ----------
    checkpoint : aam.checkpoint.Checkpoint
        The model fit to the fold's training samples.
    table : biom.Table
        The fold's held-out samples.
    sequences : optional
        As the fit read them.
    metadata : pd.DataFrame
        Covariates of the held-out samples (the target is `y`).
    y : pd.Series
        True value (or class label) of every labelled sample.
    plan : ImportancePlan
    opts : aam.options.Options
        'predict' options (seed, rarefaction draws, coverage floor, hardware).
    ctx : aam.training.context.RunContext
    log : callable
    fold : int
        Seeds this fold's permutations (with the plan's seed and the group's number).

    Returns
    -------
    FoldImportance
    """
    from aam.data.novelty import sequence_digest
    from aam.ensemble import Ensemble
    from aam.inference import SampleFeatures
    from aam.workflows.infer import covariates, numeric_covariates, prepare_new_table
    record = checkpoint.record
    with warnings.catch_warnings():  # the fold's prediction already said what sets its held-out samples apart
        warnings.simplefilter("ignore")
        prepared = prepare_new_table(record, table, sequences, opts)
        ids = list(prepared.sample_ids)
        net = checkpoint.build_model()
        features = SampleFeatures.build(prepared, record, opts, ctx, base=net.base,
                                        covariates=covariates(record, metadata, ids, log),
                                        numeric=numeric_covariates(record, metadata, ids))
    truth = _truth(record, y, ids, fold)
    ensemble = Ensemble.from_checkpoint(checkpoint, model=net)
    start = time.perf_counter()
    base, base_loss = base_losses(ensemble, features, truth, record.is_classifier)
    log(f"fold {fold} feature importance: " + cost_line(len(plan.groups), plan.settings.repeats, len(ids),
                                                       time.perf_counter() - start))
    members = list(base_loss)
    position = {str(f): j for j, f in enumerate(prepared.feature_ids)}
    seen = set((record.data.signature or {}).get("feature_digests") or [])
    increases = np.zeros((len(plan.groups), len(members), len(ids)))
    unseen = []
    for g, group in enumerate(plan.groups):
        present = [f for f in group.feature_ids if f in position]
        local = FeatureGroup(group.name, tuple(position[f] for f in present), tuple(present))
        unseen += [f for j, f in zip(local.features, present)
                   if seen and sequence_digest(prepared.sequences[j], record.max_bp) not in seen]
        if local.features:  # a group without a feature in this fold changes nothing when permuted: increase 0
            rng = np.random.default_rng([plan.settings.seed, fold, g])
            increase = loss_increase(ensemble, features, truth, local, base_loss, record.is_classifier,
                                     plan.settings, rng)
            increases[g] = np.stack([increase[m] for m in members])
    return FoldImportance(ids, members, increases, tuple(sorted(set(unseen))))


def pooled_importance(folds, plan, sample_groups, blend, class_labels):
    """Every fold's measurement as one importance table over all samples.

    Parameters
    ----------
    folds : list of FoldImportance
        Together they hold every sample of ``plan.sample_ids`` once.
    plan : ImportancePlan
    sample_groups : list of str or None
        The subject of each sample of ``plan.sample_ids``: intervals and tests resample whole subjects.
    blend : np.ndarray, shape [N, K]
        The out-of-fold blended prediction (or class probabilities) of each sample, for the direction.
    class_labels : list of str or None

    Returns
    -------
    pd.DataFrame
        The columns of `aam.interpret.importance.permutation_importance`.
    """
    members = [m for m in folds[0].members if all(m in f.members for f in folds)]
    order = {s: i for i, s in enumerate(plan.sample_ids)}
    n = len(plan.sample_ids)
    pooled = np.full((len(plan.groups), len(members), n), np.nan)                  # [G, M, N]
    for fold in folds:
        columns = [order[s] for s in fold.sample_ids]
        rows = [fold.members.index(m) for m in members]
        pooled[:, :, columns] = fold.increases[:, rows, :]
    measured = ~np.isnan(pooled[0, 0])
    if not measured.all():
        missing = [s for s, ok in zip(plan.sample_ids, measured) if not ok]
        raise ValueError(f"{len(missing)} sample(s) were measured in no fold, e.g. {missing[:3]}")
    unseen = set().union(*(f.unseen for f in folds))
    rows = []
    for g, group in enumerate(plan.groups):
        rng = np.random.default_rng([plan.settings.seed, g])
        increase = {m: pooled[g, k] for k, m in enumerate(members)}
        group_unseen = tuple(f for f in group.feature_ids if f in unseen)
        rows += summary_rows(group, increase, plan.abundance[:, g], blend, class_labels, sample_groups,
                             plan.settings, group_unseen, rng)
    return importance_frame(rows, plan.settings)


__all__ = ["BLEND", "FoldImportance", "ImportancePlan", "measure_fold", "plan_importance", "pooled_importance"]
