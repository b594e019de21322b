"""lmref.cuda.warp / warp_backward against the CPU oracle (numba simulator unless a GPU)."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import motion

MODES = ["bilinear", "nearest"]
BOUNDARIES = ["zeros", "border", "wrap"]


def _flow(rng, shape):
    """Fractional and integer displacements, samples far outside, and non-finite entries."""
    f = rng.uniform(-3.0, 3.0, shape)
    f[..., 0, :, :] = np.round(f[..., 0, :, :])  # integer sample positions: kinks
    f[..., 1, 2, 0] = np.nan
    f[..., 2, 3, 1] = np.inf
    f[..., 3, 1, 0] = 1e300  # far out: must not be read out of bounds
    f[..., 4, 6, :] = 0.5  # nearest: ties round up
    return f


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
def test_warp_and_backward_equal_cpu(rng, close, mode, boundary):
    x = rng.standard_normal((2, 3, 5, 7))  # 5 x 7: partial thread blocks on both axes
    flow = _flow(rng, (2, 5, 7, 2))
    close(lc.warp(x, flow, mode, boundary), motion.warp(x, flow, mode, boundary))
    g = rng.standard_normal(x.shape)
    close(lc.warp_backward(g, x, flow, mode, boundary),
          motion.warp_backward(g, x, flow, mode, boundary))


@pytest.mark.parametrize("xshape, fshape", [((5, 7), (5, 7, 2)), ((3, 5, 7), (5, 7, 2)),
                                            ((3, 2, 5, 7), (5, 7, 2)),
                                            ((3, 2, 5, 7), (1, 5, 7, 2))])
def test_warp_layouts_and_shared_flow(rng, close, xshape, fshape):
    x = rng.standard_normal(xshape)
    flow = rng.uniform(-2.0, 2.0, fshape)
    close(lc.warp(x, flow), motion.warp(x, flow))
    g = rng.standard_normal(xshape)
    close(lc.warp_backward(g, x, flow, boundary="wrap"),
          motion.warp_backward(g, x, flow, boundary="wrap"))


def test_warp_integer_inputs_give_float64(close):
    x = np.arange(35, dtype=np.int32).reshape(5, 7)
    flow = np.ones((5, 7, 2), np.int64)
    close(lc.warp(x, flow, boundary="wrap"), np.roll(x, (-1, -1), axis=(0, 1)).astype(float))


@pytest.mark.parametrize("call, match", [
    (lambda: lc.warp(np.zeros((5, 7)), np.zeros((5, 6, 2))), "flow must have spatial size"),
    (lambda: lc.warp(np.zeros((5, 7)), np.zeros((5, 7, 3))), "last axis of size 2"),
    (lambda: lc.warp(np.zeros((5, 7)), np.zeros((5, 7, 2)), "cubic"), "mode must be one of"),
    (lambda: lc.warp_backward(np.zeros((5, 6)), np.zeros((5, 7)), np.zeros((5, 7, 2))),
     "grad_out must have shape"),
])
def test_bad_input_is_refused_like_the_cpu(call, match):
    with pytest.raises(ValueError, match=match):
        call()
