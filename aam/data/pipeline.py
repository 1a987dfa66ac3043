"""From user inputs to datasets: the steps the CLI and the QIIME 2 plugin share.

    table (+ sequences) -> validate -> rarefaction depth (drop and report shallow samples)
                        -> tokenized ASV sequences
    tree or matrix      -> distances aligned to the samples (UniFrac computed on the rarefied table)
    taxonomy            -> per-ASV taxon labels at one rank
    metadata            -> targets, categorical covariates, groups; train/validation split

Every step validates its input and raises `AAMInputError` naming the file, sample, feature or column at fault.
Each function returns plain numpy / pandas / biom objects so that tests, the CLI and the plugin can use them.
"""
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import pandas as pd

from aam.data.distances import (align_distance_matrix, compute_faith_pd, compute_unweighted_unifrac,
                                load_distance_matrix, load_tree)
from aam.data.sequences import resolve_sequences
from aam.data.table import drop_empty, load_table, rarefy, suggest_depth, validate_table
from aam.data.tokenizer import SequenceTokenizer
from aam.errors import AAMInputError, preview
from aam.ranks import RANKS as TAXONOMY_RANKS


@dataclass
class PreparedTable:
    """A validated table with its ASV tokens and (optionally) distances, Faith PD and taxonomy labels.

    Attributes
    ----------
    sample_ids, feature_ids : list of str
    counts : scipy.sparse.csr_matrix, shape [N samples, F features]
        Unrarefied reads of the kept samples (the dataset rarefies on the fly, anew each epoch if asked).
    sequences : list of str
    tokens : np.ndarray of uint8, shape [F, L]
    depth : int or None
        Rarefaction depth.
    dropped_low_depth : list of str
        Samples left out because they have fewer reads than `depth`.
    empty_samples : list of str
        Samples of the table without any read (left out).
    distances : np.ndarray, shape [N, N], optional
    faith_pd : np.ndarray, shape [N], optional
    taxonomy : np.ndarray of int64, shape [F], optional
        Index into `taxonomy_classes`, -100 for features without a label at the rank.
    report : list of str
        Human-readable lines describing what was done.
    """

    sample_ids: List[str]
    feature_ids: List[str]
    counts: object
    sequences: List[str]
    tokens: np.ndarray
    tokenizer: SequenceTokenizer
    depth: Optional[int]
    dropped_low_depth: List[str] = field(default_factory=list)
    distances: Optional[np.ndarray] = None
    distance_source: Optional[str] = None
    faith_pd: Optional[np.ndarray] = None
    taxonomy: Optional[np.ndarray] = None
    taxonomy_classes: Optional[List[str]] = None
    report: List[str] = field(default_factory=list)
    empty_samples: List[str] = field(default_factory=list)

    def fingerprint(self):
        """A digest of the samples, features, sequences, counts and depth: equal for the same training data."""
        import hashlib
        h = hashlib.sha256()
        for part in (self.sample_ids, self.feature_ids, self.sequences):
            h.update("\x1f".join(map(str, part)).encode() + b"\x1e")
        counts = self.counts.tocsr()
        for array, dtype in ((counts.indptr, np.int64), (counts.indices, np.int64), (counts.data, np.float64)):
            h.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
        h.update(str(self.depth).encode())
        return h.hexdigest()

    def subset(self, sample_ids):
        """The same data restricted to `sample_ids` (in that order); features are kept."""
        index = {s: i for i, s in enumerate(self.sample_ids)}
        rows = np.array([index[s] for s in sample_ids], dtype=np.int64)
        out = PreparedTable(**{**self.__dict__})
        out.sample_ids = list(sample_ids)
        out.counts = self.counts[rows]
        if self.distances is not None:
            out.distances = self.distances[np.ix_(rows, rows)]
        if self.faith_pd is not None:
            out.faith_pd = self.faith_pd[rows]
        return out


def taxonomy_labels(taxonomy, feature_ids, level):
    """Per-feature labels at one taxonomic rank from a taxonomy table.

    Parameters
    ----------
    taxonomy : pd.Series or pd.DataFrame or dict
        Feature ID -> taxon string like 'k__Bacteria; p__Firmicutes; ...' (a DataFrame uses its 'Taxon' column).
    feature_ids : list of str
    level : int
        1 = kingdom/domain ... 7 = species.

    Returns
    -------
    (np.ndarray of int64 [F], list of str)
        Label index per feature (-100 when the feature has no taxonomy or an empty name at that rank) and the
        class names.
    """
    if isinstance(taxonomy, pd.DataFrame):
        col = next((c for c in taxonomy.columns if c.lower() == "taxon"), taxonomy.columns[0])
        taxonomy = taxonomy[col]
    taxonomy = pd.Series(taxonomy).astype(str)
    names = []
    for fid in feature_ids:
        lineage = taxonomy.get(fid)
        name = None
        if lineage is not None:
            ranks = [r.strip() for r in str(lineage).split(";")]
            if len(ranks) >= level:
                rank = ranks[level - 1]
                # "g__" alone (or "unidentified") means no assignment at that rank
                bare = rank.split("__", 1)[-1].strip()
                if bare and bare.lower() not in ("unidentified", "unassigned", "uncultured"):
                    name = rank
        names.append(name)
    classes = sorted({n for n in names if n is not None})
    if len(classes) < 2:
        raise AAMInputError(f"the taxonomy has fewer than 2 distinct names at rank {level} "
                            f"({TAXONOMY_RANKS[level - 1]}) for this table's features; choose a higher rank "
                            "(smaller {opt:taxonomy_level}).")
    lookup = {c: i for i, c in enumerate(classes)}
    labels = np.array([lookup[n] if n is not None else -100 for n in names], dtype=np.int64)
    return labels, classes


def check_objective_inputs(objective, tree=None, distance_matrix=None, taxonomy=None):
    """Fail before any work when a pretraining objective lacks its input."""
    if objective in ("unifrac", "combined") and tree is None and distance_matrix is None:
        raise AAMInputError(f"{{opt:encoder_type}} {objective} fits sample embeddings to pairwise distances: pass a "
                            "rooted phylogeny of the table's features ({input:tree}; unweighted UniFrac is computed "
                            "from it) or a distance matrix of its samples ({input:distance_matrix}). Without "
                            "either, use {opt:encoder_type} taxonomy with {input:taxonomy}.")
    if objective in ("faith_pd", "combined") and tree is None:
        raise AAMInputError(f"{{opt:encoder_type}} {objective} predicts Faith's phylogenetic diversity: pass a "
                            "rooted phylogeny of the table's features ({input:tree}).")
    if objective in ("taxonomy", "combined") and taxonomy is None:
        raise AAMInputError(f"{{opt:encoder_type}} {objective} predicts each feature's taxon: pass the features' "
                            "taxonomy ({input:taxonomy}).")


def prepare_table(table, sequences=None, tree=None, distance_matrix=None, distance_ids=None, taxonomy=None,
                  taxonomy_level=6, objective=None, max_bp=150, rarefy_depth=None, seed=0, table_name="table"):
    """Load and check a table and everything attached to its samples and features.

    Parameters
    ----------
    table : str or biom.Table
    sequences : None, dict, pd.Series or str (FASTA path)
        Needed when feature IDs are not DNA.
    tree : skbio.TreeNode or str, optional
        Rooted phylogeny for UniFrac / Faith PD.
    distance_matrix : skbio.DistanceMatrix or str, optional
        Precomputed distances (any metric); takes precedence over `tree` for the distance objective.
    distance_ids : list of str, optional
        Sample IDs for a bare .npy matrix.
    taxonomy : pd.Series / pd.DataFrame, optional
    taxonomy_level : int
    objective : {None, 'unifrac', 'faith_pd', 'taxonomy', 'combined'}
        Which targets of the base model are required (None: none, e.g. fine-tuning or prediction).
    max_bp : int
    rarefy_depth : int, optional
        None picks `suggest_depth`; 0 disables rarefaction.
    seed : int
    table_name : str
        How error messages refer to the table.

    Returns
    -------
    PreparedTable
    """
    check_objective_inputs(objective, tree, distance_matrix, taxonomy)
    bt, empty = _load_nonempty_table(table, table_name)
    n_samples = bt.shape[1]
    bt, rarefied, depth, dropped = _rarefy_samples(bt, rarefy_depth, seed)
    report = [_depth_line(table_name, n_samples, bt.shape[0], depth, dropped, empty)]
    sample_ids = [str(s) for s in bt.ids()]
    feature_ids = [str(f) for f in bt.ids("observation")]
    seqs = resolve_sequences(feature_ids, sequences, table_name=table_name)
    tokenizer = SequenceTokenizer(max_bp=max_bp)
    tokens = tokenizer.encode_many(seqs, feature_ids)
    report.append(_sequences_line(seqs, max_bp))
    counts = bt.matrix_data.T.tocsr().astype(np.float32)  # [N, F]
    prepared = PreparedTable(sample_ids, feature_ids, counts, seqs, tokens, tokenizer, depth, dropped,
                             report=report, empty_samples=empty)
    if tree is not None:
        tree = load_tree(tree)  # TreeNode, Newick file or Phylogeny .qza
    prepared.distances, prepared.distance_source = _sample_distances(objective, distance_matrix, distance_ids,
                                                                     tree, rarefied, sample_ids)
    if prepared.distances is not None:
        report.append(_distances_line(prepared.distances, prepared.distance_source))
    if objective in ("faith_pd", "combined"):
        fpd = compute_faith_pd(_rarefied_subset(rarefied, sample_ids), tree)
        prepared.faith_pd = fpd.reindex(sample_ids).to_numpy(dtype=np.float32)
        report.append(f"Faith PD: mean {prepared.faith_pd.mean():.2f}")
    if objective in ("taxonomy", "combined"):
        labels, classes = taxonomy_labels(taxonomy, feature_ids, taxonomy_level)
        prepared.taxonomy, prepared.taxonomy_classes = labels, classes
        report.append(f"taxonomy: {len(classes)} names at rank {taxonomy_level} "
                      f"({TAXONOMY_RANKS[taxonomy_level - 1]}); {(labels < 0).sum()} features unlabeled")
    return prepared


def _load_nonempty_table(table, table_name):
    """The validated table without its empty samples and features, and the IDs of the samples without any read."""
    bt = load_table(table, name=table_name)
    validate_table(bt, name=table_name)
    totals = np.asarray(bt.sum(axis="sample")).ravel()
    empty = [str(s) for s, t in zip(bt.ids(), totals) if t <= 0]
    return drop_empty(bt), empty


def _rarefy_samples(bt, rarefy_depth, seed):
    """Rarefaction of a table without empty samples, as `prepare_table` documents `rarefy_depth`.

    Returns
    -------
    kept : biom.Table
        The unrarefied reads of the samples that reach the depth (all samples without rarefaction).
    rarefied : biom.Table
        The rarefied table (`bt` itself without rarefaction): UniFrac and Faith PD are computed on it.
    depth : int or None
    dropped : list of str
        Samples below the depth.
    """
    if rarefy_depth == 0:
        return bt, bt, None, []
    depth = int(rarefy_depth) if rarefy_depth else suggest_depth(bt)
    rarefied, dropped = rarefy(bt, depth, seed)
    kept = set(rarefied.ids())
    bt = drop_empty(bt.filter(lambda v, i, m: i in kept, axis="sample", inplace=False))
    return bt, rarefied, depth, dropped


def _depth_line(table_name, n_samples, n_features, depth, dropped, empty=()):
    """The report line on the table's size and its rarefaction (samples left out named)."""
    line = f"{table_name}: {n_samples} samples x {n_features} features; rarefaction depth {depth if depth else 'none'}"
    if empty:
        line += f"; {len(empty)} sample(s) without reads left out: {preview(empty)}"
    if dropped:
        line += f"; {len(dropped)} sample(s) below depth left out: {preview(dropped)}"
    return line


def _sequences_line(seqs, max_bp):
    """The report line on the ASV sequences' number and lengths (and how many are cut at `max_bp`)."""
    lengths = np.array([len(s) for s in seqs])
    line = f"ASV sequences: {len(seqs)}, {lengths.min()}-{lengths.max()} bp"
    if lengths.max() > max_bp:
        line += f" ({int((lengths > max_bp).sum())} truncated to {max_bp} bp)"
    return line


def _rarefied_subset(rarefied, sample_ids):
    """The rarefied reads of `sample_ids`, without features left empty."""
    wanted = set(sample_ids)
    return drop_empty(rarefied.filter(lambda v, i, m: i in wanted, axis="sample", inplace=False))


def _sample_distances(objective, distance_matrix, distance_ids, tree, rarefied, sample_ids):
    """The [N, N] distances of `sample_ids` and where they come from, or (None, None) when not asked for.

    A precomputed matrix is used whenever it is given and the objective has a distance part or is None (fine-tuning
    and prediction carry it along); otherwise a distance objective computes unweighted UniFrac on the rarefied
    table.
    """
    wants_distances = objective in ("unifrac", "combined")
    if distance_matrix is not None and (wants_distances or objective is None):
        dm = load_distance_matrix(distance_matrix, ids=distance_ids)
        return align_distance_matrix(dm, sample_ids), "precomputed distance matrix"
    if wants_distances:
        dm = compute_unweighted_unifrac(_rarefied_subset(rarefied, sample_ids), tree)
        return align_distance_matrix(dm, sample_ids), "unweighted UniFrac of the rarefied table"
    return None, None


def _distances_line(distances, source):
    """The report line on the distances between samples: where from, how many, their mean and range."""
    n = len(distances)
    d = distances[np.triu_indices(n, 1)]
    return (f"distances: {source}, {n} samples, "
            f"mean {d.mean():.3f}, range {d.min():.3f}-{d.max():.3f}")
