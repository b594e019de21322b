"""JAX peers of :mod:`lmref.arma`: ``jnp.fft`` and ``lax`` convolutions, differentiated by
``jax.vjp`` (an independent check of the hand-derived backwards). Conventions as in
:mod:`lmref.arma`: AR kernel origin at the centre, circular *convolution*, factor index 0 =
offset -1, ``f`` along H and ``g`` along W.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lmref.peers.jax_conv import conv2d as _conv2d

__all__ = ["ar_solve", "arma2d", "separable_ar_kernel", "reparameterize", "embed_kernel",
           "PEER_NAMES"]

PEER_NAMES = {
    "ar_solve": "jnp.fft.irfft2(rfft2(t) / rfft2(a))",
    "arma2d": "jnp.pad + lax.conv_general_dilated, then the FFT solve",
    "separable_ar_kernel": "vmap(jnp.convolve) chain, outer product",
    "reparameterize": "jnp.tanh, jnp.stack",
}


def embed_kernel(a, spatial):
    """``(C, kh, kw)`` kernels zero-padded to ``(C, H, W)``, centre tap rolled to index (0, 0)."""
    kh, kw = a.shape[-2:]
    padded = jnp.pad(a, [(0, 0), (0, spatial[0] - kh), (0, spatial[1] - kw)])
    return jnp.roll(padded, (-(kh // 2), -(kw // 2)), (-2, -1))


def ar_solve(t, a, **_options):
    """``irfft2(rfft2(t) / rfft2(a_embedded))``; 1-D ``(N, C, L)`` with ``(C, k)`` too."""
    one_d = t.ndim == 3
    if one_d:
        t, a = t[:, :, None, :], a[:, None, :]
    spatial = tuple(t.shape[-2:])
    y = jnp.fft.irfft2(jnp.fft.rfft2(t) / jnp.fft.rfft2(embed_kernel(a, spatial)), s=spatial)
    return y[:, :, 0] if one_d else y


def arma2d(x, weight, a, bias=None, stride=1, padding="same", dilation=1,
           padding_mode="circular", *, groups=1, **_options):
    """eq. 7a (``jax_conv.conv2d``, TensorFlow's 'same' split), then :func:`ar_solve` (eq. 7b)."""
    t = _conv2d(x, weight, bias, stride, padding, dilation, groups, padding_mode)
    return ar_solve(t, a)


def _chain(f):
    """``f[:, 0] * f[:, 1] * ...`` (full convolutions): factors ``(C, Q, 3)`` -> ``(C, 2Q+1)``."""
    out = f[:, 0]
    conv = jax.vmap(lambda u, v: jnp.convolve(u, v, mode="full"))
    for q in range(1, f.shape[1]):
        out = conv(out, f[:, q])
    return out


def separable_ar_kernel(f, g):
    return _chain(f)[:, :, None] * _chain(g)[:, None, :]


def reparameterize(alpha, beta, a0=1.0, *, form="safe"):
    """Def. 10 forms: see :func:`lmref.arma.reparameterize`."""
    half = math.sqrt(0.5)
    if form == "safe":
        s, d = 0.5 * jnp.tanh(alpha), half * beta
    elif form == "paper":
        s, d = half * jnp.tanh(alpha), half * beta
    else:  # official: tanh on both stored parameters, then the 45-degree rotation
        s, d = half * jnp.tanh(alpha), half * jnp.tanh(beta)
    return jnp.stack([a0 * (s - d), jnp.full_like(s, a0), a0 * (s + d)], axis=-1)
