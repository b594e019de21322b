"""Motion as a matrix: flow fields, warps, affine motion, feature flow and error propagation.

Seed ``000`` (Lemma 1, Theorems 2 and 3) and the motion models of seed ``001``.

Conventions
-----------
Flow field
    ``(H, W, 2)`` or ``(N, H, W, 2)``; ``flow[..., 0] = dx`` (columns), ``flow[..., 1] = dy``
    (rows). A flow is a *backward* map (OpenCV ``remap``)::

        out[..., y, x] = src[..., y + dy[y, x], x + dx[y, x]]

    Pixel ``(y, x)`` has its centre at integer coordinates; row 0 is the top row.
Relation to ``torch.nn.functional.grid_sample(..., align_corners=True)``
    ``grid[..., 0] = 2 (x + dx) / (W - 1) - 1`` and ``grid[..., 1] = 2 (y + dy) / (H - 1) - 1``
    (``grid`` holds *normalised source positions*, x first). ``boundary="zeros"`` is
    ``padding_mode="zeros"`` and ``"border"`` is ``padding_mode="border"``; ``"wrap"`` (periodic)
    has no ``grid_sample`` mode (:mod:`lmref.peers.torch_motion` emulates it).
Bilinear sampling
    The source point ``p`` lies in the cell ``[floor(p), floor(p) + 1]`` on each axis; the four
    corners are combined in the fixed order (top-left, top-right, bottom-left, bottom-right).
    ``"zeros"``: corners outside the frame count as 0 (per corner, like ``grid_sample``).
    ``"border"``: the coordinate is clamped to ``[0, size - 1]`` before sampling.
    ``"wrap"``: the coordinate is taken modulo ``size`` (corner ``size`` is pixel ``0``).
    Corners whose weight is exactly 0 are not read (so an integer flow returns ``src`` values
    bit-exactly even when a neighbour is ``inf``; ``grid_sample`` reads them and returns NaN).
Nearest sampling
    Index ``floor(p + 0.5)`` evaluated in float64: ties round *up* (half up), so a uniform flow
    of 0.5 shifts every pixel by one. ``grid_sample`` rounds half to even (``nearbyint``), which
    makes a uniform half-pixel shift move odd and even columns differently; the two agree
    everywhere except at exact ties.
Derivatives at kinks
    The bilinear sample is piecewise linear in the flow; at integer source positions (and at the
    clamp points of ``"border"``) :func:`warp_backward` returns the *right-sided* derivative
    (the one of the cell ``[floor(p), floor(p) + 1]``, i.e. ``(f(p + h) - f(p)) / h`` for small
    ``h > 0``). PyTorch agrees inside the frame but returns 0 at the ``"border"`` clamp point
    ``p = 0``; away from kinks every convention agrees.
Non-finite flow
    A pixel whose flow (``dx`` or ``dy``) is NaN or +-inf samples nothing: its output is NaN in
    every channel, its ``grad_flow`` is NaN and it contributes nothing to ``grad_x``. No memory
    outside the frame is ever read, whatever the flow (huge values included).
Dtypes
    Integer and floating inputs are accepted; every result is float64.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from lmref._numba import jit, jit_inline, pjit, prange
from lmref._validation import (as_float64, as_int, as_real, as_tuple, check_alloc, check_finite,
                               check_shape, check_work, one_of)
from lmref.registry import Op

__all__ = [
    "warp", "warp_backward", "motion_matrix", "valid_mask",
    "affine_flow", "block_vectors_to_flow", "scale_flow",
    "FeatureTransfer", "feature_transfer",
    "unit_normal_weights", "noise_gain", "NoiseEstimate", "propagate_noise",
    "MODES", "BOUNDARIES", "FEATURE_TRANSFER_MAX_SIZE",
]

MODES = ("bilinear", "nearest")
BOUNDARIES = ("zeros", "border", "wrap")
#: default largest side of the dense matrices :func:`feature_transfer` accepts
FEATURE_TRANSFER_MAX_SIZE = 4096

_BILINEAR, _NEAREST = 0, 1
_ZEROS, _BORDER, _WRAP = 0, 1, 2
_NAN_TAP = -2  # tap index marking a pixel with non-finite flow
_OUT_TAP = -1  # tap index of a corner that is not read


# ----------------------------------------------------------------------------- validation

def _check_flow(flow, name: str = "flow", ndim=(3, 4)) -> np.ndarray:
    f = as_float64(flow, name, ndim=ndim)
    if f.shape[-1] != 2:
        raise ValueError(f"{name} must have a last axis of size 2 (dx, dy), got shape {f.shape}")
    return f


def _check_warp_inputs(x, flow, mode, boundary):
    """Return ``x`` as (N, C, H, W), ``flow`` as (Nf, H, W, 2) with Nf in {1, N}, codes."""
    one_of(mode, "mode", MODES)
    one_of(boundary, "boundary", BOUNDARIES)
    xa = as_float64(x, "x", ndim=(2, 3, 4))
    f = _check_flow(flow)
    H, W = xa.shape[-2:]
    if f.shape[-3:-1] != (H, W):
        raise ValueError(f"flow must have spatial size (H, W) = ({H}, {W}) of x {xa.shape}, "
                         f"got flow of shape {f.shape}")
    if f.ndim == 4:
        if xa.ndim != 4:
            raise ValueError(f"a batched flow {f.shape} needs x of shape (N, C, H, W), "
                             f"got x of shape {xa.shape}")
        if f.shape[0] not in (1, xa.shape[0]):
            raise ValueError(f"flow batch size {f.shape[0]} does not match x batch size "
                             f"{xa.shape[0]} (flow {f.shape}, x {xa.shape})")
    x4 = xa.reshape((1,) * (4 - xa.ndim) + xa.shape)
    f4 = f.reshape((1,) * (4 - f.ndim) + f.shape)
    return xa.shape, x4, f4, MODES.index(mode), BOUNDARIES.index(boundary)


def _check_taps_alloc(x4, f4):
    n_taps = f4.shape[0] * f4.shape[1] * f4.shape[2]
    check_alloc((n_taps, _N_INTS + _N_REALS), "the warp's sampling table")
    check_alloc(x4.shape, "the warp's output")


# ----------------------------------------------------------------------------- numba kernels

@jit
def _wrap_coord(p, size):
    """``p`` modulo ``size`` in ``[0, size)`` (fmod is exact; the +size may round up to size)."""
    q = np.fmod(p, float(size))
    if q < 0.0:
        q += size
    if q >= size:
        q -= size
    return q


@jit
def _bilinear_axis(p, size, boundary):
    """One axis of a bilinear sample: ``(i0, i1, w0, w1, in0, in1, dq)``.

    ``in0``/``in1`` tell whether the corners are read; ``dq`` is the right-sided derivative of
    the (clamped / wrapped) coordinate with respect to ``p``.
    """
    if boundary == _ZEROS:  # outside [-1, size) no corner is inside the frame
        if p < -1.0 or p >= size:
            return 0, 0, 0.0, 0.0, False, False, 0.0
        f = math.floor(p)
        i0 = int(f)
        t = p - f
        return i0, i0 + 1, 1.0 - t, t, i0 >= 0, i0 + 1 < size, 1.0
    if boundary == _BORDER:  # clamp the coordinate; the right-sided slope is 0 from size-1 on
        dq = 1.0 if (p >= 0.0 and p < size - 1.0) else 0.0
        q = min(max(p, 0.0), size - 1.0)
        f = math.floor(q)
        i0 = int(f)
        return i0, min(i0 + 1, size - 1), 1.0 - (q - f), q - f, True, True, dq
    q = _wrap_coord(p, size)  # _WRAP
    f = math.floor(q)
    i0 = int(f)
    i1 = i0 + 1
    if i1 >= size:
        i1 = 0
    return i0, i1, 1.0 - (q - f), q - f, True, True, 1.0


@jit
def _nearest_axis(p, size, boundary):
    """One axis of a nearest sample: ``(index, inside)`` with ``index = floor(p + 0.5)``."""
    if boundary == _ZEROS:
        if not (p >= -1.0 and p <= size):  # far outside: no int conversion of huge values
            return 0, False
        i = int(math.floor(p + 0.5))
        return i, (i >= 0 and i < size)  # the rounded index decides, as in the reference
    if boundary == _BORDER:
        q = min(max(p, 0.0), size - 1.0)
        return int(math.floor(q + 0.5)), True
    i = int(math.floor(_wrap_coord(p, size) + 0.5))
    if i >= size:
        i = 0
    return i, True


@jit
def _interior_cell(px, py, H, W):
    """Fast-path cell of a bilinear sample: ``(base, tx, ty)`` when the four corners
    ``base, base + 1, base + W, base + W + 1`` all lie in the frame (no boundary rule applies)
    and the fractions are both positive or both zero (an exact pixel); else ``(-1, 0, 0)``
    and the general taps are used (they skip zero-weight corners one by one)."""
    if not (px >= 0.0 and px < W - 1.0 and py >= 0.0 and py < H - 1.0):  # False for NaN
        return -1, 0.0, 0.0
    fx = math.floor(px)
    fy = math.floor(py)
    tx = px - fx
    ty = py - fy
    if (tx == 0.0) != (ty == 0.0):
        return -1, 0.0, 0.0
    return int(fy) * W + int(fx), tx, ty


# Sampling table of one pixel (a row of two arrays): ints[p] = (TL, TR, BL, BR source index,
# CELL) and reals[p] = (4 weights, 4 d/dpx of the weights, 4 d/dpy, TX, TY). Index -1: corner not
# read; ints[p, 0] = -2: non-finite flow. CELL >= 0 selects the fast path: the four corners
# CELL, CELL + 1, CELL + W, CELL + W + 1 with fractions TX, TY (bilinear interior cells), or the
# single pixel CELL when TX = TY = 0 (exact pixels, nearest).
_CELL = 4
_AX, _AY, _TX, _TY = 4, 8, 12, 13
_N_INTS, _N_REALS = 5, 14


@jit_inline
def _fill_pixel_taps(px, py, H, W, mode, boundary, ints, reals, p):
    """Sampling table row ``p`` of the pixel sampling ``(px, py)`` (see the table layout
    above). Inlined where it is called (``jit_inline``): no call, and no reference counting of
    the array arguments, per pixel."""
    for k in range(4):
        ints[p, k] = _OUT_TAP
    ints[p, _CELL] = -1
    for k in range(_N_REALS):
        reals[p, k] = 0.0
    if not (math.isfinite(px) and math.isfinite(py)):
        ints[p, 0] = _NAN_TAP
    elif mode == _NEAREST:
        j, okx = _nearest_axis(px, W, boundary)
        i, oky = _nearest_axis(py, H, boundary)
        if okx and oky:
            ints[p, 0] = i * W + j
            ints[p, _CELL] = i * W + j
            reals[p, 0] = 1.0
    else:
        j0, j1, wx0, wx1, inx0, inx1, dqx = _bilinear_axis(px, W, boundary)
        i0, i1, wy0, wy1, iny0, iny1, dqy = _bilinear_axis(py, H, boundary)
        if iny0 and inx0:
            ints[p, 0] = i0 * W + j0
        if iny0 and inx1:
            ints[p, 1] = i0 * W + j1
        if iny1 and inx0:
            ints[p, 2] = i1 * W + j0
        if iny1 and inx1:
            ints[p, 3] = i1 * W + j1
        reals[p, 0] = wy0 * wx0
        reals[p, 1] = wy0 * wx1
        reals[p, 2] = wy1 * wx0
        reals[p, 3] = wy1 * wx1
        reals[p, _AX + 0] = -wy0 * dqx
        reals[p, _AX + 1] = wy0 * dqx
        reals[p, _AX + 2] = -wy1 * dqx
        reals[p, _AX + 3] = wy1 * dqx
        reals[p, _AY + 0] = -wx0 * dqy
        reals[p, _AY + 1] = -wx1 * dqy
        reals[p, _AY + 2] = wx0 * dqy
        reals[p, _AY + 3] = wx1 * dqy
        ints[p, _CELL], reals[p, _TX], reals[p, _TY] = _interior_cell(px, py, H, W)


@jit
def _fill_row_taps(flow, n, y, mode, boundary, ints, reals, base):
    """Sampling tables of flow row (n, y) into rows ``base .. base + W - 1``.

    Called once per row (array arguments cost reference counting per call: never per pixel).
    """
    H, W = flow.shape[1], flow.shape[2]
    for x in range(W):
        _fill_pixel_taps(x + flow[n, y, x, 0], y + flow[n, y, x, 1], H, W, mode, boundary,
                         ints, reals, base + x)


@jit
def _bilinear_row_cells(flow, n, y, boundary, cell, wts, ints, reals):
    """Forward sampling of flow row (n, y), computed once for every channel: an interior cell
    with non-zero fractions (:func:`_interior_cell`: most pixels) gets ``cell[x]`` = its
    top-left corner and ``wts[:, x]`` = the weights of corners TL, TR, BL, BR; any other pixel
    (near or outside the frame, an exact pixel, a non-finite flow) gets ``cell[x] = -1`` and
    its general sampling table in ``ints[x]``, ``reals[x]`` (:func:`_fill_pixel_taps`).
    Returns whether every pixel is an interior cell.

    The per-axis weights and slopes of the general table (two :func:`_bilinear_axis` calls)
    are thus computed only where they are needed; with three channels that was half of the
    warp's time."""
    H, W = flow.shape[1], flow.shape[2]
    every = True
    for x in range(W):
        px = x + flow[n, y, x, 0]
        py = y + flow[n, y, x, 1]
        b, a, c = _interior_cell(px, py, H, W)
        if b >= 0 and a != 0.0:
            cell[x] = b
            wts[0, x] = (1.0 - c) * (1.0 - a)
            wts[1, x] = (1.0 - c) * a
            wts[2, x] = c * (1.0 - a)
            wts[3, x] = c * a
        else:
            cell[x] = -1
            every = False
            _fill_pixel_taps(px, py, H, W, _BILINEAR, boundary, ints, reals, x)
    return every


@jit_inline
def _bilinear_row(src, dst, cell, wts, ints, reals, every):
    """Bilinear warp of one row ``dst`` (``W`` pixels) of one plane ``src`` (flat, ``H * W``)
    from the sampling of :func:`_bilinear_row_cells`.

    Interior cells and the general taps do the same operations in the same order (corners
    TL, TR, BL, BR, weights ``wy * wx``, running sum from 0.0; the general taps skip corners
    not read or of zero weight; an exact pixel is ``0.0 + src[b]``), so the result is
    bit-identical to the reference's. A row of interior cells only runs a loop without
    branches."""
    W = dst.shape[0]
    w0, w1, w2, w3 = wts[0], wts[1], wts[2], wts[3]
    if every:
        for x in range(W):
            b = cell[x]
            dst[x] = (((0.0 + w0[x] * src[b]) + w1[x] * src[b + 1]) + w2[x] * src[b + W]
                      + w3[x] * src[b + W + 1])
        return
    for x in range(W):
        b = cell[x]
        if b >= 0:
            v = (((0.0 + w0[x] * src[b]) + w1[x] * src[b + 1]) + w2[x] * src[b + W]
                 + w3[x] * src[b + W + 1])
        elif ints[x, _CELL] >= 0:  # an exact pixel (fractions 0)
            v = 0.0 + src[ints[x, _CELL]]
        elif ints[x, 0] == _NAN_TAP:
            v = np.nan
        else:
            v = 0.0
            for k in range(4):
                if ints[x, k] >= 0 and reals[x, k] != 0.0:
                    v += reals[x, k] * src[ints[x, k]]
        dst[x] = v


@jit
def _nearest_row(flow, n, y, boundary, idx):
    """Source index of each pixel of flow row (n, y) under nearest sampling, as the table of
    :func:`_fill_row_taps` has it: ``>= 0`` read there, ``_OUT_TAP`` outside (0),
    ``_NAN_TAP`` non-finite flow (NaN)."""
    H, W = flow.shape[1], flow.shape[2]
    for x in range(W):
        px = x + flow[n, y, x, 0]
        py = y + flow[n, y, x, 1]
        if not (math.isfinite(px) and math.isfinite(py)):
            idx[x] = _NAN_TAP
            continue
        j, okx = _nearest_axis(px, W, boundary)
        i, oky = _nearest_axis(py, H, boundary)
        idx[x] = i * W + j if (okx and oky) else _OUT_TAP


@jit
def _gather_row(src, dst, idx, out0, W):
    """Nearest warp of ``W`` consecutive pixels of one plane (a row, or the whole plane): the
    operations of :func:`_bilinear_row` on a nearest table (``0.0 + src[b]``, NaN, or 0.0), without
    reading the table's weights."""
    for xx in range(W):
        b = idx[xx]
        if b >= 0:
            v = 0.0 + src[b]
        elif b == _NAN_TAP:
            v = np.nan
        else:
            v = 0.0
        dst[out0 + xx] = v


@pjit
def _warp_kernel(x, flow, boundary):
    """Bilinear warp (nearest: :func:`_warp_nearest_kernel`)."""
    N, C, H, W = x.shape
    nf = flow.shape[0]
    xs = x.reshape((N * C, H * W))
    out = np.empty((N * C, H * W))
    for r in prange(N * H):  # one (image, row): its sampling once, then every channel's row
        n = r // H
        y = r - n * H
        cell = np.empty(W, np.int64)
        wts = np.empty((4, W))
        ints = np.empty((W, _N_INTS), np.int64)
        reals = np.empty((W, _N_REALS))
        every = _bilinear_row_cells(flow, n if nf > 1 else 0, y, boundary, cell, wts, ints,
                                    reals)
        for c in range(C):
            _bilinear_row(xs[n * C + c], out[n * C + c, y * W:(y + 1) * W], cell, wts, ints,
                          reals, every)
    return out.reshape((N, C, H, W))


@pjit
def _warp_nearest_kernel(x, flow, boundary):
    """Nearest warp: the source index of every pixel of every flow plane first (one index a
    pixel, not the bilinear table), then one task a (image, channel) plane gathering it whole.
    Plane by plane, the source plane stays in L1 from row to row (a task a row of all channels
    walked 64 planes and re-fetched their rows from L2: 1.9x slower at (4, 64, 56, 56))."""
    N, C, H, W = x.shape
    nf = flow.shape[0]
    HW = H * W
    xs = x.reshape((N * C, HW))
    out = np.empty((N * C, HW))
    idx = np.empty((nf, HW), np.int64)
    for r in prange(nf * H):
        n = r // H
        y = r - n * H
        _nearest_row(flow, n, y, boundary, idx[n, y * W:(y + 1) * W])
    for plane in prange(N * C):
        _gather_row(xs[plane], out[plane], idx[plane // C if nf > 1 else 0], 0, HW)
    return out.reshape((N, C, H, W))


@jit
def _slopes_row(src, gs, acc, ints, reals, out0, W):
    """Add ``g * (d/dpx, d/dpy)`` of one plane's row to ``acc`` (right-sided slopes)."""
    for xx in range(W):
        b = ints[xx, _CELL]
        if b >= 0:  # interior cell: slopes of the bilinear patch (dq = 1)
            a = reals[xx, _TX]
            c = reals[xx, _TY]
            v00 = src[b]
            v01 = src[b + 1]
            v10 = src[b + W]
            v11 = src[b + W + 1]
            sx = (1.0 - c) * (v01 - v00) + c * (v11 - v10)
            sy = (1.0 - a) * (v10 - v00) + a * (v11 - v01)
        else:
            sx = 0.0
            sy = 0.0
            for k in range(4):
                if ints[xx, k] >= 0:  # in-frame corners are read even at weight 0
                    v = src[ints[xx, k]]
                    sx += reals[xx, _AX + k] * v
                    sy += reals[xx, _AY + k] * v
        gv = gs[out0 + xx]
        acc[xx, 0] += gv * sx
        acc[xx, 1] += gv * sy


@jit
def _scatter_plane(gs, dst, ints, reals, base, HW, W):
    """grad_x of one plane: ``dst += M^T gs`` with the plane's tables at ``base``, in order."""
    for q in range(HW):
        p = base + q
        gv = gs[q]
        b = ints[p, _CELL]
        if b >= 0:
            a = reals[p, _TX]
            if a == 0.0:
                dst[b] += gv
            else:
                c = reals[p, _TY]
                dst[b] += ((1.0 - c) * (1.0 - a)) * gv
                dst[b + 1] += ((1.0 - c) * a) * gv
                dst[b + W] += (c * (1.0 - a)) * gv
                dst[b + W + 1] += (c * a) * gv
        else:
            for k in range(4):
                if ints[p, k] >= 0 and reals[p, k] != 0.0:
                    dst[ints[p, k]] += reals[p, k] * gv


@jit
def _rows_reached(fl, y, boundary):
    """Source rows ``(lo, hi)`` that flow row ``y`` of the flow plane ``fl`` (H, W, 2) can read
    in either mode: a cheap bound (the row's extreme ``dy``, clamped), never narrower than the
    rows its taps read (``lo > hi``: none)."""
    H, W = fl.shape[0], fl.shape[1]
    mn = np.inf
    mx = -np.inf
    for xx in range(W):
        d = fl[y, xx, 1]
        if d < mn:  # NaN: never (such a pixel sends nothing)
            mn = d
        if d > mx:
            mx = d
    if mn > mx:
        return H, -1
    p_lo = y + mn  # rounding is monotone: no position of the row lies outside [p_lo, p_hi]
    p_hi = y + mx
    if boundary == _WRAP and not (p_lo >= 0.0 and p_hi < H - 1.0):  # may wrap: any row
        return 0, H - 1
    lo = int(math.floor(min(max(p_lo, 0.0), H - 1.0)))
    hi = int(math.floor(min(max(p_hi, 0.0), H - 1.0)))
    return lo, min(hi + 1, H - 1)


@jit
def _band_task(xs, gs, dst, gf, p0, p1, fl, mode, boundary, r0, r1):
    """One task of the banded backward: grad_x rows ``r0 .. r1 - 1`` of the planes
    ``p0 .. p1 - 1`` (``dst[p] += M^T gs[p]``; ``xs``, ``gs``, ``dst``: (planes, H*W)) and
    grad_flow rows ``r0 .. r1 - 1`` of ``gf`` (H, W, 2), for planes that all share the flow
    plane ``fl`` (H, W, 2), straight from the flow (no sampling table).

    Every flow pixel whose taps can reach the band (:func:`_rows_reached`) is visited in
    increasing order, its weights computed once; its taps inside the band are added to every
    plane, so each grad_x element receives its terms in pixel order whatever the bands. A pixel
    of the task's own flow rows also gets its grad_flow, slopes summed from 0.0 over the planes
    in increasing order. The operations are those of :func:`_fill_row_taps` with
    :func:`_scatter_plane` and :func:`_slopes_row` (interior cells by :func:`_interior_cell`,
    other pixels by the per-axis weights ``wy * wx``; the scatter skips zero weights, the
    slopes read every in-frame corner): bit-identical to the table path.
    """
    H, W = fl.shape[0], fl.shape[1]
    lo = r0 * W
    hi = r1 * W
    for y in range(H):
        own = y >= r0 and y < r1  # grad_flow rows of this task
        if not own:
            reach_lo, reach_hi = _rows_reached(fl, y, boundary)
            if reach_hi < r0 or reach_lo >= r1:
                continue
        for xx in range(W):
            px = xx + fl[y, xx, 0]
            py = y + fl[y, xx, 1]
            if not (math.isfinite(px) and math.isfinite(py)):  # sends nothing, NaN slopes
                if own:
                    gf[y, xx, 0] = np.nan
                    gf[y, xx, 1] = np.nan
                continue
            o = y * W + xx
            if mode == _NEAREST:  # grad_flow = 0
                j, okx = _nearest_axis(px, W, boundary)
                i, oky = _nearest_axis(py, H, boundary)
                q = i * W + j
                if okx and oky and q >= lo and q < hi:
                    for pl in range(p0, p1):
                        dst[pl, q] += gs[pl, o]
                continue
            gx = 0.0
            gy = 0.0
            b, a, c = _interior_cell(px, py, H, W)
            if b >= 0:  # interior cell (dq = 1); a == 0.0: an exact pixel (c == 0.0 too)
                top = b >= lo and b < hi
                bottom = b + W >= lo and b + W < hi
                w00 = (1.0 - c) * (1.0 - a)
                w01 = (1.0 - c) * a
                w10 = c * (1.0 - a)
                w11 = c * a
                for pl in range(p0, p1):
                    gv = gs[pl, o]
                    if own:
                        v00 = xs[pl, b]
                        v01 = xs[pl, b + 1]
                        v10 = xs[pl, b + W]
                        v11 = xs[pl, b + W + 1]
                        gx += gv * ((1.0 - c) * (v01 - v00) + c * (v11 - v10))
                        gy += gv * ((1.0 - a) * (v10 - v00) + a * (v11 - v01))
                    if a == 0.0:
                        if top:
                            dst[pl, b] += gv
                    else:
                        if top:
                            dst[pl, b] += w00 * gv
                            dst[pl, b + 1] += w01 * gv
                        if bottom:
                            dst[pl, b + W] += w10 * gv
                            dst[pl, b + W + 1] += w11 * gv
            else:
                j0, j1, wx0, wx1, inx0, inx1, dqx = _bilinear_axis(px, W, boundary)
                i0, i1, wy0, wy1, iny0, iny1, dqy = _bilinear_axis(py, H, boundary)
                # slopes: every in-frame corner; scatter: in-band corners of non-zero weight
                t00, t01, t10, t11 = iny0 and inx0, iny0 and inx1, iny1 and inx0, iny1 and inx1
                ax0, ax1, ax2, ax3 = -wy0 * dqx, wy0 * dqx, -wy1 * dqx, wy1 * dqx
                ay0, ay1, ay2, ay3 = -wx0 * dqy, -wx1 * dqy, wx0 * dqy, wx1 * dqy
                band0 = i0 >= r0 and i0 < r1
                band1 = i1 >= r0 and i1 < r1
                w00 = wy0 * wx0
                w01 = wy0 * wx1
                w10 = wy1 * wx0
                w11 = wy1 * wx1
                s00 = t00 and band0 and w00 != 0.0
                s01 = t01 and band0 and w01 != 0.0
                s10 = t10 and band1 and w10 != 0.0
                s11 = t11 and band1 and w11 != 0.0
                q00, q01, q10, q11 = i0 * W + j0, i0 * W + j1, i1 * W + j0, i1 * W + j1
                for pl in range(p0, p1):
                    gv = gs[pl, o]
                    if own:
                        sx = 0.0
                        sy = 0.0
                        if t00:
                            sx += ax0 * xs[pl, q00]
                            sy += ay0 * xs[pl, q00]
                        if t01:
                            sx += ax1 * xs[pl, q01]
                            sy += ay1 * xs[pl, q01]
                        if t10:
                            sx += ax2 * xs[pl, q10]
                            sy += ay2 * xs[pl, q10]
                        if t11:
                            sx += ax3 * xs[pl, q11]
                            sy += ay3 * xs[pl, q11]
                        gx += gv * sx
                        gy += gv * sy
                    if s00:
                        dst[pl, q00] += w00 * gv
                    if s01:
                        dst[pl, q01] += w01 * gv
                    if s10:
                        dst[pl, q10] += w10 * gv
                    if s11:
                        dst[pl, q11] += w11 * gv
            if own:
                gf[y, xx, 0] = gx
                gf[y, xx, 1] = gy


#: tasks the banded backward aims at: each flow plane is cut into ceil(_BAND_TASKS / nf) bands
#: of rows (any split gives the same bits). One flow plane: 2 halves (beat 4 or 14 bands at
#: (1, 3, 224, 224)); batched flows: one task per flow plane (whole planes beat halves at
#: (4, 64, 56, 56), (64, 3, 32, 32), (2, 16, 112, 112) on 1 and 2 threads: no halo rows)
_BAND_TASKS = 2
#: with one flow plane shared by every image, the banded backward is used below this many
#: (n, c) planes; from there on the table path shares the planes out as tasks (the banded one
#: would have only _BAND_TASKS)
_BAND_MAX_PLANES = 8


@pjit
def _warp_backward_bands(g, x, flow, mode, boundary, band):
    """:func:`_warp_backward_tables` for few planes (e.g. one RGB frame) or a batched flow: no
    whole-frame sampling table (at (1, 3, 224, 224) it is 7.6 MB, several times the data, and
    glibc served it from fresh pages on many calls) and the work shared out as (flow plane,
    band of ``band`` rows) tasks (:func:`_band_task`) instead of whole planes, in one parallel
    region, each pixel's weights computed once for both gradients (the halo rows a band's
    neighbours also read, twice). Bit-identical to the table path."""
    N, C, H, W = x.shape
    nf = flow.shape[0]
    xs = x.reshape((N * C, H * W))
    gs = g.reshape((N * C, H * W))
    # one (flow plane with the image planes it moves, band of rows) per iteration: grad_x of
    # those source rows and grad_flow of those flow rows; each iteration owns its outputs and
    # adds their terms in a fixed order: race-free and independent of the thread count
    n_bands = (H + band - 1) // band
    per_flow = C if nf > 1 else N * C  # planes moved by one flow plane
    grad_flow = np.zeros((nf, H, W, 2))
    grad_x = np.zeros((N * C, H * W))
    for t in prange(nf * n_bands):
        fn = t // n_bands
        r0 = (t - fn * n_bands) * band
        _band_task(xs, gs, grad_x, grad_flow[fn], fn * per_flow, (fn + 1) * per_flow, flow[fn],
                   mode, boundary, r0, min(r0 + band, H))
    return grad_x.reshape((N, C, H, W)), grad_flow


@pjit
def _warp_backward_tables(g, x, flow, mode, boundary):
    """Backward with every flow pixel's sampling table built once, grad_x one plane a task
    (many planes sharing one flow plane: the table serves them all, and the planes give many
    tasks)."""
    N, C, H, W = x.shape
    nf = flow.shape[0]
    xs = x.reshape((N * C, H * W))
    gs = g.reshape((N * C, H * W))
    # tables of every flow pixel (grad_x needs whole planes); two allocations, not one per
    # table: many mid-size temporaries made glibc re-fault their pages on every call
    ints = np.empty((nf * H * W, _N_INTS), np.int64)
    reals = np.empty((nf * H * W, _N_REALS))
    for r in prange(nf * H):
        _fill_row_taps(flow, r // H, r - (r // H) * H, mode, boundary, ints, reals, r * W)
    # grad_flow: one flow row per iteration, summed over (n, c) in increasing order
    grad_flow = np.zeros((nf, H, W, 2))
    for r in prange(nf * H):
        fn = r // H
        y = r - fn * H
        n_lo, n_hi = (fn, fn + 1) if nf > 1 else (0, N)
        acc = np.zeros((W, 2))
        row_ints = ints[r * W:(r + 1) * W]
        row_reals = reals[r * W:(r + 1) * W]
        if mode == _BILINEAR:  # nearest: grad_flow = 0
            for plane in range(n_lo * C, n_hi * C):
                _slopes_row(xs[plane], gs[plane], acc, row_ints, row_reals, y * W, W)
        for xx in range(W):
            if row_ints[xx, 0] == _NAN_TAP:
                acc[xx, 0] = np.nan
                acc[xx, 1] = np.nan
            grad_flow[fn, y, xx, 0] = acc[xx, 0]
            grad_flow[fn, y, xx, 1] = acc[xx, 1]
    # grad_x: scatter, one (n, c) plane per iteration (no two iterations touch the same plane),
    # pixels in increasing order inside a plane: race-free and independent of the thread count
    grad_x = np.zeros((N * C, H * W))
    for plane in prange(N * C):
        base = (plane // C if nf > 1 else 0) * H * W
        _scatter_plane(gs[plane], grad_x[plane], ints, reals, base, H * W, W)
    return grad_x.reshape((N, C, H, W)), grad_flow


# ----------------------------------------------------------------------------- warp

def warp(x, flow, mode="bilinear", boundary="zeros"):
    """Warp ``x`` with a backward flow: ``out[..., y, x] = x[..., y + dy, x + dx]``.

    Parameters
    ----------
    x : array_like, shape (H, W), (C, H, W) or (N, C, H, W)
        Source frame(s) (NCHW). Any real dtype; computed in float64.
    flow : array_like, shape (H, W, 2) or (N, H, W, 2)
        ``flow[..., 0] = dx`` (columns), ``flow[..., 1] = dy`` (rows), in pixels. A batched
        flow needs a 4-D ``x`` with the same ``N`` (or ``N = 1``); an unbatched one is used for
        every image and channel.
    mode : {"bilinear", "nearest"}
        Interpolation (nearest: index ``floor(p + 0.5)``, ties round up).
    boundary : {"zeros", "border", "wrap"}
        Outside samples are 0 (per bilinear corner), clamped to the edge, or periodic.

    Returns
    -------
    ndarray, float64, same shape as ``x``
        NaN at pixels whose flow is NaN or infinite (every channel). See the module docstring
        for the relation to ``grid_sample(align_corners=True)``.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.motion import warp
    >>> x = np.arange(12.0).reshape(3, 4)
    >>> flow = np.zeros((3, 4, 2))
    >>> flow[..., 0] = 1.0  # dx = 1: each pixel takes its right neighbour
    >>> warp(x, flow)
    array([[ 1.,  2.,  3.,  0.],
           [ 5.,  6.,  7.,  0.],
           [ 9., 10., 11.,  0.]])
    >>> warp(x, flow, boundary="border")[:, -1]
    array([ 3.,  7., 11.])
    >>> flow[..., 0] = 0.5  # bilinear: the mean of two neighbours
    >>> warp(x, flow)[0]
    array([0.5, 1.5, 2.5, 1.5])
    """
    shape, x4, f4, m, b = _check_warp_inputs(x, flow, mode, boundary)
    _check_taps_alloc(x4, f4)
    if m == _NEAREST:
        return _warp_nearest_kernel(x4, f4, b).reshape(shape)
    return _warp_kernel(x4, f4, b).reshape(shape)


def warp_backward(grad_out, x, flow, mode="bilinear", boundary="zeros"):
    """Vector-Jacobian product of :func:`warp`: ``(grad_x, grad_flow)``.

    ``grad_x`` scatters ``grad_out`` back along the sampling weights (the transpose of the
    motion matrix); ``grad_flow`` is the derivative of the bilinear sample with respect to the
    source position summed over batch (for a shared flow) and channels. At integer source
    positions and at the ``"border"`` clamp points the derivative is the right-sided one (cell
    ``[floor(p), floor(p) + 1]``); ``mode="nearest"`` gives ``grad_flow = 0``. Pixels with a
    non-finite flow get NaN in ``grad_flow`` and send nothing to ``grad_x``. Results are float64,
    deterministic and independent of the number of threads.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.motion import warp_backward
    >>> x = np.arange(12.0).reshape(3, 4)
    >>> flow = np.zeros((3, 4, 2))
    >>> flow[..., 0] = 1.0
    >>> grad_x, grad_flow = warp_backward(np.ones((3, 4)), x, flow)
    >>> grad_x  # column 0 is read by no output pixel
    array([[0., 1., 1., 1.],
           [0., 1., 1., 1.],
           [0., 1., 1., 1.]])
    >>> grad_flow.shape
    (3, 4, 2)
    >>> grad_flow[0, :, 0]  # d x[0, p] / dp, right-sided, 0 past the zero boundary
    array([ 1.,  1., -3.,  0.])
    """
    shape, x4, f4, m, b = _check_warp_inputs(x, flow, mode, boundary)
    g = as_float64(grad_out, "grad_out")
    check_shape(g, "grad_out", shape, "the shape of warp's output, i.e. of x")
    _check_taps_alloc(x4, f4)
    nf = f4.shape[0]
    if nf > 1 or x4.shape[0] * x4.shape[1] < _BAND_MAX_PLANES:
        band = -(-x4.shape[2] // -(-_BAND_TASKS // nf))
        gx, gf = _warp_backward_bands(g.reshape(x4.shape), x4, f4, m, b, band)
    else:
        gx, gf = _warp_backward_tables(g.reshape(x4.shape), x4, f4, m, b)
    return gx.reshape(shape), gf.reshape(np.shape(flow))


# ----------------------------------------------------------------------------- references

def _read_reference(plane, i, j, boundary):
    """Pixel (i, j) of a 2-D plane under the boundary rule (integer indices)."""
    H, W = plane.shape
    if boundary == "zeros":
        return plane[i, j] if 0 <= i < H and 0 <= j < W else 0.0
    if boundary == "border":
        return plane[min(max(i, 0), H - 1), min(max(j, 0), W - 1)]
    return plane[i % H, j % W]


def _sample_reference(plane, py, px, mode, boundary):
    """Value of a 2-D plane at the real position (py, px), written the obvious way."""
    H, W = plane.shape
    if not (math.isfinite(px) and math.isfinite(py)):
        return math.nan
    if boundary == "border":
        px, py = min(max(px, 0.0), W - 1.0), min(max(py, 0.0), H - 1.0)
    elif boundary == "wrap":
        px, py = px % W, py % H  # Python's float % is exact, like fmod
    if mode == "nearest":
        return _read_reference(plane, math.floor(py + 0.5), math.floor(px + 0.5), boundary)
    i0, j0 = math.floor(py), math.floor(px)  # Python ints: no overflow for huge positions
    ty, tx = py - i0, px - j0
    total = 0.0
    for di, wy in ((0, 1.0 - ty), (1, ty)):
        for dj, wx in ((0, 1.0 - tx), (1, tx)):
            if wy * wx != 0.0:
                total += wy * wx * _read_reference(plane, i0 + di, j0 + dj, boundary)
    return total


def _warp_reference(x, flow, mode="bilinear", boundary="zeros"):
    """Plain-loop :func:`warp` (the oracle of the oracle)."""
    shape, x4, f4, _, _ = _check_warp_inputs(x, flow, mode, boundary)
    N, C, H, W = x4.shape
    out = np.empty(x4.shape)
    for n in range(N):
        fl = f4[n if f4.shape[0] > 1 else 0]
        for y in range(H):
            for xx in range(W):
                px, py = xx + fl[y, xx, 0], y + fl[y, xx, 1]
                for c in range(C):
                    out[n, c, y, xx] = _sample_reference(x4[n, c], py, px, mode, boundary)
    return out.reshape(shape)


def _corner_slopes_reference(plane, py, px, boundary):
    """Right-sided derivatives (d/dpx, d/dpy) of the bilinear sample at (py, px)."""
    H, W = plane.shape
    dqx = dqy = 1.0
    if boundary == "border":
        dqx = 1.0 if 0.0 <= px < W - 1.0 else 0.0
        dqy = 1.0 if 0.0 <= py < H - 1.0 else 0.0
        px, py = min(max(px, 0.0), W - 1.0), min(max(py, 0.0), H - 1.0)
    elif boundary == "wrap":
        px, py = px % W, py % H
    i0, j0 = math.floor(py), math.floor(px)
    ty, tx = py - i0, px - j0
    v = [[_read_reference(plane, i0 + a, j0 + b, boundary) for b in (0, 1)] for a in (0, 1)]
    ddx = (1.0 - ty) * (v[0][1] - v[0][0]) + ty * (v[1][1] - v[1][0])
    ddy = (1.0 - tx) * (v[1][0] - v[0][0]) + tx * (v[1][1] - v[0][1])
    return dqx * ddx, dqy * ddy


def _warp_backward_reference(grad_out, x, flow, mode="bilinear", boundary="zeros"):
    """Plain-loop :func:`warp_backward`: scatter for grad_x, corner slopes for grad_flow."""
    shape, x4, f4, _, _ = _check_warp_inputs(x, flow, mode, boundary)
    g4 = as_float64(grad_out, "grad_out").reshape(x4.shape)
    N, C, H, W = x4.shape
    gx = np.zeros(x4.shape)
    gf = np.zeros(f4.shape)
    for n in range(N):
        fn = n if f4.shape[0] > 1 else 0
        for y in range(H):
            for xx in range(W):
                px, py = xx + f4[fn, y, xx, 0], y + f4[fn, y, xx, 1]
                if not (math.isfinite(px) and math.isfinite(py)):
                    gf[fn, y, xx] = np.nan
                    continue
                # grad_x: the sample is linear in x; its weights are samples of one-hot planes
                weights = _sample_weights_reference(py, px, H, W, mode, boundary)
                for c in range(C):
                    gv = g4[n, c, y, xx]
                    for (i, j), wgt in weights:
                        gx[n, c, i, j] += wgt * gv
                    if mode == "bilinear":
                        sx, sy = _corner_slopes_reference(x4[n, c], py, px, boundary)
                        gf[fn, y, xx, 0] += gv * sx
                        gf[fn, y, xx, 1] += gv * sy
    return gx.reshape(shape), gf.reshape(np.shape(flow))


def _sample_weights_reference(py, px, H, W, mode, boundary):
    """[((i, j), weight)] read by one sample: probe the sampler with one-hot planes."""
    out = []
    probe = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            probe[i, j] = 1.0
            wgt = _sample_reference(probe, py, px, mode, boundary)
            probe[i, j] = 0.0
            if wgt != 0.0:
                out.append(((i, j), wgt))
    return out


# ----------------------------------------------------------------------------- motion matrix

def _axis_taps_numpy(p, size, mode, boundary):
    """Vectorised per-axis taps: list of (index, weight, read) arrays (1 for nearest, 2 else)."""
    ok = np.isfinite(p)
    p = np.where(ok, p, 0.0)
    if boundary == "border":
        p = np.clip(p, 0.0, size - 1.0)
    elif boundary == "wrap":
        p = np.mod(p, size)  # may round up to size; the index is wrapped below
    if mode == "nearest":
        if boundary == "zeros":
            p = np.where(ok & (p >= -1.0) & (p <= size), p, -1.0)  # -1 rounds to outside
        i = np.floor(p + 0.5).astype(np.int64)
        if boundary == "zeros":
            ok = ok & (i >= 0) & (i < size)
        return [(i % size, np.ones_like(p), ok)]
    if boundary == "zeros":
        ok = ok & (p >= -1.0) & (p < size)
        p = np.where(ok, p, 0.0)
    f = np.floor(p)
    t = p - f
    i0 = f.astype(np.int64)
    if boundary == "zeros":
        return [(i0, 1.0 - t, ok & (i0 >= 0)), (i0 + 1, t, ok & (i0 + 1 < size))]
    return [(i0 % size, 1.0 - t, ok), ((i0 + 1) % size if boundary == "wrap"
                                       else np.minimum(i0 + 1, size - 1), t, ok)]


def motion_matrix(flow, mode="bilinear", boundary="zeros", channels=1):
    """The warp as a sparse matrix (Lemma 1 of seed 000): ``M @ x.ravel() == warp(x).ravel()``.

    Parameters
    ----------
    flow : array_like, shape (H, W, 2)
        Backward flow (see :func:`warp`).
    mode, boundary : str
        As in :func:`warp`.
    channels : int
        ``C``: ``M`` acts on ``x`` of shape (C, H, W) raveled in C order (block diagonal, the
        same motion for every channel).

    Returns
    -------
    scipy.sparse.csr_array, shape (C*H*W, C*H*W), float64
        Row ``y*W + x`` holds the bilinear weights of output pixel (y, x), built directly from
        the flow (not by warping unit vectors); zero weights are not stored. For integer flow it
        is a 0/1 selection matrix, and a permutation matrix under ``"wrap"`` when the flow is a
        bijection of the pixel grid. A pixel with non-finite flow gets a row with a single NaN
        (on the diagonal), so ``M @ x`` is NaN there as ``warp`` is. Column-vector form: the
        paper's row-vector ``V' = V M`` uses the transpose.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.motion import motion_matrix, warp
    >>> x = np.arange(12.0).reshape(3, 4)
    >>> flow = np.zeros((3, 4, 2))
    >>> flow[..., 0] = 1.0
    >>> M = motion_matrix(flow)
    >>> M.shape, M.nnz  # the last column's samples fall outside: no entry
    ((12, 12), 9)
    >>> bool(np.array_equal(M @ x.ravel(), warp(x, flow).ravel()))
    True
    """
    one_of(mode, "mode", MODES)
    one_of(boundary, "boundary", BOUNDARIES)
    f = _check_flow(flow, ndim=(3, 4))
    if f.ndim == 4:
        if f.shape[0] != 1:
            raise ValueError(f"motion_matrix takes one flow (H, W, 2), got a batch of shape "
                             f"{f.shape}")
        f = f[0]
    C = as_int(channels, "channels", minimum=1)
    H, W = f.shape[:2]
    P = H * W
    check_alloc((4 * P * C, 3), f"channels={C} (the motion matrix of {C} blocks of a {H}x{W} "
                                f"flow, up to 4 entries a row)")
    gx = np.arange(W, dtype=np.float64)[None, :] + f[..., 0]
    gy = np.arange(H, dtype=np.float64)[:, None] + f[..., 1]
    finite = (np.isfinite(gx) & np.isfinite(gy)).ravel()
    rows, cols, vals = [], [], []
    pixel = np.arange(P)
    for iy, wy, oky in _axis_taps_numpy(gy, H, mode, boundary):
        for ix, wx, okx in _axis_taps_numpy(gx, W, mode, boundary):
            wgt = (wy * wx).ravel()
            keep = (oky & okx).ravel() & (wgt != 0.0) & finite
            rows.append(pixel[keep])
            cols.append((iy * W + ix).ravel()[keep])
            vals.append(wgt[keep])
    rows.append(pixel[~finite])
    cols.append(pixel[~finite])
    vals.append(np.full(int((~finite).sum()), np.nan))
    m1 = sp.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(P, P))
    m1.sum_duplicates()  # wrap/border on a size-1 axis reads one pixel twice
    if C == 1:
        return m1
    return sp.csr_array(sp.block_diag([m1] * C, format="csr"))


def valid_mask(flow, shape=None, *, mode="bilinear"):
    """Where the sample lies inside the source frame (seed 001's predictable region).

    Parameters
    ----------
    flow : array_like, shape (H, W, 2) or (N, H, W, 2)
    shape : tuple, optional
        Shape of the frame the flow is applied to (``(H, W)``, ``(C, H, W)`` or
        ``(N, C, H, W)``); checked as :func:`warp` checks ``x``: its last two entries must
        equal the flow's ``(H, W)``, and a batched flow ``(N', H, W, 2)`` needs
        ``(N, C, H, W)`` with ``N' in (1, N)``. Default: the flow's own.
    mode : {"bilinear", "nearest"}
        Bilinear: ``0 <= x + dx <= W - 1`` and ``0 <= y + dy <= H - 1`` (every corner with a
        non-zero weight is in the frame). Nearest: the rounded index ``floor(p + 0.5)`` is in
        the frame (``-0.5 <= x + dx < W - 0.5``).

    Returns
    -------
    ndarray of bool, shape (H, W) or (N, H, W)
        False where the source falls outside the frame (regions "entering the frame", which
        no boundary rule can predict) and where the flow is not finite.
    """
    one_of(mode, "mode", MODES)
    f = _check_flow(flow)
    H, W = f.shape[-3:-1]
    if shape is not None:
        if not isinstance(shape, (tuple, list)) or len(shape) not in (2, 3, 4):
            raise ValueError(f"shape must be a frame shape (H, W), (C, H, W) or (N, C, H, W), "
                             f"got {shape!r}")
        shp = tuple(as_int(s, f"shape[{i}]", minimum=1) for i, s in enumerate(shape))
        if shp[-2:] != (H, W):
            raise ValueError(f"shape {shp} does not end in the flow's spatial size (H, W) = "
                             f"({H}, {W}) (flow of shape {f.shape})")
        if f.ndim == 4 and len(shp) != 4:  # the rules of warp(x, flow) with x.shape == shape
            raise ValueError(f"a batched flow {f.shape} needs shape (N, C, H, W), got shape "
                             f"{shp}")
        if f.ndim == 4 and f.shape[0] not in (1, shp[0]):
            raise ValueError(f"flow batch size {f.shape[0]} does not match the batch size "
                             f"{shp[0]} of shape {shp} (flow {f.shape})")
    px = np.arange(W, dtype=np.float64)[None, :] + f[..., 0]
    py = np.arange(H, dtype=np.float64)[:, None] + f[..., 1]
    with np.errstate(invalid="ignore"):
        if mode == "nearest":  # the rounded index floor(p + 0.5) is inside
            jx, iy = np.floor(px + 0.5), np.floor(py + 0.5)
            return (jx >= 0) & (jx <= W - 1) & (iy >= 0) & (iy <= H - 1)
        return (px >= 0.0) & (px <= W - 1.0) & (py >= 0.0) & (py <= H - 1.0)


# ----------------------------------------------------------------------------- motion models

def _cos_sin_degrees(angle: float) -> tuple[float, float]:
    """cos and sin of an angle in degrees, exact at multiples of 90 (so rot90 is exact)."""
    quarter, rest = divmod(angle, 90.0)
    if rest == 0.0:
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    rad = math.radians(angle)
    return math.cos(rad), math.sin(rad)


def _affine_matrix(rotation: float, scale, shear) -> np.ndarray:
    """Forward linear part ``A = R(rotation) @ Shx @ Shy @ S`` on (x, y) with y pointing down."""
    c, s = _cos_sin_degrees(rotation)
    rot = np.array([[c, s], [-s, c]])  # counter-clockwise as displayed (row 0 on top)
    shx = math.tan(math.radians(shear[0]))
    shy = math.tan(math.radians(shear[1]))
    return rot @ np.array([[1.0, shx], [0.0, 1.0]]) @ np.array([[1.0, 0.0], [shy, 1.0]]) \
        @ np.diag([float(scale[0]), float(scale[1])])


def _affine_inverse(rotation: float, scale, shear) -> np.ndarray:
    """``A^-1 = S^-1 Shy^-1 Shx^-1 R^-1`` of :func:`_affine_matrix`, each factor inverted in
    closed form (rotation and shears have determinant 1). Never divides by the computed
    determinant ``det A = sx sy``, which underflows (``scale=1e-200``) or cancels to garbage
    (``1 + shx shy - shx shy`` for shears near +-90 degrees) where the inverse is finite."""
    c, s = _cos_sin_degrees(rotation)
    shx = math.tan(math.radians(shear[0]))
    shy = math.tan(math.radians(shear[1]))
    shears_inv = np.array([[1.0, -shx], [-shy, 1.0 + shx * shy]])  # Shy^-1 @ Shx^-1
    inv = shears_inv @ np.array([[c, -s], [s, c]])  # R^-1 = R^T
    with np.errstate(over="ignore"):  # 1 / a subnormal scale: refused by affine_flow
        return inv / np.array([[float(scale[0])], [float(scale[1])]])


def _real_pair(value, name: str) -> tuple[float, float]:
    """A real number (used for x and y) or a pair (x, y) of real numbers."""
    if np.ndim(value) == 0:
        v = as_real(value, name)
        return v, v
    seq = list(np.ravel(np.asarray(value, dtype=object)))
    if np.ndim(value) != 1 or len(seq) != 2:
        raise ValueError(f"{name} must be a number or a pair (x, y), got {value!r}")
    return as_real(seq[0], f"{name}[0]"), as_real(seq[1], f"{name}[1]")


def _frame_hw(shape, name: str = "shape") -> tuple[int, int]:
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise ValueError(f"{name} must be (H, W), got {shape!r}")
    return tuple(as_int(s, f"{name}[{i}]", minimum=1) for i, s in enumerate(shape))


def affine_flow(shape, *, translation=(0.0, 0.0), rotation=0.0, scale=(1.0, 1.0),
                shear=(0.0, 0.0), center=None):
    """Backward flow of the seven-parameter affine motion of seed 001 (Fig. 6).

    The *content* moves by the forward map (points ``p = (x, y)``, y pointing down)::

        p' = A (p - c) + c + t,    A = R(rotation) @ Shx(shear[0]) @ Shy(shear[1]) @ S(scale)

    i.e. scale first, then y-shear, x-shear, rotation about the centre ``c``, translation last;
    ``R`` turns counter-clockwise as displayed (row 0 on top; ``rotation=90`` is ``np.rot90``),
    ``Shx`` maps ``x -> x + tan(shear[0]) y``, ``Shy`` maps ``y -> y + tan(shear[1]) x`` (shears in
    degrees, ``|shear| < 90``), ``S = diag(scale)``. The returned flow is the backward map that
    :func:`warp` needs to produce the moved frame: ``flow(p') = A^-1 (p' - c - t) + c - p'``.
    A pure translation ``t`` therefore gives ``flow = -t``.

    Parameters
    ----------
    shape : (H, W)
    translation : (tx, ty), pixels
    rotation : float, degrees
    scale : float or (sx, sy), non-zero
    shear : (shear_x, shear_y), degrees
    center : (cx, cy), optional
        Default: the image centre ``((W - 1) / 2, (H - 1) / 2)`` in pixel-centre coordinates.

    Returns
    -------
    ndarray, float64, shape (H, W, 2)
        Exact at multiples of 90 degrees (cos and sin are taken exactly there).

    Raises
    ------
    TypeError
        If an argument has the wrong type, naming it.
    ValueError
        If ``shape`` is not two sizes >= 1 or the ``(H, W, 2)`` flow would exceed the memory
        limit (naming ``shape``); if ``scale`` is 0, a shear angle is not in (-90, 90) or a
        value is not finite; if the flow itself exceeds the float64 range (e.g.
        ``scale=1e-310``: ``A^-1`` holds ``1 / scale``). ``A^-1`` is composed from the
        inverted factors, never divided by ``det A``: ``scale=1e-200`` or shears of
        ``+-89.9999999`` degrees give a finite flow.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.motion import affine_flow, warp
    >>> affine_flow((2, 3), translation=(1.0, 0.0))[0, 0]  # content moves right: flow = -t
    array([-1.,  0.])
    >>> x = np.arange(9.0).reshape(3, 3)
    >>> bool(np.array_equal(warp(x, affine_flow(x.shape, rotation=90)), np.rot90(x)))
    True
    """
    H, W = _frame_hw(shape)
    check_alloc((H, W, 2), "shape")
    t = np.array(_real_pair(translation, "translation"))
    rot = as_real(rotation, "rotation")
    sc = _real_pair(scale, "scale")
    if 0.0 in sc:
        raise ValueError(f"scale must be non-zero, got {scale!r}")
    sh = _real_pair(shear, "shear")
    if any(abs(v) >= 90.0 for v in sh):
        raise ValueError(f"shear angles must lie in (-90, 90) degrees, got {shear!r}")
    c = np.array(((W - 1) / 2.0, (H - 1) / 2.0) if center is None
                 else _real_pair(center, "center"))
    a_inv = _affine_inverse(rot, sc, sh)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    with np.errstate(all="ignore"):  # beyond the float range: refused below
        rel_x = xs - c[0] - t[0]
        rel_y = ys - c[1] - t[1]
        src_x = a_inv[0, 0] * rel_x + a_inv[0, 1] * rel_y + c[0]
        src_y = a_inv[1, 0] * rel_x + a_inv[1, 1] * rel_y + c[1]
        flow = np.stack([src_x - xs, src_y - ys], axis=-1)
    if not np.isfinite(flow).all():
        raise ValueError(f"the backward flow of this motion exceeds the float64 range "
                         f"(|flow| > 1.8e308: scale={scale!r} too small for translation="
                         f"{translation!r}, shear={shear!r} and shape={(H, W)})")
    return flow


def block_vectors_to_flow(vectors, block_size, shape):
    """Dense flow from per-macroblock motion vectors (compressed video).

    Parameters
    ----------
    vectors : array_like, shape (Hb, Wb, 2) or (N, Hb, Wb, 2)
        One ``(dx, dy)`` per block in the flow convention of :func:`warp` (the block at
        ``(by, bx)`` of the current frame is predicted from the reference frame displaced by
        the vector, as H.264/HEVC motion vectors are; ffmpeg's exported ``AVMotionVector``
        gives it as ``(src_x - dst_x, src_y - dst_y)``). NaN (e.g. for intra blocks) passes
        through, and :func:`warp` turns it into NaN pixels.
    block_size : int or (bh, bw)
    shape : (H, W)
        Frame size; ``Hb = ceil(H / bh)`` and ``Wb = ceil(W / bw)`` (partial edge blocks).

    Returns
    -------
    ndarray, float64, shape (H, W, 2) or (N, H, W, 2)
        ``flow[..., y, x, :] = vectors[..., y // bh, x // bw, :]``.
    """
    v = _check_flow(vectors, "vectors")
    bh, bw = as_tuple(block_size, "block_size", 2, minimum=1, maximum=None)
    H, W = _frame_hw(shape)
    need = (-(-H // bh), -(-W // bw))
    if v.shape[-3:-1] != need:
        raise ValueError(f"vectors must hold ceil(H/bh) x ceil(W/bw) = {need[0]} x {need[1]} "
                         f"blocks for shape {(H, W)} and block_size {(bh, bw)}, got {v.shape}")
    check_alloc(v.shape[:-3] + (H, W, 2), "shape (the flow)")
    # a block taller (wider) than the frame is one partial block: repeat it H (W) times only
    dense = np.repeat(np.repeat(v, min(bh, H), axis=-3), min(bw, W), axis=-2)
    return np.ascontiguousarray(dense[..., :H, :W, :])


def scale_flow(flow, stride, *, sample="corner"):
    """Flow of a feature map ``stride`` times smaller (seed 001 eq. 12: ``v' = v / n^k``).

    Parameters
    ----------
    flow : array_like, shape (H, W, 2) or (N, H, W, 2)
    stride : int or (sh, sw)
        Total downscaling ``n^k`` between the frame and the feature map.
    sample : {"corner", "center"}
        Which input position feature pixel ``(i, j)`` stands for:

        * ``"corner"``: input pixel ``(sh i, sw j)``: a stride-``s`` conv with ``padding =
          k // 2`` (odd ``k``) centres output ``i`` there. Output size ``ceil(H / sh)``; the
          flow is subsampled exactly.
        * ``"center"``: the centre ``sh i + (sh - 1) / 2`` of the ``s x s`` window of a
          non-overlapping pooling (kernel = stride, no padding). Output size ``floor(H / sh)``;
          the flow is bilinearly sampled there (the mean of the 2 x 2 central pixels when
          ``s`` is even, the central pixel when odd), which is exact for affine flows.

    Returns
    -------
    ndarray, float64, shape (H', W', 2) or (N, H', W', 2)
        ``dx / sw`` and ``dy / sh`` at the sampled positions (NaN passes through).

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.motion import scale_flow
    >>> flow = np.zeros((4, 4, 2))
    >>> flow[..., 0], flow[..., 1] = 4.0, 2.0
    >>> small = scale_flow(flow, 2)
    >>> small.shape
    (2, 2, 2)
    >>> small[0, 0]
    array([2., 1.])
    >>> scale_flow(np.zeros((5, 5, 2)), 2, sample="center").shape  # floor(5 / 2)
    (2, 2, 2)
    """
    f = _check_flow(flow)
    sh, sw = as_tuple(stride, "stride", 2, minimum=1, maximum=None)
    one_of(sample, "sample", ("corner", "center"))
    H, W = f.shape[-3:-1]
    try:
        divisor = np.array([float(sw), float(sh)])
    except OverflowError:
        raise ValueError(f"stride must be below the float64 range (the flow is divided by it), "
                         f"got {stride!r}") from None
    if sample == "corner":  # a step beyond the frame keeps row (column) 0 only, as H (W) does
        sub = f[..., ::min(sh, H), ::min(sw, W), :]
    else:
        if H < sh or W < sw:
            raise ValueError(f"flow of spatial size {(H, W)} is smaller than one pooling "
                             f"window of stride {(sh, sw)}")
        rows = [np.arange(H // sh) * sh + (sh - 1) // 2, np.arange(H // sh) * sh + sh // 2]
        cols = [np.arange(W // sw) * sw + (sw - 1) // 2, np.arange(W // sw) * sw + sw // 2]
        by_rows = 0.5 * (f[..., rows[0], :, :] + f[..., rows[1], :, :])
        sub = 0.5 * (by_rows[..., cols[0], :] + by_rows[..., cols[1], :])
    return sub / divisor  # eq. 12: v' = v / n^k


# ----------------------------------------------------------------------------- Theorem 2

class FeatureTransfer(NamedTuple):
    """Result of :func:`feature_transfer`: ``T`` and its relative residual."""

    #: dense (m, m) matrix with ``T @ vec(A') ~ vec(B')`` (column-vector form)
    T: np.ndarray
    #: ``||C M - T C||_F / ||C M||_F``; ~1e-15 when the transfer is exact
    residual: float


def _dense_matrix(m, name: str, max_size: int) -> np.ndarray:
    shape = getattr(m, "shape", None) if sp.issparse(m) else np.shape(m)
    if shape is not None and len(shape) == 2 and max(shape) > max_size:
        raise ValueError(f"{name} has shape {tuple(shape)}: feature_transfer works with dense "
                         f"matrices and accepts sides up to max_size={max_size} (pass a larger "
                         f"max_size, knowing T costs O(n^3) time and O(n^2) memory)")
    dense = m.toarray() if sp.issparse(m) else m
    a = as_float64(dense, name, ndim=2)
    check_finite(a, name)
    return a


def _layers(conv_matrix) -> list:
    """A chain is a list/tuple of 2-D arrays or sparse matrices; anything else is one matrix
    (so a nested list of numbers stays a single dense matrix)."""
    if isinstance(conv_matrix, (list, tuple)):
        if not conv_matrix:
            raise ValueError("conv_matrix must be a matrix or a non-empty sequence of matrices")
        if all(sp.issparse(m) or (isinstance(m, np.ndarray) and m.ndim == 2)
               for m in conv_matrix):
            return list(conv_matrix)
    return [conv_matrix]


def feature_transfer(conv_matrix, motion_matrix, *, max_size=FEATURE_TRANSFER_MAX_SIZE,
                     rcond=None) -> FeatureTransfer:
    """Theorem 2 of seed 000: the linear map ``T`` from key-frame to moved-frame features.

    With ``A' = C vec(A)`` and ``B' = C M vec(A)`` (column vectors, ``M`` from
    :func:`motion_matrix`, ``C`` from :func:`lmref.conv.conv2d_matrix`),
    ``T = C M C^+`` is the least-squares solution of ``T C = C M`` (minimum norm). The paper
    writes row vectors, ``B' = A' T`` with ``T = C^-1 M C``; that is the transpose of this
    ``T`` with ``C`` and ``M`` transposed too. ``T`` is exact (``residual ~ 1e-15``) when ``C``
    has full column rank, e.g. a stride-1 circular convolution whose kernel's DFT has no zeros,
    or a chain of such (the seed's Remark); strides, "valid" outputs and fewer output than input
    channels lose information and leave a residual. Zero padding alone keeps a generic square
    ``C`` invertible: ``T`` is then exact too, but no longer a local (convolution-like) map.

    Parameters
    ----------
    conv_matrix : (m, n) matrix or sequence of matrices
        Dense or scipy.sparse. A list/tuple of 2-D arrays or sparse matrices ``[C1, C2, ...]``
        is a chain of layers applied first to last: ``C = ... C2 @ C1``.
    motion_matrix : (n, n) matrix
    max_size : int
        Largest side of any matrix accepted (default 4096): everything is dense and the
        pseudo-inverse costs O(n^3); a larger input raises ``ValueError``.
    rcond : float, optional
        Cut-off for small singular values (``numpy.linalg.lstsq``; default: machine precision
        times the largest side).

    Returns
    -------
    FeatureTransfer
        ``(T, residual)`` with ``residual = ||C M - T C||_F / ||C M||_F`` (0 when ``C M = 0``).
    """
    max_size = as_int(max_size, "max_size", minimum=1, maximum=None)  # only compared
    layers = _layers(conv_matrix)
    C = None
    for k, layer in enumerate(layers):
        name = "conv_matrix" if len(layers) == 1 else f"conv_matrix[{k}]"
        ck = _dense_matrix(layer, name, max_size)
        if C is not None and ck.shape[1] != C.shape[0]:
            raise ValueError(f"{name} has shape {ck.shape} but the previous layer outputs "
                             f"{C.shape[0]} values")
        C = ck if C is None else ck @ C
    M = _dense_matrix(motion_matrix, "motion_matrix", max_size)
    if M.shape != (C.shape[1], C.shape[1]):
        raise ValueError(f"motion_matrix must be square with side {C.shape[1]} (the number of "
                         f"inputs of conv_matrix, shape {C.shape}), got {M.shape}")
    CM = C @ M
    T = np.linalg.lstsq(C.T, CM.T, rcond=rcond)[0].T  # T C = C M  <=>  C^T T^T = (C M)^T
    norm = np.linalg.norm(CM)
    residual = float(np.linalg.norm(CM - T @ C) / norm) if norm > 0 else 0.0
    return FeatureTransfer(np.ascontiguousarray(T), residual)


# ----------------------------------------------------------------------------- Theorem 3

def _generator(rng, name: str = "rng") -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"{name} must be a numpy.random.Generator or an int seed, got "
                    f"{type(rng).__name__}")


def _weight(weight) -> np.ndarray:
    return as_float64(weight, "weight", ndim=4)


def unit_normal_weights(shape, rng) -> np.ndarray:
    """Conv weights (OIHW) with the seed's unit normality: ``C ~ N(0, 1/d)``, ``d = fan-in``.

    ``d = C_in * kH * kW`` (``shape[1] * shape[2] * shape[3]``), so ``d * Var[C] = 1``. (The
    seed writes ``d * Var[C_kj] ~ N(0, 1)``, which mixes a variance with a distribution; the
    assumption its proof uses is this one, as in Glorot/He initialisation.) float64.
    """
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"shape must be (C_out, C_in, kH, kW), got {shape!r}")
    shp = tuple(as_int(s, f"shape[{i}]", minimum=1) for i, s in enumerate(shape))
    d = shp[1] * shp[2] * shp[3]
    check_alloc(shp, "the weights")
    return _generator(rng).standard_normal(shp) / math.sqrt(d)


def noise_gain(weight) -> np.ndarray:
    """Exact variance gain of white noise through a conv, per output channel (Theorem 3).

    For ``delta`` i.i.d. with variance ``sigma^2`` and *fixed* weights, every output pixel whose
    window lies inside the input (no zero padding involved; any stride, dilation or groups) has
    ``Var[delta'_o] = sigma^2 * sum(weight[o] ** 2)``: this returns ``sum(weight[o] ** 2)``,
    shape ``(C_out,)``, float64.

    The seed's eq. (5) concludes ``Var = sigma^2`` exactly; that holds only *on average over
    weights* with ``d * Var[C] = 1`` (``E[sum W^2] = d Var[C] = 1``, see
    :func:`unit_normal_weights`). For one fixed network the gain is ``sum W^2`` (counter-example:
    a 3 x 3 box filter with weights 1/9 has ``d Var``-style normalisation yet gain 1/9), and
    ``delta'`` is no longer white (neighbouring outputs share inputs), so gains of a chain of
    layers do not simply multiply. Zero-padded border outputs sum fewer terms (smaller gain).
    """
    w = _weight(weight)
    return np.einsum("oihw,oihw->o", w, w)


class NoiseEstimate(NamedTuple):
    """Monte-Carlo statistics of ``delta' = conv(delta)`` per output channel."""

    mean: np.ndarray
    var: np.ndarray
    #: number of samples per channel (trials x output pixels)
    n: int


def _check_noise_work(n_trials: int, shape: tuple) -> None:
    """Work guard of :func:`propagate_noise`: the noise drawn in total is bounded like one
    allocation (it is drawn batch by batch, so only the running time would be unbounded)."""
    check_work(n_trials * math.prod(shape) * 8, f"trials={n_trials}",
               f"draw trials x shape = {(n_trials,) + tuple(shape)} noise values in total")


def propagate_noise(weight, sigma, shape, trials, rng, *, stride=1, padding=0, dilation=1,
                    groups=1, padding_mode="zeros", batch=64) -> NoiseEstimate:
    """Monte-Carlo estimate of the mean and variance of ``delta' = delta C`` (Theorem 3).

    Draws ``trials`` noise inputs ``delta ~ N(0, sigma^2)`` of ``shape = (C_in, H, W)`` from
    ``rng``, convolves them with ``weight`` (:func:`lmref.conv.conv2d` with the given options)
    and pools the outputs of each channel over trials and pixels. With the default
    ``padding=0`` every output is an interior one, so ``var ~ sigma^2 * noise_gain(weight)`` and
    ``mean ~ 0``. Sample variance with ``ddof=1``; float64; deterministic for a given ``rng``.

    Raises
    ------
    TypeError
        If an argument has the wrong type, naming it.
    ValueError
        If an argument is out of range, naming it (``trials >= 2``, ``sigma >= 0``); memory
        guard: if one batch of noise would exceed the memory limit, or if the noise drawn in
        total (``trials x C_in x H x W`` float64 values, drawn batch by batch) would exceed
        it, naming ``trials``: a bound on the work of one call (about 1e9 values under the
        default 8 GiB; ``LMREF_MAX_BYTES`` raises both).
    """
    from lmref.conv import conv2d

    w = _weight(weight)
    s = as_real(sigma, "sigma")
    if s < 0:
        raise ValueError(f"sigma must be >= 0, got {s}")
    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise ValueError(f"shape must be the input shape (C_in, H, W), got {shape!r}")
    shp = tuple(as_int(v, f"shape[{i}]", minimum=1) for i, v in enumerate(shape))
    n_trials = as_int(trials, "trials", minimum=2)
    per_batch = min(as_int(batch, "batch", minimum=1, maximum=None), n_trials)
    gen = _generator(rng)
    check_alloc((per_batch,) + shp, f"batch={per_batch} (one batch of noise of shape {shp})")
    _check_noise_work(n_trials, shp)
    total = total_sq = None
    count = 0
    for start in range(0, n_trials, per_batch):
        b = min(per_batch, n_trials - start)
        delta = s * gen.standard_normal((b,) + shp)
        out = conv2d(delta, w, None, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, padding_mode=padding_mode)
        part = out.sum(axis=(0, 2, 3))
        part_sq = (out * out).sum(axis=(0, 2, 3))
        total = part if total is None else total + part
        total_sq = part_sq if total_sq is None else total_sq + part_sq
        count += b * out.shape[2] * out.shape[3]
    mean = total / count
    var = (total_sq - count * mean * mean) / (count - 1)
    return NoiseEstimate(mean, var, count)


# ----------------------------------------------------------------------------- registry

def _example_warp(rng):
    """Small batch, shared fractional flow kept away from integer source positions (kinks)."""
    x = rng.standard_normal((2, 3, 5, 6))
    whole = rng.integers(-2, 3, size=(5, 6, 2)).astype(np.float64)
    flow = whole + rng.uniform(0.15, 0.85, size=(5, 6, 2))
    return (x, flow), {"mode": "bilinear", "boundary": "zeros"}


_OPS = [
    Op(name="warp", cuda="lmref.cuda:warp", cpu="lmref.motion:warp", reference="lmref.motion:_warp_reference",
       backward="lmref.motion:warp_backward", peer="lmref.peers.torch_motion:warp",
       peer_name="torch.nn.functional.grid_sample (align_corners=True)",
       example="lmref.motion:_example_warp",
       notes="backward flow out[y,x] = x[y+dy, x+dx]; right-sided derivative at kinks"),
]
