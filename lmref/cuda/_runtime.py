"""Device plumbing shared by every CUDA family: lazy numba.cuda, array kinds in and out.

Nothing here imports :mod:`numba.cuda` at import time: importing it loads the CUDA driver
library (and takes ~0.5 s), so it happens on the first call of a CUDA function or of
:func:`is_available`. The kernels are plain module-level ``@cuda.jit`` definitions in
``lmref.cuda._k*`` modules, imported by :class:`Session` on first use and compiled by numba on
their first launch (one specialisation each: float64 C-contiguous arrays and int64 scalars).
The first call also checks that the installed NumPy and numba-cuda work together
(:func:`check_versions`).

Array kinds
-----------
* NumPy arrays, nested lists and torch CPU tensors (read like ``.detach()``, so tensors that
  require grad are fine) are validated on the host by the CPU module's own validator, copied
  to the device, and the results come back as NumPy arrays. Every device buffer of such a
  call is scratch, served from lmref's cache (below).
* Objects with ``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA
  tensors, with or without ``requires_grad``) and the simulator's device arrays stay on the
  device: each is converted to a numba view once per call, without synchronising its stream;
  the CPU validator sees a host stand-in of the same shape that costs nothing (zeros whose
  pages are never touched, cached per shape, see :meth:`Session.stand_in`); the data are cast
  to C-contiguous float64 on the device when they are not already, and results are returned
  as the kind of the first device argument: a ``torch.Tensor`` for torch, a ``cupy.ndarray``
  for CuPy (both allocated by the framework's own caching allocator), a numba device array
  otherwise. Value checks the CPU functions make on the host (finiteness, ranges) see zeros,
  so a family that needs them redoes them on the device (block matching does). Kernels run
  on numba's default stream, or on the current stream of torch/CuPy when the first device
  argument comes from them.

Caches
------
Small tables built from the geometry alone (padding index maps, displacement orders) are
uploaded once per geometry and device and kept (:meth:`Session.constant`). Scratch buffers
(per-chunk tables, casts, the device copies of host inputs) come from a per (thread, stream,
shape) cache (:meth:`Session.scratch`), so a repeated call allocates nothing but its results.
Both caches are bounded (least recently used entries are dropped).

Counting hook
-------------
``with counting() as c: f(...)`` counts, per call, lmref's device allocations (``alloc``:
numba ``cuMemAlloc``; the torch/CuPy allocators and cache hits are not counted), host to
device and device to host copies (``h2d``, ``d2h``), host synchronisations (``sync``) and
kernel launches (``launch``). The tests pin these numbers per function.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections import OrderedDict

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

# ------------------------------------------------------------------------------ counting

_COUNTS = ("alloc", "h2d", "d2h", "sync", "launch")
_counters: list[dict] = []


@contextlib.contextmanager
def counting():
    """Count lmref's device allocations, copies, host synchronisations and launches made
    inside the ``with`` block: yields a dict with the keys ``alloc``, ``h2d``, ``d2h``,
    ``sync`` and ``launch``."""
    counts = dict.fromkeys(_COUNTS, 0)
    _counters.append(counts)
    try:
        yield counts
    finally:
        del _counters[next(i for i, c in enumerate(_counters) if c is counts)]  # identity


def _count(what: str, n: int = 1):
    for counts in _counters:
        counts[what] += n


# ------------------------------------------------------------------------------ versions

#: numba-cuda releases that fail on NumPy >= 2.5 (``np.row_stack`` is gone; numba-cuda is in
#: maintenance mode and will not be fixed): the last release known to lmref and all before it.
_NUMBA_CUDA_BROKEN_UP_TO = (0, 30)
_NUMPY_FIRST_BREAKING = (2, 5)
_versions_ok = False


def _release(version: str) -> tuple:
    """(major, minor) of a version string ("2.5.0rc1" -> (2, 5))."""
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit()) or "0"
        parts.append(int(digits[:6]))
    return tuple(parts + [0] * (2 - len(parts)))


def _installed_versions():
    """(numpy version, numba-cuda version or None when numba-cuda is not installed)."""
    from importlib import metadata
    try:
        numba_cuda_version = metadata.version("numba-cuda")
    except metadata.PackageNotFoundError:
        numba_cuda_version = None
    return np.__version__, numba_cuda_version


def check_versions(numpy_version: str, numba_cuda_version: str | None):
    """Raise a RuntimeError naming both versions and the fix when numba-cuda
    ``numba_cuda_version`` cannot compile kernels with NumPy ``numpy_version``."""
    if numba_cuda_version is None:
        return
    if _release(numba_cuda_version) <= _NUMBA_CUDA_BROKEN_UP_TO and \
            _release(numpy_version) >= _NUMPY_FIRST_BREAKING:
        raise RuntimeError(
            f"lmref.cuda: numba-cuda {numba_cuda_version} does not work with NumPy "
            f"{numpy_version} (its kernel compiler uses np.row_stack, removed in NumPy 2.5, "
            f"and numba-cuda is in maintenance mode). Install NumPy < 2.5 beside it: "
            f'pip install "numpy<2.5"  (the cuda extra, {_INSTALL_HINT}, pins it).')


def _check_installed_versions():
    global _versions_ok
    if not _versions_ok:
        check_versions(*_installed_versions())
        _versions_ok = True


# ------------------------------------------------------------------------------ numba.cuda

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
    """Return :mod:`numba.cuda`, or raise a RuntimeError saying why it cannot be used (no
    GPU; a NumPy / numba-cuda pair that cannot compile kernels)."""
    _check_installed_versions()
    cuda = numba_cuda()
    if not COMPILE_ONLY and not is_available():
        raise RuntimeError(
            "lmref.cuda: no CUDA GPU is usable by numba-cuda (no NVIDIA driver or device "
            "found). Use the CPU functions (lmref.conv, lmref.motion, ...) instead, or set "
            "NUMBA_ENABLE_CUDASIM=1 before numba is imported to run the kernels in numba's "
            "(slow) CUDA simulator.")
    return cuda


# ------------------------------------------------------------------------------ array kinds

def _framework(x) -> str:
    """Top-level module of ``x``'s type ("torch", "cupy", "numba", "numpy", ...)."""
    return type(x).__module__.partition(".")[0]


def is_device_array(x) -> bool:
    """True for objects whose data live on the GPU (CUDA array interface or simulator arrays).

    torch tensors are asked for their device (their interface raises a RuntimeError for
    tensors that require grad); any other object whose interface exists but raises is a
    device array too (its data are read through ``.detach()``, see :meth:`Session._view`).
    """
    module = _framework(x)
    if module == "torch":
        return x.device.type == "cuda"
    if module != "numpy":
        try:
            getattr(x, "__cuda_array_interface__")
            return True
        except AttributeError:
            pass
        except Exception:  # e.g. "requires grad": the data are on the device
            return hasattr(x, "detach")
    sim = sys.modules.get("numba.cuda.simulator.cudadrv.devicearray")
    return sim is not None and isinstance(x, sim.FakeCUDAArray)


def _host_array(x):
    """Host data the CPU validator can read: torch CPU tensors as detached NumPy views."""
    if _framework(x) == "torch":
        return x.detach().resolve_conj().resolve_neg().numpy()
    return x


def threads(real: int, sim: int) -> int:
    """Threads per block along one axis: ``real`` on a GPU, ``sim`` in the (slow) simulator,
    whose Python threads make big blocks expensive; the kernels are written for any size."""
    return sim if simulator() else real


def blocks(n: int, per_block: int) -> int:
    """Blocks needed to cover ``n`` items, ``per_block`` at a time (at least one)."""
    return max(1, -(-int(n) // int(per_block)))


class _LRU(OrderedDict):
    """A dict that drops its least recently used entries beyond ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def take(self, key, build):
        try:
            self.move_to_end(key)
            return self[key]
        except KeyError:
            value = self[key] = build()
            while len(self) > self.limit:
                self.popitem(last=False)
            return value


_STAND_INS = _LRU(32)  # shape -> host zeros (never written: validators only read them)
_CONSTANTS = _LRU(256)  # (device, key) -> small device table built from the geometry alone
_SCRATCH = _LRU(64)  # (thread, stream, slot, shape, dtype) -> device buffer
_STREAMS = _LRU(16)  # external stream handle -> numba stream


def clear_caches():
    """Drop every cached device table and scratch buffer (tests, or to free memory)."""
    for cache in (_STAND_INS, _CONSTANTS, _SCRATCH, _STREAMS):
        cache.clear()


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
        self._views = {}  # id(argument) -> (argument, its numba view): one conversion a call
        self._owners = {}  # id(numba view of a result) -> its torch tensor / CuPy array
        self._slot = 0  # scratch buffers are numbered in request order

    # -- inputs ---------------------------------------------------------------------------
    def stand_in(self, x):
        """What the CPU validator gets for argument ``x``: host data as they are (torch CPU
        tensors as detached NumPy views); for device data a host array of its shape that
        costs nothing: cached zeros (their pages are never touched) for real dtypes, else a
        zero-stride array of its own dtype, which the CPU validator refuses with its own
        message."""
        if not is_device_array(x):
            return _host_array(x)
        view = self._view(x)
        shape = tuple(int(s) for s in view.shape)
        dtype = np.dtype(view.dtype)
        if dtype.kind not in "iuf":
            return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
        if self.like is None:
            self.like = x
            self.stream = self._stream_of(x)
        return _STAND_INS.take(shape, lambda: np.zeros(shape))

    def upload(self, x, checked: np.ndarray):
        """Device float64 C-contiguous copy (or view) of argument ``x`` shaped like
        ``checked``, the validated host form the CPU validator returned for it."""
        if is_device_array(x):
            d = self._as_f64_device(x)
            return d if tuple(d.shape) == checked.shape else d.reshape(checked.shape)
        arr = np.ascontiguousarray(checked, dtype=np.float64)
        if COMPILE_ONLY:
            return arr.copy()
        out = self.scratch(arr.shape)
        _count("h2d")
        out.copy_to_device(arr, stream=self.stream)
        return out

    def constant(self, key, build):
        """Device copy of the small host table ``build()``, uploaded once per ``key`` (a
        hashable description of the geometry it depends on) and device, then cached."""
        if COMPILE_ONLY:
            return np.ascontiguousarray(build())

        def upload():
            _count("alloc")
            _count("h2d")
            _count("sync")  # synchronous, so that any stream may read it at once
            return self.cuda.to_device(np.ascontiguousarray(build()))
        return _CONSTANTS.take((self._device_id(), key), upload)

    def _device_id(self):
        return 0 if simulator() else self.cuda.get_current_device().id

    def _view(self, x):
        """A numba (or simulator) device array over device argument ``x``, without a copy
        and without synchronising its stream (lmref's kernels run on the caller's stream)."""
        hit = self._views.get(id(x))
        if hit is not None:
            return hit[1]
        view = self._new_view(x)
        self._views[id(x)] = (x, view)  # keep x alive: its id stays unique for the call
        return view

    def _new_view(self, x):
        if _framework(x) == "numba":
            return x
        if hasattr(x, "detach") and (_framework(x) == "torch" or not _has_interface(x)):
            x = x.detach()  # torch hides the interface of tensors that require grad
        try:
            if simulator():
                return _simulated_view(x)
            return self.cuda.as_cuda_array(x, sync=False)
        except Exception as exc:  # dtypes numba cannot map (bfloat16...), broken interfaces
            raise TypeError(f"lmref.cuda cannot read {type(x).__name__} of dtype "
                            f"{getattr(x, 'dtype', '?')} as a device array: {exc}") from None

    def _as_f64_device(self, x):
        arr = self._view(x)
        if arr.dtype == np.float64 and arr.is_c_contiguous():
            return arr  # read-only use: kernels never write into their inputs
        out = self.scratch(arr.shape)
        if out.size:
            tpb = threads(256, 32)
            self.launch(getattr(self.common, f"cast{arr.ndim}d"),
                        blocks(out.size, tpb), tpb, arr, out)
        return out

    def _stream_of(self, x):
        """The stream torch/CuPy are using now, so that our kernels run after their work."""
        if simulator() or COMPILE_ONLY:
            return 0
        module = _framework(x)
        if module == "torch":
            import torch
            handle = torch.cuda.current_stream(x.device).cuda_stream
        elif module == "cupy":
            import cupy
            handle = cupy.cuda.get_current_stream().ptr
        else:
            return 0
        return _STREAMS.take(handle, lambda: self.cuda.external_stream(handle))

    # -- outputs and scratch --------------------------------------------------------------
    def empty(self, shape, dtype=np.float64):
        """A result buffer: from torch's / CuPy's allocator when the first device argument
        comes from them, lmref's scratch cache when the results go back to the host, a fresh
        numba device array otherwise."""
        shape = tuple(int(s) for s in shape)
        check_alloc(shape, "the CUDA result", np.dtype(dtype).itemsize)
        if COMPILE_ONLY:
            return np.empty(shape, dtype)
        if self.like is None:
            return self.scratch(shape, dtype)
        module = _framework(self.like)
        if module in ("torch", "cupy") and not simulator():
            owner = _framework_empty(module, shape, dtype, self.like)
            view = self.cuda.as_cuda_array(owner, sync=False)
            self._owners[id(view)] = (view, owner)
            return view
        _count("alloc")
        return self.cuda.device_array(shape, dtype, stream=self.stream)

    def scratch(self, shape, dtype=np.float64):
        """A device buffer used within this call only, from the cache: one per (thread,
        stream, request number, shape, dtype), so a repeated call allocates nothing."""
        shape = tuple(int(s) for s in shape)
        check_alloc(shape, "a CUDA scratch buffer", np.dtype(dtype).itemsize)
        if COMPILE_ONLY:
            return np.empty(shape, dtype)
        self._slot += 1
        key = (threading.get_ident(), _stream_key(self.stream), self._slot, shape,
               np.dtype(dtype).str)

        def allocate():
            _count("alloc")
            return self.cuda.device_array(shape, dtype, stream=self.stream)
        return _SCRATCH.take(key, allocate)

    def zeros(self, shape):
        out = self.empty(shape)
        self.fill_zero(out)
        return out

    def fill_zero(self, arr):
        if arr.size:
            tpb = threads(256, 32)
            self.launch(self.common.fill_zero, blocks(arr.size, tpb), tpb, arr.reshape(arr.size))

    def fetch(self, arr) -> np.ndarray:
        """A small device array (counts, per-block partials) as NumPy, synchronously."""
        if COMPILE_ONLY:
            return arr
        _count("d2h")
        _count("sync")
        return arr.copy_to_host(stream=self.stream)

    def launch(self, kernel, grid, block, *args, shared: int = 0):
        """``kernel[grid, block, stream, shared](*args)`` (or its compile check)."""
        grid3 = tuple(grid) + (1,) * (3 - len(grid)) if isinstance(grid, tuple) else (grid, 1, 1)
        if grid3[1] > 65535 or grid3[2] > 65535 or grid3[0] > 2**31 - 1:
            raise ValueError(f"lmref.cuda: the input is too large for one kernel launch (grid "
                             f"{grid3}: at most 65535 blocks along y and z, which count images x "
                             f"channels here); split the batch")
        _count("launch")
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
            return self.fetch(out)
        owned = self._owned(out)
        if owned is not None:
            return owned
        if _framework(self.like) == "torch":  # the simulator has no torch CUDA tensors
            import torch
            return torch.as_tensor(out, device=self.like.device)
        if _framework(self.like) == "cupy":
            import cupy
            return cupy.asarray(out)
        return out

    def _owned(self, out):
        """The torch tensor / CuPy array behind result ``out`` (or a reshape of it)."""
        hit = self._owners.get(id(out))
        if hit is not None:
            return hit[1]
        base = out.gpu_data if hasattr(out, "gpu_data") else None
        for view, owner in self._owners.values():
            if base is not None and view.gpu_data is base:
                return owner.reshape(tuple(out.shape))
        return None


def _stream_key(stream) -> int:
    """The CUDA handle of a numba stream (0: the default stream), as a hashable int."""
    if isinstance(stream, int):
        return stream
    handle = stream.handle
    for read in (int, lambda h: h.value):
        try:
            return int(read(handle) or 0)
        except (TypeError, AttributeError, ValueError):
            pass
    return id(stream)


def _has_interface(x) -> bool:
    try:
        getattr(x, "__cuda_array_interface__")
        return True
    except Exception:
        return False


def _framework_empty(module, shape, dtype, like):
    if module == "torch":
        import torch
        return torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=like.device)
    import cupy
    return cupy.empty(shape, dtype)


def _simulated_view(x):
    """The simulator has no ``as_cuda_array``: its 'device' memory is host memory, so an
    interface's data pointer is read as a NumPy array (shape, typestr, strides) in place."""
    desc = x.__cuda_array_interface__

    class _Host:
        __array_interface__ = {"shape": tuple(desc["shape"]), "typestr": desc["typestr"],
                               "data": tuple(desc["data"]), "strides": desc.get("strides"),
                               "version": 3}
    fake = sys.modules["numba.cuda.simulator.cudadrv.devicearray"].FakeCUDAArray
    return fake(np.asarray(_Host()))


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
