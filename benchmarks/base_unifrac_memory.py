"""Peak memory of the pretraining distances: the full N x N UniFrac matrix against UniFrac computed per batch.

Side by side, each in a fresh process (peak resident memory, ``ru_maxrss``, is a high-water mark):

1. ``full``: unweighted UniFrac of every pair with `unifrac` (Striped UniFrac), what ``aam pretrain`` computes
   before training, then the float32 copy the trainer reads blocks from;
2. ``batch``: `aam.base.unifrac.BatchUniFrac` (presence table + tree paths), then 50 batches of 64 samples.

At the real corpus (American Gut + PGP rarefied to 5,000 reads: 2,716 of its 2,725 samples) and at a simulated
corpus of 30,000 samples (the size of today's American Gut): each simulated sample is a real one thinned to half
its reads (binomial, seeded), so presence patterns differ as between real samples. The full matrix is not run at 30,000
samples unless ``--full-at-scale`` is given (450 million pairs; 7.2 GB for the float64 matrix `unifrac`
returns): its size is then stated as computed.

Run: ``python -m benchmarks.base_unifrac_memory [--samples 30000] [--full-at-scale]``; writes
``benchmarks/results/base_unifrac_memory.md``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULT = os.path.join(HERE, "results", "base_unifrac_memory.md")
DEPTH = 5000
BATCH = 64
N_BATCHES = 50


def _status_mb(key):
    """VmRSS / VmHWM of this process in MB (Linux /proc), or the lifetime peak where /proc is unavailable."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak():
    """Start the peak (VmHWM) afresh, so it measures the distance step, not the corpus loading before it (Linux
    >= 4.0: writing 5 to /proc/self/clear_refs resets the high-water mark)."""
    import gc
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def corpus_table(n_samples, seed=0):
    """The rarefied corpus (biom.Table) for `n_samples` 0, else a simulated corpus of `n_samples` thinned copies of
    its samples."""
    import biom
    import numpy as np
    import scipy.sparse as sp
    from aam.base.corpus import load_corpus
    from aam.data.table import drop_empty, rarefy
    corpus = load_corpus()
    table, _ = rarefy(drop_empty(corpus.table), DEPTH, seed)
    if not n_samples:
        return table, corpus.tree
    rng = np.random.default_rng(seed)
    counts = table.matrix_data.T.tocsr()  # [N, F]
    source = rng.integers(0, counts.shape[0], size=n_samples)
    sim = counts[source].tocsr()
    sim.data = rng.binomial(sim.data.astype(np.int64), 0.5).astype(np.float64)
    sim.eliminate_zeros()
    keep = np.diff(sim.indptr) > 0
    sim = sim[keep]
    ids = [f"sim{i}" for i in range(sim.shape[0])]
    out = biom.Table(sp.csc_matrix(sim.T), list(table.ids("observation")), ids)
    return drop_empty(out), corpus.tree


def child(mode, n_samples):
    """One measurement in this process; prints a JSON line."""
    import numpy as np
    table, tree = corpus_table(n_samples)
    fresh = _reset_peak()
    before = _status_mb("VmRSS")
    t0 = time.time()
    if mode == "full":
        from aam.data.distances import compute_unweighted_unifrac
        dm = compute_unweighted_unifrac(table, tree, threads=1)
        data = np.ascontiguousarray(dm.data, dtype=np.float32)
        held = data.nbytes
    else:
        from aam.base.unifrac import BatchUniFrac
        batch = BatchUniFrac(table.matrix_data.T.tocsr(), [str(f) for f in table.ids("observation")], tree)
        held = batch.nbytes
        rng = np.random.default_rng(0)
        t1 = time.time()
        for _ in range(N_BATCHES):
            batch.block(rng.choice(batch.n_samples, size=BATCH, replace=False))
        per_batch = (time.time() - t1) / N_BATCHES
    out = {"mode": mode, "samples": table.shape[1], "features": table.shape[0],
           "peak_mb": round(_status_mb("VmHWM"), 1), "peak_of_step": fresh,
           "before_mb": round(before, 1), "held_mb": round(held / 1e6, 1), "seconds": round(time.time() - t0, 1)}
    if mode == "batch":
        out["ms_per_batch"] = round(1000 * per_batch, 1)
    print(json.dumps(out), flush=True)


def _run_child(mode, n_samples):
    cmd = [sys.executable, "-m", "benchmarks.base_unifrac_memory", "--child", mode, str(n_samples)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                          cwd=os.path.dirname(HERE), env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(r):
    extra = f", {r['ms_per_batch']} ms per batch of {BATCH}" if "ms_per_batch" in r else ""
    return (f"| {r['mode']} | {r['samples']:,} | {r['features']:,} | {r['held_mb']:,} | {r['before_mb']:,} | "
            f"{r['peak_mb']:,} | {r['peak_mb'] - r['before_mb']:,.1f} | {r['seconds']} s{extra} |")


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.base_unifrac_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=30000, help="size of the simulated corpus")
    p.add_argument("--full-at-scale", action="store_true", help="also compute the full matrix at --samples")
    p.add_argument("--child", nargs=2, metavar=("MODE", "SAMPLES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    runs = [("full", 0), ("batch", 0), ("batch", args.samples)]
    if args.full_at_scale:
        runs.append(("full", args.samples))
    rows = []
    for mode, n in runs:
        rows.append(_run_child(mode, n))
        print(_row(rows[-1]), flush=True)
    n = rows[-1]["samples"] if not args.full_at_scale else rows[-2]["samples"]
    lines = ["# Pretraining distances: full UniFrac matrix vs per batch (peak memory)", "",
             f"Command: `python -m benchmarks.base_unifrac_memory {' '.join(argv or sys.argv[1:])}`".rstrip() +
             f" ({time.strftime('%Y-%m-%d')}, 2 shared CPU cores, one thread).", "",
             "| distances | samples | features | held (MB) | RSS before (MB) | peak RSS (MB) | peak - before (MB) "
             "| time |",
             "|---|---|---|---|---|---|---|---|"] + [_row(r) for r in rows]
    if not args.full_at_scale:
        lines += ["", f"Not run: the full matrix at {n:,} samples would hold {n * n * 8 / 1e9:.1f} GB as the float64 "
                  f"matrix `unifrac` returns plus {n * n * 4 / 1e9:.1f} GB as the float32 copy the trainer reads "
                  "(computed, N x N x bytes)."]
    lines += ["", "held: the distance structure's own bytes (the matrix, or the presence table + tree paths); "
              "RSS before: the process after loading the (simulated) corpus, whose table is in every row; peak RSS: "
              "the high-water mark of the distance step alone (reset before it through /proc/self/clear_refs)."]
    os.makedirs(os.path.dirname(RESULT), exist_ok=True)
    with open(RESULT, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
