"""CUDA kernels of :mod:`lmref.cuda.layers` (imported on first use only).

``max_window`` mirrors ``lmref.layers._max_window`` (PyTorch's rule: first maximum in
row-major window order, last NaN, padding never wins, index of the first in-frame element
for an all ``-inf`` window, -1 for a window without in-frame elements). The backward is a
gather: every input pixel re-decides the maximum of each window covering it and sums the
gradients of the windows that selected it, in the CPU scatter's (row-major output) order,
so it is deterministic and equal to the CPU bit for bit (only additions: nothing to fuse).
"""
import math

from numba import cuda, int64

__all__: list[str] = []


@cuda.jit(device=True)
def max_window(plane, p, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    """(value, flat index) of the max over window (oh, ow) of planes[p]; index -1: empty."""
    H, W = plane.shape[1], plane.shape[2]
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + (kh - 1) * dh + 1, H)
    w1 = min(w0 + (kw - 1) * dw + 1, W)
    while h0 < 0:
        h0 += dh
    while w0 < 0:
        w0 += dw
    if h0 >= h1 or w0 >= w1:
        return -math.inf, int64(-1)
    best = -math.inf
    idx = h0 * W + w0
    for ih in range(h0, h1, dh):
        for iw in range(w0, w1, dw):
            v = plane[p, ih, iw]
            if v > best or math.isnan(v):
                best = v
                idx = ih * W + iw
    return best, idx


@cuda.jit
def max_pool(planes, out, kh, kw, sh, sw, ph, pw, dh, dw):
    """out[p, oh, ow] = max over the window. Grid (OW, OH, planes)."""
    ow, oh = cuda.grid(2)
    p = int64(cuda.blockIdx.z)
    if ow >= out.shape[2] or oh >= out.shape[1]:
        return
    out[p, oh, ow] = max_window(planes, p, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)[0]


@cuda.jit
def max_pool_backward(grad, planes, gin, kh, kw, sh, sw, ph, pw, dh, dw):
    """gin[p, y, x] = sum of grad[p, oh, ow] over the windows (row-major order) whose selected
    element is (y, x), each window's maximum re-decided here (one launch, no index table).
    Grid (W, H, planes)."""
    x, y = cuda.grid(2)
    p = int64(cuda.blockIdx.z)
    H, W = gin.shape[1], gin.shape[2]
    OH, OW = grad.shape[1], grad.shape[2]
    if x >= W or y >= H:
        return
    me = y * W + x
    s = 0.0
    for i in range(kh - 1, -1, -1):  # kernel row descending = output row ascending
        t = y + ph - i * dh
        if t < 0 or t % sh != 0 or t // sh >= OH:
            continue
        oh = t // sh
        for j in range(kw - 1, -1, -1):
            u = x + pw - j * dw
            if u < 0 or u % sw != 0 or u // sw >= OW:
                continue
            ow = u // sw
            if max_window(planes, p, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)[1] == me:
                s += grad[p, oh, ow]
    gin[p, y, x] = s
