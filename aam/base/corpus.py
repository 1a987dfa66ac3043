"""The pretraining corpus of the shipped sample-level base: American Gut + Personal Genome Project.

Both studies were processed alike upstream (16S V4 515F/806R reads trimmed to 100 nt, closed-reference OTUs
against Greengenes 13_8 at 97%, rarefied to 10,000 reads) and re-derived alike in ``../shared/data``: one 100 nt
V4 read per OTU ID (``otu-v4-100nt.fasta``) and one pruned Greengenes tree holding every OTU of both
(``american-gut/gg13_8-97-pruned.nwk``). The corpus is their two tables merged on OTU IDs:

    american-gut  2,397 samples  (stool, oral, skin; 435 without metadata, still usable without labels)
    pgp             328 samples  (skin, oral, stool)
    corpus        2,725 samples x 20,225 OTUs

No sample of any other benchmark study enters it: `load_corpus` reads only the named study folders and checks
that none of their sample IDs appears in the metadata of the other folders of the data directory.

Files are read from the data directory at build time and never copied into the package (only the small test
slice of `write_slice` is committed, with its provenance). Licenses: the tables come from the biocore/American-Gut
repository (Modified BSD; the repository says its tables are de-identified); the sequences and the tree are
derived from Greengenes 13_8 (CC BY-SA 3.0). See ``aam/base/PROVENANCE.md``.

    python -m aam.base.corpus                       # summary of the corpus (sizes, overlaps, checks)
    python -m aam.base.corpus --slice tests/data/base-corpus --samples 24 12
"""
import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from aam.errors import AAMInputError, preview

CORPUS_STUDIES = ("american-gut", "pgp")
TREE = os.path.join("american-gut", "gg13_8-97-pruned.nwk")
SEQUENCES = "otu-v4-100nt.fasta"
TABLE = "table.biom"
#: the subject column of each study's metadata (samples without one are their own subject)
SUBJECT_COLUMNS = ("HOST_SUBJECT_ID", "host_subject_id")
METADATA_FILES = ("metadata.tsv", "sample-metadata.tsv")


@dataclass
class Corpus:
    """Merged tables of the corpus studies, with their sequences, tree and sample provenance.

    Attributes
    ----------
    table : biom.Table
        Features (OTU IDs) x samples, the studies' columns side by side, reads as published.
    sequences : dict of str -> str
        One V4 read per OTU ID.
    tree : str
        Path of the rooted Newick tree holding every OTU.
    study : dict of str -> str
        The study each sample comes from.
    subject : dict of str -> str
        The subject (host) of each sample, prefixed with its study; a sample without one is its own subject.
    report : list of str
        What was read and checked, for the run's log and the model card.
    """

    table: object
    sequences: Dict[str, str]
    tree: str
    study: Dict[str, str]
    subject: Dict[str, str]
    report: List[str] = field(default_factory=list)

    @property
    def sample_ids(self):
        return [str(s) for s in self.table.ids()]

    def metadata(self):
        """A sample metadata frame with ``study`` and ``subject`` columns (what the split groups by)."""
        import pandas as pd
        ids = self.sample_ids
        frame = pd.DataFrame({"study": [self.study[s] for s in ids], "subject": [self.subject[s] for s in ids]},
                             index=pd.Index(ids, name="sample-id"))
        return frame

    def counts_by_study(self):
        """Number of samples per study, in corpus order."""
        out = {}
        for s in self.sample_ids:
            out[self.study[s]] = out.get(self.study[s], 0) + 1
        return out


def default_data_dir():
    """The shared data folder: ``$AAM_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("AAM_SHARED_DATA")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.normpath(os.path.join(repo, "..", "shared", "data"))


def _require(path, what):
    if not os.path.exists(path):
        raise AAMInputError(f"{what} {path} does not exist; point the corpus at the shared data folder "
                            "(--data-dir, or $AAM_SHARED_DATA) that holds american-gut/ and pgp/.")
    return path


def read_subjects(directory, sample_ids, study):
    """Subject of each sample from the study's metadata (study-prefixed); samples without one: their own ID."""
    import pandas as pd
    subjects = {s: f"{study}:{s}" for s in sample_ids}
    path = os.path.join(directory, "metadata.tsv")
    if not os.path.exists(path):
        return subjects
    md = pd.read_csv(path, sep="\t", dtype=str, index_col=0)
    column = next((c for c in SUBJECT_COLUMNS if c in md.columns), None)
    if column is None:
        return subjects
    values = md[column].dropna()
    values = values[~values.isin(["no_data", ""])]
    for s in sample_ids:
        if s in values.index:
            subjects[s] = f"{study}:{values[s]}"
    return subjects


def read_study(data_dir, study):
    """``(biom.Table, sequences, subjects)`` of one study folder."""
    from aam.data.sequences import as_mapping
    from aam.data.table import load_table
    directory = _require(os.path.join(data_dir, study), "study folder")
    table = load_table(_require(os.path.join(directory, TABLE), f"{study} table"), name=f"{study}/{TABLE}")
    sequences = {str(k): str(v) for k, v in as_mapping(_require(os.path.join(directory, SEQUENCES),
                                                                 f"{study} sequences")).items()}
    features = [str(f) for f in table.ids("observation")]
    missing = [f for f in features if f not in sequences]
    if missing:
        raise AAMInputError(f"{len(missing)} OTU(s) of {study}/{TABLE} have no read in {study}/{SEQUENCES}: "
                            f"{preview(missing)}")
    samples = [str(s) for s in table.ids()]
    return table, {f: sequences[f] for f in features}, read_subjects(directory, samples, study)


def merge_tables(tables):
    """Tables side by side, rows matched on feature ID (the union of features; a feature absent from a study
    has no reads there). Sample IDs must be distinct across tables.

    Parameters
    ----------
    tables : list of (str, biom.Table)
        Study name and table.

    Returns
    -------
    biom.Table
    """
    import biom
    import scipy.sparse as sp
    seen = {}
    for name, table in tables:
        for s in table.ids():
            if str(s) in seen:
                raise AAMInputError(f"sample {s!r} is in both {seen[str(s)]} and {name}; the corpus needs distinct "
                                    "sample IDs (rename one study's samples).")
            seen[str(s)] = name
    features = sorted({str(f) for _, t in tables for f in t.ids("observation")})
    row = {f: i for i, f in enumerate(features)}
    blocks, samples = [], []
    for _, table in tables:
        m = table.matrix_data.tocoo()  # [F_study, N_study]
        rows = np.array([row[str(f)] for f in table.ids("observation")], dtype=np.int64)[m.row]
        blocks.append(sp.csc_matrix((m.data, (rows, m.col)), shape=(len(features), m.shape[1])))
        samples += [str(s) for s in table.ids()]
    return biom.Table(sp.hstack(blocks).tocsc(), features, samples)


def merge_sequences(per_study):
    """One read per feature across studies; a feature read differently by two studies is an error."""
    out, source = {}, {}
    for name, sequences in per_study:
        for f, s in sequences.items():
            if f in out and out[f] != s:
                raise AAMInputError(f"OTU {f!r} has different reads in {source[f]} and {name}; derive both studies' "
                                    "reads the same way (derive_v4_reads.py).")
            out.setdefault(f, s)
            source.setdefault(f, name)
    return out


def other_study_samples(data_dir, studies):
    """``{sample ID: study}`` from the metadata of every other study folder of the data directory."""
    import pandas as pd
    out = {}
    for name in sorted(os.listdir(data_dir)):
        if name in studies or not os.path.isdir(os.path.join(data_dir, name)):
            continue
        for md in METADATA_FILES:
            path = os.path.join(data_dir, name, md)
            if os.path.exists(path):
                ids = pd.read_csv(path, sep="\t", dtype=str, usecols=[0], comment=None).iloc[:, 0]
                out.update({str(s): name for s in ids if not str(s).startswith("#")})
    return out


def check_no_benchmark_samples(sample_ids, data_dir, studies):
    """Raise when a corpus sample ID is a sample of another benchmark study of the data directory."""
    others = other_study_samples(data_dir, studies)
    shared = [s for s in sample_ids if s in others]
    if shared:
        raise AAMInputError(f"{len(shared)} corpus sample(s) are samples of other benchmark studies "
                            f"({preview(sorted({others[s] for s in shared}))}): {preview(shared)}. The corpus must "
                            "not contain them.")
    return len(others)


def load_corpus(data_dir=None, studies=CORPUS_STUDIES, tree=None):
    """The merged corpus of `studies` under `data_dir`, checked.

    Parameters
    ----------
    data_dir : str, optional
        The shared data folder (default: `default_data_dir`).
    studies : tuple of str
        Study folders to merge.
    tree : str, optional
        Newick tree holding every OTU (default: the pruned Greengenes tree of american-gut/).

    Returns
    -------
    Corpus
    """
    data_dir = data_dir or default_data_dir()
    tables, sequences, study, subject = [], [], {}, {}
    for name in studies:
        table, seqs, subjects = read_study(data_dir, name)
        tables.append((name, table))
        sequences.append((name, seqs))
        study.update({str(s): name for s in table.ids()})
        subject.update(subjects)
    merged = merge_tables(tables)
    reads = merge_sequences(sequences)
    tree = tree or _require(os.path.join(data_dir, TREE), "tree")
    checked = check_no_benchmark_samples(merged.ids(), data_dir, studies)
    corpus = Corpus(merged, reads, tree, study, subject)
    sizes = ", ".join(f"{n} {k}" for k, n in corpus.counts_by_study().items())
    lengths = sorted({len(s) for s in reads.values()})
    corpus.report = [f"corpus: {merged.shape[1]} samples ({sizes}) x {merged.shape[0]} OTUs merged on OTU IDs, "
                     f"reads {lengths[0]}-{lengths[-1]} nt, tree {os.path.basename(tree)}; "
                     f"{len(set(subject.values()))} subjects; none of the {checked} samples of the other study "
                     "folders beside them"]
    return corpus


def choose_slice(corpus, per_study, seed=0):
    """A seeded choice of `per_study[i]` samples of each corpus study (a few dozen for tests)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for name, n in zip(corpus.counts_by_study(), per_study):
        ids = [s for s in corpus.sample_ids if corpus.study[s] == name]
        chosen += [ids[i] for i in sorted(rng.choice(len(ids), size=min(n, len(ids)), replace=False))]
    return chosen


def write_slice(corpus, out_dir, per_study=(24, 12), seed=0):
    """Write a small slice of the corpus (table.biom, sequences.fasta, tree.nwk, samples.tsv) to `out_dir`."""
    import skbio
    from aam.data.table import drop_empty
    os.makedirs(out_dir, exist_ok=True)
    chosen = set(choose_slice(corpus, per_study, seed))
    table = drop_empty(corpus.table.filter(lambda v, i, m: str(i) in chosen, axis="sample", inplace=False))
    features = [str(f) for f in table.ids("observation")]
    import h5py
    with h5py.File(os.path.join(out_dir, TABLE), "w") as h5:
        table.to_hdf5(h5, "aam.base.corpus slice")
    with open(os.path.join(out_dir, "sequences.fasta"), "w") as fh:
        for f in features:
            fh.write(f">{f}\n{corpus.sequences[f]}\n")
    tree = skbio.TreeNode.read(corpus.tree, format="newick").shear(features)
    tree.write(os.path.join(out_dir, "tree.nwk"), format="newick")
    frame = corpus.metadata().loc[[str(s) for s in table.ids()]]
    frame.to_csv(os.path.join(out_dir, "samples.tsv"), sep="\t")
    return table.shape


def read_slice(directory):
    """The `Corpus` of a folder written by `write_slice` (the test suite's small corpus)."""
    import pandas as pd
    from aam.data.sequences import as_mapping
    from aam.data.table import load_table
    table = load_table(_require(os.path.join(directory, TABLE), "corpus slice table"), name=f"{directory}/{TABLE}")
    sequences = {str(k): str(v) for k, v in as_mapping(os.path.join(directory, "sequences.fasta")).items()}
    samples = pd.read_csv(os.path.join(directory, "samples.tsv"), sep="\t", dtype=str, index_col=0)
    corpus = Corpus(table, sequences, os.path.join(directory, "tree.nwk"), samples["study"].to_dict(),
                    samples["subject"].to_dict())
    sizes = ", ".join(f"{n} {k}" for k, n in corpus.counts_by_study().items())
    corpus.report = [f"corpus slice {directory}: {table.shape[1]} samples ({sizes}) x {table.shape[0]} OTUs"]
    return corpus


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m aam.base.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", help="the shared data folder (default ../shared/data or $AAM_SHARED_DATA)")
    p.add_argument("--slice", help="write a small slice of the corpus to this folder")
    p.add_argument("--samples", type=int, nargs=2, default=(24, 12), metavar=("AMERICAN_GUT", "PGP"),
                   help="samples per study in the slice")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        corpus = load_corpus(args.data_dir)
    except AAMInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for line in corpus.report:
        print(line)
    if args.slice:
        shape = write_slice(corpus, args.slice, tuple(args.samples), args.seed)
        print(f"wrote {args.slice}: {shape[1]} samples x {shape[0]} OTUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
