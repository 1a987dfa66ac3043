"""Reuse ASV embeddings of a frozen base across batches and epochs.

With ``--freeze-base`` (and always in `predict` / `embed`) the nucleotide-level encoder is a fixed function of an
ASV's sequence, and it is by far the most expensive part of the model. `ASVEmbeddingCache` computes each distinct
ASV once per run and serves it to every later batch; the sample-level layers and the heads still run (and train)
on every batch. Memory is bounded by the number of features in the run: [F, D] floats (10,000 ASVs x 128 dims is
5 MB).
"""
import torch


class ASVEmbeddingCache:
    """Embeddings of a frozen ASV encoder, keyed by the dataset's feature index.

    Parameters
    ----------
    feature_tokens : torch.Tensor of uint8, shape [F, L]
        Tokenized sequence of every feature (unmasked).
    dim : int
        Embedding width.
    device : torch.device
    """

    def __init__(self, feature_tokens, dim, device):
        self.feature_tokens = torch.as_tensor(feature_tokens)
        F = self.feature_tokens.shape[0]
        self.table = torch.zeros((F, dim), dtype=torch.float32, device=device)  # [F, D]
        self.filled = torch.zeros(F, dtype=torch.bool, device=device)           # [F]
        self.device = device
        self.hits = 0
        self.misses = 0

    @torch.no_grad()
    def lookup(self, base, asv_ids):
        """ASV embeddings [B, S, D] for `asv_ids` [B, S] (zeros in empty slots), encoding only unseen ASVs."""
        occupied = asv_ids >= 0
        wanted = torch.unique(asv_ids[occupied])  # [U]
        missing = wanted[~self.filled[wanted]]
        self.hits += int(wanted.numel() - missing.numel())
        self.misses += int(missing.numel())
        if missing.numel():
            rows = self.feature_tokens[missing.cpu()].long().to(self.device)  # [M, L]
            emb, _ = base.encode_asvs(rows)
            self.table[missing] = emb.float()
            self.filled[missing] = True
        out = torch.zeros(asv_ids.shape + (self.table.shape[1],), dtype=torch.float32, device=self.device)
        out[occupied] = self.table[asv_ids[occupied]]
        return out  # [B, S, D]


def cached_forward(model, cache, batch):
    """Forward pass of a model whose ASV encoder is frozen, with ASV embeddings served from `cache`.

    `model` is a `SequencePredictor` (frozen base) or a `SequenceEncoder` in eval mode.
    """
    base = getattr(model, "base", model)
    asv_emb = cache.lookup(base, batch["asv_ids"])
    asv_mask = batch["asv_ids"] >= 0
    if hasattr(model, "forward_from_asv_embeddings"):
        return model.forward_from_asv_embeddings(asv_emb, batch["counts"], asv_mask, batch.get("categorical"),
                                                 batch.get("numeric"))
    return base.encode_samples(asv_emb, batch["counts"], asv_mask)
