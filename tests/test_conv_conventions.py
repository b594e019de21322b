"""Issue 16 section 2 for conv: unbatched inputs as torch, per-side pairs and SAME_LOWER vs F.pad."""
import numpy as np
import pytest

from lmref import conv
from lmref.testing import assert_close

torch = pytest.importorskip("torch", reason="cross-checks against PyTorch")
F = torch.nn.functional
T = torch.from_numpy


@pytest.mark.parametrize("nd", [1, 2])
def test_unbatched_input_is_torch_s(rng, nd):
    x = rng.standard_normal((3,) + (7,) * nd)
    w = rng.standard_normal((4, 3) + (3,) * nd)
    b = rng.standard_normal(4)
    fwd, bwd = (conv.conv1d, conv.conv1d_backward) if nd == 1 else (conv.conv2d,
                                                                     conv.conv2d_backward)
    tfn = F.conv1d if nd == 1 else F.conv2d
    out = fwd(x, w, b, stride=2, padding=1)
    assert out.shape == tfn(T(x), T(w), T(b), stride=2, padding=1).shape
    assert_close(out, tfn(T(x), T(w), T(b), stride=2, padding=1))
    assert_close(out, fwd(x[None], w, b, stride=2, padding=1)[0], rtol=0, atol=0)
    g = rng.standard_normal(out.shape)
    gx, gw, gb = bwd(g, x, w, b, stride=2, padding=1)
    assert gx.shape == x.shape
    bx, bw, bb = bwd(g[None], x[None], w, b, stride=2, padding=1)
    assert_close(gx, bx[0], rtol=0, atol=0)
    assert_close(gw, bw, rtol=0, atol=0)


@pytest.mark.parametrize("nd", [1, 2])
def test_unbatched_conv_transpose_is_torch_s(rng, nd):
    x = rng.standard_normal((3,) + (5,) * nd)
    w = rng.standard_normal((3, 2) + (3,) * nd)
    fwd = conv.conv_transpose1d if nd == 1 else conv.conv_transpose2d
    tfn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    assert_close(fwd(x, w, stride=2, padding=1), tfn(T(x), T(w), stride=2, padding=1))


@pytest.mark.parametrize("pads", [((1, 0), (0, 2)), ((0, 3), (2, 1)), ((2, 2), (0, 0))])
def test_per_side_pairs_are_f_pad_then_valid(rng, pads):
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    (t, b), (l, r) = pads
    want = F.conv2d(F.pad(T(x), (l, r, t, b)), T(w), stride=(2, 1))
    assert_close(conv.conv2d(x, w, stride=(2, 1), padding=pads), want)
    g = rng.standard_normal(tuple(want.shape))
    xt = F.pad(T(x), (l, r, t, b)).detach().requires_grad_(True)
    wt = T(w).clone().requires_grad_(True)
    F.conv2d(xt, wt, stride=(2, 1)).backward(T(g))
    gx, gw, _ = conv.conv2d_backward(g, x, w, stride=(2, 1), padding=pads)
    assert_close(gx, xt.grad[:, :, t:t + 6, l:l + 7])
    assert_close(gw, wt.grad)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_same_lower_puts_the_extra_pixel_before(rng, stride):
    x = rng.standard_normal((1, 2, 8, 9))
    w = rng.standard_normal((3, 2, 4, 4))  # even kernel: an odd total padding
    upper = conv.conv2d(x, w, stride=stride, padding="same")
    lower = conv.conv2d(x, w, stride=stride, padding="same_lower")
    assert upper.shape == lower.shape == (1, 3, -(-8 // stride), -(-9 // stride))
    pads = [conv.same_padding(n, 4, stride) for n in (8, 9)]  # (before, after), the upper split
    lower_pads = tuple((after, before) if after > before else (before, after)
                       for before, after in pads)
    assert_close(lower, conv.conv2d(x, w, stride=stride, padding=lower_pads), rtol=0, atol=0)
    assert_close(upper, conv.conv2d(x, w, stride=stride, padding="same_upper"), rtol=0, atol=0)
