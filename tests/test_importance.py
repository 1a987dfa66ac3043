"""Feature importance finds a planted signal and, under shuffled labels, nothing (corrected over groups)."""
import os
import re

import biom
import numpy as np
import pandas as pd
import pytest

from aam import api
from aam.interpret.groups import correlation_groups, most_abundant, taxonomy_groups
from aam.interpret.importance import benjamini_hochberg, permuted_table

from tests.conftest import MP, TINY

SEQS = os.path.join(MP, "rep-seqs.fasta")
TAXONOMY = pd.read_csv(os.path.join(MP, "taxonomy.tsv"), sep="\t", index_col=0)["Taxon"]
PLANTED = "g__Bacteroides"


def _genera():
    """Twelve genera of the Moving Pictures slice with two or more features each: {genus: [feature IDs]}."""
    genus = TAXONOMY.str.extract(r"(g__[A-Za-z]+)")[0].dropna()
    counts = genus.value_counts()
    keep = [g for g in counts.index if counts[g] >= 2][:12]
    assert PLANTED in keep
    return {g: list(genus.index[genus == g][:3]) for g in keep}


def _study(n, seed, planted=True):
    """`n` samples (half class 'high'): random abundances of every genus; the planted genus abundant in 'high'
    samples only (when `planted`)."""
    rng = np.random.default_rng(seed)
    genera = _genera()
    ids = [f for g in genera for f in genera[g]]
    labels = np.array(["high", "low"] * (n // 2))
    counts = rng.poisson(rng.gamma(2.0, 20.0, size=(n, len(ids))))                # [N, F]
    columns = [i for i, f in enumerate(ids) if f in genera[PLANTED]]
    counts[:, columns] = 0
    if planted:
        counts[np.ix_(labels == "high", columns)] = rng.poisson(150, size=((labels == "high").sum(), len(columns)))
    samples = [f"s{seed}.{i}" for i in range(n)]
    table = biom.Table(counts.T.astype(float), ids, samples)
    md = pd.DataFrame({"class": labels}, index=pd.Index(samples, name="sample-id"))
    return table, md


def _fit(table, md):
    return api.train(table, md, "class", classifier=True, sequences=SEQS, progress=False, epochs=2, seed=3,
                     forest_trees=100, **TINY).checkpoint


@pytest.mark.parametrize("planted", [True, False])
def test_importance_finds_the_planted_genus_and_nothing_under_shuffled_labels(planted):
    train, train_md = _study(60, 1)
    test, test_md = _study(40, 2)
    if not planted:
        rng = np.random.default_rng(0)
        train_md["class"] = rng.permutation(train_md["class"].to_numpy())
        test_md["class"] = rng.permutation(test_md["class"].to_numpy())
    model = _fit(train, train_md)
    lines = []
    frame = api.feature_importance(model, test, test_md, sequences=SEQS, taxonomy=TAXONOMY, repeats=5, seed=0,
                                   num_threads=1, log=lines.append)
    assert re.match(r"feature importance: \d+ feature groups x 5 permutations = \d+ prediction passes", lines[0])
    assert set(frame["member"]) == {"network", "forest", "prediction"}
    forest = frame[frame["member"] == "forest"].reset_index(drop=True)
    if planted:
        assert forest.loc[0, "group"].endswith(PLANTED) and forest.loc[0, "low"] > 0 and forest.loc[0, "important"]
        assert forest.loc[0, "direction"] == "high"
    else:
        assert not frame["important"].any(), frame[frame["important"]]


def test_groups_and_the_permutation_keep_what_they_should():
    table, _ = _study(10, 5)
    ids = list(table.ids("observation"))
    groups = taxonomy_groups(ids, TAXONOMY, "genus")
    assert sum(len(g.features) for g in groups) == len(ids) and all(g.features for g in groups)
    assert any(g.name.endswith(PLANTED) for g in groups)
    x = np.asarray(table.matrix_data.T.todense(), dtype=float)
    assert len(most_abundant(groups, x / x.sum(1, keepdims=True), 3)) == 3
    # two features that always move together form one cluster
    y = np.c_[x[:, :1], 2 * x[:, :1], x[:, 5:6]]
    assert len(correlation_groups(y, ["a", "b", "c"], 0.9)) == 2
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03, 0.5]), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.5])

    from aam.data.pipeline import prepare_table
    prepared = prepare_table(table, sequences=SEQS, max_bp=48, rarefy_depth=0)
    order = np.roll(np.arange(len(prepared.sample_ids)), 1)
    cols = list(groups[0].features)
    out = permuted_table(prepared, cols, order)
    before, after = prepared.counts.toarray(), out.counts.toarray()
    rest = [j for j in range(before.shape[1]) if j not in cols]
    np.testing.assert_array_equal(after[:, rest], before[:, rest])
    np.testing.assert_array_equal(after[:, cols], before[order][:, cols])


def test_an_interrupted_run_resumes_with_the_groups_it_finished_and_the_same_result(tmp_path, monkeypatch):
    from aam.interpret import importance as I
    train, train_md = _study(40, 5)
    test, test_md = _study(20, 6)
    model = _fit(train, train_md)
    kw = dict(sequences=SEQS, taxonomy=TAXONOMY, top=4, repeats=2, seed=1, num_threads=1, log=lambda s: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fresh = api.feature_importance(model, test, test_md, **kw)
    assert (tmp_path / "xdg" / "q2-aam" / "importance").is_dir()  # the default place was used...
    assert not list((tmp_path / "xdg").rglob("group-*.npz"))      # ...and emptied when the run completed
    measured = []
    original = I.loss_increase

    def interrupted(*args, **kwargs):
        if len(measured) == 2:
            raise KeyboardInterrupt  # the user stops the run after two groups
        measured.append(args[3].name)
        return original(*args, **kwargs)

    monkeypatch.setattr(I, "loss_increase", interrupted)
    with pytest.raises(KeyboardInterrupt):
        api.feature_importance(model, test, test_md, cache_dir=str(tmp_path / "run"), **kw)
    assert len(list((tmp_path / "run").glob("group-*.npz"))) == 2
    measured.clear()
    monkeypatch.setattr(I, "loss_increase", lambda *a, **k: measured.append(a[3].name) or original(*a, **k))
    lines = []
    resumed = api.feature_importance(model, test, test_md, cache_dir=str(tmp_path / "run"),
                                     **{**kw, "log": lines.append})
    assert len(measured) == 2 and any("2 read back" in line for line in lines)
    pd.testing.assert_frame_equal(resumed, fresh)
