"""The shipped base's rows by the yardstick's rule (issue 23): label efficiency, in-study tasks, cross-study pairs.

Recomputed from the stored predictions (``make heldout``'s results folder and ``heldout-full/cross.json``), with the
paired group bootstrap of `benchmarks.heldout_yardstick`: a row is "ahead" or "behind" a reference only when the 95%
interval of the paired difference excludes 0. Written into docs/science.md (section "The shipped base") and into
``benchmarks/results/base_yardstick.md``, which ``python -m aam.base.export --measured`` puts in the model card.
"""
import os

import numpy as np
import pandas as pd

from benchmarks import heldout_yardstick as Y
from benchmarks.heldout_store import folds_path, read_predictions

BASE_ROW = "base+rf"
#: the rows the base is compared with, in the tables' order
REFERENCES = ("rf500-rel", "best-classical", Y.DEFAULT)
LABEL_TASKS = ("ecam-month", "ibd-ibd")
LABEL_FRACTIONS = (0.1, 0.25, 1.0)
MARKDOWN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "base_yardstick.md")


def fraction_scores(out_dir, name, entry, fraction, models):
    """Intervals and paired comparisons of `models` on task `name` at one label fraction (the samples every one of
    them predicted in each fold), or None when the base row is missing there."""
    preds = read_predictions(out_dir, name, entry.get("classes"))
    if preds.empty:
        return None
    preds = preds[np.isclose(preds["label_fraction"], fraction) & preds["model"].isin(models)]
    present = [m for m in models if (preds["model"] == m).any()]
    if BASE_ROW not in present or len(present) < 2:
        return None
    keep = []
    for _, grp in preds.groupby("fold"):
        counts = grp.groupby("sample_id")["model"].nunique()
        keep.append(grp[grp["sample_id"].isin(counts.index[counts == len(present)])])
    common = pd.concat(keep)
    folds = pd.read_csv(folds_path(out_dir, name), sep="\t", dtype={"sample_id": str, "group": str})
    pools = {m: Y.pooled(common, folds, m, entry) for m in present}
    groups = pools[BASE_ROW][2]
    scored = {m: p[0] for m, p in pools.items()}
    metrics = Y.task_metrics(entry["kind"], entry.get("classes"))
    resamples = Y.S.group_bootstrap_indices(groups, Y.N_RESAMPLES, Y.SEED)
    n_groups = len(set(groups))
    res = {m: {k: Y.S.Resampled(k, sc, resamples, n_groups) for k in metrics} for m, sc in scored.items()}
    head = Y.headline(entry["kind"])
    out = {"n_samples": len(groups), "n_groups": n_groups, "headline": head,
           "estimate": {m: r[head].interval().estimate for m, r in res.items()}, "against": {}}
    for ref in present:
        if ref != BASE_ROW:
            comparison = res[BASE_ROW][head].against(res[ref][head])
            out["against"][ref] = (comparison.verdict, comparison.difference)
    return out


def _signed(iv, digits=3):
    return f"{iv.estimate:+.{digits}f} [{iv.low:+.{digits}f}, {iv.high:+.{digits}f}]"


def label_table(results, out_dir):
    """Markdown rows: the base row against each reference at each label fraction of `LABEL_TASKS`."""
    lines = ["| task | labelled subjects | samples | " + f"{BASE_ROW} | "
             + " | ".join(f"{r}: score, verdict (difference [95% CI])" for r in REFERENCES) + " |",
             "|---|---|---|---|" + "---|" * len(REFERENCES)]
    for name in LABEL_TASKS:
        entry = results["tasks"].get(name)
        if entry is None:
            continue
        for fraction in LABEL_FRACTIONS:
            found = fraction_scores(out_dir, name, entry, fraction, (BASE_ROW,) + REFERENCES)
            if found is None:
                continue
            cells = []
            for ref in REFERENCES:
                if ref in found["against"]:
                    verdict, diff = found["against"][ref]
                    cells.append(f"{found['estimate'][ref]:.3f}, {verdict} {_signed(diff)}")
                else:
                    cells.append("not run")
            lines.append(f"| {name} ({found['headline']}) | {fraction:.0%} | {found['n_samples']} | "
                         f"{found['estimate'][BASE_ROW]:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def in_study_table(results, yard):
    """Markdown rows: the base row on every task at fraction 1 against each reference (the yardstick's intervals)."""
    lines = ["| task | " + f"{BASE_ROW} | " + " | ".join(f"vs {r}" for r in REFERENCES[:2]) + f" | {Y.DEFAULT} | "
             f"{Y.DEFAULT} vs rf500-rel |", "|---|---|" + "---|" * (len(REFERENCES[:2]) + 2)]
    for name, entry in results["tasks"].items():
        y = yard.get(name, {})
        iv = y.get("intervals", {}).get(BASE_ROW)
        if not iv:
            continue
        head = Y.headline(entry["kind"])
        cells = []
        for ref in REFERENCES[:2]:
            comp = y.get("comparisons", {}).get(ref, {}).get(BASE_ROW, {}).get(head)
            cells.append(f"{comp['verdict']} {_signed_dict(comp['difference'])}" if comp else "–")
        default = y.get("intervals", {}).get(Y.DEFAULT, {}).get(head)
        default_vs = y.get("comparisons", {}).get("rf500-rel", {}).get(Y.DEFAULT, {}).get(head)
        lines.append(f"| {name} ({head}) | {_ci(iv[head])} | " + " | ".join(cells) + f" | {_ci(default)} | "
                     + (f"{default_vs['verdict']} {_signed_dict(default_vs['difference'])}" if default_vs else "–")
                     + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _ci(iv, digits=3):
    return "–" if not iv else f"{iv['estimate']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"


def _signed_dict(iv, digits=3):
    return f"{iv['estimate']:+.{digits}f} [{iv['low']:+.{digits}f}, {iv['high']:+.{digits}f}]"


def cross_rows(cross):
    """Markdown rows: the base rows (and today's per-study AAM) on each cross-study pair against the two forests."""
    models = (BASE_ROW, "base", "aam+rf-axes-1se", "aam")
    refs = ("rf500-genus", "rf500-seq100", "constant")
    lines = ["| pair | model | accuracy | balanced accuracy | AUC | " + " | ".join(f"vs {r} (accuracy)" for r in refs)
             + " |", "|---|---|---|---|---|" + "---|" * len(refs)]
    for name, task in cross.get("tasks", {}).items():
        transductive = set(task.get("transductive", []))
        for model in models:
            iv = task["intervals"].get(model)
            if not iv:
                continue
            cells = []
            for ref in refs:
                comp = task["comparisons"].get(ref, {}).get(model, {}).get("accuracy")
                cells.append(f"{comp['verdict']} {_signed_dict(comp['difference'])}" if comp else "–")
            label = model + (" (transductive: the base read PGP's tables)" if model in transductive else "")
            lines.append(f"| {name} | {label} | " + " | ".join(_ci(iv.get(k)) for k in
                                                               ("accuracy", "balanced_accuracy", "auc"))
                         + " | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def section(results, out_dir, yard, cross):
    """The docs section (list of lines), also written to `MARKDOWN` for the model card; [] without base rows."""
    tables = [("Cross-study pairs (trained on all labelled American Gut samples, scored on another study; 95% "
               "intervals over the target's subjects; `python -m benchmarks.heldout_cross --models base+rf base`)",
               cross_rows(cross) if cross else ""),
              ("Few labels (the same folds and seeded label subsets as the other rows; paired 95% intervals over "
               "subjects; `python -m benchmarks.heldout --tasks ecam-month ibd-ibd --label-fractions 0.1 0.25 "
               "--models base+rf`)", label_table(results, out_dir)),
              ("In-study tasks, all labels (`python -m benchmarks.heldout --models base+rf`)",
               in_study_table(results, yard))]
    tables = [(title, table) for title, table in tables if table]
    if not tables:
        return []
    body = []
    for title, table in tables:
        body += [f"{title}:", "", table, ""]
    with open(MARKDOWN + ".tmp", "w") as fh:
        fh.write("\n".join(body))
    os.replace(MARKDOWN + ".tmp", MARKDOWN)
    intro = ["## The shipped base (`--p-base ag-pgp-v4`)", "",
             f"`{BASE_ROW}`: fit from the shipped base `ag-pgp-v4` with every other option at the engine's default "
             "(no pretraining on the study); `base`: its network member alone. A row is ahead or behind only when "
             "the paired 95% interval excludes 0; MAE: lower is better, so a negative difference is a gain. "
             "`docs/base.md` says how the base was built and reads these tables.", ""]
    return intro + body
