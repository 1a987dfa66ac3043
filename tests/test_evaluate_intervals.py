"""Intervals on every score `evaluate` shows, and the paired comparison of two models."""
import numpy as np
import pandas as pd
import pytest
import qiime2

from aam.evaluation.permutation import paired_permutation_p
from aam.evaluation.stats import Scored


def test_the_permutation_p_value_is_small_for_a_clear_difference_and_one_for_a_tie():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=60)
    good = Scored(truth, truth + rng.normal(scale=0.1, size=60))
    bad = Scored(truth, truth + rng.normal(scale=2.0, size=60))
    assert paired_permutation_p("mae", good, bad, n_resamples=500) < 0.01
    assert paired_permutation_p("mae", good, good, n_resamples=200) == 1.0
    # two subjects only: however large the difference, 2^2 swaps cannot make it rare
    groups = np.repeat(["a", "b"], 30)
    assert paired_permutation_p("mae", good, bad, groups, n_resamples=500) > 0.2


def _column(values, name, numeric):
    series = pd.Series(values, index=pd.Index([f"s{i}" for i in range(len(values))], name="id"), name=name)
    return (qiime2.NumericMetadataColumn if numeric else qiime2.CategoricalMetadataColumn)(series)


def test_evaluate_writes_intervals_and_a_paired_comparison_over_groups(tmp_path):
    from q2_aam._visualizers import evaluate
    rng = np.random.default_rng(1)
    truth = rng.uniform(0, 24, size=40)
    ids = [f"s{i}" for i in range(40)]
    close = pd.Series(truth + rng.normal(scale=1.0, size=40), index=ids)
    far = pd.Series(truth + rng.normal(scale=6.0, size=40), index=ids)
    subjects = _column([f"subject{i // 4}" for i in range(40)], "subject", False)
    evaluate(str(tmp_path), close, _column(truth, "month", True), other_predictions=far, name="AAM",
             other_name="forest", group=subjects)
    intervals = pd.read_csv(tmp_path / "intervals.tsv", sep="\t")
    assert set(intervals["model"]) == {"AAM", "forest"} and (intervals["95% low"] <= intervals["value"]).all()
    comparison = pd.read_csv(tmp_path / "comparison.tsv", sep="\t").set_index("metric")
    mae = comparison.loc[comparison.index.str.contains("MAE|absolute", case=False)].iloc[0]
    assert mae["AAM - forest"] < 0 and mae["95% high"] < 0 and mae["verdict"] == "AAM ahead"
    assert mae["permutation p"] < 0.05
    html = (tmp_path / "index.html").read_text()
    assert "95% intervals" in html and "whole groups of &#39;subject&#39;" in html


def test_a_group_column_must_cover_every_scored_sample(tmp_path):
    from aam.errors import AAMInputError
    from q2_aam._visualizers import evaluate
    truth = np.arange(8, dtype=float)
    ids = [f"s{i}" for i in range(8)]
    partial = qiime2.CategoricalMetadataColumn(pd.Series(["a", "b", "a", "b"], name="subject",
                                                         index=pd.Index(ids[:4], name="id")))
    with pytest.raises(AAMInputError, match="'subject' has no value for 4 scored sample"):
        evaluate(str(tmp_path), pd.Series(truth, index=ids), _column(truth, "month", True), group=partial)
