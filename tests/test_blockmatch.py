"""lmref.blockmatch: exhaustive SSD block matching, NRMSE/PSNR (eqs. 13-14) and latent-space
motion compensation (eq. 12) of seed 001."""
import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmref import blockmatch as B
from lmref.layers import feature_extractor
from lmref.motion import affine_flow, scale_flow, warp
from lmref.testing import assert_close

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def _smooth_image(rng, H, W, blobs=30):
    """A sum of Gaussian blobs: smooth, textured everywhere, no flat regions."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.zeros((H, W))
    for _ in range(blobs):
        cy, cx = rng.uniform(0, H), rng.uniform(0, W)
        r = rng.uniform(3, 9)
        img += rng.uniform(-1, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    return img


def _assert_same_match(fast, ref):
    np.testing.assert_array_equal(fast[0], ref[0])  # flow identical
    assert_close(fast[1], ref[1], rtol=1e-9, atol=0.0)  # cost to 1e-9


# --------------------------------------------------------------------------- block matching

@pytest.mark.parametrize("dy,dx", [(0, 0), (2, -3), (-1, 1), (3, 3)])
@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
@pytest.mark.parametrize("channels", [None, "sum", "each"])
def test_recovers_integer_translation_away_from_borders(rng, dy, dx, boundary, channels):
    C = 1 if channels is None else 2
    ref = rng.standard_normal((C, 30, 34))
    # current[y, x] = reference[y + dy, x + dx]: the backward-map convention of lmref.motion
    cur = np.roll(ref, (-dy, -dx), axis=(1, 2))
    args = (ref[0], cur[0]) if channels is None else (ref, cur)
    kw = {} if channels is None else {"channels": channels}
    flow, cost = B.block_match(*args, 5, 3, boundary=boundary, **kw)
    inner = (Ellipsis, slice(6, -6), slice(6, -6))
    assert np.all(flow[inner + (0,)] == dx) and np.all(flow[inner + (1,)] == dy)
    assert np.all(cost[inner] == 0.0)  # identical blocks: an exact zero, no rounding residue
    # warp(reference, flow) reproduces current where the match is exact
    moved = warp(args[0], flow if flow.ndim == 3 else flow[0])
    np.testing.assert_array_equal(moved[inner], args[1][inner])


def test_output_layout_and_dtype(rng):
    ref = rng.integers(0, 255, (3, 9, 11)).astype(np.uint8)
    cur = rng.integers(0, 255, (3, 9, 11)).astype(np.uint8)
    f2, c2 = B.block_match(ref[0], cur[0], 3, 1)
    fs, cs = B.block_match(ref, cur, 3, 1, channels="sum")
    fe, ce = B.block_match(ref, cur, 3, 1, channels="each")
    assert f2.shape == fs.shape == (9, 11, 2) and c2.shape == cs.shape == (9, 11)
    assert fe.shape == (3, 9, 11, 2) and ce.shape == (3, 9, 11)
    assert all(a.dtype == np.float64 for a in (f2, c2, fs, cs, fe, ce))
    # "each" on channel c is the 2-D match of that channel
    f1, c1 = B.block_match(ref[1], cur[1], 3, 1)
    np.testing.assert_array_equal(fe[1], f1)
    np.testing.assert_array_equal(ce[1], c1)


def test_cost_is_the_block_ssd(rng):
    ref = rng.standard_normal((8, 9))
    cur = rng.standard_normal((8, 9))
    flow, cost = B.block_match(ref, cur, 3, 2)
    rp = np.pad(ref, 3)
    cp = np.pad(cur, 1)
    y, x = 4, 5
    dx, dy = (int(v) for v in flow[y, x])
    block = cp[y:y + 3, x:x + 3]
    cand = rp[y + 2 + dy:y + 5 + dy, x + 2 + dx:x + 5 + dx]
    assert cost[y, x] == pytest.approx(np.sum((block - cand) ** 2), rel=1e-14)
    every = [np.sum((block - rp[y + 2 + a:y + 5 + a, x + 2 + b:x + 5 + b]) ** 2)
             for a in range(-2, 3) for b in range(-2, 3)]
    assert cost[y, x] == pytest.approx(min(every), rel=1e-14)


@given(data=st.data())
@SETTINGS
def test_fast_equals_reference_random(data):
    seed = data.draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    H, W = data.draw(st.integers(1, 11)), data.draw(st.integers(1, 11))
    C = data.draw(st.integers(1, 3))
    b = data.draw(st.sampled_from([1, 3, 5, 7]))
    s = data.draw(st.integers(0, 3))
    channels = data.draw(st.sampled_from(B.CHANNEL_MODES))
    boundary = data.draw(st.sampled_from(B.BM_BOUNDARIES))
    ref = rng.standard_normal((C, H, W))
    cur = rng.standard_normal((C, H, W))
    if C == 1 and data.draw(st.booleans()):
        ref, cur = ref[0], cur[0]
    kw = {"channels": channels, "boundary": boundary}
    _assert_same_match(B.block_match(ref, cur, b, s, **kw),
                       B._block_match_reference(ref, cur, b, s, **kw))


@pytest.mark.parametrize("kind", ["tenths", "integers", "relu"])
@pytest.mark.parametrize("channels", B.CHANNEL_MODES)
@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
@pytest.mark.parametrize("redecide", ["pixels", "rescan"])
def test_fast_equals_reference_on_tie_rich_data_for_any_thread_count(monkeypatch, kind, channels,
                                                                     boundary, redecide):
    """Few distinct values make many exactly equal (and, for tenths, inexactly summed) costs:
    the near-tie re-decision (both strategies), identical-block keys and integer fast exit all
    get exercised."""
    monkeypatch.setattr(B, "_few", lambda *a: redecide == "pixels")
    rng = np.random.default_rng(7)
    base = rng.integers(0, 3, (2, 9, 10)).astype(np.float64)
    if kind == "tenths":
        base *= 0.1
    elif kind == "relu":
        base = np.maximum(base - 1.0, 0.0) * 0.3  # mostly zeros, like ReLU features
    cur = np.roll(base, (1, -1), axis=(1, 2))
    kw = {"channels": channels, "boundary": boundary}
    want = B._block_match_reference(base, cur, 3, 2, **kw)
    before = numba.get_num_threads()
    try:
        for n in sorted({1, 2, before}):
            numba.set_num_threads(n)
            _assert_same_match(B.block_match(base, cur, 3, 2, **kw), want)
    finally:
        numba.set_num_threads(before)


def test_displacement_order_is_the_tie_rule():
    order = B.displacement_order(2)
    assert order.shape == (25, 2)
    assert order[:5].tolist() == [[0, 0], [-1, 0], [0, -1], [0, 1], [1, 0]]
    keys = [(dy * dy + dx * dx, dy, dx) for dy, dx in order.tolist()]
    assert keys == sorted(keys) and len(set(keys)) == 25


@pytest.mark.parametrize("value", [0.0, 0.3, 7.0])
@pytest.mark.parametrize("b,s", [(1, 2), (3, 2), (5, 3)])
def test_constant_images_give_zero_motion(value, b, s):
    img = np.full((2, 9, 12), value)
    flow, cost = B.block_match(img, img, b, s, boundary="replicate")
    assert np.all(flow == 0.0) and np.all(cost == 0.0)
    flow, cost = B.block_match(img, img, b, s, boundary="zeros")
    assert np.all(flow == 0.0) and np.all(cost == 0.0)  # (0, 0) is exact and first in order


def test_tie_rule_prefers_negative_dx_on_stripes():
    """Columns alternate 0/1: a one-column shift matches exactly at dx = -1 and dx = +1."""
    ref = np.tile([0.0, 1.0], (12, 6))
    cur = np.roll(ref, 1, axis=1)
    flow, cost = B.block_match(ref, cur, 3, 1, boundary="replicate")
    inner = (slice(2, -2), slice(2, -2))
    assert np.all(flow[inner][..., 0] == -1) and np.all(flow[inner][..., 1] == 0)
    assert np.all(cost[inner] == 0.0)


def test_tie_rule_prefers_negative_dy_on_checkerboard():
    """A one-pixel shift of a checkerboard matches exactly at (dy, dx) = (+-1, 0), (0, +-1):
    the equal lengths are ordered by dy first, so (dy, dx) = (-1, 0) wins."""
    ref = (np.indices((12, 12)).sum(axis=0) % 2).astype(float) * 0.7
    cur = np.roll(ref, 1, axis=1)
    flow, _ = B.block_match(ref, cur, 3, 1, boundary="replicate")
    inner = (slice(2, -2), slice(2, -2))
    assert np.all(flow[inner][..., 1] == -1) and np.all(flow[inner][..., 0] == 0)


def test_zeros_boundary_counts_outside_pixels_as_zero():
    """A bright pixel at the corner: the outside counts as 0, so matching the all-zero region
    beyond the frame costs exactly the block's energy."""
    ref = np.zeros((5, 5))
    cur = np.zeros((5, 5))
    cur[0, 0] = 2.0
    flow, cost = B.block_match(ref, cur, 3, 1, boundary="zeros")
    assert cost[0, 0] == 4.0 and flow[0, 0].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("args,kw,exc,match", [
    (((4, 4), (4, 4), 2, 1), {}, ValueError, "block_size must be odd"),
    (((4, 4), (4, 4), 0, 1), {}, ValueError, "block_size must be >= 1"),
    (((4, 4), (4, 4), 3, -1), {}, ValueError, "search_range must be >= 0"),
    (((4, 4), (4, 5), 3, 1), {}, ValueError, "current must have the shape of reference"),
    (((2, 4, 4), (4, 4), 3, 1), {}, ValueError, "current must have the shape"),
    (((1, 1, 4, 4), (1, 1, 4, 4), 3, 1), {}, ValueError, "reference must be 2 or 3"),
    (((4, 4), (4, 4), 3, 1), {"channels": "mean"}, ValueError, "channels must be one of"),
    (((4, 4), (4, 4), 3, 1), {"boundary": "wrap"}, ValueError, "boundary must be one of"),
    (((4, 4), (4, 4), 3.5, 1), {}, TypeError, "block_size must be an integer"),
])
def test_bad_block_match_arguments(args, kw, exc, match):
    ref, cur, b, s = args
    with pytest.raises(exc, match=match):
        B.block_match(np.zeros(ref), np.zeros(cur), b, s, **kw)


HUGE = 10**12 + 1


def test_displacement_order_refuses_a_huge_table_naming_search_range():
    with pytest.raises(ValueError, match=r"search_range would need .* GiB"):
        B.displacement_order(HUGE)


def _brute_force_match(ref, cur, b, s, boundary):
    """Every displacement of ``|dx|, |dy| <= s`` (no clamping), exact costs, tie order."""
    r = b // 2
    mode = "constant" if boundary == "zeros" else "edge"
    cp = np.pad(cur, r, mode=mode)
    rp = np.pad(ref, r + s, mode=mode)
    H, W = cur.shape
    flow, cost = np.empty((H, W, 2)), np.empty((H, W))
    for y, x in np.ndindex(H, W):
        block = cp[y:y + b, x:x + b]
        best = math.inf
        for dy, dx in B.displacement_order(s):
            cand = rp[y + s + dy:y + s + dy + b, x + s + dx:x + s + dx + b]
            c = math.fsum(((block - cand) ** 2).ravel())
            if c < best:
                best, flow[y, x], cost[y, x] = c, (dx, dy), c
    return flow, cost


@pytest.mark.parametrize("kind", ["normal", "integers"])
@pytest.mark.parametrize("boundary", B.BM_BOUNDARIES)
@pytest.mark.parametrize("b", [1, 3])
def test_search_range_beyond_the_frame_is_clamped_without_changing_the_result(rng, kind,
                                                                              boundary, b):
    """Displacements beyond max(H, W) + b - 1 only see blocks outside the frame, identical to a
    nearer candidate that wins the tie: the clamped search equals the unclamped brute force."""
    H, W = 3, 4
    if kind == "normal":
        ref, cur = rng.standard_normal((2, H, W))
    else:  # many exact ties, also with the all-zero / repeated-edge blocks beyond the frame
        ref, cur = rng.integers(-1, 2, (2, H, W)).astype(float)
    limit = max(H, W) + b - 1
    want = _brute_force_match(ref, cur, b, limit + 3, boundary)
    for s in (limit, limit + 3, HUGE):
        _assert_same_match(B.block_match(ref, cur, b, s, boundary=boundary), want)
        _assert_same_match(B._block_match_reference(ref, cur, b, s, boundary=boundary), want)


def test_huge_search_range_returns_the_limit_result(rng):
    ref, cur = rng.standard_normal((2, 2, 6, 5))
    flow, cost = B.block_match(ref, cur, 3, HUGE, channels="each")
    want = B.block_match(ref, cur, 3, 8, channels="each")
    np.testing.assert_array_equal(flow, want[0])
    np.testing.assert_array_equal(cost, want[1])


def test_non_finite_and_huge_inputs_are_rejected():
    ref = np.zeros((4, 4))
    bad = ref.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="current contains 1 non-finite"):
        B.block_match(ref, bad, 3, 1)
    with pytest.raises(ValueError, match="too large"):
        B.block_match(ref, np.full((4, 4), 1e160), 3, 1)
    with pytest.raises(TypeError, match="reference must have a real"):
        B.block_match(ref.astype(bool), ref, 3, 1)


# --------------------------------------------------------------------------- NRMSE / PSNR

def test_nrmse_hand_values():
    # errors (0, 0, -2): MSE = 4/3, R = 5 - 1 = 4
    assert B.nrmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3) / 4, rel=1e-15)
    assert B.nrmse([1, 2, 3], [1, 2, 5], dynamic_range=2) == pytest.approx(math.sqrt(4 / 3) / 2)
    # the mask drops the third element: MSE 0
    assert B.nrmse([1, 2, 3], [1, 2, 5], mask=np.array([True, True, False])) == 0.0
    # values outside the mask may be NaN
    assert B.nrmse([1.0, 3.0, np.nan], [2.0, 4.0, 9.0], mask=np.array([True, True, False])) \
        == pytest.approx(1.0 / 2.0)


def test_nrmse_spatial_mask_applies_to_every_channel(rng):
    a = rng.standard_normal((3, 4, 5))
    p = a + rng.standard_normal((3, 4, 5))
    m = rng.random((4, 5)) > 0.4
    full = np.broadcast_to(m, a.shape)
    d = (p - a)[full]
    want = math.sqrt(np.mean(d * d)) / (a[full].max() - a[full].min())
    assert B.nrmse(p, a, mask=m) == pytest.approx(want, rel=1e-13)
    assert B.nrmse(p, a, mask=full.copy()) == B.nrmse(p, a, mask=m)


def test_psnr_hand_values():
    # half the pixels off by 255: MSE = 255^2 / 2 -> 10 log10(2) dB
    assert B.psnr([0, 0], [0, 255]) == pytest.approx(10 * math.log10(2), rel=1e-15)
    assert B.psnr([0, 0], [0, 1], peak=1.0) == pytest.approx(10 * math.log10(2))
    assert B.psnr([3, 4], [3, 4]) == math.inf


def test_eq14_endpoints_and_closed_form():
    # seed 001: 27-41 dB <-> 0.044-0.009 (the printed range lists low NRMSE first)
    assert round(B.psnr_to_nrmse(27.0), 3) == 0.044
    assert round(B.psnr_to_nrmse(41.0), 3) == 0.009
    assert B.psnr_to_nrmse(27.0) == pytest.approx(math.sqrt(255**2 / 10**2.7) / 256, rel=1e-15)
    assert B.psnr_to_nrmse(41.0) == pytest.approx(255 / 256 * 10 ** (-41 / 20), rel=1e-15)
    assert B.psnr_to_nrmse(27.0, levels=255) == pytest.approx(10 ** (-27 / 20), rel=1e-15)
    grid = np.array([[27.0, 30.0], [35.5, 41.0]])
    back = B.nrmse_to_psnr(B.psnr_to_nrmse(grid))
    assert back.shape == (2, 2)
    assert_close(back, grid, rtol=1e-14)
    assert B.psnr_to_nrmse(math.inf) == 0.0 and B.nrmse_to_psnr(0.0) == math.inf


def test_eq14_agrees_with_nrmse_and_psnr_on_8bit_frames(rng):
    actual = rng.integers(0, 256, (16, 16)).astype(float)
    predicted = np.clip(actual + rng.integers(-9, 10, (16, 16)), 0, 255)
    p = B.psnr(predicted, actual)
    assert B.psnr_to_nrmse(p) == pytest.approx(
        B.nrmse(predicted, actual, dynamic_range=256), rel=1e-12)


def test_eq14_levels_is_an_integer_count():
    assert B.psnr_to_nrmse(30.0, levels=256.0) == B.psnr_to_nrmse(30.0, levels=np.int16(256))
    assert B.nrmse_to_psnr(0.02, levels=2) == pytest.approx(20 * math.log10(255 / 0.04))


@pytest.mark.parametrize("call,exc,match", [
    (lambda: B.nrmse([1, 2], [1, 2, 3]), ValueError, "predicted must have the shape of actual"),
    (lambda: B.nrmse([1, 2], [1, 3], mask=np.array([False, False])), ValueError,
     "mask selects no element"),
    (lambda: B.nrmse([1, 2], [1, 3], mask=np.array([True])), ValueError,
     "mask must have the shape"),
    (lambda: B.nrmse([1, 2], [1, 3], mask=np.array([1, 0])), TypeError, "mask must be a boolean"),
    (lambda: B.nrmse([1, 2], [3, 3]), ValueError, "dynamic range is 0"),
    (lambda: B.nrmse([1, 2], [1, 3], dynamic_range=0.0), ValueError, "dynamic_range must be > 0"),
    (lambda: B.nrmse([1, np.nan], [1, 3]), ValueError, "predicted .inside the mask. contains"),
    (lambda: B.nrmse(np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), mask=np.ones((2, 3), bool)),
     ValueError, "or its spatial shape"),
    (lambda: B.psnr([1], [2], peak=0), ValueError, "peak must be > 0"),
    (lambda: B.psnr_to_nrmse(30, levels=-1), ValueError, "levels must be >= 2"),
    (lambda: B.psnr_to_nrmse(30, levels=1), ValueError, "levels must be >= 2"),
    (lambda: B.psnr_to_nrmse(30, levels=2.5), TypeError, "levels must be an integer"),
    (lambda: B.nrmse_to_psnr(0.02, levels=2.5), TypeError, "levels must be an integer"),
    (lambda: B.nrmse_to_psnr(0.02, levels="256"), TypeError, "levels must be an integer"),
    (lambda: B.nrmse_to_psnr(0.02, levels=0), ValueError, "levels must be >= 2"),
    (lambda: B.nrmse_to_psnr(-0.1), ValueError, "nrmse must be >= 0"),
])
def test_bad_metric_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --------------------------------------------------------------------------- latent motion

@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("shift", [(1, 0), (0, -1), (-1, 1)])
def test_compensation_of_a_stride_shift_is_exact(rng, depth, shift):
    """Shift the frame by (multiples of) the stride: through a circularly padded stride-s
    extractor the features shift by whole pixels, and compensation reproduces them exactly in
    the predictable region."""
    extract, stride = feature_extractor(depth, 4, seed=3, padding_mode="circular")
    image = _smooth_image(rng, 48, 40)
    my, mx = shift[0] * stride, shift[1] * stride
    moved = np.roll(image, (my, mx), axis=(0, 1))  # moved[y, x] = image[y - my, x - mx]
    flow = np.empty(image.shape + (2,))
    flow[..., 0], flow[..., 1] = -mx, -my
    predicted, mask = B.compensate(extract(image), flow, stride)
    actual = extract(moved)
    assert mask.shape == actual.shape[-2:] and mask.sum() < mask.size
    np.testing.assert_array_equal(predicted[:, mask], actual[:, mask])


def test_compensate_rejects_mismatched_grids(rng):
    feats = rng.standard_normal((2, 5, 5))
    with pytest.raises(ValueError, match="gives a .6, 6. grid"):
        B.compensate(feats, np.zeros((24, 24, 2)), 4)
    with pytest.raises(ValueError, match="flow must have shape"):
        B.compensate(feats, np.zeros((20, 20, 3)), 4)


def _translation_sweep(extract, stride, image, **kw):
    shifts = np.arange(0.0, 2 * stride + 0.25, 0.5)
    errs = [B.latent_motion_error(extract, image, affine_flow(image.shape, translation=(t, 0.0)),
                                  stride, **kw).nrmse for t in shifts]
    return shifts, np.array(errs)


def test_translation_sweep_has_minima_at_integer_latent_shifts(rng):
    """Fig. 5 (top-left): NRMSE vanishes where the input shift is a whole latent pixel and is
    larger in between (the feature map is then interpolated)."""
    extract, stride = feature_extractor(2, 8, seed=0)
    shifts, errs = _translation_sweep(extract, stride, _smooth_image(rng, 64, 64), margin=1)
    whole = shifts % stride == 0
    assert np.all(errs[whole] < 1e-14)
    assert np.all(errs[~whole] > 1e-3) and np.all(errs < 0.05)
    inner = np.flatnonzero(whole)[1:-1]
    assert np.all(errs[inner] < errs[inner - 1]) and np.all(errs[inner] < errs[inner + 1])


@pytest.mark.parametrize("name,values", [
    ("rotation", [0.0, 2.0, 5.0, 10.0]),
    ("scale", [(1.0, 1.0), (1.02, 1.02), (1.05, 1.05)]),
    ("shear", [(0.0, 0.0), (2.0, 0.0), (5.0, 0.0)]),
])
def test_affine_sweeps_give_small_nrmse_growing_with_the_motion(rng, name, values):
    extract, stride = feature_extractor(2, 8, seed=0)
    image = _smooth_image(rng, 64, 64)
    errs = [B.latent_motion_error(extract, image, affine_flow(image.shape, **{name: v}),
                                  stride).nrmse for v in values]
    assert errs[0] == 0.0
    assert all(0.0 < e < 0.05 for e in errs[1:])  # the seed's "up to about 0.04"
    assert errs[1] < errs[-1]


def test_latent_motion_error_result_pieces(rng):
    extract, stride = feature_extractor(1, 3, seed=1)
    image = _smooth_image(rng, 20, 18)
    flow = affine_flow(image.shape, translation=(1.5, -0.5))
    r = B.latent_motion_error(extract, image, flow, stride)
    assert r.actual.shape == r.predicted.shape == (3, 10, 9)
    assert r.mask.shape == (10, 9) and r.latent_flow.shape == (10, 9, 2)
    np.testing.assert_array_equal(r.moved, warp(image, flow))
    np.testing.assert_array_equal(r.actual, extract(r.moved))
    assert r.nrmse == B.nrmse(r.predicted, r.actual, r.mask)
    assert_close(r.latent_flow, scale_flow(flow, stride, sample="center"))
    with pytest.raises(TypeError, match="extract must be callable"):
        B.latent_motion_error(None, image, flow, stride)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_latent_motion_error_rejects_a_non_finite_image(rng, value):
    extract, stride = feature_extractor(1, 3, seed=1)
    image = _smooth_image(rng, 20, 18)
    image[7, 5] = value
    flow = affine_flow(image.shape, translation=(1.5, -0.5))
    with pytest.raises(ValueError, match=r"image contains 1 non-finite"):
        B.latent_motion_error(extract, image, flow, stride)
    with pytest.raises(ValueError, match=r"image contains 360 non-finite"):
        B.latent_motion_error(extract, np.full((20, 18), value), flow, stride)


def test_latent_motion_error_names_flow_when_nothing_is_predictable(rng):
    extract, stride = feature_extractor(1, 3, seed=1)
    image = _smooth_image(rng, 20, 18)
    for flow in (np.full((20, 18, 2), np.nan), affine_flow(image.shape, translation=(40, 0))):
        with pytest.raises(ValueError, match=r"flow leaves no predictable feature pixel"):
            B.latent_motion_error(extract, image, flow, stride)


def test_latent_motion_error_bounds_margin_by_the_feature_map(rng):
    extract, stride = feature_extractor(1, 3, seed=1)  # 20 x 18 -> 10 x 9 features
    image = _smooth_image(rng, 20, 18)
    still = np.zeros((20, 18, 2))
    r = B.latent_motion_error(extract, image, still, stride, margin=4)  # a 9 x 9 window fits
    assert r.mask.sum() == 2 and r.nrmse == 0.0
    for margin in (5, HUGE):
        with pytest.raises(ValueError, match=r"margin must be <= 4 for the 10x9 feature map"):
            B.latent_motion_error(extract, image, still, stride, margin=margin)
    moving = affine_flow(image.shape, translation=(2.0, 0.0))  # one feature column enters
    with pytest.raises(ValueError, match=r"margin=4 leaves none of the 80 feature pixels that "
                                         r"flow makes predictable"):
        B.latent_motion_error(extract, image, moving, stride, margin=4)
    with pytest.raises(TypeError, match="margin must be an integer"):
        B.latent_motion_error(extract, image, still, stride, margin=1.5)


def test_feature_space_block_matching_finds_scaled_input_motion(rng):
    """Seed Fig. 2: motion block-matched between feature maps matches the input motion
    scaled by 1/stride (here a translation by two latent pixels)."""
    extract, stride = feature_extractor(2, 16, seed=4, padding_mode="circular")
    image = _smooth_image(rng, 64, 64, blobs=60)
    flow = affine_flow(image.shape, translation=(2.0 * stride, 0.0))
    moved = warp(image, flow, boundary="wrap")
    latent_flow, _ = B.block_match(extract(image), extract(moved), 3, 3)
    inner = (slice(4, -4), slice(4, -4))
    sim = B.motion_similarity(latent_flow[inner], scale_flow(flow, stride, sample="center")[inner])
    assert sim.epe == 0.0 and sim.cosine == pytest.approx(1.0, abs=1e-15)


def test_motion_similarity_hand_values():
    a = np.zeros((2, 3, 2))
    a[..., 0] = 1.0
    assert B.motion_similarity(a, a) == B.MotionSimilarity(0.0, 0.0, 1.0, 1.0, 6)
    r = B.motion_similarity(a, -2 * a)
    assert (r.epe, r.epe_max, r.cosine, r.mean_cosine) == (3.0, 3.0, -1.0, -1.0)
    b = a.copy()
    b[0, 0] = (0.0, 1.0)  # one vector turned by 90 degrees: EPE sqrt(2) there
    r = B.motion_similarity(a, b)
    assert r.epe == pytest.approx(math.sqrt(2) / 6) and r.mean_cosine == pytest.approx(5 / 6)
    m = np.ones((2, 3), bool)
    m[0, 0] = False
    assert B.motion_similarity(a, b, mask=m).epe == 0.0
    z = B.motion_similarity(a, np.zeros_like(a))
    assert math.isnan(z.cosine) and math.isnan(z.mean_cosine) and z.epe == 1.0


@pytest.mark.parametrize("call,exc,match", [
    (lambda: B.motion_similarity(np.zeros((2, 2, 2)), np.zeros((2, 3, 2))), ValueError,
     "flow_b must have the shape"),
    (lambda: B.motion_similarity(np.zeros((2, 2)), np.zeros((2, 2))), ValueError,
     "flow_a must have shape"),
    (lambda: B.motion_similarity(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)),
                                 mask=np.zeros((2, 2), bool)), ValueError, "selects no vector"),
    (lambda: B.motion_similarity(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)),
                                 mask=np.ones((3, 2), bool)), ValueError, "mask must have shape"),
])
def test_bad_similarity_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("channels", [1, 3])
def test_opencv_benchmark_peer_computes_the_same_match_on_integer_frames(channels):
    """The benchmark's OpenCV loop (running sums, exact on integers) is the same computation:
    identical flow and cost on integer-valued frames with many exact ties."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV (benchmark peer) is not installed: "
                                            "pip install -e '.[test]'")
    from benchmarks.bench_blockmatch import opencv_block_match

    rng = np.random.default_rng(3)
    ref = rng.integers(0, 4, (channels, 12, 13)).astype(np.float64)
    cur = np.roll(ref, (1, -2), axis=(1, 2))
    cur[:, 3:6, 4:8] = 0.0  # a flat patch: exact ties between many displacements
    args = (ref[0], cur[0]) if channels == 1 else (ref, cur)
    want = B._block_match_reference(*args, 5, 3)
    got = opencv_block_match(cv2, *args, 5, 3)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# ----------------------------------------------------------------------------- issue 18 regressions

@pytest.mark.parametrize("scale", [1e-170, 1e160, 1e-300, 1e300])
def test_motion_similarity_of_identical_flows_is_exact_at_any_scale(scale):
    import warnings
    flow = np.random.default_rng(5).standard_normal((4, 5, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning may leak
        r = B.motion_similarity(flow * scale, flow * scale)
    assert r.epe == 0.0 and r.epe_max == 0.0
    assert abs(r.cosine - 1.0) < 1e-15 and abs(r.mean_cosine - 1.0) < 1e-15


def test_motion_similarity_scales_like_the_unscaled_flows():
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((2, 4, 5, 2))
    ref = B.motion_similarity(a, b)
    for scale in (2.0**-600, 2.0**500):
        r = B.motion_similarity(a * scale, b * scale)
        assert r.epe == pytest.approx(ref.epe * scale, rel=1e-14)
        assert r.epe_max == pytest.approx(ref.epe_max * scale, rel=1e-14)
        assert r.cosine == pytest.approx(ref.cosine, rel=1e-14)
        assert r.mean_cosine == pytest.approx(ref.mean_cosine, rel=1e-14)


def test_huge_levels_are_refused_by_name():
    with pytest.raises(ValueError, match="levels"):
        B.psnr_to_nrmse(30.0, levels=10**400)
    with pytest.raises(ValueError, match="levels"):
        B.nrmse_to_psnr(0.1, levels=10**400)


def test_block_match_memory_guard_names_block_size(monkeypatch):
    monkeypatch.setenv("LMREF_MAX_BYTES", str(2**20))
    x = np.zeros((4, 4))
    with pytest.raises(ValueError, match="block_size=1001"):
        B.block_match(x, x, block_size=1001, search_range=1)
