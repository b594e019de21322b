"""lmref.conv: fast paths vs the plain references and vs PyTorch, the matrix of Lemma 1, the
transposed convolution as its adjoint, gradients, 'same' padding, padding modes and errors."""
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings

from lmref import conv
from lmref.conv import geometry as conv_geometry
from lmref.conv import kernels as conv_kernels
from lmref.conv import matrix as conv_matrix
from lmref.conv import reference as conv_reference
from lmref.peers import run_peer, torch_available
from lmref.testing import assert_close, gradcheck
from lmref.testing.strategies import conv_args

needs_torch = pytest.mark.skipif(not torch_available(), reason="PyTorch (the peer) is not installed")

FNS = {1: (conv.conv1d, conv.conv1d_backward, conv_reference._conv1d_reference,
           conv_reference._conv1d_backward_reference),
       2: (conv.conv2d, conv.conv2d_backward, conv_reference._conv2d_reference,
           conv_reference._conv2d_backward_reference)}


def _sweep():
    """(nd, mode, padding, stride, dilation, groups, spatial, kernel) over odd/even sizes."""
    cases = []
    paddings = {1: [0, 1, 2, "same", "valid", (1,)], 2: [0, 1, "same", "valid", (2, 1)]}
    sizes = {1: [((9,), (3,)), ((8,), (4,))], 2: [((7, 6), (3, 2)), ((6, 7), (2, 3))]}
    for nd in (1, 2):
        for mode, pad, (s, d), groups, (spatial, k) in itertools.product(
                conv.PADDING_MODES, paddings[nd], [(1, 1), (2, 1), (1, 2), (3, 2)], (1, 2),
                sizes[nd]):
            cases.append((nd, mode, pad, s, d, groups, spatial, k))
    return cases


def _case_id(c):
    nd, mode, pad, s, d, g, spatial, k = c
    return f"{nd}d-{mode}-p{pad}-s{s}-d{d}-g{g}-x{'x'.join(map(str, spatial))}-k{'x'.join(map(str, k))}"


def _data(rng, nd, groups, spatial, k, c_in=4, c_out=6):
    x = rng.standard_normal((2, c_in) + spatial)
    w = rng.standard_normal((c_out, c_in // groups) + k)
    b = rng.standard_normal(c_out)
    return x, w, b


# ----------------------------------------------------------------------------------------------
# forward and backward vs the plain reference and vs PyTorch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", _sweep(), ids=_case_id)
def test_conv_matches_reference_and_torch(case, rng):
    nd, mode, pad, s, d, groups, spatial, k = case
    fwd, bwd, ref_fwd, ref_bwd = FNS[nd]
    x, w, b = _data(rng, nd, groups, spatial, k)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups, padding_mode=mode)
    out = fwd(x, w, b, **kw)
    assert out.dtype == np.float64
    assert_close(out, ref_fwd(x, w, b, **kw))
    g = rng.standard_normal(out.shape)
    grads = bwd(g, x, w, b, **kw)
    for got, want in zip(grads, ref_bwd(g, x, w, b, **kw), strict=True):
        assert_close(got, want)
    if torch_available():
        from lmref.peers import torch_conv
        peer = torch_conv.conv1d if nd == 1 else torch_conv.conv2d
        t_out, t_grads = run_peer(peer, (x, w, b), kw, g)
        assert_close(out, t_out, rtol=1e-9, atol=1e-10)
        for got, want in zip(grads, t_grads, strict=True):
            assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("nd", [1, 2])
def test_parallel_and_serial_drivers_agree_bitwise(nd, rng, monkeypatch):
    """Large problems run the prange drivers: same blocks, same order -> identical bits."""
    spatial, k = ((37,), (3,)) if nd == 1 else ((13, 11), (3, 2))
    x, w, b = _data(rng, nd, 1, spatial, k, c_in=7, c_out=9)  # 9 = two blocks of 4 + 1
    kw = dict(stride=2, padding=1, dilation=1, padding_mode="reflect")
    fwd, bwd = FNS[nd][:2]
    matrix = conv.conv1d_matrix if nd == 1 else conv.conv2d_matrix
    g = rng.standard_normal(fwd(x, w, **kw).shape)

    def everything():
        return ((fwd(x, w, b, **kw),) + bwd(g, x, w, b, **kw)
                + (matrix(x.shape[1:], w, **kw).toarray(),))

    def threshold(work):  # the kernels' drivers and the matrix's each read their own name
        for module in (conv_kernels, conv_matrix):
            monkeypatch.setattr(module, "_PARALLEL_MIN_WORK", work)

    threshold(1 << 62)
    serial = everything()
    threshold(0)
    parallel = everything()
    for a, p in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, p)


@pytest.mark.parametrize("case", _sweep(), ids=_case_id)
def test_channel_vector_weight_grad_matches_reference(case, rng, monkeypatch):
    """The channels-last weight-gradient kernels (C_in / groups >= 16 by default), forced on
    the sweep's few channels; its 8-channel block (c_out 6 with groups 1: a partial block that
    repeats its last channel) and 1-channel kernel (groups 2: 3 channels) sum alike, and so do
    jobs of one kernel row and of all kernel rows."""
    nd, mode, pad, s, d, groups, spatial, k = case
    monkeypatch.setattr(conv_kernels, "_WGRAD_MIN_CHANNELS", 1)
    fwd, bwd, _, ref_bwd = FNS[nd]
    x, w, b = _data(rng, nd, groups, spatial, k)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups, padding_mode=mode)
    g = rng.standard_normal(fwd(x, w, b, **kw).shape)
    grad_w = bwd(g, x, w, b, **kw)[1]
    assert_close(grad_w, ref_bwd(g, x, w, b, **kw)[1])
    for partial_min, min_blocks in itertools.product((1, conv_kernels._WGRAD_BLOCK + 1),
                                                     (1, 1 << 30)):
        monkeypatch.setattr(conv_kernels, "_WGRAD_PARTIAL_MIN", partial_min)  # block / 1-channel
        monkeypatch.setattr(conv_kernels, "_WGRAD_MIN_BLOCKS", min_blocks)  # all rows / 1 row a job
        np.testing.assert_array_equal(bwd(g, x, w, b, **kw)[1], grad_w)


@pytest.mark.parametrize("nd,kw", [
    (1, dict(stride=1, padding=1, dilation=1)),
    (1, dict(stride=2, padding="same", dilation=2, padding_mode="circular")),
    (2, dict(stride=1, padding=1, dilation=1, groups=2)),
    (2, dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), padding_mode="reflect")),
])
def test_channel_vector_weight_grad_parallel_equals_serial_bitwise(nd, kw, rng, monkeypatch):
    """16 input channels per group, 11 output channels per group (a block of 8, then 3 on the
    1-channel kernel), widths that leave columns after the groups of 4."""
    spatial, k = ((23,), (3,)) if nd == 1 else ((9, 11), (3, 3))
    groups = kw.get("groups", 1)
    x, w, b = _data(rng, nd, groups, spatial, k, c_in=16 * groups, c_out=11 * groups)
    fwd, bwd, _, ref_bwd = FNS[nd]
    g = rng.standard_normal(fwd(x, w, b, **kw).shape)
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 1 << 62)
    serial = bwd(g, x, w, b, **kw)
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 0)
    parallel = bwd(g, x, w, b, **kw)
    for a, p in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, p)
    for got, want in zip(serial, ref_bwd(g, x, w, b, **kw), strict=True):
        assert_close(got, want)


def test_weight_grad_nan_reaches_the_taps_that_read_it(rng):
    """A NaN input pixel makes exactly the weight-gradient entries whose sums read it NaN (and
    an infinite one gives inf or NaN there), as in the plain reference, in both kernels."""
    for c_in in (4, 16):  # the column-vector and the channel-vector kernels
        x = rng.standard_normal((2, c_in, 7, 9))
        w = rng.standard_normal((5, c_in, 3, 3))
        x[1, 2, 0, 8] = np.nan
        x[0, 3, 3, 4] = np.inf
        g = rng.standard_normal((2, 5, 7, 9))
        got = conv.conv2d_backward(g, x, w, padding=1)[1]
        want = conv_reference._conv2d_backward_reference(g, x, w, padding=1)[1]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        # pixel (0, 8), the last column, is read by kernel rows 0-1 and columns 1-2 only
        assert np.isnan(got[:, 2, 0:2, 1:3]).all()
        assert np.isfinite(got[:, 2, 2, :]).all() and np.isfinite(got[:, 2, :, 0]).all()
        assert_close(got, want)


def _zero_channel_padded(g, w, groups, block):
    """``g`` and ``w`` with zero output channels appended to every group up to a multiple of
    ``block``: the same convolution, written out as the kernels' full blocks."""
    c_out_g = w.shape[0] // groups
    cpad = -(-c_out_g // block) * block
    w2 = np.zeros((groups, cpad) + w.shape[1:])
    w2[:, :c_out_g] = w.reshape((groups, c_out_g) + w.shape[1:])
    g2 = np.zeros((g.shape[0], groups, cpad) + g.shape[2:])
    g2[:, :, :c_out_g] = g.reshape((g.shape[0], groups, c_out_g) + g.shape[2:])
    return g2.reshape((g.shape[0], groups * cpad) + g.shape[2:]), \
        w2.reshape((groups * cpad,) + w.shape[1:])


@pytest.mark.parametrize("case", _sweep(), ids=_case_id)
def test_channel_vector_input_grad_matches_reference(case, rng, monkeypatch):
    """The channels-last input-gradient kernels (C_in / groups >= 16, C_out / groups >= 8 by
    default), forced on the sweep's few channels; a partial block of output channels (6, or 3
    a group) sums exactly as the full block with zero channels written out."""
    nd, mode, pad, s, d, groups, spatial, k = case
    monkeypatch.setattr(conv_kernels, "_IGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_kernels, "_IGRAD_MIN_OUT_CHANNELS", 1)
    fwd, bwd, _, ref_bwd = FNS[nd]
    x, w, b = _data(rng, nd, groups, spatial, k)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups, padding_mode=mode)
    g = rng.standard_normal(fwd(x, w, b, **kw).shape)
    grad_x = bwd(g, x, w, b, **kw)[0]
    assert_close(grad_x, ref_bwd(g, x, w, b, **kw)[0])
    g2, w2 = _zero_channel_padded(g, w, groups, conv_kernels._IGRAD_BLOCK)
    np.testing.assert_array_equal(bwd(g2, x, w2, None, **kw)[0], grad_x)


@pytest.mark.parametrize("nd,kw", [
    (1, dict(stride=1, padding=1, dilation=1)),
    (1, dict(stride=2, padding="same", dilation=2, padding_mode="circular")),
    (2, dict(stride=1, padding=1, dilation=1, groups=2)),
    (2, dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), padding_mode="reflect")),
    (2, dict(stride=(1, 3), padding=0, dilation=(2, 1), padding_mode="replicate")),
])
def test_channel_vector_input_grad_parallel_equals_serial_bitwise(nd, kw, rng, monkeypatch):
    """16 input channels and 21 output channels per group (two blocks of 8, then 5 padded
    with zero channels): serial and parallel drivers agree bit for bit, and the remainder
    block sums as a full one."""
    spatial, k = ((23,), (3,)) if nd == 1 else ((9, 11), (3, 3))
    groups = kw.get("groups", 1)
    x, w, b = _data(rng, nd, groups, spatial, k, c_in=16 * groups, c_out=21 * groups)
    fwd, bwd, _, ref_bwd = FNS[nd]
    g = rng.standard_normal(fwd(x, w, b, **kw).shape)
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 1 << 62)
    serial = bwd(g, x, w, b, **kw)[0]
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 0)
    parallel = bwd(g, x, w, b, **kw)[0]
    np.testing.assert_array_equal(serial, parallel)
    g2, w2 = _zero_channel_padded(g, w, groups, conv_kernels._IGRAD_BLOCK)
    np.testing.assert_array_equal(bwd(g2, x, w2, None, **kw)[0], serial)
    assert_close(serial, ref_bwd(g, x, w, b, **kw)[0])
    monkeypatch.setattr(conv_kernels, "_IGRAD_MIN_CHANNELS", 1 << 30)  # the column-vector kernels
    assert_close(bwd(g, x, w, b, **kw)[0], serial)


def _channel_vector_input_grad_in_order(g, w, stride, dilation, groups, padded_hw):
    """The channel-vector input gradient (full padded planes) written with numpy vector ops in
    the kernels' summation order: per padded row, block of 8 output channels (zero-padded),
    kernel row, kernel column run, output column, ``acc += ((s0 w0 + s1 w1) + (s2 w2 + s3 w3))
    + ((s4 w4 + s5 w5) + (s6 w6 + s7 w7))``. Elementwise IEEE operations: the same bits."""
    n_batch, c_out, ho, wo = g.shape
    c_in_g, kh, kw = w.shape[1:]
    c_out_g, (sh, sw), (dh, dw), (hp, wp) = c_out // groups, stride, dilation, padded_hw
    cpad = -(-c_out_g // 8) * 8
    fold = kw if dw == 1 else 1
    gz = np.zeros((n_batch, groups, cpad, ho, wo))
    gz[:, :, :c_out_g] = g.reshape(n_batch, groups, c_out_g, ho, wo)
    wz = np.zeros((groups, kh, cpad, kw, c_in_g))
    wz[:, :, :c_out_g] = w.reshape(groups, c_out_g, c_in_g, kh, kw).transpose(0, 3, 1, 4, 2)
    out = np.zeros((n_batch, groups, hp, wp * c_in_g))
    for n, grp, r in itertools.product(range(n_batch), range(groups), range(hp)):
        for ob, a in itertools.product(range(0, cpad, 8), range(kh)):
            t = r - a * dh
            if t < 0 or t % sh or t // sh >= ho:
                continue
            for b in range(0, kw, fold):
                x = wz[grp, a, ob:ob + 8, b:b + fold].reshape(8, -1)
                for j in range(wo):
                    s = gz[n, grp, ob:ob + 8, t // sh, j]
                    q0 = (j * sw + b * dw) * c_in_g
                    out[n, grp, r, q0:q0 + x.shape[1]] += \
                        ((s[0] * x[0] + s[1] * x[1]) + (s[2] * x[2] + s[3] * x[3])) + \
                        ((s[4] * x[4] + s[5] * x[5]) + (s[6] * x[6] + s[7] * x[7]))
    return out.reshape(n_batch, groups, hp, wp, c_in_g).transpose(0, 1, 4, 2, 3) \
        .reshape(n_batch, groups * c_in_g, hp, wp)


@pytest.mark.parametrize("c_in,k,stride,padding,dilation,groups", [
    (13, (4, 4), (2, 2), (1, 1), (1, 1), 1),  # the benchmark's geometry, a partial block
    (20, (3, 2), (2, 3), (1, 0), (1, 2), 2),  # runs of one kernel column (dilation 2)
    (24, (3, 3), (1, 1), (1, 1), (1, 1), 1)])  # conv2d_backward's stride 1
def test_channel_vector_input_grad_summation_order_bitwise(c_in, k, stride, padding, dilation,
                                                            groups, rng):
    """conv_transpose2d on the channel-vector kernels (16 output channels a group) gives the
    bits of its documented summation order, replayed with numpy vector operations; with Inf
    and NaN inputs too."""
    x = rng.standard_normal((2, c_in, 5, 6))
    w = rng.standard_normal((c_in, 16) + k)
    x[1, 3, 2, 4], w[2, 5, 0, 1] = np.nan, np.inf
    got = conv.conv_transpose2d(x, w, stride=stride, padding=padding, dilation=dilation,
                                groups=groups)
    hp, wp = ((n - 1) * s + d * (kk - 1) + 1 for n, s, d, kk in zip(x.shape[2:], stride,
                                                                   dilation, k))
    full = _channel_vector_input_grad_in_order(x, w, stride, dilation, groups, (hp, wp))
    (t, l), (h, wd) = padding, got.shape[2:]
    np.testing.assert_array_equal(got, full[:, :, t:t + h, l:l + wd])


def test_input_grad_nan_reaches_the_pixels_that_read_it(rng):
    """A NaN output gradient makes exactly the input-gradient pixels whose sums read it NaN
    (and an infinite one gives inf or NaN there), as in the plain reference, in both kernels."""
    for c_in in (4, 16):  # the column-vector and the channel-vector kernels
        x = rng.standard_normal((2, c_in, 7, 9))
        w = rng.standard_normal((9, c_in, 3, 3))
        g = rng.standard_normal((2, 9, 7, 9))
        g[1, 2, 0, 8] = np.nan
        g[0, 8, 3, 4] = np.inf
        for mode in ("zeros", "reflect"):
            got = conv.conv2d_backward(g, x, w, padding=1, padding_mode=mode)[0]
            want = conv_reference._conv2d_backward_reference(g, x, w, padding=1,
                                                             padding_mode=mode)[0]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
            assert_close(got, want)
        got = conv.conv2d_backward(g, x, w, padding=1)[0]
        # output (0, 8), the last column, reads input rows 0-1 and columns 7-8 only
        assert np.isnan(got[1, :, 0:2, 7:9]).all()
        assert np.isfinite(got[1, :, 2:, :]).all() and np.isfinite(got[1, :, :, :7]).all()
        assert not np.isfinite(got[0, :, 2:5, 3:6]).any()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_args(ndim=2, torch_compatible=False))
def test_conv2d_property_vs_reference(case):
    (x, w), kw = case
    bias = kw.pop("bias")
    out = conv.conv2d(x, w, bias, **kw)
    assert_close(out, conv_reference._conv2d_reference(x, w, bias, **kw))
    g = np.random.default_rng(0).standard_normal(out.shape)
    grads = conv.conv2d_backward(g, x, w, bias, **kw)
    assert (grads[2] is None) == (bias is None)
    for a, r in zip(grads, conv_reference._conv2d_backward_reference(g, x, w, bias, **kw)):
        if r is not None:
            assert_close(a, r)


@pytest.mark.torch
@needs_torch
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_args(ndim=1, torch_compatible=True))
def test_conv1d_property_vs_torch(case):
    from lmref.peers import torch_conv
    (x, w), kw = case
    bias = kw.pop("bias")
    args = (x, w) if bias is None else (x, w, bias)
    assert_close(conv.conv1d(*args, **kw), run_peer(torch_conv.conv1d, args, kw),
                 rtol=1e-9, atol=1e-10)


def test_float32_and_int_inputs_give_float64(rng):
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.integers(-3, 4, size=(3, 2, 3, 3))
    out = conv.conv2d(x, w, padding=1)
    assert out.dtype == np.float64
    assert_close(out, conv_reference._conv2d_reference(x.astype(np.float64),
                                                       w.astype(np.float64), padding=1))


def test_nan_propagates_to_the_outputs_that_read_it(rng):
    x = rng.standard_normal((1, 1, 6, 6))
    x[0, 0, 2, 3] = np.nan
    out = conv.conv2d(x, np.ones((1, 1, 3, 3)))
    assert np.isnan(out[0, 0, 0:3, 1:4]).all()
    assert np.isfinite(out).sum() == out.size - 9


# ----------------------------------------------------------------------------------------------
# 'same' padding and padding modes
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [5, 6, 7, 10])
@pytest.mark.parametrize("stride", [1, 2, 3, 4])
@pytest.mark.parametrize("k,d", [(1, 1), (2, 1), (3, 1), (4, 2), (3, 3)])
def test_same_output_size_is_ceil_input_over_stride(n, stride, k, d):
    out = conv.conv1d(np.ones((1, 1, n)), np.ones((1, 1, k)), stride=stride, dilation=d,
                      padding="same")
    assert out.shape[-1] == -(-n // stride)
    before, after = conv.same_padding(n, k, stride, d)
    assert after - before in (0, 1)  # the extra pixel of an odd total goes after


def test_same_puts_the_extra_pixel_at_the_end():
    """A 2-tap kernel (1, 0) has total padding 1: TensorFlow/PyTorch pad it at the end, so the
    output is the input itself (padded at the start, it would be shifted by one)."""
    x = np.arange(1.0, 6.0)[None, None]
    assert conv.same_padding(5, 2) == (0, 1)
    assert_close(conv.conv1d(x, np.array([[[1.0, 0.0]]]), padding="same"), x)
    x2 = np.arange(30.0).reshape(1, 1, 5, 6)
    w2 = np.zeros((1, 1, 2, 4))
    w2[0, 0, 0, 1] = 1.0  # (0, 1) tap: total padding (1, 3) -> (0, 1) before
    assert_close(conv.conv2d(x2, w2, padding="same"), x2)


@pytest.mark.torch
@needs_torch
@pytest.mark.parametrize("k,d", [(2, 1), (4, 1), (3, 2), (4, 3), (5, 1)])
def test_same_stride1_equals_torch_same(k, d, rng, torch):
    """Directly against ``F.conv2d(padding='same')`` (no lmref peer logic in between)."""
    x = rng.standard_normal((1, 2, 9, 8))
    w = rng.standard_normal((3, 2, k, k - 1 if k > 1 else 1))
    theirs = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                        padding="same", dilation=d).numpy()
    assert_close(conv.conv2d(x, w, padding="same", dilation=d), theirs, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode,np_mode", [("zeros", "constant"), ("circular", "wrap"),
                                          ("reflect", "reflect"), ("replicate", "edge")])
def test_padding_modes_are_numpy_pad(mode, np_mode, rng):
    """A one-hot centre kernel returns the padded input: each mode is np.pad's."""
    x = rng.standard_normal((1, 1, 4, 5))
    w = np.zeros((1, 1, 3, 5))
    w[0, 0, 1, 2] = 1.0
    out = conv.conv2d(x, w, padding=(3, 4), padding_mode=mode)
    want = np.pad(x, ((0, 0), (0, 0), (3, 3), (4, 4)), mode=np_mode)[:, :, 1:-1, 2:-2]
    assert_close(out, want)


def test_padding_mode_gradient_routes_through_the_padding():
    """A padded copy of a pixel sends its gradient back to that pixel (replicate: the corners
    are copied three extra times, the edges once)."""
    x = np.zeros((1, 1, 3, 3))
    w = np.ones((1, 1, 1, 1))
    out = conv.conv2d(x, w, padding=1, padding_mode="replicate")  # (1, 1, 5, 5) = padded x
    gx = conv.conv2d_backward(np.ones(out.shape), x, w, padding=1, padding_mode="replicate")[0]
    assert_close(gx[0, 0], [[4, 2, 4], [2, 1, 2], [4, 2, 4]])
    gx = conv.conv2d_backward(np.ones(out.shape), x, w, padding=1, padding_mode="circular")[0]
    assert_close(gx[0, 0], [[4, 2, 4], [2, 1, 2], [4, 2, 4]])
    gx = conv.conv2d_backward(np.ones(out.shape), x, w, padding=1, padding_mode="reflect")[0]
    # reflect pads a 3-pixel axis with copies of its middle pixel on both sides
    assert_close(gx[0, 0], [[1, 3, 1], [3, 9, 3], [1, 3, 1]])
    assert gx.sum() == out.size  # every padded pixel sends its gradient somewhere


# ----------------------------------------------------------------------------------------------
# gradcheck of every backward
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nd,kw", [
    (1, dict(stride=2, padding="same", padding_mode="circular", groups=2)),
    (1, dict(stride=1, padding=2, dilation=2, padding_mode="reflect")),
    (2, dict(stride=(1, 2), padding=(2, 1), padding_mode="replicate")),
    (2, dict(stride=2, padding="same", dilation=(2, 1), groups=2, padding_mode="zeros")),
])
def test_conv_backward_gradcheck(nd, kw, rng):
    fwd, bwd = FNS[nd][:2]
    x, w, b = _data(rng, nd, kw.get("groups", 1), (7,) if nd == 1 else (5, 6),
                    (3,) if nd == 1 else (3, 2), c_in=2, c_out=4)
    g = rng.standard_normal(fwd(x, w, b, **kw).shape)
    gradcheck(lambda *a: fwd(*a, **kw), (x, w, b), g, lambda go, *a: bwd(go, *a, **kw))


@pytest.mark.parametrize("nd,kw", [
    (1, dict(stride=3, padding=1, output_padding=2, dilation=1, groups=1)),
    (2, dict(stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))),
    (2, dict(stride=1, padding=0, output_padding=1, dilation=2)),  # output_padding < dilation
])
def test_conv_transpose_backward_gradcheck(nd, kw, rng):
    fwd = conv.conv_transpose1d if nd == 1 else conv.conv_transpose2d
    bwd = conv.conv_transpose1d_backward if nd == 1 else conv.conv_transpose2d_backward
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 4) + ((5,) if nd == 1 else (4, 3)))
    w = rng.standard_normal((4, 3) + ((3,) if nd == 1 else (3, 2)))
    b = rng.standard_normal(3 * groups)
    g = rng.standard_normal(fwd(x, w, b, **kw).shape)
    gradcheck(lambda *a: fwd(*a, **kw), (x, w, b), g, lambda go, *a: bwd(go, *a, **kw))


def test_backward_without_bias_returns_none(rng):
    x, w, _ = _data(rng, 2, 1, (5, 5), (3, 3))
    g = np.ones((2, 6, 3, 3))
    assert conv.conv2d_backward(g, x, w)[2] is None
    assert conv.conv_transpose2d_backward(np.ones((2, 6, 7, 7)), x, w.transpose(1, 0, 2, 3))[2] \
        is None


# ----------------------------------------------------------------------------------------------
# transposed convolution
# ----------------------------------------------------------------------------------------------

def _transpose_cases():
    return [dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)
            for s, p, op, d, g in itertools.product((1, 2, 3), (0, 1, 2), (0, 1, 2), (1, 2),
                                                    (1, 2))
            if op < max(s, d)]


@pytest.mark.torch
@needs_torch
@pytest.mark.parametrize("kw", _transpose_cases(), ids=lambda kw: "-".join(
    f"{k[:2]}{v}" for k, v in kw.items()))
def test_conv_transpose2d_vs_torch_and_reference(kw, rng):
    from lmref.peers import torch_conv
    x = rng.standard_normal((2, 4, 5, 4))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(3 * kw["groups"])
    try:
        out = conv.conv_transpose2d(x, w, b, **kw)
    except ValueError as exc:  # padding larger than the output: torch refuses it too
        assert "empty" in str(exc)
        return
    assert_close(out, conv_reference._conv_transpose2d_reference(x, w, b, **kw))
    g = rng.standard_normal(out.shape)
    t_out, t_grads = run_peer(torch_conv.conv_transpose2d, (x, w, b), kw, g)
    assert_close(out, t_out, rtol=1e-9, atol=1e-10)
    for got, want in zip(conv.conv_transpose2d_backward(g, x, w, b, **kw), t_grads, strict=True):
        assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("s,p,d,groups", [(1, 0, 1, 1), (2, 1, 1, 1), (3, 2, 2, 2),
                                          ((2, 1), (0, 1), (1, 2), 2)])
def test_conv_transpose2d_is_the_matrix_transpose(s, p, d, groups, rng):
    """conv_transpose2d(y) == C.T y for the conv whose output y has: the adjoint of conv2d."""
    w = rng.standard_normal((6, 4 // groups, 3, 2))  # conv2d weight (C_out, C_in/groups, ...)
    in_shape = (4, 9, 8)
    C = conv.conv2d_matrix(in_shape, w, stride=s, padding=p, dilation=d, groups=groups)
    out_hw = conv.conv2d(np.zeros((1,) + in_shape), w, stride=s, padding=p, dilation=d,
                         groups=groups).shape[2:]
    y = rng.standard_normal((1, 6) + out_hw)
    # output_padding recovers the input size lost to the floor of the stride
    sh, sw = (s, s) if isinstance(s, int) else s
    ph, pw = (p, p) if isinstance(p, int) else p
    dh, dw = (d, d) if isinstance(d, int) else d
    op = tuple(n - ((o - 1) * st - 2 * pp + dd * (k - 1) + 1)
               for n, o, st, pp, dd, k in zip(in_shape[1:], out_hw, (sh, sw), (ph, pw), (dh, dw),
                                              w.shape[2:]))
    xt = conv.conv_transpose2d(y, w, stride=s, padding=p, output_padding=op, dilation=d,
                               groups=groups)
    assert_close(xt.ravel(), C.T @ y.ravel())


def test_conv_transpose1d_matches_2d_with_height_1(rng):
    x = rng.standard_normal((2, 2, 6))
    w = rng.standard_normal((2, 3, 4))
    kw = dict(stride=2, padding=1, output_padding=1, dilation=1)
    assert_close(conv.conv_transpose1d(x, w, **kw),
                 conv.conv_transpose2d(x[:, :, None], w[:, :, None], stride=(1, 2),
                                       padding=(0, 1), output_padding=(0, 1))[:, :, 0])


# ----------------------------------------------------------------------------------------------
# the matrix of Lemma 1
# ----------------------------------------------------------------------------------------------

def _matrix_cases():
    cases = []
    for nd, mode, pad, (s, d), groups in itertools.product(
            (1, 2), conv.PADDING_MODES, (0, 1, 2, "same"), [(1, 1), (2, 1), (1, 2), (3, 2)],
            (1, 2)):
        cases.append((nd, mode, pad, s, d, groups))
    return cases


@pytest.mark.parametrize("case", _matrix_cases(), ids=lambda c: "-".join(map(str, c)))
def test_matrix_times_vec_x_is_conv(case, rng):
    nd, mode, pad, s, d, groups = case
    shape, k = ((4, 9), (3,)) if nd == 1 else ((4, 6, 7), (3, 2))
    w = rng.standard_normal((6, 4 // groups) + k)
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups, padding_mode=mode)
    build = conv.conv1d_matrix if nd == 1 else conv.conv2d_matrix
    fwd, bwd = FNS[nd][:2]
    C = build(shape, w, **kw)
    assert isinstance(C, sp.csr_array) and C.dtype == np.float64
    x = rng.standard_normal(shape)
    y = fwd(x[None], w, **kw)
    assert C.shape == (y.size, x.size)
    assert_close(C @ x.ravel(), y.ravel())
    # canonical CSR: sorted column indices, no duplicates (taps meeting at a pixel summed)
    canon = C.copy()
    canon.sum_duplicates()
    canon.sort_indices()
    np.testing.assert_array_equal(canon.indptr, C.indptr)
    np.testing.assert_array_equal(canon.indices, C.indices)
    # adjoint identity <C x, g> == <x, C^T g>, and C^T g is the input gradient in every mode
    g = rng.standard_normal(y.shape)
    assert_close(np.dot(C @ x.ravel(), g.ravel()), np.dot(x.ravel(), C.T @ g.ravel()))
    assert_close(C.T @ g.ravel(), bwd(g, x[None], w, **kw)[0].ravel())


def test_matrix_without_padding_has_one_entry_per_tap(rng):
    w = rng.standard_normal((8, 3, 3, 3))
    C = conv.conv2d_matrix((3, 32, 32), w)
    assert C.nnz == 8 * 30 * 30 * 27
    C = conv.conv2d_matrix((3, 32, 32), w, padding=1, padding_mode="zeros")
    assert C.nnz == 8 * 3 * (32 * 3 - 2) ** 2  # border taps read zeros: no entry
    C = conv.conv2d_matrix((3, 32, 32), w, padding=1, padding_mode="circular")
    assert C.nnz == 8 * 32 * 32 * 27  # wrapping never folds two taps of a 3x3 onto one pixel
    for mode in ("reflect", "replicate"):  # at the border two taps read the same pixel
        C = conv.conv2d_matrix((3, 32, 32), w, padding=1, padding_mode=mode)
        assert C.nnz == 8 * 3 * (32 * 3 - 2) ** 2


def test_matrix_sums_taps_that_meet_at_one_pixel():
    """replicate padding 2 on a 1-pixel-wide input: every tap reads the same pixel."""
    w = np.arange(1.0, 6.0)[None, None]
    C = conv.conv1d_matrix((1, 1), w, padding=2, padding_mode="replicate")
    assert C.shape == (1, 1) and C.nnz == 1
    assert C[0, 0] == 15.0


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

X2, W2 = np.ones((1, 4, 6, 6)), np.ones((6, 4, 3, 3))

BAD = [
    (lambda: conv.conv2d(np.ones((6, 6)), W2), ValueError, "x .* 4-dimensional"),
    (lambda: conv.conv1d(X2[0], W2), ValueError, "weight .* 3-dimensional"),
    (lambda: conv.conv1d(X2, W2), ValueError, "3-dimensional"),
    (lambda: conv.conv2d(X2, np.ones((6, 3, 3, 3))), ValueError, "channel mismatch"),
    (lambda: conv.conv2d(X2, np.ones((6, 2, 3, 3)), groups=3), ValueError,
     "groups=3 must divide"),
    (lambda: conv.conv2d(X2, np.ones((5, 2, 3, 3)), groups=2), ValueError,
     "groups=2 must divide the number of output channels"),
    (lambda: conv.conv2d(X2, np.ones((6, 4, 7, 3))), ValueError,
     "kernel larger than padded input along height"),
    (lambda: conv.conv2d(X2, np.ones((6, 4, 3, 3)), dilation=4), ValueError,
     "kernel larger than padded input"),
    (lambda: conv.conv2d(X2, W2, stride=0), ValueError, "stride must be >= 1"),
    (lambda: conv.conv2d(X2, W2, stride=(1, -1)), ValueError, r"stride\[1\] must be >= 1"),
    (lambda: conv.conv2d(X2, W2, dilation=0), ValueError, "dilation must be >= 1"),
    (lambda: conv.conv2d(X2, W2, stride=1.5), TypeError, "stride must be an integer"),
    (lambda: conv.conv2d(X2, W2, padding=float("inf")), TypeError, "padding"),
    (lambda: conv.conv2d(X2, W2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: conv.conv2d(X2, W2, padding="full"), ValueError, r"padding must be one of \('valid', 'same', 'same_upper', 'same_lower'\)"
     r".*got 'full'"),
    (lambda: conv.conv2d(X2, W2, padding=(1, 2, 3)), ValueError,
     "padding must be an int, .*2 entries"),
    (lambda: conv.conv2d(X2, W2, padding_mode="mirror"), ValueError, "padding_mode"),
    (lambda: conv.conv2d(X2, W2, padding=6, padding_mode="reflect"), ValueError,
     "reflect.*padding < input size"),
    (lambda: conv.conv2d(X2, W2, padding=7, padding_mode="circular"), ValueError,
     "circular.*padding <= input size"),
    (lambda: conv.conv2d(X2.astype(complex), W2), TypeError, "x .* complex"),
    (lambda: conv.conv2d(X2, W2.astype(object)), TypeError, "weight .* object"),
    (lambda: conv.conv2d(X2.astype(bool), W2), TypeError, "bool"),
    (lambda: conv.conv2d(X2, W2, bias=np.ones(5)), ValueError, r"bias must have shape \(6,\)"),
    (lambda: conv.conv2d_backward(np.ones((1, 6, 3, 3)), X2, W2), ValueError,
     r"grad_out must have the output's shape \(1, 6, 4, 4\)"),
    (lambda: conv.conv2d_matrix((4, 6), W2), ValueError, "input_shape must be a sequence"),
    (lambda: conv.conv2d_matrix((4, 6, 6.5), W2), TypeError, "input_shape W"),
    (lambda: conv.conv2d_matrix((3, 6, 6), W2), ValueError, "channel mismatch"),
    (lambda: conv.conv_transpose2d(X2, np.ones((3, 2, 3, 3))), ValueError, "channel mismatch"),
    (lambda: conv.conv_transpose2d(X2, np.ones((4, 2, 3, 3)), stride=2, output_padding=2),
     ValueError, "output_padding must be smaller"),
    (lambda: conv.conv_transpose2d(X2, np.ones((4, 2, 3, 3)), padding="same"), ValueError,
     "transposed"),
    (lambda: conv.conv_transpose2d(X2, np.ones((4, 2, 3, 3)), padding=5), ValueError, "empty"),
    (lambda: conv.conv_transpose2d(X2, np.ones((4, 2, 3, 3)), groups=3), ValueError,
     "groups=3 must divide"),
]


@pytest.mark.parametrize("call,exc,match", BAD, ids=[b[2][:40] for b in BAD])
def test_bad_input_raises_clearly(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inputs_are_not_modified_and_outputs_do_not_alias(rng):
    x, w, b = _data(rng, 2, 1, (5, 5), (3, 3))
    copies = [a.copy() for a in (x, w, b)]
    out = conv.conv2d(x, w, b, padding="valid")
    grads = conv.conv2d_backward(np.ones(out.shape), x, w, b)
    for a, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(a, c)
    for o in (out,) + grads:
        assert not any(np.shares_memory(o, a) for a in (x, w, b))
    # 1x1 kernel, no padding: the forward is a pure channel mix and must still copy
    x1 = rng.standard_normal((1, 1, 3, 3))
    out = conv.conv2d(x1, np.ones((1, 1, 1, 1)))
    assert not np.shares_memory(out, x1)


@pytest.mark.parametrize("stride,padding,dilation,groups", [
    (2, 1, 1, 1), ((2, 3), (1, 2), (1, 2), 2), (1, (0, 3), 2, 1), ((3, 1), 2, (2, 1), 1)])
def test_channel_vector_input_grad_computes_only_kept_rows_bitwise(stride, padding, dilation,
                                                                   groups, rng):
    """With zero padding the channel-vector input gradient computes only the padded rows it
    keeps (and unpacks rows into planes): bit for bit the full padded layout, cropped."""
    c_in, c_out = 16 * groups, 8 * groups
    x = rng.standard_normal((2, c_in, 9, 11))
    w = rng.standard_normal((c_out, 16, 3, 4))
    w[0, 1, 2, 3] = np.inf  # no zero of the padding ever meets it
    geom = conv_geometry._geometry(2, x.shape[2:], c_in, w.shape, stride, padding, dilation,
                                   groups, "zeros")
    g = rng.standard_normal((2, c_out) + geom.out_hw)
    got = conv_kernels._input_grad(g, w, geom, 2, c_in)
    # the full padded layout: every padded row, all its columns, then cropped
    hp, wp = geom.padded_hw
    wt = np.zeros((groups, 3, 8, 4, 16))
    wt[:] = w.reshape(groups, 8, 16, 3, 4).transpose(0, 3, 1, 4, 2)
    full = np.empty((2, c_in, hp, wp))
    conv_kernels._igrad_serial(g, wt.reshape(groups, 3, 8, 4 * 16), 4, *geom.stride,
                               *geom.dilation, 0, 0, wp, full)
    (t, _), (l, _) = geom.pads
    np.testing.assert_array_equal(got, full[:, :, t:t + 9, l:l + 11])
    want = conv_reference._conv2d_backward_reference(g, x, w, stride=stride, padding=padding,
                                                     dilation=dilation, groups=groups)[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_close(got, want)


def _column_vector_input_grad_in_order(g, w, stride, dilation, groups, padded_hw):
    """The column-vector input gradient (full padded planes) written with numpy vector ops in
    the kernels' summation order: per padded pixel, pair of output channels, kernel row, kernel
    column, ``acc += w[o] * g[o] + w[o + 1] * g[o + 1]`` (a last unpaired channel: ``acc +=
    w[o] * g[o]``), only the terms of the exact sum. Elementwise IEEE operations: the same
    bits."""
    n_batch, c_out, ho, wo = g.shape
    c_in_g, kh, kw = w.shape[1:]
    c_out_g, (sh, sw), (dh, dw), (hp, wp) = c_out // groups, stride, dilation, padded_hw
    out = np.zeros((n_batch, groups * c_in_g, hp, wp))
    for n, grp, r in itertools.product(range(n_batch), range(groups), range(hp)):
        planes = out[n, grp * c_in_g:(grp + 1) * c_in_g, r]
        for o in range(grp * c_out_g, (grp + 1) * c_out_g, 2):
            pair = o + 1 < (grp + 1) * c_out_g
            for a, b in itertools.product(range(kh), range(kw)):
                t = r - a * dh
                if t < 0 or t % sh or t // sh >= ho:
                    continue
                term = w[o, :, a, b, None] * g[n, o, t // sh]
                if pair:
                    term = term + w[o + 1, :, a, b, None] * g[n, o + 1, t // sh]
                planes[:, np.arange(wo) * sw + b * dw] += term
    return out


@pytest.mark.parametrize("path", ["serial", "parallel", "direct"])
@pytest.mark.parametrize("c_in_g,groups,stride,padding,dilation,mode", [
    (3, 1, (2, 2), 3, 1, "zeros"),  # the RGB stem: 3 channels run as a block of 4
    (3, 2, (1, 3), ((0, 2), (3, 1)), (2, 1), "zeros"),
    (7, 1, 1, 1, 1, "reflect"),  # a block of 4 and one of 3
    (5, 1, (3, 2), (2, 1), (1, 2), "zeros"),  # a block of 4 and a single channel
    (2, 2, (2, 1), 1, 1, "circular"),
    (1, 3, (4, 20), (0, 2), 1, "zeros"),  # a stride wider than the padded row
    (4, 1, 9, 1, 1, "zeros"),
    (6, 1, (1, 2), (1, 4), 2, "replicate")])
def test_column_vector_input_grad_summation_order_bitwise(c_in_g, groups, stride, padding,
                                                          dilation, mode, path, rng,
                                                          monkeypatch):
    """The column-vector input gradient (C_in / groups < 16) gives the bits of its documented
    summation order, replayed with numpy vector operations on the full padded planes, then
    cropped (zero padding: only the kept rows and columns are computed) or folded back
    (:func:`_unpad_adjoint`), serial and parallel (jobs of a few rows), with Inf and NaN; so
    does the direct scatter of small calls (zero padding; the others have no direct path)."""
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 0 if path == "parallel" else 1 << 62)
    monkeypatch.setattr(conv_kernels, "_DIRECT_INPUT_GRAD_MAX_WORK",
                        1 << 62 if path == "direct" else -1)
    c_in, c_out = c_in_g * groups, 5 * groups
    w = rng.standard_normal((c_out, c_in_g, 3, 4))
    w[0, 0, 1, 2] = np.inf
    geom = conv_geometry._geometry(2, (19, 13), c_in, w.shape, stride, padding, dilation,
                                   groups, mode)
    g = rng.standard_normal((2, c_out) + geom.out_hw)
    g[1, -1, 0, -1] = np.nan
    got = conv_kernels._input_grad(g, w, geom, 2, c_in)
    full = _column_vector_input_grad_in_order(g, w, geom.stride, geom.dilation, groups,
                                              geom.padded_hw)
    if mode == "zeros":
        (t, _), (l, _) = geom.pads
        want = full[:, :, t:t + 19, l:l + 13]
    else:
        want = conv_geometry._unpad_adjoint(full, geom)
    assert got.shape == (2, c_in, 19, 13) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


def _fold_two_passes(gp, ih, iw):
    """The adjoint of index-map padding as two NumPy passes: every padded row's columns into
    their source columns (``q`` ascending, from 0.0), then the rows (``p`` ascending)."""
    cols = np.zeros(gp.shape[:3] + (int(iw.max()) + 1,))
    for q in range(gp.shape[3]):
        if iw[q] >= 0:
            cols[..., iw[q]] += gp[..., q]
    out = np.zeros(gp.shape[:2] + (int(ih.max()) + 1, cols.shape[3]))
    for p in range(gp.shape[2]):
        if ih[p] >= 0:
            out[:, :, ih[p]] += cols[:, :, p]
    return out


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("padding", [1, (2, 3), ((3, 0), (1, 4))])
def test_unpad_adjoint_is_the_two_pass_fold_bitwise(mode, padding, rng):
    """:func:`_unpad_adjoint` folds each plane in one pass with a row of scratch: the bits of
    the two-pass fold (columns, then rows), with Inf and NaN, and the adjoint of :func:`_pad`
    (``<pad(x), g> == <x, unpad_adjoint(g)>``)."""
    geom = conv_geometry._geometry(2, (7, 6), 3, (2, 3, 3, 3), 1, padding, 1, 1, mode)
    ih, iw = conv_geometry._pad_maps(geom)
    gp = rng.standard_normal((2, 3, len(ih), len(iw)))
    got = conv_geometry._unpad_adjoint(gp, geom)
    np.testing.assert_array_equal(got, _fold_two_passes(gp, ih, iw))
    x = rng.standard_normal((2, 3, 7, 6))
    assert np.isclose(np.vdot(conv_geometry._pad(x, geom), gp), np.vdot(x, got), rtol=1e-13)
    gp[0, 1, 0, 0], gp[1, 2, -1, 3] = np.inf, np.nan
    np.testing.assert_array_equal(conv_geometry._unpad_adjoint(gp, geom),
                                  _fold_two_passes(gp, ih, iw))


def _direct_cases():
    """(nd, stride, padding, dilation, groups, c_in, c_out, output_padding) of the direct
    kernels' test: odd and even channel counts (a channel pair left over), per-side and
    'same' padding, padding wider than the kernel reads, strides beyond the input."""
    cases = []
    for nd, (s, d), pad, (groups, c_in, c_out) in itertools.product(
            (1, 2), [(1, 1), (2, 1), (1, 2), (3, 2), (2, 3)],
            [0, 1, 3, "same", "pairs"], [(1, 4, 2), (1, 3, 5), (2, 4, 6), (3, 3, 3), (1, 1, 1)]):
        pad = (((0, 2),) if nd == 1 else ((2, 0), (1, 3))) if pad == "pairs" else pad
        cases.append((nd, s, pad, d, groups, c_in, c_out, (s - 1) if s > 1 else 0))
    return cases


@pytest.mark.parametrize("case", _direct_cases(), ids=lambda c: "-".join(map(str, c)))
def test_direct_kernels_give_the_layout_kernels_bits(case, rng, monkeypatch):
    """The direct kernels of small zero-padded calls (no padded copy, no column phases) give
    exactly the bits of the layout kernels: forward (with and without bias), input gradient
    and the transposed convolution (with output_padding), Inf weights and NaN inputs
    included."""
    nd, s, pad, d, groups, c_in, c_out, out_pad = case
    spatial, k = ((9,), (3,)) if nd == 1 else ((6, 7), (3, 2))
    x, w, b = _data(rng, nd, groups, spatial, k, c_in=c_in, c_out=c_out)
    w.flat[1], x.flat[4] = np.inf, np.nan
    fwd, bwd = FNS[nd][:2]
    transpose = conv.conv_transpose1d if nd == 1 else conv.conv_transpose2d
    kw = dict(stride=s, padding=pad, dilation=d, groups=groups)
    try:
        g = rng.standard_normal(fwd(x, w, **kw).shape)
    except ValueError:  # the kernel does not fit the padded input
        pytest.skip("no output")
    tkw = dict(kw, output_padding=out_pad)
    if isinstance(pad, str):
        del tkw["padding"]
    wt = rng.standard_normal((c_out, c_in // groups) + k)

    def everything():
        return (fwd(x, w, b, **kw), fwd(x, w, **kw), bwd(g, x, w, **kw)[0],
                transpose(g, wt, b[:c_in] if c_in <= c_out else None, **tkw))

    calls = []
    for name in ("_forward_direct", "_input_grad_direct"):
        kernel = getattr(conv_kernels, name)
        monkeypatch.setattr(conv_kernels, name,
                            lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    for limit in ("_DIRECT_FORWARD_MAX_WORK", "_DIRECT_INPUT_GRAD_MAX_WORK"):
        monkeypatch.setattr(conv_kernels, limit, -1)
    layout = everything()
    assert not calls
    for limit in ("_DIRECT_FORWARD_MAX_WORK", "_DIRECT_INPUT_GRAD_MAX_WORK"):
        monkeypatch.setattr(conv_kernels, limit, 1 << 62)
    direct = everything()
    assert calls.count("_forward_direct") == 2 and calls.count("_input_grad_direct") == 2
    for a, e in zip(direct, layout, strict=True):
        assert a.shape == e.shape and a.flags.c_contiguous
        np.testing.assert_array_equal(a.view(np.int64), e.view(np.int64))  # NaN payloads too


def _column_vector_weight_grad_in_order(g, xp, k, stride, dilation, groups):
    """The column-vector weight gradient replayed with numpy vector ops in the kernels'
    summation order: partial sums per output column, over samples and pairs of output rows
    ``acc += g[i] * u + g[i + 1] * v`` (a last odd row: ``acc += g[i] * u``), then summed over
    the columns left to right. ``xp`` is the padded input."""
    n_batch, c_out, ho, wo = g.shape
    c_in_g, (kh, kw), (sh, sw), (dh, dw) = xp.shape[1] // groups, k, stride, dilation
    c_out_g = c_out // groups
    acc = np.zeros((c_out, c_in_g, kh, kw, wo))
    for n, i in itertools.product(range(n_batch), range(0, ho, 2)):
        for o, a, b in itertools.product(range(c_out), range(kh), range(kw)):
            grp = o // c_out_g
            rows = xp[n, grp * c_in_g:(grp + 1) * c_in_g, :, b * dw::sw][:, :, :wo]
            term = g[n, o, i] * rows[:, i * sh + a * dh]
            if i + 1 < ho:
                term = term + g[n, o, i + 1] * rows[:, (i + 1) * sh + a * dh]
            acc[o, :, a, b] += term
    gw = np.zeros(acc.shape[:4])
    for j in range(wo):
        gw = gw + acc[..., j]
    return gw


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("c_out,groups,stride,padding,dilation,mode", [
    (16, 1, 2, 3, 1, "zeros"),  # the RGB stem's geometry: blocks of 4 output channels
    (6, 1, (1, 2), 1, (2, 1), "reflect"),  # a block of 4, then 2 channels one by one
    (6, 3, (3, 1), (2, 0), 1, "circular"),
    (5, 1, 1, 0, 2, "zeros")])
def test_column_vector_weight_grad_summation_order_bitwise(c_out, groups, stride, padding,
                                                           dilation, mode, parallel, rng,
                                                           monkeypatch):
    """The column-vector weight gradient (C_in / groups < 16; jobs of one kernel row) gives
    the bits of its documented summation order, serial and parallel, odd output heights
    included, with an Inf input."""
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 0 if parallel else 1 << 62)
    c_in = 3 * groups
    x = rng.standard_normal((2, c_in, 13, 12))
    x[1, 0, 5, 6] = np.inf
    k = (3, 4)
    geom = conv_geometry._geometry(2, x.shape[2:], c_in, (c_out, 3) + k, stride, padding,
                                   dilation, groups, mode)
    g = rng.standard_normal((2, c_out) + geom.out_hw)
    got = conv_kernels._weight_grad(g, x, (c_out, 3) + k, geom)
    want = _column_vector_weight_grad_in_order(g, conv_geometry._pad(x, geom), k, geom.stride,
                                               geom.dilation, groups)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", conv.PADDING_MODES)
@pytest.mark.parametrize("stride,padding", [(2, 1), ((1, 3), ((0, 2), (3, 1))), (4, (0, 2)),
                                            ((1, 40), 1), ((2, 10**6), ((1, 1), (10**6, 10**6)))])
def test_padded_phases_are_the_split_padded_input(mode, stride, padding, rng):
    """The column phases gathered straight from ``x`` (no padded copy) are the padded input
    split into phases, entries past the padded width 0, for a stride wider than the padded
    width and a compacted axis too."""
    if mode in ("reflect", "circular") and stride == (2, 10**6):
        pytest.skip("padding beyond the input size")  # (10**6: a compacted axis)
    x = rng.standard_normal((2, 3, 6, 7))
    geom = conv_geometry._plan(conv_geometry._geometry(
        2, (6, 7), 3, (2, 3, 3, 2), stride, padding, 1, 1, mode), 2, 3, "test")
    assert (geom.maps is not None) == (stride == (2, 10**6))
    got = conv_kernels._padded_phases(x, geom)
    want = conv_kernels._split_columns(conv_geometry._pad(x, geom), geom.stride[1])
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)
