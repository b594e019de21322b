"""Run the CUDA tests in numba's CUDA simulator unless a real GPU is asked for.

* Default (CI, laptops): ``NUMBA_ENABLE_CUDASIM=1`` is set here, before anything imports
  ``numba.cuda`` (pytest loads this file before it imports any test module, and numba.cuda is
  imported by nothing but lmref.cuda's first call). If numba itself was already imported, its
  config is re-read so that the simulator is picked up. The simulator runs every thread as a
  Python thread: the tests use tiny frames (e.g. 5 x 7) and small blocks.
* Real GPU: ``LMREF_CUDA_REAL=1 pytest tests/cuda`` (or ``NUMBA_ENABLE_CUDASIM=0``). The
  same tests then run on the device and fail (not skip) when no GPU is usable.
"""
import os
import sys

import numpy as np
import pytest

REAL_GPU = os.environ.get("LMREF_CUDA_REAL", "") not in ("", "0") or \
    os.environ.get("NUMBA_ENABLE_CUDASIM") == "0"

if not REAL_GPU:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules:  # numba reads NUMBA_* at import: make it see the simulator
        from numba.core import config as _config
        _config.reload_config()


def _mode_problem():
    """Why the CUDA tests cannot run in the requested mode (None when they can)."""
    from lmref.cuda import _runtime

    if "numba.cuda" not in sys.modules:
        return None if _runtime.is_available() or not REAL_GPU else \
            "LMREF_CUDA_REAL=1 but numba-cuda finds no usable GPU"
    if _runtime.simulator() == REAL_GPU:
        return ("numba.cuda was imported before tests/cuda/conftest.py could select the "
                f"{'real GPU' if REAL_GPU else 'simulator'}; run the CUDA tests on their own "
                "or set NUMBA_ENABLE_CUDASIM before starting pytest")
    if not _runtime.is_available():
        return "numba-cuda finds no usable GPU" if REAL_GPU else "the CUDA simulator is unusable"
    return None


@pytest.fixture(autouse=True)
def _cuda_mode():
    problem = _mode_problem()
    if problem:
        pytest.fail(problem)


#: GPU vs CPU tolerance for float64 results of O(1) data: fused multiply-adds and reordered
#: sums (the simulator, which neither fuses nor reorders, usually agrees bitwise).
RTOL, ATOL = 1e-12, 1e-12


@pytest.fixture
def to_device():
    """Copy a NumPy array to the device (a numba device array, or the simulator's)."""
    from numba import cuda

    return lambda a: cuda.to_device(np.ascontiguousarray(a))


def host(a):
    """A CUDA result as a NumPy array (device arrays are copied back)."""
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


@pytest.fixture
def close():
    """``close(gpu, cpu)``: GPU results (tuple or array, any kind) equal the CPU's: floats to
    RTOL/ATOL (NaN where NaN), same shapes and float64 dtype."""
    from lmref.testing import assert_close

    def check(gpu, cpu, *, rtol=RTOL, atol=ATOL):
        gpu = gpu if isinstance(gpu, tuple) else (gpu,)
        cpu = cpu if isinstance(cpu, tuple) else (cpu,)
        assert len(gpu) == len(cpu)
        for g, c in zip(gpu, cpu):
            g = host(g)
            assert g.shape == c.shape and g.dtype == np.float64, (g.shape, g.dtype, c.shape)
            assert_close(g, c, rtol=rtol, atol=atol)

    return check
