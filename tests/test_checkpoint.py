"""Checkpoint files: safe loading, atomic writes, clear errors."""
import os
import pickle
import zipfile

import pytest
import torch

from aam.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, atomic_write, load_checkpoint
from aam.errors import AAMInputError


def _ckpt():
    state = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2)}
    config = {"model_type": "encoder", "model_config": {"embedding_dim": 3}, "history": [{"epoch": 1}]}
    training = {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "epoch": 3,
                "rng": {"torch": torch.get_rng_state(), "python": [3, list(range(5)), None]}}
    return Checkpoint(config, state, training)


def test_round_trip_keeps_weights_config_and_training_state(tmp_path):
    path = tmp_path / "model.pt"
    _ckpt().save(path)
    back = load_checkpoint(path, expect="encoder")
    assert torch.equal(back.model_state["w"], torch.arange(6.0).reshape(2, 3))
    assert back.config["history"] == [{"epoch": 1}]
    assert back.config["aam_version"] and back.config["torch_version"]
    assert back.training_state["epoch"] == 3
    assert torch.equal(back.training_state["rng"]["torch"], torch.get_rng_state())


def test_without_training_state(tmp_path):
    path = tmp_path / "final.pt"
    _ckpt().save(path, include_training_state=False)
    assert load_checkpoint(path).training_state == {}


def test_wrong_model_type_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    _ckpt().save(path)
    with pytest.raises(AAMInputError, match="pretrained encoder.*trained predictor .* is needed"):
        load_checkpoint(path, expect="predictor")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(AAMInputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(AAMInputError, match="not a readable AAM checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "plain.pt")
    with pytest.raises(AAMInputError, match="not an AAM checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_files_with_code_objects_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "config": "{}", "model": {},
                "payload": Evil()}, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(AAMInputError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned.txt").exists()


def test_newer_format_is_rejected_with_upgrade_hint(tmp_path):
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1, "config": "{}", "model": {}},
               tmp_path / "new.pt")
    with pytest.raises(AAMInputError, match="upgrade"):
        load_checkpoint(tmp_path / "new.pt")


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def failing(tmp):
        open(tmp, "w").write("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_write_dir_has_readable_config_and_zip_weights(tmp_path):
    _ckpt().write_dir(tmp_path / "art")
    assert zipfile.is_zipfile(tmp_path / "art" / "model.pt")
    import json
    assert json.load(open(tmp_path / "art" / "config.json"))["model_type"] == "encoder"
    assert Checkpoint.read_dir(tmp_path / "art").model_type == "encoder"
