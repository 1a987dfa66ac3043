"""Batches for training and inference: the train / validation split, data loaders, and averaging predictions
over several rarefactions of each sample."""
import torch

from aam.data.dataset import ASVDataset, Collator
from aam.errors import AAMInputError, preview, warn


def split_samples(sample_ids, opts, stratify=None, groups=None):
    """Training and validation samples by ``opts.validation_fraction`` (seeded; grouped or stratified).

    Returns
    -------
    (list of str, list of str)
        With fewer than 4 samples, or a fraction of 0, everything trains (and a warning says so in the first case).
    """
    from aam.data.splits import train_val_split
    frac = opts.validation_fraction
    if frac <= 0 or len(sample_ids) < 4:
        if frac > 0:
            warn(f"only {len(sample_ids)} samples: training without a validation split", stacklevel=2)
        return list(sample_ids), []
    train, val = train_val_split(sample_ids, val_fraction=frac, seed=opts.seed, stratify=stratify, groups=groups)
    if len(train) < MIN_TRAINING_SAMPLES:
        warn(f"only {len(train)} of {len(sample_ids)} samples train after the validation split "
             f"({{opt:validation_fraction}} {frac:g}): a model fit to so few samples is unreliable. Use a smaller "
             "validation fraction, or more samples.", stacklevel=2)
    return train, val


# fewer training samples than this after the split deserve a warning
MIN_TRAINING_SAMPLES = 10


def group_labels(metadata, column, sample_ids):
    """The value of the group column for each sample (as strings), or None without a group column."""
    if column is None:
        return None
    if metadata is None:
        raise AAMInputError(f"{{opt:group_column}} {column!r} needs sample metadata ({{input:metadata}}).")
    from aam.data.metadata import load_metadata, select_samples
    md = select_samples(load_metadata(metadata), sample_ids)
    if column not in md.columns:
        raise AAMInputError(f"{{opt:group_column}} {column!r} is not a metadata column; available: "
                            f"{preview(md.columns, 10)}")
    g = md[column]
    if g.isna().any():
        raise AAMInputError(f"{{opt:group_column}} {column!r} has no value for samples "
                            f"{preview(g.index[g.isna()])}; fill them in or choose another column.")
    return list(g.astype(str))


def training_loaders(train_ds, val_ds, collate_train, collate_val, opts, ctx):
    """Loaders of the training split (seeded shuffle, sharded over ranks) and the validation split (in order).

    The order of an epoch is a function of (seed, epoch) only, so a resumed run sees the same batches as an
    uninterrupted one; with one replica the DistributedSampler is exactly a seeded per-epoch shuffle.
    """
    from torch.utils.data.distributed import DistributedSampler
    common = {"num_workers": opts.num_workers, "pin_memory": ctx.device.type == "cuda"}
    if opts.num_workers > 0:
        common["persistent_workers"] = False
        common["prefetch_factor"] = 2
    world, rank = (ctx.world_size, ctx.rank) if ctx.active else (1, 0)
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=opts.seed,
                                 drop_last=False)
    drop_last = opts.drop_last
    if drop_last and len(sampler) < opts.batch_size:
        warn(f"{{opt:drop_last}} ignored: {len(sampler)} training samples per process make less than one batch "
             f"of {opts.batch_size}", stacklevel=2)
        drop_last = False
    train = torch.utils.data.DataLoader(train_ds, batch_size=opts.batch_size, sampler=sampler,
                                        collate_fn=collate_train, drop_last=drop_last, **common)
    val = None
    if val_ds is not None and len(val_ds):
        # validation never drops a batch: every held-out sample is scored
        val = torch.utils.data.DataLoader(val_ds, batch_size=opts.batch_size, shuffle=False,
                                          collate_fn=collate_val, drop_last=False, **common)
    return train, val


def inference_loader(prepared, record, opts, categorical=None, numeric=None):
    """Batches of a new table for a trained model: its token limit, ASV selection and rarefaction depth."""
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=record.token_limit,
                    asv_selection=record.run_options().asv_selection, rarefy_depth=record.data.rarefaction_depth,
                    resample_each_epoch=False, seed=opts.seed, categorical=categorical, numeric=numeric)
    return torch.utils.data.DataLoader(ds, batch_size=opts.batch_size, shuffle=False,
                                       collate_fn=Collator(ds, prepared.tokens), num_workers=opts.num_workers)


def mean_over_draws(loader, draws, run):
    """The mean of ``run(batch)`` over `draws` independent rarefactions of every sample.

    A single rarefaction to the training depth throws away most reads of a deep sample at random, and which
    reads go can flip a prediction; averaging over several draws removes that noise. Samples not deeper than
    the depth are the same in every draw.

    Returns
    -------
    (torch.Tensor, list of str)
        The mean output [N, ...] in loader order, and the sample IDs.
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
