"""File and directory formats of the AAM model artifact.

An ``AAMModel[...]`` artifact is a directory::

    model.pt                 weights + model record, written by torch.save, loadable with torch.load(weights_only=True)
    config.json              the same record as readable JSON, with the "aam-checkpoint" marker
    history.tsv              one row per epoch: every loss and metric (optional)
    plots/*.png, plots/*.svg validation figures of the best epoch (optional)
    tensorboard/**/events.out.tfevents.*   TensorBoard logs of the run (optional)

Nothing in it is a pickle of Python objects: the weights file holds only tensors and plain containers, so
loading a model from a stranger never runs code. Validation at level 'min' is cheap and torch-free (file
signatures, JSON, headers); level 'max' also loads the weights with ``torch.load(weights_only=True)``, checks
every zip member's CRC and the weights' checksum, and checks that config.json and model.pt describe the same
model. The layout is the engine's run-directory layout (`aam.rundir.RunDirectory`).
"""
import json
import re
import struct
import zipfile

import qiime2.plugin.model as model
from qiime2.plugin import ValidationError

# torch-free at import time (torch is imported inside their functions)
from aam.errors import AAMInputError
from aam.rundir import RunDirectory, record_from_config


def check_config(config, where="config.json"):
    """The `aam.record.ModelRecord` of a parsed config.json; ValidationError unless this version reads it."""
    try:
        return record_from_config(config, where)
    except AAMInputError as err:
        raise ValidationError(str(err)) from None


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
        from aam.safety import check_archive
        try:
            check_archive(path, "model.pt")  # decompression-bomb caps, before testzip or torch unpack anything
        except AAMInputError as err:
            raise ValidationError(str(err)) from None
        if bad is not None:
            raise ValidationError(f"model.pt is damaged: the member {bad!r} fails its checksum.")
        if level == "max":
            self._load_checkpoint()

    def _load_checkpoint(self):
        """The checkpoint, loaded safely and checked; raises ValidationError when it is not an intact AAM model."""
        import torch

        from aam.safety import check_archive, require_safe_torch
        try:
            require_safe_torch()
            check_archive(str(self), "model.pt")
        except AAMInputError as err:
            raise ValidationError(str(err)) from None
        try:
            payload = torch.load(str(self), map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for damaged or unsafe content
            text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()
            first = text.splitlines()[0][:300] if text else ""
            raise ValidationError("model.pt cannot be loaded with torch.load(weights_only=True) "
                                  f"({type(err).__name__}: {first}). The file is damaged or holds Python "
                                  "objects other than tensors, which AAM refuses to load.") from None
        from aam.checkpoint import checkpoint_from_payload
        try:
            return checkpoint_from_payload(payload, "model.pt")
        except AAMInputError as err:
            raise ValidationError(str(err)) from None


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

    config = model.File(RunDirectory.CONFIG, format=AAMConfigFormat)
    weights = model.File(RunDirectory.MODEL, format=AAMWeightsFormat)
    history = model.File(RunDirectory.HISTORY, format=AAMHistoryFormat, optional=True)
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

    def read_record(self):
        """The `aam.record.ModelRecord` of config.json (torch-free); ValidationError when it is not one."""
        try:
            return RunDirectory(str(self.path)).read_record()
        except AAMInputError as err:
            raise ValidationError(str(err)) from None

    def _validate_(self, level):
        if level != "max":
            return
        config = RunDirectory(str(self.path)).read_config()
        embedded = AAMWeightsFormat(self.path / RunDirectory.MODEL, mode="r")._load_checkpoint().record.to_json()
        described = check_config(config).to_json()
        if _canonical(described) != _canonical(embedded):
            keys = sorted(k for k in set(described) | set(embedded)
                          if _canonical(described.get(k)) != _canonical(embedded.get(k)))
            raise ValidationError(f"config.json and model.pt disagree on {', '.join(map(repr, keys))}: the files "
                                  "come from different models. Keep the pair written together.")


def _canonical(value):
    return json.dumps(value, sort_keys=True, default=str)

