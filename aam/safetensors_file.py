"""Model files in the safetensors layout: tensors behind one bounded JSON header, no zip, no pickle.

The layout (https://huggingface.co/docs/safetensors) is::

    8 bytes      N, the header's length (unsigned little-endian)
    N bytes      JSON: {"__metadata__": {str: str}, name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}}
    the rest     every tensor's bytes, little-endian, at offsets [b, e) from the start of this buffer

Reading one needs neither an unpickler nor a decompressor, so two classes of attack on today's ``torch.save``
files, code in a pickle and a decompression bomb, cannot occur at all; what remains is checked here before a byte
of tensor data is touched: the header is at most `MAX_HEADER_BYTES`, is one JSON object without duplicate names,
every entry has a known dtype, a non-negative shape and offsets whose length is exactly the shape's bytes, and the
tensors tile the data buffer exactly (no gap, no overlap, nothing past the end of the file). The string metadata
holds the model record (JSON text), so a model file is one self-describing file, readable by the ``safetensors``
library and Hugging Face tools as well.

This module reads and writes such files with the standard library and torch alone (no new dependency); which
payload goes into one is the checkpoint format's business (`aam.checkpoint`).
"""
import json
import math
import os
import struct

from aam.errors import AAMInputError

#: the largest header accepted (the format's own reference reader allows 100 MB; an AAM record is kilobytes, a
#: forest's feature keys a few MB)
MAX_HEADER_BYTES = 64 * 1024 ** 2
METADATA = "__metadata__"
# dtype name -> (torch dtype name, bytes per element)
DTYPES = {"F64": ("float64", 8), "F32": ("float32", 4), "F16": ("float16", 2), "BF16": ("bfloat16", 2),
          "I64": ("int64", 8), "I32": ("int32", 4), "I16": ("int16", 2), "I8": ("int8", 1), "U8": ("uint8", 1),
          "BOOL": ("bool", 1)}


def _refuse(where, problem):
    raise AAMInputError(f"{where!r} is not a valid safetensors model file: {problem}; the file is damaged or was "
                        "crafted. Use an intact copy of the model.")


def _no_duplicates(pairs):
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate names {sorted({n for n in names if names.count(n) > 1})[:3]}")
    return dict(pairs)


def read_header(fh, file_size, where):
    """The header of an open safetensors file, checked: (entries by name, metadata dict, data start offset)."""
    head = fh.read(8)
    if len(head) != 8:
        _refuse(where, "it is shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or n > file_size - 8:
        _refuse(where, f"its header claims {n:,} bytes (at most {MAX_HEADER_BYTES:,}, and within the file)")
    try:
        header = json.loads(fh.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as err:
        _refuse(where, f"its header is not JSON ({str(err)[:120]})")
    if not isinstance(header, dict):
        _refuse(where, "its header is not a JSON object")
    metadata = header.pop(METADATA, {}) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        _refuse(where, "its metadata is not a map of strings to strings")
    return header, metadata, 8 + n


def _check_entry(name, entry, where):
    """(begin, end, dtype name, shape) of one header entry, after checking it."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        _refuse(where, f"tensor {name!r} is not described by dtype, shape and data_offsets")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPES:
        _refuse(where, f"tensor {name!r} has the unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        _refuse(where, f"tensor {name!r} has the shape {shape!r}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool)
                                                                    for o in offsets)):
        _refuse(where, f"tensor {name!r} has the offsets {offsets!r}, not two integers")
    begin, end = offsets
    if begin < 0 or end < begin or end - begin != math.prod(shape) * DTYPES[dtype][1]:
        _refuse(where, f"tensor {name!r} spans bytes {begin}..{end}, not the {math.prod(shape) * DTYPES[dtype][1]:,} "
                       f"its {dtype} shape {shape} needs")
    return begin, end, dtype, shape


def check_layout(header, data_bytes, where):
    """Every entry checked, and the tensors tiling the data buffer of `data_bytes` exactly; entries by offset."""
    entries = sorted((_check_entry(name, entry, where) + (name,) for name, entry in header.items()),
                     key=lambda e: (e[0], e[1]))
    position = 0
    for begin, end, _, _, name in entries:
        if begin != position:
            _refuse(where, f"tensor {name!r} starts at byte {begin} of the data, where {position} was expected (a gap "
                           "or an overlap)")
        position = end
    if position != data_bytes:
        _refuse(where, f"its tensors cover {position:,} bytes of data, but the file holds {data_bytes:,}")
    return entries


def load(path, where=None):
    """Read a safetensors file: (tensors by name, metadata), every check passed before any tensor is built.

    Parameters
    ----------
    path : str or os.PathLike
    where : str, optional
        How messages name the file (default: the path).

    Returns
    -------
    tensors : dict of str -> torch.Tensor
        CPU tensors owning their memory.
    metadata : dict of str -> str

    Raises
    ------
    AAMInputError
        The file is missing or is not a well-formed safetensors file.
    """
    import torch
    path = os.fspath(path)
    where = where or path
    if not os.path.isfile(path):
        raise AAMInputError(f"model file {path!r} does not exist")
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        header, metadata, start = read_header(fh, size, where)
        entries = check_layout(header, size - start, where)
        data = bytearray(fh.read())
    if len(data) != size - start:
        _refuse(where, "it changed while it was read")
    tensors = {}
    for begin, end, dtype, shape, name in entries:
        torch_dtype = getattr(torch, DTYPES[dtype][0])
        flat = torch.frombuffer(data, dtype=torch_dtype, count=math.prod(shape), offset=begin) if end > begin \
            else torch.empty(0, dtype=torch_dtype)
        tensors[name] = flat.reshape(shape).clone()
    return tensors, metadata


def dumps(tensors, metadata=None):
    """The bytes of a safetensors file holding `tensors` (by name, in name order) and string `metadata`."""
    import torch
    names = {v[0]: k for k, v in DTYPES.items()}
    header, chunks, position = {}, [], 0
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise TypeError("safetensors metadata maps strings to strings")
        header[METADATA] = dict(metadata)
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        kind = names.get(str(t.dtype).replace("torch.", ""))
        if kind is None:
            raise TypeError(f"tensor {name!r} has the dtype {t.dtype}, which this writer does not store")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [position, position + len(raw)]}
        chunks.append(raw)
        position += len(raw)
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as the reference writer does
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save(path, tensors, metadata=None):
    """Write `tensors` and `metadata` to `path` atomically (see `aam.checkpoint.atomic_write`)."""
    from aam.checkpoint import atomic_write
    data = dumps(tensors, metadata)

    def write(tmp):
        with open(tmp, "wb") as fh:
            fh.write(data)
    atomic_write(path, write)


def is_safetensors(path):
    """Whether a file starts like a safetensors file (a plausible header length, then '{'); zips start with 'PK'."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return False
    return len(head) == 9 and struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES and head[8:9] == b"{"
