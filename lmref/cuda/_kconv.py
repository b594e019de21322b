"""CUDA kernels of :mod:`lmref.cuda.conv` (imported on first use only).

Padding never materialises a padded copy of the input: per-axis index maps send each padded
coordinate to its source row/column (-1: a zero), which covers every ``padding_mode``
("zeros", "circular", "reflect", "replicate") with the same kernels. The gradient of the
input gathers over the inverse maps (CSR lists of the padded positions of each source pixel).

* ``conv2d_tiled``: direct convolution with shared-memory tiling. A block computes a tile of
  ``blockDim.y x (PX * blockDim.x)`` output pixels for ``CB`` output channels of one group;
  each thread holds ``PX x CB`` accumulators in registers, so a kernel tap costs ``PX + CB``
  shared-memory loads for ``PX * CB`` fused multiply-adds (the loads, not the FP64 units,
  bound a thread with fewer). Input tiles (with halo) of ``ci_chunk`` channels and their
  weights are staged in dynamic shared memory.
* ``conv2d_direct``: one thread per output, global reads: the fallback when a tile does not
  fit in shared memory (huge kernels or dilations).
* ``conv2d_grad_input``: gather per input pixel; ``conv2d_grad_weight``: one block per
  (output channel, input channel) reducing over (n, y, x) in a fixed tree (deterministic);
  ``conv2d_grad_bias``: the same reduction of ``grad_out``.

Sums run over input channel, kernel row, kernel column (bias added last); results equal the
CPU's to rounding.
"""
from numba import cuda, float64, int64

from lmref.cuda._kcommon import block_sum

__all__: list[str] = []

CB = 8  # output channels per thread in conv2d_tiled
PX = 4  # output columns per thread in conv2d_tiled
CB_PX = CB * PX  # (a local array's size must be a plain global constant)
TAPS = 9  # kernel taps reduced per pass in conv2d_grad_weight (a 3 x 3 kernel in one)


@cuda.jit
def conv2d_tiled(x, w, bias, rmap, cmap, out, sh, sw, dh, dw, groups, co_blocks, ci_chunk):
    """Grid (tiles_x, tiles_y, N * groups * co_blocks), 2-D blocks; a tile is blockDim.y rows
    x PX * blockDim.x columns of outputs (thread (tx, ty) owns columns tx + j * blockDim.x, so
    warps read consecutive shared-memory words) for CB output channels. Dynamic shared
    memory: ci_chunk input tiles, then CB x ci_chunk x KH x KW weights."""
    smem = cuda.shared.array(0, float64)
    cout, cin_g, KH, KW = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    Ho, Wo = out.shape[2], out.shape[3]
    Hp, Wp = rmap.shape[0], cmap.shape[0]
    cout_g = cout // groups
    bx, by = int64(cuda.blockDim.x), int64(cuda.blockDim.y)
    tx, ty = int64(cuda.threadIdx.x), int64(cuda.threadIdx.y)
    tid = ty * bx + tx
    nthr = bx * by
    z = int64(cuda.blockIdx.z)
    cob = z % co_blocks
    grp = (z // co_blocks) % groups
    n = z // (co_blocks * groups)
    co0 = grp * cout_g + cob * CB
    nco = min(CB, cout_g - cob * CB)
    oy = int64(cuda.blockIdx.y) * by + ty
    ox0 = int64(cuda.blockIdx.x) * bx * PX + tx  # first of this thread's PX columns
    tih = (by - 1) * sh + (KH - 1) * dh + 1
    tiw = (bx * PX - 1) * sw + (KW - 1) * dw + 1
    tsz = tih * tiw
    py0 = int64(cuda.blockIdx.y) * by * sh
    px0 = int64(cuda.blockIdx.x) * bx * PX * sw
    ntaps = KH * KW
    wofs = ci_chunk * tsz
    acc = cuda.local.array(CB_PX, float64)  # acc[k * PX + j]: channel co0 + k, column j
    xv = cuda.local.array(PX, float64)
    for k in range(CB_PX):
        acc[k] = 0.0
    for cs in range(0, cin_g, ci_chunk):
        nci = min(ci_chunk, cin_g - cs)
        for e in range(tid, nci * tsz, nthr):  # input tiles through the padding maps
            cc = e // tsz
            u = (e % tsz) // tiw
            v = e % tiw
            val = 0.0
            if py0 + u < Hp and px0 + v < Wp:
                sy = rmap[py0 + u]
                sx = cmap[px0 + v]
                if sy >= 0 and sx >= 0:
                    val = x[n, grp * cin_g + cs + cc, sy, sx]
            smem[e] = val
        for e in range(tid, CB * nci * ntaps, nthr):  # weights [k, cc, ky, kx]
            k = e // (nci * ntaps)
            t = e % (nci * ntaps)
            val = 0.0
            if k < nco:
                val = w[co0 + k, cs + t // ntaps, (t % ntaps) // KW, t % KW]
            smem[wofs + e] = val
        cuda.syncthreads()
        if oy < Ho:
            for cc in range(nci):
                for ky in range(KH):
                    row = cc * tsz + (ty * sh + ky * dh) * tiw + tx * sw
                    for kx in range(KW):
                        for j in range(PX):  # PX + CB shared loads for PX * CB FMAs
                            xv[j] = smem[row + j * bx * sw + kx * dw]
                        t = (cc * KH + ky) * KW + kx
                        for k in range(CB):
                            wv = smem[wofs + k * nci * ntaps + t]
                            for j in range(PX):
                                acc[k * PX + j] += xv[j] * wv
        cuda.syncthreads()
    if oy < Ho:  # constant trip counts below keep acc in registers (no dynamic indexing)
        for j in range(PX):
            ox = ox0 + j * bx
            if ox < Wo:
                for k in range(CB):
                    if k < nco:
                        out[n, co0 + k, oy, ox] = acc[k * PX + j] + bias[co0 + k]


@cuda.jit
def conv2d_direct(x, w, bias, rmap, cmap, out, sh, sw, dh, dw, groups):
    """Fallback: one thread per output pixel. Grid (Wo, Ho, N * Cout)."""
    ox, oy = cuda.grid(2)
    cout, cin_g, KH, KW = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    Ho, Wo = out.shape[2], out.shape[3]
    n = int64(cuda.blockIdx.z) // cout
    co = int64(cuda.blockIdx.z) % cout
    if ox >= Wo or oy >= Ho:
        return
    c_base = (co // (cout // groups)) * cin_g
    acc = 0.0
    for ci in range(cin_g):
        for ky in range(KH):
            sy = rmap[oy * sh + ky * dh]
            if sy < 0:
                continue
            for kx in range(KW):
                sx = cmap[ox * sw + kx * dw]
                if sx >= 0:
                    acc += x[n, c_base + ci, sy, sx] * w[co, ci, ky, kx]
    out[n, co, oy, ox] = acc + bias[co]


@cuda.jit
def conv2d_grad_input(g, w, rptr, ridx, cptr, cidx, gx, sh, sw, dh, dw, groups):
    """grad_x[n, c, y, x] = sum over the padded positions (py, px) of (y, x) and the taps
    that read them of g[n, co, oy, ox] * w[co, c % cin_g, ky, kx]. Grid (W, H, N * Cin)."""
    xx, y = cuda.grid(2)
    cin = gx.shape[1]
    H, W = gx.shape[2], gx.shape[3]
    cout, cin_g, KH, KW = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    Ho, Wo = g.shape[2], g.shape[3]
    n = int64(cuda.blockIdx.z) // cin
    c = int64(cuda.blockIdx.z) % cin
    if xx >= W or y >= H:
        return
    cout_g = cout // groups
    grp = c // cin_g
    ci = c % cin_g
    acc = 0.0
    for a in range(rptr[y], rptr[y + 1]):
        py = ridx[a]
        for bb in range(cptr[xx], cptr[xx + 1]):
            px = cidx[bb]
            for co in range(grp * cout_g, (grp + 1) * cout_g):
                for ky in range(KH):
                    ty = py - ky * dh
                    if ty < 0 or ty % sh != 0 or ty // sh >= Ho:
                        continue
                    oy = ty // sh
                    for kx in range(KW):
                        tx = px - kx * dw
                        if tx < 0 or tx % sw != 0 or tx // sw >= Wo:
                            continue
                        acc += g[n, co, oy, tx // sw] * w[co, ci, ky, kx]
    gx[n, c, y, xx] = acc


@cuda.jit
def conv2d_grad_weight(g, x, rmap, cmap, gw, sh, sw, dh, dw, groups):
    """gw[co, ci, ky, kx] = sum_{n, oy, ox} g[n, co, oy, ox] x_padded[n, c, oy sh + ky dh,
    ox sw + kx dw]. Grid (cin_g, Cout), 1-D power-of-two blocks; dynamic shared memory: TAPS
    doubles per thread. Taps are reduced TAPS at a time: per-thread partial sums in
    registers, then one fixed tree over the block for all of them (deterministic)."""
    smem = cuda.shared.array(0, float64)
    tid = int64(cuda.threadIdx.x)
    nthr = int64(cuda.blockDim.x)
    ci = int64(cuda.blockIdx.x)
    co = int64(cuda.blockIdx.y)
    cout, cin_g, KH, KW = gw.shape[0], gw.shape[1], gw.shape[2], gw.shape[3]
    N, Ho, Wo = g.shape[0], g.shape[2], g.shape[3]
    c = (co // (cout // groups)) * cin_g + ci
    acc = cuda.local.array(TAPS, float64)
    for t0 in range(0, KH * KW, TAPS):
        nt = min(TAPS, KH * KW - t0)
        for j in range(TAPS):
            acc[j] = 0.0
        for p in range(tid, N * Ho * Wo, nthr):
            n = p // (Ho * Wo)
            oy = (p // Wo) % Ho
            ox = p % Wo
            gv = g[n, co, oy, ox]
            for j in range(TAPS):  # constant trip count: acc stays in registers
                if j < nt:
                    ky = (t0 + j) // KW
                    kx = (t0 + j) % KW
                    sy = rmap[oy * sh + ky * dh]
                    sx = cmap[ox * sw + kx * dw]
                    if sy >= 0 and sx >= 0:
                        acc[j] += gv * x[n, c, sy, sx]
        for j in range(TAPS):
            if j < nt:
                smem[j * nthr + tid] = acc[j]
        cuda.syncthreads()
        step = nthr // 2
        while step > 0:
            if tid < step:
                for j in range(nt):
                    smem[j * nthr + tid] += smem[j * nthr + tid + step]
            cuda.syncthreads()
            step //= 2
        for j in range(tid, nt, nthr):
            gw[co, ci, (t0 + j) // KW, (t0 + j) % KW] = smem[j * nthr]
        cuda.syncthreads()


@cuda.jit
def conv2d_grad_bias(g, gb):
    """gb[co] = sum_{n, y, x} g[n, co, y, x]. Grid (Cout,), 1-D power-of-two blocks."""
    smem = cuda.shared.array(0, float64)
    tid = int64(cuda.threadIdx.x)
    nthr = int64(cuda.blockDim.x)
    co = int64(cuda.blockIdx.x)
    N, Ho, Wo = g.shape[0], g.shape[2], g.shape[3]
    acc = 0.0
    for p in range(tid, N * Ho * Wo, nthr):
        acc += g[p // (Ho * Wo), co, (p // Wo) % Ho, p % Wo]
    total = block_sum(acc, smem, tid, nthr)
    if tid == 0:
        gb[co] = total
