"""The composite model's seams: a new member is one class plus one option choice, and one `train()` encodes each
ASV of the training table once."""
import dataclasses
import os

import numpy as np
import pytest
import torch

from aam import api
from aam import options as O
from aam.checkpoint import load_checkpoint
from aam.ensemble import Member, member_outputs, register_member
from aam.ensemble.member import MEMBER_TYPES

from tests.conftest import MP, TINY

TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))
METADATA = os.path.join(MP, "sample-metadata.tsv")
DAYS = "days-since-experiment-start"
ARCH = ("embedding_dim", "attention_heads", "attention_layers", "max_bp", "token_limit")
FIT = {k: v for k, v in TINY.items() if k not in ARCH}


class RidgeMember(Member):
    """A toy member: ridge regression on relative abundances (the acid test of the member interface)."""

    kind = "ridge"

    def __init__(self, alpha=1.0, name=None):
        super().__init__(name)
        self.alpha, self.keys, self.coef, self.intercept = alpha, None, None, None

    def fit(self, data):
        from sklearn.linear_model import Ridge

        from aam.forest import feature_keys
        self.keys = list(dict.fromkeys(feature_keys(data.features.table.sequences, data.features.record.max_bp)))
        est = Ridge(alpha=self.alpha).fit(data.features.abundances(self.keys), data.target)
        self.coef, self.intercept = np.atleast_2d(est.coef_), np.atleast_1d(est.intercept_)
        return self

    def predict(self, features):
        return features.abundances(self.keys) @ self.coef.T + self.intercept            # [N, 1]

    def state(self):
        return ({"coef": torch.from_numpy(self.coef), "intercept": torch.from_numpy(self.intercept)},
                {"alpha": self.alpha, "features": self.keys})

    @classmethod
    def from_state(cls, name, tensors, settings, record, where):
        member = cls(alpha=settings["alpha"], name=name)
        member.keys, member.coef = settings["features"], tensors["coef"].numpy()
        member.intercept = tensors["intercept"].numpy()
        if member.coef.shape != (1, len(member.keys)):
            raise ValueError(f"{where}: the ridge member's coefficients do not match its features")
        return member

    def summary(self):
        return f"ridge regression (alpha {self.alpha:g}) on relative abundances of {len(self.keys or [])} features"


@pytest.fixture
def ridge_choice(monkeypatch):
    """The ``ensemble`` option with one more choice: the one line a developer adds to aam/options.py."""
    register_member(RidgeMember)
    option = O.BY_NAME["ensemble"]
    monkeypatch.setitem(O.BY_NAME, "ensemble", dataclasses.replace(option, choices=option.choices + ("ridge",)))
    yield
    MEMBER_TYPES.pop("ridge", None)


def test_a_new_member_fits_saves_loads_predicts_and_shows_in_the_model_card(ridge_choice, tmp_path):
    from q2_aam._format import AAMModelDirFmt
    from q2_aam._visualizers import summarize
    base = api.pretrain(TABLE, sequences=SEQS, tree=TREE, progress=False, epochs=1, seed=1, **TINY).checkpoint
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="linear", ensemble="ridge",
                    output_dir=str(tmp_path / "run"), progress=False, seed=2, **FIT)
    assert res.checkpoint.record.ensemble.names == ("network", "ridge")
    back = load_checkpoint(tmp_path / "run" / "model.pt", expect="predictor")
    assert set(back.member_states) == {"ridge"}
    pred = api.predict(back, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    w = back.record.ensemble.weight("network")
    np.testing.assert_allclose(pred["prediction"], w * pred["network"] + (1 - w) * pred["ridge"])
    assert pred["ridge"].nunique() > 1
    ridge, _ = member_outputs(pred, back.record)["ridge"]
    np.testing.assert_allclose(ridge, pred["ridge"])
    summarize(str(tmp_path / "card"), AAMModelDirFmt(str(tmp_path / "run"), mode="r"))
    card = open(tmp_path / "card" / "index.html").read()
    assert "ridge regression (alpha 1) on relative abundances" in card


def test_each_asv_of_the_training_table_is_encoded_once_per_train(monkeypatch):
    from aam.models.sequence_encoder import SequenceEncoder
    base = api.pretrain(TABLE, sequences=SEQS, tree=TREE, progress=False, epochs=1, seed=1, **TINY).checkpoint
    encoded = []
    original = SequenceEncoder.encode_asvs

    def counting(self, rows):
        encoded.extend(range(len(rows)))
        return original(self, rows)
    monkeypatch.setattr(SequenceEncoder, "encode_asvs", counting)
    # the default: a transformer head on the frozen base, a forest reading the embedding's axes, the share chosen
    # on validation samples (the network's outputs on them, the forest's axes, the Trainer: one encoding for all)
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, forest_trees=10, epochs=2,
                    forest_embedding_axes=3, progress=False, **{**FIT, "validation_fraction": 0.4})
    assert res.checkpoint.record.ensemble.share_samples  # the share was chosen on samples of their own
    # every feature of the training table encoded, none twice (rows counted: short reads may share tokens)
    assert len(encoded) == res.checkpoint.record.data.n_features


def test_a_member_blind_to_a_samples_reads_gives_its_share_to_the_network(tmp_path):
    """Reads of features the training table never had (another study, read length or processing) are invisible to
    the forest; below half of a sample's reads on features it saw, its share passes to the network."""
    from aam.data.sequences import as_mapping
    model = os.path.join(os.path.dirname(__file__), "data", "format-2", "ensemble-regressor.pt")
    seqs = as_mapping(SEQS)
    same = api.predict(model, TABLE, sequences=SEQS, num_threads=1, seed=0, log=lambda line: None)
    assert (same["forest_share"] == 0.5).all()  # in-study: every read on a known feature, the fitted weights
    np.testing.assert_allclose(same["prediction"], 0.5 * same["network"] + 0.5 * same["forest"])
    # the same reads as another pipeline would write them (one base changed at the end of each read): no feature
    # of the training table is left, so the forest predicts from nothing and the network alone decides
    foreign = tmp_path / "foreign.fasta"
    foreign.write_text("".join(f">{k}\n{v[:40]}{'A' if v[40] != 'A' else 'C'}{v[41:]}\n" for k, v in seqs.items()))
    other = api.predict(model, TABLE, sequences=str(foreign), num_threads=1, seed=0, log=lambda line: None)
    assert (other["forest_share"] == 0).all() and (other["network_share"] == 1).all()
    np.testing.assert_allclose(other["prediction"], other["network"])
    off = api.predict(model, TABLE, sequences=str(foreign), num_threads=1, seed=0, log=lambda line: None,
                      coverage_floor=0)
    np.testing.assert_allclose(off["prediction"], 0.5 * off["network"] + 0.5 * off["forest"])
