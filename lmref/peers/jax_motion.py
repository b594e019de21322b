"""JAX peer of :mod:`lmref.motion`: ``warp`` as an explicit gather (differentiable by ``jax.vjp``).

The source position of output pixel ``(y, x)`` is ``(y + dy, x + dx)`` in pixels (no
normalised coordinates, so any frame size works). Bilinear: the four corners
``floor(p) + {0, 1}`` with weights ``1 - t, t``; ``zeros`` masks each corner outside the frame,
``border`` clamps the *coordinate* (written with ``jnp.where`` so that the derivative at the
clamp point ``p = 0`` is the right-sided one, as in lmref: ``jnp.clip`` would give half of it),
``wrap`` reduces the coordinate modulo the size. Nearest: index ``floor(p + 0.5)`` (lmref's
ties-up rule). ``jax.scipy.ndimage.map_coordinates``, the library function a JAX user would
reach for, is probed for its differences by the conformance runner.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["warp", "PEER_NAMES"]

PEER_NAMES = {"warp": "explicit gather (jnp.take_along_axis), pixel flows"}


def _clamp(p, size):
    return jnp.where(p < 0, 0.0, jnp.where(p >= size - 1, size - 1.0, p)).astype(p.dtype)


def _read(x4, i, j, boundary):
    """``x4[n, c, i, j]`` for integer index planes ``i, j`` of shape (N, H, W)."""
    N, C, H, W = x4.shape
    inside = (i >= 0) & (i < H) & (j >= 0) & (j < W)
    if boundary == "wrap":
        i, j = i % H, j % W
    else:
        i, j = jnp.clip(i, 0, H - 1), jnp.clip(j, 0, W - 1)
    flat = (i * W + j).reshape(N, 1, H * W)
    vals = jnp.take_along_axis(x4.reshape(N, C, H * W), jnp.broadcast_to(flat, (N, C, H * W)),
                               axis=2).reshape(N, C, H, W)
    if boundary == "zeros":
        vals = jnp.where(inside[:, None], vals, 0.0)
    return vals


def warp(x, flow, mode="bilinear", boundary="zeros"):
    shape = x.shape
    x4 = x.reshape((1,) * (4 - x.ndim) + tuple(shape))
    N, C, H, W = x4.shape
    f4 = jnp.broadcast_to(flow.reshape((1,) * (4 - flow.ndim) + tuple(flow.shape)), (N, H, W, 2))
    px = jnp.arange(W, dtype=flow.dtype)[None, None, :] + f4[..., 0]
    py = jnp.arange(H, dtype=flow.dtype)[None, :, None] + f4[..., 1]
    if boundary == "border":
        px, py = _clamp(px, W), _clamp(py, H)
    elif boundary == "wrap":
        px, py = jnp.mod(px, W), jnp.mod(py, H)
    if mode == "nearest":
        i = jnp.floor(py + 0.5).astype(jnp.int64)
        j = jnp.floor(px + 0.5).astype(jnp.int64)
        return _read(x4, i, j, boundary).reshape(shape)
    i0, j0 = jnp.floor(py), jnp.floor(px)
    ty, tx = (py - i0)[:, None], (px - j0)[:, None]
    i0, j0 = i0.astype(jnp.int64), j0.astype(jnp.int64)
    out = ((1 - ty) * (1 - tx) * _read(x4, i0, j0, boundary)
           + (1 - ty) * tx * _read(x4, i0, j0 + 1, boundary)
           + ty * (1 - tx) * _read(x4, i0 + 1, j0, boundary)
           + ty * tx * _read(x4, i0 + 1, j0 + 1, boundary))
    return out.reshape(shape)
