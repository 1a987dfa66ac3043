"""Benchmark data: the ibd-2538 study when it is available, otherwise a synthetic table with its statistics.

ibd-2538 (Qiita study 2538): 470 samples x 10,099 features whose IDs are 100 bp sequences; after the default
rarefaction (depth chosen to keep 90% of the samples) about 424 samples with a median of ~180 ASVs each. The
pretraining target is a Jaccard distance matrix computed from the table: it stands in for UniFrac, which would
need the 10,099-tip SEPP tree, and costs the model exactly the same (a [B, B] block per batch).
"""
import os

import numpy as np
import scipy.sparse as sp

from aam.data.dataset import ASVDataset, Collator
from aam.data.pipeline import prepare_table

IBD_TABLE = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "ibd-2538", "table.qza")
NUCLEOTIDES = np.array(list("ACGT"))


def synthetic_table(n_samples=470, n_features=10099, median_asvs=180, length=100, seed=0):
    """A biom.Table shaped like ibd-2538: DNA feature IDs, Zipf-like feature prevalence, skewed read counts.

    Parameters
    ----------
    n_samples, n_features : int
    median_asvs : int
        Median number of ASVs per sample (log-normal spread, 20..510 as in ibd-2538).
    length : int
        Sequence length in bp.
    seed : int

    Returns
    -------
    biom.Table
    """
    import biom
    rng = np.random.default_rng(seed)
    seqs = ["".join(NUCLEOTIDES[rng.integers(0, 4, length)]) for _ in range(n_features)]
    prevalence = 1.0 / np.arange(1, n_features + 1) ** 0.9
    prevalence /= prevalence.sum()
    data = np.zeros((n_features, n_samples), dtype=np.float64)
    for j in range(n_samples):
        k = int(np.clip(rng.lognormal(np.log(median_asvs), 0.5), 20, 510))
        idx = rng.choice(n_features, size=k, replace=False, p=prevalence)
        data[idx, j] = np.ceil(rng.lognormal(2.0, 1.5, size=k))
    return biom.Table(data, seqs, [f"s{j}" for j in range(n_samples)])


def jaccard_distances(counts):
    """Jaccard distances [N, N] between the rows of a sparse count matrix (presence / absence)."""
    x = (sp.csr_matrix(counts) > 0).astype(np.float64)
    inter = np.asarray((x @ x.T).todense())                 # [N, N]
    size = np.asarray(x.sum(axis=1)).ravel()                # [N]
    union = size[:, None] + size[None, :] - inter           # [N, N]
    d = 1.0 - inter / np.maximum(union, 1.0)
    np.fill_diagonal(d, 0.0)
    return d.astype(np.float32)


def load_benchmark_table(max_bp=100):
    """Prepared ibd-2538 (or the synthetic stand-in) with Jaccard distances.

    Returns
    -------
    (aam.data.pipeline.PreparedTable, str)
        The table and a one-line description of its source.
    """
    path = os.path.abspath(IBD_TABLE)
    if os.path.exists(path):
        table, source = path, "ibd-2538 (real)"
    else:
        table, source = synthetic_table(), "synthetic stand-in for ibd-2538 (ibd-2538 not found)"
    prepared = prepare_table(table, max_bp=max_bp, seed=0)
    prepared.distances = jaccard_distances(prepared.counts)
    n, f = prepared.counts.shape
    return prepared, f"{source}: {n} samples x {f} features after rarefaction to {prepared.depth} reads"


def make_dataset(prepared, token_limit, targets=None):
    """The pretraining / fine-tuning dataset with the engine's defaults (abundance order, rarefied)."""
    return ASVDataset(prepared.counts, prepared.sample_ids, token_limit=token_limit,
                      rarefy_depth=prepared.depth, seed=0, targets=targets)


def fixed_batches(prepared, token_limit, batch_size, n_batches, mask_ratio=0.15, seed=0, trim_padding=True):
    """`n_batches` collated batches of randomly drawn samples, as a shuffled training loader yields them.

    ``trim_padding=False`` keeps every ASV padded to ``max_bp + 1`` positions, as the straightforward design does.
    """
    ds = make_dataset(prepared, token_limit)
    collate = Collator(ds, prepared.tokens, distances=prepared.distances, mask_ratio=mask_ratio,
                       trim_padding=trim_padding)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(ds))
    batches = []
    for i in range(n_batches):
        idx = np.take(order, range(i * batch_size, (i + 1) * batch_size), mode="wrap")
        batches.append(collate([ds[int(j)] for j in idx]))
    return batches


def dedup_factor(batch):
    """Occupied slots / distinct ASVs of a batch (how many times each distinct ASV is encoded per slot)."""
    ids = batch["asv_ids"]
    occupied = ids >= 0
    return float(occupied.sum()) / max(1, int(ids[occupied].unique().numel()))
