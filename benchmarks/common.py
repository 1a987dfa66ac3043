"""Shared pieces of the benchmarks: the model configuration, timing, machine description."""
import datetime
import os
import platform
import statistics
import time

import torch

from aam.models import EncoderConfig

# a small but complete model: both transformer levels, k-mer profile, masked-nucleotide head
# (sized so that the whole suite runs in ~8 minutes on 2 CPU cores; one D=64, 2-layer dedup step on a batch of 16
# ibd-2538 samples takes ~20 s there)
MODEL = dict(max_bp=150, embedding_dim=32, attention_heads=2, attention_layers=1, ff_mult=4, kmer_size=6,
             dropout=0.1, asv_chunk_size=256, encoder_type="unifrac", predict_nucleotides=True)


def encoder_config(token_limit, **overrides):
    """`EncoderConfig` of the benchmark model with the given token limit."""
    kw = dict(MODEL, token_limit=token_limit)
    kw.update(overrides)
    return EncoderConfig(**kw)


def describe_model():
    """One line naming the benchmark model's size."""
    m = MODEL
    return (f"D={m['embedding_dim']}, {m['attention_layers']} layers x {m['attention_heads']} heads at each "
            f"level, ff x{m['ff_mult']}, max_bp {m['max_bp']}, k-mer {m['kmer_size']}, "
            f"asv_chunk_size {m['asv_chunk_size']}")


def timed(fn, *args):
    """Seconds taken by ``fn(*args)``."""
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def interleaved(variants, reps, warmup=1):
    """Time several variants alternately in one process; returns the median seconds of each.

    Parameters
    ----------
    variants : dict of str -> callable
        Each callable takes the repetition index (so variants can share the same input per repetition).
    reps : int
    warmup : int
        Untimed calls of each variant first.

    Returns
    -------
    dict of str -> dict
        ``{'median': s, 'times': [s, ...]}`` per variant.
    """
    names = list(variants)
    for w in range(warmup):
        for name in names:
            variants[name](w)
    times = {name: [] for name in names}
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]  # alternate the order: no variant always runs first
        for name in order:
            times[name].append(timed(variants[name], r))
    return {name: {"median": statistics.median(t), "times": t} for name, t in times.items()}


def cpu_model():
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info():
    """CPU, cores, threads, torch version, GPU and date of the run."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": cpu_model(), "cores": cores, "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M")}


def write_results(out_dir, stem, res, markdown):
    """`<stem>.json` (every figure) and `<stem>.md` (the tables) in `out_dir`; prints the tables."""
    import json
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{stem}.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    with open(os.path.join(out_dir, f"{stem}.md"), "w") as fh:
        fh.write(markdown)
    print(markdown)
