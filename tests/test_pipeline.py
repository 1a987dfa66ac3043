"""The data pipeline on the bundled real slices: tables, sequences, tokenizer, distances, bad inputs."""
import os

import biom
import numpy as np
import pandas as pd
import pytest
import skbio

from aam.data import distances as D
from aam.data.pipeline import prepare_table, taxonomy_labels
from aam.data.sequences import is_dna, read_fasta, resolve_sequences
from aam.data.table import load_table, rarefy, suggest_depth, validate_table
from aam.data.tokenizer import MASK, PAD, START, SequenceTokenizer
from aam.errors import AAMInputError
from tests.conftest import KB, MP

TABLE = os.path.join(MP, "table.biom")
SEQS = os.path.join(MP, "rep-seqs.fasta")
TREE = os.path.join(MP, "tree.nwk")


# ---- tokenizer ---------------------------------------------------------------------------------------------------
def test_tokenizer_rules():
    tok = SequenceTokenizer(max_bp=8)
    row = tok.encode("acgu-N.T")
    assert row.tolist() == [START, 1, 2, 3, 4, MASK, 4, PAD, PAD]
    assert tok.encode("ACGTACGTACGT").tolist() == [START, 1, 2, 3, 4, 1, 2, 3, 4]  # truncated to max_bp
    assert tok.decode(row) == "ACGTNT"
    with pytest.raises(AAMInputError, match="feat1.*not nucleotides"):
        tok.encode("ACGX1", "feat1")
    with pytest.raises(AAMInputError, match="2 feature sequence"):
        tok.encode_many(["ACGT", "AC*", "ACG9"], ["a", "b", "c"])
    assert SequenceTokenizer.from_config(tok.to_config()).max_bp == 8


def test_every_row_starts_with_start_token():
    seqs = read_fasta(SEQS)
    tokens = SequenceTokenizer(150).encode_many(list(seqs.values()), list(seqs))
    assert (tokens[:, 0] == START).all() and tokens.dtype == np.uint8


# ---- sequences ---------------------------------------------------------------------------------------------------
def test_hashed_ids_without_sequences_fail_with_a_fix():
    table = load_table(TABLE)
    ids = [str(f) for f in table.ids("observation")]
    with pytest.raises(AAMInputError, match="not DNA sequences.*--sequences"):
        resolve_sequences(ids, None)
    seqs = resolve_sequences(ids, SEQS)
    assert all(is_dna(s) for s in seqs)


def test_dna_ids_are_used_directly_and_missing_mapping_is_named():
    assert resolve_sequences(["ACGT" * 10], None) == ["ACGT" * 10]
    with pytest.raises(AAMInputError, match="no sequence.*f2"):
        resolve_sequences(["f1", "f2"], {"f1": "ACGT" * 10})


# ---- tables ------------------------------------------------------------------------------------------------------
def test_biom_json_and_hdf5_load_the_same(tmp_path):
    table = load_table(TABLE)
    path = tmp_path / "t.json.biom"
    path.write_text(table.to_json("test"))
    assert load_table(str(path)) == table
    qza = load_table(os.path.join(MP, "table.qza"))
    assert qza.shape == table.shape


def test_bad_tables():
    with pytest.raises(AAMInputError, match="does not exist"):
        load_table("/nonexistent/table.biom")
    empty = biom.Table(np.zeros((0, 0)), [], [])
    with pytest.raises(AAMInputError, match="empty"):
        validate_table(empty)
    rel = biom.Table(np.array([[0.5, 0.2], [0.5, 0.8]]), ["a", "b"], ["s1", "s2"])
    with pytest.raises(AAMInputError, match="non-integer"):
        validate_table(rel)


def test_rarefaction_is_seeded_and_reports_dropped_samples():
    table = load_table(TABLE)
    depth = suggest_depth(table)
    a, dropped = rarefy(table, depth, seed=3)
    b, _ = rarefy(table, depth, seed=3)
    assert a == b
    totals = np.asarray(a.sum(axis="sample")).ravel()
    assert (totals == depth).all()
    depths = dict(zip(table.ids(), np.asarray(table.sum(axis="sample")).ravel()))
    assert dropped == sorted(s for s, d in depths.items() if d < depth)
    with pytest.raises(AAMInputError, match="every sample has fewer"):
        rarefy(table, 10 ** 9)


# ---- distances ---------------------------------------------------------------------------------------------------
def test_unifrac_and_precomputed_formats_agree(tmp_path):
    table, _ = rarefy(load_table(TABLE), 500, seed=1)
    dm = D.compute_unweighted_unifrac(table, TREE)
    ids = list(dm.ids)
    np.save(tmp_path / "u.npy", dm.data)
    (tmp_path / "u.ids.txt").write_text("\n".join(ids))
    dm.to_data_frame().to_csv(tmp_path / "u.csv")
    dm.write(str(tmp_path / "u.tsv"))
    import h5py
    with h5py.File(tmp_path / "u.h5", "w") as fh:
        fh["order"] = np.array([i.encode() for i in ids])
        fh["matrix"] = dm.data
    for name in ("u.npy", "u.csv", "u.tsv", "u.h5"):
        loaded = D.load_distance_matrix(str(tmp_path / name))
        np.testing.assert_allclose(D.align_distance_matrix(loaded, ids[::-1]),
                                   dm.filter(ids[::-1]).data, atol=1e-6)
    with pytest.raises(AAMInputError, match="not in the distance matrix.*nope"):
        D.align_distance_matrix(dm, ids + ["nope"])


def test_bad_distance_matrices_are_refused_naming_the_file_and_the_fix(tmp_path):
    d = np.array([[0.0, 0.3, 0.5], [0.3, 0.0, 0.4], [0.5, 0.4, 0.0]])
    ids = ["a", "b", "c"]
    # the IDs of a bare .npy come from a file beside it: <name>.ids.txt first, then <name>.txt, then <name>_ids.txt
    np.save(tmp_path / "m.npy", d)
    (tmp_path / "m.txt").write_text("x\ny\nz\n")
    assert list(D.load_distance_matrix(str(tmp_path / "m.npy")).ids) == ["x", "y", "z"]
    (tmp_path / "m.ids.txt").write_text("a\n\nb\nc\n")  # blank lines skipped
    assert list(D.load_distance_matrix(str(tmp_path / "m.npy")).ids) == ids
    assert list(D.load_distance_matrix(str(tmp_path / "m.npy"), ids=["p", "q", "r"]).ids) == ["p", "q", "r"]
    np.save(tmp_path / "bare.npy", d)
    with pytest.raises(AAMInputError, match=r"bare.npy is a bare .npy matrix: pass its sample IDs.*bare.ids.txt"):
        D.load_distance_matrix(str(tmp_path / "bare.npy"))
    with pytest.raises(AAMInputError, match=r"bare.npy: matrix of shape \(3, 3\) does not match 2 sample IDs"):
        D.load_distance_matrix(str(tmp_path / "bare.npy"), ids=["a", "b"])
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(AAMInputError, match="objects.npy is not a numeric .npy matrix.*save the distances as a float"):
        D.load_distance_matrix(str(tmp_path / "objects.npy"), ids=["a"])
    with pytest.raises(AAMInputError, match="nope.tsv' does not exist"):
        D.load_distance_matrix(str(tmp_path / "nope.tsv"))
    (tmp_path / "text.h5").write_text("a\tb\n")  # named .h5, but text
    with pytest.raises(AAMInputError, match=r"text.h5 ends in .h5 but is not an HDF5 file.*as .tsv / .csv / .npy"):
        D.load_distance_matrix(str(tmp_path / "text.h5"))
    for bad, problem in ((np.where(np.eye(3) > 0, 0.0, np.nan), "NaN or infinite"), (-d, "negative"),
                         (d + np.triu(np.full((3, 3), 0.1), 1), "not symmetric")):
        with pytest.raises(AAMInputError, match=problem):
            D.load_distance_matrix(skbio.DistanceMatrix(bad, ids=ids, validate=False))


def test_a_precomputed_matrix_is_used_where_distances_are_wanted_or_carried(tmp_path):
    dm = D.compute_unweighted_unifrac(rarefy(load_table(TABLE), 500, seed=1)[0], TREE)
    scaled = skbio.DistanceMatrix(dm.data * 0.5, ids=dm.ids)
    common = dict(sequences=SEQS, distance_matrix=scaled, rarefy_depth=500, seed=1)
    unifrac = prepare_table(TABLE, sequences=SEQS, tree=TREE, objective="unifrac", rarefy_depth=500, seed=1)
    assert unifrac.distance_source == "unweighted UniFrac of the rarefied table"
    for objective in ("unifrac", None):  # pretraining fits it; fine-tuning and prediction carry it along
        p = prepare_table(TABLE, tree=TREE, objective=objective, **common)
        assert p.distance_source == "precomputed distance matrix"
        np.testing.assert_allclose(p.distances, 0.5 * unifrac.distances, atol=1e-6)
        assert any(line.startswith("distances: precomputed distance matrix") for line in p.report)
    faith = prepare_table(TABLE, tree=TREE, objective="faith_pd", **common)  # no distance objective: not used
    assert faith.distances is None and faith.distance_source is None and faith.faith_pd is not None
    assert not any(line.startswith("distances:") for line in faith.report)
    off = prepare_table(TABLE, sequences=SEQS, rarefy_depth=0)
    assert off.depth is None and off.dropped_low_depth == [] and "rarefaction depth none" in off.report[0]


def test_features_missing_from_tree_are_counted():
    table, _ = rarefy(load_table(TABLE), 500, seed=1)
    tree = skbio.TreeNode.read(TREE)
    some = [t.name for t in tree.tips()][:50]
    pruned = tree.shear(some)
    with pytest.raises(AAMInputError, match=r"of \d+ features of the table are not tips"):
        D.compute_unweighted_unifrac(table, pruned)


# ---- whole pipeline ----------------------------------------------------------------------------------------------
def test_prepare_table_from_qza_contents_end_to_end():
    from aam.data.dataset import ASVDataset, Collator
    p = prepare_table(os.path.join(MP, "table.qza"), sequences=SEQS, tree=TREE, objective="combined",
                      taxonomy=pd.read_csv(os.path.join(MP, "taxonomy.tsv"), sep="\t", index_col=0),
                      taxonomy_level=3, max_bp=100, seed=0)
    n = len(p.sample_ids)
    assert p.distances.shape == (n, n) and np.allclose(np.diag(p.distances), 0)
    assert p.faith_pd.shape == (n,) and (p.faith_pd > 0).all()
    assert p.tokens.shape == (len(p.feature_ids), 101)
    assert len(p.taxonomy_classes) >= 2
    ds = ASVDataset(p.counts, p.sample_ids, token_limit=16, rarefy_depth=p.depth, seed=0, faith_pd=p.faith_pd)
    batch = Collator(ds, p.tokens, distances=p.distances, taxonomy=p.taxonomy, mask_ratio=0.15)(
        [ds[i] for i in (3, 0, 5)])
    assert batch["tokens"].shape[:2] == (3, 16) and batch["distances"].shape == (3, 3)
    assert batch["distances"][0, 1] == pytest.approx(p.distances[3, 0])


def test_prepare_table_needs_tree_or_matrix_for_unifrac():
    with pytest.raises(AAMInputError, match="rooted phylogeny"):
        prepare_table(TABLE, sequences=SEQS, objective="unifrac")


def test_keyboard_otu_ids_need_sequences():
    with pytest.raises(AAMInputError, match="not DNA"):
        prepare_table(os.path.join(KB, "table.biom"))
    p = prepare_table(os.path.join(KB, "table.biom"), sequences=os.path.join(KB, "rep-seqs.fasta"), max_bp=150)
    assert p.tokens.shape[1] == 151


def test_taxonomy_labels_skip_unassigned_ranks():
    tax = pd.Series({"a": "k__B; p__F; c__X", "b": "k__B; p__G; c__", "c": "k__B"})
    labels, classes = taxonomy_labels(tax, ["a", "b", "c", "d"], 2)
    assert classes == ["p__F", "p__G"] and labels.tolist() == [0, 1, -100, -100]
