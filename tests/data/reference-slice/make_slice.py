"""Rebuild this slice of Greengenes 13_8 (97% OTUs) from the PyPI package qiime-default-reference.

    .venv/bin/pip install qiime-default-reference && .venv/bin/python tests/data/reference-slice/make_slice.py

Picks, with a fixed seed, 8 OTUs with a V4 (515F/806R) amplicon from each of 5 genera of three phyla and 4 OTUs
without one, and writes their sequences, taxonomy lines and the tree sheared to them (branch lengths of the
remaining paths are kept, so patristic distances equal those of the full tree).
"""
import os

import bp
import numpy as np

from aam.reference.amplicons import REGIONS, cut_region
from aam.reference.greengenes import read_sequences, read_tree, reference_paths

HERE = os.path.dirname(os.path.abspath(__file__))
GENERA = ("g__Bacteroides", "g__Prevotella", "g__Lactobacillus", "g__Streptococcus", "g__Pseudomonas")


def main():
    paths = reference_paths()
    seqs = read_sequences(paths["sequences"])
    lines = {}
    with open(paths["taxonomy"]) as fh:
        for line in fh:
            otu, lineage = line.rstrip("\n").split("\t")
            lines[otu] = lineage
    v4 = cut_region(seqs, REGIONS["V4"])
    rng = np.random.default_rng(2012)
    chosen = []
    for genus in GENERA:
        pool = sorted(o for o in v4 if f"; {genus};" in lines[o])
        chosen += list(rng.choice(pool, size=8, replace=False))
    no_v4 = sorted(o for o in seqs if o not in v4)
    chosen += list(rng.choice(no_v4, size=4, replace=False))
    chosen = sorted(set(chosen), key=int)
    with open(os.path.join(HERE, "sequences.fasta"), "w") as fh:
        for otu in chosen:
            fh.write(f">{otu}\n{seqs[otu]}\n")
    with open(os.path.join(HERE, "taxonomy.tsv"), "w") as fh:
        for otu in chosen:
            fh.write(f"{otu}\t{lines[otu]}\n")
    tree = bp.to_skbio_treenode(read_tree(paths["tree"]).shear(set(chosen)))
    tree.prune()  # fold single-child nodes left by shearing into one branch (lengths add up)
    tree.write(os.path.join(HERE, "tree.nwk"))
    print(f"wrote {len(chosen)} OTUs to {HERE}")


if __name__ == "__main__":
    main()
