"""In-silico amplicons: the stretch of a full-length 16S sequence that a primer pair would read.

Amplicon tables (deblur, DADA2) hold reads that start right after the forward primer and are trimmed to a fixed
length (90, 100, 120 or 150 nt for the EMP V4 protocol). To teach an encoder what users' ASVs look like, every
reference sequence is searched for the forward primer and, downstream of it, for the binding site of the reverse
primer (its reverse complement on the sense strand); the amplicon is what lies strictly between them. Primers
carry IUPAC ambiguity codes (515F ``GTGYCAGCMGCCGCGGTAA``: Y = C or T, M = A or C), so each primer becomes a
regular expression with one character class per degenerate position.

Regions
-------
``V4``        515F (Parada et al. 2016) / 806R (Apprill et al. 2015), the whole amplicon (~253 nt)
``V4-100``    its first 100 nt (and likewise ``V4-90``, ``V4-120``, ``V4-150``): what trimmed ASVs hold
``V3-V4``     341F / 785R (Klindworth et al. 2013), reported but not used for the shipped encoder
``V1-V3``     27F / 534R, reported but not used for the shipped encoder

An encoder with ``max_bp = 150`` only ever reads the first 150 nt of a sequence, so "full V4" and "V4-150" are the
same input to it (except for the few V4 amplicons shorter than 150 nt).
"""
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

# IUPAC nucleotide codes -> the bases they stand for
IUPAC = {"A": "A", "C": "C", "G": "G", "T": "T", "U": "T",
         "R": "AG", "Y": "CT", "S": "CG", "W": "AT", "K": "GT", "M": "AC",
         "B": "CGT", "D": "AGT", "H": "ACT", "V": "ACG", "N": "ACGT"}
# complement of each code (a degenerate code complements to the code of the complementary set)
_COMPLEMENT = str.maketrans("ACGTURYSWKMBDHVNacgturyswkmbdhvn", "TGCAAYRSWMKVHDBNtgcaayrswmkvhdbn")


def reverse_complement(sequence):
    """Reverse complement of a DNA sequence with IUPAC codes (``ACGYN`` -> ``NRCGT``)."""
    return str(sequence).translate(_COMPLEMENT)[::-1]


def primer_pattern(primer):
    """A compiled regular expression matching `primer` with its IUPAC codes expanded.

    A base in the target sequence matches a degenerate primer position when it is one of the bases the code
    stands for (``Y`` matches C and T); the target itself is expected to be plain A/C/G/T (an ambiguous base in the
    reference never matches, so a primer site with an N in it is treated as absent).

    Parameters
    ----------
    primer : str
        5'->3' primer sequence in IUPAC codes.

    Returns
    -------
    re.Pattern
    """
    primer = str(primer).upper()
    bad = sorted(set(primer) - set(IUPAC))
    if not primer or bad:
        raise ValueError(f"primer {primer!r} has characters that are not IUPAC nucleotide codes: {bad}")
    return re.compile("".join(IUPAC[c] if len(IUPAC[c]) == 1 else f"[{IUPAC[c]}]" for c in primer))


@dataclass(frozen=True)
class Region:
    """A primer pair and an optional trimming length.

    Attributes
    ----------
    name : str
    forward, reverse : str
        Primers 5'->3' in IUPAC codes; `reverse` as ordered (it binds the antisense strand).
    length : int or None
        Keep only the first `length` nt after the forward primer (None = the whole amplicon). An amplicon shorter
        than `length` yields nothing, as a read trimmed to `length` would have been discarded.
    """
    name: str
    forward: str
    reverse: str
    length: Optional[int] = None


PRIMERS = {
    "515F": "GTGYCAGCMGCCGCGGTAA",   # Parada et al. 2016 (EMP); original 515F is GTGCCAGCMGCCGCGGTAA
    "806R": "GGACTACNVGGGTWTCTAAT",  # Apprill et al. 2015 (EMP); original 806R is GGACTACHVGGGTWTCTAAT
    "341F": "CCTACGGGNGGCWGCAG",     # Klindworth et al. 2013
    "785R": "GACTACHVGGGTATCTAATCC",  # Klindworth et al. 2013
    "27F": "AGAGTTTGATCMTGGCTCAG",
    "534R": "ATTACCGCGGCTGCTGG",
}

REGIONS = {r.name: r for r in (
    Region("V4", PRIMERS["515F"], PRIMERS["806R"]),
    Region("V4-90", PRIMERS["515F"], PRIMERS["806R"], 90),
    Region("V4-100", PRIMERS["515F"], PRIMERS["806R"], 100),
    Region("V4-120", PRIMERS["515F"], PRIMERS["806R"], 120),
    Region("V4-150", PRIMERS["515F"], PRIMERS["806R"], 150),
    Region("V3-V4", PRIMERS["341F"], PRIMERS["785R"]),
    Region("V1-V3", PRIMERS["27F"], PRIMERS["534R"]),
)}


class AmpliconCutter:
    """Cut the amplicon of one primer pair out of full-length sequences.

    Parameters
    ----------
    forward, reverse : str
        Primers 5'->3' in IUPAC codes (`reverse` as ordered; its reverse complement is searched on the sense
        strand, downstream of the forward primer).

    Examples
    --------
    >>> cut = AmpliconCutter("GTGYCAGC", "GGACTAC")
    >>> cut("AAGTGTCAGCTTACGGGGTAGTCCAA")
    'TTACGGG'
    """

    def __init__(self, forward, reverse):
        self.forward = primer_pattern(forward)
        self.reverse_site = primer_pattern(reverse_complement(reverse))

    def __call__(self, sequence):
        """The amplicon between the primers (primers excluded), or None when a primer does not match.

        The first forward-primer match is used, and the first reverse site starting after its end.
        """
        seq = str(sequence).upper().replace("U", "T")
        fwd = self.forward.search(seq)
        if fwd is None:
            return None
        rev = self.reverse_site.search(seq, fwd.end())
        if rev is None:
            return None
        return seq[fwd.end():rev.start()]


def cut_region(sequences, region):
    """Amplicons of `region` for every sequence that yields one.

    Parameters
    ----------
    sequences : dict of str -> str
        ID -> full-length 16S sequence.
    region : str or Region
        A name from `REGIONS` or a `Region`.

    Returns
    -------
    dict of str -> str
        ID -> amplicon (first `region.length` nt when the region is trimmed), in the order of `sequences`.
    """
    region = REGIONS[region] if isinstance(region, str) else region
    cutter = AmpliconCutter(region.forward, region.reverse)
    out = {}
    for seq_id, seq in sequences.items():
        amplicon = cutter(seq)
        if amplicon is None or not amplicon:
            continue
        if region.length is not None:
            if len(amplicon) < region.length:
                continue
            amplicon = amplicon[:region.length]
        out[seq_id] = amplicon
    return out


def amplicon_report(sequences, regions=None):
    """How many reference sequences yield each region, and the lengths of what they yield.

    Parameters
    ----------
    sequences : dict of str -> str
    regions : list of str, optional
        Names from `REGIONS` (default: all of them).

    Returns
    -------
    dict
        ``{"references": n, "regions": {name: {"forward", "reverse", "length", "yielding", "fraction",
        "length_min", "length_median", "length_max", "starts_with_TACG"}}}``.
    """
    regions = list(REGIONS) if regions is None else list(regions)
    # cut each primer pair once; the trimmed regions are prefixes of the same amplicons
    full = {}
    report = {"references": len(sequences), "regions": {}}
    for name in regions:
        region = REGIONS[name]
        key = (region.forward, region.reverse)
        if key not in full:
            full[key] = cut_region(sequences, Region(name, region.forward, region.reverse))
        amplicons = [a if region.length is None else a[:region.length]
                     for a in full[key].values() if region.length is None or len(a) >= region.length]
        lengths = np.array([len(a) for a in amplicons], dtype=np.int64)
        report["regions"][name] = {
            "forward": region.forward, "reverse": region.reverse, "length": region.length,
            "yielding": int(len(amplicons)),
            "fraction": round(len(amplicons) / max(1, len(sequences)), 4),
            "length_min": int(lengths.min()) if len(lengths) else None,
            "length_median": float(np.median(lengths)) if len(lengths) else None,
            "length_max": int(lengths.max()) if len(lengths) else None,
            "starts_with_TACG": round(float(np.mean([a.startswith("TACG") for a in amplicons])), 4)
            if amplicons else None,
        }
    return report
