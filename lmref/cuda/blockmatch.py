"""CUDA twin of :func:`lmref.blockmatch.block_match`.

Same arguments, validation (``lmref.blockmatch``'s own), conventions and tie rule (smallest
cost; then smallest ``dx^2 + dy^2``, ``dy``, ``dx``; decided on correctly rounded costs), so
the flow equals the CPU's exactly. The returned cost is the GPU's box sum (relative error
below ``(group + 2 b + 2) * 2**-53``, group = channels summed) or, at pixels re-decided on
exact costs, the correctly rounded SSD itself; tests hold it to the CPU's with rtol 1e-12.

Speed: the cost per pixel and displacement does not grow with the block size (box filter
without subtractions); integer-valued frames (all sums exact) skip the exact pass, as on the
CPU. Frames with many exact ties between non-integer costs (e.g. flat regions of value 0.1)
send those pixels through the exact pass, which is O(block^2) per displacement.
"""
from __future__ import annotations

import numpy as np

from lmref import blockmatch as _cpu
from lmref._validation import check_alloc, one_of
from lmref.cuda import _runtime as _rt
from lmref.cuda._runtime import Session, blocks, is_device_array, simulator, threads

__all__ = ["block_match"]

_SMEM_DOUBLES = 6144  # 48 KiB of dynamic shared memory, the no-opt-in limit of every GPU
_MAX_TILE_ROWS = 32  # lmref.cuda._kblockmatch.MAX_TILE_ROWS


def _tie_tolerance(b: int, group: int) -> float:
    """Relative bound covering the GPU box sums' rounding twice over (cf. the CPU's).

    Any term of a box cost passes through at most ``group`` roundings (channel sum, fused
    products), ``b`` (column suffix + prefix + their sum) and ``b - 1`` (row sum), plus one
    for the fused product against the reference's rounded one: ``h = group + 2 b + 2`` with
    margin; the CPU's formula ``2 (2 gamma_h + 4 u)`` then covers two costs and the rounding
    of the exact ones.
    """
    h = group + 2 * b + 2
    gamma = h * _cpu._U / (1.0 - h * _cpu._U)
    return 2.0 * (2.0 * gamma + 4.0 * _cpu._U)


def _tiles(b: int, H: int, W: int):
    """(tile rows, tile width, threads): as wide as useful, within 48 KiB of shared memory
    (column sums of rows x (width + b - 1) plus 3 rows x width running values)."""
    width = threads(64, 4)
    rows = threads(16, 3)
    width = max(1, min(width, W))
    while True:
        rows_fit = _SMEM_DOUBLES // (width + b - 1 + 3 * width)
        if rows_fit >= 1 or width == 1:
            break
        width //= 2
    if rows_fit < 1:
        raise ValueError(f"block_size {b} is too large for lmref.cuda.block_match (its column "
                         f"sums would not fit in shared memory); use lmref.blockmatch")
    rows = max(1, min(rows, rows_fit, H, _MAX_TILE_ROWS))
    nt = min(width + b - 1, threads(256, 8))
    if not simulator():
        nt = -(-nt // 32) * 32  # whole warps
    return rows, width, nt


def _chunks(n_disp: int, n_blocks: int) -> int:
    """Chunks of displacements so that the grid has enough blocks to fill the GPU."""
    target = threads(4 * 132, 8)  # ~4 blocks per SM of an H100 (simulator: a few chunks)
    return max(1, min(n_disp, -(-target // n_blocks)))


def _check_device_values(s, dref, dcur, b, group):
    """The value checks of lmref.blockmatch._check_block_match, for device frames; returns
    whether every box sum is exact (integer data), as lmref.blockmatch._integral_and_exact.

    One launch over both frames and one small copy to the host: the call's only host
    synchronisation, needed to raise the CPU's ValueError before anything is computed."""
    tpb = threads(256, 8)
    nb = min(blocks(dref.size, tpb), 1024)
    out = s.scratch((2, nb, 3))
    s.launch(s.k.stats, (nb, 2), tpb, dref.reshape(dref.size), dcur.reshape(dcur.size), out,
             shared=8 * tpb)
    h = np.zeros((2, 1, 3)) if _rt.COMPILE_ONLY else s.fetch(out)
    big, integral = 0.0, True
    for frame, name in ((h[0], "reference"), (h[1], "current")):
        bad = int(frame[:, 0].sum())
        if bad:
            raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or Inf)")
        big, integral = max(big, float(frame[:, 1].max())), integral and not frame[:, 2].max()
    if 4.0 * big * big * b * b * group > 1e300:
        raise ValueError(f"reference/current values up to {big:.3g} are too large: their squared "
                         f"differences summed over a {b}x{b} block overflow float64; rescale them")
    return integral and 4.0 * big * big * b * b * group <= 2.0 ** 53


def _exact_blocks(n_pixels: int) -> int:
    """Blocks of the exact pass: a fixed grid (the number of listed pixels is only known on
    the device), each block taking every gridDim-th listed pixel."""
    return max(1, min(n_pixels, threads(4 * 132, 2)))


def block_match(reference, current, block_size, search_range, *, channels="sum",
                boundary="zeros", convention="lmref"):
    """GPU :func:`lmref.blockmatch.block_match`: ``(flow, cost)``, float64, same layouts.

    NumPy in, NumPy out; device arrays stay on the device and their values (finiteness,
    magnitude) are checked there (see :mod:`lmref.cuda`). Only lmref's ``convention="lmref"``
    runs on the GPU: ``"authors"`` (the seed's notebook) is refused with a ``ValueError``
    that points to the CPU function.
    """
    if one_of(convention, "convention", _cpu.CONVENTIONS) != "lmref":
        raise ValueError(f"lmref.cuda.block_match implements convention='lmref' only, got "
                         f"{convention!r}: use lmref.blockmatch.block_match(..., "
                         f"convention={convention!r}) (CPU)")
    s = Session("blockmatch")
    ref3, cur3, b, srange, groups, flat = _cpu._check_block_match(
        s.stand_in(reference), s.stand_in(current), block_size,
        search_range, channels, boundary)
    dref, dcur = s.upload(reference, ref3), s.upload(current, cur3)
    C, H, W = cur3.shape
    group = groups[0][1] - groups[0][0]
    fields = len(groups)
    if is_device_array(reference) or is_device_array(current):
        exact_sums = _check_device_values(s, dref, dcur, b, group)
    else:
        exact_sums = _cpu._integral_and_exact(ref3, cur3, b, group)
    order = s.constant(("displacement order", srange),
                       lambda: _cpu.displacement_order(srange).astype(np.int64))
    code = _cpu.BM_BOUNDARIES.index(boundary)

    rows, width, nt = _tiles(b, H, W)
    tiles = blocks(W, width) * blocks(H, rows)
    nchunks = _chunks(order.shape[0], tiles * fields)
    check_alloc((3 * fields * nchunks, H, W), "block_match's per-chunk cost tables")
    best, second, arg = (s.scratch((fields * nchunks, H, W)) for _ in range(3))
    near, n_near = s.scratch((fields * H * W,), np.int64), s.scratch((1,), np.int64)
    smem = 8 * (rows * (width + b - 1) + 3 * rows * width)
    s.launch(s.k.scan, (blocks(W, width), blocks(H, rows), fields * nchunks), nt,
             dcur, dref, order, group, nchunks, rows, width, code, b, best, second, arg,
             n_near, shared=smem)

    cost, flow = s.empty((fields, H, W)), s.empty((fields, H, W, 2))
    bx, by = threads(32, 4), threads(8, 4)
    grid = (blocks(W, bx), blocks(H, by), fields)
    s.launch(s.k.merge, grid, (bx, by), best, second, arg, order, nchunks,
             _tie_tolerance(b, group), not exact_sums, cost, flow, near, n_near)
    if not exact_sums:  # near ties are possible: re-decide them, the count stays on the device
        tpb = threads(128, 4)
        s.launch(s.k.exact, _exact_blocks(fields * H * W), tpb, dcur, dref, order, group, code,
                 b, near, n_near, cost, flow, shared=16 * tpb)
    if flat or channels == "sum":
        return s.give(flow.reshape((H, W, 2)), cost.reshape((H, W)))
    return s.give(flow, cost)
