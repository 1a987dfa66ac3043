"""The hostile-user matrix (issue 25): every case an ID, run through a real entry point, and judged the same way.

Each case builds a bad input (a symlinked run member, a crafted forest, a record claiming a huge model, a
decompression bomb, an out-of-range option, a read-only place, ...), runs the ``aam`` command line in this process
(`aam.cli.main`) or the plugin through its Python API, and asserts: the exit status, exactly one ``error:`` line
naming the culprit, no Python traceback, and that nothing outside the run's output changed. Cases that could hang
on a regression (cyclic trees), that need another user (permissions: root ignores file modes, so they run as
``nobody`` through util-linux ``setpriv``) or that measure peak memory run in one subprocess per family, which
runs the command line in-process for each of its cases.
"""
import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
import zipfile

import biom
import numpy as np
import pandas as pd
import pytest
import torch

from aam import api, cli
from aam.checkpoint import Checkpoint, load_checkpoint, model_digest
from aam.forest import ForestArrays

from tests.conftest import KB, MP, TINY

TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))
METADATA = os.path.join(MP, "sample-metadata.tsv")
DAYS = "days-since-experiment-start"
FLAGS = ["--asv-encoder", "none", "--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1",
         "--max-bp", "48", "--token-limit", "32", "--batch-size", "4", "--num-threads", "1", "--epochs", "1"]
TRAIN = ["train", "--table", TABLE, "--sequences", SEQS, "--metadata", METADATA, "--metadata-column", DAYS,
         "--forest-trees", "5", *FLAGS]
PRETRAIN = ["pretrain", "--table", TABLE, "--sequences", SEQS, "--tree", TREE, *FLAGS]
ARCH = ("embedding_dim", "attention_heads", "attention_layers", "max_bp", "token_limit")
GB = 1024 ** 3


# ---- judging a case ------------------------------------------------------------------------------------------------
def snapshot(root, exclude=()):
    """Every path under `root` but `exclude`: its kind, and its bytes' digest or its link target."""
    out = {}
    excluded = [os.path.abspath(e) for e in exclude]
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if any(path == e or path.startswith(e + os.sep) for e in excluded):
                continue
            if os.path.islink(path):
                out[path] = ("link", os.readlink(path))
            elif os.path.isfile(path):
                out[path] = ("file", hashlib.sha256(open(path, "rb").read()).hexdigest())
            else:
                out[path] = ("dir", None)
    return out


@contextlib.contextmanager
def printed_warnings():
    """Warnings print to stderr as they would outside pytest (which records them instead)."""
    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def cli_case(capsys, argv):
    """`aam ARGV` in this process: (exit status, stdout, stderr). A traceback fails the test by propagating."""
    status = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def the_error(err):
    """The one ``error:`` line of a failed command (and no traceback)."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def refused(capsys, argv, world, *needles, exclude=()):
    """Run a case that must be refused: exit 2, one error line holding every needle, `world` unchanged."""
    before = snapshot(world, exclude)
    status, _, err = cli_case(capsys, argv)
    line = the_error(err)
    assert status == 2, err
    for needle in needles:
        assert needle in line, (needle, line)
    assert snapshot(world, exclude) == before, "a file outside the output changed"
    return line


# ---- models the cases start from -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A regressor run (network + 5-tree forest) trained once: {"run": its directory, "model": model.pt}."""
    root = tmp_path_factory.mktemp("models")
    run = root / "run"
    api.train(TABLE, METADATA, DAYS, sequences=SEQS, output_dir=str(run), progress=False, epochs=1, seed=1,
              forest_trees=5, **TINY)
    return {"root": root, "run": run, "model": run / "model.pt"}


def copy_run(models, dest):
    shutil.copytree(models["run"], dest, symlinks=True)
    os.unlink(dest / ".aam-run.lock")
    return dest


# ---- item 1: output places: a run never writes through a symlink ----------------------------------------------------
def _link_lock(run, victim):
    os.symlink(victim, run / ".aam-run.lock")


def _link_model(run, victim):
    os.unlink(run / "model.pt")
    os.symlink(victim, run / "model.pt")


def _link_plots(run, victim):
    shutil.rmtree(run / "plots")
    os.symlink(os.path.dirname(victim), run / "plots")


def _link_checkpoints(run, victim):
    """checkpoints/ moved outside and linked back: resuming would write the new checkpoints out there."""
    elsewhere = os.path.join(os.path.dirname(victim), "checkpoints")
    shutil.move(run / "checkpoints", elsewhere)
    os.symlink(elsewhere, run / "checkpoints")


def _link_plot_file(run, victim):
    name = sorted(os.listdir(run / "plots"))[0]
    os.unlink(run / "plots" / name)
    os.symlink(victim, run / "plots" / name)


def _fifo_lock(run, victim):
    os.mkfifo(run / ".aam-run.lock")


PLACES = {
    "lock-symlink": (_link_lock, [], "is a symlink"),
    "lock-symlink-overwrite": (_link_lock, ["--overwrite"], "is a symlink"),
    "model-symlink-overwrite": (_link_model, ["--overwrite"], "is a symlink"),
    "plots-symlink-overwrite": (_link_plots, ["--overwrite"], "is a symlink"),
    "checkpoints-symlink-resume": (_link_checkpoints, ["--resume", "RUN/checkpoints/last_checkpoint.pt"],
                                   "is a symlink"),
    "plot-file-symlink-overwrite": (_link_plot_file, ["--overwrite"], "is a symlink"),
    "lock-fifo": (_fifo_lock, ["--overwrite"], "not a regular file"),
}


@pytest.mark.parametrize("case", list(PLACES))
def test_output_places(case, models, tmp_path, capsys):
    make, extra, needle = PLACES[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.txt"
    victim.write_text("the user's own file")
    run = copy_run(models, tmp_path / "run")
    make(run, str(victim))
    model_before = (outside / "precious.txt").read_bytes()
    extra = [str(a).replace("RUN", str(run)) for a in extra]
    refused(capsys, [*TRAIN, "--output-dir", run, *extra], tmp_path, needle, exclude=[run / ".aam-run.lock"])
    assert victim.read_bytes() == model_before


def test_output_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    refused(capsys, [*TRAIN, "--output-dir", tmp_path / "file"], tmp_path, "is a file")


# ---- item 5: --overwrite keeps the old run until the new one finished ------------------------------------------------
def _typo(args):
    return [("days-typo" if a == DAYS else a) for a in args], "days-typo"


def _foreign_sequences(args):
    return [(os.path.join(KB, "rep-seqs.fasta") if a == SEQS else a) for a in args], "sequence"


def _disk_full(args):
    return args, "disk is full"


OVERWRITES = {"typo-column": _typo, "foreign-sequences": _foreign_sequences, "disk-full-during-save": _disk_full}


@pytest.mark.parametrize("case", list(OVERWRITES))
def test_a_failed_overwrite_keeps_the_old_run(case, models, tmp_path, capsys, monkeypatch):
    run = copy_run(models, tmp_path / "run")
    before = snapshot(run, exclude=[run / ".aam-run.lock"])
    args, needle = OVERWRITES[case](list(TRAIN))
    if case == "disk-full-during-save":
        def full(*a, **k):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "checkpoints"))
        monkeypatch.setattr(torch, "save", full)
    line = refused(capsys, [*args, "--output-dir", run, "--overwrite"], tmp_path, exclude=[run / ".aam-run.lock"])
    assert needle in line
    assert snapshot(run, exclude=[run / ".aam-run.lock"]) == before  # the old run, whole, and nothing else


def test_a_finished_overwrite_replaces_the_old_run(models, tmp_path, capsys):
    run = copy_run(models, tmp_path / "run")
    old = (run / "model.pt").read_bytes()
    status, _, err = cli_case(capsys, [*TRAIN, "--output-dir", run, "--overwrite", "--seed", 7])
    assert status == 0, err
    assert (run / "model.pt").read_bytes() != old and not (run / ".aam-replaced").exists()
    assert load_checkpoint(run / "model.pt").record.seed == 7


def test_an_interrupted_overwrite_gives_the_old_run_back(models, tmp_path, capsys):
    run = copy_run(models, tmp_path / "run")
    old = (run / "model.pt").read_bytes()
    aside = run / ".aam-replaced"  # what a process killed during --overwrite leaves behind
    aside.mkdir()
    for name in ("model.pt", "config.json", "history.tsv", "checkpoints", "plots", "tensorboard"):
        os.replace(run / name, aside / name)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last_checkpoint.pt").write_bytes(b"half")
    status, _, err = cli_case(capsys, [*TRAIN, "--output-dir", run])
    assert status == 2 and "already holds a run" in the_error(err) and "interrupted" in err
    assert (run / "model.pt").read_bytes() == old and not aside.exists()


def test_the_resume_hint_names_only_a_checkpoint_that_exists(models, tmp_path, capsys):
    run = tmp_path / "exported"
    run.mkdir()
    shutil.copy(models["model"], run / "model.pt")  # a model directory: no checkpoints/ to resume from
    line = refused(capsys, [*TRAIN, "--output-dir", run], tmp_path, "already holds a run", "--overwrite",
                   exclude=[run / ".aam-run.lock"])
    assert "last_checkpoint.pt" not in line and "no checkpoint" in line


# ---- item 2: crafted forests are refused on load, never walked -------------------------------------------------------
def _set(name, index, value):
    def edit(forest):
        array = getattr(forest, name).copy()
        array[index] = value
        setattr(forest, name, array)
    return edit


def _retype(name, dtype):
    def edit(forest):
        setattr(forest, name, getattr(forest, name).astype(dtype))
    return edit


def _offsets_gap(forest):
    forest.tree_offsets = forest.tree_offsets.copy()
    forest.tree_offsets[-1] += 3


def _chain(forest):
    """One tree 10,001 levels deep (children forward and in range): a depth no real forest has."""
    n = 20_002
    left = np.full(n, -1, np.int64)
    right = np.full(n, -1, np.int64)
    left[:10_001] = np.arange(1, 10_002)
    right[:10_001] = np.arange(10_002, 20_003)[:10_001]
    right[10_000] = 20_001
    forest.tree_offsets = np.array([0, n], np.int64)
    forest.left, forest.right = left, right
    forest.feature = np.where(left >= 0, 0, -2).astype(np.int64)
    forest.threshold = np.zeros(n)
    forest.value = np.zeros((n, forest.value.shape[1]))


FORESTS = {
    "self-loop": (_set("left", 0, 0), "cycle"),
    "back-edge": (_set("right", 1, 0), "cycle"),  # node 1 splits; its right child becomes the root
    "child-out-of-range": (_set("left", 0, 10 ** 6), "points outside itself"),
    "negative-right-child": (_set("right", 0, -5), "points outside itself"),
    "feature-out-of-range": (_set("feature", 0, 10 ** 6), "feature it does not have"),
    "negative-feature": (_set("feature", 0, -7), "feature it does not have"),
    "nan-threshold": (_set("threshold", 0, np.nan), "NaN or infinite"),
    "inf-leaf-value": (_set("value", (-1, 0), np.inf), "NaN or infinite"),
    "float-children": (_retype("left", np.float64), "integer array"),
    "float-features": (_retype("feature", np.float32), "integer array"),
    "integer-thresholds": (_retype("threshold", np.int64), "floating-point"),
    "offsets-beyond-nodes": (_offsets_gap, "offsets"),
    "too-deep": (_chain, "levels deep"),
}
# cases that hang today's main in predict: run in a subprocess with a timeout
HANGS = ("self-loop", "back-edge")


def crafted_forest(models, directory, case):
    """model.pt with one crafted forest, its digest made anew: the file is crafted, not damaged."""
    ckpt = load_checkpoint(models["model"])
    forest = ForestArrays.from_tensors(ckpt.member_states["forest"])
    FORESTS[case][0](forest)
    path = directory / f"{case}.pt"
    members = dict(ckpt.member_states, forest=forest.to_tensors())
    Checkpoint(ckpt.record, ckpt.model_state, member_states=members).save(path)
    return path


DRIVER = """
import contextlib, io, json, resource, sys, traceback
from aam import cli


def peak_kib():
    # VmHWM: the peak of this process's own memory since exec (ru_maxrss would include the parent's peak, which
    # Linux carries across fork and exec)
    try:
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


results = {}
for case, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = cli.main(argv)
        except BaseException:
            status, err = "exception", io.StringIO(err.getvalue() + traceback.format_exc())
    results[case] = {"status": status, "err": err.getvalue(), "peak_kib": peak_kib()}
print(json.dumps(results))
"""


def run_driver(cases, env=None, user=None, timeout=300):
    """Run `aam` for each case in one subprocess (as `user` when given): {case: {status, err, peak_kib}}."""
    prefix = []
    if user is not None and os.geteuid() == 0:
        prefix = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"]
    environ = dict(os.environ, **(env or {}))
    environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
                                            + [p for p in [environ.get("PYTHONPATH")] if p])
    proc = subprocess.run(prefix + [sys.executable, "-c", DRIVER, json.dumps(cases)], capture_output=True,
                          text=True, timeout=timeout, env=environ, cwd=environ.get("HOME"))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def _predict_argv(model, output):
    return ["predict", "--table", TABLE, "--sequences", SEQS, "--model", str(model), "--output", str(output)]


@pytest.fixture(scope="module")
def hang_results(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("hangs")
    cases = {c: _predict_argv(crafted_forest(models, root, c), root / f"{c}.tsv") for c in HANGS}
    return run_driver(cases, timeout=120), root


@pytest.mark.parametrize("case", list(FORESTS))
def test_crafted_forest(case, models, tmp_path, capsys, request):
    if case in HANGS:
        results, root = request.getfixturevalue("hang_results")
        result = results[case]
        assert result["status"] == 2, result
        line = the_error(result["err"])
        assert not (root / f"{case}.tsv").exists()
    else:
        model = crafted_forest(models, tmp_path, case)
        line = refused(capsys, _predict_argv(model, tmp_path / "p.tsv"), tmp_path)
    assert "forest" in line and FORESTS[case][1] in line, line


def test_crafted_forest_refused_by_qiime_tools_import(models, tmp_path):
    import qiime2
    model = crafted_forest(models, tmp_path, "self-loop")
    with pytest.raises(Exception) as caught:
        qiime2.Artifact.import_data("AAMModel[AAMRegressor]", str(model), "AAMWeightsFormat")
    assert "cycle" in str(caught.value) and "Traceback" not in str(caught.value)


# ---- model files: damaged, foreign, altered, or carrying code ----------------------------------------------------
class _Pwn:
    """Unpickling this runs code: it would create pwned.txt in the current directory."""

    def __reduce__(self):
        return (open, ("pwned.txt", "w"))


def _truncated(models, path):
    data = models["model"].read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _with_code(models, path):
    torch.save({"format": "aam-checkpoint", "format_version": 3, "record": "{}", "model": {}, "x": _Pwn()}, path)


def _tampered_record(models, path):
    """The stored target scale edited (max 168 -> 169), the digest left as it was: every prediction would shift."""
    payload = load_checkpoint(models["model"]).payload(False)
    record = json.loads(payload["record"])
    record["target"]["transform"]["max"] += 1
    payload["record"] = json.dumps(record)
    torch.save(payload, path)


def _null_digest(models, path):
    payload = load_checkpoint(models["model"]).payload(False)
    record = json.loads(payload["record"])
    record["weights_sha256"] = None
    payload["record"] = json.dumps(record)
    torch.save(payload, path)


def _nan_weights(models, path):
    ckpt = load_checkpoint(models["model"])
    state = {k: v.clone() for k, v in ckpt.model_state.items()}
    next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
    Checkpoint(ckpt.record, state, member_states=ckpt.member_states).save(path)  # signed: the values are the fault


MODEL_FILES = {
    "truncated": (_truncated, "damaged"),
    "empty": (lambda models, path: path.write_bytes(b""), "empty"),
    "text": (lambda models, path: path.write_text("hello"), "not the zip archive"),
    "python-object": (_with_code, "Python objects"),
    "directory": (lambda models, path: path.mkdir(), "is a directory"),
    "missing": (lambda models, path: None, "does not exist"),
    "tampered-record": (_tampered_record, "checksum"),
    "null-digest": (_null_digest, "no digest"),
    "nan-weights": (_nan_weights, "NaN or infinite"),
}


@pytest.mark.parametrize("case", list(MODEL_FILES))
def test_model_files(case, models, tmp_path, capsys, monkeypatch):
    make, needle = MODEL_FILES[case]
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "model.pt"
    make(models, path)
    refused(capsys, _predict_argv(path, tmp_path / "p.tsv"), tmp_path, needle, str(path))
    assert not (tmp_path / "pwned.txt").exists()


# ---- inputs: missing, foreign or misspelled, named before any work --------------------------------------------
def _replace(args, old, new):
    return [(new if a == old else a) for a in args]


INPUTS = {
    "table-missing": (lambda t: _replace(TRAIN, TABLE, str(t / "nope.biom")), "does not exist"),
    "table-not-biom": (lambda t: _replace(TRAIN, TABLE, str(t / "notes.txt")), "not a BIOM table"),
    "metadata-missing": (lambda t: _replace(TRAIN, METADATA, str(t / "nope.tsv")), "does not exist"),
    "column-typo": (lambda t: _replace(TRAIN, DAYS, "days-sinse"), "'days-sinse'"),
    "pretrain-without-distances": (lambda t: [a for a in PRETRAIN if a != TREE and a != "--tree"], "--tree"),
    "sequences-of-another-study": (lambda t: _replace(TRAIN, SEQS, os.path.join(KB, "rep-seqs.fasta")),
                                   "sequence"),
    "resume-missing": (lambda t: TRAIN + ["--resume", str(t / "nope.pt")], "--resume"),
    "predictor-as-pretrained": (lambda t: TRAIN + ["--pretrained-encoder", "MODEL"], "pretrained base"),
    "base-as-predictor": (lambda t: _predict_argv("BASE", t / "p.tsv"), "pretrained base"),
}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    api.pretrain(TABLE, sequences=SEQS, tree=TREE, output_dir=str(out), progress=False, epochs=1, seed=1, **TINY)
    return out / "model.pt"


@pytest.mark.parametrize("case", list(INPUTS))
def test_inputs(case, models, tmp_path, capsys, request):
    (tmp_path / "notes.txt").write_text("not a table\n")
    build, needle = INPUTS[case]
    argv = [str(a) for a in build(tmp_path)]
    argv = _replace(argv, "MODEL", str(models["model"]))
    if "BASE" in argv:
        argv = _replace(argv, "BASE", str(request.getfixturevalue("base_model")))
    if argv[0] in ("train", "pretrain"):
        argv += ["--output-dir", str(tmp_path / "out")]
    refused(capsys, argv, tmp_path, needle, exclude=[tmp_path / "out"])


# ---- item 3: sizes in a record are bounded by the weights present, before anything is built --------------------------
def _arch(**changes):
    def edit(record):
        record["architecture"]["encoder"].update(changes)
    return edit


def _head(**changes):
    def edit(record):
        record["architecture"].update(changes)
    return edit


def _columns(record):
    record["architecture"]["categorical_cardinalities"] = {f"c{i}": 2 for i in range(100_000)}


RECORDS = {
    "layers-10k": (_arch(attention_layers=10_000), "10,000 attention_layers"),
    "layers-1M": (_arch(attention_layers=1_000_000), "1,000,000 attention_layers"),
    "head-layers-1M": (_head(head_layers=1_000_000), "1,000,000 head_layers"),
    "covariates-100k": (_columns, "100,000 categorical columns"),
    "token-limit-1e9": (_arch(token_limit=10 ** 9), "token_limit = 1,000,000,000"),
    "embedding-dim-1e9": (_arch(embedding_dim=10 ** 9, attention_heads=1), "embedding_dim = 1,000,000,000"),
    "max-bp-1e9": (_arch(max_bp=10 ** 9), "max_bp + 1 = 1,000,000,001"),
    "taxonomy-classes-1e9": (_arch(taxonomy_classes=10 ** 9), "taxonomy_classes = 1,000,000,000"),
    "classes-1e9": (_head(out_dim=10 ** 9), "out_dim = 1,000,000,000"),
}


@pytest.fixture(scope="module")
def record_results(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    ckpt = load_checkpoint(models["model"])
    cases = {}
    for case, (edit, _) in RECORDS.items():
        payload = Checkpoint(ckpt.record, ckpt.model_state, member_states=ckpt.member_states).payload(False)
        record = json.loads(payload["record"])
        edit(record)
        # signed anew: a crafted file, whose digest matches its record (the digest proves integrity, not intent)
        record["weights_sha256"] = model_digest(record, payload["model"], payload.get("members", {}))
        payload["record"] = json.dumps(record)
        torch.save(payload, root / f"{case}.pt")
        assert os.path.getsize(root / f"{case}.pt") < 10 * 1024 ** 2  # a small file claiming a huge model
        cases[case] = _predict_argv(root / f"{case}.pt", root / f"{case}.tsv")
    return run_driver(cases, timeout=300), root


@pytest.mark.parametrize("case", list(RECORDS))
def test_a_record_claiming_a_huge_model_costs_no_memory(case, record_results):
    results, root = record_results
    result = results[case]
    assert result["status"] == 2, result
    line = the_error(result["err"])
    assert RECORDS[case][1] in line, line
    assert result["peak_kib"] * 1024 < GB, f"peak resident memory {result['peak_kib'] / 1024:.0f} MB"
    assert not (root / f"{case}.tsv").exists()


# ---- item 7: decompression bombs -------------------------------------------------------------------------------------
BOMB = 64 * 1024 ** 2  # zeros: deflate packs them ~1000-fold


def _bomb_zip(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)


def _model_with_bomb(models, path):
    with zipfile.ZipFile(models["model"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        dst.writestr("model/data/9999", bytes(BOMB), compress_type=zipfile.ZIP_DEFLATED)


def _model_with_many_members(models, path):
    with zipfile.ZipFile(models["model"]) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        for i in range(10_001):
            dst.writestr(f"model/extra/{i}", b"")


def _qza(path, suffix):
    _bomb_zip(path, [("0b7c5d2e-uuid/metadata.yaml", b"uuid: x\n"),
                     (f"0b7c5d2e-uuid/data/data{suffix}", bytes(BOMB))])


ARCHIVES = {
    "model-deflate-bomb": ("model", _model_with_bomb, "decompression bomb"),
    "model-10001-members": ("model", _model_with_many_members, "members"),
    "qza-table-bomb": ("table", lambda models, p: _qza(p, ".biom"), "decompression bomb"),
    "qza-sequences-bomb": ("sequences", lambda models, p: _qza(p, ".fasta"), "decompression bomb"),
    "qza-tree-bomb": ("tree", lambda models, p: _qza(p, ".nwk"), "decompression bomb"),
}


@pytest.mark.parametrize("case", list(ARCHIVES))
def test_decompression_bombs(case, models, tmp_path, capsys):
    role, make, needle = ARCHIVES[case]
    path = tmp_path / ("bomb.pt" if role == "model" else "bomb.qza")
    make(models, path)
    if role == "model":
        argv = _predict_argv(path, tmp_path / "p.tsv")
    else:
        argv = [("--" + role if a == "--" + role else a) for a in PRETRAIN]
        argv[argv.index("--" + role) + 1] = path
        argv += ["--output-dir", tmp_path / "out"]
    line = refused(capsys, argv, tmp_path, needle, str(path), exclude=[tmp_path / "out"])
    assert "crafted" in line or "bomb" in line


def test_plugin_validation_caps_a_model_bomb(models, tmp_path):
    from qiime2.plugin import ValidationError

    from q2_aam._format import AAMWeightsFormat
    _model_with_bomb(models, tmp_path / "model.pt")
    with pytest.raises(ValidationError, match="decompression bomb"):
        AAMWeightsFormat(str(tmp_path / "model.pt"), mode="r").validate("max")


# ---- item 8: every float option finite and in range, for the CLI and the plugin --------------------------------------
OPTIONS = {
    "lr-nan": (["--lr", "nan"], "--lr must be a finite number"),
    "lr-inf": (["--lr", "inf"], "--lr must be a finite number"),
    "lr-huge": (["--lr", "1e308"], "--lr must be <= 10"),
    "max-grad-norm-nan": (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number"),
    "max-grad-norm-inf": (["--max-grad-norm", "inf"], "--max-grad-norm must be a finite number"),
    "eta-min-nan": (["--scheduler-eta-min", "nan"], "--scheduler-eta-min must be a finite number"),
    "eta-min-above-lr": (["--scheduler-eta-min", "0.5"], "--scheduler-eta-min (0.5) must not exceed --lr"),
    "ema-epochs-inf": (["--ema-epochs", "inf"], "--ema-epochs must be a finite number"),
    "nuc-mask-ratio-nan": (["--nuc-mask-ratio", "nan"], "--nuc-mask-ratio must be a finite number"),
    "penalty-inf": (["--penalty", "inf"], "--penalty must be a finite number"),
    "weight-decay-nan": (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
    "dropout-nan": (["--dropout", "nan"], "--dropout must be a finite number"),
    "validation-fraction-inf": (["--validation-fraction=-inf"], "--validation-fraction must be a finite"),
    "scheduler-factor-nan": (["--scheduler-factor", "nan"], "--scheduler-factor must be a finite number"),
    "seed-huge": (["--seed", str(10 ** 30)], "--seed must be a 64-bit integer"),
    "seed-2^32": (["--seed", str(2 ** 32)], "--seed must be <= 4294967295"),
    "batch-size-1e20": (["--batch-size", str(10 ** 20)], "--batch-size must be a 64-bit integer"),
    "token-limit-1e9": (["--token-limit", str(10 ** 9)], "--token-limit must be <= 16384"),
}


@pytest.mark.parametrize("case", list(OPTIONS))
def test_options(case, tmp_path, capsys):
    extra, needle = OPTIONS[case]
    line = refused(capsys, [*TRAIN, *extra, "--output-dir", tmp_path / "out"], tmp_path, needle)
    assert "try --lr" not in line
    assert not (tmp_path / "out").exists()  # refused before the run directory is made


PLUGIN_OPTIONS = {"plugin-lr-nan": ({"lr": float("nan")}, "lr"),
                  "plugin-max-grad-norm-inf": ({"max_grad_norm": float("inf")}, "max_grad_norm"),
                  "plugin-seed-huge": ({"seed": 10 ** 30}, "seed")}


@pytest.mark.parametrize("case", list(PLUGIN_OPTIONS))
def test_plugin_options(case):
    from qiime2.plugins import aam

    from q2_aam import _examples
    given, needle = PLUGIN_OPTIONS[case]
    data = _examples.example_inputs()
    with pytest.raises(Exception) as caught:
        aam.methods.pretrain(table=data["table"], sequences=data["sequences"], phylogeny=data["phylogeny"],
                             **given, **TINY)
    text = str(caught.value)
    assert needle in text and "Traceback" not in text and len(text.strip().splitlines()) == 1, text


# ---- item 6: permissions, as a user whose file modes count -----------------------------------------------------------
@pytest.fixture(scope="module")
def permission_results(models):
    """Every permission case in one subprocess run as `nobody` (under root) in a world-readable scratch place."""
    base = tempfile.mkdtemp(prefix="aam-perm-")
    try:
        os.chmod(base, 0o755)
        home = os.path.join(base, "home")
        os.mkdir(home)
        os.chmod(home, 0o777)
        ro = os.path.join(base, "read-only")
        shutil.copytree(models["run"], os.path.join(ro, "run"))
        os.unlink(os.path.join(ro, "run", ".aam-run.lock"))
        secret = os.path.join(base, "secret.biom")
        shutil.copy(TABLE, secret)
        for folder, dirs, files in os.walk(ro):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o555)
            for name in files:
                os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(ro, 0o555)
        os.chmod(secret, 0o000)
        run = os.path.join(ro, "run")
        last = os.path.join(run, "checkpoints", "last_checkpoint.pt")
        train = [str(a) for a in TRAIN]
        cases = {
            "read-only-output-dir": (train + ["--output-dir", run, "--overwrite"], run),
            "read-only-parent": (train + ["--output-dir", os.path.join(ro, "new-run")], ro),
            "unreadable-table": ([(secret if a == TABLE else a) for a in train]
                                 + ["--output-dir", os.path.join(home, "run")], secret),
            "read-only-predict-output": (_predict_argv(os.path.join(run, "model.pt"),
                                                       os.path.join(ro, "predictions.tsv")), ro),
            "resume-into-read-only-run": (train + ["--epochs", "2", "--output-dir", run, "--resume", last], run),
            "read-only-embed-output": (["embed", "--table", TABLE, "--sequences", SEQS, "--model",
                                        os.path.join(run, "model.pt"), "--output", os.path.join(ro, "e.tsv")], ro),
        }
        before = snapshot(base, exclude=[home])
        results = run_driver({c: argv for c, (argv, _) in cases.items()}, user="nobody",
                             env={"HOME": home, "MPLCONFIGDIR": home, "OMP_NUM_THREADS": "1"})
        changed = snapshot(base, exclude=[home]) != before
        yield {c: dict(results[c], culprit=culprit) for c, (_, culprit) in cases.items()}, changed
    finally:
        for folder, dirs, _ in os.walk(base):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
        os.chmod(base, 0o755)
        shutil.rmtree(base, ignore_errors=True)


PERMISSIONS = ("read-only-output-dir", "read-only-parent", "unreadable-table", "read-only-predict-output",
               "resume-into-read-only-run", "read-only-embed-output")


@pytest.mark.parametrize("case", PERMISSIONS)
def test_permissions(case, permission_results):
    results, changed = permission_results
    result = results[case]
    assert result["status"] == 2, result
    line = the_error(result["err"])
    assert result["culprit"] in line and ("ermission denied" in line), line
    assert not changed, "a file outside the output changed"


# ---- items 9 and 10: messages that name the culprit; silent cases that now warn --------------------------------------
def _table_with(tmp_path, extra=None, rename=None):
    table = biom.load_table(TABLE)
    frame = pd.DataFrame(table.matrix_data.toarray(), index=table.ids("observation"), columns=table.ids())
    for sample, counts in (extra or {}).items():
        frame[sample] = pd.Series(counts, dtype=float).reindex(frame.index, fill_value=0.0)
    frame = frame.rename(columns=rename or {})
    path = tmp_path / "table.biom"
    with biom.util.biom_open(str(path), "w") as fh:
        biom.Table(frame.to_numpy(), list(frame.index), list(frame.columns)).to_hdf5(fh, "test")
    return str(path)


def _metadata_with(tmp_path, values):
    md = pd.read_csv(METADATA, sep="\t", index_col=0, dtype=str, comment=None)
    md = md[~md.index.str.startswith("#")]
    for sample, value in values.items():
        md.loc[sample, DAYS] = value
    path = tmp_path / "md.tsv"
    md.to_csv(path, sep="\t", index_label="sample-id")
    return str(path)


def test_tab_in_a_sample_id_is_named(tmp_path, capsys):
    first = biom.load_table(TABLE).ids()[0]
    table = _table_with(tmp_path, rename={first: "bad\tid"})
    argv = [(table if a == TABLE else a) for a in TRAIN]
    refused(capsys, [*argv, "--output-dir", tmp_path / "out"], tmp_path, "tab or line break", "bad\\tid",
            exclude=[tmp_path / "out"])


def test_targets_beyond_float32_are_named_not_blamed_on_the_learning_rate(tmp_path, capsys):
    first = biom.load_table(TABLE).ids()[0]
    md = _metadata_with(tmp_path, {first: "1e308"})
    argv = [(md if a == METADATA else a) for a in TRAIN]
    line = refused(capsys, [*argv, "--output-dir", tmp_path / "out"], tmp_path, DAYS, repr(first),
                   exclude=[tmp_path / "out"])
    assert "--lr" not in line


def test_old_torch_is_refused_before_loading(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    refused(capsys, _predict_argv(models["model"], tmp_path / "p.tsv"), tmp_path, "torch 2.5.1", ">= 2.6")


SILENT = {
    "constant-target": ("same value", dict(values={s: "7" for s in biom.load_table(TABLE).ids()})),
    "single-sample-class": ("single sample", dict(classifier=True)),
    "zero-read-sample": ("without reads left out: 'no-reads'", dict(extra={"no-reads": {}})),
}


@pytest.mark.parametrize("case", list(SILENT))
def test_silent_cases_now_speak(case, tmp_path, capsys):
    needle, how = SILENT[case]
    argv = list(TRAIN)
    if "values" in how:
        argv[argv.index(METADATA)] = _metadata_with(tmp_path, how["values"])
    if how.get("classifier"):
        argv[argv.index(DAYS)] = "subject"
        md = pd.read_csv(METADATA, sep="\t", index_col=0, dtype=str, comment=None)
        md = md[~md.index.str.startswith("#")]
        md.loc[md.index[0], "subject"] = "lonely"
        md.to_csv(tmp_path / "md.tsv", sep="\t", index_label="sample-id")
        argv[argv.index(METADATA)] = str(tmp_path / "md.tsv")
        argv += ["--classifier", "--missing-samples", "ignore"]
    if "extra" in how:
        argv[argv.index(TABLE)] = _table_with(tmp_path, extra=how["extra"])
        argv += ["--missing-samples", "ignore"]
    with printed_warnings():
        status, out, err = cli_case(capsys, [*argv, "--output-dir", tmp_path / "out"])
    assert status == 0 and "Traceback" not in err, err
    assert needle in out + err, out + err
    for line in err.splitlines():  # warnings print as one plain line, no Python source location
        assert not line.lstrip().startswith(("warnings.warn", "File ")) and ".py:" not in line, err


def test_plugin_warnings_print_as_one_plain_line(capfd):
    from aam.errors import warn
    from q2_aam._methods import _plugin_errors
    with printed_warnings():
        with _plugin_errors():
            warn("{opt:epochs} is only a test warning")
    err = capfd.readouterr().err
    assert err.strip() == "warning: --p-epochs is only a test warning", err


def test_plugin_warns_about_a_constant_target_in_one_line(capfd):
    import qiime2
    from qiime2.plugins import aam

    from q2_aam import _examples
    data = _examples.example_inputs()
    ids = data["metadata"].to_dataframe().index
    column = qiime2.NumericMetadataColumn(pd.Series(3.0, index=pd.Index(ids, name="sample-id"), name="flat"))
    with printed_warnings():
        aam.methods.fit_regressor(table=data["table"], sequences=data["sequences"], metadata=column,
                                  forest_trees=5, **{**TINY, "epochs": 1})
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "same value" in line]
    assert lines and all(line.startswith("warning: ") for line in lines), err
    assert ".py:" not in err, err
