"""Figures of validation results and training history.

The figures are built as `matplotlib.figure.Figure` objects without pyplot, so drawing them never needs a
display, never changes the backend of the user's session (Jupyter keeps its own) and never leaves figures
registered in pyplot's global state; ``Figure.savefig`` picks the Agg/SVG renderer by file type. Closing them with
``matplotlib.pyplot.close(fig)`` is harmless.
"""
import math
import os

import numpy as np
from matplotlib.figure import Figure

from aam.evaluation.metrics import pearson_r, regression_metrics

# above this many points a scatter turns into an unreadable blot; hexbin shows the density instead
_HEXBIN_ABOVE = 2000


def _finite_pairs(x, y):
    """Both arrays flattened to float64, keeping only the pairs where both values are finite."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"got {x.size} and {y.size} values; both arrays need the same length")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _fmt(value, spec=".3f"):
    return "n/a" if value is None else format(value, spec)


def _identity_limits(x, y):
    """Common axis limits covering both arrays with a 5% margin (a unit range around a single value)."""
    if x.size == 0:
        return 0.0, 1.0
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo) if hi > lo else max(1.0, abs(lo) * 0.05)
    return lo - pad, hi + pad


def _draw_identity(ax, lo, hi):
    ax.plot([lo, hi], [lo, hi], linestyle="--", color="0.4", linewidth=1, label="1:1")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def _title(*parts):
    return "\n".join(p for p in parts if p)


def prediction_plot(y_true, y_pred, title=None, xlabel="actual", ylabel="predicted", ax=None):
    """Predicted against actual values, with a least-squares line and the 1:1 line.

    Parameters
    ----------
    y_true, y_pred : array_like
        [N] values; pairs with a non-finite value are left out.
    title : str, optional
        First title line; the second gives R², MAE and n.
    xlabel, ylabel : str
    ax : matplotlib.axes.Axes, optional
        Draw into this axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    x, y = _finite_pairs(y_true, y_pred)
    if ax is None:
        fig = Figure(figsize=(5, 5), layout="constrained")
        ax = fig.add_subplot()
    fig = ax.figure
    m = regression_metrics(x, y)
    ax.scatter(x, y, s=18, alpha=0.7, edgecolors="none", label="samples")
    lo, hi = _identity_limits(x, y)
    # a line through 1 or 2 points, or through points with one x value, says nothing (and polyfit warns)
    if x.size >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        ax.plot([lo, hi], [slope * lo + intercept, slope * hi + intercept], color="C3", linewidth=1.5,
                label=f"fit: y = {slope:.3g}x + {intercept:.3g}")
    _draw_identity(ax, lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_title(title, f"R² = {_fmt(m['r2'])}, MAE = {_fmt(m['mae'], '.4g')}, n = {m['n']}"))
    ax.legend(loc="upper left", fontsize="small", frameon=False)
    return fig


def confusion_matrix_plot(cm, labels, metrics=None, title=None):
    """A confusion-matrix heatmap with the count in every cell.

    Parameters
    ----------
    cm : array_like
        [C, C] counts, rows = true class, columns = predicted class.
    labels : list of str or None
        Class names in index order; None numbers the classes.
    metrics : dict, optional
        From `aam.training.metrics.classification_metrics`; accuracy, balanced accuracy, F1 and AUC are shown
        under the title when present.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    cm = np.asarray(cm)
    n = cm.shape[0]
    labels = [str(i) for i in range(n)] if labels is None else [str(label) for label in labels]
    size = min(12.0, 3.0 + 0.6 * n)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(1, int(cm.max())) if cm.size else 1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="samples")
    # dark text on light cells, white text on dark cells
    threshold = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize="small",
                    color="white" if cm[i, j] > threshold else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    shown = []
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced acc."), ("f1", "macro F1"),
                       ("auc", "AUC")):
        if metrics and metrics.get(key) is not None:
            shown.append(f"{label} {metrics[key]:.3f}")
    if metrics and metrics.get("n") is not None:
        shown.append(f"n = {metrics['n']}")
    ax.set_title(_title(title, ", ".join(shown)))
    return fig


def distance_fit_plot(pred, true, title=None):
    """Predicted against true pairwise distances (a scatter, or a hexbin for many pairs) with the 1:1 line.

    Parameters
    ----------
    pred, true : array_like
        [P] distances of the same sample pairs.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    x, y = _finite_pairs(true, pred)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = _identity_limits(x, y)
    if x.size > _HEXBIN_ABOVE:
        hb = ax.hexbin(x, y, gridsize=50, mincnt=1, cmap="viridis", bins="log", extent=(lo, hi, lo, hi))
        fig.colorbar(hb, ax=ax, shrink=0.8, label="pairs")
    else:
        ax.scatter(x, y, s=8, alpha=0.4, edgecolors="none")
    _draw_identity(ax, lo, hi)
    ax.set_xlabel("true distance")
    ax.set_ylabel("predicted distance")
    mse = float(np.mean((x - y) ** 2)) if x.size else None
    ax.set_title(_title(title or "pairwise distances",
                        f"r = {_fmt(pearson_r(x, y))}, MSE = {_fmt(mse, '.4g')}, pairs = {x.size}"))
    return fig


# bookkeeping columns of the history that are not worth a panel
_NOT_CURVES = {"n", "nonfinite_batches"}


def _series(history):
    """Group history columns ``<split>/<metric>`` by metric: {metric: {split: (epochs, values)}}."""
    panels = {}
    for index, row in enumerate(history):
        epoch = row.get("epoch", index + 1)
        for key, value in row.items():
            if "/" not in key or isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                continue
            if not np.isfinite(value):
                continue
            split, metric = key.split("/", 1)
            if metric in _NOT_CURVES:
                continue
            epochs, values = panels.setdefault(metric, {}).setdefault(split, ([], []))
            epochs.append(epoch)
            values.append(float(value))
    return panels


def training_curves_plot(history):
    """One panel per metric with the training and validation curves overlaid.

    Parameters
    ----------
    history : list of dict
        One row per epoch with ``epoch`` and keys such as ``train/total_loss``, ``val/total_loss``, ``val/mae``;
        rows with ``best: True`` mark improvements, and the last of them (the kept model) gets a vertical line.

    Returns
    -------
    matplotlib.figure.Figure
    """
    panels = _series(history)
    # losses first (total loss leading), then the other metrics in the order they first appear
    names = sorted(panels, key=lambda m: (m != "total_loss", not m.endswith("loss")))
    best = [row.get("epoch", i + 1) for i, row in enumerate(history) if row.get("best") is True]
    ncols = min(3, max(1, len(names)))
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    if not names:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no metrics recorded yet", ha="center", va="center")
        ax.set_axis_off()
        return fig
    for k, metric in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        for split in sorted(panels[metric], key=lambda s: (s != "train", s != "val", s)):
            epochs, values = panels[metric][split]
            ax.plot(epochs, values, marker="o" if len(values) < 30 else None, markersize=3, label=split)
        if best:
            ax.axvline(best[-1], color="0.5", linestyle=":", linewidth=1, label=f"best (epoch {best[-1]})")
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        positive = all(v > 0 for _, values in panels[metric].values() for v in values)
        if metric == "lr" and positive:
            # schedules span orders of magnitude (warm-up from near 0, decay to eta_min)
            ax.set_yscale("log")
        ax.legend(fontsize="x-small", frameon=False)
    return fig


def save_figure(fig, stem, formats=("png", "svg")):
    """Write `fig` as ``<stem>.<format>`` for every format (150 dpi, tight bounding box).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    stem : str
        Path without extension; missing directories are created.
    formats : sequence of str

    Returns
    -------
    list of str
        The written paths, in the order of `formats`.
    """
    stem = os.fspath(stem)
    directory = os.path.dirname(os.path.abspath(stem))
    os.makedirs(directory, exist_ok=True)
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    return paths
