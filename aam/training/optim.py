"""Optimizers and learning-rate schedules, behind one small interface the trainer can drive.

`build_scheduler` returns a `Schedule` whatever the name, so the trainer needs no special cases: it steps after
every optimizer step when ``step_per == 'step'`` and after every epoch with the validation loss when
``step_per == 'epoch'``. Schedule states hold only numbers and lists, so they can be stored in checkpoints that
are loaded with ``torch.load(weights_only=True)``.
"""
import math
import warnings

import torch

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("warmup_cosine", "cosine_restarts", "plateau", "onecycle", "none", "constant")

# OneCycleLR's defaults, kept here so that scale_base_lrs can rebuild its per-group learning rates
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4


def parameter_groups(model, weight_decay):
    """Split the trainable parameters into a decayed and a non-decayed group.

    Biases, LayerNorm weights (every parameter with fewer than 2 dimensions) and embedding tables are not
    decayed: shrinking them towards zero does not regularize anything useful and hurts rare tokens.

    Parameters
    ----------
    model : torch.nn.Module
    weight_decay : float

    Returns
    -------
    list of dict
        Non-empty optimizer parameter groups, each with a ``name`` ('decay' or 'no_decay').
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "embedding" in name.lower():
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(name, model, lr, weight_decay):
    """The optimizer `name` over the trainable parameters of `model`.

    Parameters
    ----------
    name : {'adamw', 'adam', 'sgd'} or None
        None means 'adamw'. Weight decay is decoupled for 'adamw' and an L2 penalty for 'adam' and 'sgd'
        (momentum 0.9); for all three it skips biases, norm weights and embeddings (see `parameter_groups`).
    model : torch.nn.Module
    lr, weight_decay : float

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    ValueError
        Unknown name, or a model without trainable parameters.
    """
    name = (name or "adamw").lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
    groups = parameter_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def _plain_state(state):
    """A scheduler state without callables (functions cannot be stored in weights-only checkpoints)."""
    return {k: v for k, v in state.items() if not callable(v)}


class Schedule:
    """A learning-rate schedule with one interface for per-step and per-epoch torch schedulers.

    Parameters
    ----------
    name : str
    optimizer : torch.optim.Optimizer
    scheduler : torch.optim.lr_scheduler.LRScheduler or ReduceLROnPlateau or None
        None for a constant learning rate.
    step_per : {'step', 'epoch'}
    total_steps : int

    Attributes
    ----------
    step_per : str
        When the trainer calls `step`: after each optimizer step or after each epoch.
    """

    def __init__(self, name, optimizer, scheduler, step_per, total_steps):
        self.name = name
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.step_per = step_per
        self.total_steps = total_steps

    def step(self, metric=None):
        """Advance the schedule; `metric` (the validation loss) is used by 'plateau' and ignored otherwise."""
        if self.scheduler is None:
            return
        if self.name == "plateau":
            # no validation score (or a non-finite one) is no evidence of a plateau
            if metric is not None and math.isfinite(float(metric)):
                self.scheduler.step(float(metric))
            return
        # OneCycleLR's own total_steps: after load_state_dict it is the stored run's, which may differ
        if self.name == "onecycle" and self.scheduler.last_epoch >= self.scheduler.total_steps - 1:
            # the learning rate after total_steps - 1 steps is the cycle's last (the lowest); one step more
            # would compute a rising value past the end of the cosine, and OneCycleLR raises after that, so
            # extra steps (the trainer's step after the last batch, a resumed or re-sized run) keep it
            return
        self.scheduler.step()

    def get_last_lr(self):
        """The learning rate of every parameter group, as set by the last step."""
        if self.scheduler is None or self.name == "plateau":
            return [group["lr"] for group in self.optimizer.param_groups]
        return list(self.scheduler.get_last_lr())

    def state_dict(self):
        state = {} if self.scheduler is None else _plain_state(self.scheduler.state_dict())
        return {"name": self.name, "step_per": self.step_per, "total_steps": self.total_steps, "state": state}

    def load_state_dict(self, state):
        """Restore a state from `state_dict`; a state of another schedule is refused with a warning."""
        if state.get("name") != self.name:
            warnings.warn(f"the checkpoint's learning-rate schedule is {state.get('name')!r}, not {self.name!r}; "
                          f"the {self.name} schedule starts from its beginning", stacklevel=2)
            return
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["state"])

    def scale_base_lrs(self, scale):
        """Multiply the schedule's base learning rates by `scale` (resuming with a new --lr).

        The optimizer groups' current ``lr`` is the caller's to scale; this changes what later steps compute
        from. 'plateau' and 'constant' keep no base learning rate, so nothing changes for them.
        """
        if self.scheduler is None or self.name == "plateau":
            return
        if self.name == "onecycle":
            # OneCycleLR computes from max_lr, initial_lr and min_lr in each group; derive the latter two from
            # max_lr so the result is the same whether or not the caller already scaled initial_lr
            for group in self.optimizer.param_groups:
                group["max_lr"] *= scale
                group["initial_lr"] = group["max_lr"] / ONECYCLE_DIV_FACTOR
                group["min_lr"] = group["initial_lr"] / ONECYCLE_FINAL_DIV_FACTOR
            return
        self.scheduler.base_lrs = [lr * scale for lr in self.scheduler.base_lrs]


def warmup_cosine_factor(step, total_steps, warmup_steps, eta_ratio=0.0):
    """Learning-rate multiplier after `step` optimizer steps: linear warm-up, then cosine decay.

    Parameters
    ----------
    step : int
        Optimizer steps taken so far.
    total_steps, warmup_steps : int
    eta_ratio : float
        Final multiplier (eta_min / base lr).

    Returns
    -------
    float
        ``(step + 1) / (warmup_steps + 1)`` during warm-up (never 0, so the first step already learns), 1 at
        ``step == warmup_steps``, then a cosine down to `eta_ratio` at `total_steps`.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return eta_ratio + (1.0 - eta_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _warmup_cosine(optimizer, total_steps, warmup_steps, eta_min):
    if warmup_steps is None:
        warmup_steps = max(1, int(0.1 * total_steps))
    warmup_steps = int(warmup_steps)
    scheduler = None

    def factor(group_index):
        # the base lr is read at every step, so eta_min stays an absolute learning rate after scale_base_lrs
        def f(step):
            base = scheduler.base_lrs[group_index] if scheduler is not None else \
                optimizer.param_groups[group_index]["initial_lr"]
            ratio = min(1.0, eta_min / base) if base > 0 else 0.0
            return warmup_cosine_factor(step, total_steps, warmup_steps, ratio)
        return f

    # 'initial_lr' is what LambdaLR takes as base lr; set it here so f(0) can read it during construction
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor(i) for i in range(len(optimizer.param_groups))])
    return scheduler


def build_scheduler(name, optimizer, total_steps, warmup_steps=None, t0=None, t_mult=1, eta_min=0.0, patience=5,
                    factor=0.5):
    """The learning-rate schedule `name` for `optimizer`.

    Parameters
    ----------
    name : str or None
        'warmup_cosine' (default): linear warm-up for `warmup_steps` then cosine decay to `eta_min`, per step.
        'cosine_restarts': cosine cycles of `t0` steps (default a quarter of all steps) growing by `t_mult`,
        per step. 'plateau': multiply by `factor` after `patience` epochs without a lower validation loss, per
        epoch. 'onecycle': one cycle peaking at the optimizer's lr, per step. 'none' or 'constant': no change.
    optimizer : torch.optim.Optimizer
    total_steps : int
        Optimizer steps of the whole run.
    warmup_steps : int, optional
        None means 10% of `total_steps` (at least 1).
    t0, t_mult, eta_min, patience, factor
        See above.

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        Unknown name.
    """
    name = (name or "warmup_cosine").lower()
    total_steps = max(1, int(total_steps))
    if name == "warmup_cosine":
        scheduler = _warmup_cosine(optimizer, total_steps, warmup_steps, eta_min)
        return Schedule(name, optimizer, scheduler, "step", total_steps)
    if name == "cosine_restarts":
        t0 = int(t0) if t0 else max(1, total_steps // 4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=t0, T_mult=int(t_mult),
                                                                         eta_min=eta_min)
        return Schedule(name, optimizer, scheduler, "step", total_steps)
    if name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor,
                                                               patience=patience)
        return Schedule(name, optimizer, scheduler, "epoch", total_steps)
    if name == "onecycle":
        max_lr = [group["lr"] for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total_steps,
                                                        div_factor=ONECYCLE_DIV_FACTOR,
                                                        final_div_factor=ONECYCLE_FINAL_DIV_FACTOR)
        return Schedule(name, optimizer, scheduler, "step", total_steps)
    if name in ("none", "constant"):
        return Schedule(name, optimizer, None, "step", total_steps)
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
