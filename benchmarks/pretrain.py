"""Benchmarks 1, 5 and 6: pretraining step throughput (dedup vs per-slot), achieved FLOP/s, bf16 vs fp32."""
import copy
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from aam.models import SequenceEncoder
from aam.training.device import autocast_context
from aam.training.losses import MultiTaskLoss
from aam.training.trainer import forward_batch
from benchmarks.common import encoder_config, interleaved
from benchmarks.data import dedup_factor, fixed_batches


def build(token_limit, seed=0, **overrides):
    """Model, loss (unifrac + masked nucleotides) and AdamW optimizer of the benchmark."""
    torch.manual_seed(seed)
    model = SequenceEncoder(encoder_config(token_limit, **overrides)).train()
    loss_fn = MultiTaskLoss(penalty=1.0, nuc_penalty=1.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return model, loss_fn, opt


def train_step(model, loss_fn, opt, batch, dedup=True, precision="none"):
    """One forward + backward + optimizer step; returns the total loss as a float."""
    opt.zero_grad(set_to_none=True)
    with autocast_context(torch.device("cpu"), precision):
        out = forward_batch(model, batch, dedup)
    loss = loss_fn(out, batch)["total_loss"]
    loss.backward()
    opt.step()
    return float(loss.detach())


def step_throughput(prepared, token_limit, batch_size, reps):
    """Samples/s of a pretraining step: the optimized path against the straightforward one, on the same batches.

    * ``per_slot``: the reference: every ASV slot encoded separately, padded to ``max_bp + 1`` positions;
    * ``dedup``: each distinct ASV of the batch encoded once (still padded to ``max_bp + 1``);
    * ``optimized``: dedup plus trimming the padding columns no ASV of the batch uses (the engine's default).

    The three run alternately on identical samples, rarefaction draws and masks.
    """
    padded = fixed_batches(prepared, token_limit, batch_size, reps + 1, seed=token_limit, trim_padding=False)
    trimmed = fixed_batches(prepared, token_limit, batch_size, reps + 1, seed=token_limit, trim_padding=True)
    model, loss_fn, opt = build(token_limit)
    variants = {"optimized": lambda r: train_step(model, loss_fn, opt, trimmed[r], True),
                "dedup": lambda r: train_step(model, loss_fn, opt, padded[r], True),
                "per_slot": lambda r: train_step(model, loss_fn, opt, padded[r], False)}
    t = interleaved(variants, reps)
    factors = [dedup_factor(b) for b in padded]
    slots = statistics.median(float((b["asv_ids"] >= 0).sum()) for b in padded)
    return {"token_limit": token_limit, "batch_size": batch_size, "reps": reps,
            "slots_per_batch": slots, "dedup_factor": statistics.median(factors),
            "positions_padded": padded[0]["tokens"].shape[2], "positions_trimmed": trimmed[0]["tokens"].shape[2],
            "optimized_s": t["optimized"]["median"], "dedup_s": t["dedup"]["median"],
            "per_slot_s": t["per_slot"]["median"],
            "optimized_samples_per_s": batch_size / t["optimized"]["median"],
            "dedup_samples_per_s": batch_size / t["dedup"]["median"],
            "per_slot_samples_per_s": batch_size / t["per_slot"]["median"],
            "dedup_speedup": t["per_slot"]["median"] / t["dedup"]["median"],
            "speedup": t["per_slot"]["median"] / t["optimized"]["median"]}


def count_flops(model, loss_fn, opt, batch):
    """Floating-point operations of one training step (matmuls, attention, convolutions) by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        train_step(model, loss_fn, opt, batch)
    return counter.get_total_flops()


def matmul_peak(n=1024, reps=10):
    """Dense fp32 matmul rate of this machine (FLOP/s, median of `reps` n x n products)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    t = interleaved({"mm": lambda r: torch.mm(a, b)}, reps, warmup=2)["mm"]["median"]
    return 2.0 * n ** 3 / t


def achieved_flops(prepared, token_limit=256, batch_size=16, reps=5):
    """FLOP/s of the dedup pretraining step and its fraction of the measured matmul peak."""
    batches = fixed_batches(prepared, token_limit, batch_size, 1, seed=99)
    model, loss_fn, opt = build(token_limit)
    flops = count_flops(model, loss_fn, opt, batches[0])
    peak = matmul_peak()
    step = interleaved({"step": lambda r: train_step(model, loss_fn, opt, batches[0])}, reps)["step"]["median"]
    peak_after = matmul_peak()  # measured before and after the step timings: the machine may be shared
    peak = max(peak, peak_after)
    return {"token_limit": token_limit, "batch_size": batch_size, "flops_per_step": flops, "step_s": step,
            "achieved_flop_s": flops / step, "matmul_peak_flop_s": peak, "fraction_of_peak": flops / step / peak}


def precision_comparison(prepared, token_limit=256, batch_size=16, steps=8):
    """bf16 autocast vs fp32: median step time and the loss of both after `steps` identical steps.

    Dropout is off so that the two runs differ only in precision; the final loss is evaluated in fp32 on a
    held-out batch for both models.
    """
    batches = fixed_batches(prepared, token_limit, batch_size, steps + 1, seed=7)
    fp32 = build(token_limit, dropout=0.0)
    bf16 = (copy.deepcopy(fp32[0]), fp32[1], None)
    bf16 = (bf16[0], bf16[1], torch.optim.AdamW(bf16[0].parameters(), lr=1e-4))
    losses = {"fp32": [], "bf16": []}

    def run(name, parts, precision):
        return lambda r: losses[name].append(train_step(*parts, batches[r], precision=precision))
    t = interleaved({"fp32": run("fp32", fp32, "none"), "bf16": run("bf16", bf16, "bf16")}, steps, warmup=0)
    held_out = batches[-1]
    final = {}
    for name, (model, loss_fn, _) in (("fp32", fp32), ("bf16", bf16)):
        model.eval()
        with torch.no_grad():
            final[name] = float(loss_fn(forward_batch(model, held_out), held_out)["total_loss"])
    return {"steps": steps, "token_limit": token_limit, "batch_size": batch_size,
            "fp32_s": t["fp32"]["median"], "bf16_s": t["bf16"]["median"],
            "bf16_speedup": t["fp32"]["median"] / t["bf16"]["median"],
            "train_loss_fp32": losses["fp32"], "train_loss_bf16": losses["bf16"],
            "heldout_loss_fp32": final["fp32"], "heldout_loss_bf16": final["bf16"],
            "heldout_loss_rel_diff": abs(final["bf16"] - final["fp32"]) / abs(final["fp32"])}
