"""Metrics against scikit-learn, optimizer groups, every learning-rate schedule, and the plots."""
import io
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from aam.evaluation import plots
from aam.evaluation.metrics import classification_metrics, regression_metrics
from aam.training.optim import SCHEDULERS, build_optimizer, build_scheduler, warmup_cosine_factor


# ---- metrics -------------------------------------------------------------------------------------------------------
def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    p = y + rng.normal(scale=0.3, size=40)
    m = regression_metrics(y, p)
    assert m["n"] == 40
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p))
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p))
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)))
    assert m["r2"] == pytest.approx(skm.r2_score(y, p))
    assert m["pearson_r"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert all(type(m[k]) is float for k in ("mae", "mse", "rmse", "r2", "pearson_r"))


def test_regression_metrics_undefined_cases():
    one = regression_metrics([1.0], [2.0])
    assert one["r2"] is None and one["pearson_r"] is None and one["mae"] == 1.0 and one["n"] == 1
    constant = regression_metrics([3.0, 3.0, 3.0], [1.0, 2.0, 3.0])
    assert constant["r2"] is None and constant["pearson_r"] is None
    empty = regression_metrics([], [])
    assert empty["n"] == 0 and empty["mae"] is None


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    n_classes = 4
    y = rng.integers(0, 3, size=60)  # class 3 never true
    p = np.where(rng.random(60) < 0.7, y, rng.integers(0, 4, size=60))
    m = classification_metrics(y, p, n_classes)
    labels = np.unique(np.concatenate([y, p]))
    assert m["n"] == 60
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    for key, fn in (("precision", skm.precision_score), ("recall", skm.recall_score), ("f1", skm.f1_score)):
        assert m[key] == pytest.approx(fn(y, p, labels=labels, average="macro", zero_division=0)), key
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about predicted classes absent from y_true
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert m["confusion_matrix"] == skm.confusion_matrix(y, p, labels=range(n_classes)).tolist()
    assert "log_loss" not in m and "auc" not in m


def test_classification_probability_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=50)
    logits = rng.normal(size=(50, 2)) + np.eye(2)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, probs.argmax(1), 2, probabilities=probs)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=[0, 1]))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, probs[:, 1]))
    # ties in the scores count as half
    tied = np.array([[0.5, 0.5], [0.5, 0.5], [0.2, 0.8], [0.9, 0.1]])
    yt = np.array([0, 1, 1, 0])
    assert classification_metrics(yt, tied.argmax(1), 2, tied)["auc"] == pytest.approx(
        skm.roc_auc_score(yt, tied[:, 1]))
    single = classification_metrics([1, 1], [1, 0], 2, probabilities=[[0.2, 0.8], [0.6, 0.4]])
    assert single["auc"] is None and math.isfinite(single["log_loss"])
    confident_miss = classification_metrics([0], [1], 2, probabilities=[[0.0, 1.0]])
    assert math.isfinite(confident_miss["log_loss"])


def test_classification_multiclass_log_loss():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    y = np.array([0, 2, 0])
    m = classification_metrics(y, probs.argmax(1), 3, probabilities=probs)
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, probs, labels=[0, 1, 2]))
    assert "auc" not in m


# ---- optimizer -----------------------------------------------------------------------------------------------------
class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.token_embedding = torch.nn.Embedding(10, 4)
        self.linear = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.head = torch.nn.Linear(4, 1)
        self.head.weight.requires_grad_(False)  # frozen: must not reach the optimizer

    def forward(self, x):
        return self.head(self.norm(self.linear(self.token_embedding(x)))).sum()


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", None])
def test_optimizer_groups_exclude_biases_norms_embeddings_from_decay(name):
    model = Tiny()
    opt = build_optimizer(name, model, lr=1e-3, weight_decay=0.1)
    groups = {g["name"]: g for g in opt.param_groups}
    decay = {id(p) for p in groups["decay"]["params"]}
    no_decay = {id(p) for p in groups["no_decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert decay == {id(model.linear.weight)}
    assert no_decay == {id(model.linear.bias), id(model.norm.weight), id(model.norm.bias),
                        id(model.token_embedding.weight), id(model.head.bias)}
    expected_type = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD,
                     None: torch.optim.AdamW}[name]
    assert type(opt) is expected_type
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.9
    model(torch.tensor([1, 2])).backward()
    opt.step()


def test_optimizer_rejects_unknown_name_and_frozen_model():
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer("lbfgs", Tiny(), 1e-3, 0.0)
    frozen = Tiny().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer("adamw", frozen, 1e-3, 0.0)


# ---- schedulers ----------------------------------------------------------------------------------------------------
def make_opt(lr=1e-2, name="adamw"):
    return build_optimizer(name, Tiny(), lr=lr, weight_decay=0.01)


def run_steps(sched, opt, n, metric=1.0):
    """Step like the trainer: optimizer then scheduler; returns the lr used by each optimizer step."""
    used = []
    for _ in range(n):
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(metric) if sched.step_per == "epoch" else sched.step()
    return used


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("total_steps", [1, 7, 40])
def test_every_scheduler_steps_total_steps_times(name, total_steps):
    opt = make_opt()
    sched = build_scheduler(name, opt, total_steps=total_steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "scheduler.step() before optimizer.step()"
        used = run_steps(sched, opt, total_steps)
    assert all(math.isfinite(lr) and lr >= 0 for lr in used)
    assert len(sched.get_last_lr()) == len(opt.param_groups)
    # the state must survive a weights-only checkpoint (plain numbers and containers only)
    buffer = io.BytesIO()
    torch.save(sched.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_opt = make_opt()
    fresh = build_scheduler(name, fresh_opt, total_steps=total_steps)
    fresh.load_state_dict(state)
    assert fresh.step_per == sched.step_per


def test_onecycle_never_raises_past_its_end():
    opt = make_opt()
    sched = build_scheduler("onecycle", opt, total_steps=20)
    used = run_steps(sched, opt, 24)  # a resumed or re-sized run may step a little more
    # rises to the optimizer's lr (after 30% of the steps), then stays at the lowest value once the cycle is over
    assert int(np.argmax(used)) == 5 and max(used) == pytest.approx(1e-2)
    assert used[19:] == [pytest.approx(1e-2 / 25 / 1e4)] * 5
    assert sched.get_last_lr()[0] == pytest.approx(1e-2 / 25 / 1e4)


def test_warmup_cosine_shape():
    lr, eta_min, total, warmup = 1e-2, 1e-4, 50, 10
    opt = make_opt(lr)
    sched = build_scheduler("warmup_cosine", opt, total_steps=total, warmup_steps=warmup, eta_min=eta_min)
    used = run_steps(sched, opt, total)
    assert used[0] == pytest.approx(lr / (warmup + 1))  # starts low but not at 0
    assert int(np.argmax(used)) == warmup and used[warmup] == pytest.approx(lr)  # peaks right after warm-up
    assert all(a < b for a, b in zip(used[:warmup], used[1:warmup + 1]))  # rises during warm-up
    assert all(a >= b for a, b in zip(used[warmup:], used[warmup + 1:]))  # then only decays
    assert used[-1] == pytest.approx(eta_min, abs=2e-4)  # ends near eta_min
    assert sched.get_last_lr()[0] == pytest.approx(eta_min)


def test_warmup_defaults_to_ten_percent():
    opt = make_opt(1.0)
    sched = build_scheduler(None, opt, total_steps=100)
    used = run_steps(sched, opt, 100)
    assert int(np.argmax(used)) == 10
    # warm-up never starts at 0 (the first step already learns) and the cosine ends at eta_min
    assert warmup_cosine_factor(0, 100, 10) == pytest.approx(1 / 11)
    assert warmup_cosine_factor(100, 100, 10, eta_ratio=0.01) == pytest.approx(0.01)
    assert warmup_cosine_factor(500, 100, 10, eta_ratio=0.01) == pytest.approx(0.01)


def test_cosine_restarts_cycle_length_and_plateau_reduction():
    opt = make_opt(1.0)
    sched = build_scheduler("cosine_restarts", opt, total_steps=40, eta_min=0.0)  # T_0 = 10
    used = run_steps(sched, opt, 21)
    assert used[0] == pytest.approx(1.0) and used[10] == pytest.approx(1.0) and used[20] == pytest.approx(1.0)
    assert used[5] == pytest.approx(0.5)
    opt = make_opt(1.0)
    plateau = build_scheduler("plateau", opt, total_steps=10, patience=1, factor=0.5)
    assert plateau.step_per == "epoch"
    for metric in (1.0, 1.0, 1.0, None, float("nan")):
        plateau.step(metric)
    assert plateau.get_last_lr()[0] == pytest.approx(0.5)


def test_unknown_scheduler_lists_choices():
    with pytest.raises(ValueError, match="warmup_cosine.*onecycle"):
        build_scheduler("step", make_opt(), total_steps=10)


@pytest.mark.parametrize("name", ["warmup_cosine", "cosine_restarts", "onecycle"])
def test_scale_base_lrs_after_resume(name):
    """Resume like the trainer: load the state, scale the groups' lr and initial_lr, then the base lrs."""
    total = 20
    opt = make_opt(1e-2)
    sched = build_scheduler(name, opt, total_steps=total, warmup_steps=4)
    run_steps(sched, opt, 8)
    ref_opt = make_opt(1e-2)
    ref = build_scheduler(name, ref_opt, total_steps=total, warmup_steps=4)
    ref_used = run_steps(ref, ref_opt, total)

    new_opt = make_opt(1e-2)
    resumed = build_scheduler(name, new_opt, total_steps=total, warmup_steps=4)
    new_opt.load_state_dict(opt.state_dict())
    resumed.load_state_dict(sched.state_dict())
    for group in new_opt.param_groups:
        group["lr"] *= 0.1
        group["initial_lr"] *= 0.1
    resumed.scale_base_lrs(0.1)
    used = run_steps(resumed, new_opt, total - 8)
    # the rest of the schedule is the same curve, ten times lower
    np.testing.assert_allclose(used, np.array(ref_used[8:]) * 0.1, rtol=1e-6, atol=1e-12)


def test_schedule_of_another_name_is_not_loaded():
    opt = make_opt()
    state = build_scheduler("onecycle", opt, total_steps=5).state_dict()
    other = build_scheduler("warmup_cosine", make_opt(), total_steps=5)
    with pytest.warns(UserWarning, match="onecycle"):
        other.load_state_dict(state)


# ---- plots ---------------------------------------------------------------------------------------------------------
def assert_saved(paths, tmp_path, stem):
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "svg"]
    for p in paths:
        assert p.startswith(str(tmp_path / stem)) and (tmp_path / p).stat().st_size > 1000


def test_prediction_plot_saves_png_and_svg(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.normal(size=30)
    fig = plots.prediction_plot(y, y + rng.normal(scale=0.2, size=30), title="validation")
    assert "R²" in fig.axes[0].get_title() and "MAE" in fig.axes[0].get_title()
    assert_saved(plots.save_figure(fig, str(tmp_path / "sub" / "pred")), tmp_path, "sub/pred")


@pytest.mark.parametrize("n", [1, 2])
def test_prediction_plot_with_one_or_two_points_has_no_warnings(tmp_path, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plots.prediction_plot(np.arange(n, dtype=float), np.arange(n, dtype=float) * 2)
        plots.save_figure(fig, str(tmp_path / "few"), formats=("png",))
    assert "n/a" in fig.axes[0].get_title() if n == 1 else "R²" in fig.axes[0].get_title()


def test_confusion_matrix_plot(tmp_path):
    m = classification_metrics([0, 1, 2, 2], [0, 2, 2, 2], 3)
    fig = plots.confusion_matrix_plot(np.array(m["confusion_matrix"]), ["a", "b", "c"], metrics=m, title="val")
    ax = fig.axes[0]
    assert "accuracy 0.750" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == sorted(["1", "0", "0", "0", "0", "1", "0", "0", "2"])
    assert_saved(plots.save_figure(fig, str(tmp_path / "cm")), tmp_path, "cm")


@pytest.mark.parametrize("n", [50, 2500])
def test_distance_fit_plot(tmp_path, n):
    rng = np.random.default_rng(4)
    true = rng.random(n)
    fig = plots.distance_fit_plot(true + rng.normal(scale=0.05, size=n), true)
    assert "r = " in fig.axes[0].get_title() and "MSE" in fig.axes[0].get_title()
    assert_saved(plots.save_figure(fig, str(tmp_path / f"dist{n}")), tmp_path, f"dist{n}")


def test_training_curves_plot(tmp_path):
    history = [{"epoch": e, "train/total_loss": 1 / e, "val/total_loss": 1.2 / e + (0.1 if e == 4 else 0),
                "val/mae": 2 / e, "train/lr": 1e-3, "best": e in (1, 2, 3), "seconds": 1.0}
               for e in range(1, 5)]
    history[1]["val/mae"] = None  # missing values are skipped
    fig = plots.training_curves_plot(history)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["total_loss", "mae", "lr"]
    total_ax = fig.axes[0]
    assert [line.get_label() for line in total_ax.get_lines()] == ["train", "val", "best (epoch 3)"]
    assert_saved(plots.save_figure(fig, str(tmp_path / "curves")), tmp_path, "curves")
    empty = plots.save_figure(plots.training_curves_plot([]), str(tmp_path / "empty"), formats=("png",))
    assert (tmp_path / "empty.png").stat().st_size > 1000 and empty == [str(tmp_path / "empty.png")]
