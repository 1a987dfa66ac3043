"""AAM against a random forest on held-out samples of a real study (ibd-2538: Crohn's disease vs control).

The split is grouped by subject (25 samples per subject in this study), so no subject is on both sides; a
sample-level split would leak subjects and flatter every model. The forest is scikit-learn's
RandomForestClassifier with q2-sample-classifier's defaults (100 trees) on the same rarefied table; AAM is
pretrained on the training samples' UniFrac (labels unused) and fine-tuned on their labels.

Run: ``python -m benchmarks.heldout_vs_forest [--epochs N] [--quick]``; prints a table and writes
benchmarks/results/heldout_vs_forest.{json,md}.
"""
import argparse
import json
import os
import time

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data", "ibd-2538"))


def load(max_samples=None):
    from aam.data.metadata import load_metadata
    from aam.data.table import load_table
    from aam.data.distances import load_tree, tip_names
    table = load_table(os.path.join(SHARED, "table.qza"))
    md = load_metadata(os.path.join(SHARED, "metadata.tsv"))
    tree = load_tree(os.path.join(SHARED, "sepp-insertion-tree.qza"))
    ids = [s for s in table.ids() if s in md.index and isinstance(md.loc[s, "ibd"], str)]
    if max_samples:
        ids = ids[:max_samples]
    table = table.filter(ids, axis="sample", inplace=False).remove_empty(axis="observation", inplace=False)
    # as `qiime fragment-insertion filter-features` does: fragments SEPP could not place are left out
    tips = tip_names(tree)
    table = table.filter(lambda v, i, m: i in tips, axis="observation", inplace=False)
    return table, md.loc[ids], tree


def grouped_split(md, seed):
    from aam.data.splits import train_val_split
    ids = list(md.index)
    return train_val_split(ids, val_fraction=0.25, seed=seed, groups=list(md["host_subject_id"].astype(str)))


def forest(table, md, train, test, depth, seed):
    from sklearn.ensemble import RandomForestClassifier
    from aam.data.table import rarefy
    rare, _ = rarefy(table, depth, seed)
    X = pd.DataFrame(rare.matrix_data.T.toarray(), index=rare.ids(), columns=rare.ids("observation"))
    tr = [s for s in train if s in X.index]
    te = [s for s in test if s in X.index]
    rf = RandomForestClassifier(n_estimators=100, random_state=seed, n_jobs=1)
    rf.fit(X.loc[tr], md.loc[tr, "ibd"])
    pred = pd.Series(rf.predict(X.loc[te]), index=te)
    prob = pd.DataFrame(rf.predict_proba(X.loc[te]), index=te, columns=rf.classes_)
    return pred, prob


def scores(pred, prob, truth):
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score
    y = truth.loc[pred.index]
    out = {"n": len(pred), "accuracy": accuracy_score(y, pred), "balanced_accuracy": balanced_accuracy_score(y, pred)}
    if prob is not None and "Crohns" in prob.columns:
        out["auc"] = roc_auc_score((y == "Crohns").astype(int), prob["Crohns"])
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--quick", action="store_true", help="120 samples and tiny settings (smoke test)")
    args = ap.parse_args(argv)
    if not os.path.isdir(SHARED):
        print(f"ibd-2538 not found at {SHARED}; nothing to compare.")
        return 0
    from aam import api
    from aam.data.table import suggest_depth
    table, md, tree = load(120 if args.quick else None)
    depth = max(suggest_depth(table), 1000)
    train, test = grouped_split(md, args.seed)
    print(f"ibd-2538: {table.shape[1]} samples, {table.shape[0]} features; rarefied to {depth}; "
          f"{len(train)} training / {len(test)} held-out samples, grouped by subject")
    t0 = time.time()
    rf_pred, rf_prob = forest(table, md, train, test, depth, args.seed)
    rf = scores(rf_pred, rf_prob, md["ibd"])
    rf["seconds"] = time.time() - t0
    small = dict(embedding_dim=64, attention_heads=4, attention_layers=2, max_bp=100, token_limit=256,
                 batch_size=16, rarefy_depth=depth, seed=args.seed, progress=False)
    if args.quick:
        small.update(embedding_dim=32, attention_layers=1, token_limit=64)
    train_table = table.filter(train, axis="sample", inplace=False).remove_empty(axis="observation", inplace=False)
    t0 = time.time()
    pre = api.pretrain(train_table, tree=tree, epochs=2 if args.quick else args.epochs, lr=1e-3, **small)
    t_pre = time.time() - t0
    res = api.train(train_table, md, "ibd", classifier=True, pretrained=pre.checkpoint, freeze_base=True,
                    group_column="host_subject_id", epochs=4 if args.quick else args.finetune_epochs, lr=1e-3,
                    **small)
    test_table = table.filter(test, axis="sample", inplace=False)
    pred = api.predict(res.checkpoint, test_table, log=lambda s: None)
    prob = pred[[c for c in pred.columns if c.startswith("probability_")]]
    prob.columns = [c[len("probability_"):] for c in prob.columns]
    # score both models on the same samples: the forest's table is rarefied, so held-out samples shallower than
    # the depth have no forest prediction (AAM predicts them from what reads they have)
    common = [s for s in pred.index if s in rf_pred.index]
    aam_all = scores(pred["prediction"], prob, md["ibd"])
    aam = scores(pred["prediction"].loc[common], prob.loc[common], md["ibd"])
    aam["all_heldout"] = aam_all
    rf = scores(rf_pred.loc[common], rf_prob.loc[common], md["ibd"]) | {"seconds": rf["seconds"]}
    out_dir = os.path.join(HERE, "results")
    os.makedirs(out_dir, exist_ok=True)
    pd.DataFrame({"truth": md["ibd"].loc[pred.index], "aam": pred["prediction"],
                  "random_forest": rf_pred.reindex(pred.index)}).to_csv(
        os.path.join(out_dir, "heldout_vs_forest_predictions.tsv"), sep="\t")
    aam["seconds"] = time.time() - t0
    aam["pretrain_seconds"] = t_pre
    rows = {"AAM (pretrained, frozen base)": aam, "random forest (100 trees)": rf}
    lines = ["| model | held-out samples | accuracy | balanced accuracy | AUC | seconds |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | "
                     f"{r.get('auc', float('nan')):.3f} | {r['seconds']:.0f} |")
    text = "\n".join(lines)
    print(text)
    out = os.path.join(HERE, "results")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "heldout_vs_forest.json"), "w") as fh:
        json.dump({"rows": rows, "settings": {k: v for k, v in small.items() if k != "progress"},
                   "epochs": args.epochs, "finetune_epochs": args.finetune_epochs}, fh, indent=1)
    with open(os.path.join(out, "heldout_vs_forest.md"), "w") as fh:
        fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
