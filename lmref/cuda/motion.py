"""CUDA twins of :func:`lmref.motion.warp` and :func:`lmref.motion.warp_backward`.

Same signatures, validation (the CPU module's own), conventions and results: backward flow
``out[..., y, x] = x[..., y + dy, x + dx]``, corners TL, TR, BL, BR summed in that order,
right-sided derivatives at kinks, NaN output / NaN ``grad_flow`` where the flow is not finite.
``grad_x`` is scattered with atomic adds, so its last bits may vary from run to run; every
other result is deterministic.
"""
from __future__ import annotations

import numpy as np

from lmref import motion as _cpu
from lmref._validation import as_float64, check_shape
from lmref.cuda._runtime import Session, blocks, threads

__all__ = ["warp", "warp_backward"]


_FILL_BLOCKS = 4 * 132  # ~4 blocks per SM of an H100/H200: enough to fill the GPU


def _grid(W, H, depth):
    bx, by = threads(32, 4), threads(8, 4)
    return (blocks(W, bx), blocks(H, by), depth), (bx, by)


def _channel_chunks(W, H, N, C):
    """Channels per thread of warp_forward: the planes of one image are split into chunks
    (one more grid layer each) until the grid has enough blocks to fill the GPU; each chunk
    recomputes the pixel's taps (cheap), every output is computed exactly as before."""
    (gx, gy, _), _ = _grid(W, H, N)
    target = threads(_FILL_BLOCKS, 16)  # simulator: a few chunks, so that tests cover them
    chunks = max(1, min(C, -(-target // (gx * gy * N)), 65535 // max(N, 1)))
    per = -(-C // chunks)
    return per, -(-C // per)


def _prepare(s, x, flow, mode, boundary):
    """Validate with lmref.motion's own checks; device copies with x as (N*C, H*W)."""
    f_in = s.stand_in(flow)
    shape, x4, f4, m, b = _cpu._check_warp_inputs(s.stand_in(x), f_in, mode, boundary)
    N, C, H, W = x4.shape
    dx = s.upload(x, x4).reshape((N * C, H * W))
    df = s.upload(flow, f4)
    return shape, x4.shape, np.shape(f_in), dx, df, m, b


def warp(x, flow, mode="bilinear", boundary="zeros"):
    """GPU :func:`lmref.motion.warp` (same arguments, conventions and result, float64).

    NumPy in, NumPy out; device arrays (``__cuda_array_interface__``) stay on the device and
    the result has the kind of the first of them (see :mod:`lmref.cuda`).
    """
    s = Session("motion")
    shape, (N, C, H, W), _, dx, df, m, b = _prepare(s, x, flow, mode, boundary)
    out = s.empty((N * C, H * W))
    per, chunks = _channel_chunks(W, H, N, C)
    grid, block = _grid(W, H, N * chunks)
    s.launch(s.k.warp_forward, grid, block, dx, df, out, C, per, m, b)
    return s.give(out.reshape(shape))


def warp_backward(grad_out, x, flow, mode="bilinear", boundary="zeros"):
    """GPU :func:`lmref.motion.warp_backward`: ``(grad_x, grad_flow)``, float64.

    ``grad_flow`` sums over (n, c) in the CPU's order; ``grad_x`` uses atomic adds (equal to
    the CPU result to rounding, not bitwise).
    """
    s = Session("motion")
    shape, (N, C, H, W), fshape, dx, df, m, b = _prepare(s, x, flow, mode, boundary)
    g = as_float64(s.stand_in(grad_out), "grad_out")
    check_shape(g, "grad_out", shape, "the shape of warp's output, i.e. of x")
    dg = s.upload(grad_out, g).reshape((N * C, H * W))
    grad_x = s.zeros((N * C, H * W))
    nf = df.shape[0]
    grad_flow = s.empty(df.shape)
    grid, block = _grid(W, H, nf)
    s.launch(s.k.warp_backward, grid, block, dg, dx, df, grad_x, grad_flow, N, C, m, b)
    return s.give(grad_x.reshape(shape), grad_flow.reshape(fshape))
