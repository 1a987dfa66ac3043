"""The model card's validation score carries its 95% interval: computed from the best epoch's validation
predictions (whole subjects resampled when a group column is given), stored in the record, kept by a resumed run."""
import os

import numpy as np
import pandas as pd
import pytest

from aam import api
from aam.checkpoint import load_checkpoint
from aam.evaluation.stats import score_interval

from tests.conftest import MP, TINY

TABLE, SEQS = os.path.join(MP, "table.biom"), os.path.join(MP, "rep-seqs.fasta")
METADATA = os.path.join(MP, "sample-metadata.tsv")
DAYS = "days-since-experiment-start"


def test_score_interval_on_constructed_cases():
    # every error the same: the estimate is that error and no resample can move it
    same = score_interval("mae", np.zeros(6), np.full(6, 2.0), n_resamples=200)
    assert same["estimate"] == same["low"] == same["high"] == 2.0 and not same["grouped"]
    # two subjects, one always right and one always wrong: resampling whole subjects draws 0, 1/2 or 1; resampling
    # samples one by one almost never reaches 0 or 1
    truth = np.array(["a"] * 20)
    prediction = np.array(["a"] * 10 + ["b"] * 10)
    groups = ["s1"] * 10 + ["s2"] * 10
    whole = score_interval("accuracy", truth, prediction, groups, n_resamples=500, seed=1)
    assert whole["estimate"] == 0.5 and (whole["low"], whole["high"]) == (0.0, 1.0)
    assert whole["grouped"] and whole["n_groups"] == 2 and whole["n_samples"] == 20
    apart = score_interval("accuracy", truth, prediction, None, n_resamples=500, seed=1)
    assert 0.0 < apart["low"] < 0.5 < apart["high"] < 1.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("interval") / "run"
    result = api.train(TABLE, METADATA, DAYS, sequences=SEQS, output_dir=str(out), progress=False, epochs=3,
                       seed=1, ensemble="none", group_column="subject", validation_fraction=0.5,
                       **TINY)
    return out, result.checkpoint.record


def test_the_record_holds_the_best_validation_score_with_its_interval(run):
    _, record = run
    iv = record.training.best_interval
    assert iv["metric"] == "mae" and iv["level"] == 0.95 and iv["grouped"]
    assert iv["estimate"] == pytest.approx(record.training.best_score, rel=1e-6)
    assert iv["low"] <= iv["estimate"] <= iv["high"]
    validation = record.data.validation_samples
    subjects = pd.read_csv(METADATA, sep="\t", index_col=0, comment=None).drop(index="#q2:types")["subject"]
    assert iv["n_samples"] == len(validation)
    assert iv["n_groups"] == subjects.loc[validation].nunique()


def test_a_resumed_run_keeps_the_interval_of_its_best_epoch(run, tmp_path):
    out, record = run
    resumed = api.train(TABLE, METADATA, DAYS, sequences=SEQS, output_dir=str(tmp_path / "resumed"), progress=False,
                        epochs=3, seed=1, ensemble="none", group_column="subject", validation_fraction=0.5,
                        resume=str(out / "checkpoints" / "last_checkpoint.pt"), **TINY)
    assert resumed.checkpoint.record.training.best_interval == record.training.best_interval
    assert load_checkpoint(out / "model.pt").record.training.best_interval == record.training.best_interval
