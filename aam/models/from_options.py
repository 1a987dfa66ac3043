"""A model's architecture from the run's options: the base's `EncoderConfig`, a fresh base, and the options of a
run that starts from a pretrained base (its architecture wins over the options)."""
from aam.errors import warn

#: the options a pretrained base fixes for the runs that start from it
PRETRAINED_ARCHITECTURE = ("max_bp", "token_limit", "embedding_dim", "attention_heads", "attention_layers")


def encoder_config(opts, objective, taxonomy_classes=0, reference=None):
    """The base's architecture from `opts`; a reference encoder (`aam.reference.selected.ReferenceEncoder`)
    fixes its nucleotide level.

    Returns
    -------
    aam.models.config.EncoderConfig
    """
    from aam.models.config import EncoderConfig
    fields = dict(max_bp=opts.max_bp, token_limit=opts.token_limit, embedding_dim=opts.embedding_dim,
                  attention_heads=opts.attention_heads, attention_layers=opts.attention_layers, dropout=opts.dropout,
                  attn_implementation=opts.attn_implementation, gradient_checkpointing=opts.gradient_checkpointing,
                  asv_chunk_size=opts.asv_chunk_size, encoder_type=objective, predict_nucleotides=True,
                  taxonomy_classes=taxonomy_classes)
    if reference is not None:
        shape = reference.config
        fields.update({k: shape[k] for k in ("max_bp", "embedding_dim", "attention_heads", "attention_layers",
                                             "ff_mult", "kmer_size", "predict_nucleotides") if k in shape},
                      freeze_asv_encoder=opts.freeze_asv_encoder)
    return EncoderConfig(**fields)


def new_base(cfg, reference=None):
    """A freshly initialized `SequenceEncoder`, its nucleotide level loaded from the reference encoder if any."""
    from aam.models import SequenceEncoder
    model = SequenceEncoder(cfg)
    if reference is not None:
        model.asv_encoder.load_state_dict(reference.state)
    return model


def with_pretrained_architecture(opts, base_record):
    """`opts` with the architecture of a pretrained base (a changed value the user gave is reported)."""
    changes = {}
    for name in PRETRAINED_ARCHITECTURE:
        used = getattr(base_record.encoder, name)
        # QIIME 2 passes every parameter, defaults included: only a value the user changed deserves a warning
        if getattr(opts, name) != used and not opts.is_default(name):
            warn(f"{{opt:{name}}} {getattr(opts, name)} ignored: the pretrained encoder uses {used}", stacklevel=4)
        changes[name] = used
    return opts.replace(**changes)
