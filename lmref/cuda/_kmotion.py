"""CUDA kernels of :mod:`lmref.cuda.motion` (imported on first use only).

The device functions mirror ``lmref.motion._wrap_coord``, ``_bilinear_axis``,
``_nearest_axis`` and ``_pixel_taps`` line by line (CPU ``@jit`` functions cannot be called
from CUDA kernels: ``np.fmod`` has no CUDA lowering), so both paths pick the same corners,
weights and one-sided slopes; the tests hold them equal.
"""
import math

from numba import cuda, float64, int64

__all__: list[str] = []

NAN_TAP = -2  # lmref.motion._NAN_TAP: the pixel's flow is not finite
OUT_TAP = -1  # lmref.motion._OUT_TAP: the corner is not read


@cuda.jit(device=True)
def wrap_coord(p, size):
    q = math.fmod(p, float64(size))
    if q < 0.0:
        q += size
    if q >= size:
        q -= size
    return q


@cuda.jit(device=True)
def bilinear_axis(p, size, boundary):
    """``(i0, i1, w0, w1, in0, in1, dq)`` of one axis (see lmref.motion._bilinear_axis)."""
    if boundary == 0:  # zeros
        if p < -1.0 or p >= size:
            return 0, 0, 0.0, 0.0, False, False, 0.0
        f = math.floor(p)
        i0 = int64(f)
        t = p - f
        return i0, i0 + 1, 1.0 - t, t, i0 >= 0, i0 + 1 < size, 1.0
    if boundary == 1:  # border: clamp the coordinate; right-sided slope 0 from size-1 on
        dq = 1.0 if (p >= 0.0 and p < size - 1.0) else 0.0
        q = min(max(p, 0.0), size - 1.0)
        f = math.floor(q)
        i0 = int64(f)
        return i0, min(i0 + 1, size - 1), 1.0 - (q - f), q - f, True, True, dq
    q = wrap_coord(p, size)
    f = math.floor(q)
    i0 = int64(f)
    i1 = i0 + 1
    if i1 >= size:
        i1 = 0
    return i0, i1, 1.0 - (q - f), q - f, True, True, 1.0


@cuda.jit(device=True)
def nearest_axis(p, size, boundary):
    """``(index, inside)`` with ``index = floor(p + 0.5)`` (see lmref.motion._nearest_axis)."""
    if boundary == 0:
        if p < -0.5 or p >= size - 0.5:
            return int64(0), False
        return int64(math.floor(p + 0.5)), True
    if boundary == 1:
        q = min(max(p, 0.0), size - 1.0)
        return int64(math.floor(q + 0.5)), True
    i = int64(math.floor(wrap_coord(p, size) + 0.5))
    if i >= size:
        i = 0
    return i, True


@cuda.jit(device=True)
def pixel_taps(px, py, H, W, mode, boundary, idx, w, ax, ay):
    """The 4 corners TL, TR, BL, BR of one output pixel: flat source index (or OUT_TAP /
    NAN_TAP), weight, and d(weight)/dpx, d(weight)/dpy (see lmref.motion._pixel_taps)."""
    for k in range(4):
        idx[k] = OUT_TAP
        w[k] = 0.0
        ax[k] = 0.0
        ay[k] = 0.0
    if not (math.isfinite(px) and math.isfinite(py)):
        idx[0] = NAN_TAP
        return
    if mode == 1:
        j, okx = nearest_axis(px, W, boundary)
        i, oky = nearest_axis(py, H, boundary)
        if okx and oky:
            idx[0] = i * W + j
            w[0] = 1.0
        return
    j0, j1, wx0, wx1, inx0, inx1, dqx = bilinear_axis(px, W, boundary)
    i0, i1, wy0, wy1, iny0, iny1, dqy = bilinear_axis(py, H, boundary)
    if iny0 and inx0:
        idx[0] = i0 * W + j0
    if iny0 and inx1:
        idx[1] = i0 * W + j1
    if iny1 and inx0:
        idx[2] = i1 * W + j0
    if iny1 and inx1:
        idx[3] = i1 * W + j1
    w[0] = wy0 * wx0
    w[1] = wy0 * wx1
    w[2] = wy1 * wx0
    w[3] = wy1 * wx1
    ax[0] = -wy0 * dqx
    ax[1] = wy0 * dqx
    ax[2] = -wy1 * dqx
    ax[3] = wy1 * dqx
    ay[0] = -wx0 * dqy
    ay[1] = -wx1 * dqy
    ay[2] = wx0 * dqy
    ay[3] = wx1 * dqy


@cuda.jit
def warp_forward(x, flow, out, C, per, mode, boundary):
    """x, out: (N*C, H*W); flow: (Nf, H, W, 2). Grid (W, H, N * chunks): one thread per
    output pixel and chunk of ``per`` channels (the taps are computed once per pixel and
    chunk; enough chunks to fill the GPU)."""
    xx, y = cuda.grid(2)
    chunks = (C + per - 1) // per
    n = int64(cuda.blockIdx.z) // chunks
    c0 = (int64(cuda.blockIdx.z) % chunks) * per
    H, W = flow.shape[1], flow.shape[2]
    if xx >= W or y >= H:
        return
    fn = n if flow.shape[0] > 1 else 0
    idx = cuda.local.array(4, int64)
    w = cuda.local.array(4, float64)
    ax = cuda.local.array(4, float64)
    ay = cuda.local.array(4, float64)
    pixel_taps(xx + flow[fn, y, xx, 0], y + flow[fn, y, xx, 1], H, W, mode, boundary,
               idx, w, ax, ay)
    q = y * W + xx
    for c in range(c0, min(c0 + per, C)):
        plane = n * C + c
        if idx[0] == NAN_TAP:
            out[plane, q] = math.nan
            continue
        s = 0.0
        for k in range(4):
            if idx[k] >= 0 and w[k] != 0.0:
                s += w[k] * x[plane, idx[k]]
        out[plane, q] = s


@cuda.jit
def warp_backward(g, x, flow, grad_x, grad_flow, N, C, mode, boundary):
    """g, x, grad_x: (N*C, H*W); flow, grad_flow: (Nf, H, W, 2). Grid (W, H, Nf).

    grad_flow is a per-pixel sum over (n, c) in increasing order (as the CPU kernel);
    grad_x is scattered with atomic adds, so its rounding may vary between runs.
    """
    xx, y = cuda.grid(2)
    fn = int64(cuda.blockIdx.z)
    H, W = flow.shape[1], flow.shape[2]
    if xx >= W or y >= H:
        return
    idx = cuda.local.array(4, int64)
    w = cuda.local.array(4, float64)
    ax = cuda.local.array(4, float64)
    ay = cuda.local.array(4, float64)
    pixel_taps(xx + flow[fn, y, xx, 0], y + flow[fn, y, xx, 1], H, W, mode, boundary,
               idx, w, ax, ay)
    if idx[0] == NAN_TAP:
        grad_flow[fn, y, xx, 0] = math.nan
        grad_flow[fn, y, xx, 1] = math.nan
        return
    n_lo = fn  # a batched flow serves one image, a shared flow serves all N
    n_hi = fn + 1
    if flow.shape[0] == 1:
        n_lo = 0
        n_hi = N
    q = y * W + xx
    sx = 0.0
    sy = 0.0
    for n in range(n_lo, n_hi):
        for c in range(C):
            plane = n * C + c
            gv = g[plane, q]
            vx = 0.0
            vy = 0.0
            for k in range(4):
                if idx[k] >= 0:
                    v = x[plane, idx[k]]
                    vx += ax[k] * v
                    vy += ay[k] * v
                    if w[k] != 0.0:
                        cuda.atomic.add(grad_x, (plane, idx[k]), w[k] * gv)
            sx += gv * vx
            sy += gv * vy
    grad_flow[fn, y, xx, 0] = sx
    grad_flow[fn, y, xx, 1] = sy
