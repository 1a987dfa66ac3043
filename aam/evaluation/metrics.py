"""Validation metrics over a whole evaluation set, returned as plain Python numbers.

Every value is a ``float`` or ``int`` (or None where the metric is undefined, for example R² of a constant
target), so the dicts can go straight into JSON, history.tsv and TensorBoard.
"""
import numpy as np

# probabilities are clipped to [_PROB_EPS, 1] before the log so one confident mistake gives a large but finite
# log loss (the value scikit-learn used as its default eps)
_PROB_EPS = 1e-15


def _none_or_float(value):
    return None if value is None or not np.isfinite(value) else float(value)


def pearson_r(x, y):
    """Pearson correlation of two 1-d arrays, or None when it is undefined (fewer than 2 values, or constant)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denom = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if denom == 0:
        return None
    return _none_or_float((dx * dy).sum() / denom)


def regression_metrics(y_true, y_pred):
    """Errors and fit of regression predictions.

    Parameters
    ----------
    y_true, y_pred : array_like
        [N] values, in the units the user cares about.

    Returns
    -------
    dict
        ``mae``, ``mse``, ``rmse``, ``r2`` (None with fewer than 2 samples or a constant `y_true`),
        ``pearson_r`` (None when undefined) and ``n``. With no samples every metric is None.
    """
    y_true = np.asarray(y_true, dtype=np.float64).ravel()  # [N]
    y_pred = np.asarray(y_pred, dtype=np.float64).ravel()  # [N]
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    n = int(y_true.size)
    if n == 0:
        return {"mae": None, "mse": None, "rmse": None, "r2": None, "pearson_r": None, "n": 0}
    err = y_pred - y_true
    mse = float(np.mean(err * err))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    r2 = None
    if n >= 2 and ss_tot > 0:
        r2 = 1.0 - float(np.sum(err * err)) / ss_tot
    return {"mae": float(np.mean(np.abs(err))), "mse": mse, "rmse": float(np.sqrt(mse)), "r2": _none_or_float(r2),
            "pearson_r": pearson_r(y_true, y_pred), "n": n}


def _confusion_matrix(y_true, y_pred, n_classes):
    """[C, C] counts, rows = true class, columns = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _macro_scores(cm):
    """Macro precision, recall and F1 over the classes that occur as truth or prediction.

    Classes that occur in neither would add meaningless zeros (scikit-learn's behaviour with
    ``labels=present, zero_division=0``); a class never predicted has precision 0, one never true recall 0.
    """
    tp = np.diag(cm).astype(np.float64)  # [C]
    true_count = cm.sum(axis=1).astype(np.float64)  # [C]
    pred_count = cm.sum(axis=0).astype(np.float64)  # [C]
    present = (true_count > 0) | (pred_count > 0)
    precision = np.divide(tp, pred_count, out=np.zeros_like(tp), where=pred_count > 0)
    recall = np.divide(tp, true_count, out=np.zeros_like(tp), where=true_count > 0)
    pr_sum = precision + recall
    f1 = np.divide(2 * precision * recall, pr_sum, out=np.zeros_like(tp), where=pr_sum > 0)
    return (float(precision[present].mean()), float(recall[present].mean()), float(f1[present].mean()))


def _balanced_accuracy(cm):
    """Mean recall over the classes present in the truth (scikit-learn's definition)."""
    true_count = cm.sum(axis=1)
    present = true_count > 0
    return float((np.diag(cm)[present] / true_count[present]).mean())


def _binary_auc(y_true, score):
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) formula, ties counted as half."""
    from scipy.stats import rankdata
    pos = y_true == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)  # average ranks for ties
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true, y_pred, n_classes, probabilities=None):
    """Accuracy, macro scores and the confusion matrix of class predictions.

    Parameters
    ----------
    y_true, y_pred : array_like of int
        [N] class indices in ``[0, n_classes)``.
    n_classes : int
    probabilities : array_like, optional
        [N, C] predicted class probabilities; adds ``log_loss`` and, for two classes, ``auc``.

    Returns
    -------
    dict
        ``accuracy``, ``precision``, ``recall``, ``f1`` (macro over the classes present in `y_true` or
        `y_pred`), ``balanced_accuracy``, ``confusion_matrix`` (list of lists, rows = true class), ``n``; with
        `probabilities` also ``log_loss`` (probabilities clipped to [1e-15, 1]) and, when ``n_classes == 2``,
        ``auc`` (None when only one class occurs in `y_true`). With no samples the scores are None.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()  # [N]
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()  # [N]
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= n_classes):
            raise ValueError(f"{name} holds class indices outside [0, {n_classes})")
    n = int(y_true.size)
    cm = _confusion_matrix(y_true, y_pred, n_classes)  # [C, C]
    out = {"accuracy": None, "precision": None, "recall": None, "f1": None, "balanced_accuracy": None,
           "confusion_matrix": cm.tolist(), "n": n}
    if n == 0:
        if probabilities is not None:
            out["log_loss"] = None
            if n_classes == 2:
                out["auc"] = None
        return out
    precision, recall, f1 = _macro_scores(cm)
    out.update(accuracy=float(np.trace(cm) / n), precision=precision, recall=recall, f1=f1,
               balanced_accuracy=_balanced_accuracy(cm))
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64).reshape(n, n_classes)  # [N, C]
        p_true = np.clip(probs[np.arange(n), y_true], _PROB_EPS, 1.0)  # [N]
        out["log_loss"] = float(-np.mean(np.log(p_true)))
        if n_classes == 2:
            out["auc"] = _binary_auc(y_true, probs[:, 1])
    return out
