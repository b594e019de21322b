"""Geometry of a convolution, shared by every path (fast kernels, plain references, sparse
matrix and :mod:`lmref.cuda.conv`): argument checks, padding and output sizes, memory guards,
the plan the kernels run on (:func:`_plan`), memoised per call pattern (:func:`_recall`), and
padding as index maps (the padded input :func:`_pad` and its adjoint :func:`_unpad_adjoint`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import NamedTuple

import numpy as np

from lmref._numba import jit, pjit, prange
from lmref._padding import resolve_padding, same_pads
from lmref._validation import (INT64_MAX, as_float64, as_int, as_tuple, check_alloc,
                               is_float64_ready, max_bytes, one_of)

__all__ = ["conv_output_size", "same_padding", "PADDING_MODES"]

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


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

    # cached: a memoised plan serves many calls, each of which asks several times
    @cached_property
    def padded_hw(self):
        if self.maps is not None:
            return tuple(len(m) for m in self.maps)
        return tuple(n + a + b for n, (a, b) in zip(self.in_hw, self.pads))

    @cached_property
    def has_padding(self):
        return self.maps is not None or any(a or b for a, b in self.pads)

    @cached_property
    def index_maps(self):
        """:attr:`maps`, or the padding's :func:`_pad_index` per axis (built once: a memoised
        plan serves many calls)."""
        if self.maps is not None:
            return self.maps
        return tuple(_pad_index(n, a, b, self.mode) for n, (a, b) in zip(self.in_hw, self.pads))

    @cached_property
    def direct(self):
        """``(sh, sw, dh, dw, top, left, groups)``: the direct kernels' arguments for small
        calls, which read and write the unpadded arrays (zero padding only); ``None``
        otherwise."""
        if self.mode != "zeros" or self.maps is not None:
            return None
        return self.stride + self.dilation + (self.pads[0][0], self.pads[1][0], self.groups)


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
    if _nbytes(shape) <= max_bytes():
        return
    check_alloc(shape, f"{call() if callable(call) else call}: {what}")


def _nbytes(shape):
    """Bytes of a float64 array of ``shape`` (exact Python ints, as :func:`check_alloc`)."""
    return math.prod(int(s) for s in shape) * 8


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


def _plan_buffers(geom, n_batch, c_in):
    """``(compact, buffers)``: per axis whether :func:`_plan` compacts it, and the ``(shape,
    what)`` of the buffers it guards, in its order."""
    hw = geom.padded_hw
    limits = [_COMPACT_RATIO * o * k + _COMPACT_SLACK for o, k in zip(geom.out_hw, geom.k_hw)]
    compact = [p > lim for p, lim in zip(hw, limits)]
    sizes = tuple(o * k if c else p for o, k, c, p in zip(geom.out_hw, geom.k_hw, compact, hw))
    buffers = []
    if geom.has_padding or any(compact):  # else the kernels read x itself
        buffers.append(((n_batch, c_in) + sizes, "the padded input"))
    sw = 1 if compact[1] else geom.stride[1]
    if sw > 1:
        buffers.append(((n_batch, c_in, sizes[0], min(sw, sizes[1]), -(-sizes[1] // sw)),
                        "the stride-phase buffer of the padded input"))
    return compact, buffers


def _plan(geom, n_batch, c_in, call):
    """The geometry the kernels run on, after guarding the padded input's size.

    Where an axis's padded length is much larger than ``out * k`` (a huge stride or dilation
    over huge padding), that axis is computed on a compacted input holding only the read
    positions, tap-major: ``xc[a * out + i] = xpad[i * s + a * d]``, which the same kernels
    read with stride 1 and dilation ``out``. Every output reads the same values in the same
    order (forward and weight gradient bit for bit); input-gradient terms that meet at one
    pixel are folded back in position order (the same exact sum).
    """
    compact, buffers = _plan_buffers(geom, n_batch, c_in)
    for shape, what in buffers:
        _guard(shape, what, call)
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


# ----------------------------------------------------------------------------------------------
# memoised plans: on small inputs the checks and the geometry above cost more than the
# convolution, and a loop calls with the same shapes and options again and again
# ----------------------------------------------------------------------------------------------

#: call patterns (shapes and options) whose plan is remembered
_MEMO_SIZE = 256


class _Memo(NamedTuple):
    """What a call pattern's checks found: its plan (``None`` where :func:`_plan` compacts an
    axis: built after the guards, as always) and the bytes of what the guards measure."""

    plan: _Geometry | None
    out_bytes: int
    buffer_bytes: int  # the largest buffer :func:`_plan` guards (0: none)
    most_bytes: int  # the larger of the two


def _memo(geom, out_shape, n_batch, c_in):
    """The :class:`_Memo` of a checked geometry (no guard runs here: the caller's does)."""
    compact, buffers = _plan_buffers(geom, n_batch, c_in)
    out_bytes = _nbytes(out_shape)
    buffer_bytes = max((_nbytes(shape) for shape, _ in buffers), default=0)
    return _Memo(None if any(compact) else geom, out_bytes, buffer_bytes,
                 max(out_bytes, buffer_bytes))


def _is_plain(value):
    """Whether ``value`` is an int, a str, or a tuple of ints and pairs of ints, of exactly these
    built-in types: the spellings whose checks depend on the value alone. (``True``, ``1.0`` and
    ``np.int64(1)`` equal ``1`` as cache keys but are checked differently, so they are not
    plain.)"""
    kind = type(value)
    if kind is int or kind is str:
        return True
    return kind is tuple and all(
        type(v) is int or type(v) is tuple and all(type(u) is int for u in v) for v in value)


def _recall(memo, with_output, nd, x_shape, w_shape, *options):
    """The plan of ``memo(nd, x_shape, w_shape, *options)`` (an ``lru_cache`` of
    :func:`_memo`; the shapes are an array's, tuples of ints), or ``None`` where the caller
    must take its full path: an option that is not plain, arguments its checks refuse (the
    full path raises the very same error), a guarded buffer (with the output if
    ``with_output``) over :func:`max_bytes` (read on every call, so ``LMREF_MAX_BYTES`` is
    honoured at once; the full path names the buffer), or a compacted axis."""
    for option in options:
        if type(option) is not int and not _is_plain(option):  # ints: the common spelling
            return None
    try:
        found = memo(nd, x_shape, w_shape, *options)
    except Exception:  # refused: the full path raises it, with its message and order
        return None
    return found.plan if (found.most_bytes if with_output else found.buffer_bytes) <= \
        max_bytes() else None


@lru_cache(maxsize=_MEMO_SIZE)
def _conv_memo(nd, x_shape, w_shape, stride, padding, dilation, groups, padding_mode):
    """:class:`_Memo` of a ``conv{nd}d`` on ``x`` and ``weight`` of these shapes (2-D form)."""
    geom = _geometry(nd, x_shape[2:], x_shape[1], w_shape, stride, padding, dilation, groups,
                     padding_mode)
    return _memo(geom, (x_shape[0], w_shape[0]) + geom.out_hw, x_shape[0], x_shape[1])


def _lift(x, nd):
    """``(x, unbatched)``: an unbatched input ``(C, *spatial)`` gets a batch axis of 1, as in
    PyTorch (the result drops it again)."""
    if type(x) is np.ndarray:  # the common case, without np.ndim's dispatch
        ndim = x.ndim
    else:
        try:
            ndim = np.ndim(x)
        except Exception:  # ragged lists and the like: as_float64 names them
            return x, False
    if ndim == nd + 1 and not isinstance(x, (str, bytes)):
        return np.asarray(x)[None], True
    return x, False


def _check_arrays(nd, x, weight, bias, *, x_name="x", weight_name="weight"):
    """Convert ``x``, ``weight`` and ``bias`` to float64 after checking ndim and shapes."""
    if not (is_float64_ready(x, nd + 2) and is_float64_ready(weight, nd + 2)):
        x_name, weight_name = _array_names(nd, x_name, weight_name)
        x = as_float64(x, x_name, ndim=nd + 2)
        weight = as_float64(weight, weight_name, ndim=nd + 2)
    if bias is not None:
        bias = as_float64(bias, "bias (C_out,)", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape ({weight.shape[0]},) (one value per output "
                             f"channel), got {bias.shape}")
    return x, weight, bias


@lru_cache(maxsize=None)
def _array_names(nd, x_name, weight_name):
    """``x`` and ``weight`` named with their layouts, e.g. ``"x (N, C_in, H, W)"`` (built once:
    formatting them costs a tenth of a small convolution)."""
    if nd == 1:
        return f"{x_name} (N, C_in, L)", f"{weight_name} (C_out, C_in // groups, k)"
    return f"{x_name} (N, C_in, H, W)", f"{weight_name} (C_out, C_in // groups, kH, kW)"


def _check_grad_out(grad_out, nd, n_batch, c_out, geom, unbatched=False):
    g = as_float64(grad_out, "grad_out", ndim=nd + 1 if unbatched else nd + 2)
    expected = (n_batch, c_out) + geom.out_hw[2 - nd:]
    if unbatched:
        expected = expected[1:]
    if g.shape != expected:
        raise ValueError(f"grad_out must have the output's shape {expected}, got {g.shape}")
    return g[None] if unbatched else g


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
    """Per-axis source index of every (compacted) padded position (shared arrays, read
    only)."""
    return geom.index_maps


def _pad(x, geom):
    """Pad ``(N, C, H, W)`` once per ``geom`` (returns ``x`` itself when there is no padding)."""
    if not geom.has_padding:
        return x
    n, c, h, w = x.shape
    if geom.mode == "zeros" and geom.maps is None:
        (t, b), (l, r) = geom.pads
        xp = np.zeros((n, c, h + t + b, w + l + r))
        _embed(x, t, l, xp)
        return xp
    ih, iw = _pad_maps(geom)
    xp = np.empty((n, c, len(ih), len(iw)))
    _gather_padded(np.ascontiguousarray(x), ih, iw, xp)
    return xp


@jit
def _embed(x, top, left, out):
    """``out[n, c, top + i, left + j] = x[n, c, i, j]``, row by row (one call: a NumPy slice
    assignment costs more than the copy on small inputs)."""
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(x.shape[2]):
                src = x[n, c, i]
                dst = out[n, c, top + i, left:left + src.shape[0]]
                for j in range(src.shape[0]):  # as fast as NumPy's copy (a slice assignment
                    dst[j] = src[j]  # here is slower on large inputs)


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
    out = np.zeros((n * c, h, w))
    _fold_planes(np.ascontiguousarray(gp.reshape(n * c, hp, wp)), ih, iw, out)
    return out.reshape(n, c, h, w)


@pjit
def _fold_planes(src, ih, iw, out):
    """``out[b, ih[p], iw[q]] += src[b, p, q]`` for ``ih[p], iw[q] >= 0``, in a fixed order:
    each padded row's columns summed first (``q`` ascending, from 0.0), then the rows into
    their source row (``p`` ascending). One row of scratch a plane, not a folded copy of the
    whole gradient (a ~0.5 MB temporary a call, whose page faults cost more than the fold in
    a fresh process)."""
    w = out.shape[2]
    for b in prange(src.shape[0]):
        row = np.empty(w)
        for p in range(src.shape[1]):
            k = ih[p]
            if k < 0:
                continue
            row[:] = 0.0
            for q in range(src.shape[2]):
                j = iw[q]
                if j >= 0:
                    row[j] += src[b, p, q]
            dst = out[b, k]
            for j in range(w):
                dst[j] += row[j]
