"""Training checkpoints: what a run saves after each epoch, and how a later run continues from it.

A training checkpoint is an `aam.checkpoint.Checkpoint` whose training state holds the optimizer, the scheduler,
the random state, the last finished epoch and the `TrainingProgress` (history, best score, the best weights so
far), so a resumed run takes exactly the steps an uninterrupted run would have taken and still ends with the best
epoch's weights. Under FSDP with sharded checkpoints, the model and optimizer shards live in a
torch.distributed.checkpoint directory beside the file instead.
"""
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from aam.checkpoint import Checkpoint
from aam.errors import AAMInputError
from aam.record import TrainingSummary
from aam.training import distributed as D
from aam.training.rng import rng_state, set_rng_state


@dataclass
class TrainingProgress:
    """Where a run stands after its last finished epoch.

    Attributes
    ----------
    epoch : int
        Last finished epoch (0 before the first).
    history : list of dict
        One row per epoch.
    best_score, best_tiebreak : float or None
        Validation score of the best epoch (and its validation loss, which breaks ties of equal accuracy).
    best_epoch : int or None
    wait : int
        Epochs since the best one (for early stopping).
    best_state : dict of str -> torch.Tensor, or None
        The best epoch's full weights, kept in memory (on CPU): the run's final model comes from here, never
        from a file another process could have written.
    best_interval : dict or None
        The best epoch's validation score with its interval (`aam.evaluation.stats.score_interval`).
    """

    epoch: int = 0
    history: list = field(default_factory=list)
    best_score: Optional[float] = None
    best_tiebreak: Optional[float] = None
    best_epoch: Optional[int] = None
    wait: int = 0
    best_state: Optional[dict] = None
    best_interval: Optional[dict] = None

    def summary(self, selection_metric):
        return TrainingSummary(history=list(self.history), best_epoch=self.best_epoch, best_score=self.best_score,
                               selection_metric=selection_metric, best_interval=self.best_interval)


def _nan_if_none(x):
    return float("nan") if x is None else float(x)


def _none_if_nan(x):
    return None if x is None or not np.isfinite(x) else float(x)


def save_training_checkpoint(path, record, model, optimizer, scheduler, progress, ctx, selection_metric):
    """Write a training checkpoint (collective: every rank calls it; rank 0 writes; all wait for the file).

    Parameters
    ----------
    path : str
        Usually ``RunDirectory.last_checkpoint``.
    record : aam.record.ModelRecord
        The run's record; the progress's training summary is filled in.
    model : torch.nn.Module
        Possibly wrapped (DDP / FSDP2 / DataParallel); the saved weights are always the full, unwrapped state.
    optimizer, scheduler
    progress : TrainingProgress
    ctx : aam.training.context.RunContext
    selection_metric : str
    """
    sharded_dir = None
    if ctx.sharded_checkpoint:
        # model and optimizer shards go to <stem>.dcp/ (written by every rank); the .pt file keeps the rest
        sharded_dir = os.path.splitext(os.path.basename(path))[0] + ".dcp"
        D.save_sharded(os.path.join(os.path.dirname(path), sharded_dir), model, optimizer, ctx)
    trainer = {"best_score": _nan_if_none(progress.best_score), "best_tiebreak": _nan_if_none(progress.best_tiebreak),
               "best_epoch": progress.best_epoch or 0, "wait": progress.wait,
               "history": json.dumps(progress.history), "best_interval": json.dumps(progress.best_interval)}
    training = {"scheduler": scheduler.state_dict(), "rng": rng_state(), "epoch": progress.epoch,
                "trainer": trainer}
    if sharded_dir:
        trainer["sharded_dir"] = sharded_dir
        model_state = {}
    else:
        training["optimizer"] = D.full_optimizer_state(model, optimizer, ctx)
        model_state = D.full_model_state(model, ctx)
    if progress.best_state is not None:
        training["best_model"] = progress.best_state
    if ctx.is_main:
        ckpt = Checkpoint(replace(record, training=progress.summary(selection_metric)), model_state, training)
        ckpt.save(path, include_training_state=True)
    # nobody reads the file (or leaves the run) before rank 0 has finished writing it
    D.barrier(ctx)


# architecture settings that change how the model runs, not what it is: a resumed run may change them
_RUNTIME_ONLY = ("asv_chunk_size", "gradient_checkpointing", "attn_implementation", "dropout")


def _structure(architecture):
    """An architecture dict without its runtime-only settings, the encoder's flattened into it."""
    flat = {k: v for k, v in architecture.items() if k != "encoder" and k not in _RUNTIME_ONLY}
    flat.update({k: v for k, v in (architecture.get("encoder") or {}).items() if k not in _RUNTIME_ONLY})
    return flat


def check_resumable(ckpt, record):
    """Refuse a checkpoint of another kind of run: task, target, architecture or training data differ.

    Parameters
    ----------
    ckpt : aam.checkpoint.Checkpoint
        The checkpoint to resume.
    record : aam.record.ModelRecord
        The record of the run that would continue it.
    """
    old, new = ckpt.record, record
    differences = []
    if old.task != new.task:
        differences.append(f"task {old.task} vs {new.task}")
    old_column = old.target.column if old.target else None
    new_column = new.target.column if new.target else None
    if old_column != new_column:
        differences.append(f"target column {old_column!r} vs {new_column!r}")
    a, b = _structure(old.architecture.to_dict()), _structure(new.architecture.to_dict())
    if a != b:
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        differences.append("architecture (" + ", ".join(f"{k}: {a.get(k)} vs {b.get(k)}" for k in keys) + ")")
    fp_old, fp_new = old.data.fingerprint, new.data.fingerprint
    if fp_old is not None and fp_new is not None and fp_old != fp_new:
        differences.append("training data (the table, its rarefaction depth or the samples used differ)")
    if differences:
        raise AAMInputError("{opt:resume} names a checkpoint of a different run: " + "; ".join(differences) +
                            ". Resume with the same inputs and options, or start a new run in a new output "
                            "directory.")


def restore_training_checkpoint(ckpt, path, model, optimizer, scheduler, ctx, lr, log):
    """Load a training checkpoint into a (possibly wrapped) model, its optimizer and scheduler.

    The learning rate given now wins over the stored one, so resuming with a new lr does what it says.

    Returns
    -------
    TrainingProgress
    """
    state = ckpt.training_state
    trainer = state.get("trainer", {})
    sharded_dir = trainer.get("sharded_dir")
    if sharded_dir:
        if not (ctx.mode == "fsdp" and ctx.active):
            raise AAMInputError("this checkpoint is sharded ({opt:fsdp_sharded_checkpoint}): resume it with "
                                "{opt:fsdp} and the same number of processes")
        D.load_sharded(os.path.join(os.path.dirname(os.path.abspath(path)), sharded_dir), model, optimizer, ctx)
    else:
        if "optimizer" not in state:
            raise AAMInputError(f"{path!r} has no optimizer state (it is a final model); resume from the run's "
                                "checkpoints/last_checkpoint.pt instead")
        D.load_full_state(model, optimizer, ckpt.model_state, state["optimizer"], ctx)
    scheduler.load_state_dict(state["scheduler"])
    stored_lr = ckpt.record.options.get("lr")
    if stored_lr and not math.isclose(stored_lr, lr):
        scale = lr / stored_lr
        for group in optimizer.param_groups:
            group["lr"] *= scale
            if "initial_lr" in group:
                group["initial_lr"] *= scale
        if hasattr(scheduler, "scale_base_lrs"):
            scheduler.scale_base_lrs(scale)
        log(f"resuming with a learning rate of {lr:g} instead of the checkpoint's {stored_lr:g}")
    set_rng_state(state["rng"])
    best_state = state.get("best_model")
    if best_state is None and trainer.get("best_epoch") == int(state["epoch"]) and ckpt.model_state:
        # a checkpoint written at its best epoch: the current weights are the best ones
        best_state = ckpt.model_state
    if best_state is None and trainer.get("best_epoch"):
        # checkpoints of q2-aam 0.1 did not carry the best weights: take them from the run's best_model.pt
        from aam.checkpoint import load_checkpoint
        from aam.rundir import RunDirectory
        best_file = RunDirectory(os.path.dirname(os.path.dirname(os.path.abspath(path)))).best_checkpoint
        if os.path.isfile(best_file):
            best_state = load_checkpoint(best_file).model_state
    progress = TrainingProgress(epoch=int(state["epoch"]), history=json.loads(trainer.get("history", "[]")),
                                best_score=_none_if_nan(trainer.get("best_score")),
                                best_tiebreak=_none_if_nan(trainer.get("best_tiebreak")),
                                best_epoch=trainer.get("best_epoch") or None, wait=int(trainer.get("wait", 0)),
                                best_state=best_state,
                                best_interval=json.loads(trainer.get("best_interval") or "null"))
    log(f"resumed after epoch {progress.epoch}")
    return progress
