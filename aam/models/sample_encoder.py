"""Sample-level encoder: the ASV embeddings of one sample (with their abundances) -> one sample embedding."""
import torch
import torch.nn as nn

from aam.models.layers import AttentionPooling, TransformerEncoder, init_weights


def abundance_features(counts, asv_mask):
    """Per-slot abundance features: log1p(count) and relative abundance (count / sample total).

    Both are given because they carry different information: log counts keep the sequencing depth, relative
    abundance is comparable across samples.

    Parameters
    ----------
    counts : torch.Tensor, shape [B, S, 1] or [B, S]
        Raw (rarefied) read counts, 0 in empty slots.
    asv_mask : torch.Tensor of bool, shape [B, S]

    Returns
    -------
    torch.Tensor, shape [B, S, 2], float32
    """
    if counts.dim() == 3:
        counts = counts.squeeze(-1)                                    # [B, S]
    counts = counts.float() * asv_mask.float()                         # [B, S] ignore anything in empty slots
    total = counts.sum(dim=1, keepdim=True)                            # [B, 1]
    # clamp: an empty sample (total 0) gets relative abundance 0, not 0/0
    rel = counts / total.clamp_min(1e-12)                              # [B, S]
    return torch.stack([torch.log1p(counts.clamp_min(0)), rel], dim=-1)  # [B, S, 2]


class SampleEncoder(nn.Module):
    """Transformer over the ASVs of a sample, pooled to one embedding per sample.

    Each slot's input is its ASV embedding + a projection of its abundance features + a learned embedding of its
    abundance rank (slot index; the collator orders ASVs by abundance).

    Parameters
    ----------
    cfg : EncoderConfig
    layers : int, optional
        Transformer layers (default ``cfg.attention_layers``).
    """

    def __init__(self, cfg, layers=None):
        super().__init__()
        self.cfg = cfg
        D = cfg.embedding_dim
        self.abundance = nn.Linear(2, D)
        self.rank_emb = nn.Embedding(cfg.token_limit, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(D, cfg.attention_heads,
                                          cfg.attention_layers if layers is None else layers, cfg.dropout,
                                          cfg.attn_implementation, cfg.ff_mult, cfg.gradient_checkpointing)
        self.pool = AttentionPooling(D)
        self.apply(init_weights)

    def forward(self, asv_emb, counts, asv_mask):
        """
        Parameters
        ----------
        asv_emb : torch.Tensor, shape [B, S, D]
            ASV embeddings (anything in empty slots; they are masked).
        counts : torch.Tensor, shape [B, S, 1]
            Raw read counts, 0 in empty slots.
        asv_mask : torch.Tensor of bool, shape [B, S]
            True = the slot holds an ASV.

        Returns
        -------
        asv_hidden : torch.Tensor, shape [B, S, D]
            Contextual ASV states, zero in empty slots.
        sample_emb : torch.Tensor, shape [B, D]
            Zero for a sample without ASVs.
        """
        B, S, D = asv_emb.shape
        if S > self.cfg.token_limit:
            raise ValueError(f"{S} ASV slots per sample but the model takes at most token_limit = "
                             f"{self.cfg.token_limit}")
        asv_mask = asv_mask.bool()
        feats = abundance_features(counts, asv_mask)                   # [B, S, 2]
        rank = torch.arange(S, device=asv_emb.device)                  # [S]
        x = asv_emb + self.abundance(feats) + self.rank_emb(rank)      # [B, S, D]
        h = self.encoder(self.drop(x), asv_mask)                       # [B, S, D]
        # zero empty slots so that downstream per-slot heads see no leftovers from padding
        h = h * asv_mask[..., None].to(h.dtype)                        # [B, S, D]
        return h, self.pool(h, asv_mask)                               # [B, S, D], [B, D]
