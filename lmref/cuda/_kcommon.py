"""Kernels and device functions shared by the CUDA families (imported on first use only).

No ``fastmath`` anywhere. NVVM contracts ``a * b + c`` into fused multiply-adds by default,
so float results agree with the CPU oracle to rounding (documented tolerances), not bitwise.
"""
from numba import cuda

__all__: list[str] = []


@cuda.jit
def fill_zero(out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = 0.0


# Cast any real dtype and any strides to a fresh C-contiguous float64 array, one kernel per
# rank (the ranks lmref's ops take): a flat grid-stride loop unravelled in C order.
@cuda.jit
def cast1d(src, dst):
    for i in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[i] = src[i]


@cuda.jit
def cast2d(src, dst):
    n1 = dst.shape[1]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        dst[i // n1, i % n1] = src[i // n1, i % n1]


@cuda.jit
def cast3d(src, dst):
    n1, n2 = dst.shape[1], dst.shape[2]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        a, r = i // (n1 * n2), i % (n1 * n2)
        dst[a, r // n2, r % n2] = src[a, r // n2, r % n2]


@cuda.jit
def cast4d(src, dst):
    n1, n2, n3 = dst.shape[1], dst.shape[2], dst.shape[3]
    for i in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        a, r = i // (n1 * n2 * n3), i % (n1 * n2 * n3)
        b, r = r // (n2 * n3), r % (n2 * n3)
        dst[a, b, r // n3, r % n3] = src[a, b, r // n3, r % n3]


@cuda.jit(device=True)
def block_sum(value, smem, tid, nthreads):
    """Sum ``value`` over the block in a fixed tree order (deterministic); ``nthreads`` is a
    power of two and ``smem`` holds at least ``nthreads`` doubles. Every thread must call it;
    all threads get the total."""
    smem[tid] = value
    cuda.syncthreads()
    step = nthreads // 2
    while step > 0:
        if tid < step:
            smem[tid] += smem[tid + step]
        cuda.syncthreads()
        step //= 2
    total = smem[0]
    cuda.syncthreads()  # smem may be reused right after
    return total


@cuda.jit(device=True)
def block_max(value, smem, tid, nthreads):
    """Maximum of ``value`` over the block (same contract as :func:`block_sum`)."""
    smem[tid] = value
    cuda.syncthreads()
    step = nthreads // 2
    while step > 0:
        if tid < step:
            smem[tid] = max(smem[tid], smem[tid + step])
        cuda.syncthreads()
        step //= 2
    total = smem[0]
    cuda.syncthreads()
    return total
