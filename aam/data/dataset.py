"""Samples as batches of tokenized ASVs: the `ASVDataset` and its collate function.

A sample is the list of its ASVs (feature indices) with their read counts. Each epoch a sample can be rarefied
anew (augmentation, as the TensorFlow original did), then at most ``token_limit`` ASVs are kept and ordered by
abundance, so an ASV's slot is its abundance rank. The collate function turns a list of samples into tensors:

    tokens      [B, S, L]  int64   nucleotide tokens of the ASV in each slot (all PAD for an empty slot)
    asv_ids     [B, S]     int64   feature index of each slot, -1 for empty slots
    counts      [B, S, 1]  float32 reads of each slot's ASV
    nuc_targets [B, S, L]  int64   original nucleotide at masked positions, -100 elsewhere (when masking)
    distances   [B, B]     float32 block of the distance matrix, in the batch's own order (when given)
    targets     [B]        float32 (regression) or int64 (class index) (when given)
    categorical [B, C]     int64   covariate indices, 0 = unknown (when given)
    numeric     [B, K]     float32 numeric covariates, `aam.data.numeric.NumericEncoder` (when given)
    faith_pd    [B]        float32 (when given)
    taxonomy    [B, S]     int64   taxon label of each slot's ASV, -100 when unknown (when given)
    sample_ids  list of str

S is the largest number of ASVs in the batch (at most ``token_limit``), so batches of sparse samples stay small.
Nothing here is quadratic in the batch size except the [B, B] distance block.
"""
import numpy as np
import torch

from aam.data.tokenizer import MASK, PAD

IGNORE = -100


def _rng(*keys):
    """A numpy Generator determined by integer keys (seed, epoch, sample...), independent of worker order."""
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in keys])


def rarefy_counts(counts, depth, rng):
    """Subsample `counts` without replacement to `depth` reads (unchanged when there are fewer reads).

    Parameters
    ----------
    counts : np.ndarray of int, shape [n]
    depth : int or None
    rng : np.random.Generator

    Returns
    -------
    np.ndarray of int, shape [n]
    """
    total = int(counts.sum())
    if depth is None or total <= depth:
        return counts
    counts = np.asarray(counts, dtype=np.int64)
    if total < _HYPERGEOMETRIC_LIMIT:
        return rng.multivariate_hypergeometric(counts, depth, method="marginals")
    # numpy's exact draw stops at 1e9 reads; from that many, taking `depth` reads with or without replacement
    # differs by less than depth / total per read, far below anything rarefaction is used for
    return rng.multinomial(depth, counts / total)


# numpy's multivariate_hypergeometric(method="marginals") needs fewer reads than this
_HYPERGEOMETRIC_LIMIT = 10 ** 9


def select_asvs(feature_idx, counts, token_limit, strategy, rng):
    """Keep at most `token_limit` ASVs of a sample and order them by abundance.

    Parameters
    ----------
    feature_idx, counts : np.ndarray, shape [n]
        The sample's nonzero features and their reads.
    token_limit : int
    strategy : {'abundance', 'random'}
        'abundance' keeps the most abundant (ties go to the lower feature index, so it is deterministic);
        'random' keeps a random subset drawn from `rng`.
    rng : np.random.Generator

    Returns
    -------
    (np.ndarray, np.ndarray)
        Feature indices and counts, most abundant first.
    """
    if strategy == "random" and len(feature_idx) > token_limit:
        keep = np.sort(rng.choice(len(feature_idx), size=token_limit, replace=False))
        feature_idx, counts = feature_idx[keep], counts[keep]
    # lexsort: last key is primary -> descending count, then ascending feature index
    order = np.lexsort((feature_idx, -counts))[:token_limit]
    return feature_idx[order], counts[order]


class ASVDataset(torch.utils.data.Dataset):
    """Samples of a feature table, each as its abundance-ordered ASVs with counts and optional labels.

    Parameters
    ----------
    counts : scipy.sparse matrix, shape [N samples, F features]
        Read counts (rows are samples), in the order of `sample_ids`.
    sample_ids : list of str
    token_limit : int
        Most ASVs per sample.
    asv_selection : {'abundance', 'random'}
    rarefy_depth : int, optional
        Rarefy each sample to this many reads when it has more (a sample with fewer reads is used as is).
    resample_each_epoch : bool
        Draw a new rarefaction (and random ASV subset) every epoch; otherwise the draw of epoch 0 is reused.
    seed : int
    targets : np.ndarray, shape [N], optional
        float32 regression targets or int64 class indices.
    categorical : np.ndarray of int64, shape [N, C], optional
    numeric : np.ndarray of float32, shape [N, K], optional
    faith_pd : np.ndarray, shape [N], optional
    """

    def __init__(self, counts, sample_ids, token_limit=1024, asv_selection="abundance", rarefy_depth=None,
                 resample_each_epoch=False, seed=0, targets=None, categorical=None, faith_pd=None, numeric=None):
        counts = counts.tocsr()
        if counts.shape[0] != len(sample_ids):
            raise ValueError(f"{counts.shape[0]} count rows but {len(sample_ids)} sample IDs")
        self.sample_ids = [str(s) for s in sample_ids]
        # per-sample (feature indices, counts) of the nonzero entries: cheap to index in __getitem__
        self._rows = []
        for i in range(counts.shape[0]):
            lo, hi = counts.indptr[i], counts.indptr[i + 1]
            idx, val = counts.indices[lo:hi].astype(np.int64), counts.data[lo:hi]
            keep = val > 0
            self._rows.append((idx[keep], np.rint(val[keep]).astype(np.int64)))
        self.token_limit = int(token_limit)
        self.asv_selection = asv_selection
        self.rarefy_depth = rarefy_depth
        self.resample_each_epoch = resample_each_epoch
        self.seed = int(seed)
        self.targets = targets
        self.categorical = categorical
        self.numeric = numeric
        self.faith_pd = faith_pd
        self.epoch = 0

    def set_epoch(self, epoch):
        """Select the rarefaction / subset draw (and the masking draw of the collate function) of an epoch."""
        self.epoch = int(epoch)

    @property
    def draw(self):
        return self.epoch if self.resample_each_epoch else 0

    def __len__(self):
        return len(self.sample_ids)

    def __getitem__(self, i):
        idx, cnt = self._rows[i]
        rng = _rng(self.seed, self.draw, i)
        if self.rarefy_depth is not None:
            cnt = rarefy_counts(cnt, self.rarefy_depth, rng)
            nz = cnt > 0
            idx, cnt = idx[nz], cnt[nz]
        idx, cnt = select_asvs(idx, cnt, self.token_limit, self.asv_selection, rng)
        item = {"index": i, "asv_ids": idx, "counts": cnt.astype(np.float32)}
        if self.targets is not None:
            item["target"] = self.targets[i]
        if self.categorical is not None:
            item["categorical"] = self.categorical[i]
        if self.numeric is not None:
            item["numeric"] = self.numeric[i]
        if self.faith_pd is not None:
            item["faith_pd"] = self.faith_pd[i]
        return item


class Collator:
    """Turns a list of `ASVDataset` items into a batch of tensors (see the module docstring).

    Parameters
    ----------
    dataset : ASVDataset
        The dataset the items come from (for sample IDs, the epoch and the seed).
    feature_tokens : np.ndarray of uint8, shape [F, L]
        Tokenized sequence of every feature.
    distances : np.ndarray, shape [N, N], optional
        Distance matrix aligned to the dataset's samples.
    taxonomy : np.ndarray of int64, shape [F], optional
        Taxon label per feature (-100 when unknown).
    mask_ratio : float
        Fraction of nucleotide positions to mask (0 disables masking).
    mask_strategy : {'random', 'span'}
    span_length : int
        Mean span length for 'span' masking.
    trim_padding : bool
        Drop trailing padding positions that no ASV of the batch uses (L becomes the batch's longest ASV + 1).
    """

    def __init__(self, dataset, feature_tokens, distances=None, taxonomy=None, mask_ratio=0.0,
                 mask_strategy="random", span_length=5, trim_padding=True):
        self.dataset = dataset
        self.trim_padding = bool(trim_padding)
        self.feature_tokens = torch.as_tensor(np.ascontiguousarray(feature_tokens))
        self.distances = None if distances is None else np.asarray(distances, dtype=np.float32)
        self.taxonomy = None if taxonomy is None else torch.as_tensor(taxonomy, dtype=torch.int64)
        self.mask_ratio = float(mask_ratio)
        self.mask_strategy = mask_strategy
        self.span_length = int(span_length)

    def __call__(self, items):
        B = len(items)
        S = max(1, max(len(it["asv_ids"]) for it in items))
        asv_ids = torch.full((B, S), -1, dtype=torch.int64)
        counts = torch.zeros((B, S, 1), dtype=torch.float32)
        for b, it in enumerate(items):
            n = len(it["asv_ids"])
            asv_ids[b, :n] = torch.from_numpy(it["asv_ids"])
            counts[b, :n, 0] = torch.from_numpy(it["counts"])
        occupied = asv_ids >= 0  # [B, S]
        # distinct ASVs of the batch: masking is drawn once per distinct ASV so every slot holding it agrees
        # (this is what makes encoding each distinct ASV once equal to encoding every slot)
        unique_ids, inverse = torch.unique(asv_ids[occupied], return_inverse=True)  # [U], [n_occupied]
        unique_tokens = self.feature_tokens[unique_ids].long()  # [U, L]
        if self.trim_padding and len(unique_ids):
            # cut the padding columns every ASV of the batch shares: 100 bp reads with max_bp 150 would otherwise
            # spend a third of the nucleotide attention on padding. Results do not change (padding is masked).
            used = int((unique_tokens != PAD).sum(dim=1).max())
            unique_tokens = unique_tokens[:, :max(used, 1)]
        batch = {"sample_ids": [self.dataset.sample_ids[it["index"]] for it in items],
                 "asv_ids": asv_ids, "counts": counts}
        L = unique_tokens.shape[1]
        if self.mask_ratio > 0 and len(unique_ids):
            rng = _rng(self.dataset.seed, self.dataset.epoch, 7919, *[it["index"] for it in items[:8]], B)
            masked, targets = self._mask(unique_tokens, rng)
        else:
            masked, targets = unique_tokens, None
        tokens = torch.full((B, S, L), PAD, dtype=torch.int64)
        tokens[occupied] = masked[inverse]
        batch["tokens"] = tokens
        if targets is not None:
            nuc_targets = torch.full((B, S, L), IGNORE, dtype=torch.int64)
            nuc_targets[occupied] = targets[inverse]
            batch["nuc_targets"] = nuc_targets
        if self.taxonomy is not None:
            tax = torch.full((B, S), IGNORE, dtype=torch.int64)
            tax[occupied] = self.taxonomy[asv_ids[occupied]]
            batch["taxonomy"] = tax
        idx = np.array([it["index"] for it in items])
        if self.distances is not None:
            batch["distances"] = torch.from_numpy(np.ascontiguousarray(self.distances[np.ix_(idx, idx)]))
        if "target" in items[0]:
            batch["targets"] = torch.as_tensor(np.array([it["target"] for it in items]))
        if "categorical" in items[0]:
            batch["categorical"] = torch.as_tensor(np.stack([it["categorical"] for it in items]),
                                                   dtype=torch.int64)
        if "numeric" in items[0]:
            batch["numeric"] = torch.as_tensor(np.stack([it["numeric"] for it in items]), dtype=torch.float32)
        if "faith_pd" in items[0]:
            batch["faith_pd"] = torch.as_tensor(np.array([it["faith_pd"] for it in items]), dtype=torch.float32)
        return batch

    def _mask(self, tokens, rng):
        """Mask nucleotide positions of `tokens` [U, L]; returns (masked tokens, targets with -100 elsewhere).

        Only A/C/G/T positions are candidates: the start token, padding and ambiguous bases (already MASK)
        are never masked and never targets.
        """
        candidates = (tokens >= 1) & (tokens <= 4)  # [U, L]
        U, L = tokens.shape
        if self.mask_strategy == "span":
            # span starts drawn so that starts * mean length ~= ratio of positions; each span covers
            # `span_length` positions from its start
            starts = rng.random((U, L)) < (self.mask_ratio / self.span_length)
            chosen = np.zeros((U, L), dtype=bool)
            for k in range(self.span_length):
                chosen[:, k:] |= starts[:, : L - k]
            chosen = torch.from_numpy(chosen)
        else:
            chosen = torch.from_numpy(rng.random((U, L)) < self.mask_ratio)
        chosen &= candidates
        targets = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
        masked = torch.where(chosen, torch.full_like(tokens, MASK), tokens)
        return masked, targets
