"""Running a model on a batch: moving it to the device, the plain forward pass and the cached frozen-base one."""
import torch

from aam.training.cache import cached_forward

__all__ = ["move_batch", "forward_batch", "cached_forward", "unwrap"]


def move_batch(batch, device):
    """The batch dict with its tensors on `device`."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def unwrap(model):
    """The underlying module of a DDP / DataParallel wrapper (FSDP2 modules are their own module)."""
    return getattr(model, "module", model)


def forward_batch(model, batch, dedup=True):
    """Run `model` on a batch dict (tensors already on the model's device)."""
    kwargs = {"asv_ids": batch.get("asv_ids"), "dedup": dedup}
    # look through a DDP / DataParallel wrapper: the attribute lives on the wrapped model
    if "categorical" in batch and getattr(unwrap(model), "accepts_categorical", False):
        kwargs["categorical"] = batch["categorical"]
    if "numeric" in batch and getattr(unwrap(model), "accepts_numeric", False):
        kwargs["numeric"] = batch["numeric"]
    return model(batch["tokens"], batch["counts"], **kwargs)
