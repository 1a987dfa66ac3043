"""Checkpoint files: safe loading, atomic writes, checksums, clear errors, and models of earlier versions."""
import json
import os
import pickle
import zipfile

import pandas as pd
import pytest
import torch

from aam.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, atomic_write, load_checkpoint
from aam.errors import AAMInputError
from aam.models import SequenceEncoder
from aam.models.config import EncoderConfig
from aam.record import ModelRecord, TrainingSummary
from aam.rundir import RunDirectory

from tests.conftest import MP

FORMAT_1 = os.path.join(os.path.dirname(__file__), "data", "format-1")


def _ckpt():
    torch.manual_seed(0)
    arch = EncoderConfig(embedding_dim=8, attention_heads=2, attention_layers=1, token_limit=8, max_bp=12,
                         kmer_size=2)
    record = ModelRecord(task="pretrain", architecture=arch, tokenizer={"max_bp": 12}, objective="unifrac",
                         training=TrainingSummary(history=[{"epoch": 1}]))
    weights = SequenceEncoder(arch).state_dict()
    training = {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}, "epoch": 3,
                "rng": {"torch": torch.get_rng_state(), "python": [3, list(range(5)), None]}}
    return Checkpoint(record, weights, training)


def test_round_trip_keeps_weights_record_and_training_state(tmp_path):
    path = tmp_path / "model.pt"
    ckpt = _ckpt()
    ckpt.save(path)
    back = load_checkpoint(path, expect="encoder")
    assert all(torch.equal(back.model_state[k], v) for k, v in ckpt.model_state.items())
    assert back.record.training.history == [{"epoch": 1}]
    assert back.record.aam_version and back.record.torch_version and back.record.weights_sha256
    assert back.record.architecture == ckpt.record.architecture and back.kind == "encoder"
    assert back.training_state["epoch"] == 3
    assert torch.equal(back.training_state["rng"]["torch"], torch.get_rng_state())


def test_without_training_state(tmp_path):
    path = tmp_path / "final.pt"
    _ckpt().save(path, include_training_state=False)
    assert load_checkpoint(path).training_state == {}


def test_wrong_model_kind_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    _ckpt().save(path)
    with pytest.raises(AAMInputError, match="pretrained base model, but a trained regressor or classifier"):
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
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "record": "{}", "model": {},
                "payload": Evil()}, tmp_path / "evil.pt", pickle_module=pickle)
    with pytest.raises(AAMInputError, match="refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned.txt").exists()


def test_newer_format_is_rejected_with_upgrade_hint(tmp_path):
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION + 1, "record": "{}", "model": {}},
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


def test_model_directory_has_readable_record_and_zip_weights(tmp_path):
    run = RunDirectory(tmp_path / "art")
    os.makedirs(run.path)
    run.write_model(_ckpt())
    assert zipfile.is_zipfile(run.model_file)
    config = json.load(open(run.config_file))
    assert config["format"] == FORMAT and config["task"] == "pretrain" and "model_type" not in config
    assert run.read_record().kind == "encoder" and run.read_model().kind == "encoder"
    assert run.read_record().weights_sha256 == run.read_model().record.weights_sha256


def test_models_of_format_1_load_and_give_the_same_numbers():
    from aam import api
    pre = load_checkpoint(os.path.join(FORMAT_1, "pretrained.pt"), expect="encoder")
    reg = load_checkpoint(os.path.join(FORMAT_1, "regressor.pt"), expect="predictor")
    assert pre.record.task == "pretrain" and pre.record.objective == "unifrac"
    assert reg.record.target.column == "days-since-experiment-start" and reg.record.weights_sha256 is None
    seqs = os.path.join(MP, "rep-seqs.fasta")
    got = api.predict(reg, os.path.join(MP, "table.biom"), sequences=seqs, seed=0, num_threads=1, log=print)
    want = pd.read_csv(os.path.join(FORMAT_1, "regressor-predictions.tsv"), sep="\t", index_col=0)
    pd.testing.assert_series_equal(got["prediction"], want.loc[got.index, "prediction"], rtol=1e-5,
                                   check_names=False, check_index_type=False)
    emb, _ = api.embed(pre, os.path.join(MP, "table.biom"), sequences=seqs, seed=0, num_threads=1, log=print)
    want = pd.read_csv(os.path.join(FORMAT_1, "pretrained-embeddings.tsv"), sep="\t", index_col=0)
    pd.testing.assert_frame_equal(emb.astype(float), want.loc[emb.index], rtol=1e-4, atol=1e-5,
                                  check_index_type=False)


FORMAT_2 = os.path.join(os.path.dirname(__file__), "data", "format-2")


@pytest.mark.parametrize("name", ["ensemble-regressor", "ensemble-classifier", "regressor"])
def test_models_of_format_2_load_and_give_the_same_numbers(name):
    from aam import api
    model = load_checkpoint(os.path.join(FORMAT_2, f"{name}.pt"), expect="predictor")
    got = api.predict(model, os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"), seed=0,
                      num_threads=1, log=print)
    want = pd.read_csv(os.path.join(FORMAT_2, f"{name}-predictions.tsv"), sep="\t", index_col=0)
    want.index = want.index.astype(str)
    assert list(got.columns)[:len(want.columns)] == list(want.columns)
    assert all(c.endswith("_share") for c in list(got.columns)[len(want.columns):])
    numeric = [c for c in want.columns if c != "prediction" or name != "ensemble-classifier"]
    pd.testing.assert_frame_equal(got[numeric].astype(float), want.loc[got.index, numeric].astype(float), rtol=1e-6,
                                  atol=1e-6, check_index_type=False)
    if name == "ensemble-classifier":
        assert list(got["prediction"]) == list(want.loc[got.index, "prediction"])
