"""The run driver beside the Trainer: everything around `Trainer.fit` that pretraining and fine-tuning share.

    run directory -> parallelize (DDP / FSDP / DataParallel) -> compile -> Trainer (+ resume) -> fit
        -> the best model written -> process-group teardown

The Trainer owns the epoch loop; the driver owns the run around it (as torchtitan keeps its train loop apart from
its parallelism and checkpointing setup).
"""
import gc

from aam.errors import warn


def run_training(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log, report, train_part,
                 target_transform=None, asv_cache=None, sample_groups=None):
    """Train `model` and return ``(best checkpoint, history)``.

    Parameters
    ----------
    model : SequenceEncoder or SequencePredictor
    loss_fn : aam.training.losses.MultiTaskLoss
    loaders : (DataLoader, DataLoader or None)
        Training and validation batches.
    record : aam.record.ModelRecord
        The record of the model being trained.
    opts : aam.options.Options
    ctx : aam.training.context.RunContext
    run_dir : aam.rundir.RunDirectory
    progress : bool
    log : callable or None
    report : list of str
        What the data pipeline did, logged first.
    train_part : aam.data.pipeline.PreparedTable
        The training samples (their distances, for the distributed loss).
    target_transform : aam.training.targets.TargetTransform, optional
    asv_cache : aam.training.cache.ASVEmbeddingCache, optional
        The frozen base's ASV embeddings (`aam.inference.SampleFeatures.cache`); with a frozen base and none
        given, one is made here.
    sample_groups : dict of str -> str, optional
        The group of each sample (`aam.training.trainer.Trainer`).
    """
    from aam.checkpoint import load_checkpoint
    from aam.training import distributed as D
    from aam.training.context import parallelize
    from aam.training.device import maybe_compile
    from aam.training.resume import check_resumable
    from aam.training.run_logger import RunLogger
    from aam.training.trainer import Trainer

    train_loader, val_loader = loaders
    cache = _frozen_cache(record, opts, ctx, train_part, asv_cache)
    if ctx.is_main:
        run_dir.create()
    D.barrier(ctx)
    model, train_loss, eval_loss = parallelize(model, loss_fn, ctx, distances=train_part.distances,
                                               sample_ids=train_part.sample_ids)
    model = maybe_compile(model, opts.compile_model, log)
    logger = RunLogger(run_dir, is_main=ctx.is_main, progress=progress, log=log)
    trainer = Trainer(model, train_loss, eval_loss, train_loader, val_loader, record, opts, ctx, logger,
                      run_dir=run_dir, target_transform=target_transform, asv_cache=cache,
                      sample_groups=sample_groups)
    _announce(ctx, opts, logger, report)
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
    return best, history


def _frozen_cache(record, opts, ctx, train_part, asv_cache):
    """The ASV cache of a frozen base or nucleotide level (None when the encoder trains, or under a wrapper)."""
    if not (opts.freeze_base or record.encoder.freeze_asv_encoder):
        return None
    if ctx.wrapped:
        # the cache calls the model's heads directly, past the DDP/FSDP/DataParallel forward that synchronizes
        # gradients, so wrapped runs re-encode the frozen ASVs instead
        warn("the frozen-base ASV cache is not used with {opt:distributed} / {opt:fsdp} / {opt:data_parallel}",
             stacklevel=4)
        return None
    if asv_cache is not None:
        return asv_cache
    from aam.training.cache import ASVEmbeddingCache
    return ASVEmbeddingCache(train_part.tokens, record.encoder.embedding_dim, ctx.device)


def _announce(ctx, opts, logger, report):
    import torch
    if ctx.active:
        # same initial weights on every rank (seeded above), but different dropout draws per rank
        torch.manual_seed(opts.seed + 7919 * ctx.rank)
        logger.line(f"{ctx.mode.upper()} over {ctx.world_size} processes ({ctx.backend}); global batch "
                    f"{opts.batch_size * ctx.world_size} samples")
    for line in report:
        logger.line(line)
