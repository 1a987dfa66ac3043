"""Feature sequences: DNA feature IDs are used as they are; other IDs need a sequence mapping.

QIIME 2 tables made by DADA2 or deblur are keyed either by the sequence itself or by its MD5 hash; in the second
case the sequences come from FeatureData[Sequence] (a FASTA file).
"""
import os
import re

import pandas as pd

from aam.errors import AAMInputError, preview

_DNA = re.compile(r"^[ACGTURYSWKMBDHVN.\-]+$", re.IGNORECASE)


def is_dna(text, min_length=20):
    """Whether `text` looks like a nucleotide sequence (long enough that hashes and OTU numbers never match)."""
    text = str(text)
    return len(text) >= min_length and bool(_DNA.match(text)) and sum(c in "ACGTacgt" for c in text) > 0.8 * len(
        text)


def read_fasta(path):
    """Read a FASTA file into a dict of ID -> sequence (ID = first word of the header)."""
    if not os.path.exists(path):
        raise AAMInputError(f"sequence file {path!r} does not exist.")
    out, name, parts = {}, None, []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            if line.startswith(">"):
                if name is not None:
                    out[name] = "".join(parts)
                header = line[1:].split()
                if not header:
                    raise AAMInputError(f"{path}, line {lineno}: a FASTA header without an ID.")
                name, parts = header[0], []
                if name in out:
                    raise AAMInputError(f"{path}: feature {name!r} appears twice; IDs must be unique.")
            elif name is None:
                raise AAMInputError(f"{path} is not FASTA: line {lineno} comes before any '>' header.")
            else:
                parts.append(line)
    if name is not None:
        out[name] = "".join(parts)
    if not out:
        raise AAMInputError(f"sequence file {path!r} holds no sequences.")
    return out


def as_mapping(sequences):
    """A dict ID -> str from a dict, pd.Series (of str or skbio.DNA), iterable of skbio.DNA, or FASTA path."""
    if sequences is None:
        return None
    if isinstance(sequences, (str, os.PathLike)):
        path = os.fspath(sequences)
        if path.endswith(".qza"):  # FeatureData[Sequence] artifact, read without QIIME 2
            from aam.data.table import extract_from_qza
            path = extract_from_qza(path, ".fasta")
        return read_fasta(path)
    if isinstance(sequences, pd.Series):
        return {str(k): str(v) for k, v in sequences.items()}
    if isinstance(sequences, dict):
        return {str(k): str(v) for k, v in sequences.items()}
    out = {}
    for seq in sequences:  # skbio.DNA objects with metadata['id']
        out[str(seq.metadata["id"])] = str(seq)
    return out


def resolve_sequences(feature_ids, sequences=None, table_name="table"):
    """The nucleotide sequence of every feature of a table, in `feature_ids` order.

    Parameters
    ----------
    feature_ids : list of str
    sequences : None, dict, pd.Series, iterable of skbio.DNA or FASTA path
        Mapping from feature ID to sequence; required unless every ID is itself a DNA sequence.
    table_name : str

    Returns
    -------
    list of str

    Raises
    ------
    AAMInputError
        When IDs are not DNA and no mapping is given, or the mapping lacks some features.
    """
    mapping = as_mapping(sequences)
    if mapping is None:
        not_dna = [f for f in feature_ids if not is_dna(f)]
        if not_dna:
            raise AAMInputError(
                f"{len(not_dna)} of {len(feature_ids)} feature IDs of {table_name} are not DNA sequences "
                f"(e.g. {preview(not_dna, 3)}), so AAM cannot read their sequences. Pass the representative "
                "sequences ({input:sequences}).")
        return [str(f) for f in feature_ids]
    missing = [f for f in feature_ids if f not in mapping]
    if missing:
        dna_ids = [f for f in missing if is_dna(f)]
        if len(dna_ids) == len(missing):
            # DNA IDs can stand for themselves even when a mapping was given for the others
            return [mapping.get(f, f) for f in feature_ids]
        raise AAMInputError(
            f"{len(missing)} of {len(feature_ids)} features of {table_name} have no sequence in the sequences "
            f"given: {preview(missing)}. Use the representative sequences made with this table (same feature "
            "IDs).")
    return [mapping[f] for f in feature_ids]
