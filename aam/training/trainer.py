"""The training loop shared by pretraining (`SequenceEncoder`) and fine-tuning (`SequencePredictor`).

One epoch = one pass over the training loader with gradient accumulation, clipping, mixed precision and the
learning-rate schedule, then a full pass over the validation loader. The validation score that users care about
(MAE for regression, accuracy for classification, total loss for pretraining) decides the best model, early
stopping and when plots are drawn. Everything is logged to TensorBoard with matching ``train/<name>`` and
``val/<name>`` tags so the two curves overlay.

Steps whose model outputs are not finite are skipped (and counted) before any loss is computed; several in a row
stop training with a message naming the likely causes instead of silently corrupting the weights.
"""
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

from aam.checkpoint import Checkpoint
from aam.errors import AAMTrainingError
from aam.training import metrics as M
from aam.training.cache import cached_forward
from aam.training import distributed as D
from aam.training.device import autocast_context, make_grad_scaler
from aam.training.losses import find_nonfinite, nucleotide_accuracy, pairwise_distances
from aam.training.optim import build_optimizer, build_scheduler

# progress-bar labels of the design: pretraining TL, LR, UL, NL, NA%; regression TL, LR, RL, UL; classification
# TL, LR, CL, UL (NL / NA only when the nucleotide objective is active)
LABELS = {"total_loss": "TL", "target_loss": None, "unifrac_loss": "UL", "faith_pd_loss": "FL",
          "taxonomy_loss": "XL", "nuc_loss": "NL", "nuc_accuracy": "NA%"}


def move_batch(batch, device):
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def forward_batch(model, batch, dedup=True):
    """Run `model` on a batch dict (tensors already on the model's device)."""
    kwargs = {"asv_ids": batch.get("asv_ids"), "dedup": dedup}
    # look through a DDP / DataParallel wrapper: the attribute lives on the wrapped model
    if "categorical" in batch and getattr(D.unwrap(model), "accepts_categorical", False):
        kwargs["categorical"] = batch["categorical"]
    return model(batch["tokens"], batch["counts"], **kwargs)


def rng_state():
    state = {"python": list(random.getstate()), "numpy": list(np.random.get_state()),
             "torch": torch.get_rng_state()}
    state["python"][1] = list(state["python"][1])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


class Progress:
    """A tqdm bar on a terminal; plain flushed lines otherwise (QIIME 2 log files, Galaxy, pipes)."""

    def __init__(self, enabled=True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = None

    def start(self, total, desc):
        if self.tty:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)

    def update(self, postfix):
        if self.bar is not None:
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text):
        if self.enabled:
            print(text, file=self.stream, flush=True)


class Trainer:
    """Fit a model with validation, early stopping, checkpoints, TensorBoard and plots.

    Parameters
    ----------
    model : torch.nn.Module
        A `SequenceEncoder` (pretraining) or `SequencePredictor` (fine-tuning), on CPU.
    loss_fn : aam.training.losses.MultiTaskLoss
    train_loader, val_loader : torch.utils.data.DataLoader
        `val_loader` may be None (then the best model is chosen on the training loss).
    task : {'pretrain', 'regression', 'classification'}
    options : dict
        Resolved options (see `aam.options`): epochs, patience, lr, optimizer, scheduler, ... device.
    checkpoint_config : dict
        Config stored in every checkpoint (model config, tokenizer, encoders, transforms, data summary).
    device : torch.device
    output_dir : str, optional
        Where checkpoints/, plots/, tensorboard/ and history.tsv go; None keeps everything in memory.
    target_transform : aam.training.targets.TargetTransform, optional
        Regression: predictions are inverse-transformed before metrics, so metrics are in the target's units.
    class_labels : list of str, optional
    progress : bool
    asv_cache : aam.training.cache.ASVEmbeddingCache, optional
        With a frozen base: serve ASV embeddings from this cache instead of re-encoding them every batch.
    dist : aam.training.distributed.DistContext, optional
        Multi-process training (DDP / FSDP2) or DataParallel: the model is wrapped here, before the optimizer is
        built; rank 0 alone logs and writes files; losses, early stopping and checkpoints are agreed by all ranks.
    """

    def __init__(self, model, loss_fn, train_loader, val_loader, task, options, checkpoint_config, device,
                 output_dir=None, target_transform=None, class_labels=None, progress=True, log=None,
                 asv_cache=None, dist=None):
        self.dist = dist or D.SINGLE
        D.set_current(self.dist)
        # FSDP2 replaces parameters by DTensors, so wrapping must come before build_optimizer below
        self.model = D.wrap_model(model, self.dist) if (self.dist.active or self.dist.mode == "dp") \
            else model.to(device)
        self.loss_fn = loss_fn
        self.train_loader, self.val_loader = train_loader, val_loader
        self.task = task
        self.opt = options
        self.checkpoint_config = checkpoint_config
        self.device = device
        self.output_dir = output_dir
        self.target_transform = target_transform
        self.class_labels = class_labels
        main = self.dist.is_main
        self.progress = Progress(progress and main)
        self.log = (log or self.progress.line) if main else (lambda text: None)
        self.dedup = options.get("asv_dedup", True)
        self.asv_cache = asv_cache
        self.max_nonfinite = 5
        self.history = []
        self.best_score = None
        self.best_epoch = None
        self.start_epoch = 1
        self.nonfinite_steps = 0
        self.nuc_active = getattr(loss_fn, "nuc_penalty", 0) > 0 and not options.get("freeze_base", False)

        steps_per_epoch = max(1, math.ceil(len(train_loader) / options["gradient_accumulation_steps"]))
        self.total_steps = steps_per_epoch * options["epochs"]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(options["optimizer"], self.model, lr=options["lr"],
                                         weight_decay=options["weight_decay"])
        self.scheduler = build_scheduler(
            options["scheduler"], self.optimizer, total_steps=self.total_steps,
            warmup_steps=options.get("warmup_steps"), t0=options.get("scheduler_t0"),
            t_mult=options.get("scheduler_t_mult", 1), eta_min=options.get("scheduler_eta_min", 0.0),
            patience=options.get("scheduler_patience", 5), factor=options.get("scheduler_factor", 0.5))
        self.n_trainable = sum(p.numel() for p in params)
        self.scaler = make_grad_scaler(device, options.get("mixed_precision", "none"))
        self.writer = None
        if output_dir and main:
            for sub in ("checkpoints", "plots", "tensorboard"):
                os.makedirs(os.path.join(output_dir, sub), exist_ok=True)
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(os.path.join(output_dir, "tensorboard"))

    # ---- selection ------------------------------------------------------------------------------------------
    @property
    def selection_metric(self):
        """(name, higher_is_better) of the validation score that picks the best model."""
        if self.val_loader is None:
            return "train/total_loss", False
        return {"regression": ("val/mae", False), "classification": ("val/accuracy", True)}.get(
            self.task, ("val/total_loss", False))

    def _improved(self, score, tiebreak=None):
        """Whether `score` beats the best so far; equal accuracies are decided by the lower validation loss.

        Accuracy on a small validation set takes few distinct values, so without the tie-break the first epoch
        to reach a value would stay "best" while the model keeps getting more confident and better calibrated.
        """
        if score is None or not np.isfinite(score):
            return False
        if self.best_score is None:
            return True
        _, higher = self.selection_metric
        if abs(score - self.best_score) <= 1e-12 and tiebreak is not None:
            best_tb = getattr(self, "best_tiebreak", None)
            return best_tb is not None and np.isfinite(tiebreak) and tiebreak < best_tb - 1e-12
        return score > self.best_score + 1e-12 if higher else score < self.best_score - 1e-12

    # ---- one epoch --------------------------------------------------------------------------------------------
    def _step_loss(self, batch, train):
        with autocast_context(self.device, self.opt.get("mixed_precision", "none")):
            if self.asv_cache is not None:
                outputs = cached_forward(self.model, self.asv_cache, batch)
            else:
                outputs = forward_batch(self.model, batch, self.dedup)
        bad = find_nonfinite(outputs)
        # every rank must skip together: the gathered pairwise loss and the gradient all-reduce are collectives
        if train and D.any_flag(self.dist, bool(bad)):
            return outputs, None, bad or ["outputs on another rank"]
        if bad:
            return outputs, None, bad
        losses = self.loss_fn(outputs, batch)
        finite = bool(torch.isfinite(losses["total_loss"]))
        if train and D.any_flag(self.dist, not finite):
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
                f"model (try --lr {self.opt['lr'] / 10:g}), fp16 overflow (use --mixed-precision bf16 or none), "
                "or an output activation that overflows (--output-activation exp). The last good checkpoint is "
                "kept.")

    def train_epoch(self, epoch):
        model, opt = self.model, self.opt
        model.train()
        ds = self.train_loader.dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        accum = opt["gradient_accumulation_steps"]
        sums, weight = {}, 0.0
        grad_norms = []
        self._consecutive_bad = 0
        self.optimizer.zero_grad(set_to_none=True)
        n_batches = len(self.train_loader)
        self.progress.start(n_batches, f"epoch {epoch}/{opt['epochs']}")
        pending = 0
        for i, batch in enumerate(self.train_loader):
            batch = move_batch(batch, self.device)
            outputs, losses, bad = self._step_loss(batch, train=True)
            if bad:
                self.optimizer.zero_grad(set_to_none=True)
                pending = 0
                self._nonfinite(bad, epoch)
                self.progress.update("skipped non-finite step")
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
            self.progress.update(self._postfix({k: v / weight for k, v in sums.items()}))
        self.progress.close()
        # every rank saw different samples: sum the weighted sums and sample counts over ranks before averaging
        sums, weight = D.reduce_weighted_sums(self.dist, sums, weight)
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
        max_norm = self.opt.get("max_grad_norm") or 0.0
        if max_norm > 0:
            norm = _scalar(torch.nn.utils.clip_grad_norm_(params, max_norm))
        else:
            grads = [_local(p.grad.detach()).float() for p in params if p.grad is not None]
            norm = 0.0
            if grads:
                sq = torch.stack([g.pow(2).sum() for g in grads]).sum()
                if self.dist.mode == "fsdp" and self.dist.active:
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
        return norm

    def _postfix(self, means):
        parts = [f"TL={means.get('total_loss', float('nan')):.4f}",
                 f"LR={self.optimizer.param_groups[0]['lr']:.2e}"]
        if self.task == "regression" and "target_loss" in means:
            parts.append(f"RL={means['target_loss']:.4f}")
        if self.task == "classification" and "target_loss" in means:
            parts.append(f"CL={means['target_loss']:.4f}")
        for key in ("unifrac_loss", "faith_pd_loss", "taxonomy_loss"):
            if key in means:
                parts.append(f"{LABELS[key]}={means[key]:.4f}")
        if self.nuc_active and "nuc_loss" in means:
            parts.append(f"NL={means['nuc_loss']:.4f}")
            if "nuc_accuracy" in means:
                parts.append(f"NA%={100 * means['nuc_accuracy']:.1f}")
        return ", ".join(parts)

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
        model = self.model
        model.eval()
        ds = loader.dataset
        if hasattr(ds, "set_epoch") and epoch is not None:
            ds.set_epoch(epoch)
        # every rank evaluates the whole validation set, so gathering would count each batch world_size times
        pairwise = getattr(self.loss_fn, "pairwise_loss", None)
        gathering = getattr(pairwise, "gather", None)
        if gathering is not None:
            pairwise.gather = False
        try:
            return self._evaluate(loader, prefix)
        finally:
            D.reshard(self.model, self.dist)
            if gathering is not None:
                pairwise.gather = gathering

    def _evaluate(self, loader, prefix):
        model = self.model
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
    def fit(self):
        """Train until `epochs` or early stopping; returns the history (one dict per epoch)."""
        opt = self.opt
        name, _ = self.selection_metric
        epochs_without_improvement = 0
        if self.start_epoch > 1 and self.history:
            epochs_without_improvement = self._resumed_wait
        self.log(f"training {self.task} model: {self.n_trainable:,} trainable parameters, "
                 f"{len(self.train_loader.dataset)} training / "
                 f"{len(self.val_loader.dataset) if self.val_loader else 0} validation samples, device "
                 f"{self.device}; best model chosen by {name}")
        for epoch in range(self.start_epoch, opt["epochs"] + 1):
            t0 = time.time()
            row = {"epoch": epoch}
            row.update(self.train_epoch(epoch))
            raw = None
            if self.val_loader is not None:
                val, raw = self.evaluate(self.val_loader, "val", epoch=0)
                row.update(val)
            if self.scheduler.step_per == "epoch":
                self.scheduler.step(row.get("val/total_loss", row.get("train/total_loss")))
            row["seconds"] = time.time() - t0
            score = row.get(name)
            # rank 0 decides, so that early stopping and best-model saves can never diverge between ranks
            tiebreak = row.get("val/total_loss") if self.task == "classification" else None
            improved = bool(D.broadcast_object(self.dist, self._improved(score, tiebreak)))
            if improved:
                self.best_score, self.best_epoch = score, epoch
                self.best_tiebreak = tiebreak
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            row["best"] = improved
            self.history.append(row)
            self._log_epoch(row, raw, improved)
            if self.output_dir:
                if improved:
                    self.save(os.path.join(self.output_dir, "checkpoints", "best_model.pt"),
                              epoch, epochs_without_improvement,
                              include_training_state=not self.dist.sharded_checkpoint)
                    if raw is not None and self.dist.is_main:
                        self._plots(raw, epoch)
                self.save(os.path.join(self.output_dir, "checkpoints", "last_checkpoint.pt"), epoch,
                          epochs_without_improvement)
                if self.dist.is_main:
                    self._write_history()
            elif improved:
                self._best_state = {k: v.detach().clone()
                                    for k, v in D.full_model_state(self.model, self.dist).items()}
            stop = D.broadcast_object(self.dist, epochs_without_improvement >= opt["patience"])
            if stop:
                self.log(f"early stopping: {name} has not improved for {opt['patience']} epochs "
                         f"(best {self.best_score:.4f} at epoch {self.best_epoch})")
                break
        if self.output_dir:
            self.save(os.path.join(self.output_dir, "checkpoints", "final_model.pt"), epoch, 0,
                      include_training_state=False)
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if self.nonfinite_steps:
            self.log(f"warning: {self.nonfinite_steps} training steps were skipped because the model produced "
                     "non-finite values")
        return self.history

    def best_model_state(self):
        """State dict of the best epoch (reloaded from disk when an output directory is used)."""
        if self.output_dir:
            from aam.checkpoint import load_checkpoint
            return load_checkpoint(os.path.join(self.output_dir, "checkpoints", "best_model.pt")).model_state
        return getattr(self, "_best_state", None) or D.full_model_state(self.model, self.dist)

    def _log_epoch(self, row, raw, improved):
        keys = [k for k in row if k.startswith(("train/", "val/"))]
        if self.writer is not None:
            for k in keys:
                v = row[k]
                if isinstance(v, (int, float)) and np.isfinite(v):
                    self.writer.add_scalar(k, v, row["epoch"])
        shown = [f"epoch {row['epoch']}/{self.opt['epochs']}"]
        for k in ("train/total_loss", "val/total_loss", "val/unifrac_r", "val/nuc_accuracy", "val/mae",
                  "val/r2", "val/accuracy", "val/f1"):
            if k in row and row[k] is not None and np.isfinite(row[k]):
                shown.append(f"{k}={row[k]:.4f}")
        shown.append(f"lr={row.get('train/lr', 0):.2e}")
        shown.append(f"{row['seconds']:.1f}s")
        if improved:
            shown.append("*best*")
        self.log("  ".join(shown))

    def _plots(self, raw, epoch):
        from aam.training import plots
        figs = {}
        if self.task == "regression" and "y_pred" in raw:
            figs["pred_vs_actual_best"] = plots.prediction_plot(
                raw["y_true"], raw["y_pred"], title=f"validation, epoch {epoch}")
        elif self.task == "classification" and "confusion_matrix" in raw:
            m = M.classification_metrics(raw["y_true"], raw["y_pred"], len(self.class_labels))
            figs["confusion_matrix_best"] = plots.confusion_matrix_plot(
                np.asarray(raw["confusion_matrix"]), self.class_labels, metrics=m)
        elif "dist_pred" in raw:
            figs["distance_fit_best"] = plots.distance_fit_plot(raw["dist_pred"], raw["dist_true"])
        import matplotlib.pyplot as plt
        for stem, fig in figs.items():
            plots.save_figure(fig, os.path.join(self.output_dir, "plots", stem))
            if self.writer is not None:
                self.writer.add_figure(f"validation/{stem}", fig, epoch, close=False)
            plt.close(fig)

    def _write_history(self):
        from aam.checkpoint import atomic_write
        keys = []
        for row in self.history:
            keys += [k for k in row if k not in keys]

        def write(tmp):
            with open(tmp, "w") as fh:
                fh.write("\t".join(keys) + "\n")
                for row in self.history:
                    fh.write("\t".join("" if row.get(k) is None else str(row.get(k)) for k in keys) + "\n")
        atomic_write(os.path.join(self.output_dir, "history.tsv"), write)

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def checkpoint(self, epoch, wait=0, include_training_state=True, sharded_dir=None):
        """A `Checkpoint` of the current state (collective under FSDP: every rank must call it).

        Weights are always the full, unwrapped state dict, loadable in one process on CPU or GPU. With
        `sharded_dir` the model and optimizer are not collected: they are in that torch.distributed.checkpoint
        directory, named in the training state.
        """
        config = dict(self.checkpoint_config)
        config["history"] = self.history
        config["best_epoch"] = self.best_epoch
        config["best_score"] = self.best_score
        config["selection_metric"] = self.selection_metric[0]
        training = None
        if include_training_state:
            training = {"scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": epoch,
                        "trainer": {"best_score": self.best_score if self.best_score is not None else float("nan"),
                                    "best_epoch": self.best_epoch or 0, "wait": wait,
                                    "history": json.dumps(self.history)}}
            if sharded_dir:
                training["trainer"]["sharded_dir"] = sharded_dir
            else:
                training["optimizer"] = D.full_optimizer_state(self.model, self.optimizer, self.dist)
        model_state = {} if sharded_dir else D.full_model_state(self.model, self.dist)
        return Checkpoint(config, model_state, training)

    def save(self, path, epoch, wait=0, include_training_state=True):
        """Write a checkpoint: every rank takes part in collecting the state, rank 0 writes, all wait for it."""
        sharded_dir = None
        if include_training_state and self.dist.sharded_checkpoint:
            # model and optimizer shards go to <stem>.dcp/ (written by every rank); the .pt file keeps the rest
            sharded_dir = os.path.splitext(os.path.basename(path))[0] + ".dcp"
            D.save_sharded(os.path.join(os.path.dirname(path), sharded_dir), self.model, self.optimizer,
                           self.dist)
        ckpt = self.checkpoint(epoch, wait, include_training_state, sharded_dir=sharded_dir)
        if self.dist.is_main:
            ckpt.save(path, include_training_state)
        # nobody reads the file (or leaves the run) before rank 0 has finished writing it
        D.barrier(self.dist)

    def resume(self, ckpt):
        """Continue from a checkpoint written by `save` (model, optimizer, scheduler, epoch, RNG, history).

        The learning rate given now wins over the stored one, so resuming with a new --lr does what it says.
        """
        state = ckpt.training_state
        sharded_dir = state.get("trainer", {}).get("sharded_dir")
        from aam.errors import AAMInputError
        if sharded_dir:
            if not (self.dist.mode == "fsdp" and self.dist.active):
                raise AAMInputError("this checkpoint is sharded (--fsdp-sharded-checkpoint): resume it with --fsdp "
                                    "and the same number of processes")
            directory = os.path.join(os.path.dirname(os.path.abspath(ckpt.path)), sharded_dir) \
                if getattr(ckpt, "path", None) else sharded_dir
            D.load_sharded(directory, self.model, self.optimizer, self.dist)
        else:
            if "optimizer" not in state:
                raise AAMInputError("this checkpoint has no optimizer state (it is a final model); resume from "
                                    "checkpoints/last_checkpoint.pt or best_model.pt instead")
            D.load_full_state(self.model, self.optimizer, ckpt.model_state, state["optimizer"], self.dist)
        self.scheduler.load_state_dict(state["scheduler"])
        stored_lr = ckpt.config.get("options", {}).get("lr")
        if stored_lr is not None and not math.isclose(stored_lr, self.opt["lr"]):
            scale = self.opt["lr"] / stored_lr
            for group in self.optimizer.param_groups:
                group["lr"] *= scale
                if "initial_lr" in group:
                    group["initial_lr"] *= scale
            if hasattr(self.scheduler, "scale_base_lrs"):
                self.scheduler.scale_base_lrs(scale)
            self.log(f"resuming with --lr {self.opt['lr']:g} instead of the checkpoint's {stored_lr:g}")
        set_rng_state(state["rng"])
        trainer = state.get("trainer", {})
        self.history = json.loads(trainer.get("history", "[]"))
        best = trainer.get("best_score")
        self.best_score = None if best is None or not np.isfinite(best) else float(best)
        self.best_epoch = trainer.get("best_epoch") or None
        self._resumed_wait = int(trainer.get("wait", 0))
        self.start_epoch = int(state["epoch"]) + 1
        self.log(f"resumed after epoch {state['epoch']}")


def _local(t):
    """The local shard of a DTensor (FSDP2), or `t` itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _scalar(t):
    """A Python float from a tensor that may be a DTensor (FSDP2's clip_grad_norm_ returns one)."""
    if hasattr(t, "full_tensor"):
        t = t.full_tensor()
    return float(t)
