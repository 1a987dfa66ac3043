"""Where and how a run computes: device, precision, CPU threads and its place in a multi-process job.

A `RunContext` is built once by the caller (`build_context`, from the resolved options) and passed explicitly to
everything that needs it: the data loaders (which shard of the samples this process sees), `parallelize` (which
wraps the model for DDP / FSDP2 / DataParallel before the trainer sees it), the trainer (who logs and writes) and
the collectives of `aam.training.distributed`. Nothing reads it from a module global. The record itself is
defined in `aam.training.run_context` (below `distributed` and `losses`, which use it) and re-exported here.
"""
from dataclasses import replace

import torch

from aam.errors import warn
from aam.training import distributed as D
from aam.training.device import resolve_device, set_threads
from aam.training.losses import GatheredPairwiseLoss
from aam.training.run_context import RunContext

__all__ = ["RunContext", "build_context", "parallelize", "single_process"]


def build_context(opts):
    """The context of a run of `opts.command` on this machine (joins torchrun's process group when asked).

    Parameters
    ----------
    opts : aam.options.Options

    Returns
    -------
    RunContext
    """
    threads = set_threads(opts.num_threads)
    if opts.command in ("pretrain", "train"):
        ctx = D.init_distributed(D.mode_from_options(opts), opts.device,
                                 sharded_checkpoint=opts.fsdp_sharded_checkpoint)
    else:
        ctx = RunContext(device=resolve_device(opts.device))
    precision = opts.mixed_precision
    if ctx.device.type == "cpu" and precision == "fp16":
        warn("{opt:mixed_precision} fp16 needs a GPU; using bf16 on the CPU.", stacklevel=2)
        precision = "bf16"
    return replace(ctx, precision=precision, threads=threads)


def parallelize(model, loss_fn, ctx, distances=None, sample_ids=None):
    """The model and losses as this run trains them.

    Wraps the model for DDP / FSDP2 / DataParallel (FSDP2 turns parameters into DTensors, so this must come
    before the optimizer is built) and, in a multi-process run with a distance objective, gives the training
    loss a distance component over the global batch of all ranks (`GatheredPairwiseLoss`).

    Parameters
    ----------
    model : torch.nn.Module
    loss_fn : aam.training.losses.MultiTaskLoss
    ctx : RunContext
    distances : np.ndarray, optional
        [N, N] distance matrix of the training samples (the pairwise objective's targets).
    sample_ids : list of str, optional
        Row order of `distances`.

    Returns
    -------
    (torch.nn.Module, MultiTaskLoss, MultiTaskLoss)
        The (possibly wrapped) model on ``ctx.device``, the training loss and the evaluation loss (validation:
        every rank scores the same batches, so nothing is gathered).
    """
    model = D.wrap_model(model, ctx) if ctx.wrapped else model.to(ctx.device)
    train_loss = loss_fn
    if ctx.active and distances is not None and loss_fn.penalty > 0:
        # the distance loss must compare all pairs of the global batch, not only each rank's own pairs
        train_loss = loss_fn.with_pairwise(GatheredPairwiseLoss(distances, sample_ids, ctx))
    return model, train_loss.to(ctx.device), loss_fn.to(ctx.device)


def single_process(device="cpu"):
    """A plain single-process context on `device` (tests, tools)."""
    return RunContext(device=torch.device(device))
