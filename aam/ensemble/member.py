"""The interface every ensemble member implements, and the registry that maps a member kind to its class.

A member is an estimator in scikit-learn's sense: configured by its constructor, fitted by `fit`, applied by
`predict`. It reads the `aam.inference.SampleFeatures` of a table (relative abundances keyed by sequence digest,
the frozen base's embeddings, the covariates) and outputs a named [N, K] array: class probabilities (K classes)
or values in the target's units (K = 1). Its state is tensors plus JSON, so a model file never needs pickle.

A new member is one class here plus one choice of the ``ensemble`` option::

    @register_member
    class RidgeMember(Member):
        kind = "ridge"
        ...

Nothing else (the workflows, the checkpoint, the model card) names member kinds.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Dict, List, Optional, Tuple

import numpy as np

if TYPE_CHECKING:  # annotations only: importing them here would load torch with the registry
    import torch

    from aam.inference import SampleFeatures
    from aam.record import ModelRecord

#: member kind -> class; filled by `register_member`
MEMBER_TYPES: Dict[str, type] = {}


def register_member(cls):
    """Class decorator: make a `Member` subclass available under its ``kind``."""
    if not (isinstance(cls, type) and issubclass(cls, Member)) or not cls.kind:
        raise TypeError("register_member needs a Member subclass with a kind")
    MEMBER_TYPES[cls.kind] = cls
    return cls


@dataclass(frozen=True)
class FitData:
    """What a member fits on: the labelled samples of the training table.

    Attributes
    ----------
    features : aam.inference.SampleFeatures
        Every labelled sample, in the order of `target`.
    target : np.ndarray, shape [N]
        Class indices (int64) or values in the target column's units (float64).
    classifier : bool
    n_outputs : int
        K: classes, or 1.
    groups : list of str, optional
        Group (subject) of each sample.
    seed : int
    threads : int
    """

    features: SampleFeatures
    target: np.ndarray
    classifier: bool
    n_outputs: int
    groups: Optional[List[str]]
    seed: int
    threads: int = 1

    def subset(self, rows) -> FitData:
        """The same data restricted to positions `rows` [M] (features, target and groups alike)."""
        rows = np.asarray(rows, dtype=np.int64)
        ids = [self.features.sample_ids[i] for i in rows]
        return FitData(self.features.subset(ids), self.target[rows], self.classifier, self.n_outputs,
                       None if self.groups is None else [self.groups[i] for i in rows], self.seed, self.threads)


class Member(ABC):
    """An ensemble member: fits on `FitData`, predicts [N, K] from `SampleFeatures`, stores tensors + JSON.

    Subclasses set ``kind`` (the registry key and the ``ensemble`` option's choice) and implement the abstract
    methods. ``name`` addresses the fitted member in predictions (``<name>``, ``<name>_probability_<class>``),
    the model card and the model file.
    """

    kind: ClassVar[str] = ""

    def __init__(self, name: Optional[str] = None):
        self.name = name or self.kind

    @classmethod
    def from_options(cls, opts, record: ModelRecord) -> Member:
        """An unfitted member configured from the run's `aam.options.Options` and its `ModelRecord`."""
        return cls()

    @abstractmethod
    def fit(self, data: FitData) -> Member:
        """Fit on `FitData`; returns self."""

    @abstractmethod
    def predict(self, features: SampleFeatures) -> np.ndarray:
        """Outputs for the samples of `features`: [N, K] float64, in ``features.sample_ids`` order."""

    @abstractmethod
    def state(self) -> Tuple[Dict[str, torch.Tensor], dict]:
        """(tensors, settings): a dict of str -> torch.Tensor and a JSON-able dict that rebuild the member."""

    @classmethod
    @abstractmethod
    def from_state(cls, name: str, tensors: Dict[str, torch.Tensor], settings: dict, record: ModelRecord,
                   where: str) -> Member:
        """The fitted member of `state`, checked against the model's `record`; ValueError naming `where`."""

    @abstractmethod
    def summary(self) -> str:
        """What the fitted member is, in one line (model cards)."""

    def coverage(self, features: SampleFeatures) -> np.ndarray:
        """[N]: the share of each sample's reads this member can read. 1 for a member that reads sequences; a
        member keyed on the training table's features reads only the reads of features it saw."""
        return np.ones(len(features))

    def held_out_outputs(self, data: FitData, share_rows: np.ndarray) -> np.ndarray:
        """Outputs for the samples at `share_rows` from a copy fitted on every other sample: [V, K].

        They choose the blend's weights, so they must come from a fit that never saw those samples.
        """
        rest = np.setdiff1d(np.arange(len(data.target)), share_rows)
        clone = copy.deepcopy(self).fit(data.subset(rest))
        return clone.predict(data.features.subset([data.features.sample_ids[i] for i in share_rows]))
