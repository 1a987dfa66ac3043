"""Metadata loading, targets, the categorical encoder and train/validation splits, on the bundled real data."""
import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from aam.data.categorical import CategoricalEncoder, CategoricalSchema
from aam.data.metadata import categorical_target, load_metadata, numeric_target, select_samples
from aam.data.splits import kfold_splits, train_val_split
from aam.errors import AAMInputError
from tests.conftest import KB, MP

MP_MD = os.path.join(MP, "sample-metadata.tsv")
KB_MD = os.path.join(KB, "sample-metadata.tsv")


@pytest.fixture(scope="module")
def mp():
    return load_metadata(MP_MD)


@pytest.fixture(scope="module")
def kb():
    return load_metadata(KB_MD)


def _write(tmp_path, text, name="md.tsv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------------------------- loading

def test_load_moving_pictures_skips_directive_row(mp):
    assert mp.shape == (16, 8)
    assert mp.index.name == "sample_id"
    assert mp.index[0] == "L1S8"
    assert "#q2:types" not in mp.index
    assert "sample-id" not in mp.columns
    assert mp.loc["L1S8", "body-site"] == "gut"
    # values stay strings until a target asks for numbers
    assert mp["days-since-experiment-start"].dtype == object
    assert mp.loc["L1S105", "days-since-experiment-start"] == "140"


def test_load_keyboard_hash_sample_id_header(kb):
    assert kb.shape == (24, 8)
    assert kb.index[0] == "K1.A"
    assert list(kb.columns[:3]) == ["BarcodeSequence", "LinkerPrimerSequence", "Subject"]
    # 'na' is a category in this study, not one of pandas' missing-value spellings
    assert kb.loc["K1.A", "Finger"] == "na"


def test_load_strips_whitespace_comments_and_missing(tmp_path):
    path = _write(tmp_path, "# a comment before the header\n"
                            " sample-id \t depth \t site \n"
                            "#q2:types\tnumeric\tcategorical\n"
                            " s1 \t 3 \t gut \n"
                            "# a comment between samples\n"
                            "s2\t\tNA\n"
                            "\n"
                            "s3\t  \t palm\n")
    md = load_metadata(path)
    assert list(md.index) == ["s1", "s2", "s3"]
    assert list(md.columns) == ["depth", "site"]
    assert md.loc["s1", "depth"] == "3" and md.loc["s1", "site"] == "gut"
    assert md.loc[["s2", "s3"], "depth"].isna().all()
    assert pd.isna(md.loc["s2", "site"])


def test_load_dataframe_and_metadata_like(mp):
    df = pd.DataFrame({" site ": [" gut", ""], "n": [1.0, 2.0]}, index=[" a ", "b"])
    md = load_metadata(df)
    assert list(md.index) == ["a", "b"] and md.index.name == "sample_id"
    assert md.loc["a", "site"] == "gut" and pd.isna(md.loc["b", "site"])

    class FakeMetadata:  # stands in for qiime2.Metadata, which the engine never imports
        def to_dataframe(self):
            return mp.rename_axis("id")

    back = load_metadata(FakeMetadata())
    assert back.index.name == "sample_id" and back.equals(mp)


def test_load_errors_name_file_and_samples(tmp_path):
    missing = str(tmp_path / "nope.tsv")
    with pytest.raises(AAMInputError, match="nope.tsv"):
        load_metadata(missing)
    dup = _write(tmp_path, "sample-id\tx\ns1\t1\ns2\t2\ns1\t3\n")
    with pytest.raises(AAMInputError, match="'s1'.*more than once"):
        load_metadata(dup)


# --------------------------------------------------------------------------------------------- selection

def test_select_samples_order_and_missing(mp):
    ids = ["L6S68", "L1S8", "not-a-sample", "also-missing"]
    with pytest.raises(AAMInputError) as err:
        select_samples(mp, ids)
    msg = str(err.value)
    assert "2 of 4" in msg and "'not-a-sample'" in msg and "--missing-samples ignore" in msg
    sub = select_samples(mp, ids, missing="ignore")
    assert list(sub.index) == ["L6S68", "L1S8"]
    with pytest.raises(ValueError):
        select_samples(mp, ids, missing="drop")


# --------------------------------------------------------------------------------------------- targets

def test_numeric_target(mp):
    y, dropped = numeric_target(mp, "days-since-experiment-start")
    assert y.dtype == np.float64 and dropped == []
    assert y["L1S105"] == 140.0 and y.index.equals(mp.index)


def test_numeric_target_drops_missing(mp):
    md = mp.copy()
    md.loc[["L1S8", "L6S68"], "days-since-experiment-start"] = np.nan
    y, dropped = numeric_target(md, "days-since-experiment-start")
    assert dropped == ["L1S8", "L6S68"] and len(y) == 14


def test_numeric_target_errors(mp):
    with pytest.raises(AAMInputError, match=r"'L1S8': 'gut'.*--classifier"):
        numeric_target(mp, "body-site")
    with pytest.raises(AAMInputError, match="no column 'age'.*body-site"):
        numeric_target(mp, "age")
    md = mp.copy()
    md.loc["L2S175", "year"] = "inf"
    with pytest.raises(AAMInputError, match="infinite.*L2S175"):
        numeric_target(md, "year")


def test_categorical_target(mp):
    y, dropped = categorical_target(mp, "body-site")
    assert dropped == [] and sorted(y.unique()) == ["gut", "left palm", "right palm", "tongue"]
    years, _ = categorical_target(mp, "year")
    assert set(years) == {"2008", "2009"}
    # the same labels from a float column, as qiime2.Metadata would give
    floats, _ = categorical_target(pd.DataFrame({"year": [2008.0, 2009.0]}, index=["a", "b"]), "year")
    assert list(floats) == ["2008", "2009"]


# --------------------------------------------------------------------------------------------- encoder

def test_encoder_fit_on_subset_unseen_is_zero(mp):
    train = mp[mp["body-site"] != "tongue"]
    enc = CategoricalEncoder().fit(train, ["body-site", "subject"])
    assert enc.is_fitted and enc.columns == ["body-site", "subject"]
    assert enc.get_cardinalities() == {"body-site": 4, "subject": 3}
    md = mp.copy()
    md.loc["L1S8", "subject"] = np.nan
    codes = enc.transform(md)
    assert codes.dtype == np.int64 and codes.shape == (16, 2)
    site = dict(zip(md.index, codes[:, 0]))
    assert site["L5S104"] == 0  # tongue was not seen while fitting
    assert site["L1S8"] == 1 and site["L2S175"] == 2 and site["L3S242"] == 3  # sorted categories from 1
    assert codes[list(md.index).index("L1S8"), 1] == 0  # missing


def test_encoder_json_round_trip(kb):
    enc = CategoricalEncoder()
    codes = enc.fit_transform(kb, ["Subject", "SampleType"])
    text = json.dumps(enc.to_dict())
    back = CategoricalEncoder.from_dict(json.loads(text))
    assert np.array_equal(back.transform(kb), codes)
    assert back.get_cardinalities() == {"Subject": 7, "SampleType": 3}
    schema = CategoricalSchema.from_dict(json.loads(text))
    assert schema.names == ["Subject", "SampleType"]
    assert list(schema.cardinalities().items()) == [("Subject", 7), ("SampleType", 3)]
    assert schema.columns[1].categories == ["keyboard", "skin"]


def test_encoder_errors_and_missing_column(mp):
    with pytest.raises(AAMInputError, match="not fitted"):
        CategoricalEncoder().transform(mp)
    with pytest.raises(AAMInputError, match="'site'.*body-site"):
        CategoricalEncoder().fit(mp, ["site"])
    empty = mp.assign(blank=np.nan)
    with pytest.raises(AAMInputError, match="'blank' has no values"):
        CategoricalEncoder().fit(empty, ["blank"])
    enc = CategoricalEncoder().fit(mp, ["body-site"])
    with pytest.warns(UserWarning, match="body-site"):
        codes = enc.transform(mp.drop(columns="body-site"))
    assert (codes == 0).all()


# --------------------------------------------------------------------------------------------- splits

def _check_partition(ids, train, val):
    assert train and val
    assert not set(train) & set(val)
    assert sorted(train + val) == sorted(ids)
    order = {s: i for i, s in enumerate(ids)}
    assert [order[s] for s in train] == sorted(order[s] for s in train)
    assert [order[s] for s in val] == sorted(order[s] for s in val)


def test_random_split_deterministic(kb):
    ids = list(kb.index)
    train, val = train_val_split(ids, val_fraction=0.25, seed=3)
    _check_partition(ids, train, val)
    assert len(val) == 6
    assert train_val_split(ids, val_fraction=0.25, seed=3) == (train, val)
    assert any(train_val_split(ids, val_fraction=0.25, seed=s)[1] != val for s in range(4, 8))


def test_stratified_split_every_class_on_both_sides(mp):
    ids = list(mp.index)
    sites = list(mp["body-site"])
    for seed in range(10):
        train, val = train_val_split(ids, val_fraction=0.2, seed=seed, stratify=sites)
        _check_partition(ids, train, val)
        for side in (train, val):
            assert set(mp.loc[side, "body-site"]) == set(sites)


def test_stratified_split_singleton_class_goes_to_training():
    ids = [f"s{i}" for i in range(9)]
    labels = ["a"] * 4 + ["b"] * 4 + ["lonely"]
    train, val = train_val_split(ids, val_fraction=0.3, seed=0, stratify=labels)
    assert "s8" in train
    assert {labels[int(s[1:])] for s in val} == {"a", "b"}


def test_grouped_split_keeps_subjects_whole(mp, kb):
    for md, column in ((mp, "subject"), (kb, "Subject")):
        ids, groups = list(md.index), list(md[column])
        for seed in range(5):
            train, val = train_val_split(ids, val_fraction=0.2, seed=seed, groups=groups)
            _check_partition(ids, train, val)
            assert not set(md.loc[train, column]) & set(md.loc[val, column])
    ids, groups = list(kb.index), list(kb["Subject"])
    assert train_val_split(ids, 0.3, 1, groups=groups) == train_val_split(ids, 0.3, 1, groups=groups)


def test_grouped_split_with_stratify_groups_win(kb):
    ids, groups = list(kb.index), list(kb["Subject"])
    train, val = train_val_split(ids, 0.3, 0, stratify=list(kb["SampleType"]), groups=groups)
    _check_partition(ids, train, val)
    assert not set(kb.loc[train, "Subject"]) & set(kb.loc[val, "Subject"])
    # 3 keyboards and 3 people: a balanced group choice puts both sample types on each side
    assert set(kb.loc[val, "SampleType"]) == {"keyboard", "skin"}


def test_split_errors(mp):
    ids = list(mp.index)
    with pytest.raises(AAMInputError, match="at least 2 groups"):
        train_val_split(ids, groups=["subject-1"] * len(ids))
    with pytest.raises(AAMInputError, match="at least 2 samples"):
        train_val_split(["only"])
    with pytest.raises(ValueError):
        train_val_split(ids, val_fraction=1.0)
    with pytest.raises(AAMInputError, match="more than once"):
        train_val_split(["a", "b", "a"])
    # two samples still give one on each side
    assert train_val_split(["a", "b"], val_fraction=0.01) in ((["a"], ["b"]), (["b"], ["a"]))


def test_kfold(mp, kb):
    ids = list(mp.index)
    folds = kfold_splits(ids, k=4, seed=1)
    assert len(folds) == 4 and folds == kfold_splits(ids, k=4, seed=1)
    assert sorted(s for _, val in folds for s in val) == sorted(ids)
    for train, val in folds:
        _check_partition(ids, train, val)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn may warn about class sizes; irrelevant here
        strat = kfold_splits(ids, k=4, seed=1, stratify=list(mp["body-site"]))
    for _, val in strat:
        assert sorted(mp.loc[val, "body-site"]) == ["gut", "left palm", "right palm", "tongue"]
    kb_ids, subjects = list(kb.index), list(kb["Subject"])
    grouped = kfold_splits(kb_ids, k=3, seed=0, groups=subjects)
    for train, val in grouped:
        _check_partition(kb_ids, train, val)
        assert not set(kb.loc[train, "Subject"]) & set(kb.loc[val, "Subject"])
    with pytest.raises(AAMInputError, match="at least 3 groups"):
        kfold_splits(ids, k=3, groups=list(mp["subject"]))
    with pytest.raises(AAMInputError, match="at least 17 samples"):
        kfold_splits(ids, k=17)
