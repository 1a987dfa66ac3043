"""Held-out evaluation of a reference encoder, against a randomly initialized encoder and k-mer profiles.

    python -m aam.reference.evaluate --run encoder-run

For each read length (V4 trimmed to 100, 120, 150 nt) and each held-out set (OTUs never trained on; OTUs of
whole genera never trained on):

* ``masked_nucleotide_accuracy``: 15% of A/C/G/T positions masked with a fixed seed, fraction predicted right;
* ``genus_accuracy_head`` / ``family_accuracy_head``: the pretraining taxonomy head's accuracy (held-out OTUs at
  genus, held-out genera at family, the lowest rank whose classes were trained on), over OTUs with such a label;
* ``genus_accuracy_1nn`` / ``family_accuracy_1nn``: label of the nearest training OTU in embedding space (same
  read length), which works for any embedding, so the baselines get it too;
* ``tree_spearman`` / ``tree_pearson``: correlation of embedding distance with patristic distance over
  random pairs within the set (``close_`` variants: pairs within one family, where a tree matters most);
* ``placement_distance``: mean patristic distance from a held-out OTU to its nearest training OTU in embedding
  space (lower = placed nearer its relatives).

Rows: ``pretrained`` (the run's final.pt), ``random_init`` (the same architecture and seed, untrained) and
``kmer_profile`` (unit-normalized 6-mer counts; no nucleotide or head metrics).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from aam.data.tokenizer import PAD
from aam.models.config import EncoderConfig
from aam.reference.data import IGNORE, prepare_reference, truncate_rows
from aam.reference.greengenes import RANKS
from aam.reference.model import ReferencePretrainer, mask_nucleotides

GENUS, FAMILY = RANKS.index("genus"), RANKS.index("family")


@torch.no_grad()
def encode(asv_encoder, tokens, batch_size=512):
    """ASV embeddings of token rows: np.ndarray [n, L] -> float32 [n, D] (eval mode, padding columns trimmed)."""
    was_training = asv_encoder.training
    asv_encoder.eval()
    out = []
    for start in range(0, len(tokens), batch_size):
        chunk = tokens[start:start + batch_size]
        used = max(1, int((chunk != PAD).sum(1).max()))
        emb, _ = asv_encoder(torch.from_numpy(np.ascontiguousarray(chunk[:, :used]).astype(np.int64)))
        out.append(emb.float().numpy())
    asv_encoder.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, asv_encoder.cfg.embedding_dim), np.float32)


@torch.no_grad()
def masked_accuracy(asv_encoder, tokens, seed, mask_ratio=0.15, batch_size=512):
    """Fraction of masked A/C/G/T positions whose nucleotide the encoder's head predicts (fixed-seed masks)."""
    was_training = asv_encoder.training
    asv_encoder.eval()
    rng = np.random.default_rng([int(seed), 7717])
    correct = total = 0
    for start in range(0, len(tokens), batch_size):
        chunk = torch.from_numpy(tokens[start:start + batch_size].astype(np.int64))
        masked, targets = mask_nucleotides(chunk, mask_ratio, rng)
        _, logits = asv_encoder(masked)
        chosen = targets != IGNORE
        correct += int((logits.argmax(-1)[chosen] == targets[chosen]).sum())
        total += int(chosen.sum())
    asv_encoder.train(was_training)
    return correct / max(total, 1)


def kmer_profiles(tokens, k=6):
    """Unit-normalized counts of the A/C/G/T k-mers of token rows: [n, L] -> scipy.sparse CSR [n, 4^k]."""
    from scipy.sparse import csr_matrix
    n, L = tokens.shape
    x = tokens[:, 1:].astype(np.int64)                                           # [n, L-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, k, axis=1)             # [n, L-k, k]
    valid = ((windows >= 1) & (windows <= 4)).all(-1)                            # [n, L-k]
    index = ((np.clip(windows, 1, 4) - 1) * (4 ** np.arange(k))).sum(-1)         # [n, L-k]
    rows = np.broadcast_to(np.arange(n)[:, None], index.shape)
    counts = csr_matrix((np.ones(int(valid.sum()), np.float32), (rows[valid], index[valid])), shape=(n, 4 ** k))
    counts.sum_duplicates()
    norms = np.sqrt(np.asarray(counts.multiply(counts).sum(1)).ravel())          # [n]
    scale = 1.0 / np.maximum(norms, 1e-12)
    return csr_matrix(counts.multiply(scale[:, None]).astype(np.float32))


def _squared_norms(x):
    if hasattr(x, "multiply"):
        return np.asarray(x.multiply(x).sum(1), dtype=np.float64).ravel()
    return (np.asarray(x, dtype=np.float64) ** 2).sum(1)


def row_distances(x, i, j):
    """Euclidean distances between rows x[i[k]] and x[j[k]] of a dense array or a sparse matrix."""
    if hasattr(x, "multiply"):
        dot = np.asarray(x[i].multiply(x[j]).sum(1), dtype=np.float64).ravel()
        sq = _squared_norms(x[i]) + _squared_norms(x[j]) - 2.0 * dot
        return np.sqrt(np.maximum(sq, 0.0))
    return np.linalg.norm(x[i].astype(np.float64) - x[j].astype(np.float64), axis=1)


def nearest(query, reference, chunk=1024):
    """Index of the Euclidean-nearest row of `reference` [m, D] for every row of `query` [n, D] (dense or sparse)."""
    ref_sq = _squared_norms(reference)                                           # [m]
    out = np.empty(query.shape[0], dtype=np.int64)
    for s in range(0, query.shape[0], chunk):
        q = query[s:s + chunk]
        # |q - r|^2 = |q|^2 + |r|^2 - 2 q.r; |q|^2 does not change the argmin
        prod = q @ reference.T
        prod = prod.toarray() if hasattr(prod, "toarray") else prod
        out[s:s + chunk] = (ref_sq[None, :] - 2.0 * prod).argmin(1)              # [c, m] -> [c]
    return out


def sample_pairs(n, n_pairs, rng, groups=None):
    """Random distinct pairs (i, j) of range(n); with `groups`, only pairs within one group (label >= 0)."""
    if groups is None:
        i = rng.integers(0, n, n_pairs)
        j = rng.integers(0, n - 1, n_pairs)
        j = j + (j >= i)                                                          # never i == j
        return i, j
    groups = np.asarray(groups)
    members = {}
    for k, g in enumerate(groups):
        if g >= 0:
            members.setdefault(int(g), []).append(k)
    pools = [np.array(v) for v in members.values() if len(v) > 1]
    if not pools:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sizes = np.array([len(p) * (len(p) - 1) for p in pools], dtype=np.float64)
    pick = rng.choice(len(pools), size=n_pairs, p=sizes / sizes.sum())
    i, j = [], []
    for g in pick:
        a, b = rng.choice(pools[g], size=2, replace=False)
        i.append(a)
        j.append(b)
    return np.array(i), np.array(j)


def _correlations(emb, tree_rows, tree, i, j):
    if len(i) < 3:
        return None, None
    e = row_distances(emb, i, j)
    t = tree.distances(tree_rows[i], tree_rows[j])
    if e.std() == 0 or t.std() == 0:
        return None, None
    return float(spearmanr(e, t)[0]), float(pearsonr(e, t)[0])


def embedding_metrics(emb, rows, data, seed, n_pairs=20000, ref_emb=None, ref_rows=None):
    """Tree correlations, and (with a reference set) 1-NN labels and placement distance, of embeddings of `rows`."""
    rng = np.random.default_rng([int(seed), 3301])
    out = {}
    i, j = sample_pairs(len(rows), n_pairs, rng)
    out["tree_spearman"], out["tree_pearson"] = _correlations(emb, rows, data.tree, i, j)
    family = data.labels[rows, FAMILY]
    i, j = sample_pairs(len(rows), n_pairs, rng, groups=np.where(family == IGNORE, -1, family))
    out["close_tree_spearman"], out["close_tree_pearson"] = _correlations(emb, rows, data.tree, i, j)
    if ref_emb is not None:
        nn_rows = ref_rows[nearest(emb, ref_emb)]
        for rank, name in ((GENUS, "genus"), (FAMILY, "family")):
            y = data.labels[rows, rank]
            known = y != IGNORE
            if known.any():
                out[f"{name}_accuracy_1nn"] = float((data.labels[nn_rows, rank][known] == y[known]).mean())
                out[f"{name}_labelled"] = int(known.sum())
        out["placement_distance"] = float(data.tree.distances(rows, nn_rows).mean())
    return out


def head_accuracy(model, emb, rows, data, rank):
    """Accuracy of the taxonomy head of `rank` on rows with a trained label at that rank (None if none)."""
    y = data.labels[rows, rank]
    known = y != IGNORE
    if not known.any():
        return None
    with torch.no_grad():
        logits = model.taxonomy_heads[rank](torch.from_numpy(emb[known]))
    return float((logits.argmax(-1).numpy() == y[known]).mean())


def validation_metrics(model, data, rows, seed, lengths=(100, 150)):
    """Quick metrics watched during training (no nearest-neighbour search): per read length."""
    out = {}
    for length in lengths:
        tokens = truncate_rows(data.tokens[rows], np.full(len(rows), length))
        emb = encode(model.asv_encoder, tokens)
        out[f"masked_acc_{length}"] = masked_accuracy(model.asv_encoder, tokens, seed)
        genus = head_accuracy(model, emb, rows, data, GENUS)
        if genus is not None:
            out[f"genus_acc_{length}"] = genus
        m = embedding_metrics(emb, rows, data, seed, n_pairs=5000)
        out[f"tree_spearman_{length}"] = m["tree_spearman"] or 0.0
        out[f"close_tree_spearman_{length}"] = m["close_tree_spearman"] or 0.0
    return out


def evaluate(model, data, seed, lengths=(100, 120, 150), log=print, random_model=None, kmer_size=6,
             n_reference=20000):
    """Full held-out metrics: {row: {set: {length: metrics}}}, rows pretrained / random_init / kmer_profile.

    The 1-NN metrics search a fixed random subset of `n_reference` training OTUs (all of them when fewer), the
    same for every row, so that three encoders x three read lengths stay within minutes on one core.

    Returns
    -------
    results : dict
    speed : dict
        Embedding throughput (sequences/s) of each encoder row per read length.
    """
    sets = {name: data.split[name] for name in ("heldout_otus", "heldout_genera") if len(data.split[name]) > 1}
    train = data.split["train"]
    if len(train) > n_reference:
        rng = np.random.default_rng([int(seed), 5501])
        train = np.sort(rng.choice(train, size=n_reference, replace=False))
    rows = {"pretrained": model, "random_init": random_model, "kmer_profile": None}
    results, speed = {}, {}
    for row_name, m in rows.items():
        if row_name == "random_init" and m is None:
            continue
        results[row_name] = {s: {} for s in sets}
        for length in lengths:
            t0 = time.time()
            ref_tokens = truncate_rows(data.tokens[train], np.full(len(train), length))
            ref_emb = kmer_profiles(ref_tokens, kmer_size) if m is None else encode(m.asv_encoder, ref_tokens)
            if m is not None:
                speed.setdefault(row_name, {})[str(length)] = len(train) / (time.time() - t0)
            for set_name, set_rows in sets.items():
                tokens = truncate_rows(data.tokens[set_rows], np.full(len(set_rows), length))
                emb = kmer_profiles(tokens, kmer_size) if m is None else encode(m.asv_encoder, tokens)
                metrics = embedding_metrics(emb, set_rows, data, seed, ref_emb=ref_emb, ref_rows=train)
                if m is not None:
                    metrics["masked_nucleotide_accuracy"] = masked_accuracy(m.asv_encoder, tokens, seed)
                    if row_name == "pretrained":
                        metrics["genus_accuracy_head"] = head_accuracy(m, emb, set_rows, data, GENUS)
                        metrics["family_accuracy_head"] = head_accuracy(m, emb, set_rows, data, FAMILY)
                results[row_name][set_name][str(length)] = metrics
            log(f"evaluated {row_name} at {length} nt in {time.time() - t0:.0f} s")
    return results, speed


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m aam.reference.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run directory of aam.reference.pretrain (reads final.pt)")
    p.add_argument("--output", help="metrics JSON (default RUN/metrics.json)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    final = torch.load(os.path.join(args.run, "final.pt"), map_location="cpu", weights_only=True)
    summary = json.loads(final["config"])
    s = summary["settings"]
    data = prepare_reference(s["sequences"], s["taxonomy"], s["tree"], max_bp=s["encoder_config"]["max_bp"],
                             seed=s["seed"], genus_fraction=s["genus_fraction"], otu_fraction=s["otu_fraction"],
                             n_validation=s["n_validation"], log=lambda line: print(line, flush=True))
    cfg = EncoderConfig.from_dict(summary["encoder_config"])
    n_classes = [len(c) for c in data.classes]
    model = ReferencePretrainer(cfg, n_classes)
    model.load_state_dict(final["model"])
    torch.manual_seed(int(s["seed"]))
    random_model = ReferencePretrainer(cfg, n_classes)  # the same initialization the run started from
    results, speed = evaluate(model, data, s["seed"], random_model=random_model, kmer_size=cfg.kmer_size,
                              log=lambda line: print(line, flush=True))
    train_rates = [h["sequences_per_s"] for h in summary["history"] if "sequences_per_s" in h]
    out = {"command": "python -m aam.reference.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
           "metrics": results, "embedding_sequences_per_s": speed,
           # the logged rate is cumulative (sequences so far / wall time so far), so the last one is the run's
           "training_sequences_per_s": float(train_rates[-1]) if train_rates else None,
           "training_sequences": int(s["steps"]) * int(s["batch_size"]),
           "split": data.report["split"], "classes": data.report["classes"], "threads": args.threads,
           "nearest_neighbour_reference_otus": int(min(20000, len(data.split["train"])))}
    path = args.output or os.path.join(args.run, "metrics.json")
    with open(path, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
