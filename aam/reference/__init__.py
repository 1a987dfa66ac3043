"""A general 16S ASV encoder pretrained on a reference database (Greengenes 13_8 V4 amplicons) and shipped with AAM.

Public API::

    load_encoder(name)          -> (EncoderConfig dict, ASVEncoder state_dict), checksums verified
    embed_sequences(seqs, name) -> np.ndarray [n, D] per-feature embeddings
    region_report(seqs, name)   -> dict: do the sequences look like the encoder's training reads?
    available_encoders()        -> names shipped with this installation

Rebuilding (needs the build-time-only PyPI package qiime-default-reference): ``make encoder``, which runs
`aam.reference.pretrain`, `aam.reference.evaluate` and `aam.reference.export`. See docs/encoder.md.
"""
from aam.reference.shipped import (DEFAULT_ENCODER, EncoderIntegrityError, available_encoders, build_encoder,
                                   embed_sequences, load_encoder)

__all__ = ["DEFAULT_ENCODER", "EncoderIntegrityError", "available_encoders", "build_encoder", "embed_sequences",
           "load_encoder", "region_report"]


def __getattr__(name):
    # imported on first use, so that `python -m aam.reference.region` does not find its module pre-imported
    if name == "region_report":
        from aam.reference.region import region_report
        return region_report
    raise AttributeError(f"module 'aam.reference' has no attribute {name!r}")
