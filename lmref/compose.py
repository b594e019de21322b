"""Kernel composition: a chain of strided / dilated convolutions as one convolution.

Seed ``002`` (two stride-2 layers with kernel ``k2`` equal one stride-4 layer with
``k4 = k2 * dilate(k2, 2)``), generalised to any chain length, 1-D and 2-D, several channels
and per-layer dilation.

Derivation. Layer ``l`` (kernel ``v``, stride ``s_l``, dilation ``d_l``) reads its input at
``q*s_l + a*d_l``. If that input is itself a convolution of the original ``x`` with kernel
``w`` and stride ``J`` (the product of the earlier strides), then::

    out[q] = sum_a v[a] sum_t w[t] x[(q*s_l + a*d_l)*J + t]
           = sum_u (sum_a v[a] w[u - a*d_l*J]) x[q*(s_l*J) + u]

so the composite kernel is ``w`` full-convolved with ``v`` dilated by ``d_l*J``, the composite
stride is ``s_l*J``, and middle channels are summed. Padding can only be applied once, before
the chain: padding between layers inserts zeros that no single convolution reproduces, so it
is refused.
"""
from __future__ import annotations

import itertools

import numpy as np

from lmref._validation import as_float64, as_int, as_tuple

__all__ = ["dilate", "compose", "receptive_field"]


def _spatial_dims(kernel: np.ndarray, name: str) -> int:
    """(k,) and (O, I, k) are 1-D kernels; (kH, kW) and (O, I, kH, kW) are 2-D."""
    if kernel.ndim not in (1, 2, 3, 4):
        raise ValueError(f"{name} must be a kernel (k,), (kH, kW), (C_out, C_in, k) or "
                         f"(C_out, C_in, kH, kW), got shape {kernel.shape}")
    return {1: 1, 2: 2, 3: 1, 4: 2}[kernel.ndim]


def dilate(kernel, rate):
    """Insert ``rate - 1`` zeros between the taps of ``kernel`` along its spatial axes.

    Parameters
    ----------
    kernel : array
        ``(k,)``, ``(kH, kW)``, or a weight tensor ``(C_out, C_in, k)`` /
        ``(C_out, C_in, kH, kW)`` (only the trailing spatial axes are dilated).
    rate : int or tuple of int
        Dilation per spatial axis, >= 1.

    Returns
    -------
    ndarray, float64
        Spatial size ``(k - 1) * rate + 1`` per axis; ``dilate(k, r)`` used with dilation 1
        equals ``k`` used with dilation ``r``.
    """
    k = as_float64(kernel, "kernel")
    nd = _spatial_dims(k, "kernel")
    rates = as_tuple(rate, "rate", nd, minimum=1)
    lead = k.shape[:k.ndim - nd]
    sizes = k.shape[k.ndim - nd:]
    out = np.zeros(lead + tuple((s - 1) * r + 1 for s, r in zip(sizes, rates)))
    out[(Ellipsis,) + tuple(slice(None, None, r) for r in rates)] = k
    return out


def _as_weight(w, name):
    """Kernel -> (C_out, C_in, *k) weight and its spatial dimensionality."""
    k = as_float64(w, name)
    nd = _spatial_dims(k, name)
    if k.ndim == nd:
        k = k.reshape((1, 1) + k.shape)
    return k, nd


def compose(weights, strides, dilations=None, *, paddings=None):
    """The single convolution equal to a chain of convolutions (padding once, before the chain).

    Parameters
    ----------
    weights : sequence of arrays
        Layer kernels, applied first to last: all ``(k,)``/``(kH, kW)`` (one channel) or all
        ``(C_out, C_in, *k)`` with ``C_in`` of a layer equal to ``C_out`` of the previous one.
        Cross-correlation, as :func:`lmref.conv.conv1d`/:func:`~lmref.conv.conv2d`.
    strides : sequence of int (or of tuples for 2-D)
        Per-layer stride.
    dilations : sequence, optional
        Per-layer dilation (default 1).
    paddings : sequence, optional
        Only for the refusal: any non-zero padding after the first layer raises
        ``ValueError`` (pad the input once, then run the chain with padding 0).

    Returns
    -------
    (weight, stride)
        ``weight`` float64 with the input's layout (single-channel kernels give a kernel), and
        the composite stride (an int for 1-D, a tuple for 2-D). ``conv(x, weight, stride)``
        equals the chain ``conv(...conv(x, w1, s1)..., wL, sL)`` for every ``x``.
    """
    if isinstance(weights, np.ndarray) or not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError("weights must be a non-empty list or tuple of kernels, "
                        f"got {type(weights).__name__}")
    n = len(weights)
    if not isinstance(strides, (list, tuple)) or len(strides) != n:
        raise ValueError(f"strides must be a sequence of {n} strides (one per layer), "
                         f"got {strides!r}")
    if dilations is None:
        dilations = [1] * n
    if not isinstance(dilations, (list, tuple)) or len(dilations) != n:
        raise ValueError(f"dilations must be a sequence of {n} values, got {dilations!r}")
    if paddings is not None:
        if not isinstance(paddings, (list, tuple)) or len(paddings) != n:
            raise ValueError(f"paddings must be a sequence of {n} paddings, got {paddings!r}")
        for i, p in enumerate(paddings[1:], start=1):
            if np.any(np.asarray(p) != 0):
                raise ValueError(
                    f"paddings[{i}] is {p!r}: padding between layers cannot be composed into "
                    "one convolution exactly (the inserted zeros depend on the position); pad "
                    "the input once before the chain instead")
    layers = [_as_weight(w, f"weights[{i}]") for i, w in enumerate(weights)]
    nd = layers[0][1]
    single = np.asarray(weights[0]).ndim == nd
    for i, (w, d) in enumerate(layers):
        if d != nd:
            raise ValueError(f"weights[{i}] is {d}-D but weights[0] is {nd}-D")
        if i and w.shape[1] != layers[i - 1][0].shape[0]:
            raise ValueError(f"weights[{i}] has C_in={w.shape[1]} but weights[{i - 1}] has "
                             f"C_out={layers[i - 1][0].shape[0]}")
    ss = [as_tuple(s, f"strides[{i}]", nd, minimum=1) for i, s in enumerate(strides)]
    ds = [as_tuple(d, f"dilations[{i}]", nd, minimum=1) for i, d in enumerate(dilations)]

    total = dilate(layers[0][0], ds[0])
    jump = ss[0]
    for (v, _), s, d in zip(layers[1:], ss[1:], ds[1:]):
        step = tuple(di * j for di, j in zip(d, jump))
        k_sizes = v.shape[2:]
        size = tuple(t + (k - 1) * st for t, k, st in zip(total.shape[2:], k_sizes, step))
        new = np.zeros((v.shape[0], total.shape[1]) + size)
        # W_new[p, i, u] = sum_o sum_a v[p, o, a] * W[o, i, u - a*step]
        for taps in itertools.product(*(range(k) for k in k_sizes)):
            region = tuple(slice(a * st, a * st + t) for a, st, t in
                           zip(taps, step, total.shape[2:]))
            new[(slice(None), slice(None)) + region] += np.einsum(
                "po,oi...->pi...", v[(slice(None), slice(None)) + taps], total)
        total = new
        jump = tuple(j * si for j, si in zip(jump, s))
    if single:
        total = total[0, 0]
    return total, (jump[0] if nd == 1 else jump)


def receptive_field(kernel_sizes, strides, dilations=None):
    """Receptive field size and jump (input pixels between adjacent outputs) of a chain.

    ``size = 1 + sum_l (k_l - 1) * d_l * prod_{m<l} s_m`` and ``jump = prod_l s_l``. Sizes and
    strides are ints per layer (1-D or isotropic); returns ``(size, jump)`` as ints.
    """
    if not isinstance(kernel_sizes, (list, tuple)) or not kernel_sizes:
        raise ValueError(f"kernel_sizes must be a non-empty sequence, got {kernel_sizes!r}")
    n = len(kernel_sizes)
    if not isinstance(strides, (list, tuple)) or len(strides) != n:
        raise ValueError(f"strides must be a sequence of {n} ints, got {strides!r}")
    dilations = [1] * n if dilations is None else dilations
    if not isinstance(dilations, (list, tuple)) or len(dilations) != n:
        raise ValueError(f"dilations must be a sequence of {n} ints, got {dilations!r}")
    size, jump = 1, 1
    for i in range(n):
        k = as_int(kernel_sizes[i], f"kernel_sizes[{i}]", minimum=1)
        s = as_int(strides[i], f"strides[{i}]", minimum=1)
        d = as_int(dilations[i], f"dilations[{i}]", minimum=1)
        size += (k - 1) * d * jump
        jump *= s
    return size, jump
