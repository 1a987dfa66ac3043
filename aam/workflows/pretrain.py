"""Pretraining workflow: a base model fitted to a study's distances (and masked nucleotides), without labels.

    options -> reference encoder -> prepared table (+ distances) -> split -> loaders -> base + record -> driver
"""
from aam.data.pipeline import prepare_table
from aam.models.from_options import encoder_config, new_base, with_pretrained_architecture
from aam.record import ModelRecord
from aam.reference.selected import check_region, reference_for
from aam.workflows.common import TrainResult, data_summary, versions


def run_pretraining(run_dir, opts, ctx, inputs, progress, log):
    """`aam.api.pretrain` inside its run directory; `inputs` holds the data arguments by name."""
    from aam.data.loaders import group_labels, split_samples
    from aam.training.driver import run_training
    from aam.training.losses import MultiTaskLoss

    objective = opts.encoder_type
    shipped, reference, opts = _starting_point(opts, objective)
    nuc_on = opts.nuc_penalty > 0 and not ((reference or shipped) is not None and opts.freeze_asv_encoder)
    prepared = prepare_table(inputs["table"], sequences=inputs["sequences"], tree=inputs["tree"],
                             distance_matrix=inputs["distance_matrix"], distance_ids=inputs["distance_ids"],
                             taxonomy=inputs["taxonomy"], taxonomy_level=opts.taxonomy_level, objective=objective,
                             max_bp=opts.max_bp, rarefy_depth=opts.rarefy_depth, seed=opts.seed)
    if shipped is not None:
        from aam.base.shipped import check_reads
        check_reads(prepared, shipped)
    else:
        check_region(prepared.sequences, reference and reference.name)
    groups = group_labels(inputs["metadata"], opts.group_column, prepared.sample_ids)
    train_ids, val_ids = split_samples(prepared.sample_ids, opts, groups=groups)
    prepared.report.append(f"split: {len(train_ids)} training, {len(val_ids)} validation samples"
                           + (f" (grouped by {opts.group_column})" if groups else ""))
    tr, va = prepared.subset(train_ids), (prepared.subset(val_ids) if val_ids else None)
    loaders = _loaders(prepared, tr, va, opts, ctx, opts.nuc_mask_ratio if nuc_on else 0.0)
    n_taxa = len(prepared.taxonomy_classes or [])
    record = ModelRecord(task="pretrain",
                         architecture=(shipped.checkpoint.record.encoder if shipped else
                                       encoder_config(opts, objective, n_taxa, reference)),
                         tokenizer=prepared.tokenizer.to_config(), options=opts.to_dict(),
                         data=data_summary(prepared, train_ids, val_ids), objective=objective,
                         taxonomy_classes=prepared.taxonomy_classes, taxonomy_level=opts.taxonomy_level,
                         seed=opts.seed, device=str(ctx.device),
                         asv_encoder=(shipped.checkpoint.record.asv_encoder if shipped else
                                      reference.provenance(opts.freeze_asv_encoder) if reference else None),
                         pretrained_encoder={"shipped_base": shipped.provenance()} if shipped else None,
                         **versions())
    model = new_base(record.architecture, reference)
    if shipped is not None:
        model.load_state_dict(shipped.checkpoint.model_state)
    loss_fn = MultiTaskLoss(penalty=opts.penalty, nuc_penalty=opts.nuc_penalty if nuc_on else 0.0)
    best, history = run_training(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log,
                                 prepared.report, tr)
    return TrainResult(best, history, run_dir, list(prepared.report))


def _starting_point(opts, objective):
    """``(shipped base or None, reference encoder or None, opts)``: a shipped base ({opt:base}) is continued with
    its own architecture and read length; otherwise the reference encoder {opt:asv_encoder} names, if any."""
    from aam.base.shipped import starting_base
    shipped = starting_base(opts)
    if shipped is None:
        return (None,) + tuple(reference_for(opts))
    if objective != shipped.checkpoint.record.objective:
        from aam.errors import AAMInputError
        raise AAMInputError(f"{{opt:base}} {shipped.name} was pretrained on {shipped.checkpoint.record.objective}; "
                            f"continue it with {{opt:encoder_type}} {shipped.checkpoint.record.objective}, not "
                            f"{objective}.")
    record = shipped.checkpoint.record
    opts = with_pretrained_architecture(opts, record).replace(max_bp=record.max_bp,
                                                              freeze_asv_encoder=record.encoder.freeze_asv_encoder)
    return shipped, None, opts


def _loaders(prepared, tr, va, opts, ctx, mask):
    """Training and validation batches of a pretraining run (distances, Faith PD and taxonomy attached)."""
    from aam.data.dataset import ASVDataset, Collator
    from aam.data.loaders import training_loaders

    def dataset(p, resample):
        return ASVDataset(p.counts, p.sample_ids, token_limit=opts.token_limit, asv_selection=opts.asv_selection,
                          rarefy_depth=prepared.depth, resample_each_epoch=resample, seed=opts.seed,
                          faith_pd=p.faith_pd)

    def collate(ds, p):
        return Collator(ds, prepared.tokens, distances=p.distances, taxonomy=prepared.taxonomy, mask_ratio=mask,
                        mask_strategy=opts.nuc_mask_strategy)

    train_ds = dataset(tr, opts.resample_each_epoch)
    val_ds = dataset(va, False) if va is not None else None
    return training_loaders(train_ds, val_ds, collate(train_ds, tr), collate(val_ds, va) if va is not None else None,
                            opts, ctx)
