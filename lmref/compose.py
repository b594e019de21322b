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

import numpy as np

from lmref._validation import as_float64, as_int, as_tuple, check_alloc
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
    arrays, bare, nd = _check_weights(weights)
    n = len(arrays)
    ss, s_ss = _per_layer(strides, "strides", n, nd)
    ds, s_ds = _per_layer(dilations, "dilations", n, nd, default=1)
    _check_paddings(paddings, n)
    sizes = [_field([w.shape[2 + a] for w in arrays], [s[a] for s in ss], [d[a] for d in ds])[0]
             for a in range(nd)]
    check_alloc((arrays[-1].shape[0], arrays[0].shape[1], *sizes),
                "the composed kernel (its size grows with the strides and dilations)")
    composite = dilate(arrays[0], ds[0])
    jump = (1,) * nd
    for w, s_prev, d in zip(arrays[1:], ss[:-1], ds[1:]):
        jump = tuple(j * s for j, s in zip(jump, s_prev))
        composite = _compose_pair(w, composite, tuple(j * di for j, di in zip(jump, d)))
    total = tuple(j * s for j, s in zip(jump, ss[-1]))
    stride = total[0] if (s_ss and s_ds and len(set(total)) == 1) else total
    return (composite[0, 0] if bare else composite), stride


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
