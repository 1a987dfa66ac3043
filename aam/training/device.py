"""Device, precision and thread selection: CUDA, ROCm (which PyTorch exposes as 'cuda') and CPU."""
import contextlib
import os
import warnings

import torch

from aam.errors import AAMInputError, warn


def resolve_device(name="auto"):
    """Turn the device option into a torch.device.

    'auto' takes the first GPU when PyTorch sees one (CUDA or ROCm) and the CPU otherwise, so the same command
    works on a laptop, a Galaxy worker and a GPU node. 'cuda' without a GPU is an error that says so.
    """
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AAMInputError("{opt:device} cuda was requested but PyTorch sees no GPU (torch "
                                f"{torch.__version__}, built for {gpu_runtime() or 'CPU only'}); use {{opt:device}} "
                                "auto or cpu, or install a CUDA/ROCm build of PyTorch.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise AAMInputError(f"unknown {{opt:device}} {name!r}; use auto, cpu or cuda")


def gpu_runtime():
    """'ROCm x.y', 'CUDA x.y' or None for the PyTorch build in use."""
    if getattr(torch.version, "hip", None):
        return f"ROCm {torch.version.hip}"
    if torch.version.cuda:
        return f"CUDA {torch.version.cuda}"
    return None


def set_threads(num_threads=0):
    """Use `num_threads` CPU threads for PyTorch (0 = all cores available to this process)."""
    if num_threads and num_threads > 0:
        torch.set_num_threads(int(num_threads))
    else:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:  # macOS
            n = os.cpu_count() or 1
        torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def autocast_context(device, mixed_precision):
    """An autocast context for --mixed-precision (or a null context for 'none').

    fp16 needs a GPU (on CPU it is slower and unsupported for several kernels), so on CPU it falls back to bf16
    with a warning.
    """
    if mixed_precision in (None, "none"):
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    if device.type == "cpu" and dtype == torch.float16:
        warn("{opt:mixed_precision} fp16 needs a GPU; using bf16 on the CPU instead.", stacklevel=2)
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device, mixed_precision):
    """A gradient scaler for fp16 on GPU (small fp16 gradients would underflow without it), else None."""
    if mixed_precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


class _GuardedForward:
    """A model's ``forward`` that runs compiled and switches to eager mode for good on the first failure.

    Installed as an instance attribute, so ``model(...)`` (``nn.Module.__call__``) reaches it while parameters,
    ``state_dict`` keys, hooks and ``train()`` / ``eval()`` stay those of the original model.

    Parameters
    ----------
    compiled : callable
        ``torch.compile(model.forward)``.
    eager : callable
        The original bound ``model.forward``.
    log : callable
        Receives the warning text.
    """

    def __init__(self, compiled, eager, log):
        self.compiled = compiled
        self.eager = eager
        self.log = log
        self.failed = False

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # compilation problems surface as many exception types
            self.failed = True
            self.log(f"warning: torch.compile failed ({type(err).__name__}: {_first_line(err)}); "
                     "continuing in eager mode.")
            # a genuine error of the model (bad input shapes...) is raised again by the eager call
            return self.eager(*args, **kwargs)


def _first_line(err):
    text = str(err).strip().splitlines()
    return text[0][:200] if text else ""


def _warn(text):
    warnings.warn(text, RuntimeWarning, stacklevel=3)


def maybe_compile(model, enabled, log=None, **compile_kwargs):
    """Compile ``model.forward`` with torch.compile for --compile-model, falling back to eager mode.

    The model object itself is returned (its forward replaced), so parameters, checkpoints (``state_dict``
    keys have no ``_orig_mod.`` prefix), ``train()`` / ``eval()`` and other methods such as
    ``forward_from_asv_embeddings`` are unchanged. Compilation is lazy in PyTorch: errors (no C++ compiler for
    the CPU backend, an unsupported platform or operator) appear at the first call. That call, and every later
    one, then runs the eager forward after one warning.

    Parameters
    ----------
    model : torch.nn.Module
    enabled : bool
        False returns `model` untouched.
    log : callable, optional
        Receives warning lines (default: ``warnings.warn``).
    **compile_kwargs
        Passed to ``torch.compile`` (for example ``backend='eager'`` or ``dynamic=True``).

    Returns
    -------
    torch.nn.Module
        `model`.
    """
    if not enabled:
        return model
    log = log or _warn
    if getattr(model.forward, "__self__", None) is not model:
        # already compiled or otherwise patched: wrapping again would compile the wrapper
        return model
    if not hasattr(torch, "compile"):
        log(f"warning: compiling the model needs torch.compile (PyTorch >= 2.0, found {torch.__version__}); "
            "running in eager mode.")
        return model
    eager = model.forward
    try:
        compiled = torch.compile(eager, **compile_kwargs)
    except Exception as err:  # e.g. torch.compile unsupported on this Python version
        log(f"warning: torch.compile is not available here ({type(err).__name__}: {_first_line(err)}); "
            "running in eager mode.")
        return model
    model.forward = _GuardedForward(compiled, eager, log)
    return model
