"""Multi-process training over torch.distributed: DDP, FSDP2 (``fully_shard``) and single-process DataParallel.

Processes are started by ``torchrun``, which sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT.
`init_distributed` turns those into a process group (nccl on CUDA/ROCm GPUs, gloo on CPU) with a bounded timeout
(``AAM_DIST_TIMEOUT`` seconds, default 600), so that a rank that dies mid-run makes the others fail with a clear
message instead of waiting forever in a collective.

Everything else in this module is a no-op for a single process, so the trainer calls it unconditionally. Every
function takes the run's `aam.training.context.RunContext` explicitly.
"""
import datetime
import os
import warnings

import torch

from aam.errors import AAMInputError, AAMTrainingError, warn
from aam.training import forward
from aam.training.run_context import RunContext

DEFAULT_TIMEOUT = 600


def timeout_seconds():
    """The collective timeout from ``AAM_DIST_TIMEOUT`` (seconds; default 600)."""
    raw = os.environ.get("AAM_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
        raise AAMInputError(f"AAM_DIST_TIMEOUT={raw!r} is not a number of seconds") from None
    return max(1.0, value)


def mode_from_options(opts):
    """'ddp', 'fsdp', 'dp' or None from the distributed, fsdp and data_parallel options (`aam.options.Options`)."""
    chosen = [name for name, flag in (("ddp", "distributed"), ("fsdp", "fsdp"), ("dp", "data_parallel"))
              if getattr(opts, flag)]
    if len(chosen) > 1:
        flags = {"ddp": "{opt:distributed}", "fsdp": "{opt:fsdp}", "dp": "{opt:data_parallel}"}
        raise AAMInputError(f"choose one of {', '.join(flags[c] for c in chosen)}; they are alternatives")
    if opts.fsdp_sharded_checkpoint and chosen != ["fsdp"]:
        raise AAMInputError("{opt:fsdp_sharded_checkpoint} needs {opt:fsdp}")
    return chosen[0] if chosen else None


def init_distributed(mode, device_name="auto", sharded_checkpoint=False):
    """Join the process group that torchrun set up (or describe a single process).

    Parameters
    ----------
    mode : {None, 'ddp', 'fsdp', 'dp'}
    device_name : str
        The --device option; with a process group each rank takes GPU ``LOCAL_RANK``.
    sharded_checkpoint : bool

    Returns
    -------
    RunContext
        Without precision and threads (`aam.training.context.build_context` adds them).
    """
    import torch.distributed as dist
    from aam.training.device import resolve_device
    if mode in (None, "dp"):
        device = resolve_device(device_name)
        if mode == "dp" and (device.type != "cuda" or torch.cuda.device_count() < 2):
            warn("{opt:data_parallel} needs at least 2 GPUs; training in a single process on "
                 f"{device}.", stacklevel=2)
            mode = None
        return RunContext(mode=mode, device=device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        flag = "{opt:fsdp}" if mode == "fsdp" else "{opt:distributed}"
        warn(f"{flag} was given but the process was not started by torchrun (no RANK/WORLD_SIZE); "
             "training in a single process. Launch with: torchrun --nproc_per_node=N -m aam.cli ...",
             stacklevel=2)
        return RunContext(mode=None, device=resolve_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_gpu = (device_name or "auto").startswith(("auto", "cuda")) and torch.cuda.is_available()
    if (device_name or "").startswith("cuda") and not torch.cuda.is_available():
        resolve_device(device_name)  # raises the usual "no GPU" error
    if use_gpu:
        # one GPU per process; ROCm builds expose their GPUs as 'cuda' and RCCL under the name 'nccl'
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    owns = False
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_seconds())
        kwargs = {"device_id": device} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timeout, **kwargs)
        owns = True
    return RunContext(mode=mode, rank=rank, world_size=world, local_rank=local_rank, device=device,
                       backend=backend, sharded_checkpoint=bool(sharded_checkpoint and mode == "fsdp"),
                       owns_group=owns)


def shutdown(ctx):
    """Destroy the process group `init_distributed` created (safe to call twice or for a single process)."""
    import torch.distributed as dist
    if ctx is not None and ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        ctx.owns_group = False


# ---- collectives (no-ops for one process) -------------------------------------------------------------------
def _guard(what, fn):
    """Run a collective and turn a timeout or a dead peer into an AAMTrainingError naming the likely cause."""
    try:
        return fn()
    except (RuntimeError, ValueError) as err:
        # gloo reports a vanished peer as "Connection closed by peer" or a timeout; nccl as a watchdog timeout
        text = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise AAMTrainingError(
            f"distributed training stopped during {what}: another rank failed or stopped responding ({text}). "
            "Check the other ranks' output for the original error; the collective timeout is "
            f"AAM_DIST_TIMEOUT={timeout_seconds():g}s.") from err


def barrier(ctx):
    if ctx.active:
        import torch.distributed as dist
        _guard("a barrier", dist.barrier)


def any_flag(ctx, flag):
    """True on every rank when `flag` is True on any rank (so all ranks skip a step together)."""
    if not ctx.active:
        return bool(flag)
    import torch.distributed as dist
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device(ctx))
    _guard("agreeing on a skipped step", lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
    return bool(t.item() > 0)


def broadcast_object(ctx, obj, src=0):
    """`obj` of rank `src` on every rank."""
    if not ctx.active:
        return obj
    import torch.distributed as dist
    box = [obj]
    _guard("a broadcast", lambda: dist.broadcast_object_list(box, src=src))
    return box[0]


def reduce_weighted_sums(ctx, sums, weight):
    """Sum per-key sums and the total weight over ranks.

    Parameters
    ----------
    ctx : RunContext
    sums : dict of str -> float
        Sums of ``value * batch size`` on this rank.
    weight : float
        Samples seen on this rank.

    Returns
    -------
    (dict, float)
        Global sums and weight (the keys are the union over ranks; a key missing on a rank counts 0).
    """
    if not ctx.active:
        return sums, weight
    import torch.distributed as dist
    keys = set()
    for k in all_gather_objects(ctx, sorted(sums)):
        keys.update(k)
    keys = sorted(keys)
    t = torch.tensor([float(sums.get(k, 0.0)) for k in keys] + [float(weight)], dtype=torch.float64,
                     device=_comm_device(ctx))
    _guard("reducing metrics", lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM))
    values = t.tolist()
    return dict(zip(keys, values[:-1])), values[-1]


def all_gather_objects(ctx, obj):
    """The list of `obj` from every rank, in rank order."""
    if not ctx.active:
        return [obj]
    import torch.distributed as dist
    out = [None] * ctx.world_size
    _guard("gathering", lambda: dist.all_gather_object(out, obj))
    return out


def _comm_device(ctx):
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")


def gather_rows(x, ctx):
    """Differentiable concatenation of every rank's rows of `x` in rank order (uneven row counts allowed).

    all_gather needs equal shapes, so each rank pads to the largest local size and the padding is cut out
    again; the backward of ``torch.distributed.nn.functional.all_gather`` sums each rank's gradient for a
    slice back onto the rank that owns it.

    Parameters
    ----------
    x : torch.Tensor
        [B_local, ...] on this rank.
    ctx : RunContext

    Returns
    -------
    (torch.Tensor, list of int)
        [sum of B_local, ...] and the local sizes per rank.
    """
    if not ctx.active:
        return x, [x.shape[0]]
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(ctx.world_size)]
    _guard("gathering batch sizes", lambda: dist.all_gather(sizes, n))
    sizes = [int(s.item()) for s in sizes]
    top = max(sizes)
    if x.shape[0] < top:
        pad = x.new_zeros((top - x.shape[0],) + tuple(x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    with warnings.catch_warnings():
        # recent torch marks this autograd-aware gather deprecated in favour of a private module; it is the
        # public differentiable all_gather, so keep using it and keep the log clean
        warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")
        parts = _guard("gathering embeddings", lambda: all_gather(x))
    return torch.cat([p[:s] for p, s in zip(parts, sizes)], dim=0), sizes


# ---- model wrapping -------------------------------------------------------------------------------------------
def wrap_model(model, ctx):
    """The model as this mode trains it (DDP / FSDP2 / DataParallel), already on `ctx.device`.

    FSDP2 shards each transformer block and then the root; the parameters become DTensors, so the optimizer must
    be built after this call.
    """
    model = model.to(ctx.device)
    if ctx.mode == "dp":
        return _DataParallel(model)
    if not ctx.active:
        return model
    if ctx.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP
        # find_unused_parameters: heads without a loss in this run (taxonomy, Faith PD, nucleotides with
        # --nuc-penalty 0) get no gradient, which plain DDP reports as an error at the next step
        return DDP(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                   find_unused_parameters=True)
    if ctx.mode == "fsdp":
        from torch.distributed.fsdp import fully_shard
        from aam.models.layers import TransformerBlock
        for module in list(model.modules()):
            if isinstance(module, TransformerBlock):
                fully_shard(module)
        fully_shard(model)
        # the model returns views of its outputs (slices of the pooled sequence); AAM never modifies outputs
        # in place, which is what the warning is about, so it only clutters the log every step
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        return model
    raise ValueError(f"unknown distributed mode {ctx.mode!r}")


class _DataParallel(torch.nn.DataParallel):
    """DataParallel whose gathered outputs keep ``nuc_row_slot`` pointing at the right slots.

    Each replica numbers its encoded ASV rows by its own slots ``b * S + s``; after concatenation the rows of
    replica i must be shifted by the slots of the replicas before it. The pairwise loss needs nothing special:
    DataParallel concatenates the distance embeddings, so the loss sees the whole batch on one device.
    """

    def gather(self, outputs, output_device):
        offset = 0
        fixed = []
        for out in outputs:
            out = dict(out)
            mask = out.get("asv_mask")
            if "nuc_row_slot" in out and mask is not None:
                out["nuc_row_slot"] = out["nuc_row_slot"] + offset
            if mask is not None:
                offset += mask.shape[0] * mask.shape[1]
            fixed.append(out)
        return super().gather(fixed, output_device)


def reshard(model, ctx):
    """Put FSDP2 parameters back into their sharded form.

    The root of an FSDP2 model keeps its parameters unsharded after a forward pass without backward (as in
    evaluation), and then ``named_parameters`` no longer returns the tensors the optimizer holds, which breaks
    the next state-dict collection; resharding restores them.
    """
    if ctx.mode == "fsdp" and ctx.active and hasattr(model, "reshard"):
        model.reshard()


def full_model_state(model, ctx):
    """A full, unsharded CPU state dict of `model` (collective under FSDP: every rank must call it).

    Returns
    -------
    dict
        Keys as in the plain model (no ``module.`` prefix); empty on ranks other than 0 under FSDP.
    """
    if ctx.mode == "fsdp" and ctx.active:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        return _guard("collecting the model state", lambda: get_model_state_dict(
            model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
    return forward.unwrap(model).state_dict()


def full_optimizer_state(model, optimizer, ctx):
    """The optimizer state in the single-process layout (collective under FSDP)."""
    if ctx.mode == "fsdp" and ctx.active:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
        return _guard("collecting the optimizer state", lambda: get_optimizer_state_dict(
            model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
    return optimizer.state_dict()


def load_full_state(model, optimizer, model_state, optim_state, ctx):
    """Load a full (single-process layout) model and optimizer state into a possibly wrapped model."""
    if ctx.mode == "fsdp" and ctx.active:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                             set_optimizer_state_dict)
        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_state, options=opts)
        if optimizer is not None and optim_state is not None:
            set_optimizer_state_dict(model, optimizer, optim_state_dict=_fqn_keyed(model, optim_state),
                                     options=opts)
        return
    forward.unwrap(model).load_state_dict(model_state)
    if optimizer is not None and optim_state is not None:
        optimizer.load_state_dict(_index_keyed(forward.unwrap(model), optimizer, optim_state))


def _trainable_names(model):
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _fqn_keyed(model, state):
    """An index-keyed optimizer state (single process, DDP) re-keyed by parameter name, as FSDP expects."""
    state = dict(state)
    groups = state.get("param_groups", [])
    if not groups or all(isinstance(p, str) for g in groups for p in g["params"]):
        return state
    names = _trainable_names(model)
    state["state"] = {names[int(k)]: v for k, v in state.get("state", {}).items()}
    state["param_groups"] = [dict(g, params=[names[int(i)] for i in g["params"]]) for g in groups]
    return state


def _index_keyed(model, optimizer, state):
    """A name-keyed optimizer state (written under FSDP) re-keyed by parameter index for a plain optimizer."""
    groups = state.get("param_groups", [])
    if not groups or not any(isinstance(p, str) for g in groups for p in g["params"]):
        return state
    index = {n: i for i, n in enumerate(_trainable_names(model))}
    state = dict(state)
    state["state"] = {index[k]: v for k, v in state.get("state", {}).items()}
    state["param_groups"] = [dict(g, params=[index[p] for p in g["params"]]) for g in groups]
    return state


# ---- sharded checkpoints ---------------------------------------------------------------------------------------
def save_sharded(path, model, optimizer, ctx):
    """Write model and optimizer shards of every rank to the directory `path` (torch.distributed.checkpoint).

    Loading needs the same number of processes (see docs/multi-gpu.md).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_sd, optim_sd = get_state_dict(model, optimizer)
    _guard("writing a sharded checkpoint",
           lambda: dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=path))


def load_sharded(path, model, optimizer, ctx):
    """Read what `save_sharded` wrote into the (FSDP-wrapped) model and optimizer."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optimizer": optim_sd}
    _guard("reading a sharded checkpoint", lambda: dcp.load(state, checkpoint_id=path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
