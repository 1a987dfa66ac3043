"""ASVDataset and its collate function, on the bundled moving-pictures slice."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from aam.data.dataset import IGNORE, ASVDataset, Collator, rarefy_counts, select_asvs
from aam.data.pipeline import prepare_table
from aam.data.tokenizer import MASK, PAD, START

from tests.conftest import MP


@pytest.fixture(scope="module")
def prepared():
    return prepare_table(f"{MP}/table.biom", sequences=f"{MP}/rep-seqs.fasta", tree=f"{MP}/tree.nwk",
                         objective="unifrac", max_bp=150, rarefy_depth=500, seed=1)


def test_select_asvs_by_abundance_breaks_ties_by_feature_index():
    idx = np.array([7, 3, 5, 1])
    cnt = np.array([2, 9, 2, 1])
    out_idx, out_cnt = select_asvs(idx, cnt, 3, "abundance", np.random.default_rng(0))
    assert out_idx.tolist() == [3, 5, 7]  # 9 first, then the two 2s by feature index
    assert out_cnt.tolist() == [9, 2, 2]


def test_select_asvs_random_is_seeded_and_abundance_ordered():
    idx = np.arange(50)
    cnt = np.arange(50, 0, -1)
    a = select_asvs(idx, cnt, 10, "random", np.random.default_rng(3))
    b = select_asvs(idx, cnt, 10, "random", np.random.default_rng(3))
    c = select_asvs(idx, cnt, 10, "random", np.random.default_rng(4))
    assert a[0].tolist() == b[0].tolist()
    assert a[0].tolist() != c[0].tolist()
    assert np.all(np.diff(a[1]) <= 0)  # slots ordered by abundance


def test_rarefy_counts_keeps_depth_and_leaves_shallow_samples():
    rng = np.random.default_rng(0)
    counts = np.array([100, 50, 25, 0, 5])
    out = rarefy_counts(counts, 60, rng)
    assert out.sum() == 60 and np.all(out <= counts)
    assert rarefy_counts(counts, 1000, rng) is counts


def test_dataset_resamples_each_epoch_only_when_asked(prepared):
    ds = ASVDataset(prepared.counts, prepared.sample_ids, rarefy_depth=prepared.depth, resample_each_epoch=True,
                    seed=0)
    first = ds[0]["counts"].copy()
    ds.set_epoch(1)
    assert ds[0]["counts"].sum() == prepared.depth
    assert not np.array_equal(first, ds[0]["counts"])
    fixed = ASVDataset(prepared.counts, prepared.sample_ids, rarefy_depth=prepared.depth, seed=0)
    f0 = fixed[0]["counts"].copy()
    fixed.set_epoch(5)
    assert np.array_equal(f0, fixed[0]["counts"])


def test_collate_shapes_and_distance_block_follow_batch_order(prepared):
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=64, rarefy_depth=prepared.depth, seed=0)
    collate = Collator(ds, prepared.tokens, distances=prepared.distances)
    order = [5, 0, 11, 3]
    batch = collate([ds[i] for i in order])
    B, S, L = batch["tokens"].shape
    # 120 bp reads: the padding columns no ASV uses are trimmed (max_bp 150 would give 151)
    assert (B, L) == (4, 121) and S <= 64
    assert Collator(ds, prepared.tokens, trim_padding=False)([ds[i] for i in order])["tokens"].shape[2] == 151
    assert (prepared.tokens[:, L:] == PAD).all()
    assert batch["counts"].shape == (B, S, 1)
    assert batch["sample_ids"] == [prepared.sample_ids[i] for i in order]
    expected = prepared.distances[np.ix_(order, order)]
    assert np.allclose(batch["distances"].numpy(), expected)
    occupied = batch["asv_ids"] >= 0
    # every occupied slot starts with START, holds its feature's tokens; empty slots are all padding
    assert torch.all(batch["tokens"][occupied][:, 0] == START)
    assert torch.all(batch["tokens"][~occupied] == PAD)
    ids = batch["asv_ids"][occupied]
    assert torch.equal(batch["tokens"][occupied], torch.as_tensor(prepared.tokens[ids.numpy(), :L]).long())
    # counts are sorted by abundance within each sample and zero in empty slots
    c = batch["counts"][..., 0]
    assert torch.all(c[~occupied] == 0)
    for b in range(B):
        n = int(occupied[b].sum())
        assert torch.all(c[b, : n - 1] >= c[b, 1:n])


def test_token_limit_truncates_to_most_abundant(prepared):
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=5, rarefy_depth=None, seed=0)
    item = ds[0]
    row = prepared.counts[0].toarray().ravel()
    assert len(item["asv_ids"]) == 5
    assert sorted(item["counts"].tolist(), reverse=True) == sorted(row[row > 0].tolist(), reverse=True)[:5]


def test_masking_is_shared_by_slots_of_the_same_asv_and_never_hits_start_or_padding(prepared):
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=128, rarefy_depth=prepared.depth, seed=0)
    collate = Collator(ds, prepared.tokens, mask_ratio=0.3)
    batch = collate([ds[i] for i in range(6)])
    tokens, targets, ids = batch["tokens"], batch["nuc_targets"], batch["asv_ids"]
    masked = tokens == MASK
    original = torch.as_tensor(prepared.tokens)[ids.clamp(min=0)].long()[..., : tokens.shape[2]]
    hit = targets != IGNORE
    assert hit.any()
    assert torch.all(targets[hit] == original[hit])           # targets are the original nucleotides
    assert torch.all((original[hit] >= 1) & (original[hit] <= 4))
    assert torch.all(tokens[..., 0][ids >= 0] == START)       # start token never masked
    assert not masked[ids < 0].any()                          # padding slots untouched
    ratio = hit.sum().item() / ((original >= 1) & (original <= 4) & (ids >= 0)[..., None]).sum().item()
    assert 0.2 < ratio < 0.4
    # two slots holding the same ASV carry the same masked tokens
    flat_ids, flat_tok = ids[ids >= 0], tokens[ids >= 0]
    for fid in torch.unique(flat_ids)[:20]:
        rows = flat_tok[flat_ids == fid]
        assert torch.all(rows == rows[0])


def test_span_masking_masks_contiguous_runs(prepared):
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=32, seed=0)
    collate = Collator(ds, prepared.tokens, mask_ratio=0.15, mask_strategy="span", span_length=5)
    batch = collate([ds[i] for i in range(4)])
    hit = (batch["nuc_targets"] != IGNORE).flatten(0, 1).numpy()
    runs = []
    for row in hit:
        padded = np.concatenate([[0], row.astype(int), [0]])
        edges = np.flatnonzero(np.diff(padded))
        runs += list(edges[1::2] - edges[::2])
    assert runs and np.mean(runs) >= 3


def test_collate_is_deterministic_for_an_epoch(prepared):
    ds = ASVDataset(prepared.counts, prepared.sample_ids, rarefy_depth=prepared.depth, seed=2,
                    resample_each_epoch=True)
    collate = Collator(ds, prepared.tokens, mask_ratio=0.15)
    a = collate([ds[i] for i in range(3)])
    b = collate([ds[i] for i in range(3)])
    assert torch.equal(a["tokens"], b["tokens"])
    ds.set_epoch(1)
    c = collate([ds[i] for i in range(3)])
    assert not torch.equal(a["tokens"], c["tokens"]) or not torch.equal(a["counts"], c["counts"])


def test_batch_of_samples_without_asvs_still_collates():
    counts = sp.csr_matrix(np.array([[0, 0], [0, 0]], dtype=np.float32))
    tokens = np.array([[START, 1, 2, 0], [START, 3, 4, 0]], dtype=np.uint8)
    ds = ASVDataset(counts, ["a", "b"], seed=0)
    batch = Collator(ds, tokens, mask_ratio=0.5)([ds[0], ds[1]])
    assert batch["tokens"].shape == (2, 1, 4)
    assert torch.all(batch["asv_ids"] == -1)


def test_targets_and_categorical_travel_with_samples(prepared):
    n = len(prepared.sample_ids)
    y = np.arange(n, dtype=np.float32)
    cats = np.stack([np.arange(n) % 3, np.arange(n) % 2], axis=1).astype(np.int64)
    ds = ASVDataset(prepared.counts, prepared.sample_ids, targets=y, categorical=cats, seed=0)
    batch = Collator(ds, prepared.tokens)([ds[4], ds[1]])
    assert batch["targets"].tolist() == [4.0, 1.0]
    assert batch["categorical"].tolist() == [[1, 0], [1, 1]]


def test_loaders_drop_last_only_for_training(prepared):
    import warnings
    from aam import options as O
    from aam.data.loaders import training_loaders
    from aam.training.context import single_process
    ds = ASVDataset(prepared.counts, prepared.sample_ids, token_limit=16, rarefy_depth=prepared.depth, seed=0)
    collate = Collator(ds, prepared.tokens)
    opts = O.resolve("pretrain", seed=0, batch_size=4, drop_last=True)
    train, val = training_loaders(ds, ds, collate, collate, opts, single_process())
    n = len(ds)
    assert sum(len(b["sample_ids"]) for b in train) == (n // 4) * 4
    assert sum(len(b["sample_ids"]) for b in val) == n  # validation scores every sample
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, _ = training_loaders(ds, None, collate, None, opts.replace(batch_size=n + 1), single_process())
    assert any("--drop-last ignored" in str(w.message) for w in caught)
    assert sum(len(b["sample_ids"]) for b in train) == n


def test_predictions_average_independent_rarefactions():
    """`mean_over_draws` averages draws 0..K-1 of deep samples, leaves shallow ones alone, restores the dataset."""
    from aam.data.loaders import mean_over_draws
    counts = sp.csr_matrix(np.array([[50, 30, 20, 0], [3, 2, 0, 1]]))  # one deep sample, one below the depth
    ds = ASVDataset(counts, ["deep", "shallow"], token_limit=4, rarefy_depth=10, seed=5)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=2, collate_fn=lambda items: {"items": items, "sample_ids": [ds.sample_ids[it["index"]]
                                                                                   for it in items]})

    def first_feature_reads(batch):  # reads of feature 0 in each sample's draw, [B]
        return torch.tensor([float(it["counts"][it["asv_ids"] == 0].sum()) for it in batch["items"]])

    mean, ids = mean_over_draws(loader, 4, first_feature_reads)
    assert ids == ["deep", "shallow"]
    assert ds.resample_each_epoch is False and ds.epoch == 0  # the dataset is left as it was
    ds.resample_each_epoch = True
    expected = []
    for draw in range(4):
        ds.set_epoch(draw)
        expected.append(first_feature_reads({"items": [ds[0], ds[1]]}))
    ds.resample_each_epoch = False
    assert len({tuple(e.tolist()) for e in expected}) > 1  # the draws differ...
    torch.testing.assert_close(mean, torch.stack(expected).mean(0))  # ...and the result is their mean
    assert mean[1] == 3.0  # the shallow sample is used as it is in every draw
    ds.set_epoch(0)
    single, _ = mean_over_draws(loader, 1, first_feature_reads)
    torch.testing.assert_close(single, expected[0])
