"""Tasks of the held-out benchmark: which study, which column, how samples are grouped, and the folds.

A `Task` names a study folder, a metadata column and how samples are grouped so that no group is on both sides
of a split. `load_task` reads it with the engine's loaders (`aam.data.table`, `aam.data.metadata`,
`aam.data.distances`); `assign_folds` fixes the cross-validation folds by a seed (`aam.data.splits.kfold_splits`:
StratifiedGroupKFold / GroupKFold / StratifiedKFold); `build_fold` prepares one fold for every model alike: the
rarefaction depth chosen on the training samples only, one seeded rarefied draw shared by all models, and the
distances between samples (UniFrac or Bray-Curtis) computed once.

What a model recipe sees is a `Fold`: ``fold.train`` (labelled training samples), ``fold.pool`` (every training
sample, labelled or not: what self-supervised pretraining may use), ``fold.test`` (held-out samples, without
their labels) and ``fold.distances()``.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SHARED_DATA = os.path.abspath(os.path.join(REPO, "..", "shared", "data"))
TEST_DATA = os.path.join(REPO, "tests", "data")
GROUP_COLUMN = "heldout_group"  # metadata column the harness adds: each sample's group (see Task.group)


@dataclass(frozen=True)
class Task:
    """One prediction task of the benchmark.

    Attributes
    ----------
    name : str
        Short name used in files and tables (``ecam-month``).
    study : str
        Folder of the study (under ``../shared/data`` unless `root` is given).
    column : str
        Metadata column to predict.
    kind : {'regression', 'classification'}
    table, metadata : str
        File names in the study folder.
    sequences : str, optional
        FeatureData[Sequence] .qza or FASTA mapping feature IDs to sequences (None when IDs are sequences).
    tree : str, optional
        Phylogeny whose tips include the features (None: no tree, the study's distances are `beta`).
    beta : {'unweighted_unifrac', 'braycurtis', 'jaccard'}
        Distances between samples for the ordination baseline and for pretraining without a tree.
    group : tuple of str, optional
        Metadata columns whose joined values name a sample's group: a group is never split between training and
        held-out samples. None: every sample is its own group.
    grouping : str
        Why the task is grouped that way (shown in the docs).
    keep : (str, str), optional
        Only samples whose column (first) has this value (second), e.g. infants only.
    positive : str, optional
        The positive class of a binary task (for AUC).
    description : str
    root : str, optional
        Folder holding the files (default: ``../shared/data/<study>``).
    max_groups, max_per_group, max_features : int, optional
        Slice for quick runs: that many groups (seeded choice), samples per group and most abundant features.
    fold_stratify : str, optional
        Column whose classes the folds balance (default: the target of a classification task, nothing for a
        regression). Two tasks of one study with the same samples, groups and `fold_stratify` share their folds,
        and so their rarefied draws and (through the AAM recipe's cache) their pretrained encoders.
    depth_matched : bool
        Every model reads the fold's rarefied draw: ``Samples.table`` is the rarefied table too, so no model sees
        how deep a sample was sequenced (a confound of the label in some studies).
    fixed_depth : int, optional
        Rarefaction depth of every fold (default: chosen on each fold's training samples, `FoldSplit`).
    missing : tuple of str
        Values of the target column that mean "no value" (e.g. American Gut's ``no_data``): left out.
    relabel : tuple of (str, str), optional
        Classification: each raw value of the column and the class it stands for; samples with other values are
        left out (e.g. Crohn's disease and ulcerative colitis as "IBD", "I do not have IBD" as "none").
    value_range : (float, float), optional
        Regression: only samples whose target lies in this closed range (e.g. adults).
    """

    name: str
    study: str
    column: str
    kind: str
    table: str
    metadata: str
    sequences: Optional[str]
    tree: Optional[str]
    beta: str
    group: Optional[Tuple[str, ...]]
    grouping: str
    keep: Optional[Tuple[str, str]] = None
    positive: Optional[str] = None
    description: str = ""
    root: Optional[str] = None
    max_groups: Optional[int] = None
    max_per_group: Optional[int] = None
    max_features: Optional[int] = None
    fold_stratify: Optional[str] = None
    depth_matched: bool = False
    fixed_depth: Optional[int] = None
    missing: Tuple[str, ...] = ()
    relabel: Optional[Tuple[Tuple[str, str], ...]] = None
    value_range: Optional[Tuple[float, float]] = None

    @property
    def folder(self):
        return self.root or os.path.join(SHARED_DATA, self.study)

    def path(self, name):
        return None if name is None else os.path.join(self.folder, name)

    @property
    def classifier(self):
        return self.kind == "classification"


#: depth of the depth-matched tasks: a floor most 16S V4 samples clear (ibd-2538: all but 3% of control and 7% of
#: Crohn's samples), fixed beforehand rather than chosen per fold, so that the task keeps its shallow samples
DEPTH_MATCHED_READS = 1000

_MP_GROUPING = ("2 subjects only, so grouping by subject would allow 2 folds; samples are grouped by sampling event "
                "(subject + day): the 4 body sites swabbed from one person on one day are held out together, so "
                "no sibling sample of the same person and day is in training. Other days of the same two people "
                "are (unavoidable with 2 subjects). Both Moving Pictures tasks use the same folds (balanced by "
                "body site).")

TASKS = [
    Task("ecam-month", "ecam", "month", "regression", "table.qza", "metadata.tsv", "rep-seqs.qza",
         "insertion-tree.qza", "unweighted_unifrac", ("host_subject_id",),
         "42 infants with 7-29 samples each: grouped by infant (host_subject_id), so held-out infants are unseen.",
         keep=("mom_child", "C"), description="ECAM infant stool, month of life (0-24); mothers left out"),
    Task("ibd-ibd", "ibd-2538", "ibd", "classification", "table.qza", "metadata.tsv", None,
         "sepp-insertion-tree.qza", "unweighted_unifrac", ("host_subject_id",),
         "about 20 samples per subject and a subject-level label: grouped by subject (host_subject_id).",
         positive="Crohns", description="ibd-2538 stool, Crohn's disease vs control"),
    Task("ibd-age", "ibd-2538", "age", "regression", "table.qza", "metadata.tsv", None,
         "sepp-insertion-tree.qza", "unweighted_unifrac", ("host_subject_id",),
         "age is a subject-level value with repeated samples per subject: grouped by subject (host_subject_id); "
         "folds balanced by disease status, so they are those of ibd-ibd.",
         description="ibd-2538 stool, age of the subject (years)", fold_stratify="ibd"),
    Task("ibd-ibd-dm", "ibd-2538", "ibd", "classification", "table.qza", "metadata.tsv", None,
         "sepp-insertion-tree.qza", "unweighted_unifrac", ("host_subject_id",),
         "as ibd-ibd: grouped by subject (host_subject_id), the same folds.", positive="Crohns",
         description="ibd-ibd depth-matched: every model (forests on relative abundances and AAM's ensemble "
         "included) reads one rarefied draw at 1,000 reads per sample, so sequencing depth, which separates "
         "Crohn's from control subjects in this study, is hidden from every model; samples below 1,000 reads are "
         "counted per class", depth_matched=True, fixed_depth=DEPTH_MATCHED_READS),
    Task("amazon-village", "amazon-homes", "village", "classification", "table.qza", "metadata.tsv", None, None,
         "braycurtis", ("house_number",),
         "36 houses with several surfaces each and a house-level label: grouped by house (house_number).",
         description="Amazon homes, house surfaces: which of 4 places along an urbanization gradient"),
    Task("keyboard-subject", "keyboard", "Subject", "classification", "table.qza", "sample-metadata.tsv",
         "rep-seqs.qza", None, "braycurtis", None,
         "not grouped: each sample is a distinct key or fingertip swabbed once, and the label is the owner "
         "(3 keyboards, 3 people's fingertips); the only unit shared between samples is the label itself, so "
         "grouping by it would leave the class unseen in training. Folds are stratified by class.",
         description="keyboard study: whose keyboard or fingertips (6 classes)"),
    Task("mp-bodysite", "moving-pictures", "body-site", "classification", "table.qza", "sample-metadata.tsv",
         "rep-seqs.qza", "rooted-tree.qza", "unweighted_unifrac", ("subject", "days-since-experiment-start"),
         _MP_GROUPING, description="Moving Pictures, body site (gut, tongue, left palm, right palm)"),
    Task("mp-days", "moving-pictures", "days-since-experiment-start", "regression", "table.qza",
         "sample-metadata.tsv", "rep-seqs.qza", "rooted-tree.qza", "unweighted_unifrac",
         ("subject", "days-since-experiment-start"), _MP_GROUPING,
         description="Moving Pictures, days since the start of the experiment (0-168)", fold_stratify="body-site"),
]

#: American Gut (../shared/data/american-gut/README.md): Greengenes 13_8 97% OTUs of 100 nt V4 reads, rarefied to
#: 10,000 reads upstream; several samples per participant
_AG = dict(table="table.biom", metadata="metadata.tsv", sequences="otu-v4-100nt.fasta", tree="gg13_8-97-pruned.nwk",
           beta="unweighted_unifrac", group=("HOST_SUBJECT_ID",), missing=("no_data",),
           grouping="several samples per participant: grouped by participant (HOST_SUBJECT_ID).")
_AG_IBD = (("Crohn's disease", "IBD"), ("Ulcerative colitis", "IBD"), ("I do not have IBD", "none"))

#: the larger tasks of `make heldout-full` (not run by `make heldout`)
FULL_TASKS = [
    Task("ag-ibd", "american-gut", "IBD", "classification", keep=("BODY_HABITAT", "UBERON:feces"), relabel=_AG_IBD,
         positive="IBD", description="American Gut stool, self-reported IBD (Crohn's disease or ulcerative colitis) "
         "vs none (about 5% IBD)", **_AG),
    Task("ag-age", "american-gut", "AGE", "regression", keep=("BODY_HABITAT", "UBERON:feces"),
         value_range=(18.0, 100.0), description="American Gut stool, age of adults (years)",
         fold_stratify=None, **_AG),
]

# quick mode: the repository's own slices (always present) and a small slice of ecam (when ../shared is there)
QUICK_TASKS = [
    Task("mp-bodysite", "moving-pictures", "body-site", "classification", "table.biom", "sample-metadata.tsv",
         "rep-seqs.fasta", "tree.nwk", "unweighted_unifrac", ("subject", "days-since-experiment-start"),
         _MP_GROUPING, description="Moving Pictures slice (tests/data), body site",
         root=os.path.join(TEST_DATA, "moving-pictures")),
    Task("mp-days", "moving-pictures", "days-since-experiment-start", "regression", "table.biom",
         "sample-metadata.tsv", "rep-seqs.fasta", "tree.nwk", "unweighted_unifrac",
         ("subject", "days-since-experiment-start"), _MP_GROUPING,
         description="Moving Pictures slice (tests/data), days since the start",
         root=os.path.join(TEST_DATA, "moving-pictures"), fold_stratify="body-site"),
    Task("keyboard-subject", "keyboard", "Subject", "classification", "table.biom", "sample-metadata.tsv",
         "rep-seqs.fasta", None, "braycurtis", None, TASKS[4].grouping,
         description="keyboard slice (tests/data), whose keyboard or fingertips",
         root=os.path.join(TEST_DATA, "keyboard")),
    Task("ecam-month", "ecam", "month", "regression", "table.qza", "metadata.tsv", "rep-seqs.qza",
         "insertion-tree.qza", "unweighted_unifrac", ("host_subject_id",), TASKS[0].grouping,
         keep=("mom_child", "C"), description="ECAM slice: 9 infants x 4 samples, 200 most abundant features",
         max_groups=9, max_per_group=4, max_features=200),
]


def task_table(quick=False, full=False):
    """The tasks by name (the quick slices with ``quick=True``; also `FULL_TASKS` with ``full=True``)."""
    if quick:
        return {t.name: t for t in QUICK_TASKS}
    return {t.name: t for t in TASKS + (FULL_TASKS if full else [])}


def available(task):
    """Whether the task's files are present (the shared studies sit beside the checkout, not inside it)."""
    return os.path.exists(task.path(task.table)) and os.path.exists(task.path(task.metadata))


# ------------------------------------------------------------------------------------------------ loading

@dataclass
class TaskData:
    """A task's samples with their reads, targets and groups, as read from the study.

    Attributes
    ----------
    task : Task
    table : biom.Table
        Raw counts of the samples that have a target value (features with no reads removed).
    metadata : pandas.DataFrame
        Their metadata (strings), plus the column `GROUP_COLUMN`.
    y : pandas.Series
        Target per sample: float (regression) or str (classification).
    groups : pandas.Series
        Group per sample (the sample ID itself when the task is not grouped).
    reads : pandas.Series
        Total reads per sample.
    classes : list of str or None
    sequences : str or None
        Path of the feature sequences (None when feature IDs are the sequences).
    tree : str or None
        Newick path (as `aam.data.distances.load_tree` returns it).
    notes : list of str
        What loading left out, and why.
    """

    task: Task
    table: object
    metadata: pd.DataFrame
    y: pd.Series
    groups: pd.Series
    reads: pd.Series
    classes: Optional[List[str]]
    sequences: Optional[str]
    tree: Optional[str]
    notes: List[str] = field(default_factory=list)

    @property
    def sample_ids(self):
        return list(self.y.index)

    @property
    def group_column(self):
        """Metadata column holding the groups, for an engine's own grouped validation split (None: ungrouped)."""
        return GROUP_COLUMN if self.task.group else None


def load_task(task, seed=0):
    """Read a task's study with the engine's loaders.

    Samples without a value of the column, or outside ``task.keep``, are left out; with a tree, features that are
    not tips of it are left out (as ``qiime fragment-insertion filter-features`` does for SEPP fragments that were
    not placed). Every exclusion is written to ``notes``.

    Returns
    -------
    TaskData
    """
    from aam.data.distances import load_tree, tip_names
    from aam.data.metadata import categorical_target, load_metadata, numeric_target
    from aam.data.table import drop_empty, load_table
    notes = []
    table = load_table(task.path(task.table))
    md = load_metadata(task.path(task.metadata))
    in_md = [s for s in table.ids() if s in md.index]
    if len(in_md) < table.shape[1]:
        notes.append(f"{table.shape[1] - len(in_md)} table sample(s) without metadata left out")
    md = md.loc[in_md]
    if task.keep:
        col, value = task.keep
        kept = md.index[md[col].astype(str) == value]
        notes.append(f"only {col} == {value}: {len(kept)} of {len(md)} samples")
        md = md.loc[kept]
    md = _recode_target(task, md, notes)
    y, dropped = (categorical_target if task.classifier else numeric_target)(md, task.column)
    if dropped:
        notes.append(f"{len(dropped)} sample(s) without a value of {task.column!r} left out")
    if task.value_range:
        lo, hi = task.value_range
        inside = y[(y >= lo) & (y <= hi)]
        notes.append(f"only {task.column} in [{lo:g}, {hi:g}]: {len(inside)} of {len(y)} samples")
        y = inside
    md = md.loc[y.index].copy()
    if task.group:
        for col in task.group:
            if md[col].isna().any():
                raise ValueError(f"task {task.name}: group column {col!r} has no value for "
                                 f"{int(md[col].isna().sum())} sample(s) of {task.path(task.metadata)}")
        md[GROUP_COLUMN] = md[list(task.group)].astype(str).agg("|".join, axis=1)
    else:
        md[GROUP_COLUMN] = md.index.astype(str)
    table = table.filter(list(md.index), axis="sample", inplace=False)
    tree = None
    if task.tree:
        tree = load_tree(task.path(task.tree))
        tips = tip_names(tree)
        outside = [f for f in table.ids("observation") if f not in tips]
        if outside:
            total = float(table.sum())
            table = table.filter(lambda v, i, m: i in tips, axis="observation", inplace=False)
            notes.append(f"{len(outside)} feature(s) not placed in the tree left out "
                         f"({100 * (1 - float(table.sum()) / total):.1f}% of reads)")
    if task.max_groups:
        table, md = _slice(task, table, md, seed)
        notes.append(f"quick slice: {table.shape[1]} samples of {md[GROUP_COLUMN].nunique()} groups, "
                     f"{table.shape[0]} features")
    table = drop_empty(table)
    if table.shape[1] < md.shape[0]:
        notes.append(f"{md.shape[0] - table.shape[1]} sample(s) without reads left out")
    ids = [str(s) for s in table.ids()]
    md = md.loc[ids]
    y = y.loc[ids]
    reads = pd.Series(np.asarray(table.sum(axis="sample")).ravel(), index=ids, name="reads")
    classes = sorted(y.unique()) if task.classifier else None
    return TaskData(task, table, md, y, md[GROUP_COLUMN].astype(str), reads, classes,
                    task.path(task.sequences), tree, notes)


def _recode_target(task, md, notes):
    """The metadata with the task's missing values blanked and its classes recoded (`Task.missing`,
    `Task.relabel`); what is left out is said in `notes`."""
    if not task.missing and not task.relabel:
        return md
    md = md.copy()
    column = md[task.column].astype(object)
    # the target's loader counts the blanked samples as "without a value" in the notes
    column = column.where(~column.astype(str).isin(task.missing))
    if task.relabel:
        mapping = dict(task.relabel)
        other = column.notna() & ~column.astype(str).isin(mapping)
        if other.any():
            notes.append(f"{int(other.sum())} sample(s) with another {task.column} left out "
                         f"({', '.join(sorted(set(column[other].astype(str))))})")
        column = column.astype(str).map(mapping).where(column.notna())
    md[task.column] = column
    return md


def _slice(task, table, md, seed):
    """A few groups, a few samples each, the most abundant features: for quick runs."""
    rng = np.random.default_rng(seed)
    groups = sorted(md[GROUP_COLUMN].unique())
    chosen = set(rng.choice(groups, size=min(task.max_groups, len(groups)), replace=False))
    ids = []
    for g in sorted(chosen):
        members = list(md.index[md[GROUP_COLUMN] == g])
        ids += members[:: max(1, len(members) // task.max_per_group)][: task.max_per_group]
    table = table.filter(ids, axis="sample", inplace=False)
    if task.max_features and table.shape[0] > task.max_features:
        totals = np.asarray(table.sum(axis="observation")).ravel()
        top = set(np.asarray(table.ids("observation"))[np.argsort(-totals, kind="stable")[: task.max_features]])
        table = table.filter(lambda v, i, m: i in top, axis="observation", inplace=False)
    return table, md.loc[ids]


# ------------------------------------------------------------------------------------------------ folds

def assign_folds(data, k, seed):
    """Each sample's cross-validation fold, fixed by `seed`.

    Grouped tasks keep every group in one fold (StratifiedGroupKFold for classification or with
    ``task.fold_stratify``, GroupKFold with seeded group order for regression); ungrouped classification is
    stratified by class (StratifiedKFold).

    Returns
    -------
    pandas.Series
        Fold index (0..k-1) per sample, in the order of ``data.sample_ids``.
    """
    from aam.data.splits import kfold_splits
    ids = data.sample_ids
    stratify = None
    if data.task.fold_stratify:
        stratify = list(data.metadata.loc[ids, data.task.fold_stratify].astype(str))
    elif data.task.classifier:
        stratify = list(data.y.astype(str))
    groups = list(data.groups) if data.task.group else None
    fold_of = {}
    for i, (_, test) in enumerate(kfold_splits(ids, k=k, seed=seed, stratify=stratify, groups=groups)):
        for s in test:
            fold_of[s] = i
    return pd.Series([fold_of[s] for s in ids], index=ids, name="fold")


@dataclass
class Samples:
    """One side of a fold, as a model recipe receives it.

    Attributes
    ----------
    ids : list of str
    table : biom.Table
        Raw (unrarefied) counts of these samples.
    rarefied : biom.Table
        The fold's one seeded rarefaction of these samples to ``fold.depth`` (the same draw for every model).
    metadata : pandas.DataFrame
        Their metadata; for held-out samples without the target column.
    y : pandas.Series or None
        Targets (only for ``fold.train``).
    groups : pandas.Series
    """

    ids: List[str]
    table: object
    rarefied: object
    metadata: pd.DataFrame
    y: Optional[pd.Series]
    groups: pd.Series


@dataclass
class Fold:
    """What every model gets for one fold: the same samples, the same depth, the same rarefied draw.

    Attributes
    ----------
    data : TaskData
        The task (``fold.task`` is ``data.task``); never read held-out targets from it.
    index : int
    depth : int
        Rarefaction depth, chosen on the training samples only (keeps `keep_fraction` of them).
    label_fraction : float
        Share of the training groups whose labels ``train`` holds.
    train : Samples
        Labelled training samples (reads >= depth).
    pool : Samples
        All training samples with reads >= depth, labelled or not (``y`` is None): for self-supervised steps.
    test : Samples
        Held-out samples with reads >= depth, without their targets: every model must predict all of them.
    below_depth : list of str
        Held-out samples with fewer reads than `depth`: no model is given them (listed in the folds file).
    """

    data: TaskData
    index: int
    depth: int
    label_fraction: float
    train: Samples
    pool: Samples
    test: Samples
    below_depth: List[str]
    train_below_depth: List[str]
    _cache: Dict = field(default_factory=dict, repr=False)

    @property
    def task(self):
        return self.data.task

    @property
    def classes(self):
        return self.data.classes

    def distances(self, ids=None):
        """The study's distances (`Task.beta`) between the fold's rarefied samples (training and held-out).

        Computed once per fold from the shared rarefied draw, labels unused. `ids` selects a block.

        Returns
        -------
        skbio.DistanceMatrix
        """
        dm = self._cache.get("distances")
        if dm is None:
            dm = self._cache["distances"] = beta_distances(self.data, self._cache["rarefied"])
        return dm if ids is None else dm.filter(list(ids), strict=True)


def beta_distances(data, rarefied, threads=1):
    """Distances between the samples of a rarefied table: unweighted UniFrac with the task's tree, or Bray-Curtis /
    Jaccard without one."""
    import skbio
    from aam.data.distances import compute_unweighted_unifrac
    metric = data.task.beta
    if metric == "unweighted_unifrac":
        return compute_unweighted_unifrac(rarefied, data.tree, threads=threads)
    from skbio.diversity import beta_diversity
    counts = rarefied.matrix_data.T.toarray()  # [N, F]
    if metric == "jaccard":
        counts = counts > 0
    dm = beta_diversity(metric, counts, ids=[str(s) for s in rarefied.ids()])
    return skbio.DistanceMatrix(dm.data, ids=dm.ids)


class FoldSplit:
    """One fold's fixed part (depth, samples, rarefied draw, distances), from which each label fraction's
    `Fold` is cut."""

    def __init__(self, data, fold_of, index, keep_fraction, seed):
        from aam.data.table import suggest_depth
        self.data, self.index, self.seed = data, index, seed
        pool_all = [s for s in data.sample_ids if fold_of[s] != index]
        test_all = [s for s in data.sample_ids if fold_of[s] == index]
        # depth from the training samples only: held-out reads never influence any model's input
        self.depth = data.task.fixed_depth or suggest_depth(data.table.filter(pool_all, axis="sample",
                                                                              inplace=False), keep_fraction)
        deep = data.reads >= self.depth
        self.pool_ids = [s for s in pool_all if deep[s]]
        self.test_ids = [s for s in test_all if deep[s]]
        self.below_depth = [s for s in test_all if not deep[s]]
        self.train_below_depth = [s for s in pool_all if not deep[s]]
        self._cache = {}

    @property
    def rarefied(self):
        """The fold's one rarefied draw of its training and held-out samples, shared by every model (made on first
        use: biom's subsample, seeded by `aam.data.table.rarefy`)."""
        from aam.data.table import rarefy
        if "rarefied" not in self._cache:
            raw = self.data.table.filter(self.pool_ids + self.test_ids, axis="sample", inplace=False)
            self._cache["rarefied"], _ = rarefy(raw, self.depth, self.seed + 1000 * self.index)
        return self._cache["rarefied"]

    def _samples(self, ids, with_target):
        from aam.data.table import drop_empty
        data = self.data
        md = data.metadata.loc[ids]
        if not with_target:
            md = md.drop(columns=[data.task.column])
        rarefied = drop_empty(self.rarefied.filter(ids, axis="sample", inplace=False))
        # a depth-matched task gives every model the rarefied draw, also those that read raw counts
        table = rarefied if data.task.depth_matched else drop_empty(data.table.filter(ids, axis="sample",
                                                                                         inplace=False))
        return Samples(list(ids), table, rarefied, md, data.y.loc[ids] if with_target else None,
                       data.groups.loc[ids])

    def labelled_ids(self, fraction):
        """The training samples of the first ``ceil(fraction x groups)`` training groups in a seeded order.

        Fractions are nested (the 10% groups are among the 25% ones); for classification the order alternates
        between the groups' majority classes, so even a small fraction sees as many classes as it has groups.
        """
        groups = self.data.groups.loc[self.pool_ids]
        names = sorted(groups.unique())
        if fraction >= 1.0:
            return list(self.pool_ids)
        rng = np.random.default_rng([self.seed, self.index, 7])
        order = [names[i] for i in rng.permutation(len(names))]
        if self.data.task.classifier:
            y = self.data.y.loc[self.pool_ids]
            label = {g: y[groups == g].mode().iloc[0] for g in names}
            queues = {c: [g for g in order if label[g] == c] for c in sorted(set(label.values()))}
            order = []
            while any(queues.values()):
                for c in sorted(queues):
                    if queues[c]:
                        order.append(queues[c].pop(0))
        n = int(np.ceil(fraction * len(names)))
        if self.data.task.classifier:
            n = max(n, min(len(names), len(set(self.data.y.loc[self.pool_ids]))))
        keep = set(order[: max(1, n)])
        return [s for s in self.pool_ids if groups[s] in keep]

    def fold(self, fraction=1.0):
        """The `Fold` whose labelled training samples are `fraction` of the training groups."""
        labelled = self.labelled_ids(fraction)
        return Fold(self.data, self.index, self.depth, float(fraction), self._samples(labelled, True),
                    self._samples(self.pool_ids, False), self._samples(self.test_ids, False),
                    list(self.below_depth), list(self.train_below_depth), self._cache)

    def distances(self):
        return self.fold(1.0).distances()
