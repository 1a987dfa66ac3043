"""Multi-process training on CPU: 2 gloo processes started with torch.multiprocessing.

Each test spawns its ranks once and checks several things inside them, because starting processes dominates the
runtime. Results travel back through small files in a temporary directory.
"""
import faulthandler
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tests.conftest import MP, TINY

WORLD = 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank, port):
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "AAM_DIST_TIMEOUT": "60",
                       "MPLBACKEND": "Agg"})
    torch.set_num_threads(1)
    faulthandler.enable()  # a native crash in a rank prints every thread's Python stack


def _finish():
    """End a rank that succeeded: leave the group together, then exit without interpreter teardown.

    Process-group objects still referenced at interpreter shutdown can abort in their C++ destructors
    (pytorch/pytorch#179291); the results are already on disk, so skipping the teardown loses nothing.
    """
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _spawn(fn, *args):
    port = _free_port()
    mp.spawn(fn, args=(port,) + args, nprocs=WORLD, join=True)


# ---- the gathered pairwise loss -----------------------------------------------------------------------------
def _gathered_loss_worker(rank, port, out_dir):
    _env(rank, port)
    from aam.training import distributed as D
    from aam.training.losses import GatheredPairwiseLoss, pairwise_distance_loss
    ctx = D.init_distributed("ddp", "cpu")
    try:
        torch.manual_seed(0)
        N, D_in, D_out = 7, 5, 3
        x = torch.randn(N, D_in, dtype=torch.float64)
        a = torch.rand(N, N, dtype=torch.float64)
        # float32-representable: the loss holds the matrix in float32, as the collator does
        dm = ((a + a.T) / 2).fill_diagonal_(0).float().double()
        ids = [f"s{i}" for i in range(N)]
        # uneven local batches (4 and 3 samples) in a shuffled global order
        order = [5, 0, 3, 6, 1, 4, 2]
        local = order[:4] if rank == 0 else order[4:]
        w0 = torch.randn(D_in, D_out, dtype=torch.float64)
        # single-process reference on the global batch
        ref = pairwise_distance_loss(x[order] @ w0, dm[order][:, order])
        # the same batch split over 2 ranks; gradients averaged over ranks as DDP/FSDP do
        w = w0.clone().requires_grad_(True)
        loss_fn = GatheredPairwiseLoss(dm.numpy(), ids, ctx)
        local_block = dm[local][:, local]
        loss = loss_fn(x[local] @ w, local_block, sample_ids=[ids[i] for i in local])
        loss.backward()
        grad = w.grad.clone()
        torch.distributed.all_reduce(grad)
        grad /= WORLD
        ref_grad = _ref_grad(w0, x, dm, order)
        with open(os.path.join(out_dir, f"loss{rank}.json"), "w") as fh:
            json.dump({"ref": float(ref), "loss": float(loss.detach()),
                       "grad_close": bool(torch.allclose(grad, ref_grad)),
                       "max_err": float((grad - ref_grad).abs().max())}, fh)
    except BaseException:
        D.shutdown(ctx)
        raise
    _finish()


def _ref_grad(w0, x, dm, order):
    from aam.training.losses import pairwise_distance_loss
    w = w0.clone().requires_grad_(True)
    pairwise_distance_loss(x[order] @ w, dm[order][:, order]).backward()
    return w.grad


def test_gathered_pairwise_loss_equals_single_process(tmp_path):
    _spawn(_gathered_loss_worker, str(tmp_path))
    for rank in range(WORLD):
        r = json.load(open(tmp_path / f"loss{rank}.json"))
        assert r["loss"] == pytest.approx(r["ref"], rel=1e-10)
        assert r["grad_close"], r["max_err"]


# ---- DDP vs FSDP2 training, checkpoints ------------------------------------------------------------------------
def _train_worker(rank, port, out_dir, mode):
    _env(rank, port)
    from aam import api
    opts = dict(TINY, epochs=2, seed=3, validation_fraction=0.2, device="cpu")
    opts["distributed" if mode == "ddp" else "fsdp"] = True
    res = api.pretrain(os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"),
                       tree=os.path.join(MP, "tree.nwk"), output_dir=os.path.join(out_dir, mode), progress=False,
                       **opts)
    from aam.training import distributed as D
    ctx = D.init_distributed(mode, "cpu")  # the group api joined is still up: reuse it to compare ranks
    params = torch.cat([p.detach().flatten() for p in res.checkpoint.model_state.values()
                        if p.is_floating_point()])
    gathered = D.all_gather_objects(ctx, params)
    with open(os.path.join(out_dir, f"{mode}{rank}.json"), "w") as fh:
        json.dump({"losses": [row["train/total_loss"] for row in res.history],
                   "val": [row["val/total_loss"] for row in res.history],
                   "same_params": bool(torch.equal(gathered[0], gathered[1]))}, fh)
    _finish()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    for mode in ("ddp", "fsdp"):
        _spawn(_train_worker, str(out), mode)
    return out


def test_ddp_ranks_agree_and_fsdp_matches_ddp(trained):
    ddp = [json.load(open(trained / f"ddp{r}.json")) for r in range(WORLD)]
    fsdp = [json.load(open(trained / f"fsdp{r}.json")) for r in range(WORLD)]
    assert all(r["same_params"] for r in ddp + fsdp)
    assert ddp[0]["losses"] == ddp[1]["losses"]  # logged values are reduced over ranks
    np.testing.assert_allclose(fsdp[0]["losses"], ddp[0]["losses"], rtol=1e-4)
    np.testing.assert_allclose(fsdp[0]["val"], ddp[0]["val"], rtol=1e-4)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_rank_checkpoint_loads_in_one_process(trained, mode):
    from aam import api
    from aam.checkpoint import load_checkpoint
    ckpt = load_checkpoint(trained / mode / "model.pt")
    assert not any(k.startswith("module.") for k in ckpt.model_state)
    last = load_checkpoint(trained / mode / "checkpoints" / "last_checkpoint.pt")
    assert "optimizer" in last.training_state
    frame, _ = api.embed(ckpt, os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"),
                         device="cpu", num_threads=1, log=lambda s: None)
    again, _ = api.embed(str(trained / mode / "model.pt"), os.path.join(MP, "table.biom"),
                         sequences=os.path.join(MP, "rep-seqs.fasta"), device="cpu", num_threads=1,
                         log=lambda s: None)
    assert np.isfinite(frame.to_numpy()).all()
    np.testing.assert_allclose(frame.to_numpy(), again.to_numpy())


def test_ddp_resume_single_process(trained, tmp_path):
    """A 2-rank training checkpoint resumes in one process (full state dict, index-keyed optimizer)."""
    from aam import api
    for mode in ("ddp", "fsdp"):
        res = api.pretrain(os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"),
                           tree=os.path.join(MP, "tree.nwk"), output_dir=str(tmp_path / mode), progress=False,
                           resume=str(trained / mode / "checkpoints" / "last_checkpoint.pt"),
                           **dict(TINY, epochs=3, seed=3, validation_fraction=0.2, device="cpu"))
        assert [row["epoch"] for row in res.history] == [1, 2, 3]


# ---- a failing rank -----------------------------------------------------------------------------------------------
def test_failing_rank_ends_with_a_clear_message(tmp_path):
    """Rank 1 dies before training; rank 0 must stop with an error line, not hang."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys\n"
        "if os.environ['RANK'] == '1':\n"
        "    import torch.distributed as dist\n"
        "    from aam.training import distributed as D\n"
        "    D.init_distributed('ddp', 'cpu')\n"
        "    sys.exit(7)\n"
        "from aam.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, AAM_DIST_TIMEOUT="15", MPLBACKEND="Agg", PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           str(script), "pretrain", "--table", os.path.join(MP, "table.biom"), "--sequences",
           os.path.join(MP, "rep-seqs.fasta"), "--tree", os.path.join(MP, "tree.nwk"), "--distributed",
           "--output-dir", str(tmp_path / "out"), "--epochs", "1", "--device", "cpu",
           "--embedding-dim", "16", "--attention-heads", "2", "--attention-layers", "1", "--max-bp", "48",
           "--token-limit", "32", "--num-threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "exitcode" in proc.stderr or "error:" in proc.stderr
