"""The composite model: a network blended with other members (a random forest, ...), each addressed by name.

Shaped like scikit-learn's composites: an `Ensemble` holds `Member` estimators by name and the weights of their
blend as a parameter. Every member fits on, and predicts from, the `aam.inference.SampleFeatures` of a table
(each ASV encoded once by the frozen base), outputs a named [N, K] array, and stores its state as tensors plus
JSON in the model file (`aam.checkpoint` keeps member states generically). Modules:

    record.py     EnsembleRecord / MemberRecord: what the model record says (torch-free, frozen)
    member.py     the Member interface and the registry of member types (``ensemble`` option choices)
    network.py    the network member (transformer head trained by the Trainer, or the closed-form linear head)
    forest.py     the random-forest member (relative abundances and axes of the pretrained embedding)
    blend.py      the share grid, the lowest-loss and one-se rules, and the split of validation samples
    composite.py  Ensemble: fit the members, choose the weights, predict the blend and every member's output

Submodules are imported on first use, so reading a record (the plugin) loads neither torch nor scikit-learn.
"""
import importlib

_WHERE = {
    "EnsembleRecord": "aam.ensemble.record",
    "MemberRecord": "aam.ensemble.record",
    "Member": "aam.ensemble.member",
    "MEMBER_TYPES": "aam.ensemble.member",
    "register_member": "aam.ensemble.member",
    "member_type": "aam.ensemble.composite",
    "Ensemble": "aam.ensemble.composite",
    "member_outputs": "aam.ensemble.composite",
    "check_member_states": "aam.ensemble.composite",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'aam.ensemble' has no attribute {name!r}")
