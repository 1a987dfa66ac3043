"""The engine end to end on the bundled real slices, through the `aam` CLI: pretrain -> train -> predict.

Learning is shown, not assumed: on a fixed seed the UniFrac loss falls during a short pretraining, a regressor
fits its training samples to a stated R^2, and a classifier separates body sites.
"""
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from aam import cli
from aam.checkpoint import load_checkpoint
from aam.evaluation.metrics import regression_metrics
from tests.conftest import MP, TINY

TABLE, SEQS, TREE = f"{MP}/table.biom", f"{MP}/rep-seqs.fasta", f"{MP}/tree.nwk"
METADATA = f"{MP}/sample-metadata.tsv"
FLAGS = []
for key, value in TINY.items():
    FLAGS += [f"--{key.replace('_', '-')}", str(value)]


def run(*args):
    assert cli.main([str(a) for a in args]) == 0


def metadata():
    md = pd.read_csv(METADATA, sep="\t", index_col=0, dtype=str)
    return md[~md.index.str.startswith("#")]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain")
    run("pretrain", "--table", TABLE, "--sequences", SEQS, "--tree", TREE, "--output-dir", out,
        "--epochs", 10, "--lr", 1e-3, "--no-resample-each-epoch", *FLAGS)
    return out


def history(out):
    return pd.read_csv(os.path.join(out, "history.tsv"), sep="\t")


def test_pretraining_learns_unifrac_and_writes_its_outputs(pretrained):
    h = history(pretrained)
    # the UniFrac loss falls clearly during a short pretraining on a fixed seed
    assert h["train/unifrac_loss"].iloc[-3:].mean() < 0.6 * h["train/unifrac_loss"].iloc[0]
    assert h["train/nuc_accuracy"].iloc[-1] > h["train/nuc_accuracy"].iloc[0]
    for name in ("model.pt", "checkpoints/best_model.pt", "checkpoints/last_checkpoint.pt",
                 "checkpoints/final_model.pt", "plots/distance_fit_best.png", "plots/distance_fit_best.svg"):
        assert os.path.getsize(os.path.join(pretrained, name)) > 0, name
    events = os.listdir(os.path.join(pretrained, "tensorboard"))
    assert any(e.startswith("events.out.tfevents") for e in events)
    ckpt = load_checkpoint(os.path.join(pretrained, "model.pt"), expect="encoder")
    assert ckpt.record.seed == 42 and ckpt.record.device == "cpu"


def test_frozen_fine_tuning_keeps_the_base_and_predicts_every_sample(pretrained, tmp_path):
    out = tmp_path / "train"
    run("train", "--table", TABLE, "--sequences", SEQS, "--metadata", METADATA, "--metadata-column",
        "days-since-experiment-start", "--pretrained-encoder", pretrained / "model.pt", "--freeze-base",
        "--output-dir", out, "--epochs", 4, "--lr", 3e-3, *FLAGS)
    base = load_checkpoint(pretrained / "model.pt").model_state
    tuned = load_checkpoint(out / "model.pt", expect="predictor").model_state
    for k, v in base.items():
        assert torch.equal(tuned["base." + k], v), k
    assert os.path.exists(out / "plots" / "pred_vs_actual_best.png")
    run("predict", "--table", TABLE, "--sequences", SEQS, "--model", out / "model.pt", "--output",
        tmp_path / "pred.tsv")
    pred = pd.read_csv(tmp_path / "pred.tsv", sep="\t", index_col=0)
    assert len(pred) == 16 and np.isfinite(pred["prediction"]).all()
    # predictions are in days, not in the normalized training scale
    assert pred["prediction"].between(-50, 250).all() and pred["prediction"].max() > 2


def test_weight_averaging_keeps_the_averaged_weights_it_scored(pretrained, tmp_path):
    from aam.training.ema import WeightAverage
    # the average itself: an exponential moving average with a short warm-up, swapped in and out exactly
    layer = torch.nn.Linear(2, 1)
    avg = WeightAverage(layer, decay=0.9)
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.fill_(1.0)
    avg.update()                                   # warm-up decay min(0.9, 2 / 11)
    want = start * (2 / 11) + 1.0 * (9 / 11)
    with avg.swapped_in():
        torch.testing.assert_close(layer.weight.detach(), want)
    assert torch.equal(layer.weight.detach(), torch.ones_like(start))  # raw weights back for training
    # through the CLI, one epoch (so it is the best): without averaging the kept model is the raw final weights,
    # with it the averaged ones
    for ema in (0, 1):
        out = tmp_path / f"ema{ema}"
        run("train", "--table", TABLE, "--sequences", SEQS, "--metadata", METADATA, "--metadata-column",
            "days-since-experiment-start", "--pretrained-encoder", pretrained / "model.pt", "--ema-epochs", ema,
            "--output-dir", out, "--epochs", 1, "--ensemble", "none", *FLAGS)
        kept = load_checkpoint(out / "model.pt", expect="predictor")
        raw = load_checkpoint(out / "checkpoints" / "final_model.pt").model_state
        assert kept.record.options["ema_epochs"] == ema
        head = [k for k in raw if not k.startswith("base.")]
        same = [torch.equal(kept.model_state[k], raw[k]) for k in head]
        assert head and (all(same) if ema == 0 else not any(same)), ema
        assert all(torch.equal(kept.model_state[k], raw[k]) for k in raw if k.startswith("base."))  # frozen


def test_regressor_fits_its_training_samples(pretrained, tmp_path):
    out = tmp_path / "reg"
    run("train", "--table", TABLE, "--sequences", SEQS, "--metadata", METADATA, "--metadata-column",
        "days-since-experiment-start", "--pretrained-encoder", pretrained / "model.pt", "--no-freeze-base",
        "--output-dir", out, "--epochs", 60, "--lr", 3e-3, "--validation-fraction", 0, "--dropout", 0,
        "--no-resample-each-epoch", "--patience", 60, *FLAGS)
    run("predict", "--table", TABLE, "--sequences", SEQS, "--model", out / "model.pt", "--output",
        tmp_path / "pred.tsv")
    pred = pd.read_csv(tmp_path / "pred.tsv", sep="\t", index_col=0)
    y = metadata().loc[pred.index, "days-since-experiment-start"].astype(float)
    r2 = regression_metrics(y.to_numpy(), pred["prediction"].to_numpy())["r2"]
    assert r2 > 0.6, r2


def test_classifier_separates_body_sites(pretrained, tmp_path):
    out = tmp_path / "clf"
    run("train", "--table", TABLE, "--sequences", SEQS, "--metadata", METADATA, "--metadata-column", "body-site",
        "--classifier", "--pretrained-encoder", pretrained / "model.pt", "--no-freeze-base", "--output-dir", out,
        "--epochs", 40,
        "--patience", 40, "--lr", 3e-3, "--validation-fraction", 0, "--no-resample-each-epoch", *FLAGS)
    run("predict", "--table", TABLE, "--sequences", SEQS, "--model", out / "model.pt", "--output",
        tmp_path / "pred.tsv")
    pred = pd.read_csv(tmp_path / "pred.tsv", sep="\t", index_col=0)
    truth = metadata().loc[pred.index, "body-site"]
    assert (pred["prediction"] == truth).mean() >= 0.8
    probs = pred[[c for c in pred.columns if c.startswith("probability_")]]
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    # a schedule that does not depend on the planned number of epochs, so "2 epochs, then resume to 3" is the
    # same run as "3 epochs" interrupted after the second
    common = ["pretrain", "--table", TABLE, "--sequences", SEQS, "--tree", TREE, "--lr", 1e-3,
              "--scheduler", "plateau", *FLAGS]
    run(*common, "--epochs", 3, "--output-dir", tmp_path / "straight")
    run(*common, "--epochs", 2, "--output-dir", tmp_path / "first")
    run(*common, "--epochs", 3, "--output-dir", tmp_path / "resumed", "--resume",
        tmp_path / "first" / "checkpoints" / "last_checkpoint.pt")
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last_checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last_checkpoint.pt")
    assert a.training_state["epoch"] == b.training_state["epoch"] == 3
    for k, v in a.model_state.items():
        torch.testing.assert_close(b.model_state[k], v, rtol=1e-4, atol=1e-5, msg=k)


def test_cli_reports_bad_input_in_one_line(tmp_path):
    env = dict(os.environ)
    env.pop("AAM_DEBUG", None)
    res = subprocess.run([sys.executable, "-m", "aam.cli", "pretrain", "--table", TABLE, "--tree", TREE,
                          "--output-dir", str(tmp_path)], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert "error:" in res.stderr and "--sequences" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "aam.cli", "train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--freeze-base" in res.stdout and "(default: 0.001)" in res.stdout
