"""Nucleotide tokenizer: ASV sequences -> fixed-length integer rows.

Vocabulary::

    PAD=0  A=1  C=2  G=3  T=4  START=5  MASK=6      (VOCAB_SIZE = 7)

Every row starts with START at position 0 (so no ASV is ever all padding), then up to `max_bp` nucleotides, then
PAD. Rows are `max_bp + 1` long.

Rules for what reaches the tokenizer:

* case is ignored (``acgt`` == ``ACGT``) and RNA ``U`` is read as ``T``;
* alignment gaps (``-`` and ``.``) and whitespace are removed;
* IUPAC ambiguity codes (``N R Y S W K M B D H V``) become MASK: the model sees "some base here" and, because
  masked-nucleotide prediction only scores A/C/G/T positions, is never asked to predict them;
* anything else (digits, ``X``, ``*``, ...) is an error naming the feature.

Sequences longer than `max_bp` are truncated at the 3' end; shorter ones are padded.
"""
import numpy as np

from aam.errors import AAMInputError, preview

PAD, A, C, G, T, START, MASK = 0, 1, 2, 3, 4, 5, 6
VOCAB_SIZE = 7
NUCLEOTIDES = "ACGT"
IUPAC_AMBIGUOUS = "NRYSWKMBDHV"

_LUT = np.full(256, 255, dtype=np.uint8)  # 255 = not allowed
for _i, _b in enumerate(NUCLEOTIDES):
    _LUT[ord(_b)] = _LUT[ord(_b.lower())] = _i + 1
_LUT[ord("U")] = _LUT[ord("u")] = T
for _b in IUPAC_AMBIGUOUS:
    _LUT[ord(_b)] = _LUT[ord(_b.lower())] = MASK
_SKIP = set("-. \t\r\n")


def clean(sequence):
    """The sequence with gaps and whitespace removed (case kept)."""
    return "".join(ch for ch in str(sequence) if ch not in _SKIP)


class SequenceTokenizer:
    """Encode ASV sequences as rows of `max_bp + 1` tokens.

    Parameters
    ----------
    max_bp : int
        Nucleotides kept per ASV (longer sequences are truncated).
    """

    def __init__(self, max_bp=150):
        if int(max_bp) < 1:
            raise ValueError("max_bp must be at least 1")
        self.max_bp = int(max_bp)

    @property
    def length(self):
        return self.max_bp + 1

    def encode(self, sequence, feature_id=None):
        """Tokens of one sequence, shape [max_bp + 1], dtype uint8."""
        seq = clean(sequence)
        if not seq:
            raise AAMInputError(f"feature {feature_id or '?'} has an empty sequence; remove it from the table or "
                                "fix its sequence.")
        raw = np.frombuffer(seq[: self.max_bp].encode("latin-1", errors="replace"), dtype=np.uint8)
        codes = _LUT[raw]
        if (codes == 255).any():
            bad = sorted({chr(b) for b in raw[codes == 255]})
            raise AAMInputError(
                f"feature {feature_id or '?'} has characters that are not nucleotides: {''.join(bad)!r}. "
                "Sequences may contain A/C/G/T/U, IUPAC ambiguity codes and gaps; fix or remove this feature.")
        row = np.zeros(self.length, dtype=np.uint8)
        row[0] = START
        row[1:1 + len(codes)] = codes
        return row

    def encode_many(self, sequences, feature_ids=None):
        """Tokens of many sequences, shape [F, max_bp + 1], dtype uint8.

        All offending features are collected into one error rather than failing on the first.
        """
        ids = list(feature_ids) if feature_ids is not None else [str(i) for i in range(len(sequences))]
        out = np.zeros((len(sequences), self.length), dtype=np.uint8)
        bad = []
        for i, (seq, fid) in enumerate(zip(sequences, ids)):
            try:
                out[i] = self.encode(seq, fid)
            except AAMInputError as err:
                bad.append((fid, str(err)))
        if bad:
            raise AAMInputError(f"{len(bad)} feature sequence(s) cannot be tokenized, e.g. {bad[0][1]} "
                                f"Offending features: {preview([b[0] for b in bad])}")
        return out

    def decode(self, tokens):
        """Sequence of a token row (MASK as 'N', START and PAD dropped)."""
        letters = {A: "A", C: "C", G: "G", T: "T", MASK: "N"}
        return "".join(letters.get(int(t), "") for t in np.asarray(tokens).ravel())

    def to_config(self):
        return {"max_bp": self.max_bp, "vocab_size": VOCAB_SIZE, "start_token": START, "mask_token": MASK}

    @classmethod
    def from_config(cls, config):
        if config.get("vocab_size", VOCAB_SIZE) != VOCAB_SIZE:
            raise AAMInputError(f"this model was made with a tokenizer of {config['vocab_size']} tokens; this "
                                f"version of AAM uses {VOCAB_SIZE}. Use the AAM version that trained it.")
        return cls(max_bp=config["max_bp"])
