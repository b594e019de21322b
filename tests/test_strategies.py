"""lmref.testing.strategies draws only valid argument sets: lmref accepts them, PyTorch accepts
them (where the strategy promises it), and they have the properties their docstrings state."""
import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmref.testing import assert_close
from lmref.testing import strategies as S

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _module(name):
    """The lmref family module, or a skip while it has not landed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            pytest.skip(f"{name} is not available yet")
        raise


# --- a plain PyTorch formulation: what "PyTorch accepts these arguments" means --------------

def _torch_conv(torch, x, w, *, bias, stride, padding, dilation, groups, padding_mode):
    """nn.ConvNd semantics: F.pad with the mode for non-zero modes, else F.convNd's padding."""
    F = torch.nn.functional
    nd = x.ndim - 2
    conv = (F.conv1d, F.conv2d)[nd - 1]
    t = lambda a: None if a is None else torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    tx, tw = t(x), t(w)
    if padding_mode == "zeros":
        return conv(tx, tw, t(bias), stride, padding, dilation, groups).numpy()
    k = w.shape[2:]
    d = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if padding == "same":
        pads = [((kk - 1) * dd // 2, (kk - 1) * dd - (kk - 1) * dd // 2) for kk, dd in zip(k, d)]
    elif padding == "valid":
        pads = [(0, 0)] * nd
    else:
        p = (padding,) * nd if isinstance(padding, int) else tuple(padding)
        pads = [(pp, pp) for pp in p]
    flat = [v for lo_hi in reversed(pads) for v in lo_hi]  # F.pad wants the last axis first
    tx = F.pad(tx, flat, mode=padding_mode)
    return conv(tx, tw, t(bias), stride, 0, dilation, groups).numpy()


def _out_size(n, k, s, d, lo, hi):
    return (n + lo + hi - (k - 1) * d - 1) // s + 1


@pytest.mark.parametrize("ndim", [1, 2])
@SETTINGS
@given(data=st.data())
def test_conv_args_valid_shapes(ndim, data):
    (x, w), kw = data.draw(S.conv_args(ndim=ndim, torch_compatible=False))
    assert x.shape[1] == w.shape[1] * kw["groups"] and w.shape[0] % kw["groups"] == 0
    assert kw["bias"] is None or kw["bias"].shape == (w.shape[0],)
    as_t = lambda v: (v,) * ndim if isinstance(v, int) else tuple(v)  # noqa: E731
    for ax in range(ndim):
        n, k = x.shape[2 + ax], w.shape[2 + ax]
        s, d = as_t(kw["stride"])[ax], as_t(kw["dilation"])[ax]
        if kw["padding"] == "same":
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            lo, hi = total // 2, total - total // 2
        elif kw["padding"] == "valid":
            lo = hi = 0
        else:
            lo = hi = as_t(kw["padding"])[ax]
        assert (k - 1) * d + 1 <= n + lo + hi and _out_size(n, k, s, d, lo, hi) >= 1
        if kw["padding_mode"] == "reflect":
            assert lo < n and hi < n


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("ndim", [1, 2])
@SETTINGS
@given(data=st.data())
def test_conv_args_accepted_by_torch_and_equal_to_lmref(torch, ndim, data):
    (x, w), kw = data.draw(S.conv_args(ndim=ndim))
    assert not (kw["padding"] == "same" and kw["stride"] not in (1, (1,) * ndim))
    theirs = _torch_conv(torch, x, w, **kw)
    assert theirs.size > 0
    conv = _module("lmref.conv")
    ours = getattr(conv, f"conv{ndim}d")(x, w, **kw)
    assert_close(ours, theirs, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("ndim", [1, 2])
@SETTINGS
@given(data=st.data())
def test_conv_args_with_strided_same_accepted_by_lmref(ndim, data):
    conv = _module("lmref.conv")
    (x, w), kw = data.draw(S.conv_args(ndim=ndim, torch_compatible=False))
    out = getattr(conv, f"conv{ndim}d")(x, w, **kw)
    assert out.dtype == np.float64 and out.shape[:2] == (x.shape[0], w.shape[0])
    if kw["padding"] == "same":  # TensorFlow's rule: ceil(n / stride)
        s = (kw["stride"],) * ndim if isinstance(kw["stride"], int) else kw["stride"]
        assert out.shape[2:] == tuple(-(-n // ss) for n, ss in zip(x.shape[2:], s))


@SETTINGS
@given(S.conv_args(ndim=2, dtype=np.float32, bias=True, padding_modes=("zeros",)))
def test_conv_args_dtype_and_bias_options(case):
    (x, w), kw = case
    assert x.dtype == w.dtype == kw["bias"].dtype == np.float32 and kw["padding_mode"] == "zeros"


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_conv_args_rejects_bad_ndim():
    with pytest.raises(ValueError, match="ndim must be 1 or 2"):
        S.conv_args(ndim=3).example()


# --- flows and warps --------------------------------------------------------------------------

@SETTINGS
@given(S.flows(max_magnitude=2.5, avoid_integer=True))
def test_flows_avoid_integer_positions(flow):
    assert flow.ndim == 3 and flow.shape[-1] == 2 and np.abs(flow).max() <= 3.5
    frac = flow - np.floor(flow)
    assert (frac >= 0.05 - 1e-12).all() and (frac <= 0.95 + 1e-12).all()


@SETTINGS
@given(S.flows((4, 5), batch=2, integer=True, max_magnitude=3))
def test_integer_flows(flow):
    assert flow.shape == (2, 4, 5, 2) and (flow == np.round(flow)).all() and np.abs(flow).max() <= 3


@SETTINGS
@given(S.flows(avoid_half=True))
def test_flows_avoid_half(flow):
    frac = flow - np.floor(flow)
    assert (np.abs(frac - 0.5) >= 0.05 - 1e-12).all()


@SETTINGS
@given(S.warp_args())
def test_warp_args_accepted_by_lmref(case):
    motion = _module("lmref.motion")
    (x, flow), kw = case
    out = motion.warp(x, flow, **kw)
    assert out.shape == x.shape and np.isfinite(out).all()


@SETTINGS
@given(S.warp_args(modes=("bilinear",), boundaries=("zeros", "border")))
def test_warp_args_accepted_by_grid_sample(torch, case):
    (x, flow), kw = case
    xb = x if x.ndim == 4 else x[None]
    fb = flow if flow.ndim == 4 else flow[None]
    n, c, h, w = xb.shape
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    gx = (xs + fb[..., 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + fb[..., 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1))
    out = torch.nn.functional.grid_sample(torch.from_numpy(xb), grid, mode="bilinear",
                                          padding_mode=kw["boundary"], align_corners=True)
    assert out.shape == xb.shape


# --- AR kernels -------------------------------------------------------------------------------

@SETTINGS
@given(S.ar_kernels(size=5), st.integers(5, 16), st.integers(5, 16))
def test_ar_kernels_are_invertible_on_any_grid(a, h, w):
    c, k, _ = a.shape
    padded = np.zeros((c, h, w))
    padded[:, :k, :k] = a
    spec = np.fft.fft2(np.roll(padded, (-(k // 2), -(k // 2)), axis=(1, 2)))
    centre = a[:, k // 2, k // 2]
    off = np.abs(a).sum(axis=(1, 2)) - np.abs(centre)
    assert (off < centre).all()
    assert (np.abs(spec).min(axis=(1, 2)) >= centre - off - 1e-12).all()


@SETTINGS
@given(S.ar_kernels(ndim=1, size=3, channels=2))
def test_ar_kernels_1d(a):
    assert a.shape == (2, 3) and (np.abs(a[:, 0]) + np.abs(a[:, 2]) < a[:, 1]).all()


@pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
def test_ar_kernels_refuse_even_size():
    with pytest.raises(ValueError, match="size must be odd"):
        S.ar_kernels(size=4).example()


@SETTINGS
@given(S.ar_factors())
def test_ar_factors_satisfy_theorem_9_and_lemma_19(f):
    assert f.ndim == 3 and f.shape[-1] == 3 and (f[..., 1] == 1).all()
    assert (np.abs(f[..., 0] + f[..., 2]) < f[..., 1]).all()  # eq. 15
    for a_m1, a0, a1 in f.reshape(-1, 3):
        if abs(a_m1) < 1e-12:  # (nearly) degree 1: one zero -a1 / a0 inside, one at ~infinity
            assert abs(a1) < 1
            continue
        z = np.sort(np.abs(np.roots([a_m1, a0, a1])))  # zeros of F(z) = z A(z) (Lemma 19)
        assert z[0] < 1 < z[1]


@SETTINGS
@given(S.ar_factors(channels=2))
def test_ar_factors_accepted_by_lmref(f):
    arma = _module("lmref.arma")
    assert np.all(arma.is_stable(f))
    k = arma.separable_ar_kernel(f, f[:, ::-1])
    assert k.shape == (2, 2 * f.shape[1] + 1, 2 * f.shape[1] + 1)


@SETTINGS
@given(S.ar_solve_args())
def test_ar_solve_args_accepted_by_lmref(case):
    arma = _module("lmref.arma")
    (t, a), kw = case
    y = arma.ar_solve(t, a, **kw)
    assert y.shape == t.shape and np.isfinite(y).all()


# --- pooling, local multiplication, block matching --------------------------------------------

@SETTINGS
@given(S.pool_args())
def test_pool_args_accepted_by_torch_and_lmref(torch, case):
    (x,), kw = case
    F = torch.nn.functional
    tx = torch.from_numpy(x)
    theirs = {name: getattr(F, name)(tx, **kw).numpy() for name in ("max_pool2d", "avg_pool2d")}
    assert all(v.size > 0 for v in theirs.values())
    layers = _module("lmref.layers")
    assert_close(layers.max_pool2d(x, **kw), theirs["max_pool2d"])
    assert_close(layers.avg_pool2d(x, **kw), theirs["avg_pool2d"], rtol=1e-9, atol=1e-12)


@SETTINGS
@given(S.local_multiply_args())
def test_local_multiply_args_accepted_by_lmref(case):
    temporal = _module("lmref.temporal")
    (a, b), kw = case
    out = temporal.local_multiply(a, b, **kw)
    n, _, h, w = a.shape
    assert out.shape == (n, kw["patch_size"] ** 2, h, w) and np.isfinite(out).all()


@SETTINGS
@given(S.block_match_args())
def test_block_match_args_accepted_by_lmref(case):
    blockmatch = _module("lmref.blockmatch")
    (ref, cur), kw = case
    flow, cost = blockmatch.block_match(ref, cur, **kw)
    assert flow.shape[-1] == 2 and np.isfinite(flow).all()
    assert np.abs(flow).max(initial=0) <= kw["search_range"]
