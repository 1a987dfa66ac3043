"""Predictor: a (possibly pretrained, possibly frozen) base plus a head for one target per sample."""
import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from aam.models.layers import init_weights
from aam.models.sample_encoder import SampleEncoder
from aam.models.sequence_encoder import SequenceEncoder

# exp() of more than this overflows float32 / bfloat16 (about 88.7); clamping keeps a runaway prediction finite
_EXP_MAX = 80.0


class SequencePredictor(nn.Module):
    """Regression or classification from ASV sequences and abundances.

    The head has its own sample-level transformer over the base's contextual ASV states, with the abundance
    features added again so that abundance reaches the target directly even through a frozen base. Its pooled
    output is fused with the base's sample embedding, then with the categorical covariates, then mapped to the
    target by an MLP. A per-ASV count head predicts each slot's relative abundance (an auxiliary objective).

    Parameters
    ----------
    cfg : PredictorConfig
    base : SequenceEncoder, optional
        A base to reuse (e.g. with pretrained weights); its config must equal ``cfg.encoder``. Built from
        ``cfg.encoder`` when None.

    Notes
    -----
    ``categorical`` inputs are LongTensor [B, n_columns] in the order of ``cfg.categorical_cardinalities`` keys
    (insertion order, kept by `PredictorConfig.to_dict` / ``from_dict``); index 0 means unknown, and any index
    outside a column's range is treated as unknown too.
    """

    def __init__(self, cfg, base=None):
        super().__init__()
        if base is None:
            base = SequenceEncoder(cfg.encoder)
        elif base.cfg != cfg.encoder:
            raise ValueError("base.cfg differs from cfg.encoder; the saved config would not rebuild this model")
        self.cfg = cfg
        self.base = base
        self.accepts_categorical = bool(cfg.categorical_cardinalities)
        self.accepts_numeric = int(cfg.numeric_inputs) > 0
        D = cfg.encoder.embedding_dim
        self.categorical_columns = cfg.categorical_columns
        self.categorical_cards = [int(cfg.categorical_cardinalities[c]) for c in self.categorical_columns]
        if cfg.head == "linear":
            self._init_linear_head(cfg)
            return

        self.head = SampleEncoder(cfg.encoder, layers=cfg.head_layers)
        self.fuse = nn.Linear(2 * D, D)  # [head pooled, base sample embedding] -> D
        cards = self.categorical_cards
        dims = [cfg.embed_dim(c) for c in self.categorical_columns]
        # ModuleList, not ModuleDict: column names may contain '.', which module names cannot
        self.cat_embeddings = nn.ModuleList([nn.Embedding(n, d) for n, d in zip(cards, dims)])
        if not cards:
            self.cat_proj = None
        elif cfg.categorical_fusion == "concat":
            self.cat_proj = nn.Linear(D + sum(dims), D)
        else:  # 'add'
            self.cat_proj = nn.ModuleList([nn.Linear(d, D) for d in dims])
        self.num_proj = nn.Linear(int(cfg.numeric_inputs), D) if self.accepts_numeric else None
        self.target_head = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(),
                                         nn.Dropout(cfg.encoder.dropout), nn.Linear(D, cfg.out_dim))
        self.count_head = nn.Linear(D, 1)
        for m in (self.cat_embeddings, self.cat_proj, self.num_proj, self.count_head):
            if m is not None:
                m.apply(init_weights)
        # the fusion layer and the target MLP keep PyTorch's default (fan-in scaled) initialization: with the
        # transformer-style N(0, 0.02) weights a two-layer head starts as a product of two tiny matrices and
        # needs hundreds of steps before predictions vary between samples at all
        if cfg.learnable_output_scale and not cfg.classifier:
            self.output_scale = nn.Parameter(torch.ones(()))
            self.output_bias = nn.Parameter(torch.zeros(()))
        else:
            self.output_scale = self.output_bias = None

        if cfg.freeze_base:
            for p in self.base.parameters():
                p.requires_grad_(False)
            self.base.eval()

    def _init_linear_head(self, cfg):
        """One linear layer over [sample embedding, distance embedding, one-hot covariates] of the frozen base;
        its weights are set by a closed-form fit (`set_linear_head`), not by gradient descent."""
        self.linear = nn.Linear(cfg.linear_inputs, cfg.out_dim)
        self.output_scale = self.output_bias = None
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.base.eval()

    def _numeric(self, numeric, B, device):
        """The numeric covariates [B, numeric_inputs] as floats (None: every value at its training median)."""
        n = int(self.cfg.numeric_inputs)
        if numeric is None:
            return torch.zeros(B, n, device=device)
        if numeric.dim() != 2 or numeric.shape[1] != n:
            raise ValueError(f"numeric must be [B, {n}], got {tuple(numeric.shape)}")
        return numeric.to(device).float()

    def linear_features(self, base_out, categorical=None, numeric=None):
        """Input of a linear head: [B, 2D + sum of covariate cardinalities + numeric inputs]."""
        parts = [base_out["sample_embedding"].float(), base_out["distance_embedding"].float()]  # [B, D] x2
        if self.categorical_cards:
            B = parts[0].shape[0]
            if categorical is None:
                categorical = torch.zeros(B, len(self.categorical_cards), dtype=torch.long, device=parts[0].device)
            for j, card in enumerate(self.categorical_cards):
                idx = categorical[:, j].to(parts[0].device).long()
                idx = idx.masked_fill((idx < 0) | (idx >= card), 0)               # unseen category -> unknown
                parts.append(F.one_hot(idx, card).float())                       # [B, card]
        if self.accepts_numeric:
            parts.append(self._numeric(numeric, parts[0].shape[0], parts[0].device))  # [B, numeric_inputs]
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def set_linear_head(self, weight, bias):
        """Weights of a linear head: weight [out_dim, linear_inputs], bias [out_dim] (numpy or tensors)."""
        self.linear.weight.copy_(torch.as_tensor(weight, dtype=self.linear.weight.dtype).reshape(
            self.linear.weight.shape))
        self.linear.bias.copy_(torch.as_tensor(bias, dtype=self.linear.bias.dtype).reshape(self.linear.bias.shape))

    @torch.no_grad()
    def init_output(self, value):
        """Start regression predictions at `value` (the mean training target, in the training scale).

        The last layer's bias is set so that the output activation returns `value` for a zero input; training
        then learns deviations from the mean instead of first spending epochs walking out to it.
        """
        if self.cfg.classifier:
            return
        v = float(value)
        if self.cfg.bounded_targets:
            v = min(max(v, 1e-3), 1 - 1e-3)
            v = math.log(v / (1 - v))                                          # logit
        elif self.cfg.output_activation == "softplus":
            v = math.log(math.expm1(max(v, 1e-3)))                             # softplus^-1
        elif self.cfg.output_activation == "exp":
            v = math.log(max(v, 1e-6))
        elif self.cfg.output_activation == "relu":
            v = max(v, 0.0)
        self.target_head[-1].bias.fill_(v)

    def train(self, mode=True):
        """Like `nn.Module.train`, but a frozen base stays in eval mode (no dropout: it is a fixed function)."""
        super().train(mode)
        if self.cfg.freeze_base or self.cfg.head == "linear":
            self.base.eval()
        return self

    def _base_context(self):
        # a frozen base needs no autograd graph: saves its activation memory
        return torch.no_grad() if self.cfg.freeze_base else contextlib.nullcontext()

    def _fuse_categorical(self, h, categorical):
        """Join covariate embeddings to h [B, D]; `categorical` [B, n_columns] long, or None = all unknown."""
        if not self.categorical_cards:
            return h  # a model without covariates ignores any it is given
        B = h.shape[0]
        n = len(self.categorical_cards)
        if categorical is None:
            categorical = torch.zeros(B, n, dtype=torch.long, device=h.device)
        if categorical.dim() != 2 or categorical.shape[1] != n:
            raise ValueError(f"categorical must be [B, {n}] (columns {self.categorical_columns}), got "
                             f"{tuple(categorical.shape)}")
        categorical = categorical.to(h.device).long()
        embs = []
        for j, (emb, card) in enumerate(zip(self.cat_embeddings, self.categorical_cards)):
            idx = categorical[:, j]                                            # [B]
            idx = idx.masked_fill((idx < 0) | (idx >= card), 0)               # unseen category -> unknown
            embs.append(emb(idx))                                              # [B, E_j]
        if self.cfg.categorical_fusion == "concat":
            return self.cat_proj(torch.cat([h] + [e.to(h.dtype) for e in embs], dim=-1))  # [B, D]
        for proj, e in zip(self.cat_proj, embs):
            h = h + proj(e)                                                    # [B, D]
        return h

    def _output(self, y):
        """Final activation of the target head output y [B, out_dim]."""
        cfg = self.cfg
        if cfg.classifier:
            return y                                                           # logits [B, out_dim]
        if self.output_scale is not None:
            y = y * self.output_scale + self.output_bias
        if cfg.bounded_targets:
            y = torch.sigmoid(y)
        elif cfg.output_activation == "relu":
            y = F.relu(y)
        elif cfg.output_activation == "softplus":
            y = F.softplus(y)
        elif cfg.output_activation == "exp":
            y = torch.exp(y.clamp(max=_EXP_MAX))
        return y.squeeze(-1) if cfg.out_dim == 1 else y                        # [B] or [B, out_dim]

    def _fuse_numeric(self, h, numeric):
        """Add the projected numeric covariates to h [B, D] (a model without them ignores any it is given)."""
        if not self.accepts_numeric:
            return h
        return h + self.num_proj(self._numeric(numeric, h.shape[0], h.device)).to(h.dtype)   # [B, D]

    def _heads(self, base_out, counts, categorical, numeric=None):
        """Target and count predictions from the base's sample-level outputs."""
        if self.cfg.head == "linear":
            y = self.linear(self.linear_features(base_out, categorical, numeric))   # [B, out_dim]
            return {"target_prediction": y.squeeze(-1) if self.cfg.out_dim == 1 else y}
        asv_mask = base_out["asv_mask"]
        slot_h, pooled = self.head(base_out["asv_output"], counts, asv_mask)   # [B, S, D], [B, D]
        h = self.fuse(torch.cat([pooled, base_out["sample_embedding"].to(pooled.dtype)], dim=-1))  # [B, D]
        h = self._fuse_numeric(self._fuse_categorical(h, categorical), numeric)  # [B, D]
        target = self._output(self.target_head(h))                            # [B] or [B, out_dim]
        count = self.count_head(slot_h).squeeze(-1).masked_fill(~asv_mask, 0.0)  # [B, S]
        return {"target_prediction": target, "count_prediction": count}

    def forward(self, tokens, counts, asv_ids=None, dedup=True, categorical=None, numeric=None):
        """
        Parameters
        ----------
        tokens : torch.LongTensor, shape [B, S, L]
        counts : torch.Tensor, shape [B, S, 1]
        asv_ids : torch.LongTensor, shape [B, S], optional
        dedup : bool
        categorical : torch.LongTensor, shape [B, n_columns], optional
            Column order = ``cfg.categorical_cardinalities`` keys; None = all unknown.
        numeric : torch.Tensor, shape [B, cfg.numeric_inputs], optional
            Numeric covariates (`aam.data.numeric.NumericEncoder`); None = every value at its training median.

        Returns
        -------
        dict
            The base's outputs plus target_prediction ([B] for single-output regression, else [B, out_dim]) and
            count_prediction [B, S] (zero in empty slots).
        """
        with self._base_context():
            out = self.base(tokens, counts, asv_ids=asv_ids, dedup=dedup)
        out.update(self._heads(out, counts, categorical, numeric))
        return out

    def forward_from_asv_embeddings(self, asv_emb, counts, asv_mask, categorical=None, numeric=None):
        """Same as `forward` from precomputed ASV embeddings [B, S, D] (an ASV-embedding cache of a frozen base).

        Returns the same dict as `forward` without the nucleotide outputs.
        """
        with self._base_context():
            out = self.base.encode_samples(asv_emb, counts, asv_mask.bool())
        out.update(self._heads(out, counts, categorical, numeric))
        return out
