import numpy as np
import pytest

from lmref.testing import assert_close, compare, gradcheck, ulp_distance


def test_compare_reports_border_only(rng):
    a = rng.standard_normal((2, 3, 6, 6))
    b = a.copy()
    b[..., 0, :] += 1
    rep = compare(b, a)
    assert not rep.ok and rep.n_mismatch == 2 * 3 * 6
    assert "only on the border" in rep.message
    assert rep.worst_index[2] == 0


def test_compare_spread_and_shift(rng):
    a = rng.standard_normal((8, 9))
    rep = compare(np.roll(a, 1, axis=-1), a)
    assert "spread" in rep.message and "shifted by +1" in rep.message


def test_compare_exact_and_shape_mismatch(rng):
    a = rng.standard_normal((4, 5))
    assert compare(a, a.copy()).ok
    rep = compare(a, a.T)
    assert not rep.ok and "shape mismatch" in rep.message


def test_float32_tolerance_is_looser(rng):
    a = rng.standard_normal(100)
    b32 = a.astype(np.float32)
    assert compare(b32, a).ok
    with pytest.raises(AssertionError, match="mismatch"):
        assert_close(b32.astype(np.float64), a)


def test_nan_handling():
    a = np.array([1.0, np.nan])
    assert compare(a, a.copy()).ok
    assert not compare(a, a, equal_nan=False).ok
    assert not compare(np.array([1.0, 2.0]), a).ok


def test_ulp_distance():
    assert ulp_distance(1.0, np.nextafter(1.0, 2.0)) == 1
    assert ulp_distance(-0.0, 0.0) == 0


def test_gradcheck_catches_wrong_backward(rng):
    x = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 4))
    gradcheck(np.sin, [x], g, lambda go, x: (go * np.cos(x),))
    with pytest.raises(AssertionError, match="gradcheck failed"):
        gradcheck(np.sin, [x], g, lambda go, x: (go * np.cos(x) * 1.001,))
