"""lmref.cuda's host path: the inputs users pass (torch tensors that require grad, foreign
``__cuda_array_interface__`` arrays) and the work one call costs on the host (allocations,
copies, synchronisations, launches), pinned per function so that a regression shows in CI."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import registry
from lmref.cuda import _runtime

OPS = registry.ops()
FORWARD = sorted(n for n in lc._FUNCTIONS if n in OPS)


def _case(name):
    """(function name, args, kwargs, CPU result) for every forward and backward twin, on the
    registry's example (backward: grad_out first)."""
    fwd = name.removesuffix("_backward")
    args, kw = OPS[fwd].get("example")(np.random.default_rng(0))
    if name == fwd:
        return args, kw, OPS[fwd].get("cpu")(*args, **kw)
    g = np.random.default_rng(1).standard_normal(np.shape(OPS[fwd].get("cpu")(*args, **kw)))
    return (g, *args), kw, OPS[fwd].get("backward")(g, *args, **kw)


ALL = sorted(lc._FUNCTIONS)


class Foreign:
    """Another library's device array in the simulator: only ``__cuda_array_interface__``
    (the simulator's 'device' memory is host memory, so the pointer is a host address)."""

    def __init__(self, a):
        self.keep = a
        self.__cuda_array_interface__ = {
            "shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
            "strides": None if a.flags.c_contiguous else a.strides, "version": 3}


class GradTensor:
    """Like a torch CUDA tensor that requires grad: the interface raises a RuntimeError,
    ``.detach()`` gives the data."""

    def __init__(self, a):
        self.a = a

    @property
    def __cuda_array_interface__(self):
        raise RuntimeError("Can't get __cuda_array_interface__ on Variable that requires grad")

    def detach(self):
        return Foreign(self.a)


def _as(kind, args):
    return tuple(kind(np.asarray(a)) if isinstance(a, np.ndarray) else a for a in args)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", [GradTensor, Foreign], ids=["requires_grad", "foreign"])
def test_every_function_takes_grad_tensors_and_foreign_arrays(close, name, kind):
    args, kw, cpu = _case(name)
    out = getattr(lc, name)(*_as(kind, args), **kw)
    assert not isinstance(out if not isinstance(out, tuple) else out[0], np.ndarray)
    close(out, cpu, **({"rtol": 0, "atol": 0} if name.startswith("max_pool") else {}))


def test_foreign_arrays_of_other_dtypes_and_strides(rng, close):
    from lmref import motion

    x = rng.uniform(-9, 9, (2, 5, 14))
    flow = rng.uniform(-2, 2, (5, 7, 2))
    strided = x[:, :, ::2]
    close(lc.warp(Foreign(strided), Foreign(flow.astype(np.float32))),
          motion.warp(strided, flow.astype(np.float32)))
    assert _runtime.is_device_array(GradTensor(x)) and _runtime.is_device_array(Foreign(x))
    assert not _runtime.is_device_array(x) and not _runtime.is_device_array([1.0])


@pytest.mark.parametrize("name", ALL)
def test_torch_cpu_tensors_that_require_grad(close, name):
    torch = pytest.importorskip("torch")
    args, kw, cpu = _case(name)
    targs = tuple(torch.from_numpy(a.copy()).requires_grad_(True) if isinstance(a, np.ndarray)
                  else a for a in args)
    out = getattr(lc, name)(*targs, **kw)
    assert isinstance(out if not isinstance(out, tuple) else out[0], np.ndarray)  # host in
    close(out, cpu, **({"rtol": 0, "atol": 0} if name.startswith("max_pool") else {}))


# ---------------------------------------------------------------------------- counts per call

#: function -> counts of a repeated call (caches warm) on numba device arrays, and on NumPy
#: arrays. Device inputs: no allocation but the results', no copy, no synchronisation
#: (block_match: one, its value checks); NumPy inputs: an upload per array argument, a copy
#: back per result (each a synchronisation), every device buffer from the scratch cache.
#: launch counts: casts none (float64 C inputs); warp_backward and conv2d_backward zero-fill
#: or reduce in more than one kernel; local_multiply's example uses "l2" (normalisations).
COUNTS = {
    "block_match": ({"alloc": 2, "h2d": 0, "d2h": 1, "sync": 1, "launch": 4},
                    {"alloc": 0, "h2d": 2, "d2h": 2, "sync": 2, "launch": 3}),
    "conv2d": ({"alloc": 1, "h2d": 0, "d2h": 0, "sync": 0, "launch": 1},
               {"alloc": 0, "h2d": 3, "d2h": 1, "sync": 1, "launch": 1}),
    "conv2d_backward": ({"alloc": 3, "h2d": 0, "d2h": 0, "sync": 0, "launch": 3},
                        {"alloc": 0, "h2d": 4, "d2h": 3, "sync": 3, "launch": 3}),
    "local_multiply": ({"alloc": 1, "h2d": 0, "d2h": 0, "sync": 0, "launch": 3},
                       {"alloc": 0, "h2d": 2, "d2h": 1, "sync": 1, "launch": 3}),
    "local_multiply_backward": ({"alloc": 2, "h2d": 0, "d2h": 0, "sync": 0, "launch": 5},
                                {"alloc": 0, "h2d": 3, "d2h": 2, "sync": 2, "launch": 5}),
    "max_pool2d": ({"alloc": 1, "h2d": 0, "d2h": 0, "sync": 0, "launch": 1},
                   {"alloc": 0, "h2d": 1, "d2h": 1, "sync": 1, "launch": 1}),
    "max_pool2d_backward": ({"alloc": 1, "h2d": 0, "d2h": 0, "sync": 0, "launch": 1},
                            {"alloc": 0, "h2d": 2, "d2h": 1, "sync": 1, "launch": 1}),
    "warp": ({"alloc": 1, "h2d": 0, "d2h": 0, "sync": 0, "launch": 1},
             {"alloc": 0, "h2d": 2, "d2h": 1, "sync": 1, "launch": 1}),
    "warp_backward": ({"alloc": 2, "h2d": 0, "d2h": 0, "sync": 0, "launch": 2},
                      {"alloc": 0, "h2d": 3, "d2h": 2, "sync": 2, "launch": 2}),
}


def _counts(name, args, kw):
    fn = getattr(lc, name)
    fn(*args, **kw)  # first call: compiles, fills the caches
    with _runtime.counting() as counts:
        fn(*args, **kw)
    return counts


@pytest.mark.parametrize("name", ALL)
def test_counts_per_call(to_device, name):
    args, kw, _ = _case(name)
    device = tuple(to_device(a) if isinstance(a, np.ndarray) else a for a in args)
    on_device, on_host = COUNTS[name]
    assert _counts(name, device, kw) == on_device
    assert _counts(name, args, kw) == on_host


def test_geometry_tables_are_uploaded_once(rng):
    x, w = rng.standard_normal((1, 2, 5, 7)), rng.standard_normal((3, 2, 3, 3))
    _runtime.clear_caches()
    with _runtime.counting() as first:
        lc.conv2d(x, w, None, padding=1, padding_mode="reflect")
    with _runtime.counting() as again:
        lc.conv2d(x, w, None, padding=1, padding_mode="reflect")
    # pad maps (2) and the zero bias: uploaded (synchronously) on the first call only
    assert first["h2d"] - again["h2d"] == 3 and first["sync"] - again["sync"] == 3
    assert again["alloc"] == 0


def test_counting_hook_nests_and_stops():
    with _runtime.counting() as outer:
        with _runtime.counting() as inner:
            _runtime._count("launch")
        _runtime._count("launch")
    _runtime._count("launch")
    assert inner["launch"] == 1 and outer["launch"] == 2 and not _runtime._counters
