"""The view type of an AAM model artifact: the engine's checkpoint plus the files of its training run.

Kept free of torch: the transformers that fill or read it import torch only when they run.
"""
import os


class TrainedModel:
    """An AAM checkpoint and the directory its training run wrote (history.tsv, plots/, tensorboard/).

    Parameters
    ----------
    checkpoint : aam.checkpoint.Checkpoint
        Weights and config (including the per-epoch history, the seed and the device used).
    output_dir : str, optional
        A training output directory (``aam.api.TrainResult.output_dir``) or an artifact's directory; its
        ``history.tsv``, ``plots/*.png|svg`` and ``tensorboard/`` event files go into the artifact.
    keep_alive : object, optional
        Anything that must live as long as this object (the TrainResult owning a temporary output_dir).
    """

    def __init__(self, checkpoint, output_dir=None, keep_alive=None):
        self.checkpoint = checkpoint
        self.output_dir = None if output_dir is None else os.fspath(output_dir)
        self._keep_alive = keep_alive

    @classmethod
    def from_result(cls, result):
        """Wrap an ``aam.api.TrainResult``."""
        return cls(result.checkpoint, result.output_dir, keep_alive=result)

    @property
    def config(self):
        return self.checkpoint.config

    def __repr__(self):
        return (f"TrainedModel(task={self.config.get('task')!r}, model_type={self.checkpoint.model_type!r}, "
                f"output_dir={self.output_dir!r})")
