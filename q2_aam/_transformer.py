"""Transformers between the model artifact's directory format and the engine's objects.

``aam.checkpoint.Checkpoint`` (weights + record) and `TrainedModel` (a checkpoint plus its training run's
history, figures and TensorBoard logs) are the views actions use; ``AAMWeightsFormat`` -> ``AAMModelDirFmt``
lets ``qiime tools import`` turn a checkpoint written by the ``aam`` command line into an artifact. The artifact
has the layout of an engine run directory (`aam.rundir.RunDirectory`), which writes and reads it. torch is
imported inside the function bodies, never when QIIME 2 loads the plugin.
"""
from aam.checkpoint import Checkpoint
from aam.rundir import RunDirectory

from q2_aam._format import AAMModelDirFmt, AAMWeightsFormat
from q2_aam._model import TrainedModel
from q2_aam.plugin_setup import plugin


def _write_model(checkpoint, run_dir=None):
    ff = AAMModelDirFmt()
    artifact = RunDirectory(str(ff))
    artifact.write_model(checkpoint)
    has_history = run_dir.copy_outputs_to(artifact) if run_dir is not None else False
    if not has_history and checkpoint.record.training.history:
        artifact.write_history(checkpoint.record.training.history)
    return ff


@plugin.register_transformer
def _1(data: Checkpoint) -> AAMModelDirFmt:
    return _write_model(data)


@plugin.register_transformer
def _2(ff: AAMModelDirFmt) -> Checkpoint:
    # model.pt is authoritative; it is read with torch.load(weights_only=True) and its checksum checked
    return RunDirectory(str(ff)).read_model()


@plugin.register_transformer
def _3(data: TrainedModel) -> AAMModelDirFmt:
    return _write_model(data.checkpoint, data.run_dir)


@plugin.register_transformer
def _4(ff: AAMModelDirFmt) -> TrainedModel:
    run_dir = RunDirectory(str(ff))
    return TrainedModel(run_dir.read_model(), run_dir, keep_alive=ff)


@plugin.register_transformer
def _5(ff: AAMWeightsFormat) -> AAMModelDirFmt:
    # `qiime tools import --input-format AAMWeightsFormat --input-path model.pt`: the optimizer state of a
    # training checkpoint is dropped, the history it carries becomes history.tsv
    from aam.checkpoint import load_checkpoint
    return _write_model(load_checkpoint(str(ff)))
