"""AAM against a random forest on held-out samples of the keyboard study (whose skin or keyboard is this?).

Fierer et al. 2010: 454 reads of 186-275 bp with OTU IDs and no tree, so the base is pretrained on Bray-Curtis
distances between the training samples (any distance matrix works for pretraining). Stratified 70/30 split on
the column (default ``Subject``); both models see the same rarefied training samples.

Run: ``python -m benchmarks.heldout_keyboard [column] [pretraining epochs]``.
"""
import os
import sys
import time

import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data", "keyboard"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    column = argv[0] if argv else "Subject"
    epochs = int(argv[1]) if len(argv) > 1 else 8
    if not os.path.isdir(SHARED):
        print(f"keyboard data not found at {SHARED}; nothing to compare.")
        return 0
    from sklearn.ensemble import RandomForestClassifier
    from skbio.diversity import beta_diversity
    from aam import api
    from aam.data.metadata import load_metadata
    from aam.data.splits import train_val_split
    from aam.data.table import load_table, rarefy
    table = load_table(os.path.join(SHARED, "table.qza"))
    md = load_metadata(os.path.join(SHARED, "sample-metadata.tsv"))
    seqs = os.path.join(SHARED, "rep-seqs.qza")
    ids = [s for s in table.ids() if s in md.index and isinstance(md.loc[s, column], str)]
    rare, _ = rarefy(table.filter(ids, axis="sample", inplace=False), 200, 0)
    ids = list(rare.ids())
    y = md.loc[ids, column]
    train, test = train_val_split(ids, 0.3, seed=1, stratify=list(y))
    X = pd.DataFrame(rare.matrix_data.T.toarray(), index=ids)
    rf = RandomForestClassifier(100, random_state=0).fit(X.loc[train], y.loc[train])
    rows = {"random forest (100 trees)": (rf.predict(X.loc[test]) == y.loc[test]).mean()}
    rare_train = rare.filter(train, axis="sample", inplace=False)
    dm = beta_diversity("braycurtis", rare_train.matrix_data.T.toarray(), ids=list(rare_train.ids()))
    train_table = table.filter(train, axis="sample", inplace=False)
    test_table = table.filter(test, axis="sample", inplace=False)
    kw = dict(token_limit=128, rarefy_depth=200, progress=False, seed=1)
    t0 = time.time()
    pre = api.pretrain(train_table, sequences=seqs, distance_matrix=dm, epochs=epochs, lr=1e-3, **kw)
    for frozen in (True, False):
        res = api.train(train_table, md, column, classifier=True, sequences=seqs, pretrained=pre.checkpoint,
                        freeze_base=frozen, epochs=40, lr=1e-3, **kw)
        pred = api.predict(res.checkpoint, test_table, sequences=seqs, log=lambda s: None)
        name = "AAM, pretrained base " + ("frozen" if frozen else "fine-tuned")
        rows[name] = (pred["prediction"] == y.loc[pred.index]).mean()
    print(f"keyboard, {column}: {len(train)} training / {len(test)} held-out samples "
          f"({time.time() - t0:.0f} s for AAM)")
    print("| model | held-out accuracy |\n|---|---|")
    for name, acc in rows.items():
        print(f"| {name} | {acc:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
