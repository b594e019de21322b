"""CUDA twins of :func:`lmref.conv.conv2d` and :func:`lmref.conv.conv2d_backward`.

Same arguments, validation and geometry (``lmref.conv.geometry``'s own ``_check_arrays``,
``_geometry`` and padding index maps), PyTorch semantics (cross-correlation, stride, int /
tuple / "valid" / "same" padding with TensorFlow's split for "same", padding modes zeros /
circular / reflect / replicate, dilation, groups); float64 results equal the CPU's to rounding.
Every sum runs in a fixed order (the weight and bias gradients through a fixed reduction
tree), so results are deterministic.
"""
from __future__ import annotations

import numpy as np

from lmref.conv import geometry as _cpu  # the CPU path's checks, geometry and padding maps
from lmref.cuda._runtime import Session, blocks, threads

__all__ = ["conv2d", "conv2d_backward"]

_SMEM_DOUBLES = 6144  # 48 KiB: the dynamic shared memory every GPU gives without opt-in
_MAX_CI_CHUNK = 8  # input channels staged per shared-memory step


def _prepare(s, fn, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    """Validate with lmref.conv's checks and memory guards; upload x, weight, bias (zeros if
    None). The geometry is the CPU's plan: an axis with huge padding under a huge stride or
    dilation runs on the compacted read positions (its maps, stride 1, dilation ``out``), so
    no index map ever spans the padding."""
    hx, hw, hb = _cpu._check_arrays(2, s.stand_in(x), s.stand_in(weight),
                                    None if bias is None else s.stand_in(bias))
    geom = _cpu._geometry(2, hx.shape[2:], hx.shape[1], hw.shape, stride, padding, dilation,
                          groups, padding_mode)
    call = _cpu._describe_call(fn, hx.shape, geom, 2)
    _cpu._guard((hx.shape[0], hw.shape[0]) + geom.out_hw, "the output", call)
    key = _geometry_key(geom)  # of the geometry as asked (a plan's maps depend on all of it)
    geom = _cpu._plan(geom, hx.shape[0], hx.shape[1], call)
    dx, dw = s.upload(x, hx), s.upload(weight, hw)
    cout = hw.shape[0]
    db = s.constant(("zeros", cout), lambda: np.zeros(cout)) if bias is None else \
        s.upload(bias, hb)
    return geom, key, dx, dw, db, hx.shape, hw.shape


def _geometry_key(geom):
    """What the padding index maps depend on: the padding, and for a compacted axis (see
    :func:`_prepare`) also the stride, dilation, kernel and output sizes."""
    return geom.in_hw, geom.pads, geom.mode, geom.k_hw, geom.out_hw, geom.stride, \
        geom.dilation


def _pad_maps(s, geom, key):
    """Device copies of lmref.conv's padding index maps (row, column), cached per geometry."""
    return tuple(s.constant(("pad map", axis, key), lambda axis=axis: _cpu._pad_maps(geom)[axis])
                 for axis in range(2))


def _inverse_maps(s, geom, key):
    """Device CSR lists (ptr, positions) of both axes' inverse maps, cached per geometry."""

    def build(axis, part):
        index, n = _cpu._pad_maps(geom)[axis], geom.in_hw[axis]
        return _inverse_map(index, n)[part]
    return tuple(tuple(s.constant(("inverse map", axis, part, key),
                                  lambda axis=axis, part=part: build(axis, part))
                       for part in range(2)) for axis in range(2))


def _tiled_config(s, w_shape, geom):
    """(block, ci_chunk) of conv2d_tiled, or None when even one channel's tile is too big."""
    _, cin_g, kh, kw = w_shape
    bx, by = threads(16, 2), threads(16, 4)  # tiles of by x (bx * PX) outputs
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    tile = ((by - 1) * sh + (kh - 1) * dh + 1) * ((bx * s.k.PX - 1) * sw + (kw - 1) * dw + 1)
    per_channel = tile + s.k.CB * kh * kw
    chunk = min(cin_g, _MAX_CI_CHUNK, _SMEM_DOUBLES // per_channel)
    return None if chunk < 1 else ((bx, by), chunk, chunk * per_channel)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    """GPU :func:`lmref.conv.conv2d`: ``(N, C_out, H_out, W_out)`` float64.

    NumPy in, NumPy out; device arrays stay on the device (see :mod:`lmref.cuda`). Shared-
    memory tiled direct convolution (a plain one-thread-per-output kernel when a tile would
    not fit in 48 KiB of shared memory).
    """
    s = Session("conv")
    geom, key, dx, dw, db, (n, _, _, _), w_shape = _prepare(
        s, "conv2d", x, weight, bias, stride, padding, dilation, groups, padding_mode)
    rmap, cmap = _pad_maps(s, geom, key)
    ho, wo = geom.out_hw
    cout = w_shape[0]
    out = s.empty((n, cout, ho, wo))
    (sh, sw), (dh, dwl) = geom.stride, geom.dilation
    cfg = _tiled_config(s, w_shape, geom)
    if cfg is not None:
        (bx, by), chunk, doubles = cfg
        co_blocks = -(-(cout // geom.groups) // s.k.CB)
        grid = (blocks(wo, bx * s.k.PX), blocks(ho, by), n * geom.groups * co_blocks)
        s.launch(s.k.conv2d_tiled, grid, (bx, by), dx, dw, db, rmap, cmap, out, sh, sw, dh, dwl,
                 geom.groups, co_blocks, chunk, shared=8 * doubles)
    else:
        bx, by = threads(32, 4), threads(8, 4)
        s.launch(s.k.conv2d_direct, (blocks(wo, bx), blocks(ho, by), n * cout), (bx, by),
                 dx, dw, db, rmap, cmap, out, sh, sw, dh, dwl, geom.groups)
    return s.give(out)


def _inverse_map(index, n):
    """CSR lists (ptr, positions) of the padded positions reading each source index."""
    valid = np.flatnonzero(index >= 0)
    positions = valid[np.argsort(index[valid], kind="stable")]
    ptr = np.zeros(n + 1, np.int64)
    np.add.at(ptr, index[valid] + 1, 1)
    return np.cumsum(ptr), positions.astype(np.int64)


def conv2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    """GPU :func:`lmref.conv.conv2d_backward`: ``(grad_x, grad_weight, grad_bias)``, float64
    (``grad_bias`` is None when ``bias`` is None)."""
    s = Session("conv")
    geom, key, dx, dw, _, x_shape, w_shape = _prepare(
        s, "conv2d_backward", x, weight, bias, stride, padding, dilation, groups, padding_mode)
    g = _cpu._check_grad_out(s.stand_in(grad_out), 2, x_shape[0], w_shape[0], geom)
    dg = s.upload(grad_out, g)
    rmap, cmap = _pad_maps(s, geom, key)
    (rptr, ridx), (cptr, cidx) = _inverse_maps(s, geom, key)
    (sh, sw), (dh, dwl) = geom.stride, geom.dilation
    n, cin, h, w = x_shape
    cout, cin_g = w_shape[0], w_shape[1]

    grad_x = s.empty(x_shape)
    bx, by = threads(32, 4), threads(8, 4)
    s.launch(s.k.conv2d_grad_input, (blocks(w, bx), blocks(h, by), n * cin), (bx, by),
             dg, dw, rptr, ridx, cptr, cidx, grad_x, sh, sw, dh, dwl, geom.groups)
    tpb = threads(256, 4)
    grad_w = s.empty(w_shape)
    s.launch(s.k.conv2d_grad_weight, (cin_g, cout), tpb, dg, dx, rmap, cmap, grad_w,
             sh, sw, dh, dwl, geom.groups, shared=8 * s.k.TAPS * tpb)
    grad_b = None
    if bias is not None:
        grad_b = s.empty((cout,))
        s.launch(s.k.conv2d_grad_bias, cout, tpb, dg, grad_b, shared=8 * tpb)
    return s.give(grad_x, grad_w, grad_b)
