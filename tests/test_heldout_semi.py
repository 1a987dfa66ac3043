"""Semi-supervised recipes of the held-out benchmark (benchmarks/heldout_semi.py): the graph's algebra, and that the
recipes run through the harness with a label fraction."""
import json

import numpy as np

from benchmarks import heldout
from benchmarks import heldout_semi as S


def _line(n):
    x = np.arange(n, dtype=float)
    return np.abs(x[:, None] - x[None, :])   # points on a line, equally spaced


def test_harmonic_keeps_labels_and_interpolates_between_them():
    d = _line(7)
    values, _ = S.harmonic(d, np.array([0, 6]), np.array([[0.0], [6.0]]), k=1)
    # a chain with equal weights: the harmonic function is linear between the two labelled ends
    np.testing.assert_allclose(values[:, 0], np.arange(7.0), atol=1e-4)


def test_harmonic_of_classes_is_a_distribution():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 0.3, (10, 2)), rng.normal(5, 0.3, (10, 2))])
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    onehot = np.array([[1.0, 0.0], [0.0, 1.0]])
    values, scale = S.harmonic(d, np.array([0, 10]), onehot, k=3)
    np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-4)
    assert (values[:10, 0] > 0.9).all() and (values[10:, 1] > 0.9).all()
    # a new point near the second cluster takes its class
    new = np.array([[5.1, 4.9]])
    cross = np.linalg.norm(new[:, None] - pts[None], axis=-1)
    assert S.extend(values, scale, cross, 3)[0].argmax() == 1


def test_unreachable_nodes_take_the_labelled_mean():
    # two components; only the first holds labels
    d = np.full((6, 6), 100.0)
    d[:3, :3] = _line(3)
    d[3:, 3:] = _line(3)
    values, _ = S.harmonic(d, np.array([0, 2]), np.array([[1.0], [3.0]]), k=1)
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values[3:, 0], 2.0, atol=1e-3)


def test_semi_supervised_recipes_run_with_a_label_fraction(tmp_path):
    heldout.main(["--quick", "--tasks", "keyboard-subject", "mp-days", "--models", "graph", "aam-graph",
                  "rf500-rel+self", "--label-fractions", "0.5", "1.0", "--out", str(tmp_path), "--no-docs",
                  "--strict"])
    with open(tmp_path / "results.json") as fh:
        tasks = json.load(fh)["tasks"]
    for name, metric in (("keyboard-subject", "accuracy"), ("mp-days", "mae")):
        for fraction in ("0.5", "1"):
            for model in ("graph", "aam-graph", "rf500-rel+self"):
                summary = tasks[name]["results"][fraction][model]["summary"]
                assert summary["unscored"] == 0 and summary[metric]["mean"] is not None
    # the self-trained forest pseudo-labels the unlabelled half, and has nothing to label with every label
    timing = tasks["mp-days"]["timing"]
    assert all(i["info"]["pseudo_labelled"] > 0 for i in timing["rf500-rel+self@0.5"])
    assert all(i["info"]["pseudo_labelled"] == 0 for i in timing["rf500-rel+self@1"])
