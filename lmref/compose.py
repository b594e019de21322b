"""Kernel composition: a chain of strided / dilated convolutions as one convolution (seed 002).

Seed ``002``: two stride-2 1-D convolutions with kernel ``k2``, the input zero-padded once
before the chain, equal one stride-4 convolution with ``k4 = k2 (full-)convolved with
dilate(k2, 2)``. :func:`compose` generalises this to any chain length, 1-D and 2-D,
multi-channel weights and per-layer dilation.

Derivation
----------
Layer ``l`` (kernel ``W_l``, stride ``s_l``, dilation ``d_l``) runs on a signal whose samples
are ``J_l = s_1 ... s_{l-1}`` input samples apart, so on the original input it is a
convolution with ``W_l`` dilated by ``J_l * d_l``. Substituting layer into layer::

    y[o, p] = sum_{i, t} K[o, i, t] * x[i, S p + t],   S = s_1 ... s_L,
    K = W_L^(J_L d_L) * ... * W_2^(J_2 d_2) * W_1^(d_1)

where ``W^(r)`` is :func:`dilate` ``(W, r)`` and ``*`` is a *full* convolution along the
spatial axes combined with a matrix product over the middle channels (``(A * B)[o, i, t] =
sum_m sum_{u + v = t} A[o, m, u] B[m, i, v]``). The composite kernel has ``1 + sum_l J_l d_l
(k_l - 1)`` taps per axis (:func:`receptive_field`), stride ``S`` and dilation 1, and the
output sizes of the chain and of the single convolution agree for every input size.

Padding
-------
Exact only when the input is padded **once, before the chain** (any padding mode): pass the
padded input to both, or use the first layer's padding for the single convolution. Padding
between layers inserts values (zeros, reflections...) that depend on where the intermediate
map ends, which no single convolution of the original input reproduces, so :func:`compose`
refuses non-zero padding after the first layer instead of returning an approximation.

Biases are not composed (the chain is taken bias-free); groups are 1. Results are float64.
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from lmref._numba import jit, pjit, prange
from lmref._validation import _FLOAT64, as_float64, as_int, as_tuple, check_alloc
from lmref.registry import Op

__all__ = ["dilate", "compose", "receptive_field"]


# ----------------------------------------------------------------------------------------------
# dilation
# ----------------------------------------------------------------------------------------------

def _spatial_axes(ndim):
    """Number of spatial axes of a kernel or weight of this ndim (1-D/2-D kernels, weights)."""
    return {1: 1, 2: 2, 3: 1, 4: 2}[ndim]


def _rates(rate, nd, name="rate"):
    """Per-axis ints >= 1, unbounded: the arithmetic here is Python's, every allocation is
    guarded (``check_alloc``), and a huge rate or stride is valid where it multiplies a
    kernel size of 1 (``dilate`` then clamps it)."""
    if type(rate) is int and rate >= 1:  # the common case, cheaply (compose runs in loops)
        return (rate,) * nd
    if isinstance(rate, (tuple, list, np.ndarray)):
        return as_tuple(rate, name, nd, minimum=1, maximum=None)
    return (as_int(rate, name, minimum=1, maximum=None),) * nd


def dilate(kernel, rate):
    """Insert ``rate - 1`` zeros between neighbouring taps along the spatial axes.

    Parameters
    ----------
    kernel : array_like
        ``(k,)`` or ``(kH, kW)``: a bare 1-D or 2-D kernel; ``(C_out, C_in, k)`` or
        ``(C_out, C_in, kH, kW)``: a full convolution weight, of which only the trailing
        (spatial) axes are dilated. So a 2-D array is always a 2-D kernel and a 3-D array a
        1-D convolution weight.
    rate : int or tuple of ints (one per spatial axis), >= 1

    Returns
    -------
    ndarray, float64
        Spatial sizes ``(k - 1) * rate + 1``; tap ``u`` moves to ``u * rate``. A convolution
        with ``dilate(w, r)`` equals one with ``w`` and ``dilation=r``.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.compose import dilate
    >>> dilate(np.array([1.0, 2.0, 3.0]), 2)
    array([1., 0., 2., 0., 3.])
    >>> dilate(np.ones((4, 3, 3, 3)), 2).shape  # a conv weight: only kH, kW grow
    (4, 3, 5, 5)
    """
    kernel = as_float64(kernel, "kernel", ndim=(1, 2, 3, 4))
    nd = _spatial_axes(kernel.ndim)
    lead = kernel.shape[:kernel.ndim - nd]
    ks = kernel.shape[kernel.ndim - nd:]
    # a size-1 axis has no gap to fill: any rate gives the same result (and a step NumPy takes)
    rates = tuple(1 if k == 1 else r for k, r in zip(ks, _rates(rate, nd)))
    shape = lead + tuple((k - 1) * r + 1 for k, r in zip(ks, rates))
    check_alloc(shape, f"rate={rate!r:.60}: the dilated kernel")
    out = np.zeros(shape)
    out[(Ellipsis,) + tuple(slice(None, None, r) for r in rates)] = kernel
    return out


def _dilate_reference(kernel, rate):
    """Tap by tap (plain loops over the spatial index)."""
    kernel = np.asarray(kernel, dtype=np.float64)
    nd = _spatial_axes(kernel.ndim)
    rates = _rates(rate, nd)
    ks = kernel.shape[kernel.ndim - nd:]
    out = np.zeros(kernel.shape[:kernel.ndim - nd] + tuple((k - 1) * r + 1
                                                           for k, r in zip(ks, rates)))
    for taps in np.ndindex(*ks):
        out[(Ellipsis,) + tuple(t * r for t, r in zip(taps, rates))] = kernel[(Ellipsis,) + taps]
    return out


# ----------------------------------------------------------------------------------------------
# receptive field
# ----------------------------------------------------------------------------------------------

def _per_layer(values, name, n_layers, nd, default=None):
    """A length-``n_layers`` list of ``nd``-tuples from ints / tuples (``None``: default)."""
    if values is None:
        return [(default,) * nd] * n_layers, True
    if not isinstance(values, (list, tuple, np.ndarray)) or len(values) != n_layers:
        raise ValueError(f"{name} must be a sequence with one entry per layer ({n_layers}), "
                         f"got {values!r}")
    scalar = all(not isinstance(v, (tuple, list, np.ndarray)) for v in values)
    return [_rates(v, nd, f"{name}[{i}]") for i, v in enumerate(values)], scalar


def _field(kernel_sizes, strides, dilations):
    """Per axis: (size, jump) of the chain, and the jump before each layer."""
    jumps, size, jump = [], 1, 1
    for k, s, d in zip(kernel_sizes, strides, dilations):
        jumps.append(jump)
        size += jump * d * (k - 1)
        jump *= s
    return size, jump, jumps


def receptive_field(kernel_sizes, strides, dilations=None):
    """Receptive field size and jump (total stride) of a chain of convolutions.

    ``size = 1 + sum_l J_l d_l (k_l - 1)`` with ``J_l = s_1 ... s_{l-1}``; ``jump = s_1 ... s_L``.
    These are the kernel size and stride of :func:`compose`'s single convolution.

    Parameters
    ----------
    kernel_sizes : sequence of ints, or of tuples (one int per spatial axis)
    strides, dilations : sequences with one int or tuple per layer (dilations default to 1)

    Returns
    -------
    (size, jump) : ints when every entry was an int, tuples (one per axis) otherwise.
    """
    if not isinstance(kernel_sizes, (list, tuple, np.ndarray)) or len(kernel_sizes) == 0:
        raise ValueError(f"kernel_sizes must be a non-empty sequence, got {kernel_sizes!r}")
    first = kernel_sizes[0]
    nd = len(first) if isinstance(first, (tuple, list, np.ndarray)) else 1
    n = len(kernel_sizes)
    ks, s_ks = _per_layer(kernel_sizes, "kernel_sizes", n, nd)
    ss, s_ss = _per_layer(strides, "strides", n, nd)
    ds, s_ds = _per_layer(dilations, "dilations", n, nd, default=1)
    axes = [_field([k[a] for k in ks], [s[a] for s in ss], [d[a] for d in ds])
            for a in range(nd)]
    if s_ks and s_ss and s_ds and len({ax[:2] for ax in axes}) == 1:
        return axes[0][0], axes[0][1]
    return tuple(ax[0] for ax in axes), tuple(ax[1] for ax in axes)


# ----------------------------------------------------------------------------------------------
# composition
# ----------------------------------------------------------------------------------------------

def _check_paddings(paddings, n_layers):
    """Only the first layer may pad (padding applied once, before the chain)."""
    if paddings is None:
        return
    if not isinstance(paddings, (list, tuple)) or len(paddings) != n_layers:
        raise ValueError(f"paddings must be a sequence with one entry per layer ({n_layers}), "
                         f"got {paddings!r}")
    for i, p in enumerate(paddings):
        if isinstance(p, str):
            if p == "valid":
                continue
            raise ValueError(
                f"paddings[{i}]={p!r}: give explicit integer padding ('same' depends on each "
                f"layer's own kernel and input size, which the single convolution does not see)")
        values = p if isinstance(p, (tuple, list, np.ndarray)) else (p,)
        for v in values:
            as_int(v, f"paddings[{i}]", minimum=0)
        if i > 0 and any(int(v) != 0 for v in values):
            raise ValueError(
                f"paddings[{i}]={p!r}: padding between layers cannot be composed exactly. The "
                f"padded values sit at the border of the intermediate map, where no single "
                f"convolution of the original input can produce them (it would need input "
                f"pixels that do not exist, and reflect/replicate/circular padding is not even "
                f"linear in shift). Pad the input once, before the chain (paddings[0]), and "
                f"use padding 0 afterwards; the composed convolution then takes paddings[0].")


def _check_weights(weights):
    if not isinstance(weights, (list, tuple)):
        raise TypeError(f"weights must be a list or tuple of kernels or weights (one per "
                        f"layer), got {type(weights).__name__}")
    if len(weights) == 0:
        raise ValueError("weights must name at least one layer, got an empty sequence")
    arrays = [as_float64(w, f"weights[{i}]", ndim=(1, 2, 3, 4)) for i, w in enumerate(weights)]
    ndim = arrays[0].ndim
    for i, w in enumerate(arrays):
        if w.ndim != ndim:
            raise ValueError(f"weights must all have the same ndim (bare 1-D/2-D kernels or "
                             f"(C_out, C_in, *k) weights), weights[0] is {ndim}-D but "
                             f"weights[{i}] is {w.ndim}-D")
    bare = ndim <= 2
    if bare:  # a bare kernel is a 1-in, 1-out weight
        arrays = [w[None, None] for w in arrays]
    for i in range(1, len(arrays)):
        if arrays[i].shape[1] != arrays[i - 1].shape[0]:
            raise ValueError(
                f"channel mismatch between layers {i - 1} and {i}: weights[{i - 1}] has "
                f"{arrays[i - 1].shape[0]} output channels but weights[{i}] expects "
                f"{arrays[i].shape[1]} input channels (weights are (C_out, C_in, *k), groups=1)")
    return arrays, bare, _spatial_axes(ndim)


def _compose_pair(outer, inner, rates):
    """Full convolution of ``dilate(outer, rates)`` with ``inner``, contracting the middle
    channels: ``out[o, i, u * r + v] += sum_m outer[o, m, u] inner[m, i, v]``."""
    k_out, k_in = outer.shape[2:], inner.shape[2:]
    size = tuple((ko - 1) * r + ki for ko, r, ki in zip(k_out, rates, k_in))
    out = np.zeros((outer.shape[0], inner.shape[1]) + size)
    for taps in np.ndindex(*k_out):
        window = tuple(slice(t * r, t * r + ki) for t, r, ki in zip(taps, rates, k_in))
        out[(slice(None), slice(None)) + window] += np.tensordot(
            outer[(slice(None), slice(None)) + taps], inner, axes=(1, 0))
    return out


def _compose_dense(arrays, ss, ds):
    """:func:`compose`'s kernel by :func:`_compose_pair`, input side first (dense NumPy, tap by
    tap: the plain path the lattice kernels are checked against)."""
    nd = len(ss[0])
    composite = dilate(arrays[0], ds[0])
    jump = (1,) * nd
    for w, s_prev, d in zip(arrays[1:], ss[:-1], ds[1:]):
        jump = tuple(j * s for j, s in zip(jump, s_prev))
        composite = _compose_pair(w, composite, tuple(j * di for j, di in zip(jump, d)))
    return composite


# ----------------------------------------------------------------------------------------------
# composition on tap lattices (numba)
#
# ``K = X_1 * X_2 * ... * X_n`` (``*``: full spatial convolution contracting the middle
# channels) is folded left to right, ``T <- T * X``. Every factor is a dilated kernel, so its
# taps sit on a lattice (multiples of its rate), and so do the partial products: ``T`` with
# taps ``g`` apart times ``X`` with taps ``r`` apart has its taps ``gcd(g, r)`` apart. ``T`` is
# stored on its lattice only (a size-1 axis has spacing 0, which ``gcd`` reads as "any"), so no
# structural zero is ever multiplied. Two orders give ``K``: from the output side, ``X = W_L,
# ..., W_1`` (``T`` has ``C_out_last`` rows: the chain's adjoint applied to one-hot outputs),
# or from the input side on channel-transposed weights, ``K^T = W_1^T * ... * W_L^T``
# (``C_in_first`` rows); :func:`_compose_lattice` takes the one with fewer multiply-adds.
#
# Summation order: an entry of ``T * X`` adds, in this order, over ``T``'s taps (row-major),
# ``X``'s taps (row-major) and the middle channels in pairs, ``acc += t0 * x0 + t1 * x1`` (an
# odd last channel alone), whatever the block of rows; prange runs over blocks of rows of ``T``
# (independent outputs), so the result does not depend on the number of threads. Error bound
# (that of a product of matrices, each step being one with inner dimension at most ``taps(X) *
# C_mid``): ``|K_computed - K| <= gamma_n * compose(|W|)`` entrywise, ``gamma_n = n u / (1 -
# n u)``, ``u = 2**-53``, ``n`` = :func:`_rounding_terms`. Integer weights whose partial sums
# stay below ``2**53`` give the exact result.
# ----------------------------------------------------------------------------------------------

#: rows of ``T`` per kernel update (each loaded row of ``X`` feeds four accumulators)
_ROWS = 4
#: below this many multiply-adds a fold step runs serially (no thread start-up)
_PARALLEL_MIN_WORK = 1 << 20
#: up to this many columns of ``X`` a row update keeps its sums in registers over the middle
#: channels (in :func:`_fold_rows`); beyond, the loop over columns is vectorised instead
_NARROW = 5


@jit
def _fold_rows(t, x, ah, aw, bh, bw, o0, rows, narrow, out):
    """``out[o] += t[o] * x`` for the rows ``o0 .. o0 + rows - 1`` (four, or one):
    ``out[o, ph*ah + qh*bh, pw*aw + qw*bw, i] += sum_m t[o, ph, pw, m] * x[qh, qw, m, i]``, in
    the order (``t`` tap, ``x`` tap, channel pair: ``acc += t0 * x0 + t1 * x1``, an odd last
    channel alone).

    Four rows share each load of ``x``. Plain element indexing, no row views: a view costs a
    reference-count update per (``t`` tap, ``x`` tap), which for a few channels outweighs the
    arithmetic (-25 % at 4 channels, -7 % at 32). With ``narrow`` (four rows, at most
    :data:`_NARROW` columns) the loop over the columns goes outside the one over the channel
    pairs, so that each entry of ``out`` is loaded and stored once per tap pair, its sum kept
    in a register in between (the same additions in the same order; -20 % at 4 columns,
    slower from 8, where the column loop is worth vectorising). The three bodies sit in this
    one loop nest: numba calls, rather than inlines, another kernel, which per tap pair costs
    more than the arithmetic (+30 % at 4 channels)."""
    c_mid, c_in = t.shape[3], x.shape[3]
    odd = c_mid % 2
    o1, o2, o3 = o0 + 1, o0 + 2, o0 + 3
    for ph in range(t.shape[1]):
        for pw in range(t.shape[2]):
            for qh in range(x.shape[0]):
                rh = ph * ah + qh * bh
                for qw in range(x.shape[1]):
                    rw = pw * aw + qw * bw
                    if narrow:
                        for i in range(c_in):
                            s0, s1 = out[o0, rh, rw, i], out[o1, rh, rw, i]
                            s2, s3 = out[o2, rh, rw, i], out[o3, rh, rw, i]
                            for m in range(0, c_mid - 1, 2):
                                n = m + 1
                                u = x[qh, qw, m, i]
                                v = x[qh, qw, n, i]
                                s0 += t[o0, ph, pw, m] * u + t[o0, ph, pw, n] * v
                                s1 += t[o1, ph, pw, m] * u + t[o1, ph, pw, n] * v
                                s2 += t[o2, ph, pw, m] * u + t[o2, ph, pw, n] * v
                                s3 += t[o3, ph, pw, m] * u + t[o3, ph, pw, n] * v
                            if odd:
                                u = x[qh, qw, c_mid - 1, i]
                                s0 += t[o0, ph, pw, c_mid - 1] * u
                                s1 += t[o1, ph, pw, c_mid - 1] * u
                                s2 += t[o2, ph, pw, c_mid - 1] * u
                                s3 += t[o3, ph, pw, c_mid - 1] * u
                            out[o0, rh, rw, i], out[o1, rh, rw, i] = s0, s1
                            out[o2, rh, rw, i], out[o3, rh, rw, i] = s2, s3
                    elif rows == _ROWS:
                        for m in range(0, c_mid - 1, 2):
                            n = m + 1
                            a0, b0 = t[o0, ph, pw, m], t[o0, ph, pw, n]
                            a1, b1 = t[o1, ph, pw, m], t[o1, ph, pw, n]
                            a2, b2 = t[o2, ph, pw, m], t[o2, ph, pw, n]
                            a3, b3 = t[o3, ph, pw, m], t[o3, ph, pw, n]
                            for i in range(c_in):
                                u = x[qh, qw, m, i]
                                v = x[qh, qw, n, i]
                                out[o0, rh, rw, i] += a0 * u + b0 * v
                                out[o1, rh, rw, i] += a1 * u + b1 * v
                                out[o2, rh, rw, i] += a2 * u + b2 * v
                                out[o3, rh, rw, i] += a3 * u + b3 * v
                        if odd:
                            m = c_mid - 1
                            a0, a1 = t[o0, ph, pw, m], t[o1, ph, pw, m]
                            a2, a3 = t[o2, ph, pw, m], t[o3, ph, pw, m]
                            for i in range(c_in):
                                u = x[qh, qw, m, i]
                                out[o0, rh, rw, i] += a0 * u
                                out[o1, rh, rw, i] += a1 * u
                                out[o2, rh, rw, i] += a2 * u
                                out[o3, rh, rw, i] += a3 * u
                    else:
                        for m in range(0, c_mid - 1, 2):
                            a, b = t[o0, ph, pw, m], t[o0, ph, pw, m + 1]
                            for i in range(c_in):
                                out[o0, rh, rw, i] += a * x[qh, qw, m, i] + b * x[qh, qw, m + 1, i]
                        if odd:
                            a = t[o0, ph, pw, c_mid - 1]
                            for i in range(c_in):
                                out[o0, rh, rw, i] += a * x[qh, qw, c_mid - 1, i]


@jit
def _fold_job(t, x, ah, aw, bh, bw, out, job):
    """Rows ``4 job .. 4 job + 3`` of ``out`` (fewer at the end, one at a time)."""
    o0 = job * _ROWS
    if o0 + _ROWS <= t.shape[0]:
        _fold_rows(t, x, ah, aw, bh, bw, o0, _ROWS, x.shape[3] <= _NARROW, out)
    else:
        for o in range(o0, t.shape[0]):
            _fold_rows(t, x, ah, aw, bh, bw, o, 1, False, out)


@jit
def _fold_serial(t, x, ah, aw, bh, bw, out):
    for job in range((t.shape[0] + _ROWS - 1) // _ROWS):
        _fold_job(t, x, ah, aw, bh, bw, out, job)


@pjit
def _fold_parallel(t, x, ah, aw, bh, bw, out):
    for job in prange((t.shape[0] + _ROWS - 1) // _ROWS):
        _fold_job(t, x, ah, aw, bh, bw, out, job)


def _lattice_product(g, n, r, k):
    """Along one axis, ``T`` (``n`` taps ``g`` apart) times ``X`` (``k`` taps ``r`` apart):
    ``(spacing, size, a, b)``, the product's ``size`` taps ``spacing`` apart, ``T``'s tap ``p``
    and ``X``'s tap ``q`` meeting at ``p * a + q * b`` (spacing 0: a single tap)."""
    g, r = (g if n > 1 else 0), (r if k > 1 else 0)
    spacing = math.gcd(g, r)
    if spacing == 0:
        return 0, 1, 0, 0
    a, b = g // spacing, r // spacing
    return spacing, (n - 1) * a + (k - 1) * b + 1, a, b


def _fold_plan(factors):
    """``(steps, cost)`` of :func:`_fold` on ``factors``: per step the ``(size, a, b)`` of
    :func:`_lattice_product` along each axis, and the multiply-adds of all steps; then the
    final spacings."""
    t, (g_h, g_w) = factors[0]
    n_h, n_w = t.shape[2:]
    steps, cost = [], 0
    for x, (r_h, r_w) in factors[1:]:
        cost += t.shape[0] * n_h * n_w * x.size
        g_h, n_h, a_h, b_h = _lattice_product(g_h, n_h, r_h, x.shape[2])
        g_w, n_w, a_w, b_w = _lattice_product(g_w, n_w, r_w, x.shape[3])
        steps.append((n_h, n_w, a_h, a_w, b_h, b_w))
    return steps, cost, (g_h, g_w)


def _fold(factors, plan):
    """``X_1 * ... * X_n`` for ``factors = [(X_l, (r_h, r_w))]`` (``X_l`` of shape ``(A, B, kH,
    kW)``, taps ``r`` apart) and their :func:`_fold_plan`, as ``(A_1, kH, kW, B_n)`` on the
    full grid."""
    steps, _, (g_h, g_w) = plan
    t = np.ascontiguousarray(factors[0][0].transpose(0, 2, 3, 1))  # rows, taps, middle
    for (x, _), (n_h, n_w, a_h, a_w, b_h, b_w) in zip(factors[1:], steps):
        xl = np.ascontiguousarray(x.transpose(2, 3, 0, 1))  # taps, middle, columns
        out = np.zeros((t.shape[0], n_h, n_w, xl.shape[3]))
        macs = t.shape[0] * t.shape[1] * t.shape[2] * xl.size  # rows * taps(T) * taps(X) * ...
        run = _fold_parallel if macs >= _PARALLEL_MIN_WORK else _fold_serial
        run(t, xl, a_h, a_w, b_h, b_w, out)
        t = out
    if g_h > 1 or g_w > 1:  # back onto the full grid: the lattice's gaps are zeros
        s_h, s_w = max(g_h, 1), max(g_w, 1)
        n_h, n_w = t.shape[1:3]
        full = np.zeros((t.shape[0], (n_h - 1) * s_h + 1, (n_w - 1) * s_w + 1, t.shape[3]))
        full[:, ::s_h, ::s_w] = t
        t = full
    return t


def _layer_rates(ss, ds):
    """Per layer, the spacing ``J_l * d_l`` of its taps on the input (2-D tuples)."""
    rates, jump = [], (1, 1)
    for s, d in zip(ss, ds):
        rates.append((jump[0] * d[0], jump[1] * d[1]))
        jump = (jump[0] * s[0], jump[1] * s[1])
    return rates


def _fold_order(arrays, rates):
    """``(from_input, factors, plan)``: the fold of 2-D ``arrays`` (taps ``rates`` apart) from
    the side with fewer multiply-adds (ties: the output side), its factors and
    :func:`_fold_plan`."""
    from_output = list(zip(arrays[::-1], rates[::-1]))
    plan = _fold_plan(from_output)
    if len(arrays) > 1:
        from_input = [(w.transpose(1, 0, 2, 3), r) for w, r in zip(arrays, rates)]
        plan_in = _fold_plan(from_input)
        if plan_in[1] < plan[1]:
            return True, from_input, plan_in
    return False, from_output, plan


def _compose_lattice(arrays, ss, ds):
    """:func:`compose`'s kernel ``(C_out_last, C_in_first, kH, kW)`` of 2-D ``arrays`` on tap
    lattices, one :func:`_fold` step (and kernel launch) per factor: the path of long chains
    and many channels, and the one :func:`_fold_chain` is checked against."""
    from_input, factors, plan = _fold_order(arrays, _layer_rates(ss, ds))
    return _fold_layout(_fold(factors, plan), from_input)


def _fold_layout(t, from_input):
    """:func:`_fold`'s ``(A_1, kH, kW, B_n)`` as ``(C_out_last, C_in_first, kH, kW)``."""
    return np.ascontiguousarray(t.transpose(3, 0, 1, 2) if from_input else t.transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------------------------
# the whole fold in one call (small chains)
#
# Below _PARALLEL_MIN_WORK every step of _fold runs serially, and for a few channels the
# Python around each step (transposed copies, allocations, one kernel launch per factor, the
# final layout) costs as much as the arithmetic. _fold_chain runs the same steps with the same
# row kernels (so bit for bit the same result) inside one numba call, on the weights packed
# into one buffer and a small int64 table that compose keeps per call pattern (_Plan).
# ----------------------------------------------------------------------------------------------

#: header of :func:`_fold_chain`'s table: factors, from the input side (0/1), final spacings
_HEAD = 4
#: per factor (fold order): offset in the buffer and the weight's own (A, B, kH, kW)
_PER_FACTOR = 5
#: per step: the ``(n_h, n_w, a_h, a_w, b_h, b_w)`` of :func:`_fold_plan`
_PER_STEP = 6


@jit
def _factor(buf, table, f):
    """Factor ``f``'s weight ``(A, B, kH, kW)``, a view into ``buf``."""
    e = _HEAD + _PER_FACTOR * f
    a, b, kh, kw = table[e + 1], table[e + 2], table[e + 3], table[e + 4]
    return buf[table[e]:table[e] + a * b * kh * kw].reshape((a, b, kh, kw))


@jit
def _fold_chain(buf, table):
    """:func:`_compose_lattice` in one call, serially: ``K`` ``(C_out_last, C_in_first, kH,
    kW)`` of the factors in ``buf`` that ``table`` describes (:func:`_chain_table`)."""
    n, trans, s_h, s_w = table[0], table[1], table[2], table[3]
    # :func:`_fold`'s layouts of a factor ``F`` (``w``, or ``w`` with its channel axes swapped
    # when folding from the input side): ``t[o, ph, pw, m] = F[o, m, ph, pw]`` for the first,
    # ``x[qh, qw, m, i] = F[m, i, qh, qw]`` for the others
    t = np.ascontiguousarray(np.transpose(_factor(buf, table, 0),
                                          (1, 2, 3, 0) if trans else (0, 2, 3, 1)))
    for f in range(1, n):
        x = np.ascontiguousarray(np.transpose(_factor(buf, table, f),
                                              (2, 3, 1, 0) if trans else (2, 3, 0, 1)))
        e = _HEAD + _PER_FACTOR * n + _PER_STEP * (f - 1)
        out = np.zeros((t.shape[0], table[e], table[e + 1], x.shape[3]))
        _fold_serial(t, x, table[e + 2], table[e + 3], table[e + 4], table[e + 5], out)
        t = out
    rows, n_h, n_w, cols = t.shape
    # onto the full grid (the lattice's gaps are zeros), in K's axis order: k[o, i] or k[i, o]
    shape = (n_h - 1) * s_h + 1, (n_w - 1) * s_w + 1
    k = np.zeros((cols, rows) + shape if trans else (rows, cols) + shape)
    for o in range(rows):
        for i in range(cols):
            dst = k[i, o] if trans else k[o, i]
            for rh in range(n_h):
                for rw in range(n_w):
                    dst[rh * s_h, rw * s_w] = t[o, rh, rw, i]
    return k


class _Plan:
    """What :func:`compose` derives from a call's shapes, strides and dilations once they are
    validated (no weight values), kept per call pattern (:func:`_call_pattern`).

    ``shape``: the composite's ``(C_out_last, C_in_first, *sizes)``; ``stride``: the returned
    stride; ``dims``: each layer's weight as 2-D ``(A, B, kH, kW)``; ``rates``: the layers' tap
    spacings; ``from_input``, ``fold``: :func:`_fold_order`'s side and :func:`_fold_plan`;
    ``chain``: whether :func:`_fold_chain` runs it (every step serial); ``table``: its table,
    made at the first run, after the allocation check (before it, a size may exceed int64).
    """

    __slots__ = ("shape", "stride", "bare", "nd", "dims", "rates", "from_input", "fold",
                 "chain", "table")

    def __init__(self, arrays, bare, nd, ss, ds, stride, sizes):
        self.shape = (arrays[-1].shape[0], arrays[0].shape[1], *sizes)
        self.stride, self.bare, self.nd = stride, bare, nd
        if nd == 1:  # a 1-D chain is a 2-D one with height-1 kernels
            arrays = [w[:, :, None] for w in arrays]
            ss, ds = [(1,) + s for s in ss], [(1,) + d for d in ds]
        self.dims = [w.shape for w in arrays]
        self.rates = _layer_rates(ss, ds)
        self.from_input, _, self.fold = _fold_order(arrays, self.rates)
        self.chain = self.fold[1] < _PARALLEL_MIN_WORK  # the sum of the steps' work
        self.table = None


def _chain_table(plan):
    """:func:`_fold_chain`'s int64 table: ``[n, from_input, s_h, s_w]``; per factor in fold
    order ``[offset, A, B, kH, kW]`` (the buffer holds the layers in application order); per
    step ``[n_h, n_w, a_h, a_w, b_h, b_w]``."""
    steps, _, spacing = plan.fold
    n = len(plan.dims)
    offsets = list(itertools.accumulate((math.prod(d) for d in plan.dims), initial=0))
    order = range(n) if plan.from_input else range(n - 1, -1, -1)
    # the final taps are ``spacing`` apart; a single tap has no gap (spacing 1: small indices)
    taps = steps[-1][:2] if steps else plan.dims[order[0]][2:]
    table = [n, int(plan.from_input)] + [g if k > 1 and g > 1 else 1 for g, k in zip(spacing, taps)]
    for f in order:
        table += (offsets[f], *plan.dims[f])
    for step in steps:
        table += step
    return np.array(table, dtype=np.int64)


def _plain(values):
    """``values`` as a tuple when it is a list or tuple of ints and tuples of ints (exactly
    these types), else None."""
    if type(values) not in (list, tuple):
        return None
    for v in values:
        if type(v) is not int and (type(v) is not tuple or any(type(e) is not int for e in v)):
            return None
    return tuple(values)


def _call_pattern(weights, strides, dilations, paddings):
    """The memo key of a :func:`compose` call in the common spelling (float64 C-contiguous
    writeable arrays; strides, dilations and paddings of plain ints or tuples of ints), else
    None. Every check of :func:`_plan` depends on the key alone: a key with a plan is a valid
    call (the allocation check aside, which compose repeats: its limit is read at each call)."""
    if type(weights) not in (list, tuple):
        return None
    shapes = []
    for w in weights:
        if type(w) is not np.ndarray or w.dtype is not _FLOAT64:
            return None
        flags = w.flags
        if not (flags.c_contiguous and flags.writeable):
            return None
        shapes.append(w.shape)
    s, d, p = _plain(strides), _plain(dilations), _plain(paddings)
    if s is None or (d is None and dilations is not None) or (p is None and paddings is not None):
        return None
    return tuple(shapes), s, d, p


#: call pattern -> _Plan; emptied when full (a program composes a few chains, many times)
_PLANS = {}
_PLANS_MAX = 256


def _plan(weights, strides, dilations, paddings):
    """A :func:`compose` call validated: ``(arrays, plan)``, the checked float64 weights
    (``(C_out, C_in, *k)``, bare kernels with two leading axes of 1) and its :class:`_Plan`."""
    arrays, bare, nd = _check_weights(weights)
    n = len(arrays)
    ss, s_ss = _per_layer(strides, "strides", n, nd)
    ds, s_ds = _per_layer(dilations, "dilations", n, nd, default=1)
    _check_paddings(paddings, n)
    sizes = [_field([w.shape[2 + a] for w in arrays], [s[a] for s in ss], [d[a] for d in ds])[0]
             for a in range(nd)]
    total = tuple(math.prod(s[a] for s in ss) for a in range(nd))
    stride = total[0] if (s_ss and s_ds and len(set(total)) == 1) else total
    return arrays, _Plan(arrays, bare, nd, ss, ds, stride, sizes)


def _rounding_terms(arrays):
    """``n`` of :func:`compose`'s error bound ``gamma_n * compose(|W|)``: the larger of the two
    fold orders' sums over the steps of ``taps(X) * C_mid`` (a step's inner dimension)."""
    taps = [int(np.prod(w.shape[2:])) for w in arrays]
    from_output = sum(t * w.shape[0] for t, w in zip(taps[:-1], arrays[:-1]))
    from_input = sum(t * w.shape[1] for t, w in zip(taps[1:], arrays[1:]))
    return max(from_output, from_input, 1)


def compose(weights, strides, dilations=None, *, paddings=None):
    """The single convolution equal to a chain of convolutions (padding applied once, before).

    Parameters
    ----------
    weights : sequence of arrays
        In application order (``weights[0]`` first). All bare 1-D kernels ``(k,)``, all bare
        2-D kernels ``(kH, kW)``, or all convolution weights ``(C_out, C_in, k)`` /
        ``(C_out, C_in, kH, kW)`` chaining channels (``weights[l].shape[1] ==
        weights[l - 1].shape[0]``; groups 1, no bias).
    strides : sequence (one int or tuple per layer)
    dilations : sequence, optional (one int or tuple per layer; default 1)
    paddings : sequence, optional
        Only to state the chain's padding: entries after the first must be 0 (``ValueError``
        otherwise, see the module docstring); the composed convolution uses ``paddings[0]``.

    Returns
    -------
    (weight, stride)
        ``weight`` float64 of the same kind as the inputs (bare kernel or ``(C_out_last,
        C_in_first, *K)``), with ``K`` the :func:`receptive_field` size, used with dilation
        1 and ``stride`` = the product of the strides (an int when every stride and dilation
        was given as an int, else a tuple). ``conv(x, weight, stride=stride) ==
        conv(...conv(conv(x, w0, stride=s0, dilation=d0), w1, ...)...)`` for every input.

    Notes
    -----
    Computed by numba kernels on the tap lattices of the dilated factors (no structural zero
    is multiplied), from the output or the input side of the chain, whichever needs fewer
    multiply-adds. Rounding: ``|weight - K| <= gamma_n * compose(|weights|)`` entrywise for
    the exact ``K``, ``gamma_n = n u / (1 - n u)``, ``u = 2**-53``, ``n = sum_l taps(W_l) *
    C_mid`` over the factors after the first (see the section "composition on tap
    lattices"); integer weights with partial sums below ``2**53`` compose exactly. Bit for bit
    the same for any number of threads. What a call derives from its shapes, strides and
    dilations is kept per call pattern (float64 arrays; strides, dilations and paddings of
    plain ints or tuples of ints), so a repeated call checks its arguments once, and a small
    chain is composed in one numba call.

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.compose import compose
    >>> k = np.array([1.0, 2.0, 1.0])
    >>> compose([k, k], [1, 1])
    (array([1., 4., 6., 4., 1.]), 1)
    >>> compose([k, k], [2, 1])  # the second kernel sees every other input sample
    (array([1., 2., 3., 4., 3., 2., 1.]), 2)
    """
    key = _call_pattern(weights, strides, dilations, paddings)
    plan = _PLANS.get(key) if key is not None else None
    if plan is None:
        arrays, plan = _plan(weights, strides, dilations, paddings)
        if key is not None:
            if len(_PLANS) >= _PLANS_MAX:
                _PLANS.clear()
            _PLANS[key] = plan
    else:
        arrays = weights  # float64 C-contiguous: what _check_weights returns for them
    check_alloc(plan.shape, "the composed kernel (its size grows with the strides and dilations)")
    if plan.chain:
        if plan.table is None:
            plan.table = _chain_table(plan)
        composite = _fold_chain(np.concatenate([w.ravel() for w in arrays]), plan.table)
    else:
        _, factors, fold = _fold_order([w.reshape(d) for w, d in zip(arrays, plan.dims)],
                                       plan.rates)
        composite = _fold_layout(_fold(factors, fold), plan.from_input)
    if plan.nd == 1:
        composite = composite[:, :, 0]
    return (composite[0, 0] if plan.bare else composite), plan.stride


def _compose_reference(weights, strides, dilations=None):
    """Impulse responses: run the chain (lmref.conv, padding 0) on one-hot inputs of the
    receptive-field size; each has exactly one output position, which is ``K[:, i, t]``."""
    from lmref.conv import conv1d, conv2d

    arrays, bare, nd = _check_weights(weights)
    n = len(arrays)
    ss, _ = _per_layer(strides, "strides", n, nd)
    ds, _ = _per_layer(dilations, "dilations", n, nd, default=1)
    size = tuple(_field([w.shape[2 + a] for w in arrays], [s[a] for s in ss],
                        [d[a] for d in ds])[0] for a in range(nd))
    c_in = arrays[0].shape[1]
    m = c_in * int(np.prod(size))
    y = np.eye(m).reshape((m, c_in) + size)
    conv = conv1d if nd == 1 else conv2d
    for w, s, d in zip(arrays, ss, ds):
        y = conv(y, w, stride=s, dilation=d)
    kernel = y[(Ellipsis,) + (0,) * nd].T.reshape((arrays[-1].shape[0], c_in) + size)
    total = tuple(int(np.prod([s[a] for s in ss])) for a in range(nd))
    return (kernel[0, 0] if bare else kernel), total


# ----------------------------------------------------------------------------------------------
# registry (the composed weight alone is the op's array output)
# ----------------------------------------------------------------------------------------------

def _composed_weight(*weights, strides, dilations=None):
    return compose(list(weights), strides, dilations)[0]


def _composed_weight_reference(*weights, strides, dilations=None):
    return _compose_reference(list(weights), strides, dilations)[0]


def _example_dilate(rng):
    return (rng.standard_normal((3, 2, 3, 2)),), {"rate": (2, 3)}


def _example_compose(rng):
    ws = (rng.standard_normal((3, 2, 3, 2)), rng.standard_normal((4, 3, 2, 3)),
          rng.standard_normal((2, 4, 3, 3)))
    return ws, {"strides": [2, (1, 2), 2], "dilations": [1, 2, (2, 1)]}


_OPS = [
    Op(name="dilate", cpu="lmref.compose:dilate", reference="lmref.compose:_dilate_reference",
       peer="lmref.peers.torch_conv:dilate", peer_name="zeros + strided assignment (torch)",
       example="lmref.compose:_example_dilate", nondiff=(0,),
       notes="spatial (trailing) axes only; tap u -> u * rate"),
    Op(name="compose", cpu="lmref.compose:_composed_weight",
       reference="lmref.compose:_composed_weight_reference",
       peer="lmref.peers.torch_conv:composed_weight",
       peer_name="torch.nn.functional.conv_transpose{1,2}d chain on one-hot outputs",
       example="lmref.compose:_example_compose", nondiff=(0, 1, 2),
       notes="weight of compose(weights, strides, dilations); chain padded once, before"),
]
