"""lmref.blockmatch, ``convention="authors"``: block matching and NRMSE as in seed 001's published
notebook (collaborative-intelligence, ``experiments/icassp``), against plain re-statements of
the notebook's loops; the default convention stays lmref's."""
import math

import numpy as np
import pytest

from lmref import blockmatch as B
from lmref.motion import warp
from lmref.testing import _sweep as S


# --------------------------------------------------------------------------- the notebook, re-stated

def notebook_block_match(prev, nxt, block_size, search_window):
    """The notebook's ``estimate_flow_blockmatching(prev_img, next_img, block_size,
    search_window)`` re-stated with plain loops, for ``(H, W)`` or channels-last ``(H, W, C)``
    frames (the notebook's layout; the SSD runs over the channels too).

    For each pixel at least ``block_size // 2`` from the border, every candidate centre
    ``(y2, x2)`` of ``next`` within ``search_window // 2`` whose block lies inside the frame gets
    the SSD against the block of ``prev`` at ``(y, x)``, in a ``search_window``-square table
    (inf elsewhere); the flow is ``(dx, dy)`` of the table's first minimum in row-major order
    (``np.argmin``). Costs are correctly rounded here (``math.fsum``), lmref's rule for ties;
    the notebook sums in the arrays' dtype. Returns ``(flow, cost)``, cost NaN where unmatched.
    """
    h, w = prev.shape[:2]
    br, sr = block_size // 2, search_window // 2
    flow = np.zeros((h, w, 2))
    cost = np.full((h, w), np.nan)
    for y in range(br, h - br):
        for x in range(br, w - br):
            block = prev[y - br:y + br + 1, x - br:x + br + 1].astype(np.float64)
            err = np.full((search_window, search_window), np.inf)
            for y2 in range(y - sr, y + sr + 1):
                for x2 in range(x - sr, x + sr + 1):
                    if br <= y2 < h - br and br <= x2 < w - br:
                        cand = nxt[y2 - br:y2 + br + 1, x2 - br:x2 + br + 1]
                        err[y2 - y + sr, x2 - x + sr] = math.fsum(((cand - block) ** 2).ravel())
            i = int(np.argmin(err))
            flow[y, x] = (i % search_window - sr, i // search_window - sr)
            cost[y, x] = err.flat[i]
    return flow, cost


def notebook_nrmse(predicted, actual, mask):
    """The notebook's NRMSE (``run_experiment``) for one frame: ``R = max - min`` of the whole
    target tensor, the MSE over the masked elements (``diffs[~masks] = 0``, divided by the
    number of masked elements)."""
    diffs = np.where(mask, predicted - actual, 0.0)
    mse = math.fsum((diffs ** 2).ravel()) / np.count_nonzero(mask)
    return math.sqrt(mse) / (actual.max() - actual.min())


def _chw(frame):
    """Channels-last (the notebook) -> lmref's channels-first."""
    return np.moveaxis(frame, -1, 0) if frame.ndim == 3 else frame


def _both_paths(prev, nxt, b, window, **kw):
    """lmref's fast and plain-reference results under the authors' convention (same flow;
    costs to 1e-13; NaN at the same pixels)."""
    fast = B.block_match(prev, nxt, b, window, convention="authors", **kw)
    ref = B._block_match_reference(prev, nxt, b, window, convention="authors", **kw)
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_allclose(fast[1], ref[1], rtol=1e-13, atol=0.0, equal_nan=True)
    return fast


# --------------------------------------------------------------------------- block matching

@pytest.mark.parametrize("shape", [(7, 8), (9, 6, 2), (5, 5, 3)])
@pytest.mark.parametrize("b,window", [(1, 3), (3, 3), (3, 5), (3, 11), (5, 3), (5, 7)])
def test_integer_frames_with_ties_match_the_notebook(shape, b, window):
    """Values in {0, 1, 2}: many equal costs, decided by the first minimum in raster order."""
    if b > min(shape[:2]):
        pytest.skip("the notebook asserts h, w >= block_size")
    rng = np.random.default_rng(sum(shape) * 100 + b * 10 + window)
    for _ in range(3):
        prev, nxt = rng.integers(0, 3, shape), rng.integers(0, 3, shape)
        flow, cost = _both_paths(_chw(prev), _chw(nxt), b, window)
        want_flow, want_cost = notebook_block_match(prev, nxt, b, window)
        np.testing.assert_array_equal(flow, want_flow)
        np.testing.assert_array_equal(cost, want_cost)  # integer sums: exact


@pytest.mark.parametrize("b,window", [(3, 5), (5, 3), (3, 9)])
def test_float_frames_match_the_notebook(b, window):
    rng = np.random.default_rng(b * 10 + window)
    prev, nxt = rng.standard_normal((10, 11, 2)), rng.standard_normal((10, 11, 2))
    flow, cost = _both_paths(_chw(prev), _chw(nxt), b, window)
    want_flow, want_cost = notebook_block_match(prev, nxt, b, window)
    np.testing.assert_array_equal(flow, want_flow)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-13, atol=0.0, equal_nan=True)


def test_channels_each_is_the_notebook_once_per_channel():
    """The notebook matches feature maps one channel at a time (block 5, window 3)."""
    rng = np.random.default_rng(4)
    prev, nxt = rng.integers(0, 3, (3, 9, 9)), rng.integers(0, 3, (3, 9, 9))
    flow, cost = _both_paths(prev, nxt, 5, 3, channels="each")
    assert flow.shape == (3, 9, 9, 2) and cost.shape == (3, 9, 9)
    for c in range(3):
        want_flow, want_cost = notebook_block_match(prev[c], nxt[c], 5, 3)
        np.testing.assert_array_equal(flow[c], want_flow)
        np.testing.assert_array_equal(cost[c], want_cost)


def test_exact_ties_in_float_frames_go_to_the_first_in_raster_order():
    """Frames mirror-symmetric about a column: at that column the candidates ``dx = -d`` and
    ``+d`` have equal exact costs (the same squared terms, summed in another order), which the
    box sums may split by an ulp; the exact re-decision keeps the first (``-d``)."""
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(20):
        half = rng.uniform(0.0, 1.0, (2, 9, 5))
        mirror = lambda a: np.concatenate([a, a[..., -2::-1]], axis=-1)  # noqa: E731
        prev, nxt = mirror(half), mirror(rng.uniform(0.0, 1.0, (2, 9, 5)))
        flow, _ = _both_paths(prev, nxt, 3, 5)
        want_flow, _ = notebook_block_match(np.moveaxis(prev, 0, -1), np.moveaxis(nxt, 0, -1),
                                            3, 5)
        np.testing.assert_array_equal(flow, want_flow)
        hits += int(np.sum(flow[1:-1, 4, 0] < 0))  # a tie won by -d on the axis of symmetry
    assert hits > 0  # the case was exercised


def test_a_flat_region_gets_the_first_clipped_corner_not_zero_motion():
    prev = nxt = np.full((7, 8), 5.0)
    flow, cost = _both_paths(prev, nxt, 3, 5)
    r, s = 1, 2
    for y in range(r, 7 - r):
        for x in range(r, 8 - r):
            assert tuple(flow[y, x]) == (max(r, x - s) - x, max(r, y - s) - y)
    assert np.all(cost[r:-r, r:-r] == 0.0)


def test_border_pixels_keep_zero_motion_and_nan_cost():
    rng = np.random.default_rng(2)
    prev, nxt = rng.standard_normal((2, 10, 12)), rng.standard_normal((2, 10, 12))
    flow, cost = _both_paths(prev, nxt, 5, 5)
    border = np.ones((10, 12), dtype=bool)
    border[2:-2, 2:-2] = False
    assert np.all(flow[border] == 0.0) and np.all(np.isnan(cost[border]))
    assert np.all(np.isfinite(cost[~border]))


def test_the_authors_flow_is_forward_and_lmrefs_backward():
    """``next`` = ``prev`` moved by ``t``: the authors' flow is ``+t`` (prev -> next) where
    lmref's backward map is ``-t``; on the interior it equals lmref's ``block_match(next,
    prev)``, and ``warp(next, flow)`` gives ``prev`` back."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((24, 26))
    ty, tx = 2, -1
    prev, nxt = base[4:20, 4:22], base[4 - ty:20 - ty, 4 - tx:22 - tx]  # nxt[y+ty, x+tx] = prev
    authors, _ = B.block_match(prev, nxt, 3, 7, convention="authors")
    lmref, _ = B.block_match(prev, nxt, 3, 3)
    swapped, _ = B.block_match(nxt, prev, 3, 3)
    inner = (slice(4, -4), slice(4, -4))
    assert np.all(authors[inner] == (tx, ty)) and np.all(lmref[inner] == (-tx, -ty))
    np.testing.assert_array_equal(authors[inner], swapped[inner])
    np.testing.assert_array_equal(warp(nxt, authors)[inner], prev[inner])


def test_the_search_window_is_a_side():
    """Window 3 finds a 1-pixel shift but not a 2-pixel one; lmref's search_range=3 finds both."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((20, 20))
    prev, nxt = base[4:16, 4:16], base[4:16, 2:14]  # content moves 2 px right
    authors, _ = B.block_match(prev, nxt, 3, 3, convention="authors")
    wider, _ = B.block_match(prev, nxt, 3, 5, convention="authors")
    assert np.all(np.abs(authors[1:-1, 1:-1]) <= 1)
    assert np.all(wider[3:-3, 3:-3] == (2, 0))


def test_integer_dtype_frames_give_the_float64_result():
    rng = np.random.default_rng(6)
    prev = rng.integers(0, 255, (9, 9)).astype(np.uint8)
    nxt = rng.integers(0, 255, (9, 9)).astype(np.uint8)
    got = B.block_match(prev, nxt, 3, 5, convention="authors")
    want = B.block_match(prev.astype(float), nxt.astype(float), 3, 5, convention="authors")
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    # no uint8 wrap-around: the notebook's numba fuses (next - prev) ** 2 in int64
    np.testing.assert_array_equal(got[1], notebook_block_match(prev.astype(np.int64),
                                                               nxt.astype(np.int64), 3, 5)[1])


def test_a_window_beyond_the_frame_is_the_whole_frame():
    rng = np.random.default_rng(7)
    prev, nxt = rng.integers(0, 3, (6, 7)), rng.integers(0, 3, (6, 7))
    big = B.block_match(prev, nxt, 3, 2 * 10**12 + 1, convention="authors")
    frame = B.block_match(prev, nxt, 3, 13, convention="authors")
    np.testing.assert_array_equal(big[0], frame[0])
    np.testing.assert_array_equal(big[1], frame[1])
    np.testing.assert_array_equal(frame[0], notebook_block_match(prev, nxt, 3, 13)[0])


def test_the_result_does_not_depend_on_the_thread_count():
    import numba

    rng = np.random.default_rng(12)
    half = rng.uniform(0.0, 1.0, (2, 12, 6))  # mirrored: near ties that are re-decided
    prev = np.concatenate([half, half[..., -2::-1]], axis=-1)
    nxt = np.concatenate([half[:, ::-1], half[:, ::-1, -2::-1]], axis=-1)
    before = numba.get_num_threads()
    try:
        results = []
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            results.append(B.block_match(prev, nxt, 3, 7, channels="each", convention="authors"))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[-1]):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("bad", ["Authors", "paper", "", 1.5, None])
def test_an_unknown_convention_is_refused_by_name(bad):
    x = np.zeros((5, 5))
    for call in (lambda: B.block_match(x, x, 3, 1, convention=bad),
                 lambda: B._block_match_reference(x, x, 3, 1, convention=bad),
                 lambda: B.nrmse(x, x + 1.0, convention=bad)):
        with pytest.raises(ValueError, match="convention"):
            call()


@pytest.mark.parametrize("kw,name", [
    ({"search_range": 4}, "search_range"), ({"search_range": 0}, "search_range"),
    ({"search_range": -3}, "search_range"), ({"block_size": 7}, "block_size"),
    ({"block_size": 4}, "block_size"), ({"boundary": "replicate"}, "boundary")])
def test_the_authors_arguments_are_checked_by_name(kw, name):
    x = np.zeros((2, 6, 8))
    args = {"block_size": 3, "search_range": 3, **kw}
    for fn in (B.block_match, B._block_match_reference):
        with pytest.raises(ValueError, match=name):
            fn(x, x, convention="authors", **args)


def test_the_default_convention_is_unchanged():
    rng = np.random.default_rng(8)
    ref, cur = rng.integers(0, 3, (2, 8, 9)), rng.integers(0, 3, (2, 8, 9))
    for kw in ({}, {"channels": "each", "boundary": "replicate"}):
        default = B.block_match(ref, cur, 3, 2, **kw)
        named = B.block_match(ref, cur, 3, 2, convention="lmref", **kw)
        plain = B._block_match_reference(ref, cur, 3, 2, **kw)
        for a, b in zip(default, named):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(default[0], plain[0])
        # lmref's ties: flat regions stay still, border pixels are matched
        assert np.all(np.isfinite(default[1]))
    flat = B.block_match(np.ones((6, 6)), np.ones((6, 6)), 3, 2)
    assert np.all(flat[0] == 0.0)


# --------------------------------------------------------------------------- NRMSE

@pytest.mark.parametrize("spatial", [False, True])
def test_nrmse_authors_is_the_notebooks_formula(spatial):
    rng = np.random.default_rng(9)
    actual, predicted = rng.standard_normal((3, 6, 7)), rng.standard_normal((3, 6, 7))
    actual[0, 0, 0] = 9.0  # the extremes lie outside the mask: R differs between conventions
    actual[2, 5, 6] = -7.0
    mask2 = rng.uniform(size=(6, 7)) > 0.3
    mask2[0, 0] = mask2[5, 6] = False
    mask = mask2 if spatial else np.broadcast_to(mask2, actual.shape)
    full = np.broadcast_to(mask2, actual.shape)
    got = B.nrmse(predicted, actual, mask, convention="authors")
    assert got == pytest.approx(notebook_nrmse(predicted, actual, full), rel=1e-15)
    lmref = B.nrmse(predicted, actual, mask)
    assert got == pytest.approx(lmref * np.ptp(actual[full]) / 16.0, rel=1e-15)
    assert got < lmref


def test_nrmse_conventions_agree_without_a_mask_or_with_a_given_range():
    rng = np.random.default_rng(10)
    actual, predicted = rng.standard_normal((2, 5, 5)), rng.standard_normal((2, 5, 5))
    mask = rng.uniform(size=(5, 5)) > 0.5
    assert B.nrmse(predicted, actual, convention="authors") == B.nrmse(predicted, actual)
    assert B.nrmse(predicted, actual, mask, 3.0, convention="authors") == \
        B.nrmse(predicted, actual, mask, 3.0)


def test_nrmse_authors_needs_a_finite_nonconstant_actual_everywhere():
    actual = np.arange(12.0).reshape(3, 4)
    predicted = actual + 0.5
    mask = np.ones((3, 4), dtype=bool)
    mask[0, 0] = False
    predicted[0, 0] = np.nan  # outside the mask: ignored by both conventions
    assert np.isfinite(B.nrmse(predicted, actual, mask, convention="authors"))
    actual_nan = actual.copy()
    actual_nan[0, 0] = np.nan  # outside the mask, but inside the authors' R
    assert np.isfinite(B.nrmse(predicted, actual_nan, mask))
    with pytest.raises(ValueError, match="actual"):
        B.nrmse(predicted, actual_nan, mask, convention="authors")
    with pytest.raises(ValueError, match="dynamic range"):
        B.nrmse(np.zeros((3, 4)), np.ones((3, 4)), convention="authors")


# --------------------------------------------------------------------------- robustness sweep

def _authors_recipes():
    """The robustness sweep's kinds (tests/test_robustness.py) on the authors' convention."""
    def bm(rng):
        return ((rng.standard_normal((2, 8, 8)), rng.standard_normal((2, 8, 8))),
                {"block_size": 3, "search_range": 5, "channels": "sum", "boundary": "zeros",
                 "convention": "authors"})

    def nr(rng):
        return ((rng.standard_normal((2, 5, 6)), rng.standard_normal((2, 5, 6))),
                {"mask": rng.standard_normal((5, 6)) > -0.5, "convention": "authors"})

    return [S.Recipe("lmref.blockmatch.block_match", B.block_match, bm,
                     source="authors"),
            S.Recipe("lmref.blockmatch.nrmse", B.nrmse, nr, source="authors")]


@pytest.mark.parametrize("recipe", _authors_recipes(), ids=lambda r: r.qualname.rsplit(".")[-1])
def test_the_authors_convention_survives_the_robustness_sweep(recipe):
    assert S.check_clean(recipe) == (True, "works")
    failures = []
    for name, kind in S.cases(recipe):
        ok, what = S.check(recipe, name, kind)
        if not ok:
            failures.append(f"{name}: {kind}: {what}")
    assert not failures, "\n".join(failures)
    assert ("convention", "unknown choice") in S.cases(recipe)


# --------------------------------------------------------------------------- lmref reproduce rows

def test_the_fig2_convention_rows_read_each_flow_in_its_own_sign():
    """The Fig. 2 clip (8 px motion) on 112 x 112 frames: lmref's backward flow finds -shift on
    the current frame's object, the authors' forward flow +shift on the reference frame's with
    a wide enough window, and nothing with the notebook's window 11 (+-5)."""
    from lmref.layers import feature_extractor
    from lmref.reproduce import exp_latent_motion as E
    from lmref.reproduce._images import moving_object_pair

    ref, cur, _, obj = moving_object_pair(112, E.FIG2_SHIFT, np.random.default_rng(0),
                                          object_frac=0.7)
    net, stride = feature_extractor(E.FIG2_DEPTH, 4, 0)
    bm = {"ref": ref, "cur": cur, "obj": obj, "f_ref": net(ref), "f_cur": net(cur),
          "stride": stride}
    rows = [E._fig2_convention_row(bm, *call) for call in E.FIG2_CALLS]
    share = "frame: object pixels = true motion"
    assert rows[0][share] > 0.3 and rows[2][share] > 0.3
    assert rows[1][share] == 0.0
    assert rows[1]["frame call"] == "31x31, window 11 = +-5" and rows[0]["frame call"] == \
        "31x31, +-11"
    assert E._ratio_range(np.array([0.0, 1.0, 3.0]), np.array([0.0, 2.0, 4.0])) == "0.500..0.750"
