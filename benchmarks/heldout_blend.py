"""Readings of the stored held-out results that the generated page does not compute (docs/science-notes.md).

1. The network's share inside each fold's ensemble, read back from the stored predictions: the blend is
   ``share x network + (1 - share) x forest``, so a least-squares fit of the ``aam+rf`` row on the ``aam`` row
   (its network) and the ``rf500-rel`` row (the same forest alone) recovers it. Exact for the untagged ``aam+rf``
   rows, whose network is the ``aam`` row's; approximate for ``aam+rf:split``, whose network stopped on half the
   validation samples.
2. What fixed shares would have scored on the test folds. For scale only: choosing a share from these numbers
   would be tuning on the test folds.
3. The share each newer ensemble row's model chose, as its record says (the harness stores it since run
   20261201-055642).
4. How well pretraining fitted each study: the best validation correlation of embedding distances with the
   study's distances per fold, from the logs of the runs that trained the ``aam`` rows (``logs/<run>.log.gz``).

Run: ``python -m benchmarks.heldout_blend`` (writes ``benchmarks/results/heldout/blend-analysis.md``).
"""
import glob
import gzip
import json
import os
import re
from collections import defaultdict

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "heldout")
SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)


def _rows(task, model):
    d = pd.read_csv(os.path.join(RESULTS, "predictions", f"{task}.tsv"), sep="\t")
    d = d[(d.label_fraction == 1) & (d.model == model)]
    return d.set_index("sample_id").sort_index()


def _parts(task):
    net, forest = _rows(task, "aam"), _rows(task, "rf500-rel")
    cols = [c for c in net.columns if c.startswith("p:")] or ["prediction"]
    return net, forest, cols


def shares(task, model):
    """Least-squares share of the network per fold, [n_folds]."""
    net, forest, cols = _parts(task)
    blend = _rows(task, model)
    out = []
    for f in sorted(net.fold.unique()):
        ids = net.index[net.fold == f]
        a, r, b = (x.loc[ids, cols].to_numpy(float) for x in (net, forest, blend))
        out.append(float(np.linalg.lstsq((a - r).reshape(-1, 1), (b - r).reshape(-1), rcond=None)[0][0]))
    return out


def fixed_share_scores(task):
    """Mean over folds of accuracy (classification) or MAE (regression) of each fixed share."""
    net, forest, cols = _parts(task)
    scores = {}
    for w in SHARES:
        per = []
        for f in sorted(net.fold.unique()):
            ids = net.index[net.fold == f]
            p = w * net.loc[ids, cols].to_numpy(float) + (1 - w) * forest.loc[ids, cols].to_numpy(float)
            truth = net.loc[ids, "truth"]
            if cols == ["prediction"]:
                per.append(np.mean(np.abs(p[:, 0] - truth.astype(float).to_numpy())))
            else:
                labels = np.array([c[2:] for c in cols])
                per.append(np.mean(labels[p.argmax(1)] == truth.astype(str).to_numpy()))
        scores[w] = float(np.mean(per))
    return scores


def recorded_shares():
    """{(task, model): [share per fold]} of the ensemble rows whose runs recorded the share their model chose
    (``ensemble_share`` in the row's info: exact, read from each model's record)."""
    with open(os.path.join(RESULTS, "results.json")) as fh:
        tasks = json.load(fh)["tasks"]
    out = {}
    for task, entry in tasks.items():
        for key, items in entry.get("timing", {}).items():
            model, fraction = key.rsplit("@", 1)
            shares = [(i.get("info") or {}).get("ensemble_share") for i in sorted(items, key=lambda i: i["fold"])]
            if fraction == "1" and shares and all(s is not None for s in shares):
                out[(task, model)] = shares
    return out


def _transductive_runs():
    """Run IDs whose AAM rows pretrained on the held-out tables too (aam-all recipes): their validation samples
    include held-out ones, so their fit is not comparable and is listed apart."""
    with open(os.path.join(RESULTS, "results.json")) as fh:
        runs = json.load(fh).get("runs", {})
    return {rid for rid, run in runs.items() if any(m.startswith("aam-all") for m in run.get("models", []))}


def pretraining_fit():
    """{(task, variant): [best validation correlation per fold]} from the stored run logs.

    A variant is what the pretraining read and how long it could run: "training tables, N epochs" (N from the
    log's epoch counter), or "training + held-out tables, N epochs" for the runs of `_transductive_runs`.
    """
    best = defaultdict(float)
    pattern = re.compile(r"\] (\S+) fold (\d+) f=1 aam: epoch \d+/(\d+) .*val/unifrac_r=([-\d.]+)")
    transductive = _transductive_runs()
    for path in sorted(glob.glob(os.path.join(RESULTS, "logs", "*.log.gz"))):
        tables = ("training + held-out tables" if os.path.basename(path)[:-len(".log.gz")] in transductive
                  else "training tables")
        with gzip.open(path, "rt") as fh:
            for line in fh:
                m = pattern.search(line)
                if m:
                    key = (m.group(1), f"{tables}, {m.group(3)} epochs", int(m.group(2)))
                    best[key] = max(best[key], float(m.group(4)))
    out = defaultdict(list)
    for (task, variant, _), r in sorted(best.items()):
        out[(task, variant)].append(r)
    return dict(out)


def main():
    tasks = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(RESULTS, "predictions", "*.tsv")))
    lines = ["# Readings of the stored held-out predictions", "",
             "Generated by `python -m benchmarks.heldout_blend` from `predictions/*.tsv` and `logs/*.log.gz`.", "",
             "## The network's share in each fold's ensemble (least squares on the stored predictions)", "",
             "| task | aam+rf (first rule) | aam+rf:split (approximate) |", "|---|---|---|"]
    for t in tasks:
        cells = []
        for model in ("aam+rf", "aam+rf:split"):
            try:
                cells.append(", ".join(f"{s:.2f}" for s in shares(t, model)))
            except (KeyError, ValueError):
                cells.append("–")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    recorded = recorded_shares()
    if recorded:
        lines += ["", "## The network's share as each model recorded it (runs since 2026-12-01 05:56)", "",
                  "| task | model | share per fold |", "|---|---|---|"]
        for (t, model), values in sorted(recorded.items()):
            lines.append(f"| {t} | {model} | {', '.join(f'{v:g}' for v in values)} |")
    lines += ["", "## Fixed shares on the test folds (for scale only: never a basis for a choice)", "",
              "| task | " + " | ".join(f"share {w:g}" for w in SHARES) + " |", "|---|" + "---|" * len(SHARES)]
    for t in tasks:
        s = fixed_share_scores(t)
        lines.append(f"| {t} | " + " | ".join(f"{s[w]:.3f}" for w in SHARES) + " |")
    lines += ["", "## Pretraining fit: best validation correlation of embedding distances with the study's distances",
              "", "Validation samples of the training folds (with held-out tables pretrained on, the validation "
              "split draws from them too). Default: training tables, 30 epochs.", "",
              "| task | pretraining | per fold | mean |", "|---|---|---|---|"]
    for (t, variant), rs in pretraining_fit().items():
        lines.append(f"| {t} | {variant} | {', '.join(f'{r:.2f}' for r in rs)} | {np.mean(rs):.2f} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS, "blend-analysis.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
