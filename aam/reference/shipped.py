"""Encoders shipped inside the package: files, checksums, loading, embedding.

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
import hashlib
import json
import os
import warnings

import numpy as np

from aam.errors import AAMInputError

DEFAULT_ENCODER = "gg13_8-v4-d64"
WEIGHTS_FORMAT = "aam-reference-encoder"
FORMAT_VERSION = 1
ENCODERS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "encoders")


class EncoderIntegrityError(AAMInputError):
    """A shipped encoder's files do not match their checksums (corrupted or modified installation)."""


def available_encoders():
    """Names of the encoders shipped with this installation (sorted)."""
    if not os.path.isdir(ENCODERS_DIR):
        return []
    return sorted(d for d in os.listdir(ENCODERS_DIR)
                  if os.path.isfile(os.path.join(ENCODERS_DIR, d, "manifest.json")))


def encoder_dir(name=DEFAULT_ENCODER):
    """Directory of the encoder `name` (a shipped name, or the path of a directory with a manifest.json)."""
    if name is None:
        name = DEFAULT_ENCODER
    candidate = os.fspath(name)
    if os.path.isfile(os.path.join(candidate, "manifest.json")):
        return os.path.abspath(candidate)
    path = os.path.join(ENCODERS_DIR, candidate)
    if os.sep in candidate or not os.path.isfile(os.path.join(path, "manifest.json")):
        shipped = available_encoders()
        raise AAMInputError(f"no encoder {candidate!r}: use one of the shipped encoders "
                            f"({', '.join(shipped) or 'none installed'}) or a directory with a manifest.json.")
    return path


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(directory):
    """The manifest of an encoder directory, after checking every listed file against its SHA-256.

    Raises
    ------
    EncoderIntegrityError
        A file is missing or its checksum differs.
    """
    with open(os.path.join(directory, "manifest.json")) as fh:
        manifest = json.load(fh)
    name = manifest.get("name", os.path.basename(directory))
    for file_name, expected in sorted(manifest.get("files", {}).items()):
        path = os.path.join(directory, file_name)
        if not os.path.isfile(path):
            raise EncoderIntegrityError(f"encoder {name!r} is incomplete: {path} is missing. Reinstall q2-aam.")
        actual = sha256_file(path)
        if actual != expected:
            raise EncoderIntegrityError(
                f"encoder {name!r}: {path} does not match its checksum (sha256 {actual[:16]}..., expected "
                f"{expected[:16]}... from manifest.json); the file is corrupted or was modified. Reinstall q2-aam "
                "or rebuild the encoder (make encoder).")
    return manifest


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


def load_region(name=DEFAULT_ENCODER):
    """The region.json of an encoder (checksums verified)."""
    directory = encoder_dir(name)
    read_manifest(directory)
    with open(os.path.join(directory, "region.json")) as fh:
        return json.load(fh)


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


def _sequence_list(sequences):
    from aam.data.sequences import as_mapping
    if isinstance(sequences, (list, tuple, np.ndarray)) and all(isinstance(s, str) for s in sequences):
        return [str(s) for s in sequences], [str(i) for i in range(len(sequences))]
    mapping = as_mapping(sequences)
    return list(mapping.values()), list(mapping.keys())


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
    seqs, ids = _sequence_list(sequences)
    model = build_encoder(name)
    if check_region and seqs:
        from aam.reference.region import region_report
        report = region_report(seqs, name=name)
        if not report["matches"] or report["shorter_than_trained"] > 0.5:
            warnings.warn(report["message"], stacklevel=2)
    tokens = SequenceTokenizer(model.cfg.max_bp).encode_many(seqs, ids)
    with torch.inference_mode():
        return encode(model, tokens, batch_size=batch_size)
