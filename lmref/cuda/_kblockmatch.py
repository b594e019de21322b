"""CUDA kernels of :mod:`lmref.cuda.blockmatch` (imported on first use only).

``lmref.blockmatch.block_match``'s scheme on the GPU:

1. ``scan``: per output tile and chunk of displacements (contiguous in tie order), box-filter
   costs without subtractions (identical blocks cost exactly 0, and the rounding error is
   bounded relative to the cost): squared differences summed over the channel group; column
   windows by segment suffix + prefix sums (a thread per halo column); row
   windows by direct sums in shared memory. Each pixel keeps its best cost, the smallest cost
   of any other displacement ("second") and the best displacement's rank in tie order (strict
   ``<`` while scanning in tie order: the earlier displacement keeps a tie).
2. ``merge``: chunks merged in tie order (the CPU's ``_merge``) into the cost and the flow;
   pixels whose two best box costs are within the rounding bound are appended to a list for
3. ``exact``: a fixed grid of blocks, each re-deciding every ``gridDim``-th listed pixel
   (the list's length is read on the device) over every displacement on correctly rounded
   costs (Shewchuk's algorithm, as ``math.fsum`` and the CPU's ``_fsum_into``), the argmin
   being the lexicographic minimum of (cost, rank in tie order) in a fixed tree, so the flow
   is the plain reference's whatever the summation order and the list's order.
"""
import math

from numba import cuda, float64, int64

from lmref.cuda._kcommon import block_max, block_sum

__all__: list[str] = []

MAX_TILE_ROWS = 32  # size of the per-thread (local memory) suffix-sum array: tile rows <= this
PARTIALS = 128  # lmref.blockmatch._PARTIALS


@cuda.jit(device=True)
def pixel(img, c, y, x, boundary):
    """img[c, y, x]; outside the frame 0 (boundary 0, "zeros") or clamped (1, "replicate")."""
    H, W = img.shape[1], img.shape[2]
    if boundary == 0:
        if y < 0 or y >= H or x < 0 or x >= W:
            return 0.0
        return img[c, y, x]
    return img[c, min(max(y, 0), H - 1), min(max(x, 0), W - 1)]


@cuda.jit(device=True)
def sq_diff(cur, ref, c0, c1, y, x, dy, dx, boundary):
    """sum_c (cur[c, y, x] - ref[c, y + dy, x + dx])^2, channels in increasing order."""
    s = 0.0
    for c in range(c0, c1):
        t = pixel(cur, c, y, x, boundary) - pixel(ref, c, y + dy, x + dx, boundary)
        s += t * t
    return s


@cuda.jit
def scan(cur, ref, order, gsize, nchunks, rows, tile_w, boundary, b, best, second, arg,
         n_near):
    """Box-filter pass. Grid (tiles_x, tiles_y, fields * nchunks), 1-D blocks. Dynamic shared
    memory: V (rows x (tile_w + b - 1) column-window sums), then running best, second and
    rank (rows x tile_w each). Writes each chunk's (best, second, rank) to
    ``best/second/arg[field * nchunks + chunk]`` (each (H, W)), and resets ``merge``'s
    counter of near-tied pixels (``merge`` runs after the whole grid, on the same stream)."""
    smem = cuda.shared.array(0, float64)
    H, W = cur.shape[1], cur.shape[2]
    tid = int64(cuda.threadIdx.x)
    if tid == 0 and cuda.blockIdx.x == 0 and cuda.blockIdx.y == 0 and cuda.blockIdx.z == 0:
        n_near[0] = 0
    nt = int64(cuda.blockDim.x)
    task = int64(cuda.blockIdx.z)
    c0 = (task // nchunks) * gsize
    chunk = task % nchunks
    nd = order.shape[0]
    r = b // 2
    y0 = int64(cuda.blockIdx.y) * rows
    x0 = int64(cuda.blockIdx.x) * tile_w
    hw = tile_w + b - 1  # halo columns
    n_out = rows * tile_w
    v = smem[:rows * hw]
    sbest = smem[rows * hw:rows * hw + n_out]
    ssec = smem[rows * hw + n_out:rows * hw + 2 * n_out]
    sarg = smem[rows * hw + 2 * n_out:rows * hw + 3 * n_out]
    for o in range(tid, n_out, nt):
        sbest[o] = math.inf
        ssec[o] = math.inf
        sarg[o] = 0.0
    suf = cuda.local.array(MAX_TILE_ROWS, float64)
    nrows = rows + b - 1  # rows of squared differences under the tile's windows
    for k in range(chunk * nd // nchunks, (chunk + 1) * nd // nchunks):
        dy = order[k, 0]
        dx = order[k, 1]
        # Column windows. Segments of b rows from the tile's top; window y (rows y..y+b-1) is
        # the suffix of its segment plus the prefix of the next one: no subtraction.
        for col in range(tid, hw, nt):
            x = x0 - r + col
            run = 0.0
            for i in range(nrows - 1, -1, -1):
                d = sq_diff(cur, ref, c0, c0 + gsize, y0 - r + i, x, dy, dx, boundary)
                if i % b == b - 1 or i == nrows - 1:
                    run = d
                else:
                    run = d + run
                if i < rows:
                    suf[i] = run
            for y in range(0, rows, b):  # windows that are whole segments
                v[y * hw + col] = suf[y]
            pre = 0.0
            for i in range(b, nrows):
                d = sq_diff(cur, ref, c0, c0 + gsize, y0 - r + i, x, dy, dx, boundary)
                if i % b == 0:
                    pre = d
                else:
                    pre = pre + d
                y = i - b + 1
                if y % b != 0:
                    v[y * hw + col] = suf[y] + pre
        cuda.syncthreads()
        # Row windows (direct, left to right) and each pixel's running best.
        for o in range(tid, n_out, nt):
            base = (o // tile_w) * hw + o % tile_w
            cost = 0.0
            for j in range(b):
                cost += v[base + j]
            old = sbest[o]
            if cost < old:
                ssec[o] = old
                sbest[o] = cost
                sarg[o] = k
            else:
                ssec[o] = min(ssec[o], cost)
        cuda.syncthreads()
    for o in range(tid, n_out, nt):
        y = y0 + o // tile_w
        x = x0 + o % tile_w
        if y < H and x < W:
            best[task, y, x] = sbest[o]
            second[task, y, x] = ssec[o]
            arg[task, y, x] = sarg[o]


@cuda.jit
def merge(best, second, arg, order, nchunks, tol, need_exact, cost, flow, near, n_near):
    """Merge the chunks of each field in tie order into ``cost`` and ``flow`` (dx, dy); list
    near-tied pixels (flat indices) in ``near`` (count in ``n_near[0]``: their order varies,
    the result does not). Grid (W, H, fields)."""
    x, y = cuda.grid(2)
    f = int64(cuda.blockIdx.z)
    H, W = cost.shape[1], cost.shape[2]
    if x >= W or y >= H:
        return
    t0 = f * nchunks
    m = best[t0, y, x]
    sec = second[t0, y, x]
    k = arg[t0, y, x]
    for ch in range(1, nchunks):
        bc = best[t0 + ch, y, x]
        if bc < m:  # strict: an earlier chunk keeps a tie
            sec = min(m, second[t0 + ch, y, x])
            k = arg[t0 + ch, y, x]
            m = bc
        else:
            sec = min(sec, bc)
    cost[f, y, x] = m
    kk = int64(k)
    flow[f, y, x, 0] = order[kk, 1]
    flow[f, y, x, 1] = order[kk, 0]
    if need_exact and m > 0.0 and sec <= m * (1.0 + tol):
        near[cuda.atomic.add(n_near, 0, 1)] = (f * H + y) * W + x


@cuda.jit(device=True)
def fsum_into(partials, n, x):
    """Add ``x`` to the non-overlapping partials (lmref.blockmatch._fsum_into)."""
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


@cuda.jit(device=True)
def fsum_round(partials, n):
    """Correctly rounded value of the partials (lmref.blockmatch._fsum_round)."""
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


@cuda.jit(device=True)
def exact_cost(cur, ref, c0, c1, y, x, dy, dx, boundary, b, partials):
    """Correctly rounded SSD of one block pair (the CPU's ``_exact_block_cost``)."""
    r = b // 2
    n = 0
    for c in range(c0, c1):
        for i in range(-r, r + 1):
            for j in range(-r, r + 1):
                t = pixel(cur, c, y + i, x + j, boundary) - \
                    pixel(ref, c, y + dy + i, x + dx + j, boundary)
                # fma(t, t, 0) is the rounded product; a plain t * t could be fused into
                # fsum's first addition by the compiler, and the sum would not be exact
                n = fsum_into(partials, n, cuda.fma(t, t, 0.0))
    return fsum_round(partials, n)


@cuda.jit
def exact(cur, ref, order, gsize, boundary, b, near, n_near, cost, flow):
    """Re-decide the listed pixels ``near[:n_near[0]]`` on exact costs over all
    displacements, block ``blockIdx.x`` taking every ``gridDim.x``-th of them (the count is
    read on the device: no host round trip). 1-D blocks of a power-of-two size; dynamic
    shared memory: 2 doubles per thread."""
    smem = cuda.shared.array(0, float64)
    tid = int64(cuda.threadIdx.x)
    nt = int64(cuda.blockDim.x)
    H, W = cost.shape[1], cost.shape[2]
    nd = order.shape[0]
    scost = smem[:nt]
    srank = smem[nt:2 * nt]
    partials = cuda.local.array(PARTIALS, float64)
    for item in range(int64(cuda.blockIdx.x), n_near[0], int64(cuda.gridDim.x)):
        p = near[item]
        x = p % W
        y = (p // W) % H
        f = p // (H * W)
        c0 = f * gsize
        bc = math.inf
        bk = float64(nd)
        for k in range(tid, nd, nt):  # increasing k: strict < keeps the first in tie order
            e = exact_cost(cur, ref, c0, c0 + gsize, y, x, order[k, 0], order[k, 1],
                           boundary, b, partials)
            if e < bc:
                bc = e
                bk = k
        scost[tid] = bc
        srank[tid] = bk
        cuda.syncthreads()
        step = nt // 2
        while step > 0:  # lexicographic minimum of (cost, rank): a fixed tree
            if tid < step:
                oc = scost[tid + step]
                ok = srank[tid + step]
                if oc < scost[tid] or (oc == scost[tid] and ok < srank[tid]):
                    scost[tid] = oc
                    srank[tid] = ok
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            cost[f, y, x] = scost[0]
            kk = int64(srank[0])
            flow[f, y, x, 0] = order[kk, 1]
            flow[f, y, x, 1] = order[kk, 0]
        cuda.syncthreads()  # shared memory is reused by the next pixel


@cuda.jit
def stats(ref, cur, out):
    """Per block: [number of non-finite values, max |finite value|, 1 if a finite value is
    not an integer] of flat ``ref`` (blockIdx.y 0) or ``cur`` (1) into out[blockIdx.y,
    blockIdx.x]: both frames in one launch. Power-of-two 1-D blocks; dynamic shared memory:
    one double per thread."""
    smem = cuda.shared.array(0, float64)
    tid = int64(cuda.threadIdx.x)
    nt = int64(cuda.blockDim.x)
    img = ref if cuda.blockIdx.y == 0 else cur
    bad = 0.0
    big = 0.0
    frac = 0.0
    start = int64(cuda.blockIdx.x) * nt + tid
    for i in range(start, img.shape[0], nt * int64(cuda.gridDim.x)):
        v = img[i]
        if not math.isfinite(v):
            bad += 1.0
        else:
            big = max(big, abs(v))
            if v != v // 1.0:  # v // 1.0 is floor(v) as a float: no int overflow
                frac = 1.0
    fr = cuda.blockIdx.y
    out[fr, cuda.blockIdx.x, 0] = block_sum(bad, smem, tid, nt)
    out[fr, cuda.blockIdx.x, 1] = block_max(big, smem, tid, nt)
    out[fr, cuda.blockIdx.x, 2] = block_max(frac, smem, tid, nt)
