"""Does a study's sequences look like what a shipped encoder was trained on?

Reads of an amplicon start right after the forward primer, and the first few nucleotides there are conserved:
the 81,347 Greengenes V4 amplicons start with only 514 distinct 8-mers (80% with ``TACG``). A table of V4 reads
therefore has nearly all its sequences starting with one of those 8-mers, while reads of another region (or with
the primer left on) almost never do. `region_report` measures that fraction, the read lengths against the
lengths the encoder saw, and whether the forward primer is still at the start of the reads.

    python -m aam.reference.region rep-seqs.qza table-with-sequence-ids.qza ... --output checks.json

checks FASTA files, FeatureData[Sequence] artifacts, and BIOM tables / FeatureTable artifacts whose feature IDs
are the sequences (the shipped encoder's ``region_checks.json`` holds the checks of the project's public studies).
"""
import argparse
import json
import os
import sys

import numpy as np

from aam.reference.amplicons import primer_pattern
from aam.reference.encoder_files import DEFAULT_ENCODER, load_region

# fraction of sequences whose first nucleotides must match the training amplicons for a table to "match": real
# V4 tables have 98-100% (amazon-homes 79%: its other sequences are off-target amplicons); another region ~1%
MATCH_FRACTION = 0.5
# below this (but matching) the report says how many sequences look off-target
CLEAN_FRACTION = 0.9


def prefix_signature(amplicons, k=8):
    """Counts of the first `k` nt of amplicons: dict prefix -> count (amplicons shorter than k are skipped)."""
    out = {}
    for a in amplicons:
        if len(a) >= k:
            p = a[:k].upper()
            out[p] = out.get(p, 0) + 1
    return dict(sorted(out.items()))


def sequence_list(sequences):
    """Sequences and their IDs, in order, from any of the forms `region_report` and `embed_sequences` take.

    Parameters
    ----------
    sequences : list of str, dict ID -> str, pd.Series, iterable of skbio.DNA, or FASTA path
        A plain list (or tuple, or array) of strings is numbered ``'0', '1', ...``.

    Returns
    -------
    (list of str, list of str)
        The sequences and their IDs.
    """
    from aam.data.sequences import as_mapping
    if isinstance(sequences, (list, tuple, np.ndarray)) and all(isinstance(s, str) for s in sequences):
        return [str(s) for s in sequences], [str(i) for i in range(len(sequences))]
    mapping = as_mapping(sequences)
    return list(mapping.values()), list(mapping.keys())


def region_report(sequences, name=None, region=None):
    """How well sequences match the region and read lengths an encoder was trained on.

    Parameters
    ----------
    sequences : list of str, dict, pd.Series, iterable of skbio.DNA, or FASTA path
    name : str, optional
        Shipped encoder (default: the default encoder); ignored when `region` is given.
    region : dict, optional
        A region.json content (for tests and for encoders not yet shipped).

    Returns
    -------
    dict
        ``n_sequences``, ``in_region_fraction`` (first k nt seen at the start of a training amplicon),
        ``primer_at_start_fraction`` (reads that still begin with the forward primer), ``length_min`` /
        ``length_median`` / ``length_max``, ``longer_than_max_bp`` (fraction truncated at max_bp, as always),
        ``shorter_than_trained`` (fraction shorter than the shortest trained read length), ``matches`` (bool)
        and ``message`` (one sentence for a log or a warning).
    """
    from aam.data.tokenizer import clean
    if region is None:
        name = name or DEFAULT_ENCODER
        region = load_region(name)
    label = region.get("name", name or "encoder")
    seqs, _ = sequence_list(sequences)
    seqs = [clean(s).upper().replace("U", "T") for s in seqs]
    n = len(seqs)
    k = int(region["prefix_length"])
    prefixes = set(region["prefixes"])
    forward = primer_pattern(region["forward_primer"])
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    in_region = float(np.mean([s[:k] in prefixes for s in seqs])) if n else 0.0
    primer_start = float(np.mean([forward.match(s) is not None for s in seqs])) if n else 0.0
    shortest = int(min(region["read_lengths"]))
    out = {"encoder": label, "region": region["region"], "n_sequences": n,
           "in_region_fraction": round(in_region, 4), "primer_at_start_fraction": round(primer_start, 4),
           "length_min": int(lengths.min()) if n else None,
           "length_median": float(np.median(lengths)) if n else None,
           "length_max": int(lengths.max()) if n else None,
           "longer_than_max_bp": round(float((lengths > region["max_bp"]).mean()), 4) if n else 0.0,
           "shorter_than_trained": round(float((lengths < shortest).mean()), 4) if n else 0.0}
    out["matches"] = bool(n) and in_region >= MATCH_FRACTION
    trained = (f"reads of the {region['region']} region starting right after the forward primer, "
               f"{'/'.join(map(str, region['read_lengths']))} nt")
    if not n:
        out["message"] = "no sequences to check."
    elif out["matches"]:
        out["message"] = (f"{100 * in_region:.1f}% of {n} sequences start like the {label} encoder's training "
                          f"reads ({trained}).")
        if in_region < CLEAN_FRACTION:
            out["message"] += (f" The other {100 * (1 - in_region):.1f}% start like no Greengenes V4 read "
                               "(off-target amplicons such as host or eukaryotic DNA, adapter dimers, or unusual "
                               "taxa): their embeddings are less reliable.")
        if out["shorter_than_trained"] > 0.5:
            out["message"] += (f" Most are shorter than {shortest} nt, a length it never saw: embeddings still "
                               "work but may be less informative.")
    elif primer_start >= 0.5:
        out["message"] = (f"{100 * primer_start:.0f}% of {n} sequences still begin with the forward primer "
                          f"{region['forward_primer']}; the {label} encoder was trained on {trained}. Remove the "
                          "primers (e.g. q2-cutadapt trim-paired/trim-single) before embedding.")
    else:
        out["message"] = (f"only {100 * in_region:.1f}% of {n} sequences start like the {label} encoder's training "
                          f"reads ({trained}): these look like another region or another trimming. Embeddings "
                          "still work but relatives are placed less reliably; consider training the encoder from "
                          "scratch on this study.")
    return out


def read_any_sequences(path):
    """Sequences of a FASTA file, a FeatureData[Sequence] .qza, or a table (.biom / FeatureTable .qza) keyed by
    its sequences."""
    from aam.data.sequences import as_mapping, is_dna
    from aam.data.table import load_table
    from aam.errors import AAMInputError
    if path.endswith(".biom"):
        ids = list(load_table(path).ids(axis="observation"))
    elif path.endswith(".qza"):
        try:
            return list(as_mapping(path).values())
        except (AAMInputError, KeyError, ValueError, FileNotFoundError):
            ids = list(load_table(path).ids(axis="observation"))
    else:
        return list(as_mapping(path).values())
    if not all(is_dna(i) for i in ids[:100]):
        raise AAMInputError(f"{path}: the feature IDs are not sequences; pass the matching rep-seqs instead.")
    return ids


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m aam.reference.region",
                                description="Do sequences look like the reads a shipped encoder was trained on?")
    p.add_argument("inputs", nargs="+", help="FASTA, FeatureData[Sequence] .qza, or a table keyed by sequences")
    p.add_argument("--name", help="shipped encoder (default: the default encoder)")
    p.add_argument("--output", help="write the reports as JSON here")
    args = p.parse_args(argv)
    reports = {}
    for path in args.inputs:
        report = region_report(read_any_sequences(path), name=args.name)
        reports[os.path.normpath(path)] = report
        print(f"{path}: {'matches' if report['matches'] else 'FLAGGED'}: {report['message']}")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump({"command": "python -m aam.reference.region " + " ".join(
                argv if argv is not None else sys.argv[1:]), "reports": reports}, fh, indent=1)
    return 0 if reports else 1


if __name__ == "__main__":
    sys.exit(main())
