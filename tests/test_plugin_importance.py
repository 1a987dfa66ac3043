"""`qiime aam feature-importance` and `summarize-importance` through QIIME 2's Python API.

The models are test_plugin's tiny ones (trained once per session on the Moving Pictures slice); importance is
measured on a few groups with few permutations, so these tests check the plumbing: the two artifacts and their
columns, q2-sample-classifier's heatmap reading the importance artifact and choosing the most important features,
the page, and the one-line errors. Whether importance finds a real signal is tests/test_importance.py's job.
"""
import os
import zipfile

import numpy as np
import pandas as pd
import pytest
import qiime2

from aam.checkpoint import Checkpoint
from tests.conftest import MP, locked, shared_dir
from tests.test_plugin import MODELS_DIR, train_models

SETTINGS = dict(top=4, repeats=2, num_threads=1, seed=0)


@pytest.fixture(scope="module")
def data():
    return {"table": qiime2.Artifact.load(os.path.join(MP, "table.qza")),
            "sequences": qiime2.Artifact.load(os.path.join(MP, "rep-seqs.qza")),
            "tree": qiime2.Artifact.load(os.path.join(MP, "rooted-tree.qza")),
            "taxonomy": qiime2.Artifact.load(os.path.join(MP, "taxonomy.qza")),
            "metadata": qiime2.Metadata.load(os.path.join(MP, "sample-metadata.tsv"))}


@pytest.fixture(scope="module")
def models(tmp_path_factory, data):
    """test_plugin's tiny models (built once per session by whichever module asks first)."""
    directory = shared_dir(tmp_path_factory, MODELS_DIR)
    with locked(str(directory) + ".lock"):
        if not (directory / "done").exists():
            train_models(directory, data)
            (directory / "done").touch()
    return {name: qiime2.Artifact.load(str(directory / f"{name}.qza")) for name in ("classifier", "regressor")}


def _aam():
    from qiime2.plugins import aam
    return aam


@pytest.fixture(scope="module")
def classified_table(data):
    """The slice's table without the features its taxonomy does not classify."""
    from qiime2.plugins import feature_table
    taxonomy = data["taxonomy"].view(pd.DataFrame)
    table, = feature_table.methods.filter_features(table=data["table"],
                                                   metadata=qiime2.Metadata(taxonomy[["Taxon"]]))
    return table


@pytest.fixture(scope="module")
def genus_importance(models, data, classified_table):
    """The classifier's importance by genus: (importance, details, visualization, printed lines)."""
    import contextlib
    import io
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        outputs = _aam().pipelines.feature_importance(model=models["classifier"], table=classified_table,
                                                      sequences=data["sequences"], taxonomy=data["taxonomy"],
                                                      metadata=data["metadata"], rank="genus", **SETTINGS)
    return (*outputs, printed.getvalue())


def test_two_artifacts_one_row_per_feature_and_the_cost_printed_first(genus_importance, models):
    importance, details, visualization, printed = genus_importance
    assert str(importance.type) == "FeatureData[Importance]"
    assert str(details.type) == "FeatureData[AAMImportance]"
    assert str(visualization.type) == "Visualization"
    assert printed.startswith("feature importance: 4 feature groups x 2 permutations = 8 prediction passes"), \
        printed[:300]

    scores = importance.view(pd.DataFrame)
    frame = details.view(pd.DataFrame)
    # the heatmap's artifact holds the blended importance alone (its heatmap sums an artifact's columns)
    assert list(scores.columns) == ["importance"]
    np.testing.assert_allclose(scores["importance"].to_numpy(), frame.loc[scores.index, "importance"].to_numpy())
    # every feature of a group carries the group's figures; groups are numbered by importance
    per_group = frame.groupby("group")
    assert sorted(per_group.groups) == [1.0, 2.0, 3.0, 4.0]
    assert (per_group.nunique().drop(columns="unseen") == 1).all().all()
    assert (per_group.size() == per_group["group_size"].first()).all()
    firsts = per_group.first()
    assert firsts["importance"].is_monotonic_decreasing
    assert ((firsts["low"] <= firsts["importance"]) & (firsts["importance"] <= firsts["high"])).all()
    # a classifier's direction: one 0/1 column per class, exactly one set where the group's abundance varies
    classes = models["classifier"].view(Checkpoint).record.target.class_labels
    direction = frame[[f"direction_{c}" for c in classes]]
    assert set(np.unique(direction.to_numpy())) <= {0.0, 1.0} and (direction.sum(axis=1) <= 1).all()
    # each member beside the blend; the training table had every feature of its own table
    for member in ("network", "forest"):
        assert {f"{member}_importance", f"{member}_low", f"{member}_high", f"{member}_q_value"} <= set(frame.columns)
    assert (frame["unseen"] == 0).all()
    # qiime metadata tabulate reads the details
    assert set(details.view(qiime2.Metadata).columns) == set(frame.columns)


def test_sample_classifier_heatmap_shows_the_most_important_features(genus_importance, classified_table,
                                                                     data):
    from qiime2.plugins import sample_classifier
    importance = genus_importance[0]
    scores = importance.view(pd.DataFrame)["importance"]
    top = scores.sort_values(ascending=False, kind="stable")
    heatmap, filtered = sample_classifier.pipelines.heatmap(
        table=classified_table, importance=importance, sample_metadata=data["metadata"].get_column("body-site"),
        feature_count=3, normalize=True)
    assert str(heatmap.type) == "Visualization"
    import biom
    kept = set(filtered.view(biom.Table).ids("observation"))
    assert len(kept) == 3 and kept <= set(top.index[top >= top.iloc[2]])


def test_the_page_ranks_groups_with_their_taxonomy(genus_importance, tmp_path):
    visualization = genus_importance[2]
    path = str(tmp_path / "importance.qzv")
    visualization.save(path)
    with zipfile.ZipFile(path) as zf:
        names = {n.split("/data/", 1)[1] for n in zf.namelist() if "/data/" in n}
        index = next(zf.read(n) for n in zf.namelist() if n.endswith("/data/index.html")).decode()
        per_group = pd.read_csv(zf.open(next(n for n in zf.namelist() if n.endswith("importance-per-group.tsv"))),
                                sep="\t")
    assert {"index.html", "importance.png", "importance.svg", "importance-per-group.tsv",
            "importance-per-feature.tsv"} <= names
    assert list(per_group["rank"]) == [1, 2, 3, 4]
    assert per_group["group"].str.contains("g__").all(), per_group["group"]   # labelled with the genus
    assert {"network importance", "forest importance", "direction"} <= set(per_group.columns)
    assert "Feature importance" in index and "q-value" in index


def test_a_regressor_gets_a_signed_direction_and_grouped_intervals(models, data):
    importance, details, _ = _aam().pipelines.feature_importance(
        model=models["regressor"], table=data["table"], sequences=data["sequences"], metadata=data["metadata"],
        group_column="subject", correlation=0.5, **{**SETTINGS, "top": 2, "repeats": 1})
    frame = details.view(pd.DataFrame)
    assert "direction" in frame.columns and set(frame["direction"]) <= {-1.0, 0.0, 1.0}
    assert set(frame["group"]) == {1.0, 2.0}


def test_bad_input_is_one_clear_error(models, data, classified_table):
    md = data["metadata"].to_dataframe().drop(columns="body-site")
    with pytest.raises(ValueError, match=r"the metadata has no column 'body-site', the target this model predicts"):
        _aam().pipelines.feature_importance(model=models["classifier"], table=classified_table,
                                            sequences=data["sequences"], metadata=qiime2.Metadata(md), **SETTINGS)
    # the slice's taxonomy leaves 32 of its 448 features unclassified
    with pytest.raises(ValueError, match=r"--i-taxonomy \(FeatureData\[Taxonomy\]\) has no lineage for 32 of the "
                                         r"table's 448 features"):
        _aam().pipelines.feature_importance(model=models["classifier"], table=data["table"],
                                            sequences=data["sequences"], taxonomy=data["taxonomy"],
                                            metadata=data["metadata"], **SETTINGS)
    with pytest.raises(ValueError, match=r"--p-group-column 'cage' is not a metadata column"):
        _aam().pipelines.feature_importance(model=models["classifier"], table=classified_table,
                                            sequences=data["sequences"], metadata=data["metadata"],
                                            group_column="cage", **SETTINGS)


def test_summarize_importance_refuses_details_it_cannot_read():
    frame = pd.DataFrame({"importance": [0.1, 0.2]}, index=pd.Index(["a", "b"], name="feature-id"))
    details = qiime2.Artifact.import_data("FeatureData[AAMImportance]", frame)
    with pytest.raises(ValueError, match="lacks the column"):
        _aam().visualizers.summarize_importance(details=details)
