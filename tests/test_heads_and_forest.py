"""The linear head (closed-form ridge / logistic regression on frozen embeddings) and the random forest of an
ensemble model, stored as arrays beside the weights."""
import json
import os

import numpy as np
import pytest
import torch

from aam import api
from aam.checkpoint import Checkpoint, load_checkpoint
from aam.ensemble import Ensemble
from aam.ensemble.blend import SHARES, choose_share
from aam.errors import AAMInputError
from aam.forest import ForestArrays, aligned_features, feature_keys, fit_forest
from aam.training.linear_head import fit_linear_head

from tests.conftest import MP, TINY

TABLE, SEQS, TREE = (os.path.join(MP, f) for f in ("table.biom", "rep-seqs.fasta", "tree.nwk"))
METADATA = os.path.join(MP, "sample-metadata.tsv")
DAYS = "days-since-experiment-start"
ARCH = ("embedding_dim", "attention_heads", "attention_layers", "max_bp", "token_limit")
FIT = {k: v for k, v in TINY.items() if k not in ARCH}


# ---- the forest as arrays ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classifier", [False, True])
def test_forest_arrays_predict_exactly_as_scikit_learn(classifier):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    rng = np.random.default_rng(0)
    x = rng.random((120, 12))
    y = (x[:, 0] > 0.5).astype(int) + (x[:, 3] > 0.7) if classifier else 3 * x[:, 0] + rng.normal(size=120) * 0.1
    est = (RandomForestClassifier if classifier else RandomForestRegressor)(n_estimators=20, random_state=1).fit(x, y)
    arrays = ForestArrays.from_sklearn(est)
    want = est.predict_proba(x[:40]) if classifier else est.predict(x[:40])[:, None]
    np.testing.assert_allclose(arrays.predict(x[:40]), want, atol=1e-12)
    arrays.check(12, want.shape[1], "test")
    with pytest.raises(ValueError, match="feature it does not have"):
        arrays.check(2, want.shape[1], "test")
    bad = ForestArrays(**{**arrays.__dict__, "left": np.where(arrays.left > 0, 10 ** 6, arrays.left)})
    with pytest.raises(ValueError, match="points outside itself"):
        bad.check(12, want.shape[1], "test")


def test_forest_columns_follow_sequences_not_ids():
    keys = feature_keys(["ACGTACGT", "TTTTGGGG"], max_bp=8)
    # a new table: the first feature under another ID twice (same sequence), one unseen feature
    counts = np.array([[2.0, 2.0, 4.0, 0.0]])
    x = aligned_features(keys, ["ACGTACGT", "acgtacgt", "CCCCAAAA", "TTTTGGGG"], counts, max_bp=8)
    np.testing.assert_allclose(x, [[0.5, 0.0]])  # the unseen feature keeps its share of the reads out


# ---- the linear head ----------------------------------------------------------------------------------------------
def test_linear_head_recovers_a_linear_target_and_folds_standardization_back():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 6)) * [1, 10, 0.1, 1, 1, 1] + 5
    y = x @ np.array([1.0, 0.2, -3.0, 0, 0, 0]) + 0.01 * rng.normal(size=80)
    fit = fit_linear_head(x, y, classifier=False, seed=0)
    np.testing.assert_allclose(x @ fit.weight[0] + fit.bias[0], y, atol=0.2)
    assert fit.oof.shape == (80,) and fit.folds == 5


def test_linear_head_classifies_and_keeps_groups_apart():
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(12), 5)
    y = groups % 3
    x = rng.normal(size=(60, 4)) + np.eye(3)[y] @ rng.normal(size=(3, 4)) * 4
    fit = fit_linear_head(x, y, classifier=True, n_classes=3, groups=list(groups), seed=0)
    logits = x @ fit.weight.T + fit.bias
    assert (logits.argmax(1) == y).mean() > 0.9
    np.testing.assert_allclose(fit.oof.sum(1), 1.0, atol=1e-9)
    binary = fit_linear_head(x, (y > 0).astype(int), classifier=True, n_classes=2, seed=0)
    p = torch.softmax(torch.tensor(x @ binary.weight.T + binary.bias), dim=1).numpy()
    assert ((p[:, 1] > 0.5) == (y > 0)).mean() > 0.9


# ---- through the engine ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base():
    return api.pretrain(TABLE, sequences=SEQS, tree=TREE, progress=False, epochs=2, seed=1, **TINY).checkpoint


def test_a_linear_head_needs_a_pretrained_base():
    with pytest.raises(AAMInputError, match="head linear reads the sample embeddings of a pretrained base"):
        api.train(TABLE, METADATA, DAYS, sequences=SEQS, head="linear", progress=False, **TINY)


def _forest(ckpt):
    """The forest member of an ensemble model."""
    return Ensemble.from_checkpoint(ckpt)["forest"]


def test_linear_ensemble_regressor_predicts_the_average_of_network_and_forest(base, tmp_path):
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="linear", ensemble="forest",
                    forest_trees=30, output_dir=str(tmp_path / "reg"), progress=False, seed=2, **FIT)
    record = res.checkpoint.record
    assert record.architecture.head == "linear" and record.training.selection_metric == "cv/mae"
    assert _forest(res.checkpoint).trees == 30 and _forest(res.checkpoint).arrays.n_trees == 30
    assert record.ensemble.names == ("network", "forest") and record.ensemble.weights == (0.5, 0.5)
    assert os.path.isfile(tmp_path / "reg" / "plots" / "pred_vs_actual_best.png")  # out-of-fold predictions
    back = load_checkpoint(tmp_path / "reg" / "model.pt")
    assert _forest(back).arrays.n_trees == 30 and back.record.ensemble == record.ensemble
    # the base is the pretrained one, untouched
    assert all(torch.equal(back.model_state["base." + k], v) for k, v in base.model_state.items())
    pred = api.predict(back, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    np.testing.assert_allclose(pred["prediction"], 0.5 * pred["network"] + 0.5 * pred["forest"])
    assert pred["forest"].nunique() > 1 and pred["network"].nunique() > 1


def test_the_ensemble_record_is_frozen(base):
    import dataclasses
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="linear", ensemble="forest",
                    forest_trees=5, progress=False, **FIT)
    ensemble = res.checkpoint.record.ensemble
    with pytest.raises(dataclasses.FrozenInstanceError):
        ensemble.weights = (1.0, 0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ensemble.members[1].config = "{}"


def test_ensemble_classifier_averages_probabilities(base, tmp_path):
    res = api.train(TABLE, METADATA, "body-site", classifier=True, sequences=SEQS, pretrained=base, head="linear",
                    ensemble="forest", forest_trees=20, output_dir=str(tmp_path / "clf"), progress=False, **FIT)
    pred = api.predict(res.checkpoint, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    probs = pred[[c for c in pred.columns if c.startswith("probability_")]]
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert (pred["prediction"] == probs.idxmax(axis=1).str[len("probability_"):]).all()


def test_the_forest_and_the_record_are_covered_by_the_digest(base, tmp_path):
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="linear", ensemble="forest",
                    forest_trees=5, progress=False, **FIT)
    ckpt = res.checkpoint

    def payload():
        return Checkpoint(ckpt.record, ckpt.model_state,
                          member_states=ckpt.member_states).payload(include_training_state=False)
    altered = payload()
    altered["members"]["forest"]["threshold"] = altered["members"]["forest"]["threshold"] + 1.0
    torch.save(altered, tmp_path / "altered.pt")
    with pytest.raises(AAMInputError, match="digest"):
        load_checkpoint(tmp_path / "altered.pt")
    # the record is covered too: a target's scale edited shifts every prediction, so it must be refused
    edited = payload()
    record = json.loads(edited["record"])
    record["target"]["transform"]["max"] = record["target"]["transform"]["max"] + 1
    edited["record"] = json.dumps(record)
    torch.save(edited, tmp_path / "edited.pt")
    with pytest.raises(AAMInputError, match="digest"):
        load_checkpoint(tmp_path / "edited.pt")
    # a format-3 file without its digest is refused
    bare = payload()
    record = json.loads(bare["record"])
    record["weights_sha256"] = None
    bare["record"] = json.dumps(record)
    torch.save(bare, tmp_path / "bare.pt")
    with pytest.raises(AAMInputError, match="no digest"):
        load_checkpoint(tmp_path / "bare.pt")
    missing = payload()
    del missing["members"]
    torch.save(missing, tmp_path / "no-forest.pt")
    with pytest.raises(AAMInputError):
        load_checkpoint(tmp_path / "no-forest.pt")


def test_fit_forest_matches_q2_sample_classifier_defaults():
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 8)), rng.random(50)
    from sklearn.ensemble import RandomForestRegressor
    want = RandomForestRegressor(n_estimators=10, random_state=7).fit(x, y).predict(x)
    got = fit_forest(x, y, classifier=False, n_trees=10, seed=7).predict(x)[:, 0]
    np.testing.assert_allclose(got, want)


def test_the_blend_weight_is_chosen_on_validation_samples_that_chose_nothing_else(base, tmp_path):
    fit = {**FIT, "validation_fraction": 0.4}
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="transformer", freeze_base=True,
                    ensemble="forest", forest_trees=20, epochs=2, output_dir=str(tmp_path / "w"), progress=False,
                    ensemble_share_rule="lowest-loss", **fit)
    ensemble, data = res.checkpoint.record.ensemble, res.checkpoint.record.data
    assert ensemble.weight("network") in SHARES and ensemble.choice.startswith("the lowest validation MAE")
    # the share's samples neither trained the network nor chose its epoch
    share = set(ensemble.share_samples)
    assert share and not share & set(data.train_samples) and not share & set(data.validation_samples)
    assert data.validation_samples
    # a validation split too small to halve: equal shares, said so
    small = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="transformer",
                      freeze_base=True, ensemble="forest", forest_trees=20, epochs=1, progress=False,
                      **{**FIT, "validation_fraction": 0.1})
    assert small.checkpoint.record.ensemble.weight("network") == 0.5
    assert small.checkpoint.record.ensemble.choice.startswith("equal weights")
    pred = api.predict(res.checkpoint, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    w = ensemble.weight("network")
    np.testing.assert_allclose(pred["prediction"], w * pred["network"] + (1 - w) * pred["forest"])
    clf = api.train(TABLE, METADATA, "body-site", classifier=True, sequences=SEQS, pretrained=base,
                    head="transformer", freeze_base=True, ensemble="forest", forest_trees=20, epochs=2,
                    progress=False, **fit)
    # the default rule, said in the record
    assert clf.checkpoint.record.ensemble.choice.startswith(
        "the share nearest the forest within one standard error of the lowest validation log loss")
    assert _forest(clf.checkpoint).axes is not None  # the default forest reads the embedding's axes
    out = api.predict(clf.checkpoint, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    w = clf.checkpoint.record.ensemble.weight("network")
    for c in clf.checkpoint.record.target.class_labels:
        np.testing.assert_allclose(out[f"probability_{c}"], w * out[f"network_probability_{c}"]
                                   + (1 - w) * out[f"forest_probability_{c}"], atol=1e-6)


def test_the_forest_reads_axes_of_the_pretrained_embedding_when_asked(base, tmp_path):
    from aam.forest import EmbeddingAxes
    from aam.inference import SampleFeatures
    from aam.options import PREDICT, resolve
    from aam.training.context import single_process
    from aam.workflows.infer import prepare_new_table
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, pretrained=base, head="linear", ensemble="forest",
                    forest_trees=30, forest_embedding_axes=3, output_dir=str(tmp_path / "axes"), progress=False,
                    seed=2, **FIT)
    ckpt = res.checkpoint
    forest = _forest(ckpt)
    n_features = len(forest.keys)
    assert forest.axes.components.shape == (3, ckpt.record.architecture.encoder.embedding_dim)
    # the axes are orthonormal principal axes of the training samples' distance embeddings
    np.testing.assert_allclose(forest.axes.components @ forest.axes.components.T, np.eye(3), atol=1e-9)
    assert any("3 axes of the pretrained sample embedding" in line for line in ckpt.record.data.report)
    # the forest splits on them: some split uses a column past the abundances
    inner = forest.arrays.feature[forest.arrays.left >= 0]
    assert (inner >= n_features).any()
    back = load_checkpoint(tmp_path / "axes" / "model.pt")
    np.testing.assert_allclose(_forest(back).axes.components, forest.axes.components)
    pred = api.predict(back, TABLE, sequences=SEQS, num_threads=1, log=lambda line: None)
    # the forest's part is the forest on [abundances, coordinates on the stored axes] of the new samples
    opts = resolve(PREDICT, num_threads=1)
    prepared = prepare_new_table(back.record, TABLE, SEQS, opts)
    assert list(prepared.sample_ids) == list(pred.index)
    features = SampleFeatures.build(prepared, back.record, opts, single_process(), base=back.build_model().base)
    x = np.hstack([aligned_features(_forest(back).keys, prepared.sequences, prepared.counts,
                                    back.record.max_bp), _forest(back).axes.transform(features.distance_embedding())])
    np.testing.assert_allclose(pred["forest"], _forest(back).arrays.predict(x)[:, 0])
    # a record and arrays that disagree on the axes are refused, like any altered forest (the digest recomputed, as
    # a forger would)
    from aam.checkpoint import model_digest
    payload = Checkpoint(ckpt.record, ckpt.model_state, member_states=ckpt.member_states).payload(False)
    payload["members"]["forest"]["axes_components"] = payload["members"]["forest"]["axes_components"][:2]
    record = json.loads(payload["record"])
    record["weights_sha256"] = model_digest(record, payload["model"], payload["members"])
    payload["record"] = json.dumps(record)
    torch.save(payload, tmp_path / "altered.pt")
    with pytest.raises(AAMInputError, match="embedding axes do not match"):
        load_checkpoint(tmp_path / "altered.pt")
    assert EmbeddingAxes.fit(np.eye(4), 10).components.shape == (3, 4)  # at most N - 1 axes


def test_without_a_pretrained_base_the_forest_reads_abundances_only():
    res = api.train(TABLE, METADATA, DAYS, sequences=SEQS, ensemble="forest", forest_trees=10,
                    forest_embedding_axes=5, epochs=1, progress=False, **TINY)
    assert _forest(res.checkpoint).axes is None
    assert any("no embedding axes" in line and "no pretrained base" in line
               for line in res.checkpoint.record.data.report)


def test_the_one_se_rule_gives_the_network_weight_only_where_it_clearly_earns_it():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=40)
    # the network a little better on average, but within the noise: lowest-loss follows it, one-se keeps the forest
    close = {w: 1.0 - 0.02 * w + 0.5 * noise * w for w in SHARES}
    assert choose_share(close, "lowest-loss") > 0
    assert choose_share(close, "one-se") == 0.0
    # clearly better with more of the network: one-se moves as far as the evidence goes
    clear = {w: np.full(40, 1.0 - 0.5 * w) + 0.01 * noise for w in SHARES}
    assert choose_share(clear, "one-se") == 1.0 == choose_share(clear, "lowest-loss")
    # the standard error is over groups: 40 samples of 2 subjects that disagree are not 40 independent votes
    groups = [i % 2 for i in range(40)]
    split = {w: np.where(np.arange(40) % 2 == 0, 1.0 - 0.5 * w, 1.0 + 0.3 * w) for w in SHARES}
    assert choose_share(split, "lowest-loss") == 1.0
    assert choose_share(split, "one-se") == 1.0  # per-sample SE would say the network clearly wins ...
    assert choose_share(split, "one-se", groups) == 0.0  # ... two subjects cannot
    assert choose_share(clear, "one-se", [0] * 40) == 0.0  # one group: nothing can be judged, the forest alone
