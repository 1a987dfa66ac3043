"""The training loop shared by pretraining (`SequenceEncoder`) and fine-tuning (`SequencePredictor`).

One epoch = one pass over the training loader with gradient accumulation, clipping, mixed precision and the
learning-rate schedule, then a full pass over the validation loader. The validation score that users care about
(MAE for regression, accuracy for classification, total loss for pretraining) decides the best model and early
stopping. The best epoch's weights are kept in memory and become the run's model.

Steps whose model outputs are not finite are skipped (and counted) before any loss is computed; several in a row
stop training with a message naming the likely causes instead of silently corrupting the weights.

What the trainer does not do: wrap the model for multi-process training (`aam.training.context.parallelize` does,
before), write logs, figures and the history (`aam.training.run_logger.RunLogger`), or lay out checkpoint files
(`aam.training.resume`, `aam.rundir`).
"""
import contextlib
import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from aam.checkpoint import Checkpoint
from aam.errors import AAMTrainingError
from aam.evaluation import metrics as M
from aam.training import distributed as D
from aam.training.device import autocast_context, make_grad_scaler
from aam.training.ema import WeightAverage
from aam.training.forward import cached_forward, forward_batch, move_batch
from aam.training.losses import find_nonfinite, nucleotide_accuracy, pairwise_distances
from aam.training.optim import build_optimizer, build_scheduler
from aam.training.resume import (TrainingProgress, restore_training_checkpoint, save_training_checkpoint)

__all__ = ["Trainer", "forward_batch", "move_batch"]


@dataclass
class _EpochOutcome:
    """What one epoch of `Trainer.fit` produced.

    Attributes
    ----------
    row : dict
        The epoch's history row (``epoch``, training and validation metrics; ``seconds`` and ``best`` are added).
    raw : dict or None
        Validation predictions and truths, for the figures of a best epoch.
    improved : bool
        Whether the selection metric improved (decided on rank 0).
    score, tiebreak : float or None
        The selection metric and, for classification, the validation loss that breaks ties.
    best_state : dict of str -> torch.Tensor or None
        A CPU copy of the scored weights when `improved`.
    """

    row: dict
    raw: object
    improved: bool
    score: object
    tiebreak: object
    best_state: object


class Trainer:
    """Fit a model with validation, early stopping and best-model selection.

    Parameters
    ----------
    model : torch.nn.Module
        A `SequenceEncoder` (pretraining) or `SequencePredictor` (fine-tuning), already on ``ctx.device`` and
        wrapped by `aam.training.context.parallelize` where the run is parallel.
    train_loss, eval_loss : aam.training.losses.MultiTaskLoss
        Losses of training steps and of validation (they differ only in multi-process runs, where training
        compares the embeddings of the global batch).
    train_loader, val_loader : torch.utils.data.DataLoader
        `val_loader` may be None (then the best model is chosen on the training loss).
    record : aam.record.ModelRecord
        The model being trained; its task decides the selection metric, and every checkpoint carries it.
    opts : aam.options.Options
    ctx : aam.training.context.RunContext
    logger : aam.training.run_logger.RunLogger
    run_dir : aam.rundir.RunDirectory, optional
        Where training checkpoints go (None: none are written).
    target_transform : aam.training.targets.TargetTransform, optional
        Regression: predictions are inverse-transformed before metrics, so metrics are in the target's units.
    asv_cache : aam.training.cache.ASVEmbeddingCache, optional
        With a frozen base: serve ASV embeddings from this cache instead of re-encoding them every batch.
    sample_groups : dict of str -> str, optional
        The group (subject) of each sample: the interval of the best validation score resamples whole groups.
    """

    max_nonfinite = 5

    def __init__(self, model, train_loss, eval_loss, train_loader, val_loader, record, opts, ctx, logger,
                 run_dir=None, target_transform=None, asv_cache=None, sample_groups=None):
        self.model = model
        self.train_loss, self.eval_loss = train_loss, eval_loss
        self.train_loader, self.val_loader = train_loader, val_loader
        self.record = record
        self.task = record.task
        self.class_labels = record.target.class_labels if record.target else None
        self.opts = opts
        self.ctx = ctx
        self.device = ctx.device
        self.logger = logger
        self.run_dir = run_dir
        self.target_transform = target_transform
        self.asv_cache = asv_cache
        self.sample_groups = sample_groups
        self.nuc_active = train_loss.nuc_penalty > 0 and not opts.freeze_base
        self.progress = TrainingProgress()
        self.nonfinite_steps = 0
        self._consecutive_bad = 0

        steps_per_epoch = max(1, math.ceil(len(train_loader) / opts.gradient_accumulation_steps))
        self.total_steps = steps_per_epoch * opts.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in params)
        self.optimizer = build_optimizer(opts.optimizer, self.model, lr=opts.lr, weight_decay=opts.weight_decay)
        self.scheduler = build_scheduler(
            opts.scheduler, self.optimizer, total_steps=self.total_steps, warmup_steps=opts.warmup_steps,
            t0=opts.scheduler_t0, t_mult=opts.scheduler_t_mult, eta_min=opts.scheduler_eta_min,
            patience=opts.scheduler_patience, factor=opts.scheduler_factor)
        self.scaler = make_grad_scaler(self.device, ctx.precision)
        # scored and kept instead of the raw weights (aam.training.ema); a resumed run restarts the average
        self.ema = (WeightAverage.spanning_epochs(self.model, opts.ema_epochs, steps_per_epoch)
                    if opts.ema_epochs > 0 else None)

    # ---- selection ------------------------------------------------------------------------------------------
    @property
    def selection_metric(self):
        """(name, higher_is_better) of the validation score that picks the best model."""
        if self.val_loader is None:
            return "train/total_loss", False
        if self.task == "pretrain" and self.opts.pretrain_selection == "unifrac_r":
            return "val/unifrac_r", True
        return {"regression": ("val/mae", False), "classification": ("val/accuracy", True)}.get(
            self.task, ("val/total_loss", False))

    def _improved(self, score, tiebreak=None):
        """Whether `score` beats the best so far; equal accuracies are decided by the lower validation loss.

        Accuracy on a small validation set takes few distinct values, so without the tie-break the first epoch
        to reach a value would stay "best" while the model keeps getting more confident and better calibrated.
        """
        best = self.progress
        if score is None or not np.isfinite(score):
            return False
        if best.best_score is None:
            return True
        _, higher = self.selection_metric
        if abs(score - best.best_score) <= 1e-12 and tiebreak is not None:
            return (best.best_tiebreak is not None and np.isfinite(tiebreak)
                    and tiebreak < best.best_tiebreak - 1e-12)
        return score > best.best_score + 1e-12 if higher else score < best.best_score - 1e-12

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _step_loss(self, batch, train):
        with autocast_context(self.device, self.ctx.precision):
            if self.asv_cache is not None:
                outputs = cached_forward(self.model, self.asv_cache, batch)
            else:
                outputs = forward_batch(self.model, batch, self.opts.asv_dedup)
        bad = find_nonfinite(outputs)
        # every rank must skip together: the gathered pairwise loss and the gradient all-reduce are collectives
        if train and D.any_flag(self.ctx, bool(bad)):
            return outputs, None, bad or ["outputs on another rank"]
        if bad:
            return outputs, None, bad
        losses = (self.train_loss if train else self.eval_loss)(outputs, batch)
        finite = bool(torch.isfinite(losses["total_loss"]))
        if train and D.any_flag(self.ctx, not finite):
            return outputs, None, ["total_loss" if not finite else "total_loss on another rank"]
        if not finite:
            return outputs, None, ["total_loss"]
        return outputs, losses, []

    def _nonfinite(self, bad, epoch):
        self.nonfinite_steps += 1
        self._consecutive_bad += 1
        if self._consecutive_bad >= self.max_nonfinite:
            raise AAMTrainingError(
                f"training stopped in epoch {epoch}: {self._consecutive_bad} steps in a row produced "
                f"non-finite values in {', '.join(bad)}. Likely causes: a learning rate too high for this "
                f"model (try {{opt:lr}} {self.opts.lr / 10:g}), fp16 overflow (use {{opt:mixed_precision}} bf16 "
                "or none), or an output activation that overflows ({opt:output_activation} exp). The last good "
                "checkpoint is kept.")

    def train_epoch(self, epoch):
        model, opts = self.model, self.opts
        model.train()
        ds = self.train_loader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        accum = opts.gradient_accumulation_steps
        sums, weight = {}, 0.0
        grad_norms = []
        self._consecutive_bad = 0
        self.optimizer.zero_grad(set_to_none=True)
        n_batches = len(self.train_loader)
        self.logger.start_epoch(n_batches, f"epoch {epoch}/{opts.epochs}")
        pending = 0
        for i, batch in enumerate(self.train_loader):
            batch = move_batch(batch, self.device)
            outputs, losses, bad = self._step_loss(batch, train=True)
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                pending = 0
                self._nonfinite(bad, epoch)
                self.logger.skipped_step()
                continue
            self._consecutive_bad = 0
            loss = losses["total_loss"] / accum
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
            else:
                loss.backward()
            pending += 1
            if pending == accum or i == n_batches - 1:
                grad_norms.append(self._optimizer_step())
                pending = 0
            B = len(batch["sample_ids"])
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * B
            if self.nuc_active and "nuc_logits" in outputs and "nuc_targets" in batch:
                acc = nucleotide_accuracy(outputs["nuc_logits"], batch["nuc_targets"], outputs["nuc_row_slot"],
                                          outputs["nuc_row_weight"])
                sums["nuc_accuracy"] = sums.get("nuc_accuracy", 0.0) + float(acc) * B
            weight += B
            self.logger.step({k: v / weight for k, v in sums.items()}, self.optimizer.param_groups[0]["lr"],
                             self.task, self.nuc_active)
        self.logger.end_epoch()
        # every rank saw different samples: sum the weighted sums and sample counts over ranks before averaging
        sums, weight = D.reduce_weighted_sums(self.ctx, sums, weight)
        out = {f"train/{k}": v / max(weight, 1) for k, v in sums.items()}
        finite_norms = [g for g in grad_norms if g is not None and np.isfinite(g)]
        if finite_norms:
            out["train/grad_norm"] = float(np.mean(finite_norms))
        out["train/lr"] = self.optimizer.param_groups[0]["lr"]
        return out

    def _optimizer_step(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.opts.max_grad_norm or 0.0
        if max_norm > 0:
            norm = _scalar(torch.nn.utils.clip_grad_norm_(params, max_norm))
        else:
            grads = [_local(p.grad.detach()).float() for p in params if p.grad is not None]
            norm = 0.0
            if grads:
                sq = torch.stack([g.pow(2).sum() for g in grads]).sum()
                if self.ctx.mode == "fsdp" and self.ctx.active:
                    # FSDP2 gradients are shards: the global norm is the root of the summed squares
                    import torch.distributed as dist
                    dist.all_reduce(sq)
                norm = float(sq.sqrt())
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler.step_per == "step":
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        return norm

    # ---- evaluation ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, loader, prefix="val", epoch=None):
        """Losses and metrics over the whole `loader` (never per-batch averages of metrics).

        Returns
        -------
        (dict, dict)
            Metrics keyed ``<prefix>/<name>`` and the raw predictions (``y_true``, ``y_pred``, ``probabilities``,
            ``sample_ids``, ``dist_pred``, ``dist_true``) for plots.
        """
        self.model.eval()
        ds = loader.dataset
        if hasattr(ds, "set_epoch") and epoch is not None:
            ds.set_epoch(epoch)
        try:
            return self._evaluate(loader, prefix)
        finally:
            D.reshard(self.model, self.ctx)

    def _evaluate(self, loader, prefix):
        sums, weight = {}, 0.0
        y_true, y_pred, probs, ids, d_pred, d_true = [], [], [], [], [], []
        for batch in loader:
            batch = move_batch(batch, self.device)
            outputs, losses, bad = self._step_loss(batch, train=False)
            B = len(batch["sample_ids"])
            if bad:
                sums["nonfinite_batches"] = sums.get("nonfinite_batches", 0.0) + B
                continue
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * B
            if self.nuc_active and "nuc_logits" in outputs and "nuc_targets" in batch:
                acc = nucleotide_accuracy(outputs["nuc_logits"], batch["nuc_targets"], outputs["nuc_row_slot"],
                                          outputs["nuc_row_weight"])
                sums["nuc_accuracy"] = sums.get("nuc_accuracy", 0.0) + float(acc) * B
            weight += B
            ids.extend(batch["sample_ids"])
            if "target_prediction" in outputs and "targets" in batch:
                pred = outputs["target_prediction"].float()
                if self.task == "classification":
                    p = torch.softmax(pred, dim=-1)
                    probs.append(p.cpu().numpy())
                    y_pred.append(p.argmax(-1).cpu().numpy())
                else:
                    y_pred.append(pred.cpu().numpy())
                y_true.append(batch["targets"].cpu().numpy())
            if "distance_embedding" in outputs and "distances" in batch and B > 1:
                dp = pairwise_distances(outputs["distance_embedding"].float()).cpu().numpy()
                iu = np.triu_indices(B, k=1)
                d_pred.append(dp[iu])
                d_true.append(batch["distances"].cpu().numpy()[iu])
        out = {f"{prefix}/{k}": v / max(weight, 1) for k, v in sums.items()}
        raw = {"sample_ids": ids}
        if y_pred:
            yt, yp = np.concatenate(y_true), np.concatenate(y_pred)
            if self.task == "classification":
                pr = np.concatenate(probs)
                n_classes = pr.shape[1]
                m = M.classification_metrics(yt.astype(int), yp.astype(int), n_classes, probabilities=pr)
                raw.update(y_true=yt.astype(int), y_pred=yp.astype(int), probabilities=pr,
                           confusion_matrix=m.pop("confusion_matrix"))
            else:
                if self.target_transform is not None:
                    yt, yp = self.target_transform.inverse(yt), self.target_transform.inverse(yp)
                m = M.regression_metrics(yt, yp)
                raw.update(y_true=yt, y_pred=yp)
            out.update({f"{prefix}/{k}": v for k, v in m.items() if v is not None})
        if d_pred:
            dp, dt = np.concatenate(d_pred), np.concatenate(d_true)
            r = float(np.corrcoef(dp, dt)[0, 1]) if dp.std() > 0 and dt.std() > 0 else float("nan")
            out[f"{prefix}/unifrac_mse"] = float(np.mean((dp - dt) ** 2))
            out[f"{prefix}/unifrac_r"] = r
            raw.update(dist_pred=dp, dist_true=dt)
        return out, raw

    # ---- the loop -------------------------------------------------------------------------------------------------
    def resume(self, ckpt, path):
        """Continue from a training checkpoint (see `aam.training.resume`)."""
        self.progress = restore_training_checkpoint(ckpt, path, self.model, self.optimizer, self.scheduler,
                                                    self.ctx, self.opts.lr, self.logger.line)

    def fit(self):
        """Train until `epochs` or early stopping; returns the history (one dict per epoch)."""
        name, _ = self.selection_metric
        self._announce(name)
        for epoch in range(self.progress.epoch + 1, self.opts.epochs + 1):
            t0 = time.time()
            outcome = self._train_and_score(epoch, name)
            if self.scheduler.step_per == "epoch":
                row = outcome.row
                self.scheduler.step(row.get("val/total_loss", row.get("train/total_loss")))
            outcome.row["seconds"] = time.time() - t0
            self._advance_progress(epoch, outcome)
            self._report_epoch(epoch, outcome, name)
            if self._early_stop(name):
                break
        self._finish()
        return self.progress.history

    def _announce(self, name):
        """Log what is trained on what, and say so when a resumed run has no epoch left."""
        opts, progress = self.opts, self.progress
        self.logger.line(f"training {self.task} model: {self.n_trainable:,} trainable parameters, "
                         f"{len(self.train_loader.dataset)} training / "
                         f"{len(self.val_loader.dataset) if self.val_loader else 0} validation samples, device "
                         f"{self.device}; best model chosen by {name}")
        if progress.epoch >= opts.epochs:
            self.logger.line(f"the checkpoint already finished epoch {progress.epoch} of {opts.epochs}: nothing "
                             "left to train, the run ends with its best model")

    def _train_and_score(self, epoch, name):
        """One training epoch, then the validation score and (when it improved) a CPU copy of the weights.

        With weight averaging the averaged weights are scored and kept, the raw ones train on.
        """
        row = {"epoch": epoch}
        row.update(self.train_epoch(epoch))
        raw, best_state = None, None
        averaged = self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()
        with averaged:
            if self.val_loader is not None:
                val, raw = self.evaluate(self.val_loader, "val", epoch=0)
                row.update(val)
            score = row.get(name)
            # rank 0 decides, so that early stopping and best-model saves can never diverge between ranks
            tiebreak = row.get("val/total_loss") if self.task == "classification" else None
            improved = bool(D.broadcast_object(self.ctx, self._improved(score, tiebreak)))
            if improved:
                # collective under FSDP: every rank takes part, rank 0 holds the full state
                state = D.full_model_state(self.model, self.ctx)
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
        return _EpochOutcome(row, raw, improved, score, tiebreak, best_state)

    def _advance_progress(self, epoch, outcome):
        """Add the epoch to the progress: its history row, and the new best or one more epoch of patience used."""
        progress = self.progress
        outcome.row["best"] = outcome.improved
        progress.epoch = epoch
        progress.history.append(outcome.row)
        if outcome.improved:
            progress.best_score, progress.best_tiebreak, progress.best_epoch = outcome.score, outcome.tiebreak, epoch
            progress.wait = 0
            progress.best_state = outcome.best_state
            progress.best_interval = self._score_interval(outcome.raw)
        else:
            progress.wait += 1

    def _score_interval(self, raw):
        """The validation score of an epoch's predictions with its 95% interval (over the validation samples'
        groups when known), for the model card; None when the selection metric has none (pretraining)."""
        from aam.evaluation.stats import score_interval
        metric = {"val/mae": "mae", "val/accuracy": "accuracy"}.get(self.selection_metric[0])
        if metric is None or not raw or len(raw.get("y_pred", ())) == 0:
            return None
        groups = None
        if self.sample_groups is not None:
            groups = [self.sample_groups[s] for s in raw["sample_ids"]]
        return score_interval(metric, raw["y_true"], raw["y_pred"], groups, seed=self.opts.seed)

    def _report_epoch(self, epoch, outcome, name):
        """Log the epoch (figures when it is the best), write the best and last checkpoints and the history."""
        self.logger.epoch(outcome.row, self.opts.epochs, outcome.improved)
        if outcome.improved:
            self.logger.validation_figures(outcome.raw, epoch, self.task, self.class_labels)
        if self.run_dir is None:
            return
        if outcome.improved and self.ctx.is_main:
            self.best_checkpoint().save(self.run_dir.best_checkpoint, include_training_state=False)
        save_training_checkpoint(self.run_dir.last_checkpoint, self.record, self.model, self.optimizer,
                                 self.scheduler, self.progress, self.ctx, name)
        self.logger.history(self.progress.history)

    def _early_stop(self, name):
        """True on every rank once `patience` epochs passed without improvement (rank 0's count decides)."""
        progress = self.progress
        stop = D.broadcast_object(self.ctx, progress.wait >= self.opts.patience)
        if stop:
            self.logger.line(f"early stopping: {name} has not improved for {self.opts.patience} epochs "
                             f"(best {progress.best_score:.4f} at epoch {progress.best_epoch})")
        return stop

    def _finish(self):
        """Write the final weights (the last epoch's, beside the best) and warn about skipped steps."""
        if self.run_dir is not None:
            final = Checkpoint(self._record(), D.full_model_state(self.model, self.ctx))
            if self.ctx.is_main:
                final.save(self.run_dir.final_checkpoint, include_training_state=False)
            D.barrier(self.ctx)
        if self.nonfinite_steps:
            self.logger.line(f"warning: {self.nonfinite_steps} training steps were skipped because the model "
                             "produced non-finite values")

    def _record(self):
        return replace(self.record, training=self.progress.summary(self.selection_metric[0]))

    def best_checkpoint(self):
        """The best epoch's weights (from memory) with the record of the run so far."""
        state = self.progress.best_state
        if state is None:
            raise AAMTrainingError("no epoch produced a finite validation score, so there is no model to keep; "
                                   "check the learning rate and the data (see the log above)")
        return Checkpoint(self._record(), state)


def _local(t):
    """The local shard of a DTensor (FSDP2), or `t` itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _scalar(t):
    """A Python float from a tensor that may be a DTensor (FSDP2's clip_grad_norm_ returns one)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return float(t)
