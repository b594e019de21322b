"""lmref.cuda plumbing: lazy import, availability, array kinds in and out, compile check."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lmref.cuda as lc
from lmref import motion

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _env(**extra):
    """The caller's environment with this checkout first on PYTHONPATH (extended, not
    replaced: a caller's own entries stay)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _python(code, **env):
    full = _env(**env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300)


def test_importing_lmref_cuda_touches_no_gpu():
    res = _python("import sys, lmref, lmref.cuda; lmref.cuda.warp; lmref.cuda.block_match; "
                  "print(sorted(m for m in sys.modules if m.startswith('numba.cuda')))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_is_available_here():
    assert lc.is_available()


def test_calls_without_a_gpu_raise_a_clear_error():
    res = _python("import numpy as np, lmref.cuda as lc\n"
                  "assert not lc.is_available()\n"
                  "try:\n    lc.warp(np.zeros((2, 2)), np.zeros((2, 2, 2)))\n"
                  "except RuntimeError as e:\n    print(e)\n",
                  NUMBA_ENABLE_CUDASIM="0", NUMBA_DISABLE_CUDA="1")
    assert res.returncode == 0, res.stderr
    assert "no CUDA GPU is usable" in res.stdout and "lmref.motion" in res.stdout


def test_device_arrays_stay_on_the_device(rng, to_device, close):
    x = rng.standard_normal((2, 5, 7))
    flow = rng.uniform(-2, 2, (5, 7, 2))
    out = lc.warp(to_device(x), to_device(flow))
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    close(out, motion.warp(x, flow))
    gx, gf = lc.warp_backward(to_device(x), x, to_device(flow))  # mixed kinds: device out
    assert hasattr(gx, "copy_to_host") and hasattr(gf, "copy_to_host")
    close((gx, gf), motion.warp_backward(x, x, flow))


@pytest.mark.parametrize("make", [
    lambda a: a.astype(np.float32),  # cast on the device
    lambda a: a.astype(np.int16),
    lambda a: np.asfortranarray(a),  # non-C-contiguous: copied on the device
])
def test_device_inputs_of_other_dtypes_and_layouts(rng, to_device, close, make):
    from numba import cuda

    x = make(rng.uniform(-9, 9, (2, 5, 7)))
    flow = rng.uniform(-2, 2, (5, 7, 2))
    dx = cuda.to_device(x) if x.flags.c_contiguous else cuda.to_device(x.copy(order="F"))
    close(lc.warp(dx, flow), motion.warp(x, flow))


def test_strided_device_view(rng, close):
    from numba import cuda

    big = rng.standard_normal((2, 5, 14))
    view = cuda.to_device(big)[:, :, ::2]
    flow = rng.uniform(-2, 2, (5, 7, 2))
    close(lc.warp(view, flow), motion.warp(big[:, :, ::2], flow))


def test_device_dtype_errors_match_the_cpu(to_device):
    z = np.zeros((5, 7), np.complex128)
    with pytest.raises(TypeError) as cpu:
        motion.warp(z, np.zeros((5, 7, 2)))
    with pytest.raises(TypeError) as gpu:
        lc.warp(to_device(z), np.zeros((5, 7, 2)))
    assert str(gpu.value) == str(cpu.value)


def test_every_kernel_compiles_for_a_real_gpu():
    """The simulator cannot catch numba CUDA typing errors: type and lower every kernel for a
    real GPU (no GPU or toolkit needed) in a fresh process."""
    res = subprocess.run([sys.executable, str(HERE / "_compile_check.py")], capture_output=True,
                         text=True, timeout=600, cwd=ROOT,
                         env=_env(NUMBA_ENABLE_CUDASIM="0"))
    assert res.returncode == 0, res.stdout + res.stderr


def test_launches_beyond_the_grid_limit_are_refused():
    x = np.zeros((65536, 1, 1, 2))  # one block per image along the grid's z axis
    with pytest.raises(ValueError, match="split the batch"):
        lc.warp(x, np.zeros((1, 2, 2)))


def _real_gpu_only():
    from lmref.cuda._runtime import simulator

    if simulator():
        pytest.skip("numba's simulator implements no __cuda_array_interface__")


def test_any_cuda_array_interface_is_read_in_place(rng, to_device, close):
    _real_gpu_only()

    class Foreign:  # e.g. another library's array: only the interface
        def __init__(self, dev):
            self.__cuda_array_interface__ = dev.__cuda_array_interface__
            self.keep = dev

    x = rng.standard_normal((2, 5, 7))
    flow = rng.uniform(-2, 2, (5, 7, 2))
    out = lc.warp(Foreign(to_device(x.astype(np.float32))), Foreign(to_device(flow)))
    assert hasattr(out, "copy_to_host")  # a numba device array
    close(out, motion.warp(x.astype(np.float32), flow))


def test_torch_cuda_tensors_give_torch_tensors(rng, close):
    _real_gpu_only()
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    x = torch.from_numpy(rng.standard_normal((2, 5, 7))).cuda().requires_grad_(True)
    flow = torch.from_numpy(rng.uniform(-2, 2, (5, 7, 2))).float().cuda()
    out = lc.warp(x, flow)
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.dtype == torch.float64
    close(out.cpu().numpy(), motion.warp(x.detach().cpu().numpy(), flow.cpu().numpy()))


def test_subprocesses_extend_the_callers_pythonpath(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/caller/a", "/caller/b"]))
    assert _env()["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/caller/a", "/caller/b"]


@pytest.mark.parametrize("numpy_version, numba_cuda_version, bad", [
    ("2.5.2", "0.30.4", True), ("2.5.0rc1", "0.28.1", True), ("2.4.6", "0.30.4", False),
    ("2.5.2", None, False), ("2.5.2", "0.31.0", False)])
def test_incompatible_numpy_numba_cuda_pairs(numpy_version, numba_cuda_version, bad):
    from lmref.cuda import _runtime

    if bad:
        with pytest.raises(RuntimeError, match=r"numpy<2\.5"):
            _runtime.check_versions(numpy_version, numba_cuda_version)
    else:
        _runtime.check_versions(numpy_version, numba_cuda_version)


def test_incompatible_pair_is_reported_at_the_first_call(monkeypatch):
    import importlib

    from lmref.cuda import _runtime

    monkeypatch.setattr(_runtime, "_installed_versions", lambda: ("2.5.2", "0.30.4"))
    monkeypatch.setattr(_runtime, "_versions_ok", False)
    importlib.reload(lc)  # importing never checks
    with pytest.raises(RuntimeError, match=r"numba-cuda 0\.30\.4 does not work with NumPy 2\.5\.2"):
        lc.warp(np.zeros((2, 2)), np.zeros((2, 2, 2)))


def test_the_cuda_extra_pins_a_working_numpy():
    import tomllib

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["cuda"]
    assert any(r.replace(" ", "").startswith("numpy<2.5") for r in extra), extra
