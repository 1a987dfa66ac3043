"""The visualizers of q2-aam: `summarize` (a model card) and `evaluate` (predictions against the truth).

Pages are rendered with q2templates; every figure is written beside index.html as PNG (shown) and SVG (linked),
and every table behind a figure is downloadable as TSV. Importing this module does not import torch; `summarize`
loads the weights (to check that config.json describes them) when it runs.
"""
import json
import os
import shutil
import zipfile

import numpy as np
import pandas as pd
import qiime2

from aam import options as O
from aam.errors import AAMInputError, preview
from aam.rundir import RunDirectory

from q2_aam._format import AAMModelDirFmt
from q2_aam._params import q2_render

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")

_METRIC_LABELS = {
    "mae": "mean absolute error", "mse": "mean squared error", "rmse": "root mean squared error",
    "r2": "R²", "pearson_r": "Pearson r", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
    "precision": "precision (macro)", "recall": "recall (macro)", "f1": "F1 (macro)", "log_loss": "log loss",
    "auc": "ROC AUC", "n": "samples",
}


def _table_html(frame, index=True):
    """A DataFrame as a Bootstrap table (values escaped; long cells never truncated)."""
    with pd.option_context("display.max_colwidth", None):
        return frame.to_html(border=0, classes=("table", "table-striped", "table-hover", "table-condensed"),
                             index=index, na_rep="", escape=True)


def _figure(fig, output_dir, stem, title, caption=""):
    """Save `fig` as stem.png and stem.svg in output_dir; the template's description of it."""
    from matplotlib import pyplot as plt

    from aam.evaluation import plots
    plots.save_figure(fig, os.path.join(output_dir, stem))
    plt.close(fig)
    return {"png": f"{stem}.png", "svg": f"{stem}.svg", "title": title, "caption": caption}


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not np.isfinite(value):
            return ""
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def _render(template, output_dir, context):
    import q2templates
    q2templates.render(os.path.join(ASSETS, template, "index.html"), output_dir, context=context)


# --- summarize ----------------------------------------------------------------------------------------------------

def _history_rows(record, model_dir):
    """Per-epoch rows from the record or, failing that, from history.tsv."""
    rows = record.training.history
    if rows:
        return [dict(r) for r in rows]
    path = os.path.join(model_dir, RunDirectory.HISTORY)
    if not os.path.isfile(path):
        return []
    frame = pd.read_csv(path, sep="\t")
    rows = []
    for entry in frame.to_dict("records"):
        row = {}
        for key, value in entry.items():
            if isinstance(value, str) and value in ("True", "False"):
                value = value == "True"
            elif isinstance(value, float) and not np.isfinite(value):
                continue
            row[key] = value
        rows.append(row)
    return rows


def _hyperparameters(record):
    """The options of the run: value, default, whether changed, description (table order)."""
    used = record.options
    records = []
    for option in O.options_for(record.command, "plugin"):
        if option.name not in used:
            continue
        value = used[option.name]
        records.append({"parameter": option.name, "value": _fmt(value), "default": _fmt(option.default),
                        "changed": "" if value == option.default else "✔", "group": option.group,
                        "description": q2_render(option.help)})
    return pd.DataFrame(records, columns=["parameter", "value", "default", "changed", "group", "description"])


def _data_rows(record):
    data = record.data
    rows = [("samples used", data.n_samples), ("features (ASVs)", data.n_features),
            ("rarefaction depth", data.rarefaction_depth), ("training samples", len(data.train_samples)),
            ("validation samples", len(data.validation_samples)),
            ("samples left out (below the depth)", ", ".join(map(str, data.dropped_low_depth)) or "none")]
    if data.distance_source:
        rows.append(("distance target", data.distance_source))
    return [(k, _fmt(v)) for k, v in rows if v is not None]


def _pretrained_base(pre):
    """The model card's line on the base a model started from (a shipped base by name)."""
    if not pre:
        return "none (trained from scratch)"
    shipped = pre.get("shipped_base")
    if shipped:
        return (f"shipped base {shipped.get('name')} (sha256 {str(shipped.get('sha256'))[:12]}..., reads cut at "
                f"{shipped.get('read_length')} nt; derived from Greengenes, CC BY-SA 3.0: share-alike passes on to "
                "this model)")
    return (f"{pre.get('objective')} objective, {(pre.get('data') or {}).get('n_samples')} samples, "
            f"aam {pre.get('aam_version')}")


def _model_rows(record):
    options = record.options
    rows = [("kind", record.title)]
    if record.task == "pretrain":
        rows.append(("pretraining objective", record.objective))
        if record.pretrained_encoder:
            rows.append(("continued from", _pretrained_base(record.pretrained_encoder)))
        if record.objective in ("taxonomy", "combined"):
            rows.append(("taxonomy level", record.taxonomy_level))
    else:
        target = record.target
        rows.append(("target column", target.column))
        if record.is_classifier:
            rows.append(("classes", _fmt(target.class_labels)))
        if target.categorical_columns:
            rows.append(("categorical covariates", _fmt(target.categorical_columns)))
        rows.append(("pretrained base", _pretrained_base(record.pretrained_encoder)))
        rows.append(("base frozen", _fmt(bool(options.get("freeze_base")))))
    ref = record.asv_encoder
    rows.append(("nucleotide level", "trained from random weights on this study" if not ref else
                 f"reference encoder {ref.get('name')} ({'frozen' if ref.get('frozen') else 'fine-tuned'}; "
                 "pretrained on Greengenes 13_8, CC BY-SA 3.0: the weights carry that license)"))
    if record.ensemble is not None:
        rows.append(("ensemble", record.ensemble.describe()))
    enc = record.encoder
    layers, heads = enc.attention_layers, enc.attention_heads
    rows += [("architecture", f"{layers} transformer layer{'' if layers == 1 else 's'} × {heads} heads, "
                              f"embedding {enc.embedding_dim}, {enc.max_bp} bp per ASV, "
                              f"up to {enc.token_limit} ASVs per sample"),
             ("seed used", record.seed), ("device used", record.device),
             ("group column", options.get("group_column") or "none"),
             ("aam / torch versions", f"{record.aam_version} / {record.torch_version}")]
    return [(k, _fmt(v)) for k, v in rows]


def _zip_tensorboard(model_dir, output_dir):
    source = os.path.join(model_dir, RunDirectory.TENSORBOARD)
    if not os.path.isdir(source):
        return None
    files = [os.path.join(folder, f) for folder, _, names in os.walk(source) for f in sorted(names)]
    if not files:
        return None
    target = os.path.join(output_dir, "tensorboard-logs.zip")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, os.path.relpath(path, model_dir))
    return os.path.basename(target)


def _verified_record(model):
    """The record of the weights in model.pt, after checking that config.json describes those same weights.

    The card must describe what the weights are: model.pt is loaded (its checksum, shapes and values checked)
    and its own record is compared with config.json, which a user could have swapped or edited.
    """
    described = model.read_record()
    weights = RunDirectory(str(model)).read_model()  # imports torch: only when the visualizer runs
    a, b = described.to_json(), weights.record.to_json()
    differ = sorted(k for k in set(a) | set(b) if json.dumps(a.get(k), sort_keys=True) !=
                    json.dumps(b.get(k), sort_keys=True))
    if differ:
        raise AAMInputError(f"the model's config.json does not describe the weights in its model.pt (they differ in "
                            f"{', '.join(differ)}): the files come from different models or one was edited, so "
                            "no card is made. Use the artifact as q2-aam wrote it.")
    return weights.record


def _score_interval_text(training, group_column):
    """The best validation score's 95% interval in words, or None (a pretrained base, an earlier model)."""
    iv = training.best_interval
    if not iv or iv.get("low") is None:
        return None
    whole = (f", resampling its {iv['n_groups']} groups of {group_column!r} whole" if iv.get("grouped") and group_column
             else "")
    return (f"95% interval {_fmt(iv['low'])} to {_fmt(iv['high'])}: a bootstrap over the {iv['n_samples']} "
            f"samples that scored it{whole}")


def summarize(output_dir: str, model: AAMModelDirFmt) -> None:
    from aam.evaluation import plots

    model_dir = str(model)
    record = _verified_record(model)
    history = _history_rows(record, model_dir)
    figures = []
    if history:
        figures.append(_figure(plots.training_curves_plot(history), output_dir, "training-curves",
                               "Training curves",
                               "Every loss and metric per epoch, training and validation; the dotted line marks "
                               "the best epoch, whose weights the model keeps."))
    # validation figures drawn at the best epoch by the engine, carried inside the artifact
    plot_dir = os.path.join(model_dir, RunDirectory.PLOTS)
    titles = {"pred_vs_actual_best": "Validation: predicted vs actual (best epoch)",
              "confusion_matrix_best": "Validation: confusion matrix (best epoch)",
              "distance_fit_best": "Validation: predicted vs true pairwise distances (best epoch)"}
    if os.path.isdir(plot_dir):
        for name in sorted(os.listdir(plot_dir)):
            stem, ext = os.path.splitext(name)
            if ext != ".png":
                continue
            os.makedirs(os.path.join(output_dir, "validation"), exist_ok=True)
            shutil.copyfile(os.path.join(plot_dir, name), os.path.join(output_dir, "validation", name))
            svg = os.path.join(plot_dir, stem + ".svg")
            if os.path.isfile(svg):
                shutil.copyfile(svg, os.path.join(output_dir, "validation", stem + ".svg"))
            figures.append({"png": f"validation/{name}",
                            "svg": f"validation/{stem}.svg" if os.path.isfile(svg) else None,
                            "title": titles.get(stem, stem.replace("_", " ")),
                            "caption": "Held-out validation samples scored with the kept (best) weights."})

    downloads = []
    if os.path.isfile(os.path.join(model_dir, RunDirectory.HISTORY)):
        shutil.copyfile(os.path.join(model_dir, RunDirectory.HISTORY), os.path.join(output_dir, "history.tsv"))
        downloads.append(("history.tsv", "training history: one row per epoch, every loss and metric (TSV)"))
    tb = _zip_tensorboard(model_dir, output_dir)
    if tb:
        downloads.append((tb, "TensorBoard logs: unzip, then run `tensorboard --logdir tensorboard`"))
    with open(os.path.join(output_dir, "config.json"), "w") as fh:
        json.dump(record.to_json(), fh, indent=1, sort_keys=True)
    downloads.append(("config.json", "the model's full record: architecture, data, options, history (JSON)"))

    best_epoch = record.training.best_epoch
    best_row = next((r for r in history if r.get("epoch") == best_epoch), None)
    best_metrics = None
    if best_row:
        keys = [k for k in best_row if "/" in k and isinstance(best_row[k], (int, float))
                and not isinstance(best_row[k], bool)]
        metrics = sorted({k.split("/", 1)[1] for k in keys})
        frame = pd.DataFrame(index=metrics, columns=["train", "val"], dtype=object)
        for k in keys:
            split, metric = k.split("/", 1)
            if split in frame.columns:
                frame.loc[metric, split] = _fmt(best_row[k])
        frame = frame.fillna("")
        frame.index.name = "metric"
        best_metrics = _table_html(frame.reset_index(), index=False)
    context = {
        "title": f"AAM {record.title}",
        "model_rows": _model_rows(record),
        "data_rows": _data_rows(record),
        "report": record.data.report,
        "validation_samples": record.data.validation_samples,
        "epochs_run": len(history),
        "best_epoch": best_epoch,
        "selection_metric": record.training.selection_metric,
        "best_score": _fmt(record.training.best_score),
        "best_interval": _score_interval_text(record.training, record.options.get("group_column")),
        "best_metrics": best_metrics,
        "figures": figures,
        "downloads": downloads,
        "hyperparameters": _table_html(_hyperparameters(record), index=False),
    }
    _render("summarize", output_dir, context)


# --- evaluate ------------------------------------------------------------------------------------------------------

def _align(predictions, truth, missing_samples, label):
    """Predictions of the samples that have a true value; absent samples per `missing_samples`."""
    predictions = predictions.copy()
    predictions.index = predictions.index.astype(str)
    absent = [s for s in predictions.index if s not in truth.index]
    if absent and missing_samples == "error":
        raise AAMInputError(f"{len(absent)} sample(s) of {label} are not in the metadata: {preview(absent)}. "
                            "Add them to the metadata, or pass --p-missing-samples ignore to leave them out.")
    return predictions[[s for s in predictions.index if s in truth.index]]


def _regression(predictions, label):
    values = pd.to_numeric(predictions, errors="coerce")
    bad = values.index[values.isna() & predictions.notna()]
    if len(bad):
        raise AAMInputError(f"{label} holds non-numeric values (e.g. {predictions[bad[0]]!r} for sample "
                            f"{bad[0]!r}) but the truth column is numeric. Evaluate class predictions "
                            "against a categorical column, or pass regression predictions.")
    values = values.astype(float)
    missing = values.index[~np.isfinite(values.to_numpy())]
    if len(missing):
        raise AAMInputError(f"{label} has no finite prediction for {len(missing)} sample(s) ({preview(missing)}): "
                            "the model that made them is broken (e.g. NaN weights). Metrics over the remaining "
                            "samples would hide that; fix or retrain the model.")
    return values


def _class_metrics(y_true, y_pred, labels, probabilities):
    from aam.evaluation.metrics import classification_metrics
    index = {c: i for i, c in enumerate(labels)}
    probs = None
    if probabilities is not None:
        probs = probabilities.reindex(index=y_true.index, columns=labels).fillna(0.0).to_numpy(float)
    return classification_metrics(y_true.map(index).to_numpy(), y_pred.map(index).to_numpy(), len(labels),
                                  probabilities=probs)


def _models_to_evaluate(name, predictions, probabilities, other_name, other_predictions, other_probabilities):
    """(label, predictions, probabilities) of each model given: the first, and the other one when there is one.

    Two models of the same name are told apart by a " (2)" after the second one's.
    """
    if other_predictions is None:
        if other_probabilities is not None:
            raise AAMInputError("--i-other-probabilities belongs to --i-other-predictions, which was not given.")
        return [(name, predictions, probabilities)]
    if name == other_name:
        other_name = f"{other_name} (2)"
    return [(name, predictions, probabilities), (other_name, other_predictions, other_probabilities)]


def _truth_values(truth):
    """The metadata column as a Series keyed by sample ID as text (samples without a value are NaN)."""
    truth_all = truth.to_series()
    truth_all.index = truth_all.index.astype(str)
    return truth_all


def _predictions_to_score(label, predictions, truth_all, missing_samples, regression, column):
    """One model's predictions of the samples with a true value, checked and typed like the truth column.

    Returns
    -------
    predictions : pd.Series
        Floats against a numeric column, text against a categorical one.
    note : str or None
        How many predicted samples have no value in the column (they are left out).
    """
    what = f"the predictions of {label!r}"
    predictions = _align(predictions, truth_all, missing_samples, what)
    no_value = set(truth_all.index[truth_all.isna()])
    dropped = [s for s in predictions.index if s in no_value]
    note = (f"{len(dropped)} predicted sample(s) have no value for {column!r} and are left out: "
            f"{preview(dropped)}." if dropped else None)
    predictions = predictions[[s for s in predictions.index if s not in no_value]]
    blank = predictions.index[predictions.isna() | (predictions.astype(str).str.strip() == "")]
    if len(blank):
        raise AAMInputError(f"{what} are empty for {len(blank)} sample(s) ({preview(blank)}): the model that made "
                            "them is broken. Fix or retrain it.")
    return (_regression(predictions, what) if regression else predictions.astype(str)), note


def _on_shared_samples(aligned):
    """Two models are scored on the samples both predicted (in the first one's order); one is kept as it is.

    Returns
    -------
    aligned : list of (str, pd.Series, pd.DataFrame or None)
    note : str or None
        How many samples only one model predicted.
    """
    if len(aligned) != 2:
        return aligned, None
    first, second = aligned[0][1].index, set(aligned[1][1].index)
    shared = [s for s in first if s in second]
    only = len(set(first) ^ second)
    note = (f"{only} sample(s) were predicted by only one of the models; both are scored on the {len(shared)} "
            "samples they share." if only else None)
    return [(label, preds.loc[shared], probs) for label, preds, probs in aligned], note


def _scored_regressions(output_dir, y_true, aligned, column):
    """Metrics, the predicted-vs-actual figure and the per-sample columns of regression predictions.

    Returns
    -------
    metrics : dict of str -> dict
        Per model label.
    figures : list of dict
    columns : dict of str -> pd.Series
        ``predicted (label)`` and ``error (label)`` of each model, for the per-sample table.
    """
    from matplotlib.figure import Figure

    from aam.evaluation import plots
    from aam.evaluation.metrics import regression_metrics

    y_true = pd.to_numeric(y_true).astype(float)
    metrics, columns = {}, {}
    fig = Figure(figsize=(5.2 * len(aligned), 5.2), layout="constrained")
    axes = fig.subplots(1, len(aligned), squeeze=False)[0]
    for ax, (label, preds, _) in zip(axes, aligned):
        metrics[label] = regression_metrics(y_true.to_numpy(), preds.to_numpy())
        plots.prediction_plot(y_true.to_numpy(), preds.to_numpy(), title=label, xlabel=f"actual {column}",
                              ylabel=f"predicted {column}", ax=ax)
        columns[f"predicted ({label})"] = preds
        columns[f"error ({label})"] = preds - y_true
    figures = [_figure(fig, output_dir, "predicted-vs-actual", "Predicted vs actual",
                       "Each point is a sample. Red: least-squares fit; dashed: the 1:1 line a perfect model would "
                       "follow.")]
    return metrics, figures, columns


def _scored_classifications(output_dir, y_true, aligned, column):
    """Metrics, one confusion matrix per model and the per-sample columns of class predictions.

    Returns
    -------
    metrics, figures, columns
        As `_scored_regressions`; the columns are ``predicted (label)`` and ``correct (label)``.

    Raises
    ------
    AAMInputError
        When no predicted label is a value of the column (regression predictions against a categorical column).
    """
    from aam.evaluation import plots

    y_true = y_true.astype(str)
    predicted = set()
    for _, preds, _ in aligned:
        predicted |= set(preds)
    if not predicted & set(y_true):
        raise AAMInputError(f"no predicted label is a value of {column!r} (predicted e.g. "
                            f"{preview(sorted(predicted), 3)}; the column holds "
                            f"{preview(sorted(set(y_true)), 3)}). Are these regression predictions? Evaluate "
                            "them against a numeric column.")
    labels = sorted(set(y_true) | predicted)
    metrics, figures, columns = {}, [], {}
    for k, (label, preds, probs) in enumerate(aligned):
        m = _class_metrics(y_true, preds, labels, probs)
        metrics[label] = m
        fig = plots.confusion_matrix_plot(np.asarray(m["confusion_matrix"]), labels, metrics=m, title=label)
        stem = "confusion-matrix" if k == 0 else "confusion-matrix-2"
        figures.append(_figure(fig, output_dir, stem, f"Confusion matrix: {label}",
                               "Rows: true class; columns: predicted class; cells count samples."))
        columns[f"predicted ({label})"] = preds
        columns[f"correct ({label})"] = preds == y_true
    return metrics, figures, columns


_REGRESSION_ROWS = ["mae", "rmse", "r2", "pearson_r", "mse", "n"]
_CLASSIFICATION_ROWS = ["accuracy", "balanced_accuracy", "f1", "precision", "recall", "log_loss", "auc", "n"]


def _metrics_table(metrics, rows):
    """Metric x model table of the `rows` that at least one model has, labelled for people."""
    rows = [r for r in rows if any(m.get(r) is not None for m in metrics.values())]
    return pd.DataFrame({label: [m.get(r) for r in rows] for label, m in metrics.items()},
                        index=pd.Index([_METRIC_LABELS.get(r, r) for r in rows], name="metric"), dtype=object)


#: bootstrap resamples of the intervals and permutations of the paired test in `evaluate`
_RESAMPLES = 1000


def _formatted(frame):
    """A table with its numbers in the page's format."""
    # DataFrame.map replaced applymap in pandas 2.1
    return frame.map(_fmt) if hasattr(frame, "map") else frame.applymap(_fmt)


def _scored(y_true, preds, probs, regression, strata=None):
    """An `aam.evaluation.stats.Scored` of one model's aligned predictions (`strata`: the fold of each sample, so
    that ranking metrics are averaged over folds rather than pooled across models fit to different folds)."""
    from aam.evaluation.stats import Scored
    if regression:
        return Scored(pd.to_numeric(y_true).to_numpy(float), preds.to_numpy(float), strata=strata)
    truth = y_true.astype(str).to_numpy()
    classes = tuple(sorted(set(truth) | set(preds.astype(str))))
    matrix = None
    if probs is not None:
        matrix = probs.reindex(index=y_true.index, columns=list(classes)).fillna(0.0).to_numpy(float)
    return Scored(truth, preds.astype(str).to_numpy(), matrix, classes, strata=strata)


def _sample_groups(group, index, what="group"):
    """The group (subject) or fold (`what`) of each scored sample, or None; every scored sample must have one."""
    if group is None:
        return None
    values = group.to_series()
    values.index = values.index.astype(str)
    values = values.reindex(index)
    if values.isna().any():
        missing = list(values.index[values.isna()])
        raise AAMInputError(f"the {what} column {group.name!r} has no value for {len(missing)} scored sample(s) "
                            f"({preview(missing)}); fill them in or choose another column.")
    return values.astype(str).to_numpy()


def _uncertainty(aligned, y_true, group, regression, folds=None):
    """Every metric of every model with its 95% bootstrap interval (over groups when given) and, for two models,
    their paired difference with its interval, verdict and permutation p-value.

    Returns
    -------
    (pd.DataFrame, pd.DataFrame or None)
        The intervals (one row per model and metric) and the comparison (one row per metric).
    """
    from aam.evaluation.permutation import paired_permutation_p
    from aam.evaluation.stats import CLASSIFICATION_METRICS, REGRESSION_METRICS, compare, metric_interval
    groups = _sample_groups(group, y_true.index)
    strata = _sample_groups(folds, y_true.index, "fold")
    scored = [(label, _scored(y_true, preds, probs, regression, strata)) for label, preds, probs in aligned]
    metrics = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    rows = []
    for label, sc in scored:
        for metric in metrics:
            iv = metric_interval(metric, sc, groups, _RESAMPLES, seed=0)
            if iv.estimate is not None:
                rows.append({"model": label, "metric": _METRIC_LABELS.get(metric, metric), "value": iv.estimate,
                             "95% low": iv.low, "95% high": iv.high})
    intervals = pd.DataFrame(rows, columns=["model", "metric", "value", "95% low", "95% high"])
    if len(scored) < 2:
        return intervals, None
    (first, a), (second, b) = scored
    rows = []
    for metric in metrics:
        cmp = compare(metric, a, b, groups, _RESAMPLES, seed=0)
        if cmp.difference.estimate is None:
            continue
        rows.append({"metric": _METRIC_LABELS.get(metric, metric), f"{first} - {second}": cmp.difference.estimate,
                     "95% low": cmp.difference.low, "95% high": cmp.difference.high,
                     "verdict": f"{first} {cmp.verdict}" if cmp.verdict != "level" else "level",
                     "permutation p": paired_permutation_p(metric, a, b, groups, _RESAMPLES, seed=0)})
    return intervals, pd.DataFrame(rows)


def _per_fold(aligned, y_true, folds, regression):
    """One row per fold and model: its held-out samples and their metrics (`aam.evaluation.stats.metric_value`)."""
    from aam.evaluation.stats import CLASSIFICATION_METRICS, REGRESSION_METRICS, metric_value
    fold_of = _sample_groups(folds, y_true.index, "fold")
    metrics = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    rows = []
    for fold in sorted(set(fold_of), key=lambda f: (len(f), f)):
        at = fold_of == fold
        for label, preds, probs in aligned:
            scored = _scored(y_true[at], preds[at], None if probs is None else probs, regression)
            row = {"fold": fold, "model": label, "samples": int(at.sum())}
            row.update({_METRIC_LABELS.get(m, m): metric_value(m, scored) for m in metrics})
            rows.append(row)
    table = pd.DataFrame(rows)
    return table.dropna(axis=1, how="all")


def _fold_figure(table, output_dir, regression):
    """Each model's score on each fold, the two models' points of a fold joined."""
    from matplotlib.figure import Figure
    metric = _METRIC_LABELS["mae" if regression else "accuracy"]
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    folds = list(dict.fromkeys(table["fold"]))
    x = {f: i for i, f in enumerate(folds)}
    for k, (label, rows) in enumerate(table.groupby("model", sort=False)):
        ax.plot([x[f] + (k - 0.5) * 0.1 for f in rows["fold"]], rows[metric].astype(float), "o", label=label)
    ax.set_xticks(range(len(folds)), [f"fold {f}" for f in folds])
    ax.set_ylabel(metric)
    ax.legend(frameon=False)
    return _figure(fig, output_dir, "per-fold", f"Per fold: {metric}",
                   "Each model's score on the held-out samples of each fold (lower is better for MAE).")


def evaluate(output_dir: str, predictions: pd.Series, truth: qiime2.MetadataColumn,
             probabilities: pd.DataFrame = None, other_predictions: pd.Series = None,
             other_probabilities: pd.DataFrame = None, name: str = "predictions", other_name: str = "other predictions",
             missing_samples: str = "error", group: qiime2.CategoricalMetadataColumn = None,
             folds: qiime2.CategoricalMetadataColumn = None) -> None:
    regression = isinstance(truth, qiime2.NumericMetadataColumn)
    column = truth.name
    truth_all = _truth_values(truth)
    models = _models_to_evaluate(name, predictions, probabilities, other_name, other_predictions,
                                 other_probabilities)
    notes, aligned = [], []
    for label, preds, probs in models:
        preds, note = _predictions_to_score(label, preds, truth_all, missing_samples, regression, column)
        notes += [note] if note else []
        aligned.append((label, preds, probs))
    aligned, note = _on_shared_samples(aligned)
    notes += [note] if note else []
    for label, preds, _ in aligned:
        if len(preds) == 0:
            raise AAMInputError(f"none of the samples predicted by {label!r} has a value for {column!r} in the "
                                "metadata; check that the metadata and the predictions describe the same samples.")
    y_true = truth_all.loc[aligned[0][1].index]

    per_sample = pd.DataFrame({column: y_true})
    per_sample.index.name = "sample-id"
    score = _scored_regressions if regression else _scored_classifications
    metrics, figures, columns = score(output_dir, y_true, aligned, column)
    for key, values in columns.items():
        per_sample[key] = values
    table = _metrics_table(metrics, _REGRESSION_ROWS if regression else _CLASSIFICATION_ROWS)
    table.to_csv(os.path.join(output_dir, "metrics.tsv"), sep="\t", na_rep="")
    per_sample.to_csv(os.path.join(output_dir, "per-sample.tsv"), sep="\t")
    intervals, comparison = _uncertainty(aligned, y_true, group, regression, folds)
    intervals.to_csv(os.path.join(output_dir, "intervals.tsv"), sep="\t", index=False, na_rep="")
    downloads = [("metrics.tsv", "the metrics table (TSV)"),
                 ("intervals.tsv", "every metric with its 95% interval (TSV)"),
                 ("per-sample.tsv", "truth and prediction of every sample (TSV)")]
    fold_table = None
    if folds is not None:
        per_fold = _per_fold(aligned, y_true, folds, regression)
        per_fold.to_csv(os.path.join(output_dir, "per-fold.tsv"), sep="\t", index=False, na_rep="")
        downloads.append(("per-fold.tsv", "every model's metrics on each fold (TSV)"))
        figures.append(_fold_figure(per_fold, output_dir, regression))
        fold_table = _table_html(_formatted(per_fold), index=False)
    if comparison is not None:
        comparison.to_csv(os.path.join(output_dir, "comparison.tsv"), sep="\t", index=False, na_rep="")
        downloads.insert(2, ("comparison.tsv", "the paired comparison of the two models (TSV)"))
    shown = _formatted(table).reset_index()
    context = {
        "title": f"{'Regression' if regression else 'Classification'} accuracy: {column}",
        "column": column,
        "kind": "regression" if regression else "classification",
        "models": [label for label, _, _ in aligned],
        "n_samples": len(y_true),
        "notes": notes,
        "metrics": _table_html(shown, index=False),
        "intervals": _table_html(_formatted(intervals), index=False),
        "comparison": None if comparison is None else _table_html(_formatted(comparison), index=False),
        "resampled": (f"whole groups of {group.name!r}" if group is not None else "samples"),
        "per_fold": fold_table,
        "figures": figures,
        "downloads": downloads,
    }
    _render("evaluate", output_dir, context)
