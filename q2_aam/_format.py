"""File and directory formats of the AAM model artifact.

An ``AAMModel[...]`` artifact is a directory::

    model.pt                 weights + config, written by torch.save, loadable with torch.load(weights_only=True)
    config.json              the same config as readable JSON, with the "aam-checkpoint" marker
    history.tsv              one row per epoch: every loss and metric (optional)
    plots/*.png, plots/*.svg validation figures of the best epoch (optional)
    tensorboard/**/events.out.tfevents.*   TensorBoard logs of the run (optional)

Nothing in it is a pickle of Python objects: the weights file holds only tensors and plain containers, so
loading a model from a stranger never runs code. Validation at level 'min' is cheap and torch-free (file
signatures, JSON, headers); level 'max' also loads the weights with ``torch.load(weights_only=True)``, checks
every zip member's CRC, and checks that config.json and model.pt describe the same model.
"""
import json
import re
import struct
import zipfile

import qiime2.plugin.model as model
from qiime2.plugin import ValidationError

# aam.checkpoint is torch-free at import time (torch is imported inside its functions)
from aam.checkpoint import FORMAT as CHECKPOINT_MARKER, FORMAT_VERSION, MODEL_TYPES

TASKS = ("pretrain", "regression", "classification")

# keys whose values must agree between config.json and the config stored inside model.pt
_SHARED_KEYS = ("model_type", "task", "model_config", "tokenizer", "class_labels", "target_column",
                "target_transform", "categorical_encoder")


def check_config(config, where="config.json"):
    """Raise ValidationError unless `config` is an AAM checkpoint config this version can read."""
    if not isinstance(config, dict):
        raise ValidationError(f"{where} must hold a JSON object, not {type(config).__name__}.")
    if config.get("format") != CHECKPOINT_MARKER:
        raise ValidationError(f"{where} has no \"format\": \"{CHECKPOINT_MARKER}\" marker, so it was not "
                              "written by q2-aam; export the model from an AAM artifact or retrain it.")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValidationError(f"{where} uses checkpoint format {version!r}; this q2-aam reads formats up to "
                              f"{FORMAT_VERSION}. Upgrade q2-aam to read this model.")
    if config.get("model_type") not in MODEL_TYPES:
        raise ValidationError(f"{where}: \"model_type\" must be one of {', '.join(MODEL_TYPES)}; got "
                              f"{config.get('model_type')!r}.")
    if config.get("task") not in TASKS:
        raise ValidationError(f"{where}: \"task\" must be one of {', '.join(TASKS)}; got {config.get('task')!r}.")
    if not isinstance(config.get("model_config"), dict):
        raise ValidationError(f"{where} has no \"model_config\" object describing the architecture.")
    expected = "encoder" if config["task"] == "pretrain" else "predictor"
    if config["model_type"] != expected:
        raise ValidationError(f"{where}: a {config['task']} model must be an {expected}, not a "
                              f"{config['model_type']}.")
    if config["task"] == "classification":
        labels = config.get("class_labels")
        if not isinstance(labels, list) or len(labels) < 2:
            raise ValidationError(f"{where}: a classifier needs \"class_labels\" with at least 2 classes.")


class AAMConfigFormat(model.TextFileFormat):
    """config.json: the model's configuration, data summary, options, seed, device and history."""

    def _validate_(self, level):
        with self.open() as fh:
            try:
                config = json.load(fh)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise ValidationError(f"config.json is not valid JSON: {err}") from None
        check_config(config)


class AAMWeightsFormat(model.BinaryFileFormat):
    """model.pt: an AAM checkpoint written by torch.save (a zip archive of tensors and plain containers)."""

    def _validate_(self, level):
        path = str(self)
        if not zipfile.is_zipfile(path):
            raise ValidationError("model.pt is not a PyTorch checkpoint (not a zip archive written by "
                                  "torch.save); the file is damaged or is not an AAM model.")
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                bad = zf.testzip() if level == "max" else None
        except Exception as err:  # BadZipFile, but a damaged directory can raise UnicodeDecodeError and others
            raise ValidationError(f"model.pt is damaged: its zip archive cannot be read ({type(err).__name__}: "
                                  f"{err}).") from None
        if not any(n.endswith("data.pkl") for n in names):
            raise ValidationError("model.pt is a zip archive but not a PyTorch checkpoint (no data.pkl).")
        if bad is not None:
            raise ValidationError(f"model.pt is damaged: the member {bad!r} fails its checksum.")
        if level == "max":
            self._load_payload()

    def _load_payload(self):
        """The checkpoint payload, loaded safely; raises ValidationError when it is not an AAM checkpoint."""
        import torch
        try:
            payload = torch.load(str(self), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for damaged or unsafe content
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
            first = text.splitlines()[0][:300] if text else ""
            raise ValidationError("model.pt cannot be loaded with torch.load(weights_only=True) "
                                  f"({type(err).__name__}: {first}). The file is damaged or holds Python "
                                  "objects other than tensors, which AAM refuses to load.") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_MARKER:
            raise ValidationError(f"model.pt is a PyTorch file but not an AAM checkpoint (no "
                                  f"'{CHECKPOINT_MARKER}' marker).")
        version = payload.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValidationError(f"model.pt uses checkpoint format {version!r}; this q2-aam reads formats up "
                                  f"to {FORMAT_VERSION}. Upgrade q2-aam to read this model.")
        if not isinstance(payload.get("model"), dict) or not all(
                torch.is_tensor(v) for v in payload["model"].values()):
            raise ValidationError("model.pt has no model weights (a dict of tensors under 'model').")
        try:
            config = json.loads(payload.get("config"))
        except (TypeError, json.JSONDecodeError):
            raise ValidationError("model.pt has no readable configuration (a JSON string under 'config').") \
                from None
        if not isinstance(config, dict) or config.get("model_type") not in MODEL_TYPES:
            raise ValidationError("model.pt: the embedded configuration names no valid model_type.")
        return payload, config


class AAMHistoryFormat(model.TextFileFormat):
    """history.tsv: a header naming the columns (``epoch`` first or among them), then one row per epoch."""

    def _validate_(self, level):
        limit = {"min": 5, "max": None}[level]
        with self.open() as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
            if "epoch" not in header:
                raise ValidationError("history.tsv must have a header row with an 'epoch' column; got "
                                      f"{header[:6]!r}.")
            col = header.index("epoch")
            for number, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                cells = line.rstrip("\r\n").split("\t")
                if len(cells) != len(header):
                    raise ValidationError(f"history.tsv line {number} has {len(cells)} fields but the header has "
                                          f"{len(header)}.")
                try:
                    int(float(cells[col]))
                except ValueError:
                    raise ValidationError(f"history.tsv line {number}: epoch {cells[col]!r} is not a number.") \
                        from None
                if limit is not None and number - 1 >= limit:
                    break


class PNGFormat(model.BinaryFileFormat):
    """A PNG image (checked by its 8-byte signature)."""

    def _validate_(self, level):
        with self.open() as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                raise ValidationError(f"{self.path.name} is not a PNG image.")


class SVGFormat(model.TextFileFormat):
    """An SVG image (an XML text with an <svg> element near the top)."""

    def _validate_(self, level):
        with self.open() as fh:
            head = fh.read(4096)
        if "<svg" not in head:
            raise ValidationError(f"{self.path.name} is not an SVG image (no <svg> element).")


# --- TensorBoard event files: TFRecord framing --------------------------------------------------------------
# Each record: uint64 length, uint32 masked CRC-32C of the length bytes, `length` data bytes, uint32 masked
# CRC-32C of the data. Checking the framing and the CRCs proves the file is an intact TensorBoard log without
# importing TensorBoard.

def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of `data`."""
    crc = 0xFFFFFFFF
    table = _CRC32C
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The masked CRC-32C TFRecord files store."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TensorBoardEventsFormat(model.BinaryFileFormat):
    """A TensorBoard event file (TFRecord framing; 'min' checks the first records, 'max' every record)."""

    def _validate_(self, level):
        limit = {"min": 3, "max": None}[level]
        name = self.path.name
        with self.open() as fh:
            count = 0
            while limit is None or count < limit:
                header = fh.read(12)
                if not header:
                    break
                if len(header) < 12:
                    raise ValidationError(f"TensorBoard log {name} is truncated (record {count + 1}).")
                length, length_crc = struct.unpack("<QI", header)
                if masked_crc32c(header[:8]) != length_crc:
                    raise ValidationError(f"TensorBoard log {name}: record {count + 1} has a bad length checksum; "
                                          "the file is damaged or not a TensorBoard event file.")
                data = fh.read(length)
                footer = fh.read(4)
                if len(data) < length or len(footer) < 4:
                    raise ValidationError(f"TensorBoard log {name} is truncated (record {count + 1}).")
                if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                    raise ValidationError(f"TensorBoard log {name}: record {count + 1} fails its data checksum.")
                count += 1
            if count == 0:
                raise ValidationError(f"TensorBoard log {name} is empty.")


class AAMModelDirFmt(model.DirectoryFormat):
    """The AAM model artifact: safe weights, readable config, training history, figures and TensorBoard logs."""

    config = model.File("config.json", format=AAMConfigFormat)
    weights = model.File("model.pt", format=AAMWeightsFormat)
    history = model.File("history.tsv", format=AAMHistoryFormat, optional=True)
    png_plots = model.FileCollection(r"plots/[^/]+\.png", format=PNGFormat, optional=True)
    svg_plots = model.FileCollection(r"plots/[^/]+\.svg", format=SVGFormat, optional=True)
    tensorboard = model.FileCollection(r"tensorboard/(?:[^/]+/)*events\.out\.tfevents\.[^/]+",
                                       format=TensorBoardEventsFormat, optional=True)

    @png_plots.set_path_maker
    def png_plots_path_maker(self, name):
        return f"plots/{name}.png"

    @svg_plots.set_path_maker
    def svg_plots_path_maker(self, name):
        return f"plots/{name}.svg"

    @tensorboard.set_path_maker
    def tensorboard_path_maker(self, name):
        return f"tensorboard/{name}"

    def read_config(self):
        """config.json as a dict (torch-free)."""
        with open(self.path / "config.json") as fh:
            return json.load(fh)

    def _validate_(self, level):
        if level != "max":
            return
        config = self.read_config()
        _, embedded = AAMWeightsFormat(self.path / "model.pt", mode="r")._load_payload()
        for key in _SHARED_KEYS:
            if _canonical(config.get(key)) != _canonical(embedded.get(key)):
                raise ValidationError(f"config.json and model.pt disagree on {key!r}: the files come from "
                                      "different models. Keep the pair written together.")


def _canonical(value):
    return json.dumps(value, sort_keys=True, default=str)


def history_rows_to_tsv(history):
    """The history rows (list of dicts) as TSV text, columns in order of first appearance."""
    keys = []
    for row in history:
        keys += [k for k in row if k not in keys]
    if "epoch" not in keys:
        keys.insert(0, "epoch")
    lines = ["\t".join(keys)]
    for index, row in enumerate(history):
        values = []
        for k in keys:
            v = row.get(k, index + 1 if k == "epoch" else None)
            values.append("" if v is None else str(v))
        lines.append("\t".join(values))
    return "\n".join(lines) + "\n"

