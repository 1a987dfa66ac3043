"""Transformer building blocks shared by the ASV-level and sample-level encoders.

Every sequence here is padded: nucleotides within an ASV (ASVs differ in length) and ASVs within a sample (samples
differ in richness). Masks are boolean with True = a real position. A sequence may be entirely padding (an empty
slot of a batch, a sample with no ASVs); every module keeps such rows finite in the forward and backward pass,
because one NaN would poison a whole batch's gradients.
"""
import contextlib
import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# --attn-implementation name -> torch.nn.attention.SDPBackend member ('sdpa' lets PyTorch choose)
_SDP_BACKENDS = {"math": "MATH", "flash": "FLASH_ATTENTION", "mem_efficient": "EFFICIENT_ATTENTION"}


def attention_context(impl):
    """Context manager that restricts scaled_dot_product_attention to the backend named by `impl`.

    Parameters
    ----------
    impl : {'sdpa', 'math', 'flash', 'mem_efficient'}
        'sdpa' returns a null context (PyTorch picks the fastest kernel that supports the inputs).
    """
    if impl == "sdpa":
        return contextlib.nullcontext()
    if impl not in _SDP_BACKENDS:
        raise ValueError(f"unknown attention implementation {impl!r}; use sdpa, {', '.join(_SDP_BACKENDS)}")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel(getattr(SDPBackend, _SDP_BACKENDS[impl]))


def _probe_backend(impl, device, dtype):
    """Run a tiny masked attention forward + backward under `impl` and compare it with plain math."""
    g = torch.Generator().manual_seed(0)
    # [B=2, H=2, T=8, Dh=16]: head size a multiple of 8 so flash / mem_efficient are not ruled out by shape alone
    q, k, v = (torch.randn(2, 2, 8, 16, generator=g) for _ in range(3))
    mask = torch.ones(2, 1, 1, 8, dtype=torch.bool)
    mask[1, ..., 5:] = False  # padded keys, as in every real batch
    # reference in float64 on the CPU: softmax(q k^T / sqrt(d)) v with the padded keys excluded
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(16)
    ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v.double()
    qd, kd, vd = (t.to(device, dtype).requires_grad_() for t in (q, k, v))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sdpa_kernel explains refusals as warnings; we report them ourselves
        with attention_context(impl):
            out = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=mask.to(device))
            out.float().sum().backward()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    if not torch.allclose(out.detach().double().cpu(), ref, atol=tol, rtol=tol):
        return False, f"runs but gives wrong results with a padding mask ({str(dtype).replace('torch.', '')})"
    if not all(torch.isfinite(t.grad).all() for t in (qd, kd, vd)):
        return False, "non-finite gradients with a padding mask"
    return True, "works"


def available_attention_backends(device="cpu"):
    """Which attention implementations actually work on `device` for this model's inputs.

    Each backend runs a tiny attention with a padding mask (the model always passes one), forward and backward,
    and its result is checked against a float64 reference, so a kernel that runs but computes garbage (as ROCm's
    mem_efficient kernel did with masks before aotriton 0.8.2) is reported as not working.

    Parameters
    ----------
    device : str or torch.device

    Returns
    -------
    dict of str -> (bool, str)
        For 'sdpa', 'math', 'flash', 'mem_efficient': whether it works and a one-line explanation.
    """
    device = torch.device(device)
    result = {}
    for impl in ("sdpa", "math", "flash", "mem_efficient"):
        try:
            ok, msg = _probe_backend(impl, device, torch.float32)
        except Exception as err:  # any refusal (no kernel, unsupported device, driver error) means "not usable"
            ok, msg = False, (str(err).strip().splitlines() or [type(err).__name__])[0]
        if not ok and device.type == "cuda":
            # some kernels (flash) exist only for half precision: usable with --mixed-precision bf16/fp16
            try:
                half_ok, _ = _probe_backend(impl, device, torch.float16)
            except Exception:
                half_ok = False
            if half_ok:
                msg = f"works only in half precision (use mixed precision bf16 or fp16); float32: {msg}"
        result[impl] = (ok, msg)
    return result


class SelfAttention(nn.Module):
    """Multi-head self-attention over padded sequences via scaled_dot_product_attention.

    Parameters
    ----------
    dim : int
        Model width D.
    heads : int
        Number of heads; must divide `dim`.
    dropout : float
        Dropout on the attention weights and on the output projection (training only).
    impl : {'sdpa', 'math', 'flash', 'mem_efficient'}
        SDPA backend (see `attention_context`). 'flash' does not accept masks in PyTorch, so it only works for
        unpadded inputs; `available_attention_backends` reports this.
    """

    def __init__(self, dim, heads, dropout=0.0, impl="sdpa"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.impl = impl
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x, key_mask=None):
        """
        Parameters
        ----------
        x : torch.Tensor, shape [N, T, D]
        key_mask : torch.Tensor of bool, shape [N, T], optional
            True = real position. Padded positions are never attended to.

        Returns
        -------
        torch.Tensor, shape [N, T, D]
            Zero for every position of a sequence that has no real position.
        """
        N, T, D = x.shape
        H = self.heads
        q, k, v = self.qkv(x).split(D, dim=-1)                  # 3 x [N, T, D]
        q = q.view(N, T, H, D // H).transpose(1, 2)             # [N, H, T, Dh]
        k = k.view(N, T, H, D // H).transpose(1, 2)             # [N, H, T, Dh]
        v = v.view(N, T, H, D // H).transpose(1, 2)             # [N, H, T, Dh]
        attn_mask, has_key = None, None
        if key_mask is not None:
            has_key = key_mask.any(-1, keepdim=True)            # [N, 1]
            # a row with no valid key would softmax over nothing (NaN); let it attend everywhere instead and
            # zero its output below, so the values are finite and carry no information
            attn_mask = (key_mask | ~has_key)[:, None, None, :]  # [N, 1, 1, T]
        with attention_context(self.impl):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.dropout if self.training else 0.0)  # [N, H, T, Dh]
        y = y.transpose(1, 2).reshape(N, T, D)                  # [N, T, D]
        y = self.resid_drop(self.proj(y))
        if has_key is not None:
            y = y * has_key[:, :, None].to(y.dtype)             # [N, T, D]
        return y


class MLP(nn.Module):
    """Position-wise feed-forward: Linear -> GELU -> Linear -> dropout."""

    def __init__(self, dim, ff_mult=4, dropout=0.0):
        super().__init__()
        self.fc = nn.Linear(dim, ff_mult * dim)
        self.proj = nn.Linear(ff_mult * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x)).

    Pre-norm keeps the residual stream unnormalized, which trains stably without learning-rate warmup tricks.
    """

    def __init__(self, dim, heads, dropout=0.0, impl="sdpa", ff_mult=4):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, impl)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, ff_mult, dropout)

    def forward(self, x, key_mask=None):
        x = x + self.attn(self.ln_1(x), key_mask)  # [N, T, D]
        x = x + self.mlp(self.ln_2(x))              # [N, T, D]
        return x


class TransformerEncoder(nn.Module):
    """A stack of `TransformerBlock` and a final LayerNorm.

    Parameters
    ----------
    dim, heads : int
        Width and number of heads.
    layers : int
        Number of blocks (0 = just the final LayerNorm).
    dropout : float
    impl : str
        SDPA backend, see `attention_context`.
    ff_mult : int
        MLP hidden width as a multiple of `dim`.
    gradient_checkpointing : bool
        Recompute each block in the backward pass (training with gradients only): activation memory then grows
        with one block instead of all of them, for roughly one extra forward pass of compute.
    """

    def __init__(self, dim, heads, layers, dropout=0.0, impl="sdpa", ff_mult=4, gradient_checkpointing=False):
        super().__init__()
        self.blocks = nn.ModuleList([TransformerBlock(dim, heads, dropout, impl, ff_mult) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(dim)
        self.gradient_checkpointing = gradient_checkpointing

    def forward(self, x, key_mask=None):
        """
        Parameters
        ----------
        x : torch.Tensor, shape [N, T, D]
        key_mask : torch.Tensor of bool, shape [N, T], optional
            True = real position.

        Returns
        -------
        torch.Tensor, shape [N, T, D]
        """
        use_ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            if use_ckpt:
                # non-reentrant checkpointing works with inputs that do not require grad and with autocast
                x = checkpoint(block, x, key_mask, use_reentrant=False)
            else:
                x = block(x, key_mask)
        return self.ln_f(x)


class AttentionPooling(nn.Module):
    """Weighted mean over positions with learned scores: one vector per sequence.

    A fully padded sequence returns a zero vector, with finite (zero) gradients.
    """

    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x, mask=None):
        """
        Parameters
        ----------
        x : torch.Tensor, shape [N, T, D]
        mask : torch.Tensor of bool, shape [N, T], optional
            True = real position.

        Returns
        -------
        torch.Tensor, shape [N, D]
        """
        # softmax in float32: under autocast half-precision scores over 1000 positions lose too much precision
        scores = self.score(x).squeeze(-1).float()              # [N, T]
        if mask is not None:
            # a finite fill rather than -inf: a fully masked row then gets uniform weights instead of 0/0 = NaN
            # (and NaN gradients); the weights are zeroed below so it pools to zero
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        w = torch.softmax(scores, dim=-1)                       # [N, T]
        if mask is not None:
            w = w * mask.to(w.dtype)                            # exact zeros on padding and on empty rows
        return torch.einsum("nt,ntd->nd", w.to(x.dtype), x)     # [N, D]


def init_weights(module):
    """GPT-2 style initialization: N(0, 0.02) weights, zero biases, zero padding embeddings.

    Small weights keep the residual streams of freshly built models near the scale of their embeddings, so the
    first steps neither saturate the softmaxes nor blow up the losses. Apply with ``module.apply(init_weights)``
    to freshly built modules only (never to loaded weights).
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
