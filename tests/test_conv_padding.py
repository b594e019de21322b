"""lmref._padding: every spelling of ``padding`` resolves to per-axis (before, after) pairs."""
import numpy as np
import pytest

from lmref._padding import onnx_pads, resolve_padding, same_pads


def _same(**kw):
    return dict(sizes=(7, 6), kernel_sizes=(4, 3), strides=(2, 1), dilations=(1, 2), **kw)


@pytest.mark.parametrize("padding,want", [
    (0, ((0, 0), (0, 0))),
    (3, ((3, 3), (3, 3))),
    ((1, 2), ((1, 1), (2, 2))),
    ([1, 2], ((1, 1), (2, 2))),
    (((1, 2), (3, 4)), ((1, 2), (3, 4))),
    ((1, (0, 2)), ((1, 1), (0, 2))),
    (np.array([1, 2]), ((1, 1), (2, 2))),
    (np.array([[1, 2], [3, 4]]), ((1, 2), (3, 4))),
    (np.int64(2), ((2, 2), (2, 2))),
    ("valid", ((0, 0), (0, 0))),
])
def test_spellings_2d(padding, want):
    got = resolve_padding(padding, 2)
    assert got == want
    assert all(type(v) is int for pair in got for v in pair)


def test_spellings_1d():
    assert resolve_padding(2, 1) == ((2, 2),)
    assert resolve_padding((2,), 1) == ((2, 2),)
    assert resolve_padding(((1, 3),), 1) == ((1, 3),)
    with pytest.raises(ValueError, match=r"padding.*\(\(1, 3\),\)"):
        resolve_padding((1, 3), 1)  # a bare pair is ambiguous for 1-D: the message says how


def test_same_upper_and_lower_split_the_odd_total_on_opposite_sides():
    # height: 7 / stride 2 -> 4 rows, total (4-1)*2 + 3 + 1 - 7 = 3; width: total (3-1)*2 = 4
    assert resolve_padding("same", 2, **_same()) == ((1, 2), (2, 2))
    assert resolve_padding("same_upper", 2, **_same()) == ((1, 2), (2, 2))
    assert resolve_padding("same_lower", 2, **_same()) == ((2, 1), (2, 2))
    assert same_pads(7, 4, 2) == (1, 2) and same_pads(7, 4, 2, extra="before") == (2, 1)
    assert same_pads(5, 1, 3) == (0, 0)  # never negative


def test_same_output_size_is_ceil_of_size_over_stride():
    for n in range(1, 12):
        for k in range(1, 5):
            for s in range(1, 5):
                for d in (1, 2):
                    for extra in ("after", "before"):
                        b, a = same_pads(n, k, s, d, extra=extra)
                        span = (k - 1) * d + 1
                        if n + b + a >= span:
                            assert (n + b + a - span) // s + 1 == -(-n // s)
                        assert abs(b - a) <= 1


def test_huge_values_with_maximum_none_stay_exact_python_ints():
    assert resolve_padding(2**70, 1, maximum=None) == ((2**70, 2**70),)
    with pytest.raises(ValueError, match=r"padding must be <= "):
        resolve_padding(2**70, 1)


@pytest.mark.parametrize("padding,exc,match", [
    ("full", ValueError, r"padding must be .*got 'full'"),
    (1.5, TypeError, r"padding must be an integer, got float 1.5"),
    (-1, ValueError, r"padding must be >= 0, got -1"),
    ((1, -2), ValueError, r"padding\[1\] must be >= 0"),
    (((1, 2, 3), 1), ValueError, r"padding\[0\] must be an int or a \(before, after\) pair"),
    (((1, 2.5), 1), TypeError, r"padding\[0\]\[1\] must be an integer"),
    ((1, 2, 3), ValueError, r"padding must be .*2 entries .*got 3"),
    (None, TypeError, r"padding must be .*got NoneType"),
    ((1, "a"), TypeError, r"padding\[1\] must be an int or a \(before, after\) pair"),
    (np.zeros((2, 2, 2), int), ValueError, r"padding must be .*shape \(2,\) or \(2, 2\)"),
    (True, TypeError, r"padding must be"),
])
def test_bad_padding_names_the_argument(padding, exc, match):
    with pytest.raises(exc, match=match):
        resolve_padding(padding, 2, **_same())


def test_other_name_and_restricted_strings():
    with pytest.raises(ValueError, match=r"pool padding must be one of \('valid',\)"):
        resolve_padding("same", 2, name="pool padding", strings=("valid",))


def test_onnx_pads_are_all_begins_then_all_ends():
    assert onnx_pads([1, 2, 3, 4], 2) == ((1, 3), (2, 4))
    assert onnx_pads([0, 5], 1) == ((0, 5),)
    with pytest.raises(ValueError, match="2 \\* 2 entries"):
        onnx_pads([1, 2], 2)
