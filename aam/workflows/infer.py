"""Inference workflows: predictions of a trained model, and sample embeddings of any model.

    model file -> new table (the model's tokenizer; novelty warnings) -> SampleFeatures (each ASV encoded once)
        -> Ensemble.predict: every member's outputs and their blend -> prediction table
"""
import numpy as np
import pandas as pd

from aam.data.pipeline import prepare_table
from aam.errors import AAMInputError, preview, warn


def prepare_new_table(record, table, sequences, opts):
    """A new table for a trained model (its tokenizer); samples without reads are left out.

    What sets the new samples apart from the training data (no reads, very few reads, no feature seen in
    training, another 16S region) is reported as warnings, one per kind with a count.
    """
    from aam.data.novelty import prediction_warnings
    prepared = prepare_table(table, sequences=sequences, max_bp=record.max_bp, rarefy_depth=0, seed=opts.seed)
    for text in prediction_warnings(prepared, record.data.signature, record.data.rarefaction_depth, record.max_bp,
                                    prepared.empty_samples):
        warn(text, stacklevel=4)
    return prepared


def covariates(record, metadata, sample_ids, log):
    """Categorical covariates of the samples as the model's encoder codes them (None without covariates)."""
    target = record.target
    if target is None or not target.categorical_encoder:
        return None
    from aam.data.categorical import CategoricalEncoder
    from aam.data.metadata import load_metadata
    enc = CategoricalEncoder.from_dict(target.categorical_encoder)
    cols = target.categorical_columns
    if metadata is None:
        log(f"warning: the model uses categorical covariates {cols} but no metadata was given; they are treated "
            "as unknown")
        md = pd.DataFrame(index=sample_ids, columns=cols)
    else:
        md = load_metadata(metadata).reindex(sample_ids)
        for c in cols:
            if c not in md.columns:
                md[c] = np.nan
    return enc.transform(md)


def numeric_covariates(record, metadata, sample_ids):
    """Numeric covariates of the samples as the model reads them (None without any): a missing value, or a sample
    the metadata lacks, is read as the training median, as in training. A column absent from the metadata is
    refused: every sample would silently get the median."""
    target = record.target
    if target is None or not target.numeric_encoder:
        return None
    from aam.data.metadata import load_metadata
    from aam.data.numeric import NumericEncoder
    encoder = NumericEncoder.from_dict(target.numeric_encoder)
    if encoder.width != int(record.architecture.numeric_inputs):
        raise AAMInputError(f"the model's numeric covariates ({encoder.width} inputs) do not match its network "
                            f"({record.architecture.numeric_inputs}); the model file was altered.")
    if metadata is None:
        raise AAMInputError(f"the model reads numeric covariates {preview(encoder.names)}; pass the samples' "
                            "metadata holding them ({input:metadata}).")
    md = load_metadata(metadata)
    absent = [c for c in encoder.names if c not in md.columns]
    if absent:
        raise AAMInputError(f"the metadata lacks the numeric covariate column(s) {preview(absent)} the model reads; "
                            f"it has {preview(md.columns, 10)}.")
    unknown = [s for s in sample_ids if s not in md.index]
    if unknown:
        warn(f"{len(unknown)} sample(s) are not in the metadata ({preview(unknown)}): their numeric covariates are "
             "read as the training medians.", stacklevel=4)
    return encoder.transform(md.reindex([str(s) for s in sample_ids]), where="{input:metadata}")


def predict_table(ckpt, table, sequences, metadata, opts, ctx, log):
    """The prediction table of a predictor (`aam.api.predict`)."""
    from aam.data.novelty import sample_novelty
    from aam.ensemble.composite import Ensemble, prediction_frame
    from aam.inference import SampleFeatures
    record = ckpt.record
    prepared = prepare_new_table(record, table, sequences, opts)
    net = ckpt.build_model()
    features = SampleFeatures.build(prepared, record, opts, ctx, base=net.base,
                                    covariates=covariates(record, metadata, prepared.sample_ids, log),
                                    numeric=numeric_covariates(record, metadata, prepared.sample_ids))
    outputs = Ensemble.from_checkpoint(ckpt, model=net).predict(features, opts.coverage_floor)
    frame = prediction_frame(outputs, list(prepared.sample_ids), record)
    # how much of each sample the training data covers (the warnings' per-sample fields), in the output itself
    return frame.join(sample_novelty(prepared, record.data.signature, record.max_bp))


def embed_table(ckpt, table, sequences, opts, ctx):
    """Sample embeddings and the distances between them (`aam.api.embed`)."""
    import skbio
    import torch

    from aam.inference import SampleFeatures
    prepared = prepare_new_table(ckpt.record, table, sequences, opts)
    net = ckpt.build_model()
    base = getattr(net, "base", net)
    features = SampleFeatures.build(prepared, ckpt.record, opts, ctx, base=base)
    D = base.cfg.embedding_dim

    def both(out, batch):
        space = out.get("distance_embedding", out["sample_embedding"])
        return torch.cat([out["sample_embedding"], space], dim=-1)                    # [B, D + D']

    values = features.base_outputs(both)
    emb, space = values[:, :D], values[:, D:]
    d = torch.cdist(torch.from_numpy(space), torch.from_numpy(space)).numpy()
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    ids = list(prepared.sample_ids)
    frame = pd.DataFrame(emb.astype(np.float32), index=ids, columns=[f"aam_{i + 1}" for i in range(emb.shape[1])])
    frame.index.name = "sample_id"
    return frame, skbio.DistanceMatrix(d, ids=ids)


def embed_sequences(encoder, mapping, opts, ctx):
    """Per-feature embeddings of `mapping` (ID -> sequence) by a nucleotide-level encoder: [F, D] frame."""
    import torch

    from aam.data.tokenizer import SequenceTokenizer
    ids, seqs = list(mapping), [str(mapping[i]) for i in mapping]
    encoder = encoder.to(ctx.device).eval()
    tokens = torch.as_tensor(SequenceTokenizer(encoder.cfg.max_bp).encode_many(seqs, ids))
    out = []
    step = max(1, opts.batch_size * 16)
    with torch.no_grad():
        for start in range(0, len(ids), step):
            emb, _ = encoder(tokens[start:start + step].long().to(ctx.device))
            out.append(emb.float().cpu())
    values = torch.cat(out).numpy()
    frame = pd.DataFrame(values, index=ids, columns=[f"aam_{i + 1}" for i in range(values.shape[1])])
    frame.index.name = "feature_id"
    return frame
