"""What a model reads of a table, computed once: `SampleFeatures`.

Training an ensemble, choosing its weights, fitting its forest's axes and predicting all read the same things of
a table: the relative abundance of each sequence, the frozen base's ASV embeddings, the sample embeddings that
base builds from them (averaged over rarefaction draws), and the covariates. `SampleFeatures` holds them for one
table: each distinct ASV is encoded once, in full precision, when it is built, and every reader (the Trainer's
batches, the linear head, the forest's axes, the share choice, prediction) is served from that one encoding.

    table (PreparedTable) + frozen base -> ASV embeddings [F, D] (once)
        -> abundances(keys)          [N, F_keys]   relative abundance by sequence digest
        -> base_outputs(pick)        [N, ...]      sample-level outputs, averaged over rarefaction draws
        -> distance_embedding()      [N, D]        (memoized)
        -> batches()                 loader of the table for a network (covariates attached)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from aam.data.pipeline import PreparedTable
from aam.options import Options
from aam.record import ModelRecord

if TYPE_CHECKING:  # the context module imports torch; SampleFeatures is importable without it
    from aam.training.context import RunContext

#: ASVs encoded per call when the cache is filled (bounds the token rows held at once)
ENCODE_CHUNK = 8192


@dataclass
class SampleFeatures:
    """The samples of one table as the models read them.

    Attributes
    ----------
    table : aam.data.pipeline.PreparedTable
    record : aam.record.ModelRecord
        The model the samples are read for: its token limit, ASV selection, rarefaction depth and read length.
    opts : aam.options.Options
        Batch size, rarefaction draws, seed and workers of this run.
    ctx : aam.training.context.RunContext
    base : torch.nn.Module, optional
        The frozen base (`SequenceEncoder`) whose ASV and sample embeddings are read; None without one.
    covariates : np.ndarray of int64, shape [N, C], optional
        Categorical covariate codes, in table order.
    numeric : np.ndarray of float32, shape [N, K], optional
        Numeric covariates as the model reads them (`aam.data.numeric.NumericEncoder`), in table order.
    cache : aam.training.cache.ASVEmbeddingCache, optional
        The ASV embeddings of the table's features, shared by every subset.
    """

    table: PreparedTable
    record: ModelRecord
    opts: Options
    ctx: RunContext
    base: Optional[object] = None
    covariates: Optional[np.ndarray] = None
    cache: Optional[object] = None
    numeric: Optional[np.ndarray] = None
    _memo: dict = field(default_factory=dict, repr=False)
    # what depends on the features alone (their sequences' digests), shared by every subset and re-read table
    _per_feature: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, table: PreparedTable, record: ModelRecord, opts: Options, ctx: RunContext, base=None,
              covariates: Optional[np.ndarray] = None, numeric: Optional[np.ndarray] = None) -> SampleFeatures:
        """Features of `table`; with a `base`, every ASV of the table is encoded now, once, in full precision."""
        features = cls(table, record, opts, ctx, base=base, covariates=covariates, numeric=numeric)
        if base is not None:
            from aam.training.cache import ASVEmbeddingCache
            base.to(ctx.device).eval()
            features.cache = ASVEmbeddingCache(table.tokens, base.cfg.embedding_dim, ctx.device)
            features._encode_all()
        return features

    def _encode_all(self):
        import torch
        n = self.table.tokens.shape[0]
        with torch.no_grad():
            for start in range(0, n, ENCODE_CHUNK):
                ids = torch.arange(start, min(n, start + ENCODE_CHUNK), device=self.ctx.device)
                self.cache.lookup(self.base, ids.view(1, -1))

    @property
    def sample_ids(self):
        return list(self.table.sample_ids)

    def __len__(self):
        return len(self.table.sample_ids)

    def subset(self, sample_ids) -> SampleFeatures:
        """The same features for `sample_ids` (in that order), sharing the ASV embeddings and the rows of every
        sample-level output already computed for this table (a subset's own would draw other rarefactions: draws
        are seeded by a sample's position in its table)."""
        index = {s: i for i, s in enumerate(self.table.sample_ids)}
        rows = [index[s] for s in sample_ids]
        covariates = None if self.covariates is None else self.covariates[rows]
        numeric = None if self.numeric is None else self.numeric[rows]
        return SampleFeatures(self.table.subset(list(sample_ids)), self.record, self.opts, self.ctx, base=self.base,
                              covariates=covariates, cache=self.cache, numeric=numeric,
                              _memo={k: v[rows] for k, v in self._memo.items()}, _per_feature=self._per_feature)

    def with_table(self, table: PreparedTable) -> SampleFeatures:
        """These features over another table of the same samples and features (e.g. with some reads permuted):
        the ASV embeddings are shared, every sample-level output is computed anew."""
        if list(table.sample_ids) != self.sample_ids or table.tokens.shape != self.table.tokens.shape:
            raise ValueError("with_table needs the same samples and features")
        return SampleFeatures(table, self.record, self.opts, self.ctx, base=self.base, covariates=self.covariates,
                              cache=self.cache, numeric=self.numeric, _per_feature=self._per_feature)

    def abundances_by_column(self) -> np.ndarray:
        """Relative abundance of every feature of the table, in its column order: [N, F]."""
        from aam.forest import relative_abundance
        return relative_abundance(self.table.counts)

    def abundances(self, keys) -> np.ndarray:
        """Relative abundances in the column order of `keys` (sequence digests; features not in `keys` are
        dropped, two IDs with one sequence share a column): [N, len(keys)]."""
        from aam.forest import align_columns, feature_keys
        if "keys" not in self._per_feature:
            self._per_feature["keys"] = feature_keys(self.table.sequences, self.record.max_bp)
        return align_columns(keys, self._per_feature["keys"], self.table.counts)

    def batches(self):
        """The table's batches for a network of `record` (rarefied to its depth, covariates attached)."""
        from aam.data.loaders import inference_loader
        return inference_loader(self.table, self.record, self.opts, self.covariates, self.numeric)

    def mean_over_draws(self, run):
        """``run(batch)`` [B, ...] for every sample, averaged over ``opts.rarefaction_draws`` rarefactions of the
        deeper samples: a torch tensor [N, ...] in table order."""
        import torch

        from aam.data.loaders import mean_over_draws
        with torch.no_grad():
            out, ids = mean_over_draws(self.batches(), self.opts.rarefaction_draws, run)
        order = {s: i for i, s in enumerate(ids)}
        return out[[order[s] for s in self.table.sample_ids]]

    def base_outputs(self, pick) -> np.ndarray:
        """``pick(base outputs, batch)`` [B, F] of the frozen base for every sample, averaged over rarefaction
        draws: [N, F] float64 in table order."""
        from aam.training.forward import move_batch
        if self.base is None:
            raise ValueError("these sample features were built without a frozen base")

        def run(batch):
            batch = move_batch(batch, self.ctx.device)
            asv_emb = self.cache.lookup(self.base, batch["asv_ids"])
            return pick(self.base.encode_samples(asv_emb, batch["counts"], batch["asv_ids"] >= 0), batch).float().cpu()
        return self.mean_over_draws(run).double().numpy()

    def distance_embedding(self) -> np.ndarray:
        """The base's distance embedding (pretrained to match UniFrac) of every sample: [N, D] (computed once)."""
        if "distance" not in self._memo:
            self._memo["distance"] = self.base_outputs(lambda out, batch: out["distance_embedding"])
        return self._memo["distance"]
