"""CUDA twins of :func:`lmref.layers.max_pool2d` and :func:`lmref.layers.max_pool2d_backward`.

Same arguments, validation (``lmref.layers``'s own) and PyTorch rules (output sizes with
``ceil_mode``, padding at most half the kernel and never winning, dilation, first maximum in
row-major window order, last NaN); the forward is exact (a max) and the backward sums each
input pixel's gradients in the CPU's order (bit-identical), one launch each: the backward is a
gather that re-decides the maximum of every window covering the pixel (no index scratch).
"""
from __future__ import annotations

from lmref import layers as _cpu
from lmref.cuda._runtime import Session, blocks, threads

__all__ = ["max_pool2d", "max_pool2d_backward"]


def _grid(W, H, depth):
    bx, by = threads(32, 4), threads(8, 4)
    return (blocks(W, bx), blocks(H, by), depth), (bx, by)


def _prepare(s, x, kernel_size, stride, padding, dilation, ceil_mode):
    shape, planes, out_shape, k, st, p, d = _cpu._pool_args(
        s.stand_in(x), kernel_size, stride, padding, dilation, ceil_mode)
    params = (k[0], k[1], st[0], st[1], p[0], p[1], d[0], d[1])
    return shape, s.upload(x, planes), out_shape, params


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """GPU :func:`lmref.layers.max_pool2d` (same arguments and result, float64).

    NumPy in, NumPy out; device arrays stay on the device (see :mod:`lmref.cuda`).
    """
    s = Session("layers")
    _, planes, out_shape, params = _prepare(s, x, kernel_size, stride, padding, dilation,
                                            ceil_mode)
    oh, ow = out_shape[-2:]
    out = s.empty((planes.shape[0], oh, ow))
    grid, block = _grid(ow, oh, planes.shape[0])
    s.launch(s.k.max_pool, grid, block, planes, out, *params)
    return s.give(out.reshape(out_shape))


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    """GPU :func:`lmref.layers.max_pool2d_backward`: ``(grad_x,)``, float64."""
    s = Session("layers")
    shape, planes, out_shape, params = _prepare(s, x, kernel_size, stride, padding, dilation,
                                                ceil_mode)
    g = _cpu._grad_planes(s.stand_in(grad_out), out_shape)
    dg = s.upload(grad_out, g)
    n, h, w = planes.shape
    gin = s.empty((n, h, w))
    grid, block = _grid(w, h, n)
    s.launch(s.k.max_pool_backward, grid, block, dg, planes, gin, *params)
    return (s.give(gin.reshape(shape)),)
