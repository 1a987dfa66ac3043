"""Performance features must not change results: batch deduplication, the ASV-embedding cache, bf16 autocast and
the torch.compile fallback (speed itself is measured by `make bench`, never asserted here)."""
import os
import warnings

import pytest
import torch

from aam.data.dataset import ASVDataset, Collator
from aam.data.pipeline import prepare_table
from aam.models import EncoderConfig, PredictorConfig, SequenceEncoder, SequencePredictor
from aam.training.cache import ASVEmbeddingCache, cached_forward
from aam.training.device import autocast_context, maybe_compile
from aam.training.losses import MultiTaskLoss
from aam.training.trainer import forward_batch
from tests.conftest import MP

MAX_BP = 120


def tiny_cfg(**kw):
    base = dict(max_bp=MAX_BP, token_limit=24, embedding_dim=16, attention_heads=2, attention_layers=1,
                dropout=0.0, asv_chunk_size=0)
    base.update(kw)
    return EncoderConfig(**base)


@pytest.fixture(scope="module")
def mp_batch():
    """A masked batch of 6 real moving-pictures samples (shared ASVs across samples) with distances."""
    prepared = prepare_table(os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"),
                             max_bp=MAX_BP, rarefy_depth=0)
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=24)
    n = len(ds)
    distances = torch.rand(n, n).numpy()
    collate = Collator(ds, prepared.tokens, distances=(distances + distances.T) / 2, mask_ratio=0.15)
    batch = collate([ds[i] for i in range(6)])
    return prepared, ds, batch


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(model, loss_fn, batch, dedup):
    model.zero_grad(set_to_none=True)
    out = forward_batch(model, batch, dedup)
    losses = loss_fn(out, batch)
    losses["total_loss"].backward()
    return out, losses, _grads(model)


def test_real_batch_has_duplicates(mp_batch):
    _, _, batch = mp_batch
    occ = batch["asv_ids"] >= 0
    assert torch.unique(batch["asv_ids"][occ]).numel() < int(occ.sum())
    assert (batch["nuc_targets"] != -100).any()


def test_dedup_equals_per_slot_on_real_batch(mp_batch):
    _, _, batch = mp_batch
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_cfg()).train()
    loss_fn = MultiTaskLoss(penalty=1.0, nuc_penalty=1.0)
    d_out, d_loss, d_grads = _loss_and_grads(model, loss_fn, batch, dedup=True)
    s_out, s_loss, s_grads = _loss_and_grads(model, loss_fn, batch, dedup=False)
    assert d_out["nuc_logits"].shape[0] < s_out["nuc_logits"].shape[0]
    for key in ("total_loss", "unifrac_loss", "nuc_loss"):
        torch.testing.assert_close(d_loss[key], s_loss[key], atol=1e-6, rtol=1e-5, msg=key)
    for key in ("sample_embedding", "distance_embedding", "asv_output"):
        torch.testing.assert_close(d_out[key], s_out[key], atol=1e-6, rtol=1e-5, msg=key)
    assert d_grads.keys() == s_grads.keys()
    for name in d_grads:
        torch.testing.assert_close(d_grads[name], s_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_cached_frozen_base_equals_uncached(mp_batch):
    prepared, _, batch = mp_batch
    torch.manual_seed(0)
    model = SequencePredictor(PredictorConfig(encoder=tiny_cfg(), freeze_base=True)).eval()
    batch = dict(batch, targets=torch.randn(len(batch["sample_ids"])))
    batch.pop("nuc_targets")  # fine-tuning batches are not masked: use the plain sequences
    plain_tokens = torch.zeros_like(batch["tokens"])
    occ = batch["asv_ids"] >= 0
    plain_tokens[occ] = torch.as_tensor(prepared.tokens)[batch["asv_ids"][occ]].long()
    batch["tokens"] = plain_tokens
    loss_fn = MultiTaskLoss(target_penalty=1.0, penalty=0.0, nuc_penalty=0.0)
    cache = ASVEmbeddingCache(prepared.tokens, 16, torch.device("cpu"))
    outs, grads = [], []
    for use_cache in (False, True, True):  # second cached pass: served entirely from the cache
        model.zero_grad(set_to_none=True)
        out = cached_forward(model, cache, batch) if use_cache else forward_batch(model, batch)
        loss_fn(out, batch)["total_loss"].backward()
        outs.append(out)
        grads.append(_grads(model))
    assert cache.hits > 0
    assert not any(n.startswith("base.") for n in grads[0])  # only the head trains
    for out, g in zip(outs[1:], grads[1:]):
        for key in ("target_prediction", "sample_embedding"):
            torch.testing.assert_close(out[key], outs[0][key], atol=1e-5, rtol=1e-4, msg=key)
        assert g.keys() == grads[0].keys()
        for name in g:
            torch.testing.assert_close(g[name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_autocast_forward_is_finite(mp_batch):
    _, _, batch = mp_batch
    torch.manual_seed(0)
    model = SequenceEncoder(tiny_cfg()).train()
    loss_fn = MultiTaskLoss(penalty=1.0, nuc_penalty=1.0)
    with autocast_context(torch.device("cpu"), "bf16"):
        out = forward_batch(model, batch)
    losses = loss_fn(out, batch)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    losses["total_loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_fp16_on_cpu_falls_back_to_bf16():
    with pytest.warns(UserWarning, match="bf16"):
        ctx = autocast_context(torch.device("cpu"), "fp16")
    assert ctx.fast_dtype == torch.bfloat16


def _small_encoder():
    torch.manual_seed(0)
    return SequenceEncoder(tiny_cfg(max_bp=20)).eval()


def _small_inputs():
    tokens = torch.randint(1, 5, (2, 3, 21))
    tokens[..., 0] = 5
    return tokens, torch.rand(2, 3, 1)


def test_maybe_compile_disabled_returns_model_untouched():
    model = _small_encoder()
    assert maybe_compile(model, False) is model
    assert model.forward.__self__ is model


def test_maybe_compile_falls_back_to_eager(monkeypatch):
    model = _small_encoder()
    tokens, counts = _small_inputs()
    expected = model(tokens, counts)["sample_embedding"]
    keys = list(model.state_dict())

    def broken_compile(fn, **kw):
        def run(*a, **k):
            raise RuntimeError("backend compiler failed: no C++ compiler")
        return run
    monkeypatch.setattr(torch, "compile", broken_compile)
    lines = []
    assert maybe_compile(model, True, lines.append) is model
    for _ in range(2):
        torch.testing.assert_close(model(tokens, counts)["sample_embedding"], expected)
    assert len(lines) == 1 and "eager" in lines[0]  # warned once
    assert list(model.state_dict()) == keys      # checkpoints keep their keys


def test_maybe_compile_reraises_genuine_model_errors(monkeypatch):
    model = _small_encoder()
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        maybe_compile(model, True)
    too_long = torch.ones(1, 2, 40, dtype=torch.long)
    with pytest.raises(ValueError, match="max_bp"), pytest.warns(RuntimeWarning, match="eager"):
        model(too_long, torch.ones(1, 2, 1))


def test_maybe_compile_when_torch_compile_raises(monkeypatch):
    model = _small_encoder()

    def unavailable(fn, **kw):
        raise RuntimeError("Dynamo is not supported on this Python")
    monkeypatch.setattr(torch, "compile", unavailable)
    lines = []
    maybe_compile(model, True, lines.append)
    assert lines and model.forward.__self__ is model
