"""Bad input and faults, as a hostile user or a crashing machine would cause them: every case ends in one clear
message (or a warning), never a traceback, a silently wrong model, or lost work. Faults that need real processes
(a second run, a kill during a save) use real processes, synchronized by what they print, never by timing."""
import io
import json
import os
import signal
import stat
import subprocess
import sys
import warnings
import zipfile

import biom
import numpy as np
import pandas as pd
import pytest
import torch

from aam import api, cli
from aam.checkpoint import Checkpoint, load_checkpoint, model_digest
from aam.errors import AAMInputError, AAMWarning

from tests.conftest import KB, MP, TINY

TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))
METADATA = os.path.join(MP, "sample-metadata.tsv")
DAYS = "days-since-experiment-start"
FLAGS = ["--asv-encoder", "none", "--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1",
         "--max-bp", "48", "--token-limit", "32", "--batch-size", "4", "--num-threads", "1"]
PRETRAIN = ["pretrain", "--table", TABLE, "--sequences", SEQS, "--tree", TREE, *FLAGS]
ARCH = ("embedding_dim", "attention_heads", "attention_layers", "max_bp", "token_limit")


def cli_run(capsys, *args):
    """`aam ...` in this process: (exit status, stderr). A traceback would fail the test by propagating."""
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err


def one_error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A pretrained base and a regressor, trained once for the module."""
    root = tmp_path_factory.mktemp("runs")
    pre = api.pretrain(TABLE, sequences=SEQS, tree=TREE, output_dir=str(root / "pre"), progress=False, epochs=2,
                       seed=1, **TINY)
    reg = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=pre.checkpoint, output_dir=str(root / "reg"),
                    progress=False, epochs=2, seed=1, freeze_base=True,
                    **{k: v for k, v in TINY.items() if k not in ARCH})
    return {"root": root, "pre": pre, "reg": reg}


# ---- a run owns its directory ---------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from aam.rundir import RunDirectory
run = RunDirectory(sys.argv[1]).claim()  # held while this process lives
print("holding", flush=True)
time.sleep(600)
"""


def test_a_second_run_into_a_busy_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"  # the other process owns the directory now
        status, err = cli_run(capsys, *PRETRAIN, "--epochs", 1, "--output-dir", out)
        assert status == 2 and "another aam run (pid" in one_error_line(err)
        assert not (out / "model.pt").exists()
    finally:
        holder.kill()
        holder.wait()
    status, _ = cli_run(capsys, *PRETRAIN, "--epochs", 1, "--output-dir", out)  # free again
    assert status == 0 and (out / "model.pt").exists()


def test_a_finished_run_is_kept_unless_resumed_or_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_run(capsys, *PRETRAIN, "--epochs", 2, "--output-dir", out)[0] == 0
    before = (out / "model.pt").read_bytes()
    status, err = cli_run(capsys, *PRETRAIN, "--epochs", 1, "--output-dir", out)
    assert status == 2 and "already holds a run" in one_error_line(err) and "--overwrite" in err
    assert (out / "model.pt").read_bytes() == before
    assert cli_run(capsys, *PRETRAIN, "--epochs", 1, "--output-dir", out, "--overwrite")[0] == 0
    history = pd.read_csv(out / "history.tsv", sep="\t")
    assert list(history["epoch"]) == [1]  # nothing of the old run is mixed in
    (tmp_path / "file").write_text("x")
    status, err = cli_run(capsys, *PRETRAIN, "--epochs", 1, "--output-dir", tmp_path / "file")
    assert status == 2 and "is a file" in one_error_line(err)


KILLED_DURING_SAVE = """
import os, signal, sys, torch
real_save, calls = torch.save, [0]
def save(obj, f, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:  # the first checkpoint save of epoch 2: half a file, then the power goes
        f.write(b"half a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save
from aam.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_kill_during_a_save_loses_nothing_and_the_run_resumes(tmp_path, capsys):
    out = tmp_path / "killed"
    args = [*PRETRAIN, "--epochs", "3", "--output-dir", str(out), "--lr", "1e-3", "--scheduler", "plateau"]
    proc = subprocess.run([sys.executable, "-c", KILLED_DURING_SAVE, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    checkpoints = out / "checkpoints"
    assert any(p.name.startswith(".tmp-") for p in checkpoints.iterdir())  # the interrupted write
    assert load_checkpoint(checkpoints / "last_checkpoint.pt").training_state["epoch"] == 1  # intact
    status, _ = cli_run(capsys, *args, "--resume", checkpoints / "last_checkpoint.pt")
    assert status == 0 and (out / "model.pt").exists()
    assert not any(p.name.startswith(".tmp-") for p in list(out.iterdir()) + list(checkpoints.iterdir()))
    assert list(pd.read_csv(out / "history.tsv", sep="\t")["epoch"]) == [1, 2, 3]


def test_resuming_a_finished_checkpoint_finishes_the_run(runs, tmp_path, capsys):
    last = runs["root"] / "pre" / "checkpoints" / "last_checkpoint.pt"
    out = tmp_path / "again"
    status, err = cli_run(capsys, *PRETRAIN, "--epochs", 2, "--seed", 1, "--output-dir", out, "--resume", last)
    assert status == 0, err
    resumed = load_checkpoint(out / "model.pt")
    original = runs["pre"].checkpoint
    assert all(torch.equal(resumed.model_state[k], v) for k, v in original.model_state.items())


def test_resume_refuses_another_target_data_or_architecture(runs, tmp_path, capsys):
    last = runs["root"] / "reg" / "checkpoints" / "last_checkpoint.pt"
    common = ["train", "--table", TABLE, "--sequences", SEQS, "--metadata", METADATA, "--pretrained-encoder",
              runs["root"] / "pre" / "model.pt", "--freeze-base", "--epochs", 3, "--seed", 1, "--batch-size", 4,
              "--num-threads", 1, "--resume", last]
    status, err = cli_run(capsys, *common, "--metadata-column", "subject",
                          "--classifier", "--output-dir", tmp_path / "a")
    assert status == 2 and "different run" in one_error_line(err) and "task regression vs classification" in err
    shallow = tmp_path / "small.biom"
    table = biom.load_table(TABLE)
    table.filter(table.ids()[:12], inplace=True)
    with biom.util.biom_open(str(shallow), "w") as fh:
        table.to_hdf5(fh, "test")
    status, err = cli_run(capsys, *[str(shallow) if a == TABLE else a for a in common], "--metadata-column", DAYS,
                          "--output-dir", tmp_path / "b")
    assert status == 2 and "training data" in one_error_line(err)
    last_pre = runs["root"] / "pre" / "checkpoints" / "last_checkpoint.pt"
    status, err = cli_run(capsys, *PRETRAIN[:-len(FLAGS)], "--asv-encoder", "none", "--embedding-dim", 32,
                          "--attention-heads", 2,
                          "--attention-layers", 1, "--max-bp", 48, "--token-limit", 32, "--num-threads", 1,
                          "--epochs", 3, "--output-dir", tmp_path / "c", "--resume", last_pre)
    assert status == 2 and "architecture (embedding_dim: 16 vs 32" in one_error_line(err)


# ---- models prove their integrity ---------------------------------------------------------------------------------
def _flip_weight_byte(path):
    """Flip one byte inside the largest tensor's data (the zip archive itself stays readable)."""
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    name_len, extra_len = np.frombuffer(bytes(data[info.header_offset + 26: info.header_offset + 30]), "<u2")
    at = info.header_offset + 30 + int(name_len) + int(extra_len) + info.compress_size // 2
    data[at] ^= 0x10
    open(path, "wb").write(bytes(data))


def test_damaged_weights_are_refused_everywhere(runs, tmp_path, capsys):
    model = tmp_path / "model.pt"
    model.write_bytes((runs["root"] / "reg" / "model.pt").read_bytes())
    _flip_weight_byte(model)
    with pytest.raises(AAMInputError, match="do not match the checksum"):
        load_checkpoint(model)
    status, err = cli_run(capsys, "predict", "--table", TABLE, "--sequences", SEQS, "--model", model, "--output",
                          tmp_path / "p.tsv")
    assert status == 2 and "checksum" in one_error_line(err) and not (tmp_path / "p.tsv").exists()


def test_non_finite_weights_are_refused(runs, tmp_path):
    ckpt = runs["reg"].checkpoint
    state = {k: v.clone() for k, v in ckpt.model_state.items()}
    state["base.distance_head.weight"][0, 0] = float("nan")
    Checkpoint(ckpt.record, state).save(tmp_path / "nan.pt")  # a consistent checksum: the values are the problem
    with pytest.raises(AAMInputError, match="NaN or infinite"):
        load_checkpoint(tmp_path / "nan.pt")


@pytest.mark.parametrize("width, message", [(64, "do not fit the architecture"),
                                            (4096, "larger than any dimension of the weights"),
                                            (10 ** 9, "larger than any dimension of the weights")])
def test_a_record_that_does_not_fit_its_weights_is_refused_without_allocating(runs, tmp_path, width, message):
    import resource
    ckpt = runs["reg"].checkpoint
    payload = Checkpoint(ckpt.record, ckpt.model_state).payload(include_training_state=False)
    record = json.loads(payload["record"])
    record["architecture"]["encoder"]["embedding_dim"] = width  # a 360 KB model that claims to be enormous
    record["architecture"]["encoder"]["attention_heads"] = 1
    # with the digest recomputed, as a forger would: the sizes themselves must be refused
    record["weights_sha256"] = model_digest(record, payload["model"], payload.get("members", {}))
    payload["record"] = json.dumps(record)
    torch.save(payload, tmp_path / "huge.pt")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    with pytest.raises(AAMInputError, match=message):
        load_checkpoint(tmp_path / "huge.pt")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200 * 1024  # nothing near the 4 GB claimed


def test_files_are_readable_by_collaborators(runs):
    old = os.umask(0o022)
    os.umask(old)
    for path in ("model.pt", "config.json", "history.tsv", "checkpoints/last_checkpoint.pt"):
        mode = stat.S_IMODE(os.stat(runs["root"] / "reg" / path).st_mode)
        assert mode == 0o666 & ~old, (path, oct(mode))


# ---- prediction says what it cannot vouch for ------------------------------------------------------------------------
def _table_with(extra):
    """The Moving Pictures slice plus extra samples given as {sample: {feature: count}}."""
    table = biom.load_table(TABLE)
    frame = pd.DataFrame(table.matrix_data.toarray(), index=table.ids("observation"), columns=table.ids())
    for sample, counts in extra.items():
        frame[sample] = pd.Series(counts, dtype=float).reindex(frame.index, fill_value=0.0)
    return biom.Table(frame.to_numpy(), list(frame.index), list(frame.columns))


def test_prediction_warns_per_kind_with_counts(runs):
    from aam.data.sequences import read_fasta
    mp = read_fasta(SEQS)
    kb = read_fasta(os.path.join(KB, "rep-seqs.fasta"))
    kb_ids = list(kb)[:30]
    first = next(iter(mp))
    table = _table_with({"empty": {}, "one-read": {first: 1}})
    # keyboard samples: 454 reads of another region, never seen by the Moving Pictures model
    frame = pd.DataFrame(table.matrix_data.toarray(), index=table.ids("observation"), columns=table.ids())
    extra = pd.DataFrame(0.0, index=kb_ids, columns=frame.columns)
    frame = pd.concat([frame, extra])
    frame["keyboard-1"] = 0.0
    frame.loc[kb_ids, "keyboard-1"] = 50.0
    table = biom.Table(frame.to_numpy(), list(frame.index), list(frame.columns))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = api.predict(runs["reg"].checkpoint, table, sequences={**mp, **{k: kb[k] for k in kb_ids}},
                           num_threads=1, log=lambda line: None)
    texts = [str(w.message) for w in caught if issubclass(w.category, AAMWarning)]
    assert any("1 sample(s) have no reads" in t and "'empty'" in t for t in texts), texts
    assert any("have fewer than" in t and "'one-read'" in t for t in texts), texts
    assert any("share no feature with the training data" in t and "'keyboard-1'" in t for t in texts), texts
    assert any("another 16S region" in t and "'keyboard-1'" in t for t in texts), texts
    assert "empty" not in pred.index and {"one-read", "keyboard-1"} <= set(pred.index)


def test_a_tiny_training_split_and_extreme_targets_are_warned_about(tmp_path):
    md = pd.read_csv(METADATA, sep="\t", index_col=0, dtype=str, comment=None)
    md = md[~md.index.str.startswith("#")]
    ids = list(biom.load_table(TABLE).ids())
    values = pd.to_numeric(md.loc[ids, DAYS])
    values.iloc[0] = 1e30
    frame = pd.DataFrame({DAYS: values})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.train(TABLE, frame, DAYS, sequences=SEQS, output_dir=str(tmp_path / "t"), progress=False, epochs=1,
                  validation_fraction=0.9, **TINY)
    texts = [str(w.message) for w in caught if issubclass(w.category, AAMWarning)]
    assert any("samples train after the validation split" in t and "--validation-fraction 0.9" in t
               for t in texts), texts
    assert any("lie far outside the others" in t and "1e+30" in t for t in texts), texts


def test_a_pretrained_base_passed_to_predict_says_what_it_is_for(runs, tmp_path, capsys):
    status, err = cli_run(capsys, "predict", "--table", TABLE, "--sequences", SEQS, "--model",
                          runs["root"] / "pre" / "model.pt", "--output", tmp_path / "p.tsv")
    line = one_error_line(err)
    assert status == 2 and "predicts nothing by itself" in line and "--pretrained-encoder" in line


# ---- inputs that used to end in tracebacks ---------------------------------------------------------------------------
def test_bad_inputs_end_in_one_error_line(tmp_path, capsys):
    status, err = cli_run(capsys, *PRETRAIN, "--embedding-dim", 30, "--attention-heads", 4, "--output-dir",
                          tmp_path / "a")
    assert status == 2 and "--attention-heads (4) must divide --embedding-dim (30)" in one_error_line(err)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    (tmp_path / "ids.txt").write_text("a\nb\n")
    status, err = cli_run(capsys, *PRETRAIN[:5], "--unifrac-matrix", tmp_path / "objects.npy", "--unifrac-ids",
                          tmp_path / "ids.txt", *FLAGS, "--output-dir", tmp_path / "b")
    assert status == 2 and "not a numeric .npy matrix" in one_error_line(err)
    status, err = cli_run(capsys, *PRETRAIN[:5], "--unifrac-matrix", tmp_path / "objects.npy", "--unifrac-ids",
                          TABLE, *FLAGS, "--output-dir", tmp_path / "b")
    assert status == 2 and "is not text" in one_error_line(err)
    huge = _table_with({"huge": {next(iter(biom.load_table(TABLE).ids("observation"))): 5e12}})
    with biom.util.biom_open(str(tmp_path / "huge.biom"), "w") as fh:
        huge.to_hdf5(fh, "test")
    status, err = cli_run(capsys, "pretrain", "--table", tmp_path / "huge.biom", "--sequences", SEQS, "--tree", TREE,
                          *FLAGS, "--output-dir", tmp_path / "c")
    assert status == 2 and "counts above 1e+12" in one_error_line(err) and "'huge'" in err


def test_a_billion_reads_rarefy_in_little_memory():
    from aam.data.table import rarefy
    table = biom.Table(np.array([[6e8, 10.0], [4e8, 20.0]]), ["f1", "f2"], ["deep", "shallow"])
    rare, dropped = rarefy(table, 25, seed=3)
    assert dropped == [] and rare.sum(axis="sample").tolist() == [25.0, 25.0]


def test_unicode_sample_ids_in_hdf5_biom(tmp_path):
    from aam.data.table import load_table
    table = biom.Table(np.array([[5, 3], [2, 9]]), ["f1", "f2"], ["sämple-1", "échantillon-2"])
    with biom.util.biom_open(str(tmp_path / "u.biom"), "w") as fh:
        table.to_hdf5(fh, "test")
    back = load_table(str(tmp_path / "u.biom"))
    assert list(back.ids()) == ["sämple-1", "échantillon-2"]
    assert back.matrix_data.toarray().tolist() == [[5, 3], [2, 9]]


def test_per_sample_novelty_fields_flag_another_region(runs):
    """The per-sample fields behind the prediction warnings (for the prediction table): a keyboard sample (454
    reads of another region) is flagged, the Moving Pictures samples are not."""
    from aam.data.novelty import sample_novelty
    from aam.data.pipeline import prepare_table
    from aam.data.sequences import read_fasta
    mp, kb = read_fasta(SEQS), read_fasta(os.path.join(KB, "rep-seqs.fasta"))
    kb_ids = list(kb)[:30]
    table = biom.load_table(TABLE)
    frame = pd.DataFrame(table.matrix_data.toarray(), index=table.ids("observation"), columns=table.ids())
    frame = pd.concat([frame, pd.DataFrame(0.0, index=kb_ids, columns=frame.columns)])
    frame["keyboard-1"] = 0.0
    frame.loc[kb_ids, "keyboard-1"] = 50.0
    table = biom.Table(frame.to_numpy(), list(frame.index), list(frame.columns))
    record = runs["reg"].checkpoint.record
    prepared = prepare_table(table, sequences={**mp, **{k: kb[k] for k in kb_ids}}, max_bp=record.max_bp,
                             rarefy_depth=0)
    novelty = sample_novelty(prepared, record.data.signature, record.max_bp)
    assert novelty.loc["keyboard-1", "region_share"] < 0.5 and novelty.loc["keyboard-1", "seen_feature_share"] == 0
    others = novelty.drop(index="keyboard-1")
    assert (others["region_share"] >= 0.5).all() and (others["seen_feature_share"] > 0.9).all()
