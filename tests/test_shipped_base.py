"""The base committed in aam/assets (built by `make base` on the full corpus; tests/test_base.py covers the
machinery on a tiny base built from the corpus slice, with the shipped directory swapped for its own)."""
import os

NAME = "ag-pgp-v4"


def test_the_shipped_base_loads_by_name_and_its_files_match_their_checksums():
    from aam.base.shipped import available_bases, base_dir, load_base
    assert NAME in available_bases()
    base = load_base(NAME)  # verifies every file of the manifest and the checkpoint's digest
    record = base.checkpoint.record
    assert record.max_bp == 100 and base.read_length == 100 and base.shortest_read == 80
    assert len(record.data.train_samples) > 2000 and record.training.selection_metric == "val/unifrac_r"
    card = open(os.path.join(base_dir(NAME), "MODEL_CARD.md")).read()
    assert "2725 samples (2397 american-gut, 328 pgp)" in card and "CC BY-SA 3.0" in card
