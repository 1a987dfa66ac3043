"""The engine's public workflows: pretrain, train (fine-tune), predict, embed.

The ``aam`` CLI and the QIIME 2 plugin are thin layers over these functions. Inputs are plain objects or paths
(biom.Table, skbio.TreeNode, skbio.DistanceMatrix, pandas DataFrames, FASTA paths); options are the names of
`aam.options` (``embedding_dim=64``, ``epochs=20``, ...), resolved and validated here once for both front ends
into one typed `aam.options.Options`. Each workflow is a short pipeline:

    options -> run context -> prepared table -> split -> loaders -> model + record -> parallelize -> Trainer
    model -> prepared new table -> batches (averaged over rarefactions) -> predictions / embeddings
"""
import contextlib
from dataclasses import dataclass, field
from typing import List

import numpy as np
import pandas as pd

from aam import options as O
from aam.data.pipeline import prepare_table
from aam.errors import AAMInputError, AAMTrainingError, preview, warn
from aam.record import DataSummary, ModelRecord, Target
from aam.rundir import RunDirectory


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    checkpoint : aam.checkpoint.Checkpoint
        The best model (weights of the best epoch) with its record and history.
    history : list of dict
        One row per epoch (``train/...``, ``val/...`` metrics).
    run_dir : aam.rundir.RunDirectory
        The run's files (model.pt, config.json, history.tsv, plots/, tensorboard/, checkpoints/); a temporary
        directory when no output directory was given, removed with this result.
    report : list of str
        What the data pipeline did (depth, dropped samples, distances, split).
    """

    checkpoint: object
    history: list
    run_dir: RunDirectory
    report: List[str] = field(default_factory=list)

    @property
    def output_dir(self):
        return self.run_dir.path


def _resolve(command, options):
    """The options of `command` from keyword arguments (None = the default)."""
    return O.resolve(command, **options)


def _context(opts, context):
    from aam.training.context import build_context
    from aam.training.rng import seed_everything
    seed_everything(opts.seed)
    return context if context is not None else build_context(opts)


def _data_summary(prepared, train_ids, val_ids):
    from aam.data.novelty import training_signature
    return DataSummary(n_samples=len(prepared.sample_ids), n_features=len(prepared.feature_ids),
                       rarefaction_depth=prepared.depth, dropped_low_depth=list(prepared.dropped_low_depth),
                       train_samples=list(train_ids), validation_samples=list(val_ids),
                       distance_source=prepared.distance_source, report=list(prepared.report),
                       fingerprint=prepared.fingerprint(),
                       signature=training_signature(prepared.subset(list(train_ids)), prepared.tokenizer.max_bp))


def _encoder_config(opts, objective, taxonomy_classes=0, reference=None):
    """The base's architecture from the options; a reference encoder fixes its nucleotide level."""
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


@dataclass
class _Reference:
    """A shipped reference encoder: its name, architecture, weights and the checksum of its weights file."""
    name: str
    config: dict
    state: dict
    sha256: str

    def provenance(self, frozen):
        return {"name": self.name, "sha256": self.sha256, "frozen": bool(frozen)}


def _reference_encoder(opts):
    """The reference encoder the options ask for (architecture options it fixes are reported), or None."""
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
                 f"{config[name]} (pass {{opt:asv_encoder}} none to choose the architecture)", stacklevel=3)
        changes[name] = config[name]
    return _Reference(opts.asv_encoder, config, state, sha), opts.replace(**changes)


def _new_base(cfg, reference):
    """A freshly initialized base, its nucleotide level loaded from the reference encoder when there is one."""
    from aam.models import SequenceEncoder
    model = SequenceEncoder(cfg)
    if reference is not None:
        model.asv_encoder.load_state_dict(reference.state)
    return model


def _check_region(sequences, reference_name):
    """Warn when sequences do not look like the reads the reference encoder was trained on."""
    if reference_name is None:
        return
    from aam.reference import region_report
    report = region_report(list(sequences), name=reference_name)
    if not report["matches"] or report["shorter_than_trained"] > 0.5:
        warn(report["message"], stacklevel=3)


def _versions():
    import torch

    from aam import __version__
    return {"aam_version": __version__, "torch_version": torch.__version__}


# ---- pretraining ------------------------------------------------------------------------------------------------
def pretrain(table, sequences=None, tree=None, distance_matrix=None, distance_ids=None, taxonomy=None,
             metadata=None, output_dir=None, progress=True, log=None, context=None, **options):
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
        The run directory (see `aam.rundir`); None uses a temporary one.
    progress : bool
    log : callable, optional
        Receives progress lines (default: print to stderr).
    context : aam.training.context.RunContext, optional
        Built from the options when not given (the CLI passes the one it made under torchrun).
    **options
        Any option of `aam.options` for 'pretrain'.

    Returns
    -------
    TrainResult
    """
    opts = _resolve(O.PRETRAIN, options)
    ctx = _context(opts, context)
    with _run_directory(output_dir, opts, ctx) as run_dir:
        return _pretrain(run_dir, opts, ctx, table, sequences, tree, distance_matrix, distance_ids, taxonomy,
                         metadata, progress, log)


def _pretrain(run_dir, opts, ctx, table, sequences, tree, distance_matrix, distance_ids, taxonomy, metadata,
              progress, log):
    from aam.data.dataset import ASVDataset, Collator
    from aam.data.loaders import group_labels, split_samples, training_loaders
    from aam.training.losses import MultiTaskLoss

    objective = opts.encoder_type
    reference, opts = _reference_encoder(opts)
    nuc_on = opts.nuc_penalty > 0 and not (reference is not None and opts.freeze_asv_encoder)
    prepared = prepare_table(table, sequences=sequences, tree=tree, distance_matrix=distance_matrix,
                             distance_ids=distance_ids, taxonomy=taxonomy, taxonomy_level=opts.taxonomy_level,
                             objective=objective, max_bp=opts.max_bp, rarefy_depth=opts.rarefy_depth,
                             seed=opts.seed)
    _check_region(prepared.sequences, reference and reference.name)
    groups = group_labels(metadata, opts.group_column, prepared.sample_ids)
    train_ids, val_ids = split_samples(prepared.sample_ids, opts, groups=groups)
    prepared.report.append(f"split: {len(train_ids)} training, {len(val_ids)} validation samples"
                           + (f" (grouped by {opts.group_column})" if groups else ""))
    tr, va = prepared.subset(train_ids), (prepared.subset(val_ids) if val_ids else None)

    def dataset(p, resample):
        return ASVDataset(p.counts, p.sample_ids, token_limit=opts.token_limit, asv_selection=opts.asv_selection,
                          rarefy_depth=prepared.depth, resample_each_epoch=resample, seed=opts.seed,
                          faith_pd=p.faith_pd)

    def collate(ds, p):
        return Collator(ds, prepared.tokens, distances=p.distances, taxonomy=prepared.taxonomy, mask_ratio=mask,
                        mask_strategy=opts.nuc_mask_strategy)

    train_ds = dataset(tr, opts.resample_each_epoch)
    val_ds = dataset(va, False) if va is not None else None
    mask = opts.nuc_mask_ratio if nuc_on else 0.0
    loaders = training_loaders(train_ds, val_ds, collate(train_ds, tr),
                               collate(val_ds, va) if va is not None else None, opts, ctx)
    record = ModelRecord(task="pretrain",
                         architecture=_encoder_config(opts, objective, len(prepared.taxonomy_classes or []),
                                                      reference),
                         tokenizer=prepared.tokenizer.to_config(), options=opts.to_dict(),
                         data=_data_summary(prepared, train_ids, val_ids), objective=objective,
                         taxonomy_classes=prepared.taxonomy_classes, taxonomy_level=opts.taxonomy_level,
                         seed=opts.seed, device=str(ctx.device),
                         asv_encoder=reference.provenance(opts.freeze_asv_encoder) if reference else None,
                         **_versions())
    model = _new_base(record.architecture, reference)
    loss_fn = MultiTaskLoss(penalty=opts.penalty, nuc_penalty=opts.nuc_penalty if nuc_on else 0.0)
    return _fit(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log, prepared, tr)


# ---- fine-tuning ------------------------------------------------------------------------------------------------
_ARCHITECTURE = ("max_bp", "token_limit", "embedding_dim", "attention_heads", "attention_layers")


def _with_pretrained_architecture(opts, base):
    """`opts` with the architecture of a pretrained base (a changed value the user gave is reported)."""
    changes = {}
    for name in _ARCHITECTURE:
        used = getattr(base.record.encoder, name)
        # QIIME 2 passes every parameter, defaults included: only a value the user changed deserves a warning
        if getattr(opts, name) != used and not opts.is_default(name):
            warn(f"{{opt:{name}}} {getattr(opts, name)} ignored: the pretrained encoder uses {used}", stacklevel=3)
        changes[name] = used
    return opts.replace(**changes)


def train(table, metadata, column, classifier=False, out_dim=None, sequences=None, tree=None,
          distance_matrix=None, distance_ids=None, pretrained=None, categorical_columns=None, output_dir=None,
          progress=True, log=None, context=None, **options):
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
    output_dir, progress, log, context, **options
        As in `pretrain` (options of 'train', e.g. ``missing_samples='ignore'``).

    Returns
    -------
    TrainResult
    """
    opts = _resolve(O.TRAIN, options)
    ctx = _context(opts, context)
    with _run_directory(output_dir, opts, ctx) as run_dir:
        return _train(run_dir, opts, ctx, table, metadata, column, classifier, out_dim, sequences, tree,
                      distance_matrix, distance_ids, pretrained, categorical_columns, progress, log)


def _train(run_dir, opts, ctx, table, metadata, column, classifier, out_dim, sequences, tree, distance_matrix,
           distance_ids, pretrained, categorical_columns, progress, log):
    from aam.data.categorical import CategoricalEncoder
    from aam.data.dataset import ASVDataset, Collator
    from aam.data.loaders import group_labels, split_samples, training_loaders
    from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
    from aam.models import SequencePredictor
    from aam.models.config import PredictorConfig
    from aam.training.losses import MultiTaskLoss, class_weights_from_labels
    from aam.training.targets import TargetTransform, resolve_output_options

    base = _load_model(pretrained, "encoder") if pretrained is not None else None
    reference = None
    if base is not None:
        # the tokenizer and the token limit must match what the base was pretrained with
        opts = _with_pretrained_architecture(opts, base)
    else:
        reference, opts = _reference_encoder(opts)
    head = opts.head if opts.head != "auto" else ("linear" if base is not None else "transformer")
    if head == "linear" and base is None:
        raise AAMInputError("{opt:head} linear reads the sample embeddings of a pretrained base: pass one "
                            "({input:pretrained}), or use {opt:head} transformer.")
    if head == "linear":
        # a linear head is fitted on the frozen base's embeddings in closed form: no epochs, no output activation
        opts = opts.replace(freeze_base=True, bounded_targets=False, output_activation="none")
    if opts.freeze_base and base is None:
        # nothing to freeze: a base without pretraining trains with the head (the option's documented meaning)
        opts = opts.replace(freeze_base=False)
    md = load_metadata(metadata)
    use_dist = (tree is not None or distance_matrix is not None) and opts.penalty > 0 and not opts.freeze_base
    prepared = prepare_table(table, sequences=sequences, tree=tree if use_dist else None,
                             distance_matrix=distance_matrix if use_dist else None, distance_ids=distance_ids,
                             objective="unifrac" if use_dist else None, max_bp=opts.max_bp,
                             rarefy_depth=opts.rarefy_depth, seed=opts.seed)
    _check_region(prepared.sequences, reference and reference.name)
    md = select_samples(md, prepared.sample_ids, missing=opts.missing_samples)
    y, dropped = (categorical_target if classifier else numeric_target)(md, column)
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
            raise AAMInputError(f"{{input:out_dim}} {out_dim} does not match the {len(class_labels)} classes of "
                                f"{column!r}: {preview(class_labels, 10)}")
        out_dim = len(class_labels)
    groups = group_labels(md, opts.group_column, keep)
    if head == "linear":
        # the penalty is chosen by cross-validation over every labeled sample: no samples held back
        train_ids, val_ids = list(keep), []
        split_text = f"{len(keep)} samples, penalty by {min(5, len(set(groups or keep)))}-fold cross-validation"
    else:
        train_ids, val_ids = split_samples(keep, opts, stratify=list(y.astype(str)) if classifier else None,
                                           groups=groups)
        split_text = f"split {len(train_ids)} training / {len(val_ids)} validation samples"
    blend_ids = []
    if opts.ensemble == "forest" and val_ids:
        val_ids, blend_ids = _blend_split(val_ids, y, classifier, groups, keep, opts)
        if blend_ids:
            split_text += (f" ({len(val_ids)} choose the network's epoch, {len(blend_ids)} the ensemble's share: "
                           "samples that chose nothing else)")
    prepared.report.append(f"target {column!r}: " + (f"{out_dim} classes" if classifier else
                           f"range {y.min():g} to {y.max():g}") + f"; {split_text}" +
                           (f" grouped by {opts.group_column!r}" if groups else ""))
    index = {s: i for i, s in enumerate(keep)}
    transform = None
    if classifier:
        targets = y.map({c: i for i, c in enumerate(class_labels)}).to_numpy(np.int64)
    else:
        _warn_outliers(y, column)
        transform = TargetTransform(opts.normalize_targets, opts.log_transform_targets)
        transform.fit(y.loc[train_ids].to_numpy(), column)
        targets = transform.transform(y.to_numpy())
        bounded, activation = resolve_output_options(opts.normalize_targets, opts.log_transform_targets,
                                                     opts.bounded_targets, opts.output_activation)
        opts = opts.replace(bounded_targets=bounded, output_activation=activation)
    cat_encoder, categorical = None, None
    if categorical_columns:
        cat_encoder = CategoricalEncoder()
        cat_encoder.fit(md.loc[train_ids], columns=list(categorical_columns))
        categorical = cat_encoder.transform(md.loc[keep])

    def subset(ids, resample):
        rows = np.array([index[s] for s in ids], dtype=np.int64)
        p = prepared.subset(ids)
        ds = ASVDataset(p.counts, p.sample_ids, token_limit=opts.token_limit, asv_selection=opts.asv_selection,
                        rarefy_depth=prepared.depth, resample_each_epoch=resample, seed=opts.seed,
                        targets=targets[rows], categorical=None if categorical is None else categorical[rows])
        return ds, p

    def collate(ds, p):
        return Collator(ds, prepared.tokens, distances=p.distances, mask_ratio=mask,
                        mask_strategy=opts.nuc_mask_strategy)

    train_ds, tr = subset(train_ids, opts.resample_each_epoch)
    val_ds, va = subset(val_ids, False) if val_ids else (None, None)
    encoder = base.record.encoder if base is not None else _encoder_config(opts, "unifrac", reference=reference)
    nuc_on = opts.nuc_penalty > 0 and not opts.freeze_base and not encoder.freeze_asv_encoder
    mask = opts.nuc_mask_ratio if nuc_on else 0.0
    loaders = training_loaders(train_ds, val_ds, collate(train_ds, tr),
                               collate(val_ds, va) if val_ds is not None else None, opts, ctx)
    pcfg = PredictorConfig(encoder=encoder, out_dim=out_dim or 1, classifier=classifier, head=head,
                           freeze_base=opts.freeze_base,
                           categorical_cardinalities=cat_encoder.get_cardinalities() if cat_encoder else {},
                           categorical_embed_dims={c: opts.categorical_embed_dim for c in (categorical_columns or [])},
                           categorical_fusion=opts.categorical_fusion, output_activation=opts.output_activation,
                           bounded_targets=opts.bounded_targets, learnable_output_scale=opts.learnable_output_scale)
    provenance = None
    if base is not None:
        d = base.record.data
        provenance = {"objective": base.record.objective, "aam_version": base.record.aam_version,
                      "data": {"n_samples": d.n_samples, "n_features": d.n_features,
                               "rarefaction_depth": d.rarefaction_depth}}
    record = ModelRecord(task="classification" if classifier else "regression", architecture=pcfg,
                         tokenizer=prepared.tokenizer.to_config(), options=opts.to_dict(),
                         data=_data_summary(prepared, train_ids, val_ids),
                         target=Target(column=column, class_labels=class_labels,
                                       transform=transform.to_dict() if transform else None,
                                       categorical_columns=list(categorical_columns or []),
                                       categorical_encoder=cat_encoder.to_dict() if cat_encoder else None),
                         pretrained_encoder=provenance, seed=opts.seed, device=str(ctx.device),
                         asv_encoder=(base.record.asv_encoder if base is not None else
                                      reference.provenance(opts.freeze_asv_encoder) if reference else None),
                         **_versions())
    base_model = _new_base(encoder, reference)
    if base is not None:
        base_model.load_state_dict(base.model_state)
    model = SequencePredictor(pcfg, base=base_model)
    train_targets = targets[[index[s] for s in train_ids]]
    if head == "linear":
        result = _fit_linear(model, record, opts, ctx, run_dir, prepared, targets, categorical, groups, transform,
                             progress, log)
        return _with_forest(result, prepared, y, record, opts, ctx) if opts.ensemble == "forest" else result
    if not classifier:
        model.init_output(float(np.mean(train_targets)))
    weights = None
    if classifier and opts.class_weights == "balanced":
        weights = class_weights_from_labels(train_targets, out_dim)
    loss_fn = MultiTaskLoss(target_penalty=opts.target_penalty, penalty=opts.penalty if use_dist else 0.0,
                            nuc_penalty=opts.nuc_penalty if nuc_on else 0.0, count_penalty=opts.count_penalty,
                            classifier=classifier, class_weights=weights)
    result = _fit(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log, prepared, tr,
                  target_transform=transform)
    if opts.ensemble == "forest":
        return _with_forest(result, prepared, y, record, opts, ctx, val_ids=blend_ids, categorical=categorical,
                            groups=dict(zip(keep, groups)) if groups else None)
    return result


def _blend_split(val_ids, y, classifier, groups, keep, opts):
    """Split the validation samples of an ensemble in two: those that choose the network's best epoch, and those
    that choose the network's share of the blend.

    The share must be judged on samples that chose nothing else: on the samples that also picked the network's
    epoch the network looks better than it is on new samples, and the blend leans towards it (docs/science.md).
    Grouped and stratified like the validation split. Returns (epoch samples, share samples); the second is empty
    when the validation split is too small to halve (fewer than 4 samples, or a single group), and the ensemble
    then averages with equal shares.
    """
    from aam.data.splits import train_val_split
    group_of = dict(zip(keep, groups)) if groups else None
    val_groups = [group_of[s] for s in val_ids] if group_of else None
    if len(val_ids) < 4 or (val_groups is not None and len(set(val_groups)) < 2):
        return list(val_ids), []
    stratify = [str(y.loc[s]) for s in val_ids] if classifier else None
    return train_val_split(list(val_ids), val_fraction=0.5, seed=opts.seed + 1, stratify=stratify,
                           groups=val_groups)


def _base_outputs(net, prepared, record, opts, ctx, categorical, pick, cache=None):
    """`pick(base outputs, batch)` [B, F] for every sample of `prepared` through a frozen base, averaged over
    rarefaction draws: [N, F] float64 in the order of ``prepared.sample_ids``. `cache`: an ASV embedding cache of
    `net`'s base over ``prepared.tokens`` to fill or reuse (a new one by default)."""
    import torch

    from aam.data.loaders import inference_loader, mean_over_draws
    from aam.training.cache import ASVEmbeddingCache
    from aam.training.forward import move_batch
    net = net.to(ctx.device).eval()
    if cache is None:
        cache = ASVEmbeddingCache(prepared.tokens, net.base.cfg.embedding_dim, ctx.device)

    def run(batch):
        batch = move_batch(batch, ctx.device)
        asv_emb = cache.lookup(net.base, batch["asv_ids"])
        return pick(net.base.encode_samples(asv_emb, batch["counts"], batch["asv_ids"] >= 0), batch).float().cpu()

    with torch.no_grad():
        features, ids = mean_over_draws(inference_loader(prepared, record, opts, categorical), opts.rarefaction_draws,
                                        run)
    order = {s: i for i, s in enumerate(ids)}
    return features.double().numpy()[[order[s] for s in prepared.sample_ids]]


def _embedding_features(model, prepared, record, opts, ctx, categorical):
    """A linear head's input for every sample of `prepared`, averaged over rarefaction draws: [N, F]."""
    return _base_outputs(model, prepared, record, opts, ctx, categorical,
                         lambda out, batch: model.linear_features(out, batch.get("categorical")))


def _distance_embeddings(net, prepared, record, opts, ctx, cache=None):
    """The base's distance embedding (pretrained to match UniFrac) of every sample of `prepared`: [N, D]."""
    return _base_outputs(net, prepared, record, opts, ctx, None, lambda out, batch: out["distance_embedding"],
                         cache)


def _fit_linear(model, record, opts, ctx, run_dir, prepared, targets, categorical, groups, transform, progress,
                log):
    """Fit a linear head on the frozen base's embeddings (see `aam.training.linear_head`)."""
    import time

    from aam.checkpoint import Checkpoint
    from aam.evaluation.metrics import classification_metrics, regression_metrics
    from aam.record import TrainingSummary
    from aam.training.linear_head import fit_linear_head
    from aam.training.run_logger import RunLogger

    logger = RunLogger(run_dir, is_main=ctx.is_main, progress=progress, log=log)
    try:
        t0 = time.time()
        for line in prepared.report:
            logger.line(line)
        features = _embedding_features(model, prepared, record, opts, ctx, categorical)
        classifier = record.is_classifier
        n_classes = len(record.target.class_labels) if classifier else None
        fit = fit_linear_head(features, targets, classifier, n_classes, groups, opts.seed)
        model.set_linear_head(fit.weight, fit.bias)
        if classifier:
            y_pred = fit.oof.argmax(1)
            metrics = classification_metrics(targets, y_pred, n_classes, probabilities=fit.oof)
            raw = {"y_true": targets, "y_pred": y_pred, "confusion_matrix": metrics.pop("confusion_matrix")}
            name, score = "cv/accuracy", metrics["accuracy"]
        else:
            y_true, y_pred = transform.inverse(targets), transform.inverse(fit.oof)
            metrics = regression_metrics(y_true, y_pred)
            raw = {"y_true": y_true, "y_pred": y_pred}
            name, score = "cv/mae", metrics["mae"]
        row = {"epoch": 1, **{f"cv/{k}": v for k, v in metrics.items() if v is not None},
               "penalty": fit.penalty, "cv_folds": fit.folds, "seconds": time.time() - t0, "best": True}
        record.training = TrainingSummary(history=[row], best_epoch=1, best_score=score, selection_metric=name)
        logger.line(f"linear head: {len(targets)} samples, {features.shape[1]} features; penalty {fit.penalty:g} "
                    f"chosen by {fit.folds}-fold cross-validation; {name} = {score:.4f} (out-of-fold)")
        checkpoint = Checkpoint(record, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        if ctx.is_main:
            run_dir.create()
            logger.validation_figures(raw, 1, record.task, record.target.class_labels)
            logger.history([row])
            run_dir.write_model(checkpoint)
    finally:
        logger.close()
    return TrainResult(checkpoint, [row], run_dir, list(prepared.report))


#: shares of the network the ensemble's blend may take; chosen on the validation samples
ENSEMBLE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _blend_losses(pred, truth, classifier):
    """Per-sample validation loss of a blend: log loss of class probabilities, or absolute error: [V]."""
    if classifier:
        return -np.log(np.clip(pred[np.arange(len(truth)), truth], 1e-15, 1.0))
    return np.abs(pred[:, 0] - truth)


def choose_share(losses, rule, groups=None):
    """The network's share of the blend from per-sample validation losses of each share.

    Parameters
    ----------
    losses : dict of float -> np.ndarray [V]
        Per-sample losses of each share in `ENSEMBLE_WEIGHTS`.
    rule : {'lowest-loss', 'one-se'}
        lowest-loss: the share with the lowest mean loss. one-se: the share nearest the forest alone (0) whose mean
        loss is within one standard error of the lowest; the standard error is that of the paired loss
        differences, over groups (subjects) when given, since samples of one subject are not independent. With
        fewer than 2 groups (or samples) no difference can be judged and the forest alone is kept.
    groups : list, optional
        Group of each validation sample.

    Returns
    -------
    float
    """
    mean = {w: float(np.mean(v)) for w, v in losses.items()}
    best = min(losses, key=lambda w: (mean[w], abs(w - 0.5)))
    if rule == "lowest-loss":
        return best
    keys = pd.Series(groups if groups is not None else np.arange(len(losses[best])))
    if keys.nunique() < 2:
        return min(losses)

    def within_one_se(w):
        diff = pd.Series(losses[w] - losses[best]).groupby(keys.to_numpy()).mean()       # [G]
        return diff.mean() <= diff.std(ddof=1) / np.sqrt(len(diff))
    return min(w for w in losses if within_one_se(w))


def _with_forest(result, prepared, y, record, opts, ctx, val_ids=(), categorical=None, groups=None):
    """Add the random forest of an ensemble to a trained model.

    The blend weight is chosen on `val_ids`, validation samples the network neither trained on nor chose its epoch
    by (`_blend_split`): a forest fit on every other labeled sample predicts them, and the share of the network
    (`ENSEMBLE_WEIGHTS`) that gives the lowest loss on them (log loss, or MAE) is kept, so a network that adds
    nothing to the forest gets no weight. Without such samples (a linear head cross-validates instead, or the
    validation split is too small to halve) the two are averaged. The forest kept in the model is then fit on every
    labeled sample.
    """
    from aam.forest import EmbeddingAxes, aligned_features, feature_keys, fit_forest
    checkpoint = result.checkpoint
    classifier = record.is_classifier
    keys = list(dict.fromkeys(feature_keys(prepared.sequences, record.max_bp)))
    x = aligned_features(keys, prepared.sequences, prepared.counts, record.max_bp)         # [N, F]
    # the trained model, built once for the embedding's axes and the share's validation samples
    net = checkpoint.build_model() if opts.forest_embedding_axes > 0 or val_ids else None
    axes, axes_text = None, ""
    if opts.forest_embedding_axes > 0:
        if record.pretrained_encoder is not None and record.architecture.freeze_base:
            # the axes come from the frozen pretrained base, which never saw the labels; fitted on every labeled
            # sample's embedding (labels unused), so the blend's validation forest below reads the same columns
            emb = _distance_embeddings(net, prepared, record, opts, ctx)                       # [N, D]
            axes = EmbeddingAxes.fit(emb, opts.forest_embedding_axes)
            x = np.hstack([x, axes.transform(emb)])                                       # [N, F + k]
            axes_text = f" and {len(axes.components)} axes of the pretrained sample embedding"
        else:
            # a base trained with the labels would hand the forest features fitted to the training targets
            axes_text = (" (no embedding axes: they are read from a frozen pretrained base, and this model "
                         f"{'has no pretrained base' if record.pretrained_encoder is None else 'fine-tuned its base'})")
    target = (y.map({c: i for i, c in enumerate(record.target.class_labels)}).to_numpy(np.int64) if classifier
              else y.to_numpy(np.float64))
    weight, choice = 0.5, "equal weights (no validation samples to set aside for it)"
    if val_ids:
        index = {s: i for i, s in enumerate(prepared.sample_ids)}
        val = np.array([index[s] for s in val_ids])
        train = np.setdiff1d(np.arange(len(target)), val)
        forest_val = fit_forest(x[train], target[train], classifier, opts.forest_trees, opts.seed,
                                threads=ctx.threads).predict(x[val])                     # [V, K]
        cat_val = None if categorical is None else categorical[val]
        network_val = _network_outputs(checkpoint, prepared.subset(list(val_ids)), cat_val, opts, ctx, net=net)
        per_sample = {w: _blend_losses(w * network_val + (1 - w) * forest_val, target[val], classifier)
                      for w in ENSEMBLE_WEIGHTS}
        weight = choose_share(per_sample, opts.ensemble_share_rule,
                              [groups[s] for s in val_ids] if groups else None)
        losses = {w: float(np.mean(v)) for w, v in per_sample.items()}
        name = "log loss" if classifier else "MAE"
        rule = ("the lowest" if opts.ensemble_share_rule == "lowest-loss" else
                "the share nearest the forest within one standard error of the lowest")
        choice = (f"{rule} validation {name}, {losses[weight]:.4g} on {len(val)} samples (network alone "
                  f"{losses[1.0]:.4g}, forest alone {losses[0.0]:.4g})")
    checkpoint.forest = fit_forest(x, target, classifier, opts.forest_trees, opts.seed, threads=ctx.threads)
    checkpoint.forest.axes = axes
    checkpoint.record.ensemble = {"method": "weighted average", "aam_weight": weight, "weight_choice": choice,
                                  "forest_trees": opts.forest_trees, "features": keys, "forest_samples": len(target),
                                  "share_samples": [str(s) for s in val_ids],
                                  "embedding_axes": 0 if axes is None else len(axes.components)}
    checkpoint.record.data.report.append(
        f"ensemble: a {opts.forest_trees}-tree random forest on the relative abundances of {len(keys)} features"
        f"{axes_text}, {len(target)} samples; the network's share {weight:g}, chosen by {choice}")
    if ctx.is_main:
        result.run_dir.write_model(checkpoint)
    return result


@contextlib.contextmanager
def _run_directory(output_dir, opts, ctx):
    """The run's directory, owned by this run (rank 0 holds the claim) until the block ends."""
    from aam.training import distributed as D
    if output_dir is None:
        run_dir = RunDirectory.temporary()
        if ctx.active:
            # every rank must write sharded checkpoints to the same directory
            run_dir = RunDirectory(D.broadcast_object(ctx, run_dir.path))
    else:
        run_dir = RunDirectory(output_dir)
    if ctx.is_main:
        run_dir.claim(resume=bool(opts.resume), overwrite=opts.overwrite)
    try:
        yield run_dir
    finally:
        run_dir.release()


def _warn_outliers(y, column, limit=10.0):
    """Warn about extreme values of a regression target (robust z-score above `limit`); they are kept."""
    values = y.to_numpy(dtype=np.float64)
    center = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - center))  # the MAD, scaled to a standard deviation
    if spread <= 0:
        spread = values.std()
    if spread <= 0:
        return
    z = np.abs(values - center) / spread
    extreme = y.index[z > limit]
    if len(extreme):
        shown = ", ".join(f"{s!r}: {v:g}" for s, v in y.loc[extreme[:5]].items())
        warn(f"{len(extreme)} training value(s) of {column!r} lie far outside the others (robust z-score above "
             f"{limit:g}; median {center:g}): {shown}. They stretch the target scale and dominate the loss; check "
             "them for typos or mixed units.", stacklevel=4)


def _fit(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log, prepared, train_part,
         target_transform=None):
    """Train `model` and return the run's best model: the steps pretraining and fine-tuning share."""
    import gc

    import torch

    from aam.checkpoint import load_checkpoint
    from aam.training import distributed as D
    from aam.training.cache import ASVEmbeddingCache
    from aam.training.context import parallelize
    from aam.training.device import maybe_compile
    from aam.training.resume import check_resumable
    from aam.training.run_logger import RunLogger
    from aam.training.trainer import Trainer

    train_loader, val_loader = loaders
    cache = None
    if opts.freeze_base or record.encoder.freeze_asv_encoder:
        if ctx.wrapped:
            # the cache calls the model's heads directly, past the DDP/FSDP/DataParallel forward that
            # synchronizes gradients, so wrapped runs re-encode the frozen ASVs instead
            warn("the frozen-base ASV cache is not used with {opt:distributed} / {opt:fsdp} / {opt:data_parallel}",
                 stacklevel=3)
        else:
            cache = ASVEmbeddingCache(prepared.tokens, record.encoder.embedding_dim, ctx.device)
    if ctx.is_main:
        run_dir.create()
    D.barrier(ctx)
    model, train_loss, eval_loss = parallelize(model, loss_fn, ctx, distances=train_part.distances,
                                               sample_ids=train_part.sample_ids)
    model = maybe_compile(model, opts.compile_model, log)
    logger = RunLogger(run_dir, is_main=ctx.is_main, progress=progress, log=log)
    trainer = Trainer(model, train_loss, eval_loss, train_loader, val_loader, record, opts, ctx, logger,
                      run_dir=run_dir, target_transform=target_transform, asv_cache=cache)
    if ctx.active:
        # same initial weights on every rank (seeded above), but different dropout draws per rank
        torch.manual_seed(opts.seed + 7919 * ctx.rank)
        logger.line(f"{ctx.mode.upper()} over {ctx.world_size} processes ({ctx.backend}); global batch "
                    f"{opts.batch_size * ctx.world_size} samples")
    for line in prepared.report:
        logger.line(line)
    if opts.resume:
        resumed = load_checkpoint(opts.resume, expect=record.kind)
        check_resumable(resumed, record)
        trainer.resume(resumed, opts.resume)
    try:
        history = trainer.fit()
        best = trainer.best_checkpoint()
        if ctx.is_main:
            # the best model as a standalone file without optimizer state: the one to share and predict with
            run_dir.write_model(best)
    finally:
        logger.close()
    if ctx.active:
        # the DDP/FSDP wrapper holds the process group; free it now, while every rank is here, rather than
        # during interpreter shutdown, where gloo's destructors can abort the process
        D.barrier(ctx)
        best = D.broadcast_object(ctx, best) if ctx.mode == "fsdp" else best
        del trainer, model
        gc.collect()
    return TrainResult(best, history, run_dir, list(prepared.report))


# ---- inference --------------------------------------------------------------------------------------------------
_NEEDED = {
    "encoder": "{input:pretrained} must be a pretrained base model (from pretrain), not a {title}: fine-tuning starts "
               "from a base, not from a finished predictor.",
    "predictor": "{input:model} must be a trained regressor or classifier, not a {title}. A pretrained base predicts "
                 "nothing by itself: embed samples with it, or fine-tune it into a predictor ({input:pretrained}).",
}


def _load_model(model, expect=None):
    """A `Checkpoint` from a path or a Checkpoint, of the `expect` kind ('encoder' or 'predictor')."""
    from aam.checkpoint import Checkpoint, load_checkpoint
    if not isinstance(model, Checkpoint):
        model = load_checkpoint(model)
    if expect and model.kind != expect:
        raise AAMInputError(_NEEDED[expect].replace("{title}", model.record.title))
    return model


def _prepare_new_table(ckpt, table, sequences, opts):
    """A new table for a trained model (its tokenizer); samples without reads are left out.

    What sets the new samples apart from the training data (no reads, very few reads, no feature seen in
    training, another 16S region) is reported as warnings, one per kind with a count.
    """
    from aam.data.novelty import prediction_warnings
    record = ckpt.record
    prepared = prepare_table(table, sequences=sequences, max_bp=record.max_bp, rarefy_depth=0, seed=opts.seed)
    for text in prediction_warnings(prepared, record.data.signature, record.data.rarefaction_depth, record.max_bp,
                                    prepared.empty_samples):
        warn(text, stacklevel=3)
    return prepared


def _covariates(ckpt, metadata, sample_ids, log):
    """Categorical covariates of the samples as the model's encoder codes them (None without covariates)."""
    target = ckpt.record.target
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


def predict(model, table, sequences=None, metadata=None, log=None, context=None, **options):
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
    log : callable, optional
    context : aam.training.context.RunContext, optional
    **options
        'predict' options (batch_size, device, mixed_precision, seed, rarefaction_draws, ...).

    Returns
    -------
    pd.DataFrame
        Indexed by sample ID: ``prediction`` in the target's units (regression) or the predicted class, plus one
        ``probability_<class>`` column per class for classifiers.
    """
    log = log or (lambda s: print(s, flush=True))
    opts = _resolve(O.PREDICT, options)
    ctx = _context(opts, context)
    ckpt = _load_model(model, "predictor")
    record = ckpt.record
    prepared = _prepare_new_table(ckpt, table, sequences, opts)
    categorical = _covariates(ckpt, metadata, prepared.sample_ids, log)
    net, cache, forest = ckpt.build_model(), None, None
    if record.ensemble is not None:
        if ckpt.forest.axes is not None:
            # the forest's axes and the network read the same frozen base: encode each ASV once for both, in full
            # precision first (the axes must match the ones the forest was fit on)
            from aam.training.cache import ASVEmbeddingCache
            cache = ASVEmbeddingCache(prepared.tokens, net.base.cfg.embedding_dim, ctx.device)
        forest = _forest_outputs(ckpt, prepared, opts, ctx, net=net, cache=cache)         # [N, K]
        w = float(record.ensemble["aam_weight"])
    network = _network_outputs(ckpt, prepared, categorical, opts, ctx, net=net, cache=cache)  # [N, K], table order
    ids = list(prepared.sample_ids)
    if record.is_classifier:
        labels = record.target.class_labels
        prob = network if forest is None else w * network + (1 - w) * forest
        df = pd.DataFrame(prob, index=ids, columns=[f"probability_{c}" for c in labels])
        df.insert(0, "prediction", [labels[i] for i in prob.argmax(1)])
        if forest is not None:
            # what each part said, for users who want to look (the plugin returns prediction and probabilities)
            for name, part in (("network", network), ("forest", forest)):
                for j, c in enumerate(labels):
                    df[f"{name}_probability_{c}"] = part[:, j]
    else:
        df = pd.DataFrame({"prediction": network[:, 0]}, index=ids)
        if forest is not None:
            df["prediction"] = w * network[:, 0] + (1 - w) * forest[:, 0]
            df["network"], df["forest"] = network[:, 0], forest[:, 0]
    df.index.name = "sample_id"
    return df


def _network_outputs(ckpt, prepared, categorical, opts, ctx, net=None, cache=None):
    """The network's class probabilities, or its regression predictions in the target's units: [N, K] in the order
    of ``prepared.sample_ids``, averaged over ``opts.rarefaction_draws`` rarefactions of each deep sample.
    `net` / `cache`: the checkpoint's model and an ASV embedding cache of it, when the caller has them already."""
    import torch

    from aam.data.loaders import inference_loader, mean_over_draws
    from aam.training.cache import ASVEmbeddingCache
    from aam.training.device import autocast_context
    from aam.training.forward import cached_forward, forward_batch, move_batch
    from aam.training.targets import TargetTransform
    record = ckpt.record
    net = (net or ckpt.build_model()).to(ctx.device).eval()
    loader = inference_loader(prepared, record, opts, categorical)
    # inference: the ASV encoder is a fixed function of the sequence, so each distinct ASV is encoded once for
    # the whole table and served to every batch from the cache
    if not opts.asv_dedup:
        cache = None
    elif cache is None:
        cache = ASVEmbeddingCache(prepared.tokens, net.base.cfg.embedding_dim, ctx.device)

    def run(batch):
        batch = move_batch(batch, ctx.device)
        with autocast_context(ctx.device, ctx.precision):
            out = cached_forward(net, cache, batch) if cache is not None else forward_batch(net, batch, False)
        y = out["target_prediction"].float()
        # classifiers average probabilities, regressors predictions in the scale the model was trained in
        return (torch.softmax(y, dim=-1) if record.is_classifier else y).cpu()

    with torch.no_grad():
        pred, ids = mean_over_draws(loader, opts.rarefaction_draws, run)
    pred = pred.numpy().reshape(len(ids), -1)
    bad = [s for s, ok in zip(ids, np.isfinite(pred).all(axis=1)) if not ok]
    if bad:
        raise AAMTrainingError(f"the model gave no finite prediction for {len(bad)} sample(s) ({preview(bad)}); its "
                               "outputs overflow on these samples. Retrain it (e.g. without an exp output "
                               "activation, or with a lower learning rate).")
    if not record.is_classifier:
        pred = TargetTransform.from_dict(record.target.transform).inverse(pred)
    order = {s: i for i, s in enumerate(ids)}
    return pred[[order[s] for s in prepared.sample_ids]]


def _forest_outputs(ckpt, prepared, opts, ctx, net=None, cache=None):
    """An ensemble's forest on the samples of `prepared`: [N, K] (class probabilities or predictions)."""
    from aam.forest import aligned_features
    x = aligned_features(ckpt.record.ensemble["features"], prepared.sequences, prepared.counts, ckpt.record.max_bp)
    if ckpt.forest.axes is not None:
        emb = _distance_embeddings(net or ckpt.build_model(), prepared, ckpt.record, opts, ctx, cache)   # [N, D]
        x = np.hstack([x, ckpt.forest.axes.transform(emb)])                            # [N, F + k]
    return ckpt.forest.predict(x)


def embed(model, table, sequences=None, log=None, context=None, **options):
    """Sample embeddings of any AAM model, and the distances between samples the model implies.

    Returns
    -------
    (pd.DataFrame, skbio.DistanceMatrix)
        Embeddings (samples x dimensions) and pairwise Euclidean distances between the UniFrac-space
        embeddings (for a UniFrac-pretrained base these approximate UniFrac), or between sample embeddings.
    """
    import skbio
    import torch

    from aam.data.loaders import inference_loader, mean_over_draws
    from aam.training.cache import ASVEmbeddingCache
    from aam.training.forward import move_batch

    log = log or (lambda s: print(s, flush=True))
    opts = _resolve(O.PREDICT, options)
    ctx = _context(opts, context)
    ckpt = _load_model(model)
    prepared = _prepare_new_table(ckpt, table, sequences, opts)
    net = ckpt.build_model().to(ctx.device).eval()
    base = getattr(net, "base", net)
    loader = inference_loader(prepared, ckpt.record, opts)
    cache = ASVEmbeddingCache(prepared.tokens, base.cfg.embedding_dim, ctx.device)
    D = base.cfg.embedding_dim

    def run(batch):
        batch = move_batch(batch, ctx.device)
        asv_emb = cache.lookup(base, batch["asv_ids"])
        out = base.encode_samples(asv_emb, batch["counts"], batch["asv_ids"] >= 0)
        emb = out["sample_embedding"].float()                                  # [B, D]
        space = out.get("distance_embedding", out["sample_embedding"]).float()  # [B, D']
        return torch.cat([emb, space], dim=-1).cpu()                           # [B, D + D']

    with torch.no_grad():
        both, ids = mean_over_draws(loader, opts.rarefaction_draws, run)
    emb, space = both[:, :D], both[:, D:]
    d = torch.cdist(space.double(), space.double()).numpy()
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0.0)
    frame = pd.DataFrame(emb.numpy(), index=ids, columns=[f"aam_{i + 1}" for i in range(emb.shape[1])])
    frame.index.name = "sample_id"
    return frame, skbio.DistanceMatrix(d, ids=ids)


def embed_features(sequences, model=None, asv_encoder=None, log=None, context=None, **options):
    """Per-feature embeddings: where each ASV sits in a model's (or a reference encoder's) sequence space.

    Parameters
    ----------
    sequences : dict, pd.Series, FASTA path or list of str
        The features' DNA sequences (IDs -> sequences).
    model : str or Checkpoint, optional
        Any AAM model: its nucleotide-level encoder embeds the sequences. Without a model, the reference encoder
        `asv_encoder` does (default: the one `aam.options` names for pretraining).
    asv_encoder : str, optional
        A shipped reference encoder's name.
    **options
        'predict' options (device, batch_size, asv_chunk_size, num_threads, seed).

    Returns
    -------
    pd.DataFrame
        Features x embedding dimensions (``aam_1`` ...), indexed by feature ID.
    """
    import torch

    from aam.data.sequences import as_mapping
    from aam.data.tokenizer import SequenceTokenizer
    opts = _resolve(O.PREDICT, options)
    ctx = _context(opts, context)
    mapping = as_mapping(sequences)
    if not mapping:
        raise AAMInputError("no sequences to embed; pass the features' sequences ({input:sequences}).")
    ids, seqs = list(mapping), [str(mapping[i]) for i in mapping]
    if model is not None:
        ckpt = _load_model(model)
        net = ckpt.build_model()
        encoder = getattr(net, "base", net).asv_encoder
    else:
        from aam.reference.shipped import build_encoder
        name = asv_encoder or O.BY_NAME["asv_encoder"].default
        if name == "none":
            raise AAMInputError("embedding features needs a model or a reference encoder ({opt:asv_encoder}).")
        encoder = build_encoder(name)
        _check_region(seqs, name)
    encoder = encoder.to(ctx.device).eval()
    tokens = torch.as_tensor(SequenceTokenizer(encoder.cfg.max_bp).encode_many(seqs, ids))
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), max(1, opts.batch_size * 16)):
            emb, _ = encoder(tokens[start:start + opts.batch_size * 16].long().to(ctx.device))
            out.append(emb.float().cpu())
    values = torch.cat(out).numpy()
    frame = pd.DataFrame(values, index=ids, columns=[f"aam_{i + 1}" for i in range(values.shape[1])])
    frame.index.name = "feature_id"
    return frame
