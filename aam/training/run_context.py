"""The `RunContext` record: where and how a run computes (device, precision, threads, place in a process group).

It lives in a module of its own, below everything that uses it: `aam.training.distributed` builds and reads
contexts, `aam.training.losses` reads them, and `aam.training.context` (which builds a run's context and wraps its
model, and so needs both of those) re-exports it. Keeping the record here keeps those imports pointing one way.
"""
from dataclasses import dataclass


@dataclass
class RunContext:
    """How this process takes part in a run.

    Attributes
    ----------
    device : torch.device
    precision : {'none', 'bf16', 'fp16'}
        Autocast precision actually used (fp16 asked for on a CPU runs as bf16).
    threads : int
        CPU threads PyTorch uses.
    mode : {None, 'ddp', 'fsdp', 'dp'}
        None for plain single-process training.
    rank, world_size, local_rank : int
    backend : str or None
        'nccl' or 'gloo' when a process group is in use.
    sharded_checkpoint : bool
        FSDP only: write training checkpoints with torch.distributed.checkpoint (one shard per rank).
    owns_group : bool
        True when this run created the process group (and `aam.training.distributed.shutdown` destroys it).
    """

    device: object = None
    precision: str = "none"
    threads: int = 0
    mode: object = None
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: object = None
    sharded_checkpoint: bool = False
    owns_group: bool = False

    @property
    def active(self):
        """True when a process group with more than one rank takes part (collectives are needed)."""
        return self.mode in ("ddp", "fsdp") and self.world_size > 1

    @property
    def wrapped(self):
        """True when the model is trained through a wrapper (DDP, FSDP2 or DataParallel)."""
        return self.active or self.mode == "dp"

    @property
    def is_main(self):
        """Rank 0 alone writes logs, plots, TensorBoard and checkpoints."""
        return self.rank == 0
