"""lmref.temporal: ATM context spanning and arithmetic operations."""
import math
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings

from lmref import temporal as T
from lmref.peers import run_peer
from lmref.testing import assert_close, gradcheck
from lmref.testing.strategies import local_multiply_args

SHAPE = (2, 3, 5, 6)


# ---------------------------------------------------------------------------------------------
# plain loop references (independent of lmref.temporal's own reference paths)
# ---------------------------------------------------------------------------------------------

def _loop_l2(x):
    out = np.empty_like(x)
    n, c, h, w = x.shape
    for i, row, col in np.ndindex(n, h, w):
        s = 0.0
        for ch in range(c):
            s += x[i, ch, row, col] ** 2
        for ch in range(c):
            out[i, ch, row, col] = x[i, ch, row, col] / math.sqrt(s + 1e-6)
    return out


def _loop_local_multiply(a, b, P, dilation=1, normalize="none"):
    if normalize == "l2":
        a, b = _loop_l2(a), _loop_l2(b)
    n, c, h, w = a.shape
    r = P // 2
    out = np.zeros((n, P * P, h, w))
    for i, ch, row, col in np.ndindex(n, c, h, w):
        for di in range(-r, r + 1):
            for dj in range(-r, r + 1):
                hh, ww = row + di * dilation, col + dj * dilation
                if 0 <= hh < h and 0 <= ww < w:
                    p = (di + r) * P + (dj + r)
                    out[i, p, row, col] += a[i, ch, row, col] * b[i, ch, hh, ww]
    return out / (c if normalize == "channels" else 1)


def _loop_elementwise(fn, a, b):
    out = np.empty(a.shape)
    for idx in np.ndindex(a.shape):
        out[idx] = fn(float(a[idx]), float(b[idx]))
    return out


ELEMENTWISE = {
    "add": (T.add, T._add_reference, {}, lambda x, y: x + y),
    "subtract": (T.subtract, T._subtract_reference, {}, lambda x, y: x - y),
    "log_divide": (T.log_divide, T._log_divide_reference, {"eps": 1.0},
                   lambda x, y: math.log(x + 1.0) - math.log(y + 1.0)),
    "log_divide_eps": (T.log_divide, T._log_divide_reference, {"eps": 0.75},
                       lambda x, y: math.log(x + 0.75) - math.log(y + 0.75)),
    "log_divide_abs": (T.log_divide, T._log_divide_reference, {"absolute": True},
                       lambda x, y: math.log1p(abs(x)) - math.log1p(abs(y))),
}
BACKWARD = {"add": T.add_backward, "subtract": T.subtract_backward,
            "log_divide": T.log_divide_backward, "log_divide_eps": T.log_divide_backward,
            "log_divide_abs": T.log_divide_backward}


def _operands(rng, shape=SHAPE, name="add"):
    if name == "log_divide_abs":  # both signs, away from the kink of |x| at 0
        mag = rng.uniform(0.2, 3.0, (2, *shape))
        return tuple(mag * rng.choice([-1.0, 1.0], mag.shape))
    if name.startswith("log_divide"):
        return rng.uniform(-0.5, 3.0, shape), rng.uniform(-0.5, 3.0, shape)
    return rng.standard_normal(shape), rng.standard_normal(shape)


# ---------------------------------------------------------------------------------------------
# context spanning
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout, z, offsets", [
    ("seed", 1, [1]), ("seed", 2, [-1, 1]), ("seed", 3, [-1, 1, 2]), ("seed", 4, [-2, -1, 1, 2]),
    ("atm", 1, [-1]), ("atm", 3, [-1, 0, 1]), ("atm", 5, [-2, -1, 0, 1, 2]),
])
def test_context_offsets(layout, z, offsets):
    assert T.context_offsets(z, layout=layout) == offsets


_ = None  # a zero frame (official layout, beyond the clip ends)
SPAN_TABLES = {  # T = 5: frame index of each context frame, per anchor
    ("seed", 1): [[1], [2], [3], [4], [4]],
    ("seed", 2): [[0, 1], [0, 2], [1, 3], [2, 4], [3, 4]],
    ("seed", 3): [[0, 1, 2], [0, 2, 3], [1, 3, 4], [2, 4, 4], [3, 4, 4]],
    ("seed", 4): [[0, 0, 1, 2], [0, 0, 2, 3], [0, 1, 3, 4], [1, 2, 4, 4], [2, 3, 4, 4]],
    ("atm", 1): [[0], [0], [1], [2], [3]],
    ("atm", 3): [[_, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, _]],
    ("atm", 5): [[_, _, 0, 1, 2], [_, 0, 1, 2, 3], [0, 1, 2, 3, 4], [1, 2, 3, 4, _],
                 [2, 3, 4, _, _]],
}


def _numbered_clip(n=2, t=5, c=2, h=3, w=4):
    """frames[n, t] filled with 10 n + t + 1, so every frame (and a zero frame) is recognisable."""
    labels = 10 * np.arange(n)[:, None] + np.arange(t)[None, :] + 1.0
    return np.broadcast_to(labels[:, :, None, None, None], (n, t, c, h, w)).copy()


@pytest.mark.parametrize("layout, z", sorted(SPAN_TABLES))
def test_context_span_numbered_clip(layout, z):
    clip = _numbered_clip()
    out = T.context_span(clip, z, layout=layout)
    assert out.shape == (2, 5, z, 2, 3, 4) and out.dtype == np.float64
    table = SPAN_TABLES[(layout, z)]
    for n in range(2):
        expected = np.array([[0.0 if f is None else 10 * n + f + 1 for f in row] for row in table])
        np.testing.assert_array_equal(out[n, :, :, 0, 0, 0], expected)
        assert (out[n] == out[n, :, :, :1, :1, :1]).all()  # whole frames are copied
    unbatched = T.context_span(clip[1], z, layout=layout)
    np.testing.assert_array_equal(unbatched, out[1])
    assert not np.shares_memory(out, clip)


@pytest.mark.torch
@pytest.mark.parametrize("layout, z", [("seed", 1), ("seed", 2), ("seed", 4), ("atm", 1),
                                       ("atm", 3), ("atm", 5)])
def test_context_span_vs_torch(torch, rng, layout, z):
    from lmref.peers import torch_temporal as P
    clip = rng.standard_normal((2, 6, 3, 2, 2))
    assert_close(T.context_span(clip, z, layout=layout),
                 P.context_span(torch.from_numpy(clip), z, layout=layout))


# ---------------------------------------------------------------------------------------------
# add, subtract, log_divide
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [SHAPE, (7,), (3, 1, 2, 2, 2)])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_vs_loop(rng, name, shape):
    fast, ref, kw, scalar = ELEMENTWISE[name]
    a, b = _operands(rng, shape, name)
    expected = _loop_elementwise(scalar, a, b)
    assert_close(fast(a, b, **kw), expected)
    assert_close(ref(a, b, **kw), expected)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_gradcheck(rng, name):
    fast, _, kw, _ = ELEMENTWISE[name]
    a, b = _operands(rng, SHAPE, name)
    g = rng.standard_normal(SHAPE)
    gradcheck(lambda x, y: fast(x, y, **kw), [a, b], g,
              lambda go, x, y: BACKWARD[name](go, x, y, **kw), max_checks=40)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_vs_torch(torch, rng, name):
    from lmref.peers import torch_temporal as P
    fast, _, kw, _ = ELEMENTWISE[name]
    peer = {"add": P.add, "subtract": P.subtract}.get(name, P.log_divide)
    a, b = _operands(rng, SHAPE, name)
    g = rng.standard_normal(SHAPE)
    out, grads = run_peer(peer, (a, b), kw, g)
    assert_close(fast(a, b, **kw), out)
    for mine, theirs in zip(BACKWARD[name](g, a, b, **kw), grads):
        assert_close(mine, theirs)


def test_log_divide_absolute_at_zero_matches_autograd(torch):
    from lmref.peers import torch_temporal as P
    a = np.array([0.0, -2.0, 3.0])
    b = np.array([1.5, 0.0, -0.5])
    g = np.array([1.0, 2.0, -1.0])
    out, grads = run_peer(P.log_divide, (a, b), {"absolute": True}, g)
    mine = T.log_divide_backward(g, a, b, absolute=True)
    assert_close(T.log_divide(a, b, absolute=True), out)
    np.testing.assert_array_equal(mine[0], grads[0])
    np.testing.assert_array_equal(mine[1], grads[1])
    assert mine[0][0] == 0.0 and mine[1][1] == 0.0  # sign(0) = 0


#: what this CPU picks (read before any test patches it)
NUMPY_LOG_IS_SIMD = T._numpy_log_is_simd()


@pytest.fixture(params=["numpy", "numba"])
def log_path(request, monkeypatch):
    """Both forward paths of the seed's log form, whatever this CPU picks: numpy's passes
    (where its log is SIMD) and the numba kernel (the C library's log)."""
    monkeypatch.setattr(T, "_numpy_log_is_simd", lambda: request.param == "numpy")
    return request.param


def test_log_divide_paths(rng, log_path):
    """numpy's passes are the reference expression bit for bit; the numba kernel is the C
    library's log element by element, which is numpy's own log where numpy has no SIMD log."""
    a, b = rng.uniform(-0.7, 3.0, BIG), rng.uniform(-0.7, 3.0, BIG)
    out = T.log_divide(a, b, 0.75)
    if log_path == "numpy":
        np.testing.assert_array_equal(out, T._log_divide_reference(a, b, 0.75))
    else:
        want = [math.log(x + 0.75) - math.log(y + 0.75) for x, y in zip(a.ravel(), b.ravel())]
        np.testing.assert_array_equal(out.ravel(), want)
    if not NUMPY_LOG_IS_SIMD:  # this CPU: numpy's log is the C library's
        np.testing.assert_array_equal(out, T._log_divide_reference(a, b, 0.75))


@pytest.mark.parametrize("layout", ["fortran", "strided", "transposed"])
def test_log_divide_any_layout(rng, log_path, layout):
    """Views that are not C-contiguous (the numpy path walks flat chunks of the output): the
    result is C-ordered and equals the contiguous call's, element for element."""
    a, b = rng.uniform(-0.7, 3.0, BIG), rng.uniform(-0.7, 3.0, BIG)
    view = {"fortran": np.asfortranarray, "strided": lambda x: x[:, ::2, ::3],
            "transposed": lambda x: x.transpose(2, 0, 1)}[layout]
    out = T.log_divide(view(a), view(b), 0.75)
    want = T.log_divide(np.ascontiguousarray(view(a)), np.ascontiguousarray(view(b)), 0.75)
    np.testing.assert_array_equal(out, want)
    assert out.flags.c_contiguous and out.shape == view(a).shape


def test_log_divide_is_faithful(rng, log_path):
    """Either path: each log within one ulp of the true value (numpy's SIMD log, < 0.6 ulp
    measured), so the difference is within one ulp of each of the C library's (faithful)
    logs plus the subtraction's rounding."""
    a = np.concatenate([rng.uniform(-0.99, 3.0, 20000), np.exp(rng.uniform(-700, 700, 20000))])
    b = rng.permutation(a)
    out = T.log_divide(a, b)
    la = np.array([math.log(x + 1.0) for x in a])
    lb = np.array([math.log(y + 1.0) for y in b])
    bound = 2 * (np.spacing(np.abs(la)) + np.spacing(np.abs(lb))) + np.spacing(np.abs(la - lb))
    assert (np.abs(out - (la - lb)) <= bound).all()


def test_log_divide_official_form_loses_sign():
    """The documented counter-example: a = -3, b = 3 gives 0 although a / b = -1."""
    assert T.log_divide([-3.0], [3.0], absolute=True)[0] == 0.0
    assert T.log_divide([3.0], [1.0])[0] == pytest.approx(math.log(2.0))


# ---------------------------------------------------------------------------------------------
# local multiplication
# ---------------------------------------------------------------------------------------------

LM_CASES = [(P, d, norm) for P in (1, 3, 5) for d in (1, 2) for norm in T.NORMALIZATIONS]


@pytest.mark.parametrize("patch, dilation, normalize", LM_CASES)
def test_local_multiply_vs_loop(rng, patch, dilation, normalize):
    a, b = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    expected = _loop_local_multiply(a, b, patch, dilation, normalize)
    kw = {"dilation": dilation, "normalize": normalize}
    assert_close(T.local_multiply(a, b, patch, **kw), expected)
    assert_close(T._local_multiply_reference(a, b, patch, **kw), expected)


@pytest.mark.parametrize("shape, patch, dilation", [
    ((1, 2, 3, 4), 7, 1),   # shifts wholly outside the frame
    ((2, 1, 1, 5), 3, 2),   # a single row
    ((1, 3, 6, 1), 5, 1),   # a single column
    ((1, 4, 2, 2), 1, 3),   # P = 1: the per-pixel dot product
])
def test_local_multiply_small_frames(rng, shape, patch, dilation):
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    assert_close(T.local_multiply(a, b, patch, dilation=dilation),
                 _loop_local_multiply(a, b, patch, dilation))
    g = rng.standard_normal((shape[0], patch * patch, *shape[2:]))
    for fast, ref in zip(T.local_multiply_backward(g, a, b, patch, dilation=dilation),
                         T._local_multiply_backward_reference(g, a, b, patch, dilation=dilation)):
        assert_close(fast, ref)


@pytest.mark.parametrize("patch, dilation, normalize", LM_CASES)
def test_local_multiply_backward(rng, patch, dilation, normalize):
    a, b = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    kw = {"dilation": dilation, "normalize": normalize}
    g = rng.standard_normal((SHAPE[0], patch * patch, *SHAPE[2:]))
    fast = T.local_multiply_backward(g, a, b, patch, **kw)
    for f, r in zip(fast, T._local_multiply_backward_reference(g, a, b, patch, **kw)):
        assert_close(f, r)
    gradcheck(lambda x, y: T.local_multiply(x, y, patch, **kw), [a, b], g,
              lambda go, x, y: T.local_multiply_backward(go, x, y, patch, **kw), max_checks=40)


@pytest.mark.torch
@pytest.mark.parametrize("patch, dilation, normalize", LM_CASES)
def test_local_multiply_vs_torch(torch, rng, patch, dilation, normalize):
    from lmref.peers import torch_temporal as P
    a, b = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    kw = {"patch_size": patch, "dilation": dilation, "normalize": normalize}
    g = rng.standard_normal((SHAPE[0], patch * patch, *SHAPE[2:]))
    out, grads = run_peer(P.local_multiply, (a, b), kw, g)
    assert_close(T.local_multiply(a, b, **kw), out)
    for k, (mine, theirs) in enumerate(zip(T.local_multiply_backward(g, a, b, **kw), grads)):
        assert_close(mine, theirs, msg=f"gradient of input {k}")


@pytest.mark.parametrize("dilation", [1, 2])
def test_local_multiply_displacement_order_one_hot(dilation):
    """Channel (i+r)*P + (j+r) at (h, w) sees b at (h + i d, w + j d): i rows (down), j columns."""
    P, H, W, hb, wb = 3, 7, 8, 3, 4
    r = P // 2
    a = np.ones((1, 1, H, W))
    b = np.zeros((1, 1, H, W))
    b[0, 0, hb, wb] = 1.0
    out = T.local_multiply(a, b, P, dilation=dilation)
    corr = out.reshape(1, P, P, H, W)  # the spatial_correlation_sampler layout
    for i in range(-r, r + 1):
        for j in range(-r, r + 1):
            expected = np.zeros((H, W))
            expected[hb - i * dilation, wb - j * dilation] = 1.0
            np.testing.assert_array_equal(out[0, (i + r) * P + (j + r)], expected)
            np.testing.assert_array_equal(corr[0, i + r, j + r], expected)
    # displacement (i, j) = (-1, +1): b one row up and one column right is channel 2
    assert out[0, 2, hb + dilation, wb - dilation] == 1.0


def test_local_multiply_l2_eps_under_the_root(rng):
    a = 1e-3 * rng.standard_normal((1, 3, 4, 4))
    b = 1e-3 * rng.standard_normal((1, 3, 4, 4))
    a[0, :, 1, 2] = 0.0  # an all-zero pixel: 0, never NaN
    na = a / np.sqrt((a ** 2).sum(1, keepdims=True) + 1e-6)
    nb = b / np.sqrt((b ** 2).sum(1, keepdims=True) + 1e-6)
    out = T.local_multiply(a, b, 3, normalize="l2")
    assert np.isfinite(out).all() and (out[0, :, 1, 2] == 0).all()
    assert_close(out, T.local_multiply(na, nb, 3))
    eps_outside = a / (np.sqrt((a ** 2).sum(1, keepdims=True)) + 1e-6)
    assert not np.allclose(T.local_multiply(eps_outside, nb, 3), out, rtol=1e-3)


def test_local_multiply_channels_is_sum_over_c(rng):
    a, b = rng.standard_normal(SHAPE), rng.standard_normal(SHAPE)
    assert_close(T.local_multiply(a, b, 3, normalize="channels"),
                 T.local_multiply(a, b, 3) / SHAPE[1])


def test_local_multiply_independent_of_thread_count(rng):
    a, b = rng.standard_normal((3, 4, 9, 7)), rng.standard_normal((3, 4, 9, 7))
    g = rng.standard_normal((3, 25, 9, 7))
    kw = {"dilation": 1, "normalize": "l2"}
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = (T.local_multiply(a, b, 5, **kw), *T.local_multiply_backward(g, a, b, 5, **kw))
    finally:
        numba.set_num_threads(before)
    many = (T.local_multiply(a, b, 5, **kw), *T.local_multiply_backward(g, a, b, 5, **kw))
    for x, y in zip(one, many):
        np.testing.assert_array_equal(x, y)


@settings(max_examples=25, deadline=None)
@given(local_multiply_args())
def test_local_multiply_property(case):
    (a, b), kw = case
    assert_close(T.local_multiply(a, b, **kw), T._local_multiply_reference(a, b, **kw))
    g = np.random.default_rng(0).standard_normal((a.shape[0], kw["patch_size"] ** 2, *a.shape[2:]))
    for f, r in zip(T.local_multiply_backward(g, a, b, **kw),
                    T._local_multiply_backward_reference(g, a, b, **kw)):
        assert_close(f, r)


# ---------------------------------------------------------------------------------------------
# arithmetic_features
# ---------------------------------------------------------------------------------------------

def _clip(rng, shape=(2, 5, 3, 4, 4)):
    return rng.uniform(-0.5, 2.0, shape)  # frames + 1 > 0: the seed's log-division is defined


@pytest.mark.parametrize("z", [1, 2, 4])
def test_arithmetic_features_seed_is_the_composition(rng, z):
    clip = _clip(rng)
    out = T.arithmetic_features(clip, z, patch_size=3)
    c, n_t = clip.shape[2], clip.shape[:2]
    assert out.shape == (*n_t, z, 3 * c + 9, 4, 4)
    ctx = T.context_span(clip, z)
    for t in range(clip.shape[1]):
        for k in range(z):
            A, B = clip[:, t], ctx[:, t, k]
            expected = np.concatenate([A + B, A - B, T.local_multiply(A, B, 3),
                                       np.log(A + 1) - np.log(B + 1)], axis=1)
            assert_close(out[:, t, k], expected)


@pytest.mark.torch
@pytest.mark.parametrize("layout, z", [("seed", 1), ("seed", 2), ("seed", 3), ("atm", 1),
                                       ("atm", 3), ("atm", 5)])
@pytest.mark.parametrize("ops", [T.ARITHMETIC_OPS, ("div", "mul")])
def test_arithmetic_features_vs_official_blocks(torch, rng, layout, z, ops):
    """The torch peer builds the official x_pre / x_post (pad + unfold) for layout='atm'."""
    from lmref.peers import torch_temporal as P
    clip = _clip(rng, (2, 4, 3, 5, 5))
    kw = {"ops": ops, "patch_size": 3, "layout": layout}
    assert_close(T.arithmetic_features(clip, z, **kw),
                 P.arithmetic_features(torch.from_numpy(clip), z, **kw))
    assert_close(T.arithmetic_features(clip[0], z, **kw),
                 P.arithmetic_features(torch.from_numpy(clip[0]), z, **kw))


def test_arithmetic_features_atm_operand_order(rng):
    clip = rng.standard_normal((1, 4, 2, 3, 3))
    # Z > 1: x_post = context, x_pre = anchor: sub = context - anchor, anchor in the middle
    sub = T.arithmetic_features(clip, 3, ops=("sub",), layout="atm")
    assert_close(sub[0, 1, 2], clip[0, 2] - clip[0, 1])
    assert (sub[0, :, 1] == 0).all()
    assert_close(sub[0, 0, 0], -clip[0, 0])  # zero frame before the clip
    # Z = 1: x_post = anchor, x_pre = previous frame: sub = anchor - previous
    sub1 = T.arithmetic_features(clip, 1, ops=("sub",), layout="atm")
    assert_close(sub1[0, 2, 0], clip[0, 2] - clip[0, 1])
    assert (sub1[0, 0, 0] == 0).all()  # the first frame is paired with itself
    mul1 = T.arithmetic_features(clip, 1, ops=("mul",), patch_size=3, layout="atm")
    assert_close(mul1[0, 2, 0], T.local_multiply(clip[:, 1], clip[:, 2], 3, normalize="l2")[0])


def test_arithmetic_features_options_follow_layout(rng):
    clip = rng.standard_normal((1, 3, 2, 3, 3))  # negative values: only log1p(|.|) is defined
    atm = T.arithmetic_features(clip, 3, ops=("div", "mul"), patch_size=3, layout="atm")
    explicit = T.arithmetic_features(clip, 3, ops=("div", "mul"), patch_size=3, layout="atm",
                                     normalize="l2", absolute=True)
    np.testing.assert_array_equal(atm, explicit)
    raw = T.arithmetic_features(clip, 3, ops=("mul",), patch_size=3, layout="atm",
                                normalize="none")
    assert not np.allclose(raw, atm[:, :, :, 2:])
    with pytest.raises(ValueError, match=r"frames \+ eps > 0"):
        T.arithmetic_features(clip, 2, ops=("div",))
    seed_abs = T.arithmetic_features(clip, 2, ops=("div",), absolute=True)
    ctx = T.context_span(clip, 2)
    assert_close(seed_abs[0, 0, 1], np.log1p(abs(clip[0, 0])) - np.log1p(abs(ctx[0, 0, 1])))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

A4 = np.zeros((1, 2, 3, 3))
CLIP = np.zeros((1, 3, 2, 3, 3))

ERRORS = [
    (lambda: T.local_multiply(A4, A4, 4), ValueError, "patch_size must be odd"),
    (lambda: T.local_multiply(A4, A4, 0), ValueError, "patch_size must be >= 1"),
    (lambda: T.local_multiply(A4, A4, 2.5), TypeError, "patch_size must be an integer"),
    (lambda: T.local_multiply(A4, np.zeros((1, 2, 3, 4)), 3), ValueError, "same shape"),
    (lambda: T.local_multiply(A4[0], A4[0], 3), ValueError, "a must be 4-dimensional"),
    (lambda: T.local_multiply(A4, A4, 3, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: T.local_multiply(A4, A4, 3, normalize="L2"), ValueError, "normalize must be one of"),
    (lambda: T.local_multiply_backward(np.zeros((1, 4, 3, 3)), A4, A4, 3), ValueError,
     r"grad_out must have shape \(1, 9, 3, 3\)"),
    (lambda: T.local_multiply_backward(np.zeros((1, 9, 3, 3)), A4, A4, 6), ValueError,
     "patch_size must be odd"),
    (lambda: T.add(np.zeros(3), np.zeros(4)), ValueError, r"same shape \(no broadcasting\)"),
    (lambda: T.subtract(np.zeros(3, bool), np.zeros(3)), TypeError, "a must have a real"),
    (lambda: T.add_backward(np.zeros(2), np.zeros(3), np.zeros(3)), ValueError,
     "grad_out must have shape"),
    (lambda: T.log_divide([-1.0, 0.5], [0.0, 0.0]), ValueError, r"a \+ eps > 0.*a\[0\] = -1.0"),
    (lambda: T.log_divide([0.5], [-2.0]), ValueError, r"b \+ eps > 0"),
    (lambda: T.log_divide([0.5], [0.5], eps=-0.5), ValueError, r"a \+ eps > 0"),
    (lambda: T.log_divide([np.nan], [0.5]), ValueError, "a contains 1 non-finite"),
    (lambda: T.log_divide([1.0], [1.0], eps=np.inf), ValueError, "eps must be finite"),
    (lambda: T.log_divide([1.0], [1.0], eps=0.5, absolute=True), ValueError, "fixed at 1"),
    (lambda: T.log_divide([1.0], [1.0], absolute="yes"), TypeError, "absolute must be a bool"),
    (lambda: T.log_divide_backward([1.0], [-3.0], [1.0]), ValueError, r"a \+ eps > 0"),
    (lambda: T.context_span(np.zeros((1, 1, 2, 3, 3)), 1), ValueError, r"T >= 2"),
    (lambda: T.context_span(np.zeros((1, 2, 3, 3)), 1), ValueError, r"T >= 2"),
    (lambda: T.context_span(np.zeros((3, 3, 3)), 1), ValueError,
     "frames must be 4 or 5-dimensional"),
    (lambda: T.context_span(CLIP, 0), ValueError, "z must be >= 1"),
    (lambda: T.context_span(CLIP, 2, layout="atm"), ValueError, "z must be 1 or odd"),
    (lambda: T.context_span(CLIP, 1, layout="official"), ValueError, "layout must be one of"),
    (lambda: T.arithmetic_features(CLIP, 1, ops=("mul", "mul")), ValueError, "must not repeat"),
    (lambda: T.arithmetic_features(CLIP, 1, ops=("prod",)), ValueError,
     "ops entry must be one of"),
    (lambda: T.arithmetic_features(CLIP, 1, ops=()), ValueError, "at least one"),
    (lambda: T.arithmetic_features(CLIP, 1, patch_size=4), ValueError, "patch_size must be odd"),
    (lambda: T.arithmetic_features(CLIP - 1.0, 1), ValueError, r"frames \+ eps > 0"),
    (lambda: T.arithmetic_features(CLIP[:, :1], 1), ValueError, r"T >= 2"),
]


@pytest.mark.parametrize("call, exc, match", ERRORS, ids=[m for _, _, m in ERRORS])
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


HUGE_Z = 10**12 + 1


@pytest.mark.parametrize("call", [
    lambda: T.context_offsets(HUGE_Z),
    lambda: T.context_offsets(HUGE_Z, layout="atm"),
    lambda: T.context_span(CLIP, HUGE_Z),
    lambda: T.arithmetic_features(CLIP, HUGE_Z),
    lambda: T.arithmetic_features(CLIP, HUGE_Z, ops=("add",), layout="atm"),
], ids=["offsets", "offsets-atm", "span", "features", "features-atm"])
def test_huge_z_is_refused_by_the_memory_guard_naming_z(call):
    with pytest.raises(ValueError, match=rf"z={HUGE_Z}\b.*would need .* GiB"):
        call()


def test_z_guard_follows_lmref_max_bytes(monkeypatch):
    """The guard counts the real output (N, T, Z, C, H, W), not a fixed bound on z."""
    clip = np.zeros((1, 2, 1, 2, 2))  # 8 float64 per context frame: 64 bytes
    monkeypatch.setenv("LMREF_MAX_BYTES", str(64 * 100))
    assert T.context_span(clip, 100).shape == (1, 2, 100, 1, 2, 2)
    with pytest.raises(ValueError, match=r"context_span output for z=101 would need"):
        T.context_span(clip, 101)
    with pytest.raises(ValueError, match=r"arithmetic_features output for z=101 would need"):
        T.arithmetic_features(clip, 101, ops=("add",))


def test_even_z_with_atm_layout_is_refused_before_the_guard():
    with pytest.raises(ValueError, match="z must be 1 or odd"):
        T.context_offsets(HUGE_Z + 1, layout="atm")
    with pytest.raises(ValueError, match="z must be 1 or odd"):
        T.arithmetic_features(CLIP, 4, layout="atm")


# ---------------------------------------------------------------------------------------------
# huge-but-valid options and guard messages (issue 18 items 7 and 9)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dilation", [5, 7, 2**63, 10**30])
def test_dilation_beyond_the_frame_leaves_the_centre_only(rng, dilation):
    """Any dilation >= max(H, W) moves every displacement but the centre outside: a valid
    option (2**63 raised OverflowError, then a ValueError), the same result as dilation
    max(H, W), forward and backward."""
    a, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))
    g = rng.standard_normal((2, 9, 4, 5))
    out = T.local_multiply(a, b, 3, dilation=dilation)
    np.testing.assert_array_equal(out, T.local_multiply(a, b, 3, dilation=5))
    centre = np.zeros_like(out)
    centre[:, 4] = (a * b).sum(axis=1)
    assert_close(out, centre)
    np.testing.assert_array_equal(out, T._local_multiply_reference(a, b, 3, dilation=dilation))
    for got, want in zip(T.local_multiply_backward(g, a, b, 3, dilation=dilation),
                         T.local_multiply_backward(g, a, b, 3, dilation=5)):
        np.testing.assert_array_equal(got, want)
    feats = T.arithmetic_features(rng.uniform(0, 1, (1, 2, 3, 4, 5)), 1, ops=("mul",),
                                  patch_size=3, dilation=dilation)
    assert np.count_nonzero(feats[:, :, :, [0, 1, 2, 3, 5, 6, 7, 8]]) == 0


@pytest.mark.parametrize("call", [
    lambda: T.local_multiply(A4, A4, 10**6 + 1),
    lambda: T.local_multiply_backward(np.zeros((1, 1, 3, 3)), A4, A4, 10**6 + 1),
], ids=["forward", "backward"])
def test_huge_patch_size_guard_names_patch_size(call):
    with pytest.raises(ValueError, match=r"^patch_size=1000001 .*would need .* GiB"):
        call()


# ---------------------------------------------------------------------------------------------
# the parallel element-wise path (arrays of more than one chunk)
# ---------------------------------------------------------------------------------------------

BIG = (3, 5, T._CHUNK // 4 + 7)  # a little over 3.75 chunks: 16 blocks, the last of 105


@pytest.mark.parametrize("op,mode", [(T.add, T._ADD), (T.subtract, T._SUB)])
@pytest.mark.parametrize("shape", [(), (3, 5), (2, 4, 5, 5), BIG])
def test_add_subtract_have_the_serial_kernel_bits_and_never_warn(rng, op, mode, shape):
    """At every size (serial and parallel paths) the bits of the serial kernel, a NaN
    operand's payload, signed zeros and inf - inf (NaN, without NumPy's RuntimeWarning)
    included; where both operands are NaN, IEEE 754 leaves the payload open, so either
    operand's is accepted (this kernel gives the first's on this machine; NumPy's ufunc gives
    the second's at some positions); a 0-d input gives a 0-d array."""
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    if a.size > 1:
        payload = np.arange(flat_a.size, dtype=np.uint64)
        flat_a[::3] = (payload[::3] + np.uint64(0x7FF8000000000001)).view(np.float64)
        flat_b[::2] = (payload[::2] + np.uint64(0xFFF8000000000100)).view(np.float64)
        flat_a[1::7], flat_b[1::7] = -0.0, 0.0
        flat_a[5::11], flat_b[5::11] = np.inf, np.inf if mode == T._SUB else -np.inf
    want = np.empty(a.size)
    T._elementwise_range(flat_a, flat_b, mode, 0.0, want, 0, a.size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = op(a, b)
    assert type(got) is np.ndarray and got.shape == shape
    bits, a_bits, b_bits = (v.reshape(-1).view(np.int64) for v in (got, a, b))
    both = np.isnan(flat_a) & np.isnan(flat_b)
    np.testing.assert_array_equal(bits[~both], want.view(np.int64)[~both])
    assert ((bits[both] == a_bits[both]) | (bits[both] == b_bits[both])).all()


@pytest.mark.parametrize("absolute", [False, True])
def test_parallel_elementwise_equals_serial_bitwise(rng, absolute):
    """Chunks run in parallel; each element is computed alone, so the bits are those of one
    serial pass (and of one thread)."""
    a, b = rng.uniform(-0.9, 3.0, BIG), rng.uniform(-0.9, 3.0, BIG)
    g = rng.standard_normal(BIG)
    mode = T._LOG1P_ABS if absolute else T._LOG_EPS
    fwd = T.log_divide(a, b, absolute=absolute)
    serial = np.empty(a.size)
    assert T._elementwise_range(a.ravel(), b.ravel(), mode, 1.0, serial, 0, a.size) == 0
    if absolute or not NUMPY_LOG_IS_SIMD:  # the numba kernel ran
        np.testing.assert_array_equal(fwd.ravel(), serial)
    assert_close(fwd, T._log_divide_reference(a, b, absolute=absolute))
    ga, gb = T.log_divide_backward(g, a, b, absolute=absolute)
    sa, sb = np.empty(a.size), np.empty(a.size)
    assert T._log_divide_grad_range(g.ravel(), a.ravel(), b.ravel(), mode, 1.0, sa, sb, 0,
                                    a.size) == 0
    np.testing.assert_array_equal(ga.ravel(), sa)
    np.testing.assert_array_equal(gb.ravel(), sb)
    # the vectorised (branch-free, IEEE-division) kernel gives the plain quotients' bits
    if absolute:
        want_a, want_b = g * np.sign(a) / (1.0 + abs(a)), -g * np.sign(b) / (1.0 + abs(b))
    else:
        want_a, want_b = g / (a + 1.0), -g / (b + 1.0)
    np.testing.assert_array_equal(ga, want_a)
    np.testing.assert_array_equal(gb, want_b)
    np.testing.assert_array_equal(T.add(a, b), a + b)  # blocks split over the threads
    np.testing.assert_array_equal(T.subtract(a, b), a - b)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(T.log_divide(a, b, absolute=absolute), fwd)
        np.testing.assert_array_equal(T.add(a, b), a + b)
        np.testing.assert_array_equal(T.subtract(a, b), a - b)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("where, value, match", [
    ((2, 4, -1), -1.5, r"log_divide needs b \+ eps > 0.*b\[2, 4, \d+\] = -1.5"),
    ((0, 0, 0), np.nan, r"b contains 1 non-finite"),
    ((1, 3, 5), -np.inf, r"b contains 1 non-finite"),
    ((2, 4, -1), -1.0, r"b\[2, 4, \d+\] = -1.0"),  # b + eps = 0: log gives -inf
])
def test_fused_domain_check_names_the_element(rng, log_path, where, value, match):
    """The domain is checked without a pass of its own (the kernels count; numpy's forward
    passes read their result's sum): a single bad element anywhere still raises the named
    error, forward and backward."""
    a, b = rng.uniform(0.0, 2.0, BIG), rng.uniform(0.0, 2.0, BIG)
    b[where] = value
    with pytest.raises(ValueError, match=match):
        T.log_divide(a, b)
    with pytest.raises(ValueError, match=match):
        T.log_divide_backward(np.ones(BIG), a, b)
    with pytest.raises(ValueError, match=match.replace("b", "a")):
        T.log_divide_backward(np.ones(BIG), b, a)


def test_log_divide_domain_edges_in_the_fused_test(log_path):
    """The domain is finite ``x`` with ``x + eps > 0`` (_in_log_domain of both operands in the
    kernels; numpy's result-sum test agrees): a finite ``x`` whose ``x + eps`` overflows is in
    the domain (log gives inf)."""
    eps = 0.5
    tiny = np.nextafter(-eps, 0.0)  # just inside: x + eps is the smallest positive step
    a = np.array([tiny, 1.7e308, 2.0])
    b = np.array([1.0, 1.0, tiny])
    out = T.log_divide(a, b, eps)
    with np.errstate(over="ignore"):
        want = (np.log(a + eps) - np.log(b + eps) if log_path == "numpy" else
                [math.log(x + eps) - math.log(y + eps) for x, y in zip(a, b)])
    np.testing.assert_array_equal(out, want)
    assert T.log_divide(np.array([1.7e308]), np.array([1.0]), 1e308)[0] == np.inf
    for bad in (-eps, np.inf, np.nan, -1.0):
        with pytest.raises(ValueError, match="a \\+ eps > 0|a must be finite|finite"):
            T.log_divide(np.array([1.0, bad]), np.ones(2), eps)
        with pytest.raises(ValueError, match="b \\+ eps > 0|b must be finite|finite"):
            T.log_divide_backward(np.ones(2), np.ones(2), np.array([bad, 1.0]), eps)
