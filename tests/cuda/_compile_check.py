"""Type-check and lower every lmref.cuda kernel for a real GPU, without a GPU.

The simulator runs kernels as Python, so it cannot catch what numba's CUDA compiler rejects
(typing errors, unsupported functions). Run with ``NUMBA_ENABLE_CUDASIM=0``: lmref.cuda's
compile-only mode keeps arrays on the host and, at each launch, compiles the kernel for the
argument types a real launch would have (float64 C arrays, int64 scalars) down to LLVM IR
(no CUDA toolkit or driver needed). Prints one line per kernel module and exits non-zero if
a kernel was never compiled (every ``@cuda.jit`` kernel must be reached by a call below).
"""
import importlib
import importlib.util
import sys

import numpy as np
from numba.cuda.dispatcher import CUDADispatcher

import lmref.cuda as lc
from lmref.cuda import _runtime


def _motion(rng, x):
    flow = rng.uniform(-2, 2, (2, 5, 7, 2))
    lc.warp(x, flow)
    lc.warp_backward(x, x, flow)


def _temporal(rng, x):
    lc.local_multiply(x, x, 3, normalize="l2")
    lc.local_multiply_backward(rng.standard_normal((2, 9, 5, 7)), x, x, 3, normalize="l2")


def _blockmatch(rng, x):
    lc.block_match(x[0], x[0], 3, 1)
    lc.block_match(np.round(x[0]), np.round(x[0]), 3, 1)  # integer frames: no exact pass
    _runtime._compile(_kernels("blockmatch").stats, (np.zeros(7), np.zeros(7),
                                                    np.zeros((2, 1, 3))))


def _conv(rng, x):
    from lmref.cuda import conv as cconv

    w = rng.standard_normal((4, 3, 3, 3))
    out = lc.conv2d(x, w, rng.standard_normal(4), padding=1)
    lc.conv2d_backward(out, x, w, rng.standard_normal(4), padding=1)
    saved = cconv._SMEM_DOUBLES
    cconv._SMEM_DOUBLES = 1  # force the untiled fallback
    try:
        lc.conv2d(x, w, None, padding=1)
    finally:
        cconv._SMEM_DOUBLES = saved


def _layers(rng, x):
    out = lc.max_pool2d(x, 2)
    lc.max_pool2d_backward(out, x, 2)


def _common(rng, x):
    """Casts of other dtypes and strides (reached only with device inputs)."""
    a = np.zeros((3, 4, 5, 6), np.float32)
    for nd in range(1, 5):
        cast = getattr(_kernels("common"), f"cast{nd}d")
        view = a[(0,) * (4 - nd)]
        _runtime._compile(cast, (view, np.zeros(view.shape)))
        strided = view[..., ::2]
        _runtime._compile(cast, (strided, np.zeros(strided.shape)))
    _runtime._compile(_kernels("common").fill_zero, (np.zeros(3),))


#: kernel family -> (CPU module it needs, calls reaching every kernel)
FAMILIES = {"common": (None, _common), "motion": ("lmref.motion", _motion),
            "temporal": ("lmref.temporal", _temporal),
            "blockmatch": ("lmref.blockmatch", _blockmatch),
            "conv": ("lmref.conv", _conv), "layers": ("lmref.layers", _layers)}


def _kernels(family):
    return importlib.import_module(f"lmref.cuda._k{family}")


def main() -> int:
    _runtime.COMPILE_ONLY = True
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 7))
    missing = []
    for fam, (cpu, calls) in FAMILIES.items():
        absent = [m for m in (cpu, f"lmref.cuda.{fam}" if cpu else None)
                  if m is not None and importlib.util.find_spec(m) is None]
        if absent:  # a family still being written
            print(f"{fam}: skipped ({', '.join(absent)} not there yet)")
            continue
        calls(rng, x)
        mod = _kernels(fam)
        compiled = {fn for fn, _ in _runtime._compiled}
        kernels = {name: obj for name, obj in vars(mod).items()
                   if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")}
        done = sorted(n for n, obj in kernels.items() if obj.py_func in compiled)
        missing += [f"{fam}.{n}" for n in sorted(set(kernels) - set(done))]
        print(f"{fam}: {len(done)}/{len(kernels)} kernels compiled: {', '.join(done)}")
    if missing:
        print("never compiled:", ", ".join(missing))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
