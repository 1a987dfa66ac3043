"""The shipped sample-level base (issue 23): corpus, per-batch UniFrac, corpus pretraining with truncated reads,
export with checksums, loading by name, and starting fine-tuning and pretraining from it.

A tiny base is pretrained once per session on the committed corpus slice (tests/data/base-corpus: 20 American
Gut + 10 PGP samples) and exported into a temporary bases directory under the shipped name."""
import json
import os
import shutil
import warnings

import numpy as np
import pytest

from tests.conftest import DATA, KB, MP

SLICE = os.path.join(DATA, "base-corpus")
NAME = "ag-pgp-v4"
# a base small enough for the suite: few ASVs per sample, one truncation, one epoch
TINY_BASE = dict(epochs=1, batch_size=8, token_limit=24, num_threads=1, asv_chunk_size=128, validation_fraction=0.2,
                 rarefy_depth=3000)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """A directory of shipped bases holding a tiny `ag-pgp-v4` built from the corpus slice; BASES_DIR points at it."""
    from aam.base import shipped
    from aam.base.corpus import read_slice
    from aam.base.export import export_base
    from aam.base.pretrain import pretrain_base
    root = tmp_path_factory.mktemp("bases")
    run = root / "run"
    pretrain_base(read_slice(SLICE), str(run), truncations=(90,), progress=False, log=lambda s: None,
                  command="tests/test_base.py", **TINY_BASE)
    export_base(str(run), NAME, dest=str(root / "bases" / NAME), log=lambda s: None)
    mp = pytest.MonkeyPatch()
    mp.setattr(shipped, "BASES_DIR", str(root / "bases"))
    yield root / "bases"
    mp.undo()


# ---- corpus -----------------------------------------------------------------------------------------------------
def _table(counts, features, samples):
    import biom
    return biom.Table(np.asarray(counts, dtype=float), features, samples)


def test_merge_tables_matches_features_and_refuses_shared_samples():
    from aam.base.corpus import merge_sequences, merge_tables
    from aam.errors import AAMInputError
    a = _table([[1, 0], [2, 3]], ["o1", "o2"], ["a1", "a2"])
    b = _table([[5], [7]], ["o2", "o3"], ["b1"])
    merged = merge_tables([("a", a), ("b", b)])
    assert list(merged.ids("observation")) == ["o1", "o2", "o3"]
    assert list(merged.ids()) == ["a1", "a2", "b1"]
    dense = merged.matrix_data.toarray()
    assert dense.tolist() == [[1, 0, 0], [2, 3, 5], [0, 0, 7]]
    with pytest.raises(AAMInputError, match="'a1' is in both a and c"):
        merge_tables([("a", a), ("c", _table([[1]], ["o1"], ["a1"]))])
    with pytest.raises(AAMInputError, match="OTU 'o2' has different reads in a and b"):
        merge_sequences([("a", {"o2": "ACGT"}), ("b", {"o2": "ACGA"})])


def test_corpus_refuses_samples_of_another_benchmark_study(tmp_path):
    from aam.base.corpus import check_no_benchmark_samples
    from aam.errors import AAMInputError
    (tmp_path / "ecam").mkdir()
    (tmp_path / "ecam" / "metadata.tsv").write_text("sample-id\tmonth\nS1\t3\nS2\t4\n")
    assert check_no_benchmark_samples(["A", "B"], str(tmp_path), ("american-gut", "pgp")) == 2
    with pytest.raises(AAMInputError, match="samples of other benchmark studies .*ecam.*'S2'"):
        check_no_benchmark_samples(["A", "S2"], str(tmp_path), ("american-gut", "pgp"))


def test_corpus_slice_reads_back():
    from aam.base.corpus import read_slice
    corpus = read_slice(SLICE)
    assert corpus.counts_by_study() == {"american-gut": 20, "pgp": 10}
    assert {len(s) for s in corpus.sequences.values()} == {100}
    assert set(corpus.metadata()["subject"]) >= {corpus.subject[s] for s in corpus.sample_ids}


# ---- per-batch UniFrac ------------------------------------------------------------------------------------------
def test_batch_unifrac_equals_striped_unifrac():
    from aam.base.corpus import read_slice
    from aam.base.unifrac import BatchUniFrac
    from aam.data.distances import compute_unweighted_unifrac
    corpus = read_slice(SLICE)
    full = compute_unweighted_unifrac(corpus.table, corpus.tree)
    ids = [str(i) for i in full.ids]
    table = corpus.table.sort_order(ids)
    batch = BatchUniFrac(table.matrix_data.T.tocsr(), [str(f) for f in table.ids("observation")], corpus.tree)
    rows = np.array([3, 0, 17, 25, 9, 11])
    block = batch.block(rows)
    np.testing.assert_allclose(block, full.data[np.ix_(rows, rows)], atol=1e-5)
    np.testing.assert_allclose(batch.block(np.arange(len(ids))), full.data, atol=1e-5)


def test_batch_unifrac_names_features_missing_from_the_tree():
    import scipy.sparse as sp
    from aam.base.corpus import read_slice
    from aam.base.unifrac import BatchUniFrac
    from aam.errors import AAMInputError
    corpus = read_slice(SLICE)
    with pytest.raises(AAMInputError, match="1 of 2 features are not tips of the tree.*'not-an-otu'"):
        BatchUniFrac(sp.csr_matrix(np.ones((2, 2))), [next(iter(corpus.sequences)), "not-an-otu"], corpus.tree)


# ---- truncated reads --------------------------------------------------------------------------------------------
def test_truncated_tokens_cut_each_block_and_keep_the_start_token():
    from aam.base.pretrain import truncated_tokens
    from aam.data.tokenizer import PAD, START, SequenceTokenizer
    tokens = SequenceTokenizer(100).encode_many(["ACGT" * 25, "TTGCA" * 10])
    out = truncated_tokens(tokens, (90, 80))
    assert out.shape == (6, 101)
    np.testing.assert_array_equal(out[:2], tokens)
    assert (out[:, 0] == START).all()
    assert (out[2, 91:] == PAD).all() and (out[2, 1:91] != PAD).all()
    assert (out[4, 81:] == PAD).all() and (out[4, 1:81] != PAD).all()
    np.testing.assert_array_equal(out[3], tokens[1])  # a 50 nt read is shorter than both cuts


def test_each_training_sample_reads_one_seeded_truncation_per_epoch():
    from aam.base.pretrain import CorpusCollator
    from aam.data.dataset import ASVDataset
    import scipy.sparse as sp
    ds = ASVDataset(sp.csr_matrix(np.ones((40, 3), dtype=np.float32)), [f"s{i}" for i in range(40)], seed=7)
    tokens = np.zeros((9, 11), dtype=np.uint8)
    collate = CorpusCollator(ds, tokens, 3, unifrac=None, rows=np.arange(40), truncate_fraction=0.5)
    first = [collate.variant(i) for i in range(40)]
    assert first == [collate.variant(i) for i in range(40)]  # a function of (seed, epoch, sample)
    assert set(first) == {0, 1, 2} and 10 < first.count(0) < 30
    ds.set_epoch(1)
    assert [collate.variant(i) for i in range(40)] != first
    assert {CorpusCollator(ds, tokens, 3, None, np.arange(40), 0.0).variant(i) for i in range(40)} == {0}


# ---- pretraining, shipping, loading -----------------------------------------------------------------------------
def test_corpus_base_is_shipped_with_checksums_and_a_model_card(bases):
    from aam.base.shipped import available_bases, load_base
    directory = bases / NAME
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.pt", "base.json", "metrics.json", "history.tsv", "MODEL_CARD.md",
                                      "LICENSE"}
    card = (directory / "MODEL_CARD.md").read_text()
    for needed in ("CC BY-SA 3.0", "BSD", "Share-alike passes on", "De-identified", "20 american-gut, 10 pgp"):
        assert needed.lower() in card.lower(), needed
    assert available_bases() == [NAME]
    base = load_base(NAME)
    record = base.checkpoint.record
    assert base.checkpoint.kind == "encoder" and record.objective == "unifrac"
    assert record.max_bp == 100 and record.encoder.max_bp == 150  # reads cut at the corpus length
    assert base.read_length == 100 and base.shortest_read == 90
    assert record.asv_encoder["name"] == "gg13_8-v4-d64" and record.asv_encoder["frozen"]
    assert "per batch" in record.data.distance_source
    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["command"] == "tests/test_base.py" and "unifrac_r" in metrics["validation"]


def test_a_modified_base_is_refused_and_a_missing_one_says_how_to_build_it(bases, tmp_path, monkeypatch):
    from aam.base import shipped
    from aam.errors import AAMInputError
    copy = tmp_path / NAME
    shutil.copytree(bases / NAME, copy)
    with open(copy / "model.pt", "r+b") as fh:
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 1]))
    monkeypatch.setattr(shipped, "BASES_DIR", str(tmp_path))
    with pytest.raises(shipped.BaseIntegrityError, match="model.pt does not match its checksum"):
        shipped.load_base(NAME)
    (copy / "manifest.json").unlink()
    with pytest.raises(AAMInputError, match="does not include the base.*make base"):
        shipped.load_base(NAME)


def test_fine_tuning_starts_from_the_base_and_cuts_longer_reads(bases):
    from aam import api
    from aam.errors import AAMInputError
    result = api.train(os.path.join(MP, "table.biom"), os.path.join(MP, "sample-metadata.tsv"), "body-site",
                       classifier=True, sequences=os.path.join(MP, "rep-seqs.fasta"), base=NAME, epochs=1,
                       ensemble="none", batch_size=8, num_threads=1, progress=False, log=lambda s: None)
    record = result.checkpoint.record
    assert record.max_bp == 100  # Moving Pictures' 120 nt reads are read as the corpus reads were
    assert any("truncated to 100 bp" in line for line in record.data.report)
    assert record.pretrained_encoder["shipped_base"]["name"] == NAME
    assert record.pretrained_encoder["shipped_base"]["read_length"] == 100
    assert record.options["base"] == NAME
    from q2_aam._visualizers import _model_rows
    assert f"shipped base {NAME}" in dict(_model_rows(record))["pretrained base"]
    predictions = api.predict(result.checkpoint, os.path.join(MP, "table.biom"),
                              sequences=os.path.join(MP, "rep-seqs.fasta"), log=lambda s: None)
    assert len(predictions) > 0
    with pytest.raises(AAMInputError, match="both name a starting point"):
        api.train(os.path.join(MP, "table.biom"), os.path.join(MP, "sample-metadata.tsv"), "body-site",
                  classifier=True, sequences=os.path.join(MP, "rep-seqs.fasta"), base=NAME,
                  pretrained=result.checkpoint, progress=False)


def test_pretraining_continues_the_base_on_a_study(bases):
    from aam import api
    from aam.base.shipped import load_base
    result = api.pretrain(os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"),
                          tree=os.path.join(MP, "tree.nwk"), base=NAME, epochs=1, batch_size=8, num_threads=1,
                          progress=False, log=lambda s: None)
    record = result.checkpoint.record
    shipped = load_base(NAME)
    assert record.encoder == shipped.checkpoint.record.encoder and record.max_bp == 100
    assert record.pretrained_encoder["shipped_base"]["sha256"] == shipped.sha256
    from q2_aam._visualizers import _model_rows
    assert f"shipped base {NAME}" in dict(_model_rows(record))["continued from"]
    # the nucleotide level stays the frozen reference encoder it was shipped with
    for key, value in shipped.checkpoint.model_state.items():
        if key.startswith("asv_encoder."):
            np.testing.assert_array_equal(result.checkpoint.model_state[key].numpy(), value.numpy())


def test_reads_of_another_region_or_too_short_are_warned_about(bases):
    from aam.base.shipped import check_reads, load_base
    from aam.data.pipeline import prepare_table
    shipped = load_base(NAME)
    keyboard = prepare_table(os.path.join(KB, "table.biom"), sequences=os.path.join(KB, "rep-seqs.fasta"),
                             max_bp=100, rarefy_depth=0)
    with pytest.warns(UserWarning, match="another region"):
        check_reads(keyboard, shipped)
    mp = prepare_table(os.path.join(MP, "table.biom"), sequences=os.path.join(MP, "rep-seqs.fasta"), max_bp=100,
                       rarefy_depth=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_reads(mp, shipped)  # V4 reads at 120 nt: nothing to say
    mp.sequences = [s[:70] for s in mp.sequences]
    with pytest.warns(UserWarning, match="shorter than 90 nt"):
        check_reads(mp, shipped)


def test_base_option_reaches_both_front_ends():
    from aam import options as O
    from aam.cli import build_parser
    from q2_aam._params import option_table
    for command in (O.PRETRAIN, O.TRAIN):
        assert "base" in [o.name for o in option_table(command)]
    assert O.resolve(O.TRAIN).base == "none"
    args = build_parser().parse_args(["train", "--table", "t.biom", "--metadata", "m.tsv", "--metadata-column",
                                      "age", "--base", NAME])
    assert args.base == NAME

