"""Corpus pretraining of the shipped sample-level base (``make base``).

    corpus (American Gut + PGP) -> prepared table, reads cut at the corpus read length (100 nt)
      -> rarefied presence + tree: UniFrac of each batch computed when the batch is drawn (`BatchUniFrac`)
      -> subject-grouped split -> loaders whose samples are read at random truncations of their reads
      -> a base over the frozen reference encoder (`aam.reference`) -> the run driver (`run_training`)

The same steps as ``aam.api.pretrain`` (`aam.workflows.pretrain`), with two differences a corpus needs:

* **Distances per batch.** No N x N matrix is formed; memory grows with the table, not with its square
  (``benchmarks/base_unifrac_memory.py`` measures it).
* **Random read truncations.** Studies read V4 at 90 to 150 nt. The base records a tokenizer that cuts reads at
  the corpus length (100 nt), so longer reads of other studies (ECAM 150 nt, Moving Pictures 120 nt) are read as
  their first 100 nt, exactly what the corpus reads are; shorter reads are covered by training on truncations:
  each training sample is read, with probability ``truncate_fraction``, with every read cut to one of
  ``truncations`` (one length per sample, seeded by the seed, the epoch and the sample). With the reference
  encoder frozen, each ASV is encoded once per length for the whole run.

Resumable (``--resume``, continued exactly), progress lines, TensorBoard and history in the run directory, seeded.

    python -m aam.base.pretrain --out base-run [--resume] [--epochs 30] [--max-samples 400 60] [--threads 2]
"""
import argparse
import os
import sys
from dataclasses import replace

import numpy as np
import torch

from aam.data.dataset import ASVDataset, Collator
from aam.errors import AAMInputError

READ_LENGTH = 100
TRUNCATIONS = (90, 80)
TRUNCATE_FRACTION = 0.5
#: the options of a corpus run that differ from ``aam pretrain``'s defaults (sized for 2,725 samples on 2 cores)
# 5,000 reads keep 2,716 of the 2,725 samples (9,043, the default, 2,453). The kept epoch is the one whose validation
# distances correlate best with UniFrac: on the corpus the loss kept falling by fitting the distances' scale while
# that correlation fell (benchmarks/results/base_build.md), and the geometry is what a base passes on.
CORPUS_OPTIONS = dict(batch_size=64, epochs=30, patience=10, lr=1e-3, validation_fraction=0.1, token_limit=256,
                      rarefy_depth=5000, pretrain_selection="unifrac_r")


def truncated_tokens(tokens, lengths):
    """The token rows of every feature at its full length and cut at each of `lengths`.

    Parameters
    ----------
    tokens : np.ndarray of uint8, shape [F, L]
        START then nucleotides then PAD (`aam.data.tokenizer`).
    lengths : sequence of int
        Read lengths in nucleotides.

    Returns
    -------
    np.ndarray of uint8, shape [F * (1 + len(lengths)), L]
        Block k holds the features cut at ``lengths[k - 1]`` (block 0: as given); feature f of block k is row
        ``k * F + f``.
    """
    from aam.data.tokenizer import PAD
    blocks = [tokens]
    for n in lengths:
        cut = tokens.copy()
        cut[:, 1 + int(n):] = PAD  # position 0 is START
        blocks.append(cut)
    return np.concatenate(blocks, axis=0)


class CorpusCollator(Collator):
    """Batches of corpus samples: each sample's reads at a seeded random truncation, and the batch's UniFrac.

    Parameters
    ----------
    dataset : aam.data.dataset.ASVDataset
    feature_tokens : np.ndarray, shape [F * K, L]
        `truncated_tokens` of the features.
    n_features : int
        F.
    unifrac : aam.base.unifrac.BatchUniFrac
        Distances of the corpus samples.
    rows : np.ndarray of int64
        The `unifrac` row of each sample of `dataset`.
    truncate_fraction : float
        Probability that a sample is read truncated (0: always at full length, as in validation).
    **kwargs
        Passed to `Collator` (masking).
    """

    def __init__(self, dataset, feature_tokens, n_features, unifrac, rows, truncate_fraction=0.0, **kwargs):
        super().__init__(dataset, feature_tokens, distances=None, **kwargs)
        self.n_features = int(n_features)
        self.n_variants = int(feature_tokens.shape[0] // n_features)
        self.unifrac = unifrac
        self.rows = np.asarray(rows, dtype=np.int64)
        self.truncate_fraction = float(truncate_fraction)

    def variant(self, index):
        """Which truncation sample `index` is read at this epoch (0 = full reads)."""
        if self.truncate_fraction <= 0 or self.n_variants < 2:
            return 0
        rng = np.random.default_rng([self.dataset.seed, self.dataset.epoch, 104729, int(index)])
        if rng.random() >= self.truncate_fraction:
            return 0
        return int(rng.integers(1, self.n_variants))

    def __call__(self, items):
        items = [dict(it, asv_ids=it["asv_ids"] + self.variant(it["index"]) * self.n_features) for it in items]
        batch = super().__call__(items)
        idx = self.rows[[it["index"] for it in items]]
        batch["distances"] = torch.from_numpy(self.unifrac.block(idx))
        return batch


def corpus_unifrac(corpus, prepared, seed):
    """`BatchUniFrac` of the rarefied corpus (the draw `prepare_table` made) and each prepared sample's row."""
    from aam.base.unifrac import BatchUniFrac
    from aam.data.table import drop_empty, rarefy
    table = drop_empty(corpus.table)
    if prepared.depth is not None:
        table, _ = rarefy(table, prepared.depth, seed)
    ids = [str(s) for s in table.ids()]
    unifrac = BatchUniFrac(table.matrix_data.T.tocsr(), [str(f) for f in table.ids("observation")], corpus.tree)
    index = {s: i for i, s in enumerate(ids)}
    return unifrac, np.array([index[s] for s in prepared.sample_ids], dtype=np.int64)


def pretrain_base(corpus, output_dir=None, truncations=TRUNCATIONS, truncate_fraction=TRUNCATE_FRACTION,
                  read_length=READ_LENGTH, progress=True, log=None, command=None, **options):
    """Pretrain a sample-level base on `corpus` (see the module docstring).

    Parameters
    ----------
    corpus : aam.base.corpus.Corpus
    output_dir : str, optional
        The run directory (`aam.rundir`); None uses a temporary one.
    truncations : sequence of int
        Shorter read lengths trained on (each below `read_length`).
    truncate_fraction : float
        Share of training samples read at one of `truncations` each epoch.
    read_length : int
        Reads are cut here; the base's tokenizer records it, so studies with longer reads are cut alike.
    progress : bool
    log : callable, optional
    command : str, optional
        The command line that started the run (recorded in the run's corpus.json for the model card).
    **options
        Options of ``aam pretrain`` (`aam.options`); `CORPUS_OPTIONS` fill the ones not given.

    Returns
    -------
    aam.workflows.common.TrainResult
    """
    from aam import options as O
    from aam.workflows.common import resolve, run_directory, start
    bad = [n for n in truncations if not 1 <= int(n) < read_length]
    if bad or not 0.0 <= truncate_fraction <= 1.0:
        raise AAMInputError(f"truncations must lie between 1 and {read_length - 1} nt (got {bad}) and the truncated "
                            f"fraction between 0 and 1 (got {truncate_fraction}).")
    opts = resolve(O.PRETRAIN, {**CORPUS_OPTIONS, **options})
    if opts.asv_encoder == "none":
        raise AAMInputError("the corpus base is built over a frozen reference encoder; {opt:asv_encoder} none is "
                            "not supported here.")
    ctx = start(opts, None)
    with run_directory(output_dir, opts, ctx) as run_dir:
        truncations = tuple(int(n) for n in truncations)
        result = _run(run_dir, opts, ctx, corpus, truncations, float(truncate_fraction), int(read_length), progress,
                      log)
        if ctx.is_main:
            _write_run_info(run_dir, corpus, truncations, truncate_fraction, command)
        return result


def _write_run_info(run_dir, corpus, truncations, truncate_fraction, command):
    """corpus.json beside the run: what `aam.base.export` puts in the base's base.json and model card."""
    from aam.base.export import RUN_INFO
    from aam.reference.encoder_files import write_json
    write_json(os.path.join(run_dir.path, RUN_INFO),
               {"corpus": list(corpus.report), "truncations": list(truncations),
                "truncate_fraction": float(truncate_fraction), "command": command})


def _run(run_dir, opts, ctx, corpus, truncations, truncate_fraction, read_length, progress, log):
    from aam.data.loaders import group_labels, split_samples
    from aam.data.pipeline import prepare_table
    from aam.models.from_options import encoder_config, new_base
    from aam.record import ModelRecord
    from aam.reference.selected import reference_for
    from aam.training.driver import run_training
    from aam.training.losses import MultiTaskLoss
    from aam.workflows.common import TrainResult, data_summary, versions

    reference, opts = reference_for(opts)
    nuc_on = opts.nuc_penalty > 0 and not opts.freeze_asv_encoder
    prepared = prepare_table(corpus.table, sequences=corpus.sequences, objective=None, max_bp=read_length,
                             rarefy_depth=opts.rarefy_depth, seed=opts.seed, table_name="corpus")
    unifrac, rows = corpus_unifrac(corpus, prepared, opts.seed)
    prepared.distance_source = "unweighted UniFrac of the rarefied corpus, computed per batch from the tree"
    prepared.report[:0] = list(corpus.report)
    prepared.report.append(f"distances: {prepared.distance_source} ({unifrac.nbytes / 1e6:.1f} MB of presence and "
                           f"tree paths; the full matrix would take {len(rows) ** 2 * 4 / 1e6:.1f} MB as float32)")
    prepared.report.append(f"reads cut at {read_length} nt; {100 * truncate_fraction:g}% of training samples read "
                           f"at {'/'.join(map(str, truncations))} nt each epoch")
    groups = group_labels(corpus.metadata(), "subject", prepared.sample_ids)
    train_ids, val_ids = split_samples(prepared.sample_ids, opts, groups=groups)
    prepared.report.append(f"split: {len(train_ids)} training, {len(val_ids)} validation samples (grouped by "
                           "subject)")
    record = ModelRecord(task="pretrain", architecture=encoder_config(opts, "unifrac", 0, reference),
                         tokenizer=prepared.tokenizer.to_config(), options=opts.to_dict(),
                         data=data_summary(prepared, train_ids, val_ids), objective="unifrac", seed=opts.seed,
                         device=str(ctx.device), asv_encoder=reference.provenance(opts.freeze_asv_encoder),
                         **versions())
    model = new_base(record.architecture, reference)
    loss_fn = MultiTaskLoss(penalty=opts.penalty, nuc_penalty=opts.nuc_penalty if nuc_on else 0.0)
    tokens = truncated_tokens(prepared.tokens, truncations)
    loaders = _loaders(prepared, train_ids, val_ids, tokens, unifrac, rows, truncate_fraction, opts, ctx,
                       opts.nuc_mask_ratio if nuc_on else 0.0)
    train_part = replace(prepared.subset(train_ids), tokens=tokens)  # the ASV cache serves every truncation
    best, history = run_training(model, loss_fn, loaders, record, opts, ctx, run_dir, progress, log,
                                 prepared.report, train_part)
    return TrainResult(best, history, run_dir, list(prepared.report))


def _loaders(prepared, train_ids, val_ids, tokens, unifrac, rows, truncate_fraction, opts, ctx, mask):
    """Training batches (truncated reads) and validation batches (full reads), each with its UniFrac block."""
    from aam.data.loaders import training_loaders
    index = {s: i for i, s in enumerate(prepared.sample_ids)}

    def part(ids, resample, fraction):
        p = prepared.subset(ids)
        ds = ASVDataset(p.counts, p.sample_ids, token_limit=opts.token_limit, asv_selection=opts.asv_selection,
                        rarefy_depth=prepared.depth, resample_each_epoch=resample, seed=opts.seed)
        collate = CorpusCollator(ds, tokens, len(prepared.feature_ids), unifrac, rows[[index[s] for s in ids]],
                                 truncate_fraction=fraction, mask_ratio=mask, mask_strategy=opts.nuc_mask_strategy)
        return ds, collate

    train_ds, train_collate = part(train_ids, opts.resample_each_epoch, truncate_fraction)
    val_ds, val_collate = part(val_ids, False, 0.0) if val_ids else (None, None)
    return training_loaders(train_ds, val_ds, train_collate, val_collate, opts, ctx)


def main(argv=None):
    try:
        return _main(argv)
    except AAMInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _main(argv):
    from aam.base.corpus import choose_slice, default_data_dir, load_corpus
    p = argparse.ArgumentParser(prog="python -m aam.base.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--data-dir", default=None, help=f"shared data folder (default {default_data_dir()})")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--max-samples", type=int, nargs=2, default=None, metavar=("AMERICAN_GUT", "PGP"),
                   help="a seeded subset of each study (a pilot run)")
    p.add_argument("--truncations", type=int, nargs="*", default=list(TRUNCATIONS))
    p.add_argument("--truncate-fraction", type=float, default=TRUNCATE_FRACTION)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    for name in ("epochs", "batch_size", "patience", "seed", "token_limit", "rarefy_depth"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--pretrain-selection", choices=("loss", "unifrac_r"), default=None,
                   help="validation score that picks the kept epoch (default unifrac_r)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--distributed", action="store_true", help="DDP over the processes torchrun started")
    args = p.parse_args(argv)
    corpus = load_corpus(args.data_dir)
    if args.max_samples:
        keep = set(choose_slice(corpus, args.max_samples, seed=args.seed or 0))
        corpus.table = corpus.table.filter(lambda v, i, m: str(i) in keep, axis="sample", inplace=False)
        corpus.report.append(f"pilot: {len(keep)} samples ({args.max_samples[0]} american-gut, "
                             f"{args.max_samples[1]} pgp, seeded)")
    names = ("epochs", "batch_size", "patience", "seed", "token_limit", "rarefy_depth", "lr", "device",
             "pretrain_selection")
    options = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.distributed:
        options["distributed"] = True
    resume = os.path.join(args.out, "checkpoints", "last_checkpoint.pt") if args.resume else None
    command = "python -m aam.base.pretrain " + " ".join(argv if argv is not None else sys.argv[1:])
    pretrain_base(corpus, args.out, truncations=args.truncations, truncate_fraction=args.truncate_fraction,
                  num_threads=args.threads, resume=resume, overwrite=args.overwrite, command=command, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
