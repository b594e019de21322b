"""lmref.conv with Inf/NaN weight taps: the input gradient and the transposed convolution add
only the terms of the exact sum (issue 18 item 1: no ``0 * inf`` from zero-filled gradients)."""
import itertools

import numpy as np
import pytest

from lmref import conv
from lmref.conv import reference as conv_reference
from lmref.peers import run_peer, torch_available
from lmref.testing import assert_close

needs_torch = pytest.mark.skipif(not torch_available(), reason="PyTorch (the peer) is not installed")


def assert_same_nonfinite(got, want):
    """Same NaN positions, same signed infinities, finite values close."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
    np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
    fin = np.isfinite(want)
    assert_close(got[fin], want[fin])


def test_issue_examples():
    inf, nan = np.inf, np.nan
    out = conv.conv_transpose2d(np.ones((1, 1, 1, 2)), [[[[1.0, inf]]]])
    np.testing.assert_array_equal(out, [[[[1.0, inf, inf]]]])
    out = conv.conv_transpose2d(np.ones((1, 1, 1, 2)), [[[[1.0, nan]]]])
    np.testing.assert_array_equal(out, [[[[1.0, nan, nan]]]])
    out = conv.conv_transpose1d(np.ones((1, 1, 2)), [[[1.0, inf]]])
    np.testing.assert_array_equal(out, [[[1.0, inf, inf]]])


def _poisoned_weight(rng, shape, value, tap):
    w = rng.standard_normal(shape)
    w[(0, 0) + tap] = value
    return w


def _cases():
    # (nd, stride, dilation, padding, padding_mode, c_in): 2 and 16 input channels reach the
    # column-vector and the channels-last input-gradient kernels
    out = []
    for nd, (s, d), (pad, mode), c_in in itertools.product(
            (1, 2), [(1, 1), (2, 1), (3, 2), (1, 3)],
            [(0, "zeros"), (2, "zeros"), (1, "reflect"), (2, "circular"), (1, "replicate")],
            (2, 16)):
        out.append((nd, s, d, pad, mode, c_in))
    return out


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
@pytest.mark.parametrize("case", _cases(), ids=lambda c: "-".join(map(str, c)))
def test_conv_backward_grad_x_with_nonfinite_tap_is_the_exact_sum(case, value, rng):
    nd, s, d, pad, mode, c_in = case
    spatial, k = ((11,), (3,)) if nd == 1 else ((7, 8), (3, 2))
    x = rng.standard_normal((2, c_in) + spatial)
    w = _poisoned_weight(rng, (9, c_in) + k, value, (1,) * (nd - 1) + (k[-1] - 1,))
    kw = dict(stride=s, dilation=d, padding=pad, padding_mode=mode)
    fwd = conv.conv1d if nd == 1 else conv.conv2d
    bwd = conv.conv1d_backward if nd == 1 else conv.conv2d_backward
    ref = conv_reference._conv1d_backward_reference if nd == 1 \
        else conv_reference._conv2d_backward_reference
    g = rng.standard_normal(fwd(x, np.nan_to_num(w), **kw).shape)
    got = bwd(g, x, w, **kw)[0]
    want = ref(g, x, w, **kw)[0]
    assert_same_nonfinite(got, want)
    assert np.isfinite(want).any()  # the exact answer is partly finite: a real test


@pytest.mark.parametrize("value", [np.inf, np.nan])
@pytest.mark.parametrize("s,p,op,d,c", [(1, 0, 0, 1, 2), (2, 1, 1, 1, 2), (3, 2, 2, 2, 16),
                                        (1, 1, 1, 2, 16), (2, 0, 1, 3, 2)])
def test_conv_transpose2d_with_nonfinite_tap_is_the_exact_sum(s, p, op, d, c, value, rng):
    x = rng.standard_normal((2, c, 4, 5))
    w = _poisoned_weight(rng, (c, 9, 3, 2), value, (2, 1))
    kw = dict(stride=s, padding=p, output_padding=op, dilation=d)
    got = conv.conv_transpose2d(x, w, **kw)
    assert_same_nonfinite(got, conv_reference._conv_transpose2d_reference(x, w, **kw))
    one_d = conv.conv_transpose1d(x[:, :, 0], w[:, :, 0], **kw)
    assert_same_nonfinite(one_d, conv_reference._conv_transpose2d_reference(
        x[:, :, :1], w[:, :, :1], stride=(1, s), padding=(0, p), output_padding=(0, op),
        dilation=(1, d))[:, :, 0])


@pytest.mark.torch
@needs_torch
@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_nonfinite_tap_agrees_with_torch(value, rng):
    from lmref.peers import torch_conv
    x = rng.standard_normal((1, 2, 4, 5))
    w = _poisoned_weight(rng, (2, 3, 3, 2), value, (0, 1))
    kw = dict(stride=2, padding=1, output_padding=1, dilation=1)
    got = conv.conv_transpose2d(x, w, **kw)
    want = run_peer(torch_conv.conv_transpose2d, (x, w), kw)
    assert_same_nonfinite(got, want)
    # grad_x of conv2d is the same transposed convolution
    x2 = rng.standard_normal((1, 3, 9, 10))
    w2 = w  # (C_out, C_in, kH, kW) of conv2d = (C_in, C_out, ...) of the transpose
    g = rng.standard_normal((1, 2, 5, 6))
    _, (tgx, _) = run_peer(torch_conv.conv2d, (x2, w2), dict(stride=2, padding=1), g)
    assert_same_nonfinite(conv.conv2d_backward(g, x2, w2, stride=2, padding=1)[0], tgx)
