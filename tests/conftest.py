"""Shared test settings: paths to the bundled real-data slices and tiny model settings."""
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
