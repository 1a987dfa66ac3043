"""Encoders shipped inside the package: loading their weights and embedding sequences with them.

Finding an encoder's directory and checking its files against the manifest is the job of
`aam.reference.encoder_files`, whose names this module re-exports.

An encoder is a directory ``aam/assets/encoders/<name>/`` holding

    weights.pt      torch.save of {"format", "format_version", "config": JSON text, "state_dict": tensors}
                    (the ASVEncoder's state_dict, keys as in ``ASVEncoder.state_dict()``)
    region.json     what the encoder was trained on: primers, read lengths, first-k-nt prefixes of the amplicons
    manifest.json   {"name", "format_version", "files": {file name: sha256}}
    MODEL_CARD.md   data, objectives, held-out metrics, license
    metrics.json    held-out metrics as measured, with the command that measured them

Every load recomputes the SHA-256 of each file listed in the manifest before reading it and refuses a mismatch,
then reads the weights with ``torch.load(weights_only=True)`` (tensors and plain containers only: loading never
runs code from the file).
"""
import functools
import json
import os
import warnings

from aam.errors import AAMInputError
from aam.reference.encoder_files import (DEFAULT_ENCODER, ENCODERS_DIR, EncoderIntegrityError, available_encoders,
                                         encoder_dir, load_region, read_manifest, sha256_file)

# the directory layer (`aam.reference.encoder_files`) is re-exported: callers import these names from here
__all__ = ["DEFAULT_ENCODER", "ENCODERS_DIR", "EncoderIntegrityError", "FORMAT_VERSION", "WEIGHTS_FORMAT",
           "available_encoders", "build_encoder", "embed_sequences", "encoder_dir", "load_encoder", "load_region",
           "read_manifest", "sha256_file"]

WEIGHTS_FORMAT = "aam-reference-encoder"
FORMAT_VERSION = 1


def load_encoder(name=DEFAULT_ENCODER):
    """Configuration and weights of a shipped ASV encoder, checksums verified.

    Parameters
    ----------
    name : str
        A shipped encoder (see `available_encoders`) or the path of an encoder directory.

    Returns
    -------
    config : dict
        ``EncoderConfig.to_dict()`` of the architecture (``EncoderConfig.from_dict(config)`` works); only the
        fields that shape the ASV encoder matter (max_bp, embedding_dim, attention_heads, attention_layers,
        ff_mult, kmer_size, predict_nucleotides).
    state_dict : dict of str -> torch.Tensor
        Loads into ``ASVEncoder(EncoderConfig.from_dict(config))``, i.e. into ``SequenceEncoder.asv_encoder``
        (keys prefixed ``asv_encoder.`` in a SequenceEncoder's state_dict, ``base.asv_encoder.`` in a
        SequencePredictor's).

    Raises
    ------
    EncoderIntegrityError
        Checksum mismatch.
    AAMInputError
        Unknown name, or a weights file of another format.
    """
    import torch
    directory = encoder_dir(name)
    manifest = read_manifest(directory)
    path = os.path.join(directory, "weights.pt")
    if "weights.pt" not in manifest.get("files", {}):
        raise EncoderIntegrityError(f"{directory}/manifest.json does not list weights.pt with a checksum.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise AAMInputError(f"{path} cannot be read as encoder weights: {str(err).splitlines()[0]}") from None
    if not isinstance(blob, dict) or blob.get("format") != WEIGHTS_FORMAT:
        raise AAMInputError(f"{path} is not an AAM reference encoder (format {WEIGHTS_FORMAT!r}).")
    if int(blob.get("format_version", 0)) > FORMAT_VERSION:
        raise AAMInputError(f"{path} was written by a newer AAM (format version {blob['format_version']}); "
                            "upgrade q2-aam.")
    meta = json.loads(blob["config"])
    return dict(meta["encoder_config"]), dict(blob["state_dict"])


@functools.lru_cache(maxsize=4)
def _cached_encoder(directory, mtime):
    from aam.models.asv_encoder import ASVEncoder
    from aam.models.config import EncoderConfig
    config, state = load_encoder(directory)
    cfg = EncoderConfig.from_dict(dict(config, dropout=0.0))
    model = ASVEncoder(cfg)
    model.load_state_dict(state)
    model.eval()
    return model


def build_encoder(name=DEFAULT_ENCODER):
    """A ready `ASVEncoder` (eval mode) with the shipped weights; built once per process and encoder."""
    directory = encoder_dir(name)
    weights = os.path.join(directory, "weights.pt")
    return _cached_encoder(directory, os.path.getmtime(weights) if os.path.exists(weights) else 0.0)


def embed_sequences(sequences, name=DEFAULT_ENCODER, batch_size=512, check_region=True):
    """Per-feature embeddings of DNA sequences by a shipped encoder.

    Parameters
    ----------
    sequences : list of str, dict ID -> str, pd.Series, iterable of skbio.DNA, or FASTA path
        One sequence per feature (ASVs, read from their 5' end; longer than ``max_bp`` is truncated).
    name : str
        Shipped encoder name or encoder directory.
    batch_size : int
    check_region : bool
        Warn when the sequences do not look like the reads the encoder was trained on (see `region_report`);
        they are embedded anyway.

    Returns
    -------
    np.ndarray of float32, shape [n_sequences, embedding_dim]
        In the order of `sequences`.
    """
    import torch
    from aam.data.tokenizer import SequenceTokenizer
    from aam.reference.evaluate import encode
    # imported here, not at the top: `aam.reference` imports this module, and `python -m aam.reference.region`
    # must not find its module already imported
    from aam.reference.region import region_report, sequence_list
    seqs, ids = sequence_list(sequences)
    model = build_encoder(name)
    if check_region and seqs:
        report = region_report(seqs, name=name)
        if not report["matches"] or report["shorter_than_trained"] > 0.5:
            warnings.warn(report["message"], stacklevel=2)
    tokens = SequenceTokenizer(model.cfg.max_bp).encode_many(seqs, ids)
    with torch.inference_mode():
        return encode(model, tokens, batch_size=batch_size)
