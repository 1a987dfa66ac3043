"""The reference encoder: in-silico amplicons, reference reading, tree distances, hold-out, a tiny pretraining
run on a 44-OTU slice of Greengenes, the shipped weights (checksums), embeddings and the region check."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from aam.reference import (DEFAULT_ENCODER, EncoderIntegrityError, available_encoders, embed_sequences,
                           load_encoder, region_report)
from aam.reference.amplicons import (PRIMERS, REGIONS, AmpliconCutter, amplicon_report, cut_region,
                                     primer_pattern, reverse_complement)
from aam.reference.greengenes import (TreeDistances, holdout_split, parse_lineage, read_sequences, read_taxonomy,
                                      read_tree)
from tests.conftest import DATA, KB, MP

SLICE = os.path.join(DATA, "reference-slice")
SLICE_PATHS = {k: os.path.join(SLICE, f) for k, f in
               (("sequences", "sequences.fasta"), ("taxonomy", "taxonomy.tsv"), ("tree", "tree.nwk"))}


# ---- primers and amplicons -------------------------------------------------------------------------------------

def test_iupac_primer_matching():
    pattern = primer_pattern(PRIMERS["515F"])  # GTGYCAGCMGCCGCGGTAA: Y = C/T, M = A/C
    for variant in ("GTGCCAGCAGCCGCGGTAA", "GTGTCAGCCGCCGCGGTAA", "GTGCCAGCCGCCGCGGTAA"):
        assert pattern.fullmatch(variant)
    for wrong in ("GTGACAGCAGCCGCGGTAA", "GTGCCAGCGGCCGCGGTAA", "GTGNCAGCAGCCGCGGTAA"):
        assert not pattern.fullmatch(wrong)
    assert primer_pattern("N").fullmatch("G") and not primer_pattern("B").fullmatch("A")
    with pytest.raises(ValueError, match="IUPAC"):
        primer_pattern("ACGX")
    assert reverse_complement("GGACTACNVGGGTWTCTAAT") == "ATTAGAWACCCBNGTAGTCC"
    assert reverse_complement("ACGTRYKMBDHVN") == "NBDHVKMRYACGT"


def test_cutter_reads_between_primers():
    v4 = "TACGGAGGATCCGAGCGTTATCCGGATTTATTGGG"
    # degenerate primer variants on both sides: 515F with T at Y and A at M; 806R site with A at W, T at V... N
    seq = "AAGCT" + "GTGTCAGCAGCCGCGGTAA" + v4 + "ATTAGATACCCTAGTAGTCC" + "CCGTCAATT"
    assert AmpliconCutter(PRIMERS["515F"], PRIMERS["806R"])(seq) == v4
    assert AmpliconCutter(PRIMERS["515F"], PRIMERS["806R"])(seq.lower()) == v4
    # the reverse site must lie downstream of the forward primer
    assert AmpliconCutter(PRIMERS["515F"], PRIMERS["806R"])("ATTAGATACCCTAGTAGTCC" + "GTGCCAGCAGCCGCGGTAA" + v4) \
        is None
    # one mismatch in a non-degenerate position of the forward primer: no amplicon
    assert AmpliconCutter(PRIMERS["515F"], PRIMERS["806R"])(seq.replace("GTGTCAGCAGCC", "GTGTCAGCAGAC")) is None
    trimmed = cut_region({"a": seq, "short": seq.replace(v4, v4[:10])},
                         REGIONS["V4"].__class__("t", PRIMERS["515F"], PRIMERS["806R"], 20))
    assert trimmed == {"a": v4[:20]}  # an amplicon shorter than the read length yields nothing


def test_amplicons_of_known_greengenes_sequences():
    seqs = read_sequences(SLICE_PATHS["sequences"])
    v4 = cut_region(seqs, "V4")
    assert len(seqs) == 44 and len(v4) == 40
    assert sorted(set(seqs) - set(v4)) == ["103182", "1123279", "2679704", "809293"]
    # Lactobacillus OTU 15196 and Bacteroides OTU 158711 of Greengenes 13_8
    assert v4["15196"].startswith("TACGTAGGTG") and len(v4["15196"]) == 253
    assert v4["158711"].startswith("TACGGAGGAT") and len(v4["158711"]) == 253
    for otu, amplicon in v4.items():
        start = seqs[otu].index(amplicon)
        assert primer_pattern(PRIMERS["515F"]).fullmatch(seqs[otu][start - 19:start]), otu
        assert primer_pattern(reverse_complement(PRIMERS["806R"])).match(seqs[otu][start + len(amplicon):]), otu
    report = amplicon_report(seqs)
    assert report["references"] == 44
    assert report["regions"]["V4"]["yielding"] == 40 and report["regions"]["V4"]["length_median"] == 253.0
    assert report["regions"]["V4-120"]["length_min"] == report["regions"]["V4-120"]["length_max"] == 120
    assert report["regions"]["V3-V4"]["yielding"] == 36 and report["regions"]["V1-V3"]["yielding"] == 14


# ---- taxonomy, tree, hold-out ----------------------------------------------------------------------------------

def test_lineages_keep_ranks_and_ignore_empty_ones():
    labels = parse_lineage("k__Bacteria; p__Firmicutes; c__Bacilli; o__; f__Bacillaceae; g__; s__")
    assert labels == ["k__Bacteria", "k__Bacteria; p__Firmicutes", "k__Bacteria; p__Firmicutes; c__Bacilli",
                      None, None, None, None]
    tax = read_taxonomy(SLICE_PATHS["taxonomy"])
    assert len(tax) == 44 and tax["158711"][5].endswith("f__Bacteroidaceae; g__Bacteroides")


def test_tree_distances_equal_scikit_bio():
    import skbio
    tree = read_tree(SLICE_PATHS["tree"])
    names = sorted(read_sequences(SLICE_PATHS["sequences"]))
    td = TreeDistances(tree, names)
    expected = skbio.TreeNode.read(SLICE_PATHS["tree"]).tip_tip_distances(names)
    np.testing.assert_allclose(td.pairwise(np.arange(len(names))), expected.data, atol=1e-9)
    i, j = np.array([0, 5, 7]), np.array([3, 5, 1])
    np.testing.assert_allclose(td.distances(i, j), expected.data[i, j], atol=1e-9)
    from aam.errors import AAMInputError
    with pytest.raises(AAMInputError, match="not tips of the tree"):
        TreeDistances(tree, names + ["nope"])


def test_holdout_is_seeded_and_holds_out_whole_genera():
    tax = read_taxonomy(SLICE_PATHS["taxonomy"])
    ids = sorted(cut_region(read_sequences(SLICE_PATHS["sequences"]), "V4"))  # 40 OTUs of 5 genera
    a = holdout_split(ids, tax, seed=3, genus_fraction=0.2, otu_fraction=0.1, n_validation=3)
    assert a == holdout_split(list(reversed(ids)), tax, seed=3, genus_fraction=0.2, otu_fraction=0.1,
                              n_validation=3)
    sets = [set(a[k]) for k in ("train", "validation", "heldout_otus", "heldout_genera")]
    assert sum(map(len, sets)) == len(ids) and set().union(*sets) == set(ids)
    assert len(a["genera"]) == 1 and len(a["heldout_genera"]) == 8
    genus = a["genera"][0]
    assert all(tax[o][5] != genus for o in a["train"] + a["validation"] + a["heldout_otus"])
    assert len(a["heldout_otus"]) >= 1 and len(a["validation"]) == 3


# ---- tiny pretraining run on the slice ----------------------------------------------------------------------------

def _tiny_settings(**over):
    from aam.reference.pretrain import default_settings
    s = default_settings()
    s.update(steps=6, batch_size=16, group_size=4, window=4, warmup_steps=2, lr=3e-3, n_validation=4,
             genus_fraction=0.2, otu_fraction=0.1, log_every=2, eval_every=3, checkpoint_every=3, threads=1,
             **{k: os.path.abspath(v) for k, v in SLICE_PATHS.items()})
    s["encoder_config"] = dict(s["encoder_config"], embedding_dim=16, attention_heads=2, attention_layers=1,
                               kmer_size=4)
    s.update(over)
    return s


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from aam.reference.pretrain import pretrain
    out = tmp_path_factory.mktemp("tiny-encoder")
    lines = []
    pretrain(_tiny_settings(), str(out), log=lines.append)
    return out, lines


def test_tiny_pretraining_logs_learns_and_writes_holdout(tiny_run):
    out, lines = tiny_run
    assert any("step      6/6" in line for line in lines) and any("validation at step 6" in line for line in lines)
    final = torch.load(out / "final.pt", map_location="cpu", weights_only=True)
    summary = json.loads(final["config"])
    steps = [h for h in summary["history"] if "loss" in h]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert (out / "holdout.tsv").read_text().count("heldout_genera") >= 8
    assert json.loads((out / "amplicons.json").read_text())["regions"]["V4"]["yielding"] == 40
    assert os.listdir(out / "tensorboard")


def test_tiny_pretraining_resumes_to_the_same_weights(tiny_run, tmp_path):
    from aam.errors import AAMInputError
    from aam.reference.pretrain import pretrain
    out, _ = tiny_run
    full = torch.load(out / "final.pt", map_location="cpu", weights_only=True)["model"]
    # interrupt the same 6-step run after step 4: its last checkpoint is the one of step 3
    run = tmp_path / "interrupted"
    with pytest.raises(_Stop):
        pretrain(_tiny_settings(), str(run), log=_stop_at("step      4/6"))
    assert torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)["step"] == 3
    assert not (run / "final.pt").exists()
    pretrain(_tiny_settings(), str(run), resume=True, log=lambda line: None)
    resumed = torch.load(run / "final.pt", map_location="cpu", weights_only=True)["model"]
    assert resumed.keys() == full.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)
    with pytest.raises(AAMInputError, match="settings differ"):
        pretrain(_tiny_settings(steps=7), str(run), resume=True, log=lambda line: None)


class _Stop(Exception):
    pass


def _stop_at(marker):
    def log(line):
        if marker in line:
            raise _Stop(line)
    return log


def test_evaluation_rows_and_ranges(tiny_run):
    from aam.models.config import EncoderConfig
    from aam.reference.data import prepare_reference
    from aam.reference.evaluate import evaluate, kmer_profiles
    from aam.reference.pretrain import ReferencePretrainer
    out, _ = tiny_run
    final = torch.load(out / "final.pt", map_location="cpu", weights_only=True)
    summary = json.loads(final["config"])
    s = summary["settings"]
    data = prepare_reference(s["sequences"], s["taxonomy"], s["tree"], seed=s["seed"], genus_fraction=0.2,
                             otu_fraction=0.1, n_validation=4, log=lambda line: None)
    model = ReferencePretrainer(EncoderConfig.from_dict(summary["encoder_config"]), [len(c) for c in data.classes])
    model.load_state_dict(final["model"])
    results, speed = evaluate(model, data, seed=0, lengths=(100, 150), random_model=model, kmer_size=4,
                              log=lambda line: None)
    assert set(results) == {"pretrained", "random_init", "kmer_profile"} and set(speed) == {"pretrained",
                                                                                            "random_init"}
    m = results["pretrained"]["heldout_genera"]["150"]
    assert 0.0 <= m["masked_nucleotide_accuracy"] <= 1.0
    assert -1.0 <= m["tree_spearman"] <= 1.0 and m["placement_distance"] > 0
    # a held-out genus has no trained genus label (nor, in this slice, a family shared with a trained genus)
    assert "genus_accuracy_1nn" not in m and m["genus_accuracy_head"] is None
    otus = results["pretrained"]["heldout_otus"]["100"]
    assert 0.0 <= otus["genus_accuracy_1nn"] <= 1.0 and 0.0 <= otus["genus_accuracy_head"] <= 1.0
    assert "masked_nucleotide_accuracy" not in results["kmer_profile"]["heldout_otus"]["100"]
    profiles = kmer_profiles(data.tokens[:3], k=4)
    np.testing.assert_allclose(np.asarray(profiles.multiply(profiles).sum(1)).ravel(), 1.0, rtol=1e-5)


def test_tiny_run_exports_loads_and_refuses_a_flipped_byte(tiny_run, tmp_path):
    from aam.models import EncoderConfig, SequenceEncoder
    from aam.reference.export import export
    out, _ = tiny_run
    dest = export(str(out), "tiny", dest=str(tmp_path / "tiny"), log=lambda line: None)
    config, state = load_encoder(dest)
    model = SequenceEncoder(EncoderConfig.from_dict(config))
    model.asv_encoder.load_state_dict(state)  # strict: every key of the ASV encoder, nothing else
    prefixed = {f"asv_encoder.{k}": v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(prefixed, strict=False)
    assert not unexpected and not any(k.startswith("asv_encoder.") for k in missing)
    emb = embed_sequences({"a": "TACGGAGGATCCGAGCGTTATCCGGATTTATTGGGTTTAAAGGGAGCGTAGG"}, name=dest,
                          check_region=False)
    assert emb.shape == (1, 16) and np.isfinite(emb).all()
    weights = os.path.join(dest, "weights.pt")
    blob = bytearray(open(weights, "rb").read())
    blob[len(blob) // 2] ^= 0x01
    open(weights, "wb").write(bytes(blob))
    with pytest.raises(EncoderIntegrityError, match="does not match its checksum"):
        load_encoder(dest)


# ---- the shipped encoder ----------------------------------------------------------------------------------------

def test_shipped_encoder_loads_into_a_sequence_encoder():
    from aam.models import EncoderConfig, SequenceEncoder
    from aam.reference.shipped import ENCODERS_DIR
    assert DEFAULT_ENCODER in available_encoders()
    files = os.listdir(os.path.join(ENCODERS_DIR, DEFAULT_ENCODER))
    assert {"weights.pt", "region.json", "manifest.json", "MODEL_CARD.md", "LICENSE"} <= set(files)
    size = sum(os.path.getsize(os.path.join(ENCODERS_DIR, DEFAULT_ENCODER, f)) for f in files)
    assert size <= 10 * 1024 * 1024
    config, state = load_encoder()
    cfg = EncoderConfig.from_dict(config)
    assert (cfg.embedding_dim, cfg.attention_heads, cfg.attention_layers, cfg.ff_mult, cfg.kmer_size,
            cfg.max_bp) == (64, 4, 2, 4, 6, 150)
    SequenceEncoder(cfg).asv_encoder.load_state_dict(state)
    assert all(v.dtype == torch.float32 for v in state.values())


def test_shipped_encoder_refuses_a_corrupted_copy(tmp_path):
    from aam.reference.shipped import ENCODERS_DIR
    copy = tmp_path / "copy"
    shutil.copytree(os.path.join(ENCODERS_DIR, DEFAULT_ENCODER), copy)
    path = copy / "weights.pt"
    blob = bytearray(path.read_bytes())
    blob[-100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(EncoderIntegrityError, match="weights.pt does not match its checksum"):
        load_encoder(str(copy))
    (copy / "weights.pt").unlink()
    with pytest.raises(EncoderIntegrityError, match="missing"):
        load_encoder(str(copy))
    from aam.errors import AAMInputError
    with pytest.raises(AAMInputError, match="no encoder 'nope'"):
        load_encoder("nope")


def test_embeddings_of_unseen_sequences():
    from aam.data.sequences import read_fasta
    seqs = read_fasta(os.path.join(MP, "rep-seqs.fasta"))  # 120 nt V4 reads of a real study, not in the reference
    ids = sorted(seqs)[:40]
    emb = embed_sequences({i: seqs[i] for i in ids})
    assert emb.shape == (40, 64) and emb.dtype == np.float32 and np.isfinite(emb).all()
    np.testing.assert_array_equal(emb, embed_sequences([seqs[i] for i in ids]))
    # distinct ASVs get distinct embeddings; an ASV with one ambiguous base stays next to itself
    assert len({tuple(np.round(e, 5)) for e in emb}) == 40
    s = seqs[ids[0]]
    near = embed_sequences([s[:60] + "N" + s[61:]])[0]
    d = np.linalg.norm(emb - near, axis=1)
    assert d.argmin() == 0


def test_region_report_passes_v4_and_flags_keyboard():
    mp = region_report(os.path.join(MP, "rep-seqs.fasta"))
    assert mp["matches"] and mp["in_region_fraction"] > 0.95 and mp["length_max"] == 120
    kb = region_report(os.path.join(KB, "rep-seqs.fasta"))
    assert not kb["matches"] and kb["in_region_fraction"] < 0.05
    assert "another region" in kb["message"] and kb["longer_than_max_bp"] > 0.5
    from aam.data.sequences import read_fasta
    with_primer = [PRIMERS["515F"].replace("Y", "C").replace("M", "A") + s
                   for s in list(read_fasta(os.path.join(MP, "rep-seqs.fasta")).values())[:20]]
    report = region_report(with_primer)
    assert not report["matches"] and report["primer_at_start_fraction"] == 1.0 and "Remove the primers" in \
        report["message"]
    with pytest.warns(UserWarning, match="another region"):
        embed_sequences(list(read_fasta(os.path.join(KB, "rep-seqs.fasta")).values())[:8])


def test_sequence_list_numbers_plain_lists_and_keeps_ids_of_mappings():
    from aam.data.sequences import read_fasta
    from aam.reference.region import sequence_list
    assert sequence_list(["ACGT", "GGCC"]) == (["ACGT", "GGCC"], ["0", "1"])
    assert sequence_list(np.array(["ACGT"])) == (["ACGT"], ["0"])
    assert sequence_list({"b": "ACGT", "a": "GGCC"}) == (["ACGT", "GGCC"], ["b", "a"])
    fasta = os.path.join(MP, "rep-seqs.fasta")
    seqs, ids = sequence_list(fasta)
    assert dict(zip(ids, seqs)) == read_fasta(fasta) and len(ids) == 448
