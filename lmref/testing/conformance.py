"""Conformance: the installed PyTorch (or JAX) against lmref, op by op, as a table.

Run ``python -m lmref.testing.conformance --framework torch`` (or ``jax``). For every
registered op with a peer (``lmref.registry``; the peers live in ``lmref.peers.torch_<family>``
and ``lmref.peers.jax_<family>``), a few cases (the op's example drawn with several seeds) are
run through the framework and through lmref. ``--peer OP=MODULE:FUNC`` (or ``peers=`` of
:func:`run_conformance`) checks your own function instead, ``--framework numpy`` plain NumPy
functions (``--peer-backward`` adds their backward):

* ``f64 fwd`` / ``f64 bwd``: the framework in float64 against lmref, forward and (autograd
  against lmref's manual backward) gradients, at the op's float64 tolerance (at least
  rtol 1e-9, atol 1e-10);
* ``f32 fwd`` / ``f32 bwd``: the same inputs rounded to float32 and run in float32, against
  lmref in float64 on the *rounded* inputs (so only the framework's arithmetic is measured),
  at float32 tolerances: rtol 1.3e-6, atol 1e-5 times the largest magnitude of lmref's result
  (float32 errors scale with the data, not with 1).

Each cell holds the largest absolute error. Then the known convention differences are probed
(documented deviations, not failures) and the command exits with 0 when every check passes,
1 when one fails or when no case was checked at all, 2 when the framework is not installed or
an argument is wrong.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lmref import registry
from lmref.testing import compare

__all__ = ["run_conformance", "ConformanceResult", "Row", "Deviation", "DEVIATIONS", "main"]

FRAMEWORKS = ("torch", "jax", "numpy")
CHECKS = ("f64 fwd", "f64 bwd", "f32 fwd", "f32 bwd")
_F32 = (1.3e-6, 1e-5)


@dataclass
class Cell:
    """One check of one case: its largest absolute error, or why it did not run."""

    err: float | None = None
    ok: bool = True
    note: str = ""

    def text(self) -> str:
        if self.note:
            return self.note
        return f"{self.err:.1e}" + ("" if self.ok else " FAIL")


@dataclass
class Row:
    op: str
    peer: str
    case: str
    cells: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and all(c.ok for c in self.cells.values())


@dataclass
class Deviation:
    """A documented convention difference between lmref and a framework (not a failure).

    ``probe(fw)`` demonstrates it on a tiny input and returns ``(status, detail)`` with status
    ``"differs"``, ``"refused"`` (the framework raises) or ``"agrees"``; the deviation is
    *confirmed* when the status is ``expected``.
    """

    op: str
    framework: str
    title: str
    lmref: str
    framework_side: str
    expected: str
    probe: Callable | None = None


@dataclass
class ConformanceResult:
    framework: str
    version: str
    rows: list
    deviations: list  # (Deviation, status, detail)
    skipped: list  # (op, why)

    @property
    def ok(self) -> bool:
        """Every checked case passed and no probe broke; a run that checked nothing fails."""
        return bool(self.rows) and all(r.ok for r in self.rows) and \
            not any(s == "error" for _, s, _ in self.deviations)


# --- frameworks --------------------------------------------------------------------------------

class _Torch:
    name = "torch"

    def __init__(self):
        import torch
        self.torch = torch
        self.version = torch.__version__

    def peer(self, op):
        return op.get("peer") if op.peer else None

    def peer_name(self, op):
        return op.peer_name or op.peer or ""

    def run(self, fn, args, kwargs, dtype, grad_out=None, nondiff=()):
        torch = self.torch
        tdt = getattr(torch, dtype)
        ts = [torch.from_numpy(np.array(a, np.float64)).to(tdt).requires_grad_(
            grad_out is not None and i not in nondiff) for i, a in enumerate(args)]
        out = fn(*ts, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        out_np = tuple(o.detach().to(torch.float64).numpy().copy() for o in outs)
        if grad_out is None:
            return out_np, None
        gos = grad_out if isinstance(grad_out, tuple) else (grad_out,)
        diff = [t for i, t in enumerate(ts) if i not in nondiff]
        grads = iter(torch.autograd.grad(
            [o for o in outs], diff, [torch.from_numpy(np.asarray(g, np.float64)).to(tdt)
                                      for g in gos[:len(outs)]], allow_unused=True))
        result = []
        for i, t in enumerate(ts):
            if i in nondiff:
                result.append(None)
                continue
            g = next(grads)
            result.append(np.zeros(t.shape) if g is None else g.to(torch.float64).numpy().copy())
        return out_np, tuple(result)


class _Jax:
    """JAX peers: :func:`lmref.peers.jax_peer` (``lmref.peers.jax_<family>``), run by
    :func:`lmref.peers.run_jax_peer` inside ``jax.enable_x64(True)`` (thread-local: the global
    flag is left alone), gradients by ``jax.vjp``."""

    name = "jax"

    def __init__(self):
        import jax
        self.jax = jax
        self.version = jax.__version__

    def peer(self, op):
        from lmref.peers import jax_peer
        found = jax_peer(op)
        return None if found is None else found[0]

    def peer_name(self, op):
        from lmref.peers import jax_peer
        found = jax_peer(op)
        return "" if found is None else found[1]

    def run(self, fn, args, kwargs, dtype, grad_out=None, nondiff=()):
        from lmref.peers import run_jax_peer
        res = run_jax_peer(fn, args, kwargs, grad_out, nondiff=nondiff, dtype=dtype)
        out, grads = (res, None) if grad_out is None else res
        return _tuple(out), grads


class _NumPy:
    """User functions on NumPy arrays (``framework="numpy"``): no autodiff, so the backward
    columns run only for ops given a ``(forward, backward)`` pair, ``backward(grad_out,
    *arrays, **kwargs) -> tuple`` in lmref's signature."""

    name = "numpy"

    def __init__(self):
        self.version = np.__version__

    def peer(self, op):
        return None

    def run(self, fn, args, kwargs, dtype, grad_out=None, nondiff=()):
        forward, backward = fn if isinstance(fn, tuple) else (fn, None)
        xs = [np.asarray(a, np.float64).astype(dtype) for a in args]
        out = tuple(np.asarray(o, np.float64) for o in _tuple(forward(*xs, **kwargs)))
        if grad_out is None or backward is None:
            return out, None
        gos = tuple(np.asarray(g, np.float64).astype(dtype) for g in _tuple(grad_out))
        grads = _tuple(backward(gos if isinstance(grad_out, tuple) else gos[0], *xs, **kwargs))
        return out, tuple(None if g is None else np.asarray(g, np.float64) for g in grads)


def _load_framework(name: str):
    if name not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}, got {name!r}")
    try:
        return {"torch": _Torch, "jax": _Jax, "numpy": _NumPy}[name]()
    except ImportError:
        return None


# --- checks ------------------------------------------------------------------------------------

def _tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _cell(ours, theirs, rtol, atol, *, scaled=False) -> Cell:
    ours, theirs = _tuple(ours), _tuple(theirs)
    if len(ours) != len(theirs):
        return Cell(None, False, f"{len(theirs)} outputs vs {len(ours)}")
    err, ok = 0.0, True
    for o, t in zip(ours, theirs):
        if o is None or t is None:
            continue
        o = np.asarray(o, np.float64)
        a = atol * max(1.0, float(np.max(np.abs(o), initial=0.0))) if scaled else atol
        rep = compare(t, o, rtol=rtol, atol=a)
        if rep.shape != o.shape or "shape mismatch" in rep.message:
            return Cell(None, False, "shape FAIL")
        ok &= rep.ok
        err = max(err, rep.max_abs_err if np.isfinite(rep.max_abs_err) else np.inf)
        if not rep.ok and rep.n_mismatch and not np.isfinite(rep.worst_actual or 0.0):
            err = np.inf
    return Cell(err, ok)


def _check_case(fw, op, peer, args, kw, checks) -> dict:
    cpu, bwd = op.get("cpu"), op.get("backward")
    cells = {}
    rtol64, atol64 = max(op.rtol, 1e-9), max(op.atol, 1e-10)
    for dtype in ("float64", "float32"):
        fwd_key, bwd_key = f"f{dtype[-2:]} fwd", f"f{dtype[-2:]} bwd"
        if fwd_key not in checks and bwd_key not in checks:
            continue
        if dtype == "float32":  # lmref on the rounded inputs: measure the framework only
            inputs = [np.asarray(a, np.float64).astype(np.float32).astype(np.float64) for a in args]
            rtol, atol, scaled = _F32[0], _F32[1], True
        else:
            inputs, rtol, atol, scaled = [np.asarray(a) for a in args], rtol64, atol64, False
        ours = cpu(*inputs, **kw)
        want_bwd = bwd is not None and bwd_key in checks
        g = None
        if want_bwd:
            rng = np.random.default_rng(2)
            g = tuple(rng.standard_normal(np.shape(o)) for o in _tuple(ours))
            if dtype == "float32":
                g = tuple(x.astype(np.float32).astype(np.float64) for x in g)
            g = g if isinstance(ours, tuple) else g[0]
        theirs, grads = fw.run(peer, inputs, kw, dtype, g, op.nondiff)
        if fwd_key in checks:
            cells[fwd_key] = _cell(ours, theirs, rtol, atol, scaled=scaled)
        if bwd_key in checks:
            if not want_bwd or grads is None:  # no backward, or a user peer without one
                cells[bwd_key] = Cell(note="-")
            else:
                mine = _tuple(bwd(g, *inputs, **kw))
                pairs = [(m, t) for i, (m, t) in enumerate(zip(mine, grads)) if i not in op.nondiff]
                cells[bwd_key] = _cell(tuple(m for m, _ in pairs), tuple(t for _, t in pairs),
                                       rtol, atol, scaled=scaled)
    return cells


def _user_peer(value, framework):
    """A user peer: a callable, a ``"module:attr"`` string, or (numpy) a (forward, backward) pair."""
    if isinstance(value, str):
        if ":" not in value:
            raise ValueError(f"a peer must be 'module:function', got {value!r}")
        try:
            return registry.resolve(value)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot load peer {value!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(value, tuple) and framework == "numpy" and len(value) == 2:
        fwd, bwd = (_user_peer(v, framework) if v is not None else None for v in value)
        return (fwd, bwd)
    if not callable(value):
        raise TypeError(f"a peer must be a callable or 'module:function', got "
                        f"{type(value).__name__}")
    return value


def run_conformance(framework: str = "torch", *, ops=None, seeds: int = 3,
                    checks=CHECKS, probe_deviations: bool = True,
                    peers=None) -> ConformanceResult | None:
    """Check ``framework`` against lmref for every registered op with a peer.

    Returns ``None`` when the framework is not installed. ``ops`` restricts the op names;
    ``seeds`` is the number of cases per op (the op's example with seeds 0, 1, ...).

    ``peers`` checks *your* functions instead of lmref's built-in peers: a mapping from op
    name to a callable (or a ``"module:function"`` string) with the op's signature in the
    framework's arrays: torch tensors for ``"torch"`` (gradients by autograd), JAX arrays for
    ``"jax"`` (``jax.vjp``), NumPy arrays for ``"numpy"`` (forward only, or a ``(forward,
    backward)`` pair with ``backward(grad_out, *arrays, **kwargs) -> tuple``). Without ``ops``
    exactly the mapped ops are checked, on the registry's example inputs and options; the
    documented convention differences are then not probed (they are about the built-in peers).
    A result with no checked case is not ``ok``.
    """
    fw = _load_framework(framework)
    if fw is None:
        return None
    table = registry.ops()
    user = {} if peers is None else dict(peers)
    names = list(table) if ops is None and not user else list(ops if ops is not None else user)
    unknown = [n for n in dict.fromkeys(names + list(user)) if n not in table]
    if unknown:
        raise ValueError(f"ops must be registered op names, unknown: {unknown}; "
                         f"registered: {sorted(table)}")
    user = {n: _user_peer(v, framework) for n, v in user.items()}
    rows, skipped = [], []
    for name in names:
        op = table[name]
        peer = user[name] if name in user else fw.peer(op)
        if peer is None or op.example is None:
            skipped.append((name, f"no {framework} counterpart" if peer is None else "no example"))
            continue
        label = _describe(user[name]) if name in user else fw.peer_name(op)
        for seed in range(seeds):
            row = Row(name, label, f"#{seed}")
            try:
                args, kw = op.get("example")(np.random.default_rng(seed))
                row.cells = _check_case(fw, op, peer, args, kw, checks)
            except Exception as exc:  # a crashing peer is a failed row, not a crashed table
                row.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            rows.append(row)
    devs = []
    if probe_deviations and not user:
        for dev in DEVIATIONS:
            if dev.framework != framework or dev.op not in table or dev.op not in names:
                continue
            try:
                status, detail = dev.probe(fw) if dev.probe else (dev.expected, "")
            except Exception as exc:
                status, detail = "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            devs.append((dev, status, detail))
    return ConformanceResult(framework, fw.version, rows, devs, skipped)


def _describe(fn) -> str:
    fn = fn[0] if isinstance(fn, tuple) else fn
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"yours: {getattr(fn, '__module__', None) or '?'}.{name}"


# --- known convention differences --------------------------------------------------------------

def _probe_nearest_ties(fw):
    from lmref.motion import warp
    x = np.arange(2 * 6, dtype=np.float64).reshape(1, 1, 2, 6)
    flow = np.zeros((2, 6, 2))
    flow[..., 0] = 0.5  # every sample exactly half-way between two columns
    ours = warp(x, flow, mode="nearest", boundary="border")
    theirs = fw.run(registry.get("warp").get("peer"), [x, flow],
                    {"mode": "nearest", "boundary": "border"}, "float64")[0][0]
    n = int(np.sum(ours != theirs))
    return ("differs" if n else "agrees"), f"uniform dx = 0.5: {n} of {x.size} pixels differ"


def _probe_border_clamp_gradient(fw):
    from lmref.motion import warp_backward
    peer = registry.get("warp").get("peer")
    x = np.arange(1.0, 17.0).reshape(1, 1, 4, 4) ** 2
    flow = np.zeros((4, 4, 2))
    flow[:, 0, 0] = -0.0  # column 0 samples exactly at the clamp point p = 0
    g = np.ones((1, 1, 4, 4))
    kw = {"mode": "bilinear", "boundary": "border"}
    ours = warp_backward(g, x, flow, **kw)[1]
    theirs = fw.run(peer, [x, flow], kw, "float64", g)[1][1]
    diff = np.abs(ours - theirs)[:, 0, 0]
    n = int(np.sum(diff > 1e-12))
    return ("differs" if n else "agrees"), \
        f"d out / d dx at the clamp point x = 0: lmref {ours[0, 0, 0]:g}, framework " \
        f"{theirs[0, 0, 0]:g} ({n} of 4 rows differ)"


def _probe_one_pixel_frame(fw):
    from lmref.motion import warp
    x = np.arange(5.0).reshape(1, 1, 1, 5)
    flow = np.full((1, 5, 2), 0.25)
    flow[..., 1] = 0.0
    ours = warp(x, flow)
    theirs = fw.run(registry.get("warp").get("peer"), [x, flow],
                    {"mode": "bilinear", "boundary": "zeros"}, "float64")[0][0]
    bad = ~np.isclose(ours, theirs, rtol=1e-9, atol=1e-12)
    return ("differs" if bad.any() else "agrees"), \
        f"H = 1: {int(bad.sum())} of {x.size} outputs differ (grid_sample divides by H - 1 = 0)"


def _torch_conv2d_same(fw, x, w, stride):
    """The framework's own F.conv2d(padding='same') (not lmref's peer, which emulates it)."""
    torch = fw.torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "padding='same' with even kernel ..."
        return torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), stride=stride,
                                          padding="same").numpy()


def _probe_strided_same(fw):
    from lmref.conv import conv2d
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 7, 7)), rng.standard_normal((1, 1, 3, 3))
    ours = conv2d(x, w, stride=2, padding="same")
    try:
        _torch_conv2d_same(fw, x, w, 2)
    except Exception as exc:
        return "refused", f"lmref gives {ours.shape[2:]} = ceil(7 / 2); torch: " \
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:90]} (lmref's peer " \
                          f"pads with F.pad instead)"
    return "agrees", "F.conv2d accepts padding='same' with stride 2"


def _probe_same_even_kernel(fw):
    from lmref.conv import conv2d
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 6, 6)), rng.standard_normal((1, 1, 2, 2))
    ours = conv2d(x, w, padding="same")
    theirs = _torch_conv2d_same(fw, x, w, 1)
    same = ours.shape == theirs.shape and np.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    return ("agrees" if same else "differs"), \
        "2x2 kernel, 'same': the extra padding pixel goes at the end (bottom/right) in both" \
        if same else "2x2 kernel, 'same': results differ (extra pixel on another side?)"


def _map_coordinates(fw, x2, px, py, order, mode):
    """``jax.scipy.ndimage.map_coordinates`` of one plane at absolute (row, column) positions."""
    from jax.scipy.ndimage import map_coordinates
    with fw.jax.enable_x64(True):
        return np.asarray(map_coordinates(x2, [py, px], order=order, mode=mode), np.float64)


def _probe_jax_nearest_ties(fw):
    from lmref.motion import warp
    x = np.arange(1.0, 13.0).reshape(1, 1, 2, 6)
    flow = np.zeros((2, 6, 2))
    flow[..., 0] = -0.5  # every sample half-way; column 0 at p = -0.5
    ours = warp(x, flow, mode="nearest", boundary="zeros")[0, 0]
    ys, xs = np.mgrid[0:2, 0:6].astype(np.float64)
    theirs = _map_coordinates(fw, x[0, 0], xs - 0.5, ys, 0, "constant")
    n = int(np.sum(ours != theirs))
    return ("differs" if n else "agrees"), \
        f"uniform dx = -0.5, zeros: {n} of {x.size} pixels differ (column 0: p = -0.5 rounds " \
        f"to -1, outside, in map_coordinates; to 0 in lmref)"


def _probe_jax_map_coordinates_modes(fw):
    from lmref.motion import warp
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 5, 6))
    flow = rng.uniform(-3, 3, (5, 6, 2))
    ys, xs = np.mgrid[0:5, 0:6].astype(np.float64)
    bad = []
    for ours_mode, theirs_mode in (("zeros", "constant"), ("border", "nearest"), ("wrap", "wrap")):
        ours = warp(x, flow, boundary=ours_mode)[0, 0]
        theirs = _map_coordinates(fw, x[0, 0], xs + flow[..., 0], ys + flow[..., 1], 1,
                                  theirs_mode)
        if not np.allclose(ours, theirs, rtol=1e-12, atol=1e-12):
            bad.append(ours_mode)
    return ("differs" if bad else "agrees"), \
        "bilinear, flows in [-3, 3]: zeros = mode 'constant', border = 'nearest', wrap = " \
        "'wrap' " + (f"except {bad}" if bad else "all agree")


def _probe_jax_strided_same(fw):
    from jax import lax

    from lmref.conv import conv2d
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 1, 7, 8)), rng.standard_normal((1, 1, 2, 3))
    ours = conv2d(x, w, stride=2, padding="same")
    with fw.jax.enable_x64(True):
        theirs = np.asarray(lax.conv_general_dilated(x, w, (2, 2), "SAME",
                                                     dimension_numbers=("NCHW", "OIHW", "NCHW")))
    same = ours.shape == theirs.shape and np.allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    return ("agrees" if same else "differs"), \
        f"7x8 input, 2x3 kernel, stride 2: lmref {ours.shape[2:]}, JAX {theirs.shape[2:]}, " \
        + ("values equal" if same else "values differ")


def _probe_jax_conv_transpose_padding(fw):
    from jax import lax

    from lmref.conv import conv_transpose2d
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 4, 4)), rng.standard_normal((2, 3, 3, 3))
    ours = conv_transpose2d(x, w, stride=2, padding=0, output_padding=1)
    # with transpose_kernel=True the spec names the *forward* conv's kernel: lmref's
    # (C_in, C_out, kH, kW) is then "OIHW"
    dn = ("NCHW", "OIHW", "NCHW")

    def jax_t(pads):
        with fw.jax.enable_x64(True):
            return np.asarray(lax.conv_transpose(x, w, (2, 2), pads, dimension_numbers=dn,
                                                 transpose_kernel=True))

    def same(a):
        return a.shape == ours.shape and np.allclose(a, ours, rtol=1e-12, atol=1e-12)

    naive = jax_t([(0, 1), (0, 1)])       # torch's padding=0, output_padding=1 read literally
    mapped = jax_t([(2, 3), (2, 3)])      # (d (k - 1) - p, d (k - 1) - p + output_padding)
    return ("agrees" if same(naive) else "differs"), \
        f"stride 2, 3x3, padding 0, output_padding 1: lmref {ours.shape[2:]}; " \
        f"lax.conv_transpose(padding=[(0, 1)] * 2) {naive.shape[2:]}; [(2, 3)] * 2 " \
        f"{'matches' if same(mapped) else 'does NOT match'} lmref"


DEVIATIONS = [
    Deviation("warp", "torch", "nearest rounding at exact ties",
              "floor(p + 0.5): ties round half up",
              "grid_sample(mode='nearest') rounds half to even (nearbyint)", "differs",
              _probe_nearest_ties),
    Deviation("warp", "torch", "normalised coordinates",
              "flows in pixels; any frame size",
              "grid_sample takes normalised positions 2 p / (size - 1) - 1 (align_corners=True), "
              "undefined for a 1-pixel-high or -wide frame", "differs", _probe_one_pixel_frame),
    Deviation("warp", "torch", "derivative at the 'border' clamp point",
              "right-sided derivative at p = 0 (the cell [0, 1])",
              "grid_sample returns 0 for the clamped coordinate", "differs",
              _probe_border_clamp_gradient),
    Deviation("conv2d", "torch", "'same' padding with stride > 1",
              "allowed: output ceil(n / stride), TensorFlow's split (extra pixel at the end)",
              "F.conv2d refuses padding='same' for strided convolutions", "refused",
              _probe_strided_same),
    Deviation("warp", "jax", "nearest rounding at exact ties (map_coordinates)",
              "floor(p + 0.5): ties round half up",
              "jax.scipy.ndimage.map_coordinates(order=0) rounds half away from zero (differs "
              "at negative ties only); lmref's JAX peer is an explicit gather with lmref's rule",
              "differs", _probe_jax_nearest_ties),
    Deviation("warp", "jax", "boundary modes of map_coordinates",
              "boundary zeros / border / wrap; flows in pixels, (dx, dy) = (columns, rows)",
              "map_coordinates(order=1) takes absolute (row, column) positions; mode 'constant' "
              "(cval 0), 'nearest', 'wrap' are the same samples", "agrees",
              _probe_jax_map_coordinates_modes),
    Deviation("conv2d", "jax", "'same' padding with stride > 1",
              "output ceil(n / stride), total padding split with the extra pixel at the end",
              "lax.conv_general_dilated(padding='SAME'): the same rule for every stride and "
              "dilation (lmref's JAX peer passes 'SAME' through)", "agrees",
              _probe_jax_strided_same),
    Deviation("conv_transpose2d", "jax", "meaning of conv_transpose padding",
              "padding / output_padding as torch: output (n - 1) s - 2 p + d (k - 1) + "
              "output_padding + 1",
              "lax.conv_transpose pads the stride-dilated input: pass pairs (d (k - 1) - p, "
              "d (k - 1) - p + output_padding) with transpose_kernel=True", "differs",
              _probe_jax_conv_transpose_padding),
    Deviation("conv2d", "torch", "'same' padding with an even kernel",
              "total padding d (k - 1), the extra pixel at the end (bottom/right)",
              "the same split", "agrees", _probe_same_even_kernel),
]


# --- output ------------------------------------------------------------------------------------

def format_result(res: ConformanceResult, checks=CHECKS) -> list[str]:
    lines = [f"lmref conformance: {res.framework} {res.version} against lmref (float64 oracle); "
             f"cells: largest absolute error", ""]
    cols = ["op", "counterpart", "case", *checks, "verdict"]
    body = []
    for r in res.rows:
        cells = [r.cells[c].text() if c in r.cells else "-" for c in checks]
        if r.error:
            cells = ["error"] * len(checks)
        peer = r.peer if len(r.peer) <= 56 else r.peer[:55] + "~"
        body.append([r.op, peer, r.case, *cells, "PASS" if r.ok else "FAIL"])
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    lines.append("  ".join("-" * w for w in widths))
    for r, b in zip(res.rows, body):
        lines.append("  ".join(v.ljust(w) for v, w in zip(b, widths)).rstrip())
        if r.error:
            lines.append(f"    {r.error}")
    for name, why in res.skipped:
        lines.append(f"{name}: skipped ({why})")
    if res.deviations:
        lines += ["", "Known convention differences (documented deviations, not failures):"]
        for dev, status, detail in res.deviations:
            verdict = {True: "confirmed", False: "CHANGED"}[status == dev.expected] \
                if status != "error" else "PROBE ERROR"
            lines.append(f"- {dev.op}: {dev.title} [{verdict}: {status}]")
            lines.append(f"    lmref: {dev.lmref}")
            lines.append(f"    {res.framework}: {dev.framework_side}")
            if detail:
                lines.append(f"    probe: {detail}")
    n_ok = sum(r.ok for r in res.rows)
    if not res.rows:
        lines += ["", f"FAILED: no case was checked (no op here has a {res.framework} "
                      f"counterpart and an example); nothing was compared"]
        return lines
    lines += ["", f"{n_ok} of {len(res.rows)} cases pass"
              + ("" if res.ok else " -- FAILURES above")
              + f"; tolerances: float64 max(op tolerance, rtol 1e-9 / atol 1e-10), float32 "
                f"rtol {_F32[0]:g} / atol {_F32[1]:g} x max|lmref|"]
    return lines


def main(argv=None, print_fn=print) -> int:
    p = argparse.ArgumentParser(prog="python -m lmref.testing.conformance",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", choices=FRAMEWORKS, default="torch")
    p.add_argument("--ops", default=None, help="comma-separated op names (default: all)")
    p.add_argument("--seeds", type=int, default=3, help="cases per op (default 3)")
    p.add_argument("--no-float32", action="store_true", help="float64 checks only")
    p.add_argument("--peer", action="append", default=[], metavar="OP=MODULE:FUNC",
                   help="check your own function for OP instead of lmref's built-in peer "
                        "(repeatable); it takes the framework's arrays and the op's options")
    p.add_argument("--peer-backward", action="append", default=[], metavar="OP=MODULE:FUNC",
                   help="with --framework numpy: your backward(grad_out, *arrays, **options) "
                        "for OP (torch and jax differentiate the forward themselves)")
    args = p.parse_args(argv)
    checks = tuple(c for c in CHECKS if not (args.no_float32 and c.startswith("f32")))
    if args.framework == "torch":
        _quiet_torch_threads()
    try:
        peers = _parse_peers(args.peer, args.peer_backward, args.framework)
        res = run_conformance(args.framework, ops=None if args.ops is None else
                              [o.strip() for o in args.ops.split(",") if o.strip()],
                              seeds=args.seeds, checks=checks, peers=peers or None)
    except (ValueError, TypeError) as exc:
        print_fn(f"error: {exc}")
        return 2
    if res is None:
        print_fn(f"{args.framework} is not installed: nothing to check "
                 f"(pip install {args.framework})")
        return 2
    for line in format_result(res, checks):
        print_fn(line)
    return 0 if res.ok else 1


def _parse_peers(forward, backward, framework) -> dict:
    def split(items, flag):
        out = {}
        for item in items:
            op, sep, path = item.partition("=")
            if not sep or not op.strip() or ":" not in path:
                raise ValueError(f"{flag} must look like OP=MODULE:FUNC, got {item!r}")
            out[op.strip()] = path.strip()
        return out
    fwd, bwd = split(forward, "--peer"), split(backward, "--peer-backward")
    if bwd and framework != "numpy":
        raise ValueError("--peer-backward is for --framework numpy (torch and jax "
                         "differentiate the forward)")
    missing = sorted(set(bwd) - set(fwd))
    if missing:
        raise ValueError(f"--peer-backward given without --peer for {missing}")
    return {op: (path, bwd[op]) if op in bwd else path for op, path in fwd.items()}


def _quiet_torch_threads():
    try:
        import torch
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
