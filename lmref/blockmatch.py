"""Block matching, NRMSE/PSNR and latent-space motion compensation (seed ``001``).

Seed 001 estimates motion "using an exhaustive block-matching search at each pixel, which sought
to minimize the sum of squared differences (SSD)" (31 x 31 blocks, +-11 on 224 x 224 frames;
3 x 3 blocks, +-5 on 28 x 28 feature maps), predicts the feature tensor of a moved frame from
the reference frame's tensor with the input motion scaled down (eq. 12: ``v' = v / n^k``) and
scores the prediction with the NRMSE of eq. 13, comparing it with PSNR via eq. 14.

Conventions
-----------
Flow
    ``(H, W, 2)``, ``flow[..., 0] = dx`` (columns), ``flow[..., 1] = dy`` (rows), a *backward*
    map as in :mod:`lmref.motion`: ``warp(reference, flow)[y, x] = reference[y + dy, x + dx]``,
    so the flow found by :func:`block_match` makes ``warp(reference, flow)`` approximate
    ``current``.
Block-matching cost
    ``cost(y, x; dy, dx) = sum_{c, i, j} (current[c, y + i, x + j] -
    reference[c, y + dy + i, x + dx + j])^2`` over ``|i|, |j| <= block_size // 2`` (blocks
    centred on the pixel) and ``|dy|, |dx| <= search_range``: the SSD, not its mean. Decisions
    use its correctly rounded value (``math.fsum`` of the float64 ``(a - b) * (a - b)``), which
    no summation order changes; the returned cost is that value to ``~1e-13`` (relative).
Out-of-frame pixels
    ``boundary="zeros"``: pixels outside either frame count as 0 (a block hanging over the
    border is compared with zeros). ``boundary="replicate"``: coordinates are clamped to the
    frame (the nearest border pixel is repeated, like the padded reference frames of video
    coders). The same rule applies to both frames.
Ties
    Among displacements with equal cost the smallest ``dx^2 + dy^2`` wins, then the smallest
    ``dy``, then the smallest ``dx``; flat regions therefore get zero motion. Ties are decided
    on the exact (correctly rounded) costs, so the fast path, the reference and any thread
    count give the same flow.
NRMSE (eq. 13) and PSNR
    Over the elements a boolean mask selects (the full shape, or ``(H, W)`` for every channel);
    ``R`` defaults to ``max - min`` of ``actual`` over the mask. Sums are correctly rounded.
    An empty mask or a zero dynamic range raises: the NRMSE is undefined there. Eq. 14 maps
    PSNR (peak 255) to NRMSE with ``R = 256`` as printed (``levels``).
The authors' convention (``convention="authors"``)
    The seed's published notebook (collaborative-intelligence, ``experiments/icassp``) differs
    from its text and from the defaults above: its search window is a side (11 means +-5),
    candidate blocks are clipped to the frame, pixels within the block radius of the border
    keep a zero vector, ties go to the first minimum in raster order and the flow is forward
    (``warp(current, flow)`` approximates ``reference``); its NRMSE takes ``R`` over the whole
    target tensor while the MSE averages over the mask. :func:`block_match` and :func:`nrmse`
    offer it as an option; the defaults stay lmref's.
Latent motion (eq. 12)
    :func:`compensate` scales the input flow by ``1 / stride`` onto the feature grid
    (:func:`lmref.motion.scale_flow`, ``sample="center"`` for pooling stacks) and warps the
    reference features with ``boundary="zeros"``; its mask marks where the source lies inside
    the feature map (what enters the frame is unpredictable and excluded).
Dtypes and non-finite values
    Integer and floating inputs are accepted; every array result is float64. NaN or infinite
    frames are rejected by :func:`block_match` (a NaN has no SSD order) and
    :func:`latent_motion_error` (``image``); metrics reject them inside the mask only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lmref._numba import jit, pjit, prange
from lmref._validation import as_float64, as_int, as_real, check_alloc, check_finite, one_of
from lmref.registry import Op

__all__ = [
    "block_match", "displacement_order",
    "nrmse", "psnr", "psnr_to_nrmse", "nrmse_to_psnr",
    "compensate", "latent_motion_error", "LatentMotionResult",
    "motion_similarity", "MotionSimilarity",
]

CHANNEL_MODES = ("sum", "each")
BM_BOUNDARIES = ("zeros", "replicate")
#: ``convention`` of :func:`block_match` and :func:`nrmse`: lmref's reading of the paper, or
#: the authors' published notebook
CONVENTIONS = ("lmref", "authors")

_U = 2.0 ** -53  # unit roundoff of float64
_PARTIALS = 128  # exact summation of non-negative doubles needs at most ~40 partials


# ----------------------------------------------------------------------------- validation

def displacement_order(search_range: int) -> np.ndarray:
    """Candidate displacements in tie-break order.

    Parameters
    ----------
    search_range : int
        Largest ``|dx|`` and ``|dy|``.

    Returns
    -------
    ndarray of int64, shape ((2 s + 1)^2, 2)
        Rows ``(dy, dx)`` sorted by ``dx^2 + dy^2``, then ``dy``, then ``dx``: the first row is
        ``(0, 0)``, then ``(-1, 0), (0, -1), (0, 1), (1, 0)``...

    Raises
    ------
    TypeError
        ``search_range`` is not an integer.
    ValueError
        ``search_range < 0``, or its table would exceed the memory guard
        (:func:`lmref._validation.max_bytes`).
    """
    s = as_int(search_range, "search_range", minimum=0)
    check_alloc(((2 * s + 1) ** 2, 2), "search_range")  # the table (and each sort key)
    d = np.arange(-s, s + 1)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    order = np.lexsort((dx, dy, dx * dx + dy * dy))  # last key is the primary one
    return np.stack([dy[order], dx[order]], axis=1)


def _search_range_limit(height: int, width: int, block_size: int) -> int:
    """Largest useful search range for ``height x width`` frames: ``max(H, W) + b - 1``.

    A displacement with ``|dy|`` or ``|dx|`` beyond it compares a block wholly outside the
    frame: all zeros (``boundary="zeros"``), which the in-range
    ``(dy, dx) = (H + b // 2 - y, 0)`` matches as well, or a repeated edge (``"replicate"``),
    identical to the block with that component pulled back to the edge. Either twin has the
    same exact cost and a strictly smaller ``dx^2 + dy^2``, so it wins the tie: clamping
    ``search_range`` here changes no result.
    """
    return max(height, width) + block_size - 1


def _check_block_match(reference, current, block_size, search_range, channels, boundary):
    """Validate; return (ref, cur) as (C, H, W), b, s, channel groups, 2-D input flag."""
    ref = as_float64(reference, "reference", ndim=(2, 3))
    cur = as_float64(current, "current", ndim=(2, 3))
    if ref.shape != cur.shape:
        raise ValueError(f"current must have the shape of reference {ref.shape}, "
                         f"got {cur.shape}")
    b = as_int(block_size, "block_size", minimum=1)
    if b % 2 == 0:
        raise ValueError(f"block_size must be odd (blocks are centred on the pixel), got {b}")
    s = as_int(search_range, "search_range", minimum=0)
    one_of(channels, "channels", CHANNEL_MODES)
    one_of(boundary, "boundary", BM_BOUNDARIES)
    check_finite(ref, "reference")
    check_finite(cur, "current")
    flat = ref.ndim == 2
    ref3 = ref.reshape((1,) + ref.shape) if flat else ref
    cur3 = cur.reshape((1,) + cur.shape) if flat else cur
    C, H, W = cur3.shape
    s = min(s, _search_range_limit(H, W, b))
    group = C if channels == "sum" else 1
    big = max(float(np.abs(ref3).max()), float(np.abs(cur3).max()))
    if 4.0 * big * big * b * b * group > 1e300:
        raise ValueError(f"reference/current values up to {big:.3g} are too large: their squared "
                         f"differences summed over a {b}x{b} block overflow float64; rescale them")
    groups = [(0, C)] if channels == "sum" else [(c, c + 1) for c in range(C)]
    return ref3, cur3, b, s, groups, flat


def _padded(ref3, cur3, b, s, boundary):
    """Pad ``current`` by the block radius and ``reference`` by radius + search range."""
    r = b // 2
    mode = "constant" if boundary == "zeros" else "edge"
    cp = np.pad(cur3, ((0, 0), (r, r), (r, r)), mode=mode)
    rp = np.pad(ref3, ((0, 0), (r + s, r + s), (r + s, r + s)), mode=mode)
    # extra (unused) columns give cp the row length of rp: a displacement is then one flat
    # offset (see _squared_diff)
    cp = np.pad(cp, ((0, 0), (0, 0), (0, 2 * s)))
    return np.ascontiguousarray(cp), np.ascontiguousarray(rp)


def _package(best_cost, best_k, order, squeeze):
    """(G, H, W) costs and displacement indices -> (flow, cost) in the public layout."""
    dy = order[:, 0].astype(np.float64)[best_k]
    dx = order[:, 1].astype(np.float64)[best_k]
    flow = np.stack([dx, dy], axis=-1)
    if squeeze:
        return flow[0], best_cost[0]
    return flow, best_cost


# ----------------------------------------------------------------------------- reference

def _block_match_reference(reference, current, block_size, search_range, *, channels="sum",
                           boundary="zeros", convention="lmref"):
    """Plain loops: every pixel, every displacement in tie order, ``math.fsum`` of the block."""
    if one_of(convention, "convention", CONVENTIONS) == "authors":
        return _block_match_authors_reference(reference, current, block_size, search_range,
                                              channels, boundary)
    ref3, cur3, b, s, groups, flat = _check_block_match(reference, current, block_size,
                                                        search_range, channels, boundary)
    cp, rp = _padded(ref3, cur3, b, s, boundary)
    order = displacement_order(s)
    H, W = cur3.shape[1:]
    cost = np.empty((len(groups), H, W))
    best_k = np.empty((len(groups), H, W), dtype=np.int64)
    for g, (c0, c1) in enumerate(groups):
        for y in range(H):
            for x in range(W):
                block = cp[c0:c1, y:y + b, x:x + b]
                best = math.inf
                for k, (dy, dx) in enumerate(order):
                    cand = rp[c0:c1, y + s + dy:y + s + dy + b, x + s + dx:x + s + dx + b]
                    c = math.fsum(((block - cand) * (block - cand)).ravel())
                    if c < best:  # strict: the earlier displacement in tie order keeps a tie
                        best, best_k[g, y, x] = c, k
                cost[g, y, x] = best
    return _package(cost, best_k, order, flat or channels == "sum")


# ----------------------------------------------------------------------------- numba kernels

@jit
def _fsum_into(partials, n, x):
    """Add ``x`` to the non-overlapping partials (Shewchuk / CPython ``math.fsum``)."""
    i = 0
    for j in range(n):
        y = partials[j]
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            partials[i] = lo
            i += 1
        x = hi
    if x != 0.0:
        partials[i] = x
        i += 1
    return i


@jit
def _fsum_round(partials, n):
    """Correctly rounded value of the partials (CPython ``math.fsum``'s final step)."""
    if n == 0:
        return 0.0
    n -= 1
    hi = partials[n]
    lo = 0.0
    while n > 0:
        x = hi
        n -= 1
        y = partials[n]
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            break
    if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
        y = lo * 2.0
        x = hi + y
        if y == x - hi:
            hi = x
    return hi


@jit
def _fsum_kernel(values):
    """Correctly rounded sum of a float64 vector (``math.fsum``'s algorithm, compiled)."""
    partials = np.empty(_PARTIALS)
    n = 0
    for i in range(values.shape[0]):
        n = _fsum_into(partials, n, values[i])
    return _fsum_round(partials, n)


def _fsum(values) -> float:
    """``math.fsum`` of ``values``; infinities (an overflowed square) and an overflowing total
    give NumPy's sum (inf) instead of ``math.fsum``'s OverflowError."""
    v = np.ascontiguousarray(values, dtype=np.float64).ravel()
    total = float(_fsum_kernel(v)) if np.isfinite(v).all() else math.nan
    if math.isfinite(total):
        return total
    with np.errstate(over="ignore"):
        return float(np.sum(v))


@jit
def _exact_block_cost(cp, rp, c0, c1, y, x, oy, ox, b, partials):
    """Correctly rounded SSD of one block pair (the reference's ``math.fsum``)."""
    n = 0
    for c in range(c0, c1):
        for i in range(b):
            for j in range(b):
                t = cp[c, y + i, x + j] - rp[c, y + oy + i, x + ox + j]
                n = _fsum_into(partials, n, t * t)
    return _fsum_round(partials, n)


@jit
def _squared_diff(cpf, rpf, c0, c1, base, n, d2f):
    """``d2f[t] = sum_c (cpf[c, t] - rpf[c, base + t])^2`` for ``t < n``, channels in order.

    ``cp`` and ``rp`` share their row length, so on flattened rows a displacement is one
    constant offset ``base = oy * row + ox``: one long vectorised loop per channel.
    """
    for c in range(c0, c1):
        a = cpf[c, :n]
        r = rpf[c, base:base + n]
        if c == c0:
            for t in range(n):
                e = a[t] - r[t]
                d2f[t] = e * e
        else:
            for t in range(n):
                e = a[t] - r[t]
                d2f[t] += e * e


@jit
def _column_suffix(d2, suf, b, Wp):
    """Column suffix sums of ``d2[:, :Wp]`` within segments of ``b`` rows.

    ``suf[i] = d2[i] + d2[i + 1] + ... + d2[end of i's segment]``, rows cut into segments
    ``[k b, k b + b)``. A window of ``b`` rows is a segment suffix plus a prefix of the next
    segment: sums without subtraction, so no cancellation drift and exact zeros stay zero.
    """
    Hp = d2.shape[0]
    for start in range(0, Hp, b):
        stop = min(start + b, Hp)
        last = suf[stop - 1, :Wp]
        src = d2[stop - 1, :Wp]
        for j in range(Wp):
            last[j] = src[j]
        for i in range(stop - 2, start - 1, -1):
            out = suf[i, :Wp]
            row = d2[i, :Wp]
            nxt = suf[i + 1, :Wp]
            for j in range(Wp):
                out[j] = row[j] + nxt[j]


@jit
def _row_window(v, b, W, levels, out):
    """``out[x] = sum_{j < b} v[x + j]`` for ``x < W`` by doubling (no subtraction).

    ``levels[k]`` receives the sums of ``2^(k+1)`` neighbours; ``out`` adds the levels of the
    set bits of ``b``, lowest first (a fixed order). Offsets go into slices so that every loop
    indexes from 0 (numba then drops negative-index handling and vectorises).
    """
    n = v.shape[0]
    first = True
    off = 0
    width = 1
    lev = 0
    src = v
    rem = b
    while True:
        if rem & 1:
            part = src[off:off + W]
            if first:
                for x in range(W):
                    out[x] = part[x]
                first = False
            else:
                for x in range(W):
                    out[x] += part[x]
            off += width
        rem >>= 1
        if rem == 0:
            break
        m = n - 2 * width + 1
        dst = levels[lev]
        left = src[:m]
        right = src[width:width + m]
        for x in range(m):
            dst[x] = left[x] + right[x]
        src = dst
        lev += 1
        width *= 2


@jit
def _scan(cp, rp, keys, c0, c1, order, k0, k1, b, exact_pass, thr, best, second, arg, bkey):
    """Scan displacements ``k0..k1-1`` (tie order) of one channel group over the whole frame.

    ``keys[p, q]`` names the reference block with top-left ``(p, q)`` in ``rp``: equal keys
    mean identical blocks (-1: all zero), hence identical costs.

    First pass (``exact_pass == 0``): box costs update ``best``/``arg``/``bkey`` on a strict
    ``<`` (the earlier displacement keeps a tie) and ``second``, the smallest cost of any
    block that is not identical to the best one. Second pass: at near-tied pixels
    (``thr[y, x] >= 0``), displacements with box cost ``<= thr`` get their exact cost and
    ``best``/``arg``/``bkey`` track those.
    """
    H, W = best.shape
    Hp = H + b - 1
    Wp = W + b - 1
    row = rp.shape[2]  # cp is padded on the right to the same row length
    n = (Hp - 1) * row + Wp  # flat extent of the rows' first Wp columns
    cpf = cp.reshape((cp.shape[0], cp.shape[1] * row))
    rpf = rp.reshape((rp.shape[0], rp.shape[1] * row))
    d2 = np.empty((Hp, row))
    d2f = d2.reshape(Hp * row)
    suf = np.empty((Hp, row))
    prow = np.empty(Wp)
    vrow = np.empty(Wp)
    n_levels = 1
    while (2 << n_levels) <= b:  # levels of 2, 4, ... up to the top bit of b
        n_levels += 1
    levels = np.empty((n_levels, Wp))
    crow = np.empty(W)
    partials = np.empty(_PARTIALS)
    for k in range(k0, k1):
        oy = int(order[k, 0])
        ox = int(order[k, 1])
        kf = float(k)
        _squared_diff(cpf, rpf, c0, c1, oy * row + ox, n, d2f)
        _column_suffix(d2, suf, b, Wp)
        for y in range(H):
            t = y % b
            s = suf[y, :Wp]
            if t == 0:  # the window is one whole segment
                _row_window(s, b, W, levels, crow)
            else:  # suffix of this segment + prefix (kept running in prow) of the next
                q = d2[y + b - 1, :Wp]
                if t == 1:
                    for j in range(Wp):
                        prow[j] = q[j]
                        vrow[j] = s[j] + q[j]
                else:
                    for j in range(Wp):
                        p = prow[j] + q[j]
                        prow[j] = p
                        vrow[j] = s[j] + p
                _row_window(vrow, b, W, levels, crow)
            bst = best[y]
            sec = second[y]
            ag = arg[y]
            bk = bkey[y]
            krow = keys[y + oy, ox:ox + W]
            if exact_pass:
                th = thr[y]
                for x in range(W):
                    if crow[x] <= th[x]:
                        kd = krow[x]
                        if kd != bk[x]:  # an identical block has the same cost: keep the first
                            e = _exact_block_cost(cp, rp, c0, c1, y, x, oy, ox, b, partials)
                            if e < bst[x]:
                                bst[x] = e
                                ag[x] = kf
                                bk[x] = kd
            else:
                for x in range(W):
                    v = crow[x]
                    if v < sec[x]:  # rare once the first displacements are seen
                        kd = krow[x]
                        old = bst[x]
                        if v < old:
                            sec[x] = old
                            bst[x] = v
                            ag[x] = kf
                            bk[x] = kd
                        elif kd != bk[x]:
                            sec[x] = v


@pjit
def _block_match_kernel(cp, rp, keys, groups, order, nchunks, b, exact_pass, thr, best, second,
                        arg, bkey):
    """Tasks = (channel group, chunk of displacements); task ``t`` owns ``best[t]`` etc."""
    nd = order.shape[0]
    for t in prange(best.shape[0]):
        g = t // nchunks
        ch = t % nchunks
        if exact_pass and thr[g].max() < 0.0:
            continue  # no near tie in this channel group
        _scan(cp, rp, keys[g], int(groups[g, 0]), int(groups[g, 1]), order,
              ch * nd // nchunks, (ch + 1) * nd // nchunks, b, exact_pass, thr[g], best[t],
              second[t], arg[t], bkey[t])


@pjit
def _redecide_kernel(cp, rp, keys, groups, order, b, tau, pixels, cost_out, arg_out):
    """Exact decision at a few pixels ``pixels[i] = (group, y, x)``, one pixel per task.

    Direct block sums (sequential, within ``tau / 4`` of the exact SSD) pick the candidates
    within ``tau`` of their minimum; those get their exact cost, in tie order, skipping blocks
    identical to the best so far (equal keys: equal costs).
    """
    nd = order.shape[0]
    for i in prange(pixels.shape[0]):
        g = int(pixels[i, 0])
        y = int(pixels[i, 1])
        x = int(pixels[i, 2])
        c0 = int(groups[g, 0])
        c1 = int(groups[g, 1])
        direct = np.empty(nd)
        low = np.inf
        for k in range(nd):
            oy = int(order[k, 0])
            ox = int(order[k, 1])
            acc = 0.0
            for c in range(c0, c1):
                for a in range(b):
                    cur = cp[c, y + a, x:x + b]
                    ref = rp[c, y + oy + a, x + ox:x + ox + b]
                    for j in range(b):
                        t = cur[j] - ref[j]
                        acc += t * t
            direct[k] = acc
            low = min(low, acc)
        limit = low * (1.0 + tau)
        partials = np.empty(_PARTIALS)
        best = np.inf
        best_k = 0
        best_key = -2.0
        for k in range(nd):
            if direct[k] <= limit:
                oy = int(order[k, 0])
                ox = int(order[k, 1])
                kd = keys[g, y + oy, x + ox]
                if kd != best_key:
                    e = _exact_block_cost(cp, rp, c0, c1, y, x, oy, ox, b, partials)
                    if e < best:
                        best = e
                        best_k = k
                        best_key = kd
        cost_out[i] = best
        arg_out[i] = float(best_k)


# ----------------------------------------------------------------------------- fast path

def _block_keys(rp, groups, b, s, H, W, boundary):
    """Name every reference block so that equal names mean identical blocks.

    Block ``(p, q)`` is ``rp[c0:c1, p:p + b, q:q + b]``. All-zero blocks are named -1 (outside
    the frame with ``"zeros"``, or dead ReLU regions); with ``"replicate"``, blocks lying wholly
    beyond an edge repeat that edge and share the name of the nearest such block. Other blocks
    get their own position. Counting non-zero pixels is exact (integer cumulative sums).
    """
    r = b // 2
    P, Q = H + 2 * s, W + 2 * s
    p = np.arange(P)
    q = np.arange(Q)
    if boundary == "replicate":
        p = np.clip(p, s - r, H - 1 + r + s)
        q = np.clip(q, s - r, W - 1 + r + s)
    names = (p[:, None] * (Q + 2 * b) + q[None, :]).astype(np.float64)
    keys = np.empty((len(groups), P, Q))
    for g, (c0, c1) in enumerate(groups):
        nonzero = (rp[c0:c1] != 0).any(axis=0).astype(np.int64)
        csum = np.zeros((nonzero.shape[0] + 1, nonzero.shape[1] + 1), dtype=np.int64)
        csum[1:, 1:] = nonzero.cumsum(0).cumsum(1)
        count = csum[b:, b:] - csum[:-b, b:] - csum[b:, :-b] + csum[:-b, :-b]
        keys[g] = np.where(count == 0, -1.0, names)
    return keys


def _merge(best, second, arg, bkey, n_groups, nchunks):
    """Combine the chunks of each group in tie order: the same result for any chunking."""
    shape = (n_groups, nchunks) + best.shape[1:]
    best, second, arg, bkey = (a.reshape(shape) for a in (best, second, arg, bkey))
    m, sec, k, key = (a[:, 0].copy() for a in (best, second, arg, bkey))
    for ch in range(1, nchunks):
        b2, s2, k2, key2 = best[:, ch], second[:, ch], arg[:, ch], bkey[:, ch]
        lt = b2 < m  # strict: an earlier chunk keeps a tie
        dup = ~lt & (key2 == key)  # the same block as the best: not a competitor
        sec = np.where(lt, np.minimum(s2, m), np.where(dup, np.minimum(sec, s2),
                                                        np.minimum(sec, b2)))
        k = np.where(lt, k2, k)
        key = np.where(lt, key2, key)
        m = np.where(lt, b2, m)
    return m, sec, k, key


def _tie_tolerance(height: int) -> float:
    """Relative tie window for costs summed in trees of at most ``height`` additions.

    Such a sum of non-negative terms is within ``gamma = h u / (1 - h u)`` (relative) of the
    exact sum; comparing two of them with the rounding of the exact costs stays below
    ``2 gamma + 4 u``; we take twice that. Box costs: ``h = group - 1`` (channels) ``+ b``
    (column windows) ``+ 2 bit_length(b)`` (row doubling); direct sums: ``h = group b^2``.
    """
    gamma = height * _U / (1.0 - height * _U)
    return 2.0 * (2.0 * gamma + 4.0 * _U)


def _integral_and_exact(ref3, cur3, b, group) -> bool:
    """True when every box sum is exact in float64 (integer data, sums below 2**53)."""
    big = max(float(np.abs(ref3).max()), float(np.abs(cur3).max()))
    if 4.0 * big * big * b * b * group > 2.0 ** 53:
        return False
    return bool(np.all(ref3 == np.trunc(ref3)) and np.all(cur3 == np.trunc(cur3)))


def _n_chunks(n_groups: int, n_disp: int) -> int:
    import numba

    return max(1, min(n_disp, -(-numba.get_num_threads() // n_groups)))


# ----------------------------------------------------------------------------- integer path

#: displacement lanes of the integer kernels, a multiple of the SIMD width: the ``dx`` loops
#: then run in LLVM's vectorised body instead of its scalar remainder
_LANES = 16
#: exclusive limits of every integer handled by the integer path, per storage dtype
_EXACT_LIMITS = ((np.int32, 2 ** 31), (np.float64, 2 ** 53))


@jit
def _value_range(x):
    """``(min, max, every value an integer)`` of a float64 vector in one pass."""
    lo = np.inf
    hi = -np.inf
    integral = True
    for i in range(x.shape[0]):
        v = x[i]
        lo = min(lo, v)
        hi = max(hi, v)
        if integral and v != np.floor(v):
            integral = False
    return lo, hi, integral


def _integer_path_dtype(ref3, cur3, b, group, boundary):
    """The dtype the exact integer path computes in, or None when it does not apply.

    The path applies to integer-valued frames (any dtype) whose range ``D = max - min`` over
    both frames (0 included for ``"zeros"``: the padding is 0; ``"replicate"`` pads with frame
    pixels) satisfies ``(b^2 + 1) C D^2 < L``, ``C`` the channels per group: ``L = 2^31`` gives
    int32, ``L = 2^53`` float64. Proof that every quantity is then an exact integer:

    * every difference ``a - r`` of a current and a reference pixel (padding included) is an
      integer with ``|a - r| <= D`` (for ``"replicate"`` both frames are shifted by ``-min``
      first, exactly: the result ``<= D`` is representable; the differences do not change);
    * a squared difference is ``<= D^2``, a column sum over ``b`` rows and ``C`` channels is
      ``<= b C D^2``, a block cost ``<= b^2 C D^2``;
    * the kernels add or subtract only such values: the column update ``V + sum_c (d_c^2 -
      f_c^2)`` has partial sums in ``[-C D^2, (b + 1) C D^2]``, the row update
      ``acc + (V_in - V_out)`` has ``|V_in - V_out| <= b C D^2`` and gives a block cost;
    * all these magnitudes are ``<= (b^2 + 1) C D^2 < L``. In float64 (``L = 2^53``) every
      exact result is representable, so each operation is exact. In int32 numba computes in
      int64 (exact) and stores values ``< 2^31`` (exact).

    The costs are therefore the exact SSDs, equal to the reference's correctly rounded
    ``math.fsum`` of the (exact) float64 squares, and comparing them decides ties exactly.
    """
    lo, hi, integral = _value_range(ref3.reshape(-1))
    if not integral:
        return None
    lo_c, hi_c, integral = _value_range(cur3.reshape(-1))
    if not integral:
        return None
    lo, hi = min(lo, lo_c), max(hi, hi_c)
    if boundary == "zeros":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    d = int(hi) - int(lo)  # Python integers: no rounding
    need = (b * b + 1) * group * d * d
    for dtype, limit in _EXACT_LIMITS:
        if need < limit:
            return dtype
    return None


# The lane loops below index with unsigned integers and 2-D subscripts, not per-iteration row
# views: numba then emits neither negative-index fix-ups nor reference counting in them, and
# LLVM vectorises them.

@jit
def _int_column_init(cp, rp, c0, c1, y0, oy, b, V):
    """``V[j, l] = sum_{i < b, c} (cp[c, y0 + i, j] - rp[c, y0 + oy + i, j + l])^2``."""
    Wp = V.shape[0]
    lanes = np.uint64(V.shape[1])
    V[:, :] = 0
    for i in range(y0, y0 + b):
        for c in range(c0, c1):
            cur = cp[c, i]
            ref = rp[c, i + oy]
            for j in range(Wp):
                a = cur[j]
                ju = np.uint64(j)
                for l in range(lanes):
                    d = a - ref[ju + l]
                    V[ju, l] += d * d


@jit
def _int_column_step(cp, rp, c0, c1, y, oy, b, V):
    """Move the column sums ``V`` from rows ``y..y+b-1`` to ``y+1..y+b`` (exact)."""
    Wp = V.shape[0]
    lanes = np.uint64(V.shape[1])
    for c in range(c0, c1):
        cur_in = cp[c, y + b]
        ref_in = rp[c, y + b + oy]
        cur_out = cp[c, y]
        ref_out = rp[c, y + oy]
        for j in range(Wp):
            a = cur_in[j]
            e = cur_out[j]
            ju = np.uint64(j)
            for l in range(lanes):
                d = a - ref_in[ju + l]
                f = e - ref_out[ju + l]
                V[ju, l] += d * d - f * f


@jit
def _int_row_decide(V, acc, b, rank, big, best, arg):
    """Block costs of one row for one ``dy`` and all ``dx`` (lanes); keep the minimum.

    ``acc[l]`` runs along the row (exact sums, so subtracting is safe). A pixel is looked at
    closely only when some lane reaches its best cost (the padding lanes beyond ``2 s + 1``
    may only cause a needless look); then the valid lanes are compared on (cost, rank in
    :func:`displacement_order`): the tie rule, whatever order ``dy`` is scanned in. ``big``
    exceeds every cost.
    """
    W = best.shape[0]
    lanes = np.uint64(acc.shape[0])
    n_valid = rank.shape[0]
    acc[:] = V[0]
    for j in range(1, b):
        ju = np.uint64(j)
        for l in range(lanes):
            acc[l] += V[ju, l]
    for x in range(W):
        if x > 0:
            iu = np.uint64(x + b - 1)
            ou = np.uint64(x - 1)
            for l in range(lanes):
                acc[l] += V[iu, l] - V[ou, l]
        low = big
        for l in range(lanes):  # a plain reduction: vectorised
            low = min(low, acc[l])
        cost = best[x]
        if low <= cost:  # rare once the first rows of displacements are seen
            k = arg[x]
            for l in range(n_valid):
                v = acc[l]
                if v < cost or (v == cost and rank[l] < k):
                    cost = v
                    k = rank[l]
            best[x] = cost
            arg[x] = k


@pjit
def _int_match_kernel(cp, rp, groups, rank, dy_order, b, lanes, n_bands, big, best, arg):
    """Tasks = (channel group, band of rows); each owns its rows of ``best[g]``/``arg[g]``.

    Per task and ``dy``: column sums of the band's first row, then row by row the costs of
    all ``dx`` at once and a column step. Exact integer sums make the result independent of
    the banding (and so of the thread count). Compiled for int32 and for float64 frames (see
    :func:`_integer_path_dtype`), the one kernel family here with two specialisations.
    """
    n_groups, H, W = best.shape
    for t in prange(n_groups * n_bands):
        g = t // n_bands
        y0 = (t % n_bands) * H // n_bands
        y1 = (t % n_bands + 1) * H // n_bands
        c0 = groups[g, 0]
        c1 = groups[g, 1]
        V = np.empty((W + b - 1, lanes), dtype=best.dtype)
        acc = np.empty(lanes, dtype=best.dtype)
        for i in range(dy_order.shape[0]):
            oy = dy_order[i]
            _int_column_init(cp, rp, c0, c1, y0, oy, b, V)
            for y in range(y0, y1):
                _int_row_decide(V, acc, b, rank[oy], big, best[g, y], arg[g, y])
                if y + 1 < y1:
                    _int_column_step(cp, rp, c0, c1, y, oy, b, V)


def _block_match_integer(ref3, cur3, b, s, groups, boundary, dtype, order, squeeze):
    """The exact integer path (see :func:`_integer_path_dtype`): (flow, cost)."""
    import numba

    if boundary == "replicate":  # the SSD ignores a common shift; it keeps values <= D
        lo = min(float(ref3.min()), float(cur3.min()))
        ref3, cur3 = ref3 - lo, cur3 - lo
    cp, rp = _padded(ref3, cur3, b, s, boundary)
    n = 2 * s + 1
    lanes = -(-n // _LANES) * _LANES
    rp = np.pad(rp, ((0, 0), (0, 0), (0, lanes - n)))  # read by the padding lanes only
    cp, rp = cp.astype(dtype), rp.astype(dtype)
    rank = np.empty((n, n), dtype=np.int64)
    rank[order[:, 0] + s, order[:, 1] + s] = np.arange(len(order))
    dy_order = np.argsort(np.abs(np.arange(-s, s + 1)), kind="stable")  # likely best first
    n_groups, (_, H, W) = len(groups), cur3.shape
    # no cost exceeds big; the initial arg (beyond every rank) lets even a cost == big win
    big = dtype(np.inf if dtype == np.float64 else np.iinfo(dtype).max)
    best = np.full((n_groups, H, W), big, dtype=dtype)
    arg = np.full((n_groups, H, W), len(order), dtype=np.int64)
    n_bands = max(1, min(H, -(-numba.get_num_threads() // n_groups)))
    _int_match_kernel(cp, rp, np.array(groups, dtype=np.int64), rank, dy_order, b, lanes,
                      n_bands, big, best, arg)
    return _package(best.astype(np.float64), arg, order, squeeze)


def block_match(reference, current, block_size, search_range, *, channels="sum",
                boundary="zeros", convention="lmref"):
    """Exhaustive per-pixel block matching minimising the SSD (seed 001, Sec. 3).

    For every pixel ``(y, x)`` of ``current``, find the displacement ``(dx, dy)`` with
    ``|dx|, |dy| <= search_range`` that minimises the sum of squared differences between the
    ``block_size x block_size`` block of ``current`` centred at ``(y, x)`` and the block of
    ``reference`` centred at ``(y + dy, x + dx)``. The seed uses 31 x 31 blocks and +-11 on
    224 x 224 frames, 3 x 3 blocks and +-5 on 28 x 28 feature maps. ``convention="authors"``
    follows the authors' published notebook instead (see Notes).

    Parameters
    ----------
    reference, current : array_like, shape (H, W) or (C, H, W)
        The frame motion is measured from, and the frame it predicts. Same shape, finite.
        Under ``convention="authors"``: the notebook's ``prev_img`` and ``next_img``.
    block_size : int
        Odd block side ``b`` (blocks are centred on the pixel). Under ``convention="authors"``
        at most ``min(H, W)`` (a block must fit inside the frame).
    search_range : int
        ``s >= 0``; ``(2 s + 1)^2`` displacements are tried. A range beyond
        ``max(H, W) + block_size - 1`` is clamped to it: farther displacements only reach
        blocks wholly outside the frame (all zeros, or the repeated edge with ``"replicate"``),
        each identical to a nearer candidate that wins the tie, so flow and cost are those of
        the full range. Under ``convention="authors"`` it is the notebook's ``search_window``:
        the odd *side* of the search window, ``|dx|, |dy| <= search_range // 2`` (11 means
        +-5, where the seed's text says +-11 for the notebook's call with 11).
    channels : {"sum", "each"}
        ``"sum"``: one field for all channels (the SSD is summed over channels). ``"each"``:
        one field per channel. For 2-D inputs both give one ``(H, W, 2)`` field. The same
        under both conventions (the notebook sums over the channels of the arrays it is given,
        and calls itself once per feature channel).
    boundary : {"zeros", "replicate"}
        How pixels outside the frames count: 0 in both frames, or the nearest border pixel.
        Under ``convention="authors"`` no pixel outside the frame is compared, so only the
        default ``"zeros"`` is accepted (``"replicate"`` raises rather than being ignored).
    convention : {"lmref", "authors"}
        ``"lmref"`` (default): the reading of the seed's text described above. ``"authors"``:
        the seed's published notebook (collaborative-intelligence, ``experiments/icassp``,
        ``estimate_flow_blockmatching``); see Notes.

    Returns
    -------
    flow : ndarray, float64, shape (H, W, 2), or (C, H, W, 2) for 3-D ``channels="each"``
        ``flow[..., 0] = dx``, ``flow[..., 1] = dy`` (integers), the :mod:`lmref.motion`
        backward map: ``warp(reference, flow)`` approximates ``current``. Under
        ``convention="authors"`` the notebook's *forward* flow: the block of ``reference``
        centred at ``(y, x)`` best matches the block of ``current`` centred at
        ``(y + dy, x + dx)``, so ``warp(current, flow)`` approximates ``reference``; pixels
        within ``block_size // 2`` of the border are not matched and keep ``(0, 0)``.
    cost : ndarray, float64, shape (H, W), or (C, H, W) for 3-D ``channels="each"``
        The SSD of the chosen displacement (a sum, not a mean). Under ``convention="authors"``
        NaN at the unmatched border pixels (the notebook returns no cost).

    Raises
    ------
    TypeError
        Non-real frames, or non-integer ``block_size`` / ``search_range``.
    ValueError
        Frames of different shapes or ndim other than 2 or 3, non-finite or overflowing
        values, an even or non-positive ``block_size``, a negative ``search_range``, an unknown
        ``channels`` / ``boundary`` / ``convention``, or tables beyond the memory guard. Under
        ``convention="authors"`` also an even or non-positive ``search_range``, a
        ``block_size`` above ``min(H, W)`` and ``boundary="replicate"``.

    Notes
    -----
    Ties: smallest ``dx^2 + dy^2``, then smallest ``dy``, then smallest ``dx``
    (:func:`displacement_order`), decided on correctly rounded costs.

    ``convention="authors"`` differs from lmref's in five ways, all from the notebook:

    * search window: ``search_range`` is the window's side (``s = search_range // 2``);
    * clipping: only candidate blocks lying wholly inside the frame are tried (the window
      shrinks near the border), so ``boundary`` plays no part;
    * border: pixels within ``b // 2`` of the border are not matched (flow 0, cost NaN);
    * ties: the first minimum in raster order of the window (smallest ``dy``, then smallest
      ``dx``: NumPy's ``argmin``), so a flat region gets ``(-s, -s)`` or the nearest clipped
      corner, not zero motion;
    * direction: blocks are centred on ``reference`` and searched in ``current`` (forward,
      previous -> next). Up to the other four points it is lmref's
      ``block_match(current, reference, ...)`` with the same sign; for a translation by ``t``
      it is ``+t`` where lmref's backward flow is ``-t``.

    Costs are float64 SSDs and ties are decided on their correctly rounded values in both
    conventions. The notebook computes in the arrays' dtype: exact integers for its uint8
    frames (numba evaluates the fused ``(next - prev) ** 2`` in int64), float32 sums for its
    feature maps, whose last-ulp near ties may fall the other way.

    Fast path (numba): per displacement, squared differences and a separable box sum (columns
    by segment suffix/prefix sums, rows by doubling), so the work per pixel and displacement
    does not grow with the block size; chunks of displacements run in parallel and are merged
    in tie order. The sums have no subtraction: each is within ``~(2 b + C) ulp`` (relative)
    of the exact SSD and identical blocks give exactly 0. Pixels whose two best candidates
    are closer than that bound are re-decided on exact costs (``math.fsum``'s algorithm);
    identical reference blocks (all-zero ones, replicated borders) are recognised and need no
    re-decision, nor do integer-valued frames (their sums are exact). The returned cost is
    the box sum (relative error below ``1e-13``) or the exact one at re-decided pixels; the
    flow equals the plain reference's whatever the number of threads. Integer-valued frames
    (8-bit images) within a proven bound (``_integer_path_dtype``) take an integer path: exact
    running sums in int32 or float64 with all ``dx`` vectorised, so flow and cost equal the
    reference's bit for bit. The authors' convention uses the box-sum scheme restricted to
    clipped candidates (one task per row of block centres) and the same exact re-decision.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.blockmatch import block_match
    >>> reference = np.random.default_rng(0).integers(0, 10, (8, 8)).astype(float)
    >>> current = np.zeros_like(reference)
    >>> current[:, :-1] = reference[:, 1:]  # the content moved one pixel left
    >>> flow, cost = block_match(reference, current, block_size=3, search_range=1)
    >>> flow.shape, cost.shape
    ((8, 8, 2), (8, 8))
    >>> bool((flow[2:6, 2:6] == [1, 0]).all())  # dx = 1, dy = 0 inside the frame
    True
    >>> float(cost[2:6, 2:6].max())
    0.0
    """
    if one_of(convention, "convention", CONVENTIONS) == "authors":
        return _block_match_authors(reference, current, block_size, search_range, channels,
                                    boundary)
    ref3, cur3, b, s, groups, flat = _check_block_match(reference, current, block_size,
                                                        search_range, channels, boundary)
    C, H, W = cur3.shape
    group = groups[0][1] - groups[0][0]
    order = displacement_order(s)
    offsets = (order + s).astype(np.float64)  # (oy, ox) of the block in the padded reference
    n_groups = len(groups)
    nchunks = _n_chunks(n_groups, len(order))
    tasks = n_groups * nchunks
    # name the user's arguments, not the buffers (issue 18 item 9)
    check_alloc((C, H + b - 1 + 2 * s, W + b - 1 + 2 * s),
                f"block_size={b} with search_range={s} (the padded reference frame)")
    check_alloc((4 * tasks, H, W), f"reference/current of shape {(C, H, W)} (block_match's "
                                   f"per-task tables)")
    exact_dtype = _integer_path_dtype(ref3, cur3, b, group, boundary)
    if exact_dtype is not None:
        return _block_match_integer(ref3, cur3, b, s, groups, boundary, exact_dtype, order,
                                    flat or channels == "sum")
    cp, rp = _padded(ref3, cur3, b, s, boundary)
    keys = _block_keys(rp, groups, b, s, H, W, boundary)
    garr = np.array(groups, dtype=np.float64)
    best = np.full((tasks, H, W), np.inf)
    second = np.full((tasks, H, W), np.inf)
    arg = np.zeros((tasks, H, W))
    bkey = np.full((tasks, H, W), -2.0)
    thr = np.empty((n_groups, H, W))
    _block_match_kernel(cp, rp, keys, garr, offsets, nchunks, b, 0, thr, best, second, arg, bkey)
    cost, sec, k, _ = _merge(best, second, arg, bkey, n_groups, nchunks)
    if not _integral_and_exact(ref3, cur3, b, group):
        limit = cost * (1.0 + _tie_tolerance(group + b + 2 * b.bit_length() + 2))
        near = (cost > 0.0) & (sec <= limit)
        if near.any():  # re-decide near ties on exact costs
            args = (cp, rp, keys, garr, offsets, b, near, limit, cost, k)
            per_pixel = _redecide_pixels if _few(near, b, group) else _redecide_rescan
            per_pixel(*args, best=best, second=second, arg=arg, bkey=bkey, nchunks=nchunks)
    return _package(cost, k.astype(np.int64), order, flat or channels == "sum")


def _few(near, b, group) -> bool:
    """Whether direct sums at the near-tied pixels cost less than another box-filter scan."""
    n_groups_hit = int(near.any(axis=(1, 2)).sum())
    Hp, Wp = near.shape[1] + b - 1, near.shape[2] + b - 1
    return int(near.sum()) * b * b * group <= 20 * n_groups_hit * Hp * Wp


def _redecide_pixels(cp, rp, keys, garr, offsets, b, near, limit, cost, k, **_):
    """Exact re-decision at each near-tied pixel from direct sums (few pixels)."""
    pixels = np.argwhere(near).astype(np.float64)
    out_cost = np.empty(len(pixels))
    out_k = np.empty(len(pixels))
    group = int(garr[0, 1] - garr[0, 0])
    _redecide_kernel(cp, rp, keys, garr, offsets, b, _tie_tolerance(group * b * b), pixels,
                     out_cost, out_k)
    cost[near] = out_cost
    k[near] = out_k


def _redecide_rescan(cp, rp, keys, garr, offsets, b, near, limit, cost, k, *, best, second,
                     arg, bkey, nchunks):
    """Exact re-decision by a second box-filter scan (many near-tied pixels)."""
    thr = np.where(near, limit, -1.0)
    best.fill(np.inf)
    arg.fill(0.0)
    bkey.fill(-2.0)
    _block_match_kernel(cp, rp, keys, garr, offsets, nchunks, b, 1, thr, best, second, arg, bkey)
    exact_cost, _, exact_k, _ = _merge(best, second, arg, bkey, len(garr), nchunks)
    cost[near] = exact_cost[near]
    k[near] = exact_k[near]


# ----------------------------------------------------------------------------- authors' convention
# seed 001's published notebook (collaborative-intelligence, experiments/icassp): candidate
# blocks clipped to the frame, pixels within the block radius of the border left at zero motion,
# the first minimum in raster order, forward flow (see block_match's Notes)

def _check_block_match_authors(reference, current, block_size, search_range, channels,
                               boundary):
    """Validate for ``convention="authors"``; return (prev, next) as (C, H, W), b, search
    radius, channel groups, 2-D input flag."""
    # 0 stands in for lmref's radius: the window is checked below, with the frames' shape known
    prev3, next3, b, _, groups, flat = _check_block_match(reference, current, block_size, 0,
                                                          channels, boundary)
    window = as_int(search_range, "search_range", minimum=1)
    if window % 2 == 0:
        raise ValueError(f"search_range must be odd under convention='authors' (it is the side "
                         f"of the search window, the notebook's search_window: 11 means "
                         f"+-5), got {window}")
    if boundary != "zeros":
        raise ValueError(f"boundary={boundary!r} does not apply under convention='authors': "
                         f"candidate blocks are clipped to lie inside the frame, so no pixel "
                         f"outside it is ever compared; leave boundary at its default")
    H, W = prev3.shape[1:]
    if b > min(H, W):
        raise ValueError(f"block_size must be <= min(H, W) = {min(H, W)} under "
                         f"convention='authors' (a block must fit inside the frame), got {b}")
    # a displacement beyond the frame's extent has no candidate inside it: clamping the radius
    # keeps the raster order of the remaining ones and the tables small
    return prev3, next3, b, min(window // 2, max(H, W) - 1), groups, flat


def _raster_order(radius: int) -> np.ndarray:
    """Rows ``(dy, dx)`` of the ``(2 r + 1)^2`` search window in raster order (dy, then dx)."""
    d = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    return np.stack([dy.ravel(), dx.ravel()], axis=1)


def _authors_result(cost, k, prev3, b, radius, squeeze):
    """(G, H, W) costs and raster indices -> (flow, cost); pixels within the block radius of the
    border keep a zero vector and get cost NaN (no block is centred there)."""
    r = b // 2
    H, W = prev3.shape[1:]
    inner = np.zeros((H, W), dtype=bool)
    inner[r:H - r, r:W - r] = True
    cost = np.where(inner, cost, np.nan)
    k = np.where(inner, k, radius * (2 * radius + 1) + radius)  # the (0, 0) displacement
    return _package(cost, k.astype(np.int64), _raster_order(radius), squeeze)


def _block_match_authors_reference(reference, current, block_size, search_range, channels,
                                   boundary):
    """Plain loops of the authors' convention: every block centred at least ``b // 2`` from the
    border, candidates clipped to the frame, ``math.fsum`` costs, first minimum in raster order."""
    prev3, next3, b, sr, groups, flat = _check_block_match_authors(
        reference, current, block_size, search_range, channels, boundary)
    r = b // 2
    H, W = prev3.shape[1:]
    cost = np.zeros((len(groups), H, W))
    k = np.zeros((len(groups), H, W), dtype=np.int64)
    w = 2 * sr + 1
    for g, (c0, c1) in enumerate(groups):
        for y in range(r, H - r):
            for x in range(r, W - r):
                block = prev3[c0:c1, y - r:y + r + 1, x - r:x + r + 1]
                best = math.inf
                for y2 in range(max(r, y - sr), min(H - r, y + sr + 1)):
                    for x2 in range(max(r, x - sr), min(W - r, x + sr + 1)):
                        cand = next3[c0:c1, y2 - r:y2 + r + 1, x2 - r:x2 + r + 1]
                        c = math.fsum(((cand - block) * (cand - block)).ravel())
                        if c < best:  # strict: the first minimum in raster order
                            best = c
                            k[g, y, x] = (y2 - y + sr) * w + (x2 - x + sr)
                cost[g, y, x] = best
    return _authors_result(cost, k, prev3, b, sr, flat or channels == "sum")


@jit
def _add_squared_diff(a, q, out, first):
    """``out[v] (=|+=) (a[v] - q[v])^2``: one vectorisable loop, one accumulator per ``v``."""
    if first:
        for v in range(a.shape[0]):
            e = a[v] - q[v]
            out[v] = e * e
    else:
        for v in range(a.shape[0]):
            e = a[v] - q[v]
            out[v] += e * e


@pjit
def _authors_scan_kernel(prev, nxt, groups, b, radius, best, second, arg):
    """Box costs of every candidate, one task per (channel group, row of block centres).

    Per displacement (raster order) and row: column sums over the block's ``b`` rows (rows,
    then channels, in order), then sums of ``b`` neighbouring columns. ``best``/``arg`` take a
    strictly smaller cost (the first minimum stays); ``second`` is the smallest other cost.
    """
    H = prev.shape[1]
    W = prev.shape[2]
    r = b // 2
    rows = H - 2 * r
    w = 2 * radius + 1
    for t in prange(groups.shape[0] * rows):
        g = t // rows
        y = r + t % rows
        c0 = int(groups[g, 0])
        c1 = int(groups[g, 1])
        col = np.empty(W)
        box = np.empty(W)
        bst = best[g, y]
        sec = second[g, y]
        ag = arg[g, y]
        for dy in range(max(-radius, r - y), min(radius, H - 1 - r - y) + 1):
            for dx in range(-radius, radius + 1):
                x0 = max(r, r - dx)  # centres whose candidate lies inside the frame
                x1 = min(W - r, W - r - dx)
                if x0 >= x1:
                    continue
                v0 = x0 - r
                n = x1 - x0 + 2 * r
                for i in range(b):
                    for c in range(c0, c1):
                        _add_squared_diff(prev[c, y - r + i, v0:v0 + n],
                                          nxt[c, y - r + i + dy, v0 + dx:v0 + dx + n], col,
                                          i == 0 and c == c0)
                m = x1 - x0
                for j in range(b):
                    part = col[j:j + m]
                    if j == 0:
                        for x in range(m):
                            box[x] = part[x]
                    else:
                        for x in range(m):
                            box[x] += part[x]
                kf = float((dy + radius) * w + dx + radius)
                for x in range(m):
                    s = box[x]
                    if s < sec[x0 + x]:
                        if s < bst[x0 + x]:
                            sec[x0 + x] = bst[x0 + x]
                            bst[x0 + x] = s
                            ag[x0 + x] = kf
                        else:
                            sec[x0 + x] = s


@pjit
def _authors_redecide_kernel(prev, nxt, groups, b, radius, tau, pixels, cost_out, arg_out):
    """Exact decision at pixels ``pixels[i] = (group, y, x)``, one pixel per task: direct sums
    pick the candidates within ``tau`` of their minimum, whose exact costs (raster order,
    strict ``<``) decide."""
    H = prev.shape[1]
    W = prev.shape[2]
    r = b // 2
    w = 2 * radius + 1
    for i in prange(pixels.shape[0]):
        g = int(pixels[i, 0])
        y = int(pixels[i, 1])
        x = int(pixels[i, 2])
        c0 = int(groups[g, 0])
        c1 = int(groups[g, 1])
        direct = np.full(w * w, np.inf)
        low = np.inf
        for dy in range(max(-radius, r - y), min(radius, H - 1 - r - y) + 1):
            for dx in range(max(-radius, r - x), min(radius, W - 1 - r - x) + 1):
                acc = 0.0
                for c in range(c0, c1):
                    for a in range(b):
                        for j in range(b):
                            e = prev[c, y - r + a, x - r + j] - nxt[c, y - r + a + dy,
                                                                     x - r + j + dx]
                            acc += e * e
                direct[(dy + radius) * w + dx + radius] = acc
                low = min(low, acc)
        limit = low * (1.0 + tau)
        partials = np.empty(_PARTIALS)
        best = np.inf
        best_k = 0
        for k in range(w * w):
            if direct[k] <= limit:
                dy = k // w - radius
                dx = k % w - radius
                e = _exact_block_cost(prev, nxt, c0, c1, y - r, x - r, dy, dx, b, partials)
                if e < best:
                    best = e
                    best_k = k
        cost_out[i] = best
        arg_out[i] = float(best_k)


def _block_match_authors(reference, current, block_size, search_range, channels, boundary):
    """Fast path of the authors' convention: box costs, near ties re-decided on exact costs."""
    prev3, next3, b, sr, groups, flat = _check_block_match_authors(
        reference, current, block_size, search_range, channels, boundary)
    C, H, W = prev3.shape
    n_groups = len(groups)
    group = groups[0][1] - groups[0][0]
    check_alloc((3 * n_groups, H, W), f"reference/current of shape {(C, H, W)} (block_match's "
                                      f"cost tables)")
    prev = np.ascontiguousarray(prev3)
    nxt = np.ascontiguousarray(next3)
    garr = np.array(groups, dtype=np.float64)
    best = np.full((n_groups, H, W), np.inf)
    second = np.full((n_groups, H, W), np.inf)
    arg = np.zeros((n_groups, H, W))
    _authors_scan_kernel(prev, nxt, garr, b, sr, best, second, arg)
    if not _integral_and_exact(prev3, next3, b, group):  # else every box sum is exact
        # box sums: trees of at most group * b + b additions (columns, then rows)
        limit = best * (1.0 + _tie_tolerance(group * b + b))
        near = np.isfinite(best) & (best > 0.0) & (second <= limit)
        if near.any():
            pixels = np.argwhere(near).astype(np.float64)
            out_cost = np.empty(len(pixels))
            out_k = np.empty(len(pixels))
            _authors_redecide_kernel(prev, nxt, garr, b, sr, _tie_tolerance(group * b * b),
                                     pixels, out_cost, out_k)
            best[near] = out_cost
            arg[near] = out_k
    return _authors_result(best, arg, prev3, b, sr, flat or channels == "sum")


# ----------------------------------------------------------------------------- NRMSE and PSNR

def _selected(predicted, actual, mask):
    """Validate a (predicted, actual, mask) triple; return the selected elements (1-D)."""
    p = as_float64(predicted, "predicted")
    a = as_float64(actual, "actual")
    if p.shape != a.shape:
        raise ValueError(f"predicted must have the shape of actual {a.shape}, got {p.shape}")
    if mask is None:
        sel_p, sel_a = p.ravel(), a.ravel()
    else:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array, got dtype {m.dtype}")
        if m.shape == a.shape:
            full = m
        elif a.ndim > 2 and m.shape == a.shape[-2:]:
            full = np.broadcast_to(m, a.shape)  # one spatial mask for every channel
        else:
            spatial = f" or its spatial shape {a.shape[-2:]}" if a.ndim > 2 else ""
            raise ValueError(f"mask must have the shape of actual {a.shape}{spatial}, "
                             f"got {m.shape}")
        if not full.any():
            raise ValueError("mask selects no element: the error over an empty region is "
                             "undefined")
        sel_p, sel_a = p[full], a[full]
    check_finite(sel_p, "predicted (inside the mask)")
    check_finite(sel_a, "actual (inside the mask)")
    return sel_p, sel_a


def _mse(sel_p, sel_a) -> float:
    d = sel_p - sel_a
    with np.errstate(over="ignore"):  # an overflowing square makes the MSE inf
        return _fsum(d * d) / d.size  # correctly rounded: independent of element order


def nrmse(predicted, actual, mask=None, dynamic_range=None, *, convention="lmref") -> float:
    """Normalised root-mean-square error, seed 001 eq. 13.

    ``NRMSE = sqrt(sum_i (p_i - a_i)^2 / N) / R`` over the ``N`` elements selected by ``mask``.

    Parameters
    ----------
    predicted, actual : array_like
        Same shape (no broadcasting): the prediction (e.g. a motion-compensated feature
        tensor) and the actual tensor.
    mask : array_like of bool, optional
        Elements to include (the predictable region); either ``actual``'s shape or, for
        tensors of 3 or more dimensions, their spatial shape ``(H, W)`` (applied to every
        channel). Values outside the mask are ignored (they may be NaN). All-False is an error:
        the NRMSE of nothing is undefined.
    dynamic_range : float, optional
        ``R > 0``. Default: ``max - min`` of ``actual`` over the mask (``convention="lmref"``)
        or over the whole of ``actual``, every channel and position, mask ignored
        (``convention="authors"``); a constant ``actual`` then has no dynamic range and raises
        (pass ``dynamic_range``). A given ``dynamic_range`` is used under both conventions.
    convention : {"lmref", "authors"}
        Only changes the default ``R``. ``"authors"``: as the seed's published notebook
        (collaborative-intelligence, ``experiments/icassp``, ``run_experiment``), which takes
        ``R`` over the whole target tensor while its MSE averages over the masked elements
        only. ``R`` is then at least lmref's, so the NRMSE is at most lmref's; without a mask
        the two agree.

    Returns
    -------
    float
        The sum of squares is correctly rounded (``math.fsum``), so the value does not depend
        on element order. Inputs must be finite inside the mask, and ``actual`` everywhere
        under ``convention="authors"`` (its whole range is ``R``).

    Raises
    ------
    TypeError
        Non-real inputs or a non-boolean mask.
    ValueError
        Shapes that differ, a mask of another shape or selecting nothing, non-finite values
        where they are used, a zero or negative dynamic range, or an unknown ``convention``.
    """
    authors = one_of(convention, "convention", CONVENTIONS) == "authors"
    sel_p, sel_a = _selected(predicted, actual, mask)
    if dynamic_range is None and authors:
        R = _authors_dynamic_range(actual)
    elif dynamic_range is None:
        R = float(sel_a.max() - sel_a.min())
        if R == 0.0:
            raise ValueError(f"actual is constant ({sel_a[0]!r}) over the mask, so its dynamic "
                             f"range is 0 and the NRMSE undefined; pass dynamic_range")
    else:
        R = as_real(dynamic_range, "dynamic_range")
        if R <= 0.0:
            raise ValueError(f"dynamic_range must be > 0, got {R!r}")
    return math.sqrt(_mse(sel_p, sel_a)) / R  # eq. 13


def _authors_dynamic_range(actual) -> float:
    """The notebook's ``R``: ``max - min`` of the whole target tensor (no mask)."""
    a = as_float64(actual, "actual")
    if a.size == 0:
        raise ValueError("actual is empty: it has no dynamic range and the NRMSE is undefined")
    check_finite(a, "actual (convention='authors' takes R over the whole tensor)")
    R = float(a.max() - a.min())
    if R == 0.0:
        raise ValueError(f"actual is constant ({a.flat[0]!r}), so its dynamic range is 0 and the "
                         f"NRMSE undefined; pass dynamic_range")
    return R


def psnr(predicted, actual, peak=255.0, mask=None) -> float:
    """Peak signal-to-noise ratio ``10 log10(peak^2 / MSE)`` in dB over ``mask``.

    Same input rules as :func:`nrmse`. Identical inputs give ``inf``.
    """
    pk = as_real(peak, "peak")
    if pk <= 0.0:
        raise ValueError(f"peak must be > 0, got {pk!r}")
    mse = _mse(*_selected(predicted, actual, mask))
    return math.inf if mse == 0.0 else 10.0 * math.log10(pk * pk / mse)


def _scale_args(peak, levels):
    """Validate eq. 14's ``peak`` (real, > 0) and ``levels`` (an integer count, >= 2)."""
    pk = as_real(peak, "peak")
    if pk <= 0.0:
        raise ValueError(f"peak must be > 0, got {pk!r}")
    return pk, float(as_int(levels, "levels", minimum=2))


def _scalar_or_array(result, like):
    """A float for scalar input, else an array of the input's shape."""
    if np.ndim(like) == 0:
        return float(np.reshape(result, -1)[0])
    return np.reshape(result, np.shape(like))


def psnr_to_nrmse(psnr, peak=255.0, levels=256):
    """NRMSE of a prediction with a given PSNR, seed 001 eq. 14.

    ``NRMSE = sqrt(peak^2 / 10^(PSNR / 10)) / levels = (peak / levels) 10^(-PSNR / 20)``:
    the MSE that gives the PSNR (with ``peak`` = 255 for 8-bit video), normalised by a
    dynamic range of ``levels`` = 256 as printed in the seed. 27 dB gives 0.04449 and 41 dB
    0.008878, the seed's "0.009-0.044" (which lists the range in increasing NRMSE, i.e.
    from 41 dB down to 27 dB). For ``R = max - min = 255`` as in :func:`nrmse` of 8-bit data,
    pass ``levels=255`` (0.04467 and 0.008913).

    Parameters
    ----------
    psnr : float or array_like
        dB; ``inf`` maps to 0.
    peak : float
        Positive.
    levels : int
        Number of intensity levels, ``>= 2`` (the dynamic range ``R`` of eq. 13).

    Returns
    -------
    float or ndarray (float64)

    Raises
    ------
    TypeError
        ``levels`` is not an integer (e.g. 2.5), or ``peak`` / ``psnr`` are not real.
    ValueError
        ``peak <= 0``, ``levels < 2``, or NaN in ``psnr``.

    Examples
    --------
    >>> from lmref.blockmatch import psnr_to_nrmse
    >>> round(psnr_to_nrmse(27.0), 5), round(psnr_to_nrmse(41.0), 6)
    (0.04449, 0.008878)
    >>> psnr_to_nrmse(float("inf"))
    0.0
    """
    pk, lv = _scale_args(peak, levels)
    p = as_float64(psnr, "psnr")
    if np.isnan(p).any():
        raise ValueError("psnr contains NaN")
    return _scalar_or_array(pk / lv * 10.0 ** (-p / 20.0), psnr)  # eq. 14


def nrmse_to_psnr(nrmse, peak=255.0, levels=256):
    """Inverse of :func:`psnr_to_nrmse`: ``PSNR = 20 log10(peak / (levels NRMSE))`` (eq. 14).

    ``nrmse`` must be >= 0 (0 maps to ``inf``); returns a float or a float64 array. ``peak``
    and ``levels`` as in :func:`psnr_to_nrmse`.

    Raises
    ------
    TypeError
        ``levels`` is not an integer, or ``peak`` / ``nrmse`` are not real.
    ValueError
        ``peak <= 0``, ``levels < 2``, or a negative or NaN ``nrmse``.

    Examples
    --------
    >>> from lmref.blockmatch import nrmse_to_psnr, psnr_to_nrmse
    >>> round(nrmse_to_psnr(psnr_to_nrmse(30.0)), 9)
    30.0
    >>> nrmse_to_psnr(0.0)
    inf
    """
    pk, lv = _scale_args(peak, levels)
    e = as_float64(nrmse, "nrmse")
    if np.isnan(e).any() or (e < 0).any():
        raise ValueError("nrmse must be >= 0 (and not NaN)")
    with np.errstate(divide="ignore"):
        return _scalar_or_array(20.0 * np.log10(pk / (lv * e)), nrmse)


# ----------------------------------------------------------------------------- latent motion

def _check_flow_field(flow, name):
    f = as_float64(flow, name, ndim=3)
    if f.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (H, W, 2) (dx, dy), got {f.shape}")
    return f


def compensate(reference_features, flow, stride, mode="bilinear", *, sample="center"):
    """Predict the features of a moved frame from the reference frame's (seed 001, eq. 12).

    The input-space motion ``flow`` is scaled to the feature grid, ``v' = v / stride``
    (:func:`lmref.motion.scale_flow`), and the reference features are warped with it.

    Parameters
    ----------
    reference_features : array_like, shape (h, w) or (C, h, w)
        Features of the reference frame.
    flow : array_like, shape (H, W, 2)
        Input-space backward flow (:mod:`lmref.motion`): the moved frame is
        ``warp(reference_frame, flow)``.
    stride : int or (int, int)
        Total downscaling ``n^k`` between the frame and the features.
    mode : {"bilinear", "nearest"}
        Interpolation of the feature warp.
    sample : {"center", "corner"}
        Which input pixel a feature pixel stands for (see :func:`lmref.motion.scale_flow`):
        ``"center"`` for non-overlapping pooling (as :func:`lmref.layers.feature_extractor`,
        ``h = floor(H / stride)``), ``"corner"`` for strided convolutions with ``k // 2``
        padding (``h = ceil(H / stride)``). The scaled flow must have the features' ``(h, w)``.

    Returns
    -------
    predicted : ndarray, float64, shape of ``reference_features``
        Warped with ``boundary="zeros"``; meaningful only where ``mask`` is True.
    mask : ndarray of bool, shape (h, w)
        The predictable region: the source point lies inside the feature map
        (:func:`lmref.motion.valid_mask`); False where content enters the frame.
    """
    from lmref.motion import scale_flow, valid_mask, warp

    feats = as_float64(reference_features, "reference_features", ndim=(2, 3))
    f = _check_flow_field(flow, "flow")
    latent = scale_flow(f, stride, sample=sample)  # eq. 12: v' = v / n^k
    if latent.shape[:2] != feats.shape[-2:]:
        raise ValueError(f"flow of spatial size {f.shape[:2]} scaled by stride {stride!r} "
                         f"(sample={sample!r}) gives a {latent.shape[:2]} grid, but "
                         f"reference_features are {feats.shape[-2:]}; check stride, or use "
                         f"sample='corner' (ceil) / 'center' (floor)")
    predicted = warp(feats, latent, mode=mode, boundary="zeros")
    return predicted, valid_mask(latent, feats.shape, mode=mode)


@dataclass(frozen=True)
class LatentMotionResult:
    """Result of :func:`latent_motion_error`.

    Attributes
    ----------
    nrmse : float
        Eq. 13 over the predictable region.
    actual, predicted : ndarray
        Features of the moved frame, and their prediction from the reference frame's.
    mask : ndarray of bool, shape (h, w)
        The predictable region (eroded by ``margin``).
    moved : ndarray
        The moved input frame ``warp(image, flow)``.
    latent_flow : ndarray, shape (h, w, 2)
        The flow used in feature space (``flow / stride`` on the feature grid).
    """

    nrmse: float
    actual: np.ndarray
    predicted: np.ndarray
    mask: np.ndarray
    moved: np.ndarray
    latent_flow: np.ndarray


def _erode(mask, margin):
    """Keep pixels whose ``(2 margin + 1)^2`` neighbourhood is inside the frame and the mask."""
    if margin == 0:
        return mask
    h, w = mask.shape
    ok = np.zeros((h + 2 * margin + 1, w + 2 * margin + 1), dtype=np.int64)
    ok[margin + 1:margin + 1 + h, margin + 1:margin + 1 + w] = mask
    csum = ok.cumsum(0).cumsum(1)  # integer box counts: exact
    n = 2 * margin + 1
    count = csum[n:, n:] - csum[:-n, n:] - csum[n:, :-n] + csum[:-n, :-n]
    return count == n * n


def _check_margin(margin, shape):
    """``margin`` for an ``(h, w)`` feature map: at most ``(min(h, w) - 1) // 2``, beyond which
    the ``(2 margin + 1)^2`` erosion window fits nowhere and no pixel could remain."""
    largest = (min(shape) - 1) // 2
    if margin > largest:
        raise ValueError(f"margin must be <= {largest} for the {shape[0]}x{shape[1]} feature "
                         f"map (a (2 margin + 1)^2 window must fit inside it), got {margin}")


def _predictable_region(mask, margin):
    """The mask eroded by ``margin``; an error naming flow (and margin) if nothing is left."""
    eroded = _erode(mask, margin)
    if eroded.any():
        return eroded
    if mask.any():
        raise ValueError(f"margin={margin} leaves none of the {int(mask.sum())} feature pixels "
                         f"that flow makes predictable: reduce margin (or the motion)")
    raise ValueError(f"flow leaves no predictable feature pixel: every source point "
                     f"(flow / stride) is non-finite or outside the {mask.shape[0]}x"
                     f"{mask.shape[1]} feature map, so the NRMSE is undefined")


def latent_motion_error(extract, image, flow, stride, *, mode="bilinear", boundary="zeros",
                        sample="center", margin=0, dynamic_range=None):
    """How well input motion scaled by ``1 / stride`` predicts feature motion (seed 001, Sec. 3).

    The moved frame is ``warp(image, flow)``; its features ``extract(moved)`` (actual) are
    compared, by eq. 13 over the predictable region, with the reference features
    ``extract(image)`` moved by :func:`compensate` (predicted).

    Parameters
    ----------
    extract : callable
        numpy ``(H, W)`` or ``(C, H, W)`` -> numpy ``(h, w)`` or ``(c, h, w)``; any model (wrap a
        PyTorch one in a function), e.g. :func:`lmref.layers.feature_extractor`'s.
    image : array_like, shape (H, W) or (C, H, W)
    flow : array_like, shape (H, W, 2)
        Input-space backward flow (e.g. :func:`lmref.motion.affine_flow`).
    stride : int or (int, int)
        Total stride of ``extract``.
    mode : {"bilinear", "nearest"}
        Interpolation of both warps (image and features).
    boundary : {"zeros", "border", "wrap"}
        Boundary of the image warp (what enters the frame); features use ``"zeros"`` and the
        mask.
    sample : {"center", "corner"}
        See :func:`compensate`.
    margin : int >= 0
        Also leave out feature pixels within ``margin`` of the frame border or of the
        unpredictable region (the mask eroded by a ``(2 margin + 1)^2`` square): there the
        actual features see zero padding or entering content through their receptive field,
        which no motion model predicts. 0 (default) excludes only what enters the frame, as the
        seed.
    dynamic_range : float, optional
        ``R`` of eq. 13; default ``max - min`` of the actual features over the mask.

    Returns
    -------
    LatentMotionResult

    Raises
    ------
    TypeError
        ``extract`` is not callable, non-real ``image`` / ``flow``, non-integer ``margin``.
    ValueError
        ``image`` contains NaN or Inf (it would reach the features through any receptive
        field); ``flow`` leaves no predictable feature pixel (every source point non-finite
        or outside the feature map); ``margin`` is negative, wider than the feature map
        allows (``> (min(h, w) - 1) // 2``) or erodes the whole predictable region; bad
        shapes or options (as :func:`compensate` and :func:`nrmse`).
    """
    from lmref.motion import scale_flow, warp

    if not callable(extract):
        raise TypeError(f"extract must be callable (numpy -> numpy), got "
                        f"{type(extract).__name__}")
    img = as_float64(image, "image", ndim=(2, 3))
    check_finite(img, "image")
    f = _check_flow_field(flow, "flow")
    margin = as_int(margin, "margin", minimum=0)
    reference = as_float64(extract(img), "extract(image)", ndim=(2, 3))
    _check_margin(margin, reference.shape[-2:])
    moved = warp(img, f, mode=mode, boundary=boundary)
    actual = as_float64(extract(moved), "extract(moved image)", ndim=(2, 3))
    if actual.shape != reference.shape:
        raise ValueError(f"extract gave shapes {reference.shape} and {actual.shape} for two "
                         f"images of the same shape")
    predicted, mask = compensate(reference, f, stride, mode, sample=sample)
    mask = _predictable_region(mask, margin)
    value = nrmse(predicted, actual, mask, dynamic_range)
    return LatentMotionResult(value, actual, predicted, mask, moved,
                              scale_flow(f, stride, sample=sample))


@dataclass(frozen=True)
class MotionSimilarity:
    """Result of :func:`motion_similarity` (over the ``count`` compared vectors).

    Attributes
    ----------
    epe : float
        Mean end-point error ``mean |a - b|`` (Euclidean, in pixels).
    epe_max : float
        Largest end-point error.
    cosine : float
        Cosine between the two fields as long vectors, ``sum a.b / sqrt(sum |a|^2 sum |b|^2)``;
        NaN when a field is zero everywhere (no direction).
    mean_cosine : float
        Mean per-vector cosine over the vectors that are non-zero in both fields (NaN if none).
    count : int
        Number of vectors compared.
    """

    epe: float
    epe_max: float
    cosine: float
    mean_cosine: float
    count: int


def motion_similarity(flow_a, flow_b, mask=None) -> MotionSimilarity:
    """Compare two flow fields (e.g. input motion scaled down vs feature-space block matching).

    Parameters
    ----------
    flow_a, flow_b : array_like, shape (..., H, W, 2)
        Same shape, ``[..., 0] = dx``, ``[..., 1] = dy``; finite inside the mask.
    mask : array_like of bool, optional
        ``flow_a.shape[:-1]`` or ``(H, W)`` (applied to every leading index); all-False is an
        error.

    Returns
    -------
    MotionSimilarity
        Sums are correctly rounded (``math.fsum``).
    """
    a = as_float64(flow_a, "flow_a")
    b = as_float64(flow_b, "flow_b")
    if a.ndim < 3 or a.shape[-1] != 2:
        raise ValueError(f"flow_a must have shape (..., H, W, 2), got {a.shape}")
    if b.shape != a.shape:
        raise ValueError(f"flow_b must have the shape of flow_a {a.shape}, got {b.shape}")
    sel = np.ones(a.shape[:-1], dtype=bool)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"mask must be a boolean array, got dtype {m.dtype}")
        if m.shape != a.shape[:-1] and m.shape != a.shape[-3:-1]:
            raise ValueError(f"mask must have shape {a.shape[:-1]} or {a.shape[-3:-1]}, "
                             f"got {m.shape}")
        sel = np.broadcast_to(m, a.shape[:-1])
        if not sel.any():
            raise ValueError("mask selects no vector: the similarity of nothing is undefined")
    va, vb = a[sel], b[sel]
    check_finite(va, "flow_a (inside the mask)")
    check_finite(vb, "flow_b (inside the mask)")
    # Scale by powers of two (exact) so products neither overflow (1e160) nor underflow
    # (1e-170): the cosines are invariant to a positive scale of either flow, the errors are
    # computed at one common scale and scaled back.
    sa_, sb_ = _pow2_scale(va), _pow2_scale(vb)
    s = min(sa_, sb_)
    err = np.hypot(va[:, 0] * s - vb[:, 0] * s, va[:, 1] * s - vb[:, 1] * s)
    xa, xb = va * sa_, vb * sb_
    dot = xa[:, 0] * xb[:, 0] + xa[:, 1] * xb[:, 1]
    na = np.hypot(xa[:, 0], xa[:, 1])
    nb = np.hypot(xb[:, 0], xb[:, 1])
    n = len(err)
    sa, sb = _fsum(na * na), _fsum(nb * nb)
    cosine = _fsum(dot) / math.sqrt(sa * sb) if sa > 0 and sb > 0 else math.nan
    # per vector: unit vectors first (a vector far below its flow's largest must not underflow)
    ha, hb = np.hypot(va[:, 0], va[:, 1]), np.hypot(vb[:, 0], vb[:, 1])
    both = (ha > 0) & (hb > 0)
    ua, ub = va[both] / ha[both, None], vb[both] / hb[both, None]
    mean_cos = (_fsum(ua[:, 0] * ub[:, 0] + ua[:, 1] * ub[:, 1]) / int(both.sum())
                if both.any() else math.nan)
    with np.errstate(over="ignore"):  # a true error beyond the float range is inf
        return MotionSimilarity(_fsum(err) / n / s, float(err.max() / s), cosine, mean_cos, n)


def _pow2_scale(v: np.ndarray) -> float:
    """A power of two bringing the largest |v| to [0.5, 1) (1.0 for all-zero ``v``)."""
    m = float(np.abs(v).max()) if v.size else 0.0
    if m == 0.0:
        return 1.0
    return math.ldexp(1.0, min(-math.frexp(m)[1], 1023))  # 2**1024 would overflow


# ----------------------------------------------------------------------------- registry

def _example_block_match(rng):
    """Two 3-channel frames, the second a shifted noisy copy of the first."""
    ref = rng.standard_normal((3, 7, 8))
    cur = np.roll(ref, (1, -1), axis=(1, 2)) + 0.1 * rng.standard_normal((3, 7, 8))
    return (ref, cur), {"block_size": 3, "search_range": 2, "channels": "sum",
                        "boundary": "zeros"}


_OPS = [
    Op(name="block_match", cuda="lmref.cuda:block_match", cpu="lmref.blockmatch:block_match",
       reference="lmref.blockmatch:_block_match_reference",
       example="lmref.blockmatch:_example_block_match",
       notes="outputs (flow, cost); SSD, ties: smallest |d|^2, then dy, then dx; not "
             "differentiable (argmin)"),
]
