"""Nucleotide-level encoder: one ASV's token sequence -> one ASV embedding (+ per-position nucleotide logits)."""
import torch
import torch.nn as nn

from aam.data.tokenizer import PAD, VOCAB_SIZE
from aam.models.layers import AttentionPooling, TransformerEncoder, init_weights


class ASVEncoder(nn.Module):
    """Transformer over the nucleotides of each ASV, pooled to one embedding per ASV.

    tokens -> token + position embedding -> transformer -> attention pooling -> Linear -> LayerNorm.
    The optional nucleotide head predicts every position's nucleotide from its hidden state (the masked-nucleotide
    pretraining objective).

    Parameters
    ----------
    cfg : EncoderConfig
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        D = cfg.embedding_dim
        self.tok_emb = nn.Embedding(VOCAB_SIZE, D, padding_idx=PAD)
        self.pos_emb = nn.Embedding(cfg.max_bp + 1, D)  # position 0 is the START token
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = TransformerEncoder(D, cfg.attention_heads, cfg.attention_layers, cfg.dropout,
                                          cfg.attn_implementation, cfg.ff_mult, cfg.gradient_checkpointing)
        self.pool = AttentionPooling(D)
        self.kmer_size = cfg.kmer_size
        self.kmer_emb = nn.Embedding(4 ** cfg.kmer_size, D) if cfg.kmer_size else None
        self.proj = nn.Linear(D, D)
        self.norm = nn.LayerNorm(D)
        # bias-free: a bias would only learn the base composition, which the hidden state already carries
        self.nuc_head = nn.Linear(D, VOCAB_SIZE, bias=False) if cfg.predict_nucleotides else None
        self.apply(init_weights)
        if self.kmer_emb is not None:
            nn.init.normal_(self.kmer_emb.weight, std=1.0)

    def _encode(self, tokens):
        """Encode one chunk: tokens [n, L] -> (emb [n, D], logits [n, L, V] or None)."""
        n, L = tokens.shape
        key_mask = tokens != PAD                                     # [n, L]
        pos = torch.arange(L, device=tokens.device)                  # [L]
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(pos))      # [n, L, D]
        h = self.encoder(x, key_mask)                                # [n, L, D]
        pooled = self.pool(h, key_mask)                              # [n, D]
        if self.kmer_emb is not None:
            pooled = pooled + self._kmer_profile(tokens)             # [n, D]
        emb = self.norm(self.proj(pooled))                           # [n, D]
        logits = self.nuc_head(h) if self.nuc_head is not None else None  # [n, L, V]
        return emb, logits

    def _kmer_profile(self, tokens):
        """Mean embedding of the k-mers of each row: tokens [n, L] -> [n, D].

        k-mers touching anything but A/C/G/T (START, PAD, MASK, ambiguity codes) are left out, so masked
        positions reveal nothing to the masked-nucleotide objective.
        """
        k = self.kmer_size
        n, L = tokens.shape
        if L - 1 < k:
            return self.kmer_emb.weight.new_zeros(n, self.kmer_emb.embedding_dim)
        windows = tokens[:, 1:].unfold(1, k, 1)                      # [n, L-k, k]
        valid = ((windows >= 1) & (windows <= 4)).all(-1)            # [n, L-k]
        powers = 4 ** torch.arange(k, device=tokens.device)          # [k]
        index = ((windows - 1).clamp(0, 3) * powers).sum(-1)         # [n, L-k]
        w = valid.to(self.kmer_emb.weight.dtype)
        summed = torch.einsum("nw,nwd->nd", w, self.kmer_emb(index))  # [n, D]
        # sum / sqrt(count): unit-variance per dimension for unrelated sequences, so the profile is on the
        # scale of the layer-normalized transformer state it is added to
        return summed / w.sum(1, keepdim=True).clamp_min(1.0).sqrt()

    def forward(self, tokens):
        """
        Parameters
        ----------
        tokens : torch.LongTensor, shape [N, L]
            One ASV per row, L <= max_bp + 1, PAD after the sequence.

        Returns
        -------
        emb : torch.Tensor, shape [N, D]
        nuc_logits : torch.Tensor, shape [N, L, VOCAB_SIZE], or None without the nucleotide head
        """
        N, L = tokens.shape
        if L > self.cfg.max_bp + 1:
            raise ValueError(f"ASV tokens have {L} positions but the model takes at most max_bp + 1 = "
                             f"{self.cfg.max_bp + 1}")
        tokens = tokens.long()
        D = self.cfg.embedding_dim
        if N == 0:  # a batch of empty samples: some SDPA kernels refuse zero-sized inputs
            emb = self.norm.weight.new_zeros(0, D)
            logits = emb.new_zeros(0, L, VOCAB_SIZE) if self.nuc_head is not None else None
            return emb, logits
        c = self.cfg.asv_chunk_size
        if c <= 0 or N <= c:
            return self._encode(tokens)
        # rows are independent, so chunking changes peak memory, not results: the transient attention
        # buffers are [chunk, H, L, L] instead of [N, H, L, L]. Without gradients (frozen base, inference)
        # that bounds the whole footprint; in training the activations saved for backward still grow with N
        # unless gradient_checkpointing is on too.
        embs, logits = [], []
        for start in range(0, N, c):
            e, lg = self._encode(tokens[start:start + c])
            embs.append(e)
            logits.append(lg)
        return torch.cat(embs), (torch.cat(logits) if self.nuc_head is not None else None)
