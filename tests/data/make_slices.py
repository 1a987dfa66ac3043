"""Rebuild the small real-data slices in tests/data from ../shared/data (run with the project venv).

The slices keep the tests fast: a few samples per class, the features they contain, and for
moving-pictures the tree sheared to those features. Both plain files (for the engine, which never
imports qiime2) and .qza artifacts written by QIIME 2 2022.11 (for the plugin) are produced.
"""
import os
import sys

import biom
import pandas as pd
import qiime2
import skbio

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "..", "shared", "data")


def _slice(table, sample_ids):
    sub = table.filter(sample_ids, axis="sample", inplace=False)
    return sub.filter(lambda v, i, m: v.sum() > 0, axis="observation", inplace=False)


def _write_metadata(src, dst, sample_ids, id_column):
    lines = open(src).read().splitlines()
    keep = [ln for ln in lines[1:] if ln.startswith("#q2:types")]
    rows = [ln for ln in lines[1:] if ln.split("\t")[0] in set(sample_ids)]
    with open(dst, "w") as fh:
        fh.write("\n".join([lines[0]] + keep + rows) + "\n")


def _write_fasta(seqs, dst, feature_ids):
    with open(dst, "w") as fh:
        for fid in feature_ids:
            fh.write(f">{fid}\n{seqs[fid]}\n")


def moving_pictures(out):
    src = os.path.join(SHARED, "moving-pictures")
    table = qiime2.Artifact.load(os.path.join(src, "table.qza")).view(biom.Table)
    md = pd.read_csv(os.path.join(src, "sample-metadata.tsv"), sep="\t", comment=None,
                     skiprows=[1], dtype=str).set_index("sample-id")
    md = md.loc[md.index.intersection(table.ids())]
    # 4 samples per body site, spread over both subjects and the whole time course
    ids = []
    for _, grp in md.groupby("body-site"):
        grp = grp.sort_values(["subject", "days-since-experiment-start"])
        ids += list(grp.index[:: max(1, len(grp) // 4)][:4])
    sub = _slice(table, ids)
    fids = list(sub.ids("observation"))
    seqs = {k: str(v) for k, v in qiime2.Artifact.load(
        os.path.join(src, "rep-seqs.qza")).view(pd.Series).items()}
    tree = qiime2.Artifact.load(os.path.join(src, "rooted-tree.qza")).view(skbio.TreeNode)
    tree = tree.shear(fids)
    tree.prune()
    tax = qiime2.Artifact.load(os.path.join(src, "taxonomy.qza")).view(pd.DataFrame)
    tax = tax.loc[tax.index.intersection(fids)]

    with biom.util.biom_open(os.path.join(out, "table.biom"), "w") as fh:
        sub.to_hdf5(fh, "aam tests slice")
    _write_fasta(seqs, os.path.join(out, "rep-seqs.fasta"), fids)
    tree.write(os.path.join(out, "tree.nwk"))
    tax.to_csv(os.path.join(out, "taxonomy.tsv"), sep="\t", index_label="Feature ID")
    _write_metadata(os.path.join(src, "sample-metadata.tsv"),
                    os.path.join(out, "sample-metadata.tsv"), ids, "sample-id")

    qiime2.Artifact.import_data("FeatureTable[Frequency]", sub).save(os.path.join(out, "table.qza"))
    qiime2.Artifact.import_data("FeatureData[Sequence]", os.path.join(out, "rep-seqs.fasta")).save(
        os.path.join(out, "rep-seqs.qza"))
    qiime2.Artifact.import_data("Phylogeny[Rooted]", tree).save(os.path.join(out, "rooted-tree.qza"))
    qiime2.Artifact.import_data("FeatureData[Taxonomy]", tax).save(os.path.join(out, "taxonomy.qza"))
    print("moving-pictures slice:", sub.shape[1], "samples,", sub.shape[0], "features")


def keyboard(out):
    src = os.path.join(SHARED, "keyboard")
    table = qiime2.Artifact.load(os.path.join(src, "table.qza")).view(biom.Table)
    md = pd.read_csv(os.path.join(src, "sample-metadata.tsv"), sep="\t", dtype=str).set_index("#SampleID")
    md = md.loc[md.index.intersection(table.ids())]
    ids = []
    for _, grp in md.groupby("Subject"):
        ids += list(sorted(grp.index)[:4])
    sub = _slice(table, ids)
    fids = list(sub.ids("observation"))
    seqs = {k: str(v) for k, v in qiime2.Artifact.load(
        os.path.join(src, "rep-seqs.qza")).view(pd.Series).items()}
    with biom.util.biom_open(os.path.join(out, "table.biom"), "w") as fh:
        sub.to_hdf5(fh, "aam tests slice")
    _write_fasta(seqs, os.path.join(out, "rep-seqs.fasta"), fids)
    _write_metadata(os.path.join(src, "sample-metadata.tsv"),
                    os.path.join(out, "sample-metadata.tsv"), ids, "#SampleID")
    qiime2.Artifact.import_data("FeatureTable[Frequency]", sub).save(os.path.join(out, "table.qza"))
    qiime2.Artifact.import_data("FeatureData[Sequence]", os.path.join(out, "rep-seqs.fasta")).save(
        os.path.join(out, "rep-seqs.qza"))
    print("keyboard slice:", sub.shape[1], "samples,", sub.shape[0], "features")


if __name__ == "__main__":
    for name, fn in [("moving-pictures", moving_pictures), ("keyboard", keyboard)]:
        out = os.path.join(HERE, name)
        os.makedirs(out, exist_ok=True)
        fn(out)
    sys.exit(0)
