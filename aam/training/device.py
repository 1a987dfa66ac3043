"""Device, precision and thread selection: CUDA, ROCm (which PyTorch exposes as 'cuda') and CPU."""
import contextlib
import os
import warnings

import torch

from aam.errors import AAMInputError


def resolve_device(name="auto"):
    """Turn the --device option into a torch.device.

    'auto' takes the first GPU when PyTorch sees one (CUDA or ROCm) and the CPU otherwise, so the same command
    works on a laptop, a Galaxy worker and a GPU node. 'cuda' without a GPU is an error that says so.
    """
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AAMInputError("--device cuda was requested but PyTorch sees no GPU (torch "
                                f"{torch.__version__}, built for {gpu_runtime() or 'CPU only'}); use --device "
                                "auto or cpu, or install a CUDA/ROCm build of PyTorch.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise AAMInputError(f"unknown --device {name!r}; use auto, cpu or cuda")


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
        warnings.warn("--mixed-precision fp16 needs a GPU; using bf16 on the CPU instead.", stacklevel=2)
        dtype = torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device, mixed_precision):
    """A gradient scaler for fp16 on GPU (small fp16 gradients would underflow without it), else None."""
    if mixed_precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None
