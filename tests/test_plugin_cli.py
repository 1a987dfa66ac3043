"""The q2-aam plugin through the real `qiime` command line (q2cli), in subprocesses, on the bundled data slices.

One chain runs once per test session (shared between pytest-xdist workers through a locked directory):
pretrain -> fit-regressor with the pretrained model and a frozen base -> predict-regression -> summarize /
evaluate / q2-sample-classifier's scatterplot. q2cli's cache lives in a fresh directory, so it always reflects
the plugin as it is now.
"""
import os
import re
import zipfile

import pytest
import qiime2

from tests.conftest import MP, locked, run_qiime, shared_dir

TINY = ["--p-asv-encoder", "none", "--p-embedding-dim", "16", "--p-attention-heads", "2", "--p-attention-layers", "1",
        "--p-token-limit", "32",
        "--p-max-bp", "48", "--p-batch-size", "4", "--p-epochs", "2", "--p-num-threads", "1"]
TABLE = os.path.join(MP, "table.qza")
SEQS = os.path.join(MP, "rep-seqs.qza")
TREE = os.path.join(MP, "rooted-tree.qza")
METADATA = os.path.join(MP, "sample-metadata.tsv")
DAYS = "days-since-experiment-start"


@pytest.fixture(scope="module")
def env(q2cli_env):
    """Environment of the qiime subprocesses: the session's q2cli cache (tests/conftest.py)."""
    return q2cli_env


def qiime(args, environ, expect_ok=True, cwd=None):
    return run_qiime(args, environ, expect_ok=expect_ok, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, env):
    out = shared_dir(tmp_path_factory, "aam-cli-chain")
    paths = {name: str(out / name) for name in ("pretrained.qza", "regressor.qza", "predictions.qza",
                                                  "summary.qzv", "evaluation.qzv", "scatter.qzv")}
    with locked(str(out) + ".lock"):
        if not (out / "done").exists():
            pre = qiime(["aam", "pretrain", "--i-table", TABLE, "--i-sequences", SEQS, "--i-phylogeny", TREE,
                         *TINY, "--o-model", paths["pretrained.qza"], "--verbose"], env)
            (out / "pretrain.log").write_text(pre.stdout + pre.stderr)
            qiime(["aam", "fit-regressor", "--i-table", TABLE, "--i-sequences", SEQS,
                   "--i-pretrained", paths["pretrained.qza"], "--p-freeze-base",
                   "--m-metadata-file", METADATA, "--m-metadata-column", DAYS,
                   "--m-sample-metadata-file", METADATA, "--p-group-column", "subject",
                   *TINY, "--o-model", paths["regressor.qza"]], env)
            qiime(["aam", "predict-regression", "--i-model", paths["regressor.qza"], "--i-table", TABLE,
                   "--i-sequences", SEQS, "--p-num-threads", "1", "--o-predictions", paths["predictions.qza"]], env)
            qiime(["aam", "summarize", "--i-model", paths["regressor.qza"], "--o-visualization",
                   paths["summary.qzv"]], env)
            qiime(["aam", "evaluate", "--i-predictions", paths["predictions.qza"], "--m-truth-file", METADATA,
                   "--m-truth-column", DAYS, "--o-visualization", paths["evaluation.qzv"]], env)
            qiime(["sample-classifier", "scatterplot", "--i-predictions", paths["predictions.qza"],
                   "--m-truth-file", METADATA, "--m-truth-column", DAYS, "--o-visualization",
                   paths["scatter.qzv"]], env)
            (out / "done").touch()
    paths["pretrain.log"] = (out / "pretrain.log").read_text()
    return paths


def _zip_names(path):
    with zipfile.ZipFile(path) as zf:
        return [n.split("/", 1)[1] for n in zf.namelist()]


def _action_yaml(path):
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith("/provenance/action/action.yaml") and n.count("/") == 3)
        return zf.read(name).decode()


def test_qiime_info_and_help_list_the_plugin(env):
    info = qiime(["info"], env)
    assert re.search(r"^aam: \d", info.stdout, re.M)
    helped = qiime(["aam", "--help"], env).stdout
    for command in ("pretrain", "fit-regressor", "fit-classifier", "predict-regression", "predict-classification",
                    "embed", "summarize", "evaluate"):
        assert re.search(rf"^\s+{command}\s", helped, re.M), command
    fit_help = qiime(["aam", "fit-regressor", "--help"], env).stdout
    for flag in ("--i-pretrained", "--p-freeze-base", "--p-categorical-columns", "--p-device", "--p-seed",
                 "--p-mixed-precision", "--p-num-threads", "Examples:"):
        assert flag in fit_help, flag


def test_chain_outputs_have_the_right_types(chain):
    types = {name: qiime2.Artifact.peek(chain[name]).type
             for name in ("pretrained.qza", "regressor.qza", "predictions.qza")}
    assert types == {"pretrained.qza": "AAMModel[AAMPretrained]", "regressor.qza": "AAMModel[AAMRegressor]",
                     "predictions.qza": "SampleData[RegressorPredictions]"}


def test_verbose_shows_progress(chain):
    log = chain["pretrain.log"]
    assert re.search(r"^epoch 1/2 .*train/total_loss=", log, re.M), log
    assert re.search(r"^epoch 2/2 ", log, re.M)
    assert "unweighted UniFrac" in log


def test_cli_provenance_names_the_action_and_parameters(chain):
    text = _action_yaml(chain["regressor.qza"])
    assert "action: fit_regressor" in text and "plugin: !ref 'environment:plugins:aam'" in text
    assert re.search(r"-\s+freeze_base: true\n", text) and re.search(r"-\s+epochs: 2\n", text)
    assert re.search(r"-\s+pretrained: [0-9a-f-]{36}\n", text)
    names = _zip_names(chain["regressor.qza"])
    assert "provenance/action/sample_metadata.tsv" in names  # the metadata given is recorded


def test_cli_visualizations(chain):
    summary = _zip_names(chain["summary.qzv"])
    for name in ("data/index.html", "data/training-curves.png", "data/training-curves.svg", "data/history.tsv",
                 "data/tensorboard-logs.zip", "data/validation/pred_vs_actual_best.png"):
        assert name in summary, name
    evaluation = _zip_names(chain["evaluation.qzv"])
    for name in ("data/index.html", "data/predicted-vs-actual.png", "data/predicted-vs-actual.svg",
                 "data/metrics.tsv"):
        assert name in evaluation, name
    # q2-sample-classifier's scatterplot accepted our predictions
    assert "data/index.html" in _zip_names(chain["scatter.qzv"])


def test_cli_fit_classifier(env, tmp_path):
    out = str(tmp_path / "classifier.qza")
    qiime(["aam", "fit-classifier", "--i-table", TABLE, "--i-sequences", SEQS, "--m-metadata-file", METADATA,
           "--m-metadata-column", "body-site", *TINY, "--o-model", out], env)
    assert qiime2.Artifact.peek(out).type == "AAMModel[AAMClassifier]"


def test_cli_input_error_is_one_clear_message(env, tmp_path):
    proc = qiime(["aam", "fit-regressor", "--i-table", TABLE, "--i-sequences", SEQS, "--p-head", "linear",
                  "--m-metadata-file", METADATA, "--m-metadata-column", DAYS, *TINY,
                  "--o-model", str(tmp_path / "x.qza")], env, expect_ok=False)
    assert proc.returncode != 0
    assert "Plugin error from aam" in proc.stderr
    assert "--p-head" in proc.stderr and "--i-pretrained" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_import_rejects_a_corrupted_model(chain, env, tmp_path):
    directory = tmp_path / "model"
    qiime2.Artifact.load(chain["regressor.qza"]).export_data(str(directory))
    (directory / "model.pt").write_bytes(b"this is not a checkpoint")
    proc = qiime(["tools", "import", "--type", "AAMModel[AAMRegressor]", "--input-path", str(directory),
                  "--output-path", str(tmp_path / "bad.qza")], env, expect_ok=False)
    assert proc.returncode != 0
    assert "model.pt is not a PyTorch checkpoint" in proc.stdout + proc.stderr
