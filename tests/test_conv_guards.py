"""lmref.conv under huge-but-valid options and memory guards (issue 18 items 4-7, 9, 10): exact
Python-int geometry, no materialised padding where the output is small, guards naming the
user's arguments, and the compacted layout that makes this possible, checked against the
ordinary one."""
import itertools
import time

import numpy as np
import pytest

from lmref import conv
from lmref.conv import geometry as conv_geometry
from lmref.conv import kernels as conv_kernels
from lmref.conv import reference as conv_reference
from lmref.testing import assert_close

ONES5 = np.ones((1, 1, 5, 5))
K3 = np.ones((1, 1, 3, 3))
ONES1, K1 = np.ones((1, 1, 5)), np.ones((1, 1, 3))


def _exact_conv1d(x, w, stride, before, after, dilation=1):
    """Plain loop over the read taps, exact Python ints (never builds the padding)."""
    n, k = x.shape[-1], w.shape[-1]
    span = dilation * (k - 1) + 1
    out = (n + before + after - span) // stride + 1
    y = np.zeros((x.shape[0], w.shape[0], out))
    for i in range(out):
        for a in range(k):
            p = i * stride + a * dilation - before
            if 0 <= p < n:
                y[:, :, i] += np.einsum("nc,oc->no", x[:, :, p], w[:, :, a])
    return y


@pytest.mark.parametrize("stride", [2**63, 2**63 - 1, 10**30])
def test_huge_stride_gives_the_one_pixel_answer(stride):
    np.testing.assert_array_equal(conv.conv2d(ONES5, K3, stride=stride), [[[[9.0]]]])
    np.testing.assert_array_equal(conv.conv1d(ONES1, K1, stride=stride), [[[3.0]]])
    gx, gw, _ = conv.conv2d_backward(np.ones((1, 1, 1, 1)), ONES5, K3, stride=stride)
    assert gx[0, 0, :3, :3].sum() == 9 and gx.sum() == 9
    np.testing.assert_array_equal(gw, np.ones((1, 1, 3, 3)))
    gx, gw, _ = conv.conv1d_backward(np.ones((1, 1, 1)), ONES1, K1, stride=stride)
    np.testing.assert_array_equal(gx, [[[1, 1, 1, 0, 0]]])
    m = conv.conv2d_matrix((1, 5, 5), K3, stride=stride)
    assert m.shape == (1, 25) and m.nnz == 9
    m = conv.conv1d_matrix((1, 5), K1, stride=stride)
    assert m.shape == (1, 5) and m.nnz == 3
    # transposed: one input pixel, the stride never applies
    out = conv.conv_transpose2d(np.ones((1, 1, 1, 1)), K3, stride=stride)
    np.testing.assert_array_equal(out, np.ones((1, 1, 3, 3)))
    np.testing.assert_array_equal(conv.conv_transpose1d(np.ones((1, 1, 1)), K1,
                                                        stride=stride), [[[1, 1, 1]]])
    gx, gw, _ = conv.conv_transpose2d_backward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1)), K3,
                                               stride=stride)
    assert gx.item() == 9 and (gw == 1).all()


def test_huge_dilation_with_one_tap_is_irrelevant():
    np.testing.assert_array_equal(conv.conv2d(ONES5, np.ones((1, 1, 1, 1)), dilation=2**64),
                                  ONES5)


@pytest.mark.parametrize("s,p", [(10**5, 10**5), (10**12, 10**12), (2**70, 2**70),
                                 (10**7, 10**7 - 1), (3 * 10**6, 10**7)])
def test_huge_stride_over_huge_padding_is_exact_without_materialising(s, p, rng):
    x = rng.standard_normal((2, 3, 5))
    w = rng.standard_normal((2, 3, 3))
    want = _exact_conv1d(x, w, s, p, p)
    t = time.perf_counter()
    got = conv.conv1d(x, w, stride=s, padding=p)
    assert_close(got, want)
    g = rng.standard_normal(got.shape)
    gx, gw, _ = conv.conv1d_backward(g, x, w, stride=s, padding=p)
    # the gradient through the one output that reads the input, by hand
    reads = [(i, a, i * s + a - p) for i in range(got.shape[-1]) for a in range(3)
             if 0 <= i * s + a - p < 5]
    ex = np.zeros_like(x)
    ew = np.zeros_like(w)
    for i, a, q in reads:
        ex[:, :, q] += g[:, :, i] @ w[:, :, a]
        ew[:, :, a] += g[:, :, i].T @ x[:, :, q]
    assert_close(gx, ex)
    assert_close(gw, ew)
    gx2, _, _ = conv.conv2d_backward(g[:, :, None], x[:, :, None], w[:, :, None],
                                     stride=(1, s), padding=(0, p))
    assert_close(gx2[:, :, 0], ex)
    assert time.perf_counter() - t < 60  # a hang guard, not a benchmark (was minutes)


def test_stride_phases_are_not_a_python_loop():
    """stride = padding = 10**7 ran a Python loop over 10**7 stride phases (5.8 s, backward
    12.7 s): now the axis is compacted, and the phase split is one vectorised copy."""
    t = time.perf_counter()
    out = conv.conv1d(np.ones((1, 1, 5)), np.ones((1, 1, 3)), stride=10**8, padding=10**8)
    conv.conv1d_backward(np.ones(out.shape), np.ones((1, 1, 5)), np.ones((1, 1, 3)),
                         stride=10**8, padding=10**8)
    np.testing.assert_array_equal(out, [[[0.0, 3.0, 0.0]]])
    assert time.perf_counter() - t < 30  # a hang guard (was about 3 minutes)


@pytest.mark.parametrize("sw", [2, 3, 7, 8, 9, 40])
def test_split_columns_matches_the_definition(sw, rng):
    xp = rng.standard_normal((2, 3, 4, 17))
    xr = conv_kernels._split_columns(xp, sw)
    p, m = xr.shape[3:]
    assert p == min(sw, 17) and m == -(-17 // sw)
    for q in range(p):
        for j in range(m):
            if q + j * sw < 17:
                np.testing.assert_array_equal(xr[..., q, j], xp[..., q + j * sw])


def _compact_cases():
    out = []
    for nd, mode, pad, (s, d) in itertools.product(
            (1, 2), conv.PADDING_MODES, (0, 2, "same", ((1, 2), (2, 0))),
            [(1, 1), (2, 1), (4, 1), (1, 3), (5, 2)]):
        if nd == 1 and isinstance(pad, tuple):
            pad = ((2, 1),)
        out.append((nd, mode, pad, s, d))
    return out


@pytest.mark.parametrize("c_in", [3, 16])
@pytest.mark.parametrize("case", _compact_cases(), ids=lambda c: "-".join(map(str, c)))
def test_compacted_layout_equals_the_ordinary_one(case, c_in, rng, monkeypatch):
    """Forced on every axis, the compacted layout gives the forward and the weight gradient
    bit for bit and the input gradient to rounding (bitwise where windows do not overlap)."""
    nd, mode, pad, s, d = case
    spatial, k = ((9,), (3,)) if nd == 1 else ((7, 8), (3, 2))
    x = rng.standard_normal((2, c_in) + spatial)
    w = rng.standard_normal((9, c_in) + k)
    fwd = conv.conv1d if nd == 1 else conv.conv2d
    bwd = conv.conv1d_backward if nd == 1 else conv.conv2d_backward
    kw = dict(stride=s, padding=pad, dilation=d, padding_mode=mode)
    out = fwd(x, w, **kw)
    g = rng.standard_normal(out.shape)
    gx, gw, _ = bwd(g, x, w, **kw)
    monkeypatch.setattr(conv_geometry, "_COMPACT_RATIO", 0)
    monkeypatch.setattr(conv_geometry, "_COMPACT_SLACK", -1)
    np.testing.assert_array_equal(fwd(x, w, **kw), out)
    cgx, cgw, _ = bwd(g, x, w, **kw)
    np.testing.assert_array_equal(cgw, gw)
    span = max((kk - 1) * d + 1 for kk in k)
    if s >= span and mode == "zeros":
        np.testing.assert_array_equal(cgx, gx)
    else:
        assert_close(cgx, gx)
    ref = conv_reference._conv1d_backward_reference if nd == 1 \
        else conv_reference._conv2d_backward_reference
    assert_close(cgx, ref(g, x, w, **kw)[0])
    if mode == "zeros" and not isinstance(pad, (str, tuple)):
        wt = w  # a conv weight (C_out, C_in, ...) is the transpose's (C_in, C_out, ...)
        tkw = dict(stride=s, padding=pad, dilation=d)
        monkeypatch.setattr(conv_geometry, "_COMPACT_SLACK", 10**9)
        t = conv.conv_transpose1d(out, wt, **tkw) if nd == 1 else conv.conv_transpose2d(
            out, wt, **tkw)
        monkeypatch.setattr(conv_geometry, "_COMPACT_SLACK", -1)
        t2 = conv.conv_transpose1d(out, wt, **tkw) if nd == 1 else conv.conv_transpose2d(
            out, wt, **tkw)
        assert_close(t2, t)


# --- memory guards name the user's arguments ---------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda: conv.conv2d(ONES5, K3, padding=10**5),
     r"conv2d\(stride=\(1, 1\), padding=\(\(100000, 100000\).*: the output would need 298 GiB"),
    (lambda: conv.conv2d(ONES5, K3, stride=(1, 10), padding=(0, 10**11)),
     r"conv2d\(stride=\(1, 10\), padding=.*100000000000.*the output would need"),
    (lambda: conv.conv_transpose2d(ONES5, K3, stride=10**5),
     r"conv_transpose2d\(stride=\(100000, 100000\).*: the output would need"),
    (lambda: conv.conv2d_matrix((1, 10**5, 10**5), K3),
     r"conv2d_matrix\(input_shape=\(1, 100000, 100000\).*would need 74.5 GiB"),
    (lambda: conv.conv2d_matrix((1, 5, 5), K3, padding=10**6),
     r"conv2d_matrix\(.*padding=\(\(1000000, 1000000\).*would need"),
    (lambda: conv.conv1d_matrix((1, 5), K1, stride=2, padding=10**12),
     r"conv1d_matrix\(.*padding=\(\(1000000000000,"),
])
def test_guards_name_the_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_guard_on_the_padded_input_not_only_the_output(monkeypatch):
    """With a 1 GiB limit, stride 10**4 and padding (0, 3*10**7) allocated 2.4 GB of padding
    for a small output: now the axis is compacted (no padding built) and the answer exact."""
    monkeypatch.setenv("LMREF_MAX_BYTES", str(2**30))
    out = conv.conv2d(ONES5, K3, stride=10**4, padding=(0, 3 * 10**7))
    assert out.shape == (1, 1, 1, 6001)
    assert out[0, 0, 0, 3000] == 9 and out.sum() == 9  # output 3000 alone reads the frame
    # and the padded-input guard itself, where the padding is read densely
    monkeypatch.setenv("LMREF_MAX_BYTES", str(2**18))
    x = np.ones((1, 64, 32, 32))  # 512 KiB: the user's array is not what is guarded
    assert conv.conv2d(x, np.ones((1, 64, 1, 1))).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match=r"conv2d\(stride=\(1, 1\), padding=\(\(1, 1\), \(1, 1\)\)"
                                         r".*on x of shape \(1, 64, 32, 32\): the padded input"):
        conv.conv2d(x, np.ones((1, 64, 3, 3)), padding=1)
    with pytest.raises(ValueError, match=r"stride=\(1, 2\).*the stride-phase buffer"):
        conv.conv2d(x, np.ones((1, 64, 1, 1)), stride=(1, 2))


def test_backward_guards_its_padded_buffers(monkeypatch):
    monkeypatch.setenv("LMREF_MAX_BYTES", str(2**20))
    g = np.ones((1, 1, 200003, 3))
    with pytest.raises(ValueError, match=r"conv2d_backward\(stride=\(1, 1\), padding=\(\(100000, "
                                         r"100000\), \(0, 0\)\).*: the padded input would need"):
        conv.conv2d_backward(g, ONES5, K3, padding=(10**5, 0))


def test_stride_array_of_ndim_2_is_refused():
    with pytest.raises(ValueError, match=r"stride must be an int or a 1-d sequence"):
        conv.conv2d(ONES5, K3, stride=np.array([[1, 1]]))
    with pytest.raises(ValueError, match=r"dilation must be an int or a 1-d sequence"):
        conv.conv_transpose2d(ONES5, K3, dilation=np.array([[1, 1]]))
    np.testing.assert_array_equal(conv.conv2d(ONES5, K3, stride=np.array([2, 2])),
                                  conv.conv2d(ONES5, K3, stride=2))
