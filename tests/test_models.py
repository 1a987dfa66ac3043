"""Tests of aam.models on tiny models (CPU, a few seconds in all)."""
import json

import pytest
import torch
import torch.nn.functional as F

from aam.models import (ASVEncoder, EncoderConfig, PredictorConfig, SampleEncoder, SequenceEncoder,
                        SequencePredictor, build_model)
from aam.models.layers import AttentionPooling, SelfAttention, available_attention_backends

# token ids of aam.data.tokenizer, spelled out so these tests do not depend on that module
PAD, A, C, G, T, START, MASK = range(7)
VOCAB_SIZE = 7
IGNORE = -100

MAX_BP = 20
L = MAX_BP + 1


def tiny_cfg(**kw):
    base = dict(max_bp=MAX_BP, token_limit=12, embedding_dim=16, attention_heads=2, attention_layers=1,
                dropout=0.1, asv_chunk_size=0)
    base.update(kw)
    return EncoderConfig(**base)


def make_batch(B=3, S=6, F_=8, seed=0, empty_sample=True, mask_ratio=0.3):
    """A collator-like batch: slots ordered by abundance, shared ASVs identically masked, one empty sample."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, MAX_BP + 1, (F_,), generator=g)
    feat = torch.zeros(F_, L, dtype=torch.long)                      # [F, L]
    feat[:, 0] = START
    targets = torch.full((F_, L), IGNORE, dtype=torch.long)          # [F, L]
    for f in range(F_):
        n = int(lengths[f])
        seq = torch.randint(A, T + 1, (n,), generator=g)
        feat[f, 1:n + 1] = seq
        hide = torch.rand(n, generator=g) < mask_ratio
        targets[f, 1:n + 1] = torch.where(hide, seq, torch.full_like(seq, IGNORE))
        feat[f, 1:n + 1] = torch.where(hide, torch.full_like(seq, MASK), seq)
    asv_ids = torch.full((B, S), -1, dtype=torch.long)
    counts = torch.zeros(B, S, 1)
    for b in range(B):
        n = 0 if (empty_sample and b == B - 1) else int(torch.randint(2, S + 1, (1,), generator=g))
        asv_ids[b, :n] = torch.randperm(F_, generator=g)[:n]
        c = torch.randint(1, 200, (n,), generator=g).float().sort(descending=True).values
        counts[b, :n, 0] = c
    occ = asv_ids >= 0
    tokens = torch.zeros(B, S, L, dtype=torch.long)
    nuc_targets = torch.full((B, S, L), IGNORE, dtype=torch.long)
    tokens[occ] = feat[asv_ids[occ]]
    nuc_targets[occ] = targets[asv_ids[occ]]
    return {"tokens": tokens, "counts": counts, "asv_ids": asv_ids, "nuc_targets": nuc_targets}


def nuc_loss(out, nuc_targets):
    """The trainer's weighted nucleotide cross-entropy over encoded rows."""
    B, S, L_ = nuc_targets.shape
    t = nuc_targets.view(B * S, L_)[out["nuc_row_slot"]]             # [R, L]
    w = out["nuc_row_weight"][:, None]                                # [R, 1]
    ce = F.cross_entropy(out["nuc_logits"].transpose(1, 2), t, ignore_index=IGNORE, reduction="none")  # [R, L]
    return (w * ce).sum() / (w * (t != IGNORE)).sum()


def all_finite(out):
    return all(torch.isfinite(v).all() for v in out.values() if torch.is_tensor(v) and v.is_floating_point())


# ---- shapes -------------------------------------------------------------------------------------------------------
def test_encoder_shapes():
    torch.manual_seed(0)
    batch = make_batch()
    model = SequenceEncoder(tiny_cfg(encoder_type="combined", taxonomy_classes=5)).eval()
    out = model(batch["tokens"], batch["counts"], batch["asv_ids"])
    R = out["nuc_row_slot"].shape[0]
    assert R == torch.unique(batch["asv_ids"][batch["asv_ids"] >= 0]).numel()
    assert out["sample_embedding"].shape == (3, 16)
    assert out["distance_embedding"].shape == (3, 16)
    assert out["asv_output"].shape == (3, 6, 16)
    assert out["asv_mask"].shape == (3, 6) and out["asv_mask"].dtype == torch.bool
    assert out["faith_pd"].shape == (3,)
    assert out["taxonomy_logits"].shape == (3, 6, 5)
    assert out["nuc_logits"].shape == (R, L, VOCAB_SIZE)
    assert out["nuc_row_weight"].sum() == batch["asv_ids"].ge(0).sum()
    # empty slots hold zeros, and an empty sample has a zero embedding
    assert (out["asv_output"][~out["asv_mask"]] == 0).all()
    assert (out["sample_embedding"][2] == 0).all()

    plain = SequenceEncoder(tiny_cfg(predict_nucleotides=False)).eval()
    out = plain(batch["tokens"], batch["counts"])
    assert "nuc_logits" not in out and "faith_pd" not in out and "taxonomy_logits" not in out
    assert plain.faith_pd_head is None and plain.taxonomy_head is None


def test_predictor_shapes():
    batch = make_batch()
    reg = SequencePredictor(PredictorConfig(encoder=tiny_cfg())).eval()
    out = reg(batch["tokens"], batch["counts"], batch["asv_ids"])
    assert out["target_prediction"].shape == (3,)
    assert out["count_prediction"].shape == (3, 6)
    assert (out["count_prediction"][batch["asv_ids"] < 0] == 0).all()
    assert "sample_embedding" in out and "nuc_logits" in out
    clf = SequencePredictor(PredictorConfig(encoder=tiny_cfg(), out_dim=4, classifier=True)).eval()
    assert clf(batch["tokens"], batch["counts"], batch["asv_ids"])["target_prediction"].shape == (3, 4)
    assert not clf.accepts_categorical


# ---- padding never produces NaN -------------------------------------------------------------------------------------
@pytest.mark.parametrize("train", [True, False])
def test_fully_padded_inputs_stay_finite(train):
    torch.manual_seed(0)
    batch = make_batch(empty_sample=True)
    cfg = PredictorConfig(encoder=tiny_cfg(encoder_type="combined", taxonomy_classes=3),
                          categorical_cardinalities={"site": 3})
    model = SequencePredictor(cfg).train(train)
    for asv_ids, dedup in ((batch["asv_ids"], True), (None, False)):
        model.zero_grad()
        out = model(batch["tokens"], batch["counts"], asv_ids=asv_ids, dedup=dedup)
        assert all_finite(out)
        loss = sum(v.float().sum() for k, v in out.items() if torch.is_tensor(v) and v.is_floating_point())
        loss = loss + nuc_loss(out, batch["nuc_targets"])
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # a batch where every sample is empty (no ASV row to encode at all)
    empty = make_batch(B=2, empty_sample=True)
    tokens, counts = torch.zeros_like(empty["tokens"]), torch.zeros_like(empty["counts"])
    out = model(tokens, counts, asv_ids=torch.full((2, 6), -1))
    assert all_finite(out) and out["nuc_logits"].shape == (0, L, VOCAB_SIZE)
    assert (out["sample_embedding"] == 0).all()

    # an all-PAD row given straight to the ASV encoder
    enc = ASVEncoder(tiny_cfg()).train(train)
    rows = torch.zeros(2, L, dtype=torch.long)
    rows[1, :4] = torch.tensor([START, A, C, G])
    emb, logits = enc(rows)
    (emb.sum() + logits.sum()).backward()
    assert torch.isfinite(emb).all() and torch.isfinite(logits).all()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


def test_layers_with_fully_masked_rows():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    attn = SelfAttention(8, 2, dropout=0.0, impl="math")
    pool = AttentionPooling(8)
    y = attn(x, mask)
    p = pool(y, mask)
    assert torch.isfinite(y).all() and (y[1] == 0).all()
    assert torch.isfinite(p).all() and (p[1] == 0).all()
    (y.sum() + p.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(q.grad).all() for q in list(attn.parameters()) + list(pool.parameters()))


# ---- equivalent computations ---------------------------------------------------------------------------------------
def test_chunked_equals_unchunked():
    torch.manual_seed(0)
    rows = make_batch(B=3, S=6)["tokens"].view(-1, L)[:11]  # includes empty rows
    # in float64: chunking only reorders sums, and float32 reorderings of gradients summed over every row differ
    # by more than a tolerance that still catches a wrong chunk (seen on one CPU, not another)
    full = ASVEncoder(tiny_cfg(asv_chunk_size=0, dropout=0.0)).double()
    chunked = ASVEncoder(tiny_cfg(asv_chunk_size=3, dropout=0.0)).double()
    chunked.load_state_dict(full.state_dict())
    e1, l1 = full(rows)
    e2, l2 = chunked(rows)
    torch.testing.assert_close(e1, e2, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(l1, l2, atol=1e-10, rtol=1e-9)
    (e1.sum() + l1.square().sum()).backward()
    (e2.sum() + l2.square().sum()).backward()
    for (name, p1), p2 in zip(full.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-9, rtol=1e-8, msg=name)


def _loss_and_grads(model, batch, **kw):
    model.zero_grad()
    out = model(batch["tokens"], batch["counts"], **kw)
    nl = nuc_loss(out, batch["nuc_targets"])
    loss = out["distance_embedding"].square().sum() + out["faith_pd"].sum() + out["taxonomy_logits"].sum() + nl
    loss.backward()
    return out, nl, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_dedup_equals_per_slot():
    torch.manual_seed(0)
    batch = make_batch(B=3, S=6, F_=5)  # few features, so samples share ASVs
    occ = batch["asv_ids"] >= 0
    assert torch.unique(batch["asv_ids"][occ]).numel() < occ.sum()  # the batch really has duplicates
    # dropout 0 in train mode: dropout masks would differ between the two paths
    model = SequenceEncoder(tiny_cfg(dropout=0.0, encoder_type="combined", taxonomy_classes=3)).train()
    d_out, d_nl, d_grads = _loss_and_grads(model, batch, asv_ids=batch["asv_ids"], dedup=True)
    s_out, s_nl, s_grads = _loss_and_grads(model, batch, asv_ids=batch["asv_ids"], dedup=False)
    n_out, n_nl, n_grads = _loss_and_grads(model, batch, asv_ids=None)
    assert d_out["nuc_row_slot"].numel() < s_out["nuc_row_slot"].numel() == occ.sum()
    assert (s_out["nuc_row_weight"] == 1).all()
    # the per-slot nucleotide loss is the plain mean over all unmasked target positions
    plain = F.cross_entropy(s_out["nuc_logits"].transpose(1, 2),
                            batch["nuc_targets"].view(-1, L)[s_out["nuc_row_slot"]], ignore_index=IGNORE)
    torch.testing.assert_close(s_nl, plain)
    torch.testing.assert_close(d_nl, s_nl)
    torch.testing.assert_close(n_nl, s_nl)
    for key in ("sample_embedding", "distance_embedding", "asv_output", "faith_pd", "taxonomy_logits"):
        torch.testing.assert_close(d_out[key], s_out[key], atol=1e-6, rtol=1e-5, msg=key)
        torch.testing.assert_close(n_out[key], s_out[key], atol=1e-6, rtol=1e-5, msg=key)
    assert d_grads.keys() == s_grads.keys() == n_grads.keys()
    for name in d_grads:
        torch.testing.assert_close(d_grads[name], s_grads[name], atol=1e-5, rtol=1e-4, msg=name)
        torch.testing.assert_close(n_grads[name], s_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_gradient_checkpointing_matches():
    torch.manual_seed(0)
    batch = make_batch()
    plain = SequenceEncoder(tiny_cfg(dropout=0.0, encoder_type="combined", taxonomy_classes=3)).train()
    ckpt = SequenceEncoder(tiny_cfg(dropout=0.0, encoder_type="combined", taxonomy_classes=3,
                                    gradient_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    _, nl1, g1 = _loss_and_grads(plain, batch, asv_ids=batch["asv_ids"])
    _, nl2, g2 = _loss_and_grads(ckpt, batch, asv_ids=batch["asv_ids"])
    torch.testing.assert_close(nl1, nl2)
    for name in g1:
        torch.testing.assert_close(g1[name], g2[name], atol=1e-5, rtol=1e-4, msg=name)


def test_forward_from_asv_embeddings_matches_forward():
    torch.manual_seed(0)
    batch = make_batch()
    cfg = PredictorConfig(encoder=tiny_cfg(), freeze_base=True, categorical_cardinalities={"site": 3})
    model = SequencePredictor(cfg).eval()
    cat = torch.tensor([[1], [2], [0]])
    out = model(batch["tokens"], batch["counts"], batch["asv_ids"], categorical=cat)
    # ASV embeddings as an embedding cache computes them: each occupied slot's tokens through encode_asvs
    occ = batch["asv_ids"] >= 0
    emb, _ = model.base.encode_asvs(batch["tokens"][occ])
    asv_emb = torch.zeros(3, 6, 16)
    asv_emb[occ] = emb
    cached = model.forward_from_asv_embeddings(asv_emb, batch["counts"], occ, categorical=cat)
    assert "nuc_logits" not in cached
    for key in ("target_prediction", "count_prediction", "sample_embedding", "distance_embedding", "asv_output"):
        torch.testing.assert_close(cached[key], out[key], atol=1e-6, rtol=1e-5, msg=key)


# ---- training behaviour ---------------------------------------------------------------------------------------------
def test_freeze_base_trains_only_the_head():
    torch.manual_seed(0)
    batch = make_batch()
    model = SequencePredictor(PredictorConfig(encoder=tiny_cfg(), freeze_base=True))
    model.train()
    assert model.training and not model.base.training  # the frozen base keeps dropout off
    assert not any(p.requires_grad for p in model.base.parameters())
    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    head_before = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("base.")}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(batch["tokens"], batch["counts"], batch["asv_ids"])
    (out["target_prediction"] - 1.0).square().mean().add(out["count_prediction"].square().mean()).backward()
    opt.step()
    assert all(p.grad is None for p in model.base.parameters())
    for k, v in model.base.state_dict().items():
        assert torch.equal(v, base_before[k]), k
    changed = [n for n, p in model.named_parameters() if not n.startswith("base.")
               and not torch.equal(p.detach(), head_before[n])]
    assert "target_head.4.weight" in changed and "count_head.weight" in changed and "fuse.weight" in changed

    # an unfrozen predictor trains its base too
    free = SequencePredictor(PredictorConfig(encoder=tiny_cfg()))
    free.train()
    assert free.base.training
    out = free(batch["tokens"], batch["counts"], batch["asv_ids"])
    out["target_prediction"].sum().backward()
    assert free.base.asv_encoder.tok_emb.weight.grad is not None


@pytest.mark.parametrize("fusion", ["concat", "add"])
def test_categorical_fusion(fusion):
    torch.manual_seed(0)
    batch = make_batch()
    cfg = PredictorConfig(encoder=tiny_cfg(), categorical_cardinalities={"site": 3, "host.sex": 4},
                          categorical_embed_dims={"site": 4}, categorical_fusion=fusion)
    model = SequencePredictor(cfg).eval()
    assert model.accepts_categorical and model.categorical_columns == ["site", "host.sex"]
    def run(cat):
        return model(batch["tokens"], batch["counts"], batch["asv_ids"], categorical=cat)["target_prediction"]

    a = run(torch.tensor([[1, 2], [1, 2], [1, 2]]))
    b = run(torch.tensor([[2, 2], [1, 3], [1, 2]]))
    assert (a[:2] - b[:2]).abs().min() > 0          # a changed category changes that sample's prediction
    torch.testing.assert_close(a[2], b[2])           # and only that sample's
    # missing covariates and out-of-range codes mean "unknown" (index 0)
    unknown = run(torch.zeros(3, 2, dtype=torch.long))
    torch.testing.assert_close(run(None), unknown)
    torch.testing.assert_close(run(torch.tensor([[7, -1]] * 3)), unknown)
    with pytest.raises(ValueError):
        run(torch.zeros(3, 1, dtype=torch.long))


@pytest.mark.parametrize("kw", [dict(bounded_targets=True), dict(bounded_targets=True, learnable_output_scale=True),
                                dict(output_activation="relu"), dict(output_activation="softplus"),
                                dict(output_activation="exp", learnable_output_scale=True)])
def test_output_activations(kw):
    torch.manual_seed(0)
    batch = make_batch()
    model = SequencePredictor(PredictorConfig(encoder=tiny_cfg(), **kw)).train()
    with torch.no_grad():  # spread the raw outputs so the activation has something to bound
        model.target_head[-1].weight.mul_(50.0)
    y = model(batch["tokens"], batch["counts"], batch["asv_ids"])["target_prediction"]
    assert y.shape == (3,) and torch.isfinite(y).all()
    if kw.get("bounded_targets"):
        assert ((y > 0) & (y < 1)).all()
    elif kw["output_activation"] == "relu":
        assert (y >= 0).all()
    else:
        assert (y > 0).all()
    y.sum().backward()
    if kw.get("learnable_output_scale"):
        assert model.output_scale.grad is not None and model.output_bias.grad is not None


# ---- configs and serialization ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["encoder", "predictor"])
def test_build_model_round_trip(kind):
    torch.manual_seed(0)
    batch = make_batch()
    enc = tiny_cfg(encoder_type="combined", taxonomy_classes=4)
    if kind == "encoder":
        cfg, model = enc, SequenceEncoder(enc)
    else:
        cfg = PredictorConfig(encoder=enc, out_dim=3, classifier=True, head_layers=1,
                              categorical_cardinalities={"site": 3, "b": 2}, categorical_fusion="add")
        model = SequencePredictor(cfg)
    config = json.loads(json.dumps({"model_type": kind, **cfg.to_dict()}))  # must be plain JSON
    rebuilt = build_model(config)
    assert type(rebuilt) is type(model) and rebuilt.cfg == cfg
    assert list(rebuilt.state_dict()) == list(model.state_dict())
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    kw = {"categorical": torch.tensor([[1, 1], [2, 0], [0, 1]])} if kind == "predictor" else {}
    o1 = model(batch["tokens"], batch["counts"], batch["asv_ids"], **kw)
    o2 = rebuilt(batch["tokens"], batch["counts"], batch["asv_ids"], **kw)
    assert o1.keys() == o2.keys()
    for k in o1:
        torch.testing.assert_close(o1[k], o2[k], msg=k)
    if kind == "predictor":
        assert list(PredictorConfig.from_dict(config).categorical_cardinalities) == ["site", "b"]


def test_config_validation():
    d = tiny_cfg().to_dict()
    assert EncoderConfig.from_dict({**d, "model_type": "encoder"}) == tiny_cfg()
    with pytest.raises(ValueError, match="bogus"):
        EncoderConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="extra"):
        PredictorConfig.from_dict({**PredictorConfig(encoder=tiny_cfg()).to_dict(), "extra": 1})
    with pytest.raises(ValueError):
        tiny_cfg(attn_implementation="xformers")
    with pytest.raises(ValueError):
        tiny_cfg(embedding_dim=15)
    with pytest.raises(ValueError):
        PredictorConfig(encoder=tiny_cfg(), output_activation="tanh")
    with pytest.raises(ValueError):
        build_model(d)  # no model_type
    with pytest.raises(ValueError):
        SequencePredictor(PredictorConfig(encoder=tiny_cfg()), base=SequenceEncoder(tiny_cfg(embedding_dim=8)))


def test_sample_encoder_limits_and_layers():
    cfg = tiny_cfg()
    assert len(SampleEncoder(cfg).encoder.blocks) == 1 and len(SampleEncoder(cfg, layers=3).encoder.blocks) == 3
    with pytest.raises(ValueError, match="token_limit"):
        SampleEncoder(cfg)(torch.zeros(1, 13, 16), torch.zeros(1, 13, 1), torch.zeros(1, 13, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_bp"):
        ASVEncoder(cfg)(torch.zeros(1, L + 1, dtype=torch.long))


def test_attention_backends_report():
    backends = available_attention_backends("cpu")
    assert set(backends) == {"sdpa", "math", "flash", "mem_efficient"}
    assert backends["math"][0] is True and backends["sdpa"][0] is True
    assert all(isinstance(ok, bool) and isinstance(msg, str) for ok, msg in backends.values())


def test_math_backend_matches_default():
    torch.manual_seed(0)
    batch = make_batch()
    a = SequenceEncoder(tiny_cfg(attn_implementation="sdpa")).eval()
    b = SequenceEncoder(tiny_cfg(attn_implementation="math")).eval()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(batch["tokens"], batch["counts"], batch["asv_ids"])["sample_embedding"],
                               b(batch["tokens"], batch["counts"], batch["asv_ids"])["sample_embedding"])


def test_vocabulary_matches_tokenizer():
    tok = pytest.importorskip("aam.data.tokenizer")
    from aam.models import asv_encoder
    assert (tok.PAD, tok.MASK, tok.VOCAB_SIZE) == (PAD, MASK, VOCAB_SIZE)
    assert (asv_encoder.PAD, asv_encoder.VOCAB_SIZE) == (PAD, VOCAB_SIZE)
