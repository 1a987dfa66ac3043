"""The engine's public workflows: pretrain, train (fine-tune), predict, embed.

The ``aam`` CLI and the QIIME 2 plugin are thin layers over these functions. Inputs are plain objects or paths
(biom.Table, skbio.TreeNode, skbio.DistanceMatrix, pandas DataFrames, FASTA paths); options are the names of
`aam.options` (``embedding_dim=64``, ``epochs=20``, ...), validated here once for both interfaces.
"""
import gc
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import pandas as pd
import torch

from aam import __version__, options as O
from aam.checkpoint import Checkpoint, load_checkpoint
from aam.data.dataset import ASVDataset, Collator
from aam.data.pipeline import prepare_table
from aam.errors import AAMInputError, preview


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    checkpoint : aam.checkpoint.Checkpoint
        The best model (weights of the best epoch) with its full config and history.
    history : list of dict
        One row per epoch (``train/...``, ``val/...`` metrics).
    output_dir : str or None
    report : list of str
        What the data pipeline did (depth, dropped samples, distances, split).
    """

    checkpoint: Checkpoint
    history: list
    output_dir: Optional[str]
    report: List[str] = field(default_factory=list)


def _setup(command, given):
    from aam.training.device import resolve_device, set_threads
    from aam.training.trainer import seed_everything
    try:
        opts = O.resolve(command, **{k: v for k, v in given.items() if v is not None})
    except ValueError as err:
        raise AAMInputError(str(err)) from None
    seed_everything(opts["seed"])
    threads = set_threads(opts.get("num_threads", 0))
    if command in (O.PRETRAIN, O.TRAIN):
        from aam.training import distributed as D
        # joins the process group torchrun set up (or the one aam.cli already joined); a plain run gets a
        # single-process context
        ctx = D.init_distributed(D.mode_from_options(opts), opts["device"],
                                 sharded_checkpoint=opts.get("fsdp_sharded_checkpoint", False))
        opts["_dist"] = ctx
        opts["_world_size"], opts["_rank"] = (ctx.world_size, ctx.rank) if ctx.active else (1, 0)
        device = ctx.device
    else:
        device = resolve_device(opts["device"])
    if device.type == "cpu" and opts.get("mixed_precision") == "fp16":
        warnings.warn("--mixed-precision fp16 needs a GPU; using bf16 on the CPU.", stacklevel=3)
        opts["mixed_precision"] = "bf16"
    opts["_threads"] = threads
    return opts, device


def _loaders(train_ds, val_ds, collate_train, collate_val, opts, device):
    from torch.utils.data.distributed import DistributedSampler
    common = {"num_workers": opts.get("num_workers", 0), "pin_memory": device.type == "cuda"}
    if common["num_workers"] > 0:
        common["persistent_workers"] = False
        common["prefetch_factor"] = 2
    # the order of an epoch is a function of (seed, epoch) only, so a resumed run sees the same batches as an
    # uninterrupted one; with one replica DistributedSampler is exactly a seeded per-epoch shuffle
    world, rank = opts.get("_world_size", 1), opts.get("_rank", 0)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=opts["seed"],
                                 drop_last=False)
    drop_last = bool(opts.get("drop_last"))
    if drop_last and len(sampler) < opts["batch_size"]:
        warnings.warn(f"--drop-last ignored: {len(sampler)} training samples per process make less than one batch "
                      f"of {opts['batch_size']}", stacklevel=3)
        drop_last = False
    train = torch.utils.data.DataLoader(train_ds, batch_size=opts["batch_size"], sampler=sampler,
                                        collate_fn=collate_train, drop_last=drop_last,
                                        **common)
    val = None
    if val_ds is not None and len(val_ds):
        # validation never drops a batch: every held-out sample is scored
        val = torch.utils.data.DataLoader(val_ds, batch_size=opts["batch_size"], shuffle=False,
                                          collate_fn=collate_val, drop_last=False, **common)
    return train, val


def _split(sample_ids, opts, stratify=None, groups=None):
    from aam.data.splits import train_val_split
    frac = opts["validation_fraction"]
    if frac <= 0 or len(sample_ids) < 4:
        if frac > 0:
            warnings.warn(f"only {len(sample_ids)} samples: training without a validation split", stacklevel=3)
        return list(sample_ids), []
    return train_val_split(sample_ids, val_fraction=frac, seed=opts["seed"], stratify=stratify, groups=groups)


def _groups(metadata, column, sample_ids):
    if column is None:
        return None
    if metadata is None:
        raise AAMInputError(f"--group-column {column!r} needs sample metadata (--metadata).")
    from aam.data.metadata import load_metadata, select_samples
    md = select_samples(load_metadata(metadata), sample_ids)
    if column not in md.columns:
        raise AAMInputError(f"--group-column {column!r} is not a metadata column; available: "
                            f"{preview(md.columns, 10)}")
    g = md[column]
    if g.isna().any():
        raise AAMInputError(f"--group-column {column!r} has no value for samples {preview(g.index[g.isna()])}; "
                            "fill them in or choose another column.")
    return list(g.astype(str))


def _encoder_config(opts, objective, taxonomy_classes=0):
    from aam.models.config import EncoderConfig
    return EncoderConfig(max_bp=opts["max_bp"], token_limit=opts["token_limit"],
                         embedding_dim=opts["embedding_dim"], attention_heads=opts["attention_heads"],
                         attention_layers=opts["attention_layers"], dropout=opts["dropout"],
                         attn_implementation=opts["attn_implementation"],
                         gradient_checkpointing=opts["gradient_checkpointing"],
                         asv_chunk_size=opts["asv_chunk_size"], encoder_type=objective,
                         predict_nucleotides=True, taxonomy_classes=taxonomy_classes)


def _public_options(opts):
    return {k: v for k, v in opts.items() if not k.startswith("_")}


def _data_summary(prepared, train_ids, val_ids):
    return {"n_samples": len(prepared.sample_ids), "n_features": len(prepared.feature_ids),
            "rarefaction_depth": prepared.depth, "dropped_low_depth": prepared.dropped_low_depth,
            "train_samples": list(train_ids), "validation_samples": list(val_ids),
            "distance_source": prepared.distance_source, "report": prepared.report}


def pretrain(table, sequences=None, tree=None, distance_matrix=None, distance_ids=None, taxonomy=None,
             metadata=None, output_dir=None, progress=True, log=None, **options):
    """Self-supervised pretraining of the base model (`SequenceEncoder`).

    The objective is chosen by ``encoder_type``: 'unifrac' fits pairwise Euclidean distances between sample
    embeddings to `distance_matrix` (or to unweighted UniFrac computed from `tree`), 'faith_pd' and 'taxonomy'
    predict those, 'combined' does all three; masked-nucleotide prediction is added with ``nuc_penalty``.

    Parameters
    ----------
    table : str or biom.Table
    sequences : None, dict, pd.Series or FASTA path
        Needed when feature IDs are not DNA sequences.
    tree : skbio.TreeNode or Newick path, optional
    distance_matrix : skbio.DistanceMatrix or path (.npy, .h5, .csv, .tsv, lsmat), optional
    distance_ids : list of str, optional
        Sample IDs for a bare .npy matrix.
    taxonomy : pd.Series or pd.DataFrame, optional
    metadata : str or pd.DataFrame, optional
        Only for ``group_column``.
    output_dir : str, optional
        Checkpoints, plots, TensorBoard logs and history.tsv; None uses a temporary directory.
    progress : bool
    log : callable, optional
        Receives progress lines (default: print to stderr).
    **options
        Any option of `aam.options` for 'pretrain'.

    Returns
    -------
    TrainResult
    """
    from aam.models import SequenceEncoder
    from aam.training.losses import MultiTaskLoss
    from aam.training.trainer import Trainer

    opts, device = _setup(O.PRETRAIN, options)
    objective = opts["encoder_type"]
    prepared = prepare_table(table, sequences=sequences, tree=tree, distance_matrix=distance_matrix,
                             distance_ids=distance_ids, taxonomy=taxonomy, taxonomy_level=opts["taxonomy_level"],
                             objective=objective, max_bp=opts["max_bp"], rarefy_depth=opts["rarefy_depth"],
                             seed=opts["seed"])
    groups = _groups(metadata, opts["group_column"], prepared.sample_ids)
    train_ids, val_ids = _split(prepared.sample_ids, opts, groups=groups)
    prepared.report.append(f"split: {len(train_ids)} training, {len(val_ids)} validation samples"
                           + (f" (grouped by {opts['group_column']})" if groups else ""))
    tr, va = prepared.subset(train_ids), (prepared.subset(val_ids) if val_ids else None)

    def dataset(p, resample):
        return ASVDataset(p.counts, p.sample_ids, token_limit=opts["token_limit"],
                          asv_selection=opts["asv_selection"], rarefy_depth=prepared.depth,
                          resample_each_epoch=resample, seed=opts["seed"], faith_pd=p.faith_pd)

    train_ds = dataset(tr, opts["resample_each_epoch"])
    val_ds = dataset(va, False) if va is not None else None
    mask = opts["nuc_mask_ratio"] if opts["nuc_penalty"] > 0 else 0.0
    collate = lambda ds, p: Collator(ds, prepared.tokens, distances=p.distances, taxonomy=prepared.taxonomy,
                                     mask_ratio=mask, mask_strategy=opts["nuc_mask_strategy"])
    train_loader, val_loader = _loaders(train_ds, val_ds, collate(train_ds, tr),
                                        collate(val_ds, va) if va is not None else None, opts, device)
    cfg = _encoder_config(opts, objective, len(prepared.taxonomy_classes or []))
    model = SequenceEncoder(cfg)
    loss_fn = MultiTaskLoss(penalty=opts["penalty"], nuc_penalty=opts["nuc_penalty"])
    config = {"model_type": "encoder", "model_config": {"model_type": "encoder", **cfg.to_dict()},
              "tokenizer": prepared.tokenizer.to_config(), "options": _public_options(opts),
              "device": str(device), "seed": opts["seed"], "task": "pretrain", "objective": objective,
              "taxonomy_classes": prepared.taxonomy_classes, "taxonomy_level": opts["taxonomy_level"],
              "data": _data_summary(prepared, train_ids, val_ids), "aam_version": __version__,
              "torch_version": torch.__version__}
    return _fit(model, loss_fn, train_loader, val_loader, "pretrain", opts, config, device, output_dir,
                progress, log, prepared)


def _fit(model, loss_fn, train_loader, val_loader, task, opts, config, device, output_dir, progress, log,
         prepared, target_transform=None, class_labels=None):
    from aam.training import distributed as D
    from aam.training.cache import ASVEmbeddingCache
    from aam.training.losses import GatheredPairwiseLoss
    from aam.training.trainer import Trainer
    ctx = opts.get("_dist") or D.SINGLE
    cache = None
    if opts.get("freeze_base"):
        if ctx.active or ctx.mode == "dp":
            # the cache calls the model's heads directly, past the DDP/FSDP/DataParallel forward that
            # synchronizes gradients, so wrapped runs re-encode the frozen ASVs instead
            warnings.warn("the frozen-base ASV cache is not used with --distributed/--fsdp/--data-parallel",
                          stacklevel=3)
        else:
            cache = ASVEmbeddingCache(prepared.tokens, model.base.cfg.embedding_dim, device)
    distances = getattr(train_loader.collate_fn, "distances", None)
    if ctx.active and distances is not None and loss_fn.penalty > 0:
        # the UniFrac loss must compare all pairs of the global batch, not only each rank's own pairs
        loss_fn.pairwise_loss = GatheredPairwiseLoss(distances, train_loader.dataset.sample_ids, ctx)
    tmp = None
    if output_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="aam-")
        output_dir = tmp.name
        if ctx.active:
            # every rank must write sharded checkpoints to and read best_model.pt from the same directory
            output_dir = D.broadcast_object(ctx, output_dir)
    from aam.training.device import maybe_compile
    model = maybe_compile(model.to(device), opts.get("compile_model", False), log)
    trainer = Trainer(model, loss_fn, train_loader, val_loader, task, opts, config, device,
                      output_dir=output_dir, target_transform=target_transform, class_labels=class_labels,
                      progress=progress, log=log, asv_cache=cache, dist=ctx)
    if ctx.active:
        # same initial weights on every rank (seeded above), but different dropout draws per rank
        torch.manual_seed(opts["seed"] + 7919 * ctx.rank)
        trainer.log(f"{ctx.mode.upper()} over {ctx.world_size} processes ({ctx.backend}); global batch "
                    f"{opts['batch_size'] * ctx.world_size} samples")
    for line in prepared.report:
        trainer.log(line)
    if opts.get("resume"):
        resumed = load_checkpoint(opts["resume"], expect=config["model_type"])
        resumed.path = opts["resume"]
        trainer.resume(resumed)
    trainer.fit()
    history = trainer.history
    if ctx.active:
        # the DDP/FSDP wrapper holds the process group; free it now, while every rank is here, rather than
        # during interpreter shutdown, where gloo's destructors can abort the process
        D.barrier(ctx)
        del trainer, model
        gc.collect()
    best = load_checkpoint(os.path.join(output_dir, "checkpoints", "best_model.pt"))
    final_config = dict(best.config)
    final_config["history"] = history
    ckpt = Checkpoint(final_config, best.model_state)
    D.set_current(None)
    if tmp is None and ctx.is_main:
        # the best model also as a standalone file without optimizer state: the one to share and predict with
        ckpt.save(os.path.join(output_dir, "model.pt"), include_training_state=False)
    result = TrainResult(ckpt, history, None if tmp else output_dir, list(prepared.report))
    if tmp is not None:
        result._tmp = tmp  # keep the directory (TensorBoard logs) alive as long as the result
        result.output_dir = output_dir
    return result


def _load_model(model, expect=None):
    if isinstance(model, Checkpoint):
        if expect and model.model_type != expect:
            raise AAMInputError(f"a {expect} model is needed here, got a {model.model_type}")
        return model
    return load_checkpoint(model, expect=expect)


def train(table, metadata, column, classifier=False, out_dim=None, sequences=None, tree=None,
          distance_matrix=None, distance_ids=None, pretrained=None, categorical_columns=None,
          missing_samples="error", output_dir=None, progress=True, log=None, **options):
    """Fine-tune a `SequencePredictor` on a metadata column (regression, or classification with `classifier`).

    Parameters
    ----------
    table : str or biom.Table
    metadata : str or pd.DataFrame
        Sample metadata holding `column` (and the categorical covariates and group column).
    column : str
        The target.
    classifier : bool
        Classification (categorical target) instead of regression.
    out_dim : int, optional
        Number of classes; inferred from the training samples, and checked against them when given.
    sequences, tree, distance_matrix, distance_ids
        As in `pretrain`; a tree or matrix adds the UniFrac loss (weighted by ``penalty``) while the base trains.
    pretrained : str or Checkpoint, optional
        A pretrained encoder; its architecture replaces the architecture options.
    categorical_columns : list of str, optional
        Metadata columns used as categorical covariates.
    missing_samples : {'error', 'ignore'}
        What to do with table samples absent from the metadata.
    output_dir, progress, log, **options
        As in `pretrain` (options of 'train').

    Returns
    -------
    TrainResult
    """
    from aam.data.categorical import CategoricalEncoder
    from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
    from aam.models import SequenceEncoder, SequencePredictor
    from aam.models.config import EncoderConfig, PredictorConfig
    from aam.training.losses import MultiTaskLoss, class_weights_from_labels
    from aam.training.targets import TargetTransform, resolve_output_options

    opts, device = _setup(O.TRAIN, options)
    base_ckpt = _load_model(pretrained, "encoder") if pretrained is not None else None
    if base_ckpt is not None:
        # the tokenizer and the token limit must match what the base was pretrained with
        pre = base_ckpt.config["model_config"]
        for key in ("max_bp", "token_limit", "embedding_dim", "attention_heads", "attention_layers"):
            # QIIME 2 passes every parameter, defaults included: only a value the user changed deserves a warning
            given = options.get(key)
            if given is not None and given != pre[key] and given != O.defaults(O.TRAIN)[key]:
                warnings.warn(f"--{key.replace('_', '-')} {options[key]} ignored: the pretrained encoder "
                              f"uses {pre[key]}", stacklevel=2)
            opts[key] = pre[key]
    if opts["freeze_base"] and base_ckpt is None:
        raise AAMInputError("--freeze-base needs a pretrained encoder (--pretrained-encoder); a randomly "
                            "initialized base cannot be frozen usefully.")
    md = load_metadata(metadata)
    use_dist = (tree is not None or distance_matrix is not None) and opts["penalty"] > 0 \
        and not opts["freeze_base"]
    prepared = prepare_table(table, sequences=sequences, tree=tree if use_dist else None,
                             distance_matrix=distance_matrix if use_dist else None, distance_ids=distance_ids,
                             objective="unifrac" if use_dist else None, max_bp=opts["max_bp"],
                             rarefy_depth=opts["rarefy_depth"], seed=opts["seed"])
    md = select_samples(md, prepared.sample_ids, missing=missing_samples)
    if classifier:
        y, dropped = categorical_target(md, column)
    else:
        y, dropped = numeric_target(md, column)
    if dropped:
        prepared.report.append(f"{len(dropped)} sample(s) without a value for {column!r} left out: "
                               f"{preview(dropped)}")
    keep = [s for s in prepared.sample_ids if s in y.index]
    if len(keep) < 4:
        raise AAMInputError(f"only {len(keep)} sample(s) have both reads and a value for {column!r}; at least 4 "
                            "are needed to train and validate.")
    prepared = prepared.subset(keep)
    y = y.loc[keep]
    class_labels = None
    if classifier:
        class_labels = sorted(y.unique())
        if len(class_labels) < 2:
            raise AAMInputError(f"{column!r} has a single class ({class_labels[0]!r}) among the usable samples; "
                                "a classifier needs at least 2.")
        if out_dim is not None and out_dim != len(class_labels):
            raise AAMInputError(f"--out-dim {out_dim} does not match the {len(class_labels)} classes of "
                                f"{column!r}: {preview(class_labels, 10)}")
        out_dim = len(class_labels)
        y_values = y.map({c: i for i, c in enumerate(class_labels)}).to_numpy(np.int64)
    groups = _groups(md, opts["group_column"], keep)
    train_ids, val_ids = _split(keep, opts, stratify=list(y.astype(str)) if classifier else None, groups=groups)
    prepared.report.append(f"target {column!r}: " + (f"{out_dim} classes" if classifier else
                           f"range {y.min():g} to {y.max():g}") +
                           f"; split {len(train_ids)} training / {len(val_ids)} validation samples" +
                           (f" grouped by {opts['group_column']!r}" if groups else ""))
    index = {s: i for i, s in enumerate(keep)}
    transform = None
    if classifier:
        targets = y_values
    else:
        transform = TargetTransform(opts["normalize_targets"], opts["log_transform_targets"])
        transform.fit(y.loc[train_ids].to_numpy(), column)
        targets = transform.transform(y.to_numpy())
        opts["bounded_targets"], opts["output_activation"] = resolve_output_options(
            opts["normalize_targets"], opts["log_transform_targets"], opts["bounded_targets"],
            opts["output_activation"])
    cat_encoder, categorical = None, None
    if categorical_columns:
        cat_encoder = CategoricalEncoder()
        cat_encoder.fit(md.loc[train_ids], columns=list(categorical_columns))
        categorical = cat_encoder.transform(md.loc[keep])

    def subset(ids, resample):
        rows = np.array([index[s] for s in ids], dtype=np.int64)
        p = prepared.subset(ids)
        ds = ASVDataset(p.counts, p.sample_ids, token_limit=opts["token_limit"],
                        asv_selection=opts["asv_selection"], rarefy_depth=prepared.depth,
                        resample_each_epoch=resample, seed=opts["seed"], targets=targets[rows],
                        categorical=None if categorical is None else categorical[rows])
        return ds, p

    train_ds, tr = subset(train_ids, opts["resample_each_epoch"])
    val_ds, va = subset(val_ids, False) if val_ids else (None, None)
    nuc_on = opts["nuc_penalty"] > 0 and not opts["freeze_base"]
    mask = opts["nuc_mask_ratio"] if nuc_on else 0.0
    collate = lambda ds, p: Collator(ds, prepared.tokens, distances=p.distances, mask_ratio=mask,
                                     mask_strategy=opts["nuc_mask_strategy"])
    train_loader, val_loader = _loaders(train_ds, val_ds, collate(train_ds, tr),
                                        collate(val_ds, va) if val_ds is not None else None, opts, device)
    if base_ckpt is not None:
        enc_cfg = EncoderConfig.from_dict({k: v for k, v in base_ckpt.config["model_config"].items()
                                           if k != "model_type"})
    else:
        enc_cfg = _encoder_config(opts, "unifrac")
    pcfg = PredictorConfig(encoder=enc_cfg, out_dim=out_dim or 1, classifier=classifier,
                           freeze_base=opts["freeze_base"],
                           categorical_cardinalities=cat_encoder.get_cardinalities() if cat_encoder else {},
                           categorical_embed_dims={c: opts["categorical_embed_dim"] for c in
                                                   (categorical_columns or [])},
                           categorical_fusion=opts["categorical_fusion"],
                           output_activation=opts["output_activation"], bounded_targets=opts["bounded_targets"],
                           learnable_output_scale=opts["learnable_output_scale"])
    base = SequenceEncoder(enc_cfg)
    if base_ckpt is not None:
        base.load_state_dict(base_ckpt.model_state)
    model = SequencePredictor(pcfg, base=base)
    if not classifier:
        model.init_output(float(np.mean(targets[[index[s] for s in train_ids]])))
    weights = None
    if classifier and opts["class_weights"] == "balanced":
        weights = class_weights_from_labels(targets[[index[s] for s in train_ids]], out_dim)
    loss_fn = MultiTaskLoss(target_penalty=opts["target_penalty"], penalty=opts["penalty"] if use_dist else 0.0,
                            nuc_penalty=opts["nuc_penalty"] if nuc_on else 0.0,
                            count_penalty=opts["count_penalty"], classifier=classifier, class_weights=weights)
    config = {"model_type": "predictor", "model_config": {"model_type": "predictor", **pcfg.to_dict()},
              "tokenizer": prepared.tokenizer.to_config(), "options": _public_options(opts),
              "device": str(device), "seed": opts["seed"],
              "task": "classification" if classifier else "regression", "target_column": column,
              "class_labels": class_labels, "target_transform": transform.to_dict() if transform else None,
              "categorical_encoder": cat_encoder.to_dict() if cat_encoder else None,
              "categorical_columns": list(categorical_columns or []),
              "pretrained_encoder": None if base_ckpt is None else {
                  "objective": base_ckpt.config.get("objective"), "aam_version": base_ckpt.config.get(
                      "aam_version"), "data": {k: base_ckpt.config.get("data", {}).get(k) for k in
                                                ("n_samples", "n_features", "rarefaction_depth")}},
              "data": _data_summary(prepared, train_ids, val_ids), "aam_version": __version__,
              "torch_version": torch.__version__}
    return _fit(model, loss_fn, train_loader, val_loader, config["task"], opts, config, device, output_dir,
                progress, log, prepared, target_transform=transform, class_labels=class_labels)


def _prediction_inputs(ckpt, table, sequences, metadata, seed):
    """Prepare a new table for a trained model: its tokenizer, its rarefaction depth, its covariates."""
    from aam.data.tokenizer import SequenceTokenizer
    tok_cfg = ckpt.config["tokenizer"]
    prepared = prepare_table(table, sequences=sequences, max_bp=SequenceTokenizer.from_config(tok_cfg).max_bp,
                             rarefy_depth=0, seed=seed)
    return prepared


def _batches(ckpt, prepared, categorical, opts):
    depth = ckpt.config.get("data", {}).get("rarefaction_depth")
    mc = ckpt.config["model_config"]
    token_limit = (mc.get("encoder") or mc)["token_limit"]
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=token_limit,
                    asv_selection=ckpt.config.get("options", {}).get("asv_selection", "abundance"),
                    rarefy_depth=depth, resample_each_epoch=False, seed=opts["seed"], categorical=categorical)
    return torch.utils.data.DataLoader(ds, batch_size=opts["batch_size"], shuffle=False,
                                       collate_fn=Collator(ds, prepared.tokens),
                                       num_workers=opts.get("num_workers", 0))


def _mean_over_draws(loader, draws, run):
    """The mean of ``run(batch)`` over `draws` independent rarefactions of every sample.

    A single rarefaction to the training depth throws away most reads of a deep sample at random, and which
    reads go can flip a prediction; averaging over several draws removes that noise. Samples not deeper than
    the depth are the same in every draw. Returns (mean output [N, ...] in loader order, sample IDs).
    """
    ds = loader.dataset
    draws = max(1, int(draws)) if ds.rarefy_depth is not None else 1
    resample = ds.resample_each_epoch
    ds.resample_each_epoch = draws > 1
    total, ids = None, []
    try:
        for draw in range(draws):
            ds.set_epoch(draw)
            outs = []
            for batch in loader:
                outs.append(run(batch))
                if draw == 0:
                    ids.extend(batch["sample_ids"])
            if not outs:
                return torch.zeros(0), ids
            out = torch.cat(outs)
            total = out if total is None else total + out
    finally:
        ds.resample_each_epoch = resample
        ds.set_epoch(0)
    return total / draws, ids


def _usable(prepared, log):
    """Samples with reads; the others are reported, never silently predicted."""
    totals = np.asarray(prepared.counts.sum(axis=1)).ravel()
    empty = [s for s, t in zip(prepared.sample_ids, totals) if t <= 0]
    if empty:
        log(f"{len(empty)} sample(s) have no reads and get no prediction: {preview(empty)}")
    return [s for s, t in zip(prepared.sample_ids, totals) if t > 0], empty


def predict(model, table, sequences=None, metadata=None, batch_size=32, log=None, **options):
    """Predict a trained model's target for the samples of a table.

    Features never seen in training are fine: the model reads their sequences. Samples without reads are left
    out and reported (`log`). Samples deeper than the training rarefaction depth are rarefied to it
    ``rarefaction_draws`` times (seeded) and the predictions averaged (class probabilities, or regression
    outputs in the training scale); shallower ones are used as they are.

    Parameters
    ----------
    model : str or Checkpoint
        A predictor from `train`.
    table : str or biom.Table
    sequences : optional
        Needed when feature IDs are not DNA.
    metadata : str or pd.DataFrame, optional
        Needed when the model uses categorical covariates (missing values map to 'unknown').
    batch_size : int
    log : callable, optional
    **options
        'predict' options (device, mixed_precision, seed, ...).

    Returns
    -------
    pd.DataFrame
        Indexed by sample ID: ``prediction`` in the target's units (regression) or the predicted class, plus one
        ``probability_<class>`` column per class for classifiers.
    """
    log = log or (lambda s: print(s, flush=True))
    options = dict(options)
    options["batch_size"] = batch_size
    from aam.training.targets import TargetTransform
    from aam.training.trainer import forward_batch, move_batch

    opts, device = _setup(O.PREDICT, {k: v for k, v in options.items() if k != "batch_size"})
    opts["batch_size"] = int(batch_size)
    ckpt = _load_model(model, "predictor")
    prepared = _prediction_inputs(ckpt, table, sequences, metadata, opts["seed"])
    usable, _ = _usable(prepared, log)
    prepared = prepared.subset(usable)
    categorical = None
    if ckpt.config.get("categorical_encoder"):
        from aam.data.categorical import CategoricalEncoder
        from aam.data.metadata import load_metadata
        enc = CategoricalEncoder.from_dict(ckpt.config["categorical_encoder"])
        cols = ckpt.config.get("categorical_columns", [])
        if metadata is None:
            log(f"warning: the model uses categorical covariates {cols} but no metadata was given; they are "
                "treated as unknown")
            md = pd.DataFrame(index=prepared.sample_ids, columns=cols)
        else:
            md = load_metadata(metadata).reindex(prepared.sample_ids)
            for c in cols:
                if c not in md.columns:
                    md[c] = np.nan
        categorical = enc.transform(md)
    from aam.training.device import maybe_compile
    net = maybe_compile(ckpt.build_model().to(device).eval(), opts.get("compile_model", False), log)
    loader = _batches(ckpt, prepared, categorical, opts)
    from aam.training.cache import ASVEmbeddingCache, cached_forward
    from aam.training.device import autocast_context
    # inference: the ASV encoder is a fixed function of the sequence, so each distinct ASV is encoded once for
    # the whole table and served to every batch from the cache
    cache = ASVEmbeddingCache(prepared.tokens, getattr(net, "base", net).cfg.embedding_dim, device) \
        if opts.get("asv_dedup", True) else None
    classifier = ckpt.config["task"] == "classification"

    def run(batch):
        batch = move_batch(batch, device)
        with autocast_context(device, opts["mixed_precision"]):
            out = cached_forward(net, cache, batch) if cache is not None else forward_batch(net, batch, False)
        y = out["target_prediction"].float()
        # classifiers average probabilities, regressors predictions in the scale the model was trained in
        return (torch.softmax(y, dim=-1) if classifier else y).cpu()

    with torch.no_grad():
        pred, ids = _mean_over_draws(loader, opts["rarefaction_draws"], run)
    pred = pred.numpy()
    if classifier:
        labels = ckpt.config["class_labels"]
        prob = pred.reshape(len(ids), len(labels))
        df = pd.DataFrame(prob, index=ids, columns=[f"probability_{c}" for c in labels])
        df.insert(0, "prediction", [labels[i] for i in prob.argmax(1)])
    else:
        transform = TargetTransform.from_dict(ckpt.config["target_transform"])
        df = pd.DataFrame({"prediction": transform.inverse(pred)}, index=ids)
    df.index.name = "sample_id"
    return df


def embed(model, table, sequences=None, batch_size=32, log=None, **options):
    """Sample embeddings of any AAM model, and the distances between samples the model implies.

    Returns
    -------
    (pd.DataFrame, skbio.DistanceMatrix)
        Embeddings (samples x dimensions) and pairwise Euclidean distances between the UniFrac-space
        embeddings (for a UniFrac-pretrained base these approximate UniFrac), or between sample embeddings.
    """
    import skbio
    from aam.training.trainer import move_batch
    log = log or (lambda s: print(s, flush=True))
    opts, device = _setup(O.PREDICT, options)
    opts["batch_size"] = int(batch_size)
    ckpt = _load_model(model)
    prepared = _prediction_inputs(ckpt, table, sequences, None, opts["seed"])
    usable, _ = _usable(prepared, log)
    if not usable:
        raise AAMInputError("no sample of the table has reads, so there is nothing to embed; check that the "
                            "table is the one you meant.")
    prepared = prepared.subset(usable)
    net = ckpt.build_model().to(device).eval()
    base = getattr(net, "base", net)
    loader = _batches(ckpt, prepared, None, opts)
    from aam.training.cache import ASVEmbeddingCache
    cache = ASVEmbeddingCache(prepared.tokens, base.cfg.embedding_dim, device)
    D = base.cfg.embedding_dim

    def run(batch):
        batch = move_batch(batch, device)
        asv_emb = cache.lookup(base, batch["asv_ids"])
        out = base.encode_samples(asv_emb, batch["counts"], batch["asv_ids"] >= 0)
        emb = out["sample_embedding"].float()                                  # [B, D]
        space = out.get("distance_embedding", out["sample_embedding"]).float()  # [B, D']
        return torch.cat([emb, space], dim=-1).cpu()                           # [B, D + D']

    with torch.no_grad():
        both, ids = _mean_over_draws(loader, opts["rarefaction_draws"], run)
    emb, space = both[:, :D], both[:, D:]
    d = torch.cdist(space.double(), space.double()).numpy()
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    frame = pd.DataFrame(emb.numpy(), index=ids, columns=[f"aam_{i + 1}" for i in range(emb.shape[1])])
    frame.index.name = "sample_id"
    return frame, skbio.DistanceMatrix(d, ids=ids)


def ordination(frame_or_space, ids=None, method_name="AAM embedding"):
    """Principal coordinates of embeddings (PCA of the centered embeddings = PCoA of Euclidean distances).

    Returns
    -------
    skbio.OrdinationResults
    """
    import skbio
    x = np.asarray(frame_or_space, dtype=np.float64)
    ids = list(ids if ids is not None else frame_or_space.index)
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    eig = s ** 2
    total = eig.sum() if eig.sum() > 0 else 1.0
    axes = [f"PC{i + 1}" for i in range(len(s))]
    samples = pd.DataFrame(u * s, index=ids, columns=axes)
    return skbio.OrdinationResults(short_method_name="PCoA", long_method_name=f"PCoA of {method_name}s",
                                   eigvals=pd.Series(eig, index=axes), samples=samples,
                                   proportion_explained=pd.Series(eig / total, index=axes))
