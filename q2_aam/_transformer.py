"""Transformers between the model artifact's directory format and the engine's objects.

``aam.checkpoint.Checkpoint`` (weights + config) and `TrainedModel` (a checkpoint plus its training run's
history, figures and TensorBoard logs) are the views actions use; ``AAMWeightsFormat`` -> ``AAMModelDirFmt``
lets ``qiime tools import`` turn a checkpoint written by the ``aam`` command line into an artifact. torch is
imported inside the function bodies, never when QIIME 2 loads the plugin.
"""
import json
import math
import os
import shutil

from aam.checkpoint import FORMAT as CHECKPOINT_MARKER, FORMAT_VERSION, Checkpoint

from q2_aam._format import AAMModelDirFmt, AAMWeightsFormat, history_rows_to_tsv
from q2_aam._model import TrainedModel
from q2_aam.plugin_setup import plugin


def _plain(value):
    """JSON-safe copy: numpy values to Python, non-finite floats to None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _config_json(checkpoint):
    import torch

    from aam import __version__
    config = dict(checkpoint.config)
    config.setdefault("aam_version", __version__)
    config.setdefault("torch_version", torch.__version__)
    config["format"] = CHECKPOINT_MARKER
    config["format_version"] = FORMAT_VERSION
    return json.dumps(_plain(config), indent=1, sort_keys=True, allow_nan=False)


def _copy_run_files(source, root):
    """history.tsv, plots/*.png|svg and the TensorBoard event files of a training output directory."""
    copied_history = False
    history = os.path.join(source, "history.tsv")
    if os.path.isfile(history):
        shutil.copyfile(history, os.path.join(root, "history.tsv"))
        copied_history = True
    plots = os.path.join(source, "plots")
    if os.path.isdir(plots):
        for name in sorted(os.listdir(plots)):
            if name.endswith((".png", ".svg")) and not name.startswith("."):
                os.makedirs(os.path.join(root, "plots"), exist_ok=True)
                shutil.copyfile(os.path.join(plots, name), os.path.join(root, "plots", name))
    tb = os.path.join(source, "tensorboard")
    if os.path.isdir(tb):
        for folder, _, files in os.walk(tb):
            for name in sorted(files):
                if not name.startswith("events.out.tfevents."):
                    continue
                rel = os.path.relpath(os.path.join(folder, name), source)
                dest = os.path.join(root, rel)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copyfile(os.path.join(folder, name), dest)
    return copied_history


def _write_model(checkpoint, source_dir=None):
    ff = AAMModelDirFmt()
    root = str(ff)
    checkpoint.save(os.path.join(root, "model.pt"), include_training_state=False)
    with open(os.path.join(root, "config.json"), "w") as fh:
        fh.write(_config_json(checkpoint))
    has_history = False
    if source_dir is not None and os.path.isdir(source_dir):
        has_history = _copy_run_files(source_dir, root)
    if not has_history and checkpoint.config.get("history"):
        with open(os.path.join(root, "history.tsv"), "w") as fh:
            fh.write(history_rows_to_tsv(checkpoint.config["history"]))
    return ff


@plugin.register_transformer
def _1(data: Checkpoint) -> AAMModelDirFmt:
    return _write_model(data)


@plugin.register_transformer
def _2(ff: AAMModelDirFmt) -> Checkpoint:
    # model.pt is authoritative; it is read with torch.load(weights_only=True)
    return Checkpoint.read_dir(str(ff))


@plugin.register_transformer
def _3(data: TrainedModel) -> AAMModelDirFmt:
    return _write_model(data.checkpoint, data.output_dir)


@plugin.register_transformer
def _4(ff: AAMModelDirFmt) -> TrainedModel:
    # the artifact directory has the layout of a training output directory (history.tsv, plots/, tensorboard/)
    return TrainedModel(Checkpoint.read_dir(str(ff)), output_dir=str(ff), keep_alive=ff)


@plugin.register_transformer
def _5(ff: AAMWeightsFormat) -> AAMModelDirFmt:
    # `qiime tools import --input-format AAMWeightsFormat --input-path best_model.pt`: the optimizer state of a
    # training checkpoint is dropped, the history it carries becomes history.tsv
    from aam.checkpoint import load_checkpoint
    return _write_model(load_checkpoint(str(ff)))
