"""The one place where lmref's numba decorators are configured.

Every kernel is compiled lazily (no eager signatures), once, at module level, with
``cache=True`` (so CI and the ``reproduce`` sub-processes pay the compile once) and never with
``fastmath`` (it changes results and removes NaN guards). Kernels are only ever called with
float64 C-contiguous arrays and int64 scalars, so each has a single specialisation.
"""
from __future__ import annotations

import numba

#: serial kernel
jit = numba.njit(cache=True, nogil=True)
#: kernel with ``numba.prange`` over independent outputs (never over a reduction)
pjit = numba.njit(cache=True, nogil=True, parallel=True)

prange = numba.prange

__all__ = ["jit", "pjit", "prange"]
