"""The default path of a study: the shipped reference encoder starts (and, frozen, stays) the nucleotide level."""
import os
import warnings

import numpy as np
import pytest
import torch

from aam import api
from aam.errors import AAMWarning
from aam.reference import load_encoder

from tests.conftest import KB, MP

TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))
METADATA = os.path.join(MP, "sample-metadata.tsv")
SHORT = dict(epochs=2, token_limit=64, batch_size=8, num_threads=1)


@pytest.fixture(scope="module")
def pretrained():
    return api.pretrain(TABLE, sequences=SEQS, tree=TREE, progress=False, seed=3, **SHORT)


def test_pretraining_starts_from_the_frozen_reference_encoder(pretrained):
    ckpt = pretrained.checkpoint
    record = ckpt.record
    assert record.asv_encoder["name"] == "gg13_8-v4-d64" and record.asv_encoder["frozen"] is True
    assert record.architecture.freeze_asv_encoder and record.architecture.embedding_dim == 64
    config, state = load_encoder("gg13_8-v4-d64")
    for k, v in state.items():  # frozen: the nucleotide level is exactly the shipped one after training
        assert torch.equal(ckpt.model_state["asv_encoder." + k], v), k
    assert "train/nuc_loss" not in pretrained.history[0]  # no masked-nucleotide objective on a frozen encoder
    assert np.isfinite(pretrained.history[-1]["val/unifrac_r"])


def test_fine_tuning_and_prediction_on_the_reference_path(pretrained):
    res = api.train(TABLE, METADATA, "body-site", classifier=True, sequences=SEQS, pretrained=pretrained.checkpoint,
                    progress=False, seed=3, **SHORT)
    assert res.checkpoint.record.asv_encoder == pretrained.checkpoint.record.asv_encoder
    assert res.checkpoint.record.options["freeze_base"] is True  # the default with a pretrained base
    pred = api.predict(res.checkpoint, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    assert len(pred) == 16 and pred["prediction"].notna().all()
    # without a pretrained base, a predictor starts from the reference encoder too
    scratch = api.train(TABLE, METADATA, "body-site", classifier=True, sequences=SEQS, progress=False, seed=3,
                        **SHORT)
    assert scratch.checkpoint.record.asv_encoder["name"] == "gg13_8-v4-d64"
    assert scratch.checkpoint.record.options["freeze_base"] is False  # no base to freeze: the whole network trains


def test_another_region_is_embedded_with_a_warning():
    from aam.data.sequences import read_fasta
    keyboard = dict(list(read_fasta(os.path.join(KB, "rep-seqs.fasta")).items())[:20])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = api.embed_features(keyboard, num_threads=1)
    assert frame.shape == (20, 64) and np.isfinite(frame.to_numpy()).all()
    assert any(issubclass(w.category, (AAMWarning, UserWarning)) and "region" in str(w.message).lower()
               for w in caught), [str(w.message) for w in caught]


def test_feature_embeddings_of_a_models_own_encoder(pretrained):
    from aam.data.sequences import read_fasta
    seqs = dict(list(read_fasta(SEQS).items())[:10])
    reference = api.embed_features(seqs, num_threads=1)
    own = api.embed_features(seqs, model=pretrained.checkpoint, num_threads=1)
    np.testing.assert_allclose(own.to_numpy(), reference.to_numpy(), atol=1e-5)  # frozen: the same encoder
