"""Training data of the reference encoder: V4 amplicons of the reference, their labels, tree and hold-out.

`prepare_reference` reads the FASTA / taxonomy / Newick triple, cuts the V4 amplicon of every sequence, keeps the
OTUs that have an amplicon, a taxonomy line and a tip in the tree, splits them (`holdout_split`) and tokenizes
the amplicons once (truncated at ``max_bp``, as the study models' tokenizer does). Shorter reads (100, 120 nt) are
made on the fly by padding the tail of these rows (`truncate_rows`).
"""
import json
import os
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from aam.data.tokenizer import PAD, SequenceTokenizer
from aam.errors import AAMInputError
from aam.reference.amplicons import REGIONS, amplicon_report, cut_region
from aam.reference.greengenes import (RANKS, TreeDistances, holdout_split, read_sequences, read_taxonomy,
                                      read_tree, write_holdout)

IGNORE = -100


@dataclass
class ReferenceData:
    """Tokenized V4 amplicons of the reference OTUs with their labels and tree.

    Attributes
    ----------
    ids : list of str
        OTUs with an amplicon, a taxonomy line and a tree tip (all sets).
    amplicons : list of str
        Their full V4 amplicons.
    tokens : np.ndarray of uint8, shape [N, max_bp + 1]
        Amplicons tokenized and truncated at ``max_bp``.
    labels : np.ndarray of int64, shape [N, 7]
        Class index per rank among the classes seen in training; IGNORE for an empty rank or a class that no
        training OTU has (e.g. the genus of a held-out genus).
    classes : list of list of str
        Class labels per rank (training OTUs only, sorted).
    tree : TreeDistances
        Indexed like `ids`.
    split : dict of str -> np.ndarray of int64
        Row indices of ``train``, ``validation``, ``heldout_otus``, ``heldout_genera``.
    lineage : list of list
        The 7 labels per row (None for empty ranks), including classes unseen in training.
    report : dict
        Amplicon report and counts.
    """
    ids: List[str]
    amplicons: List[str]
    tokens: np.ndarray
    labels: np.ndarray
    classes: List[List[str]]
    tree: TreeDistances
    split: Dict[str, np.ndarray]
    lineage: List[list]
    report: dict
    held_genera: List[str]


def truncate_rows(tokens, lengths):
    """Token rows cut to `lengths` nucleotides (PAD after), as a read trimmed to that length would be.

    Parameters
    ----------
    tokens : np.ndarray, shape [n, L]
        Rows with START at position 0.
    lengths : np.ndarray of int, shape [n]

    Returns
    -------
    np.ndarray, shape [n, L]
        A copy; row k keeps positions 0..lengths[k].
    """
    tokens = np.array(tokens, copy=True)
    positions = np.arange(tokens.shape[1])[None, :]                      # [1, L]
    tokens[positions > np.asarray(lengths)[:, None]] = PAD                # [n, L]
    return tokens


def prepare_reference(sequences, taxonomy, tree, max_bp=150, seed=0, genus_fraction=0.05, otu_fraction=0.02,
                      n_validation=1000, out_dir=None, log=print):
    """Read the reference and build the training data.

    Parameters
    ----------
    sequences, taxonomy, tree : str
        Paths of the FASTA, taxonomy TSV and Newick files (plain or gzipped).
    max_bp : int
    seed : int
        Seed of the hold-out.
    genus_fraction, otu_fraction, n_validation
        See `holdout_split`.
    out_dir : str, optional
        Where to write ``amplicons.json`` (the per-region report) and ``holdout.tsv``.
    log : callable

    Returns
    -------
    ReferenceData
    """
    seqs = read_sequences(sequences)
    tax = read_taxonomy(taxonomy)
    bp_tree = read_tree(tree)
    log(f"reference: {len(seqs):,} sequences, {len(tax):,} taxonomy lines, {len(bp_tree.B) // 2:,} tree nodes")
    report = amplicon_report(seqs)
    for name, r in report["regions"].items():
        log(f"  {name:<7} {r['yielding']:>7,} of {report['references']:,} references ({100 * r['fraction']:.1f}%), "
            f"length {r['length_min']}-{r['length_max']} (median {r['length_median']})")
    v4 = cut_region(seqs, REGIONS["V4"])
    tips = _tip_names(bp_tree)
    ids = sorted((i for i in v4 if i in tax and i in tips), key=_id_key)
    if len(ids) < 4:
        raise AAMInputError(f"only {len(ids)} reference sequences have a V4 amplicon, a taxonomy line and a tree "
                            "tip; the encoder needs the sequences, taxonomy and tree of one reference.")
    report["usable"] = {"v4_amplicons": len(v4), "with_taxonomy_and_tip": len(ids)}
    split = holdout_split(ids, tax, seed, genus_fraction, otu_fraction, n_validation)
    index = {otu: k for k, otu in enumerate(ids)}
    split_rows = {key: np.array([index[o] for o in split[key]], dtype=np.int64)
                  for key in ("train", "validation", "heldout_otus", "heldout_genera")}
    report["split"] = {key: int(len(v)) for key, v in split_rows.items()}
    report["split"]["heldout_genus_labels"] = len(split["genera"])
    log("split: " + ", ".join(f"{k} {v:,}" for k, v in report["split"].items()))

    lineage = [tax[o] for o in ids]
    classes = []
    labels = np.full((len(ids), len(RANKS)), IGNORE, dtype=np.int64)
    for r in range(len(RANKS)):
        names = sorted({lineage[k][r] for k in split_rows["train"] if lineage[k][r] is not None})
        classes.append(names)
        lookup = {n: c for c, n in enumerate(names)}
        labels[:, r] = [lookup.get(lin[r], IGNORE) for lin in lineage]
    report["classes"] = {rank: len(c) for rank, c in zip(RANKS, classes)}
    amplicons = [v4[o] for o in ids]
    tokens = SequenceTokenizer(max_bp).encode_many(amplicons, ids)
    distances = TreeDistances(bp_tree, ids)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "amplicons.json"), "w") as fh:
            json.dump(report, fh, indent=1)
        write_holdout(split, os.path.join(out_dir, "holdout.tsv"))
    return ReferenceData(ids, amplicons, tokens, labels, classes, distances, split_rows, lineage, report,
                         split["genera"])


def _id_key(otu):
    # numeric Greengenes IDs sort as numbers; anything else after them, as text
    return (0, int(otu), "") if otu.isdigit() else (1, 0, otu)


def _tip_names(tree):
    B = np.asarray(tree.B, dtype=bool)
    opening_tips = np.nonzero(B[:-1] & ~B[1:])[0]
    return {str(tree.name(int(i))) for i in opening_tips}
