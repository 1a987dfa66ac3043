"""What the workflows share: the result of a training run, the run's context and directory, the record's data
summary, and loading a model of the expected kind."""
import contextlib
from dataclasses import dataclass, field
from typing import List

from aam import options as O
from aam.errors import AAMInputError
from aam.record import DataSummary
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


def resolve(command, options):
    """The options of `command` from keyword arguments (None = the default)."""
    return O.resolve(command, **options)


def start(opts, context):
    """Seed everything, then the run's context (the given one, or one built from the options)."""
    from aam.training.context import build_context
    from aam.training.rng import seed_everything
    seed_everything(opts.seed)
    return context if context is not None else build_context(opts)


@contextlib.contextmanager
def run_directory(output_dir, opts, ctx):
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
    except BaseException:
        # a run replacing an older one (--overwrite) puts the old one back when it fails
        run_dir.release(finished=False)
        raise
    else:
        run_dir.release(finished=True)


def data_summary(prepared, train_ids, val_ids):
    """The record's `DataSummary` of a prepared training table and its split."""
    from aam.data.novelty import training_signature
    return DataSummary(n_samples=len(prepared.sample_ids), n_features=len(prepared.feature_ids),
                       rarefaction_depth=prepared.depth, dropped_low_depth=list(prepared.dropped_low_depth),
                       train_samples=list(train_ids), validation_samples=list(val_ids),
                       distance_source=prepared.distance_source, report=list(prepared.report),
                       fingerprint=prepared.fingerprint(),
                       signature=training_signature(prepared.subset(list(train_ids)), prepared.tokenizer.max_bp))


def versions():
    """The record's software versions."""
    import torch

    from aam import __version__
    return {"aam_version": __version__, "torch_version": torch.__version__}


_NEEDED = {
    "encoder": "{input:pretrained} must be a pretrained base model (from pretrain), not a {title}: fine-tuning starts "
               "from a base, not from a finished predictor.",
    "predictor": "{input:model} must be a trained regressor or classifier, not a {title}. A pretrained base predicts "
                 "nothing by itself: embed samples with it, or fine-tune it into a predictor ({input:pretrained}).",
}


def load_model(model, expect=None):
    """A `Checkpoint` from a path or a Checkpoint, of the `expect` kind ('encoder' or 'predictor')."""
    from aam.checkpoint import Checkpoint, load_checkpoint
    if not isinstance(model, Checkpoint):
        model = load_checkpoint(model)
    if expect and model.kind != expect:
        raise AAMInputError(_NEEDED[expect].replace("{title}", model.record.title))
    return model
