"""The numba kernels of the fast paths and their drivers: forward, weight gradient and input
gradient on a padded input split into column-stride phases, the channels-last weight- and
input-gradient kernels for many input channels, and the three building blocks
:func:`_forward`, :func:`_input_grad` and :func:`_weight_grad` on 4-D float64 arrays.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from llvmlite import ir as llvm_ir
from numba import uint64
from numba.core import cgutils, types
from numba.extending import intrinsic

from lmref._numba import jit, pjit, prange
from lmref.conv.geometry import _pad, _pad_maps, _unpad_adjoint

__all__: list[str] = []  # private module


# ----------------------------------------------------------------------------------------------
# numba kernels on a padded input (2-D form; 1-D runs as height 1)
#
# Layout trick for the column stride ``sw``: the padded input is split into ``sw`` column
# phases, ``xr[n, c, r, p, m] = xp[n, c, r, p + m * sw]``, so kernel column ``b`` reads the
# contiguous run ``xr[n, c, r, phase[b], shift[b] + j]`` (``phase, shift = divmod``-like of
# ``b * dw``) for output columns ``j``: every inner loop is unit-stride and vectorises.
# Jobs own disjoint outputs (prange-safe) and block 4 channels (register reuse of the loaded
# row); each output is accumulated in the fixed order (channel pair, kernel row, kernel column)
# as ``acc += (w0 * u + w1 * v)``, the same in every block shape and thread count.
# ----------------------------------------------------------------------------------------------

_BLOCK = 4
#: below this many multiply-adds the serial driver runs (no thread start-up)
_PARALLEL_MIN_WORK = 1 << 21


@jit
def _forward_rows4(xr, w, phase, shift, n, o0, ci0, ih0, dh, acc):
    """``acc[k] += sum_{c, a, b} w[o0 + k, c, a, b] * row(c, a, b)``, ``k < 4``, one output row."""
    c_in_g, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    wo = acc.shape[1]
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    for c in range(0, c_in_g - 1, 2):
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                v_row = xr[n, ci0 + c + 1, r, phase[b], s:s + wo]
                w00, w01 = w[o0, c, a, b], w[o0, c + 1, a, b]
                w10, w11 = w[o0 + 1, c, a, b], w[o0 + 1, c + 1, a, b]
                w20, w21 = w[o0 + 2, c, a, b], w[o0 + 2, c + 1, a, b]
                w30, w31 = w[o0 + 3, c, a, b], w[o0 + 3, c + 1, a, b]
                for j in range(wo):
                    u = u_row[j]
                    v = v_row[j]
                    a0[j] += w00 * u + w01 * v
                    a1[j] += w10 * u + w11 * v
                    a2[j] += w20 * u + w21 * v
                    a3[j] += w30 * u + w31 * v
    if c_in_g % 2:
        c = c_in_g - 1
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                w00, w10, w20, w30 = w[o0, c, a, b], w[o0 + 1, c, a, b], w[o0 + 2, c, a, b], \
                    w[o0 + 3, c, a, b]
                for j in range(wo):
                    u = u_row[j]
                    a0[j] += w00 * u
                    a1[j] += w10 * u
                    a2[j] += w20 * u
                    a3[j] += w30 * u


@jit
def _forward_rows1(xr, w, phase, shift, n, o, ci0, ih0, dh, acc):
    """One output channel of :func:`_forward_rows4` (same summation order)."""
    c_in_g, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    wo = acc.shape[0]
    for c in range(0, c_in_g - 1, 2):
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                v_row = xr[n, ci0 + c + 1, r, phase[b], s:s + wo]
                w0, w1 = w[o, c, a, b], w[o, c + 1, a, b]
                for j in range(wo):
                    acc[j] += w0 * u_row[j] + w1 * v_row[j]
    if c_in_g % 2:
        c = c_in_g - 1
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                w0 = w[o, c, a, b]
                for j in range(wo):
                    acc[j] += w0 * u_row[j]


@jit
def _blocks(count):
    return (count + _BLOCK - 1) // _BLOCK


@jit
def _forward_jobs(n_batch, c_out, groups):
    return n_batch * groups * _blocks(c_out // groups)


@jit
def _forward_job(xr, w, bias, phase, shift, sh, dh, groups, out, job):
    """Output planes ``out[n, o0:o0 + 4]`` (fewer at the end of a group)."""
    c_out, c_in_g = w.shape[0], w.shape[1]
    ho, wo = out.shape[2], out.shape[3]
    c_out_g = c_out // groups
    nblk = _blocks(c_out_g)
    n = job // (groups * nblk)
    rem = job - n * (groups * nblk)
    grp = rem // nblk
    o0 = grp * c_out_g + (rem - grp * nblk) * _BLOCK
    nb = min(_BLOCK, (grp + 1) * c_out_g - o0)
    acc = np.empty((_BLOCK, wo))
    for i in range(ho):
        acc[:] = 0.0
        if nb == _BLOCK:
            _forward_rows4(xr, w, phase, shift, n, o0, grp * c_in_g, i * sh, dh, acc)
        else:
            for k in range(nb):
                _forward_rows1(xr, w, phase, shift, n, o0 + k, grp * c_in_g, i * sh, dh, acc[k])
        for k in range(nb):
            bv = bias[o0 + k]
            for j in range(wo):
                out[n, o0 + k, i, j] = acc[k, j] + bv


@jit
def _forward_serial(xr, w, bias, phase, shift, sh, dh, groups, out):
    for job in range(_forward_jobs(out.shape[0], w.shape[0], groups)):
        _forward_job(xr, w, bias, phase, shift, sh, dh, groups, out, job)


@pjit
def _forward_parallel(xr, w, bias, phase, shift, sh, dh, groups, out):
    for job in prange(_forward_jobs(out.shape[0], w.shape[0], groups)):
        _forward_job(xr, w, bias, phase, shift, sh, dh, groups, out, job)


# ----------------------------------------------------------------------------------------------
# forward in register tiles (C_out / groups >= 8 and output width >= 8)
#
# A tile is 16 output channels x 8 output columns of one output row: its 128 sums stay in 16
# vector registers through the whole reduction (``acc`` is a stack array that LLVM promotes to
# registers: every index is a constant once the column loop is vectorised), so a step (channel
# pair, tap) loads two input vectors and 32 broadcast weights (memory operands of the
# multiplies) for 32 multiplies and 32 adds and touches no sum in memory
# (:func:`_forward_rows4` loads and stores 4 sums per 8 multiply-adds). Each sum is
# accumulated exactly as in :func:`_forward_rows4`: ``acc = 0``; per channel pair
# ``(c, c + 1)``, kernel row ``a``, kernel column ``b``: ``acc += w[o, c, a, b] * u +
# w[o, c + 1, a, b] * v``; an odd last channel alone, ``acc += w * u``; then ``+ bias``: the
# same bits. When 16 (8) does not divide the channels of a group (the output width), the last
# tile overlaps the one before (a recomputed sum has the same bits): a tile stores only the
# channels that the previous block of the group did not (those are another job's), and all
# its columns (the previous ones are this job's: the same values written again). A group of 8
# to 15 channels fills the rest of its tile with zero weights (sums computed, not stored).
# Jobs own one output row of a block of channels: disjoint outputs (prange-safe), the same
# bits for any thread count.
#
# Input and weights are read flat: ``xf[n, c, (i * sh + a * dh) * P * M + phase[b] * M +
# shift[b] + j]`` is :func:`_split_columns`' ``xr[n, c, i * sh + a * dh, phase[b], shift[b] +
# j]``, the tap offsets (all but ``i * sh * P * M + j``) are precomputed, and the 32 weights
# of a step (both channels of a pair, 16 output channels) are one run of ``wt``
# (:func:`_tile_weights`).
#
# Speed (measured, 1 thread, Zen 5, 8x64x56x56 -> 64, 3x3, kernel alone): about 40 GMAC/s
# against 16 for the row kernels (the unfused peak, 2 multiplies and 2 adds of 8 lanes a
# cycle, is about 55). Tried, bitwise the same: 8 channels x 8 columns (about 10 % slower: the
# loop overhead is paid per 16 instead of 32 multiplies); 4 channels x 16, 24 or 32 columns,
# 8 x 16, 8 channels x 2 rows x 8 columns (slower, or spilling once more than 16 broadcast
# weights stay live: a weight that multiplies two vectors is kept in a register); nested
# kernel row and column loops with row slices (10-15 % slower than one flat tap loop with an
# unsigned index). Not promoted to registers: a heap ``acc`` (``np.empty``: scalar code), an
# ``acc`` indexed by a channel loop variable (gathers and scatters), an ``acc`` made by the
# caller (a call that is not inlined); a store loop with run-time bounds ran 5-10 % slower.
# ----------------------------------------------------------------------------------------------

#: output channels of a forward tile (its sums: 16 vector registers) ...
_TILE_CH = 16
#: ... and output columns (one vector of 8 float64)
_TILE_COLS = 8
#: the tiled forward runs when C_out / groups reaches this and the output width
#: ``_TILE_COLS`` (a group of fewer than 16 channels fills the tile with zero weights: sums
#: that are not stored); tests raise it to run the row kernels
_TILE_MIN_OUT_CHANNELS = 8
#: ``_TILE_COLS`` unsigned: an unsigned index skips numba's negative-index wraparound (a select
#: per lane that turns the input loads into gathers; a slice instead costs clamping branches)
_UCOLS = np.uint64(_TILE_COLS)


@intrinsic
def _stack_tile(typingctx):
    """A C-contiguous ``(_TILE_CH, _TILE_COLS)`` float64 array on the stack, uninitialised.

    Unlike ``np.empty`` (heap memory that LLVM cannot prove unaliased) an ``alloca`` indexed by
    constants is promoted to registers. It has no owner (``meminfo`` null): it must not outlive
    the function that made it (never return or store it).
    """
    arr_t = types.Array(types.float64, 2, "C")

    def codegen(context, builder, signature, args):
        double = llvm_ir.DoubleType()
        buf = cgutils.alloca_once(builder, llvm_ir.ArrayType(double, _TILE_CH * _TILE_COLS))
        itemsize = context.get_constant(types.intp, 8)
        arr = context.make_array(arr_t)(context, builder)
        context.populate_array(
            arr, data=builder.bitcast(buf, double.as_pointer()),
            shape=[context.get_constant(types.intp, _TILE_CH),
                   context.get_constant(types.intp, _TILE_COLS)],
            strides=[context.get_constant(types.intp, _TILE_COLS * 8), itemsize],
            itemsize=itemsize, meminfo=None)
        return arr._getvalue()

    return arr_t(), codegen


@jit
def _forward_tile(xf, wt, toff, n, grp, blk, base, bias, out, o0, k0, k1, i, j0):
    """``out[n, o0 + k, i, j0 + j] = bias[o0 + k] + sum_{c, tap} w[o0 + k, c, tap] * xf[n,
    grp * C_in_g + c, base + toff[tap] + j]`` for ``k0 <= k < k1``, ``j < 8``, with ``w`` as
    packed in ``wt[grp, blk]`` (:func:`_tile_weights`), summed in the order of
    :func:`_forward_rows4`. Whole arrays and indices come in, not slices (a slice per tile
    costs reference counting)."""
    c_in_g = xf.shape[1] // wt.shape[0]
    ci0 = grp * c_in_g
    acc = _stack_tile()  # made here: passed to a call that is not inlined it stays in memory
    for k in range(_TILE_CH):
        for j in range(_TILE_COLS):
            acc[k, j] = 0.0
    for c in range(0, c_in_g - 1, 2):
        xu, xv = xf[n, ci0 + c, base:], xf[n, ci0 + c + 1, base:]
        wc = wt[grp, blk, c // 2]
        for t in range(toff.shape[0]):
            o, pq = toff[t], wc[t]
            for j in range(_UCOLS):  # one vector; the channels written out (a channel loop
                uj, vj = xu[o + j], xv[o + j]  # would index acc with a variable: in memory)
                acc[0, j] += pq[0] * uj + pq[16] * vj
                acc[1, j] += pq[1] * uj + pq[17] * vj
                acc[2, j] += pq[2] * uj + pq[18] * vj
                acc[3, j] += pq[3] * uj + pq[19] * vj
                acc[4, j] += pq[4] * uj + pq[20] * vj
                acc[5, j] += pq[5] * uj + pq[21] * vj
                acc[6, j] += pq[6] * uj + pq[22] * vj
                acc[7, j] += pq[7] * uj + pq[23] * vj
                acc[8, j] += pq[8] * uj + pq[24] * vj
                acc[9, j] += pq[9] * uj + pq[25] * vj
                acc[10, j] += pq[10] * uj + pq[26] * vj
                acc[11, j] += pq[11] * uj + pq[27] * vj
                acc[12, j] += pq[12] * uj + pq[28] * vj
                acc[13, j] += pq[13] * uj + pq[29] * vj
                acc[14, j] += pq[14] * uj + pq[30] * vj
                acc[15, j] += pq[15] * uj + pq[31] * vj
    if c_in_g % 2:  # the odd last channel: ``acc += w * u``, written ``acc += w * u + 0.0``,
        # the same bits: ``+ 0.0`` only turns a product -0.0 into +0.0, and ``acc`` is never
        # -0.0 (it starts at +0.0, and a sum is -0.0 only when both terms are), so ``acc + 0.0
        # == acc + -0.0``; NaN and inf pass unchanged. Without it LLVM unrolls this smaller
        # loop fully before vectorising, and then leaves 128 scalar sums (scalar code).
        xu = xf[n, ci0 + c_in_g - 1, base:]
        wc = wt[grp, blk, c_in_g // 2]
        for t in range(toff.shape[0]):
            o, pq = toff[t], wc[t]
            for j in range(_UCOLS):
                uj = xu[o + j]
                acc[0, j] += pq[0] * uj + 0.0
                acc[1, j] += pq[1] * uj + 0.0
                acc[2, j] += pq[2] * uj + 0.0
                acc[3, j] += pq[3] * uj + 0.0
                acc[4, j] += pq[4] * uj + 0.0
                acc[5, j] += pq[5] * uj + 0.0
                acc[6, j] += pq[6] * uj + 0.0
                acc[7, j] += pq[7] * uj + 0.0
                acc[8, j] += pq[8] * uj + 0.0
                acc[9, j] += pq[9] * uj + 0.0
                acc[10, j] += pq[10] * uj + 0.0
                acc[11, j] += pq[11] * uj + 0.0
                acc[12, j] += pq[12] * uj + 0.0
                acc[13, j] += pq[13] * uj + 0.0
                acc[14, j] += pq[14] * uj + 0.0
                acc[15, j] += pq[15] * uj + 0.0
    for k in range(_TILE_CH):  # constant bounds (acc[k, j] stays a register)
        if k0 <= k < k1:
            bv = bias[o0 + k]
            for j in range(_TILE_COLS):
                out[n, o0 + k, i, j0 + j] = acc[k, j] + bv


@jit
def _tile_start(first, end, size):
    """Start of the tile of ``size`` that covers ``first`` in ``[0, end)``: ``first``, or
    ``end - size`` for the last tile, which overlaps the one before; 0 when ``end < size``."""
    return max(min(first, end - size), 0)


@jit
def _forward_tiles_job(xf, wt, bias, toff, row, sh, groups, out, job):
    """Output row ``i`` of 16 channels ``o`` of sample ``n`` (the last block of a group: the
    channels that the block before did not store), tile by tile along the row; ``row`` is the
    length of a padded input row in ``xf``."""
    ho, wo = out.shape[2], out.shape[3]
    c_out_g = out.shape[1] // groups
    nblk = wt.shape[1]
    i = job % ho
    blk = job // ho % nblk
    grp = job // (ho * nblk) % groups
    n = job // (ho * nblk * groups)
    o_first = blk * _TILE_CH  # first channel of the group this job stores ...
    start = _tile_start(o_first, c_out_g, _TILE_CH)  # ... and the first it computes
    o0 = grp * c_out_g + start
    for j_first in range(0, wo, _TILE_COLS):
        j0 = _tile_start(j_first, wo, _TILE_COLS)
        _forward_tile(xf, wt, toff, n, grp, blk, i * sh * row + j0, bias, out, o0,
                      o_first - start, c_out_g - start, i, j0)


@jit
def _forward_tiles_jobs(out, groups, nblk):
    return out.shape[0] * groups * nblk * out.shape[2]


@jit
def _forward_tiles_serial(xf, wt, bias, toff, row, sh, groups, out):
    for job in range(_forward_tiles_jobs(out, groups, wt.shape[1])):
        _forward_tiles_job(xf, wt, bias, toff, row, sh, groups, out, job)


@pjit
def _forward_tiles_parallel(xf, wt, bias, toff, row, sh, groups, out):
    for job in prange(_forward_tiles_jobs(out, groups, wt.shape[1])):
        _forward_tiles_job(xf, wt, bias, toff, row, sh, groups, out, job)


@jit
def _tile_weights(w, groups, wt):
    """``wt[grp, blk, c // 2, a * kw + b, 16 * (c % 2) + k] = w[grp * C_out_g + o0 + k, c, a,
    b]``, ``o0`` the first channel that block ``blk`` computes (:func:`_tile_start`): the 32
    weights of a channel pair's step are one run. ``wt`` comes zeroed: channels past the group
    (fewer than 16 in it) keep zero weights."""
    c_out_g, kw = w.shape[0] // groups, w.shape[3]
    for grp in range(groups):
        for blk in range(wt.shape[1]):
            o0 = _tile_start(blk * _TILE_CH, c_out_g, _TILE_CH)
            for c in range(w.shape[1]):
                for t in range(wt.shape[3]):
                    for k in range(min(_TILE_CH, c_out_g - o0)):
                        wt[grp, blk, c // 2, t, _TILE_CH * (c % 2) + k] = \
                            w[grp * c_out_g + o0 + k, c, t // kw, t % kw]


@jit
def _tap_offsets(phase, shift, kh, dh, plane_row, phase_len):
    """Offset of every tap ``a * kw + b`` from its output row's start in the flat input:
    ``a * dh`` padded rows of ``plane_row`` entries, then column ``shift[b]`` of ``phase[b]``."""
    kw = phase.shape[0]
    toff = np.empty(kh * kw, dtype=np.uint64)
    for a in range(kh):
        for b in range(kw):
            toff[a * kw + b] = a * dh * plane_row + phase[b] * phase_len + shift[b]
    return toff


def _forward_tiles(xr, w, bias, phase, shift, geom, out):
    """The tiled forward into ``out`` (``C_out / groups >= 8``, output width ``>= 8``)."""
    n, c, hp, p, m = xr.shape
    groups = geom.groups
    nblk = -(-(w.shape[0] // groups) // _TILE_CH)
    c_in_g = w.shape[1]
    # zeros: the weights of channels past a small group, the unused half of an odd last channel
    wt = np.zeros((groups, nblk, (c_in_g + 1) // 2, w.shape[2] * w.shape[3], 2 * _TILE_CH))
    _tile_weights(w, groups, wt)
    toff = _tap_offsets(phase, shift, w.shape[2], geom.dilation[0], p * m, m)
    xf = np.ascontiguousarray(xr).reshape(n, c, hp * p * m)  # a view: xr is contiguous
    run = _forward_tiles_parallel if _macs(out.size, w[0].size) >= _PARALLEL_MIN_WORK \
        else _forward_tiles_serial
    run(xf, wt, bias, toff, p * m, geom.stride[0], groups, out)


@jit
def _input_grad_rows4(g, w, phase, shift, n, ci0, c, o_lo, o_hi, r, p, sh, dh, acc):
    """``acc[k, m] = sum_{o, a, b} w[o, c + k, a, b] * g[n, o, i, m - shift[b]]``, ``k < 4``,
    over the taps ``(a, b)`` that send output ``(i, .)`` to padded row ``r`` and column
    phase ``p`` (``i * sh + a * dh == r``, ``phase[b] == p``) and the columns ``m`` where
    ``g[n, o, i, m - shift[b]]`` exists: only terms of the exact sum are added (an Inf or NaN
    weight never meets a zero that is not in ``g``: no ``0 * inf``).
    """
    kh, kw = w.shape[2], w.shape[3]
    ho, wo, wq = g.shape[2], g.shape[3], acc.shape[1]
    for o in range(o_lo, o_hi, 2):
        pair = o + 1 < o_hi
        for a in range(kh):
            t = r - a * dh
            i = t // sh
            if t < 0 or i * sh != t or i >= ho:
                continue
            for b in range(kw):
                if phase[b] != p:
                    continue
                s = shift[b]
                cnt = min(wo, wq - s)
                if cnt <= 0:
                    continue
                u_row = g[n, o, i, :cnt]
                a0, a1 = acc[0, s:s + cnt], acc[1, s:s + cnt]
                a2, a3 = acc[2, s:s + cnt], acc[3, s:s + cnt]
                w00, w10, w20, w30 = w[o, c, a, b], w[o, c + 1, a, b], w[o, c + 2, a, b], \
                    w[o, c + 3, a, b]
                if pair:
                    v_row = g[n, o + 1, i, :cnt]
                    w01, w11, w21, w31 = w[o + 1, c, a, b], w[o + 1, c + 1, a, b], \
                        w[o + 1, c + 2, a, b], w[o + 1, c + 3, a, b]
                    for m in range(cnt):
                        u = u_row[m]
                        v = v_row[m]
                        a0[m] += w00 * u + w01 * v
                        a1[m] += w10 * u + w11 * v
                        a2[m] += w20 * u + w21 * v
                        a3[m] += w30 * u + w31 * v
                else:
                    for m in range(cnt):
                        u = u_row[m]
                        a0[m] += w00 * u
                        a1[m] += w10 * u
                        a2[m] += w20 * u
                        a3[m] += w30 * u


@jit
def _input_grad_rows1(g, w, phase, shift, n, c, o_lo, o_hi, r, p, sh, dh, acc):
    """One input channel of :func:`_input_grad_rows4` (same summation order)."""
    kh, kw = w.shape[2], w.shape[3]
    ho, wo, wq = g.shape[2], g.shape[3], acc.shape[0]
    for o in range(o_lo, o_hi, 2):
        pair = o + 1 < o_hi
        for a in range(kh):
            t = r - a * dh
            i = t // sh
            if t < 0 or i * sh != t or i >= ho:
                continue
            for b in range(kw):
                if phase[b] != p:
                    continue
                s = shift[b]
                cnt = min(wo, wq - s)
                if cnt <= 0:
                    continue
                u_row = g[n, o, i, :cnt]
                dst = acc[s:s + cnt]
                w0 = w[o, c, a, b]
                if pair:
                    v_row = g[n, o + 1, i, :cnt]
                    w1 = w[o + 1, c, a, b]
                    for m in range(cnt):
                        dst[m] += w0 * u_row[m] + w1 * v_row[m]
                else:
                    for m in range(cnt):
                        dst[m] += w0 * u_row[m]


#: padded rows per job of the column-vector input gradient: jobs over rows as well as channel
#: blocks keep every thread busy when there are few input channels (an RGB stem's C_in = 3 is
#: one block); each row is computed alike in any job, so the split never changes a bit
_IGRAD_ROWS = 8


@jit
def _input_grad_jobs(n_batch, c_in, groups, rows):
    return n_batch * groups * _blocks(c_in // groups) * ((rows + _IGRAD_ROWS - 1) // _IGRAD_ROWS)


@jit
def _input_grad_store(acc, nb, p, sw, left, out, n, ci0, h):
    """``out[n, ci0 + k, h, x] = acc[k, m]`` for the columns ``x = p + m * sw - left`` of
    column phase ``p`` that lie in ``out`` (``k < nb``)."""
    width = out.shape[3]
    m_lo = max(0, (left - p + sw - 1) // sw)
    m_hi = min(acc.shape[1], (left + width - p + sw - 1) // sw)
    for k in range(nb):
        dst = out[n, ci0 + k, h]
        for m in range(m_lo, m_hi):
            dst[p + m * sw - left] = acc[k, m]


@jit
def _input_grad_job(g, w, phase, shift, sh, dh, groups, sw, wq, top, left, out, job):
    """Rows ``h`` of a chunk of :data:`_IGRAD_ROWS` of the input-gradient planes ``out[n,
    ci0:ci0 + 4]`` (fewer channels at the end of a group), padded row ``top + h`` and padded
    column ``left + x`` at ``out[..., h, x]``: each padded row is summed per column phase of
    ``wq`` entries, then its columns inside ``out`` are stored. ``w`` may carry zero input
    channels up to a whole block (the 4-channel kernel then runs; the extra rows of ``acc``
    are dropped)."""
    c_out = w.shape[0]
    rows = out.shape[2]
    c_in_g = out.shape[1] // groups
    c_out_g = c_out // groups
    nblk = _blocks(c_in_g)
    nchunk = (rows + _IGRAD_ROWS - 1) // _IGRAD_ROWS
    blk = job // nchunk
    h0 = (job - blk * nchunk) * _IGRAD_ROWS
    n = blk // (groups * nblk)
    rem = blk - n * (groups * nblk)
    grp = rem // nblk
    c = (rem - grp * nblk) * _BLOCK
    nb = min(_BLOCK, c_in_g - c)
    four = c + _BLOCK <= w.shape[1]
    ci0 = grp * c_in_g + c
    o_lo, o_hi = grp * c_out_g, (grp + 1) * c_out_g
    acc = np.empty((_BLOCK, wq))
    for h in range(h0, min(h0 + _IGRAD_ROWS, rows)):
        r = top + h
        for p in range(sw):
            acc[:] = 0.0
            if four:
                _input_grad_rows4(g, w, phase, shift, n, ci0, c, o_lo, o_hi, r, p, sh, dh,
                                  acc)
            else:
                for k in range(nb):
                    _input_grad_rows1(g, w, phase, shift, n, c + k, o_lo, o_hi, r, p, sh, dh,
                                      acc[k])
            _input_grad_store(acc, nb, p, sw, left, out, n, ci0, h)


@jit
def _input_grad_serial(g, w, phase, shift, sh, dh, groups, sw, wq, top, left, out):
    for job in range(_input_grad_jobs(out.shape[0], out.shape[1], groups, out.shape[2])):
        _input_grad_job(g, w, phase, shift, sh, dh, groups, sw, wq, top, left, out, job)


@pjit
def _input_grad_parallel(g, w, phase, shift, sh, dh, groups, sw, wq, top, left, out):
    for job in prange(_input_grad_jobs(out.shape[0], out.shape[1], groups, out.shape[2])):
        _input_grad_job(g, w, phase, shift, sh, dh, groups, sw, wq, top, left, out, job)


@jit
def _weight_grad_rows1(g, xr, phase, shift, sh, dh, n, i, two, o, ci, a, acc):
    """``acc[b] += g[n, o, i] * row(i, a, b) (+ g[n, o, i + 1] * row(i + 1, a, b))`` for
    kernel row ``a``: the summation order of the four-channel update in
    :func:`_weight_grad_job`."""
    kw, wo = shift.shape[0], acc.shape[1]
    h = g[n, o, i]
    e = g[n, o, i + 1 if two else i]
    r = i * sh + a * dh
    for b in range(kw):
        s = shift[b]
        u_row = xr[n, ci, r, phase[b], s:s + wo]
        p = acc[b]
        if two:
            v_row = xr[n, ci, r + sh, phase[b], s:s + wo]
            for j in range(wo):
                p[j] += h[j] * u_row[j] + e[j] * v_row[j]
        else:
            for j in range(wo):
                p[j] += h[j] * u_row[j]


@jit
def _weight_grad_job(g, xr, phase, shift, sh, dh, groups, gw, job):
    """``gw[o0:o0 + 4, c, a] = sum_{n, i, j} g[n, o, i, j] * row(c, a, b)[j]``: four output
    channels (fewer at the end of a group), one input channel, one kernel row.

    Partial sums per output column, two output rows per update (a vectorisable update with
    few stores), reduced over the columns at the end in a fixed order. One kernel row a job
    gives the threads ``kh`` times the jobs (an RGB stem's 12 become 84) and keeps the partial
    sums small (25 KB instead of 175 KB for a 7x7 kernel at 112 columns; measured: no faster
    serially); every partial sum sees the same updates in the same order.
    """
    n_batch, c_out, ho, wo = g.shape
    c_in_g, kh, kw = gw.shape[1], gw.shape[2], gw.shape[3]
    c_out_g = c_out // groups
    nblk = _blocks(c_out_g)
    a = job % kh
    rest = job // kh
    blk = rest // c_in_g
    c = rest - blk * c_in_g
    grp = blk // nblk
    o0 = grp * c_out_g + (blk - grp * nblk) * _BLOCK
    nb = min(_BLOCK, (grp + 1) * c_out_g - o0)
    ci = grp * c_in_g + c
    acc = np.zeros((_BLOCK, kw, wo))
    for n in range(n_batch):
        for i in range(0, ho, 2):
            two = i + 1 < ho
            if nb == _BLOCK and two:
                # four output channels, rows i and i + 1 (inlined: a call here is slower)
                h0, h1, h2, h3 = g[n, o0, i], g[n, o0 + 1, i], g[n, o0 + 2, i], \
                    g[n, o0 + 3, i]
                e0, e1, e2, e3 = g[n, o0, i + 1], g[n, o0 + 1, i + 1], g[n, o0 + 2, i + 1], \
                    g[n, o0 + 3, i + 1]
                r = i * sh + a * dh
                for b in range(kw):
                    s = shift[b]
                    u_row = xr[n, ci, r, phase[b], s:s + wo]
                    v_row = xr[n, ci, r + sh, phase[b], s:s + wo]
                    p0, p1, p2, p3 = acc[0, b], acc[1, b], acc[2, b], acc[3, b]
                    for j in range(wo):
                        u = u_row[j]
                        v = v_row[j]
                        p0[j] += h0[j] * u + e0[j] * v
                        p1[j] += h1[j] * u + e1[j] * v
                        p2[j] += h2[j] * u + e2[j] * v
                        p3[j] += h3[j] * u + e3[j] * v
            else:
                for k in range(nb):
                    _weight_grad_rows1(g, xr, phase, shift, sh, dh, n, i, two, o0 + k, ci, a,
                                       acc[k])
    for k in range(nb):
        for b in range(kw):
            s = 0.0
            for j in range(wo):
                s += acc[k, b, j]
            gw[o0 + k, c, a, b] = s


@jit
def _weight_grad_jobs(c_out, c_in_g, kh, groups):
    return groups * _blocks(c_out // groups) * c_in_g * kh


@jit
def _weight_grad_serial(g, xr, phase, shift, sh, dh, groups, gw):
    for job in range(_weight_grad_jobs(gw.shape[0], gw.shape[1], gw.shape[2], groups)):
        _weight_grad_job(g, xr, phase, shift, sh, dh, groups, gw, job)


@pjit
def _weight_grad_parallel(g, xr, phase, shift, sh, dh, groups, gw):
    for job in prange(_weight_grad_jobs(gw.shape[0], gw.shape[1], gw.shape[2], groups)):
        _weight_grad_job(g, xr, phase, shift, sh, dh, groups, gw, job)


# ----------------------------------------------------------------------------------------------
# weight gradient with the input channels as the vector dimension (C_in / groups >= 16)
#
# ``gw[o, c, a, b] = sum_{n, i, j} g[n, o, i, j] * xpad[n, c, i*sh + a*dh, j*sw + b*dw]``.
# The padded input is stored channels last, one block per group, each padded row flattened:
# ``xf[n, grp, r, p * C_in_g + c] = xpad[n, grp * C_in_g + c, r, p]``. Output column ``j``
# reads ``xf[n, grp, r, (j*sw + b*dw) * C_in_g + c]``: with ``dw == 1`` the ``kw * C_in_g``
# values ``(b, c)`` are one contiguous run, laid out like the partial sums ``acc[..., b *
# C_in_g + c]``, so one long unit-stride loop updates a whole kernel row (``dw > 1``: one run of
# ``C_in_g`` per kernel column, the same updates). An update adds four output columns of one
# output row,
# ``acc += ((g0 * u0 + g1 * u1) + (g2 * u2 + g3 * u3))`` with the scalars ``gt = g[n, o, i,
# j0 + t]``; the ``wo % 4`` leftover columns are added one at a time (``acc += g * u``). So
# every ``gw[o, c, a, b]`` is summed in one fixed order (sample, output row, column group,
# leftover column), the same in the 8-channel block and in the 1-channel kernel, for any
# thread count. A job owns a block of 8 output channels (fewer at the end of a group) and one
# or all kernel rows: disjoint entries of ``gw``, so jobs run in any order.
# ----------------------------------------------------------------------------------------------

#: the channel-vector weight-gradient kernels run when C_in / groups reaches this
_WGRAD_MIN_CHANNELS = 16
#: output channels per weight-gradient job (each loaded input run feeds 8 accumulators)
_WGRAD_BLOCK = 8
#: a partial block with fewer channels than this runs the 1-channel kernel per channel
_WGRAD_PARTIAL_MIN = 6
#: a job keeps all kernel rows (its input rows stay in cache) when there are this many blocks
#: of output channels and a block's partial sums are at most this many doubles; otherwise each
#: kernel row is a job of its own (more jobs, smaller partial sums)
_WGRAD_MIN_BLOCKS = 8
_WGRAD_MAX_ACC = 8 * 1024


@jit
def _wgrad_rows8(g, xf, n, grp, i, r, o0, nb, kw, sw, dw, acc):
    """``acc[k, b * C + c] += sum_j g[n, o_k, i, j] * xf[n, grp, r, (j*sw + b*dw) * C + c]``
    for ``k < 8`` and ``o_k = o0 + min(k, nb - 1)``: output row ``i`` of sample ``n`` and the
    kernel row that reads padded row ``r``. A partial block (``nb < 8``) repeats its last
    channel in the rows ``k >= nb`` of ``acc``, which the caller ignores."""
    wo = g.shape[3]
    span = acc.shape[1]
    c_in_g = span // kw
    fold = kw if dw == 1 else 1  # kernel columns per contiguous run
    run = fold * c_in_g
    row = xf[n, grp, r]
    g0, g1, g2, g3 = g[n, o0, i], g[n, o0 + min(1, nb - 1), i], \
        g[n, o0 + min(2, nb - 1), i], g[n, o0 + min(3, nb - 1), i]
    g4, g5, g6, g7 = g[n, o0 + min(4, nb - 1), i], g[n, o0 + min(5, nb - 1), i], \
        g[n, o0 + min(6, nb - 1), i], g[n, o0 + min(7, nb - 1), i]
    full = wo - wo % 4
    for j0 in range(0, full, 4):
        s00, s01, s02, s03 = g0[j0], g0[j0 + 1], g0[j0 + 2], g0[j0 + 3]
        s10, s11, s12, s13 = g1[j0], g1[j0 + 1], g1[j0 + 2], g1[j0 + 3]
        s20, s21, s22, s23 = g2[j0], g2[j0 + 1], g2[j0 + 2], g2[j0 + 3]
        s30, s31, s32, s33 = g3[j0], g3[j0 + 1], g3[j0 + 2], g3[j0 + 3]
        s40, s41, s42, s43 = g4[j0], g4[j0 + 1], g4[j0 + 2], g4[j0 + 3]
        s50, s51, s52, s53 = g5[j0], g5[j0 + 1], g5[j0 + 2], g5[j0 + 3]
        s60, s61, s62, s63 = g6[j0], g6[j0 + 1], g6[j0 + 2], g6[j0 + 3]
        s70, s71, s72, s73 = g7[j0], g7[j0 + 1], g7[j0 + 2], g7[j0 + 3]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j0 * sw + b * dw) * c_in_g
            q1, q2, q3 = q0 + sw * c_in_g, q0 + 2 * sw * c_in_g, q0 + 3 * sw * c_in_g
            x0, x1 = row[q0:q0 + run], row[q1:q1 + run]
            x2, x3 = row[q2:q2 + run], row[q3:q3 + run]
            p0, p1 = acc[0, lo:lo + run], acc[1, lo:lo + run]
            p2, p3 = acc[2, lo:lo + run], acc[3, lo:lo + run]
            p4, p5 = acc[4, lo:lo + run], acc[5, lo:lo + run]
            p6, p7 = acc[6, lo:lo + run], acc[7, lo:lo + run]
            for m in range(run):
                u0 = x0[m]
                u1 = x1[m]
                u2 = x2[m]
                u3 = x3[m]
                p0[m] += (s00 * u0 + s01 * u1) + (s02 * u2 + s03 * u3)
                p1[m] += (s10 * u0 + s11 * u1) + (s12 * u2 + s13 * u3)
                p2[m] += (s20 * u0 + s21 * u1) + (s22 * u2 + s23 * u3)
                p3[m] += (s30 * u0 + s31 * u1) + (s32 * u2 + s33 * u3)
                p4[m] += (s40 * u0 + s41 * u1) + (s42 * u2 + s43 * u3)
                p5[m] += (s50 * u0 + s51 * u1) + (s52 * u2 + s53 * u3)
                p6[m] += (s60 * u0 + s61 * u1) + (s62 * u2 + s63 * u3)
                p7[m] += (s70 * u0 + s71 * u1) + (s72 * u2 + s73 * u3)
    for j in range(full, wo):
        s0, s1, s2, s3 = g0[j], g1[j], g2[j], g3[j]
        s4, s5, s6, s7 = g4[j], g5[j], g6[j], g7[j]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j * sw + b * dw) * c_in_g
            x0 = row[q0:q0 + run]
            p0, p1 = acc[0, lo:lo + run], acc[1, lo:lo + run]
            p2, p3 = acc[2, lo:lo + run], acc[3, lo:lo + run]
            p4, p5 = acc[4, lo:lo + run], acc[5, lo:lo + run]
            p6, p7 = acc[6, lo:lo + run], acc[7, lo:lo + run]
            for m in range(run):
                u0 = x0[m]
                p0[m] += s0 * u0
                p1[m] += s1 * u0
                p2[m] += s2 * u0
                p3[m] += s3 * u0
                p4[m] += s4 * u0
                p5[m] += s5 * u0
                p6[m] += s6 * u0
                p7[m] += s7 * u0


@jit
def _wgrad_rows1(g, xf, n, grp, i, r, o, kw, sw, dw, acc):
    """One output channel of :func:`_wgrad_rows8` (``acc`` is ``(kw * C,)``), same summation
    order."""
    wo = g.shape[3]
    span = acc.shape[0]
    c_in_g = span // kw
    fold = kw if dw == 1 else 1
    run = fold * c_in_g
    row = xf[n, grp, r]
    gr = g[n, o, i]
    full = wo - wo % 4
    for j0 in range(0, full, 4):
        s0, s1, s2, s3 = gr[j0], gr[j0 + 1], gr[j0 + 2], gr[j0 + 3]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j0 * sw + b * dw) * c_in_g
            q1, q2, q3 = q0 + sw * c_in_g, q0 + 2 * sw * c_in_g, q0 + 3 * sw * c_in_g
            x0, x1 = row[q0:q0 + run], row[q1:q1 + run]
            x2, x3 = row[q2:q2 + run], row[q3:q3 + run]
            p = acc[lo:lo + run]
            for m in range(run):
                p[m] += (s0 * x0[m] + s1 * x1[m]) + (s2 * x2[m] + s3 * x3[m])
    for j in range(full, wo):
        s0 = gr[j]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j * sw + b * dw) * c_in_g
            x0 = row[q0:q0 + run]
            p = acc[lo:lo + run]
            for m in range(run):
                p[m] += s0 * x0[m]


@jit
def _wgrad_jobs(c_out, groups, kh, rows):
    return groups * ((c_out // groups + _WGRAD_BLOCK - 1) // _WGRAD_BLOCK) * (kh // rows)


@jit
def _wgrad_job(g, xf, sh, sw, dh, dw, rows, partial_min, gw, job):
    """``gw[o0:o0 + 8, :, a0:a0 + rows]`` (fewer channels at the end of a group): one block
    of output channels, all input channels of its group, ``rows`` kernel rows (a divisor of
    ``kh``). A partial block of ``nb >= partial_min`` channels runs the 8-channel kernel, a
    smaller one the 1-channel kernel per channel (same sums either way)."""
    n_batch, c_out, ho = g.shape[0], g.shape[1], g.shape[2]
    groups = xf.shape[1]
    c_in_g, kh, kw = gw.shape[1], gw.shape[2], gw.shape[3]
    c_out_g = c_out // groups
    nblk = (c_out_g + _WGRAD_BLOCK - 1) // _WGRAD_BLOCK
    nrow = kh // rows
    blk = job // nrow
    a0 = (job - blk * nrow) * rows
    grp = blk // nblk
    o0 = grp * c_out_g + (blk - grp * nblk) * _WGRAD_BLOCK
    nb = min(_WGRAD_BLOCK, (grp + 1) * c_out_g - o0)
    acc = np.zeros((rows, _WGRAD_BLOCK, kw * c_in_g))
    for n in range(n_batch):
        for i in range(ho):
            for t in range(rows):
                r = i * sh + (a0 + t) * dh
                if nb >= partial_min:
                    _wgrad_rows8(g, xf, n, grp, i, r, o0, nb, kw, sw, dw, acc[t])
                else:
                    for k in range(nb):
                        _wgrad_rows1(g, xf, n, grp, i, r, o0 + k, kw, sw, dw, acc[t, k])
    for k in range(nb):
        for t in range(rows):
            for b in range(kw):
                for c in range(c_in_g):
                    gw[o0 + k, c, a0 + t, b] = acc[t, k, b * c_in_g + c]


@jit
def _wgrad_serial(g, xf, sh, sw, dh, dw, rows, partial_min, gw):
    for job in range(_wgrad_jobs(g.shape[1], xf.shape[1], gw.shape[2], rows)):
        _wgrad_job(g, xf, sh, sw, dh, dw, rows, partial_min, gw, job)


@pjit
def _wgrad_parallel(g, xf, sh, sw, dh, dw, rows, partial_min, gw):
    for job in prange(_wgrad_jobs(g.shape[1], xf.shape[1], gw.shape[2], rows)):
        _wgrad_job(g, xf, sh, sw, dh, dw, rows, partial_min, gw, job)


def _wgrad_rows_per_job(w_shape, groups):
    """Kernel rows per job of :func:`_wgrad_job`: all of them or one (shape only)."""
    c_out, c_in_g, kh, kw = w_shape
    blocks = groups * -(-(c_out // groups) // _WGRAD_BLOCK)
    if blocks >= _WGRAD_MIN_BLOCKS and _WGRAD_BLOCK * kh * kw * c_in_g <= _WGRAD_MAX_ACC:
        return kh
    return 1


@jit
def _channels_last_row(x, ih, iw, xt, nr):
    """``xt[n, q, r, p, c] = x[n, q * C_g + c, ih[r], iw[p]]`` (0 where an index is -1) for
    ``(n, r) = divmod(nr, Hp)``."""
    groups, hp, wp, c_g = xt.shape[1], xt.shape[2], xt.shape[3], xt.shape[4]
    n = nr // hp
    r = nr - n * hp
    h = ih[r]
    for q in range(groups):
        dst = xt[n, q, r]
        for p in range(wp):
            w = iw[p]
            out = dst[p]
            if h < 0 or w < 0:
                for c in range(c_g):
                    out[c] = 0.0
            else:
                for c in range(c_g):
                    out[c] = x[n, q * c_g + c, h, w]


@jit
def _channels_last_serial(x, ih, iw, xt):
    for nr in range(xt.shape[0] * xt.shape[2]):
        _channels_last_row(x, ih, iw, xt, nr)


@pjit
def _channels_last_parallel(x, ih, iw, xt):
    for nr in prange(xt.shape[0] * xt.shape[2]):
        _channels_last_row(x, ih, iw, xt, nr)


# ----------------------------------------------------------------------------------------------
# input gradient with the input channels as the vector dimension (C_in / groups >= 16)
#
# ``gxpad[n, c, r, q] = sum_{o, a, b: r = i*sh + a*dh, q = j*sw + b*dw} w[o, c, a, b] *
# g[n, o, i, j]``. A job builds one padded row of one sample and group channels last in a
# scratch row, ``row[q * C_in_g + c]``, then copies the columns that are kept into the planes
# (each plane's row written contiguously). The weights are stored as ``wt[grp, a, o, b *
# C_in_g + c] = w[grp * C_out_g + o, c, a, b]``, the output channels of a group zero-padded to
# a multiple of 8. Output column ``j`` of kernel row ``a`` updates the run ``row[(j*sw + b*dw) *
# C_in_g + c]``: with ``dw == 1`` the ``kw * C_in_g`` entries ``(b, c)`` are one contiguous run,
# laid out like ``wt[grp, a, o]`` (``dw > 1``: one run of ``C_in_g`` per kernel column). An
# update adds 8 output channels at once,
# ``acc += ((s0 * w0 + s1 * w1) + (s2 * w2 + s3 * w3)) + ((s4 * w4 + s5 * w5) + (s6 * w6 +
# s7 * w7))`` with ``st = g[n, o0 + t, i, j]`` read from the planes of ``g`` (a padded channel
# reads a row of zeros: it adds ``0 * 0``). So every entry is summed in one fixed order (block
# of 8 output channels, kernel row, kernel column run, output column) whatever the number of
# channels or threads; there is no remainder path. Jobs own disjoint outputs, so they run in
# any order. With zero padding only the rows that are kept are computed (the padding's rows
# are dropped anyway): copies, so the result is the same bits as computing and cropping every
# row. Nothing as large as the input or the result is allocated besides the result: a
# channels-last copy of ``g`` and a channels-last result cost two more passes over memory, two
# more parallel launches and, where the allocator has given that memory back to the system, a
# page fault per 4 KiB on first touch.
#
# Speed (measured, 2-core Zen 4 VM): the inner loop issues 9 vector loads (8 weight runs and the
# sum), 8 multiplies and 8 adds per 8 lanes: about 10 cycles per 8 lanes in isolation with its
# operands on cache lines, 15 when they straddle lines (hence :data:`_LINE`). Tried, bitwise
# the same but not faster: two output rows per job sharing the weight loads (16 broadcasts:
# spills and more run-time overlap checks), two output columns ``j, j + 1`` per loop sharing
# them; weights at a compile-time stride (fewer overlap checks) gained 3-5 %, not worth its
# chunked layout.
# ----------------------------------------------------------------------------------------------

#: the channel-vector input-gradient kernels run when C_in / groups reaches this ...
_IGRAD_MIN_CHANNELS = 16
#: ... and C_out / groups this (fewer would mostly add zero-padded channels)
_IGRAD_MIN_OUT_CHANNELS = 8
#: output channels summed per update (the group's channels are zero-padded to a multiple)
_IGRAD_BLOCK = 8
#: bytes of a cache line: the weight runs and the scratch row start on one, so that no vector
#: load of the inner loop straddles two lines (a straddling 64-byte load costs two; measured:
#: about 15 instead of 10 cycles per 8 lanes when every operand is off by 8 to 48 bytes)
_LINE = 64


def _zeros_on_lines(shape):
    """``np.zeros(shape)`` starting on a cache line (numpy only promises 16 bytes)."""
    size = math.prod(shape)
    buf = np.zeros(size + _LINE // 8)
    start = (-buf.ctypes.data % _LINE) // 8
    return buf[start:start + size].reshape(shape)


@jit
def _empty_on_lines(size):
    """A 1-D ``np.empty(size)`` starting on a cache line (numba only promises 32 bytes)."""
    buf = np.empty(size + _LINE // 8)
    start = (-buf.ctypes.data % _LINE) // 8
    return buf[start:start + size]


@jit
def _igrad_channel_row(g, n, o, last, i, zero):
    """``g[n, o, i]``, or the row of zeros for a padded channel (``o >= last``, the end of
    the group's channels)."""
    return g[n, o, i] if o < last else zero


@jit
def _igrad_row(g, wt, kw, sh, sw, dh, dw, n, grp, r, zero, row):
    """Padded row ``r`` of sample ``n`` and group ``grp`` into ``row``, channels last
    (``row[q * C_in_g + c]``); ``zero`` is a row of ``Wo`` zeros."""
    ho, wo = g.shape[2], g.shape[3]
    groups, kh, cpad, span = wt.shape
    c_out_g = g.shape[1] // groups
    c_in_g = span // kw
    fold = kw if dw == 1 else 1  # kernel columns per contiguous run
    run = fold * c_in_g
    for m in range(row.shape[0]):
        row[m] = 0.0
    for ob in range(0, cpad, _IGRAD_BLOCK):
        o0 = grp * c_out_g + ob
        last = (grp + 1) * c_out_g  # channels from here on are the group's zero padding
        for a in range(kh):
            t = r - a * dh
            i = t // sh
            if t < 0 or i * sh != t or i >= ho:
                continue
            wa = wt[grp, a]
            w0, w1, w2, w3 = wa[ob], wa[ob + 1], wa[ob + 2], wa[ob + 3]
            w4, w5, w6, w7 = wa[ob + 4], wa[ob + 5], wa[ob + 6], wa[ob + 7]
            g0 = _igrad_channel_row(g, n, o0, last, i, zero)
            g1 = _igrad_channel_row(g, n, o0 + 1, last, i, zero)
            g2 = _igrad_channel_row(g, n, o0 + 2, last, i, zero)
            g3 = _igrad_channel_row(g, n, o0 + 3, last, i, zero)
            g4 = _igrad_channel_row(g, n, o0 + 4, last, i, zero)
            g5 = _igrad_channel_row(g, n, o0 + 5, last, i, zero)
            g6 = _igrad_channel_row(g, n, o0 + 6, last, i, zero)
            g7 = _igrad_channel_row(g, n, o0 + 7, last, i, zero)
            for b in range(0, kw, fold):
                lo = b * c_in_g
                x0, x1 = w0[lo:lo + run], w1[lo:lo + run]
                x2, x3 = w2[lo:lo + run], w3[lo:lo + run]
                x4, x5 = w4[lo:lo + run], w5[lo:lo + run]
                x6, x7 = w6[lo:lo + run], w7[lo:lo + run]
                for j in range(wo):
                    s0, s1, s2, s3 = g0[j], g1[j], g2[j], g3[j]
                    s4, s5, s6, s7 = g4[j], g5[j], g6[j], g7[j]
                    q0 = (j * sw + b * dw) * c_in_g
                    p = row[q0:q0 + run]
                    for m in range(run):
                        p[m] += ((s0 * x0[m] + s1 * x1[m]) + (s2 * x2[m] + s3 * x3[m])) + \
                            ((s4 * x4[m] + s5 * x5[m]) + (s6 * x6[m] + s7 * x7[m]))



@jit
def _igrad_store_row(row, c_in_g, left, out, n, c0, h):
    """``out[n, c0 + c, h, x] = row[(left + x) * C_in_g + c]`` for the ``C_in_g`` channels of
    a group: the source row stays in cache while each plane's row is written contiguously."""
    w_out = out.shape[3]
    for c in range(c_in_g):
        dst = out[n, c0 + c, h]
        for x in range(w_out):
            dst[x] = row[(left + x) * c_in_g + c]


@jit
def _igrad_job(g, wt, kw, sh, sw, dh, dw, r0, left, width, out, job):
    """Row ``h`` of the planes ``out[n, grp * C_in_g:(grp + 1) * C_in_g]`` for ``(n, grp, h) =
    job`` (row-major): padded row ``r0 + h`` of width ``width``, its columns from ``left`` on."""
    groups, rows = wt.shape[0], out.shape[2]
    c_in_g = wt.shape[3] // kw
    n = job // (groups * rows)
    rem = job - n * (groups * rows)
    grp = rem // rows
    h = rem - grp * rows
    row = _empty_on_lines(width * c_in_g)
    _igrad_row(g, wt, kw, sh, sw, dh, dw, n, grp, r0 + h, np.zeros(g.shape[3]), row)
    _igrad_store_row(row, c_in_g, left, out, n, grp * c_in_g, h)


@jit
def _igrad_serial(g, wt, kw, sh, sw, dh, dw, r0, left, width, out):
    for job in range(out.shape[0] * wt.shape[0] * out.shape[2]):
        _igrad_job(g, wt, kw, sh, sw, dh, dw, r0, left, width, out, job)


@pjit
def _igrad_parallel(g, wt, kw, sh, sw, dh, dw, r0, left, width, out):
    for job in prange(out.shape[0] * wt.shape[0] * out.shape[2]):
        _igrad_job(g, wt, kw, sh, sw, dh, dw, r0, left, width, out, job)


def _igrad_channels_last(g, w, geom, n_batch, c_in):
    """:func:`_input_grad` with the channel-vector kernels (``C_in / groups >= 16``)."""
    groups = geom.groups
    c_out, c_in_g, kh, kw = w.shape
    c_out_g = c_out // groups
    cpad = -(-c_out_g // _IGRAD_BLOCK) * _IGRAD_BLOCK
    hp, wp = geom.padded_hw
    wt = _zeros_on_lines((groups, kh, cpad, kw, c_in_g))
    wt[:, :, :c_out_g] = w.reshape(groups, c_out_g, c_in_g, kh, kw).transpose(0, 3, 1, 4, 2)
    run = _igrad_parallel if _macs(g.size, w[0].size) >= _PARALLEL_MIN_WORK else _igrad_serial
    args = (np.ascontiguousarray(g), wt.reshape(groups, kh, cpad, kw * c_in_g), kw,
            geom.stride[0], geom.stride[1], geom.dilation[0], geom.dilation[1])
    if geom.mode == "zeros" and geom.maps is None:  # zero padding: only the kept rows
        out = np.empty((n_batch, c_in) + tuple(geom.in_hw))
        run(*args, geom.pads[0][0], geom.pads[1][0], wp, out)
        return out
    gp = np.empty((n_batch, c_in, hp, wp))
    run(*args, 0, 0, wp, gp)
    return _unpad_adjoint(gp, geom)


# ----------------------------------------------------------------------------------------------
# direct kernels for small calls with zero padding (a loop's 1x4x5x5 inputs)
#
# On a few hundred multiply-adds the layout work of the kernels above (a padded copy, column
# phases, row buffers) and their many arguments cost more than the arithmetic. These read the
# unpadded input (a zero where the padding is) and write the result in place, with each output
# summed in exactly the order and the groupings of the kernels above, so they give the same
# bits: the forward ``acc += w[o, c] * u + w[o, c + 1] * v`` per (channel pair, kernel row,
# kernel column), the odd channel last, then ``+ bias`` (a zero of the padding is multiplied
# like any input, as above: an Inf weight meets it); the input gradient ``+= w[o, c] *
# g[o] + w[o + 1, c] * g[o + 1]`` per (output channel pair, kernel row, kernel column),
# scattered from the gradient's pixels into a zeroed result, only the terms of the exact sum.
# ----------------------------------------------------------------------------------------------

#: at most this many multiply-adds run the direct kernels (zero padding only); measured (2-core
#: Zen 5 VM): the direct forward about 1 ns a multiply-add, the scatter about 2, the kernels
#: above a fixed 2-3 us of layout and arguments, then a quarter to half of that
_DIRECT_FORWARD_MAX_WORK = 1 << 12
_DIRECT_INPUT_GRAD_MAX_WORK = 1 << 11


@jit
def _forward_direct(x, w, bias, sh, sw, dh, dw, top, left, groups, out):
    """``out = conv(x, w) + bias`` (``bias`` of length 0: none) on zero padding ``(top,
    left, ...)``: :func:`_forward_job`'s sums, one output at a time, from a zero-padded copy
    of one sample (only the part the kernel reads)."""
    n_batch, c_out, ho, wo = out.shape
    c_in, h, wd = x.shape[1], x.shape[2], x.shape[3]
    c_in_g, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    c_out_g = c_out // groups
    hp, wp = (ho - 1) * sh + (kh - 1) * dh + 1, (wo - 1) * sw + (kw - 1) * dw + 1
    xp = np.zeros((c_in, hp, wp))
    r_lo, r_hi = max(top, 0), min(hp, top + h)
    q_lo, q_hi = max(left, 0), min(wp, left + wd)
    for n in range(n_batch):
        for c in range(c_in):
            for r in range(r_lo, r_hi):
                for q in range(q_lo, q_hi):
                    xp[c, r, q] = x[n, c, r - top, q - left]
        for o in range(c_out):
            ci0 = (o // c_out_g) * c_in_g
            bv = bias[o] if bias.shape[0] else 0.0
            for i in range(ho):
                for j in range(wo):
                    acc = 0.0
                    for c in range(0, c_in_g - 1, 2):
                        for a in range(kh):
                            r = i * sh + a * dh
                            for b in range(kw):
                                q = j * sw + b * dw
                                acc += w[o, c, a, b] * xp[ci0 + c, r, q] + \
                                    w[o, c + 1, a, b] * xp[ci0 + c + 1, r, q]
                    if c_in_g % 2:
                        c = c_in_g - 1
                        for a in range(kh):
                            r = i * sh + a * dh
                            for b in range(kw):
                                acc += w[o, c, a, b] * xp[ci0 + c, r, j * sw + b * dw]
                    out[n, o, i, j] = acc + bv


@jit
def _inside(step, offset, count, size):
    """``(lo, hi)``: the ``t`` in ``[lo, hi)`` with ``0 <= t * step + offset < size``, ``0 <= t
    < count``."""
    lo = 0 if offset >= 0 else (-offset + step - 1) // step
    hi = 0 if offset >= size else min(count, (size - 1 - offset) // step + 1)
    return lo, max(lo, hi)


@jit
def _input_grad_direct(g, w, sh, sw, dh, dw, top, left, groups, out):
    """``out = conv(., w)^T g`` on zero padding ``(top, left, ...)``: :func:`_input_grad_job`'s
    sums, scattered from the pixels of ``g`` into ``out`` zeroed first."""
    out[:] = 0.0
    n_batch, c_out, ho, wo = g.shape
    c_in_g, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    c_out_g = c_out // groups
    usw = uint64(sw)
    for n in range(n_batch):
        for ci in range(out.shape[1]):
            grp = ci // c_in_g
            c = ci - grp * c_in_g
            dst = out[n, ci]
            o_hi = (grp + 1) * c_out_g
            for o in range(grp * c_out_g, o_hi, 2):
                pair = o + 1 < o_hi
                for a in range(kh):
                    i_lo, i_hi = _inside(sh, a * dh - top, ho, dst.shape[0])
                    for b in range(kw):
                        j_lo, j_hi = _inside(sw, b * dw - left, wo, dst.shape[1])
                        w0 = w[o, c, a, b]
                        w1 = w[o + 1, c, a, b] if pair else 0.0
                        # unsigned indices in the inner loop (all >= 0 here): numba then
                        # drops its negative-index wraparound (measured: a quarter faster)
                        q0, j0, cnt = uint64(j_lo * sw + b * dw - left), uint64(j_lo), \
                            uint64(j_hi - j_lo)
                        for i in range(i_lo, i_hi):
                            row = dst[i * sh + a * dh - top]
                            u_row = g[n, o, i]
                            if pair:
                                v_row = g[n, o + 1, i]
                                for t in range(cnt):
                                    row[q0 + t * usw] += w0 * u_row[j0 + t] + w1 * v_row[j0 + t]
                            else:
                                for t in range(cnt):
                                    row[q0 + t * usw] += w0 * u_row[j0 + t]


# ----------------------------------------------------------------------------------------------
# the three building blocks on 4-D float64 arrays
# ----------------------------------------------------------------------------------------------

def _column_phases(geom):
    """``(phase, shift)`` of every kernel column in the stride-split layout."""
    return _phases(geom.stride[1], geom.dilation[1], geom.k_hw[1])


@lru_cache(maxsize=256)
def _phases(sw, dw, kw):
    """:func:`_column_phases` of these ints, built once (small calls): shared arrays that the
    kernels only read."""
    offsets = np.arange(kw, dtype=np.int64) * dw
    return offsets % sw, offsets // sw


def _split_columns(xp, sw):
    """``(N, C, Hp, Wp) -> (N, C, Hp, P, ceil(Wp / sw))``, ``[..., p, m] = xp[..., p + m sw]``.

    Only the ``P = min(sw, Wp)`` phases that exist are stored (a stride larger than the padded
    width would otherwise allocate ``sw`` mostly empty phases); one vectorised copy. The kernels
    get it from :func:`_padded_phases`, which for ``sw > 1`` gathers the same array straight
    from ``x``; this plain form is what the tests hold it against.
    """
    if sw == 1:
        return xp[:, :, :, None, :]
    n, c, hp, wp = xp.shape
    if sw >= wp:  # one column per phase
        return np.ascontiguousarray(xp[:, :, :, :, None])
    m, full = -(-wp // sw), wp // sw
    xr = np.zeros((n, c, hp, sw, m))
    xr[..., :full] = xp[..., :full * sw].reshape(n, c, hp, full, sw).transpose(0, 1, 2, 4, 3)
    if full < m:
        xr[..., :wp - full * sw, full] = xp[..., full * sw:]
    return xr


#: ``bias`` of the direct forward kernel when there is none
_NO_BIAS = np.zeros(0)


def _padded_phases(x, geom):
    """``_split_columns(_pad(x, geom), sw)`` without the padded copy where ``sw > 1``: the
    column phases gathered straight from ``x`` through the padding's index maps (one
    multi-MB temporary fewer on a large input, and one pass instead of two)."""
    sw = geom.stride[1]
    if sw == 1:
        return _split_columns(_pad(x, geom), 1)
    hp, wp = geom.padded_hw
    ih, iw = _pad_maps(geom)
    xr = np.empty(x.shape[:2] + (hp, min(sw, wp), -(-wp // sw)))
    _gather_phases(x, ih, iw, sw, xr)
    return xr


@jit
def _gather_phases(x, ih, iw, sw, xr):
    """``xr[n, c, r, p, m] = xpad[n, c, r, p + m * sw]`` with ``xpad[n, c, r, q] = x[n, c,
    ih[r], iw[q]]`` (0 where an index is -1 or ``q`` is past the padded width)."""
    wp = iw.shape[0]
    for n in range(xr.shape[0]):
        for c in range(xr.shape[1]):
            for r in range(xr.shape[2]):
                h = ih[r]
                for p in range(xr.shape[3]):
                    dst = xr[n, c, r, p]
                    for m in range(dst.shape[0]):
                        q = p + m * sw
                        k = iw[q] if q < wp else -1
                        dst[m] = x[n, c, h, k] if h >= 0 and k >= 0 else 0.0


def _macs(*shape):
    """Multiply-adds of a call: the product of sizes (Python ints, exact), compared with
    ``_PARALLEL_MIN_WORK``."""
    return math.prod(shape)


def _forward(x, w, bias, geom):
    n, c_out = x.shape[0], w.shape[0]
    direct = geom.direct
    out = np.empty((n, c_out) + geom.out_hw)
    if direct is not None and out.size * (w.size // c_out) <= _DIRECT_FORWARD_MAX_WORK:
        _forward_direct(x, w, _NO_BIAS if bias is None else bias, *direct, out)
        return out
    xr = _padded_phases(x, geom)
    b = np.zeros(c_out) if bias is None else bias
    phase, shift = _column_phases(geom)
    if c_out // geom.groups >= _TILE_MIN_OUT_CHANNELS and out.shape[3] >= _TILE_COLS:
        _forward_tiles(xr, w, b, phase, shift, geom, out)
        return out
    run = _forward_parallel if _macs(out.size, w[0].size) >= _PARALLEL_MIN_WORK \
        else _forward_serial
    run(xr, w, b, phase, shift, geom.stride[0], geom.dilation[0], geom.groups, out)
    return out


def _whole_blocks(w):
    """``w`` with its input channels zero-extended to a whole block of 4 where a group's
    last block would have 3 (the 4-channel kernel, which loads each gradient row once for all
    four, beats three 1-channel passes; the zero channel's sums are never stored)."""
    c_out, c_in_g, kh, kw = w.shape
    if c_in_g % _BLOCK != _BLOCK - 1:
        return w
    wz = np.zeros((c_out, c_in_g + 1, kh, kw))
    wz[:, :c_in_g] = w
    return wz


def _input_grad(g, w, geom, n_batch, c_in):
    if w.shape[1] >= _IGRAD_MIN_CHANNELS and w.shape[0] // geom.groups >= _IGRAD_MIN_OUT_CHANNELS:
        return _igrad_channels_last(g, w, geom, n_batch, c_in)
    direct = geom.direct  # the column-vector kernels' sums, for small calls
    if direct is not None and g.size * (w.size // w.shape[0]) <= _DIRECT_INPUT_GRAD_MAX_WORK:
        out = np.empty((n_batch, c_in) + geom.in_hw)
        _input_grad_direct(g, w, *direct, out)
        return out
    sw = geom.stride[1]
    hp, wp = geom.padded_hw
    phase, shift = _column_phases(geom)
    run = _input_grad_parallel if _macs(g.size, w[0].size) >= _PARALLEL_MIN_WORK \
        else _input_grad_serial
    args = (g, _whole_blocks(w), phase, shift, geom.stride[0], geom.dilation[0], geom.groups,
            min(sw, wp), -(-wp // sw))
    if geom.mode == "zeros" and geom.maps is None:  # zero padding: only the kept rows and
        out = np.empty((n_batch, c_in) + tuple(geom.in_hw))  # columns are stored
        run(*args, geom.pads[0][0], geom.pads[1][0], out)
        return out
    gp = np.empty((n_batch, c_in, hp, wp))
    run(*args, 0, 0, gp)
    return _unpad_adjoint(gp, geom)


def _weight_grad(g, x, w_shape, geom):
    work = _macs(g.size, *w_shape[1:])
    if w_shape[1] >= _WGRAD_MIN_CHANNELS:  # channels-last kernels (input channels as lanes)
        n, c_in = x.shape[0], x.shape[1]
        hp, wp = geom.padded_hw
        c_in_g = c_in // geom.groups
        ih, iw = _pad_maps(geom)
        xt = np.empty((n, geom.groups, hp, wp, c_in_g))
        parallel = work >= _PARALLEL_MIN_WORK
        (_channels_last_parallel if parallel else _channels_last_serial)(x, ih, iw, xt)
        gw = np.empty(w_shape)
        (_wgrad_parallel if parallel else _wgrad_serial)(
            g, xt.reshape(n, geom.groups, hp, wp * c_in_g), geom.stride[0], geom.stride[1],
            geom.dilation[0], geom.dilation[1], _wgrad_rows_per_job(w_shape, geom.groups),
            _WGRAD_PARTIAL_MIN, gw)
        return gw
    xr = _padded_phases(x, geom)
    gw = np.empty(w_shape)
    phase, shift = _column_phases(geom)
    run = _weight_grad_parallel if work >= _PARALLEL_MIN_WORK else _weight_grad_serial
    run(g, xr, phase, shift, geom.stride[0], geom.dilation[0], geom.groups, gw)
    return gw
