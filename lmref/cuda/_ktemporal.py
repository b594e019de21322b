"""CUDA kernels of :mod:`lmref.cuda.temporal` (imported on first use only).

One thread per output element, each sum in the CPU kernels' order (channels 0..C-1 for the
normalisation and the forward, displacements p = 0..P*P-1 for both gradients), written as
gathers, so results are deterministic and equal to ``lmref.temporal`` to rounding (FMA).
"""
import math

from numba import cuda, int64

__all__: list[str] = []


@cuda.jit
def l2_normalize(x, eps, out):
    """``out = x / sqrt(sum_c x**2 + eps)``; x, out (N, C, H, W). Grid (W, H, N)."""
    col, row = cuda.grid(2)
    i = int64(cuda.blockIdx.z)
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    if col >= W or row >= H:
        return
    norm = 0.0
    for ch in range(C):
        norm += x[i, ch, row, col] * x[i, ch, row, col]
    norm = math.sqrt(norm + eps)
    for ch in range(C):
        out[i, ch, row, col] = x[i, ch, row, col] / norm


@cuda.jit
def l2_normalize_backward(g, x, eps, gx):
    """``gx = (g - y * sum_c(g * y)) / s`` with ``y = x / s``, ``s = sqrt(sum_c x**2 + eps)``."""
    col, row = cuda.grid(2)
    i = int64(cuda.blockIdx.z)
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    if col >= W or row >= H:
        return
    norm = 0.0
    for ch in range(C):
        norm += x[i, ch, row, col] * x[i, ch, row, col]
    norm = math.sqrt(norm + eps)
    dot = 0.0
    for ch in range(C):
        dot += g[i, ch, row, col] * (x[i, ch, row, col] / norm)
    for ch in range(C):
        gx[i, ch, row, col] = (g[i, ch, row, col] - (x[i, ch, row, col] / norm) * dot) / norm


@cuda.jit(device=True)
def displacement(p, patch, dilation):
    """Row and column displacement of output channel ``p`` (row displacement slowest)."""
    r = patch // 2
    return (p // patch - r) * dilation, (p % patch - r) * dilation


@cuda.jit
def local_multiply(a, b, patch, dilation, divisor, out):
    """out[n, p, h, w] = sum_c a[n, c, h, w] b[n, c, h + dh, w + dw] / divisor (zero where
    b is outside the frame). Grid (W, H, N * P*P)."""
    col, row = cuda.grid(2)
    npp = patch * patch
    i = int64(cuda.blockIdx.z) // npp
    p = int64(cuda.blockIdx.z) % npp
    C, H, W = a.shape[1], a.shape[2], a.shape[3]
    if col >= W or row >= H:
        return
    dh, dw = displacement(p, patch, dilation)
    s = 0.0
    if 0 <= row + dh < H and 0 <= col + dw < W:
        for ch in range(C):
            s += a[i, ch, row, col] * b[i, ch, row + dh, col + dw]
    if divisor != 1.0:
        s /= divisor
    out[i, p, row, col] = s


@cuda.jit
def local_multiply_backward(g, a, b, patch, dilation, divisor, ga, gb):
    """Both gradients as gathers over p = 0..P*P-1 (the CPU scatter's order for each element):
    ga[n,c,h,w] = sum_p g'[n,p,h,w] b[n,c,h+dh,w+dw], gb[n,c,h,w] = sum_p g'[n,p,h-dh,w-dw]
    a[n,c,h-dh,w-dw], with g' = g / divisor. Grid (W, H, N * C)."""
    col, row = cuda.grid(2)
    C, H, W = a.shape[1], a.shape[2], a.shape[3]
    i = int64(cuda.blockIdx.z) // C
    ch = int64(cuda.blockIdx.z) % C
    if col >= W or row >= H:
        return
    sa = 0.0
    sb = 0.0
    for p in range(patch * patch):
        dh, dw = displacement(p, patch, dilation)
        if 0 <= row + dh < H and 0 <= col + dw < W:
            sa += (g[i, p, row, col] / divisor) * b[i, ch, row + dh, col + dw]
        if 0 <= row - dh < H and 0 <= col - dw < W:
            sb += (g[i, p, row - dh, col - dw] / divisor) * a[i, ch, row - dh, col - dw]
    ga[i, ch, row, col] = sa
    gb[i, ch, row, col] = sb
