"""lmref.motion: warps, motion matrices, motion models, feature transfer (Theorem 2) and noise
propagation (Theorem 3) of seeds 000 and 001."""
import math

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings

from lmref import motion as M
from lmref.peers import run_peer, torch_available
from lmref.testing import assert_close, gradcheck
from lmref.testing import strategies as S

MODES = M.MODES
BOUNDARIES = M.BOUNDARIES
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
needs_torch = pytest.mark.skipif(not torch_available(),
                                 reason="PyTorch (the cross-check peer) is not installed")


def _fractional_flow(rng, shape, lo=0.15, hi=0.85, reach=2):
    """Flow whose sample positions stay >= 0.15 px from integers (bilinear kinks) and
    half-integers +- 0.35 (nearest ties) are avoided by lo/hi choice of the caller."""
    whole = rng.integers(-reach, reach + 1, size=shape + (2,)).astype(np.float64)
    return whole + rng.uniform(lo, hi, size=shape + (2,))


def _away_from_half(rng, shape, reach=2):
    frac = rng.choice([0.1, 0.3, 0.7, 0.9], size=shape + (2,)) + rng.uniform(-0.05, 0.05,
                                                                             shape + (2,))
    return rng.integers(-reach, reach + 1, size=shape + (2,)) + frac


def _apply(matrix, x):
    return (matrix @ x.reshape(-1)).reshape(x.shape)


# --------------------------------------------------------------------------- forward warp

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("layout", ["hw", "chw", "nchw_shared", "nchw_batched"])
def test_warp_equals_plain_loop_reference(rng, mode, boundary, layout):
    H, W = 5, 7
    x = {"hw": (H, W), "chw": (3, H, W), "nchw_shared": (2, 3, H, W),
         "nchw_batched": (2, 3, H, W)}[layout]
    x = rng.standard_normal(x)
    fshape = (2, H, W) if layout == "nchw_batched" else (H, W)
    # mixes fractional, integer, half-integer and far-outside positions
    flow = rng.uniform(-4, 4, size=fshape + (2,))
    flow[..., 0, :] = np.round(flow[..., 0, :])
    flow[..., 1, :] = np.round(flow[..., 1, :] * 2) / 2
    flow[..., 2, 0, :] = (1e6, -3e9)
    out = M.warp(x, flow, mode, boundary)
    assert out.shape == x.shape and out.dtype == np.float64
    assert_close(out, M._warp_reference(x, flow, mode, boundary))


@SETTINGS
@given(S.warp_args(avoid_integer=False))
def test_warp_property_reference_and_matrix(case):
    (x, flow), kw = case
    out = M.warp(x, flow, **kw)
    assert_close(out, M._warp_reference(x, flow, **kw))
    if flow.ndim == 3:
        mat = M.motion_matrix(flow, channels=x.shape[0], **kw)
        assert_close(_apply(mat, x), out)


@SETTINGS
@given(S.warp_args(avoid_integer=False, max_size=5))  # the reference probes every pixel
def test_warp_backward_property_reference(case):
    (x, flow), kw = case
    g = np.random.default_rng(x.size).standard_normal(x.shape)
    for fast, ref in zip(M.warp_backward(g, x, flow, **kw),
                         M._warp_backward_reference(g, x, flow, **kw)):
        assert_close(fast, ref)


def test_warp_accepts_float32_and_int_and_lists(rng):
    x = rng.integers(-5, 5, size=(2, 4, 4))
    flow = rng.uniform(-1, 1, size=(4, 4, 2)).astype(np.float32)
    out = M.warp(x, flow)
    assert out.dtype == np.float64
    assert_close(out, M.warp(x.astype(np.float64), flow.astype(np.float64)))
    assert_close(M.warp(x.tolist(), flow.tolist()), out)


@pytest.mark.parametrize("shift", [(0, 0), (1, 0), (0, -2), (3, 2), (-7, 5)])
@pytest.mark.parametrize("mode", MODES)
def test_integer_flow_wrap_is_np_roll(rng, shift, mode):
    x = rng.standard_normal((2, 3, 5, 6))
    dx, dy = shift
    flow = np.zeros((5, 6, 2))
    flow[..., 0], flow[..., 1] = dx, dy
    # out[y, x] = src[y + dy, x + dx]  ->  np.roll by (-dy, -dx)
    np.testing.assert_array_equal(M.warp(x, flow, mode, "wrap"),
                                  np.roll(x, (-dy, -dx), axis=(-2, -1)))


def test_integer_flow_zeros_and_border_shift(rng):
    x = rng.standard_normal((4, 5))
    flow = np.zeros((4, 5, 2))
    flow[..., 0] = 2.0
    zeros = M.warp(x, flow, boundary="zeros")
    np.testing.assert_array_equal(zeros[:, :3], x[:, 2:])
    np.testing.assert_array_equal(zeros[:, 3:], 0.0)
    border = M.warp(x, flow, boundary="border")
    np.testing.assert_array_equal(border[:, 3:], np.repeat(x[:, -1:], 2, axis=1))


def test_integer_flow_does_not_read_zero_weight_neighbours():
    x = np.array([[1.0, np.inf, 3.0], [4.0, 5.0, np.nan]])
    flow = np.zeros((2, 3, 2))
    out = M.warp(x, flow)
    np.testing.assert_array_equal(out, x)  # inf and NaN stay where they are, nothing spreads
    mat = M.motion_matrix(flow)
    np.testing.assert_array_equal(_apply(mat, x), x)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_half_pixel_bilinear_is_the_mean(rng, boundary):
    x = rng.standard_normal((6, 6))
    flow = np.full((6, 6, 2), 0.5)
    out = M.warp(x, flow, boundary=boundary)
    # interior: mean of the 2x2 block below-right
    assert_close(out[:-1, :-1], 0.25 * (x[:-1, :-1] + x[:-1, 1:] + x[1:, :-1] + x[1:, 1:]))


def test_nearest_rounds_half_up_translation_equivariant():
    x = np.arange(12.0).reshape(2, 6)
    flow = np.zeros((2, 6, 2))
    flow[..., 0] = 0.5
    # floor(x + 0.5 + 0.5) = x + 1 everywhere (half to even would alternate 0 and +1)
    np.testing.assert_array_equal(M.warp(x, flow, "nearest", "wrap"), np.roll(x, -1, axis=1))
    flow[..., 0] = -0.5
    np.testing.assert_array_equal(M.warp(x, flow, "nearest", "wrap"), x)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("nf", [1, 2])
def test_bilinear_warp_is_the_reference_bit_for_bit(rng, boundary, nf):
    """The forward kernel's two samplings (interior cells with precomputed corner weights;
    the general taps elsewhere) give the reference's bits: rows of interior cells only (the
    branch-free loop), mixed rows (exact pixels, near and outside the frame, non-finite flow),
    and a source with signed zeros and infinities (a zero weight times inf is NaN in both)."""
    H, W = 9, 11
    x = rng.standard_normal((2, 3, H, W))
    x[0, 0, 4, :] = -0.0
    x[1, 2, 5, 5] = np.inf
    x[0, 1, 3, 2] = -np.inf
    flow = rng.uniform(-3.0, 3.0, size=(nf, H, W, 2))
    # rows 2..6: interior cells only (fractions in (0, 1), corners inside)
    cols, rows = np.meshgrid(np.arange(W), np.arange(H))
    flow[:, 2:7, :, 0] = (rng.uniform(0.1, W - 1.1, size=(nf, 5, W)) - cols[2:7])
    flow[:, 2:7, :, 1] = (rng.uniform(0.1, H - 1.1, size=(nf, 5, W)) - rows[2:7])
    flow[:, 7, 3] = (1.0, -2.0)  # an exact pixel
    flow[:, 8, 4] = (np.nan, 0.0)
    flow[:, 0, 5] = (0.5, 0.0)  # one fraction 0, the other not: the general taps
    flow[:, 1, 1] = (1e300, -1e300)
    out = M.warp(x if nf == 2 else x[:1], flow, "bilinear", boundary)
    _same_bits(out, M._warp_reference(x if nf == 2 else x[:1], flow, "bilinear", boundary))
    assert np.isnan(out).any()


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
def test_positions_one_ulp_around_the_frame_edges(rng, mode, boundary):
    H, W = 3, 5
    x = rng.standard_normal((H, W))
    edges = [-1.0, -0.5, 0.0, W - 1.0, W - 0.5, float(W)]
    pos = np.array([np.nextafter(e, d) for e in edges for d in (-np.inf, 0.0 * e, np.inf)])
    flow = np.zeros((H, W, 2))
    flow[..., 0] = pos[:H * W].reshape(H, W) - np.arange(W)  # sample x-positions near edges
    flow[..., 1] = rng.choice([-0.5, 0.0, H - 1.0, H - 0.5], size=(H, W)) - np.arange(H)[:, None]
    out = M.warp(x, flow, mode, boundary)
    assert_close(out, M._warp_reference(x, flow, mode, boundary))
    assert_close(_apply(M.motion_matrix(flow, mode, boundary), x), out)
    # inside the frame <=> the zero boundary and the clamp read exactly the same taps
    rows_zeros = M.motion_matrix(flow, mode, "zeros").toarray()
    rows_border = M.motion_matrix(flow, mode, "border").toarray()
    inside = (rows_zeros == rows_border).all(axis=1).reshape(H, W)
    assert inside.any() and not inside.all()
    np.testing.assert_array_equal(M.valid_mask(flow, mode=mode), inside)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
def test_size_one_axes(rng, mode, boundary):
    x = rng.standard_normal((2, 1, 4))
    flow = rng.uniform(-2, 2, size=(1, 4, 2))
    assert_close(M.warp(x, flow, mode, boundary), M._warp_reference(x, flow, mode, boundary))
    mat = M.motion_matrix(flow, mode, boundary, channels=2)
    assert_close(_apply(mat, x), M.warp(x, flow, mode, boundary))


# --------------------------------------------------------------------------- non-finite flow

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_flow_gives_nan_pixel_only(rng, mode, boundary, bad):
    x = rng.standard_normal((2, 3, 4, 5))
    flow = _away_from_half(rng, (4, 5))
    clean = M.warp(x, flow, mode, boundary)
    flow[1, 2, 0] = bad
    out = M.warp(x, flow, mode, boundary)
    assert np.isnan(out[:, :, 1, 2]).all()
    keep = np.ones((4, 5), bool)
    keep[1, 2] = False
    np.testing.assert_array_equal(out[:, :, keep], clean[:, :, keep])
    assert_close(out, M._warp_reference(x, flow, mode, boundary))
    g = rng.standard_normal(x.shape)
    gx, gf = M.warp_backward(g, x, flow, mode, boundary)
    assert np.isfinite(gx).all()
    assert np.isnan(gf[1, 2]).all() and np.isfinite(np.delete(gf.reshape(-1, 2), 7, 0)).all()
    rx, rf = M._warp_backward_reference(g, x, flow, mode, boundary)
    assert_close(gx, rx)
    assert_close(gf, rf)
    mat = M.motion_matrix(flow, mode, boundary, channels=3)
    assert_close(_apply(mat, x[0]), out[0])


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_huge_flows_read_nothing_outside(rng, boundary):
    x = rng.standard_normal((3, 4))
    flow = np.zeros((3, 4, 2))
    flow[0, 0] = (1e300, 0.0)
    flow[0, 1] = (-1e300, 1e300)
    flow[1, 1] = (2.0**62, -(2.0**63))
    out = M.warp(x, flow, boundary=boundary)
    assert np.isfinite(out).all()
    assert_close(out, M._warp_reference(x, flow, boundary=boundary))
    if boundary == "zeros":
        assert out[0, 0] == out[0, 1] == out[1, 1] == 0.0
    if boundary == "border":
        assert out[0, 0] == x[0, -1] and out[0, 1] == x[-1, 0] and out[1, 1] == x[0, -1]


# --------------------------------------------------------------------------- backward

@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("layout", ["chw", "nchw_shared", "nchw_batched"])
def test_warp_backward_gradcheck(rng, boundary, layout):
    H, W = 4, 5
    x = rng.standard_normal((3, H, W) if layout == "chw" else (2, 3, H, W))
    flow = _fractional_flow(rng, (2, H, W) if layout == "nchw_batched" else (H, W))
    g = rng.standard_normal(x.shape)
    gradcheck(lambda a, f: M.warp(a, f, "bilinear", boundary), [x, flow], g,
              lambda go, a, f: M.warp_backward(go, a, f, "bilinear", boundary),
              eps=1e-6, rtol=1e-6, atol=1e-8, max_checks=None)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_warp_backward_equals_reference(rng, mode, boundary):
    x = rng.standard_normal((2, 2, 4, 5))
    flow = rng.uniform(-3, 3, size=(4, 5, 2))
    flow[0] = np.round(flow[0])  # integer positions: the right-sided convention
    g = rng.standard_normal(x.shape)
    gx, gf = M.warp_backward(g, x, flow, mode, boundary)
    rx, rf = M._warp_backward_reference(g, x, flow, mode, boundary)
    assert gf.shape == flow.shape and gx.shape == x.shape
    assert_close(gx, rx)
    assert_close(gf, rf)
    if mode == "nearest":
        assert (gf == 0).all()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_grad_x_is_transpose_of_motion_matrix(rng, boundary):
    x = rng.standard_normal((3, 4, 6))
    flow = rng.uniform(-3, 3, size=(4, 6, 2))
    g = rng.standard_normal(x.shape)
    mat = M.motion_matrix(flow, boundary=boundary, channels=3)
    gx, _ = M.warp_backward(g, x, flow, boundary=boundary)
    assert_close(gx, (mat.T @ g.ravel()).reshape(x.shape))


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_grad_flow_is_right_sided_at_kinks(rng, boundary):
    """At integer positions (and the border clamp points) grad_flow is the forward difference."""
    H, W = 4, 5
    x = rng.standard_normal((2, H, W))
    flow = rng.integers(-2, 3, size=(H, W, 2)).astype(np.float64)
    flow[:, 0, 0] = 0.0  # column 0 at p = 0 (border clamp point)
    flow[:, -1, 0] = 0.0  # last column at p = W - 1
    g = rng.standard_normal(x.shape)
    _, gf = M.warp_backward(g, x, flow, boundary=boundary)
    h = 2.0**-20  # exact in binary: the piecewise-linear sample's forward difference is exact
    base = np.sum(g * M.warp(x, flow, boundary=boundary))
    for y in range(H):
        for xx in range(W):
            for k in range(2):
                fp = flow.copy()
                fp[y, xx, k] += h
                right = (np.sum(g * M.warp(x, fp, boundary=boundary)) - base) / h
                assert abs(right - gf[y, xx, k]) < 1e-8, (y, xx, k, right, gf[y, xx, k])


def test_backward_independent_of_thread_count(rng):
    x = rng.standard_normal((2, 5, 9, 8))
    flow = rng.uniform(-3, 3, size=(9, 8, 2))
    g = rng.standard_normal(x.shape)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = M.warp_backward(g, x, flow)
        numba.set_num_threads(before)
        many = M.warp_backward(g, x, flow)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def _awkward_flow(rng, nf, H, W, scale):
    """Random flow with integer positions (kinks), far samples, a NaN and an inf pixel."""
    flow = rng.uniform(-scale, scale, size=(nf, H, W, 2))
    flow[:, :2] = np.round(flow[:, :2])
    flow[0, 0, 0, 0] = np.nan
    flow[-1, H - 1, W - 1, 1] = np.inf
    return flow


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_nearest_gather_path_bitwise(rng, boundary):
    """The nearest forward gathers through one index a pixel (not the bilinear table): the
    bits of the reference (signed zeros as the table path: 0.0 + value), NaN at non-finite
    flow, and on an integer flow the bits of the bilinear path."""
    x = rng.standard_normal((2, 3, 9, 8))
    x[0, 0, :2] = -0.0
    flow = _awkward_flow(rng, 2, 9, 8, 6.0)
    out = M.warp(x, flow, "nearest", boundary)
    np.testing.assert_array_equal(out, M._warp_reference(x, flow, "nearest", boundary))
    assert np.isnan(out[0, :, 0, 0]).all() and np.isnan(out[1, :, -1, -1]).all()
    whole = np.round(rng.uniform(-3, 3, (2, 9, 8, 2)))
    near, bil = M.warp(x, whole, "nearest", boundary), M.warp(x, whole, "bilinear", boundary)
    np.testing.assert_array_equal(near, bil)
    assert (np.signbit(near) == np.signbit(bil)).all()


def _same_bits(a, b):
    """Bitwise equal outside NaN (signed zeros included), NaN at the same places."""
    nan = np.isnan(a)
    np.testing.assert_array_equal(nan, np.isnan(b))
    np.testing.assert_array_equal(a[~nan].view(np.int64), b[~nan].view(np.int64))


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape,nf", [((2, 3, 9, 8), 2), ((3, 2, 7, 6), 1), ((2, 1, 5, 1), 2),
                                      ((1, 2, 1, 4), 1), ((1, 1, 1, 1), 1)])
def test_nearest_plane_gather_bitwise(rng, boundary, shape, nf):
    """The nearest kernel (index table of every flow plane, then one task a whole plane) gives
    the reference's bits: ties at .5 round up, out-of-frame and huge positions, NaN/inf flow,
    signed zeros (0.0 + value, as the table path), shared and batched flows; the same bits on
    1 thread and on all."""
    N, C, H, W = shape
    x = rng.standard_normal(shape)
    x.reshape(-1)[::3] = -0.0
    flow = _awkward_flow(rng, nf, H, W, max(H, W) + 2.0)
    flow[..., 0] += rng.choice([0.0, 0.5, -0.5], size=flow.shape[:-1])  # ties on both axes
    flow[..., 1] += rng.choice([0.0, 0.5, -0.5], size=flow.shape[:-1])
    flow.reshape(-1, 2)[1::5] = [1e300, -1e300]
    f = flow if nf > 1 else flow[0]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = M.warp(x, f, "nearest", boundary)
    finally:
        numba.set_num_threads(before)
    many = M.warp(x, f, "nearest", boundary)
    _same_bits(one, many)
    _same_bits(many, M._warp_reference(x, f, "nearest", boundary) + 0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape,nf", [((1, 3, 11, 9), 1), ((2, 3, 7, 6), 2), ((2, 1, 5, 1), 1),
                                      ((1, 2, 1, 4), 1)])
def test_banded_backward_equals_table_backward_bitwise(rng, mode, boundary, shape, nf):
    """The few-planes path (no sampling table, grad_x by bands of source rows) gives the bits
    of the table path for any band height, and matches the reference."""
    x = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    m, b = MODES.index(mode), BOUNDARIES.index(boundary)
    for scale in (0.6, 3.0, 40.0):
        flow = _awkward_flow(rng, nf, shape[2], shape[3], scale)
        tx, tf = M._warp_backward_tables(g, x, flow, m, b)
        for band in (1, 2, 3, shape[2], shape[2] + 5):
            bx, bf = M._warp_backward_bands(g, x, flow, m, b, band)
            np.testing.assert_array_equal(bx, tx)
            np.testing.assert_array_equal(bf, tf)
            assert (np.signbit(bx) == np.signbit(tx)).all()
        rx, rf = M._warp_backward_reference(g, x, flow, mode, boundary)
        assert_close(bx, rx)
        assert_close(bf, rf)
        assert np.isnan(bf[0, 0, 0]).all() and np.isnan(bf[-1, -1, -1]).all()


def _band_flows(rng, nf, H, W):
    """Flows that take every branch of the banded backward's tasks: fractional (interior cells
    and edges), integer (exact pixels, kinks), far out of the frame, inside but wrapping, a row
    all NaN (reaches no row), and mixed with NaN/inf pixels."""
    yield rng.uniform(-2.5, 2.5, size=(nf, H, W, 2))
    yield np.round(rng.uniform(-3, 3, size=(nf, H, W, 2)))
    yield rng.uniform(-3 * H, 3 * H, size=(nf, H, W, 2))
    yield rng.uniform(-0.4, 0.4, size=(nf, H, W, 2)) - np.array([0.0, 1.5])  # rows wrap at 0
    flow = rng.uniform(-1.5, 1.5, size=(nf, H, W, 2))
    flow[:, H // 2, :, 1] = np.nan
    yield flow
    yield _awkward_flow(rng, nf, H, W, 3.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("shape,nf", [((1, 3, 13, 10), 1), ((2, 2, 9, 7), 2), ((3, 1, 6, 5), 1)])
def test_band_tasks_equal_table_backward_bitwise(rng, mode, boundary, shape, nf):
    """The fused band tasks (grad_x rows and grad_flow rows of a band, straight from the
    flow) give the bits of the table path, signed zeros included, for every band height,
    with zeros, infs and NaNs in grad_out."""
    x = rng.standard_normal(shape)
    x[..., 0, :] = -0.0
    g = rng.standard_normal(shape)
    g[0, 0, 1, :2] = (-0.0, np.inf)
    m, b = MODES.index(mode), BOUNDARIES.index(boundary)
    for flow in _band_flows(rng, nf, shape[2], shape[3]):
        tx, tf = M._warp_backward_tables(g, x, flow, m, b)
        for band in (1, 2, 4, shape[2] // 2 + 1, shape[2], shape[2] + 3):
            bx, bf = M._warp_backward_bands(g, x, flow, m, b, band)
            np.testing.assert_array_equal(bx, tx)
            np.testing.assert_array_equal(bf, tf)
            assert (np.signbit(bx) == np.signbit(tx)).all()
            assert (np.signbit(bf) == np.signbit(tf)).all()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_rows_reached_bounds_every_tap(rng, boundary):
    """The cheap per-row bound of the band tasks contains every source row a tap of the row
    reads (the sampling table's corners), in both modes."""
    H, W = 11, 7
    for flow in _band_flows(rng, 1, H, W):
        for mode in (M._BILINEAR, M._NEAREST):
            ints = np.empty((H * W, M._N_INTS), np.int64)
            reals = np.empty((H * W, M._N_REALS))
            for y in range(H):
                M._fill_row_taps(flow, 0, y, mode, BOUNDARIES.index(boundary), ints, reals, y * W)
                lo, hi = M._rows_reached(flow[0], y, BOUNDARIES.index(boundary))
                rows = ints[y * W:(y + 1) * W, :4]
                read = rows[rows >= 0] // W
                if read.size:
                    assert lo <= read.min() and read.max() <= hi, (y, lo, hi, read)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_few_planes_backward_independent_of_thread_count(rng, mode, boundary):
    """One RGB frame (N * C < _BAND_MAX_PLANES: the banded path) is bit-identical on 1 thread
    and on many, NaN flow pixels included."""
    x = rng.standard_normal((1, 3, 37, 29))
    assert x.shape[0] * x.shape[1] < M._BAND_MAX_PLANES
    flow = _awkward_flow(rng, 1, 37, 29, 3.0)[0]
    g = rng.standard_normal(x.shape)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = M.warp_backward(g, x, flow, mode, boundary)
        numba.set_num_threads(before)
        many = M.warp_backward(g, x, flow, mode, boundary)
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
    rx, rf = M._warp_backward_reference(g, x, flow, mode, boundary)
    assert_close(one[0], rx)
    assert_close(one[1], rf)
    assert np.isnan(one[1][0, 0]).all()


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_batched_flow_backward_takes_bands_bitwise(rng, boundary, monkeypatch):
    """Many planes with a batched flow (N * C >= _BAND_MAX_PLANES) take the banded path, one
    band per flow plane: the bits of the table path on 1 thread and on many."""
    x = rng.standard_normal((3, 4, 11, 9))
    assert x.shape[0] * x.shape[1] >= M._BAND_MAX_PLANES
    flow = _awkward_flow(rng, 3, 11, 9, 3.0)
    g = rng.standard_normal(x.shape)
    tx, tf = M._warp_backward_tables(g, x, flow, M._BILINEAR, BOUNDARIES.index(boundary))
    monkeypatch.setattr(M, "_warp_backward_tables", None)  # not called
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = M.warp_backward(g, x, flow, "bilinear", boundary)
        numba.set_num_threads(before)
        many = M.warp_backward(g, x, flow, "bilinear", boundary)
    finally:
        numba.set_num_threads(before)
    for got in (one, many):
        np.testing.assert_array_equal(got[0], tx)
        np.testing.assert_array_equal(got[1], tf)


def test_grad_out_shape_is_checked(rng):
    x = rng.standard_normal((2, 4, 5))
    flow = np.zeros((4, 5, 2))
    with pytest.raises(ValueError, match="grad_out must have shape"):
        M.warp_backward(np.zeros((2, 5, 4)), x, flow)


# --------------------------------------------------------------------------- torch peer

@needs_torch
@pytest.mark.torch
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("batched", [False, True])
def test_bilinear_against_grid_sample(rng, torch, boundary, batched):
    from lmref.peers import torch_motion

    x = rng.standard_normal((2, 3, 5, 6))
    flow = _fractional_flow(rng, (2, 5, 6) if batched else (5, 6), reach=3)
    kw = {"mode": "bilinear", "boundary": boundary}
    g = rng.standard_normal(x.shape)
    theirs, (tx, tf) = run_peer(torch_motion.warp, (x, flow), kw, g)
    assert_close(M.warp(x, flow, **kw), theirs, rtol=1e-12, atol=1e-13)
    gx, gf = M.warp_backward(g, x, flow, **kw)
    assert_close(gx, tx, rtol=1e-12, atol=1e-13)
    assert_close(gf, tf, rtol=1e-10, atol=1e-12)


@needs_torch
@pytest.mark.torch
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_nearest_against_grid_sample_away_from_ties(rng, torch, boundary):
    from lmref.peers import torch_motion

    x = rng.standard_normal((3, 5, 6))
    flow = _away_from_half(rng, (5, 6), reach=3)
    kw = {"mode": "nearest", "boundary": boundary}
    np.testing.assert_array_equal(M.warp(x, flow, **kw), run_peer(torch_motion.warp, (x, flow), kw))


@needs_torch
@pytest.mark.torch
def test_flow_to_grid_is_align_corners_true(torch):
    from lmref.peers.torch_motion import flow_to_grid

    flow = torch.zeros(3, 5, 2, dtype=torch.float64)
    grid = flow_to_grid(flow)
    assert grid[0, 0].tolist() == [-1.0, -1.0] and grid[-1, -1].tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- motion matrix

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kind", ["fractional", "integer", "half", "far"])
def test_motion_matrix_equals_warp(rng, mode, boundary, kind):
    H, W, C = 5, 6, 3
    flow = {"fractional": lambda: rng.uniform(-2, 2, (H, W, 2)),
            "integer": lambda: rng.integers(-3, 4, (H, W, 2)).astype(float),
            "half": lambda: rng.integers(-6, 7, (H, W, 2)) / 2.0,
            "far": lambda: rng.uniform(-20, 20, (H, W, 2))}[kind]()
    x = rng.standard_normal((C, H, W))
    mat = M.motion_matrix(flow, mode, boundary, channels=C)
    assert isinstance(mat, sp.csr_array) and mat.shape == (C * H * W,) * 2
    assert mat.dtype == np.float64
    assert_close(_apply(mat, x), M.warp(x, flow, mode, boundary))
    # block diagonal: one copy per channel
    single = M.motion_matrix(flow, mode, boundary)
    assert_close(mat[:H * W, :H * W].toarray(), single.toarray())
    assert mat[:H * W, H * W:].nnz == 0
    if kind == "integer" or mode == "nearest":  # 0/1 selection matrix
        assert (mat.data == 1.0).all()
        assert (np.diff(mat.indptr) <= 1).all()


def _assert_permutation(mat):
    dense = mat.toarray()
    assert set(np.unique(dense)) <= {0.0, 1.0}
    assert (dense.sum(axis=0) == 1).all() and (dense.sum(axis=1) == 1).all()
    assert mat.nnz == mat.shape[0]


@pytest.mark.parametrize("mode", MODES)
def test_wrap_with_bijective_integer_flow_is_permutation(rng, mode):
    H, W = 4, 6
    flow = np.zeros((H, W, 2))
    flow[..., 0] = np.arange(H)[:, None] * 2 - 3  # each row shifted by its own amount
    flow[..., 1] = -1
    mat = M.motion_matrix(flow, mode, "wrap", channels=2)
    _assert_permutation(mat)
    flow[..., 0] = 5 * np.arange(W)[None, :]  # column map x -> 6x mod 6: not a bijection
    mat = M.motion_matrix(flow, mode, "wrap")
    assert (np.asarray(mat.sum(axis=1)) == 1).all()  # still a selection matrix...
    assert (np.asarray(mat.sum(axis=0)) != 1).any()  # ...but not a permutation


def test_zeros_integer_flow_is_a_partial_selection():
    flow = np.zeros((3, 4, 2))
    flow[..., 1] = 1.0
    mat = M.motion_matrix(flow)
    counts = np.diff(mat.indptr)
    assert (counts[:8] == 1).all() and (counts[8:] == 0).all()


def test_motion_matrix_bad_input(rng):
    with pytest.raises(ValueError, match="motion_matrix takes one flow"):
        M.motion_matrix(np.zeros((2, 3, 3, 2)))
    with pytest.raises(ValueError, match="channels must be >= 1"):
        M.motion_matrix(np.zeros((3, 3, 2)), channels=0)
    with pytest.raises(ValueError, match="boundary must be one of"):
        M.motion_matrix(np.zeros((3, 3, 2)), boundary="reflect")


# --------------------------------------------------------------------------- valid mask

def test_valid_mask_matches_warp_of_ones(rng):
    H, W = 6, 7
    flow = _fractional_flow(rng, (2, H, W), lo=0.05, hi=0.95, reach=3)
    flow[0, 0, 0] = (0.0, 0.0)  # exactly on the frame
    flow[0, H - 1, W - 1] = (0.0, 0.0)
    mask = M.valid_mask(flow, (2, 3, H, W))
    assert mask.shape == (2, H, W) and mask.dtype == bool
    ones = np.ones((2, 1, H, W))
    inside = np.isclose(M.warp(ones, flow, boundary="zeros")[:, 0], 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(mask, inside)
    assert mask[0, 0, 0] and mask[0, H - 1, W - 1]
    flow_n = _away_from_half(rng, (H, W), reach=3)
    mask_n = M.valid_mask(flow_n, mode="nearest")
    np.testing.assert_array_equal(mask_n, M.warp(np.ones((H, W)), flow_n, "nearest") == 1.0)


def test_valid_mask_nan_and_shape_errors():
    flow = np.zeros((3, 4, 2))
    flow[1, 1, 1] = np.nan
    mask = M.valid_mask(flow)
    assert not mask[1, 1] and mask.sum() == 11
    with pytest.raises(ValueError, match=r"does not end in the flow's spatial size"):
        M.valid_mask(flow, (4, 3))
    with pytest.raises(ValueError, match="shape must be a frame shape"):
        M.valid_mask(flow, 12)


# --------------------------------------------------------------------------- affine motion

def _closed_form_forward(params, c, p):
    """The documented forward map p' = R Shx Shy S (p - c) + c + t, written out by hand."""
    tx, ty = params["translation"]
    th = math.radians(params["rotation"])
    sx, sy = params["scale"]
    a = math.tan(math.radians(params["shear"][0]))
    b = math.tan(math.radians(params["shear"][1]))
    u, v = (p[0] - c[0]) * sx, (p[1] - c[1]) * sy  # scale
    u, v = u, v + b * u  # y-shear
    u, v = u + a * v, v  # x-shear
    u, v = math.cos(th) * u + math.sin(th) * v, -math.sin(th) * u + math.cos(th) * v
    return u + c[0] + tx, v + c[1] + ty


@pytest.mark.parametrize("seed", range(4))
def test_affine_flow_inverts_closed_form_motion(seed):
    rng = np.random.default_rng(seed)
    H, W = 9, 12
    params = {"translation": tuple(rng.uniform(-32, 32, 2)),  # seed 001 Fig. 6 ranges
              "rotation": rng.uniform(-10, 10), "scale": tuple(rng.uniform(0.95, 1.05, 2)),
              "shear": tuple(rng.uniform(-5, 5, 2))}
    centre = (rng.uniform(0, W), rng.uniform(0, H)) if seed % 2 else ((W - 1) / 2, (H - 1) / 2)
    flow = M.affine_flow((H, W), **params, center=centre if seed % 2 else None)
    assert flow.shape == (H, W, 2) and flow.dtype == np.float64
    for y in range(H):
        for x in range(W):
            src = (x + flow[y, x, 0], y + flow[y, x, 1])
            fx, fy = _closed_form_forward(params, centre, src)
            assert abs(fx - x) < 1e-9 and abs(fy - y) < 1e-9


@pytest.mark.parametrize("size", [5, 7, 6])
@pytest.mark.parametrize("angle,k", [(90, 1), (-90, -1), (180, 2), (270, 3), (450, 1)])
@pytest.mark.parametrize("mode", MODES)
def test_rotation_by_quarter_turns_is_np_rot90(rng, size, angle, k, mode):
    img = rng.standard_normal((2, size, size))
    flow = M.affine_flow((size, size), rotation=angle)
    assert (flow == np.round(flow)).all()
    np.testing.assert_array_equal(M.warp(img, flow, mode), np.rot90(img, k, axes=(-2, -1)))


def test_affine_translation_and_scale_closed_forms():
    flow = M.affine_flow((4, 5), translation=(2.5, -1.0))
    assert (flow[..., 0] == -2.5).all() and (flow[..., 1] == 1.0).all()  # content moves by +t
    flow = M.affine_flow((5, 5), scale=2.0)
    ys, xs = np.mgrid[0:5, 0:5]
    assert_close(flow[..., 0], (xs - 2) / 2 + 2 - xs)
    assert_close(flow[..., 1], (ys - 2) / 2 + 2 - ys)
    x = np.arange(5.0)[None, :].repeat(5, 0)
    assert_close(M.warp(x, M.affine_flow((5, 5), scale=(2.0, 1.0)))[:, 1:4], x[:, 1:4] / 2 + 1)


def test_affine_flow_bad_input():
    with pytest.raises(ValueError, match=r"shape must be \(H, W\)"):
        M.affine_flow((1, 4, 4))
    with pytest.raises(ValueError, match="scale must be non-zero"):
        M.affine_flow((4, 4), scale=(1.0, 0.0))
    with pytest.raises(ValueError, match="shear angles"):
        M.affine_flow((4, 4), shear=(90, 0))
    with pytest.raises(ValueError, match="translation must be a number or a pair"):
        M.affine_flow((4, 4), translation=(1, 2, 3))
    with pytest.raises(ValueError, match="rotation must be finite"):
        M.affine_flow((4, 4), rotation=np.nan)
    with pytest.raises(TypeError, match="translation.0. must be a real number"):
        M.affine_flow((4, 4), translation=("a", 1))


def _exact_affine_flow(shape, rotation, scale, shear):
    """The backward flow in exact rational arithmetic from the same float factors (cos, sin,
    tan), centre at the image centre, no translation."""
    from fractions import Fraction as Q
    H, W = shape
    c, s = M._cos_sin_degrees(rotation)
    a, b = (math.tan(math.radians(v)) for v in shear)
    mul = lambda p, q: [[p[i][0] * q[0][j] + p[i][1] * q[1][j] for j in (0, 1)] for i in (0, 1)]
    A = mul(mul(mul([[Q(c), Q(s)], [Q(-s), Q(c)]], [[Q(1), Q(a)], [Q(0), Q(1)]]),
                [[Q(1), Q(0)], [Q(b), Q(1)]]), [[Q(scale[0]), Q(0)], [Q(0), Q(scale[1])]])
    det = A[0][0] * A[1][1] - A[0][1] * A[1][0]
    inv = [[A[1][1] / det, -A[0][1] / det], [-A[1][0] / det, A[0][0] / det]]
    cx, cy = Q(W - 1, 2), Q(H - 1, 2)
    out = np.empty((H, W, 2))
    for y in range(H):
        for x in range(W):
            u, v = x - cx, y - cy
            out[y, x] = (float(inv[0][0] * u + inv[0][1] * v + cx - x),
                         float(inv[1][0] * u + inv[1][1] * v + cy - y))
    return out


@pytest.mark.parametrize("rotation, scale, shear", [
    (0.0, (1e-200, 1e-200), (0.0, 0.0)),  # det = 1e-400 underflowed to 0: NaN flow before
    (30.0, (1e-200, 3e-190), (10.0, -20.0)),
    (0.0, (1.0, 1.0), (89.9999999, -89.9999999)),  # det cancelled: NaN/inf flow before
    (-40.0, (0.7, 1.3), (89.99999, 89.99999)),
    (12.0, (1.1, 0.9), (5.0, -3.0)),  # an ordinary motion
])
def test_affine_flow_finite_where_the_inverse_is(rotation, scale, shear):
    """Issue 18 item 4c: the flow is A^-1 (p' - c) + c - p', finite whenever A^-1 is; the
    determinant sx*sy is never formed."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks either
        flow = M.affine_flow((3, 4), rotation=rotation, scale=scale, shear=shear)
    exact = _exact_affine_flow((3, 4), rotation, scale, shear)
    assert np.isfinite(flow).all()
    # a few roundings of the largest entry of A^-1 times |p' - c| <= 2: relative to max |flow|
    assert np.abs(flow - exact).max() <= 1e-15 * np.abs(exact).max()


@pytest.mark.parametrize("kw", [{"scale": 1e-310}, {"scale": (1e-300, 1.0),
                                                      "translation": (1e10, 0.0)}])
def test_affine_flow_beyond_the_float_range_is_refused(kw):
    with pytest.raises(ValueError, match="exceeds the float64 range.*scale="):
        M.affine_flow((3, 4), **kw)


def test_affine_inverse_inverts_the_forward_matrix():
    rng = np.random.default_rng(5)
    for _ in range(20):
        rot, sc, sh = rng.uniform(-180, 180), tuple(rng.uniform(0.5, 2, 2)), tuple(
            rng.uniform(-60, 60, 2))
        prod = M._affine_matrix(rot, sc, sh) @ M._affine_inverse(rot, sc, sh)
        assert np.abs(prod - np.eye(2)).max() < 1e-14


@pytest.mark.parametrize("shape", [(10**12 + 1, 4), (4, 10**12 + 1)])
def test_affine_flow_memory_guard_names_shape(shape):
    with pytest.raises(ValueError, match=r"^shape would need .*LMREF_MAX_BYTES"):
        M.affine_flow(shape, rotation=3.0)


def test_affine_flow_memory_guard_is_the_flow_size(monkeypatch):
    monkeypatch.setenv("LMREF_MAX_BYTES", str(8 * 2 * 4 * 5))
    assert M.affine_flow((4, 5)).shape == (4, 5, 2)
    with pytest.raises(ValueError, match=r"^shape would need .*\(4, 6, 2\)"):
        M.affine_flow((4, 6))


# --------------------------------------------------------------------------- block vectors

@pytest.mark.parametrize("block,shape", [(4, (8, 12)), ((2, 3), (5, 7)), (16, (5, 5))])
def test_block_vectors_to_flow(rng, block, shape):
    bh, bw = (block, block) if isinstance(block, int) else block
    nb = (-(-shape[0] // bh), -(-shape[1] // bw))
    vec = rng.standard_normal((2,) + nb + (2,))
    flow = M.block_vectors_to_flow(vec, block, shape)
    assert flow.shape == (2,) + shape + (2,)
    for y in range(shape[0]):
        for x in range(shape[1]):
            np.testing.assert_array_equal(flow[:, y, x], vec[:, y // bh, x // bw])
    np.testing.assert_array_equal(M.block_vectors_to_flow(vec[0], block, shape), flow[0])


def test_block_vectors_integer_vectors_move_blocks(rng):
    ref = rng.standard_normal((8, 8))
    vec = np.zeros((2, 2, 2))
    vec[0, 1] = (-4, 0)  # top-right block is predicted from the top-left block
    cur = M.warp(ref, M.block_vectors_to_flow(vec, 4, (8, 8)))
    np.testing.assert_array_equal(cur[:4, 4:], ref[:4, :4])
    np.testing.assert_array_equal(cur[4:], ref[4:])


def test_block_vectors_bad_input():
    with pytest.raises(ValueError, match=r"ceil\(H/bh\) x ceil\(W/bw\) = 2 x 3"):
        M.block_vectors_to_flow(np.zeros((2, 2, 2)), 4, (8, 9))
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        M.block_vectors_to_flow(np.zeros((2, 2, 2)), 0, (8, 8))
    with pytest.raises(ValueError, match="last axis of size 2"):
        M.block_vectors_to_flow(np.zeros((2, 2, 3)), 4, (8, 8))


@pytest.mark.parametrize("block", [10**9, 2**63, 10**30, (10**30, 2)])
def test_block_size_beyond_the_frame_is_one_block(rng, block):
    """Issue 18 item 7: a block taller/wider than the frame is one partial block (10**30 raised
    OverflowError; 10**9 repeated the vectors 10**9 times past any memory guard)."""
    bw = 2 if isinstance(block, tuple) else 7
    vec = rng.standard_normal((2, 1, -(-7 // bw), 2))
    flow = M.block_vectors_to_flow(vec, block, (3, 7))
    np.testing.assert_array_equal(flow, M.block_vectors_to_flow(vec, (3, bw), (3, 7)))
    assert flow.shape == (2, 3, 7, 2)


@pytest.mark.parametrize("stride", [10**9, 2**63, 10**30])
def test_scale_flow_stride_beyond_the_frame(rng, stride):
    flow = rng.standard_normal((3, 4, 2))
    out = M.scale_flow(flow, stride)
    np.testing.assert_array_equal(out, flow[:1, :1] / float(stride))
    with pytest.raises(ValueError, match="smaller than one pooling window"):
        M.scale_flow(flow, stride, sample="center")
    with pytest.raises(ValueError, match="stride must be below the float64 range"):
        M.scale_flow(flow, 10**400)


def test_motion_matrix_guard_names_channels():
    """Issue 18 item 9: the guard named the internal buffer ("the motion matrix")."""
    with pytest.raises(ValueError, match=r"^channels=1000000000000 .*would need .* GiB"):
        M.motion_matrix(np.zeros((3, 3, 2)), channels=10**12)


def test_valid_mask_checks_the_batch_like_warp():
    """Issue 18 item 10: a flow batch of 2 with shape (3, 1, 5, 5) was accepted."""
    flow = np.zeros((2, 5, 5, 2))
    with pytest.raises(ValueError, match=r"flow batch size 2 does not match the batch size 3"):
        M.valid_mask(flow, shape=(3, 1, 5, 5))
    with pytest.raises(ValueError, match=r"a batched flow .* needs shape \(N, C, H, W\)"):
        M.valid_mask(flow, shape=(1, 5, 5))
    for shape in [(2, 1, 5, 5), None]:  # what warp accepts
        assert M.valid_mask(flow, shape=shape).shape == (2, 5, 5)
    assert M.valid_mask(flow[:1], shape=(3, 1, 5, 5)).shape == (1, 5, 5)
    for shape in [(3, 1, 5, 5), (1, 5, 5)]:  # the same verdicts as warp on x of that shape
        with pytest.raises(ValueError):
            M.warp(np.zeros(shape), flow)


# --------------------------------------------------------------------------- scale flow

@pytest.mark.parametrize("stride", [1, 2, 3, 4, (2, 3)])
@pytest.mark.parametrize("sample", ["corner", "center"])
def test_scale_flow_of_affine_flow_is_affine_flow(stride, sample):
    """An affine motion seen on a stride-s grid is the same motion scaled (eq. 12)."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    H, W = 24, 25
    params = dict(rotation=7.0, scale=(1.03, 0.97), shear=(3.0, -2.0))
    if sh != sw:  # an anisotropic grid sees S^-1 A S: only diagonal A stays the same
        params = dict(scale=(1.03, 0.97))
    t = np.array([6.0, -9.0])
    c = np.array([11.3, 10.2])
    big = M.affine_flow((H, W), translation=t, center=c, **params)
    small = M.scale_flow(big, stride, sample=sample)
    off = np.array([0.0, 0.0]) if sample == "corner" else np.array([(sw - 1) / 2, (sh - 1) / 2])
    s = np.array([sw, sh], dtype=float)
    size = ((-(-H // sh), -(-W // sw)) if sample == "corner" else (H // sh, W // sw))
    expect = M.affine_flow(size, translation=t / s, center=(c - off) / s, **params)
    assert small.shape == size + (2,)
    assert_close(small, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("sample,k,pad", [("corner", 3, 1), ("center", 2, 0)])
def test_scale_flow_commutes_with_strided_conv(rng, sample, k, pad):
    """Eq. 12 on a real layer: a stride-2 circular conv (or 2x2 pooling-like conv) of a frame
    translated by a multiple of 2 is the feature map translated by v / 2."""
    from lmref.conv import conv2d

    x = rng.standard_normal((1, 2, 12, 10))
    w = rng.standard_normal((3, 2, k, k))
    flow = np.zeros((12, 10, 2))
    flow[..., 0], flow[..., 1] = 4.0, -6.0
    kw = {"stride": 2, "padding": pad, "padding_mode": "circular"}
    small = M.scale_flow(flow, 2, sample=sample)
    feat = conv2d(x, w, **kw)
    assert small.shape[:2] == feat.shape[2:]
    assert_close(conv2d(M.warp(x, flow, boundary="wrap"), w, **kw),
                 M.warp(feat, small, boundary="wrap"))


def test_scale_flow_translation_and_batch(rng):
    flow = np.broadcast_to(np.array([6.0, -4.0]), (3, 8, 10, 2))
    small = M.scale_flow(flow, 2)
    assert small.shape == (3, 4, 5, 2) and (small == np.array([3.0, -2.0])).all()
    assert M.scale_flow(flow, 3, sample="center").shape == (3, 2, 3, 2)
    assert M.scale_flow(flow, 3).shape == (3, 3, 4, 2)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        M.scale_flow(flow, 0)
    with pytest.raises(ValueError, match="smaller than one pooling window"):
        M.scale_flow(flow, 9, sample="center")
    with pytest.raises(ValueError, match="sample must be one of"):
        M.scale_flow(flow, 2, sample="middle")


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("x_shape,flow_shape,match", [
    ((4, 5), (4, 5, 3), "last axis of size 2"),
    ((4, 5), (4, 5), "flow must be 3 or 4-dimensional"),
    ((4, 5), (5, 4, 2), r"spatial size \(H, W\) = \(4, 5\)"),
    ((3, 4, 5), (2, 4, 5, 2), "batched flow"),
    ((3, 2, 4, 5), (2, 4, 5, 2), "batch size 2 does not match x batch size 3"),
    ((5,), (1, 5, 2), "x must be 2 or 3 or 4-dimensional"),
])
def test_warp_shape_errors(x_shape, flow_shape, match):
    with pytest.raises(ValueError, match=match):
        M.warp(np.zeros(x_shape), np.zeros(flow_shape))


def test_warp_dtype_and_option_errors():
    x = np.zeros((4, 5))
    with pytest.raises(TypeError, match="flow must have a real"):
        M.warp(x, np.zeros((4, 5, 2), bool))
    with pytest.raises(TypeError, match="flow must have a real"):
        M.warp(x, np.zeros((4, 5, 2), complex))
    with pytest.raises(TypeError, match="x must have a real"):
        M.warp(np.zeros((4, 5), complex), np.zeros((4, 5, 2)))
    with pytest.raises(ValueError, match="mode must be one of"):
        M.warp(x, np.zeros((4, 5, 2)), mode="bicubic")
    with pytest.raises(ValueError, match="boundary must be one of"):
        M.warp(x, np.zeros((4, 5, 2)), boundary="reflection")


def test_warp_does_not_modify_inputs(rng):
    x = rng.standard_normal((2, 4, 5))
    flow = rng.uniform(-2, 2, (4, 5, 2))
    flow[0, 0] = np.nan
    xc, fc = x.copy(), flow.copy()
    out = M.warp(x, flow)
    gx, gf = M.warp_backward(np.ones_like(x), x, flow)
    np.testing.assert_array_equal(x, xc)
    np.testing.assert_array_equal(flow, fc)
    for o in (out, gx, gf):
        assert not np.shares_memory(o, x) and not np.shares_memory(o, flow)


# --------------------------------------------------------------------------- Theorem 2

def _near_identity_kernel(rng, c_out, c_in, k, spread=0.6):
    """Kernel I + E with sum |E| < 1 per output: its block-circulant matrix is invertible
    (every DFT frequency gives a strictly diagonally dominant C_out x C_in block)."""
    w = rng.uniform(-1, 1, (c_out, c_in, k, k))
    w *= spread / np.abs(w).sum(axis=(1, 2, 3), keepdims=True)
    for o in range(min(c_out, c_in)):
        w[o, o, k // 2, k // 2] += 1.0
    return w


def _feature_pair(rng, conv_matrices, motion, shape):
    a = rng.standard_normal(shape).ravel()
    a_feat, b_feat = a, motion @ a
    for c in conv_matrices:
        a_feat, b_feat = c @ a_feat, c @ b_feat
    return a_feat, b_feat


@pytest.mark.parametrize("channels,k", [(1, 3), (2, 3), (3, 5)])
def test_feature_transfer_exact_for_circular_invertible_conv(rng, channels, k):
    from lmref.conv import conv2d, conv2d_matrix

    H, W = 6, 7
    w = _near_identity_kernel(rng, channels, channels, k)
    C = conv2d_matrix((channels, H, W), w, padding=k // 2, padding_mode="circular")
    x = rng.standard_normal((channels, H, W))
    assert_close(C @ x.ravel(), conv2d(x[None], w, padding=k // 2,
                                       padding_mode="circular").ravel())
    flow = rng.uniform(-2, 2, (H, W, 2))
    mot = M.motion_matrix(flow, boundary="wrap", channels=channels)
    res = M.feature_transfer(C, mot)
    T, residual = res
    assert T.shape == (channels * H * W,) * 2 and residual < 1e-12
    a_feat, b_feat = _feature_pair(rng, [C], mot, (channels, H, W))
    assert_close(T @ a_feat, b_feat, rtol=1e-9, atol=1e-9)
    # the seed's closed form T = C M C^-1 (column-vector form of C^-1 M C)
    Cd = C.toarray()
    assert_close(T, Cd @ mot.toarray() @ np.linalg.inv(Cd), rtol=1e-9, atol=1e-9)


def test_feature_transfer_exact_for_multi_layer_chain(rng):
    """The seed's Remark: a chain C2 C1 of invertible layers keeps T exact."""
    from lmref.conv import conv2d_matrix

    H, W = 5, 6
    w1 = _near_identity_kernel(rng, 2, 1, 3)  # 1 -> 2 channels: injective, still exact
    w2 = _near_identity_kernel(rng, 2, 2, 3)
    c1 = conv2d_matrix((1, H, W), w1, padding=1, padding_mode="circular")
    c2 = conv2d_matrix((2, H, W), w2, padding=1, padding_mode="circular")
    mot = M.motion_matrix(M.affine_flow((H, W), rotation=20, translation=(0.5, -1)),
                          boundary="wrap")
    T, residual = M.feature_transfer([c1, c2], mot)
    assert residual < 1e-12
    a_feat, b_feat = _feature_pair(rng, [c1, c2], mot, (1, H, W))
    assert_close(T @ a_feat, b_feat, rtol=1e-9, atol=1e-9)
    T_prod, _ = M.feature_transfer(c2 @ c1, mot)
    assert_close(T, T_prod, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("c_in,kw", [(1, {"stride": 2, "padding": 1, "padding_mode": "circular"}),
                                     (2, {"padding": 1, "padding_mode": "circular"}),
                                     (1, {"padding": 0})])
def test_feature_transfer_residual_when_information_is_lost(rng, c_in, kw):
    """Strides, 'valid' outputs and channel reduction make C non-injective: T is then only the
    least-squares map. (Zero padding alone keeps a generic square C invertible: T stays exact.)"""
    from lmref.conv import conv2d_matrix

    H, W = 6, 6
    w = rng.standard_normal((1, c_in, 3, 3))
    C = conv2d_matrix((c_in, H, W), w, **kw)
    mot = M.motion_matrix(rng.uniform(-2, 2, (H, W, 2)), boundary="zeros", channels=c_in)
    T, residual = M.feature_transfer(C, mot)
    Cd, Md = C.toarray(), mot.toarray()
    measured = np.linalg.norm(Cd @ Md - T @ Cd) / np.linalg.norm(Cd @ Md)
    assert residual == pytest.approx(measured, rel=1e-12) and residual > 1e-3
    # least squares: T minimises ||T C - C M||, so no perturbation does better
    for _ in range(3):
        T2 = T + 1e-3 * rng.standard_normal(T.shape)
        assert np.linalg.norm(T2 @ Cd - Cd @ Md) > np.linalg.norm(T @ Cd - Cd @ Md)


def test_feature_transfer_exact_with_zero_padding_when_c_is_invertible(rng):
    from lmref.conv import conv2d_matrix

    w = _near_identity_kernel(rng, 1, 1, 3)
    C = conv2d_matrix((1, 5, 6), w, padding=1)  # zero padding, square and invertible
    mot = M.motion_matrix(rng.uniform(-2, 2, (5, 6, 2)))
    T, residual = M.feature_transfer(C, mot)
    assert residual < 1e-12
    assert_close(T @ C.toarray(), C.toarray() @ mot.toarray(), rtol=1e-9, atol=1e-9)


def test_feature_transfer_identity_conv_gives_motion(rng):
    mot = M.motion_matrix(rng.uniform(-2, 2, (4, 5, 2)))
    T, residual = M.feature_transfer(np.eye(20), mot)
    assert_close(T, mot.toarray()) and residual < 1e-15
    T_list, _ = M.feature_transfer(np.eye(20).tolist(), mot)  # nested list = one matrix
    assert_close(T_list, T)


def test_feature_transfer_bad_input(rng):
    with pytest.raises(ValueError, match="motion_matrix must be square with side 6"):
        M.feature_transfer(np.eye(6), np.eye(5))
    with pytest.raises(ValueError, match=r"conv_matrix\[1\] has shape \(4, 4\) but the previous"):
        M.feature_transfer([np.eye(6), np.eye(4)], np.eye(6))
    with pytest.raises(ValueError, match="accepts sides up to max_size=4"):
        M.feature_transfer(sp.eye_array(5, format="csr"), sp.eye_array(5), max_size=4)
    with pytest.raises(ValueError, match="max_size=4096"):
        M.feature_transfer(sp.eye_array(5000, format="csr"), sp.eye_array(5000))
    with pytest.raises(ValueError, match="non-finite"):
        M.feature_transfer(np.full((2, 2), np.nan), np.eye(2))
    with pytest.raises(ValueError, match="non-empty sequence"):
        M.feature_transfer([], np.eye(2))


# --------------------------------------------------------------------------- Theorem 3

def test_unit_normal_weights_have_d_var_one():
    w = M.unit_normal_weights((32, 8, 3, 3), np.random.default_rng(0))
    assert w.shape == (32, 8, 3, 3) and w.dtype == np.float64
    d = 8 * 9
    assert d * w.var() == pytest.approx(1.0, abs=0.05)  # 2304 draws: sd of d Var ~ 0.03
    np.testing.assert_array_equal(w, M.unit_normal_weights((32, 8, 3, 3), 0))


def test_noise_gain_is_sum_of_squares_and_one_on_average(rng):
    w = rng.standard_normal((4, 3, 3, 3))
    assert_close(M.noise_gain(w), (w ** 2).sum(axis=(1, 2, 3)))
    gen = np.random.default_rng(7)
    gains = np.concatenate([M.noise_gain(M.unit_normal_weights((64, 16, 3, 3), gen))
                            for _ in range(50)])
    # E[sum W^2] = d Var = 1; sd of one gain sqrt(2/144) = 0.118, of the mean of 3200: 0.002
    assert gains.mean() == pytest.approx(1.0, abs=0.01)
    assert gains.std() == pytest.approx(math.sqrt(2 / 144), rel=0.1)


def test_noise_gain_counter_example_box_filter():
    """The seed's 'Var = sigma^2' needs d Var[C] = 1 in expectation only: a fixed box filter
    (all weights 1/9) has gain 1/9."""
    assert M.noise_gain(np.full((1, 1, 3, 3), 1 / 9))[0] == pytest.approx(1 / 9)


@pytest.mark.parametrize("kw", [{}, {"stride": 2}, {"dilation": 2}, {"groups": 2}])
def test_propagate_noise_matches_sigma2_times_gain(kw):
    gen = np.random.default_rng(3)
    groups = kw.get("groups", 1)
    w = M.unit_normal_weights((4, 4 // groups, 3, 3), gen)
    sigma = 0.7
    est = M.propagate_noise(w, sigma, (4, 16, 16), 300, gen, **kw)
    expect = sigma ** 2 * M.noise_gain(w)
    assert est.mean.shape == est.var.shape == (4,)
    # >= 7e3 correlated samples per channel: relative sd of the variance estimate ~ 3%
    assert_close(est.var, expect, rtol=0.12, atol=0)
    assert np.all(np.abs(est.mean) < 0.1 * sigma * np.sqrt(M.noise_gain(w)))


def test_propagate_noise_is_deterministic_and_checks_input():
    w = M.unit_normal_weights((2, 1, 3, 3), 0)
    a = M.propagate_noise(w, 1.0, (1, 8, 8), 10, 5)
    b = M.propagate_noise(w, 1.0, (1, 8, 8), 10, np.random.default_rng(5))
    np.testing.assert_array_equal(a.var, b.var)
    assert a.n == 10 * 36
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        M.propagate_noise(w, -1.0, (1, 8, 8), 10, 0)
    with pytest.raises(ValueError, match=r"shape must be the input shape \(C_in, H, W\)"):
        M.propagate_noise(w, 1.0, (8, 8), 10, 0)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator or an int seed"):
        M.propagate_noise(w, 1.0, (1, 8, 8), 10, None)
    with pytest.raises(ValueError, match="weight must be 4-dimensional"):
        M.noise_gain(np.zeros((3, 3)))


def test_propagate_noise_bounds_the_work_by_trials(monkeypatch):
    w = M.unit_normal_weights((2, 1, 3, 3), 0)
    with pytest.raises(ValueError, match=r"^trials=1000000000001 would draw .*LMREF_MAX_BYTES"):
        M.propagate_noise(w, 1.0, (1, 8, 8), 10**12 + 1, 0)
    # the limit is on the noise drawn in total (trials x C_in x H x W values), not per batch
    monkeypatch.setenv("LMREF_MAX_BYTES", str(8 * 10 * 64))
    assert M.propagate_noise(w, 1.0, (1, 8, 8), 10, 0, batch=2).n == 10 * 36
    with pytest.raises(ValueError, match=r"^trials=11 would draw .*\(11, 1, 8, 8\)"):
        M.propagate_noise(w, 1.0, (1, 8, 8), 11, 0, batch=2)
