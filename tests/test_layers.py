"""lmref.layers: ReLU, max/average pooling (forward, backward, PyTorch semantics) and the
deterministic feature extractor."""
import itertools

import numpy as np
import pytest

from lmref import layers as L
from lmref.peers import torch_available
from lmref.testing import assert_close, gradcheck

needs_torch = pytest.mark.skipif(not torch_available(),
                                 reason="PyTorch (the cross-check peer) is not installed")

# (kernel_size, stride, padding, dilation, ceil_mode): overlapping, strided, padded, dilated,
# rectangular, ceil-mode windows (incl. a last window that would start in the right padding)
MAX_CASES = [
    (2, None, 0, 1, False), (3, 1, 1, 1, False), (3, 2, 1, 1, True), ((3, 2), (2, 1), (1, 0), 1,
                                                                       False),
    (2, 3, 1, 1, True), (3, 2, 1, 2, False), ((2, 3), 2, (1, 1), (2, 1), True), (1, 2, 0, 1, True),
]
AVG_CASES = [
    (2, None, 0, False, True), (3, 1, 1, False, True), (3, 1, 1, False, False),
    (3, 2, 1, True, True), (3, 2, 1, True, False), ((3, 2), (2, 1), (1, 1), False, False),
    (2, 3, 1, True, True), (2, 3, 1, True, False),
]


def _max_kw(case):
    k, s, p, d, c = case
    return {"kernel_size": k, "stride": s, "padding": p, "dilation": d, "ceil_mode": c}


def _avg_kw(case):
    k, s, p, c, i = case
    return {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": c, "count_include_pad": i}


def _torch_pool(torch, name, x, g, kw):
    import torch.nn.functional as F

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    out = getattr(F, name)(xt, **kw)
    out.backward(torch.from_numpy(g))
    return out.detach().numpy(), xt.grad.numpy()


# --------------------------------------------------------------------------- ReLU

def test_relu_values_nan_and_kink():
    x = np.array([-2.0, -0.0, 0.0, 1.5, np.inf, -np.inf, np.nan])
    out = L.relu(x)
    np.testing.assert_array_equal(out[:6], [0.0, 0.0, 0.0, 1.5, np.inf, 0.0])
    assert np.isnan(out[6])
    g = np.arange(1.0, 8.0)
    np.testing.assert_array_equal(L.relu_backward(g, x)[0], [0, 0, 0, 4, 5, 0, np.nan])
    assert L.relu(3).shape == () and L.relu([[1, -1]]).dtype == np.float64
    np.testing.assert_array_equal(L._relu_reference(x[:6]), out[:6])


@needs_torch
def test_relu_matches_torch_including_nan(torch):
    x = np.array([[-1.0, 0.0, 2.0, np.nan]])
    np.testing.assert_array_equal(L.relu(x), torch.relu(torch.from_numpy(x)).numpy())


def test_relu_backward_is_nan_at_nan_inputs():
    """The derivative is undefined at NaN: the gradient is NaN there, never a silent 0."""
    grad = L.relu_backward(np.ones((2, 3)), np.full((2, 3), np.nan))[0]
    assert grad.shape == (2, 3) and np.isnan(grad).all()
    assert np.isnan(L.relu_backward(2.0, np.nan)[0])
    # x <= 0 still gives 0, even for a non-finite grad_out (as PyTorch)
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    g = np.array([np.nan, np.inf, 3.0, 4.0])
    np.testing.assert_array_equal(L.relu_backward(g, x)[0], [0.0, 0.0, 3.0, np.nan])


@needs_torch
def test_relu_backward_differs_from_torch_only_at_nan(torch):
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    g = np.array([5.0, 6.0, 7.0, 8.0])
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    torch.relu(xt).backward(torch.from_numpy(g))
    ours = L.relu_backward(g, x)[0]
    np.testing.assert_array_equal(ours[:3], xt.grad.numpy()[:3])
    assert np.isnan(ours[3]) and xt.grad.numpy()[3] == 8.0  # torch passes grad_out through


def test_relu_backward_shape_check():
    with pytest.raises(ValueError, match="grad_out must have shape"):
        L.relu_backward(np.ones(3), np.ones(4))


# --------------------------------------------------------------------------- pooling vs torch

@needs_torch
@pytest.mark.parametrize("case", MAX_CASES)
@pytest.mark.parametrize("data", ["normal", "ties", "special"])
def test_max_pool2d_forward_backward_match_torch(torch, rng, case, data):
    x = rng.standard_normal((2, 3, 7, 9))
    if data == "ties":
        x = np.round(x)  # many equal maxima: first in row-major window order wins
    elif data == "special":
        x[0, 0, 1:3, 1:4] = np.nan
        x[1, 2, :, :] = -np.inf
        x[0, 1, 2, :] = np.inf
    kw = _max_kw(case)
    out = L.max_pool2d(x, **kw)
    g = rng.standard_normal(out.shape)
    t_out, t_grad = _torch_pool(torch, "max_pool2d", x, g, kw)
    np.testing.assert_array_equal(out, t_out)  # a max is exact: no tolerance
    np.testing.assert_array_equal(L._max_pool2d_reference(x, **kw), out)
    grad = L.max_pool2d_backward(g, x, **kw)[0]
    assert_close(grad, t_grad, rtol=1e-15, atol=1e-15)
    assert_close(L._max_pool2d_backward_reference(g, x, **kw)[0], grad, rtol=0, atol=0)


@needs_torch
@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool2d_forward_backward_match_torch(torch, rng, case):
    x = rng.standard_normal((2, 3, 7, 9))
    kw = _avg_kw(case)
    out = L.avg_pool2d(x, **kw)
    g = rng.standard_normal(out.shape)
    t_out, t_grad = _torch_pool(torch, "avg_pool2d", x, g, kw)
    assert_close(out, t_out, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(L._avg_pool2d_reference(x, **kw), out)
    grad = L.avg_pool2d_backward(g, x, **kw)[0]
    assert_close(grad, t_grad, rtol=1e-14, atol=1e-15)
    assert_close(L._avg_pool2d_backward_reference(g, x, **kw)[0], grad, rtol=1e-15, atol=1e-16)


@needs_torch
@pytest.mark.parametrize("size,k,s,p,d,ceil", [
    (n, k, s, p, d, c) for n, k, s, d, c in itertools.product((1, 4, 7, 8), (1, 2, 3), (1, 2, 3),
                                                              (1, 2), (False, True))
    for p in range(k // 2 + 1)])
def test_pool_output_size_matches_torch(torch, size, k, s, p, d, ceil):
    import torch.nn.functional as F

    try:
        unsafe = L._has_window_without_taps((1, 1, size, size), k, s, p, d, ceil)
    except ValueError:  # output < 1: torch must refuse too
        unsafe = False
    if unsafe:  # never feed torch 2.13 this geometry (issue 18 item 8c: it reads out of range)
        pytest.skip("a dilated window without in-frame taps: torch 2.13's max_pool2d is broken")
    want = L.pool_output_size(size, k, s, p, d, ceil)
    if want < 1:
        with pytest.raises(RuntimeError):
            F.max_pool2d(torch.zeros(1, 1, size, size, dtype=torch.float64), k, s, p, d, ceil)
        return
    got = F.max_pool2d(torch.zeros(1, 1, size, size, dtype=torch.float64), k, s, p, d, ceil)
    assert got.shape[-1] == want


# --------------------------------------------------------------------------- pooling semantics

def test_max_pool_tie_goes_to_the_first_maximum_and_nan_wins():
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    assert L.max_pool2d(x, 2).item() == 3.0
    np.testing.assert_array_equal(L.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2)[0],
                                  [[[[0.0, 1.0], [0.0, 0.0]]]])
    y = np.array([[[[1.0, np.nan], [5.0, np.nan]]]])  # the last NaN takes the gradient
    assert np.isnan(L.max_pool2d(y, 2).item())
    np.testing.assert_array_equal(L.max_pool2d_backward(np.ones((1, 1, 1, 1)), y, 2)[0],
                                  [[[[0.0, 0.0], [0.0, 1.0]]]])


def test_max_pool_all_minus_inf_window_sends_gradient_to_its_first_element():
    x = np.full((1, 1, 2, 2), -np.inf)
    assert L.max_pool2d(x, 2).item() == -np.inf
    np.testing.assert_array_equal(L.max_pool2d_backward(np.ones((1, 1, 1, 1)), x, 2)[0],
                                  [[[[1.0, 0.0], [0.0, 0.0]]]])


def test_max_pool_window_without_in_frame_taps_is_minus_inf_without_gradient():
    x = np.ones((1, 1, 1, 3))  # dilated rows -1 and +1 both miss the single row
    out = L.max_pool2d(x, (2, 1), stride=1, padding=(1, 0), dilation=(2, 1))
    assert out.shape == (1, 1, 1, 3) and np.all(out == -np.inf)
    assert np.all(L.max_pool2d_backward(np.ones(out.shape), x, (2, 1), stride=1, padding=(1, 0),
                                        dilation=(2, 1))[0] == 0.0)


def test_avg_pool_divisors():
    x = np.ones((1, 2, 3))  # (C, H, W) input: 3-D like torch
    # 2 x 2 windows, stride 2, padding 1: every window has one in-frame row
    inc = L.avg_pool2d(x, 2, padding=1, count_include_pad=True)
    exc = L.avg_pool2d(x, 2, padding=1, count_include_pad=False)
    assert inc.shape == (1, 2, 2)
    np.testing.assert_array_equal(inc, [[[0.25, 0.5], [0.25, 0.5]]])
    np.testing.assert_array_equal(exc, np.ones((1, 2, 2)))


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("case", range(4))
def test_pool_backward_gradcheck(rng, op, case):
    x = rng.standard_normal((1, 2, 6, 7))
    kw = _max_kw(MAX_CASES[case]) if op == "max" else _avg_kw(AVG_CASES[case + 3])
    fwd = L.max_pool2d if op == "max" else L.avg_pool2d
    bwd = L.max_pool2d_backward if op == "max" else L.avg_pool2d_backward
    g = rng.standard_normal(fwd(x, **kw).shape)
    gradcheck(lambda a: fwd(a, **kw), [x], g, lambda go, a: bwd(go, a, **kw), max_checks=None)


def test_relu_gradcheck(rng):
    x = rng.standard_normal((3, 4))
    x[np.abs(x) < 0.01] = 0.5
    gradcheck(L.relu, [x], rng.standard_normal((3, 4)), L.relu_backward, max_checks=None)


def test_fast_pool_equals_reference_on_4d_and_3d(rng):
    for x in (rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((3, 9, 8))):
        kw = _max_kw(MAX_CASES[6])
        np.testing.assert_array_equal(L.max_pool2d(x, **kw), L._max_pool2d_reference(x, **kw))
        kw = _avg_kw(AVG_CASES[5])
        np.testing.assert_array_equal(L.avg_pool2d(x, **kw), L._avg_pool2d_reference(x, **kw))
        assert L.max_pool2d(x, 2).ndim == x.ndim


@pytest.mark.parametrize("width", [14, 15, 16, 17, 18, 40])
@pytest.mark.parametrize("kw", [{"kernel_size": 2, "stride": 2},
                                {"kernel_size": 3, "stride": 2, "padding": 1},
                                {"kernel_size": (2, 3), "stride": 1, "count_include_pad": False}])
def test_avg_pool_runs_short_and_long_are_the_reference(rng, width, kw):
    """Interior runs shorter than _SHORT_RUN windows go window by window, longer ones tap by
    tap over the run: both give the reference's bits (runs of 6 to 38 windows here)."""
    x = rng.standard_normal((2, 3, 6, width))
    np.testing.assert_array_equal(L.avg_pool2d(x, **kw), L._avg_pool2d_reference(x, **kw))
    assert L._SHORT_RUN == 8


@pytest.mark.parametrize("width", [14, 15, 16, 17, 18, 40])
@pytest.mark.parametrize("kw", [{"kernel_size": 2, "stride": 2},
                                {"kernel_size": 3, "stride": 2, "padding": 1},
                                {"kernel_size": (2, 4), "stride": 1, "dilation": (2, 1)},
                                {"kernel_size": 2, "stride": 2, "dilation": 2, "padding": 1}])
def test_max_pool_runs_short_and_long_are_the_reference(rng, width, kw):
    """Interior runs shorter than _SHORT_RUN windows go window by window with the border,
    longer ones tap by tap (or the unrolled 3-wide scan): both give the reference's values
    and PyTorch's choice among ties and NaNs (runs of 3 to 37 windows here; the gradient
    shows which element each window took)."""
    x = np.round(rng.standard_normal((2, 3, 6, width)))  # many ties, +0.0 and -0.0 among them
    x[0, 1] = np.where(rng.random((6, width)) < 0.5, -0.0, 0.0)  # ties told apart by the bits
    x[0, 0, 1:3, 2:6] = np.array([0x7FF8000000000001 + k for k in range(8)],
                                 np.uint64).view(np.float64).reshape(2, 4)  # NaN payloads
    x[1, 1, :, ::3] = -np.inf
    x[0, 2, 2, :] = np.inf
    out = L.max_pool2d(x, **kw)
    want = L._max_pool2d_reference(x, **kw)
    np.testing.assert_array_equal(out.view(np.int64), want.view(np.int64))
    g = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(L.max_pool2d_backward(g, x, **kw)[0],
                                  L._max_pool2d_backward_reference(g, x, **kw)[0])


@pytest.mark.parametrize("call,exc,match", [
    (lambda: L.max_pool2d(np.zeros((1, 1, 5, 5)), 3, padding=-1), ValueError,
     "padding must be >= 0"),
    (lambda: L.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, padding=((0, 1), (2, -1))), ValueError,
     r"padding\[1\]\[1\] must be >= 0"),
    (lambda: L.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, padding="full"), ValueError,
     "padding must be one of"),
    (lambda: L.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, divisor_override=0), ValueError,
     "divisor_override must not be 0"),
    (lambda: L.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, divisor_override=1.5), TypeError,
     "divisor_override must be an integer"),
    (lambda: L.avg_pool2d(np.zeros((1, 1, 5, 5)), 2, divisor_override=2**63), ValueError,
     "divisor_override must be <="),
    (lambda: L.max_pool2d(np.zeros((1, 1, 2, 2)), 3), ValueError, "too small"),
    (lambda: L.max_pool2d(np.zeros((5, 5)), 2), ValueError, "x must be 3 or 4-dimensional"),
    (lambda: L.max_pool2d(np.zeros((1, 5, 5)), 0), ValueError, "kernel_size must be >= 1"),
    (lambda: L.max_pool2d(np.zeros((1, 5, 5)), 2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: L.max_pool2d(np.zeros((1, 5, 5)), (2, 2, 2)), ValueError, "kernel_size must be"),
    (lambda: L.max_pool2d(np.zeros((1, 5, 5)), 2, ceil_mode=1), TypeError, "ceil_mode must be"),
    (lambda: L.avg_pool2d(np.zeros((1, 5, 5)), 2, count_include_pad="yes"), TypeError,
     "count_include_pad must be"),
    (lambda: L.max_pool2d_backward(np.zeros((1, 3, 3)), np.zeros((1, 5, 5)), 2), ValueError,
     "grad_out must have shape"),
    (lambda: L.avg_pool2d(np.zeros((1, 5, 5), dtype=complex), 2), TypeError,
     "x must have a real"),
])
def test_bad_pool_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("name", ["size", "kernel_size", "stride", "padding", "dilation"])
@pytest.mark.parametrize("value,exc,what", [
    (2.5, TypeError, "must be an integer"), ("3", TypeError, "must be an integer"),
    (None, TypeError, "must be an integer"), (-1, ValueError, "must be >= "),
])
def test_pool_output_size_validates_each_argument(name, value, exc, what):
    args = {"size": 7, "kernel_size": 3, "stride": 2, "padding": 1, "dilation": 1}
    args[name] = value
    with pytest.raises(exc, match=rf"^{name} {what}"):
        L.pool_output_size(**args)


def test_pool_output_size_accepts_integral_values():
    assert L.pool_output_size(np.int64(7), 3.0, 2, 1, ceil_mode=np.True_) == 4
    with pytest.raises(TypeError, match="ceil_mode must be a bool"):
        L.pool_output_size(7, 3, 2, 1, 1, "yes")


# --------------------------------------------------------------------------- feature extractor

def test_feature_extractor_is_deterministic_and_strided(rng):
    image = rng.random((37, 50))
    f1, s1 = L.feature_extractor(3, 5, seed=11)
    f2, _ = L.feature_extractor(3, 5, seed=11)
    f3, _ = L.feature_extractor(3, 5, seed=12)
    out = f1(image)
    assert s1 == f1.stride == 8 and out.shape == (5, 37 // 8, 50 // 8)
    np.testing.assert_array_equal(out, f2(image))
    assert not np.array_equal(out, f3(image))
    assert np.all(out >= 0.0)  # the last stage is ReLU then max pooling
    batched = f1(np.stack([image, image[::-1]])[:, None])
    np.testing.assert_array_equal(batched[0], out)
    assert "depth=3" in repr(f1) and f1.out_channels == 5 and f1.in_channels == 1


def test_feature_extractor_matches_an_explicit_stack(rng):
    from lmref.conv import conv2d

    f, _ = L.feature_extractor(2, 3, seed=5, in_channels=2, padding="valid", pool="avg")
    x = rng.random((2, 20, 22))
    h = x[None]
    for w, b in zip(f.weights, f.biases):
        h = L.avg_pool2d(L.relu(conv2d(h, w, b)), 2)
    np.testing.assert_array_equal(f(x), h[0])
    with pytest.raises(ValueError, match="image must have 2 channel"):
        f(rng.random((20, 22)))


def test_circular_extractor_is_equivariant_to_stride_shifts(rng):
    f, s = L.feature_extractor(2, 4, seed=2, padding_mode="circular")
    x = rng.random((3 * s * 2, 4 * s))
    np.testing.assert_array_equal(f(np.roll(x, (s, -2 * s), axis=(0, 1))),
                                  np.roll(f(x), (1, -2), axis=(1, 2)))


@pytest.mark.parametrize("kw,exc,match", [
    ({"depth": 0}, ValueError, "depth must be >= 1"),
    ({"channels": 0}, ValueError, "channels must be >= 1"),
    ({"seed": -1}, ValueError, "seed must be >= 0"),
    ({"kernel_size": 4}, ValueError, "kernel_size must be odd"),
    ({"padding": "full"}, ValueError, "padding must be one of"),
    ({"pool": "min"}, ValueError, "pool must be one of"),
])
def test_bad_feature_extractor_arguments(kw, exc, match):
    args = {"depth": 2, "channels": 3, "seed": 0}
    args.update(kw)
    with pytest.raises(exc, match=match):
        L.feature_extractor(args.pop("depth"), args.pop("channels"), args.pop("seed"), **args)


HUGE = 10**12 + 1


@pytest.mark.parametrize("name", ["depth", "channels", "kernel_size", "in_channels"])
def test_feature_extractor_memory_guard_names_the_argument(name):
    args = {"depth": 2, "channels": 3, "seed": 0}
    args[name] = HUGE
    with pytest.raises(ValueError, match=rf"\b{name}\b.*LMREF_MAX_BYTES"):
        L.feature_extractor(args.pop("depth"), args.pop("channels"), args.pop("seed"), **args)


def test_feature_extractor_depth_limit_is_the_smallest_image(monkeypatch):
    """Depth d needs images of at least 2^d x 2^d pixels: refused when those exceed the limit."""
    assert L._max_depth() == 15  # 2^15 x 2^15 float64 = 8 GiB, the default limit
    net, stride = L.feature_extractor(15, 1, seed=0, kernel_size=1)
    assert stride == 2**15
    with pytest.raises(ValueError, match=r"depth must be <= 15, got 16"):
        L.feature_extractor(16, 1, seed=0, kernel_size=1)
    monkeypatch.setenv("LMREF_MAX_BYTES", str(8 * 4**5))
    L.feature_extractor(5, 1, seed=0, kernel_size=1)
    with pytest.raises(ValueError, match=r"depth must be <= 5, got 6"):
        L.feature_extractor(6, 1, seed=0, kernel_size=1)


def test_feature_extractor_weight_guard(monkeypatch):
    """Each stage's (channels, C_in, k, k) and all stages together, blaming the right argument."""
    monkeypatch.setenv("LMREF_MAX_BYTES", str(8 * 4**5))  # 1024 float64 values, depth <= 5
    L.feature_extractor(1, 10, seed=0, in_channels=10)  # (10, 10, 3, 3): 900 values
    L.feature_extractor(4, 5, seed=0)  # 4 stages of (5, 5, 3, 3): 900 values
    with pytest.raises(ValueError, match=r"^in_channels would need .*\(10, 12, 3, 3\)"):
        L.feature_extractor(1, 10, seed=0, in_channels=12)
    with pytest.raises(ValueError, match=r"^channels would need .*\(11, 11, 3, 3\)"):
        L.feature_extractor(2, 11, seed=0)
    with pytest.raises(ValueError, match=r"^depth would need .*\(5, 5, 5, 3, 3\)"):
        L.feature_extractor(5, 5, seed=0)
    with pytest.raises(ValueError, match=r"^kernel_size would need .*\(33, 33\)"):
        L.feature_extractor(1, 1, seed=0, kernel_size=33)


# --------------------------------------------------------------------------- issue 18: huge options

def test_huge_kernel_with_huge_padding_returns_at_once():
    """Issue 18 item 0: the first in-frame tap is found by division, not by stepping."""
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    assert L.max_pool2d(x, 10**12, padding=5 * 10**11).tolist() == [[[[24.0]]]]
    grad = L.max_pool2d_backward(np.full((1, 1, 1, 1), 3.0), x, 10**12, padding=5 * 10**11)[0]
    assert grad[0, 0, 4, 4] == 3.0 and grad.sum() == 3.0
    # a huge dilation: only the first tap of each window can be in frame
    big = 10**12
    out = L.max_pool2d(x, 2, stride=big, padding=big, dilation=big)
    assert out.shape == (1, 1, 2, 2) and np.all(out == 0.0)  # every window's one tap: x[0, 0]
    np.testing.assert_array_equal(out, L._max_pool2d_reference(x, 2, big, big, big))


def test_avg_pool_divisor_beyond_int64_is_exact():
    """Issue 18 item 4b: (4e9 + 1)^2 overflows int64; the divisor is the exact product."""
    k, p = 4 * 10**9 + 1, 2 * 10**9
    div = float((4 * 10**9 + 1) ** 2)
    x = np.ones((1, 1, 5, 5))
    assert L.avg_pool2d(x, k, padding=p).item() == 25.0 / div
    assert L._avg_pool2d_reference(x, k, padding=p).item() == 25.0 / div
    grad = L.avg_pool2d_backward(np.ones((1, 1, 1, 1)), x, k, padding=p)[0]
    np.testing.assert_array_equal(grad, np.full(x.shape, 1.0 / div))


@pytest.mark.parametrize("kw", [
    {"kernel_size": 2, "stride": 2**63}, {"kernel_size": 2, "stride": 10**30},
    {"kernel_size": 2**64, "padding": 2**63}, {"kernel_size": (2**70, 3), "padding": (2**69, 1)},
    {"kernel_size": 3, "stride": (1, 2**64), "padding": ((1, 0), (0, 2**62))},
])
@pytest.mark.parametrize("op", ["max", "avg"])
def test_huge_but_valid_int_options(rng, op, kw):
    """Issue 18 item 7: no OverflowError; results equal the exact-integer reference."""
    x = rng.standard_normal((2, 4, 5))
    fwd, bwd, ref, bref = ((L.max_pool2d, L.max_pool2d_backward, L._max_pool2d_reference,
                            L._max_pool2d_backward_reference) if op == "max" else
                           (L.avg_pool2d, L.avg_pool2d_backward, L._avg_pool2d_reference,
                            L._avg_pool2d_backward_reference))
    out = fwd(x, **kw)
    np.testing.assert_array_equal(out, ref(x, **kw))
    g = rng.standard_normal(out.shape)
    np.testing.assert_array_equal(bwd(g, x, **kw)[0], bref(g, x, **kw)[0])


def test_pool_output_size_with_huge_options():
    assert L.pool_output_size(5, 2, 2**63, 0) == 1
    assert L.pool_output_size(5, 2**64, 2**64, 2**63) == 1
    assert L.pool_output_size(5, 2**64, 1, 2**63) == 6
    assert L.pool_output_size(5, 3, 2, (0, 2), ceil_mode=True) == 3


# --------------------------------------------------------------------------- issue 18 item 8c

def test_torch_cross_checks_never_see_windows_without_taps():
    """torch 2.13's max_pool2d reads out of range when a dilated window has no in-frame tap;
    every geometry this module feeds torch has one in every window."""
    assert L._has_window_without_taps((2, 1, 5), (3, 1), None, (1, 0), 2, True)
    assert not L._has_window_without_taps((2, 1, 5), (3, 1), None, (1, 0), 1, True)
    for case in MAX_CASES:
        assert not L._has_window_without_taps((2, 3, 7, 9), **_max_kw(case)), case


@needs_torch
def test_torch_peer_refuses_the_geometry_torch_gets_wrong(torch):
    from lmref.peers import torch_layers as P

    x = torch.ones((2, 1, 5), dtype=torch.float64)
    with pytest.raises(ValueError, match="torch 2.13 reads out of range"):
        P.max_pool2d(x, (3, 1), padding=(1, 0), dilation=2, ceil_mode=True)
    ours = L.max_pool2d(np.ones((2, 1, 5)), (3, 1), padding=(1, 0), dilation=2, ceil_mode=True)
    assert ours.shape == (2, 1, 5) and np.all(ours == -np.inf)
    assert P.max_pool2d(torch.ones((1, 1, 5, 5), dtype=torch.float64), 3, 2, 1).shape == (
        1, 1, 3, 3)


# --------------------------------------------------------------------------- issue 16 section 2

@needs_torch
@pytest.mark.parametrize("op,kw", [
    ("max_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ("max_pool2d", {"kernel_size": (2, 3), "stride": (), "dilation": (2, 1)}),
    ("avg_pool2d", {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                    "count_include_pad": False}),
    ("avg_pool2d", {"kernel_size": (3, 2), "stride": (), "padding": (1, 1)}),
    ("avg_pool2d", {"kernel_size": 3, "stride": 1, "padding": 1, "divisor_override": 4}),
    ("avg_pool2d", {"kernel_size": (2, 3), "stride": 2, "padding": 1, "ceil_mode": True,
                    "divisor_override": -3}),
])
@pytest.mark.parametrize("batched", [True, False])
def test_unbatched_empty_stride_and_divisor_override_match_torch(torch, rng, op, kw, batched):
    """Issue 16: (C, H, W) inputs give (C, H_out, W_out) as torch; stride=() is the kernel
    size; divisor_override divides every window (backward too)."""
    x = rng.standard_normal((2, 3, 7, 9) if batched else (3, 7, 9))
    out = getattr(L, op)(x, **kw)
    g = rng.standard_normal(out.shape)
    t_out, t_grad = _torch_pool(torch, op, x, g, kw)
    assert out.shape == t_out.shape and out.ndim == x.ndim
    grad = getattr(L, op + "_backward")(g, x, **kw)[0]
    ref = getattr(L, f"_{op}_reference")(x, **kw)
    np.testing.assert_array_equal(ref, out)
    np.testing.assert_array_equal(getattr(L, f"_{op}_backward_reference")(g, x, **kw)[0], grad)
    if op == "max_pool2d":
        np.testing.assert_array_equal(out, t_out)
        np.testing.assert_array_equal(grad, t_grad)
    else:
        assert_close(out, t_out, rtol=1e-15, atol=1e-15)
        assert_close(grad, t_grad, rtol=1e-14, atol=1e-15)


def _torch_padded(torch, x, pads, value):
    import torch.nn.functional as F

    (t, b), (l, r) = pads
    return F.pad(torch.from_numpy(x), (l, r, t, b), value=value)


@needs_torch
@pytest.mark.parametrize("pads", [((0, 2), (1, 0)), ((3, 1), (2, 2)), ((0, 0), (0, 5))])
def test_per_side_and_large_padding_equal_torch_on_a_padded_input(torch, rng, pads):
    """Explicit per-side pairs, and padding above kernel_size // 2 (torch refuses it): equal
    to torch pooling F.pad's -inf (max) or zero (average, counting the padding) padded input."""
    import torch.nn.functional as F

    x = rng.standard_normal((2, 3, 6, 7))
    kw = {"kernel_size": (3, 4), "stride": (2, 1)}
    np.testing.assert_array_equal(
        L.max_pool2d(x, padding=pads, **kw),
        F.max_pool2d(_torch_padded(torch, x, pads, -np.inf), **kw).numpy())
    assert_close(L.avg_pool2d(x, padding=pads, **kw),
                 F.avg_pool2d(_torch_padded(torch, x, pads, 0.0), **kw).numpy(),
                 rtol=1e-15, atol=1e-15)
    for op in ("max_pool2d", "avg_pool2d"):
        for extra in ({}, {"ceil_mode": True}):
            kwp = dict(kw, padding=pads, **extra)
            if op == "avg_pool2d":
                kwp["count_include_pad"] = False
            out = getattr(L, op)(x, **kwp)
            np.testing.assert_array_equal(out, getattr(L, f"_{op}_reference")(x, **kwp))
            g = rng.standard_normal(out.shape)
            np.testing.assert_array_equal(
                getattr(L, op + "_backward")(g, x, **kwp)[0],
                getattr(L, f"_{op}_backward_reference")(g, x, **kwp)[0])


def test_window_entirely_in_large_padding():
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    out = L.max_pool2d(x, 2, stride=2, padding=((2, 0), (0, 0)))
    np.testing.assert_array_equal(out, [[[[-np.inf], [3.0]]]])
    np.testing.assert_array_equal(L.max_pool2d_backward(np.ones((1, 1, 2, 1)), x, 2, 2,
                                                        ((2, 0), (0, 0)))[0],
                                  [[[[0.0, 0.0], [0.0, 1.0]]]])
    avg = L.avg_pool2d(x, 2, stride=2, padding=((2, 0), (0, 0)))
    np.testing.assert_array_equal(avg, [[[[0.0], [1.5]]]])
    exc = L.avg_pool2d(x, 2, stride=2, padding=((2, 0), (0, 0)), count_include_pad=False)
    np.testing.assert_array_equal(exc, [[[[0.0], [1.5]]]])


@pytest.mark.parametrize("name,extra", [("same", "after"), ("same_upper", "after"),
                                        ("same_lower", "before")])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_padding_strings_are_onnx_auto_pad(rng, name, extra, stride):
    from lmref._padding import same_pads

    x = rng.standard_normal((1, 2, 7, 8))
    pads = tuple(same_pads(n, 4, stride, extra=extra) for n in (7, 8))
    for op in ("max_pool2d", "avg_pool2d"):
        out = getattr(L, op)(x, 4, stride, padding=name)
        assert out.shape[-2:] == (-(-7 // stride), -(-8 // stride))
        np.testing.assert_array_equal(out, getattr(L, op)(x, 4, stride, padding=pads))
    assert L.max_pool2d(x, 3, 2, padding="valid").shape == L.max_pool2d(x, 3, 2).shape


# --------------------------------------------------------------------------- fast paths (issue 14)

def _same_bits(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and np.array_equal(a.view(np.uint64), b.view(np.uint64))


def _tricky(rng, shape):
    """Small integers (many ties), signed zeros, +-inf and NaNs of both signs."""
    x = rng.integers(-2, 3, shape).astype(np.float64)
    u = rng.random(shape)
    x[u < 0.04] = np.nan
    x[(u >= 0.04) & (u < 0.06)] = -np.nan
    x[(u >= 0.06) & (u < 0.1)] = -np.inf
    x[(u >= 0.1) & (u < 0.12)] = np.inf
    x[(u >= 0.12) & (u < 0.25)] = -0.0
    x[0, 0] = -np.inf  # one all -inf plane: every window's gradient to its first element
    return x


# (kernel_size, stride, padding, dilation, ceil_mode): interior runs with left/right border
# windows, ceil-mode windows in the right padding, dilation, per-side and large padding,
# windows with no interior run at all, stride 1 and 3, a single tap
FAST_CASES = [
    (3, 2, 1, 1, False), (3, 2, 1, 1, True), (2, None, 0, 1, False), (3, 1, 1, 1, False),
    ((3, 2), (2, 3), ((0, 2), (1, 2)), 1, True), (3, 2, 1, 2, True), ((2, 3), 1, (1, 2), (2, 3),
                                                                       False),
    (4, 3, ((3, 3), (3, 3)), 1, True), ((1, 1), (2, 2), 0, 1, False), (13, 1, 6, 1, False),
    (3, 2, "same", 1, False),
]


@pytest.mark.parametrize("case", FAST_CASES)
@pytest.mark.parametrize("parallel", [False, True])
def test_pool_fast_paths_are_the_references_bitwise(rng, monkeypatch, case, parallel):
    """The tap-by-tap interior runs, the window-at-a-time borders and both the serial and the
    parallel launch give exactly the references' bits (NaN rule, ties, signed zeros, -inf)."""
    monkeypatch.setattr(L, "_SERIAL_WORK", 0 if parallel else 2**62)
    x = _tricky(rng, (2, 3, 11, 13))
    kw = _max_kw(case)
    out = L.max_pool2d(x, **kw)
    assert _same_bits(out, L._max_pool2d_reference(x, **kw))
    g = rng.standard_normal(out.shape)
    assert _same_bits(L.max_pool2d_backward(g, x, **kw)[0],
                      L._max_pool2d_backward_reference(g, x, **kw)[0])
    if kw.pop("dilation") == 1:
        for extra in ({"count_include_pad": True}, {"count_include_pad": False},
                      {"divisor_override": -3}):
            assert _same_bits(L.avg_pool2d(x, **kw, **extra),
                              L._avg_pool2d_reference(x, **kw, **extra))


@pytest.mark.parametrize("width,k,s,left,d", [(56, 3, 2, 1, 1), (13, 3, 2, 1, 2), (5, 3, 1, 0, 1),
                                              (4, 4, 3, 3, 1), (9, 2, 3, 4, 2), (7, 1, 1, 0, 1),
                                              (3, 2**31, 1, 2**31 - 1, 1)])
def test_interior_run_is_exactly_the_windows_inside_the_frame(width, k, s, left, d):
    n = L._out_len(width, k, s, left, left, d, False)
    kw, sw, pl, lo, hi = L._Run(width, k, s, left, d, n).args
    inside = [o for o in range(n) if o * s - left >= 0 and o * s - left + (k - 1) * d < width]
    if k > L._SMALL_OPTION:
        assert (lo, hi) == (0, 0)  # huge options: window at a time
    else:
        assert list(range(lo, hi)) == inside
        assert (kw, sw, pl) == ((k, s, left) if inside else (1, 1, 0))


@pytest.mark.parametrize("chunk", [None, 7])
def test_relu_is_np_maximum_bitwise_serial_and_parallel(rng, monkeypatch, chunk):
    if chunk is not None:  # the parallel kernel on a small input, in 14 blocks (the last of 1)
        monkeypatch.setattr(L, "_RELU_CHUNK", chunk)
        monkeypatch.setattr(L, "STREAM_BLOCK", 8)
    x = _tricky(rng, (3, 5, 7))
    x[1, 1, 1] = 5e-324
    for a in (x, x[:, ::2].T, x.astype(np.float32), np.arange(-3, 4), np.float64(-0.0)):
        assert _same_bits(L.relu(a), np.maximum(np.asarray(a, np.float64), 0.0))
    assert _same_bits(L.relu(x), L._relu_reference(x))
    assert L.relu(np.zeros((0, 3))).shape == (0, 3)


@pytest.mark.parametrize("chunk", [None, 7])
def test_relu_backward_kernel_is_the_numpy_form_bitwise(rng, monkeypatch, chunk):
    """The one-pass kernel (serial, and split over the threads) gives the bits of
    ``np.where(x > 0, g, 0.0)`` with ``np.nan`` at NaN ``x`` (whatever NaN ``x`` holds: both
    signs, any payload), ``grad_out``'s own bits (signed zeros, infinities, NaNs) where
    ``x > 0``, and ``+0.0`` elsewhere."""
    if chunk is not None:  # the parallel kernel on a small input, in 14 blocks (the last of 1)
        monkeypatch.setattr(L, "_RELU_CHUNK", chunk)
        monkeypatch.setattr(L, "STREAM_BLOCK", 8)
    x = _tricky(rng, (3, 5, 7))
    x[2, 1, :3] = np.array([0x7FF0000000000001, 0xFFF4000000000000, 0x7FF8DEADBEEF0000],
                           np.uint64).view(np.float64)  # NaN payloads
    g = _tricky(rng, (3, 5, 7))
    g[1] = -0.0
    got = L.relu_backward(g, x)[0]
    assert _same_bits(got, L._relu_backward_reference(g, x)[0])
    assert _same_bits(got[2, 1, :3], np.full(3, np.nan))  # NumPy's NaN, not x's
    with np.errstate(invalid="ignore"):  # a signalling NaN cast to float32
        small = (g.astype(np.float32), x.astype(np.float32))
    for sub in ((g[:, ::2], x[:, ::2]), small):
        assert _same_bits(L.relu_backward(*sub)[0], L._relu_backward_reference(*sub)[0])
    assert L.relu_backward(np.zeros((0, 3)), np.zeros((0, 3)))[0].shape == (0, 3)


def test_cached_window_tables_are_read_only_and_keyed_by_every_option():
    a = L._axis_windows(9, 3, 2, 1, 1, 1, 5)
    assert a is L._axis_windows(9, 3, 2, 1, 1, 1, 5)  # shared: so never writable
    assert not a.first.flags.writeable and not a.stop.flags.writeable
    assert isinstance(a.padded, tuple)
    b = L._axis_windows(9, 3, 2, 1, 0, 1, 5)  # only the right padding differs
    assert a.padded != b.padded


# ---------------------------------------------------------------------------------------------
# memoised pooling plans (a repeated small call checks its arguments once)
# ---------------------------------------------------------------------------------------------

POOL_SPELLINGS = [
    ({"kernel_size": 2}, {"kernel_size": (2, 2)}),
    ({"kernel_size": 3, "stride": 2, "padding": 1}, {"kernel_size": [3, 3], "stride": np.int64(2),
                                                     "padding": (1, 1)}),
    ({"kernel_size": (3, 2), "padding": ((1, 0), (0, 1))}, {"kernel_size": (3, 2),
                                                            "padding": [(1, 0), (0, 1)]}),
    ({"kernel_size": 3, "padding": "same"}, {"kernel_size": 3, "padding": "same"}),
]


@pytest.mark.parametrize("plain,other", POOL_SPELLINGS)
def test_memoised_pool_plans_give_the_checked_results(rng, plain, other):
    """A plan is kept per call pattern (plain ints, strings, tuples; float64 x): the second
    call of a pattern, with other values, and every other spelling of the same options give
    the reference's bits (average pooling's backward: within the 1e-15 of its own test)."""
    for _ in range(2):
        x = rng.standard_normal((2, 3, 7, 6))
        g = rng.standard_normal(L.max_pool2d(x, **plain).shape)
        for kw in (plain, other):
            np.testing.assert_array_equal(L.max_pool2d(x, **kw),
                                          L._max_pool2d_reference(x, **plain))
            np.testing.assert_array_equal(L.avg_pool2d(x, **kw),
                                          L._avg_pool2d_reference(x, **plain))
            np.testing.assert_array_equal(L.max_pool2d_backward(g, x, **kw)[0],
                                          L._max_pool2d_backward_reference(g, x, **plain)[0])
            assert_close(L.avg_pool2d_backward(g, x, **kw)[0],
                         L._avg_pool2d_backward_reference(g, x, **plain)[0], rtol=1e-15,
                         atol=1e-16)
    key = ("max", (2, 3, 7, 6)) + tuple(plain.get(k, d) for k, d in (
        ("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1))) + (False,)
    assert key in L._POOL_PLANS
    plan = L._POOL_PLANS[key]
    assert not plan.rows.first.flags.writeable and not plan.cols.stop.flags.writeable
    assert not L._POOL_PLANS[("avg",) + key[1:5] + (None, False, True)].div.flags.writeable


@pytest.mark.parametrize("call,exc,match", [
    (lambda x: L.max_pool2d(x, 2.5), TypeError, "kernel_size"),
    (lambda x: L.max_pool2d(x, True), TypeError, "kernel_size"),
    (lambda x: L.max_pool2d(x, 2, ceil_mode=0), TypeError, "ceil_mode must be a bool"),
    (lambda x: L.max_pool2d(x, 2, stride=(2, 0)), ValueError, "stride"),
    (lambda x: L.avg_pool2d(x, 2, count_include_pad=1), TypeError, "count_include_pad"),
    (lambda x: L.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override"),
    (lambda x: L.avg_pool2d(x, 2, divisor_override=2.5), TypeError, "divisor_override"),
    (lambda x: L.avg_pool2d_backward(np.ones((1, 2, 3, 3)), x, 2), ValueError, "grad_out"),
    (lambda x: L.max_pool2d(x[..., :1, :1], 2), ValueError, "too small"),
])
def test_pool_errors_are_unchanged_once_a_pattern_is_memoised(call, exc, match):
    """A valid call of the same shape first: the bad spellings (some equal to the memo key of
    a valid one: True == 1, 0 == False) still raise, every time."""
    x = np.ones((1, 2, 4, 4))
    for good in (lambda: L.max_pool2d(x, 2), lambda: L.max_pool2d(x, 1),
                 lambda: L.max_pool2d(x, 2, ceil_mode=False),
                 lambda: L.avg_pool2d(x, 2, count_include_pad=True),
                 lambda: L.avg_pool2d(x, 2, divisor_override=2)):
        good()
    for _ in range(2):
        with pytest.raises(exc, match=match):
            call(x)


def test_memoised_pool_pattern_still_checks_the_allocation_limit(monkeypatch):
    x = np.ones((1, 2, 8, 8))
    L.max_pool2d(x, 2)
    L.avg_pool2d(x, 2)
    monkeypatch.setenv("LMREF_MAX_BYTES", "100")
    for fn in (L.max_pool2d, L.avg_pool2d):
        with pytest.raises(ValueError, match="LMREF_MAX_BYTES"):
            fn(x, 2)
    monkeypatch.delenv("LMREF_MAX_BYTES")
    assert L.max_pool2d(x, 2).shape == (1, 2, 4, 4)
