"""Finished feature groups of a permutation-importance run, kept on disk so that an interrupted run resumes.

One file per group (``group-<index>.npz``: the mean loss increase of every sample for each member and the blend,
plain float arrays, read back without pickle), in a directory named by a digest of everything the figures depend on
(the model's weights, the samples, their truth, the groups, the settings). A run started again with the same inputs
reads the finished groups back and measures only the others; each group draws its permutations from its own seeded
stream, so the result is the same as an uninterrupted run's. The directory is removed when the run completes.
"""
import hashlib
import json
import os
import shutil

import numpy as np


def run_key(record, features, truth, feature_groups, settings, coverage_floor):
    """A digest of what the importance of every group depends on.

    Parameters
    ----------
    record : aam.record.ModelRecord
    features : aam.inference.SampleFeatures
    truth : np.ndarray
    feature_groups : list of aam.interpret.groups.FeatureGroup
    settings : aam.interpret.importance.ImportanceSettings
    coverage_floor : float

    Returns
    -------
    str
        Hex digest.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"model": record.weights_sha256, "table": features.table.fingerprint(),
                         "groups": [list(map(int, g.features)) for g in feature_groups],
                         "repeats": settings.repeats, "seed": settings.seed,
                         "coverage_floor": float(coverage_floor)}).encode())
    h.update(np.asarray(truth, dtype=np.float64).tobytes())
    return h.hexdigest()


def default_dir(key):
    """The user's cache directory for the run `key` (``$XDG_CACHE_HOME`` or ``~/.cache``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "q2-aam", "importance", key[:20])


class GroupCache:
    """The finished groups of one run (see the module docstring).

    Parameters
    ----------
    directory : str
        Created when missing.
    """

    def __init__(self, directory):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def _path(self, index):
        return os.path.join(self.directory, f"group-{int(index)}.npz")

    def load(self, index):
        """{member: per-sample loss increase} of group `index`, or None when it has not finished."""
        path = self._path(index)
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name], dtype=np.float64) for name in data.files}

    def save(self, index, increase):
        """Keep group `index`'s increases (written to a temporary file, then renamed: never half a file)."""
        tmp = self._path(index) + ".tmp.npz"
        np.savez(tmp, **{name: np.asarray(v, dtype=np.float64) for name, v in increase.items()})
        os.replace(tmp, self._path(index))

    def remove(self):
        shutil.rmtree(self.directory, ignore_errors=True)
