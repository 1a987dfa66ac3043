"""aam.safetensors_file: round trips, and every malformed header refused in one message before any tensor."""
import json
import struct

import pytest
import torch

from aam import safetensors_file as st
from aam.errors import AAMInputError


def _tensors():
    return {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1.5], dtype=torch.bfloat16),
            "ids": torch.tensor([3, -1], dtype=torch.int64), "mask": torch.tensor([True, False]),
            "empty": torch.zeros(0, 4), "scalar": torch.tensor(2.0, dtype=torch.float64)}


def test_round_trip_keeps_every_tensor_and_the_metadata(tmp_path):
    record = json.dumps({"task": "regression", "architecture": {"embedding_dim": 16}})
    st.save(tmp_path / "m.safetensors", _tensors(), {"record": record})
    tensors, metadata = st.load(tmp_path / "m.safetensors")
    assert metadata == {"record": record} and st.is_safetensors(tmp_path / "m.safetensors")
    for name, t in _tensors().items():
        assert tensors[name].dtype == t.dtype and torch.equal(tensors[name], t), name


def _file(tmp_path, header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
BAD = {
    "header-length-huge": (None, b"", struct.pack("<Q", 2 ** 63) + b"{}", "header claims"),
    "header-not-json": (None, b"", b"{not json", "not JSON"),
    "header-a-list": ([1, 2], b"", None, "not a JSON object"),
    "duplicate-names": (None, bytes(8), b'{"a":' + json.dumps(F32).encode() + b',"a":' + json.dumps(F32).encode()
                        + b"}", "duplicate names"),
    "metadata-not-strings": ({"__metadata__": {"record": 3}}, b"", None, "map of strings"),
    "unknown-dtype": ({"a": dict(F32, dtype="F128")}, bytes(8), None, "unknown dtype"),
    "negative-shape": ({"a": dict(F32, shape=[-2])}, bytes(8), None, "non-negative"),
    "offsets-too-short": ({"a": dict(F32, data_offsets=[0, 4])}, bytes(8), None, "spans bytes"),
    "offsets-past-the-end": ({"a": dict(F32, data_offsets=[8, 16])}, bytes(8), None, "gap or an overlap"),
    "overlap": ({"a": F32, "b": F32}, bytes(8), None, "gap or an overlap"),
    "trailing-bytes": ({"a": F32}, bytes(12), None, "holds 12"),
    "huge-shape": ({"a": dict(F32, shape=[2 ** 40, 2 ** 40])}, bytes(8), None, "spans bytes"),
    "extra-key": ({"a": dict(F32, code="os.system")}, bytes(8), None, "dtype, shape and data_offsets"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_files_are_refused_in_one_message(case, tmp_path):
    header, data, raw, needle = BAD[case]
    if case == "header-length-huge":
        path = tmp_path / "bad.safetensors"
        path.write_bytes(raw)
    else:
        path = _file(tmp_path, header, data, raw)
    with pytest.raises(AAMInputError) as caught:
        st.load(path)
    text = str(caught.value)
    assert needle in text and "not a valid safetensors model file" in text and "\n" not in text, text


def test_a_torch_zip_is_not_taken_for_safetensors(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "m.pt")
    assert not st.is_safetensors(tmp_path / "m.pt")
