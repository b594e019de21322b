"""Tools for testing your own (PyTorch/JAX/NumPy) code against lmref.

* :func:`compare` returns a :class:`Report` (mismatch count, worst element, ULP distance and a
  diagnosis of the mismatch pattern: border only -> padding, a one-pixel shift -> origin/flip,
  some channels -> grouping, transposed -> layout, a constant factor -> normalisation...);
  :func:`assert_close` raises with that report.
* :func:`gradcheck` holds a manual backward (vector-Jacobian product) against central finite
  differences in float64; :func:`check_vjp` holds a user's backward against lmref's;
  :func:`torch_forward` / :func:`torch_backward` turn a PyTorch function into the NumPy
  callables both expect (autograd supplies the backward).
* :mod:`lmref.testing.strategies` (needs ``hypothesis``): strategies for valid argument sets.
* ``python -m lmref.testing.conformance --framework torch``: the installed framework against
  every registered op, as a table.

Example (your PyTorch layer against lmref)::

    import torch, numpy as np
    from lmref.conv import conv2d
    from lmref.testing import assert_close
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    mine = my_conv(torch.from_numpy(x), torch.from_numpy(w))   # float32 tensor
    assert_close(mine, conv2d(x, w, padding=1))                # float32 tolerances, diagnosis
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from lmref.testing import _diagnose as _diag

__all__ = ["Report", "compare", "assert_close", "default_tolerances", "gradcheck",
           "GradcheckReport", "check_vjp", "ulp_distance", "torch_forward", "torch_backward",
           "conv_suspects", "warp_suspects", "assert_op_close", "compare_op"]

#: (rtol, atol) per dtype of the *less precise* operand (the values of ``torch.testing``).
#: float64 is an oracle's tolerance: it admits reordered sums, not algorithmic error.
#: ``bfloat16`` arrives as float32 in NumPy, so pass ``dtype="bfloat16"`` to :func:`compare`
#: to get its tolerance (torch bfloat16 tensors and ml_dtypes arrays are recognised).
_TOLERANCES = {
    "float64": (1e-10, 1e-12),
    "float32": (1.3e-6, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "float16": (1e-3, 1e-5),
}
_PRECISION_ORDER = ("float16", "bfloat16", "float32", "float64")


def _dtype_name(dtype) -> str:
    """Name of a NumPy, PyTorch (``torch.float32``) or JAX dtype, or a dtype string."""
    if isinstance(dtype, str):
        name = dtype
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    name = name.removeprefix("torch.")
    return {"half": "float16", "float": "float32", "double": "float64", "bf16": "bfloat16"}.get(
        name, name)


def default_tolerances(dtype) -> tuple[float, float]:
    """Default ``(rtol, atol)`` for results computed in ``dtype`` (integers compare exactly).

    ``dtype`` may be a NumPy dtype, a PyTorch dtype (``torch.float16``) or a name
    (``"bfloat16"``). Unknown floating names get the float64 tolerances.
    """
    name = _dtype_name(dtype)
    if name in _TOLERANCES:
        return _TOLERANCES[name]
    try:
        kind = np.dtype(name).kind
    except TypeError:
        kind = "f"
    if kind in "iub":
        return (0.0, 0.0)
    return _TOLERANCES["float64"]


def _less_precise(a: str, b: str):
    floats = [c for c in (a, b) if c in _PRECISION_ORDER]
    return min(floats, key=_PRECISION_ORDER.index) if floats else a


def _to_numpy(x):
    """Accept NumPy arrays, lists, and framework tensors (torch/JAX) without importing them."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            return x.float().numpy(), "bfloat16"
        return x.numpy(), None
    arr = np.asarray(x)
    if arr.dtype.name == "bfloat16":  # ml_dtypes / JAX
        return arr.astype(np.float32), "bfloat16"
    return arr, None


def ulp_distance(a, b) -> np.ndarray:
    """Number of representable float64 values between ``a`` and ``b`` (elementwise, int64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)

    def key(x):
        i = x.view(np.int64)
        return np.where(i < 0, np.int64(-2**63) - i, i)

    with np.errstate(over="ignore"):
        return np.abs(key(np.ascontiguousarray(a)) - key(np.ascontiguousarray(b)))


@dataclass
class Report:
    """Outcome of :func:`compare`. ``bool(report)`` is True when everything matched."""

    ok: bool
    shape: tuple
    rtol: float
    atol: float
    n_mismatch: int = 0
    n_total: int = 0
    worst_index: tuple | None = None
    worst_actual: float | None = None
    worst_desired: float | None = None
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    max_ulp: int = 0
    #: elements whose signs differ (one of them nonzero): ``max_ulp`` then means nothing
    n_sign_differs: int = 0
    diagnosis: list[str] = field(default_factory=list)
    message: str = ""

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.message


def _border_only(bad: np.ndarray) -> bool:
    """True if every mismatch lies in a thin outer frame of the spatial axes."""
    return _diag.border_width(bad) is not None


def compare(actual, desired, *, rtol=None, atol=None, dtype=None, equal_nan=True,
            suspects=None) -> Report:
    """Compare ``actual`` (your result) with ``desired`` (lmref's) elementwise.

    An element matches when ``|actual - desired| <= atol + rtol * |desired|`` (NaN matches NaN
    when ``equal_nan``; infinities match when equal). Default tolerances come from
    :func:`default_tolerances` for the less precise dtype of the two (or ``dtype``, e.g.
    ``"bfloat16"``). Shapes must be equal: no broadcasting (a silent broadcast hides layout
    bugs). Arrays, nested lists, PyTorch tensors (any device, bfloat16 included) and JAX arrays
    are accepted; the comparison itself is done in float64.

    Parameters
    ----------
    suspects : mapping of str to array, optional
        Results of likely mistakes computed with lmref (e.g. ``{"kernel flipped":
        conv2d(x, w[..., ::-1, ::-1])}``); a suspect that ``actual`` matches is named first in
        the diagnosis. :func:`conv_suspects` builds the usual ones for a convolution.

    Returns
    -------
    Report
        Mismatch count, worst element (index, values), max abs/rel error, max ULP distance and
        a diagnosis of the mismatch pattern: border only (padding; which sides), a shift of up to
        two pixels (origin / flip / 'same' split / flow sign), mirrored, transposed (layout),
        channels-last data reshaped as NCHW, only some channels or permuted channels (grouping,
        channel order), flow components swapped or one sign flipped, ``-desired`` (sign),
        ``c x desired`` (normalisation), ``desired + c`` (bias), float32-level errors, NaN or
        Inf in only one array; on a shape mismatch, the transpose that maps one onto the other
        or the spatial size difference.
    """
    a_np, a_dt = _to_numpy(actual)
    d_np, d_dt = _to_numpy(desired)
    for nm, arr in (("actual", a_np), ("desired", d_np)):
        if arr.dtype.kind not in "iufb":
            raise TypeError(f"{nm} must be a real array, got dtype {arr.dtype}")
    if a_np.shape != d_np.shape:
        drt, dat = default_tolerances(dtype or _less_precise(a_dt or a_np.dtype.name,
                                                             d_dt or d_np.dtype.name))
        rt, at = drt if rtol is None else rtol, dat if atol is None else atol
        a64 = a_np.astype(np.float64)
        notes = _suspect_notes(a64, suspects, rt, at) + \
            _diag.diagnose_shape(a64, d_np.astype(np.float64), rt, at)
        msg = f"shape mismatch: actual {a_np.shape} vs desired {d_np.shape}"
        msg += "".join(f"\ndiagnosis: {n}" for n in notes)
        return Report(False, a_np.shape, 0.0, 0.0, message=msg, diagnosis=notes)
    if dtype is None:
        dtype = _less_precise(a_dt or a_np.dtype.name, d_dt or d_np.dtype.name)
    drt, dat = default_tolerances(dtype)
    rtol = drt if rtol is None else float(rtol)
    atol = dat if atol is None else float(atol)
    a = a_np.astype(np.float64)
    d = d_np.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(a - d)
        bad = ~(err <= atol + rtol * np.abs(d))
        both_nan = np.isnan(a) & np.isnan(d)
        same_inf = np.isinf(a) & (a == d)
        bad |= (np.isinf(a) | np.isinf(d)) & ~same_inf  # inf - (-inf) is not "within inf"
        bad &= ~same_inf
        if equal_nan:
            bad &= ~both_nan
    n_bad = int(bad.sum())
    finite = np.isfinite(err)
    rep = Report(ok=n_bad == 0, shape=a.shape, rtol=rtol, atol=atol, n_mismatch=n_bad,
                 n_total=int(a.size))
    if a.size:
        rep.max_abs_err = float(err[finite].max()) if finite.any() else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(np.abs(d) > 0, err / np.abs(d), np.where(err > 0, np.inf, 0.0))
        rep.max_rel_err = float(np.nanmax(rel)) if rel.size else 0.0
        rep.max_ulp = int(ulp_distance(a[finite], d[finite]).max()) if finite.any() else 0
        rep.n_sign_differs = int(np.sum(np.signbit(a[finite]) != np.signbit(d[finite])
                                        & ((a[finite] != 0) | (d[finite] != 0))))
    if n_bad:
        with np.errstate(invalid="ignore", over="ignore"):
            score = np.where(bad, np.nan_to_num(err - rtol * np.abs(d), nan=np.inf,
                                                posinf=np.inf), -np.inf)
        flat = int(np.argmax(score))
        idx = np.unravel_index(flat, a.shape)
        rep.worst_index = tuple(int(i) for i in idx)
        rep.worst_actual = float(a[idx])
        rep.worst_desired = float(d[idx])
        rep.diagnosis = _suspect_notes(a, suspects, rtol, atol) + \
            _diag.diagnose(a, d, bad, rtol, atol)
        lines = [
            f"{n_bad} of {a.size} elements mismatch (rtol={rtol:g}, atol={atol:g})",
            f"worst at index {rep.worst_index}: actual {rep.worst_actual!r}, "
            f"desired {rep.worst_desired!r} (abs err {abs(rep.worst_actual - rep.worst_desired):.3g})",
            f"max abs err {rep.max_abs_err:.3g}, max rel err {rep.max_rel_err:.3g}, "
            + (f"max ULP distance {rep.max_ulp}" if not rep.n_sign_differs else
               f"signs differ at {rep.n_sign_differs} element(s) (no ULP distance: it counts "
               f"floats across zero)"),
        ]
        where = "only on the border" if _border_only(bad) else "spread over the array"
        lines.append(f"mismatches lie {where}")
        lines += [f"diagnosis: {n}" for n in rep.diagnosis]
        rep.message = "\n".join(lines)
    else:
        rep.message = (f"all {a.size} elements match (rtol={rtol:g}, atol={atol:g}); "
                       f"max abs err {rep.max_abs_err:.3g}"
                       + (f", max ULP {rep.max_ulp}" if not rep.n_sign_differs else
                          f"; signs differ at {rep.n_sign_differs} element(s) within atol"))
    return rep


def _suspect_notes(actual, suspects, rtol, atol) -> list[str]:
    notes = []
    for name, value in (suspects or {}).items():
        cand = np.asarray(_to_numpy(value)[0], np.float64)
        if cand.shape == actual.shape and _diag._close(actual, cand, rtol, atol):
            notes.append(f"actual matches the suspect: {name}")
    return notes


def assert_close(actual, desired, *, rtol=None, atol=None, dtype=None, equal_nan=True,
                 msg: str = "", suspects=None) -> Report:
    """Raise ``AssertionError`` with :func:`compare`'s report unless ``actual`` matches ``desired``.

    Default tolerances depend on the dtype (float64 tight: rtol 1e-10, atol 1e-12; float32:
    1.3e-6, 1e-5). The message gives the mismatch count, the worst index with expected and
    actual values there, and whether mismatches sit only at the border (a padding bug) or
    spread.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.testing import assert_close
    >>> bool(assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0])))
    True
    >>> assert_close(np.array([1.0, 2.5, 3.0]), np.array([1.0, 2.0, 3.0]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    AssertionError: 1 of 3 elements mismatch (rtol=1e-10, atol=1e-12)
    worst at index (1,): actual 2.5, desired 2.0 (abs err 0.5)
    ...
    """
    rep = compare(actual, desired, rtol=rtol, atol=atol, dtype=dtype, equal_nan=equal_nan,
                  suspects=suspects)
    if not rep.ok:
        raise AssertionError((msg + "\n" if msg else "") + rep.message)
    return rep


@dataclass
class GradcheckReport:
    ok: bool
    max_abs_err: float
    max_rel_err: float
    checked: int
    message: str

    def __bool__(self):
        return self.ok


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def gradcheck(fn: Callable, inputs: Sequence, grad_outputs, backward: Callable, *,
              eps: float = 1e-6, rtol: float = 1e-6, atol: float = 1e-8,
              wrt: Sequence[int] | None = None, max_checks: int | None = 200,
              seed: int = 0, raise_on_failure: bool = True) -> GradcheckReport:
    """Check a manual backward against central finite differences in float64.

    Parameters
    ----------
    fn : callable
        ``fn(*inputs) -> output`` (an array, or a tuple of arrays).
    inputs : sequence of arrays
        Inputs, converted to float64 copies (never modified).
    grad_outputs : array or tuple of arrays
        Cotangent(s) ``g`` of the output(s). The checked scalar is ``L = sum(g * fn(x))``.
    backward : callable
        ``backward(grad_outputs, *inputs) -> tuple`` of gradients, one per input (``None``
        for inputs it does not differentiate).
    eps : float
        Finite-difference step. ``dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)``.
    wrt : sequence of int, optional
        Which inputs to check (default: every input ``backward`` returns a gradient for).
    max_checks : int or None
        Check at most this many randomly chosen (seeded) elements per input; None checks all.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d, conv2d_backward
    >>> from lmref.testing import gradcheck
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> w = np.ones((1, 1, 2, 2))
    >>> report = gradcheck(lambda x, w: conv2d(x, w), [x, w], np.ones((1, 1, 2, 2)),
    ...                    lambda g, x, w: conv2d_backward(g, x, w)[:2])
    >>> report.ok, report.checked
    (True, 13)
    """
    xs = [np.array(x, dtype=np.float64) for x in inputs]
    g_out = tuple(np.asarray(g, np.float64) for g in _as_tuple(grad_outputs))
    single = not isinstance(grad_outputs, (tuple, list))
    analytic = _as_tuple(backward(g_out[0] if single else g_out, *[x.copy() for x in xs]))
    if len(analytic) != len(xs):
        raise ValueError(f"backward returned {len(analytic)} gradients for {len(xs)} inputs")

    def loss(args):
        outs = _as_tuple(fn(*args))
        return sum(float(np.sum(g * np.asarray(o, np.float64))) for g, o in zip(g_out, outs))

    rng = np.random.default_rng(seed)
    worst_abs = worst_rel = 0.0
    failures = []
    checked = 0
    idx_list = range(len(xs)) if wrt is None else wrt
    for i in idx_list:
        if analytic[i] is None:
            continue
        ga = np.asarray(analytic[i], np.float64)
        if ga.shape != xs[i].shape:
            raise ValueError(f"gradient {i} has shape {ga.shape}, input has {xs[i].shape}")
        n = xs[i].size
        picks = np.arange(n) if max_checks is None or n <= max_checks else \
            rng.choice(n, size=max_checks, replace=False)
        for flat in picks:
            idx = np.unravel_index(int(flat), xs[i].shape)
            args_p = [x.copy() for x in xs]
            args_m = [x.copy() for x in xs]
            args_p[i][idx] += eps
            args_m[i][idx] -= eps
            num = (loss(args_p) - loss(args_m)) / (2 * eps)
            ana = float(ga[idx])
            err = abs(num - ana)
            rel = err / max(abs(num), abs(ana), 1e-300)
            worst_abs = max(worst_abs, err)
            if err > atol:
                worst_rel = max(worst_rel, rel)
            checked += 1
            if err > atol + rtol * abs(num):
                failures.append((i, tuple(int(j) for j in idx), ana, num))
    ok = not failures
    if ok:
        msg = f"gradcheck passed: {checked} elements, max abs err {worst_abs:.3g}"
    else:
        lines = [f"gradcheck failed on {len(failures)} of {checked} elements "
                 f"(rtol={rtol:g}, atol={atol:g}, eps={eps:g})"]
        for i, idx, ana, num in failures[:5]:
            lines.append(f"  input {i} at {idx}: backward {ana!r}, finite difference {num!r}")
        msg = "\n".join(lines)
    rep = GradcheckReport(ok, worst_abs, worst_rel, checked, msg)
    if not ok and raise_on_failure:
        raise AssertionError(msg)
    return rep


def _torch_input_name(inputs, kwargs):
    """Accept PyTorch's ``input=`` for the first array (lmref names it ``x``, ``t``, ...)."""
    if "input" not in kwargs:
        return tuple(inputs), kwargs
    kwargs = dict(kwargs)
    return (kwargs.pop("input"),) + tuple(inputs), kwargs


def check_vjp(user_backward: Callable, reference_backward: Callable, grad_out, *inputs,
              rtol=None, atol=None, **kwargs) -> list[Report]:
    """Hold a user's backward against lmref's on the same ``grad_out`` and inputs.

    Both are called as ``backward(grad_out, *inputs, **kwargs)`` and must return a tuple of
    gradients; each pair is compared with :func:`assert_close` (raising on the first
    mismatch). Returns the list of reports.

    lmref's backwards return ``None`` for an absent input (``bias=None``): such an entry
    matches a missing gradient (a user backward returning one gradient fewer, e.g. ``(gx,
    gw)`` against lmref's ``(gx, gw, None)``), a ``None`` or an all-zero array. PyTorch's
    ``input=`` keyword is accepted for the first array, as in ``torch.nn.functional``.
    """
    inputs, kwargs = _torch_input_name(inputs, kwargs)
    mine = _as_tuple(user_backward(grad_out, *inputs, **kwargs))
    ref = _as_tuple(reference_backward(grad_out, *inputs, **kwargs))
    if len(mine) < len(ref) and all(r is None for r in ref[len(mine):]):
        mine = mine + (None,) * (len(ref) - len(mine))  # absent trailing inputs (bias=None)
    if len(mine) != len(ref):
        raise AssertionError(f"user backward returned {len(mine)} gradients, lmref {len(ref)}")
    reports = []
    for k, (m, r) in enumerate(zip(mine, ref)):
        if r is None:
            if m is not None and np.any(_to_numpy(m)[0] != 0):
                raise AssertionError(f"gradient {k}: lmref has none (absent input) but the user "
                                     f"backward returned a nonzero array")
            continue
        if m is None:
            raise AssertionError(f"gradient {k}: the user backward returned None, lmref an "
                                 f"array of shape {np.shape(r)}")
        reports.append(assert_close(m, r, rtol=rtol, atol=atol, msg=f"gradient {k}"))
    return reports


def torch_forward(fn: Callable, *, dtype: str = "float64") -> Callable:
    """Wrap a PyTorch function ``fn(*tensors, **kwargs)`` as ``f(*arrays, **kwargs) -> ndarray``.

    Inputs are converted to tensors of ``dtype`` (``"float64"`` by default, so the result can be
    held to float64 tolerances); the output comes back as a NumPy array (a tuple of outputs as a
    tuple). Use it with :func:`gradcheck` and :func:`compare`. Imports torch on first call.
    """
    def forward(*arrays, **kwargs):
        import torch
        tdt = getattr(torch, _dtype_name(dtype))
        ts = [torch.as_tensor(np.asarray(a, np.float64)).to(tdt) for a in arrays]
        with torch.no_grad():
            out = fn(*ts, **kwargs)
        return _tensors_to_numpy(out)

    return forward


def torch_backward(fn: Callable, *, dtype: str = "float64", nondiff: Sequence[int] = ()) -> Callable:
    """Backward of a PyTorch function by autograd, in lmref's backward signature.

    Returns ``backward(grad_out, *arrays, **kwargs) -> tuple`` with one gradient per array
    (``None`` for the indices in ``nondiff`` and for inputs the output does not depend on is a
    zero array), i.e. the vector-Jacobian product ``grad_out^T J``. That is the signature of
    ``lmref``'s ``*_backward`` functions, of :func:`gradcheck`'s ``backward`` and of
    :func:`check_vjp`::

        check_vjp(torch_backward(my_conv), lmref.conv.conv2d_backward, g, x, w, padding=1)
        gradcheck(torch_forward(my_conv), [x, w], g, torch_backward(my_conv))
    """
    def backward(grad_out, *arrays, **kwargs):
        import torch
        tdt = getattr(torch, _dtype_name(dtype))
        ts = []
        for i, a in enumerate(arrays):
            t = torch.as_tensor(np.asarray(a, np.float64)).to(tdt)
            ts.append(t.requires_grad_(i not in nondiff))
        out = fn(*ts, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        gos = grad_out if isinstance(grad_out, (tuple, list)) else (grad_out,)
        if len(gos) != len(outs):
            raise ValueError(f"grad_out has {len(gos)} entries for {len(outs)} outputs")
        diff = [t for i, t in enumerate(ts) if i not in nondiff]
        grads = iter(torch.autograd.grad(
            outs, diff, [torch.as_tensor(np.asarray(g, np.float64)).to(tdt) for g in gos],
            allow_unused=True))
        result = []
        for i, t in enumerate(ts):
            if i in nondiff:
                result.append(None)
                continue
            g = next(grads)
            result.append(np.zeros(t.shape) if g is None else
                          g.detach().to(torch.float64).numpy().copy())
        return tuple(result)

    return backward


def _tensors_to_numpy(out):
    if isinstance(out, (tuple, list)):
        return tuple(_tensors_to_numpy(o) for o in out)
    arr, _ = _to_numpy(out)
    return np.array(arr, copy=True)


_NP_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv_suspects(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros") -> dict:
    """lmref's convolution under the usual porting mistakes, for :func:`compare`'s ``suspects``.

    Same arguments as :func:`lmref.conv.conv1d` / :func:`~lmref.conv.conv2d` (chosen by
    ``x.ndim``). Returns ``{description: result}`` for each mistake that applies (some change
    the output shape; :func:`compare` also names those on a shape mismatch): the kernel
    flipped (true convolution instead of PyTorch's cross-correlation) along both axes or, in
    2-D, along one only, its spatial axes swapped, its in/out channel axes swapped, input
    channels reversed (RGB vs BGR), bias missing or added twice, each other padding mode, the
    padding off by one, the extra pixel of ``"same"`` padding before instead of after, and the
    dilation ignored. :func:`assert_op_close` passes these for you. Usage::

        compare(mine, conv2d(x, w, padding="same"),
                suspects=conv_suspects(x, w, padding="same"))
    """
    from lmref import conv as _conv
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    nd = x.ndim - 2
    if nd not in (1, 2):
        raise ValueError(f"x must be 3- or 4-dimensional (N, C, *spatial), got {x.ndim}-dimensional")
    fn = _conv.conv1d if nd == 1 else _conv.conv2d
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              padding_mode=padding_mode)
    spatial = tuple(range(2, 2 + nd))
    out = {}

    def add(name, *args, **over):
        try:
            out[name] = fn(*args, **{**kw, **over})
        except (ValueError, TypeError):  # the mistake is not expressible for these arguments
            pass

    add("kernel flipped (convolution instead of cross-correlation)",
        x, np.flip(weight, spatial), bias)
    if nd == 2:  # a half-done flip, or an image y axis pointing up / x axis pointing left
        add("kernel flipped along its rows only (kH axis)", x, np.flip(weight, 2), bias)
        add("kernel flipped along its columns only (kW axis)", x, np.flip(weight, 3), bias)
    if nd == 2 and weight.shape[-1] == weight.shape[-2]:
        add("kernel spatial axes swapped (kH <-> kW)", x, np.swapaxes(weight, -1, -2), bias)
    if groups == 1 and weight.shape[0] == weight.shape[1]:
        add("weight in/out channels swapped (IOHW instead of OIHW)", x,
            np.swapaxes(weight, 0, 1), bias)
    if x.shape[1] > 1:
        add("input channels reversed (RGB vs BGR)", x[:, ::-1], weight, bias)
    if bias is not None:
        add("bias missing", x, weight, None)
        add("bias added twice", x, weight, 2 * np.asarray(bias, np.float64))
    for mode in _NP_PAD_MODE:
        if mode != padding_mode and padding not in (0, "valid") and padding != (0,) * nd:
            add(f"padding_mode={mode!r} instead of {padding_mode!r}", x, weight, bias,
                padding_mode=mode)
    if isinstance(padding, int) or isinstance(padding, tuple):
        pads = (padding,) * nd if isinstance(padding, int) else tuple(padding)
        if all(p > 0 for p in pads):
            add("padding one smaller", x, weight, bias, padding=tuple(p - 1 for p in pads))
        add("padding one larger", x, weight, bias, padding=tuple(p + 1 for p in pads))
    if padding == "same":
        _same_before(out, fn, x, weight, bias, kw, nd)
    dil = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if any(d > 1 for d in dil):
        add("dilation ignored", x, weight, bias, dilation=1)
    return out


def _same_before(out, fn, x, weight, bias, kw, nd):
    """'same' with the extra pixel of an odd total padding *before* (some hand-written ports)."""
    from lmref.conv import same_padding
    st = (kw["stride"],) * nd if isinstance(kw["stride"], int) else tuple(kw["stride"])
    dl = (kw["dilation"],) * nd if isinstance(kw["dilation"], int) else tuple(kw["dilation"])
    pads = []
    for ax in range(nd):
        before, after = same_padding(x.shape[2 + ax], weight.shape[2 + ax], st[ax], dl[ax])
        if before == after:
            pads.append((before, after))
        else:
            pads.append((after, before))
    if all(b == a for b, a in pads):
        return  # symmetric: the mistake makes no difference
    padded = np.pad(x, ((0, 0), (0, 0), *pads), mode=_NP_PAD_MODE[kw["padding_mode"]])
    out["'same' padding's extra pixel before instead of after"] = fn(
        padded, weight, bias, stride=kw["stride"], padding=0, dilation=kw["dilation"],
        groups=kw["groups"])


def _pixels_with_align_corners(p, size, used_true_grid):
    """Where ``grid_sample`` samples when the grid and ``align_corners`` disagree.

    ``used_true_grid``: the grid was normalised for ``align_corners=True`` (``2 p / (size - 1)
    - 1``) but sampled with ``False``, which reads pixel ``p size / (size - 1) - 1/2``;
    otherwise the grid was normalised for ``False`` (``(2 p + 1) / size - 1``) and sampled
    with ``True``, which reads ``(p + 1/2) (size - 1) / size``.
    """
    if used_true_grid:
        return p * size / (size - 1) - 0.5
    return (p + 0.5) * (size - 1) / size


def warp_suspects(x, flow, mode="bilinear", boundary="zeros") -> dict:
    """lmref's :func:`~lmref.motion.warp` under the usual porting mistakes, for ``suspects``.

    Same arguments as :func:`lmref.motion.warp`. Returns ``{description: result}`` for: the
    flow components swapped (``(dy, dx)`` instead of lmref's ``(dx, dy)``), the flow negated
    (forward instead of backward map), the sign of ``dx`` or of ``dy`` alone flipped (an image
    y axis pointing up), ``grid_sample``'s ``align_corners`` not matching how the grid was
    normalised (either way), each other boundary rule and the other interpolation mode.
    :func:`assert_op_close` passes these for you.

    Parameters
    ----------
    x : array_like
        The warped input, as for :func:`lmref.motion.warp`.
    flow : array_like, shape (H, W, 2) or (N, H, W, 2)
        ``[..., 0] = dx``, ``[..., 1] = dy``.
    mode : {"bilinear", "nearest"}
        Interpolation the user meant.
    boundary : {"zeros", "border", "wrap"}
        Boundary rule the user meant.

    Returns
    -------
    dict
        ``{description: warped array}``; a suspect lmref refuses (e.g. ``wrap`` with a
        non-finite flow) is left out.
    """
    from lmref.motion import warp
    x = np.asarray(x, np.float64)
    flow = np.asarray(flow, np.float64)
    if flow.ndim not in (3, 4) or flow.shape[-1] != 2:
        raise ValueError(f"flow must have shape (H, W, 2) or (N, H, W, 2), got {flow.shape}")
    out = {}

    def add(name, fl, **over):
        try:
            out[name] = warp(x, fl, **{"mode": mode, "boundary": boundary, **over})
        except (ValueError, TypeError):
            pass

    add("flow components swapped ((dy, dx) instead of (dx, dy))", flow[..., ::-1])
    add("flow negated (forward map instead of lmref's backward map)", -flow)
    add("dx has the opposite sign (x axis pointing left)", flow * np.array([-1.0, 1.0]))
    add("dy has the opposite sign (y axis pointing up)", flow * np.array([1.0, -1.0]))
    H, W = flow.shape[-3], flow.shape[-2]
    if H >= 2 and W >= 2:
        ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
        for true_grid, name in ((True, "align_corners=False with a grid normalised for True"),
                                (False, "align_corners=True with a grid normalised for False")):
            px = _pixels_with_align_corners(xs + flow[..., 0], W, true_grid)
            py = _pixels_with_align_corners(ys + flow[..., 1], H, true_grid)
            add(name, np.stack([px - xs, py - ys], axis=-1))
    for other in ("zeros", "border", "wrap"):
        if other != boundary:
            add(f"boundary={other!r} instead of {boundary!r}", flow, boundary=other)
    other_mode = "nearest" if mode == "bilinear" else "bilinear"
    add(f"mode={other_mode!r} instead of {mode!r}", flow, mode=other_mode)
    return out


#: op name -> builder of the suspects of :func:`compare_op` (same arguments as the op)
_SUSPECTS = {"conv1d": conv_suspects, "conv2d": conv_suspects, "warp": warp_suspects}


def compare_op(actual, op: str, *inputs, rtol=None, atol=None, dtype=None, equal_nan=True,
               **options) -> Report:
    """:func:`compare` ``actual`` with lmref's registered ``op`` on the same inputs, suspects
    included.

    ``compare_op(mine, "conv2d", x, w, padding="same")`` computes ``lmref.conv.conv2d(x, w,
    padding="same")`` and, for ops with known porting mistakes (``conv1d``, ``conv2d``:
    :func:`conv_suspects`, e.g. a kernel flipped along one or both axes; ``warp``:
    :func:`warp_suspects`, e.g. flow axes swapped or ``align_corners``), names the mistake
    ``actual`` matches. PyTorch's ``input=`` is accepted for the first array.

    Parameters
    ----------
    actual : array_like
        Your result (NumPy, PyTorch or JAX).
    op : str
        A registry op name (``lmref.registry.ops()``).
    *inputs : array_like
        The op's positional arrays.
    rtol, atol, dtype, equal_nan
        As in :func:`compare`.
    **options
        The op's options, passed unchanged.

    Returns
    -------
    Report
        As :func:`compare`'s, its diagnosis naming the suspect ``actual`` matches.
    """
    from lmref import registry
    inputs, options = _torch_input_name(inputs, options)
    desired = registry.get(op).get("cpu")(*inputs, **options)
    build = _SUSPECTS.get(op)
    suspects = None if build is None else build(*inputs, **options)
    return compare(actual, desired, rtol=rtol, atol=atol, dtype=dtype, equal_nan=equal_nan,
                   suspects=suspects)


def assert_op_close(actual, op: str, *inputs, rtol=None, atol=None, dtype=None, equal_nan=True,
                    msg: str = "", **options) -> Report:
    """:func:`assert_close` against lmref's ``op`` on ``inputs``: see :func:`compare_op`.

    Parameters
    ----------
    actual : array_like
        Your result.
    op : str
        A registry op name.
    *inputs : array_like
        The op's positional arrays.
    rtol, atol, dtype, equal_nan
        As in :func:`compare`.
    msg : str
        Prefix of the failure message.
    **options
        The op's options.

    Returns
    -------
    Report
        The passing report; on a mismatch ``AssertionError`` is raised with its message.
    """
    rep = compare_op(actual, op, *inputs, rtol=rtol, atol=atol, dtype=dtype,
                     equal_nan=equal_nan, **options)
    if not rep.ok:
        raise AssertionError((msg + "\n" if msg else "") + rep.message)
    return rep
