"""JAX peers of :mod:`lmref.temporal` (independent formulations, differentiable by ``jax.vjp``).

``local_multiply`` is a loop over the P*P displacements of a zero-padded ``b`` (no
``spatial_correlation_sampler`` needed); ``context_span`` and ``arithmetic_features`` with
``layout="atm"`` follow the official ``whwu95/ATM`` blocks (``jnp.pad`` + sliding windows,
``x_post``/``x_pre`` operands) rather than lmref's index tables.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["add", "subtract", "log_divide", "local_multiply", "l2_normalize", "context_span",
           "arithmetic_features", "PEER_NAMES"]

PEER_NAMES = {
    "add": "a + b", "subtract": "a - b", "log_divide": "jnp.log / jnp.log1p",
    "local_multiply": "P*P shifted products of jnp.pad(b)",
    "l2_normalize": "x / sqrt(sum_c x**2 + eps)",
    "context_span": "index gather (seed) / jnp.pad windows (atm)",
    "arithmetic_features": "the official ATM blocks in jnp",
}


def add(a, b):
    return a + b


def subtract(a, b):
    return a - b


def log_divide(a, b, eps=1.0, *, absolute=False):
    if absolute:  # DivBlock
        return jnp.log1p(jnp.abs(a)) - jnp.log1p(jnp.abs(b))
    return jnp.log(a + eps) - jnp.log(b + eps)


def l2_normalize(x, eps=1e-6):
    """``SimTransform._L2normalize``: ``x / (sum_c x**2 + eps) ** 0.5``."""
    norm = (x ** 2).sum(axis=1, keepdims=True) + eps
    return x / norm ** 0.5


def local_multiply(a, b, patch_size, *, dilation=1, normalize="none"):
    if normalize == "l2":
        a, b = l2_normalize(a), l2_normalize(b)
    r = patch_size // 2
    pad = r * dilation
    h, w = a.shape[-2:]
    padded = jnp.pad(b, [(0, 0), (0, 0), (pad, pad), (pad, pad)])  # zeros outside the frame
    planes = []
    for i in range(-r, r + 1):          # row displacement slowest
        for j in range(-r, r + 1):
            top, left = pad + i * dilation, pad + j * dilation
            shifted = padded[:, :, top:top + h, left:left + w]  # b[h + i d, w + j d]
            planes.append((a * shifted).sum(axis=1))
    out = jnp.stack(planes, axis=1)
    if normalize == "channels":
        out = out / a.shape[1]
    return out


def _batched(frames):
    return (frames, True) if frames.ndim == 5 else (frames[None], False)


def _official_pre_post(x, z):
    """The official blocks' ``(x_pre, x_post)``, each ``(N*T*Z, C, H, W)`` in ``(b t z)`` order."""
    n, t, c, h, w = x.shape
    if z > 1:
        x_pre = jnp.broadcast_to(x[:, :, None], (n, t, z, c, h, w)).reshape(-1, c, h, w)
        padded = jnp.pad(x, [(0, 0), (z // 2, z // 2), (0, 0), (0, 0), (0, 0)])
        # the windows padded[:, s:s + z] (unfold), stacked as (b, t, z)
        x_post = jnp.stack([padded[:, s:s + z] for s in range(t)], axis=1).reshape(-1, c, h, w)
    else:
        x_post = x.reshape(-1, c, h, w)
        x_pre = jnp.concatenate((x[:, :1], x[:, :-1]), 1).reshape(-1, c, h, w)
    return x_pre, x_post


def _seed_context(x, z):
    t = x.shape[1]
    offsets = list(range(-(z // 2), 0)) + list(range(1, z - z // 2 + 1))
    idx = jnp.array([[min(max(s + o, 0), t - 1) for o in offsets] for s in range(t)])
    return x[:, idx]  # (N, T, Z, C, H, W)


def context_span(frames, z, *, layout="seed"):
    x, batched = _batched(frames)
    n, t, c, h, w = x.shape
    if layout == "seed":
        out = _seed_context(x, z)
    else:
        _, x_post = _official_pre_post(x, z)
        ctx = x_post if z > 1 else jnp.concatenate((x[:, :1], x[:, :-1]), 1)
        out = ctx.reshape(n, t, z, c, h, w)
    return out if batched else out[0]


def arithmetic_features(frames, z, ops=("add", "sub", "mul", "div"), patch_size=9, *,
                        layout="seed", dilation=1, eps=1.0, normalize=None, absolute=None):
    x, batched = _batched(frames)
    n, t, c, h, w = x.shape
    if layout == "atm":
        pre, post = _official_pre_post(x, z)
        first, second, mul_a, mul_b = post, pre, pre, post
        normalize = "l2" if normalize is None else normalize
        absolute = True if absolute is None else absolute
    else:
        anchor = jnp.broadcast_to(x[:, :, None], (n, t, z, c, h, w)).reshape(-1, c, h, w)
        context = _seed_context(x, z).reshape(-1, c, h, w)
        first, second, mul_a, mul_b = anchor, context, anchor, context
        normalize = "none" if normalize is None else normalize
        absolute = False if absolute is None else absolute
    blocks = []
    for op in ops:
        if op == "add":
            blocks.append(first + second)
        elif op == "sub":
            blocks.append(first - second)
        elif op == "div":
            blocks.append(log_divide(first, second, eps, absolute=absolute))
        else:
            blocks.append(local_multiply(mul_a, mul_b, patch_size, dilation=dilation,
                                         normalize=normalize))
    out = jnp.concatenate(blocks, axis=1)
    out = out.reshape(n, t, z, out.shape[1], h, w)
    return out if batched else out[0]
