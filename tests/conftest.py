"""Shared test settings: paths to the bundled real-data slices, tiny model settings, cross-worker helpers."""
import contextlib
import fcntl
import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
MP = os.path.join(DATA, "moving-pictures")
KB = os.path.join(DATA, "keyboard")
SHARED = os.path.abspath(os.path.join(HERE, "..", "..", "shared", "data"))

# tiny architecture for fast tests on 2 CPU cores
TINY = dict(embedding_dim=16, attention_heads=2, attention_layers=1, token_limit=32, max_bp=48, batch_size=4,
            asv_chunk_size=64, num_threads=1)


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
