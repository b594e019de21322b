"""JAX peers of :mod:`lmref.layers`: pools as ``lax.reduce_window`` (differentiable by ``jax.vjp``).

``lax.reduce_window`` has no ``ceil_mode`` and no divisor rule: the output size is PyTorch's
(``ceil`` with ``ceil_mode``, a last window starting in the right padding dropped), reached by
extra padding after the frame; max pooling pads with ``-inf``; average pooling sums with zero
padding and divides by a second ``reduce_window`` over ones: the padded frame counts when
``count_include_pad`` (the ``ceil_mode`` overhang never does, as in PyTorch), only the frame
otherwise; ``divisor_override`` replaces the divisor.
"""
from __future__ import annotations

import jax.numpy as jnp
from jax import lax

__all__ = ["relu", "max_pool2d", "avg_pool2d", "PEER_NAMES"]

PEER_NAMES = {
    "relu": "jnp.maximum(x, 0)",
    "max_pool2d": "lax.reduce_window(max) (-inf padding)",
    "avg_pool2d": "lax.reduce_window(add) / reduce_window over ones",
}


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def relu(x):
    return jnp.maximum(x, 0)


def _out_size(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _window_pads(x, kernel_size, stride, padding, dilation, ceil_mode):
    ks, pads, dils = _pair(kernel_size), _pair(padding), _pair(dilation)
    strides = ks if stride is None or stride == () else _pair(stride)
    pairs = []
    for size, k, s, p, d in zip(x.shape[-2:], ks, strides, pads, dils):
        out = _out_size(size, k, s, p, d, ceil_mode)
        extra = max((out - 1) * s + d * (k - 1) + 1 - (size + 2 * p), 0)
        pairs.append((p, p + extra))
    lead = x.ndim - 2
    return ((1,) * lead + ks, (1,) * lead + strides, (1,) * lead + dils,
            [(0, 0)] * lead + pairs, pads)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    win, strides, dils, pairs, _ = _window_pads(x, kernel_size, stride, padding, dilation,
                                                ceil_mode)
    return lax.reduce_window(x, -jnp.inf, lax.max, win, strides, pairs, window_dilation=dils)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    win, strides, _, pairs, pads = _window_pads(x, kernel_size, stride, padding, 1, ceil_mode)
    total = lax.reduce_window(x, 0.0, lax.add, win, strides, pairs)
    if divisor_override:
        return total / divisor_override
    frame = jnp.ones(x.shape[-2:], x.dtype)
    if count_include_pad:  # the user's padding counts, the ceil_mode overhang does not
        frame = jnp.pad(frame, [(p, p) for p in pads], constant_values=1)
        rest = [(0, b - a) for a, b in pairs[-2:]]
    else:
        rest = pairs[-2:]
    count = lax.reduce_window(frame, 0.0, lax.add, win[-2:], strides[-2:], rest)
    return total / count
