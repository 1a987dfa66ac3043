"""Random state of a run: seeding, and capturing / restoring it so a resumed run continues the same draws."""
import random

import numpy as np
import torch


def seed_everything(seed):
    """Seed Python, NumPy and torch (CPU and every GPU) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def rng_state():
    """The random state of Python, NumPy and torch as tensors and plain lists (safe for weights_only loading)."""
    state = {"python": list(random.getstate()), "numpy": list(np.random.get_state()),
             "torch": torch.get_rng_state()}
    state["python"][1] = list(state["python"][1])
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what `rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
