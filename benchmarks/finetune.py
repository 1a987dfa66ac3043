"""Benchmarks 2 and 3: frozen-base fine-tuning epochs and prediction, with and without the ASV-embedding cache."""
import numpy as np
import torch

from aam.data.dataset import Collator
from aam.models import PredictorConfig, SequencePredictor
from aam.training.cache import ASVEmbeddingCache, cached_forward
from aam.training.losses import MultiTaskLoss
from aam.training.trainer import forward_batch
from benchmarks.common import encoder_config, interleaved, timed
from benchmarks.data import make_dataset


def sample_targets(prepared):
    """A regression target per sample: log of its observed ASVs (real-data derived; timing does not depend on it)."""
    observed = np.diff(prepared.counts.tocsr().indptr)
    y = np.log(observed.astype(np.float32) + 1.0)
    return (y - y.mean()) / y.std()


def build_predictor(token_limit, freeze_base, seed=0):
    torch.manual_seed(seed)
    cfg = PredictorConfig(encoder=encoder_config(token_limit), freeze_base=freeze_base, out_dim=1)
    return SequencePredictor(cfg)


def make_loader(prepared, token_limit, batch_size, shuffle, n_samples=None):
    """A DataLoader of (a subset of) the samples, with targets, as the trainer uses it."""
    p = prepared if n_samples is None else prepared.subset(prepared.sample_ids[:n_samples])
    ds = make_dataset(p, token_limit, targets=sample_targets(p))
    gen = torch.Generator().manual_seed(0)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen,
                                       collate_fn=Collator(ds, prepared.tokens))


def run_epoch(model, loss_fn, opt, loader, cache=None):
    """One fine-tuning epoch (train mode; the frozen base stays in eval mode)."""
    model.train()
    for batch in loader:
        opt.zero_grad(set_to_none=True)
        out = cached_forward(model, cache, batch) if cache is not None else forward_batch(model, batch)
        loss_fn(out, batch)["total_loss"].backward()
        opt.step()


def frozen_epochs(prepared, token_limit=256, batch_size=16, n_samples=160, reps=3):
    """Seconds per frozen-base epoch with a warm cache, with a cold cache (first epoch) and without cache."""
    loader = make_loader(prepared, token_limit, batch_size, True, n_samples)
    model = build_predictor(token_limit, freeze_base=True)
    loss_fn = MultiTaskLoss(target_penalty=1.0, penalty=0.0, nuc_penalty=0.0, count_penalty=1.0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cache = ASVEmbeddingCache(prepared.tokens, model.base.cfg.embedding_dim, torch.device("cpu"))
    cold = timed(run_epoch, model, loss_fn, opt, loader, cache)
    t = interleaved({"cached": lambda r: run_epoch(model, loss_fn, opt, loader, cache),
                     "uncached": lambda r: run_epoch(model, loss_fn, opt, loader)}, reps, warmup=0)
    return {"n_samples": len(loader.dataset), "batch_size": batch_size, "token_limit": token_limit,
            "reps": reps, "cold_cache_epoch_s": cold, "cached_epoch_s": t["cached"]["median"],
            "uncached_epoch_s": t["uncached"]["median"],
            "speedup": t["uncached"]["median"] / t["cached"]["median"],
            "cold_speedup": t["uncached"]["median"] / cold, "cache_entries": int(cache.filled.sum())}


@torch.no_grad()
def predict_all(model, loader, cache=None):
    model.eval()
    for batch in loader:
        out = cached_forward(model, cache, batch) if cache is not None else forward_batch(model, batch)
        out["target_prediction"].float()


def prediction_throughput(prepared, token_limit=256, batch_size=32, reps=2):
    """Samples/s predicting every sample once: a fresh cache per pass (every ASV encoded once) vs none."""
    loader = make_loader(prepared, token_limit, batch_size, False)
    model = build_predictor(token_limit, freeze_base=False)
    dim = model.base.cfg.embedding_dim

    def fresh_cache(r):
        predict_all(model, loader, ASVEmbeddingCache(prepared.tokens, dim, torch.device("cpu")))
    t = interleaved({"cached": fresh_cache, "uncached": lambda r: predict_all(model, loader)}, reps, warmup=0)
    n = len(loader.dataset)
    return {"n_samples": n, "batch_size": batch_size, "token_limit": token_limit, "reps": reps,
            "cached_samples_per_s": n / t["cached"]["median"],
            "uncached_samples_per_s": n / t["uncached"]["median"],
            "speedup": t["uncached"]["median"] / t["cached"]["median"]}
