"""The one place where lmref's numba decorators are configured.

Every kernel is compiled lazily (no eager signatures), once, at module level, with
``cache=True`` (so CI and the ``reproduce`` sub-processes pay the compile once) and never with
``fastmath`` (it changes results and removes NaN guards). Kernels are called with float64
C-contiguous arrays and int64 scalars, so most have a single specialisation; the exceptions
say so in their docstrings (block matching's exact integer path also runs on int32 frames).

Thread safety of parallel kernels: numba's ``workqueue`` threading layer (its fallback where
neither OpenMP nor TBB is available, e.g. macOS without libomp, or chosen with
``NUMBA_THREADING_LAYER=workqueue``) aborts the whole process when two Python threads launch
parallel regions at the same time. :data:`pjit` kernels are therefore called through
:class:`ParallelKernel`, which serialises launches with one lock while the layer is (or may
still become) ``workqueue``, and calls the dispatcher directly once numba has settled on a
thread-safe layer (``omp``, ``tbb``). A ``pjit`` kernel is thus a Python-level object: call it
from Python, not from another numba kernel.
"""
from __future__ import annotations

import functools
import threading

import numba

__all__ = ["jit", "jit_ieee", "jit_inline", "pjit", "prange", "STREAM_BLOCK", "ParallelKernel",
           "serialising"]

#: serial kernel
jit = numba.njit(cache=True, nogil=True)

#: serial kernel whose float division follows IEEE 754 (``x / 0.0`` is ``inf`` or NaN) instead
#: of numba's default test-and-raise ``ZeroDivisionError``: the test is a branch in every
#: iteration, so a loop that divides never vectorises. Not ``fastmath``: every quotient with a
#: non-zero divisor has the same bits. Only for kernels whose callers refuse (or never return)
#: the elements where a divisor can be zero.
jit_ieee = numba.njit(cache=True, nogil=True, error_model="numpy")

#: serial kernel inlined into its callers by numba (``inline="always"``): for small per-element
#: helpers that take arrays, whose calls would otherwise reference-count every array argument
jit_inline = numba.njit(cache=True, nogil=True, inline="always")

prange = numba.prange


#: elements per ``prange`` iteration of lmref's element-wise (streaming) kernels. numba's
#: default schedule gives each thread one contiguous run of iterations, the runs equal within
#: one iteration (here 32 KiB of float64), so blocks split a stream evenly without Python
#: asking for the thread count: ``numba.get_num_threads()`` costs ~3 us warm and 40-50 us
#: right after a large stream has evicted the interpreter from the caches (measured, ReLU
#: 8x64x56x56 ~10% faster than with the count asked per call, 2026-12-08)
STREAM_BLOCK = 2**12


#: the layer that may not be entered from two threads at once
_UNSAFE_LAYER = "workqueue"
#: held around every parallel launch while ``_serialise`` is True
_LAUNCH_LOCK = threading.Lock()
#: None: no parallel region has run yet (the layer is chosen at the first launch, so serialise
#: until then); then whether the chosen layer is the unsafe one (numba never changes it later)
_serialise: bool | None = None


def _layer_chosen() -> bool | None:
    """Whether the layer numba has loaded is ``workqueue`` (None before the first launch)."""
    try:
        return numba.threading_layer() == _UNSAFE_LAYER
    except ValueError:  # no parallel region has been launched yet
        return None


def serialising() -> bool:
    """True when parallel launches are (still) serialised: the layer is ``workqueue`` or not
    chosen yet."""
    return _serialise is not False


class ParallelKernel:
    """A ``parallel=True`` dispatcher whose launches are serialised on the ``workqueue`` layer.

    Attribute access (``signatures``, ``py_func``, ...) goes to the dispatcher. On a thread-safe
    layer a call costs one global lookup more than the dispatcher's own.
    """

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        functools.update_wrapper(self, dispatcher.py_func)

    def __call__(self, *args):
        global _serialise
        if _serialise is False:  # the hot path: omp or tbb
            return self.dispatcher(*args)
        with _LAUNCH_LOCK:
            try:
                return self.dispatcher(*args)
            finally:
                _serialise = _layer_chosen()

    def __getattr__(self, name):
        return getattr(self.dispatcher, name)

    def __repr__(self):
        return f"ParallelKernel({self.dispatcher!r})"


_pjit_dispatcher = numba.njit(cache=True, nogil=True, parallel=True)


def pjit(func) -> ParallelKernel:
    """Kernel with ``numba.prange`` over independent outputs (never over a reduction)."""
    return ParallelKernel(_pjit_dispatcher(func))
