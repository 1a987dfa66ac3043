"""The shipped reference encoder against a nucleotide level trained from scratch, on ecam (infant stool, 16S V4).

Side by side in one process, on the same table, the same UniFrac targets and the engine's default settings:

1. pretraining throughput (training samples per second of an epoch) with the nucleotide level trained from random
   weights (``asv_encoder='none'``, the design of AAM 0.1) and with the shipped encoder kept frozen (the default:
   each distinct ASV is encoded once, only the sample level trains);
2. the wall time of what a user runs with the defaults: ``pretrain`` on the table, then ``fit-regressor`` of the
   month of life from the pretrained base, data preparation (rarefaction, UniFrac on the 207,000-tip SEPP tree)
   included.

Run: ``python -m benchmarks.encoder_speed [--quick]`` (also part of ``make bench`` when ../shared has ecam).
"""
import argparse
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ECAM = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data", "ecam"))


def available():
    return os.path.isfile(os.path.join(ECAM, "table.qza"))


def _infants():
    """ecam's infant samples: table, sequences, tree path, metadata (months of life)."""
    from aam.data.metadata import load_metadata
    from aam.data.table import load_table
    table = load_table(os.path.join(ECAM, "table.qza"))
    md = load_metadata(os.path.join(ECAM, "metadata.tsv"))
    ids = [s for s in table.ids() if s in md.index and md.loc[s, "mom_child"] == "C"]
    table = table.filter(ids, axis="sample", inplace=False).remove_empty(axis="observation", inplace=False)
    return table, os.path.join(ECAM, "rep-seqs.qza"), os.path.join(ECAM, "insertion-tree.qza"), md.loc[ids]


def _epoch_rate(history, n_train, skip_first):
    rows = history[1:] if skip_first and len(history) > 1 else history
    seconds = sum(r["seconds"] for r in rows) / len(rows)
    return seconds, n_train / seconds


def run(quick=False, threads=0, log=print):
    """Both measurements; returns a dict (see `to_markdown`)."""
    from aam import api
    from aam import options as O
    warnings.simplefilter("ignore")
    table, sequences, tree, md = _infants()
    common = dict(tree=tree, sequences=sequences, progress=False, log=lambda line: None, num_threads=threads,
                  seed=0)
    res = {"data": f"ecam infants: {table.shape[1]} samples x {table.shape[0]} features",
           "defaults": {k: getattr(O.resolve("pretrain"), k) for k in ("epochs", "batch_size", "lr", "token_limit")}}
    rows = []
    for name, options, epochs in (("from scratch (asv_encoder none)", {"asv_encoder": "none"}, 1),
                                  ("shipped encoder, frozen (default)", {}, 2 if quick else 3)):
        log(f"pretraining epochs: {name}")
        result = api.pretrain(table, epochs=epochs, validation_fraction=0.2, **options, **common)
        n_train = len(result.checkpoint.record.data.train_samples)
        # the frozen encoder's first epoch also fills the ASV cache: later epochs are the steady state
        seconds, rate = _epoch_rate(result.history, n_train, skip_first=not options)
        rows.append({"variant": name, "epoch_seconds": seconds, "samples_per_s": rate, "train_samples": n_train,
                     "first_epoch_seconds": result.history[0]["seconds"], "epochs_timed": len(result.history)})
        result.run_dir.cleanup()
    res["pretraining"] = rows
    res["speedup"] = rows[1]["samples_per_s"] / rows[0]["samples_per_s"]
    if not quick:
        log("end to end with the defaults: pretrain, then fit-regressor of month")
        t0 = time.perf_counter()
        pre = api.pretrain(table, **common)
        t1 = time.perf_counter()
        reg = api.train(table, md, "month", pretrained=pre.checkpoint, **common)
        t2 = time.perf_counter()
        res["end_to_end"] = {"pretrain_seconds": t1 - t0, "fit_seconds": t2 - t1, "total_seconds": t2 - t0,
                             "pretrain_epochs": len(pre.history), "fit_epochs": len(reg.history),
                             "val_unifrac_r": max(r.get("val/unifrac_r", float("nan")) for r in pre.history)}
        res["from_base"] = _fit_from_base(table, md, common, log)
    return res


def _fit_from_base(table, md, common, log):
    """fit-regressor of month from the shipped base with every other default (no pretraining on ecam), or None
    when no base is installed."""
    from aam import api
    from aam.base.shipped import available_bases
    if not available_bases():
        return None
    name = available_bases()[0]
    log(f"fit-regressor of month from the shipped base {name}")
    options = {k: v for k, v in common.items() if k != "tree"}
    t0 = time.perf_counter()
    reg = api.train(table, md, "month", base=name, **options)
    return {"base": name, "fit_seconds": time.perf_counter() - t0, "fit_epochs": len(reg.history)}


def to_markdown(res):
    lines = [f"Data: {res['data']}; defaults {res['defaults']}.", "",
             "| nucleotide level | s / epoch | training samples / s | first epoch (s) |", "|---|---|---|---|"]
    for r in res["pretraining"]:
        lines.append(f"| {r['variant']} | {r['epoch_seconds']:.1f} | {r['samples_per_s']:.1f} | "
                     f"{r['first_epoch_seconds']:.1f} |")
    lines += ["", f"Pretraining throughput of the shipped frozen encoder: {res['speedup']:.1f}x the from-scratch "
              f"design (target >= 10x: {'met' if res['speedup'] >= 10 else 'NOT met'})."]
    e = res.get("end_to_end")
    if e:
        lines += [f"End to end with the defaults: pretrain {e['pretrain_seconds'] / 60:.1f} min "
                  f"({e['pretrain_epochs']} epochs, best validation UniFrac r {e['val_unifrac_r']:.2f}) + "
                  f"fit-regressor {e['fit_seconds'] / 60:.1f} min ({e['fit_epochs']} epochs) = "
                  f"{e['total_seconds'] / 60:.1f} min (target <= 10 min: "
                  f"{'met' if e['total_seconds'] <= 600 else 'NOT met'})."]
    b = res.get("from_base")
    if b:
        lines += [f"From the shipped base {b['base']} (no pretraining on ecam), fit-regressor with every other "
                  f"default: {b['fit_seconds']:.0f} s (target <= 60 s: {'met' if b['fit_seconds'] <= 60 else 'NOT met'}"
                  ")."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer epochs, no end-to-end run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if not available():
        print(f"ecam not found at {ECAM}; nothing to measure.")
        return 0
    res = run(args.quick, log=lambda s: print(s, file=sys.stderr, flush=True))
    from benchmarks.common import write_results
    write_results(args.out, "encoder_speed", res, to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
