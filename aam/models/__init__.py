"""AAM models: nucleotides -> ASV embeddings -> sample embedding -> targets.

`SequenceEncoder` is the pretrainable base, `SequencePredictor` adds a regression / classification head;
`EncoderConfig` / `PredictorConfig` describe their architecture. The configs are plain dataclasses that import no
torch, so ``aam.models.config`` can be read where torch is not loaded (the QIIME 2 plugin's visualizers); the
modules are imported here on first use for the same reason.
"""
import importlib

_WHERE = {
    "ASVEncoder": "aam.models.asv_encoder",
    "EncoderConfig": "aam.models.config",
    "PredictorConfig": "aam.models.config",
    "SampleEncoder": "aam.models.sample_encoder",
    "SequenceEncoder": "aam.models.sequence_encoder",
    "SequencePredictor": "aam.models.predictor",
}

__all__ = sorted(_WHERE) + ["build_model"]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'aam.models' has no attribute {name!r}")


def build_model(architecture):
    """A freshly initialized model for an architecture.

    Parameters
    ----------
    architecture : EncoderConfig, PredictorConfig or dict
        A config, or its ``to_dict()`` with ``"model_type": "encoder" | "predictor"`` beside the fields.

    Returns
    -------
    SequenceEncoder or SequencePredictor
    """
    from aam.models.config import EncoderConfig, PredictorConfig
    if isinstance(architecture, dict):
        kind = architecture.get("model_type")
        fields = {k: v for k, v in architecture.items() if k != "model_type"}
        if kind not in ("encoder", "predictor"):
            raise ValueError(f"model_type must be 'encoder' or 'predictor', got {kind!r}")
        architecture = (EncoderConfig if kind == "encoder" else PredictorConfig).from_dict(fields)
    if isinstance(architecture, EncoderConfig):
        return __getattr__("SequenceEncoder")(architecture)
    if isinstance(architecture, PredictorConfig):
        return __getattr__("SequencePredictor")(architecture)
    raise TypeError(f"build_model needs an EncoderConfig or PredictorConfig, got {type(architecture).__name__}")
