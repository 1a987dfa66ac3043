"""Feature groups for importance: features of one taxon, or features whose abundances move together.

Permuting one feature at a time both costs a prediction pass per feature and understates correlated features
(the model reads the same signal from a partner), so importance is measured for groups: every feature of a
genus when a taxonomy is given, else clusters of features whose relative abundances correlate (Spearman) above a
threshold. A cheap screen keeps the most abundant groups.
"""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import pandas as pd

from aam.ranks import RANKS  # noqa: F401 (the ranks a group can be made at)


@dataclass(frozen=True)
class FeatureGroup:
    """Features permuted together.

    Attributes
    ----------
    name : str
        The taxon (``g__Bacteroides``, with its lineage) or the cluster's label.
    features : tuple of int
        Column positions in the table.
    feature_ids : tuple of str
    """

    name: str
    features: Tuple[int, ...]
    feature_ids: Tuple[str, ...]


def taxonomy_groups(feature_ids, taxonomy, rank="genus"):
    """One group per taxon at `rank` (features without a name there are grouped by their deepest named rank).

    Parameters
    ----------
    feature_ids : list of str
    taxonomy : pd.Series
        Feature ID -> lineage ('k__Bacteria; p__Firmicutes; ...'); features it lacks form the group 'unassigned'.
    rank : str
        One of `RANKS`.
    """
    depth = RANKS.index(rank) + 1
    labels = []
    for fid in feature_ids:
        lineage = taxonomy.get(fid)
        parts = [p.strip() for p in str(lineage).split(";")] if isinstance(lineage, str) else []
        named = [p for p in parts[:depth] if p and not p.endswith("__")]
        labels.append("; ".join(named) if named else "unassigned")
    return _groups_of_labels(feature_ids, labels)


def correlation_groups(abundances, feature_ids, threshold=0.7):
    """Clusters of features whose relative abundances correlate above `threshold` (Spearman, average linkage).

    Parameters
    ----------
    abundances : np.ndarray, shape [N, F]
    feature_ids : list of str
    threshold : float
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.stats import spearmanr
    x = np.asarray(abundances, dtype=np.float64)
    if x.shape[1] < 2:
        return _groups_of_labels(feature_ids, list(feature_ids))
    rho = spearmanr(x).correlation if x.shape[0] > 2 else np.eye(x.shape[1])
    rho = np.nan_to_num(np.atleast_2d(rho), nan=0.0)
    distance = 1.0 - rho[np.triu_indices(x.shape[1], k=1)]
    clusters = fcluster(linkage(np.clip(distance, 0, 2), method="average"), t=1.0 - threshold, criterion="distance")
    # a cluster is named after its most abundant feature
    totals = x.sum(axis=0)
    names = {}
    for c in np.unique(clusters):
        members = np.flatnonzero(clusters == c)
        top = members[np.argmax(totals[members])]
        names[c] = feature_ids[top] + (f" (+{len(members) - 1} correlated)" if len(members) > 1 else "")
    return _groups_of_labels(feature_ids, [names[c] for c in clusters])


def _groups_of_labels(feature_ids, labels):
    frame = pd.DataFrame({"label": labels, "position": np.arange(len(labels))})
    return [FeatureGroup(str(label), tuple(int(i) for i in rows["position"]),
                         tuple(feature_ids[i] for i in rows["position"]))
            for label, rows in frame.groupby("label", sort=True)]


def most_abundant(groups, abundances, top) -> List[FeatureGroup]:
    """The `top` groups with the highest mean relative abundance (the cheap screen), most abundant first."""
    x = np.asarray(abundances, dtype=np.float64)
    totals = [x[:, list(g.features)].sum(axis=1).mean() for g in groups]
    order = np.argsort(totals, kind="stable")[::-1]
    return [groups[i] for i in order[:top]]
