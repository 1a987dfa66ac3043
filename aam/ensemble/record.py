"""What a fitted ensemble is, as stored in a model's record: its members and the weights of their blend.

Torch-free, like `aam.record`, so the plugin can describe a model without loading its weights. Both records are
frozen: an `EnsembleRecord` is built once, when the ensemble has been fitted, and never changed afterwards.
Models of checkpoint format 2 kept a plain dict (``aam_weight``, ``forest_trees``, ``features``, ...);
`EnsembleRecord.from_json` reads it as the network and a forest member.
"""
import json
from dataclasses import dataclass
from typing import Tuple

NETWORK = "network"


@dataclass(frozen=True)
class MemberRecord:
    """One member of an ensemble.

    Attributes
    ----------
    name : str
        How predictions, model cards and the checkpoint address it (``network``, ``forest``).
    kind : str
        The registered member type that rebuilds it (`aam.ensemble.member.MEMBER_TYPES`).
    summary : str
        What it is, in one line, for the model card.
    config : str
        Its settings as JSON text (the forest: trees, feature keys, embedding axes); text keeps the record frozen
        all the way down.
    """

    name: str
    kind: str
    summary: str = ""
    config: str = "{}"

    @property
    def settings(self):
        """`config` as a dict (a fresh copy each time)."""
        return json.loads(self.config)

    @classmethod
    def make(cls, name, kind, summary, settings):
        return cls(name=name, kind=kind, summary=summary, config=json.dumps(settings, sort_keys=True))


@dataclass(frozen=True)
class EnsembleRecord:
    """The members of a fitted ensemble and the weights of their blend.

    Attributes
    ----------
    members : tuple of MemberRecord
        The network first, then the others in the order they were fitted.
    weights : tuple of float
        Each member's share of the blend (same order; they sum to 1). A prediction is the weighted average of the
        members' outputs: class probabilities, or values in the target's units.
    rule : str
        How the weights were chosen (``one-se``, ``lowest-loss``, ``equal``).
    choice : str
        Why, in words: the validation losses behind the choice.
    share_samples : tuple of str
        The validation samples that chose the weights (they chose nothing else).
    method : str
    """

    members: Tuple[MemberRecord, ...]
    weights: Tuple[float, ...]
    rule: str = "equal"
    choice: str = ""
    share_samples: Tuple[str, ...] = ()
    method: str = "weighted average"

    def __post_init__(self):
        if len(self.members) != len(self.weights) or len(self.members) < 2:
            raise ValueError("an ensemble needs two or more members, each with a weight")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError(f"member names must differ: {names}")

    @property
    def names(self):
        return tuple(m.name for m in self.members)

    def member(self, name):
        """The `MemberRecord` called `name` (KeyError when there is none)."""
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def weight(self, name):
        return self.weights[self.names.index(name)]

    def describe(self):
        """One line for model cards: every member with its share, then how the shares were chosen."""
        parts = [f"{m.name} ({self.weight(m.name):g}): {m.summary}" for m in self.members]
        return "; ".join(parts) + (f". Shares chosen by {self.choice}" if self.choice else "")

    # ---- JSON -------------------------------------------------------------------------------------------------
    def to_json(self):
        return {"method": self.method, "rule": self.rule, "choice": self.choice,
                "share_samples": list(self.share_samples),
                "members": [{"name": m.name, "kind": m.kind, "summary": m.summary, "weight": w,
                             "config": json.loads(m.config)} for m, w in zip(self.members, self.weights)]}

    @classmethod
    def from_json(cls, d):
        """From `to_json` output, or the ensemble dict of a format-2 record; None stays None."""
        if d is None:
            return None
        if "members" not in d:
            return cls._from_format_2(d)
        members = tuple(MemberRecord.make(m["name"], m["kind"], m.get("summary", ""), m.get("config") or {})
                        for m in d["members"])
        return cls(members=members, weights=tuple(float(m["weight"]) for m in d["members"]),
                   rule=d.get("rule", "equal"), choice=d.get("choice", ""),
                   share_samples=tuple(d.get("share_samples") or ()), method=d.get("method", "weighted average"))

    @classmethod
    def _from_format_2(cls, d):
        """A format-2 ensemble: the network and one random forest, the network's share ``aam_weight``."""
        w = float(d["aam_weight"])
        axes = int(d.get("embedding_axes") or 0)
        forest = {"trees": int(d["forest_trees"]), "features": list(d.get("features") or []),
                  "samples": d.get("forest_samples"), "embedding_axes": axes}
        return cls(members=(MemberRecord.make(NETWORK, NETWORK, "the fine-tuned network", {}),
                            MemberRecord.make("forest", "forest", forest_summary(forest), forest)),
                   weights=(w, 1.0 - w), rule="format-2", choice=d.get("weight_choice", ""),
                   share_samples=tuple(d.get("share_samples") or ()), method=d.get("method", "weighted average"))


def forest_summary(settings):
    """The model card's line for a forest member's settings."""
    axes = int(settings.get("embedding_axes") or 0)
    reads = f"relative abundances of {len(settings.get('features') or [])} features" + (
        f" and {axes} axes of the pretrained sample embedding" if axes else "")
    samples = settings.get("samples")
    return f"{settings['trees']}-tree random forest on {reads}" + (f", {samples} samples" if samples else "")


