"""The view type of an AAM model artifact: the engine's checkpoint plus the files of its training run.

Kept free of torch: the transformers that fill or read it import torch only when they run.
"""


class TrainedModel:
    """An AAM checkpoint and the directory its training run wrote (history.tsv, plots/, tensorboard/).

    Parameters
    ----------
    checkpoint : aam.checkpoint.Checkpoint
        Weights and record (including the per-epoch history, the seed and the device used).
    run_dir : aam.rundir.RunDirectory, optional
        A training run's directory (``aam.api.TrainResult.run_dir``, which owns it when it is temporary) or an
        artifact's directory; its ``history.tsv``, ``plots/*.png|svg`` and ``tensorboard/`` event files go into
        the artifact.
    keep_alive : object, optional
        Anything that must live as long as this object (the artifact directory format it was read from).
    """

    def __init__(self, checkpoint, run_dir=None, keep_alive=None):
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        self._keep_alive = keep_alive

    @classmethod
    def from_result(cls, result):
        """Wrap an ``aam.api.TrainResult``."""
        return cls(result.checkpoint, result.run_dir)

    @property
    def record(self):
        return self.checkpoint.record

    def __repr__(self):
        return (f"TrainedModel(task={self.record.task!r}, "
                f"run_dir={None if self.run_dir is None else self.run_dir.path!r})")
