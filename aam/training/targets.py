"""Regression target scaling: the model trains in a convenient scale, users see their own units.

Forward: y -> log(y + 1) (optional) -> (y - min) / (max - min) (optional, fitted on the training split only).
Inverse undoes both. The state is a small dict stored in checkpoints, so predictions come back in the original
units and metrics are reported in them.
"""
import numpy as np

from aam.errors import AAMInputError, warn


class TargetTransform:
    """Invertible transform of regression targets.

    Parameters
    ----------
    normalize : bool
        Min-max scale to [0, 1] using the training targets.
    log_transform : bool
        Apply log(y + 1) first; requires every target > -1.
    """

    def __init__(self, normalize=True, log_transform=False):
        self.normalize = bool(normalize)
        self.log_transform = bool(log_transform)
        self.min = 0.0
        self.max = 1.0

    def fit(self, y, column="target"):
        y = np.asarray(y, dtype=np.float64)
        if self.log_transform and np.any(y <= -1):
            raise AAMInputError(f"{{opt:log_transform_targets}} needs every value of {column!r} > -1 (log(y + 1)); "
                                f"the smallest is {y.min():g}. Drop the option or shift the values.")
        z = np.log1p(y) if self.log_transform else y
        self.min, self.max = float(z.min()), float(z.max())
        return self

    @property
    def scale(self):
        span = self.max - self.min
        return span if span > 0 else 1.0

    def transform(self, y):
        z = np.log1p(np.asarray(y, dtype=np.float64)) if self.log_transform else np.asarray(y, np.float64)
        if self.normalize:
            z = (z - self.min) / self.scale
        return z.astype(np.float32)

    def inverse(self, z):
        z = np.asarray(z, dtype=np.float64)
        if self.normalize:
            z = z * self.scale + self.min
        if self.log_transform:
            z = np.expm1(np.minimum(z, 700.0))  # guard overflow of exp for wild predictions
        return z

    def to_dict(self):
        return {"normalize": self.normalize, "log_transform": self.log_transform,
                "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d):
        t = cls(d["normalize"], d["log_transform"])
        t.min, t.max = float(d["min"]), float(d["max"])
        return t


def resolve_output_options(normalize_targets, log_transform_targets, bounded_targets, output_activation):
    """Apply the documented interactions of the regression output options.

    Log-transform together with normalization switches on ``bounded_targets`` (a sigmoid keeps the normalized
    log-scale output in [0, 1] so the inverse exp cannot overflow), with a warning that recommends
    ``--no-normalize-targets`` instead. A bounded output excludes other activations.

    Returns
    -------
    (bool, str)
        The effective ``bounded_targets`` and ``output_activation``.
    """
    if log_transform_targets and normalize_targets and not bounded_targets:
        warn("{opt:log_transform_targets} with {opt:normalize_targets} turns on {opt:bounded_targets} (a sigmoid) "
             "so predictions cannot overflow when transformed back; predictions may then crowd at the "
             "extremes. {opt:log_transform_targets} without {opt:normalize_targets} is usually better.",
             stacklevel=2)
        bounded_targets = True
    if bounded_targets and output_activation != "none":
        raise AAMInputError(f"{{opt:bounded_targets}} already bounds outputs with a sigmoid; drop "
                            f"{{opt:output_activation}} {output_activation} (or {{opt:bounded_targets}}).")
    if output_activation == "softplus" and normalize_targets:
        warn("{opt:output_activation} softplus with {opt:normalize_targets} can flatten predictions near 0; "
             "consider turning {opt:normalize_targets} off.", stacklevel=2)
    return bounded_targets, output_activation
