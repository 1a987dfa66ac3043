"""Where a training run reports: progress lines (or a bar on a terminal), TensorBoard, figures and history.tsv.

The trainer calls one `RunLogger`; only rank 0 of a multi-process run writes anything.
"""
import sys

import numpy as np

# progress-bar labels of the design: pretraining TL, LR, UL, NL, NA%; regression TL, LR, RL, UL; classification
# TL, LR, CL, UL (NL / NA only when the nucleotide objective is active)
_LABELS = {"unifrac_loss": "UL", "faith_pd_loss": "FL", "taxonomy_loss": "XL"}
# what an epoch's log line shows
_SHOWN = ("train/total_loss", "val/total_loss", "val/unifrac_r", "val/nuc_accuracy", "val/mae", "val/r2",
          "val/accuracy", "val/f1")


class _ProgressBar:
    """A tqdm bar on a terminal; nothing otherwise (QIIME 2 log files, Galaxy and pipes get the epoch lines)."""

    def __init__(self, enabled, stream):
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.stream = stream
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


class RunLogger:
    """Progress, TensorBoard scalars and figures, validation plots and the history file of one run.

    Parameters
    ----------
    run_dir : aam.rundir.RunDirectory, optional
        Where plots/, tensorboard/ and history.tsv go; None logs lines only.
    is_main : bool
        False (ranks other than 0) makes every method a no-op.
    progress : bool
        Show progress at all (lines, and a bar on a terminal).
    log : callable, optional
        Receives each line, whatever `progress` says (default: print to stderr, flushed, when `progress`).
    """

    def __init__(self, run_dir=None, is_main=True, progress=True, log=None):
        self.enabled = bool(is_main)
        self.run_dir = run_dir if is_main else None
        stream = sys.stderr
        self._print = log or (lambda text: print(text, file=stream, flush=True))
        # a caller's log function always receives the lines; printing to stderr follows `progress`
        self._lines = progress or log is not None
        self.bar = _ProgressBar(progress and is_main, stream)
        self.writer = None
        if self.run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(self.run_dir.tensorboard_dir)

    def line(self, text):
        """One progress or report line."""
        if self.enabled and self._lines:
            self._print(text)

    # ---- within an epoch --------------------------------------------------------------------------------------
    def start_epoch(self, batches, desc):
        if self.enabled:
            self.bar.start(batches, desc)

    def step(self, means, lr, task, nuc_active):
        """Update the bar with the running means of the epoch's losses."""
        if not (self.enabled and self.bar.tty):
            return
        parts = [f"TL={means.get('total_loss', float('nan')):.4f}", f"LR={lr:.2e}"]
        if "target_loss" in means and task in ("regression", "classification"):
            parts.append(f"{'RL' if task == 'regression' else 'CL'}={means['target_loss']:.4f}")
        for key, label in _LABELS.items():
            if key in means:
                parts.append(f"{label}={means[key]:.4f}")
        if nuc_active and "nuc_loss" in means:
            parts.append(f"NL={means['nuc_loss']:.4f}")
            if "nuc_accuracy" in means:
                parts.append(f"NA%={100 * means['nuc_accuracy']:.1f}")
        self.bar.update(", ".join(parts))

    def skipped_step(self):
        if self.enabled:
            self.bar.update("skipped non-finite step")

    def end_epoch(self):
        self.bar.close()

    # ---- after an epoch ------------------------------------------------------------------------------------------
    def epoch(self, row, epochs, improved):
        """The epoch's log line and TensorBoard scalars."""
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in row.items():
                if k.startswith(("train/", "val/")) and isinstance(v, (int, float)) and np.isfinite(v):
                    self.writer.add_scalar(k, v, row["epoch"])
        shown = [f"epoch {row['epoch']}/{epochs}"]
        for k in _SHOWN:
            if row.get(k) is not None and np.isfinite(row[k]):
                shown.append(f"{k}={row[k]:.4f}")
        shown.append(f"lr={row.get('train/lr', 0):.2e}")
        shown.append(f"{row['seconds']:.1f}s")
        if improved:
            shown.append("*best*")
        self.line("  ".join(shown))

    def validation_figures(self, raw, epoch, task, class_labels=None):
        """Figures of the best epoch's validation predictions: plots/<name>.png|svg and TensorBoard."""
        if not self.enabled or self.run_dir is None or raw is None:
            return
        import matplotlib.pyplot as plt

        from aam.evaluation import metrics as M
        from aam.evaluation import plots
        figs = {}
        if task == "regression" and "y_pred" in raw:
            figs["pred_vs_actual_best"] = plots.prediction_plot(
                raw["y_true"], raw["y_pred"], title=f"validation, epoch {epoch}")
        elif task == "classification" and "confusion_matrix" in raw:
            m = M.classification_metrics(raw["y_true"], raw["y_pred"], len(class_labels))
            figs["confusion_matrix_best"] = plots.confusion_matrix_plot(
                np.asarray(raw["confusion_matrix"]), class_labels, metrics=m)
        elif "dist_pred" in raw:
            figs["distance_fit_best"] = plots.distance_fit_plot(raw["dist_pred"], raw["dist_true"])
        for stem, fig in figs.items():
            plots.save_figure(fig, self.run_dir.plot_stem(stem))
            if self.writer is not None:
                self.writer.add_figure(f"validation/{stem}", fig, epoch, close=False)
            plt.close(fig)

    def history(self, rows):
        """Rewrite history.tsv with every epoch so far."""
        if self.enabled and self.run_dir is not None:
            self.run_dir.write_history(rows)

    def close(self):
        self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
