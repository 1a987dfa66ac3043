"""Does training on truncated reads make a corpus base robust to shorter reads? A small pilot, side by side.

Two bases are pretrained on the same seeded subset of the corpus with the same options, one reading half of its
training samples at 90/80 nt each epoch (the `make base` setting), one always at 100 nt. Each then embeds its own
validation samples with their reads at 100, 90 and 80 nt, and the Pearson correlation of the embedding distances
with the samples' unweighted UniFrac (the pretraining target) is reported per read length, beside the drift of
the sample embeddings (mean distance between a sample's 100 nt and shorter-read embeddings, over the mean distance
between samples at 100 nt).

Run: ``python -m benchmarks.base_read_lengths --out /tmp/base-read-lengths [--samples 600 100] [--epochs 3]``;
writes ``benchmarks/results/base_read_lengths.md``.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT = os.path.join(HERE, "results", "base_read_lengths.md")
LENGTHS = (100, 90, 80)


def pretrain(corpus, out, fraction, epochs):
    """A pilot base on `corpus` reading `fraction` of its training samples truncated."""
    from aam.base.pretrain import pretrain_base
    return pretrain_base(corpus, out, truncate_fraction=fraction, epochs=epochs, num_threads=1, overwrite=True,
                         progress=False, log=lambda s: None).checkpoint


def score(checkpoint, corpus):
    """``{length: (UniFrac r, drift)}`` of a base's embeddings of its validation samples."""
    from scipy.stats import pearsonr

    from aam import api
    from aam.base.pretrain import corpus_unifrac
    from aam.data.pipeline import prepare_table
    ids = list(checkpoint.record.data.validation_samples)
    table = corpus.table.filter(lambda v, i, m: str(i) in set(ids), axis="sample", inplace=False)
    table = table.remove_empty(axis="observation", inplace=False)
    prepared = prepare_table(corpus.table, sequences=corpus.sequences, max_bp=100, rarefy_depth=
                             checkpoint.record.data.rarefaction_depth, seed=checkpoint.record.seed)
    unifrac, rows = corpus_unifrac(corpus, prepared, checkpoint.record.seed)
    index = {s: i for i, s in enumerate(prepared.sample_ids)}
    upper = np.triu_indices(len(ids), 1)
    target = unifrac.block(rows[[index[s] for s in ids]])[upper]
    from scipy.spatial.distance import pdist
    out, full = {}, None
    for n in LENGTHS:
        seqs = {f: s[:n] for f, s in corpus.sequences.items()}
        emb, dm = api.embed(checkpoint, table, sequences=seqs, num_threads=1, log=lambda s: None)
        emb, dm = emb.loc[ids].to_numpy(), dm.filter(ids).data
        full = emb if full is None else full
        # in the space of the sample embedding: how far shorter reads move a sample, against the spread of samples
        drift = float(np.linalg.norm(emb - full, axis=1).mean() / pdist(full).mean())
        out[n] = (float(pearsonr(dm[upper], target)[0]), drift)
    return out


def main(argv=None):
    from aam.base.corpus import choose_slice, load_corpus
    p = argparse.ArgumentParser(prog="python -m benchmarks.base_read_lengths", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the two pilot runs")
    p.add_argument("--samples", type=int, nargs=2, default=(600, 100), metavar=("AMERICAN_GUT", "PGP"))
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args(argv)
    t0 = time.time()
    corpus = load_corpus()
    keep = set(choose_slice(corpus, args.samples, seed=0))
    corpus.table = corpus.table.filter(lambda v, i, m: str(i) in keep, axis="sample", inplace=False)
    rows = []
    for label, fraction in (("truncated (50% at 90/80 nt)", 0.5), ("full reads only", 0.0)):
        ckpt = pretrain(corpus, os.path.join(args.out, "trunc" if fraction else "full"), fraction, args.epochs)
        scores = score(ckpt, corpus)
        rows.append(f"| {label} | " + " | ".join(f"{scores[n][0]:.3f} / {scores[n][1]:.3f}" for n in LENGTHS) + " |")
        print(rows[-1], flush=True)
    lines = ["# Corpus base: training on truncated reads (pilot)", "",
             f"Command: `python -m benchmarks.base_read_lengths {' '.join(argv if argv is not None else sys.argv[1:])}`"
             f" ({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s on 2 shared CPU cores). {sum(args.samples)} "
             f"corpus samples ({args.samples[0]} American Gut, {args.samples[1]} PGP, seeded), {args.epochs} epochs, "
             "every other option as `make base`; scored on each base's own validation samples.", "",
             "| base | " + " | ".join(f"{n} nt: UniFrac r / drift" for n in LENGTHS) + " |",
             "|---|" + "---|" * len(LENGTHS)] + rows + [
             "", "UniFrac r: Pearson correlation of the embedding distances with unweighted UniFrac over the "
             "validation pairs. Drift: mean distance between a sample's embedding (the "
             "sample embedding `embed` returns) at 100 nt and at this length, over the mean distance between the "
             "samples' 100 nt embeddings (0 at 100 nt)."]
    with open(RESULT, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
