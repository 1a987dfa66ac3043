"""AAM checkpoints: tensors plus JSON, safe to load from strangers, written atomically.

A checkpoint is one file written by `torch.save` holding only tensors and plain containers:

    format          "aam-checkpoint"
    format_version  int (FORMAT_VERSION)
    config          JSON text: model type and config, tokenizer, categorical encoder, target transform, class
                    labels, data and training settings (seed and device actually used), history, versions
    model           model state_dict
    optimizer, scheduler, rng, epoch   (training checkpoints only, for resuming)

It is loaded with ``torch.load(..., weights_only=True)``, which refuses anything but tensors and primitive
containers, so opening a checkpoint never runs code from the file. The plugin stores the same config JSON and
weights in its model artifact. torch is imported inside the functions so that the plugin can name `Checkpoint`
as a view type without importing torch when QIIME 2 loads plugins.
"""
import json
import os
import tempfile

from aam import __version__
from aam.errors import AAMInputError

FORMAT = "aam-checkpoint"
FORMAT_VERSION = 1
MODEL_TYPES = ("encoder", "predictor")


def atomic_write(path, write):
    """Call ``write(tmp_path)`` then rename the temporary file onto `path`, so readers never see half a file."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _plain(obj):
    """Make RNG states and numpy values safe for weights_only loading (lists, ints, floats, str, tensors)."""
    import torch
    if isinstance(obj, dict):
        # integer keys stay integers: optimizer state is keyed by parameter index, and string keys would make
        # load_state_dict silently start the moments from zero
        return {(k if isinstance(k, (int, str)) else str(k)): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and not torch.is_tensor(obj):
        return obj.tolist()
    return obj


class Checkpoint:
    """The content of a checkpoint: the config dict, the model weights and (optionally) training state.

    Parameters
    ----------
    config : dict
        JSON-serializable; must contain ``model_type`` ('encoder' or 'predictor') and ``model_config``.
    model_state : dict of str -> torch.Tensor
    training_state : dict, optional
        ``optimizer``, ``scheduler``, ``rng`` and ``epoch`` for resuming.
    """

    def __init__(self, config, model_state, training_state=None):
        if config.get("model_type") not in MODEL_TYPES:
            raise ValueError(f"config['model_type'] must be one of {MODEL_TYPES}")
        self.config = config
        self.model_state = model_state
        self.training_state = training_state or {}

    @property
    def model_type(self):
        return self.config["model_type"]

    def build_model(self):
        """The model described by the config, with these weights loaded (on CPU, in eval mode)."""
        from aam.models import build_model
        model = build_model(self.config["model_config"])
        model.load_state_dict(self.model_state)
        return model.eval()

    def save(self, path, include_training_state=True):
        """Write atomically to `path`."""
        import torch
        cfg = dict(self.config)
        cfg.setdefault("aam_version", __version__)
        cfg.setdefault("torch_version", torch.__version__)
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
                   "config": json.dumps(cfg, sort_keys=True, default=_json_default),
                   "model": {k: v.detach().cpu() for k, v in self.model_state.items()}}
        if include_training_state:
            payload.update(_plain(self.training_state))
        def write(tmp):
            # through a file object: torch names the zip members after a path's stem, which would be the
            # temporary file's name
            with open(tmp, "wb") as fh:
                torch.save(payload, fh)
        atomic_write(path, write)

    def write_dir(self, directory):
        """Write ``model.pt`` (weights + config, no optimizer state) and a readable ``config.json``.

        This is the layout of the QIIME 2 model artifact; config.json can be read without torch.
        """
        os.makedirs(directory, exist_ok=True)
        self.save(os.path.join(directory, "model.pt"), include_training_state=False)
        text = json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **self.config}, indent=1,
                          sort_keys=True, default=_json_default)
        atomic_write(os.path.join(directory, "config.json"), lambda tmp: open(tmp, "w").write(text))

    @classmethod
    def read_dir(cls, directory, expect=None):
        """Load what `write_dir` wrote (the weights file is authoritative)."""
        return load_checkpoint(os.path.join(directory, "model.pt"), expect=expect)


def _json_default(obj):
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def load_checkpoint(path, expect=None, map_location="cpu"):
    """Read a checkpoint without executing anything from the file.

    Parameters
    ----------
    path : str
    expect : {'encoder', 'predictor'}, optional
        Fail clearly when the checkpoint holds the other kind of model.
    map_location : str or torch.device

    Returns
    -------
    Checkpoint

    Raises
    ------
    AAMInputError
        Missing file, not an AAM checkpoint, written by a newer format, or the wrong model type.
    """
    import torch
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise AAMInputError(f"checkpoint {path!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for foreign or unsafe content
        raise AAMInputError(
            f"{path!r} is not a readable AAM checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "AAM loads only tensors and plain data; files holding Python objects are refused.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AAMInputError(f"{path!r} is a PyTorch file but not an AAM checkpoint (no '{FORMAT}' marker); "
                            "pass a best_model.pt or final_model.pt written by `aam pretrain` / `aam train`.")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AAMInputError(f"{path!r} uses checkpoint format {version}, newer than this aam {__version__} "
                            f"understands ({FORMAT_VERSION}); upgrade q2-aam to read it.")
    config = json.loads(payload["config"])
    if expect is not None and config.get("model_type") != expect:
        kinds = {"encoder": "a pretrained encoder (from `aam pretrain`)",
                 "predictor": "a trained predictor (from `aam train`)"}
        raise AAMInputError(f"{path!r} holds {kinds.get(config.get('model_type'), config.get('model_type'))}, "
                            f"but {kinds[expect]} is needed here.")
    training = {k: payload[k] for k in ("optimizer", "scheduler", "rng", "epoch", "trainer") if k in payload}
    return Checkpoint(config, payload["model"], training)
