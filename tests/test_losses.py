"""Each loss against a hand computation on tiny tensors."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aam.training.losses import (IGNORE, MultiTaskLoss, class_weights_from_labels, find_nonfinite, masked_mse,
                                 nucleotide_accuracy, nucleotide_loss, pairwise_distance_loss, pairwise_distances,
                                 relative_abundance)


def num(t):
    """A scalar tensor as a Python float (detached: converting a tensor that requires grad warns)."""
    return float(t.detach())


def numpy_pairwise(emb):
    emb = np.asarray(emb, dtype=np.float64)
    return np.sqrt(((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1))


# ---- find_nonfinite ------------------------------------------------------------------------------------------------
def test_find_nonfinite_names_only_bad_float_tensors():
    outputs = {"ok": torch.ones(3), "nan": torch.tensor([1.0, float("nan")]),
               "inf": torch.tensor([float("inf")], dtype=torch.bfloat16), "ints": torch.tensor([1, 2]),
               "mask": torch.tensor([True]), "ids": ["a", "b"], "none": None}
    assert find_nonfinite(outputs) == ["nan", "inf"]
    assert find_nonfinite({"ok": torch.zeros(2, 2)}) == []


# ---- pairwise distances --------------------------------------------------------------------------------------------
def test_pairwise_distances_match_numpy_with_exact_zero_diagonal():
    emb = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, -1.0]])
    got = pairwise_distances(emb)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), numpy_pairwise(emb.numpy()), rtol=1e-6)
    assert torch.all(torch.diagonal(got) == 0)


def test_pairwise_distances_cast_bf16_to_float32():
    assert pairwise_distances(torch.randn(4, 3).to(torch.bfloat16)).dtype == torch.float32


def test_pairwise_distance_loss_excludes_diagonal():
    emb = np.array([[0.0, 0.0], [3.0, 4.0], [1.0, -1.0]])
    target = np.array([[0.0, 4.0, 1.0], [4.0, 0.0, 2.0], [1.0, 2.0, 0.0]])
    pred = numpy_pairwise(emb)
    off = ~np.eye(3, dtype=bool)
    expected = np.mean((pred[off] - target[off]) ** 2)
    got = pairwise_distance_loss(torch.tensor(emb, dtype=torch.float32), torch.tensor(target, dtype=torch.float32))
    assert num(got) == pytest.approx(expected, rel=1e-6)
    # a mean over all B*B entries (diagonal included) would be smaller by (B-1)/B
    assert num(got) != pytest.approx(np.mean((pred - target) ** 2), rel=1e-3)


def test_pairwise_distance_loss_gradcheck():
    torch.manual_seed(0)
    emb = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    target = torch.rand(4, 4, dtype=torch.float64)
    target = (target + target.T) / 2
    target.fill_diagonal_(0)
    assert torch.autograd.gradcheck(lambda e: pairwise_distance_loss(e, target), (emb,))


def test_pairwise_distance_loss_has_finite_gradient_at_identical_embeddings():
    emb = torch.ones(3, 4, requires_grad=True)  # all distances 0: sqrt'(0) is infinite
    loss = pairwise_distance_loss(emb, torch.full((3, 3), 0.5))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(emb.grad).all()
    # two identical rows among distinct ones: only the zero-distance pair is special
    emb2 = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    pairwise_distance_loss(emb2, torch.ones(3, 3)).backward()
    assert torch.isfinite(emb2.grad).all()


def test_pairwise_distance_loss_single_sample_is_zero_with_grad_path():
    emb = torch.randn(1, 5, requires_grad=True)
    loss = pairwise_distance_loss(emb, torch.zeros(1, 1))
    assert num(loss) == 0.0
    loss.backward()
    assert torch.equal(emb.grad, torch.zeros_like(emb))


# ---- nucleotides ---------------------------------------------------------------------------------------------------
def per_slot_nuc_reference(slot_logits, nuc_targets):
    """Plain mean cross-entropy over all masked positions of all slots, every slot encoded separately."""
    B, S, L = nuc_targets.shape
    return F.cross_entropy(slot_logits.reshape(B * S * L, -1), nuc_targets.reshape(-1), ignore_index=IGNORE)


def dedup_case():
    """B=2, S=2, L=3, V=4: slots 0 and 3 hold the same ASV (encoded once, weight 2); slot 2 is empty."""
    torch.manual_seed(1)
    nuc_targets = torch.tensor([[[1, IGNORE, 3], [IGNORE, 0, IGNORE]],
                                [[IGNORE, IGNORE, IGNORE], [2, IGNORE, 3]]])  # [B, S, L]
    row_logits = torch.randn(2, 3, 4, requires_grad=True)  # rows: ASV of slots {0, 3}, ASV of slot 1
    row_slot = torch.tensor([0, 1])
    row_weight = torch.tensor([2.0, 1.0])
    return nuc_targets, row_logits, row_slot, row_weight


def test_nucleotide_loss_with_row_weights_equals_per_slot_mean():
    nuc_targets, row_logits, row_slot, row_weight = dedup_case()
    # slot 3 shares the ASV of slot 0, and masking is per ASV here, so it gets slot 0's targets
    nuc_targets[1, 1] = nuc_targets[0, 0]
    slot_logits = torch.stack([row_logits[0], row_logits[1], torch.zeros(3, 4), row_logits[0]])  # [B*S, L, V]
    expected = per_slot_nuc_reference(slot_logits.reshape(2, 2, 3, 4), nuc_targets)
    got = nucleotide_loss(row_logits, nuc_targets, row_slot, row_weight)
    assert num(got) == pytest.approx(num(expected), rel=1e-6)
    got.backward()
    assert torch.isfinite(row_logits.grad).all()


def test_nucleotide_loss_by_hand():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))  # [R=1, L=2, V=3], softmax = probs
    targets = torch.tensor([[[0, 1]]])  # [B=1, S=1, L=2]
    got = nucleotide_loss(logits, targets, torch.tensor([0]), torch.tensor([3.0]))
    assert num(got) == pytest.approx(-(np.log(0.5) + np.log(0.8)) / 2, rel=1e-6)


def test_nucleotide_loss_without_masked_positions_is_zero_with_grad():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    targets = torch.full((1, 2, 3), IGNORE)
    loss = nucleotide_loss(logits, targets, torch.tensor([0, 1]), torch.ones(2))
    assert num(loss) == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    assert num(nucleotide_accuracy(logits, targets, torch.tensor([0, 1]), torch.ones(2))) == 0.0


def test_nucleotide_accuracy_is_weighted():
    logits = torch.zeros(2, 2, 3)
    logits[0, :, 1] = 5.0  # row 0 predicts class 1 everywhere
    logits[1, :, 2] = 5.0  # row 1 predicts class 2 everywhere
    targets = torch.tensor([[[1, 0], [2, IGNORE]]])  # row 0: 1 of 2 right, row 1: 1 of 1 right
    acc = nucleotide_accuracy(logits, targets, torch.tensor([0, 1]), torch.tensor([3.0, 1.0]))
    assert num(acc) == pytest.approx((3 * 1 + 1 * 1) / (3 * 2 + 1 * 1))


def test_nucleotide_loss_accepts_bf16_logits():
    nuc_targets, row_logits, row_slot, row_weight = dedup_case()
    loss = nucleotide_loss(row_logits.detach().to(torch.bfloat16), nuc_targets, row_slot, row_weight)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---- counts and class weights --------------------------------------------------------------------------------------
def test_masked_mse_only_counts_masked_positions():
    pred = torch.tensor([[1.0, 2.0, 100.0], [0.0, 5.0, -7.0]])
    target = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert num(masked_mse(pred, target, mask)) == pytest.approx((1 + 4 + 1) / 3)
    empty = masked_mse(pred.requires_grad_(), target, torch.zeros_like(mask))
    assert num(empty) == 0.0
    empty.backward()


def test_relative_abundance():
    counts = torch.tensor([[[2.0], [6.0], [0.0]], [[0.0], [0.0], [0.0]]])  # [B=2, S=3, 1], sample 2 empty
    got = relative_abundance(counts)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]])


def test_class_weights_balanced_and_absent_class():
    labels = np.array([0, 0, 0, 1, IGNORE])
    w = class_weights_from_labels(labels, 3)
    assert w.dtype == torch.float32
    # n / (C * count) with n = 4 valid labels, C = 3; class 2 never occurs -> 1.0
    np.testing.assert_allclose(w.numpy(), [4 / (3 * 3), 4 / (3 * 1), 1.0], rtol=1e-6)
    from sklearn.utils.class_weight import compute_class_weight
    ref = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array([0, 0, 0, 1]))
    np.testing.assert_allclose(class_weights_from_labels(np.array([0, 0, 0, 1]), 2).numpy(), ref, rtol=1e-6)


# ---- MultiTaskLoss -------------------------------------------------------------------------------------------------
def pretrain_example(B=3, S=2, L=4, V=5, C=3, D=4):
    torch.manual_seed(2)
    outputs = {
        "distance_embedding": torch.randn(B, D, requires_grad=True),
        "nuc_logits": torch.randn(B * S, L, V, requires_grad=True),
        "nuc_row_slot": torch.arange(B * S), "nuc_row_weight": torch.ones(B * S),
        "faith_pd": torch.randn(B, requires_grad=True),
        "taxonomy_logits": torch.randn(B, S, C, requires_grad=True),
        "count_prediction": torch.rand(B, S, requires_grad=True),
        "asv_mask": torch.tensor([[True, True], [True, False], [True, True]]),
        "sample_embedding": torch.randn(B, D), "asv_output": torch.randn(B, S, D),
    }
    nuc_targets = torch.randint(0, V, (B, S, L))
    nuc_targets[torch.rand(B, S, L) < 0.5] = IGNORE
    nuc_targets[0, 0, 0] = 1  # at least one masked position
    batch = {
        "distances": torch.rand(B, B), "nuc_targets": nuc_targets, "faith_pd": torch.rand(B),
        "taxonomy": torch.tensor([[0, 2], [1, IGNORE], [IGNORE, 1]]),
        "counts": torch.tensor([[[3.0], [1.0]], [[5.0], [0.0]], [[1.0], [1.0]]]),
        "sample_ids": [f"s{i}" for i in range(B)],
    }
    return outputs, batch


def test_multitask_total_is_weighted_sum():
    outputs, batch = pretrain_example()
    loss_fn = MultiTaskLoss(penalty=0.5, nuc_penalty=2.0, count_penalty=3.0)
    losses = loss_fn(outputs, batch)
    assert set(losses) == {"unifrac_loss", "faith_pd_loss", "taxonomy_loss", "nuc_loss", "count_loss",
                           "total_loss"}
    assert all(v.dtype == torch.float32 and v.dim() == 0 for v in losses.values())
    expected = (3.0 * losses["count_loss"] + 0.5 * (losses["unifrac_loss"] + losses["faith_pd_loss"]
                                                    + losses["taxonomy_loss"]) + 2.0 * losses["nuc_loss"])
    assert num(losses["total_loss"]) == pytest.approx(num(expected), rel=1e-6)
    # the components themselves, by the plain functions
    assert num(losses["taxonomy_loss"]) == pytest.approx(num(F.cross_entropy(
        outputs["taxonomy_logits"].reshape(-1, 3), batch["taxonomy"].reshape(-1), ignore_index=IGNORE)), rel=1e-6)
    rel = relative_abundance(batch["counts"])
    assert num(losses["count_loss"]) == pytest.approx(num(masked_mse(
        outputs["count_prediction"], rel, outputs["asv_mask"])), rel=1e-6)
    assert num(losses["unifrac_loss"]) == pytest.approx(num(pairwise_distance_loss(
        outputs["distance_embedding"], batch["distances"])), rel=1e-6)
    losses["total_loss"].backward()
    assert outputs["nuc_logits"].grad is not None


def test_multitask_regression_and_zero_weights_skip_components():
    outputs, batch = pretrain_example()
    outputs["target_prediction"] = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    batch["targets"] = torch.tensor([1.5, 2.0, 2.0])
    loss_fn = MultiTaskLoss(target_penalty=2.0, penalty=0.0, nuc_penalty=0.0, count_penalty=0.0)
    losses = loss_fn(outputs, batch)
    assert set(losses) == {"target_loss", "total_loss"}
    assert num(losses["target_loss"]) == pytest.approx((0.25 + 0 + 1) / 3)
    assert num(losses["total_loss"]) == pytest.approx(2.0 * (0.25 + 1) / 3)


def test_multitask_classification_uses_class_weights():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    targets = torch.tensor([0, 1, 1])
    weights = torch.tensor([1.0, 3.0])
    loss_fn = MultiTaskLoss(penalty=0.0, nuc_penalty=0.0, count_penalty=0.0, classifier=True,
                            class_weights=weights)
    losses = loss_fn({"target_prediction": logits}, {"targets": targets})
    expected = F.cross_entropy(logits, targets, weight=weights)
    assert num(losses["target_loss"]) == pytest.approx(num(expected), rel=1e-6)


def test_multitask_casts_bf16_outputs():
    outputs, batch = pretrain_example()
    outputs = {k: (v.detach().to(torch.bfloat16) if v.is_floating_point() and k != "nuc_row_weight" else v)
               for k, v in outputs.items()}
    losses = MultiTaskLoss()(outputs, batch)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_multitask_all_ignored_taxonomy_is_finite():
    outputs, batch = pretrain_example()
    batch["taxonomy"] = torch.full_like(batch["taxonomy"], IGNORE)
    losses = MultiTaskLoss()(outputs, batch)
    assert num(losses["taxonomy_loss"]) == 0.0 and torch.isfinite(losses["total_loss"])


def test_multitask_pairwise_loss_is_a_constructor_argument():
    outputs, batch = pretrain_example()
    loss_fn = MultiTaskLoss(nuc_penalty=0.0, count_penalty=0.0)
    calls = []

    def global_pairwise(emb, distances, sample_ids):
        calls.append((tuple(emb.shape), sample_ids))
        return emb.sum() * 0 + 7.0

    gathered = loss_fn.with_pairwise(global_pairwise)
    assert num(gathered(outputs, batch)["unifrac_loss"]) == 7.0
    assert calls == [((3, 4), batch.get("sample_ids"))]
    # the original keeps the plain batch loss
    assert num(loss_fn(outputs, batch)["unifrac_loss"]) != 7.0


def test_multitask_raises_when_nothing_applies():
    outputs, batch = pretrain_example()
    with pytest.raises(ValueError, match="target_loss.*missing outputs\\['target_prediction'\\]"):
        MultiTaskLoss(penalty=0.0, nuc_penalty=0.0, count_penalty=0.0)(outputs, batch)
    with pytest.raises(ValueError, match="no loss component applies"):
        MultiTaskLoss()({"sample_embedding": torch.zeros(2, 3)}, {"sample_ids": ["a", "b"]})
