"""Device plumbing shared by every CUDA family: lazy numba.cuda, array kinds in and out.

Nothing here imports :mod:`numba.cuda` at import time: importing it loads the CUDA driver
library (and takes ~0.5 s), so it happens on the first call of a CUDA function or of
:func:`is_available`. The kernels are plain module-level ``@cuda.jit`` definitions in
``lmref.cuda._k*`` modules, imported by :class:`Session` on first use and compiled by numba on
their first launch (one specialisation each: float64 C-contiguous arrays and int64 scalars).

Array kinds
-----------
* NumPy arrays (and nested lists) are validated on the host by the CPU module's own
  validator, copied to the device, and the results come back as NumPy arrays.
* Objects with ``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA
  tensors) and the simulator's device arrays stay on the device: the CPU validator sees a
  host stand-in of the same shape that costs nothing (see :meth:`Session.stand_in`), the data
  are cast to C-contiguous float64 on the device when they are not already, and results are
  returned as the kind of the first device argument: a ``torch.Tensor`` for torch, a
  ``cupy.ndarray`` for CuPy, a numba device array otherwise. Value checks the CPU functions
  make on the host (finiteness, ranges) see zeros, so a family that needs them redoes them on
  the device (block matching does). Kernels run on numba's default stream, or on the current
  stream of torch/CuPy when the first device argument comes from them.
"""
from __future__ import annotations

import importlib
import sys

import numpy as np

from lmref._validation import check_alloc

__all__: list[str] = []  # private module

_INSTALL_HINT = 'pip install -e ".[cuda]"  (numba-cuda)'

#: Compile-only mode (tests only, see tests/cuda/_compile_check.py): arrays stay NumPy
#: arrays and every launch type-checks and lowers its kernel for a real GPU instead of
#: running it, which works on machines without a GPU or CUDA toolkit.
COMPILE_ONLY = False
COMPILE_CC = (9, 0)
_compiled: set = set()


def numba_cuda():
    """Import and return :mod:`numba.cuda` (first use only; never at lmref import time)."""
    try:
        from numba import cuda
    except ImportError as exc:  # numba-cuda or its CUDA bindings missing
        raise RuntimeError(f"lmref.cuda needs numba-cuda: {_INSTALL_HINT} ({exc})") from None
    return cuda


def simulator() -> bool:
    """True when numba's CUDA simulator is (or, numba.cuda not being imported yet, will be)
    in use: ``NUMBA_ENABLE_CUDASIM=1`` as numba read it."""
    if "numba.cuda" in sys.modules:  # the choice was made when numba.cuda was imported
        return "numba.cuda.simulator_init" in sys.modules
    from numba.core import config
    return bool(getattr(config, "ENABLE_CUDASIM", 0))


_available = False  # a GPU, once found, stays usable for the life of the process


def is_available() -> bool:
    """Whether a CUDA GPU (or numba's CUDA simulator) is usable by :mod:`lmref.cuda`.

    The first call imports numba.cuda and initialises the driver; importing lmref does not.
    """
    global _available
    if not _available:
        try:
            _available = bool(numba_cuda().is_available())
        except Exception:  # no numba-cuda, no driver, broken install: not available
            return False
    return _available


def require():
    """Return :mod:`numba.cuda`, or raise a RuntimeError saying why no GPU can be used."""
    cuda = numba_cuda()
    if not COMPILE_ONLY and not is_available():
        raise RuntimeError(
            "lmref.cuda: no CUDA GPU is usable by numba-cuda (no NVIDIA driver or device "
            "found). Use the CPU functions (lmref.conv, lmref.motion, ...) instead, or set "
            "NUMBA_ENABLE_CUDASIM=1 before numba is imported to run the kernels in numba's "
            "(slow) CUDA simulator.")
    return cuda


def is_device_array(x) -> bool:
    """True for objects whose data live on the GPU (CUDA array interface or simulator arrays)."""
    if hasattr(x, "__cuda_array_interface__"):
        return True
    sim = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return sim is not None and isinstance(x, sim.FakeCUDAArray)


def threads(real: int, sim: int) -> int:
    """Threads per block along one axis: ``real`` on a GPU, ``sim`` in the (slow) simulator,
    whose Python threads make big blocks expensive; the kernels are written for any size."""
    return sim if simulator() else real


def blocks(n: int, per_block: int) -> int:
    """Blocks needed to cover ``n`` items, ``per_block`` at a time (at least one)."""
    return max(1, -(-int(n) // int(per_block)))


class Session:
    """The arrays of one call: validation stand-ins, uploads, launches, result kind.

    Typical use in a public function::

        s = Session("motion")
        shape, x4, f4, m, b = _cpu._check_warp_inputs(s.stand_in(x), s.stand_in(flow),
                                                      mode, boundary)
        dx, df = s.upload(x, x4), s.upload(flow, f4)
        out = s.empty(x4.shape)
        s.launch(s.k.warp_forward, grid, block, dx, df, out, ...)
        return s.give(out)
    """

    def __init__(self, family: str):
        self.cuda = require()
        self.k = importlib.import_module(f"lmref.cuda._k{family}")
        self.common = importlib.import_module("lmref.cuda._kcommon")
        self.like = None  # first device argument: defines the kind of the results
        self.stream = 0

    # -- inputs ---------------------------------------------------------------------------
    def stand_in(self, x):
        """What the CPU validator gets for argument ``x``: ``x`` itself for host data; for
        device data a host array of its shape that costs nothing: zeros (``np.zeros`` pages
        are never touched) for real dtypes, else a zero-stride array of its own dtype, which
        the CPU validator refuses with its own message."""
        if not is_device_array(x):
            return x
        view = self._view(x)
        shape = tuple(int(s) for s in view.shape)
        dtype = np.dtype(view.dtype)
        if dtype.kind not in "iuf":
            return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
        if self.like is None:
            self.like = x
            self.stream = _stream_of(x, self.cuda)
        return np.zeros(shape)

    def upload(self, x, checked: np.ndarray):
        """Device float64 C-contiguous copy (or view) of argument ``x`` shaped like
        ``checked``, the validated host form the CPU validator returned for it."""
        if is_device_array(x):
            d = self._as_f64_device(x)
            return d if tuple(d.shape) == checked.shape else d.reshape(checked.shape)
        arr = np.ascontiguousarray(checked, dtype=np.float64)
        if COMPILE_ONLY:
            return arr.copy()
        return self.cuda.to_device(arr, stream=self.stream)

    def to_device(self, arr: np.ndarray):
        """Upload a small host-built array (index maps, tables) as it is."""
        arr = np.ascontiguousarray(arr)
        return arr.copy() if COMPILE_ONLY else self.cuda.to_device(arr, stream=self.stream)

    def _view(self, x):
        """A numba (or simulator) device array over device argument ``x``, without a copy."""
        if _is_numba_device(x):
            return x
        if type(x).__module__.split(".")[0] == "torch" and x.requires_grad:
            x = x.detach()  # torch hides the interface of tensors that require grad
        try:
            return self.cuda.as_cuda_array(x)
        except Exception as exc:  # dtypes numba cannot map (bfloat16...), broken interfaces
            raise TypeError(f"lmref.cuda cannot read {type(x).__name__} of dtype "
                            f"{getattr(x, 'dtype', '?')} as a device array: {exc}") from None

    def _as_f64_device(self, x):
        arr = self._view(x)
        if arr.dtype == np.float64 and arr.is_c_contiguous():
            return arr  # read-only use: kernels never write into their inputs
        out = self.empty(arr.shape)
        if out.size:
            tpb = threads(256, 32)
            self.launch(getattr(self.common, f"cast{arr.ndim}d"),
                        blocks(out.size, tpb), tpb, arr, out)
        return out

    # -- outputs --------------------------------------------------------------------------
    def empty(self, shape, dtype=np.float64):
        shape = tuple(int(s) for s in shape)
        check_alloc(shape, "the CUDA result", np.dtype(dtype).itemsize)
        if COMPILE_ONLY:
            return np.empty(shape, dtype)
        return self.cuda.device_array(shape, dtype, stream=self.stream)

    def zeros(self, shape):
        out = self.empty(shape)
        if out.size:
            tpb = threads(256, 32)
            self.launch(self.common.fill_zero, blocks(out.size, tpb), tpb,
                        out.reshape(out.size))
        return out

    def fetch(self, arr) -> np.ndarray:
        """A small device array (counts, per-block partials) as NumPy, synchronously."""
        return arr if COMPILE_ONLY else arr.copy_to_host(stream=self.stream)

    def launch(self, kernel, grid, block, *args, shared: int = 0):
        """``kernel[grid, block, stream, shared](*args)`` (or its compile check)."""
        grid3 = tuple(grid) + (1,) * (3 - len(grid)) if isinstance(grid, tuple) else (grid, 1, 1)
        if grid3[1] > 65535 or grid3[2] > 65535 or grid3[0] > 2**31 - 1:
            raise ValueError(f"lmref.cuda: the input is too large for one kernel launch (grid "
                             f"{grid3}: at most 65535 blocks along y and z, which count images x "
                             f"channels here); split the batch")
        if COMPILE_ONLY:
            _compile(kernel, args)
            return
        kernel[grid, block, self.stream, int(shared)](*args)

    def give(self, *outs):
        """Results as NumPy arrays, or as the kind of the first device argument."""
        res = tuple(None if o is None else self._give(o) for o in outs)
        return res[0] if len(res) == 1 else res

    def _give(self, out):
        if COMPILE_ONLY:
            return out
        if self.like is None:
            return out.copy_to_host(stream=self.stream)
        module = type(self.like).__module__.split(".")[0]
        if module == "torch":
            import torch
            return torch.as_tensor(out, device=self.like.device)
        if module == "cupy":
            import cupy
            return cupy.asarray(out)
        return out


def _is_numba_device(x) -> bool:
    return type(x).__module__.startswith("numba")


def _stream_of(x, cuda):
    """The stream torch/CuPy are using now, so that our kernels run after their work."""
    if simulator():
        return 0
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        import torch
        return cuda.external_stream(torch.cuda.current_stream(x.device).cuda_stream)
    if module == "cupy":
        import cupy
        return cuda.external_stream(cupy.cuda.get_current_stream().ptr)
    return 0


def _compile(kernel, args):
    """Type-check and lower ``kernel`` for ``args`` for a real GPU (no device needed)."""
    from types import SimpleNamespace

    import numba
    from numba import types
    from numba.cuda import dispatcher
    from numba.cuda.compiler import compile_cuda

    # device functions ask the (absent) current device for its compute capability
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=COMPILE_CC)
    sig = tuple(numba.typeof(a) for a in args)
    key = (kernel.py_func, sig)
    if key not in _compiled:
        compile_cuda(kernel.py_func, types.void, sig, cc=COMPILE_CC)
        _compiled.add(key)
