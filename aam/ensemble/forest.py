"""The random-forest member: q2-sample-classifier's forest on relative abundances, and optionally on axes of the
pretrained sample embedding (`aam.forest` holds the trees as arrays and walks them; this module fits, stores and
checks them as a member)."""
import numpy as np

from aam.ensemble.member import Member, register_member
from aam.ensemble.record import forest_summary


def _numeric_width(record):
    """Columns of numeric covariates the model reads (`aam.data.numeric.NumericEncoder.width`)."""
    return int(getattr(record.architecture, "numeric_inputs", 0) or 0)


@register_member
class ForestMember(Member):
    """A random forest reading relative abundances (columns keyed by sequence digest), `embedding_axes` axes of
    the frozen pretrained base's distance embedding, and the model's numeric covariates.

    Parameters
    ----------
    trees : int
    embedding_axes : int
        Axes of the embedding to fit (0: abundances only). They are fitted on the labelled samples' embeddings,
        labels unused, so a held-out copy reads the same columns.
    axes_note : str
        Why no axes are read although some were asked for (for the model card's report).
    """

    kind = "forest"

    def __init__(self, trees=500, embedding_axes=0, axes_note="", name=None):
        super().__init__(name)
        self.trees = int(trees)
        self.embedding_axes = int(embedding_axes)
        self.axes_note = axes_note
        self.keys = None           # feature keys of the columns, fixed at the first fit
        self.axes = None           # aam.forest.EmbeddingAxes
        self.arrays = None         # aam.forest.ForestArrays
        self.samples = None

    @classmethod
    def from_options(cls, opts, record):
        axes, note = opts.forest_embedding_axes, ""
        if axes > 0 and not (record.pretrained_encoder is not None and record.architecture.freeze_base):
            # a base trained with the labels would hand the forest features fitted to the training targets
            note = ("no embedding axes: they are read from a frozen pretrained base, and this model "
                    f"{'has no pretrained base' if record.pretrained_encoder is None else 'fine-tuned its base'}")
            axes = 0
        return cls(trees=opts.forest_trees, embedding_axes=axes, axes_note=note)

    def _columns(self, features):
        x = features.abundances(self.keys)                                               # [N, F]
        if self.axes is not None:
            x = np.hstack([x, self.axes.transform(features.distance_embedding())])        # [N, F + k]
        width = _numeric_width(features.record)
        if width:
            # the model's numeric covariates, as the network reads them (None: every one at its training median)
            numeric = features.numeric if features.numeric is not None else np.zeros((len(x), width))
            x = np.hstack([x, numeric])                                                   # [N, F + k + c]
        return x

    def _fix_columns(self, features):
        """The columns, from every labelled sample (labels unused): the features' keys and the embedding's axes."""
        from aam.forest import EmbeddingAxes, feature_keys
        if self.keys is None:
            self.keys = list(dict.fromkeys(feature_keys(features.table.sequences, features.record.max_bp)))
        if self.embedding_axes > 0 and self.axes is None:
            self.axes = EmbeddingAxes.fit(features.distance_embedding(), self.embedding_axes)

    def held_out_outputs(self, data, share_rows):
        # the copy fitted without the share samples reads the same columns as the final forest
        self._fix_columns(data.features)
        return super().held_out_outputs(data, share_rows)

    def fit(self, data):
        from aam.forest import fit_forest
        features = data.features
        self._fix_columns(features)
        self.arrays = fit_forest(self._columns(features), data.target, data.classifier, self.trees, data.seed,
                                 threads=data.threads)
        self.arrays.axes = self.axes  # stored with the trees, which read them after the abundances
        self.samples = len(data.target)
        return self

    def predict(self, features):
        return self.arrays.predict(self._columns(features))

    def coverage(self, features):
        # its columns are the training table's features: reads of any other feature are invisible to it
        return np.clip(features.abundances(self.keys).sum(axis=1), 0.0, 1.0)

    def _settings(self):
        return {"trees": self.trees, "features": list(self.keys or []), "samples": self.samples,
                "embedding_axes": 0 if self.axes is None else len(self.axes.components)}

    def state(self):
        return self.arrays.to_tensors(), self._settings()

    @classmethod
    def from_state(cls, name, tensors, settings, record, where):
        from aam.forest import ARRAY_NAMES, ForestArrays
        missing = [k for k in ARRAY_NAMES if k not in tensors]
        if missing:
            raise ValueError(f"{where}: the random forest {name!r} lacks its arrays {missing}")
        arrays = ForestArrays.from_tensors(tensors)
        n_outputs = len(record.target.class_labels) if record.is_classifier else 1
        axes = int(settings.get("embedding_axes") or 0)
        arrays.check(len(settings.get("features") or []), n_outputs, where, n_axes=axes,
                     embedding_dim=record.architecture.encoder.embedding_dim, n_covariates=_numeric_width(record))
        member = cls(trees=int(settings["trees"]), embedding_axes=axes, name=name)
        member.keys, member.axes, member.arrays = list(settings.get("features") or []), arrays.axes, arrays
        member.samples = settings.get("samples")
        return member

    def summary(self):
        text = forest_summary(self._settings())
        return text + (f" ({self.axes_note})" if self.axes_note else "")
