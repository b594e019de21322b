"""Framework-free layers for the latent-motion experiments of seed ``001``: ReLU, max and
average pooling (with backward passes, like PyTorch) and a deterministic conv/ReLU/pool feature
extractor.

Conventions
-----------
Layout
    ``(C, H, W)`` or ``(N, C, H, W)`` (like ``torch.nn.functional``); results keep the rank.
Pooling windows
    Output size per axis ``floor((L + 2 p - d (k - 1) - 1) / s) + 1`` (``ceil`` with
    ``ceil_mode``, dropping a last window that would start in the right padding), exactly
    ``torch.nn.functional.max_pool2d``/``avg_pool2d``. ``stride=None`` or ``()`` means
    ``kernel_size``. ``padding`` may be per side (ONNX ``pads``), ``"same"``/``"same_lower"``
    (ONNX ``SAME_UPPER``/``SAME_LOWER``) and above ``kernel_size // 2`` (ONNX allows it,
    PyTorch refuses it). Options of any size are exact (Python integers, no overflow).
torch defect
    torch 2.13's ``max_pool2d`` reads out of range when a dilated window has no tap in the
    frame (e.g. ``(2, 1, 5)``, kernel ``(3, 1)``, padding ``(1, 0)``, dilation 2, ceil_mode):
    lmref gives ``-inf`` and no gradient there; its torch peer refuses that geometry.
Max pooling
    Padding never wins (it is ``-inf``). Ties go to the *first* maximum in row-major window
    order; a NaN wins over numbers and the *last* NaN in the window is taken, exactly as
    PyTorch's CPU kernel (``val > max || isnan(val)``). The gradient goes to that element only.
    A window with no element inside the frame (possible only with dilation) gives ``-inf``
    and no gradient.
Average pooling
    Sum of the in-frame window in row-major order, then one division by the window size
    counted up to the padded frame (``count_include_pad=True``) or by the number of in-frame
    elements (``False``), as PyTorch (and onnx 1.23's reference, ceil-mode windows in the
    padding included), or by ``divisor_override``; the divisor is the exact integer product
    rounded once to float64. A window with no element inside the frame gives 0.
ReLU
    ``max(x, 0)``; NaN passes through; the derivative at 0 is 0 (PyTorch's). ``-0.0`` gives
    ``+0.0`` (PyTorch keeps ``-0.0``; equal as numbers). The gradient is NaN where ``x`` is NaN
    (the derivative is undefined there); PyTorch passes ``grad_out`` through at NaN inputs.
Dtypes
    Integer and floating inputs are accepted; every result is float64.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from lmref._numba import STREAM_BLOCK, jit, jit_ieee, pjit, prange
from lmref._padding import resolve_padding
from lmref._validation import (as_float64, as_int, as_tuple, check_alloc, check_shape,
                               is_float64_ready, max_bytes, one_of)
from lmref.registry import Op

__all__ = [
    "relu", "relu_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
    "avg_pool2d_backward", "pool_output_size", "FeatureExtractor", "feature_extractor",
]


# ----------------------------------------------------------------------------- ReLU

#: ReLU inputs up to this size run serially (a parallel launch costs more than the work there);
#: larger ones run in blocks of :data:`lmref._numba.STREAM_BLOCK`, split evenly over the threads
_RELU_CHUNK = 2**15


@jit
def _relu_range(x, out, lo, hi):
    """``out[lo:hi]``: ``+0.0`` where ``x <= 0``, else ``x`` (NaN: the same NaN): the bits of
    ``np.maximum(x, 0.0)``, in one pass that writes the output only once. Indexing slices
    from 0 (not ``x[k]`` for ``k`` from ``lo``) spares numba's negative-index test, so the
    loop vectorises (~1.5x)."""
    src, dst = x[lo:hi], out[lo:hi]
    for k in range(src.size):
        v = src[k]
        dst[k] = 0.0 if v <= 0.0 else v


@pjit
def _relu_parallel(x, out, block):
    n = x.size
    for c in prange((n + block - 1) // block):  # independent elements: any split, same bits
        _relu_range(x, out, c * block, min(n, (c + 1) * block))


@jit
def _relu_backward_range(g, x, out, lo, hi):
    """``out[lo:hi]``: ``g`` where ``x > 0``, NaN (NumPy's ``np.nan``, whatever NaN ``x``
    holds) where ``x`` is NaN, else ``+0.0``: the bits of :func:`_relu_backward_reference`
    in one pass (slices from 0, as :func:`_relu_range`)."""
    gs, xs, dst = g[lo:hi], x[lo:hi], out[lo:hi]
    for k in range(xs.size):
        v = xs[k]
        gv = gs[k]  # read unconditionally: a load under the test vectorises as a masked load,
        # which halves the speed on arrays beyond the caches (measured)
        dst[k] = gv if v > 0.0 else (np.nan if v != v else 0.0)


@pjit
def _relu_backward_parallel(g, x, out, block):
    n = x.size
    for c in prange((n + block - 1) // block):  # independent elements: any split, same bits
        _relu_backward_range(g, x, out, c * block, min(n, (c + 1) * block))


def relu(x):
    """``max(x, 0)`` elementwise (NaN passes through), float64, any shape.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.layers import relu
    >>> relu(np.array([-1.0, 0.0, 2.0, np.nan]))
    array([ 0.,  0.,  2., nan])
    """
    a = as_float64(x, "x", allow_empty=True)  # the shape of x (np.asarray keeps it)
    out = np.empty(a.shape)
    if a.size <= _RELU_CHUNK:
        _relu_range(a.reshape(-1), out.reshape(-1), 0, a.size)
    else:
        _relu_parallel(a.reshape(-1), out.reshape(-1), STREAM_BLOCK)
    return out


def relu_backward(grad_out, x):
    """Gradient of :func:`relu`: ``(grad_out * (x > 0),)``, NaN where ``x`` is NaN.

    The derivative at 0 is taken as 0, as in PyTorch. Where ``x`` is NaN the derivative is
    undefined and the gradient is NaN, so a NaN input is never silently turned into a finite
    gradient (PyTorch's ``threshold_backward`` instead passes ``grad_out`` through there).
    Where ``x <= 0`` the gradient is 0 even if ``grad_out`` is NaN or infinite (as PyTorch).

    Parameters
    ----------
    grad_out : array_like
        Gradient with respect to the output, the shape of ``x``.
    x : array_like
        The input of the forward pass, any shape.

    Returns
    -------
    tuple of ndarray
        ``(grad_x,)``, float64, the shape of ``x``.

    Raises
    ------
    TypeError
        If an input is not a real array.
    ValueError
        If ``grad_out`` does not have the shape of ``x``.
    """
    a = as_float64(x, "x", allow_empty=True)  # the shapes of x and grad_out
    g = as_float64(grad_out, "grad_out", allow_empty=True)
    check_shape(g, "grad_out", a.shape, "the shape of x")
    grad = np.empty(a.shape)
    if a.size <= _RELU_CHUNK:
        _relu_backward_range(g.reshape(-1), a.reshape(-1), grad.reshape(-1), 0, a.size)
    else:
        _relu_backward_parallel(g.reshape(-1), a.reshape(-1), grad.reshape(-1), STREAM_BLOCK)
    return (grad,)


def _relu_backward_reference(grad_out, x):
    """:func:`relu_backward` in NumPy passes (what the kernel is tested against)."""
    a = as_float64(x, "x", allow_empty=True).reshape(np.shape(x))
    g = as_float64(grad_out, "grad_out", allow_empty=True).reshape(np.shape(grad_out))
    check_shape(g, "grad_out", a.shape, "the shape of x")
    grad = np.where(a > 0.0, g, 0.0)
    grad[np.isnan(a)] = np.nan  # undefined derivative: propagate, never absorb
    return (grad,)


def _relu_reference(x):
    a = np.array(x, dtype=np.float64)
    flat = [v if (v > 0.0 or math.isnan(v)) else 0.0 for v in a.ravel().tolist()]
    return np.array(flat, dtype=np.float64).reshape(a.shape)


# ----------------------------------------------------------------------------- pooling: geometry

#: Options up to this size take the compiled window-table path (every index it forms, o * s +
#: k * d, stays far below 2^63); larger valid ones (issue 18 item 7) take exact Python ints.
_SMALL_OPTION = 2**30
#: float64 holds every integer below this exactly, so float(a) * float(b) == float(a * b)
_EXACT_FLOAT_INT = 2**53


def _out_len(size, k, s, before, after, d, ceil_mode) -> int:
    """Output length along one axis (exact Python ints): PyTorch's ``pooling_output_shape``
    with the padding split into ``before`` and ``after`` (ONNX's rule for explicit pads)."""
    span = size + before + after - (d * (k - 1) + 1)
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + before:
        out -= 1  # the last window must start inside the frame or the left padding
    return out


def pool_output_size(size, kernel_size, stride, padding, dilation=1, ceil_mode=False) -> int:
    """PyTorch's ``pooling_output_shape`` for one axis (ints in, int out).

    Parameters
    ----------
    size : int >= 1
        Length of the input axis.
    kernel_size, stride, dilation : int >= 1
        Any size: exact Python integers, no overflow.
    padding : int >= 0 or (int, int)
        The same on both sides, or ``(before, after)`` (ONNX's explicit ``pads``).
    ceil_mode : bool

    Returns
    -------
    int
        The output length; < 1 when the window does not fit (the pooling functions refuse
        that input).

    Raises
    ------
    TypeError
        If an argument is not an integer (``ceil_mode``: not a bool), naming it.
    ValueError
        If an argument is below its minimum, naming it.
    """
    size = as_int(size, "size", minimum=1, maximum=None)
    kernel_size = as_int(kernel_size, "kernel_size", minimum=1, maximum=None)
    stride = as_int(stride, "stride", minimum=1, maximum=None)
    if isinstance(padding, (tuple, list)):
        (before, after), = resolve_padding((tuple(padding),), 1, strings=(), maximum=None)
    else:
        before = after = as_int(padding, "padding", minimum=0, maximum=None)
    dilation = as_int(dilation, "dilation", minimum=1, maximum=None)
    _flag(ceil_mode, "ceil_mode")
    return _out_len(size, kernel_size, stride, before, after, dilation, bool(ceil_mode))


def _is_default_stride(stride) -> bool:
    """``None`` or an empty sequence: the kernel size (PyTorch's rule)."""
    return stride is None or (isinstance(stride, (tuple, list, np.ndarray)) and len(stride) == 0)


class _Geometry:
    """Validated pooling geometry: per axis kernel, stride, (before, after) padding, dilation
    (exact Python ints) and the planes ``(P, H, W)`` of ``x``."""

    def __init__(self, x, kernel_size, stride, padding, dilation, ceil_mode, spatial=None):
        a = as_float64(x, "x", ndim=(3, 4))
        self.k = as_tuple(kernel_size, "kernel_size", 2, minimum=1, maximum=None)
        self.s = self.k if _is_default_stride(stride) else as_tuple(stride, "stride", 2,
                                                                    minimum=1, maximum=None)
        self.d = as_tuple(dilation, "dilation", 2, minimum=1, maximum=None)
        self.ceil = bool(_flag(ceil_mode, "ceil_mode"))
        H, W = a.shape[-2:] if spatial is None else spatial  # spatial: the geometry only
        self.pads = resolve_padding(padding, 2, sizes=(H, W), kernel_sizes=self.k,
                                    strides=self.s, dilations=self.d, maximum=None)
        oh, ow = (_out_len(n, k, s, b, e, d, self.ceil) for n, k, s, (b, e), d
                  in zip((H, W), self.k, self.s, self.pads, self.d))
        if oh < 1 or ow < 1:
            raise ValueError(f"x of spatial size {(H, W)} is too small for kernel_size "
                             f"{self.k}, dilation {self.d} and padding {self.pads} (output "
                             f"{(oh, ow)})")
        self.shape = a.shape
        self.out_shape = a.shape[:-2] + (oh, ow)
        # with padding up to kernel_size // 2 the output is never larger than the input
        check_alloc(self.out_shape, "padding")
        self.planes = a.reshape((-1, H, W)) if spatial is None else None
        self.spatial = (H, W)

    def windows(self):
        """Per-axis window tables ``(rows, cols)`` (see :func:`_axis_windows`)."""
        H, W = self.spatial
        return tuple(_axis_windows(n, k, s, b, e, d, o) for n, k, s, (b, e), d, o in zip(
            (H, W), self.k, self.s, self.pads, self.d, self.out_shape[-2:]))

    def column_run(self) -> tuple:
        """The kernels' ``(kw, sw, left, lo, hi)`` of the interior run (see :class:`_Run`)."""
        return _Run(self.spatial[1], self.k[1], self.s[1], self.pads[1][0], self.d[1],
                    self.out_shape[-1]).args

    def work(self) -> int:
        """Output elements x window taps (the cost that picks a serial or parallel kernel)."""
        return math.prod(self.out_shape) * self.k[0] * self.k[1]


def _pool_args(x, kernel_size, stride, padding, dilation, ceil_mode):
    """``(shape, planes, out_shape, k, s, padding before, d)`` (read by :mod:`lmref.cuda`)."""
    g = _Geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    return g.shape, g.planes, g.out_shape, g.k, g.s, tuple(b for b, _ in g.pads), g.d


def _has_window_without_taps(shape, kernel_size, stride=None, padding=0, dilation=1,
                             ceil_mode=False) -> bool:
    """Whether some window of this geometry has no tap inside the frame (only possible with
    dilation or padding above ``kernel_size // 2``): torch 2.13's ``max_pool2d`` reads out of
    range there, so lmref's torch cross-checks must never feed it such a geometry."""
    rows, cols = _Geometry(np.zeros(tuple(shape[-3:-2]) + (1, 1)), kernel_size, stride,
                           padding, dilation, ceil_mode, spatial=tuple(shape[-2:])).windows()
    return bool(np.any(rows.first == rows.stop) or np.any(cols.first == cols.stop))


class _Axis:
    """Windows along one axis: in-frame taps ``range(first[o], stop[o], step)`` (empty when
    ``first[o] == stop[o]``) and ``padded[o]``, the window length counted up to the padded
    frame (PyTorch's ``count_include_pad`` divisor factor; ints, any size)."""

    def __init__(self, first, stop, step, padded):
        self.first, self.stop, self.step, self.padded = first, stop, step, padded


@jit
def _axis_windows_kernel(size, k, s, before, after, d, first, stop, padded):
    for o in range(first.shape[0]):
        start = o * s - before
        f = start
        if f < 0:
            f += (-f + d - 1) // d * d  # straight to the first tap in frame (issue 18 item 0)
        e = min(start + (k - 1) * d + 1, size)
        first[o] = min(f, e)
        stop[o] = e
        padded[o] = min(start + k, size + after) - start


@functools.lru_cache(maxsize=256)
def _axis_windows(size, k, s, before, after, d, n) -> _Axis:
    """Window table of one axis; exact for any option size (huge ones in Python ints).

    Cached (ints in, a few integers per output out): a small pooling call in a loop would
    otherwise spend a third of its time here. The tables are shared, hence read-only."""
    first, stop = np.empty(n, np.int64), np.empty(n, np.int64)
    if max(k, s, before, after, d) <= _SMALL_OPTION:
        padded = np.empty(n, np.int64)
        _axis_windows_kernel(size, k, s, before, after, d, first, stop, padded)
        padded = padded.tolist()
    else:
        padded = []
        for o in range(n):
            start = o * s - before
            f = start + (-start + d - 1) // d * d if start < 0 else start
            e = min(start + (k - 1) * d + 1, size)
            first[o], stop[o] = min(f, e), e
            padded.append(min(start + k, size + after) - start)
    first.setflags(write=False)
    stop.setflags(write=False)
    # a step >= size reaches one tap in frame, as the true step does: int64-safe and equal
    return _Axis(first, stop, min(d, size), tuple(padded))


def _avg_divisors(rows, cols, include_pad, divisor_override):
    """float64 ``(H_out, W_out)`` divisors: the exact integer products, rounded once."""
    shape = (len(rows.first), len(cols.first))
    if divisor_override is not None:
        return np.full(shape, float(divisor_override))
    if include_pad:
        a, b = rows.padded, cols.padded
    else:  # in-frame taps (no dilation)
        a, b = (rows.stop - rows.first).tolist(), (cols.stop - cols.first).tolist()
    if max(a) < _EXACT_FLOAT_INT and max(b) < _EXACT_FLOAT_INT:
        return np.multiply.outer(np.array(a, np.float64), np.array(b, np.float64))
    return np.array([[float(i * j) for j in b] for i in a])  # no int64 overflow (item 4b)


# ----------------------------------------------------------------------------- pooling: kernels
#
# A window's taps form a chain of dependent comparisons (or additions), which runs at one tap
# per latency. So the kernels go through an output row tap by tap instead: for the *interior*
# run of windows (all taps of their columns in frame), tap ``(ih, j)`` of every window of the
# run is one strided read of input row ``ih``, and the windows are independent, so that loop
# vectorises. Each window still sees its taps in row-major order, with the same rule, from the
# same start (-inf, or 0.0 for sums): the results are bitwise those of one window at a time.
# Border windows (and every window of huge-option geometry) take the window-at-a-time path.

#: output elements x window taps below which a pooling kernel runs serially (a parallel
#: launch costs more than such a pass)
_SERIAL_WORK = 2**15
#: interior runs of fewer average-pooling windows than this are summed window by window
_SHORT_RUN = 8
#: tasks of a parallel pooling kernel: blocks of whole output rows (or planes); a few per
#: thread balance the load without a call per row
_BLOCKS = 256


class _Run:
    """The interior run of windows along the columns: outputs ``lo <= ow < hi`` whose ``kw``
    column taps ``ow * sw - left + j * dw`` all lie in the frame (``lo == hi == 0``: none, e.g.
    for huge options); ``args`` are the kernels' int64 arguments ``(kw, sw, left, lo, hi)``."""

    def __init__(self, width, k, s, left, d, n):
        lo = hi = 0
        if max(k, s, left, d) <= _SMALL_OPTION:
            last = width - 1 + left - (k - 1) * d  # largest window start (+ left) in frame
            lo, hi = -(-left // s), min(n, last // s + 1) if last >= 0 else 0
            if hi <= lo:
                lo = hi = 0
        self.args = (k, s, left, lo, hi) if hi > lo else (1, 1, 0, 0, 0)


@jit
def _max_tap(best, src, step):
    """One tap of a run of windows: ``src[step * t]`` replaces ``best[t]`` by PyTorch's rule
    (:func:`_max_pool_rows`; independent windows: this loop vectorises)."""
    for t in range(best.shape[0]):
        v = src[step * t]
        b = best[t]
        best[t] = v if (v > b or v != v) else b


@jit
def _max_pool_run(planes, out, p, oh, r0, r1, dh, dw, kw, sw, left, lo, hi):
    """Windows ``lo <= ow < hi`` (the interior run) of output row ``oh`` of plane ``p``: tap by
    tap over all of them, or, for the common 3-wide window with unit column dilation, window
    by window with the column loop unrolled (the same comparisons in the same order; ~20%
    faster there, measured)."""
    plane, dst = planes[p], out[p, oh]
    if kw == 3 and dw == 1:  # written out here and in the backward: as a call
        nr = (r1 - 1 - r0) // dh + 1  # per window it was ~40% slower (measured)
        for ow in range(lo, hi):
            c0 = ow * sw - left
            m = -np.inf
            for a in range(nr):
                row = plane[r0 + a * dh]
                v0, v1, v2 = row[c0], row[c0 + 1], row[c0 + 2]
                m = v0 if (v0 > m or v0 != v0) else m
                m = v1 if (v1 > m or v1 != v1) else m
                m = v2 if (v2 > m or v2 != v2) else m
            dst[ow] = m
    else:
        run = dst[lo:hi]
        run[:] = -np.inf
        for ih in range(r0, r1, dh):
            for j in range(kw):
                _max_tap(run, plane[ih, lo * sw - left + j * dw:], sw)


@jit
def _max_pool_rows(planes, out, rf, rs, dh, cf, cs, dw, kw, sw, left, lo, hi, t0, t1):
    """Output rows ``t0 <= t < t1`` of all planes (``t = plane * H_out + oh``): PyTorch's max of
    each window's in-frame taps in row-major order, ``v > best or isnan(v)`` (the first
    maximum, the last NaN; -inf without taps). An interior run of at least _SHORT_RUN windows
    goes through :func:`_max_pool_run`; shorter ones window by window like the border, in one
    flat loop with the scan written out (a call per row or per window cost more than a small
    window's scan: (2, 3, 7, 8), kernel 3.2 -> 1.2 us; dilated (4, 16, 14, 14) 2.3x faster)."""
    n = out.shape[1]
    if hi - lo < _SHORT_RUN:
        lo = hi = 0  # no run: every window below
    taps = np.empty(out.shape[2], np.int64)  # column taps per window: loops with step 1
    for ow in range(taps.size):              # (a range with a variable step divides)
        taps[ow] = (cs[ow] - cf[ow] + dw - 1) // dw
    for t in range(t0, t1):
        p, oh = t // n, t % n
        r0, r1 = rf[oh], rs[oh]
        rows = (r1 - r0 + dh - 1) // dh
        for ow in range(out.shape[2]):
            if lo <= ow < hi:
                continue
            best = -np.inf
            c0 = cf[ow]
            for a in range(rows):
                for b in range(taps[ow]):
                    v = planes[p, r0 + a * dh, c0 + b * dw]
                    if v > best or v != v:
                        best = v
            out[p, oh, ow] = best
        if lo < hi:
            _max_pool_run(planes, out, p, oh, r0, r1, dh, dw, kw, sw, left, lo, hi)


@pjit
def _max_pool_parallel(planes, out, rf, rs, dh, cf, cs, dw, kw, sw, left, lo, hi):
    n = out.shape[0] * out.shape[1]
    blocks = min(n, _BLOCKS)
    for b in prange(blocks):  # output rows are independent: any split gives the same bits
        _max_pool_rows(planes, out, rf, rs, dh, cf, cs, dw, kw, sw, left, lo, hi,
                       n * b // blocks, n * (b + 1) // blocks)


@jit
def _max_at(plane, r0, r1, c0, c1, dh, dw):
    """Flat index in ``plane`` of the element :func:`_max_pool_rows` selects (an all -inf window:
    its first in-frame element, as PyTorch); -1 for a window without taps."""
    if r0 >= r1 or c0 >= c1:
        return -1
    best = -np.inf
    at = r0 * plane.shape[1] + c0
    for ih in range(r0, r1, dh):
        for iw in range(c0, c1, dw):
            v = plane[ih, iw]
            if v > best or np.isnan(v):
                best = v
                at = ih * plane.shape[1] + iw
    return at


@jit
def _max_pool_backward_plane(plane, grad, gin, rf, rs, dh, cf, cs, dw, kw, sw, left, lo, hi):
    """One plane: per output row, the element each window selects, then the gradients added
    in row-major output order (the order of the window-at-a-time loop: the same sums, bitwise).

    An interior window's max ``m`` comes from one scan (:func:`_max_pool_rows`'s rule); when it
    is a number the window holds no NaN, so the rule's choice is its first tap equal to ``m``
    (an all -inf window: its first element, as PyTorch): found by a backward scan of
    independent conditional moves, not a chain of dependent compare-and-index updates.
    Window by window, in registers (a tap-by-tap pass over the run, as the forward's, cost
    more here: measured), with the column loop unrolled for the common 3-wide window with
    unit column dilation (half the time there). The loops have constant steps (a ``range``
    with a variable step divides to count its trips) and stay inline (a call per window costs
    as much as its scan). Border and NaN windows take :func:`_max_at`."""
    n, width = grad.shape[1], plane.shape[1]
    at = np.empty(n, np.int64)
    flat = gin.reshape(-1)
    three = kw == 3 and dw == 1  # the common 3-wide window: 2x faster unrolled (measured)
    for oh in range(grad.shape[0]):
        r0, r1 = rf[oh], rs[oh]
        if r0 >= r1:
            continue
        nr = (r1 - 1 - r0) // dh + 1
        for ow in range(n):
            m = np.nan
            c0 = ow * sw - left
            if lo <= ow < hi and three:  # the same scans with the column loop unrolled
                m = -np.inf
                for a in range(nr):
                    row = plane[r0 + a * dh]
                    v0, v1, v2 = row[c0], row[c0 + 1], row[c0 + 2]
                    m = v0 if (v0 > m or v0 != v0) else m
                    m = v1 if (v1 > m or v1 != v1) else m
                    m = v2 if (v2 > m or v2 != v2) else m
                if m == m:
                    k = -1
                    for a in range(nr - 1, -1, -1):
                        ih = r0 + a * dh
                        row = plane[ih]
                        k = ih * width + c0 + 2 if row[c0 + 2] == m else k
                        k = ih * width + c0 + 1 if row[c0 + 1] == m else k
                        k = ih * width + c0 if row[c0] == m else k
                    at[ow] = k
                    continue
            elif lo <= ow < hi:
                m = -np.inf
                for a in range(nr):
                    ih = r0 + a * dh
                    for j in range(kw):
                        v = plane[ih, c0 + j * dw]
                        m = v if (v > m or v != v) else m
            if m == m:
                k = -1
                for a in range(nr - 1, -1, -1):
                    ih = r0 + a * dh
                    for j in range(kw - 1, -1, -1):
                        k = ih * width + c0 + j * dw if plane[ih, c0 + j * dw] == m else k
                at[ow] = k
            else:  # border windows; NaN windows (the last NaN wins)
                at[ow] = _max_at(plane, r0, r1, cf[ow], cs[ow], dh, dw)
        for ow in range(n):
            if at[ow] >= 0:
                flat[at[ow]] += grad[oh, ow]


@jit
def _max_pool_backward_planes(planes, grad, gin, rf, rs, dh, cf, cs, dw, kw, sw, left, lo, hi,
                              p0, p1):
    for p in range(p0, p1):
        _max_pool_backward_plane(planes[p], grad[p], gin[p], rf, rs, dh, cf, cs, dw, kw, sw,
                                 left, lo, hi)


@pjit
def _max_pool_backward_parallel(planes, grad, gin, rf, rs, dh, cf, cs, dw, kw, sw, left, lo, hi):
    n = planes.shape[0]
    blocks = min(n, _BLOCKS)
    for b in prange(blocks):  # planes are independent; within one, a fixed order
        _max_pool_backward_planes(planes, grad, gin, rf, rs, dh, cf, cs, dw, kw, sw, left, lo,
                                  hi, n * b // blocks, n * (b + 1) // blocks)


@jit
def _add_tap(acc, src, step):
    """One tap of a run of windows: ``acc[t] += src[step * t]`` (vectorises)."""
    for t in range(acc.shape[0]):
        acc[t] += src[step * t]


@jit_ieee
def _avg_pool_run(planes, out, div, p, oh, r0, r1, kw, sw, left, lo, hi):
    """Windows ``lo <= ow < hi`` (the interior run) of output row ``oh`` of plane ``p``, tap by
    tap over all of them (SIMD): the row-major sums from 0.0 of :func:`_avg_pool_rows`, one
    division each."""
    run = out[p, oh, lo:hi]
    run[:] = 0.0
    for ih in range(r0, r1):
        for j in range(kw):
            _add_tap(run, planes[p, ih, lo * sw - left + j:], sw)
    _divide_run(run, div[oh, lo:hi])


@jit_ieee
def _divide_run(run, div):
    """``run /= div`` elementwise. The divisors of a run are >= 1 (in-frame windows; a
    ``divisor_override`` is never 0), so IEEE division (``jit_ieee``) changes no result; it
    drops numba's zero test, so the loop vectorises."""
    for t in range(run.shape[0]):
        run[t] /= div[t]


@jit_ieee
def _avg_pool_rows(planes, out, div, rf, rs, cf, cs, kw, sw, left, lo, hi, t0, t1):
    """Output rows ``t0 <= t < t1`` of all planes (``t = plane * H_out + oh``): each window's
    in-frame taps summed in row-major order from 0.0, then one division (the divisors are
    >= 1, so IEEE division changes no result); a window without taps gives 0. An interior run
    of at least _SHORT_RUN windows goes tap by tap (:func:`_avg_pool_run`); shorter ones,
    window by window like the border (the same sums and quotients), which spares a slice and
    a call per tap. One flat loop with the sum written out: a call per row or per window
    (numba's ``inline="always"`` included) cost 2-3x more than a small window's sums (a
    (2, 3, 7, 8) input: kernel 2.8 -> 1.2 us)."""
    n = out.shape[1]
    if hi - lo < _SHORT_RUN:
        lo = hi = 0  # no run: every window below
    for t in range(t0, t1):
        p, oh = t // n, t % n
        r0, r1 = rf[oh], rs[oh]
        run = lo < hi and r0 < r1
        for ow in range(out.shape[2]):
            if run and lo <= ow < hi:
                continue
            c0, c1 = cf[ow], cs[ow]
            if r0 < r1 and c0 < c1:
                acc = 0.0
                for ih in range(r0, r1):
                    for iw in range(c0, c1):
                        acc += planes[p, ih, iw]
                out[p, oh, ow] = acc / div[oh, ow]
            else:
                out[p, oh, ow] = 0.0
        if run:
            _avg_pool_run(planes, out, div, p, oh, r0, r1, kw, sw, left, lo, hi)


@pjit
def _avg_pool_parallel(planes, out, div, rf, rs, cf, cs, kw, sw, left, lo, hi):
    n = out.shape[0] * out.shape[1]
    blocks = min(n, _BLOCKS)
    for b in prange(blocks):  # output rows are independent
        _avg_pool_rows(planes, out, div, rf, rs, cf, cs, kw, sw, left, lo, hi,
                       n * b // blocks, n * (b + 1) // blocks)


@pjit
def _avg_pool_backward_kernel(grad, gin, rf, rs, cf, cs, div):
    for p in prange(gin.shape[0]):
        for oh in range(grad.shape[1]):
            for ow in range(grad.shape[2]):
                if rf[oh] >= rs[oh] or cf[ow] >= cs[ow]:
                    continue
                g = grad[p, oh, ow] / div[oh, ow]
                for ih in range(rf[oh], rs[oh]):
                    for iw in range(cf[ow], cs[ow]):
                        gin[p, ih, iw] += g


def _launch(serial, parallel, work, n, *args):
    """``serial(*args, 0, n)`` for little ``work`` (no thread launch), else ``parallel(*args)``
    (the same results: the tasks are independent)."""
    if work < _SERIAL_WORK:
        serial(*args, 0, n)
    else:
        parallel(*args)


# ----------------------------------------------------------------------------- pooling: public

_POOL_DOC = """{what} over ``kernel_size`` windows, as ``torch.nn.functional.{name}``.

    Parameters
    ----------
    x : array_like, shape (C, H, W) or (N, C, H, W)
        Unbatched ``(C, H, W)`` gives an unbatched result, as PyTorch.
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        ``None`` (default) or an empty ``()`` means ``kernel_size``.
    padding : int, (int, int), ((top, bottom), (left, right)), "valid", "same" or "same_lower"
        Symmetric per axis (PyTorch), explicit per side (ONNX ``pads``, JAX pairs), none, or
        ONNX ``SAME_UPPER`` (``"same"``, TensorFlow's ``SAME``) / ``SAME_LOWER``: output
        ``ceil(size / stride)``; see ``lmref._padding``. Padding above ``kernel_size //
        2`` is accepted (ONNX allows it; PyTorch refuses it).{extra}
    ceil_mode : bool
        Round the output size up (a last window starting in the right padding is dropped).{extra2}

    Returns
    -------
    ndarray, float64, shape (C, H_out, W_out) or (N, C, H_out, W_out)
        See the module docstring for windows, ties, NaN and padding.

    Raises
    ------
    TypeError, ValueError
        Naming the argument; every option may be any size (no overflow: windows are found
        with exact integers), the output is memory-guarded.

    Notes
    -----
    What a call derives from the shape of ``x`` and its options (window tables, output
    shape, divisors) is kept per call pattern (a float64 ``x``; options spelled as ints,
    strings, tuples of them or None; bool flags), up to 256 patterns, so a repeated call (a
    test loop, a layer) checks its arguments once. The memory guard is applied on every call.
    """


class _PoolPlan:
    """What a pooling call derives from ``x.shape`` and its options: the output shape, the
    planes ``(P, H, W)``, the window tables, the interior column run, the work and (average
    pooling) the divisors. Shared between calls of one pattern, so read-only."""

    __slots__ = ("shape", "out_shape", "planes", "rows", "cols", "run", "work", "div")

    def __init__(self, g, div=None):
        self.shape, self.out_shape, self.planes = g.shape, g.out_shape, g.planes.shape
        self.rows, self.cols = g.windows()
        self.run, self.work, self.div = g.column_run(), g.work(), div
        if div is not None:
            div.setflags(write=False)


#: pooling call pattern -> _PoolPlan; emptied when full (a program pools a few shapes, often)
_POOL_PLANS = {}
_POOL_PLANS_MAX = 256


#: the types of a plain option's scalars (type(v) in this set: no __eq__ surprises)
_PLAIN_SCALARS = frozenset({int, str, type(None)})


def _plain_option(value) -> bool:
    """Whether an option is spelled with exactly ``int``, ``str``, ``None`` and tuples of them:
    then equal memo keys mean equal spellings. ``True``, ``2.0`` and ``np.int64(2)`` equal
    ``1`` or ``2`` as keys, so they take the checked way (which refuses ``True``)."""
    t = type(value)
    if t in _PLAIN_SCALARS:
        return True
    if t is not tuple:
        return False
    for v in value:  # a loop, not all(generator): this runs on every small call
        if type(v) not in _PLAIN_SCALARS and not _plain_option(v):
            return False
    return True


def _plain_call(options, flags) -> bool:
    for f in flags:
        if type(f) is not bool:
            return False
    return _plain_option(options)  # options: a tuple


def _pool_plan(kind, x, options, flags, build):
    """``(x as float64, plan)`` of a pooling call. A call in the common spelling (a writeable
    C-contiguous float64 ``x`` of 3 or 4 dimensions, ``options`` plain, ``flags`` bools) is
    looked up by its pattern, so a repeated small call checks its arguments once (every check
    depends on the pattern alone; the allocation limit is read at each call, as before);
    ``build(x)`` makes the plan and does every check on a miss."""
    key = None
    if is_float64_ready(x) and 3 <= x.ndim <= 4 and _plain_call(options, flags):
        key = (kind, x.shape, *options, *flags)
        plan = _POOL_PLANS.get(key)
        if plan is not None:
            check_alloc(plan.out_shape, "padding")
            return x, plan
    a, plan = build(x)
    if key is not None:
        if len(_POOL_PLANS) >= _POOL_PLANS_MAX:
            _POOL_PLANS.clear()
        _POOL_PLANS[key] = plan
    return a, plan


def _max_plan(x, kernel_size, stride, padding, dilation, ceil_mode):
    def build(x):
        g = _Geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
        return g.planes, _PoolPlan(g)
    return _pool_plan("max", x, (kernel_size, stride, padding, dilation), (ceil_mode,), build)


def _avg_plan(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    def build(x):
        g, rows, cols, div = _avg_setup(x, kernel_size, stride, padding, ceil_mode,
                                        count_include_pad, divisor_override)
        return g.planes, _PoolPlan(g, div)
    return _pool_plan("avg", x, (kernel_size, stride, padding, divisor_override),
                      (ceil_mode, count_include_pad), build)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    a, plan = _max_plan(x, kernel_size, stride, padding, dilation, ceil_mode)
    planes = a.reshape(plan.planes)
    rows, cols = plan.rows, plan.cols
    out = np.empty((planes.shape[0],) + plan.out_shape[-2:])
    _launch(_max_pool_rows, _max_pool_parallel, plan.work, out.shape[0] * out.shape[1],
            planes, out, rows.first, rows.stop, rows.step, cols.first, cols.stop, cols.step,
            *plan.run)
    return out.reshape(plan.out_shape)


def max_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, dilation=1,
                        ceil_mode=False):
    """Backward of :func:`max_pool2d`: ``(grad_x,)``; each output's gradient goes to its
    window's selected element (first maximum, last NaN), summed where windows overlap."""
    a, plan = _max_plan(x, kernel_size, stride, padding, dilation, ceil_mode)
    planes = a.reshape(plan.planes)
    grad = _grad_planes(grad_out, plan.out_shape)
    rows, cols = plan.rows, plan.cols
    gin = np.zeros(planes.shape)
    _launch(_max_pool_backward_planes, _max_pool_backward_parallel, plan.work, gin.shape[0],
            planes, grad, gin, rows.first, rows.stop, rows.step, cols.first, cols.stop,
            cols.step, *plan.run)
    return (gin.reshape(plan.shape),)


def _avg_setup(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    g = _Geometry(x, kernel_size, stride, padding, 1, ceil_mode)
    include = _flag(count_include_pad, "count_include_pad")
    if divisor_override is not None:  # an int64 in PyTorch, which refuses 0
        divisor_override = as_int(divisor_override, "divisor_override")
        if divisor_override == 0:
            raise ValueError("divisor_override must not be 0 (PyTorch's rule), got 0")
    rows, cols = g.windows()
    return g, rows, cols, _avg_divisors(rows, cols, include, divisor_override)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    a, plan = _avg_plan(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override)
    planes = a.reshape(plan.planes)
    rows, cols = plan.rows, plan.cols
    out = np.empty((planes.shape[0],) + plan.out_shape[-2:])
    _launch(_avg_pool_rows, _avg_pool_parallel, plan.work, out.shape[0] * out.shape[1],
            planes, out, plan.div, rows.first, rows.stop, cols.first, cols.stop, *plan.run)
    return out.reshape(plan.out_shape)


def avg_pool2d_backward(grad_out, x, kernel_size, stride=None, padding=0, ceil_mode=False,
                        count_include_pad=True, divisor_override=None):
    """Backward of :func:`avg_pool2d`: ``(grad_x,)``; each output's gradient divided by its
    divisor goes to every in-frame element of its window."""
    a, plan = _avg_plan(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override)
    grad = _grad_planes(grad_out, plan.out_shape)
    rows, cols = plan.rows, plan.cols
    gin = np.zeros(plan.planes)
    _avg_pool_backward_kernel(grad, gin, rows.first, rows.stop, cols.first, cols.stop,
                              plan.div)
    return (gin.reshape(plan.shape),)


max_pool2d.__doc__ = _POOL_DOC.format(
    what="Max pooling", name="max_pool2d",
    extra="\n    dilation : int or (int, int)\n        Spacing of the window's taps.", extra2="")
max_pool2d.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.layers import max_pool2d
    >>> x = np.arange(16.0).reshape(1, 4, 4)  # unbatched (C, H, W)
    >>> max_pool2d(x, 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
    >>> max_pool2d(x, 3, stride=1, padding=1).shape
    (1, 4, 4)
    """
avg_pool2d.__doc__ = _POOL_DOC.format(
    what="Average pooling", name="avg_pool2d", extra="",
    extra2="\n    count_include_pad : bool\n        Divide by the window size counted up to the "
           "padded frame (True) or by the\n        number of in-frame elements (False).\n"
           "    divisor_override : int, optional\n        Nonzero; divide every window's sum "
           "by it instead (PyTorch's).")
avg_pool2d.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.layers import avg_pool2d
    >>> x = np.arange(16.0).reshape(1, 4, 4)
    >>> avg_pool2d(x, 2)
    array([[[ 2.5,  4.5],
            [10.5, 12.5]]])
    """


def _flag(value, name: str) -> int:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return int(value)


def _grad_planes(grad_out, out_shape):
    g = as_float64(grad_out, "grad_out")
    check_shape(g, "grad_out", out_shape, "the pooled output's")
    return g.reshape((-1,) + tuple(out_shape[-2:]))


# ----------------------------------------------------------------------------- pooling: references

def _taps(o, k, s, before, d, size):
    """In-frame input positions of window ``o`` along one axis, in order (exact ints: the
    first tap index in frame is found by division, so a huge kernel costs nothing)."""
    start = o * s - before
    first = max(0, -(start // d))  # smallest i with start + i * d >= 0
    last = min(k - 1, (size - 1 - start) // d) if size - 1 - start >= 0 else -1
    return [start + i * d for i in range(first, last + 1)]


def _max_select(plane, rows, cols):
    """PyTorch's max rule on explicit tap lists: (value, (row, col)), or (-inf, None)."""
    if not rows or not cols:
        return -math.inf, None
    best, at = -math.inf, (rows[0], cols[0])  # an all -inf window keeps its first element
    for r in rows:
        for c in cols:
            v = float(plane[r, c])
            if v > best or math.isnan(v):  # first maximum, last NaN
                best, at = v, (r, c)
    return best, at


def _max_windows(g):
    H, W = g.planes.shape[1:]
    (pt, _), (pl, _) = g.pads
    for oh in range(g.out_shape[-2]):
        rows = _taps(oh, g.k[0], g.s[0], pt, g.d[0], H)
        for ow in range(g.out_shape[-1]):
            yield oh, ow, rows, _taps(ow, g.k[1], g.s[1], pl, g.d[1], W)


def _max_pool2d_reference(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    g = _Geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    out = np.empty((g.planes.shape[0],) + g.out_shape[-2:])
    for n, plane in enumerate(g.planes):
        for oh, ow, rows, cols in _max_windows(g):
            out[n, oh, ow] = _max_select(plane, rows, cols)[0]
    return out.reshape(g.out_shape)


def _max_pool2d_backward_reference(grad_out, x, kernel_size, stride=None, padding=0, dilation=1,
                                   ceil_mode=False):
    g = _Geometry(x, kernel_size, stride, padding, dilation, ceil_mode)
    grad = _grad_planes(grad_out, g.out_shape)
    gin = np.zeros(g.planes.shape)
    for n, plane in enumerate(g.planes):
        for oh, ow, rows, cols in _max_windows(g):
            _, at = _max_select(plane, rows, cols)
            if at is not None:
                gin[n][at] += grad[n, oh, ow]
    return (gin.reshape(g.shape),)


def _avg_divisor(o, k, s, before, after, size, taps, count_include_pad):
    """Window size counted up to the padded frame, or the number of in-frame taps."""
    start = o * s - before
    padded = min(start + k, size + after) - start
    return padded if count_include_pad else len(taps)


def _avg_windows(g, count_include_pad, divisor_override):
    H, W = g.planes.shape[1:]
    (pt, pb), (pl, pr) = g.pads
    for oh in range(g.out_shape[-2]):
        rows = _taps(oh, g.k[0], g.s[0], pt, 1, H)
        for ow in range(g.out_shape[-1]):
            cols = _taps(ow, g.k[1], g.s[1], pl, 1, W)
            div = divisor_override if divisor_override is not None else (
                _avg_divisor(oh, g.k[0], g.s[0], pt, pb, H, rows, count_include_pad)
                * _avg_divisor(ow, g.k[1], g.s[1], pl, pr, W, cols, count_include_pad))
            yield oh, ow, rows, cols, float(div)  # exact int product, rounded once


def _avg_pool2d_reference(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                          count_include_pad=True, divisor_override=None):
    g, *_ = _avg_setup(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)
    out = np.zeros((g.planes.shape[0],) + g.out_shape[-2:])
    for n, plane in enumerate(g.planes):
        for oh, ow, rows, cols, div in _avg_windows(g, count_include_pad, divisor_override):
            if rows and cols:
                total = 0.0
                for r in rows:
                    for c in cols:
                        total += float(plane[r, c])  # row-major, like PyTorch's loop
                out[n, oh, ow] = total / div
    return out.reshape(g.out_shape)


def _avg_pool2d_backward_reference(grad_out, x, kernel_size, stride=None, padding=0,
                                   ceil_mode=False, count_include_pad=True,
                                   divisor_override=None):
    g, *_ = _avg_setup(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override)
    grad = _grad_planes(grad_out, g.out_shape)
    gin = np.zeros(g.planes.shape)
    for n in range(g.planes.shape[0]):
        for oh, ow, rows, cols, div in _avg_windows(g, count_include_pad, divisor_override):
            for r in rows:
                for c in cols:
                    gin[n, r, c] += grad[n, oh, ow] / div
    return (gin.reshape(g.shape),)


# ----------------------------------------------------------------------------- feature extractor

class FeatureExtractor:
    """A fixed conv -> ReLU -> pool stack (numpy in, numpy out); see :func:`feature_extractor`.

    Attributes
    ----------
    weights, biases : tuple of ndarray
        Per stage, ``(C_out, C_in, k, k)`` and ``(C_out,)`` (float64, read-only).
    padding : {"same", "valid"}
    padding_mode : str
        Of the convolutions (:func:`lmref.conv.conv2d`'s).
    pool : {"max", "avg"}
        2 x 2 windows, stride 2.
    stride : int
        Total downscaling ``2 ** depth``.
    """

    def __init__(self, weights, biases, padding, padding_mode, pool):
        self.weights = tuple(weights)
        self.biases = tuple(biases)
        self.padding = padding
        self.padding_mode = padding_mode
        self.pool = pool
        self.stride = 2 ** len(self.weights)
        for a in self.weights + self.biases:
            a.setflags(write=False)

    @property
    def in_channels(self) -> int:
        return self.weights[0].shape[1]

    @property
    def out_channels(self) -> int:
        return self.weights[-1].shape[0]

    def __repr__(self):
        return (f"FeatureExtractor(depth={len(self.weights)}, in_channels={self.in_channels}, "
                f"channels={self.out_channels}, kernel_size={self.weights[0].shape[-1]}, "
                f"padding={self.padding!r}, padding_mode={self.padding_mode!r}, "
                f"pool={self.pool!r}, stride={self.stride})")

    def __call__(self, image):
        """Features of ``image``: ``(H, W)`` (one input channel), ``(C_in, H, W)`` or
        ``(N, C_in, H, W)`` -> ``(C, h, w)`` or ``(N, C, h, w)``, float64."""
        from lmref.conv import conv2d

        x = as_float64(image, "image", ndim=(2, 3, 4))
        batched = x.ndim == 4
        if x.ndim == 2:
            x = x[None]
        x4 = x if batched else x[None]
        if x4.shape[1] != self.in_channels:
            raise ValueError(f"image must have {self.in_channels} channel(s) (shape "
                             f"{'(H, W) or ' if self.in_channels == 1 else ''}"
                             f"({self.in_channels}, H, W) or (N, {self.in_channels}, H, W)), "
                             f"got shape {np.shape(image)}")
        pool = max_pool2d if self.pool == "max" else avg_pool2d
        for w, b in zip(self.weights, self.biases):
            x4 = conv2d(x4, w, b, padding=self.padding, padding_mode=self.padding_mode)
            x4 = pool(relu(x4), 2)
        return x4 if batched else x4[0]


def _max_depth() -> int:
    """Largest depth with an image that fits the memory guard: ``4 ** depth`` float64 pixels."""
    pixels = max_bytes() // 8
    return (pixels.bit_length() - 1) // 2 if pixels >= 1 else 0


def _check_depth(depth: int) -> None:
    """Refuse a stack that no image can go through (and whose construction would not end)."""
    limit = _max_depth()
    if depth > limit:
        raise ValueError(f"depth must be <= {limit}, got {depth}: each stage halves the image, "
                         f"so depth {depth} needs images of at least 2^{depth} x 2^{depth} "
                         f"pixels, more than the {max_bytes() / 2**30:.3g} GiB memory limit "
                         f"allows (set LMREF_MAX_BYTES to raise it)")


def _check_weight_sizes(depth: int, channels: int, in_channels: int, k: int) -> None:
    """Memory guard on the weights ``(channels, C_in, k, k)`` of each stage and of all stages,
    naming the argument that makes them too big (checked factor by factor)."""
    check_alloc((k, k), "kernel_size")
    check_alloc((channels, k, k), "channels")
    check_alloc((channels, in_channels, k, k), "in_channels")
    widest = max(in_channels, channels) if depth > 1 else in_channels
    check_alloc((channels, widest, k, k), "channels")
    check_alloc((depth, channels, widest, k, k), "depth")


def feature_extractor(depth, channels, seed, *, in_channels=1, kernel_size=3, padding="same",
                      padding_mode="zeros", pool="max"):
    """A deterministic framework-free CNN: ``depth`` stages of conv -> ReLU -> 2 x 2 pool.

    Seed 001's analysis (eq. 12) needs only that: convolutions and ReLU preserve motion and
    each 2 x 2 pooling halves it, so features at this stack's output move by ``v / 2^depth``.

    Parameters
    ----------
    depth : int >= 1
        Number of stages (pooling operations ``k`` in eq. 12, with ``n = 2``).
    channels : int >= 1
        Output channels of every convolution.
    seed : int >= 0
        Weights ``~ N(0, 2 / (C_in k^2))`` (He) and biases ``~ N(0, 0.05^2)`` drawn, stage
        by stage, from ``numpy.random.default_rng(seed)``: the same seed gives the same network
        on every platform.
    in_channels : int
        Channels of the images it takes (1: ``(H, W)`` images are accepted).
    kernel_size : int, odd
    padding : {"same", "valid"}
        ``"same"`` keeps the size through each convolution (so ``h = floor(H / 2^depth)``).
    padding_mode : {"zeros", "circular", "reflect", "replicate"}
        ``"circular"`` makes the stack exactly equivariant to circular shifts by multiples of
        its stride.
    pool : {"max", "avg"}

    Returns
    -------
    (FeatureExtractor, int)
        The callable (numpy -> numpy, float64) and its total stride ``2 ** depth``.

    Raises
    ------
    TypeError
        If an integer argument is not an integer, naming it.
    ValueError
        If an argument is out of range or not a known choice, naming it; memory guard: if
        ``depth`` is so large that no image it accepts fits the memory limit (every stage
        halves the image, so images need at least ``2^depth x 2^depth`` pixels: ``depth <= 15``
        under the default 8 GiB), or if the weights, ``(channels, C_in, k, k)`` per stage or
        all stages together, exceed it (naming ``kernel_size``, ``channels``, ``in_channels``
        or ``depth``, whichever makes them too big).
    """
    depth = as_int(depth, "depth", minimum=1)
    channels = as_int(channels, "channels", minimum=1)
    seed = as_int(seed, "seed", minimum=0)
    in_channels = as_int(in_channels, "in_channels", minimum=1)
    k = as_int(kernel_size, "kernel_size", minimum=1)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (centred taps), got {k}")
    _check_depth(depth)
    _check_weight_sizes(depth, channels, in_channels, k)
    one_of(padding, "padding", ("same", "valid"))
    one_of(padding_mode, "padding_mode", ("zeros", "circular", "reflect", "replicate"))
    one_of(pool, "pool", ("max", "avg"))
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    c_in = in_channels
    for _ in range(depth):
        std = math.sqrt(2.0 / (c_in * k * k))
        weights.append(rng.normal(0.0, std, size=(channels, c_in, k, k)))
        biases.append(rng.normal(0.0, 0.05, size=channels))
        c_in = channels
    net = FeatureExtractor(weights, biases, padding, padding_mode, pool)
    return net, net.stride


# ----------------------------------------------------------------------------- registry

def _example_relu(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    x[np.abs(x) < 0.05] = 0.3  # keep finite differences away from the kink
    return (x,), {}


def _example_max_pool2d(rng):
    return (rng.standard_normal((2, 3, 7, 8)),), {"kernel_size": 3, "stride": 2, "padding": 1,
                                                   "dilation": 1, "ceil_mode": True}


def _example_avg_pool2d(rng):
    return (rng.standard_normal((2, 3, 7, 8)),), {"kernel_size": (3, 2), "stride": (2, 2),
                                                   "padding": (1, 1), "ceil_mode": True,
                                                   "count_include_pad": False}


_OPS = [
    Op(name="relu", cpu="lmref.layers:relu", reference="lmref.layers:_relu_reference",
       backward="lmref.layers:relu_backward", peer="lmref.peers.torch_layers:relu",
       peer_name="torch.relu", example="lmref.layers:_example_relu"),
    Op(name="max_pool2d", cuda="lmref.cuda:max_pool2d", cpu="lmref.layers:max_pool2d",
       reference="lmref.layers:_max_pool2d_reference",
       backward="lmref.layers:max_pool2d_backward", peer="lmref.peers.torch_layers:max_pool2d",
       peer_name="torch.nn.functional.max_pool2d", example="lmref.layers:_example_max_pool2d",
       notes="ties: first maximum in row-major window order; NaN wins (last NaN)"),
    Op(name="avg_pool2d", cpu="lmref.layers:avg_pool2d",
       reference="lmref.layers:_avg_pool2d_reference",
       backward="lmref.layers:avg_pool2d_backward", peer="lmref.peers.torch_layers:avg_pool2d",
       peer_name="torch.nn.functional.avg_pool2d", example="lmref.layers:_example_avg_pool2d"),
]
