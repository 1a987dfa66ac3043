"""An exponential moving average of the trained weights, evaluated and kept in place of the raw ones.

Fine-tuning on a few hundred samples is noisy: with the base frozen, the validation score of consecutive epochs
moves by 10-20% on some studies (docs/science-notes.md), so the epoch that wins on a small validation split is
partly luck. Averaging the weights over the last steps smooths that walk (Polyak averaging); the trainer scores
the average each epoch, and the best epoch's average becomes the model.

Only trainable parameters are averaged (a frozen base is the same in both). The average lives beside each
parameter, in its dtype and placement (a DTensor shard under FSDP), so no rank ever gathers it.
"""
import contextlib

import torch


class WeightAverage:
    """Exponential moving average of `model`'s trainable parameters.

    Parameters
    ----------
    model : torch.nn.Module
    decay : float
        Weight of the old average at each update, in [0, 1). Early updates use the smaller
        ``(1 + n) / (10 + n)`` (n = updates so far), so the average is not dominated by the initial weights.
    """

    def __init__(self, model, decay):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @classmethod
    def spanning_epochs(cls, model, epochs, steps_per_epoch):
        """An average whose memory is about `epochs` epochs of optimizer steps (decay 1 - 1 / steps)."""
        return cls(model, 1.0 - 1.0 / max(1.0, float(epochs) * steps_per_epoch))

    @torch.no_grad()
    def update(self):
        """Fold the current weights in (after each optimizer step)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.average, self.params):
            avg.lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def _exchange(self):
        for avg, p in zip(self.average, self.params):
            raw = p.detach().clone()
            p.copy_(avg)
            avg.copy_(raw)

    @contextlib.contextmanager
    def swapped_in(self):
        """Within the block the model holds the averaged weights; the raw ones (which training continues from)
        are put back after it."""
        self._exchange()
        try:
            yield
        finally:
            self._exchange()
