"""`Ensemble`: members addressed by name and the weights of their blend, fitted and applied as one estimator.

    fit:      network.fit(data) -> each other member's held-out outputs on the share samples -> weights by the
              rule (`aam.ensemble.blend`) -> each other member fit on every labelled sample -> EnsembleRecord
    predict:  {name: [N, K]} for every member, and "prediction": their weighted average

`member_outputs` reads a prediction table back into each member's outputs (the benchmarks use it), and
`check_member_states` checks what a model file stores for its members against its record.
"""
import numpy as np
import pandas as pd

from aam.ensemble.blend import choose_weights
from aam.ensemble.forest import ForestMember
from aam.ensemble.member import MEMBER_TYPES
from aam.ensemble.network import NetworkMember
from aam.ensemble.record import NETWORK, EnsembleRecord, MemberRecord

#: prefix of the class-probability columns of a prediction table
PROBABILITY = "probability_"
#: below this share of a sample's reads on features a feature-keyed member saw, its weight shrinks (`sample_weights`)
COVERAGE_FLOOR = 0.5
#: the members that come with q2-aam (each registers itself on import; others register with `register_member`)
BUILT_IN = (ForestMember,)


def member_type(kind):
    """The member class registered for `kind` (KeyError when there is none)."""
    return MEMBER_TYPES[kind]


class Ensemble:
    """A network and the members blended with it.

    Parameters
    ----------
    members : list of Member
        The network (a `NetworkMember`) first.
    weights : list of float, optional
        Each member's share of the blend; chosen by `fit` when not given.
    """

    def __init__(self, members, weights=None):
        self.members = list(members)
        if not isinstance(self.members[0], NetworkMember):
            raise TypeError("an ensemble's first member is its network")
        self.weights = None if weights is None else [float(w) for w in weights]
        self.record = None

    @property
    def names(self):
        return [m.name for m in self.members]

    def __getitem__(self, name):
        return self.members[self.names.index(name)]

    def fit(self, data, share_ids=(), rule="one-se"):
        """Fit every member on `data` and choose the blend's weights on the samples `share_ids`.

        The network trains first (its training keeps the share samples out); every other member gives held-out
        outputs on the share samples, then fits on all of `data`. Without share samples the members share equally.
        Sets ``self.record`` (an `EnsembleRecord`); returns self.
        """
        network, others = self.members[0], self.members[1:]
        network.fit(data)
        if len(others) != 1 and share_ids:
            raise ValueError("the share rules blend the network with one other member")
        index = {s: i for i, s in enumerate(data.features.sample_ids)}
        share_rows = np.array([index[s] for s in share_ids], dtype=np.int64)
        weights, rule_used, choice = [1.0 / len(self.members)] * len(self.members), "equal", \
            "equal weights (no validation samples to set aside for it)"
        if len(share_rows):
            other = others[0]
            held = other.held_out_outputs(data, share_rows)                              # [V, K]
            mine = network.held_out_outputs(data, share_rows)                            # [V, K]
            groups = None if data.groups is None else [data.groups[i] for i in share_rows]
            share, choice = choose_weights(mine, held, data.target[share_rows], data.classifier, rule, groups,
                                           other_name=other.name)
            weights, rule_used = [share, 1.0 - share], rule
        for member in others:
            member.fit(data)
        self.weights = weights
        self.record = EnsembleRecord(
            members=tuple(MemberRecord.make(m.name, m.kind, m.summary(), m.state()[1] if m is not network else {})
                          for m in self.members),
            weights=tuple(weights), rule=rule_used, choice=choice, share_samples=tuple(str(s) for s in share_ids))
        return self

    def member_states(self):
        """The tensors of every member but the network (whose weights are the model's), by name."""
        return {m.name: m.state()[0] for m in self.members[1:]}

    def sample_weights(self, features, coverage_floor=COVERAGE_FLOOR):
        """Each member's share of the blend for each sample: [N, M].

        A member keyed on the training table's features is blind to reads of features it never saw (another
        study, read length or processing). Below `coverage_floor` of a sample's reads on features it can read, its
        weight shrinks in proportion and the network, which reads every sequence, takes what it gives up; at or
        above the floor (in-study samples, nearly always) the weights are the fitted ones, unchanged. 0 turns this
        off.
        """
        weights = np.asarray(self.weights, dtype=np.float64)
        shares = np.tile(weights, (len(features), 1))                                    # [N, M]
        if coverage_floor <= 0:
            return shares
        for j, member in enumerate(self.members[1:], start=1):
            usable = np.minimum(1.0, member.coverage(features) / coverage_floor)         # [N]
            shares[:, j] = weights[j] * usable
            shares[:, 0] += weights[j] * (1.0 - usable)
        return shares

    def predict(self, features, coverage_floor=COVERAGE_FLOOR):
        """Every member's outputs and the blend: {name: [N, K]} plus ``"prediction"`` (weights per sample by
        `sample_weights`) and ``"shares"`` ([N, M], each member's share of each sample's blend)."""
        outputs = {}
        for member in self.members[1:]:
            # before the network: a member reading the embedding's axes computes them from the features' encoding
            # in full precision, the way they were fit
            outputs[member.name] = member.predict(features)
        outputs[self.members[0].name] = self.members[0].predict(features)
        shares = self.sample_weights(features, coverage_floor)
        outputs["prediction"] = sum(shares[:, [j]] * outputs[m.name] for j, m in enumerate(self.members))
        outputs["shares"] = shares
        return outputs

    @classmethod
    def from_checkpoint(cls, ckpt, model=None):
        """The ensemble of a predictor's model file (a network alone when it has no other member)."""
        record = ckpt.record
        network = NetworkMember(model=model if model is not None else ckpt.build_model(), record=record)
        if record.ensemble is None:
            return cls([network], [1.0])
        members = [network] + [_member_from_state(m, ckpt.member_states.get(m.name, {}), record, "the model")
                               for m in record.ensemble.members[1:]]
        return cls(members, record.ensemble.weights)


def _member_from_state(member_record, tensors, record, where):
    try:
        cls = member_type(member_record.kind)
    except KeyError:
        raise ValueError(f"{where}: its ensemble member {member_record.name!r} is of a kind this q2-aam does not "
                         f"know ({member_record.kind!r})") from None
    return cls.from_state(member_record.name, tensors, member_record.settings, record, where)


def check_member_states(record, member_states, where):
    """Raise `AAMInputError` unless the member tensors of a model file are exactly those its record describes."""
    from aam.errors import AAMInputError
    described = [] if record.ensemble is None else [m.name for m in record.ensemble.members[1:]]
    extra = sorted(set(member_states) - set(described))
    if extra:
        raise AAMInputError(f"{where} holds ensemble members its record does not mention ({', '.join(extra)}); "
                            "the file was altered.")
    if record.ensemble is not None and record.ensemble.members[0].name != NETWORK:
        raise AAMInputError(f"{where}: the first member of its ensemble is not its network; the file was altered.")
    for m in ([] if record.ensemble is None else record.ensemble.members[1:]):
        if m.name not in member_states:
            raise AAMInputError(f"{where}: the record describes an ensemble member {m.name!r}, but the file holds "
                                "no state for it; the file is damaged or was altered.")
        try:
            _member_from_state(m, member_states[m.name], record, where)
        except (ValueError, TypeError, KeyError) as err:
            raise AAMInputError(f"{str(err).rstrip('.')}; the file is damaged or was altered.") from None


def prediction_frame(outputs, sample_ids, record):
    """The prediction table of `Ensemble.predict` outputs: ``prediction`` (and ``probability_<class>`` columns of
    a classifier), then, for an ensemble, each member's own outputs under its name and its share of each sample's
    blend (``<member>_share``)."""
    names = [] if record.ensemble is None else list(record.ensemble.names)
    shares = outputs.get("shares")
    if record.is_classifier:
        labels = record.target.class_labels
        prob = outputs["prediction"]
        df = pd.DataFrame(prob, index=sample_ids, columns=[f"{PROBABILITY}{c}" for c in labels])
        df.insert(0, "prediction", [labels[i] for i in prob.argmax(1)])
        for name in names:
            for j, c in enumerate(labels):
                df[f"{name}_{PROBABILITY}{c}"] = outputs[name][:, j]
    else:
        df = pd.DataFrame({"prediction": outputs["prediction"][:, 0]}, index=sample_ids)
        for name in names:
            df[name] = outputs[name][:, 0]
    if names and shares is not None:
        # what each member contributed to each sample's blend (less than its fitted weight where it was blind to
        # most of the sample's reads)
        for j, name in enumerate(names):
            df[f"{name}_share"] = shares[:, j]
    df.index.name = "sample_id"
    return df


def member_outputs(frame, record):
    """Each member's predictions in a prediction table: {name: (predictions, class probabilities or None)}.

    Parameters
    ----------
    frame : pd.DataFrame
        From `aam.api.predict`.
    record : aam.record.ModelRecord
        The model that made it.
    """
    out = {}
    for name in ([] if record.ensemble is None else record.ensemble.names):
        if record.is_classifier:
            prefix = f"{name}_{PROBABILITY}"
            prob = frame[[c for c in frame.columns if c.startswith(prefix)]].rename(columns=lambda c: c[len(prefix):])
            out[name] = (prob.idxmax(axis=1), prob)
        else:
            out[name] = (frame[name], None)
    return out
