"""Convolution with PyTorch semantics, its backward, its transpose and its exact sparse matrix.

Seed ``000`` Lemma 1: a convolution is a matrix acting on the row-major unrolled input
("unroll, multiply, reshape"); :func:`conv2d_matrix` builds that matrix ``C`` exactly.

Conventions
-----------
Layout
    ``x`` is ``(N, C_in, *spatial)`` (NCL / NCHW), ``weight`` is ``(C_out, C_in // groups, *k)``
    (OIL / OIHW), ``bias`` is ``(C_out,)``: exactly ``torch.nn.functional.conv1d/conv2d``.
Cross-correlation
    ``out[n, o, i, j] = bias[o] + sum_{c, a, b} weight[o, c, a, b] *
    xpad[n, g*C_in/groups + c, i*sh + a*dh, j*sw + b*dw]`` with ``g = o // (C_out/groups)``:
    no kernel flip, the kernel origin is its top-left tap (tap ``(0, 0)`` reads the top-left
    of the padded window).
Padding
    ``padding`` is an int, a tuple (one int per spatial axis, applied on both sides), ``"valid"``
    (no padding) or ``"same"``. ``"same"`` follows TensorFlow for every stride: the output size
    is ``ceil(size / stride)`` and the total padding ``max((out - 1) * stride + (k - 1) *
    dilation + 1 - size, 0)`` is split as ``total // 2`` before (top/left) and the rest, the
    extra pixel when the total is odd, after (bottom/right). For stride 1 this is PyTorch's
    ``padding="same"`` (which refuses stride > 1).
Padding modes
    ``padding_mode`` as in ``torch.nn.Conv2d``: ``"zeros"``, ``"circular"`` (periodic; the
    padding may not exceed the input size), ``"reflect"`` (mirror without repeating the edge;
    the padding must be smaller than the input size) and ``"replicate"`` (repeat the edge).
    The backward routes gradients through the padding: a padded pixel that copies input pixel
    ``p`` sends its gradient back to ``p`` (accumulated).
Output size
    ``floor((size + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1``; a kernel
    larger than the padded input is a ``ValueError``.
Dtypes and NaN
    Integer and floating inputs are accepted; every result is float64 (the oracle computes in
    float64 whatever comes in). NaN and Inf propagate like in any sum of products; as in
    PyTorch, an infinite weight times a zero of the padding gives NaN.
Summation order
    Each output is accumulated in a fixed order that does not depend on the number of threads
    (the fast kernels add input channels in pairs, ``acc += w0 * u + w1 * v``, or, for the
    weight gradient with many input channels, output columns in fours, and for the input
    gradient with many input channels, output channels in eights; the plain references
    in ``_conv*_reference`` sum tap by tap), so results are reproducible bit for bit
    on a machine; fast and reference paths agree to rounding (~1e-15 relative).
Threads
    Problems above ~2 million multiply-adds run numba ``prange`` drivers over independent
    output blocks; smaller ones run the same blocks serially (no thread start-up).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import scipy.sparse as sp

from lmref._numba import jit, pjit, prange
from lmref._padding import resolve_padding, same_pads
from lmref._validation import (INT64_MAX, as_float64, as_int, as_tuple, check_alloc, max_bytes,
                               one_of)
from lmref.registry import Op

__all__ = [
    "conv1d", "conv2d", "conv1d_backward", "conv2d_backward",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose1d_backward",
    "conv_transpose2d_backward", "conv1d_matrix", "conv2d_matrix",
    "conv_output_size", "same_padding", "PADDING_MODES",
]

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
_NP_PAD_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "reflect",
                "replicate": "edge"}


# ----------------------------------------------------------------------------------------------
# geometry: argument checks, padding and output sizes (shared by every path)
# ----------------------------------------------------------------------------------------------

def conv_output_size(size, kernel_size, stride=1, pad_before=0, pad_after=0, dilation=1):
    """Output length of a convolution along one axis (``ValueError`` if it would be < 1).

    Exact for any Python int (a stride of ``2**63`` is valid: the output has one pixel).
    """
    size = as_int(size, "size", minimum=1, maximum=None)
    kernel_size = as_int(kernel_size, "kernel_size", minimum=1, maximum=None)
    stride = as_int(stride, "stride", minimum=1, maximum=None)
    dilation = as_int(dilation, "dilation", minimum=1, maximum=None)
    pad_before = as_int(pad_before, "pad_before", minimum=0, maximum=None)
    pad_after = as_int(pad_after, "pad_after", minimum=0, maximum=None)
    return _out_size(size, kernel_size, stride, pad_before, pad_after, dilation, "axis")


def _out_size(size, k, stride, before, after, dilation, axis):
    span = dilation * (k - 1) + 1
    padded = size + before + after
    if span > padded:
        raise ValueError(
            f"kernel larger than padded input along {axis}: kernel_size {k} with dilation "
            f"{dilation} spans {span} but the padded input has size {padded} ({size} + "
            f"{before} + {after})")
    return (padded - span) // stride + 1


def same_padding(size, kernel_size, stride=1, dilation=1, *, extra="after"):
    """``(before, after)`` padding of ``padding="same"`` along one axis (TensorFlow's rule).

    The output size is ``ceil(size / stride)``; the extra pixel of an odd total goes after
    (bottom/right, ``padding="same"`` / ``"same_upper"``) or, with ``extra="before"``, before
    (``padding="same_lower"``, ONNX ``SAME_LOWER``).
    """
    size = as_int(size, "size", minimum=1, maximum=None)
    kernel_size = as_int(kernel_size, "kernel_size", minimum=1, maximum=None)
    stride = as_int(stride, "stride", minimum=1, maximum=None)
    dilation = as_int(dilation, "dilation", minimum=1, maximum=None)
    one_of(extra, "extra", ("after", "before"))
    return same_pads(size, kernel_size, stride, dilation, extra=extra)


def _same_padding(size, k, stride, dilation):
    return same_pads(size, k, stride, dilation)


@dataclass(frozen=True)
class _Geometry:
    """Everything about one convolution except the data, always in 2-D form.

    A 1-D convolution is the 2-D one with a height-1 input and kernel (stride, dilation and
    padding 1, 1 and 0 along that axis), so both share the kernels below. :func:`_geometry`
    holds exact Python ints (any size); :func:`_plan` turns it into what the kernels run on.
    ``maps``: explicit per-axis source indices of the (compacted) padded input (``-1``: a
    zero), set when an axis is computed on its read positions only (see :func:`_plan`).
    """

    in_hw: tuple[int, int]
    k_hw: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    groups: int
    mode: str
    out_hw: tuple[int, int]
    maps: tuple | None = None

    @property
    def padded_hw(self):
        if self.maps is not None:
            return tuple(len(m) for m in self.maps)
        return tuple(n + a + b for n, (a, b) in zip(self.in_hw, self.pads))

    @property
    def has_padding(self):
        return self.maps is not None or any(a or b for a, b in self.pads)


def _is_pairs(padding, nd):
    """Whether ``padding`` is already ``nd`` ``(before, after)`` pairs of Python ints >= 0."""
    return type(padding) is tuple and len(padding) == nd and all(
        type(p) is tuple and len(p) == 2 and type(p[0]) is int and type(p[1]) is int
        and p[0] >= 0 and p[1] >= 0 for p in padding)


def _parse_padding(padding, nd, in_sizes, k_sizes, strides, dilations):
    """Per-axis ``(before, after)`` padding (:func:`lmref._padding.resolve_padding`; a plain
    int and resolved pairs, the common spellings, are taken as they are)."""
    if type(padding) is int and padding >= 0:
        return ((padding, padding),) * nd
    if _is_pairs(padding, nd):
        return padding
    return resolve_padding(padding, nd, sizes=in_sizes, kernel_sizes=k_sizes, strides=strides,
                           dilations=dilations, maximum=None)


def _check_mode_pads(mode, pads, in_sizes, source=""):
    """``source`` says where a derived padding came from (``'same'`` with the dilation)."""
    axes = ("height", "width") if len(pads) == 2 else ("length",)
    for (a, b), n, ax in zip(pads, in_sizes, axes):
        if mode == "reflect" and max(a, b) >= n:
            raise ValueError(
                f"padding_mode='reflect' needs padding < input size (as in PyTorch): padding "
                f"({a}, {b}) along {ax} of size {n}{source}")
        if mode == "circular" and max(a, b) > n:
            raise ValueError(
                f"padding_mode='circular' needs padding <= input size (as in PyTorch): padding "
                f"({a}, {b}) along {ax} of size {n}{source}")


def _int_tuple(value, name, nd, minimum=1):
    """:func:`as_tuple` (any size) with a fast path for a plain int or a tuple of them, the
    common spellings (validation dominates a small convolution)."""
    if type(value) is int and value >= minimum:
        return (value,) * nd
    if type(value) is tuple and len(value) == nd and all(
            type(v) is int and v >= minimum for v in value):
        return value
    return as_tuple(value, name, nd, minimum=minimum, maximum=None)


def _groups(groups):
    if type(groups) is int and 1 <= groups <= INT64_MAX:
        return groups
    return as_int(groups, "groups", minimum=1)


def _geometry(nd, in_sizes, c_in, weight_shape, stride, padding, dilation, groups, padding_mode,
              *, x_name="x"):
    """Validate the options of a ``nd``-D convolution and return its (2-D) geometry.

    Exact Python-int arithmetic: strides, dilations and paddings of any size are accepted. A
    stride is irrelevant where the output has one position and a dilation where the kernel
    has one tap: both are stored as 1 there (the same convolution).
    """
    groups = _groups(groups)
    mode = one_of(padding_mode, "padding_mode", PADDING_MODES)
    c_out, c_in_g = weight_shape[0], weight_shape[1]
    k_sizes = tuple(int(k) for k in weight_shape[2:])
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide the number of output channels "
                         f"weight.shape[0]={c_out}")
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide the number of input channels "
                         f"{x_name}.shape[1]={c_in}")
    if c_in_g * groups != c_in:
        raise ValueError(
            f"channel mismatch: {x_name} has {c_in} input channels, so weight.shape[1] must be "
            f"C_in / groups = {c_in // groups}, got weight of shape {tuple(weight_shape)}")
    strides = _int_tuple(stride, "stride", nd)
    dilations = _int_tuple(dilation, "dilation", nd)
    in_sizes = tuple(int(n) for n in in_sizes)
    pads = _parse_padding(padding, nd, in_sizes, k_sizes, strides, dilations)
    source = (f" (padding={padding!r} with stride={strides}, dilation={dilations})"
              if isinstance(padding, str) else "")
    _check_mode_pads(mode, pads, in_sizes, source)
    axes = ("height", "width") if nd == 2 else ("length",)
    out = tuple(_out_size(n, k, s, a, b, d, ax) for n, k, s, (a, b), d, ax
                in zip(in_sizes, k_sizes, strides, pads, dilations, axes))
    strides = tuple(1 if o == 1 else s for s, o in zip(strides, out))
    dilations = tuple(1 if k == 1 else d for d, k in zip(dilations, k_sizes))
    if nd == 1:  # lift to 2-D with a height-1 axis
        return _Geometry((1,) + in_sizes, (1,) + k_sizes, (1,) + strides,
                         (1,) + dilations, ((0, 0),) + pads, groups, mode, (1,) + out)
    return _Geometry(in_sizes, k_sizes, strides, dilations, pads, groups, mode, out)


def _options_text(geom, nd, **extra):
    """``"stride=(s, s), padding=((t, b), (l, r)), dilation=(d, d)"``: the user's options."""
    lo = 2 - nd
    opts = {"stride": geom.stride[lo:], "padding": geom.pads[lo:],
            "dilation": geom.dilation[lo:], **extra}
    return ", ".join(f"{k}={v}" for k, v in opts.items())


def _describe_call(fn, x_shape, geom, nd, **extra):
    """``"conv2d(stride=..., padding=..., dilation=...) on x of shape (N, C, H, W)"``: the
    user's arguments, for memory-guard messages."""
    return f"{fn}({_options_text(geom, nd, **extra)}) on x of shape {tuple(x_shape)}"


def _guard(shape, what, call):
    """:func:`check_alloc` naming the call's arguments (``call``) and the buffer (``what``).

    ``call`` may be a zero-argument callable returning the description: it is formatted only
    when the guard fails (on small inputs formatting costs more than the convolution).
    """
    if math.prod(int(s) for s in shape) * 8 <= max_bytes():
        return
    check_alloc(shape, f"{call() if callable(call) else call}: {what}")


#: an axis whose padded length exceeds ``_COMPACT_RATIO * out * k + _COMPACT_SLACK`` is run on
#: its read positions only (huge strides / dilations over huge padding; see :func:`_plan`)
_COMPACT_RATIO = 4
_COMPACT_SLACK = 256


def _source(i, n, mode):
    """Source index of input-relative positions ``i`` (``-1`` where the padding is a zero)."""
    if mode == "zeros":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "circular":
        return i % n
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    # reflect (pad < n, checked): mirror about the first and the last pixel
    i = np.abs(i)
    return np.where(i > n - 1, 2 * (n - 1) - i, i)


def _read_positions(n, k, s, d, before, out, mode):
    """Source of every read ``(tap a, output i)``, ordered ``a * out + i`` (exact ints)."""
    if (out - 1) * s + (k - 1) * d + before < 2**62:
        pos = np.arange(out, dtype=np.int64)[None, :] * s \
            + np.arange(k, dtype=np.int64)[:, None] * d - before
    else:  # beyond int64: Python ints (only zero padding can be this large)
        pos = np.arange(out).astype(object)[None, :] * s \
            + np.arange(k).astype(object)[:, None] * d - before
    return np.asarray(_source(pos.ravel(), n, mode), dtype=np.int64)


def _plan(geom, n_batch, c_in, call):
    """The geometry the kernels run on, after guarding the padded input's size.

    Where an axis's padded length is much larger than ``out * k`` (a huge stride or dilation
    over huge padding), that axis is computed on a compacted input holding only the read
    positions, tap-major: ``xc[a * out + i] = xpad[i * s + a * d]``, which the same kernels
    read with stride 1 and dilation ``out``. Every output reads the same values in the same
    order (forward and weight gradient bit for bit); input-gradient terms that meet at one
    pixel are folded back in position order (the same exact sum).
    """
    hw = geom.padded_hw
    limits = [_COMPACT_RATIO * o * k + _COMPACT_SLACK for o, k in zip(geom.out_hw, geom.k_hw)]
    compact = [p > lim for p, lim in zip(hw, limits)]
    sizes = tuple(o * k if c else p for o, k, c, p in zip(geom.out_hw, geom.k_hw, compact, hw))
    if geom.has_padding or any(compact):  # else the kernels read x itself
        _guard((n_batch, c_in) + sizes, "the padded input", call)
    sw = 1 if compact[1] else geom.stride[1]
    if sw > 1:
        _guard((n_batch, c_in, sizes[0], min(sw, sizes[1]), -(-sizes[1] // sw)),
               "the stride-phase buffer of the padded input", call)
    if not any(compact):
        return geom
    maps, strides, dilations = [], [], []
    for ax in range(2):
        n, k, s, d = geom.in_hw[ax], geom.k_hw[ax], geom.stride[ax], geom.dilation[ax]
        (before, after), out = geom.pads[ax], geom.out_hw[ax]
        if compact[ax]:
            maps.append(_read_positions(n, k, s, d, before, out, geom.mode))
            strides.append(1)
            dilations.append(out if k > 1 else 1)
        else:
            maps.append(_pad_index(n, before, after, geom.mode))
            strides.append(s)
            dilations.append(d)
    return replace(geom, stride=tuple(strides), dilation=tuple(dilations), maps=tuple(maps))


def _lift(x, nd):
    """``(x, unbatched)``: an unbatched input ``(C, *spatial)`` gets a batch axis of 1, as in
    PyTorch (the result drops it again)."""
    try:
        ndim = np.ndim(x)
    except Exception:  # ragged lists and the like: as_float64 names them
        return x, False
    if ndim == nd + 1 and not isinstance(x, (str, bytes)):
        return np.asarray(x)[None], True
    return x, False


def _check_arrays(nd, x, weight, bias, *, x_name="x", weight_name="weight"):
    """Convert ``x``, ``weight`` and ``bias`` to float64 after checking ndim and shapes."""
    layout = "(N, C_in, L)" if nd == 1 else "(N, C_in, H, W)"
    wlayout = "(C_out, C_in // groups, k)" if nd == 1 else "(C_out, C_in // groups, kH, kW)"
    x = as_float64(x, f"{x_name} {layout}", ndim=nd + 2)
    weight = as_float64(weight, f"{weight_name} {wlayout}", ndim=nd + 2)
    if bias is not None:
        bias = as_float64(bias, "bias (C_out,)", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},) (one value per output "
                             f"channel), got {bias.shape}")
    return x, weight, bias


def _to2d(a, nd):
    """View a 1-D-convolution array ``(A, B, L)`` as ``(A, B, 1, L)``."""
    return a if nd == 2 else a[:, :, None, :]


def _from2d(a, nd):
    return a if nd == 2 else a[:, :, 0, :]


# ----------------------------------------------------------------------------------------------
# padding as index maps: padded position -> source index (-1: a zero)
# ----------------------------------------------------------------------------------------------

def _pad_index(n, before, after, mode):
    """Source index of every padded position along one axis (``-1`` where the value is 0)."""
    return _source(np.arange(-before, n + after, dtype=np.int64), n, mode)


def _pad_maps(geom):
    if geom.maps is not None:
        return geom.maps
    return tuple(_pad_index(n, a, b, geom.mode) for n, (a, b) in zip(geom.in_hw, geom.pads))


def _pad(x, geom):
    """Pad ``(N, C, H, W)`` once per ``geom`` (returns ``x`` itself when there is no padding)."""
    if not geom.has_padding:
        return x
    n, c, h, w = x.shape
    if geom.mode == "zeros" and geom.maps is None:
        (t, b), (l, r) = geom.pads
        xp = np.zeros((n, c, h + t + b, w + l + r))
        xp[:, :, t:t + h, l:l + w] = x
        return xp
    ih, iw = _pad_maps(geom)
    xp = np.empty((n, c, len(ih), len(iw)))
    _gather_padded(np.ascontiguousarray(x), ih, iw, xp)
    return xp


@jit
def _gather_padded(x, ih, iw, out):
    """``out[n, c, i, j] = x[n, c, ih[i], iw[j]]``, 0 where either index is -1 (one pass, the
    copy a fancy index would make without its temporaries)."""
    for n in range(out.shape[0]):
        for c in range(out.shape[1]):
            for i in range(out.shape[2]):
                r = ih[i]
                if r < 0:
                    out[n, c, i, :] = 0.0
                    continue
                for j in range(out.shape[3]):
                    q = iw[j]
                    out[n, c, i, j] = x[n, c, r, q] if q >= 0 else 0.0


def _unpad_adjoint(gp, geom):
    """Adjoint of :func:`_pad`: every padded position sends its value back to its source."""
    if not geom.has_padding:
        return gp
    h, w = geom.in_hw
    if geom.mode == "zeros" and geom.maps is None:
        (t, b), (l, r) = geom.pads
        return np.ascontiguousarray(gp[:, :, t:t + h, l:l + w])
    ih, iw = _pad_maps(geom)
    n, c, hp, wp = gp.shape
    cols = np.zeros((n * c * hp, w, 1))
    _fold_axis(np.ascontiguousarray(gp.reshape(n * c * hp, wp, 1)), iw, cols)
    out = np.zeros((n * c, h, w))
    _fold_axis(cols.reshape(n * c, hp, w), ih, out)
    return out.reshape(n, c, h, w)


@pjit
def _fold_axis(src, index, out):
    """``out[b, index[p], q] += src[b, p, q]`` for ``index[p] >= 0``, ``p`` ascending."""
    for b in prange(src.shape[0]):
        for p in range(src.shape[1]):
            k = index[p]
            if k >= 0:
                for q in range(src.shape[2]):
                    out[b, k, q] += src[b, p, q]


# ----------------------------------------------------------------------------------------------
# numba kernels on a padded input (2-D form; 1-D runs as height 1)
#
# Layout trick for the column stride ``sw``: the padded input is split into ``sw`` column
# phases, ``xr[n, c, r, p, m] = xp[n, c, r, p + m * sw]``, so kernel column ``b`` reads the
# contiguous run ``xr[n, c, r, phase[b], shift[b] + j]`` (``phase, shift = divmod``-like of
# ``b * dw``) for output columns ``j``: every inner loop is unit-stride and vectorises.
# Jobs own disjoint outputs (prange-safe) and block 4 channels (register reuse of the loaded
# row); each output is accumulated in the fixed order (channel pair, kernel row, kernel column)
# as ``acc += (w0 * u + w1 * v)``, the same in every block shape and thread count.
# ----------------------------------------------------------------------------------------------

_BLOCK = 4
#: below this many multiply-adds the serial driver runs (no thread start-up)
_PARALLEL_MIN_WORK = 1 << 21


@jit
def _forward_rows4(xr, w, phase, shift, n, o0, ci0, ih0, dh, acc):
    """``acc[k] += sum_{c, a, b} w[o0 + k, c, a, b] * row(c, a, b)``, ``k < 4``, one output row."""
    c_in_g, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    wo = acc.shape[1]
    a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
    for c in range(0, c_in_g - 1, 2):
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                v_row = xr[n, ci0 + c + 1, r, phase[b], s:s + wo]
                w00, w01 = w[o0, c, a, b], w[o0, c + 1, a, b]
                w10, w11 = w[o0 + 1, c, a, b], w[o0 + 1, c + 1, a, b]
                w20, w21 = w[o0 + 2, c, a, b], w[o0 + 2, c + 1, a, b]
                w30, w31 = w[o0 + 3, c, a, b], w[o0 + 3, c + 1, a, b]
                for j in range(wo):
                    u = u_row[j]
                    v = v_row[j]
                    a0[j] += w00 * u + w01 * v
                    a1[j] += w10 * u + w11 * v
                    a2[j] += w20 * u + w21 * v
                    a3[j] += w30 * u + w31 * v
    if c_in_g % 2:
        c = c_in_g - 1
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                w00, w10, w20, w30 = w[o0, c, a, b], w[o0 + 1, c, a, b], w[o0 + 2, c, a, b], \
                    w[o0 + 3, c, a, b]
                for j in range(wo):
                    u = u_row[j]
                    a0[j] += w00 * u
                    a1[j] += w10 * u
                    a2[j] += w20 * u
                    a3[j] += w30 * u


@jit
def _forward_rows1(xr, w, phase, shift, n, o, ci0, ih0, dh, acc):
    """One output channel of :func:`_forward_rows4` (same summation order)."""
    c_in_g, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    wo = acc.shape[0]
    for c in range(0, c_in_g - 1, 2):
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                v_row = xr[n, ci0 + c + 1, r, phase[b], s:s + wo]
                w0, w1 = w[o, c, a, b], w[o, c + 1, a, b]
                for j in range(wo):
                    acc[j] += w0 * u_row[j] + w1 * v_row[j]
    if c_in_g % 2:
        c = c_in_g - 1
        for a in range(kh):
            r = ih0 + a * dh
            for b in range(kw):
                s = shift[b]
                u_row = xr[n, ci0 + c, r, phase[b], s:s + wo]
                w0 = w[o, c, a, b]
                for j in range(wo):
                    acc[j] += w0 * u_row[j]


@jit
def _blocks(count):
    return (count + _BLOCK - 1) // _BLOCK


@jit
def _forward_jobs(n_batch, c_out, groups):
    return n_batch * groups * _blocks(c_out // groups)


@jit
def _forward_job(xr, w, bias, phase, shift, sh, dh, groups, out, job):
    """Output planes ``out[n, o0:o0 + 4]`` (fewer at the end of a group)."""
    c_out, c_in_g = w.shape[0], w.shape[1]
    ho, wo = out.shape[2], out.shape[3]
    c_out_g = c_out // groups
    nblk = _blocks(c_out_g)
    n = job // (groups * nblk)
    rem = job - n * (groups * nblk)
    grp = rem // nblk
    o0 = grp * c_out_g + (rem - grp * nblk) * _BLOCK
    nb = min(_BLOCK, (grp + 1) * c_out_g - o0)
    acc = np.empty((_BLOCK, wo))
    for i in range(ho):
        acc[:] = 0.0
        if nb == _BLOCK:
            _forward_rows4(xr, w, phase, shift, n, o0, grp * c_in_g, i * sh, dh, acc)
        else:
            for k in range(nb):
                _forward_rows1(xr, w, phase, shift, n, o0 + k, grp * c_in_g, i * sh, dh, acc[k])
        for k in range(nb):
            bv = bias[o0 + k]
            for j in range(wo):
                out[n, o0 + k, i, j] = acc[k, j] + bv


@jit
def _forward_serial(xr, w, bias, phase, shift, sh, dh, groups, out):
    for job in range(_forward_jobs(out.shape[0], w.shape[0], groups)):
        _forward_job(xr, w, bias, phase, shift, sh, dh, groups, out, job)


@pjit
def _forward_parallel(xr, w, bias, phase, shift, sh, dh, groups, out):
    for job in prange(_forward_jobs(out.shape[0], w.shape[0], groups)):
        _forward_job(xr, w, bias, phase, shift, sh, dh, groups, out, job)


@jit
def _input_grad_rows4(g, w, phase, shift, n, ci0, c, o_lo, o_hi, r, p, sh, dh, acc):
    """``acc[k, m] = sum_{o, a, b} w[o, c + k, a, b] * g[n, o, i, m - shift[b]]``, ``k < 4``,
    over the taps ``(a, b)`` that send output ``(i, .)`` to padded row ``r`` and column
    phase ``p`` (``i * sh + a * dh == r``, ``phase[b] == p``) and the columns ``m`` where
    ``g[n, o, i, m - shift[b]]`` exists: only terms of the exact sum are added (an Inf or NaN
    weight never meets a zero that is not in ``g``: no ``0 * inf``).
    """
    kh, kw = w.shape[2], w.shape[3]
    ho, wo, wq = g.shape[2], g.shape[3], acc.shape[1]
    for o in range(o_lo, o_hi, 2):
        pair = o + 1 < o_hi
        for a in range(kh):
            t = r - a * dh
            i = t // sh
            if t < 0 or i * sh != t or i >= ho:
                continue
            for b in range(kw):
                if phase[b] != p:
                    continue
                s = shift[b]
                cnt = min(wo, wq - s)
                if cnt <= 0:
                    continue
                u_row = g[n, o, i, :cnt]
                a0, a1 = acc[0, s:s + cnt], acc[1, s:s + cnt]
                a2, a3 = acc[2, s:s + cnt], acc[3, s:s + cnt]
                w00, w10, w20, w30 = w[o, c, a, b], w[o, c + 1, a, b], w[o, c + 2, a, b], \
                    w[o, c + 3, a, b]
                if pair:
                    v_row = g[n, o + 1, i, :cnt]
                    w01, w11, w21, w31 = w[o + 1, c, a, b], w[o + 1, c + 1, a, b], \
                        w[o + 1, c + 2, a, b], w[o + 1, c + 3, a, b]
                    for m in range(cnt):
                        u = u_row[m]
                        v = v_row[m]
                        a0[m] += w00 * u + w01 * v
                        a1[m] += w10 * u + w11 * v
                        a2[m] += w20 * u + w21 * v
                        a3[m] += w30 * u + w31 * v
                else:
                    for m in range(cnt):
                        u = u_row[m]
                        a0[m] += w00 * u
                        a1[m] += w10 * u
                        a2[m] += w20 * u
                        a3[m] += w30 * u


@jit
def _input_grad_rows1(g, w, phase, shift, n, c, o_lo, o_hi, r, p, sh, dh, acc):
    """One input channel of :func:`_input_grad_rows4` (same summation order)."""
    kh, kw = w.shape[2], w.shape[3]
    ho, wo, wq = g.shape[2], g.shape[3], acc.shape[0]
    for o in range(o_lo, o_hi, 2):
        pair = o + 1 < o_hi
        for a in range(kh):
            t = r - a * dh
            i = t // sh
            if t < 0 or i * sh != t or i >= ho:
                continue
            for b in range(kw):
                if phase[b] != p:
                    continue
                s = shift[b]
                cnt = min(wo, wq - s)
                if cnt <= 0:
                    continue
                u_row = g[n, o, i, :cnt]
                dst = acc[s:s + cnt]
                w0 = w[o, c, a, b]
                if pair:
                    v_row = g[n, o + 1, i, :cnt]
                    w1 = w[o + 1, c, a, b]
                    for m in range(cnt):
                        dst[m] += w0 * u_row[m] + w1 * v_row[m]
                else:
                    for m in range(cnt):
                        dst[m] += w0 * u_row[m]


@jit
def _input_grad_jobs(n_batch, c_in, groups):
    return n_batch * groups * _blocks(c_in // groups)


@jit
def _input_grad_job(g, w, phase, shift, sh, dh, groups, gr, job):
    """Input-gradient planes ``gr[n, ci0:ci0 + 4]`` (fewer at the end of a group), row by row."""
    c_out, c_in_g = w.shape[0], w.shape[1]
    hp, sw, wq = gr.shape[2], gr.shape[3], gr.shape[4]
    c_out_g = c_out // groups
    nblk = _blocks(c_in_g)
    n = job // (groups * nblk)
    rem = job - n * (groups * nblk)
    grp = rem // nblk
    c = (rem - grp * nblk) * _BLOCK
    nb = min(_BLOCK, c_in_g - c)
    ci0 = grp * c_in_g + c
    o_lo, o_hi = grp * c_out_g, (grp + 1) * c_out_g
    acc = np.empty((_BLOCK, wq))
    for r in range(hp):
        for p in range(sw):
            acc[:] = 0.0
            if nb == _BLOCK:
                _input_grad_rows4(g, w, phase, shift, n, ci0, c, o_lo, o_hi, r, p, sh, dh,
                                  acc)
            else:
                for k in range(nb):
                    _input_grad_rows1(g, w, phase, shift, n, c + k, o_lo, o_hi, r, p, sh, dh,
                                      acc[k])
            for k in range(nb):
                for m in range(wq):
                    gr[n, ci0 + k, r, p, m] = acc[k, m]


@jit
def _input_grad_serial(g, w, phase, shift, sh, dh, groups, gr):
    for job in range(_input_grad_jobs(gr.shape[0], gr.shape[1], groups)):
        _input_grad_job(g, w, phase, shift, sh, dh, groups, gr, job)


@pjit
def _input_grad_parallel(g, w, phase, shift, sh, dh, groups, gr):
    for job in prange(_input_grad_jobs(gr.shape[0], gr.shape[1], groups)):
        _input_grad_job(g, w, phase, shift, sh, dh, groups, gr, job)


@jit
def _weight_grad_rows1(g, xr, phase, shift, sh, dh, n, i, two, o, ci, acc):
    """``acc[t] += g[n, o, i] * row(i, t) (+ g[n, o, i + 1] * row(i + 1, t))``: the
    summation order of the four-channel update in :func:`_weight_grad_job`."""
    kh, kw, wo = acc.shape[0] // shift.shape[0], shift.shape[0], acc.shape[1]
    h = g[n, o, i]
    e = g[n, o, i + 1 if two else i]
    for a in range(kh):
        r = i * sh + a * dh
        for b in range(kw):
            s, t = shift[b], a * kw + b
            u_row = xr[n, ci, r, phase[b], s:s + wo]
            p = acc[t]
            if two:
                v_row = xr[n, ci, r + sh, phase[b], s:s + wo]
                for j in range(wo):
                    p[j] += h[j] * u_row[j] + e[j] * v_row[j]
            else:
                for j in range(wo):
                    p[j] += h[j] * u_row[j]


@jit
def _weight_grad_job(g, xr, phase, shift, sh, dh, groups, gw, job):
    """``gw[o0:o0 + 4, c] = sum_{n, i, j} g[n, o, i, j] * row(c, a, b)[j]``.

    Partial sums per output column, two output rows per update (a vectorisable update with
    few stores), reduced over the columns at the end in a fixed order.
    """
    n_batch, c_out, ho, wo = g.shape
    c_in_g, kh, kw = gw.shape[1], gw.shape[2], gw.shape[3]
    c_out_g = c_out // groups
    nblk = _blocks(c_out_g)
    blk = job // c_in_g
    c = job - blk * c_in_g
    grp = blk // nblk
    o0 = grp * c_out_g + (blk - grp * nblk) * _BLOCK
    nb = min(_BLOCK, (grp + 1) * c_out_g - o0)
    ci = grp * c_in_g + c
    acc = np.zeros((_BLOCK, kh * kw, wo))
    for n in range(n_batch):
        for i in range(0, ho, 2):
            two = i + 1 < ho
            if nb == _BLOCK and two:
                # four output channels, rows i and i + 1 (inlined: a call here is slower)
                h0, h1, h2, h3 = g[n, o0, i], g[n, o0 + 1, i], g[n, o0 + 2, i], \
                    g[n, o0 + 3, i]
                e0, e1, e2, e3 = g[n, o0, i + 1], g[n, o0 + 1, i + 1], g[n, o0 + 2, i + 1], \
                    g[n, o0 + 3, i + 1]
                for a in range(kh):
                    r = i * sh + a * dh
                    for b in range(kw):
                        s, t = shift[b], a * kw + b
                        u_row = xr[n, ci, r, phase[b], s:s + wo]
                        v_row = xr[n, ci, r + sh, phase[b], s:s + wo]
                        p0, p1, p2, p3 = acc[0, t], acc[1, t], acc[2, t], acc[3, t]
                        for j in range(wo):
                            u = u_row[j]
                            v = v_row[j]
                            p0[j] += h0[j] * u + e0[j] * v
                            p1[j] += h1[j] * u + e1[j] * v
                            p2[j] += h2[j] * u + e2[j] * v
                            p3[j] += h3[j] * u + e3[j] * v
            else:
                for k in range(nb):
                    _weight_grad_rows1(g, xr, phase, shift, sh, dh, n, i, two, o0 + k, ci,
                                       acc[k])
    for k in range(nb):
        for a in range(kh):
            for b in range(kw):
                s = 0.0
                for j in range(wo):
                    s += acc[k, a * kw + b, j]
                gw[o0 + k, c, a, b] = s


@jit
def _weight_grad_jobs(c_out, c_in_g, groups):
    return groups * _blocks(c_out // groups) * c_in_g


@jit
def _weight_grad_serial(g, xr, phase, shift, sh, dh, groups, gw):
    for job in range(_weight_grad_jobs(gw.shape[0], gw.shape[1], groups)):
        _weight_grad_job(g, xr, phase, shift, sh, dh, groups, gw, job)


@pjit
def _weight_grad_parallel(g, xr, phase, shift, sh, dh, groups, gw):
    for job in prange(_weight_grad_jobs(gw.shape[0], gw.shape[1], groups)):
        _weight_grad_job(g, xr, phase, shift, sh, dh, groups, gw, job)


# ----------------------------------------------------------------------------------------------
# weight gradient with the input channels as the vector dimension (C_in / groups >= 16)
#
# ``gw[o, c, a, b] = sum_{n, i, j} g[n, o, i, j] * xpad[n, c, i*sh + a*dh, j*sw + b*dw]``.
# The padded input is stored channels last, one block per group, each padded row flattened:
# ``xf[n, grp, r, p * C_in_g + c] = xpad[n, grp * C_in_g + c, r, p]``. Output column ``j``
# reads ``xf[n, grp, r, (j*sw + b*dw) * C_in_g + c]``: with ``dw == 1`` the ``kw * C_in_g``
# values ``(b, c)`` are one contiguous run, laid out like the partial sums ``acc[..., b *
# C_in_g + c]``, so one long unit-stride loop updates a whole kernel row (``dw > 1``: one run of
# ``C_in_g`` per kernel column, the same updates). An update adds four output columns of one
# output row,
# ``acc += ((g0 * u0 + g1 * u1) + (g2 * u2 + g3 * u3))`` with the scalars ``gt = g[n, o, i,
# j0 + t]``; the ``wo % 4`` leftover columns are added one at a time (``acc += g * u``). So
# every ``gw[o, c, a, b]`` is summed in one fixed order (sample, output row, column group,
# leftover column), the same in the 8-channel block and in the 1-channel kernel, for any
# thread count. A job owns a block of 8 output channels (fewer at the end of a group) and one
# or all kernel rows: disjoint entries of ``gw``, so jobs run in any order.
# ----------------------------------------------------------------------------------------------

#: the channel-vector weight-gradient kernels run when C_in / groups reaches this
_WGRAD_MIN_CHANNELS = 16
#: output channels per weight-gradient job (each loaded input run feeds 8 accumulators)
_WGRAD_BLOCK = 8
#: a partial block with fewer channels than this runs the 1-channel kernel per channel
_WGRAD_PARTIAL_MIN = 6
#: a job keeps all kernel rows (its input rows stay in cache) when there are this many blocks
#: of output channels and a block's partial sums are at most this many doubles; otherwise each
#: kernel row is a job of its own (more jobs, smaller partial sums)
_WGRAD_MIN_BLOCKS = 8
_WGRAD_MAX_ACC = 8 * 1024


@jit
def _wgrad_rows8(g, xf, n, grp, i, r, o0, nb, kw, sw, dw, acc):
    """``acc[k, b * C + c] += sum_j g[n, o_k, i, j] * xf[n, grp, r, (j*sw + b*dw) * C + c]``
    for ``k < 8`` and ``o_k = o0 + min(k, nb - 1)``: output row ``i`` of sample ``n`` and the
    kernel row that reads padded row ``r``. A partial block (``nb < 8``) repeats its last
    channel in the rows ``k >= nb`` of ``acc``, which the caller ignores."""
    wo = g.shape[3]
    span = acc.shape[1]
    c_in_g = span // kw
    fold = kw if dw == 1 else 1  # kernel columns per contiguous run
    run = fold * c_in_g
    row = xf[n, grp, r]
    g0, g1, g2, g3 = g[n, o0, i], g[n, o0 + min(1, nb - 1), i], \
        g[n, o0 + min(2, nb - 1), i], g[n, o0 + min(3, nb - 1), i]
    g4, g5, g6, g7 = g[n, o0 + min(4, nb - 1), i], g[n, o0 + min(5, nb - 1), i], \
        g[n, o0 + min(6, nb - 1), i], g[n, o0 + min(7, nb - 1), i]
    full = wo - wo % 4
    for j0 in range(0, full, 4):
        s00, s01, s02, s03 = g0[j0], g0[j0 + 1], g0[j0 + 2], g0[j0 + 3]
        s10, s11, s12, s13 = g1[j0], g1[j0 + 1], g1[j0 + 2], g1[j0 + 3]
        s20, s21, s22, s23 = g2[j0], g2[j0 + 1], g2[j0 + 2], g2[j0 + 3]
        s30, s31, s32, s33 = g3[j0], g3[j0 + 1], g3[j0 + 2], g3[j0 + 3]
        s40, s41, s42, s43 = g4[j0], g4[j0 + 1], g4[j0 + 2], g4[j0 + 3]
        s50, s51, s52, s53 = g5[j0], g5[j0 + 1], g5[j0 + 2], g5[j0 + 3]
        s60, s61, s62, s63 = g6[j0], g6[j0 + 1], g6[j0 + 2], g6[j0 + 3]
        s70, s71, s72, s73 = g7[j0], g7[j0 + 1], g7[j0 + 2], g7[j0 + 3]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j0 * sw + b * dw) * c_in_g
            q1, q2, q3 = q0 + sw * c_in_g, q0 + 2 * sw * c_in_g, q0 + 3 * sw * c_in_g
            x0, x1 = row[q0:q0 + run], row[q1:q1 + run]
            x2, x3 = row[q2:q2 + run], row[q3:q3 + run]
            p0, p1 = acc[0, lo:lo + run], acc[1, lo:lo + run]
            p2, p3 = acc[2, lo:lo + run], acc[3, lo:lo + run]
            p4, p5 = acc[4, lo:lo + run], acc[5, lo:lo + run]
            p6, p7 = acc[6, lo:lo + run], acc[7, lo:lo + run]
            for m in range(run):
                u0 = x0[m]
                u1 = x1[m]
                u2 = x2[m]
                u3 = x3[m]
                p0[m] += (s00 * u0 + s01 * u1) + (s02 * u2 + s03 * u3)
                p1[m] += (s10 * u0 + s11 * u1) + (s12 * u2 + s13 * u3)
                p2[m] += (s20 * u0 + s21 * u1) + (s22 * u2 + s23 * u3)
                p3[m] += (s30 * u0 + s31 * u1) + (s32 * u2 + s33 * u3)
                p4[m] += (s40 * u0 + s41 * u1) + (s42 * u2 + s43 * u3)
                p5[m] += (s50 * u0 + s51 * u1) + (s52 * u2 + s53 * u3)
                p6[m] += (s60 * u0 + s61 * u1) + (s62 * u2 + s63 * u3)
                p7[m] += (s70 * u0 + s71 * u1) + (s72 * u2 + s73 * u3)
    for j in range(full, wo):
        s0, s1, s2, s3 = g0[j], g1[j], g2[j], g3[j]
        s4, s5, s6, s7 = g4[j], g5[j], g6[j], g7[j]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j * sw + b * dw) * c_in_g
            x0 = row[q0:q0 + run]
            p0, p1 = acc[0, lo:lo + run], acc[1, lo:lo + run]
            p2, p3 = acc[2, lo:lo + run], acc[3, lo:lo + run]
            p4, p5 = acc[4, lo:lo + run], acc[5, lo:lo + run]
            p6, p7 = acc[6, lo:lo + run], acc[7, lo:lo + run]
            for m in range(run):
                u0 = x0[m]
                p0[m] += s0 * u0
                p1[m] += s1 * u0
                p2[m] += s2 * u0
                p3[m] += s3 * u0
                p4[m] += s4 * u0
                p5[m] += s5 * u0
                p6[m] += s6 * u0
                p7[m] += s7 * u0


@jit
def _wgrad_rows1(g, xf, n, grp, i, r, o, kw, sw, dw, acc):
    """One output channel of :func:`_wgrad_rows8` (``acc`` is ``(kw * C,)``), same summation
    order."""
    wo = g.shape[3]
    span = acc.shape[0]
    c_in_g = span // kw
    fold = kw if dw == 1 else 1
    run = fold * c_in_g
    row = xf[n, grp, r]
    gr = g[n, o, i]
    full = wo - wo % 4
    for j0 in range(0, full, 4):
        s0, s1, s2, s3 = gr[j0], gr[j0 + 1], gr[j0 + 2], gr[j0 + 3]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j0 * sw + b * dw) * c_in_g
            q1, q2, q3 = q0 + sw * c_in_g, q0 + 2 * sw * c_in_g, q0 + 3 * sw * c_in_g
            x0, x1 = row[q0:q0 + run], row[q1:q1 + run]
            x2, x3 = row[q2:q2 + run], row[q3:q3 + run]
            p = acc[lo:lo + run]
            for m in range(run):
                p[m] += (s0 * x0[m] + s1 * x1[m]) + (s2 * x2[m] + s3 * x3[m])
    for j in range(full, wo):
        s0 = gr[j]
        for b in range(0, kw, fold):
            lo = b * c_in_g
            q0 = (j * sw + b * dw) * c_in_g
            x0 = row[q0:q0 + run]
            p = acc[lo:lo + run]
            for m in range(run):
                p[m] += s0 * x0[m]


@jit
def _wgrad_jobs(c_out, groups, kh, rows):
    return groups * ((c_out // groups + _WGRAD_BLOCK - 1) // _WGRAD_BLOCK) * (kh // rows)


@jit
def _wgrad_job(g, xf, sh, sw, dh, dw, rows, partial_min, gw, job):
    """``gw[o0:o0 + 8, :, a0:a0 + rows]`` (fewer channels at the end of a group): one block
    of output channels, all input channels of its group, ``rows`` kernel rows (a divisor of
    ``kh``). A partial block of ``nb >= partial_min`` channels runs the 8-channel kernel, a
    smaller one the 1-channel kernel per channel (same sums either way)."""
    n_batch, c_out, ho = g.shape[0], g.shape[1], g.shape[2]
    groups = xf.shape[1]
    c_in_g, kh, kw = gw.shape[1], gw.shape[2], gw.shape[3]
    c_out_g = c_out // groups
    nblk = (c_out_g + _WGRAD_BLOCK - 1) // _WGRAD_BLOCK
    nrow = kh // rows
    blk = job // nrow
    a0 = (job - blk * nrow) * rows
    grp = blk // nblk
    o0 = grp * c_out_g + (blk - grp * nblk) * _WGRAD_BLOCK
    nb = min(_WGRAD_BLOCK, (grp + 1) * c_out_g - o0)
    acc = np.zeros((rows, _WGRAD_BLOCK, kw * c_in_g))
    for n in range(n_batch):
        for i in range(ho):
            for t in range(rows):
                r = i * sh + (a0 + t) * dh
                if nb >= partial_min:
                    _wgrad_rows8(g, xf, n, grp, i, r, o0, nb, kw, sw, dw, acc[t])
                else:
                    for k in range(nb):
                        _wgrad_rows1(g, xf, n, grp, i, r, o0 + k, kw, sw, dw, acc[t, k])
    for k in range(nb):
        for t in range(rows):
            for b in range(kw):
                for c in range(c_in_g):
                    gw[o0 + k, c, a0 + t, b] = acc[t, k, b * c_in_g + c]


@jit
def _wgrad_serial(g, xf, sh, sw, dh, dw, rows, partial_min, gw):
    for job in range(_wgrad_jobs(g.shape[1], xf.shape[1], gw.shape[2], rows)):
        _wgrad_job(g, xf, sh, sw, dh, dw, rows, partial_min, gw, job)


@pjit
def _wgrad_parallel(g, xf, sh, sw, dh, dw, rows, partial_min, gw):
    for job in prange(_wgrad_jobs(g.shape[1], xf.shape[1], gw.shape[2], rows)):
        _wgrad_job(g, xf, sh, sw, dh, dw, rows, partial_min, gw, job)


def _wgrad_rows_per_job(w_shape, groups):
    """Kernel rows per job of :func:`_wgrad_job`: all of them or one (shape only)."""
    c_out, c_in_g, kh, kw = w_shape
    blocks = groups * -(-(c_out // groups) // _WGRAD_BLOCK)
    if blocks >= _WGRAD_MIN_BLOCKS and _WGRAD_BLOCK * kh * kw * c_in_g <= _WGRAD_MAX_ACC:
        return kh
    return 1


@jit
def _channels_last_row(x, ih, iw, xt, nr):
    """``xt[n, q, r, p, c] = x[n, q * C_g + c, ih[r], iw[p]]`` (0 where an index is -1) for
    ``(n, r) = divmod(nr, Hp)``."""
    groups, hp, wp, c_g = xt.shape[1], xt.shape[2], xt.shape[3], xt.shape[4]
    n = nr // hp
    r = nr - n * hp
    h = ih[r]
    for q in range(groups):
        dst = xt[n, q, r]
        for p in range(wp):
            w = iw[p]
            out = dst[p]
            if h < 0 or w < 0:
                for c in range(c_g):
                    out[c] = 0.0
            else:
                for c in range(c_g):
                    out[c] = x[n, q * c_g + c, h, w]


@jit
def _channels_last_serial(x, ih, iw, xt):
    for nr in range(xt.shape[0] * xt.shape[2]):
        _channels_last_row(x, ih, iw, xt, nr)


@pjit
def _channels_last_parallel(x, ih, iw, xt):
    for nr in prange(xt.shape[0] * xt.shape[2]):
        _channels_last_row(x, ih, iw, xt, nr)


# ----------------------------------------------------------------------------------------------
# input gradient with the input channels as the vector dimension (C_in / groups >= 16)
#
# ``gxpad[n, c, r, q] = sum_{o, a, b: r = i*sh + a*dh, q = j*sw + b*dw} w[o, c, a, b] *
# g[n, o, i, j]``. The result is built channels last, one block per group, each padded row
# flattened: ``gx[n, grp, r, q * C_in_g + c]``; the weights are stored as ``wt[grp, a, o,
# b * C_in_g + c] = w[grp * C_out_g + o, c, a, b]`` and ``g`` channels last, ``gt[n, grp, i,
# j, o]``, both with the output channels of a group zero-padded to a multiple of 8. Output
# column ``j`` of kernel row ``a`` updates the run ``gx[n, grp, r, (j*sw + b*dw) * C_in_g +
# c]``: with ``dw == 1`` the ``kw * C_in_g`` entries ``(b, c)`` are one contiguous run, laid
# out like ``wt[grp, a, o]`` (``dw > 1``: one run of ``C_in_g`` per kernel column). An update
# adds 8 output channels at once,
# ``acc += ((s0 * w0 + s1 * w1) + (s2 * w2 + s3 * w3)) + ((s4 * w4 + s5 * w5) + (s6 * w6 +
# s7 * w7))`` with ``st = g[n, o0 + t, i, j]``; padded channels add ``0 * 0``. So every entry
# is summed in one fixed order (block of 8 output channels, kernel row, kernel column run,
# output column) whatever the number of channels or threads; there is no remainder path. A job owns
# one padded row of one sample and group: disjoint outputs, so jobs run in any order. With zero
# padding only the rows that are kept are computed (the padding's rows are dropped anyway), and
# the unpacking to planes goes row by row (one source row in cache, each plane's row written
# contiguously): copies, so the result is the same bits as computing and cropping every row.
# ----------------------------------------------------------------------------------------------

#: the channel-vector input-gradient kernels run when C_in / groups reaches this ...
_IGRAD_MIN_CHANNELS = 16
#: ... and C_out / groups this (fewer would mostly add zero-padded channels)
_IGRAD_MIN_OUT_CHANNELS = 8
#: output channels summed per update (the group's channels are zero-padded to a multiple)
_IGRAD_BLOCK = 8


@jit
def _igrad_job(gt, wt, kw, sh, sw, dh, dw, r0, gx, job):
    """Padded row ``r0 + rr`` into ``gx[n, grp, rr]`` for ``(n, grp, rr) = job`` (row-major;
    ``gx`` holds the padded rows from ``r0`` on that are needed)."""
    ho, wo, cpad = gt.shape[2], gt.shape[3], gt.shape[4]
    groups, kh, span = wt.shape[0], wt.shape[1], wt.shape[3]
    rows = gx.shape[2]
    c_in_g = span // kw
    fold = kw if dw == 1 else 1  # kernel columns per contiguous run
    run = fold * c_in_g
    n = job // (groups * rows)
    rem = job - n * (groups * rows)
    grp = rem // rows
    row = gx[n, grp, rem - grp * rows]
    r = r0 + rem - grp * rows
    for m in range(row.shape[0]):
        row[m] = 0.0
    for ob in range(0, cpad, _IGRAD_BLOCK):
        for a in range(kh):
            t = r - a * dh
            i = t // sh
            if t < 0 or i * sh != t or i >= ho:
                continue
            wa = wt[grp, a]
            w0, w1, w2, w3 = wa[ob], wa[ob + 1], wa[ob + 2], wa[ob + 3]
            w4, w5, w6, w7 = wa[ob + 4], wa[ob + 5], wa[ob + 6], wa[ob + 7]
            gi = gt[n, grp, i]
            for b in range(0, kw, fold):
                lo = b * c_in_g
                x0, x1 = w0[lo:lo + run], w1[lo:lo + run]
                x2, x3 = w2[lo:lo + run], w3[lo:lo + run]
                x4, x5 = w4[lo:lo + run], w5[lo:lo + run]
                x6, x7 = w6[lo:lo + run], w7[lo:lo + run]
                for j in range(wo):
                    s = gi[j]
                    s0, s1, s2, s3 = s[ob], s[ob + 1], s[ob + 2], s[ob + 3]
                    s4, s5, s6, s7 = s[ob + 4], s[ob + 5], s[ob + 6], s[ob + 7]
                    q0 = (j * sw + b * dw) * c_in_g
                    p = row[q0:q0 + run]
                    for m in range(run):
                        p[m] += ((s0 * x0[m] + s1 * x1[m]) + (s2 * x2[m] + s3 * x3[m])) + \
                            ((s4 * x4[m] + s5 * x5[m]) + (s6 * x6[m] + s7 * x7[m]))


@jit
def _igrad_serial(gt, wt, kw, sh, sw, dh, dw, r0, gx):
    for job in range(gx.shape[0] * gx.shape[1] * gx.shape[2]):
        _igrad_job(gt, wt, kw, sh, sw, dh, dw, r0, gx, job)


@pjit
def _igrad_parallel(gt, wt, kw, sh, sw, dh, dw, r0, gx):
    for job in prange(gx.shape[0] * gx.shape[1] * gx.shape[2]):
        _igrad_job(gt, wt, kw, sh, sw, dh, dw, r0, gx, job)


@jit
def _igrad_gt_row(g, gt, ni):
    """``gt[n, q, i, j, o] = g[n, q * C_g + o, i, j]`` (``gt`` zero beyond ``C_g``) for
    ``(n, i) = divmod(ni, Ho)``."""
    groups, ho, wo, cpad = gt.shape[1], gt.shape[2], gt.shape[3], gt.shape[4]
    c_g = g.shape[1] // groups
    n = ni // ho
    i = ni - n * ho
    for q in range(groups):
        dst = gt[n, q, i]
        for j in range(wo):
            out = dst[j]
            for o in range(c_g):
                out[o] = g[n, q * c_g + o, i, j]
            for o in range(c_g, cpad):
                out[o] = 0.0


@jit
def _igrad_gt_serial(g, gt):
    for ni in range(gt.shape[0] * gt.shape[2]):
        _igrad_gt_row(g, gt, ni)


@pjit
def _igrad_gt_parallel(g, gt):
    for ni in prange(gt.shape[0] * gt.shape[2]):
        _igrad_gt_row(g, gt, ni)


@jit
def _igrad_unpack_row(gx, top, left, out, job):
    """``out[n, q * C_g + c, h, x] = gx[n, q, top + h, (left + x) * C_g + c]`` for one row
    ``(n, q, h) = job`` (row-major) of every channel of group ``q``: the source row stays in
    cache while each channel's row is written contiguously."""
    groups = gx.shape[1]
    c_all, h_out, w_out = out.shape[1], out.shape[2], out.shape[3]
    c_g = c_all // groups
    n = job // (groups * h_out)
    rem = job - n * (groups * h_out)
    q = rem // h_out
    h = rem - q * h_out
    src = gx[n, q, top + h]
    for c in range(c_g):
        dst = out[n, q * c_g + c, h]
        for x in range(w_out):
            dst[x] = src[(left + x) * c_g + c]


@jit
def _igrad_unpack_serial(gx, top, left, out):
    for job in range(out.shape[0] * gx.shape[1] * out.shape[2]):
        _igrad_unpack_row(gx, top, left, out, job)


@pjit
def _igrad_unpack_parallel(gx, top, left, out):
    for job in prange(out.shape[0] * gx.shape[1] * out.shape[2]):
        _igrad_unpack_row(gx, top, left, out, job)


def _igrad_channels_last(g, w, geom, n_batch, c_in):
    """:func:`_input_grad` with the channel-vector kernels (``C_in / groups >= 16``)."""
    groups = geom.groups
    c_out, c_in_g, kh, kw = w.shape
    c_out_g = c_out // groups
    cpad = -(-c_out_g // _IGRAD_BLOCK) * _IGRAD_BLOCK
    hp, wp = geom.padded_hw
    ho, wo = g.shape[2], g.shape[3]
    parallel = _macs(g.size, w[0].size) >= _PARALLEL_MIN_WORK
    gt = np.empty((n_batch, groups, ho, wo, cpad))
    (_igrad_gt_parallel if parallel else _igrad_gt_serial)(g, gt)
    wt = np.zeros((groups, kh, cpad, kw, c_in_g))
    wt[:, :, :c_out_g] = w.reshape(groups, c_out_g, c_in_g, kh, kw).transpose(0, 3, 1, 4, 2)
    cropped = geom.mode == "zeros" and geom.maps is None  # zero padding: its rows are dropped
    r0, rows = (geom.pads[0][0], geom.in_hw[0]) if cropped else (0, hp)
    gx = np.empty((n_batch, groups, rows, wp * c_in_g))  # only the rows that are kept
    (_igrad_parallel if parallel else _igrad_serial)(
        gt, wt.reshape(groups, kh, cpad, kw * c_in_g), kw, geom.stride[0], geom.stride[1],
        geom.dilation[0], geom.dilation[1], r0, gx)
    unpack = _igrad_unpack_parallel if parallel else _igrad_unpack_serial
    if cropped:
        out = np.empty((n_batch, c_in) + tuple(geom.in_hw))
        unpack(gx, 0, geom.pads[1][0], out)
        return out
    gp = np.empty((n_batch, c_in, hp, wp))
    unpack(gx, 0, 0, gp)
    return _unpad_adjoint(gp, geom)


# ----------------------------------------------------------------------------------------------
# the three building blocks on 4-D float64 arrays
# ----------------------------------------------------------------------------------------------

def _column_phases(geom):
    """``(phase, shift)`` of every kernel column in the stride-split layout."""
    sw, dw, kw = geom.stride[1], geom.dilation[1], geom.k_hw[1]
    offsets = np.arange(kw, dtype=np.int64) * dw
    return offsets % sw, offsets // sw


def _split_columns(xp, sw):
    """``(N, C, Hp, Wp) -> (N, C, Hp, P, ceil(Wp / sw))``, ``[..., p, m] = xp[..., p + m sw]``.

    Only the ``P = min(sw, Wp)`` phases that exist are stored (a stride larger than the padded
    width would otherwise allocate ``sw`` mostly empty phases); one vectorised copy.
    """
    if sw == 1:
        return xp[:, :, :, None, :]
    n, c, hp, wp = xp.shape
    if sw >= wp:  # one column per phase
        return np.ascontiguousarray(xp[:, :, :, :, None])
    m, full = -(-wp // sw), wp // sw
    xr = np.zeros((n, c, hp, sw, m))
    xr[..., :full] = xp[..., :full * sw].reshape(n, c, hp, full, sw).transpose(0, 1, 2, 4, 3)
    if full < m:
        xr[..., :wp - full * sw, full] = xp[..., full * sw:]
    return xr


def _merge_columns(gr, sw, wp):
    """Inverse of :func:`_split_columns` (entries past ``wp`` are never read)."""
    if sw == 1:
        return gr[:, :, :, 0, :]
    n, c, hp, p, m = gr.shape
    if sw >= wp:
        return gr[..., 0]
    gp = np.empty((n, c, hp, m, sw))
    gp[...] = gr.transpose(0, 1, 2, 4, 3)
    return gp.reshape(n, c, hp, m * sw)[..., :wp]


def _macs(*shape):
    return int(np.prod(np.asarray(shape, dtype=np.float64)))


def _forward(x, w, bias, geom):
    n, c_out = x.shape[0], w.shape[0]
    xr = _split_columns(_pad(x, geom), geom.stride[1])
    out = np.empty((n, c_out) + geom.out_hw)
    b = np.zeros(c_out) if bias is None else bias
    phase, shift = _column_phases(geom)
    run = _forward_parallel if _macs(out.size, w[0].size) >= _PARALLEL_MIN_WORK \
        else _forward_serial
    run(xr, w, b, phase, shift, geom.stride[0], geom.dilation[0], geom.groups, out)
    return out


def _input_grad(g, w, geom, n_batch, c_in):
    if w.shape[1] >= _IGRAD_MIN_CHANNELS and w.shape[0] // geom.groups >= _IGRAD_MIN_OUT_CHANNELS:
        return _igrad_channels_last(g, w, geom, n_batch, c_in)
    sw = geom.stride[1]
    hp, wp = geom.padded_hw
    wq = -(-wp // sw)
    phase, shift = _column_phases(geom)
    gr = np.empty((n_batch, c_in, hp, min(sw, wp), wq))
    run = _input_grad_parallel if _macs(g.size, w[0].size) >= _PARALLEL_MIN_WORK \
        else _input_grad_serial
    run(g, w, phase, shift, geom.stride[0], geom.dilation[0], geom.groups, gr)
    return _unpad_adjoint(np.ascontiguousarray(_merge_columns(gr, sw, wp)), geom)


def _weight_grad(g, x, w_shape, geom):
    work = _macs(g.size, np.prod(w_shape[1:]))
    if w_shape[1] >= _WGRAD_MIN_CHANNELS:  # channels-last kernels (input channels as lanes)
        n, c_in = x.shape[0], x.shape[1]
        hp, wp = geom.padded_hw
        c_in_g = c_in // geom.groups
        ih, iw = _pad_maps(geom)
        xt = np.empty((n, geom.groups, hp, wp, c_in_g))
        parallel = work >= _PARALLEL_MIN_WORK
        (_channels_last_parallel if parallel else _channels_last_serial)(x, ih, iw, xt)
        gw = np.empty(w_shape)
        (_wgrad_parallel if parallel else _wgrad_serial)(
            g, xt.reshape(n, geom.groups, hp, wp * c_in_g), geom.stride[0], geom.stride[1],
            geom.dilation[0], geom.dilation[1], _wgrad_rows_per_job(w_shape, geom.groups),
            _WGRAD_PARTIAL_MIN, gw)
        return gw
    xr = _split_columns(_pad(x, geom), geom.stride[1])
    gw = np.empty(w_shape)
    phase, shift = _column_phases(geom)
    run = _weight_grad_parallel if work >= _PARALLEL_MIN_WORK else _weight_grad_serial
    run(g, xr, phase, shift, geom.stride[0], geom.dilation[0], geom.groups, gw)
    return gw


# ----------------------------------------------------------------------------------------------
# public convolution API
# ----------------------------------------------------------------------------------------------

def _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    x, unbatched = _lift(x, nd)
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                     groups, padding_mode)
    call = partial(_describe_call, f"conv{nd}d", x.shape[1 if unbatched else 0:], geom, nd)
    _guard((x.shape[0], weight.shape[0]) + geom.out_hw, "the output", call)
    plan = _plan(geom, x.shape[0], x.shape[1], call)
    out = _from2d(_forward(_to2d(x, nd), _to2d(weight, nd), bias, plan), nd)
    return out[0] if unbatched else out


def _check_grad_out(grad_out, nd, n_batch, c_out, geom, unbatched=False):
    g = as_float64(grad_out, "grad_out", ndim=nd + 1 if unbatched else nd + 2)
    expected = (n_batch, c_out) + geom.out_hw[2 - nd:]
    if unbatched:
        expected = expected[1:]
    if g.shape != expected:
        raise ValueError(f"grad_out must have the output's shape {expected}, got {g.shape}")
    return g[None] if unbatched else g


def _conv_backward(nd, grad_out, x, weight, bias, stride, padding, dilation, groups,
                   padding_mode):
    x, unbatched = _lift(x, nd)
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                     groups, padding_mode)
    g = _check_grad_out(grad_out, nd, x.shape[0], weight.shape[0], geom, unbatched)
    call = partial(_describe_call, f"conv{nd}d_backward", x.shape[1 if unbatched else 0:], geom,
                   nd)
    plan = _plan(geom, x.shape[0], x.shape[1], call)
    g2, w2 = _to2d(g, nd), _to2d(weight, nd)
    grad_x = _from2d(_input_grad(g2, w2, plan, x.shape[0], x.shape[1]), nd)
    grad_w = _from2d(_weight_grad(g2, _to2d(x, nd), w2.shape, plan), nd)
    grad_b = None if bias is None else g.sum(axis=tuple(range(2, nd + 2)) + (0,))
    return (grad_x[0] if unbatched else grad_x), grad_w, grad_b


_CONV_DOC = """{nd}-D convolution (cross-correlation) with ``torch.nn.functional.conv{nd}d`` semantics.

    Parameters
    ----------
    x : array_like, shape {xshape}
    weight : array_like, shape {wshape}
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or tuple of {nd} ints, >= 1
    padding : int, tuple of {nd} ints, ``"valid"`` or ``"same"``
        ``"same"``: output size ``ceil(size / stride)``, extra pixel of an odd total padding
        after (TensorFlow's rule; equals PyTorch's ``"same"`` for stride 1).
    groups : int, dividing ``C_in`` and ``C_out``
    padding_mode : ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"replicate"``

    Returns
    -------
    ndarray, float64, shape {oshape}
        Whatever float or integer dtype comes in (see the module docstring for the formula).
    """


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


conv1d.__doc__ = _CONV_DOC.format(nd=1, xshape="(N, C_in, L)",
                                  wshape="(C_out, C_in // groups, k)", oshape="(N, C_out, L_out)")
conv2d.__doc__ = _CONV_DOC.format(nd=2, xshape="(N, C_in, H, W)",
                                  wshape="(C_out, C_in // groups, kH, kW)",
                                  oshape="(N, C_out, H_out, W_out)")
conv2d.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> conv2d(x, w)
    array([[[[10., 14., 18.],
             [26., 30., 34.],
             [42., 46., 50.]]]])
    >>> conv2d(x, w, padding="same").shape
    (1, 1, 4, 4)
    """

_BACKWARD_DOC = """Backward (vector-Jacobian product) of :func:`conv{nd}d`.

    Same arguments as :func:`conv{nd}d` after ``grad_out`` (the gradient of the output, shape
    of the output). Gradients flow through the padding: with ``padding_mode`` other than
    ``"zeros"`` a padded copy of an input pixel adds its gradient to that pixel.

    Returns
    -------
    (grad_x, grad_weight, grad_bias) : float64 arrays shaped like ``x``, ``weight`` and
        ``bias``; ``grad_bias`` is ``None`` when ``bias`` is ``None``.
    """


def conv1d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _conv_backward(1, grad_out, x, weight, bias, stride, padding, dilation, groups,
                          padding_mode)


def conv2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _conv_backward(2, grad_out, x, weight, bias, stride, padding, dilation, groups,
                          padding_mode)


conv1d_backward.__doc__ = _BACKWARD_DOC.format(nd=1)
conv2d_backward.__doc__ = _BACKWARD_DOC.format(nd=2)
conv2d_backward.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d_backward
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> grad_x, grad_w, grad_b = conv2d_backward(np.ones((1, 1, 3, 3)), x, w)
    >>> grad_x[0, 0]  # how many 2 x 2 windows cover each pixel
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    >>> grad_w[0, 0]
    array([[45., 54.],
           [81., 90.]])
    >>> grad_b is None
    True
    """


# ----------------------------------------------------------------------------------------------
# transposed convolution (the adjoint of conv in its input)
# ----------------------------------------------------------------------------------------------

def _transpose_geometry(nd, x, weight, stride, padding, output_padding, dilation, groups):
    """Geometry of the *forward* convolution whose input gradient is this transposed conv.

    ``padding`` may be per-side pairs: ``(before, after)`` are cropped from the start and the
    end of the full output (ONNX ``pads``); an int or a tuple of ints is symmetric (PyTorch).
    """
    groups = _groups(groups)
    c_in, c_out_g = weight.shape[0], weight.shape[1]
    if x.shape[1] != c_in:
        raise ValueError(f"channel mismatch: x has {x.shape[1]} channels but a transposed "
                         f"convolution weight (C_in, C_out // groups, *k) needs C_in = "
                         f"weight.shape[0] = {c_in}")
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide the number of input channels "
                         f"x.shape[1]={c_in}")
    strides = _int_tuple(stride, "stride", nd)
    dilations = _int_tuple(dilation, "dilation", nd)
    if isinstance(padding, str):
        raise ValueError(f"padding of a transposed convolution must be an int, a tuple of {nd} "
                         f"ints or per-side (before, after) pairs, got {padding!r}")
    pads = resolve_padding(padding, nd, maximum=None, strings=())
    out_pads = _int_tuple(output_padding, "output_padding", nd, minimum=0)
    sizes = []
    for n, k, s, (pb, pa), op, d in zip(x.shape[2:], weight.shape[2:], strides, pads, out_pads,
                                        dilations):
        if op >= max(s, d):
            raise ValueError(f"output_padding must be smaller than stride or dilation (as in "
                             f"PyTorch), got output_padding={out_pads}, stride={strides}, "
                             f"dilation={dilations}")
        size = (n - 1) * s - pb - pa + d * (k - 1) + op + 1
        if size < 1:
            raise ValueError(f"transposed convolution output would be empty: size {size} from "
                             f"input {n}, kernel {k}, stride {s}, padding {(pb, pa)}, "
                             f"dilation {d}")
        sizes.append(size)
    def call():
        return f"conv_transpose{nd}d(stride={strides}, padding={pads}, output_padding=" \
               f"{out_pads}, dilation={dilations}) on x of shape {tuple(x.shape)}"
    _guard((x.shape[0], c_out_g * groups) + tuple(sizes), "the output", call)
    geom = _geometry(nd, tuple(sizes), c_out_g * groups, weight.shape, strides, pads, dilations,
                     groups, "zeros", x_name="output")
    return geom, _plan(geom, x.shape[0], c_out_g * groups, call)


def _check_transpose_bias(bias, c_out):
    if bias is None:
        return None
    bias = as_float64(bias, "bias (C_out,)", ndim=1)
    if bias.shape[0] != c_out:
        raise ValueError(f"bias must have shape ({c_out},) (C_out = weight.shape[1] * groups), "
                         f"got {bias.shape}")
    return bias


def _fit(a, hw):
    """Crop or zero-extend the trailing two axes of ``a`` to ``hw`` (bottom/right)."""
    if a.shape[2:] == tuple(hw):
        return a
    out = np.zeros(a.shape[:2] + tuple(hw))
    h, w = min(hw[0], a.shape[2]), min(hw[1], a.shape[3])
    out[:, :, :h, :w] = a[:, :, :h, :w]
    return out


def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups, dilation):
    x, unbatched = _lift(x, nd)
    x, weight, _ = _check_arrays(nd, x, weight, None, weight_name="weight (C_in, C_out // "
                                 "groups, *k) of a transposed convolution")
    _, plan = _transpose_geometry(nd, x, weight, stride, padding, output_padding, dilation,
                                  groups)
    c_out = weight.shape[1] * plan.groups
    bias = _check_transpose_bias(bias, c_out)
    # output_padding >= stride (allowed when < dilation) makes the forward conv one row
    # longer than x: that row of its output is simply absent here; the input-gradient kernels
    # read only the rows and columns x has (no zero row times an Inf weight)
    out = _input_grad(_to2d(x, nd), _to2d(weight, nd), plan, x.shape[0], c_out)
    if bias is not None:
        out = out + bias[:, None, None]
    out = _from2d(out, nd)
    return out[0] if unbatched else out


def _conv_transpose_backward(nd, grad_out, x, weight, bias, stride, padding, output_padding,
                             groups, dilation):
    x, unbatched = _lift(x, nd)
    x, weight, _ = _check_arrays(nd, x, weight, None)
    geom, plan = _transpose_geometry(nd, x, weight, stride, padding, output_padding, dilation,
                                     groups)
    c_out = weight.shape[1] * geom.groups
    _check_transpose_bias(bias, c_out)
    g = as_float64(grad_out, "grad_out", ndim=nd + 1 if unbatched else nd + 2)
    expected = (x.shape[0], c_out) + geom.in_hw[2 - nd:]
    if unbatched:
        expected = expected[1:]
    if g.shape != expected:
        raise ValueError(f"grad_out must have the output's shape {expected}, got {g.shape}")
    if unbatched:
        g = g[None]
    g2, w2, x2 = _to2d(g, nd), _to2d(weight, nd), _to2d(x, nd)
    # y = C(w)^T x  =>  grad_x = C(w) g and <g, C(w)^T x> = <C(w) g, x> gives grad_w; x may
    # lack the forward conv's last row (output_padding >= stride): the kernels read x's rows
    grad_x = _from2d(_fit(_forward(g2, w2, None, plan), x2.shape[2:]), nd)
    grad_w = _weight_grad(x2, g2, w2.shape, plan)
    grad_b = None if bias is None else g.sum(axis=tuple(range(2, nd + 2)) + (0,))
    return (grad_x[0] if unbatched else grad_x), _from2d(grad_w, nd), grad_b


_TRANSPOSE_DOC = """{nd}-D transposed convolution, ``torch.nn.functional.conv_transpose{nd}d`` semantics.

    The adjoint of :func:`conv{nd}d` in its input (its ``grad_x``): with ``C`` the matrix of
    :func:`conv{nd}d_matrix` for the same weight, stride, padding, dilation and groups,
    ``conv_transpose{nd}d(y, weight).ravel() == C.T @ y.ravel()`` (one sample, no bias).

    Parameters
    ----------
    x : array_like, shape {xshape}
    weight : array_like, shape {wshape} (PyTorch's layout for transposed convolutions)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or tuple of {nd} ints
        Output size ``(size - 1) * stride - 2 * padding + dilation * (k - 1) +
        output_padding + 1``; ``output_padding`` must be smaller than stride or dilation.
    groups : int

    Returns
    -------
    ndarray, float64
    """


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose1d_backward(grad_out, x, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1):
    """Backward of :func:`conv_transpose1d`: ``(grad_x, grad_weight, grad_bias)``."""
    return _conv_transpose_backward(1, grad_out, x, weight, bias, stride, padding,
                                    output_padding, groups, dilation)


def conv_transpose2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1):
    """Backward of :func:`conv_transpose2d`: ``(grad_x, grad_weight, grad_bias)``
    (``grad_bias`` is ``None`` when ``bias`` is ``None``)."""
    return _conv_transpose_backward(2, grad_out, x, weight, bias, stride, padding,
                                    output_padding, groups, dilation)


conv_transpose1d.__doc__ = _TRANSPOSE_DOC.format(nd=1, xshape="(N, C_in, L)",
                                                 wshape="(C_in, C_out // groups, k)")
conv_transpose2d.__doc__ = _TRANSPOSE_DOC.format(nd=2, xshape="(N, C_in, H, W)",
                                                 wshape="(C_in, C_out // groups, kH, kW)")
conv_transpose2d.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d_matrix, conv_transpose2d
    >>> w = np.ones((1, 1, 2, 2))
    >>> conv_transpose2d(np.ones((1, 1, 2, 2)), w)
    array([[[[1., 2., 1.],
             [2., 4., 2.],
             [1., 2., 1.]]]])
    >>> y = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> C = conv2d_matrix((1, 4, 4), w)
    >>> bool(np.array_equal(conv_transpose2d(y, w).ravel(), C.T @ y.ravel()))
    True
    """


# ----------------------------------------------------------------------------------------------
# the convolution as a sparse matrix (Lemma 1)
#
# Separable construction: along each axis, output position i reads the padded positions
# i*s + a*d, which the padding maps to input pixels (or to a zero). Sorting each output's taps
# by source pixel gives, per axis, the distinct sources in increasing order and the taps that
# meet there; a matrix row (o, i, j) is then the product of the two axes' lists for every input
# channel of the group: already sorted and duplicate-free, so the CSR arrays are written
# directly (canonical form, no dense intermediate, no probing with basis vectors).
# ----------------------------------------------------------------------------------------------

def _axis_taps(src):
    """Per output position along one axis: the distinct source pixels in increasing order and,
    for each, the range of its kernel taps in ``taps`` (tap order kept among equal sources).

    Returns ``(count, sources, start, end, taps, template, shift)`` with ``sources[i, u]`` the
    ``u``-th distinct source of output ``i`` (``u < count[i]``), read by the taps
    ``taps[i, start[i, u]:end[i, u]]``; output ``i`` has the same taps as output
    ``template[i] <= i`` with every source moved by ``shift[i]`` (interior positions are all
    translates of one template, which the matrix builder copies instead of recomputing).
    """
    out_size, k = src.shape
    taps = np.argsort(src, axis=1, kind="stable")
    src = np.take_along_axis(src, taps, axis=1)
    valid = src >= 0
    new = valid.copy()
    new[:, 1:] &= src[:, 1:] != src[:, :-1]
    count = np.count_nonzero(new, axis=1)
    rank = np.cumsum(new, axis=1) - 1  # which distinct source each sorted tap belongs to
    sources = np.zeros((out_size, k), dtype=np.int64)
    start = np.zeros((out_size, k), dtype=np.int64)
    end = np.zeros((out_size, k), dtype=np.int64)
    rows, cols = np.nonzero(new)
    sources[rows, rank[rows, cols]] = src[rows, cols]
    start[rows, rank[rows, cols]] = cols
    vrows, vcols = np.nonzero(valid)
    end[vrows, rank[vrows, vcols]] = vcols + 1
    # translate of the previous position: same counts, tap ranges and taps, sources + const
    step = sources[1:] - sources[:-1]
    used = np.arange(k)[None, :] < count[1:, None]
    same = ((count[1:] == count[:-1]) & (count[1:] > 0)
            & (start[1:] == start[:-1]).all(axis=1) & (end[1:] == end[:-1]).all(axis=1)
            & (taps[1:] == taps[:-1]).all(axis=1)
            & ((step == step[:, :1]) | ~used).all(axis=1))
    first = np.concatenate(([True], ~same))
    template = np.maximum.accumulate(np.where(first, np.arange(out_size), 0))
    shift = sources[:, 0] - sources[template, 0]
    return (count.astype(np.int64), sources, start, end, np.ascontiguousarray(taps),
            template.astype(np.int64), shift.astype(np.int64))


@jit
def _matrix_block(oi, w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data):
    """Rows ``(o, i, 0..wo-1)`` of the matrix (``oi = o * ho + i``)."""
    count_h, src_h, start_h, end_h, taps_h = axis_h[0], axis_h[1], axis_h[2], axis_h[3], \
        axis_h[4]
    count_w, src_w, start_w, end_w, taps_w = axis_w[0], axis_w[1], axis_w[2], axis_w[3], \
        axis_w[4]
    template_w, shift_w = axis_w[5], axis_w[6]
    c_out, c_in_g = w.shape[0], w.shape[1]
    ho, wo = count_h.shape[0], count_w.shape[0]
    o = oi // ho
    i = oi - o * ho
    c0 = (o // (c_out // groups)) * c_in_g
    for j in range(wo):
        pos = indptr[oi * wo + j]
        tj = template_w[j]
        if tj < j:  # a translate of an earlier row: same values, columns moved
            src = indptr[oi * wo + tj]
            delta = shift_w[j]
            for q in range(indptr[oi * wo + j + 1] - pos):
                indices[pos + q] = indices[src + q] + delta
                data[pos + q] = data[src + q]
            continue
        for c in range(c_in_g):
            wc = w[o, c]
            for uh in range(count_h[i]):
                row_base = ((c0 + c) * in_h + src_h[i, uh]) * in_w
                h0, h1 = start_h[i, uh], end_h[i, uh]
                for uw in range(count_w[j]):
                    w0, w1 = start_w[j, uw], end_w[j, uw]
                    if h1 - h0 == 1 and w1 - w0 == 1:
                        value = wc[taps_h[i, h0], taps_w[j, w0]]
                    else:  # taps meeting at one pixel (padding modes) are summed in tap order
                        value = 0.0
                        for p in range(h0, h1):
                            for q in range(w0, w1):
                                value += wc[taps_h[i, p], taps_w[j, q]]
                    indices[pos] = row_base + src_w[j, uw]
                    data[pos] = value
                    pos += 1


@jit
def _matrix_serial(w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data):
    for oi in range(w.shape[0] * axis_h[0].shape[0]):
        _matrix_block(oi, w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data)


@pjit
def _matrix_parallel(w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data):
    for oi in prange(w.shape[0] * axis_h[0].shape[0]):
        _matrix_block(oi, w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data)


def _matrix(nd, input_shape, weight, stride, padding, dilation, groups, padding_mode):
    if not isinstance(input_shape, (tuple, list, np.ndarray)) or len(input_shape) != nd + 1:
        layout = "(C_in, L)" if nd == 1 else "(C_in, H, W)"
        raise ValueError(f"input_shape must be a sequence {layout} of {nd + 1} ints, got "
                         f"{input_shape!r}")
    names = ("C_in", "L") if nd == 1 else ("C_in", "H", "W")
    shape = tuple(as_int(s, f"input_shape {n}", minimum=1, maximum=None)
                  for s, n in zip(input_shape, names))
    wlayout = "(C_out, C_in // groups, k)" if nd == 1 else "(C_out, C_in // groups, kH, kW)"
    weight = as_float64(weight, f"weight {wlayout}", ndim=nd + 2)
    geom = _geometry(nd, shape[1:], shape[0], weight.shape, stride, padding, dilation, groups,
                     padding_mode, x_name="input_shape")
    w2 = _to2d(weight, nd)
    c_out, c_in, c_in_g = w2.shape[0], shape[0], w2.shape[1]
    (h, w), (ho, wo) = geom.in_hw, geom.out_hw
    call = f"conv{nd}d_matrix(input_shape={shape}, {_options_text(geom, nd)})"
    n_rows, n_cols = c_out * ho * wo, c_in * h * w
    _guard((n_rows + 1,), "the matrix's row pointers", call)
    _guard((ho * geom.k_hw[0] + wo * geom.k_hw[1], 8), "the per-axis tap tables", call)
    axis_h, axis_w = (_axis_taps(_read_positions(
        geom.in_hw[a], geom.k_hw[a], geom.stride[a], geom.dilation[a], geom.pads[a][0],
        geom.out_hw[a], geom.mode).reshape(geom.k_hw[a], geom.out_hw[a]).T) for a in (0, 1))
    row_counts = c_in_g * axis_h[0][:, None] * axis_w[0][None, :]  # the same for every o
    nnz = c_out * int(row_counts.sum())
    _guard((nnz,), "the matrix's entries (value and column index)", call)
    check_alloc((nnz,), f"{call}: the matrix", itemsize=16)
    index_dtype = np.int32 if max(nnz, n_rows, n_cols) < 2**31 else np.int64
    indptr = np.zeros(n_rows + 1, dtype=index_dtype)
    np.cumsum(np.tile(row_counts.ravel(), c_out), out=indptr[1:])
    indices = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz)
    run = _matrix_parallel if nnz >= _PARALLEL_MIN_WORK else _matrix_serial
    run(w2, axis_h, axis_w, h, w, geom.groups, indptr, indices, data)
    mat = sp.csr_array((data, indices, indptr), shape=(n_rows, n_cols))
    mat.has_sorted_indices = True  # sorted and duplicate-free by construction (canonical)
    return mat


_MATRIX_DOC = """The exact matrix ``C`` of :func:`conv{nd}d` (seed 000, Lemma 1), no bias.

    ``C @ x.ravel() == conv{nd}d(x[None], weight, ...).ravel()`` for ``x`` of shape
    ``input_shape``: rows index the output ``(C_out, *out_spatial)`` and columns the input
    ``(C_in, *spatial)``, both unrolled row-major. Built directly in CSR form (sorted column
    indices, no duplicates: taps that meet at one input pixel through circular / reflect /
    replicate padding are summed; taps reading a zero of the padding have no entry). Entries
    are stored for every tap that reads an input pixel, even where the weight is 0.

    Parameters
    ----------
    input_shape : tuple of ints {ishape}
    weight, stride, padding, dilation, groups, padding_mode : as in :func:`conv{nd}d`

    Returns
    -------
    scipy.sparse.csr_array, float64, shape ``(C_out * prod(out_spatial), C_in * prod(spatial))``
        ``C.T`` is :func:`conv_transpose{nd}d` (for ``padding_mode="zeros"``) and the input
        gradient of :func:`conv{nd}d_backward` in every mode.
    """


def conv1d_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _matrix(1, input_shape, weight, stride, padding, dilation, groups, padding_mode)


def conv2d_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _matrix(2, input_shape, weight, stride, padding, dilation, groups, padding_mode)


conv1d_matrix.__doc__ = _MATRIX_DOC.format(nd=1, ishape="(C_in, L)")
conv2d_matrix.__doc__ = _MATRIX_DOC.format(nd=2, ishape="(C_in, H, W)")
conv2d_matrix.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d, conv2d_matrix
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> C = conv2d_matrix((1, 4, 4), w)
    >>> C.shape, C.nnz
    ((9, 16), 36)
    >>> bool(np.array_equal(C @ x.ravel(), conv2d(x, w).ravel()))
    True
    """


# ----------------------------------------------------------------------------------------------
# plain references (tests compare the fast paths with these)
# ----------------------------------------------------------------------------------------------

def _np_pad_reference(x, pads, mode):
    """Pad the trailing axes with ``np.pad`` (an independent implementation of the modes)."""
    width = ((0, 0), (0, 0)) + tuple(pads)
    return np.pad(x, width, mode=_NP_PAD_MODE[mode])


def _taps(geom):
    """``(a, b, window)``: each kernel tap and the slices of the padded input it reads."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = geom.k_hw, geom.stride, geom.dilation, geom.out_hw
    for a in range(kh):
        for b in range(kw):
            yield a, b, (slice(a * dh, a * dh + (ho - 1) * sh + 1, sh),
                         slice(b * dw, b * dw + (wo - 1) * sw + 1, sw))


def _groups_slices(geom, c_out, c_in):
    co, ci = c_out // geom.groups, c_in // geom.groups
    return [(slice(g * co, (g + 1) * co), slice(g * ci, (g + 1) * ci)) for g in range(geom.groups)]


def _conv_reference_nd(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                     groups, padding_mode)
    x, w = _to2d(x, nd), _to2d(weight, nd)
    xp = _np_pad_reference(x, geom.pads, geom.mode)
    out = np.zeros((x.shape[0], w.shape[0]) + geom.out_hw)
    for og, ig in _groups_slices(geom, w.shape[0], x.shape[1]):
        for a, b, (rows, cols) in _taps(geom):
            out[:, og] += np.einsum("oc,nchw->nohw", w[og, :, a, b], xp[:, ig, rows, cols])
    if bias is not None:
        out += bias[:, None, None]
    return _from2d(out, nd)


def _conv_backward_reference_nd(nd, grad_out, x, weight, bias, stride, padding, dilation, groups,
                                padding_mode):
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                     groups, padding_mode)
    g = _to2d(_check_grad_out(grad_out, nd, x.shape[0], weight.shape[0], geom), nd)
    x2, w = _to2d(x, nd), _to2d(weight, nd)
    xp = _np_pad_reference(x2, geom.pads, geom.mode)
    gxp, gw = np.zeros(xp.shape), np.zeros(w.shape)
    for og, ig in _groups_slices(geom, w.shape[0], x2.shape[1]):
        for a, b, (rows, cols) in _taps(geom):
            gxp[:, ig, rows, cols] += np.einsum("oc,nohw->nchw", w[og, :, a, b], g[:, og])
            gw[og, :, a, b] = np.einsum("nohw,nchw->oc", g[:, og], xp[:, ig, rows, cols])
    # adjoint of the padding: pad an index image the same way, then scatter-add through it
    h, wd = geom.in_hw
    index = np.arange(h * wd).reshape(1, 1, h, wd)
    if geom.mode == "zeros":
        index = np.pad(index, ((0, 0), (0, 0)) + geom.pads, constant_values=-1)
    else:
        index = _np_pad_reference(index, geom.pads, geom.mode)
    index = index[0, 0]
    keep = index >= 0
    gx = np.zeros((x2.shape[0], x2.shape[1], h * wd))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as it should be: no warning
        np.add.at(gx, (slice(None), slice(None), index[keep]), gxp[:, :, keep])
    gb = None if bias is None else g.sum(axis=(0, 2, 3))
    return (_from2d(gx.reshape(x2.shape), nd), _from2d(gw, nd), gb)


def _conv1d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    return _conv_reference_nd(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def _conv2d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    return _conv_reference_nd(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def _conv1d_backward_reference(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1,
                               groups=1, padding_mode="zeros"):
    return _conv_backward_reference_nd(1, grad_out, x, weight, bias, stride, padding, dilation,
                                       groups, padding_mode)


def _conv2d_backward_reference(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1,
                               groups=1, padding_mode="zeros"):
    return _conv_backward_reference_nd(2, grad_out, x, weight, bias, stride, padding, dilation,
                                       groups, padding_mode)


def _conv_transpose2d_reference(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                                groups=1, dilation=1):
    """Scatter every input pixel times the kernel into the (uncropped) output, then crop."""
    x = as_float64(x, "x", ndim=4)
    weight = as_float64(weight, "weight", ndim=4)
    groups = as_int(groups, "groups", minimum=1)
    (sh, sw), (ph, pw) = as_tuple(stride, "stride", 2), as_tuple(padding, "padding", 2)
    (oph, opw), (dh, dw) = as_tuple(output_padding, "output_padding", 2), \
        as_tuple(dilation, "dilation", 2)
    n, c_in, h, w = x.shape
    _, c_out_g, kh, kw = weight.shape
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (w - 1) * sw + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, c_out_g * groups, full_h + ph, full_w + pw))
    c_in_g = c_in // groups
    for ci in range(c_in):
        g = ci // c_in_g
        for a in range(kh):
            for b in range(kw):
                rows = slice(a * dh, a * dh + (h - 1) * sh + 1, sh)
                cols = slice(b * dw, b * dw + (w - 1) * sw + 1, sw)
                full[:, g * c_out_g:(g + 1) * c_out_g, rows, cols] += \
                    weight[ci, :, a, b][None, :, None, None] * x[:, ci:ci + 1]
    out = full[:, :, ph:full_h - ph, pw:full_w - pw]
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)[:, None, None]
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

def _example_conv1d(rng):
    x = rng.standard_normal((2, 4, 9))
    w = rng.standard_normal((6, 2, 3))
    b = rng.standard_normal(6)
    return (x, w, b), {"stride": 2, "padding": "same", "dilation": 1, "groups": 2,
                       "padding_mode": "reflect"}


def _example_conv2d(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    return (x, w, b), {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2),
                       "padding_mode": "circular"}


def _example_conv_transpose2d(rng):
    x = rng.standard_normal((2, 4, 4, 3))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    return (x, w, b), {"stride": (2, 1), "padding": (1, 0), "output_padding": (1, 0),
                       "groups": 2, "dilation": (1, 2)}


def _example_conv_transpose1d(rng):
    x = rng.standard_normal((2, 2, 5))
    w = rng.standard_normal((2, 3, 3))
    b = rng.standard_normal(3)
    return (x, w, b), {"stride": 3, "padding": 1, "output_padding": 2}


_OPS = [
    Op(name="conv1d", cpu="lmref.conv:conv1d", reference="lmref.conv:_conv1d_reference",
       backward="lmref.conv:conv1d_backward", peer="lmref.peers.torch_conv:conv1d",
       peer_name="torch.nn.functional.conv1d (F.pad for padding modes / strided 'same')",
       example="lmref.conv:_example_conv1d",
       notes="cross-correlation; 'same' = TensorFlow rule (extra pixel after)"),
    Op(name="conv2d", cuda="lmref.cuda:conv2d", cpu="lmref.conv:conv2d",
       reference="lmref.conv:_conv2d_reference",
       backward="lmref.conv:conv2d_backward", peer="lmref.peers.torch_conv:conv2d",
       peer_name="torch.nn.functional.conv2d (F.pad for padding modes / strided 'same')",
       example="lmref.conv:_example_conv2d",
       notes="NCHW/OIHW cross-correlation; gradients routed through the padding"),
    Op(name="conv_transpose1d", cpu="lmref.conv:conv_transpose1d",
       backward="lmref.conv:conv_transpose1d_backward",
       peer="lmref.peers.torch_conv:conv_transpose1d",
       peer_name="torch.nn.functional.conv_transpose1d",
       example="lmref.conv:_example_conv_transpose1d", notes="adjoint of conv1d in its input"),
    Op(name="conv_transpose2d", cpu="lmref.conv:conv_transpose2d",
       reference="lmref.conv:_conv_transpose2d_reference",
       backward="lmref.conv:conv_transpose2d_backward",
       peer="lmref.peers.torch_conv:conv_transpose2d",
       peer_name="torch.nn.functional.conv_transpose2d",
       example="lmref.conv:_example_conv_transpose2d",
       notes="adjoint of conv2d in its input (C.T); weight (C_in, C_out // groups, kH, kW)"),
]
