"""The pretrained base: nucleotides -> ASV embeddings -> sample embedding, with the pretraining heads.

A batch holds B samples x S slots x L positions, but the same ASV usually occurs in many samples of a batch. The
nucleotide-level transformer is by far the most expensive part, so by default every distinct ASV (by its dataset
feature index) is encoded once and its embedding is scattered to every slot that holds it. The per-slot path
(``dedup=False``) computes the same function; the nucleotide outputs carry a weight per encoded row (how many
slots it stands for) so that a loss weighted by it equals the per-slot loss.
"""
import torch
import torch.nn as nn

from aam.models.asv_encoder import PAD, ASVEncoder
from aam.models.layers import init_weights
from aam.models.sample_encoder import SampleEncoder


def slot_mask(tokens, asv_ids=None):
    """Which slots hold an ASV: ``asv_ids >= 0`` when ids are given, else a non-PAD first token. [B, S] bool."""
    if asv_ids is not None:
        return asv_ids >= 0
    return tokens[..., 0] != PAD


class SequenceEncoder(nn.Module):
    """Base model: `ASVEncoder` + `SampleEncoder` + objective heads.

    Heads
    -----
    distance_head : Linear D -> D
        Maps the sample embedding to the space whose Euclidean distances are fitted to UniFrac (unbounded, so
        any distance can be represented).
    faith_pd_head : Linear D -> 1
        For encoder_type 'faith_pd' / 'combined'.
    taxonomy_head : Linear D -> taxonomy_classes
        Per ASV, for encoder_type 'taxonomy' / 'combined' with taxonomy_classes > 0.

    Parameters
    ----------
    cfg : EncoderConfig
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D = cfg.embedding_dim
        self.asv_encoder = ASVEncoder(cfg)
        self.sample_encoder = SampleEncoder(cfg)
        self.distance_head = nn.Linear(D, D)
        self.faith_pd_head = nn.Linear(D, 1) if cfg.encoder_type in ("faith_pd", "combined") else None
        self.taxonomy_head = (nn.Linear(D, cfg.taxonomy_classes)
                              if cfg.encoder_type in ("taxonomy", "combined") and cfg.taxonomy_classes > 0 else None)
        for head in (self.distance_head, self.faith_pd_head, self.taxonomy_head):
            if head is not None:
                head.apply(init_weights)
        if cfg.freeze_asv_encoder:
            for p in self.asv_encoder.parameters():
                p.requires_grad_(False)
            self.asv_encoder.eval()

    def train(self, mode=True):
        """Like `nn.Module.train`, but a frozen ASV encoder stays in eval mode (a fixed function: no dropout)."""
        super().train(mode)
        if self.cfg.freeze_asv_encoder:
            self.asv_encoder.eval()
        return self

    @staticmethod
    def select_rows(tokens, asv_ids=None, dedup=True):
        """Choose the token rows to encode and how they map back to slots.

        Parameters
        ----------
        tokens : torch.LongTensor, shape [B, S, L]
        asv_ids : torch.LongTensor, shape [B, S], optional
            Dataset feature index per slot, -1 for empty slots. Slots with the same id must hold identical tokens
            (the collator masks an ASV the same way wherever it occurs in a batch).
        dedup : bool
            Encode each distinct id once (True) or every occupied slot (False). Without `asv_ids` every occupied
            slot is its own row.

        Returns
        -------
        rows : torch.LongTensor, shape [R, L]
        row_slot : torch.LongTensor, shape [R]
            Flat index ``b * S + s`` of a slot holding the row (the first one).
        row_weight : torch.Tensor, shape [R], float32
            Number of slots that share the row.
        inverse : torch.LongTensor, shape [n_occupied]
            Row of each occupied slot, occupied slots in ``asv_mask.view(-1)`` order.
        """
        B, S, L = tokens.shape
        flat_tokens = tokens.reshape(B * S, L)                                # [B*S, L]
        occupied = slot_mask(tokens, asv_ids).reshape(-1)                     # [B*S]
        slots = occupied.nonzero().squeeze(1)                                 # [n]
        if dedup and asv_ids is not None:
            ids = asv_ids.reshape(-1)[slots]                                  # [n]
            _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)  # [n], [R]
            R = counts.shape[0]
            # representative slot = the first slot holding each id; amin is order-independent (deterministic)
            first = torch.full((R,), B * S, dtype=slots.dtype, device=slots.device)
            row_slot = first.scatter_reduce(0, inverse, slots, reduce="amin", include_self=True)  # [R]
            row_weight = counts.to(torch.float32)                             # [R]
        else:
            row_slot = slots                                                  # [n]
            inverse = torch.arange(slots.shape[0], device=slots.device)       # [n]
            row_weight = torch.ones(slots.shape[0], dtype=torch.float32, device=slots.device)
        return flat_tokens[row_slot], row_slot, row_weight, inverse

    def encode_asvs(self, rows):
        """ASV embeddings [R, D] and nucleotide logits [R, L, V] (or None) of token rows [R, L]."""
        return self.asv_encoder(rows)

    def encode_samples(self, asv_emb, counts, asv_mask):
        """Sample-level part of the model, from ASV embeddings.

        Parameters
        ----------
        asv_emb : torch.Tensor, shape [B, S, D]
        counts : torch.Tensor, shape [B, S, 1]
        asv_mask : torch.Tensor of bool, shape [B, S]

        Returns
        -------
        dict
            sample_embedding [B, D], distance_embedding [B, D], asv_output [B, S, D], asv_mask [B, S], and
            faith_pd [B] / taxonomy_logits [B, S, C] when those heads exist.
        """
        asv_hidden, sample_emb = self.sample_encoder(asv_emb, counts, asv_mask)  # [B, S, D], [B, D]
        out = {"sample_embedding": sample_emb,
               "distance_embedding": self.distance_head(sample_emb),          # [B, D]
               "asv_output": asv_hidden,
               "asv_mask": asv_mask}
        if self.faith_pd_head is not None:
            out["faith_pd"] = self.faith_pd_head(sample_emb).squeeze(-1)      # [B]
        if self.taxonomy_head is not None:
            out["taxonomy_logits"] = self.taxonomy_head(asv_hidden)           # [B, S, C]
        return out

    def forward(self, tokens, counts, asv_ids=None, dedup=True):
        """
        Parameters
        ----------
        tokens : torch.LongTensor, shape [B, S, L]
        counts : torch.Tensor, shape [B, S, 1]
        asv_ids : torch.LongTensor, shape [B, S], optional
            Feature index per slot (-1 = empty); enables encoding each distinct ASV once.
        dedup : bool
            See `select_rows`.

        Returns
        -------
        dict
            `encode_samples` outputs, plus nuc_logits [R, L, V], nuc_row_slot [R], nuc_row_weight [R] when the
            nucleotide head exists. A weighted nucleotide loss over rows equals the per-slot loss::

                targets = nuc_targets.view(B * S, L)[nuc_row_slot]                       # [R, L]
                ce = cross_entropy(nuc_logits.transpose(1, 2), targets, ignore_index=-100, reduction='none')
                loss = (w[:, None] * ce).sum() / (w[:, None] * (targets != -100)).sum()
        """
        B, S, L = tokens.shape
        asv_mask = slot_mask(tokens, asv_ids)                                 # [B, S]
        rows, row_slot, row_weight, inverse = self.select_rows(tokens, asv_ids, dedup)
        emb, nuc_logits = self.encode_asvs(rows)                             # [R, D], [R, L, V]
        slots = asv_mask.reshape(-1).nonzero().squeeze(1)                     # [n]
        # index_copy is differentiable w.r.t. the copied rows: each slot's gradient flows back to its row
        asv_emb = emb.new_zeros(B * S, emb.shape[-1]).index_copy(0, slots, emb[inverse])  # [B*S, D]
        out = self.encode_samples(asv_emb.view(B, S, -1), counts, asv_mask)
        if nuc_logits is not None:
            out["nuc_logits"] = nuc_logits
            out["nuc_row_slot"] = row_slot
            out["nuc_row_weight"] = row_weight
        return out
