"""CUDA twins of lmref's hot kernels (numba-cuda), held equal to the CPU oracle by the tests.

``lmref.cuda.conv2d``, ``conv2d_backward``, ``warp``, ``warp_backward``, ``block_match``,
``local_multiply``, ``local_multiply_backward``, ``max_pool2d`` and ``max_pool2d_backward``
take the same arguments as the CPU functions of the same name, validate them with the CPU
module's own checks, follow the same conventions and tie rules, and return float64 results
equal to the CPU ones: block-matching flows and max-pooling results exactly; other floats to
rounding (fused multiply-adds, reordered sums; the tests hold them to ``rtol = atol = 1e-12``
on O(1) data). No ``fastmath``.

Array kinds: NumPy in, NumPy out (copied to the device and back). Objects with
``__cuda_array_interface__`` (numba device arrays, CuPy arrays, PyTorch CUDA tensors) stay on
the device, without copies when they are float64 and C-contiguous (otherwise cast on the
device), and the results come back as the kind of the first device argument: torch tensor,
CuPy array, or numba device array. Their values are never copied to the host: block matching
checks finiteness and magnitude on the device, elsewhere NaN and Inf follow the CPU's
documented behaviour.

``is_available()`` tells whether a GPU, or numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``
set before numba is imported), is usable; without one the functions raise ``RuntimeError``.
Importing lmref or lmref.cuda never imports numba.cuda, probes the GPU or compiles anything:
that happens on the first call. Needs the ``cuda`` extra: ``pip install -e ".[cuda]"``.
"""
from __future__ import annotations

import importlib

from lmref.cuda._runtime import is_available

#: public name -> family module (imported on first access, with its CPU twin)
_FUNCTIONS = {
    "conv2d": "conv", "conv2d_backward": "conv",
    "warp": "motion", "warp_backward": "motion",
    "block_match": "blockmatch",
    "local_multiply": "temporal", "local_multiply_backward": "temporal",
    "max_pool2d": "layers", "max_pool2d_backward": "layers",
}

__all__ = ["is_available", *_FUNCTIONS]


def __getattr__(name):
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_FUNCTIONS))
