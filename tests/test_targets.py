"""Regression target transforms and the output-option interactions."""
import numpy as np
import pytest

from aam.errors import AAMInputError
from aam.training.targets import TargetTransform, resolve_output_options


@pytest.mark.parametrize("normalize,log", [(True, False), (False, True), (True, True), (False, False)])
def test_round_trip(normalize, log):
    y = np.array([0.0, 3.0, 10.0, 600.0])
    t = TargetTransform(normalize, log).fit(y)
    z = t.transform(y)
    assert np.allclose(t.inverse(z), y, rtol=1e-5)
    back = TargetTransform.from_dict(t.to_dict())
    assert np.allclose(back.inverse(z), y, rtol=1e-5)
    if normalize:
        assert z.min() == pytest.approx(0.0) and z.max() == pytest.approx(1.0)


def test_normalization_uses_training_values_only():
    t = TargetTransform(True, False).fit([10.0, 20.0])
    assert t.transform([15.0, 30.0]).tolist() == pytest.approx([0.5, 2.0])


def test_constant_targets_do_not_divide_by_zero():
    t = TargetTransform(True, False).fit([5.0, 5.0])
    assert np.all(np.isfinite(t.transform([5.0, 6.0])))


def test_log_transform_rejects_values_at_or_below_minus_one():
    with pytest.raises(AAMInputError, match="> -1"):
        TargetTransform(False, True).fit([-1.0, 2.0])


def test_log_plus_normalize_turns_on_bounded_with_warning():
    with pytest.warns(UserWarning, match="bounded"):
        assert resolve_output_options(True, True, False, "none") == (True, "none")
    assert resolve_output_options(False, True, False, "none") == (False, "none")


def test_bounded_excludes_other_activations():
    with pytest.raises(AAMInputError, match="drop"):
        resolve_output_options(True, False, True, "relu")
