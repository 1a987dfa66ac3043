"""Model configurations: plain dataclasses that round-trip through JSON (they are stored in every checkpoint).

`EncoderConfig` describes the pretrained base (`SequenceEncoder`); `PredictorConfig` wraps one and adds the
regression / classification head (`SequencePredictor`). ``to_dict`` gives plain JSON types, ``from_dict`` rebuilds
the dataclass and refuses keys it does not know, so a typo or a checkpoint from an incompatible version fails
loudly instead of silently building a different model.
"""
from dataclasses import dataclass, field, fields
from typing import Dict

ATTN_IMPLEMENTATIONS = ("sdpa", "math", "flash", "mem_efficient")
ENCODER_TYPES = ("unifrac", "faith_pd", "taxonomy", "combined")
CATEGORICAL_FUSIONS = ("concat", "add")
OUTPUT_ACTIVATIONS = ("none", "relu", "softplus", "exp")
HEADS = ("transformer", "linear")
# width of a categorical column's embedding when PredictorConfig.categorical_embed_dims does not name it
DEFAULT_CATEGORICAL_EMBED_DIM = 16

# keys that describe the kind of model rather than its shape; build_model() puts 'model_type' next to the fields
_IGNORED_KEYS = ("model_type",)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_keys(cls, d):
    known = {f.name for f in fields(cls)}
    unknown = sorted(k for k in d if k not in known and k not in _IGNORED_KEYS)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(map(repr, unknown))}")
    return {k: v for k, v in d.items() if k in known}


@dataclass
class EncoderConfig:
    """Architecture of the base model: nucleotides -> ASV embeddings -> sample embedding.

    Parameters
    ----------
    max_bp : int
        Longest ASV in nucleotides; token sequences have ``max_bp + 1`` positions (position 0 is START).
    token_limit : int
        Most ASVs per sample (slots S); slot index = abundance rank.
    embedding_dim : int
        Width D of every hidden state.
    attention_heads : int
        Heads per attention layer; must divide ``embedding_dim``.
    attention_layers : int
        Transformer layers at each level (nucleotides within an ASV, ASVs within a sample).
    dropout : float
        Dropout on embeddings, attention weights and residual branches.
    attn_implementation : {'sdpa', 'math', 'flash', 'mem_efficient'}
        'sdpa' lets PyTorch choose the kernel; the others force one backend.
    gradient_checkpointing : bool
        Recompute transformer blocks in the backward pass instead of storing activations (training only).
    asv_chunk_size : int
        ASVs encoded at once by the nucleotide-level transformer (0 = all); bounds peak memory.
    encoder_type : {'unifrac', 'faith_pd', 'taxonomy', 'combined'}
        Pretraining objective; decides which heads exist.
    predict_nucleotides : bool
        Add the masked-nucleotide prediction head.
    taxonomy_classes : int
        Classes of the per-ASV taxonomy head (0 = no head).
    ff_mult : int
        Hidden width of the transformer MLPs, as a multiple of ``embedding_dim``.
    kmer_size : int
        Length of the k-mers whose embeddings are averaged into every ASV embedding (0 = none). Distinct ASVs share
        most of their nucleotides, so a freshly initialized nucleotide transformer maps them to nearly the same
        point; the k-mer profile tells them apart from the first step, and still reads unseen sequences.
    freeze_asv_encoder : bool
        Keep the nucleotide-level encoder fixed (a pretrained reference encoder): it runs in eval mode, takes no
        gradient, and each distinct ASV of a run is encoded once (see `aam.training.cache`).
    """
    max_bp: int = 150
    token_limit: int = 1024
    embedding_dim: int = 64
    attention_heads: int = 4
    attention_layers: int = 2
    dropout: float = 0.1
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = False
    asv_chunk_size: int = 256
    encoder_type: str = "unifrac"
    predict_nucleotides: bool = True
    taxonomy_classes: int = 0
    ff_mult: int = 4
    kmer_size: int = 6
    freeze_asv_encoder: bool = False

    def __post_init__(self):
        for name in ("max_bp", "token_limit", "embedding_dim", "attention_heads", "ff_mult"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= int(self.kmer_size) <= 8:
            raise ValueError(f"kmer_size must be in 0..8, got {self.kmer_size!r}")
        for name in ("attention_layers", "asv_chunk_size", "taxonomy_classes"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.embedding_dim % self.attention_heads:
            raise ValueError(f"embedding_dim ({self.embedding_dim}) must be divisible by attention_heads "
                             f"({self.attention_heads})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        _check_choice("attn_implementation", self.attn_implementation, ATTN_IMPLEMENTATIONS)
        _check_choice("encoder_type", self.encoder_type, ENCODER_TYPES)

    def to_dict(self):
        """Plain JSON types (int, float, bool, str)."""
        return {"max_bp": int(self.max_bp), "token_limit": int(self.token_limit),
                "embedding_dim": int(self.embedding_dim), "attention_heads": int(self.attention_heads),
                "attention_layers": int(self.attention_layers), "dropout": float(self.dropout),
                "attn_implementation": str(self.attn_implementation),
                "gradient_checkpointing": bool(self.gradient_checkpointing),
                "asv_chunk_size": int(self.asv_chunk_size), "encoder_type": str(self.encoder_type),
                "predict_nucleotides": bool(self.predict_nucleotides),
                "taxonomy_classes": int(self.taxonomy_classes), "ff_mult": int(self.ff_mult),
                "kmer_size": int(self.kmer_size), "freeze_asv_encoder": bool(self.freeze_asv_encoder)}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from `to_dict` output; 'model_type' is ignored, any other unknown key is a ValueError."""
        return cls(**_check_keys(cls, d))


@dataclass
class PredictorConfig:
    """A base encoder plus a head that predicts one target per sample.

    Parameters
    ----------
    encoder : EncoderConfig
        Architecture of the base.
    out_dim : int
        1 for regression (output shape [B]); the number of classes for classification (logits [B, out_dim]).
    classifier : bool
        Classification (logits) instead of regression.
    freeze_base : bool
        Keep the base's weights fixed (and the base in eval mode) while the head trains.
    categorical_cardinalities : dict of str -> int
        Categorical covariate columns and their number of categories, INCLUDING index 0 = unknown. The order of
        the keys is the column order of the ``categorical`` tensor passed to the predictor.
    categorical_embed_dims : dict of str -> int
        Embedding width per column (``DEFAULT_CATEGORICAL_EMBED_DIM`` for a column not named here).
    categorical_fusion : {'concat', 'add'}
        How covariate embeddings join the sample representation.
    numeric_inputs : int
        Width of the ``numeric`` covariate tensor (`aam.data.numeric.NumericEncoder.width`; 0: none). A linear
        layer projects it onto the sample representation, which it is added to.
    output_activation : {'none', 'relu', 'softplus', 'exp'}
        Regression output activation (ignored when ``bounded_targets`` or ``classifier``).
    bounded_targets : bool
        Regression output through a sigmoid, in (0, 1).
    learnable_output_scale : bool
        Regression output multiplied by a learnable scale and shifted by a learnable bias (before the activation).
    head_layers : int
        Transformer layers of the head's own sample-level encoder.
    head : {'transformer', 'linear'}
        'transformer': a sample-level transformer over the base's ASV states, fused with the sample embedding,
        then an MLP (trained by gradient descent). 'linear': one linear layer over the frozen base's sample and
        distance embeddings (and one-hot covariates), fitted in closed form (ridge / logistic regression).
    """
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    out_dim: int = 1
    classifier: bool = False
    freeze_base: bool = False
    categorical_cardinalities: Dict[str, int] = field(default_factory=dict)
    categorical_embed_dims: Dict[str, int] = field(default_factory=dict)
    categorical_fusion: str = "concat"
    numeric_inputs: int = 0
    output_activation: str = "none"
    bounded_targets: bool = False
    learnable_output_scale: bool = False
    head_layers: int = 2
    head: str = "transformer"

    def __post_init__(self):
        if isinstance(self.encoder, dict):
            self.encoder = EncoderConfig.from_dict(self.encoder)
        if int(self.out_dim) < 1:
            raise ValueError(f"out_dim must be >= 1, got {self.out_dim!r}")
        if int(self.head_layers) < 0:
            raise ValueError(f"head_layers must be >= 0, got {self.head_layers!r}")
        _check_choice("categorical_fusion", self.categorical_fusion, CATEGORICAL_FUSIONS)
        _check_choice("output_activation", self.output_activation, OUTPUT_ACTIVATIONS)
        _check_choice("head", self.head, HEADS)
        if self.head == "linear" and not self.freeze_base:
            raise ValueError("a linear head reads a frozen base: set freeze_base")
        if int(self.numeric_inputs) < 0:
            raise ValueError(f"numeric_inputs must be >= 0, got {self.numeric_inputs!r}")
        self.categorical_cardinalities = dict(self.categorical_cardinalities or {})
        self.categorical_embed_dims = dict(self.categorical_embed_dims or {})
        for col, n in self.categorical_cardinalities.items():
            # index 0 is reserved for unknown, so a usable column has at least one real category besides it
            if int(n) < 1:
                raise ValueError(f"categorical column {col!r} needs cardinality >= 1 (index 0 = unknown), "
                                 f"got {n!r}")
        stray = sorted(set(self.categorical_embed_dims) - set(self.categorical_cardinalities))
        if stray:
            raise ValueError(f"categorical_embed_dims names columns without a cardinality: {stray}")
        for col, n in self.categorical_embed_dims.items():
            if int(n) < 1:
                raise ValueError(f"categorical_embed_dims[{col!r}] must be >= 1, got {n!r}")

    @property
    def categorical_columns(self):
        """Column order of the ``categorical`` tensor: the insertion order of ``categorical_cardinalities``."""
        return list(self.categorical_cardinalities)

    def embed_dim(self, column):
        return int(self.categorical_embed_dims.get(column, DEFAULT_CATEGORICAL_EMBED_DIM))

    @property
    def linear_inputs(self):
        """Width of a linear head's input: sample and distance embeddings, one-hot and numeric covariates."""
        return (2 * self.encoder.embedding_dim + sum(int(n) for n in self.categorical_cardinalities.values())
                + int(self.numeric_inputs))

    def to_dict(self):
        """Plain JSON types; the encoder config is nested as a dict."""
        return {"encoder": self.encoder.to_dict(), "out_dim": int(self.out_dim),
                "classifier": bool(self.classifier), "freeze_base": bool(self.freeze_base),
                "categorical_cardinalities": {str(k): int(v) for k, v in self.categorical_cardinalities.items()},
                "categorical_embed_dims": {str(k): int(v) for k, v in self.categorical_embed_dims.items()},
                "categorical_fusion": str(self.categorical_fusion), "numeric_inputs": int(self.numeric_inputs),
                "output_activation": str(self.output_activation), "bounded_targets": bool(self.bounded_targets),
                "learnable_output_scale": bool(self.learnable_output_scale), "head_layers": int(self.head_layers),
                "head": str(self.head)}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from `to_dict` output; 'model_type' is ignored, any other unknown key is a ValueError."""
        d = _check_keys(cls, d)
        if "encoder" in d and not isinstance(d["encoder"], EncoderConfig):
            d["encoder"] = EncoderConfig.from_dict(d["encoder"])
        return cls(**d)
