"""Run every benchmark, print the table and write benchmarks/results/latest.json and latest.md.

Usage: ``make bench`` or ``python -m benchmarks.run_all [--quick]`` (``--quick``: fewer repetitions, for a smoke
test of the suite itself; its numbers are not meant to be reported).
"""
import argparse
import os
import sys
import time

import torch

from aam.training.device import set_threads
from benchmarks import encoder_speed, finetune, memory, pretrain
from benchmarks.common import MODEL, describe_model, machine_info, write_results
from benchmarks.data import load_benchmark_table

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
TARGETS = {"dedup_speedup": 3.0, "cache_speedup": 10.0}


def run(quick=False):
    """All benchmarks; returns the results dict."""
    set_threads(0)
    t0 = time.time()
    prepared, source = load_benchmark_table(max_bp=MODEL['max_bp'])
    reps = 1 if quick else 3
    res = {"machine": machine_info(), "data": source, "model": describe_model(),
           "command": "make bench  (.venv/bin/python -m benchmarks.run_all)"}
    def log(s):
        print(f"[{time.time() - t0:6.0f}s] {s}", file=sys.stderr, flush=True)

    log(source)
    res["pretrain"] = []
    for tl, r in ((256, reps), (1024, max(1, reps - 1))):
        log(f"pretraining step, token limit {tl}")
        res["pretrain"].append(pretrain.step_throughput(prepared, tl, 16, r))
    log("FLOP/s")
    res["flops"] = pretrain.achieved_flops(prepared, reps=reps)
    log("frozen-base epochs")
    res["frozen"] = finetune.frozen_epochs(prepared, n_samples=48 if quick else 160, reps=reps)
    # the cache removes the nucleotide encoder, so its gain grows with the encoder's share of the work: measure it
    # also at the engine's default architecture and at the original AAM one
    res["frozen_architectures"] = []
    saved = dict(MODEL)
    for dim, layers in ((64, 2), (128, 4)):
        log(f"frozen-base epochs, D={dim}, {layers} layers")
        MODEL.update(embedding_dim=dim, attention_layers=layers, attention_heads=4)
        r_ = finetune.frozen_epochs(prepared, n_samples=48, reps=1 if quick else 2)
        r_.update(embedding_dim=dim, attention_layers=layers)
        res["frozen_architectures"].append(r_)
    MODEL.clear()
    MODEL.update(saved)
    log("prediction")
    res["predict"] = finetune.prediction_throughput(prepared, reps=1 if quick else 2)
    log("bf16 vs fp32")
    res["precision"] = pretrain.precision_comparison(prepared, steps=2 if quick else 6)
    log("memory (subprocesses)")
    res["memory"] = memory.memory_table(token_limits=(256, 512) if quick else memory.TOKEN_LIMITS)
    if encoder_speed.available():
        log("reference encoder vs from scratch on ecam")
        res["encoder"] = encoder_speed.run(quick, log=log)
    res["seconds"] = time.time() - t0
    log("done")
    return res


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def _memory_rows(rows):
    configs = list(dict.fromkeys(r["config"] for r in rows))
    tls = sorted({r["token_limit"] for r in rows})
    by = {(r["config"], r["token_limit"]): r for r in rows}
    out = []
    for c in configs:
        cells = [f"{by[(c, tl)]['step_mb']:.0f} ({by[(c, tl)]['growth']:.1f}x)" for tl in tls]
        out.append([c] + cells)
    return tls, out


def to_markdown(res):
    """The report as Markdown (machine header, then one table per benchmark)."""
    m = res["machine"]
    lines = ["# AAM benchmark results", "",
             f"- Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads)"
             + (f", GPU {m['gpu']}" if m["gpu"] else ", no GPU"),
             f"- PyTorch {m['torch']}, Python {m['python']}; run {m['date']}, {res['seconds'] / 60:.1f} min",
             f"- Data: {res['data']}", f"- Model: {res['model']}", f"- Command: `{res['command']}`", "",
             "Every comparison is timed in one process, variants alternating on the same inputs; medians "
             "reported.", "", "## 1. Pretraining step (forward + backward + AdamW; UniFrac-style distance loss + "
             "masked-nucleotide loss, mask 0.15)", ""]
    lines += ["Reference: every ASV slot encoded on its own, padded to max_bp + 1 positions (the straightforward "
              "design). dedup: each distinct ASV of the batch encoded once. optimized: dedup plus trimming padding "
              "columns no ASV of the batch uses (the engine's default path).", ""]
    lines += _table(["token limit", "batch", "slots/batch", "dedup factor", "positions (padded -> trimmed)",
                     "reference samples/s", "dedup samples/s", "optimized samples/s", "dedup only", "optimized",
                     "reps"],
                    [[p["token_limit"], p["batch_size"], f"{p['slots_per_batch']:.0f}", f"{p['dedup_factor']:.2f}",
                      f"{p['positions_padded']} -> {p['positions_trimmed']}",
                      f"{p['per_slot_samples_per_s']:.2f}", f"{p['dedup_samples_per_s']:.2f}",
                      f"{p['optimized_samples_per_s']:.2f}", f"{p['dedup_speedup']:.2f}x",
                      f"{p['speedup']:.2f}x", p["reps"]] for p in res["pretrain"]])
    f = res["frozen"]
    lines += ["", f"## 2. Frozen-base fine-tuning ({f['n_samples']} samples, batch {f['batch_size']})", ""]
    lines += _table(["without cache (s/epoch)", "cache, first epoch (s)", "cache, later epochs (s/epoch)",
                     "speedup (later)", "speedup (first)"],
                    [[f"{f['uncached_epoch_s']:.2f}", f"{f['cold_cache_epoch_s']:.2f}", f"{f['cached_epoch_s']:.3f}",
                      f"{f['speedup']:.1f}x", f"{f['cold_speedup']:.1f}x"]])
    lines += ["", "The same comparison at larger architectures (48 samples, batch 16, heads 4):", ""]
    lines += _table(["architecture", "without cache (s/epoch)", "cache, later epochs (s/epoch)", "speedup"],
                    [[f"D={a['embedding_dim']}, {a['attention_layers']} layers", f"{a['uncached_epoch_s']:.2f}",
                      f"{a['cached_epoch_s']:.2f}", f"{a['speedup']:.1f}x"] for a in res["frozen_architectures"]])
    p = res["predict"]
    lines += ["", f"## 3. Prediction ({p['n_samples']} samples, batch {p['batch_size']}, one pass)", ""]
    lines += _table(["without cache (samples/s)", "with cache (samples/s)", "speedup"],
                    [[f"{p['uncached_samples_per_s']:.1f}", f"{p['cached_samples_per_s']:.1f}",
                      f"{p['speedup']:.2f}x"]])
    tls, mem_rows = _memory_rows(res["memory"])
    lines += ["", "## 4. Peak memory of one training step (MB above the pre-step peak RSS; growth vs token limit "
              f"{tls[0]}); one sample with every slot a distinct ASV", ""]
    lines += _table(["config"] + [f"TL {tl} (linear: {tl / tls[0]:.0f}x)" for tl in tls], mem_rows)
    fl = res["flops"]
    lines += ["", "## 5. Achieved FLOP/s (dedup pretraining step, token limit "
              f"{fl['token_limit']}, batch {fl['batch_size']})", ""]
    lines += _table(["FLOP per step", "step (s)", "achieved GFLOP/s", "fp32 matmul peak GFLOP/s", "fraction"],
                    [[f"{fl['flops_per_step'] / 1e9:.1f} G", f"{fl['step_s']:.2f}",
                      f"{fl['achieved_flop_s'] / 1e9:.2f}", f"{fl['matmul_peak_flop_s'] / 1e9:.1f}",
                      f"{100 * fl['fraction_of_peak']:.1f}%"]])
    pr = res["precision"]
    lines += ["", f"## 6. bf16 autocast vs fp32 ({pr['steps']} steps, token limit {pr['token_limit']}, "
              f"batch {pr['batch_size']}, dropout 0)", ""]
    lines += _table(["fp32 step (s)", "bf16 step (s)", "bf16 speedup", "held-out loss fp32", "held-out loss bf16",
                     "relative difference"],
                    [[f"{pr['fp32_s']:.2f}", f"{pr['bf16_s']:.2f}", f"{pr['bf16_speedup']:.2f}x",
                      f"{pr['heldout_loss_fp32']:.4f}", f"{pr['heldout_loss_bf16']:.4f}",
                      f"{100 * pr['heldout_loss_rel_diff']:.2f}%"]])
    if "encoder" in res:
        lines += ["", "## 7. The shipped reference encoder (frozen) vs a nucleotide level trained from scratch "
                  "(pretraining with the engine's defaults; `python -m benchmarks.encoder_speed`)", ""]
        lines += encoder_speed.to_markdown(res["encoder"]).rstrip("\n").split("\n")
    lines += ["", "## Targets", ""]
    for p_ in res["pretrain"]:
        ok = p_["speedup"] >= TARGETS["dedup_speedup"]
        lines.append(f"- optimized pretraining step >= 3x at token limit {p_['token_limit']}: {p_['speedup']:.2f}x "
                     f"({'met' if ok else 'NOT met'}; dedup factor of the data {p_['dedup_factor']:.2f})")
    for a in [f] + res["frozen_architectures"]:
        arch = (f"D={a['embedding_dim']}, {a['attention_layers']} layers" if "embedding_dim" in a
                else "benchmark model")
        lines.append(f"- frozen-base cache >= 10x per epoch ({arch}): {a['speedup']:.1f}x "
                     f"({'met' if a['speedup'] >= TARGETS['cache_speedup'] else 'NOT met'})")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (smoke test)")
    ap.add_argument("--out", default=RESULTS, help="directory for latest.json / latest.md")
    args = ap.parse_args(argv)
    res = run(args.quick)
    write_results(args.out, "latest", res, to_markdown(res))
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
