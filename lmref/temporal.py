"""Arithmetic temporal operations of ATM: context spanning, +, -, local x and log-division.

Wu et al., "What Can Simple Arithmetic Operations Do for Temporal Modeling?" (arXiv:2307.08908, 2023), as
summarised in seed ``003`` (section 2), and its official code (``whwu95/ATM``,
``modules/ATM.py``). For every frame of a clip (the *anchor*) ATM takes ``Z`` context frames
and combines anchor and context pixel-wise with four operations; the results are concatenated
and fed to convolutions (not part of this module).

The seed and the official code differ in three places (and the official blocks fix an operand
order of their own); lmref offers both, the seed's as default, the official one by a keyword:

* context frames (:func:`context_span`): seed: Z = 1 the next frame, Z = 2 previous and next,
  Z = 4 two each side, clamped at the clip ends; ``layout="atm"``: the Z frames centred on the
  anchor, anchor included, zero frames beyond the ends, and for Z = 1 the previous frame.
* division (:func:`log_divide`): seed: ``log(a + eps) - log(b + eps)`` with eps = 1;
  ``absolute=True``: the official ``log1p(|a|) - log1p(|b|)``.
* multiplication (:func:`local_multiply`): seed: raw products summed over channels;
  ``normalize="l2"``: the official code L2-normalises both maps over channels first (eps 1e-6
  under the square root).
* operand order (:func:`arithmetic_features`): seed: ``Op(anchor, context)``; official: its
  ``x_post``/``x_pre`` order, which swaps roles between Z = 1 and Z > 1.

Where the seed is ambiguous or wrong, and what lmref does:

* The seed's Multiplication formula ``A(h, w) . B(h + i, w + j)`` has no channel index: lmref
  reads ``A(h, w)`` as the C-vector at a pixel, so the product is a dot product over channels
  (what ``spatial_correlation_sampler`` computes and the stated ``P^2 x H x W`` shape implies).
* The seed's Division has ``(h, w)`` on the left but ``(c, h, w)`` on the right: it is per
  channel, ``C x H x W`` like addition and subtraction.
* The seed's log-division is undefined where ``a + eps <= 0``: after a BatchNorm without ReLU,
  ``a = -2`` gives ``log(-1)`` = NaN. lmref refuses such input with a ``ValueError`` (never NaN);
  the official ``log1p(|.|)`` form is defined everywhere but loses the sign
  (``a = -3, b = 3`` gives 0 although ``a / b = -1``).
* The seed's rule for Z (1: next; 2: previous and next; 4: two each side) is extended to any Z
  as offsets ``-(Z // 2) .. -1`` then ``+1 .. +(Z - Z // 2)``; odd Z > 1 is an extrapolation.
* The official window for even Z > 1 is not centred: its ``F.pad(Z // 2, Z // 2)`` +
  ``unfold(Z)`` yields T + 1 windows and the block fails with a shape mismatch, so
  ``layout="atm"`` accepts Z = 1 and odd Z only.

All results are float64 whatever real dtype comes in; inputs are never modified and outputs
never alias them.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np

from lmref._numba import STREAM_BLOCK, jit, jit_ieee, pjit, prange
from lmref._validation import (as_float64, as_int, as_real, check_alloc, check_finite,
                               check_shape, one_of)
from lmref.registry import Op

__all__ = ["context_span", "context_offsets", "add", "add_backward", "subtract",
           "subtract_backward", "log_divide", "log_divide_backward", "local_multiply",
           "local_multiply_backward", "arithmetic_features", "L2_EPS", "LAYOUTS", "NORMALIZATIONS",
           "ARITHMETIC_OPS"]

#: eps under the square root of the official L2 normalisation (``SimTransform._L2normalize``)
L2_EPS = 1e-6
LAYOUTS = ("seed", "atm")
NORMALIZATIONS = ("none", "channels", "l2")
ARITHMETIC_OPS = ("add", "sub", "mul", "div")

# modes of the element-wise kernels
_ADD, _SUB, _LOG_EPS, _LOG1P_ABS = 0, 1, 2, 3

#: bytes per entry of a list of Python ints (the pointer and a large int object), for the guard
_LIST_ENTRY_BYTES = 8 + sys.getsizeof(2**40)


# ----------------------------------------------------------------------------------------------
# context spanning
# ----------------------------------------------------------------------------------------------

def context_offsets(z, *, layout="seed"):
    """Time offsets of the ``z`` context frames relative to the anchor, in output order.

    ``layout="seed"``: ``-(z // 2), ..., -1, +1, ..., +(z - z // 2)`` (seed section 2.1:
    Z = 1 -> ``[1]``, Z = 2 -> ``[-1, 1]``, Z = 4 -> ``[-2, -1, 1, 2]``).
    ``layout="atm"``: ``-(z // 2), ..., 0, ..., +(z // 2)`` for odd ``z`` (the anchor itself is
    the middle context frame) and ``[-1]`` for ``z = 1``; even ``z > 1`` raises ``ValueError``.

    Returns
    -------
    list of int
        ``z`` offsets.

    Raises
    ------
    TypeError
        ``z`` is not an integer.
    ValueError
        ``z < 1``, even ``z > 1`` with ``layout="atm"``, an unknown ``layout``, or a list of
        ``z`` offsets beyond the memory guard (:func:`lmref._validation.max_bytes`).
    """
    z, layout = _check_z(z, layout)
    check_alloc((z,), f"the list of z={z} offsets", itemsize=_LIST_ENTRY_BYTES)
    if layout == "seed":
        return list(range(-(z // 2), 0)) + list(range(1, z - z // 2 + 1))
    if z == 1:
        return [-1]
    return list(range(-(z // 2), z // 2 + 1))


def _check_z(z, layout):
    """Validate ``z`` and ``layout``; return them. Every valid pair has exactly ``z`` offsets."""
    z = as_int(z, "z", minimum=1)
    layout = one_of(layout, "layout", LAYOUTS)
    if layout == "atm" and z > 1 and z % 2 == 0:
        raise ValueError(
            f"z must be 1 or odd with layout='atm' (the official window of z frames centred on "
            f"the anchor; its pad + unfold breaks for even z > 1), got z={z}")
    return z, layout


def _context_indices(t, z, layout):
    """``(T, Z)`` frame indices of the context frames; -1 marks a zero frame."""
    offsets = np.asarray(context_offsets(z, layout=layout), dtype=np.int64)
    idx = np.arange(t, dtype=np.int64)[:, None] + offsets[None, :]
    if layout == "seed" or z == 1:
        # seed: clamp at both ends; official Z = 1: the first frame is paired with itself
        return np.clip(idx, 0, t - 1)
    return np.where((idx >= 0) & (idx < t), idx, -1)  # official: zero frames beyond the ends


def _as_clip(frames):
    """``frames`` as a float64 ``(N, T, C, H, W)`` array and whether a batch axis was added."""
    arr = as_float64(frames, "frames", ndim=(4, 5))
    batched = arr.ndim == 5
    if not batched:
        arr = arr[None]
    if arr.shape[1] < 2:
        raise ValueError(f"frames must hold at least 2 frames (T >= 2) along axis "
                         f"{1 if batched else 0} to have temporal context, got shape "
                         f"{arr.shape if batched else arr.shape[1:]}")
    return arr, batched


def _span(clip, z, layout):
    """Context frames of a ``(N, T, C, H, W)`` clip: ``(N, T, Z, C, H, W)``, a new array."""
    n, t, c, h, w = clip.shape
    check_alloc((n, t, z, c, h, w), f"the context_span output for z={z}")
    idx = _context_indices(t, z, layout)
    out = clip[:, np.maximum(idx, 0)]  # fancy indexing copies: never aliases frames
    out[:, idx < 0] = 0.0
    return out


def context_span(frames, z, *, layout="seed"):
    """For each anchor frame of a clip, its ``z`` context frames (seed section 2.1).

    Parameters
    ----------
    frames : array_like, shape ``(N, T, C, H, W)`` or ``(T, C, H, W)``
        The clip(s), time on axis 1 (axis 0 without a batch axis); ``T >= 2``.
    z : int
        Number of context frames per anchor, ``>= 1``.
    layout : {"seed", "atm"}
        ``"seed"`` (default): offsets of :func:`context_offsets` (Z = 1: next frame; Z = 2:
        previous and next; Z = 4: two each side), indices **clamped** to the first/last frame at
        the clip ends (the last anchor's "next" frame is itself). ``"atm"``: the official code's
        ``F.pad(x, (..., z // 2, z // 2)).unfold(1, z, 1)``: the ``z`` frames centred on the
        anchor, anchor included, **zero frames** beyond the ends (odd ``z`` only); for ``z = 1``
        the previous frame, the first frame paired with itself.

    Returns
    -------
    ndarray, float64, shape ``(N, T, Z, C, H, W)`` (``(T, Z, C, H, W)`` without a batch axis)
        ``out[n, t, k] = frames[n, t + context_offsets(z)[k]]`` (clamped or zero as above).

    Raises
    ------
    TypeError
        Non-real ``frames`` or a non-integer ``z``.
    ValueError
        ``frames`` not 4- or 5-dimensional or with ``T < 2``; ``z`` as in
        :func:`context_offsets`, or an output beyond the memory guard (too large a ``z``).

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.temporal import context_span
    >>> frames = np.arange(3.0).reshape(3, 1, 1, 1)  # (T, C, H, W), frame t holds t
    >>> span = context_span(frames, 2)  # previous and next frame, clamped at the ends
    >>> span.shape
    (3, 2, 1, 1, 1)
    >>> span[:, :, 0, 0, 0]
    array([[0., 1.],
           [0., 2.],
           [1., 2.]])
    """
    clip, batched = _as_clip(frames)
    z, layout = _check_z(z, layout)
    out = _span(clip, z, layout)
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------------
# element-wise operations: add, subtract, log_divide
# ----------------------------------------------------------------------------------------------

#: element-wise inputs up to this size run serially (a parallel launch costs more than the
#: work there); larger ones run in blocks of ``STREAM_BLOCK``, split evenly over the threads.
#: Also the chunk of the NumPy log passes (:func:`_log_eps_difference`).
_CHUNK = 2**14


@jit
def _in_log_domain(x, eps):
    """``x`` finite and ``x + eps > 0``: what :func:`_check_log_domain` demands (NaN fails)."""
    return abs(x) < math.inf and x + eps > 0.0


@jit
def _elementwise_range(a, b, mode, eps, out, lo, hi):
    """``out[lo:hi]`` of the element-wise op ``mode`` (flat arrays); returns how many of
    those elements of ``a`` or ``b`` lie outside the log domain (mode ``_LOG_EPS``; 0 else), so
    the domain check costs no pass of its own. Slices indexed from 0 spare numba's
    negative-index test, so the sums vectorise (add on 8x64x56x56: 1.86 -> 0.84 ms)."""
    xs, ys, dst = a[lo:hi], b[lo:hi], out[lo:hi]
    bad = 0
    if mode == _ADD:
        for k in range(hi - lo):
            dst[k] = xs[k] + ys[k]
    elif mode == _SUB:
        for k in range(hi - lo):
            dst[k] = xs[k] - ys[k]
    elif mode == _LOG_EPS:
        for k in range(hi - lo):
            x = xs[k] + eps
            y = ys[k] + eps
            # _in_log_domain of both, as one branch (& does not short-circuit): ~5% faster
            if (abs(xs[k]) < math.inf) & (x > 0.0) & (abs(ys[k]) < math.inf) & (y > 0.0):
                dst[k] = math.log(x) - math.log(y)
            else:  # refused by the caller; never computed (see _log_divide_grad_range)
                bad += 1
    else:
        for k in range(hi - lo):
            dst[k] = math.log1p(abs(xs[k])) - math.log1p(abs(ys[k]))
    return bad


@jit_ieee
def _log_divide_grad_range(g, a, b, mode, eps, ga, gb, lo, hi):
    """Elements ``lo:hi`` of the log-division gradients; returns the out-of-domain count as
    :func:`_elementwise_range` does.

    Branch-free, so the loop vectorises (~3x): every element is divided, also one outside the
    log domain (``x + eps <= 0`` or non-finite), whose quotient (IEEE, ``jit_ieee``: possibly
    ``inf`` or NaN, never an exception) the caller never returns, since it raises on a
    non-zero count. Slices indexed from 0 spare numba's negative-index test."""
    gs, xs, ys, gas, gbs = g[lo:hi], a[lo:hi], b[lo:hi], ga[lo:hi], gb[lo:hi]
    bad = 0
    if mode == _LOG_EPS:
        for k in range(hi - lo):
            x = xs[k]
            y = ys[k]
            # _in_log_domain of both, as one mask (& does not short-circuit)
            bad += not ((abs(x) < math.inf) & (x + eps > 0.0)
                        & (abs(y) < math.inf) & (y + eps > 0.0))
            gas[k] = gs[k] / (x + eps)
            gbs[k] = -gs[k] / (y + eps)
    else:
        for k in range(hi - lo):
            # d log1p(|x|) / dx = sign(x) / (1 + |x|), with sign(0) = 0 as torch.abs's backward
            gas[k] = gs[k] * np.sign(xs[k]) / (1.0 + abs(xs[k]))
            gbs[k] = -gs[k] * np.sign(ys[k]) / (1.0 + abs(ys[k]))
    return bad


@pjit
def _elementwise_parallel(a, b, mode, eps, out, block):
    n = a.size
    bad = 0
    for c in prange((n + block - 1) // block):  # independent elements: any split, same bits
        bad += _elementwise_range(a, b, mode, eps, out, c * block, min(n, (c + 1) * block))
    return bad


@pjit
def _arithmetic_parallel(a, b, mode, out, block):
    """:func:`_elementwise_parallel` for add and subtract, which count nothing: without the
    reduction numba allocates no per-thread partial sums (~1.3 us of a 57 us launch, measured)."""
    n = a.size
    for c in prange((n + block - 1) // block):  # independent elements: any split, same bits
        _elementwise_range(a, b, mode, 0.0, out, c * block, min(n, (c + 1) * block))


@pjit
def _log_divide_grad_parallel(g, a, b, mode, eps, ga, gb, block):
    n = a.size
    bad = 0
    for c in prange((n + block - 1) // block):
        bad += _log_divide_grad_range(g, a, b, mode, eps, ga, gb, c * block,
                                      min(n, (c + 1) * block))
    return bad


def _elementwise(a, b, mode, eps, out) -> int:
    """Run the element-wise op on flat arrays: serially for one chunk, else in parallel."""
    if a.size <= _CHUNK:
        return _elementwise_range(a, b, mode, eps, out, 0, a.size)
    if mode == _ADD or mode == _SUB:
        _arithmetic_parallel(a, b, mode, out, STREAM_BLOCK)
        return 0
    return _elementwise_parallel(a, b, mode, eps, out, STREAM_BLOCK)


def _log_divide_grad(g, a, b, mode, eps, ga, gb) -> int:
    if a.size <= _CHUNK:
        return _log_divide_grad_range(g, a, b, mode, eps, ga, gb, 0, a.size)
    return _log_divide_grad_parallel(g, a, b, mode, eps, ga, gb, STREAM_BLOCK)


def _pair(a, b):
    """Validate the two operands of an element-wise op: real, same shape (no broadcasting)."""
    a = as_float64(a, "a")
    b = as_float64(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (no broadcasting), got {a.shape} "
                         f"and {b.shape}")
    return a, b


def _grad_like(grad_out, a):
    g = as_float64(grad_out, "grad_out")
    check_shape(g, "grad_out", a.shape, "the shape of a and b")
    return g


def _run_elementwise(a, b, mode, eps=0.0):
    out = np.empty_like(a)
    if _elementwise(a.reshape(-1), b.reshape(-1), mode, float(eps), out.reshape(-1)):
        _raise_log_domain(a, b, eps)
    return out


def add(a, b):
    """ATM addition (seed section 2.2): ``out[c, h, w] = a[c, h, w] + b[c, h, w]``.

    ``a`` and ``b`` are arrays of the same shape (any layout; no broadcasting). Returns a new
    float64 array; NaN and Inf propagate as in IEEE arithmetic.
    """
    a, b = _pair(a, b)
    return _run_elementwise(a, b, _ADD)


def add_backward(grad_out, a, b):
    """Gradients ``(grad_a, grad_b) = (grad_out, grad_out)`` of :func:`add` (new arrays)."""
    a, b = _pair(a, b)
    g = _grad_like(grad_out, a)
    return g.copy(), g.copy()


def subtract(a, b):
    """ATM subtraction (seed section 2.2): ``out[c, h, w] = a[c, h, w] - b[c, h, w]``.

    Same conventions as :func:`add`. Note the official code computes *context - anchor*
    (``x_post - x_pre``) for Z > 1, see :func:`arithmetic_features`.
    """
    a, b = _pair(a, b)
    return _run_elementwise(a, b, _SUB)


def subtract_backward(grad_out, a, b):
    """Gradients ``(grad_out, -grad_out)`` of :func:`subtract` (new arrays)."""
    a, b = _pair(a, b)
    g = _grad_like(grad_out, a)
    return g.copy(), -g


def _check_log_domain(x, eps, name):
    """Refuse input on which ``log(x + eps)`` is NaN or -inf (rather than returning it)."""
    check_finite(x, name)
    bad = ~(x + eps > 0.0)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), x.shape)
        raise ValueError(
            f"log_divide needs {name} + eps > 0 everywhere (log({name} + eps)); "
            f"{int(bad.sum())} element(s) are not, e.g. {name}[{', '.join(map(str, first))}] = "
            f"{float(x[first])!r} with eps = {eps!r}. Shift or rescale the data, raise eps, or use "
            f"absolute=True (the official log1p(|a|) - log1p(|b|), defined everywhere)")


def _raise_log_domain(a, b, eps):
    """A kernel counted elements outside the log domain: raise the checks' named error."""
    _check_log_domain(a, eps, "a")
    _check_log_domain(b, eps, "b")
    raise AssertionError("a kernel reported elements outside the log domain that the checks "
                         "did not find")


def _log_divide_args(a, b, eps, absolute, *, check_domain=True):
    """Validated ``(a, b, eps, mode)``; ``check_domain=False``: the caller's kernel counts the
    elements outside the log domain instead (one pass fewer over both arrays)."""
    a, b = _pair(a, b)
    eps = as_real(eps, "eps")
    if not isinstance(absolute, (bool, np.bool_)):
        raise TypeError(f"absolute must be a bool, got {type(absolute).__name__} {absolute!r}")
    if absolute:
        if eps != 1.0:
            raise ValueError(f"absolute=True is the official log1p(|a|) - log1p(|b|), whose "
                             f"eps is fixed at 1; got eps={eps!r}")
        return a, b, eps, _LOG1P_ABS
    if check_domain:
        _check_log_domain(a, eps, "a")
        _check_log_domain(b, eps, "b")
    return a, b, eps, _LOG_EPS


def log_divide(a, b, eps=1.0, *, absolute=False):
    """ATM log-division (seed section 2.2): ``log(a + eps) - log(b + eps)``, per element.

    Parameters
    ----------
    a, b : array_like, same shape (any layout; no broadcasting)
        Anchor and context features in the seed's ``Division(A, B)``.
    eps : float
        The seed's ``epsilon`` (1, "so that the log stays non-negative" for non-negative
        features). Must be 1 when ``absolute=True``.
    absolute : bool
        False (default): the seed's form; ``a + eps`` and ``b + eps`` must be > 0 and finite
        everywhere, otherwise ``ValueError`` naming the first offending element (never NaN).
        True: the official ``torch.log1p(torch.abs(a)) - torch.log1p(torch.abs(b))``
        (``DivBlock``), defined for every real input; NaN/Inf propagate as in ``log1p``.

    Returns
    -------
    ndarray, float64, the shape of ``a``.

    Notes
    -----
    The seed's form is bitwise ``np.log(a + eps) - np.log(b + eps)``: numpy's ``log`` is its
    own SIMD code on AVX-512 CPUs (then it is numpy's passes that run) and the C library's
    ``log`` elsewhere (then a numba kernel calls that same ``log``), faithfully rounded either
    way (< 0.6 ulp measured), so the last bit of a result may differ between CPUs.
    ``absolute=True`` uses the C library's ``log1p`` (glibc on Linux).

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.temporal import log_divide
    >>> out = log_divide(np.array([3.0, 1.0]), np.array([0.0, 1.0]))
    >>> bool(np.allclose(out, [np.log(4.0), 0.0]))
    True
    >>> out = log_divide(np.array([-3.0]), np.array([0.0]), absolute=True)
    >>> bool(np.allclose(out, np.log(4.0)))
    True
    """
    a, b, eps, mode = _log_divide_args(a, b, eps, absolute, check_domain=False)
    if mode == _LOG_EPS and _numpy_log_is_simd():
        return _log_eps_difference(a, b, eps)
    return _run_elementwise(a, b, mode, eps)


@functools.cache
def _numpy_log_is_simd() -> bool:
    """Whether numpy's float64 ``log`` runs its own SIMD code on this CPU (AVX512F; numpy's
    ``loops_exponent_log`` dispatch) rather than the C library's ``log``, which the numba
    kernels call: then numpy's passes are faster (~1 against ~8 ns an element here)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512F", False))


def _log_eps_difference(a, b, eps):
    """``np.log(a + eps) - np.log(b + eps)``: bitwise the reference path, chunk by chunk.

    Used where numpy's ``log`` is SIMD (:func:`_numpy_log_is_simd`: ~1 ns an element here,
    against ~8 ns for the C library's scalar ``log`` that the numba kernel calls; both
    faithfully rounded, < 0.6 ulp measured), so the op is numpy's passes rather than one numba
    loop. Elsewhere numpy calls the C library's ``log`` too, and the numba kernel (two threads)
    gives these same bits.

    The passes run on ``_CHUNK`` elements at a time, written straight into the output: the
    one scratch chunk stays in cache, and no second array of the input's size is allocated
    (a fresh multi-MB temporary is paged in again on every call where the C library returns
    it to the kernel: 4x the whole op's time on the 2-core Firecracker VM of 2026-12-07).

    The domain is checked through the result: an element outside it (``x + eps <= 0`` or
    non-finite) gives a NaN or infinite log, so the sum of ``out`` is non-finite (a sum of
    finite differences cannot overflow: each is below 1455 in magnitude, ``-log(5e-324) =
    744.4``); only then are the inputs checked for the named error (``a + eps`` overflowing to
    ``inf`` is in the domain, as before).
    """
    out = np.empty(a.shape)
    flat_out, flat_a, flat_b = out.reshape(-1), a.reshape(-1), b.reshape(-1)
    log_b = np.empty(min(_CHUNK, flat_out.size))
    with np.errstate(all="ignore"):  # outside the domain: refused below, never returned
        for start in range(0, flat_out.size, _CHUNK):
            stop = min(start + _CHUNK, flat_out.size)
            chunk, scratch = flat_out[start:stop], log_b[:stop - start]
            np.add(flat_a[start:stop], eps, out=chunk)
            np.log(chunk, out=chunk)
            np.add(flat_b[start:stop], eps, out=scratch)
            np.log(scratch, out=scratch)
            np.subtract(chunk, scratch, out=chunk)
        if not math.isfinite(out.sum()):
            _check_log_domain(a, eps, "a")
            _check_log_domain(b, eps, "b")
    return out


def log_divide_backward(grad_out, a, b, eps=1.0, *, absolute=False):
    """Gradients of :func:`log_divide`: ``(g / (a + eps), -g / (b + eps))``.

    With ``absolute=True``: ``(g sign(a) / (1 + |a|), -g sign(b) / (1 + |b|))`` with
    ``sign(0) = 0`` (the subgradient autograd takes for ``abs`` at 0).
    """
    a, b, eps, mode = _log_divide_args(a, b, eps, absolute, check_domain=False)
    g = _grad_like(grad_out, a)
    ga, gb = np.empty_like(a), np.empty_like(b)
    if _log_divide_grad(g.reshape(-1), a.reshape(-1), b.reshape(-1), mode, eps, ga.reshape(-1),
                        gb.reshape(-1)):
        _raise_log_domain(a, b, eps)
    return ga, gb


def _add_reference(a, b):
    a, b = _pair(a, b)
    return a + b


def _subtract_reference(a, b):
    a, b = _pair(a, b)
    return a - b


def _log_divide_reference(a, b, eps=1.0, *, absolute=False):
    a, b, eps, mode = _log_divide_args(a, b, eps, absolute)
    if mode == _LOG1P_ABS:
        return np.log1p(np.abs(a)) - np.log1p(np.abs(b))
    return np.log(a + eps) - np.log(b + eps)


# ----------------------------------------------------------------------------------------------
# local multiplication (correlation)
# ----------------------------------------------------------------------------------------------

@jit
def _channel_norm_row(x, i, row, eps):
    """``sqrt(sum_c x[i, c, row]^2 + eps)`` per column, channels summed in order 0..C-1."""
    c, w = x.shape[1], x.shape[3]
    norm = np.zeros(w)
    for ch in range(c):
        xr = x[i, ch, row]
        for col in range(w):
            norm[col] += xr[col] * xr[col]
    for col in range(w):
        norm[col] = math.sqrt(norm[col] + eps)
    return norm


@pjit
def _l2_normalize_kernel(x, eps, out):
    n, c, h, w = x.shape
    for k in prange(n * h):  # independent (image, row) pairs; channel sum in order c = 0..C-1
        i, row = k // h, k % h
        norm = _channel_norm_row(x, i, row, eps)
        for ch in range(c):
            xr = x[i, ch, row]
            orow = out[i, ch, row]
            for col in range(w):
                orow[col] = xr[col] / norm[col]


@pjit
def _l2_normalize_backward_kernel(g, x, eps, gx):
    # y = x / s, s = sqrt(sum_c x^2 + eps)  =>  gx = (g - y * sum_c(g * y)) / s
    n, c, h, w = x.shape
    for k in prange(n * h):
        i, row = k // h, k % h
        norm = _channel_norm_row(x, i, row, eps)
        dot = np.zeros(w)
        for ch in range(c):
            xr = x[i, ch, row]
            gr = g[i, ch, row]
            for col in range(w):
                dot[col] += gr[col] * (xr[col] / norm[col])
        for ch in range(c):
            xr = x[i, ch, row]
            gr = g[i, ch, row]
            gxr = gx[i, ch, row]
            for col in range(w):
                gxr[col] = (gr[col] - (xr[col] / norm[col]) * dot[col]) / norm[col]


@jit
def _valid_range(size, shift):
    """Output positions ``p`` with ``0 <= p + shift < size`` as ``[lo, hi)``."""
    return max(0, -shift), min(size, size - shift)


@pjit
def _local_multiply_kernel(a, b, h, w, patch, dilation, divisor, out):
    # a, b: (N, C, H*W), out: (N, P*P, H*W), planes flattened so that one shift is one long,
    # vectorisable loop over the span from the first to the last valid output pixel.
    n, c = a.shape[0], a.shape[1]
    r = patch // 2
    npp = patch * patch
    for task in prange(n * npp):  # each task owns the output plane out[i, p]
        i, p = task // npp, task % npp
        dh = (p // patch - r) * dilation
        dw = (p % patch - r) * dilation
        h0, h1 = _valid_range(h, dh)
        w0, w1 = _valid_range(w, dw)
        if h0 < h1 and w0 < w1:  # otherwise the shifted frame lies wholly outside: zeros
            start, stop, off = h0 * w + w0, (h1 - 1) * w + w1, dh * w + dw
            span = stop - start
            o = out[i, p, start:stop]
            for ch in range(c):  # channel sum in order c = 0..C-1 for every output element
                ap = a[i, ch, start:stop]
                bp = b[i, ch, start + off:stop + off]
                for k in range(span):  # 0-based counter: no wrap-around check, vectorises
                    o[k] += ap[k] * bp[k]
            # inside the span, columns outside [w0, w1) paired with b's neighbouring row
            # (wrapped around): they lie outside the frame, so they are set (not added) to 0
            for row in range(h0, h1):
                for col in range(w):
                    if col < w0 or col >= w1:
                        out[i, p, row * w + col] = 0.0
            if divisor != 1.0:
                for k in range(span):
                    o[k] /= divisor


@pjit
def _local_multiply_backward_kernel(g, a, b, patch, dilation, ga, gb):
    # Each task owns the planes ga[i, ch] and gb[i, ch], so the scatter into gb below is
    # race-free; both sums run over displacements p = 0..P*P-1 in order (deterministic).
    n, c, h, w = a.shape
    r = patch // 2
    npp = patch * patch
    for task in prange(n * c):
        i, ch = task // c, task % c
        for p in range(npp):
            dh = (p // patch - r) * dilation
            dw = (p % patch - r) * dilation
            h0, h1 = _valid_range(h, dh)
            w0, w1 = _valid_range(w, dw)
            width = w1 - w0
            for row in range(h0, h1):
                grow = g[i, p, row, w0:w1]
                arow = a[i, ch, row, w0:w1]
                brow = b[i, ch, row + dh, w0 + dw:w1 + dw]
                garow = ga[i, ch, row, w0:w1]
                gbrow = gb[i, ch, row + dh, w0 + dw:w1 + dw]
                for k in range(width):
                    garow[k] += grow[k] * brow[k]
                    gbrow[k] += grow[k] * arow[k]


def _check_patch(patch_size):
    patch = as_int(patch_size, "patch_size", minimum=1)
    if patch % 2 == 0:
        raise ValueError(f"patch_size must be odd (displacements -r..r with r = patch_size // 2, "
                         f"centred on the pixel), got {patch}")
    return patch


def _local_multiply_args(a, b, patch_size, dilation, normalize):
    a = as_float64(a, "a", ndim=4)
    b = as_float64(b, "b", ndim=4)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (N, C, H, W), got {a.shape} and "
                         f"{b.shape}")
    patch = _check_patch(patch_size)
    # any dilation >= max(H, W) moves every displacement but the centre out of the frame:
    # clamping there gives the same result and keeps the kernels' int64 offsets small
    dilation = min(as_int(dilation, "dilation", minimum=1, maximum=None), max(a.shape[2:]))
    normalize = one_of(normalize, "normalize", NORMALIZATIONS)
    check_alloc((a.shape[0], patch * patch, a.shape[2], a.shape[3]),
                f"patch_size={patch} (the local_multiply output of P*P channels)")
    return a, b, patch, dilation, normalize


def _l2_normalize(x):
    out = np.empty_like(x)
    _l2_normalize_kernel(x, L2_EPS, out)
    return out


def _divisor(normalize, channels):
    return float(channels) if normalize == "channels" else 1.0


def local_multiply(a, b, patch_size, *, dilation=1, normalize="none"):
    """ATM local multiplication (seed section 2.2): correlation in a P x P neighbourhood.

    ``out[n, (i+r)*P + (j+r), h, w] = sum_c a[n, c, h, w] * b[n, c, h + i*dilation,
    w + j*dilation]`` for ``i, j in [-r, r]``, ``r = P // 2``; terms with ``b`` outside the
    frame are zero (no wrap-around). ``i`` is the vertical (row) displacement and varies
    slowest; the centre ``(i, j) = (0, 0)`` is channel ``P*P // 2``.

    Parameters
    ----------
    a, b : array_like, shape ``(N, C, H, W)``
        ``a`` stays at the pixel (the seed's ``A``, the official ``feature1``); ``b`` is
        displaced (``B``, ``feature2``).
    patch_size : int
        ``P``, odd, ``>= 1``.
    dilation : int
        Step between displacements, ``>= 1``.
    normalize : {"none", "channels", "l2"}
        ``"none"`` (seed): raw sums. ``"channels"``: divided by ``C`` (FlowNet-style
        correlation layers). ``"l2"`` (official ``SimTransform._correlation``): ``a`` and ``b``
        each replaced first by ``x / sqrt(sum_c x**2 + 1e-6)`` (``_L2normalize``: the eps is
        *under* the square root, so an all-zero pixel gives 0, never NaN).

    Returns
    -------
    ndarray, float64, shape ``(N, P*P, H, W)``

    Notes
    -----
    ``spatial_correlation_sampler.spatial_correlation_sample(a, b, kernel_size=1,
    patch_size=P, stride=1, padding=0, dilation=1, dilation_patch=dilation)`` (the official
    ``SpatialCorrelationSampler(1, P, 1, 0, 1)``) returns ``(N, P, P, H, W)`` with
    ``[n, i+r, j+r, h, w]`` the same sum, so ``corr.reshape(N, P*P, H, W)`` equals ours and
    ``ours.reshape(N, P, P, H, W)`` equals ``corr``. Its ``max_displacement`` is
    ``dilation * r``. The official fallback (``einsum`` + ``_corr_abs_to_rel``) gives the same
    ``(N, P, P, H, W)`` tensor.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.temporal import local_multiply
    >>> a = np.ones((1, 1, 2, 2))
    >>> b = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> out = local_multiply(a, b, 3)
    >>> out.shape
    (1, 9, 2, 2)
    >>> out[0, 4]  # the centre displacement (0, 0)
    array([[0., 1.],
           [2., 3.]])
    >>> out[0, 5]  # displacement (0, +1): b's right neighbour, 0 outside the frame
    array([[1., 0.],
           [3., 0.]])
    """
    a, b, patch, dilation, normalize = _local_multiply_args(a, b, patch_size, dilation, normalize)
    if normalize == "l2":
        a, b = _l2_normalize(a), _l2_normalize(b)
    n, c, h, w = a.shape
    out = np.zeros((n, patch * patch, h, w))
    _local_multiply_kernel(a.reshape(n, c, h * w), b.reshape(n, c, h * w), np.int64(h),
                           np.int64(w), np.int64(patch), np.int64(dilation),
                           _divisor(normalize, c), out.reshape(n, patch * patch, h * w))
    return out


def local_multiply_backward(grad_out, a, b, patch_size, *, dilation=1, normalize="none"):
    """Gradients ``(grad_a, grad_b)`` of :func:`local_multiply` (same options).

    ``grad_a[n, c, h, w] = sum_{i,j} g[n, p, h, w] b[n, c, h + i d, w + j d]`` and
    ``grad_b[n, c, h', w'] = sum_{i,j} g[n, p, h' - i d, w' - j d] a[n, c, h' - i d, w' - j d]``
    (``p = (i+r)*P + (j+r)``, out-of-frame terms zero), then, for ``normalize="l2"``, through
    ``y = x / s``: ``grad_x = (grad_y - y * sum_c(grad_y * y)) / s``. ``grad_out`` has shape
    ``(N, P*P, H, W)``. Sums run in a fixed order, so results do not depend on the thread count.
    """
    a, b, patch, dilation, normalize = _local_multiply_args(a, b, patch_size, dilation, normalize)
    n, c, h, w = a.shape
    g = as_float64(grad_out, "grad_out", ndim=4)
    check_shape(g, "grad_out", (n, patch * patch, h, w), "the output of local_multiply")
    if normalize == "channels":
        g = g / c
    an, bn = (_l2_normalize(a), _l2_normalize(b)) if normalize == "l2" else (a, b)
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    _local_multiply_backward_kernel(g, an, bn, np.int64(patch), np.int64(dilation), ga, gb)
    if normalize == "l2":
        ga, gb = _l2_normalize_backward(ga, a), _l2_normalize_backward(gb, b)
    return ga, gb


def _l2_normalize_backward(g, x):
    gx = np.empty_like(x)
    _l2_normalize_backward_kernel(g, x, L2_EPS, gx)
    return gx


def _l2_normalize_reference(x):
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True) + L2_EPS)


def _l2_normalize_backward_reference(g, x):
    s = np.sqrt((x * x).sum(axis=1, keepdims=True) + L2_EPS)
    y = x / s
    return (g - y * (g * y).sum(axis=1, keepdims=True)) / s


def _displacements(patch, dilation):
    """``(p, dh, dw)`` for every output channel ``p``, row displacement slowest."""
    r = patch // 2
    return [((i + r) * patch + (j + r), i * dilation, j * dilation)
            for i in range(-r, r + 1) for j in range(-r, r + 1)]


def _local_multiply_reference(a, b, patch_size, *, dilation=1, normalize="none"):
    """The definition, pixel by pixel (slow: for small inputs)."""
    a, b, patch, dilation, normalize = _local_multiply_args(a, b, patch_size, dilation, normalize)
    if normalize == "l2":
        a, b = _l2_normalize_reference(a), _l2_normalize_reference(b)
    n, c, h, w = a.shape
    out = np.zeros((n, patch * patch, h, w))
    for p, dh, dw in _displacements(patch, dilation):
        for row in range(h):
            for col in range(w):
                if 0 <= row + dh < h and 0 <= col + dw < w:
                    for i in range(n):
                        out[i, p, row, col] = _ordered_dot(a[i, :, row, col],
                                                           b[i, :, row + dh, col + dw])
    return out / _divisor(normalize, c)


def _ordered_dot(x, y):
    """``sum_c x[c] y[c]``, each product rounded, added in order ``c = 0, 1, ...`` (the
    kernels' order). Not ``np.dot``: BLAS may fuse multiply-adds or split the sum (OpenBLAS
    does on AVX-512 CPUs), which changes the last bits from machine to machine."""
    acc = 0.0
    for u, v in zip(x.tolist(), y.tolist()):
        acc += u * v
    return acc


def _local_multiply_backward_reference(grad_out, a, b, patch_size, *, dilation=1,
                                       normalize="none"):
    a, b, patch, dilation, normalize = _local_multiply_args(a, b, patch_size, dilation, normalize)
    n, c, h, w = a.shape
    g = as_float64(grad_out, "grad_out", ndim=4)
    check_shape(g, "grad_out", (n, patch * patch, h, w), "the output of local_multiply")
    g = g / _divisor(normalize, c)
    an, bn = (_l2_normalize_reference(a), _l2_normalize_reference(b)) if normalize == "l2" \
        else (a, b)
    ga, gb = np.zeros_like(a), np.zeros_like(b)
    for p, dh, dw in _displacements(patch, dilation):
        for row in range(h):
            for col in range(w):
                if 0 <= row + dh < h and 0 <= col + dw < w:
                    for i in range(n):
                        ga[i, :, row, col] += g[i, p, row, col] * bn[i, :, row + dh, col + dw]
                        gb[i, :, row + dh, col + dw] += g[i, p, row, col] * an[i, :, row, col]
    if normalize == "l2":
        ga, gb = _l2_normalize_backward_reference(ga, a), _l2_normalize_backward_reference(gb, b)
    return ga, gb


# ----------------------------------------------------------------------------------------------
# the ATM features of a clip
# ----------------------------------------------------------------------------------------------

def _check_ops(ops):
    if isinstance(ops, str):
        ops = (ops,)
    try:
        ops = tuple(ops)
    except TypeError:
        raise TypeError(f"ops must be a sequence of names from {ARITHMETIC_OPS}, got "
                        f"{type(ops).__name__} {ops!r}") from None
    if not ops:
        raise ValueError(f"ops must name at least one of {ARITHMETIC_OPS}, got an empty sequence")
    for op in ops:
        one_of(op, "ops entry", ARITHMETIC_OPS)
    if len(set(ops)) != len(ops):
        raise ValueError(f"ops must not repeat an operation, got {ops!r}")
    return ops


def _operands(clip, z, layout):
    """``(first, second)`` operands, each ``(N*T*Z, C, H, W)``, in the order each layout uses.

    seed: ``(anchor, context)``, the seed's ``(A, B)``. atm: the official ``(x_post, x_pre)``:
    ``(context, anchor)`` for Z > 1, but ``(anchor, previous frame)`` for Z = 1.
    """
    n, t, c, h, w = clip.shape
    context = _span(clip, z, layout)
    zz = context.shape[2]
    anchor = np.repeat(clip[:, :, None], zz, axis=2)
    anchor, context = anchor.reshape(-1, c, h, w), context.reshape(-1, c, h, w)
    if layout == "atm" and z > 1:
        return context, anchor
    return anchor, context


def arithmetic_features(frames, z, ops=ARITHMETIC_OPS, patch_size=9, *, layout="seed",
                        dilation=1, eps=1.0, normalize=None, absolute=None):
    """The concatenated anchor-vs-context features of ATM for a clip (seed section 2.1).

    For every anchor frame ``t`` and context frame ``k`` (:func:`context_span`), the
    operations in ``ops`` are applied and their results concatenated along the feature axis.

    Parameters
    ----------
    frames : array_like, shape ``(N, T, C, H, W)`` or ``(T, C, H, W)``, ``T >= 2``.
    z : int
        Context frames per anchor (see :func:`context_offsets`).
    ops : sequence of {"add", "sub", "mul", "div"}
        Operations, in output order (no repeats).
    patch_size : int
        ``P`` of ``"mul"`` (default 9, the official ``window=(5, 9, 9)``).
    layout : {"seed", "atm"}
        Which context frames and which operand order (below).
    dilation : int
        Displacement step of ``"mul"``.
    eps : float
        ``eps`` of ``"div"`` (seed form; must be 1 with ``absolute=True``).
    normalize : {"none", "channels", "l2"} or None
        Of ``"mul"``; None follows ``layout``: ``"none"`` for seed, ``"l2"`` for atm.
    absolute : bool or None
        Of ``"div"``; None follows ``layout``: False for seed, True for atm.

    Returns
    -------
    ndarray, float64, shape ``(N, T, Z, F, H, W)`` (``(T, Z, F, H, W)`` without a batch axis)
        ``F`` is the sum over ``ops`` of ``C`` (add, sub, div) and ``P*P`` (mul), blocks in the
        order of ``ops``. Reshape to ``(N, T, Z*F, H, W)`` to regroup the ``Z*C`` channels.

    Raises
    ------
    TypeError
        Non-real ``frames``, non-integer ``z`` / ``patch_size`` / ``dilation``, or ``ops`` not
        a sequence.
    ValueError
        Bad ``frames`` (as :func:`context_span`) or values outside the log domain of ``"div"``;
        ``z`` as in :func:`context_offsets`; unknown or repeated ``ops``; an even
        ``patch_size``; an output beyond the memory guard (too large a ``z`` or ``patch_size``).

    Notes
    -----
    Operand order, with ``A`` = anchor frame ``t`` and ``B`` = context frame ``k``:

    * ``layout="seed"``: ``A + B``, ``A - B``, ``local_multiply(A, B)``,
      ``log_divide(A, B)`` (the seed's ``Op(A, B)`` with the anchor first).
    * ``layout="atm"``, Z > 1: the official ``x_post`` = context, ``x_pre`` = anchor:
      ``B + A``, ``B - A``, ``local_multiply(A, B)`` (``_correlation(x_pre, x_post)``),
      ``log_divide(B, A)``. The middle context frame is the anchor itself (sub gives 0).
    * ``layout="atm"``, Z = 1: ``x_post`` = anchor, ``x_pre`` = previous frame ``B``:
      ``A + B``, ``A - B``, ``local_multiply(B, A)``, ``log_divide(A, B)``.
    """
    clip, batched = _as_clip(frames)
    z, layout = _check_z(z, layout)
    ops = _check_ops(ops)
    if normalize is None:
        normalize = "l2" if layout == "atm" else "none"
    if absolute is None:
        absolute = layout == "atm"
    patch = _check_patch(patch_size)
    if "div" in ops and not absolute:  # name the frames, not the internal operands
        _check_log_domain(clip, as_real(eps, "eps"), "frames")
    n, t, c, h, w = clip.shape
    width = sum(patch * patch if op == "mul" else c for op in ops)
    sizes = f"z={z}" + (f", patch_size={patch}" if "mul" in ops else "")
    check_alloc((n, t, z, width, h, w), f"the arithmetic_features output for {sizes}")
    first, second = _operands(clip, z, layout)
    blocks = []
    for op in ops:
        if op == "add":
            blocks.append(add(first, second))
        elif op == "sub":
            blocks.append(subtract(first, second))
        elif op == "div":
            blocks.append(log_divide(first, second, eps, absolute=absolute))
        else:  # the official correlation keeps x_pre at the pixel: (second, first) there
            mul_a, mul_b = (second, first) if layout == "atm" else (first, second)
            blocks.append(local_multiply(mul_a, mul_b, patch, dilation=dilation,
                                         normalize=normalize))
    out = np.concatenate(blocks, axis=1).reshape(n, t, -1, width, h, w)
    return out if batched else out[0]


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

def _example_add(rng):
    return (rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((2, 3, 4, 5))), {}


def _example_subtract(rng):
    return _example_add(rng)


def _example_log_divide(rng):
    # a + eps and b + eps stay >= 0.5: well inside the domain, also for finite differences
    shape = (2, 3, 4, 5)
    return (rng.uniform(-0.5, 2.0, shape), rng.uniform(-0.5, 2.0, shape)), {"eps": 1.0}


def _example_local_multiply(rng):
    shape = (2, 3, 5, 6)
    return (rng.standard_normal(shape), rng.standard_normal(shape)), \
        {"patch_size": 3, "dilation": 2, "normalize": "l2"}


_M = "lmref.temporal"
_P = "lmref.peers.torch_temporal"

_OPS = [
    Op(name="add", cpu=f"{_M}:add", reference=f"{_M}:_add_reference",
       backward=f"{_M}:add_backward", peer=f"{_P}:add", peer_name="torch.add (a + b)",
       example=f"{_M}:_example_add", tags=("temporal",)),
    Op(name="subtract", cpu=f"{_M}:subtract", reference=f"{_M}:_subtract_reference",
       backward=f"{_M}:subtract_backward", peer=f"{_P}:subtract", peer_name="torch.sub (a - b)",
       example=f"{_M}:_example_subtract", tags=("temporal",)),
    Op(name="log_divide", cpu=f"{_M}:log_divide", reference=f"{_M}:_log_divide_reference",
       backward=f"{_M}:log_divide_backward", peer=f"{_P}:log_divide",
       peer_name="torch.log(a + eps) - torch.log(b + eps)", example=f"{_M}:_example_log_divide",
       tags=("temporal",)),
    Op(name="local_multiply", cuda="lmref.cuda:local_multiply", cpu=f"{_M}:local_multiply",
       reference=f"{_M}:_local_multiply_reference", backward=f"{_M}:local_multiply_backward",
       peer=f"{_P}:local_multiply",
       peer_name="loop over shifts (F.pad + slicing) = spatial_correlation_sample(kernel_size=1)",
       example=f"{_M}:_example_local_multiply", tags=("temporal",)),
]
