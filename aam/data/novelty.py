"""How far new samples are from what a model was trained on: the checks behind prediction warnings.

A model reads sequences, so it predicts for any sample; but a prediction from a sample with a handful of reads,
from one whose features were all unseen in training, or from another 16S region (other primers: the sequences
start elsewhere in the gene) deserves a warning rather than silence. The training side is summarized once as a
small `signature` stored in the model record; `prediction_warnings` compares new samples with it.
"""
import hashlib

import numpy as np

from aam.errors import preview

# sequence starts are compared over this many nucleotides: ASVs of one primer pair start at the same position of
# the gene, so a few leading bases tell regions apart (V4 reads after 515F mostly start TACG)
START_LENGTH = 8
TOP_STARTS = 64


def sequence_digest(sequence, max_bp):
    """A short digest of the part of a sequence the model reads (its first `max_bp` nucleotides)."""
    text = str(sequence).upper().replace("U", "T")[:max_bp]
    return hashlib.md5(text.encode()).hexdigest()[:12]


def _start_shares(prepared):
    """Share of all reads of the table held by each sequence start."""
    reads = np.asarray(prepared.counts.sum(axis=0)).ravel()               # [F]
    shares = {}
    for seq, r in zip(prepared.sequences, reads):
        key = str(seq).upper()[:START_LENGTH]
        shares[key] = shares.get(key, 0.0) + float(r)
    total = sum(shares.values()) or 1.0
    return {k: v / total for k, v in shares.items()}


def training_signature(prepared, max_bp):
    """What prediction compares new samples with: the features seen in training and how sequences start.

    Returns
    -------
    dict
        ``feature_digests`` (sorted digests of the training sequences), ``starts`` (the most common sequence
        starts and their share of the reads) and ``start_coverage`` (the share of training reads those starts
        cover).
    """
    shares = _start_shares(prepared)
    top = dict(sorted(shares.items(), key=lambda kv: -kv[1])[:TOP_STARTS])
    return {"feature_digests": sorted({sequence_digest(s, max_bp) for s in prepared.sequences}),
            "starts": {k: round(v, 6) for k, v in top.items()},
            "start_coverage": round(float(sum(top.values())), 6)}


def sample_novelty(prepared, signature, max_bp):
    """Per sample, how much of it the training data covers: the fields behind the novelty warnings.

    Parameters
    ----------
    prepared : aam.data.pipeline.PreparedTable
        The new samples (with reads).
    signature : dict or None
        `training_signature` of the model's training data.
    max_bp : int

    Returns
    -------
    pandas.DataFrame
        Indexed by sample ID: ``seen_feature_share``, the share of the sample's reads in features seen in
        training, and ``region_share``, the share of its reads whose sequences start like the training sequences
        (low for another 16S region or primer pair), relative to the share of training reads those starts cover.
        NaN where the model's record keeps no signature to compare with.
    """
    import pandas as pd
    counts = prepared.counts.tocsr()                                       # [N, F]
    totals = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1)         # [N]
    signature = signature or {}
    seen_share = np.full(len(prepared.sample_ids), np.nan)
    region_share = np.full(len(prepared.sample_ids), np.nan)
    seen = set(signature.get("feature_digests") or [])
    if seen:
        known = np.array([sequence_digest(s, max_bp) in seen for s in prepared.sequences], dtype=np.float64)
        seen_share = (counts @ known) / totals
    starts, coverage = signature.get("starts") or {}, signature.get("start_coverage") or 0.0
    if starts and coverage > 0:
        usual = np.array([str(s).upper()[:START_LENGTH] in starts for s in prepared.sequences], dtype=np.float64)
        region_share = (counts @ usual) / totals / coverage
    return pd.DataFrame({"seen_feature_share": seen_share, "region_share": region_share},
                        index=pd.Index([str(i) for i in prepared.sample_ids], name="sample_id"))


def prediction_warnings(prepared, signature, depth, max_bp, empty_samples=()):
    """Warnings about new samples, one per kind, each with a count and examples.

    Parameters
    ----------
    prepared : aam.data.pipeline.PreparedTable
        The new samples (with reads).
    signature : dict or None
        `training_signature` of the model's training data (None: a model from before signatures were kept).
    depth : int or None
        The model's rarefaction depth.
    max_bp : int
    empty_samples : list of str
        Samples without reads (they get no prediction).

    Returns
    -------
    list of str
    """
    out = []
    if empty_samples:
        out.append(f"{len(empty_samples)} sample(s) have no reads and get no prediction: {preview(empty_samples)}")
    ids = np.asarray(prepared.sample_ids)
    totals = np.asarray(prepared.counts.sum(axis=1)).ravel()              # [N]
    if depth:
        shallow = ids[totals < max(2, 0.1 * depth)]
        if len(shallow):
            out.append(f"{len(shallow)} sample(s) have fewer than {max(2, int(0.1 * depth))} reads (10% of the "
                       f"training depth, {depth}); their predictions rest on very few reads: {preview(shallow)}")
    if not signature:
        return out
    novelty = sample_novelty(prepared, signature, max_bp)
    share_known = novelty["seen_feature_share"].to_numpy()
    if not np.isnan(share_known).all():
        none = ids[share_known == 0]
        few = ids[(share_known > 0) & (share_known < 0.1)]
        if len(none):
            out.append(f"{len(none)} sample(s) share no feature with the training data (the model reads their "
                       f"sequences, but nothing like them was seen in training): {preview(none)}")
        if len(few):
            out.append(f"{len(few)} sample(s) have less than 10% of their reads in features seen in training: "
                       f"{preview(few)}")
    region = novelty["region_share"].to_numpy()
    if not np.isnan(region).all():
        other = ids[region < 0.5]
        if len(other):
            starts = signature["starts"]
            common = sorted(starts, key=lambda k: -starts[k])[:3]
            out.append(f"{len(other)} sample(s) look like another 16S region or primer pair: their sequences start "
                       f"unlike the training sequences (which mostly start {', '.join(common)}), so the model may "
                       f"not apply to them: {preview(other)}")
    return out
