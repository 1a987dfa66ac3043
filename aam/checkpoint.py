"""AAM checkpoint files: tensors plus JSON, safe to load from strangers, written atomically.

A checkpoint is one file written by `torch.save` holding only tensors and plain containers:

    format          "aam-checkpoint"
    format_version  int (FORMAT_VERSION; formats 1 and 2 of earlier q2-aam releases are read too)
    record          JSON text of the `aam.record.ModelRecord` (format 1: "config"), with its digest
    model           the network's state_dict (the pretrained base, or the predictor)
    members         {member name: {tensor name: tensor}}: the other members of an ensemble (`aam.ensemble`),
                    stored generically (format 2 had one "forest" entry instead)
    optimizer, scheduler, rng, epoch, trainer   (training checkpoints only, for resuming; see aam.training.resume)

Format 3 keeps one digest (``record.weights_sha256``) over the format, the record (with that field empty) and every
tensor of the network and the members, so an edited record (a target's scale, a share) is found like damaged
weights; a format-3 file without it is refused. Format 2 files carry a digest of their tensors only, format 1
files none: they still load, with a one-line note.

It is loaded with ``torch.load(..., weights_only=True)``, which refuses anything but tensors and primitive
containers, so opening a checkpoint never runs code from the file. torch is imported inside the functions, so
that the plugin can name `Checkpoint` as a view type without importing torch when QIIME 2 loads plugins.
"""
import json
import os
import tempfile
from dataclasses import replace

from aam import __version__
from aam.errors import AAMInputError, preview, warn
from aam.record import TITLES, ModelRecord

FORMAT = "aam-checkpoint"
FORMAT_VERSION = 3
MODEL_KINDS = ("encoder", "predictor")
_TRAINING_KEYS = ("optimizer", "scheduler", "rng", "epoch", "trainer")


TMP_PREFIX = ".tmp-"


def format_version(container, where, what, fix):
    """The checkpoint format version of a model file's payload or config.json (a dict), after checking its marker.

    Raises AAMInputError naming `where` when the marker is missing (`what` is what `where` is instead; `fix`
    says what to pass) or the version is newer than this q2-aam reads.
    """
    if not isinstance(container, dict) or container.get("format") != FORMAT:
        raise AAMInputError(f"{where} is {what} but not an AAM checkpoint (no \"format\": \"{FORMAT}\" marker); "
                            f"{fix}")
    version = container.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AAMInputError(f"{where} uses checkpoint format {version!r}, newer than this q2-aam {__version__} "
                            f"understands ({FORMAT_VERSION}); upgrade q2-aam to read it.")
    return version


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, write):
    """Call ``write(tmp_path)`` then rename the temporary file onto `path`, so readers never see half a file.

    The file gets the permissions of any new file (0666 less the umask), not the owner-only mode of a temporary
    file, so collaborators can read models and histories as they can read everything else the user writes. A
    process killed mid-write leaves a ``.tmp-*`` file, which the next run in the directory removes
    (`aam.rundir.RunDirectory.claim`).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=os.path.basename(path), dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path, text):
    """Write `text` to `path` atomically."""
    def write(tmp):
        with open(tmp, "w") as fh:
            fh.write(text)
    atomic_write(path, write)


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


def _hash_tensors(h, tensors):
    """Feed every tensor's name, dtype, shape and bytes to `h`, in name order."""
    import torch
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def weights_digest(model_state, forest=None):
    """The format-2 digest: SHA-256 of a state dict (and a forest's arrays), every tensor in name order."""
    import hashlib
    tensors = dict(model_state)
    tensors.update({f"forest.{k}": v for k, v in (forest or {}).items()})
    h = hashlib.sha256()
    _hash_tensors(h, tensors)
    return h.hexdigest()


def model_digest(record_json, model_state, member_states):
    """The format-3 digest of a model file: its format, its record and every tensor it holds.

    Parameters
    ----------
    record_json : dict
        `ModelRecord.to_json` output; its ``weights_sha256`` (where the digest itself is kept) is left out.
    model_state : dict of str -> torch.Tensor
    member_states : dict of str -> dict of str -> torch.Tensor

    Returns
    -------
    str
        Hex SHA-256.
    """
    import hashlib
    described = {k: v for k, v in record_json.items() if k != "weights_sha256"}
    h = hashlib.sha256(f"{FORMAT}|{FORMAT_VERSION}|".encode())
    h.update(json.dumps(described, sort_keys=True, allow_nan=False).encode())
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    for member, state in sorted(member_states.items()):
        tensors.update({f"members.{member}.{k}": v for k, v in state.items()})
    _hash_tensors(h, tensors)
    return h.hexdigest()


def check_weights(record, weights, where):
    """The weights must be finite and have exactly the tensors and shapes the record's architecture builds.

    The record's sizes are first bounded by the weights present (`aam.safety.bound_architecture`), then the
    architecture is built on PyTorch's meta device, which allocates no tensor, so a record claiming a huge model
    costs no memory before it is refused.
    """
    import torch

    from aam.models import build_model
    from aam.safety import bound_architecture
    bound_architecture(record.architecture, weights, where)  # before building: modules cost memory even on meta
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(record.architecture).state_dict().items()}
    except (ValueError, TypeError, RuntimeError) as err:  # RuntimeError: sizes beyond what a tensor can hold
        raise AAMInputError(f"{where!r}: the record describes no valid architecture "
                            f"({str(err).splitlines()[0][:200]}).") from None
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != expected:
        missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
        parts = ([f"missing {preview(missing, 3)}"] if missing else []) + \
                ([f"unexpected {preview(extra, 3)}"] if extra else []) + \
                [f"{k} is {list(got[k])}, the record says {list(expected[k])}" for k in wrong[:3]]
        raise AAMInputError(f"{where!r}: the weights do not fit the architecture in the model's record ("
                            + "; ".join(parts) + "). The record and the weights come from different models, or "
                            "one of them was edited.")
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise AAMInputError(f"{where!r}: the weights hold NaN or infinite values ({preview(bad, 3)}), so the model "
                            "cannot predict anything meaningful; retrain it (a lower learning rate may help).")


class Checkpoint:
    """A model's weights, its `ModelRecord`, its ensemble members' states and (optionally) what resumes training.

    Parameters
    ----------
    record : aam.record.ModelRecord
    model_state : dict of str -> torch.Tensor
        The network's weights.
    training_state : dict, optional
        ``optimizer``, ``scheduler``, ``rng``, ``epoch`` and ``trainer`` for resuming.
    member_states : dict of str -> dict of str -> torch.Tensor, optional
        The tensors of each ensemble member but the network, by member name (``record.ensemble`` says what they
        are; `aam.ensemble.Ensemble.from_checkpoint` rebuilds the members from both).
    """

    def __init__(self, record, model_state, training_state=None, member_states=None):
        if not isinstance(record, ModelRecord):
            raise TypeError(f"record must be a ModelRecord, got {type(record).__name__}")
        self.record = record
        self.model_state = model_state
        self.training_state = training_state or {}
        self.member_states = dict(member_states or {})

    @property
    def kind(self):
        """'encoder' (pretrained base) or 'predictor' (regressor / classifier)."""
        return self.record.kind

    @property
    def task(self):
        return self.record.task

    def build_model(self):
        """The model the record describes, with these weights loaded (on CPU, in eval mode)."""
        from aam.models import build_model
        model = build_model(self.record.architecture)
        model.load_state_dict(self.model_state)
        return model.eval()

    def payload(self, include_training_state=True):
        """What `save` writes: tensors and plain containers, the record as JSON text with the file's digest.

        The digest is computed here, so `record` afterwards is the record as written (versions and digest set).
        """
        import torch
        weights = {k: v.detach().cpu() for k, v in self.model_state.items()}
        members = {name: {k: v.detach().cpu() for k, v in state.items()} for name, state in self.member_states.items()}
        record = replace(self.record, aam_version=self.record.aam_version or __version__,
                         torch_version=self.record.torch_version or torch.__version__, weights_sha256=None)
        record = replace(record, weights_sha256=model_digest(record.to_json(), weights, members))
        self.record = record
        out = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "record": json.dumps(record.to_json(), sort_keys=True, allow_nan=False), "model": weights}
        if members:
            out["members"] = members
        if include_training_state:
            out.update(_plain(self.training_state))
        return out

    def save(self, path, include_training_state=True):
        """Write atomically to `path`."""
        import torch
        payload = self.payload(include_training_state)

        def write(tmp):
            # through a file object: torch names the zip members after a path's stem, which would be the
            # temporary file's name
            with open(tmp, "wb") as fh:
                torch.save(payload, fh)
        atomic_write(path, write)


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
        Missing file, not an AAM checkpoint, written by a newer format, a damaged or altered file, or the wrong
        kind.
    """
    from aam.safety import load_torch_file
    path = os.fspath(path)
    # the file is measured (archive caps, a readable zip) before torch.load(weights_only=True) reads it
    payload = load_torch_file(path, map_location)
    return checkpoint_from_payload(payload, path, expect)


def checkpoint_from_payload(payload, where, expect=None):
    """The `Checkpoint` in a loaded payload, after checking its marker, version, digest, record and weights."""
    version = format_version(payload, repr(where), "a PyTorch file",
                             "pass a model.pt or a checkpoint written by `aam pretrain` / `aam train`.")
    weights = _tensor_dict(payload.get("model"), where, "model weights (a dict of tensors under 'model')")
    record_json = _record_json(payload, version, where)
    members = _member_states(payload, version, where)
    _check_digest(record_json, weights, members, version, where)
    record = ModelRecord.from_json(record_json, where=repr(where))
    sharded = not weights and bool((payload.get("trainer") or {}).get("sharded_dir"))
    if not sharded:  # a sharded training checkpoint keeps its weights in a torch.distributed.checkpoint folder
        check_weights(record, weights, where)
    if expect is not None and record.kind != expect:
        kinds = {"encoder": f"a {TITLES['pretrain']} (from `aam pretrain`)",
                 "predictor": "a trained regressor or classifier (from `aam train`)"}
        raise AAMInputError(f"{where!r} holds a {record.title}, but {kinds[expect]} is needed here.")
    if record.ensemble is not None or members:
        from aam.ensemble import check_member_states
        check_member_states(record, members, repr(where))
    training = {k: payload[k] for k in _TRAINING_KEYS if k in payload}
    return Checkpoint(record, weights, training, member_states=members)


def _tensor_dict(value, where, what):
    import torch
    if not isinstance(value, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in value.items()):
        raise AAMInputError(f"{where!r} holds no {what}; the file is damaged or was altered.")
    return value


def _record_json(payload, version, where):
    text = payload.get("record" if version >= 2 else "config")
    try:
        record_json = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise AAMInputError(f"{where!r} has no readable model record (JSON text).") from None
    if not isinstance(record_json, dict):
        raise AAMInputError(f"{where!r}: the model record must be a JSON object, not {type(record_json).__name__}.")
    return record_json


def _member_states(payload, version, where):
    """The ensemble members' tensors by member name (a format-2 forest becomes the member 'forest')."""
    if version >= 3:
        members = payload.get("members") or {}
        if not isinstance(members, dict):
            raise AAMInputError(f"{where!r}: its ensemble members are not stored as tensors by name; the file is "
                                "damaged or was altered.")
        return {name: _tensor_dict(state, where, f"tensors for the ensemble member {name!r}")
                for name, state in members.items()}
    forest = payload.get("forest")
    return {} if forest is None else {"forest": _tensor_dict(forest, where, "random forest arrays")}


def _check_digest(record_json, weights, members, version, where):
    """Format 3: the digest must be there and cover the record and every tensor. Older formats: a note."""
    digest = record_json.get("weights_sha256")
    if version >= 3:
        if not isinstance(digest, str) or not digest:
            raise AAMInputError(f"{where!r} has no digest in its record, which every model file of format 3 carries; "
                                "the file was altered. Use an intact copy of the model.")
        if model_digest(record_json, weights, members) != digest:
            raise AAMInputError(f"{where!r}: the record or the weights do not match the checksum recorded when the "
                                "model was written (its digest covers both); the file is damaged or was altered. Use "
                                "an intact copy of the model.")
        return
    if digest is not None and weights_digest(weights, members.get("forest")) != digest:
        raise AAMInputError(f"{where!r}: the weights do not match the checksum recorded when the model was "
                            "written; the file is damaged or was altered. Use an intact copy of the model.")
    warn(f"{where!r} is a model file of checkpoint format {version} (an earlier q2-aam): "
         + ("its checksum covers the weights but not the record" if digest is not None else "it carries no checksum")
         + "; it loads as written. Save it again (e.g. fine-tune or re-export it) to get format 3.", stacklevel=4)
