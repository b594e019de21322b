"""JAX peers of :mod:`lmref.conv` and :mod:`lmref.compose` (differentiable by ``jax.vjp``).

Convolutions are ``lax.conv_general_dilated`` with explicit ``dimension_numbers`` (NCH/OIH,
NCHW/OIHW: lmref's and PyTorch's layouts). ``padding="same"`` with zero padding is passed to
JAX as ``"SAME"``, so that JAX's own rule is what gets compared (it is TensorFlow's, lmref's
rule: output ``ceil(n / stride)``, the extra pixel after, for every stride); other
``padding_mode`` values are ``jnp.pad`` (``circular`` -> ``"wrap"``, ``replicate`` ->
``"edge"``, ``reflect`` -> ``"reflect"``) followed by an unpadded convolution, as
``torch.nn.Conv2d`` does.

A transposed convolution is written as the adjoint it is: the input dilated by the stride
(``lhs_dilation``), the kernel flipped with its in/out channel axes exchanged (per group), and
the padding pairs ``(d (k - 1) - p, d (k - 1) - p + output_padding)``. ``lax.conv_transpose``
takes padding of that dilated input instead of PyTorch's ``padding``: see the deviation
probed by ``python -m lmref.testing.conformance --framework jax``.

All functions take JAX arrays and need float64 enabled for float64 results
(:func:`lmref.peers.run_jax_peer` does that per call, with the thread-local
``jax.enable_x64(True)`` context, never the global flag).
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "dilate",
           "composed_weight", "PEER_NAMES"]

#: what each peer is, in words (shown in the conformance table)
PEER_NAMES = {
    "conv1d": "lax.conv_general_dilated (+ jnp.pad)",
    "conv2d": "lax.conv_general_dilated (+ jnp.pad)",
    "conv_transpose1d": "lax.conv_general_dilated (lhs_dilation, flipped kernel)",
    "conv_transpose2d": "lax.conv_general_dilated (lhs_dilation, flipped kernel)",
    "dilate": "jnp.zeros().at[::r].set",
    "compose": "chain of transposed lax convs on one-hot outputs",
}

_JNP_PAD_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "reflect",
                 "replicate": "edge"}
_DIMS = {1: ("NCH", "OIH", "NCH"), 2: ("NCHW", "OIHW", "NCHW")}


def _ntuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _tf_same(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _add_bias(y, bias, nd):
    return y if bias is None else y + bias.reshape((1, -1) + (1,) * nd)


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    strides, dilations = _ntuple(stride, nd), _ntuple(dilation, nd)
    common = dict(window_strides=strides, rhs_dilation=dilations, dimension_numbers=_DIMS[nd],
                  feature_group_count=groups)
    if padding == "same" and padding_mode == "zeros":
        return _add_bias(lax.conv_general_dilated(x, weight, padding="SAME", **common), bias, nd)
    if padding == "same":
        pads = [_tf_same(n, k, s, d) for n, k, s, d in
                zip(x.shape[2:], weight.shape[2:], strides, dilations)]
    elif padding == "valid":
        pads = [(0, 0)] * nd
    else:
        pads = [(p, p) for p in _ntuple(padding, nd)]
    if padding_mode != "zeros":
        x = jnp.pad(x, [(0, 0), (0, 0), *pads], mode=_JNP_PAD_MODE[padding_mode])
        pads = [(0, 0)] * nd
    return _add_bias(lax.conv_general_dilated(x, weight, padding=pads, **common), bias, nd)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def _transposed_kernel(weight, groups, nd):
    """``(C_in, C_out // g, *k)`` -> ``(C_out, C_in // g, *k)``, spatially flipped."""
    c_in, c_out_g = weight.shape[:2]
    k = weight.shape[2:]
    w = weight.reshape((groups, c_in // groups, c_out_g) + k)
    w = jnp.swapaxes(w, 1, 2).reshape((groups * c_out_g, c_in // groups) + k)
    return jnp.flip(w, axis=tuple(range(2, 2 + nd)))


def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups, dilation):
    strides, pads = _ntuple(stride, nd), _ntuple(padding, nd)
    outs, dils = _ntuple(output_padding, nd), _ntuple(dilation, nd)
    pairs = [(d * (k - 1) - p, d * (k - 1) - p + o)
             for k, p, o, d in zip(weight.shape[2:], pads, outs, dils)]
    y = lax.conv_general_dilated(x, _transposed_kernel(weight, groups, nd), window_strides=(1,) * nd,
                                 padding=pairs, lhs_dilation=strides, rhs_dilation=dils,
                                 dimension_numbers=_DIMS[nd], feature_group_count=groups)
    return _add_bias(y, bias, nd)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups, dilation)


def dilate(kernel, rate):
    """Zeros with the kernel written at every ``rate``-th spatial position."""
    nd = {1: 1, 2: 2, 3: 1, 4: 2}[kernel.ndim]
    rates = _ntuple(rate, nd)
    lead, ks = kernel.shape[:kernel.ndim - nd], kernel.shape[kernel.ndim - nd:]
    out = jnp.zeros(tuple(lead) + tuple((k - 1) * r + 1 for k, r in zip(ks, rates)), kernel.dtype)
    return out.at[(Ellipsis,) + tuple(slice(None, None, r) for r in rates)].set(kernel)


def composed_weight(*weights, strides, dilations=None):
    """Composite kernel of a conv chain: the chain's adjoint applied to one-hot outputs."""
    nd = weights[0].ndim - 2
    dilations = dilations or [1] * len(weights)
    c_out = weights[-1].shape[0]
    y = jnp.eye(c_out, dtype=weights[0].dtype).reshape((c_out, c_out) + (1,) * nd)
    for w, s, d in reversed(list(zip(weights, strides, dilations))):
        y = _conv_transpose(nd, y, w, None, s, 0, 0, 1, d)
    return y
