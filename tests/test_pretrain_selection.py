"""Which validation score keeps a pretraining epoch: the loss (default) or the UniFrac correlation (the base's)."""
import os

import numpy as np
import pytest

from aam import api

from tests.conftest import MP, TINY

TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))


@pytest.mark.parametrize("selection, metric, pick", [("loss", "val/total_loss", np.argmin),
                                                      ("unifrac_r", "val/unifrac_r", np.argmax)])
def test_the_kept_epoch_is_the_best_by_the_chosen_score(selection, metric, pick):
    res = api.pretrain(TABLE, sequences=SEQS, tree=TREE, progress=False, epochs=4, patience=4, seed=3,
                       pretrain_selection=selection, **TINY)
    training = res.checkpoint.record.training
    scores = [row[metric] for row in training.history]
    assert training.selection_metric == metric
    assert training.best_epoch == int(pick(scores)) + 1
    assert training.best_score == pytest.approx(scores[training.best_epoch - 1])


def test_an_unknown_selection_is_refused_by_name():
    from aam.errors import AAMInputError
    with pytest.raises(AAMInputError, match="pretrain.selection must be one of loss, unifrac_r"):
        api.pretrain(TABLE, sequences=SEQS, tree=TREE, progress=False, epochs=1, pretrain_selection="r2", **TINY)
