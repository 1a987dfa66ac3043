"""The network member: the fine-tuned `SequencePredictor` (a transformer head trained by the Trainer, or a
closed-form linear head on the frozen base's embeddings).

Its weights are the model file's ``model`` (the network is what every AAM predictor is), so its `state` holds
no tensors of its own. How it is fitted is the fine-tuning workflow's business (`aam.workflows.finetune`): the
member is handed the training to run, and keeps what it produced.
"""
import numpy as np

from aam.ensemble.member import Member
from aam.ensemble.record import NETWORK
from aam.errors import AAMTrainingError, preview


class NetworkMember(Member):
    """The network of a predictor.

    Parameters
    ----------
    training : callable, optional
        ``training(data) -> aam.api.TrainResult``: fits the network (the fine-tuning workflow's transformer or
        linear head training). Not needed to predict with a trained network.
    model : aam.models.SequencePredictor, optional
        A trained network (when loaded from a model file).
    record : aam.record.ModelRecord, optional
        Its record.
    """

    kind = NETWORK

    def __init__(self, training=None, model=None, record=None, name=None):
        super().__init__(name)
        self.training = training
        self.model = model
        self.record = record
        self.result = None

    def fit(self, data):
        self.result = self.training(data)
        self.record = self.result.checkpoint.record
        self.model = self.result.checkpoint.build_model()
        return self

    def held_out_outputs(self, data, share_rows):
        # the network was trained and chose its epoch without the share samples: it predicts them as they are
        return self.predict(data.features.subset([data.features.sample_ids[i] for i in share_rows]))

    def predict(self, features):
        """Class probabilities, or predictions in the target's units: [N, K] in table order, averaged over
        ``rarefaction_draws`` rarefactions of each deep sample."""
        import torch

        from aam.training.device import autocast_context
        from aam.training.forward import cached_forward, forward_batch, move_batch
        from aam.training.targets import TargetTransform
        ctx, record = features.ctx, self.record
        net = self.model.to(ctx.device).eval()
        cache = self._asv_cache(features, net) if features.opts.asv_dedup else None

        def run(batch):
            batch = move_batch(batch, ctx.device)
            with autocast_context(ctx.device, ctx.precision):
                out = cached_forward(net, cache, batch) if cache is not None else forward_batch(net, batch, False)
            y = out["target_prediction"].float()
            # classifiers average probabilities, regressors predictions in the scale the model was trained in
            return (torch.softmax(y, dim=-1) if record.is_classifier else y).cpu()

        pred = features.mean_over_draws(run).numpy().reshape(len(features), -1)
        bad = [s for s, ok in zip(features.sample_ids, np.isfinite(pred).all(axis=1)) if not ok]
        if bad:
            raise AAMTrainingError(f"the model gave no finite prediction for {len(bad)} sample(s) ({preview(bad)}); "
                                   "its outputs overflow on these samples. Retrain it (e.g. without an exp output "
                                   "activation, or with a lower learning rate).")
        if not record.is_classifier:
            pred = TargetTransform.from_dict(record.target.transform).inverse(pred)
        return pred

    def _asv_cache(self, features, net):
        """The ASV embeddings to serve this network's batches from: the features' own encoding when it was made by
        this network's (frozen) encoder, else a new one. At inference the ASV encoder is a fixed function of the
        sequence, so each distinct ASV is encoded once for the whole table either way."""
        from aam.training.cache import ASVEmbeddingCache
        frozen = record_frozen(self.record)
        if features.cache is not None and (frozen or features.base is net.base):
            return features.cache
        return ASVEmbeddingCache(features.table.tokens, net.base.cfg.embedding_dim, features.ctx.device)

    def state(self):
        return {}, {}

    @classmethod
    def from_state(cls, name, tensors, settings, record, where):
        raise ValueError(f"{where}: the network's weights are the model's own, not a member state")

    def summary(self):
        head = self.record.architecture.head if self.record is not None else "?"
        return f"the fine-tuned network ({head} head)"


def record_frozen(record):
    """Whether a predictor's ASV encoder kept the weights it started from (a frozen base or nucleotide level)."""
    return bool(record.architecture.freeze_base or record.encoder.freeze_asv_encoder)
