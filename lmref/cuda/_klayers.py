"""CUDA kernels of :mod:`lmref.cuda.layers` (imported on first use only).

Windows come as the CPU's exact per-axis tables (``lmref.layers._Geometry.windows``): window
``o`` reads the in-frame taps ``range(first[o], stop[o], step)``, so a huge kernel, stride,
padding or dilation costs nothing and never overflows on the device (the first in-frame tap
is found by division on the host, not by stepping to it: issue 18 item 0).

``max_window`` mirrors ``lmref.layers``'s max kernel (PyTorch's rule: first maximum in
row-major window order, last NaN, padding never wins, index of the first in-frame element
for an all ``-inf`` window, -1 for a window without in-frame elements). The backward is a
gather: every input pixel re-decides the maximum of each window covering it (the windows
``lo[y] <= oh < hi[y]``, ``lo[x] <= ow < hi[x]`` of the host's cover tables) and sums the
gradients of the windows that selected it in row-major output order, the CPU scatter's
order, so it is deterministic and equal to the CPU bit for bit (only additions).
"""
import math

from numba import cuda, int64

__all__: list[str] = []


@cuda.jit(device=True)
def max_window(plane, p, oh, ow, rf, rs, cf, cs, dh, dw):
    """(value, flat index) of the max over window (oh, ow) of planes[p]; index -1: empty."""
    W = plane.shape[2]
    if rf[oh] >= rs[oh] or cf[ow] >= cs[ow]:
        return -math.inf, int64(-1)
    best = -math.inf
    idx = rf[oh] * W + cf[ow]
    for ih in range(rf[oh], rs[oh], dh):
        for iw in range(cf[ow], cs[ow], dw):
            v = plane[p, ih, iw]
            if v > best or math.isnan(v):
                best = v
                idx = ih * W + iw
    return best, idx


@cuda.jit
def max_pool(planes, out, rf, rs, cf, cs, dh, dw):
    """out[p, oh, ow] = max over the window. Grid (OW, OH, planes)."""
    ow, oh = cuda.grid(2)
    p = int64(cuda.blockIdx.z)
    if ow >= out.shape[2] or oh >= out.shape[1]:
        return
    out[p, oh, ow] = max_window(planes, p, oh, ow, rf, rs, cf, cs, dh, dw)[0]


@cuda.jit
def max_pool_backward(grad, planes, gin, rf, rs, cf, cs, dh, dw, rlo, rhi, clo, chi):
    """gin[p, y, x] = sum of grad[p, oh, ow] over the windows (row-major order) whose selected
    element is (y, x), each window's maximum re-decided here (one launch, no index table).
    Grid (W, H, planes)."""
    x, y = cuda.grid(2)
    p = int64(cuda.blockIdx.z)
    H, W = gin.shape[1], gin.shape[2]
    if x >= W or y >= H:
        return
    me = y * W + x
    s = 0.0
    for oh in range(rlo[y], rhi[y]):
        for ow in range(clo[x], chi[x]):
            if max_window(planes, p, oh, ow, rf, rs, cf, cs, dh, dw)[1] == me:
                s += grad[p, oh, ow]
    gin[p, y, x] = s
