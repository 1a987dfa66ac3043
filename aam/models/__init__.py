"""AAM models: nucleotides -> ASV embeddings -> sample embedding -> targets.

`SequenceEncoder` is the pretrainable base, `SequencePredictor` adds a regression / classification head.
`build_model` rebuilds either from the config dict stored in a checkpoint.
"""
from aam.models.asv_encoder import ASVEncoder
from aam.models.config import EncoderConfig, PredictorConfig
from aam.models.predictor import SequencePredictor
from aam.models.sample_encoder import SampleEncoder
from aam.models.sequence_encoder import SequenceEncoder

__all__ = ["EncoderConfig", "PredictorConfig", "SequenceEncoder", "SequencePredictor", "ASVEncoder",
           "SampleEncoder", "build_model"]


def build_model(model_config):
    """Build a freshly initialized model from its config dict.

    Parameters
    ----------
    model_config : dict
        ``{"model_type": "encoder" | "predictor", **config.to_dict()}``; a predictor builds its base from the
        nested ``encoder`` dict.

    Returns
    -------
    SequenceEncoder or SequencePredictor
    """
    kind = model_config.get("model_type")
    fields = {k: v for k, v in model_config.items() if k != "model_type"}
    if kind == "encoder":
        return SequenceEncoder(EncoderConfig.from_dict(fields))
    if kind == "predictor":
        return SequencePredictor(PredictorConfig.from_dict(fields))
    raise ValueError(f"model_config['model_type'] must be 'encoder' or 'predictor', got {kind!r}")
