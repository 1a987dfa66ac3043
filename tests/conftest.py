"""Shared test settings: paths to the bundled real-data slices, tiny model settings, cross-worker helpers."""
import contextlib
import fcntl
import os
import re

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
MP = os.path.join(DATA, "moving-pictures")
KB = os.path.join(DATA, "keyboard")
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))

# tiny architecture for fast tests on 2 CPU cores
# (asv_encoder none: the tiny architecture is trained from random weights, not taken from the reference encoder)
TINY = dict(asv_encoder="none", embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32, max_bp=48,
            batch_size=4, asv_chunk_size=64, num_threads=1)


@pytest.fixture(autouse=True)
def _quiet_matplotlib(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@contextlib.contextmanager
def locked(path):
    """An exclusive file lock: one pytest-xdist worker builds a shared fixture, the others wait for it."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def shared_dir(tmp_path_factory, name):
    """A directory all xdist workers of this session share (the base temp dir's parent under xdist)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- the `qiime` command line, Emperor and the tools the client tests need ------------------------------------------

def require(what, fix):
    """Skip a test whose tool is missing, saying which and how to get it; under CI (where `make setup` installs
    everything) fail instead, so that a missing install step cannot pass as a skipped test."""
    message = f"{what} is not installed ({fix})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must run this test")
    pytest.skip(message)


def qiime_command():
    """`qiime` of this environment (the venv's wrapper next to the interpreter, or the one on PATH)."""
    import shutil
    import sys
    here = os.path.join(os.path.dirname(sys.executable), "qiime")
    if os.path.exists(here):
        return [here]
    found = shutil.which("qiime")
    return [found] if found else [sys.executable, "-m", "q2cli"]


def run_qiime(args, environ, expect_ok=True, cwd=None, timeout=900):
    """Run `qiime ARGS`; with `expect_ok`, fails the test with q2cli's output when it does not succeed."""
    import subprocess
    proc = subprocess.run(qiime_command() + [str(a) for a in args], env=environ, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    if expect_ok:
        assert proc.returncode == 0, f"qiime {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def q2cli_env(tmp_path_factory):
    """Environment of `qiime` subprocesses: a q2cli cache of this session (the one tests/test_plugin_cli.py
    builds, in the same shared directory), so it always reflects the plugins as they are now."""
    config = shared_dir(tmp_path_factory, "aam-q2cli-config")
    environ = dict(os.environ, XDG_CONFIG_HOME=str(config), AAM_Q2CLI_CONFIG=str(config), MPLBACKEND="Agg",
                   OMP_NUM_THREADS="1")
    environ.pop("QIIMETEST", None)  # would hide every real plugin
    with locked(str(config) + ".lock"):
        if not (config / "done").exists():
            info = run_qiime(["info"], environ)
            assert re.search(r"^aam: ", info.stdout, re.M), info.stdout
            (config / "done").touch()
    return environ


@pytest.fixture(scope="session")
def emperor_plot(tmp_path_factory, q2cli_env):
    """`qiime emperor plot` of `qiime aam embed`'s PCoA (a tiny pretrained model of the Moving Pictures
    example data bundled with the plugin) with their sample metadata, made once per session:
    {"embedding": .qza, "plot": .qzv, "metadata": .tsv}."""
    import importlib.util
    if importlib.util.find_spec("q2_emperor") is None:
        require("q2-emperor", "`make setup` installs it as root: apt-get install q2-emperor")
    out = shared_dir(tmp_path_factory, "aam-emperor")
    from q2_aam import _examples
    paths = {"embedding": str(out / "embedding.qza"), "plot": str(out / "embedding-emperor.qzv"),
             "metadata": _examples.example_path("sample-metadata.tsv")}
    with locked(str(out) + ".lock"):
        if not (out / "done").exists():
            from qiime2.plugins import aam
            data = _examples.example_inputs()
            embedding, _ = aam.methods.embed(model=_examples.tiny_model("pretrained"), table=data["table"],
                                             sequences=data["sequences"], num_threads=1)
            embedding.save(paths["embedding"])
            run_qiime(["emperor", "plot", "--i-pcoa", paths["embedding"], "--m-metadata-file", paths["metadata"],
                       "--o-visualization", paths["plot"]], q2cli_env)
            (out / "done").touch()
    return paths


# ---- the cross-validation pipeline, run once per session -------------------------------------------------------------
#: the keyboard slice (24 samples, 6 subjects: 3 people, 3 keyboards), 3 folds grouped by subject, tiny models
CROSSVAL_SETTINGS = dict(cv=3, epochs=2, forest_trees=20, top=6, repeats=2, **TINY)
#: the outputs of classify-samples, in order
CROSSVAL_OUTPUTS = ("predictions", "probabilities", "model", "visualization", "feature_importance",
                    "importance_details", "importance_visualization")


@pytest.fixture(scope="session")
def crossval_outputs(tmp_path_factory):
    """`classify-samples` through the QIIME 2 Python API on the keyboard slice (sample type, grouped by subject),
    made once per session and shared by the xdist workers: {each of `CROSSVAL_OUTPUTS`: its path, "cache": the XDG
    cache directory it ran with, "log": what it printed}."""
    import io
    from contextlib import redirect_stdout
    out = shared_dir(tmp_path_factory, "aam-crossval")
    paths = {name: str(out / f"{name}.{'qzv' if name.endswith('visualization') else 'qza'}")
             for name in CROSSVAL_OUTPUTS}
    paths["cache"] = str(out / "cache")
    with locked(str(out) + ".lock"):
        if not (out / "done").exists():
            import qiime2
            from qiime2.plugins import aam
            md = qiime2.Metadata.load(os.path.join(KB, "sample-metadata.tsv"))
            old = os.environ.get("XDG_CACHE_HOME")
            os.environ["XDG_CACHE_HOME"] = paths["cache"]
            printed = io.StringIO()
            try:
                with redirect_stdout(printed):
                    results = aam.pipelines.classify_samples(
                        table=qiime2.Artifact.load(os.path.join(KB, "table.qza")),
                        sequences=qiime2.Artifact.load(os.path.join(KB, "rep-seqs.qza")),
                        metadata=md.get_column("SampleType"), sample_metadata=md, group_column="Subject",
                        **CROSSVAL_SETTINGS)
            finally:
                if old is None:
                    os.environ.pop("XDG_CACHE_HOME")
                else:
                    os.environ["XDG_CACHE_HOME"] = old
            for name, result in zip(CROSSVAL_OUTPUTS, results):
                result.save(paths[name])
            (out / "log.txt").write_text(printed.getvalue())
            (out / "done").touch()
    paths["log"] = (out / "log.txt").read_text()
    return paths
