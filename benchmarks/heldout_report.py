"""docs/science.md and its figures, generated from the held-out benchmark's results (never edited by hand).

``python -m benchmarks.heldout --report-only`` rewrites them from ``benchmarks/results/heldout/``.
"""
import os

import numpy as np
import pandas as pd

from aam.evaluation import stats as S
from benchmarks import heldout_baselines as B
from benchmarks import heldout_models as M
from benchmarks import heldout_yardstick as Y

FIGURE_DIR = os.path.join("figures", "heldout")  # relative to the docs page
METRIC_LABELS = {"mae": "MAE", "r2": "R²", "auprc": "AUPRC", "mae_vs_rf500": "MAE / rf500", "accuracy": "accuracy",
                 "balanced_accuracy": "balanced accuracy", "auc": "AUC", "accuracy_vs_rf500": "accuracy − rf500"}


#: hand-written findings included after the summary (beside the generated page)
NOTES = "science-notes.md"


def _engine_epochs():
    from aam import options as O
    pre, fit = O.resolve("pretrain"), O.resolve("train")
    return (f"{pre.epochs} pretraining + {fit.epochs} fine-tuning epochs at most, early stopping after "
            f"{fit.patience} without improvement")


def _fmt(stat, digits=2):
    if not stat or stat.get("mean") is None:
        return "–"
    text = f"{stat['mean']:.{digits}f}"
    if stat.get("sd") is not None:
        text += f" ± {stat['sd']:.{digits}f}"
    return text


def _order(models):
    """Registry order (tagged rows after their recipe), then names no longer registered."""
    known = [m for r in M.RECIPES for m in sorted(models, key=lambda x: (":" in x, x)) if m.split(":")[0] == r]
    return known + sorted(m for m in models if m not in known)


def _headline(task):
    return ("mae", "mae_vs_rf500") if task["kind"] == "regression" else ("accuracy", "accuracy_vs_rf500")


def _describe_run(run):
    b = run.get("budget", {})
    m = run.get("machine", {})
    text = (f"`{run['command']}` — {run['date']}, {m.get('cpu', '?')} ({m.get('cores', '?')} cores), git "
            f"{run.get('git') or '?'}, seed {run.get('seed')}, {run.get('folds')} folds, {run.get('jobs', 1)} "
            f"process(es) x {b.get('threads')} thread(s)")
    budgeted = [x for x in run.get("models", []) if getattr(M.RECIPES.get(x), "uses_budget", False)]
    if budgeted and (b.get("pretrain_epochs") or b.get("train_epochs")):
        text += (f"; budget of {', '.join(budgeted)}: {b.get('pretrain_epochs') or 'default'} pretraining + "
                 f"{b.get('train_epochs') or 'default'} fine-tuning epochs")
    elif budgeted:
        text += f"; {', '.join(budgeted)} at the engine's default epochs"
        if run.get("quick"):
            text += ", tiny architecture (--quick)"
    return text + (f"; took {run['seconds'] / 60:.1f} min" if run.get("seconds") else "")


#: the README's columns (tagged runs of these too); docs/science.md shows every model
README_MODELS = ("aam+rf-axes-1se", "rf500-rel+aam", "aam", "rf500", "rf500-rel", "best-classical", "clr-linear",
                 "knn", "depth", "constant")


def summary_table(results, fraction="1", only=None):
    """Markdown table: one row per task, one column per model (those named in `only`, with their tagged runs), the
    headline metric (mean ± sd over folds)."""
    models = _order({m for t in results["tasks"].values() for m in t.get("results", {}).get(fraction, {})
                     if only is None or m.split(":")[0] in only})
    if not models:
        return ""
    lines = ["| task | metric | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for name, task in results["tasks"].items():
        res = task.get("results", {}).get(fraction, {})
        for metric in _headline(task):
            cells = [_fmt(res[m]["summary"].get(metric)) if m in res else "" for m in models]
            if all(c in ("", "–") for c in cells):
                continue  # e.g. no 500-tree forest to compare with
            lines.append(f"| {name} | {METRIC_LABELS[metric]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_table(task, fraction="1"):
    res = task.get("results", {}).get(fraction, {})
    kind = task["kind"]
    metrics = ["mae", "r2", "mae_vs_rf500"] if kind == "regression" else \
        ["accuracy", "balanced_accuracy", "auc", "accuracy_vs_rf500"]
    head = ["model"] + [METRIC_LABELS[m] for m in metrics] + ["seconds / fold", "scored / held-out", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in _order(res):
        s = res[m]["summary"]
        scored = f"{s['n_heldout'] - s['unscored']} / {s['n_heldout']}"
        if s.get("failed_folds"):
            scored += f" (failed in {s['failed_folds']} folds)"
        run = s.get("run") or ""
        info = next((i.get("info", {}) for i in task.get("timing", {}).get(f"{m}@{fraction}", []) if i.get("info")),
                    {})
        if info.get("pretrain_epochs") or info.get("train_epochs"):
            # a budgeted run; rows without one ran the engine's default epochs (the Method section says which)
            run += f" ({info.get('pretrain_epochs') or 'default'} + {info.get('train_epochs') or 'default'} epochs)"
        cells = [m] + [_fmt(s.get(k), 3 if kind == "classification" else 2) for k in metrics] + \
                [_fmt(s.get("seconds"), 1), scored, run]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _common(preds):
    """Rows of samples that every model with predictions in the (fraction, fold) predicted."""
    keep = []
    for _, grp in preds.groupby(["label_fraction", "fold"]):
        models = grp["model"].unique()
        counts = grp.groupby("sample_id")["model"].nunique()
        ids = set(counts.index[counts == len(models)])
        keep.append(grp[grp["sample_id"].isin(ids)])
    return pd.concat(keep) if keep else preds


def figure_task(name, task, preds, path):
    """Predicted vs actual per model (regression) or per-fold accuracy bars (classification)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    res = task.get("results", {}).get("1", {})
    models = _order(res)
    preds = preds[preds["label_fraction"] == 1.0] if len(preds) else preds
    if not models or not len(preds):
        return False
    preds = _common(preds)
    if task["kind"] == "regression":
        n = len(models)
        cols = min(n, 3)
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.8 * rows), squeeze=False)
        lo = min(preds["truth"].min(), preds["prediction"].min())
        hi = max(preds["truth"].max(), preds["prediction"].max())
        for ax, m in zip(axes.ravel(), models):
            sub = preds[preds["model"] == m]
            ax.scatter(sub["truth"], sub["prediction"], c=sub["fold"], cmap="tab10", vmin=0, vmax=9, s=10,
                            alpha=0.7)
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1)
            s = res[m]["summary"]
            ax.set_title(f"{m}: MAE {_fmt(s['mae'])}\nR² {_fmt(s['r2'])}", fontsize=9)
            ax.set_xlabel(f"actual {task['column']}")
            ax.set_ylabel("predicted")
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        fig.suptitle(f"{name}: held-out predictions (colour = fold)", fontsize=10)
    else:
        folds = sorted(preds["fold"].unique())
        fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(folds) * max(1, len(models)) / 2.5), 3.6))
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            acc = [f.get("accuracy") for f in res[m]["folds"]]
            acc = [np.nan if a is None else a for a in acc]
            ax.bar(np.arange(len(acc)) + i * width - 0.4 + width / 2, acc, width, label=m)
        ax.set_xticks(range(len(folds)))
        ax.set_xticklabels([f"fold {f + 1}" for f in folds])
        ax.set_ylim(0, 1)
        ax.set_ylabel("held-out accuracy")
        ax.legend(fontsize=8, ncol=min(len(models), 6), loc="lower center", bbox_to_anchor=(0.5, 1.0),
                  frameon=False)
        ax.set_title(f"{name}: accuracy per fold", fontsize=10, pad=22)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return True


def figure_curve(name, task, path):
    """Learning curve: headline metric against the share of labelled training subjects, per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator
    fractions = sorted(task["results"], key=float)
    metric = _headline(task)[0]
    models = _order({m for f in fractions for m in task["results"][f]})
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for m in models:
        xs, ys, es = [], [], []
        for f in fractions:
            s = task["results"][f].get(m, {}).get("summary", {}).get(metric)
            if s and s.get("mean") is not None:
                xs.append(float(f))
                ys.append(s["mean"])
                es.append(s.get("sd") or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=m)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([float(f) for f in fractions])
    ax.set_xticklabels([f"{float(f):g}" for f in fractions])
    ax.set_xlabel("share of training groups (subjects) with labels")
    ax.set_ylabel(METRIC_LABELS[metric] + " (mean ± sd over folds)")
    ax.set_title(f"{name}: label efficiency", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def curve_table(task):
    fractions = sorted(task["results"], key=float)
    metric = _headline(task)[0]
    models = _order({m for f in fractions for m in task["results"][f]})
    lines = ["| model | " + " | ".join(f"{float(f):g}" for f in fractions) + " |", "|---|" + "---|" * len(fractions)]
    for m in models:
        cells = [_fmt(task["results"][f].get(m, {}).get("summary", {}).get(metric)) for f in fractions]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    intro = f"{METRIC_LABELS[metric]} (mean ± sd over folds) by share of training groups (subjects) with labels:"
    return intro + "\n\n" + "\n".join(lines)


#: the issue's label-efficiency goal: with 10-25% of the ecam labels, MAE at least 15% below the forest's
LABEL_GOAL = {"task": "ecam-month", "fractions": ("0.1", "0.25"), "ratio": 0.85}


def label_goal_table(task, goal=LABEL_GOAL):
    """Markdown: each model's MAE relative to the 500-tree forest (per fold, then averaged) at the goal's label
    fractions, against the goal's ratio; and, for scale, the MAE that ratio asks for beside the lowest MAE any model
    reaches with every label."""
    res = task.get("results", {})
    fractions = [f for f in goal["fractions"] if f in res]
    if not fractions or "1" not in res:
        return ""
    models = _order({m for f in fractions for m in res[f] if m.split(":")[0] != "rf500"})
    head = ["model"] + [f"MAE / rf500 with {float(f):.0%} of the labels" for f in fractions] + ["goal met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in models:
        ratios = [(res[f].get(m, {}).get("summary", {}).get("mae_vs_rf500") or {}).get("mean") for f in fractions]
        met = all(r is not None and r <= goal["ratio"] for r in ratios)
        lines.append(f"| {m} | " + " | ".join("–" if r is None else f"{r:.3f}" for r in ratios)
                     + f" | {'yes' if met else 'no'} |")
    full = {m: s["summary"]["mae"]["mean"] for m, s in res["1"].items() if s["summary"].get("mae")}
    best = min(full, key=full.get)
    scale = []
    for f in fractions:
        forest = (res[f].get("rf500", {}).get("summary", {}).get("mae") or {}).get("mean")
        if forest is not None:
            scale.append(f"with {float(f):.0%} of the labels the forest's MAE is {forest:.2f}, so the goal asks for "
                         f"{goal['ratio'] * forest:.2f} or less")
    return ("\n".join(lines) + "\n\nFor scale: " + "; ".join(scale) + f". With every label the lowest MAE of any "
            f"model is {full[best]:.2f} (`{best}`; the forest {full.get('rf500', float('nan')):.2f}).")


def cost_table(results):
    """Seconds per AAM epoch by task, from the recipes' own timings: what a budget of epochs costs."""
    lines = []
    for name, task in results["tasks"].items():
        for key, items in sorted(task.get("timing", {}).items()):
            model, fraction = key.split("@")
            infos = [i["info"] for i in items if i.get("info", {}).get("pretrain_epochs_run") and
                     not i["info"].get("pretrain_reused")]
            if not infos:
                continue
            pre = [i["pretrain_seconds"] / i["pretrain_epochs_run"] for i in infos]
            done = [i["info"] for i in items if i.get("info", {}).get("train_epochs_run")]
            fine = [i["train_seconds"] / i["train_epochs_run"] for i in done]
            pred = [i["predict_seconds"] for i in done]
            runs = [f"{i['pretrain_epochs_run']}/{i['train_epochs_run']}" for i in done]
            lines.append(f"| {name} | {model} | {fraction} | {np.mean(pre):.0f} | {np.mean(fine):.1f} | "
                         f"{np.mean(pred):.1f} | {', '.join(runs)} | {task['runs_by_model'].get(key, '')} |")
    if not lines:
        return ""
    return ("| task | model | labels | s / pretraining epoch | s / fine-tuning epoch | s to predict | epochs run "
            "per fold (pretraining/fine-tuning) | run |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(lines))


def write(results, out_dir, docs_path, log=None):
    """Write the docs page and its figures from `results` (and the predictions and folds files in `out_dir`)."""
    from benchmarks.heldout_store import atomic_write
    docs_dir = os.path.dirname(os.path.abspath(docs_path))
    rel_results = os.path.relpath(out_dir, docs_dir)
    yard = Y.compute(results, out_dir, log=log)
    lines = _intro(results, rel_results) + _summary_section(results, yard)
    notes = os.path.join(docs_dir, NOTES)
    if os.path.exists(notes):
        # the method work's reading of these tables (hand-written; every figure it quotes is in the tables below)
        with open(notes) as fh:
            lines += [fh.read().rstrip("\n"), ""]
    lines += _method_section(results, rel_results)
    costs = cost_table(results)
    if costs:
        lines += ["## What AAM's epochs cost", "",
                  "Mean over folds, measured inside each run (wall-clock seconds on the machine named above; the "
                  f"engine's defaults are {_engine_epochs()}, so a budget of fewer epochs is what a run trades "
                  "for time). Fine-tuning "
                  "seconds include building the frozen base's ASV cache and validation.", "", costs, ""]
    for name, task in results["tasks"].items():
        lines += _task_section(name, task, yard.get(name, {}), out_dir, docs_dir, rel_results)
    lines += _label_section(results, docs_dir)
    if os.path.abspath(out_dir) == os.path.abspath(os.path.join(os.path.dirname(FULL_DIR), "heldout")):
        # the project's own page shows make heldout-full's results too, and the shipped base's rows
        lines += full_section(log=log) + repeats_section(log=log)
        lines += base_section(results, out_dir, yard)
    atomic_write(docs_path, "\n".join(lines).rstrip() + "\n")


def _intro(results, rel_results):
    lines = ["# How well does AAM predict held-out samples? (the held-out benchmark)", "",
             f"Generated by `benchmarks/heldout_report.py` from `{rel_results}/results.json`; do not edit by hand. "
             "Rebuild with `make heldout` (runs everything) or `python -m benchmarks.heldout --report-only`.", "",
             "## Runs behind these figures", ""]
    return lines + [f"- `{run_id}`: " + _describe_run(run) for run_id, run in sorted(results["runs"].items())]


RULE = ("A model is **ahead** of a reference on a task only when the 95% interval of its paired difference (MAE "
        "for regression, accuracy for classification; both models scored on the same held-out samples, pooled over "
        "the 5 folds, resampled 1,000 times by whole groups: subjects, houses, sampling events, or samples where "
        "a task has no groups) excludes parity on the better side; **behind** when it excludes parity on the worse "
        "side; **level** otherwise. Task-folds: the per-fold gains (accuracy difference, 1 − MAE ratio) over every "
        "task with a two-sided sign test and Wilcoxon signed-rank test (scipy). The goal: ahead on at least half "
        "of the tasks and behind on none.")


def _summary_section(results, yard):
    return ["", "## Summary", "",
            "Mean ± standard deviation over the held-out folds. Regression: MAE in the target's units and MAE "
            "relative to the 500-tree forest on the same folds; classification: accuracy, and accuracy minus the "
            "500-tree forest's on the same folds. These are descriptive; which differences are real is decided by "
            "the intervals below.", "",
            summary_table(results), "",
            "### Against the goal, by the interval rule", "", RULE, "",
            "Against the forest on the same input (`rf500-rel`):", "", goal_table(results, yard, "rf500-rel"), "",
            "Against the best classical baseline (`best-classical`: per training fold, the recipe of "
            f"{', '.join(f'`{c}`' for c in B.CLASSICAL_CANDIDATES)} that a 3-fold grouped inner CV on the "
            "training samples scores best; never chosen on the held-out fold):", "",
            goal_table(results, yard, "best-classical"), "",
            f"The default (`{Y.DEFAULT}`) task by task, every metric (pooled held-out predictions; 95% intervals "
            "over groups):", "", default_detail_table(results, yard), "",
            "### Confounds: what reads per sample alone predict", "",
            "`depth` is a model of log10 reads per sample alone (logistic regression; a forest for regression). A "
            f"task where it scores within {Y.CONFOUND_MARGIN} of the best other model and at least "
            f"{Y.CONFOUND_MARGIN} above the constant (accuracy or AUC; R² for regression) is flagged "
            "**confounded**: a model's score there may be sequencing depth, not biology. `constant` is the "
            "training mean or majority class; 'best model vs constant' is the paired verdict of the best model "
            "against it (a task where no model is ahead of the constant has taught no model anything measurable).",
            "", confound_table(results, yard), ""]


def _method_section(results, rel_results):
    lines = ["## Method", "",
             "- **Folds.** k-fold cross-validation, fold assignment fixed by the seed and written to "
             f"`{rel_results}/folds/<task>.tsv` (sample, group, fold, fold depth, scored or not). Grouped by "
             "subject (house, sampling event) where samples repeat, so no group is on both sides; each task says "
             "why below.",
             "- **Rarefaction.** Each fold's depth is chosen on its training samples only (the depth that keeps 90% "
             "of them; a depth-matched task fixes it); one seeded rarefied draw of the fold is given to every model. "
             "Held-out samples with fewer reads than the depth are given to no model (listed in the folds file as "
             "not scored, and counted per class under each task). AAM receives the raw counts with that depth and "
             "rarefies them itself (anew each epoch; predictions average 5 draws), as it does for a user; in a "
             "depth-matched task every model, AAM's ensemble forest included, gets the rarefied draw only.",
             "- **Same samples for every model.** Metrics are computed on the held-out samples every model of the "
             "task predicted; a sample a model did not predict is counted in its 'scored / held-out' column.",
             "- **Intervals.** " + RULE + " Their coverage on simulated grouped data is checked by "
             "`python -m benchmarks.stats_coverage` (`benchmarks/results/stats_coverage.md`): resampling subjects "
             "covers the true difference 93-96% of the time at a nominal 95%, resampling samples of 20-sample "
             "subjects only 43%.",
             "- **Hyperparameters** are chosen inside the training folds only (grouped inner CV for the linear, "
             "neighbour and best-classical baselines; AAM's grouped validation split of the training samples for "
             "early stopping and the best epoch); never on the held-out fold.",
             "- **Label fractions** (learning curves) give models the labels of a seeded, nested subset of the "
             "training subjects; the held-out fold is unchanged, and pretraining may use every training table.",
             f"- **Budget.** AAM rows run the engine's defaults ({_engine_epochs()}) unless a run states an "
             "epoch budget (in the run list and in each AAM row; compare budgets with `--tag`). `make heldout` "
             "runs two folds at a time (`--jobs 2`, one thread each); what AAM's epochs cost per task is in "
             "'What AAM's epochs cost' below.",
             "", "Models:", ""]
    seen = {m for t in results["tasks"].values() for f in t.get("results", {}).values() for m in f}
    for m in _order(seen):
        rec = M.RECIPES.get(m.split(":")[0])
        tag = f" (tagged run `{m.split(':', 1)[1]}`)" if ":" in m else ""
        lines.append(f"- `{m}`: " + (rec.description if rec else "(recipe no longer registered)") + tag)
    return lines + ["", "The forests are q2-sample-classifier's estimator as `fit-classifier` / `fit-regressor` build "
                    "it (`Pipeline([DictVectorizer(), RandomForest*(n_estimators, n_jobs=1)])` on the table's counts, "
                    "scikit-learn defaults otherwise: `max_features='sqrt'` for classifiers, all features for "
                    "regressors; no feature selection, no tuning), with `random_state` set to the seed.", "",
                    "Adding a model: register a recipe in `benchmarks/heldout_models.py`, "
                    "`@recipe(\"name\", \"one line\")` on `def fn(fold, seed, budget) -> Prediction` (train on "
                    "`fold.train`, optionally pretrain on `fold.pool`, predict every sample of `fold.test`; choose "
                    "hyperparameters inside the training samples only), then `python -m benchmarks.heldout --models "
                    "name` adds its rows to these tables next to the stored ones (same folds, same samples).", ""]


def _task_section(name, task, y, out_dir, docs_dir, rel_results):
    from benchmarks.heldout_store import read_predictions
    lines = [f"## {name}", "", f"{task['description']}. Target `{task['column']}` ({task['kind']}"
             + (f", classes {', '.join(task['classes'])}" if task.get("classes") else "") + "); "
             f"{task['n_samples']} samples, {task['n_groups']} groups, {task['n_features']} features; "
             f"distances: {task['beta'].replace('_', ' ')}" + (f" ({task['tree']})" if task.get("tree") else "")
             + ".", "", f"Grouping: {task['grouping']}", ""]
    if task.get("notes"):
        lines += ["Data: " + "; ".join(task["notes"]) + ".", ""]
    depths = ", ".join(str(f["depth"]) for f in task["folds"])
    below = sum(f["n_test_below_depth"] for f in task["folds"])
    heldout = sum(f["n_test"] for f in task["folds"])
    per_class = below_depth_by_class(out_dir, task)
    lines += [f"Rarefaction depth per fold: {depths}; {heldout} held-out samples scored, {below} below the "
              "depth (not given to any model" + (f"; by class: {per_class}" if per_class else "") + "). Folds: "
              f"`{rel_results}/{task['folds_file']}`; predictions: `{rel_results}/{task['predictions_file']}`.", ""]
    if "1" in task.get("results", {}):
        lines += ["Per fold (mean ± sd over folds):", "", task_table(task), ""]
    table = interval_table(name, task, y)
    if table:
        lines += [f"Pooled over the folds ({y['n_samples']} samples, {y['n_groups']} groups; 95% intervals over "
                  "groups), with the verdict by the interval rule:", "", table, ""]
    subject = subject_table(y)
    if subject:
        lines += [subject, ""]
    preds = read_predictions(out_dir, name, task.get("classes"))
    fig = os.path.join(FIGURE_DIR, f"{name}.png")
    if figure_task(name, task, preds, os.path.join(docs_dir, fig)):
        lines += [f"![{name}]({fig})", ""]
    return lines


def _label_section(results, docs_dir):
    curves = {n: t for n, t in results["tasks"].items() if len(t.get("results", {})) > 1}
    if not curves:
        return []
    lines = ["## Label efficiency", ""]
    for name, task in curves.items():
        fig = os.path.join(FIGURE_DIR, f"{name}-labels.png")
        figure_curve(name, task, os.path.join(docs_dir, fig))
        lines += [f"### {name}", "", curve_table(task), "", f"![{name} label efficiency]({fig})", ""]
        if name == LABEL_GOAL["task"]:
            goal = label_goal_table(task)
            if goal:
                lines += ["Against the issue's label-efficiency goal (MAE at least "
                          f"{1 - LABEL_GOAL['ratio']:.0%} below the 500-tree forest's with 10-25% of the "
                          "labels), per fold relative to the forest, then averaged:", "", goal, ""]
    return lines


README_START = "<!-- heldout-summary:start"
README_END = "<!-- heldout-summary:end -->"


def update_readme(results, readme_path, docs_link="docs/science.md", out_dir=None):
    """Replace the summary between the README's heldout-summary markers (if it has them) with the measured one:
    the goal tables by the interval rule and the confound flags. Returns whether the README changed."""
    from benchmarks.heldout_store import RESULTS, atomic_write
    if not os.path.exists(readme_path):
        return False
    with open(readme_path) as fh:
        text = fh.read()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    yard = Y.compute(results, out_dir or RESULTS)
    head_end = text.index("\n", start) + 1
    runs = sorted(results["runs"].values(), key=lambda r: r["date"])
    dates = ", ".join(sorted({r["date"].split()[0] for r in runs}))
    block = (f"Measured {dates} (commands, machine and budget in [{docs_link}]({docs_link}); every figure "
             "recomputed from the stored predictions by `python -m benchmarks.heldout --report-only`). " + RULE
             + "\n\nAgainst the forest on the same input (`rf500-rel`):\n\n"
             + goal_table(results, yard, "rf500-rel", README_MODELS) + "\n\nAgainst the best classical baseline "
             "(chosen per training fold by inner grouped CV):\n\n"
             + goal_table(results, yard, "best-classical", README_MODELS) + "\n\nReads per sample alone "
             "(`depth`) against the best other model; **confounded** when within "
             f"{Y.CONFOUND_MARGIN}:\n\n" + confound_table(results, yard) + "\n")
    new = text[:head_end] + block + text[end:]
    if new != text:
        atomic_write(readme_path, new)
    return new != text


# ------------------------------------------------------------------------------------------------ the yardstick

#: the default and the baselines every reading is judged with (the goal tables of the docs)
GOAL_MODELS = ("aam+rf-axes-1se", "rf500-rel+aam", "aam", "rf500", "rf500-rel", "rf500-rel+pcoa", "best-classical",
               "clr-linear", "knn", "et100", "gb100", "depth", "constant")


def _ci(iv, digits=3):
    """'0.812 [0.750, 0.871]' from an Interval dict ('–' when undefined)."""
    if not iv or iv.get("estimate") is None:
        return "–"
    text = f"{iv['estimate']:.{digits}f}"
    if iv.get("low") is not None:
        text += f" [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"
    return text


def _signed_ci(iv, digits=3):
    if not iv or iv.get("estimate") is None:
        return "–"
    text = f"{iv['estimate']:+.{digits}f}"
    if iv.get("low") is not None:
        text += f" [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"
    return text


def _digits(kind):
    return 2 if kind == "regression" else 3


def _p(value):
    return "–" if value is None else (f"{value:.2g}" if value >= 0.001 else "<0.001")


def verdicts(results, yard, model, reference):
    """Task -> (verdict, difference Interval dict) of `model` against `reference` on each task's headline metric."""
    out = {}
    for name, entry in results["tasks"].items():
        comp = yard.get(name, {}).get("comparisons", {}).get(reference, {}).get(model)
        if comp:
            c = comp[Y.headline(entry["kind"])]
            out[name] = (c["verdict"], c["difference"])
    return out


def goal_table(results, yard, reference, models=GOAL_MODELS):
    """Markdown: each model against `reference` by the interval rule, task by task, and over every task-fold.

    A model is ahead on a task when the 95% interval of its paired difference from the reference (MAE or accuracy,
    bootstrap over the task's groups) lies entirely on the better side of 0; behind when on the worse side; level
    otherwise. The goal: ahead on at least half of the tasks it was compared on and behind on none.
    """
    lines = [f"| model | ahead of {reference} | level | behind | task-folds won / lost / tied | sign test p | "
             "Wilcoxon p | goal met |", "|---|---|---|---|---|---|---|---|"]
    for m in models:
        v = verdicts(results, yard, m, reference)
        if m == reference or not v:
            continue
        by = {k: [t for t, (verdict, _) in v.items() if verdict == k] for k in S.VERDICTS}
        tests = S.fold_tests(Y.fold_gains(results, m, reference, tasks=set(v)))
        met = len(by["ahead"]) * 2 >= len(v) and not by["behind"]
        ahead = f"{len(by['ahead'])} of {len(v)}" + (f" ({', '.join(by['ahead'])})" if by["ahead"] else "")
        behind = f"{len(by['behind'])}" + (f" ({', '.join(by['behind'])})" if by["behind"] else "")
        lines.append(f"| {m} | {ahead} | {len(by['level'])} | {behind} | {tests.wins} / {tests.losses} / "
                     f"{tests.ties} | {_p(tests.sign_p)} | {_p(tests.wilcoxon_p)} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def default_detail_table(results, yard, model=Y.DEFAULT, references=("rf500-rel", "best-classical")):
    """Markdown: the default against each reference on every task and metric: both values, the paired difference
    with its 95% interval, the verdict."""
    lines = ["| task | against | metric | " + model + " | reference | difference [95% interval] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for name, entry in results["tasks"].items():
        y = yard.get(name, {})
        d = _digits(entry["kind"])
        for ref in references:
            comp = y.get("comparisons", {}).get(ref, {}).get(model)
            for metric, c in (comp or {}).items():
                a, b = y["intervals"][model][metric], y["intervals"][ref][metric]
                lines.append(f"| {name} | {ref} | {METRIC_LABELS.get(metric, metric)} | {_ci(a, d)} | {_ci(b, d)} | "
                             f"{_signed_ci(c['difference'], d)} | {c['verdict']} |")
    return "\n".join(lines)


def confound_table(results, yard):
    """Markdown: per task, depth alone and the constant beside the best model; 'confounded' when depth alone is
    within `heldout_yardstick.CONFOUND_MARGIN` of the best model."""
    lines = ["| task | metric | reads per sample alone (`depth`) | constant | best other model | best model vs "
             "constant | flag |", "|---|---|---|---|---|---|---|"]
    for name, entry in results["tasks"].items():
        y = yard.get(name, {})
        flag, found = Y.confound(entry, y)
        d = _digits(entry["kind"])
        for metric, (_, best, value, _) in found.items():
            const = y["intervals"].get("constant", {}).get(metric)
            comp = y.get("comparisons", {}).get("constant", {}).get(best, {}).get(metric)
            versus = f"{comp['verdict']} {_signed_ci(comp['difference'], d)}" if comp else ""
            lines.append(f"| {name} | {METRIC_LABELS.get(metric, metric)} | "
                         f"{_ci(y['intervals']['depth'][metric], d)} | {_ci(const, d)} | {best} {value:.{d}f} | "
                         f"{versus} | {'**confounded**' if flag else '–'} |")
    return "\n".join(lines)


def interval_table(name, task, y):
    """Markdown: every model's metrics on the task's pooled held-out predictions with 95% intervals over its groups,
    and its verdict against rf500-rel and the best classical baseline (headline metric)."""
    if not y.get("intervals"):
        return ""
    metrics = Y.task_metrics(task["kind"], task.get("classes"))
    head = Y.headline(task["kind"])
    refs = [r for r in ("rf500-rel", "best-classical") if r in y["intervals"]]
    lines = ["| model | " + " | ".join(METRIC_LABELS.get(m, m) for m in metrics) + "".join(
        f" | vs {r} ({METRIC_LABELS[head]})" for r in refs) + " |", "|---|" + "---|" * (len(metrics) + len(refs))]
    d = _digits(task["kind"])
    for m in _order(y["intervals"]):
        cells = [_ci(y["intervals"][m][k], d) for k in metrics]
        for r in refs:
            c = y["comparisons"].get(r, {}).get(m)
            cells.append(f"{c[head]['verdict']} {_signed_ci(c[head]['difference'], d)}" if c else "")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def subject_table(y, models=GOAL_MODELS):
    """Markdown: group-level scores (mean probability of each group's samples) where every group has one label."""
    sub = y.get("subject_level")
    if not sub:
        return ""
    metrics = [m for m in ("accuracy", "balanced_accuracy", "auc") if m in next(iter(sub["intervals"].values()))]
    lines = ["| model | " + " | ".join(METRIC_LABELS[m] for m in metrics) + " | vs rf500-rel (accuracy) |",
             "|---|" + "---|" * (len(metrics) + 1)]
    for m in _order(sub["intervals"]):
        if m not in models:
            continue
        c = sub["comparisons"].get("rf500-rel", {}).get(m)
        lines.append(f"| {m} | " + " | ".join(_ci(sub["intervals"][m][k]) for k in metrics) + " | "
                     + (f"{c['accuracy']['verdict']} {_signed_ci(c['accuracy']['difference'])}" if c else "") + " |")
    return (f"Scored per group ({sub['n_groups']} groups, each with one label; a group's prediction is the mean "
            "of its samples' probabilities; intervals over groups):\n\n" + "\n".join(lines))


def below_depth_by_class(out_dir, task):
    """'Control 9 of 277, Crohns 46 of 193': held-out samples below the fold's depth, by class ('' for regression)."""
    if not task.get("classes"):
        return ""
    frame = pd.read_csv(os.path.join(out_dir, task["folds_file"]), sep="\t", dtype={"target": str})
    counts = frame.groupby("target")["scored"].agg(lambda s: int((s != "yes").sum()))
    totals = frame.groupby("target").size()
    return ", ".join(f"{c} {counts[c]} of {totals[c]}" for c in totals.index)


# ------------------------------------------------------------------------------------------------ make heldout-full

FULL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "heldout-full")


def cross_table(cross):
    """Markdown: each cross-study task's models on the target study with 95% intervals over its subjects, and the
    verdicts (accuracy) against the constant and the two forests."""
    refs = ("constant", "rf500-genus", "rf500-seq100")
    lines = ["| task | model | accuracy | balanced accuracy | AUC | AUPRC | " + " | ".join(f"vs {r}" for r in refs)
             + " | target reads on source features |", "|---|---|---|---|---|---|" + "---|" * (len(refs) + 1)]
    for name, task in cross["tasks"].items():
        transductive = set(task.get("transductive", []))
        for model, iv in task["intervals"].items():
            verdicts = []
            for ref in refs:
                comp = task["comparisons"].get(ref, {}).get(model)
                verdicts.append(f"{comp['accuracy']['verdict']} {_signed_ci(comp['accuracy']['difference'])}"
                                if comp else "")
            overlap = task["feature_overlap"].get(model)
            cells = [_ci(iv.get(k)) for k in ("accuracy", "balanced_accuracy", "auc", "auprc")]
            label = f"{model} (transductive)" if model in transductive else model
            lines.append(f"| {name} | {label} | " + " | ".join(cells) + " | " + " | ".join(verdicts) + " | "
                         + ("" if overlap is None else f"{overlap:.0%}") + " |")
    return "\n".join(lines)


def _cross_notes(cross):
    lines = []
    for name, task in cross["tasks"].items():
        src, tgt = task["source"], task["target"]
        below = ", ".join(f"{c} {n}" for c, n in sorted(tgt["below_depth"].items())) or "none"
        commands = task.get("commands") or {m: task.get("command", "") for m in task["intervals"]}
        by_command = {}
        for model, command in commands.items():
            by_command.setdefault(command.strip(), []).append(model)
        seconds = ", ".join(f"{m} {v:.0f} s" for m, v in task["seconds"].items() if v is not None)
        lines.append(f"- `{name}`: {task['description']}. Source {src['study']} ({src['n_samples']} samples: "
                     + ", ".join(f"{c} {n}" for c, n in sorted(src["classes"].items())) + f"); target {tgt['study']} "
                     f"({tgt['n_samples']} samples of {tgt['n_groups']} groups: "
                     + ", ".join(f"{c} {n}" for c, n in sorted(tgt["classes"].items()))
                     + f"; below {task['depth']} reads, left out: {below}); intervals resample {tgt['resampled']}; "
                     f"seconds per model: {seconds}; commands: "
                     + "; ".join(f"`{c}` ({', '.join(ms)})" for c, ms in by_command.items()) + ".")
    return lines


def full_section(full_dir=FULL_DIR, log=None):
    """The section of `make heldout-full`'s results (American Gut in-study tasks, cross-study tasks), or []."""
    import json
    from benchmarks.heldout_store import load_results
    lines = []
    if os.path.exists(os.path.join(full_dir, "results.json")):
        results = load_results(full_dir)
        yard = Y.compute(results, full_dir, log=log)
        lines += ["## American Gut tasks (`make heldout-full`)", "",
                  "In-study tasks of `../shared/data/american-gut` (Greengenes 13_8 OTUs of 100 nt reads, rarefied "
                  "to 10,000 reads upstream, so depth carries little here), grouped by participant, 5 folds; "
                  f"results in `{os.path.relpath(full_dir, os.path.dirname(FULL_DIR))}/`. Runs:", ""]
        lines += [f"- `{run_id}`: " + _describe_run(run) for run_id, run in sorted(results["runs"].items())]
        for name, task in results["tasks"].items():
            y = yard.get(name, {})
            lines += ["", f"### {name}", "", f"{task['description']}; {task['n_samples']} samples, "
                      f"{task['n_groups']} participants. Data: " + "; ".join(task.get("notes", [])) + ".", "",
                      f"Pooled over the folds ({y.get('n_samples')} samples; 95% intervals over participants):", "",
                      interval_table(name, task, y)]
        lines += ["", "Reads per sample alone against the best other model:", "", confound_table(results, yard), ""]
    cross_path = os.path.join(full_dir, "cross.json")
    if os.path.exists(cross_path):
        with open(cross_path) as fh:
            cross = json.load(fh)
        lines += ["## Cross-study tasks (`make heldout-full`)", "",
                  "Trained on every labelled sample of one study, scored on another (no sample, subject or feature "
                  "ID shared). Every sample of both studies rarefied to the same depth first. Models: a 500-tree "
                  "forest on genus-level relative abundances (`rf500-genus`), the same on exact sequences cut to "
                  "100 nt (`rf500-seq100`), the source's majority class (`constant`); AAM fitted on the source "
                  "from the shipped base `ag-pgp-v4` with the engine's other defaults (`base+rf`; its network member "
                  "alone, the default head over the frozen base: `base`) and with today's per-study pretraining on "
                  "the source (`aam+rf-axes-1se`, its network member: `aam`). The base was pretrained on the tables "
                  "of American Gut and PGP (never their labels): its rows with PGP as target are marked "
                  "transductive. `benchmarks/heldout_cross.py` says how each is built. A model is ahead or behind "
                  "only when the paired 95% interval of the difference excludes 0.", ""]
        lines += _cross_notes(cross) + ["", cross_table(cross), ""]
    return lines


def base_section(results, out_dir, yard):
    """The shipped base's rows (benchmarks.heldout_base_report), with make heldout-full's cross-study results."""
    import json
    from benchmarks import heldout_base_report
    cross_path = os.path.join(FULL_DIR, "cross.json")
    cross = None
    if os.path.exists(cross_path):
        with open(cross_path) as fh:
            cross = json.load(fh)
    return heldout_base_report.section(results, out_dir, yard, cross)


#: the models of the repeated cross-validation (make heldout-full) and what they are compared with
REPEAT_MODELS = (Y.DEFAULT, "rf500-rel", "best-classical")
REPEAT_SEEDS = (1, 2, 3)


def repeats_section(full_dir=FULL_DIR, log=None):
    """Markdown: the default against rf500-rel and best-classical over 3 repeats of grouped 5-fold CV (fold seeds
    `REPEAT_SEEDS`): the verdict of each repeat and the sign / Wilcoxon tests over all 15 folds of each task."""
    from benchmarks.heldout_store import load_results
    repeats = {}
    for seed in REPEAT_SEEDS:
        folder = os.path.join(full_dir, f"repeat-{seed}")
        if os.path.exists(os.path.join(folder, "results.json")):
            results = load_results(folder)
            repeats[seed] = (results, Y.compute(results, folder, log=log))
    if not repeats:
        return []
    tasks = sorted({t for results, _ in repeats.values() for t in results["tasks"]})
    lines = ["## Repeated cross-validation (`make heldout-full`)", "",
             f"{len(repeats)} repeat(s) of grouped 5-fold CV with fold seeds {', '.join(map(str, repeats))} "
             f"(folds in `repeat-<seed>/folds/`): `{Y.DEFAULT}` against each reference, the verdict of each repeat "
             "(interval rule) and, over every fold of every repeat, the per-fold gains with a sign test and a "
             "Wilcoxon test.", "",
             "| task | against | verdict per repeat | folds won / lost / tied | sign test p | Wilcoxon p |",
             "|---|---|---|---|---|---|"]
    for name in tasks:
        for ref in REPEAT_MODELS[1:]:
            verdict, gains = [], []
            for results, yard in repeats.values():
                if name not in results["tasks"]:
                    continue
                v = verdicts({"tasks": {name: results["tasks"][name]}}, yard, Y.DEFAULT, ref).get(name)
                verdict.append(v[0] if v else "–")
                gains += Y.fold_gains(results, Y.DEFAULT, ref, tasks={name})
            tests = S.fold_tests(gains)
            lines.append(f"| {name} | {ref} | {', '.join(verdict)} | {tests.wins} / {tests.losses} / {tests.ties} | "
                         f"{_p(tests.sign_p)} | {_p(tests.wilcoxon_p)} |")
    return lines + [""]
