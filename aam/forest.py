"""A random forest kept as plain arrays beside AAM's weights: trained with scikit-learn, stored without pickle.

The forest of an ensemble model is the estimator q2-sample-classifier trains (scikit-learn's random forest, its
defaults otherwise), fit to the relative abundances of the training table. A fitted scikit-learn forest is a
Python object that only pickle can save; its trees, however, are just arrays (children, split feature,
threshold, leaf values), so those are what the model file keeps, as tensors, and prediction walks them here.
Features are identified by a digest of their sequence, so a new table keyed by other IDs (hashes instead of
sequences) still lines up, and features the forest never saw are simply absent from its splits.

The forest may also read a few axes of AAM's pretrained sample embedding beside the abundances (`EmbeddingAxes`):
the principal axes of the base's distance embedding, whose Euclidean distances were pretrained to match the
study's UniFrac, so they are the encoder's ordination of a sample. A forest splits on one column at a time and
cannot build such a community-level summary from single ASVs; for a new sample the encoder places it on these
axes from its reads alone (no tree, no distances to the training samples).
"""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from aam.data.novelty import sequence_digest

ARRAY_NAMES = ("tree_offsets", "left", "right", "feature", "threshold", "value")
AXES_NAMES = ("axes_mean", "axes_components")
#: deepest tree a model file may hold (scikit-learn's trees on a study's samples stay far below)
MAX_TREE_DEPTH = 10_000


def _floating(array):
    return np.issubdtype(array.dtype, np.floating)


@dataclass
class ForestArrays:
    """Every tree of a forest, concatenated.

    Attributes
    ----------
    tree_offsets : np.ndarray of int64, shape [T + 1]
        Tree t owns nodes ``tree_offsets[t]:tree_offsets[t + 1]``; child indices are local to their tree.
    left, right : np.ndarray of int64, shape [n_nodes]
        Children (-1 at leaves).
    feature : np.ndarray of int64, shape [n_nodes]
        Column of the split (-2 at leaves, as scikit-learn writes it).
    threshold : np.ndarray of float64, shape [n_nodes]
        Go left when ``x[feature] <= threshold``.
    value : np.ndarray of float64, shape [n_nodes, K]
        Leaf output: the mean target (K = 1) or the class probabilities (K classes).
    axes : EmbeddingAxes, optional
        The embedding axes the forest reads after the abundances (columns ``F_abundances:``), if any.
    """

    tree_offsets: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    axes: Optional["EmbeddingAxes"] = None

    @classmethod
    def from_sklearn(cls, forest):
        """The arrays of a fitted `RandomForestRegressor` / `RandomForestClassifier`."""
        trees = [e.tree_ for e in forest.estimators_]
        offsets = np.cumsum([0] + [t.node_count for t in trees]).astype(np.int64)
        values = []
        for t in trees:
            v = t.value[:, 0, :].astype(np.float64)                     # [n_nodes, K]
            if v.shape[1] > 1:
                # classifiers: class counts (or fractions, by version) of each node -> probabilities
                v = v / np.maximum(v.sum(axis=1, keepdims=True), 1e-300)
            values.append(v)
        return cls(tree_offsets=offsets,
                   left=np.concatenate([t.children_left for t in trees]).astype(np.int64),
                   right=np.concatenate([t.children_right for t in trees]).astype(np.int64),
                   feature=np.concatenate([t.feature for t in trees]).astype(np.int64),
                   threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
                   value=np.concatenate(values))

    def to_tensors(self):
        import torch
        arrays = {name: getattr(self, name) for name in ARRAY_NAMES}
        if self.axes is not None:
            arrays.update(axes_mean=self.axes.mean, axes_components=self.axes.components)
        return {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()}

    @classmethod
    def from_tensors(cls, tensors):
        axes = None
        if any(name in tensors for name in AXES_NAMES):
            axes = EmbeddingAxes(*(tensors[name].cpu().numpy() for name in AXES_NAMES))
        return cls(**{name: tensors[name].cpu().numpy() for name in ARRAY_NAMES}, axes=axes)

    def check(self, n_features, n_outputs, where, n_axes=0, embedding_dim=None, n_covariates=0):
        """Raise ValueError unless the arrays describe trees over `n_features` abundance columns, `n_axes`
        embedding axes (of an `embedding_dim`-wide embedding) and `n_covariates` covariate columns with
        `n_outputs` outputs.

        A model file comes from anywhere, and `predict` walks its trees until every sample reaches a leaf, so
        every property that walk relies on is checked here: integer arrays of integer dtype and values of a float
        dtype, every child inside its own tree and after its parent (so no walk can loop), at most
        `MAX_TREE_DEPTH` levels, split features inside the table, and finite thresholds and leaf values.
        """
        self._check_axes(n_axes, embedding_dim, where)
        self._check_layout(n_outputs, where)
        sizes = np.repeat(np.diff(self.tree_offsets), np.diff(self.tree_offsets))
        local = np.arange(len(self.left)) - np.repeat(self.tree_offsets[:-1], np.diff(self.tree_offsets))
        internal = self.left >= 0
        left, right = self.left[internal], self.right[internal]
        if np.any((left >= sizes[internal]) | (right >= sizes[internal]) | (right < 0)):
            raise ValueError(f"{where}: a tree of the forest points outside itself")
        if np.any((left <= local[internal]) | (right <= local[internal])):
            raise ValueError(f"{where}: a tree of the forest points back to itself or an earlier node (a cycle)")
        if np.any((self.feature[internal] < 0) | (self.feature[internal] >= n_features + n_axes + n_covariates)):
            raise ValueError(f"{where}: a split of the forest uses a feature it does not have")
        if not np.all(np.isfinite(self.value)) or not np.all(np.isfinite(self.threshold[internal])):
            raise ValueError(f"{where}: the forest holds NaN or infinite values")
        depth = self.depth()
        if depth > MAX_TREE_DEPTH:
            raise ValueError(f"{where}: a tree of the forest is {depth} levels deep, more than the "
                             f"{MAX_TREE_DEPTH} a forest may have")

    def _check_axes(self, n_axes, embedding_dim, where):
        """The embedding axes match the record: `n_axes` rows of `embedding_dim` finite values (or none)."""
        if not n_axes:
            if self.axes is not None:
                raise ValueError(f"{where}: the forest holds embedding axes its record does not mention")
            return
        a = self.axes
        if (a is None or a.components.ndim != 2 or a.components.shape != (n_axes, embedding_dim)
                or a.mean.shape != (embedding_dim,)):
            raise ValueError(f"{where}: the forest's embedding axes do not match its record ({n_axes} axes of "
                             f"a {embedding_dim}-wide embedding)")
        if not (_floating(a.mean) and _floating(a.components)):
            raise ValueError(f"{where}: the forest's embedding axes must be floating-point arrays")
        if not (np.all(np.isfinite(a.mean)) and np.all(np.isfinite(a.components))):
            raise ValueError(f"{where}: the forest's embedding axes hold NaN or infinite values")

    def _check_layout(self, n_outputs, where):
        """Dtypes, dimensions and lengths of the arrays, and tree offsets that cover the nodes."""
        integers = {"tree_offsets": self.tree_offsets, "left": self.left, "right": self.right,
                    "feature": self.feature}
        for name, array in integers.items():
            if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{where}: the forest's {name} must be a 1-D integer array, not {array.ndim}-D "
                                 f"{array.dtype}")
        if self.threshold.ndim != 1 or not _floating(self.threshold) or not _floating(self.value):
            raise ValueError(f"{where}: the forest's thresholds and leaf values must be floating-point arrays")
        n = len(self.left)
        if not (len(self.right) == len(self.feature) == len(self.threshold) == len(self.value) == n):
            raise ValueError(f"{where}: the forest's node arrays differ in length")
        offsets = self.tree_offsets
        if len(offsets) < 2 or offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 1):
            raise ValueError(f"{where}: the forest's tree offsets do not cover its nodes")
        if self.value.ndim != 2 or self.value.shape[1] != n_outputs:
            raise ValueError(f"{where}: the forest predicts {self.value.shape[1:]} outputs, the model {n_outputs}")

    def depth(self):
        """Levels of the deepest tree (a root alone is 1), walking every tree at once, level by level.

        Only for checked arrays (children after their parents), where it ends after at most the largest tree's
        size levels; it stops early once `MAX_TREE_DEPTH` is passed.
        """
        tree_start = np.repeat(self.tree_offsets[:-1], np.diff(self.tree_offsets))   # per node: its tree's root
        frontier = self.tree_offsets[:-1].astype(np.int64)                          # global index of every root
        levels = 0
        while frontier.size and levels <= MAX_TREE_DEPTH:
            levels += 1
            base = tree_start[frontier]
            inner = self.left[frontier] >= 0
            frontier = np.unique(np.concatenate([base[inner] + self.left[frontier][inner],
                                                 base[inner] + self.right[frontier][inner]]))
        return levels

    @property
    def n_trees(self):
        return len(self.tree_offsets) - 1

    def predict(self, x):
        """Mean leaf value over the trees: x [N, F] -> [N, K]."""
        x = np.asarray(x, dtype=np.float64)
        out = np.zeros((x.shape[0], self.value.shape[1]))
        rows = np.arange(x.shape[0])
        for t in range(self.n_trees):
            base = self.tree_offsets[t]
            node = np.zeros(x.shape[0], dtype=np.int64)                   # local index, all start at the root
            while True:
                g = base + node
                inner = self.left[g] >= 0
                if not inner.any():
                    break
                gi = g[inner]
                go_left = x[rows[inner], self.feature[gi]] <= self.threshold[gi]
                node[inner] = np.where(go_left, self.left[gi], self.right[gi])
            out += self.value[base + node]
        return out / self.n_trees


@dataclass
class EmbeddingAxes:
    """The first principal axes of sample embeddings, fitted on the training samples (labels unused).

    Attributes
    ----------
    mean : np.ndarray of float64, shape [D]
    components : np.ndarray of float64, shape [k, D]
        Orthonormal rows, by decreasing variance of the training samples along them.
    """

    mean: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, embeddings, k):
        """The first `k` axes (at most D, and at most N - 1) of `embeddings` [N, D]."""
        from sklearn.decomposition import PCA
        embeddings = np.asarray(embeddings, dtype=np.float64)
        k = int(min(k, embeddings.shape[1], embeddings.shape[0] - 1))
        pca = PCA(n_components=k, svd_solver="full").fit(embeddings)
        return cls(mean=pca.mean_.astype(np.float64), components=pca.components_.astype(np.float64))

    def transform(self, embeddings):
        """Coordinates on the axes: [N, D] -> [N, k]."""
        return (np.asarray(embeddings, dtype=np.float64) - self.mean) @ self.components.T


def relative_abundance(counts):
    """Reads of each feature over the sample's total: [N, F] sparse or dense -> dense [N, F] float64."""
    import scipy.sparse as sp
    counts = counts.toarray() if sp.issparse(counts) else np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return counts / np.maximum(totals, 1.0)


def feature_keys(sequences, max_bp):
    """The forest's name for each feature: the digest of the sequence the model reads."""
    return [sequence_digest(s, max_bp) for s in sequences]


def fit_forest(x, y, classifier, n_trees, seed, threads=1):
    """q2-sample-classifier's forest (scikit-learn defaults) on features `x` [N, F] and targets `y` [N].

    Returns
    -------
    ForestArrays
    """
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    est = (RandomForestClassifier if classifier else RandomForestRegressor)(
        n_estimators=int(n_trees), random_state=int(seed) % (2 ** 32), n_jobs=max(1, int(threads)))
    est.fit(x, y)
    if classifier and list(est.classes_) != list(range(len(est.classes_))):
        raise ValueError("classes must be encoded as 0..K-1 before the forest is fit")
    return ForestArrays.from_sklearn(est)


def aligned_features(keys, sequences, counts, max_bp):
    """Relative abundances of a table in the forest's column order (features the forest never saw are dropped).

    Parameters
    ----------
    keys : list of str
        The forest's feature keys (`feature_keys` of its training table).
    sequences : list of str
        Sequences of the table's features.
    counts : [N, F_table]

    Returns
    -------
    np.ndarray, shape [N, len(keys)]
    """
    return align_columns(keys, feature_keys(sequences, max_bp), counts)


def align_columns(keys, table_keys, counts):
    """`aligned_features` from the table's own feature keys (its sequences' digests, already computed)."""
    rel = relative_abundance(counts)                                      # [N, F_table]
    column = {k: i for i, k in enumerate(keys)}
    out = np.zeros((rel.shape[0], len(keys)))
    for j, key in enumerate(table_keys):
        i = column.get(key)
        if i is not None:
            out[:, i] += rel[:, j]  # two IDs with the same sequence share a column
    return out
