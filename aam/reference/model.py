"""The network of reference pretraining: the engine's `ASVEncoder` plus pretraining-only heads, and its masking.

`aam.reference.pretrain` trains it and `aam.reference.evaluate` scores it; both import it from here, so that the
training loop can call the evaluation during a run without the two modules importing each other.
"""
import math

import numpy as np
import torch
import torch.nn as nn

from aam.data.dataset import Collator
from aam.models.asv_encoder import ASVEncoder
from aam.models.layers import init_weights
from aam.training.losses import pairwise_distances


class ReferencePretrainer(nn.Module):
    """`ASVEncoder` plus the pretraining-only heads (taxonomy per rank, distance scale).

    Parameters
    ----------
    cfg : EncoderConfig
    n_classes : list of int
        Classes per rank; a rank with 0 classes gets no head.
    """

    def __init__(self, cfg, n_classes):
        super().__init__()
        D = cfg.embedding_dim
        self.asv_encoder = ASVEncoder(cfg)
        self.taxonomy_heads = nn.ModuleList([nn.Linear(D, max(int(n), 1)) for n in n_classes])
        self.taxonomy_heads.apply(init_weights)
        self.has_head = [int(n) > 0 for n in n_classes]
        # patristic distances are ~0-2 while layer-normed embeddings sit at a radius of ~sqrt(D): one learned
        # scale lets the geometry, not the radius, carry the tree
        self.log_distance_scale = nn.Parameter(torch.tensor(math.log(1.0 / math.sqrt(D))))

    def forward(self, tokens):
        """tokens [N, L] -> embeddings [N, D], nucleotide logits [N, L, V], list of taxonomy logits [N, C_r]."""
        emb, nuc_logits = self.asv_encoder(tokens)                          # [N, D], [N, L, V]
        tax_logits = [head(emb) for head in self.taxonomy_heads]            # 7 x [N, C_r]
        return emb, nuc_logits, tax_logits

    def embedding_distances(self, emb):
        """Scaled Euclidean distances between all rows of emb [N, D] -> [N, N]."""
        return pairwise_distances(emb) * self.log_distance_scale.exp()


def mask_nucleotides(tokens, mask_ratio, rng):
    """The engine's masking (`Collator._mask`): A/C/G/T positions -> MASK at `mask_ratio`; targets IGNORE elsewhere.

    Parameters
    ----------
    tokens : torch.LongTensor, shape [N, L]
    mask_ratio : float
    rng : np.random.Generator

    Returns
    -------
    masked : torch.LongTensor, shape [N, L]
    targets : torch.LongTensor, shape [N, L]
    """
    # a Collator is only a holder of the masking settings here; no dataset is needed to mask
    collator = Collator(None, np.zeros((1, 1), dtype=np.uint8), mask_ratio=mask_ratio)
    return collator._mask(tokens, rng)

