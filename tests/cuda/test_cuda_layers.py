"""lmref.cuda.max_pool2d and its backward against lmref.layers (PyTorch's rules)."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import layers

CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=1, dilation=2),  # overlapping windows
    dict(kernel_size=3, stride=(2, 1), padding=(1, 0), dilation=(1, 2), ceil_mode=True),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_max_pool2d_and_backward_equal_cpu(rng, close, kw):
    x = rng.integers(-3, 4, (2, 2, 5, 7)).astype(float)  # many ties: first maximum wins
    x[0, 0, 1, 1] = np.nan  # NaN wins
    x[1, 1, 2, 2:4] = np.nan  # the last NaN of a window wins
    x[1, 0, 3, :] = -np.inf
    out = layers.max_pool2d(x, **kw)
    close(lc.max_pool2d(x, **kw), out, rtol=0, atol=0)
    g = rng.standard_normal(out.shape)
    close(lc.max_pool2d_backward(g, x, **kw), layers.max_pool2d_backward(g, x, **kw),
          rtol=0, atol=0)


def test_three_dimensional_input(rng, close):
    x = rng.standard_normal((3, 5, 7))
    close(lc.max_pool2d(x, 2, 1), layers.max_pool2d(x, 2, 1))


def test_padding_beyond_half_the_kernel_like_the_cpu(rng, close):
    # ONNX semantics (the CPU accepts it): windows wholly in the padding give -inf
    x = rng.standard_normal((1, 1, 5, 7))
    out = lc.max_pool2d(x, 2, padding=2)
    close(out, layers.max_pool2d(x, 2, padding=2), rtol=0, atol=0)
    assert np.isneginf(out[0, 0, 0]).all()
    g = rng.standard_normal(out.shape)
    close(lc.max_pool2d_backward(g, x, 2, padding=2),
          layers.max_pool2d_backward(g, x, 2, padding=2), rtol=0, atol=0)


def test_bad_input_is_refused_like_the_cpu():
    x = np.zeros((1, 1, 5, 7))
    with pytest.raises(ValueError, match="kernel_size"):
        lc.max_pool2d(x, 0)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        lc.max_pool2d_backward(np.zeros((1, 1, 3, 3)), x, 2)


HUGE = [  # valid calls with option values far beyond the frame (issue 18 items 0 and 7)
    dict(kernel_size=10**12, padding=5 * 10**11),  # used to step 5e11 times to the frame
    dict(kernel_size=2**64 + 1, padding=2**63),  # beyond int64: exact host geometry
    dict(kernel_size=3, stride=2**64),
    dict(kernel_size=(3, 1), stride=(1, 2**63), padding=(1, 0), dilation=(2, 2**63)),
]


@pytest.mark.parametrize("kw", HUGE, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_huge_options_equal_cpu_without_stepping_or_overflow(rng, close, kw):
    x = rng.integers(-3, 4, (1, 2, 5, 6)).astype(float)
    out = layers.max_pool2d(x, **kw)
    close(lc.max_pool2d(x, **kw), out, rtol=0, atol=0)
    g = rng.standard_normal(out.shape)
    close(lc.max_pool2d_backward(g, x, **kw), layers.max_pool2d_backward(g, x, **kw),
          rtol=0, atol=0)


@pytest.mark.parametrize("padding", [((0, 2), (1, 0)), "same", "same_lower", ((3, 0), (0, 3))])
def test_per_side_and_same_padding_equal_cpu(rng, close, padding):
    x = rng.integers(-2, 3, (1, 2, 5, 6)).astype(float)
    kw = dict(kernel_size=3, stride=2, padding=padding, dilation=(1, 2))
    out = layers.max_pool2d(x, **kw)
    close(lc.max_pool2d(x, **kw), out, rtol=0, atol=0)
    g = rng.standard_normal(out.shape)
    close(lc.max_pool2d_backward(g, x, **kw), layers.max_pool2d_backward(g, x, **kw),
          rtol=0, atol=0)
