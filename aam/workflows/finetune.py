"""Fine-tuning workflow: a regressor or classifier of a metadata column, from a pretrained base or from scratch.

    starting point (pretrained base or reference encoder; head)
      -> labelled table (reads and a target value) -> split (training / epoch choice / share choice)
      -> targets in the training scale, covariates -> record and network
      -> SampleFeatures of the labelled table (each ASV encoded once by a frozen base)
      -> ensemble fit: the network (Trainer, or closed-form linear head), then the other member and the blend
      -> the model file

Each step is a small function; what passes between them is typed (`Start`, `Labelled`, `Split`, `Targets`).
"""
from dataclasses import dataclass, replace
from typing import List, Optional

import numpy as np

from aam.data.pipeline import prepare_table
from aam.errors import AAMInputError, preview, warn
from aam.models.from_options import encoder_config, new_base, with_pretrained_architecture
from aam.record import ModelRecord, Target, TrainingSummary
from aam.reference.selected import check_region, reference_for
from aam.workflows.common import TrainResult, data_summary, load_model, versions


@dataclass
class TrainInputs:
    """The data arguments of `aam.api.train`."""

    table: object
    metadata: object
    column: str
    classifier: bool = False
    out_dim: Optional[int] = None
    sequences: object = None
    tree: object = None
    distance_matrix: object = None
    distance_ids: Optional[list] = None
    pretrained: object = None
    categorical_columns: Optional[list] = None
    numeric_columns: Optional[list] = None


@dataclass
class Start:
    """Where fine-tuning starts: a pretrained base (its checkpoint) or a reference encoder, and the head."""

    base: object
    reference: object
    opts: object
    head: str
    shipped: object = None          # aam.base.shipped.ShippedBase when {opt:base} names one


@dataclass
class Labelled:
    """The samples with reads and a target value."""

    prepared: object
    y: object                       # pd.Series of target values, in the order of prepared.sample_ids
    metadata: object                # pd.DataFrame of the table's samples
    groups: Optional[List[str]]
    class_labels: Optional[List[str]]
    out_dim: Optional[int]
    use_distances: bool

    @property
    def ids(self):
        return list(self.prepared.sample_ids)


@dataclass
class Split:
    """Training samples, samples that choose the network's epoch, and samples that choose the blend's share."""

    train_ids: List[str]
    val_ids: List[str]
    share_ids: List[str]
    text: str


@dataclass
class Covariates:
    """The covariates' encoders (fitted on the training samples) and what every labelled sample gives the model."""

    categorical_encoder: object = None
    categorical: Optional[np.ndarray] = None      # [N, C] int64 codes, in the order of Labelled.ids
    numeric_encoder: object = None
    numeric: Optional[np.ndarray] = None          # [N, K] float32 (aam.data.numeric.NumericEncoder)


@dataclass
class Targets:
    """The target of every labelled sample: as the network trains on it (training scale or class index) and as
    the other members fit it (class index, or the column's units)."""

    network: np.ndarray
    members: np.ndarray
    transform: object = None


def fine_tune(run_dir, opts, ctx, inputs, progress, log):
    """`aam.api.train` inside its run directory."""
    start = _start(opts, inputs.pretrained)
    opts = start.opts
    labelled = _labelled(opts, inputs, start)
    split = _split(labelled, opts, start.head, inputs.classifier)
    targets, opts = _targets(labelled, split, opts, inputs.classifier, inputs.column)
    covariates = _covariates(labelled, split, inputs)
    record = _record(labelled, split, targets, opts, ctx, start, inputs, covariates)
    model = _network(record, start)
    features = _features(labelled, record, opts, ctx, model, covariates)
    training = _network_training(run_dir, opts, ctx, labelled, split, targets, model, record, progress, log)
    return _fit_ensemble(run_dir, opts, ctx, labelled, split, targets, record, features, training)


# ---- the steps ----------------------------------------------------------------------------------------------------
def _start(opts, pretrained):
    from aam.base.shipped import starting_base
    shipped = starting_base(opts, pretrained)
    base = shipped.checkpoint if shipped else load_model(pretrained, "encoder") if pretrained is not None else None
    reference = None
    if base is not None:
        # the tokenizer and the token limit must match what the base was pretrained with (a corpus base cuts reads
        # shorter than its encoder could read: the length it was pretrained on)
        opts = with_pretrained_architecture(opts, base.record).replace(max_bp=base.record.max_bp)
    else:
        reference, opts = reference_for(opts)
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
    return Start(base, reference, opts, head, shipped)


def _labelled(opts, inputs, start):
    from aam.data.loaders import group_labels
    from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
    md = load_metadata(inputs.metadata)
    use_dist = (inputs.tree is not None or inputs.distance_matrix is not None) and opts.penalty > 0 \
        and not opts.freeze_base
    prepared = prepare_table(inputs.table, sequences=inputs.sequences, tree=inputs.tree if use_dist else None,
                             distance_matrix=inputs.distance_matrix if use_dist else None,
                             distance_ids=inputs.distance_ids, objective="unifrac" if use_dist else None,
                             max_bp=opts.max_bp, rarefy_depth=opts.rarefy_depth, seed=opts.seed)
    if start.shipped is not None:
        from aam.base.shipped import check_reads
        check_reads(prepared, start.shipped)
    else:
        check_region(prepared.sequences, start.reference and start.reference.name)
    md = select_samples(md, prepared.sample_ids, missing=opts.missing_samples)
    column = inputs.column
    y, dropped = (categorical_target if inputs.classifier else numeric_target)(md, column)
    if dropped:
        prepared.report.append(f"{len(dropped)} sample(s) without a value for {column!r} left out: "
                               f"{preview(dropped)}")
    keep = [s for s in prepared.sample_ids if s in y.index]
    if len(keep) < 4:
        raise AAMInputError(f"only {len(keep)} sample(s) have both reads and a value for {column!r}; at least 4 "
                            "are needed to train and validate.")
    class_labels, out_dim = _classes(y.loc[keep], inputs) if inputs.classifier else (None, inputs.out_dim)
    return Labelled(prepared.subset(keep), y.loc[keep], md, group_labels(md, opts.group_column, keep), class_labels,
                    out_dim, use_dist)


def _classes(y, inputs):
    class_labels = sorted(y.unique())
    if len(class_labels) < 2:
        raise AAMInputError(f"{inputs.column!r} has a single class ({class_labels[0]!r}) among the usable samples; "
                            "a classifier needs at least 2.")
    if inputs.out_dim is not None and inputs.out_dim != len(class_labels):
        raise AAMInputError(f"{{input:out_dim}} {inputs.out_dim} does not match the {len(class_labels)} classes of "
                            f"{inputs.column!r}: {preview(class_labels, 10)}")
    return class_labels, len(class_labels)


def _split(labelled, opts, head, classifier):
    from aam.data.loaders import split_samples
    from aam.ensemble.blend import share_split
    keep, groups = labelled.ids, labelled.groups
    if head == "linear":
        # the penalty is chosen by cross-validation over every labeled sample: no samples held back
        train_ids, val_ids = list(keep), []
        text = f"{len(keep)} samples, penalty by {min(5, len(set(groups or keep)))}-fold cross-validation"
    else:
        train_ids, val_ids = split_samples(keep, opts, stratify=list(labelled.y.astype(str)) if classifier else None,
                                           groups=groups)
        text = f"split {len(train_ids)} training / {len(val_ids)} validation samples"
    share_ids = []
    if opts.ensemble != "none" and val_ids:
        val_ids, share_ids = share_split(val_ids, labelled.y.to_dict(), classifier,
                                         dict(zip(keep, groups)) if groups else None, opts.seed)
        if share_ids:
            text += (f" ({len(val_ids)} choose the network's epoch, {len(share_ids)} the ensemble's share: "
                     "samples that chose nothing else)")
    return Split(list(train_ids), list(val_ids), list(share_ids), text)


def _targets(labelled, split, opts, classifier, column):
    """The targets, the report line of the target and split, and the options the target's scale settles."""
    from aam.training.targets import TargetTransform, resolve_output_options
    y, prepared = labelled.y, labelled.prepared
    prepared.report.append(f"target {column!r}: " + (f"{labelled.out_dim} classes" if classifier else
                           f"range {y.min():g} to {y.max():g}") + f"; {split.text}" +
                           (f" grouped by {opts.group_column!r}" if labelled.groups else ""))
    if classifier:
        codes = y.map({c: i for i, c in enumerate(labelled.class_labels)}).to_numpy(np.int64)
        return Targets(codes, codes), opts
    _warn_outliers(y, column)
    transform = TargetTransform(opts.normalize_targets, opts.log_transform_targets)
    transform.fit(y.loc[split.train_ids].to_numpy(), column)
    bounded, activation = resolve_output_options(opts.normalize_targets, opts.log_transform_targets,
                                                 opts.bounded_targets, opts.output_activation)
    opts = opts.replace(bounded_targets=bounded, output_activation=activation)
    return Targets(transform.transform(y.to_numpy()), y.to_numpy(np.float64), transform), opts


def _covariates(labelled, split, inputs):
    """The covariates' encoders, fitted on the training samples, and what every labelled sample gives."""
    from aam.data.categorical import CategoricalEncoder
    from aam.data.numeric import NumericEncoder
    covariates = Covariates()
    training, every = labelled.metadata.loc[split.train_ids], labelled.metadata.loc[labelled.ids]
    if inputs.categorical_columns:
        covariates.categorical_encoder = CategoricalEncoder()
        covariates.categorical_encoder.fit(training, columns=list(inputs.categorical_columns))
        covariates.categorical = covariates.categorical_encoder.transform(every)
    if inputs.numeric_columns:
        _check_numeric_columns(inputs)
        covariates.numeric_encoder = NumericEncoder.fit(training, list(inputs.numeric_columns))
        covariates.numeric = covariates.numeric_encoder.transform(every)
    return covariates


def _check_numeric_columns(inputs):
    """Numeric covariates: each listed once, none the target or a categorical covariate."""
    names = list(inputs.numeric_columns)
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise AAMInputError(f"{{opt:numeric_columns}} lists {preview(repeated)} more than once; list each column "
                            "once.")
    if inputs.column in names:
        raise AAMInputError(f"{{opt:numeric_columns}} lists the target column {inputs.column!r}; a model given its "
                            "own target as input learns nothing. Remove it from the covariates.")
    both = sorted(set(names) & set(inputs.categorical_columns or []))
    if both:
        raise AAMInputError(f"{preview(both)} are listed as numeric and as categorical covariates; choose one.")


def _record(labelled, split, targets, opts, ctx, start, inputs, covariates):
    from aam.models.config import PredictorConfig
    base, reference = start.base, start.reference
    encoder = base.record.encoder if base is not None else encoder_config(opts, "unifrac", reference=reference)
    columns = list(inputs.categorical_columns or [])
    cat_encoder, num_encoder = covariates.categorical_encoder, covariates.numeric_encoder
    pcfg = PredictorConfig(encoder=encoder, out_dim=labelled.out_dim or 1, classifier=inputs.classifier,
                           head=start.head, freeze_base=opts.freeze_base,
                           categorical_cardinalities=cat_encoder.get_cardinalities() if cat_encoder else {},
                           categorical_embed_dims={c: opts.categorical_embed_dim for c in columns},
                           categorical_fusion=opts.categorical_fusion,
                           numeric_inputs=num_encoder.width if num_encoder else 0,
                           output_activation=opts.output_activation,
                           bounded_targets=opts.bounded_targets, learnable_output_scale=opts.learnable_output_scale)
    provenance = None
    if base is not None:
        d = base.record.data
        provenance = {"objective": base.record.objective, "aam_version": base.record.aam_version,
                      "data": {"n_samples": d.n_samples, "n_features": d.n_features,
                               "rarefaction_depth": d.rarefaction_depth}}
        if start.shipped is not None:
            provenance["shipped_base"] = start.shipped.provenance()
    target = Target(column=inputs.column, class_labels=labelled.class_labels,
                    transform=targets.transform.to_dict() if targets.transform else None,
                    categorical_columns=columns,
                    categorical_encoder=cat_encoder.to_dict() if cat_encoder else None,
                    numeric_columns=num_encoder.names if num_encoder else [],
                    numeric_encoder=num_encoder.to_dict() if num_encoder else None)
    return ModelRecord(task="classification" if inputs.classifier else "regression", architecture=pcfg,
                       tokenizer=labelled.prepared.tokenizer.to_config(), options=opts.to_dict(),
                       data=data_summary(labelled.prepared, split.train_ids, split.val_ids), target=target,
                       pretrained_encoder=provenance, seed=opts.seed, device=str(ctx.device),
                       asv_encoder=(base.record.asv_encoder if base is not None else
                                    reference.provenance(opts.freeze_asv_encoder) if reference else None),
                       **versions())


def _network(record, start):
    """The predictor to train: a new head on the pretrained base (or a fresh base)."""
    from aam.models import SequencePredictor
    base_model = new_base(record.encoder, start.reference)
    if start.base is not None:
        base_model.load_state_dict(start.base.model_state)
    return SequencePredictor(record.architecture, base=base_model)


def _features(labelled, record, opts, ctx, model, covariates):
    """The labelled table's `SampleFeatures`: with a frozen base (or nucleotide level) its ASVs encoded once."""
    from aam.inference import SampleFeatures
    frozen = opts.freeze_base or record.encoder.freeze_asv_encoder
    return SampleFeatures.build(labelled.prepared, record, opts, ctx, base=model.base if frozen else None,
                                covariates=covariates.categorical, numeric=covariates.numeric)


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


# ---- the network's training -------------------------------------------------------------------------------------
def _network_training(run_dir, opts, ctx, labelled, split, targets, model, record, progress, log):
    """``training(data) -> TrainResult`` for the network member: the closed-form linear head, or the Trainer."""
    if record.architecture.head == "linear":
        return lambda data: _fit_linear(run_dir, opts, ctx, labelled, targets, model, record, data, progress, log)
    return lambda data: _fit_transformer(run_dir, opts, ctx, labelled, split, targets, model, record, data,
                                         progress, log)


def _fit_transformer(run_dir, opts, ctx, labelled, split, targets, model, record, data, progress, log):
    from aam.training.driver import run_training
    from aam.training.losses import MultiTaskLoss, class_weights_from_labels
    classifier = record.is_classifier
    index = {s: i for i, s in enumerate(labelled.ids)}
    train_targets = targets.network[[index[s] for s in split.train_ids]]
    nuc_on = opts.nuc_penalty > 0 and not opts.freeze_base and not record.encoder.freeze_asv_encoder
    loaders, train_part = _training_loaders(labelled, split, targets, data.features, opts, ctx,
                                            opts.nuc_mask_ratio if nuc_on else 0.0)
    if not classifier:
        model.init_output(float(np.mean(train_targets)))
    weights = None
    if classifier and opts.class_weights == "balanced":
        weights = class_weights_from_labels(train_targets, labelled.out_dim)
    loss_fn = MultiTaskLoss(target_penalty=opts.target_penalty, penalty=opts.penalty if labelled.use_distances else 0.0,
                            nuc_penalty=opts.nuc_penalty if nuc_on else 0.0, count_penalty=opts.count_penalty,
                            classifier=classifier, class_weights=weights)
    best, history = run_training(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log,
                                 labelled.prepared.report, train_part, target_transform=targets.transform,
                                 asv_cache=data.features.cache, sample_groups=_sample_groups(labelled))
    return TrainResult(best, history, run_dir, list(labelled.prepared.report))


def _sample_groups(labelled):
    """Sample ID -> group of the group column (None without one)."""
    return None if labelled.groups is None else dict(zip(labelled.ids, labelled.groups))


def _training_loaders(labelled, split, targets, features, opts, ctx, mask):
    """Batches of the training and epoch-choice samples (targets, covariates and distances attached); the
    covariates come from the labelled samples' `features`."""
    from aam.data.dataset import ASVDataset, Collator
    from aam.data.loaders import training_loaders
    prepared = labelled.prepared
    index = {s: i for i, s in enumerate(labelled.ids)}

    def subset(ids, resample):
        rows = np.array([index[s] for s in ids], dtype=np.int64)
        p = prepared.subset(ids)
        ds = ASVDataset(p.counts, p.sample_ids, token_limit=opts.token_limit, asv_selection=opts.asv_selection,
                        rarefy_depth=prepared.depth, resample_each_epoch=resample, seed=opts.seed,
                        targets=targets.network[rows],
                        categorical=None if features.covariates is None else features.covariates[rows],
                        numeric=None if features.numeric is None else features.numeric[rows])
        return ds, p

    def collate(ds, p):
        return Collator(ds, prepared.tokens, distances=p.distances, mask_ratio=mask,
                        mask_strategy=opts.nuc_mask_strategy)

    train_ds, tr = subset(split.train_ids, opts.resample_each_epoch)
    val_ds, va = subset(split.val_ids, False) if split.val_ids else (None, None)
    loaders = training_loaders(train_ds, val_ds, collate(train_ds, tr),
                               collate(val_ds, va) if val_ds is not None else None, opts, ctx)
    return loaders, tr


def _fit_linear(run_dir, opts, ctx, labelled, targets, model, record, data, progress, log):
    """Fit a linear head on the frozen base's embeddings (see `aam.training.linear_head`)."""
    import time

    from aam.checkpoint import Checkpoint
    from aam.evaluation.stats import score_interval
    from aam.training.linear_head import fit_linear_head
    from aam.training.run_logger import RunLogger
    logger = RunLogger(run_dir, is_main=ctx.is_main, progress=progress, log=log)
    try:
        t0 = time.time()
        for line in labelled.prepared.report:
            logger.line(line)
        features = data.features.base_outputs(
            lambda out, batch: model.linear_features(out, batch.get("categorical"), batch.get("numeric")))
        classifier = record.is_classifier
        fit = fit_linear_head(features, targets.network, classifier, labelled.out_dim if classifier else None,
                              labelled.groups, opts.seed)
        model.set_linear_head(fit.weight, fit.bias)
        row, raw, name, score = _linear_scores(fit, targets, record, time.time() - t0)
        interval = score_interval(name.split("/", 1)[1], raw["y_true"], raw["y_pred"], labelled.groups,
                                  seed=opts.seed)
        record = replace(record, training=TrainingSummary(history=[row], best_epoch=1, best_score=score,
                                                          selection_metric=name, best_interval=interval))
        logger.line(f"linear head: {len(targets.network)} samples, {features.shape[1]} features; penalty "
                    f"{fit.penalty:g} chosen by {fit.folds}-fold cross-validation; {name} = {score:.4f} (out-of-fold)")
        checkpoint = Checkpoint(record, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        if ctx.is_main:
            run_dir.create()
            logger.validation_figures(raw, 1, record.task, record.target.class_labels)
            logger.history([row])
            run_dir.write_model(checkpoint)
    finally:
        logger.close()
    return TrainResult(checkpoint, [row], run_dir, list(labelled.prepared.report))


def _linear_scores(fit, targets, record, seconds):
    """The out-of-fold scores of a linear head: (history row, raw values for figures, metric name, score)."""
    from aam.evaluation.metrics import classification_metrics, regression_metrics
    if record.is_classifier:
        y_pred = fit.oof.argmax(1)
        metrics = classification_metrics(targets.network, y_pred, len(record.target.class_labels),
                                         probabilities=fit.oof)
        raw = {"y_true": targets.network, "y_pred": y_pred, "confusion_matrix": metrics.pop("confusion_matrix")}
        name, score = "cv/accuracy", metrics["accuracy"]
    else:
        y_true, y_pred = targets.transform.inverse(targets.network), targets.transform.inverse(fit.oof)
        metrics = regression_metrics(y_true, y_pred)
        raw = {"y_true": y_true, "y_pred": y_pred}
        name, score = "cv/mae", metrics["mae"]
    row = {"epoch": 1, **{f"cv/{k}": v for k, v in metrics.items() if v is not None},
           "penalty": fit.penalty, "cv_folds": fit.folds, "seconds": seconds, "best": True}
    return row, raw, name, score


# ---- the ensemble -------------------------------------------------------------------------------------------------
def _fit_ensemble(run_dir, opts, ctx, labelled, split, targets, record, features, training):
    """Fit the network and, with ``ensemble`` other than none, the member blended with it; the model file."""
    from aam.checkpoint import Checkpoint
    from aam.ensemble.composite import Ensemble, member_type
    from aam.ensemble.member import FitData
    from aam.ensemble.network import NetworkMember
    network = NetworkMember(training=training)
    data = FitData(features, targets.members, record.is_classifier, labelled.out_dim or 1, labelled.groups,
                   opts.seed, ctx.threads)
    if opts.ensemble == "none":
        return network.fit(data).result
    other = member_type(opts.ensemble).from_options(opts, record)
    ensemble = Ensemble([network, other]).fit(data, split.share_ids, opts.ensemble_share_rule)
    result = network.result
    trained = result.checkpoint.record
    line = (f"ensemble: {ensemble.record.describe()}")
    final = replace(trained, ensemble=ensemble.record, data=replace(trained.data, report=trained.data.report + [line]))
    checkpoint = Checkpoint(final, result.checkpoint.model_state, member_states=ensemble.member_states())
    if ctx.is_main:
        run_dir.write_model(checkpoint)
    return replace(result, checkpoint=checkpoint)
