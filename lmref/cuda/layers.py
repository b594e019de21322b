"""CUDA twins of :func:`lmref.layers.max_pool2d` and :func:`lmref.layers.max_pool2d_backward`.

Same arguments, validation and exact window geometry (``lmref.layers``'s own: per-side and
``"same"`` padding, padding above half the kernel, option values of any size) and PyTorch's
rules (output sizes with ``ceil_mode``, padding never winning, dilation, first maximum in
row-major window order, last NaN); the forward is exact (a max) and the backward sums each
input pixel's gradients in the CPU's order (bit-identical), one launch each: the backward is a
gather that re-decides the maximum of every window covering the pixel (no index scratch).
The window tables and the backward's per-input-position cover tables are built on the host
once per geometry and kept on the device.
"""
from __future__ import annotations

import numpy as np

from lmref import layers as _cpu
from lmref.cuda._runtime import Session, blocks, threads

__all__ = ["max_pool2d", "max_pool2d_backward"]


def _grid(W, H, depth):
    bx, by = threads(32, 4), threads(8, 4)
    return (blocks(W, bx), blocks(H, by), depth), (bx, by)


def _prepare(s, x, kernel_size, stride, padding, dilation, ceil_mode):
    """(shape, device planes, out_shape, window tables, cover tables): the tables as thunks
    of device arrays cached per geometry (built on the host at their first use only)."""
    g = _cpu._Geometry(s.stand_in(x), kernel_size, stride, padding, dilation, ceil_mode)
    geometry = tuple(zip(g.spatial, g.k, g.s, g.pads, g.d, g.out_shape[-2:]))

    def table(name, build):
        return s.constant((name, geometry), build)

    def windows():  # rows first/stop, cols first/stop, and the steps (int64-safe, as the CPU)
        rows, cols = (table(f"pool windows {a}",
                            lambda a=a: np.stack([g.windows()[a].first, g.windows()[a].stop]))
                      for a in range(2))
        return rows[0], rows[1], cols[0], cols[1], min(g.d[0], g.spatial[0]), \
            min(g.d[1], g.spatial[1])

    def covers():
        rows, cols = (table(f"pool cover {a}", lambda args=args: _cover(*args))
                      for a, args in enumerate(geometry))
        return rows[0], rows[1], cols[0], cols[1]

    return g.shape, s.upload(x, g.planes), g.out_shape, windows, covers


def _cover(size, k, stride, pads, d, n_out):
    """``[lo, hi]``: input position ``y`` lies in the span of the windows ``lo[y] <= o <
    hi[y]`` (exact Python ints: ``o * stride - before <= y <= o * stride - before + (k - 1)
    * d``); a window's maximum is one of its taps, so these are all that can select ``y``."""
    before = pads[0]
    cover = np.empty((2, size), np.int64)
    for y in range(size):
        lo = max(0, -((-(y + before - (k - 1) * d)) // stride))
        cover[:, y] = lo, max(lo, min(n_out, (y + before) // stride + 1))
    return cover


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """GPU :func:`lmref.layers.max_pool2d` (same arguments and result, float64).

    NumPy in, NumPy out; device arrays stay on the device (see :mod:`lmref.cuda`).
    """
    s = Session("layers")
    _, planes, out_shape, windows, _ = _prepare(s, x, kernel_size, stride, padding, dilation,
                                                ceil_mode)
    oh, ow = out_shape[-2:]
    out = s.empty((planes.shape[0], oh, ow))
    grid, block = _grid(ow, oh, planes.shape[0])
    s.launch(s.k.max_pool, grid, block, planes, out, *windows())
    return s.give(out.reshape(out_shape))


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    """GPU :func:`lmref.layers.max_pool2d_backward`: ``(grad_x,)``, float64."""
    s = Session("layers")
    shape, planes, out_shape, windows, covers = _prepare(s, x, kernel_size, stride, padding,
                                                         dilation, ceil_mode)
    g = _cpu._grad_planes(s.stand_in(grad_out), out_shape)
    dg = s.upload(grad_out, g)
    n, h, w = planes.shape
    gin = s.empty((n, h, w))
    grid, block = _grid(w, h, n)
    s.launch(s.k.max_pool_backward, grid, block, dg, planes, gin, *windows(), *covers())
    return (s.give(gin.reshape(shape)),)
