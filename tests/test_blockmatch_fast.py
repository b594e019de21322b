"""lmref.blockmatch's exact integer path (issue 14): integer-valued frames within the proven
bound take it; it equals the brute-force reference bit for bit (flow and cost, ties included)
for any banding / thread count; other frames keep the general exact path."""
import math

import numba
import numpy as np
import pytest

from lmref import blockmatch as B


def _tie_rich_frames(rng, shape, high, shift=(1, -1)):
    """Values in ``0..high-1`` (few levels: many exactly equal costs), the current frame a
    shifted copy with a flat patch (exact ties between many displacements)."""
    ref = rng.integers(0, high, shape).astype(np.float64)
    cur = np.roll(ref, shift, axis=(-2, -1))
    cur[..., 2:5, 3:6] = 0.0
    return ref, cur


def _assert_bitwise(got, want):
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[0].dtype == got[1].dtype == np.float64


def _path(ref, cur, b, channels="sum", boundary="zeros"):
    """The dtype the integer path would use for these frames (None: the general path)."""
    ref3, cur3, b, _, groups, _ = B._check_block_match(ref, cur, b, 0, channels, boundary)
    return B._integer_path_dtype(ref3, cur3, b, groups[0][1] - groups[0][0], boundary)


@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
@pytest.mark.parametrize("channels", B.CHANNEL_MODES)
@pytest.mark.parametrize("b", [1, 3, 5, 7])
@pytest.mark.parametrize("s", [0, 1, 3])
def test_integer_path_equals_reference_bitwise_on_tie_rich_frames(boundary, channels, b, s):
    rng = np.random.default_rng(100 * b + s)
    ref, cur = _tie_rich_frames(rng, (3, 9, 11), 4)
    assert _path(ref, cur, b, channels, boundary) == np.int32
    kw = {"channels": channels, "boundary": boundary}
    _assert_bitwise(B.block_match(ref, cur, b, s, **kw),
                    B._block_match_reference(ref, cur, b, s, **kw))


@pytest.mark.parametrize("channels", B.CHANNEL_MODES)
@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
@pytest.mark.parametrize("b,s", [(1, 2), (3, 1), (5, 2), (7, 4)])
def test_integer_path_on_2d_and_integer_dtype_frames(channels, boundary, b, s):
    rng = np.random.default_rng(b)
    ref, cur = _tie_rich_frames(rng, (10, 8), 3)
    kw = {"channels": channels, "boundary": boundary}
    want = B._block_match_reference(ref, cur, b, s, **kw)
    assert want[0].shape == (10, 8, 2)
    for dtype in (np.float64, np.uint8, np.int16, np.int64):
        _assert_bitwise(B.block_match(ref.astype(dtype), cur.astype(dtype), b, s, **kw), want)


@pytest.mark.parametrize("channels", B.CHANNEL_MODES)
@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
def test_integer_path_on_random_8bit_frames(channels, boundary):
    """Full-range 8-bit values, several sizes and search ranges against the reference."""
    rng = np.random.default_rng(8)
    for shape, b, s in [((2, 7, 9), 3, 2), ((1, 5, 6), 5, 3), ((3, 6, 4), 1, 1)]:
        ref = rng.integers(0, 256, shape).astype(np.uint8)
        cur = np.roll(ref, (1, 1), axis=(1, 2)) // 2 * 2  # ties where the low bit was 0
        kw = {"channels": channels, "boundary": boundary}
        assert _path(ref, cur, b, channels, boundary) == np.int32
        _assert_bitwise(B.block_match(ref, cur, b, s, **kw),
                        B._block_match_reference(ref, cur, b, s, **kw))


@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
def test_float64_integer_path_beyond_int32_equals_reference(boundary):
    """Integers too large for int32 sums but within 2^53 use float64 exact sums; the levels are
    multiples of 2^20 so that costs still tie exactly."""
    rng = np.random.default_rng(5)
    ref, cur = _tie_rich_frames(rng, (2, 8, 9), 3)
    ref, cur = ref * 2.0**20 - 2.0**20, cur * 2.0**20
    assert _path(ref, cur, 3, "sum", boundary) == np.float64
    for channels in B.CHANNEL_MODES:
        kw = {"channels": channels, "boundary": boundary}
        _assert_bitwise(B.block_match(ref, cur, 3, 2, **kw),
                        B._block_match_reference(ref, cur, 3, 2, **kw))


def test_replicate_shifts_large_values_into_int32():
    """With "replicate" the range counts, not the magnitude: values near 2^40 with a small
    range take the int32 path (after an exact common shift) and stay bitwise exact."""
    rng = np.random.default_rng(6)
    ref, cur = _tie_rich_frames(rng, (2, 7, 8), 4)
    ref, cur = ref + 2.0**40, cur + 2.0**40
    assert _path(ref, cur, 3, "sum", "replicate") == np.int32
    assert _path(ref, cur, 3, "sum", "zeros") is None  # the zero padding is 2^40 away
    for boundary in B.BM_BOUNDARIES:
        want = B._block_match_reference(ref, cur, 3, 2, boundary=boundary)
        got = B.block_match(ref, cur, 3, 2, boundary=boundary)
        np.testing.assert_array_equal(got[0], want[0])
        if boundary == "replicate":
            np.testing.assert_array_equal(got[1], want[1])


def _range_frames(d, shape=(6, 7)):
    """Integer frames whose range over both (0 included) is exactly ``d``."""
    ref = np.zeros(shape)
    cur = np.zeros(shape)
    ref[..., 1, 2] = d
    cur[..., 3, 3] = d // 2
    return ref, cur


@pytest.mark.parametrize("b,group", [(1, 1), (3, 1), (3, 4), (31, 3)])
def test_the_bound_picks_the_path_at_its_edges(b, group):
    """``(b^2 + 1) C D^2 < 2^31`` -> int32, ``< 2^53`` -> float64, beyond -> general path."""
    shape = (group, 6, 7)

    def path(d):
        ref, cur = _range_frames(d, shape)
        return _path(ref, cur, b, "sum", "zeros")

    factor = (b * b + 1) * group
    d32 = math.isqrt((2**31 - 1) // factor)  # largest D with factor D^2 < 2^31
    d53 = math.isqrt((2**53 - 1) // factor)
    assert factor * d32**2 < 2**31 <= factor * (d32 + 1) ** 2
    assert path(d32) == np.int32 and path(d32 + 1) == np.float64
    assert path(d53) == np.float64 and path(d53 + 1) is None
    # 8-bit frames, seed 001's 31 x 31 blocks, 3 channels summed: the int32 path
    if (b, group) == (31, 3):
        assert path(255) == np.int32


def test_frames_beyond_the_bound_take_the_general_exact_path():
    """One integer too many (D^2 (b^2 + 1) just reaching 2^53) or one fraction: the general
    path decides (its flow equals the reference's; costs within its stated 1e-13)."""
    rng = np.random.default_rng(11)
    d = math.isqrt((2**53 - 1) // 10) + 1
    ref = rng.integers(0, 3, (7, 8)).astype(np.float64) * (d // 2)
    cur = np.roll(ref, 1, axis=1)
    ref[0, 0] = d
    frac = rng.integers(0, 3, (7, 8)).astype(np.float64)
    frac[2, 2] = 0.5
    for r, c in [(ref, cur), (frac, np.roll(frac, 1, axis=0))]:
        assert _path(r, c, 3) is None
        got, want = B.block_match(r, c, 3, 2), B._block_match_reference(r, c, 3, 2)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("channels", B.CHANNEL_MODES)
@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
def test_integer_path_is_independent_of_threads_and_bands(monkeypatch, channels, boundary):
    """Bands of rows follow the thread count; exact sums make every banding give the same
    bits (band counts beyond this machine's threads are forced through the thread query)."""
    rng = np.random.default_rng(9)
    ref, cur = _tie_rich_frames(rng, (2, 13, 10), 3)
    kw = {"channels": channels, "boundary": boundary}
    want = B._block_match_reference(ref, cur, 5, 3, **kw)
    before = numba.get_num_threads()
    try:
        for n in sorted({1, 2, before}):
            numba.set_num_threads(n)
            _assert_bitwise(B.block_match(ref, cur, 5, 3, **kw), want)
    finally:
        numba.set_num_threads(before)
    for bands in (3, 7, 13, 40):
        monkeypatch.setattr(numba, "get_num_threads", lambda bands=bands: bands)
        _assert_bitwise(B.block_match(ref, cur, 5, 3, **kw), want)


def test_value_range_is_one_exact_pass():
    x = np.array([3.0, -2.0, 7.0, 0.0])
    assert B._value_range(x) == (-2.0, 7.0, True)
    x[1] = -2.5
    assert B._value_range(x) == (-2.5, 7.0, False)
    assert B._value_range(np.array([2.0**60, -(2.0**60)]))[2]
