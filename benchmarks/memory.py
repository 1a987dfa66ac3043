"""Benchmark 4: peak memory of one pretraining step against the token limit, with / without checkpointing and
chunking. Each configuration runs in a fresh subprocess (``python -m benchmarks.memory '<json>'``) and reports
its peak resident set size (VmHWM / ``resource.getrusage``; ``torch.cuda.max_memory_allocated`` on a GPU).
"""
import json
import os
import resource
import subprocess
import sys

import torch

CONFIGS = {"plain": dict(gradient_checkpointing=False, asv_chunk_size=0),
           "chunk": dict(gradient_checkpointing=False, asv_chunk_size=256),
           "ckpt": dict(gradient_checkpointing=True, asv_chunk_size=0),
           "ckpt+chunk": dict(gradient_checkpointing=True, asv_chunk_size=256)}
TOKEN_LIMITS = (256, 512, 1024, 2048)


def peak_rss_mb():
    """Peak resident set size of this process in MB.

    VmHWM from /proc/self/status where it exists: ``ru_maxrss`` survives fork + exec on Linux, so in a worker
    started by a big parent it would report the parent's size. Elsewhere ``ru_maxrss`` (kB on Linux, bytes on
    macOS - only ratios are reported).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def full_sample_batch(token_limit, n_samples=1, length=100, seed=0):
    """Samples whose `token_limit` slots all hold distinct random 100 bp ASVs (the worst case for memory)."""
    g = torch.Generator().manual_seed(seed)
    B, S, L = n_samples, token_limit, length + 1
    tokens = torch.randint(1, 5, (B, S, L), generator=g)
    tokens[..., 0] = 5                                            # START
    hide = torch.rand(B, S, L, generator=g) < 0.15
    hide[..., 0] = False
    nuc_targets = torch.where(hide, tokens, torch.full_like(tokens, -100))
    tokens = torch.where(hide, torch.full_like(tokens, 6), tokens)  # MASK
    counts = torch.rand(B, S, 1, generator=g).sort(dim=1, descending=True).values * 100 + 1
    asv_ids = torch.arange(B * S).view(B, S)
    return {"tokens": tokens, "counts": counts, "asv_ids": asv_ids, "nuc_targets": nuc_targets,
            "distances": torch.rand(B, B, generator=g)}


def worker(spec):
    """Build the model and batch, then run one forward + backward; returns the memory figures in MB."""
    from aam.training.losses import MultiTaskLoss
    from aam.training.trainer import forward_batch
    from benchmarks.common import encoder_config
    from aam.models import SequenceEncoder
    torch.set_num_threads(spec.get("threads", 2))
    torch.manual_seed(0)
    cfg = encoder_config(spec["token_limit"], **CONFIGS[spec["config"]])
    model = SequenceEncoder(cfg).train()
    batch = full_sample_batch(spec["token_limit"])
    loss_fn = MultiTaskLoss(penalty=1.0, nuc_penalty=1.0)
    cuda = torch.cuda.is_available()
    if cuda:
        model.cuda()
        batch = {k: v.cuda() for k, v in batch.items()}
        torch.cuda.reset_peak_memory_stats()
    before = peak_rss_mb()
    loss_fn(forward_batch(model, batch), batch)["total_loss"].backward()
    after = peak_rss_mb()
    out = {"rss_before_mb": before, "rss_peak_mb": after, "step_mb": after - before}
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return out


def measure(token_limit, config, threads=2):
    """Run `worker` in a fresh interpreter and return its figures."""
    spec = json.dumps({"token_limit": token_limit, "config": config, "threads": threads})
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-m", "benchmarks.memory", spec], capture_output=True, text=True,
                         cwd=root, env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory_table(token_limits=TOKEN_LIMITS, configs=tuple(CONFIGS), parallel=2):
    """Step memory (MB above the process's pre-step peak) for every token limit and configuration.

    `parallel` single-threaded workers run at once (RSS is per process, so they do not disturb each other).
    """
    from concurrent.futures import ThreadPoolExecutor
    jobs = [(tl, config) for config in configs for tl in token_limits]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        results = list(pool.map(lambda job: measure(job[0], job[1], threads=1), jobs))
    rows = [dict(token_limit=tl, config=config, **res) for (tl, config), res in zip(jobs, results)]
    for config in configs:
        mine = [r for r in rows if r["config"] == config]
        base = mine[0]
        for r in mine:
            # growth relative to the smallest token limit, and what linear growth would give
            r["growth"] = r["step_mb"] / max(base["step_mb"], 1e-9)
            r["linear_growth"] = r["token_limit"] / base["token_limit"]
    return rows


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
