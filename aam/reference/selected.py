"""The reference encoder a run asks for (``asv_encoder``): its weights, the architecture it fixes, its provenance,
and the check that a table's reads look like the reads it was trained on."""
from dataclasses import dataclass

from aam.errors import warn


@dataclass
class ReferenceEncoder:
    """A shipped reference encoder: its name, architecture, weights and the checksum of its weights file."""

    name: str
    config: dict
    state: dict
    sha256: str

    def provenance(self, frozen):
        """What a model record says of it (``asv_encoder``)."""
        return {"name": self.name, "sha256": self.sha256, "frozen": bool(frozen)}


def reference_for(opts):
    """``(ReferenceEncoder or None, opts)``: the encoder `opts` asks for, and `opts` with the architecture it
    fixes (a different value the user gave is reported)."""
    if opts.asv_encoder == "none":
        return None, opts
    from aam.reference import load_encoder
    from aam.reference.shipped import encoder_dir, read_manifest
    config, state = load_encoder(opts.asv_encoder)
    sha = read_manifest(encoder_dir(opts.asv_encoder))["files"]["weights.pt"]
    changes = {}
    for name in ("max_bp", "embedding_dim", "attention_heads", "attention_layers"):
        if getattr(opts, name) != config[name] and not opts.is_default(name):
            warn(f"{{opt:{name}}} {getattr(opts, name)} ignored: the reference encoder {opts.asv_encoder} uses "
                 f"{config[name]} (pass {{opt:asv_encoder}} none to choose the architecture)", stacklevel=4)
        changes[name] = config[name]
    return ReferenceEncoder(opts.asv_encoder, config, state, sha), opts.replace(**changes)


def check_region(sequences, reference_name):
    """Warn when `sequences` do not look like the reads the reference encoder `reference_name` was trained on."""
    if reference_name is None:
        return
    from aam.reference import region_report
    report = region_report(list(sequences), name=reference_name)
    if not report["matches"] or report["shorter_than_trained"] > 0.5:
        warn(report["message"], stacklevel=4)
