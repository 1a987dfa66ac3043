"""Out-of-fold importance (`aam.interpret.outoffold`): pooling every fold's measurement over all samples, on
constructed measurements whose answer is known, and the groups formed once from the whole table."""
import biom
import numpy as np
import pytest

from aam import options as O
from aam.interpret.groups import FeatureGroup
from aam.interpret.importance import ImportanceSettings
from aam.interpret.outoffold import FoldImportance, ImportancePlan, plan_importance, pooled_importance

MEMBERS = ["network", "forest", "prediction"]


def _plan(n_samples, settings=ImportanceSettings(repeats=1, resamples=500, seed=0)):
    groups = [FeatureGroup("noise", (0,), ("f0",)), FeatureGroup("signal", (1, 2), ("f1", "f2"))]
    rng = np.random.default_rng(1)
    return ImportancePlan(groups, settings, rng.random((n_samples, 2)), [f"s{i}" for i in range(n_samples)])


def _folds(plan, subjects, signal=1.0, seed=0):
    """Three folds holding whole subjects; the 'signal' group raises every sample's loss by about `signal`, the
    'noise' group by nothing on average."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(plan.sample_ids)
    folds = []
    for k in range(3):
        held = ids[np.asarray(subjects) % 3 == k]
        n = len(held)
        increases = np.zeros((2, len(MEMBERS), n))
        increases[0] = rng.normal(0.0, 0.2, size=(len(MEMBERS), n))
        increases[1] = signal + rng.normal(0.0, 0.2, size=(len(MEMBERS), n))
        folds.append(FoldImportance(list(held), MEMBERS, increases, ("f2",) if k == 0 else ()))
    return folds


def test_a_planted_group_is_ranked_first_with_an_interval_above_zero_and_noise_is_not_called():
    subjects = np.repeat(np.arange(12), 4)                     # 48 samples, 12 subjects of 4
    plan = _plan(len(subjects))
    table = pooled_importance(_folds(plan, subjects), plan, [str(s) for s in subjects],
                              plan.abundance[:, :1], None)
    blend = table[table["member"] == "prediction"].set_index("group")
    assert list(blend.index) == ["signal", "noise"]
    assert blend.loc["signal", "low"] > 0.5 and bool(blend.loc["signal", "important"])
    assert not bool(blend.loc["noise", "important"])
    assert blend.loc["noise", "low"] < 0 < blend.loc["noise", "high"]
    assert set(table["member"]) == set(MEMBERS)
    # a feature a fold's training table lacked is reported as such, with its group
    assert blend.loc["signal", "unseen_ids"] == ("f2",) and blend.loc["noise", "unseen_ids"] == ()


def test_every_sample_is_counted_once_whatever_fold_held_it():
    subjects = np.repeat(np.arange(9), 2)
    plan = _plan(len(subjects))
    folds = _folds(plan, subjects)
    table = pooled_importance(folds, plan, [str(s) for s in subjects], plan.abundance[:, :1], None)
    expected = np.concatenate([f.increases[1, MEMBERS.index("prediction")] for f in folds]).mean()
    measured = table[(table["member"] == "prediction") & (table["group"] == "signal")]["importance"].item()
    assert measured == pytest.approx(expected)
    # a fold lost: its samples were measured by no model, and the pooled table refuses to pretend otherwise
    with pytest.raises(ValueError, match=r"measured in no fold"):
        pooled_importance(folds[:2], plan, [str(s) for s in subjects], plan.abundance[:, :1], None)


def test_a_member_missing_from_a_fold_is_left_out_of_the_pooled_table():
    subjects = np.repeat(np.arange(9), 2)
    plan = _plan(len(subjects))
    folds = _folds(plan, subjects)
    only = folds[1]
    keep = [MEMBERS.index("network"), MEMBERS.index("prediction")]
    folds[1] = FoldImportance(only.sample_ids, ["network", "prediction"], only.increases[:, keep], ())
    table = pooled_importance(folds, plan, None, plan.abundance[:, :1], None)
    assert set(table["member"]) == {"network", "prediction"}


def test_a_fold_measurement_survives_its_file(tmp_path):
    subjects = np.repeat(np.arange(9), 2)
    fold = _folds(_plan(len(subjects)), subjects)[0]
    path = str(tmp_path / "fold-1-importance.npz")
    fold.save(path)
    back = FoldImportance.load(path)
    assert back.sample_ids == fold.sample_ids and back.members == fold.members and back.unseen == fold.unseen
    np.testing.assert_array_equal(back.increases, fold.increases)
    assert FoldImportance.load(str(tmp_path / "absent.npz")) is None


def test_groups_are_formed_from_the_whole_table_the_most_abundant_kept():
    rng = np.random.default_rng(0)
    counts = rng.poisson(lam=np.linspace(1, 40, 12), size=(30, 12)).T.astype(float)     # [F, N]
    table = biom.Table(counts, [f"f{i}" for i in range(12)], [f"s{i}" for i in range(30)])
    taxonomy = {f"f{i}": f"k__Bacteria; p__P; c__C; o__O; f__F; g__G{i % 4}" for i in range(12)}
    import pandas as pd
    opts = O.resolve(O.IMPORTANCE, top=3, rank="genus")
    plan = plan_importance(table, pd.Series(taxonomy), opts)
    assert len(plan.groups) == 3 and plan.abundance.shape == (30, 3)
    # G3 holds f3, f7, f11: the most reads
    assert plan.groups[0].name.endswith("g__G3") and plan.groups[0].feature_ids == ("f3", "f7", "f11")
    assert plan.digest() == plan_importance(table, pd.Series(taxonomy), opts).digest()
