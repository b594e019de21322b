"""PyTorch peers of :mod:`lmref.arma`: the same problems written with ``torch.fft`` and
``torch.nn.functional``, differentiated by autograd (an independent check of the hand-derived
backwards). Conventions as in :mod:`lmref.arma`: AR kernel origin at the centre, circular
*convolution*, factor index 0 = offset -1, ``f`` along H and ``g`` along W.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["ar_solve", "arma2d", "separable_ar_kernel", "reparameterize", "embed_kernel"]

_PAD_MODES = {"zeros": "constant", "circular": "circular", "reflect": "reflect",
              "replicate": "replicate"}


def embed_kernel(a, spatial):
    """``(C, kh, kw)`` kernels zero-padded to ``(C, H, W)``, centre tap rolled to index (0, 0)."""
    kh, kw = a.shape[-2:]
    padded = F.pad(a, (0, spatial[1] - kw, 0, spatial[0] - kh))
    return torch.roll(padded, (-(kh // 2), -(kw // 2)), (-2, -1))


def ar_solve(t, a, **_options):
    """``irfft2(rfft2(t) / rfft2(a_embedded))``; 1-D ``(N, C, L)`` with ``(C, k)`` too."""
    one_d = t.dim() == 3
    if one_d:
        t, a = t.unsqueeze(2), a.unsqueeze(1)
    spatial = tuple(t.shape[-2:])
    y = torch.fft.irfft2(torch.fft.rfft2(t) / torch.fft.rfft2(embed_kernel(a, spatial)),
                         s=spatial)
    return y.squeeze(2) if one_d else y


def _same_pads(k, d):
    total = d * (k - 1)
    return total // 2, total - total // 2


def arma2d(x, weight, a, bias=None, stride=1, padding="same", dilation=1,
           padding_mode="circular", *, groups=1, **_options):
    """``F.pad`` (any mode) + ``F.conv2d`` (eq. 7a), then :func:`ar_solve` (eq. 7b)."""
    dil = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    kh, kw = weight.shape[-2:]
    if padding == "same":
        (ht, hb), (wl, wr) = _same_pads(kh, dil[0]), _same_pads(kw, dil[1])
    else:
        ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
        ht, hb, wl, wr = ph, ph, pw, pw
    xp = F.pad(x, (wl, wr, ht, hb), mode=_PAD_MODES[padding_mode])
    t = F.conv2d(xp, weight, bias, stride=stride, dilation=dil, groups=groups)
    return ar_solve(t, a)


def _chain(f):
    """``f[:, 0] * f[:, 1] * ...`` (full convolutions): factors ``(C, Q, 3)`` -> ``(C, 2Q+1)``."""
    out = f[:, 0]
    for q in range(1, f.shape[1]):
        # conv1d is a correlation: flip the factor to convolve; grouped over channels
        out = F.conv1d(out.unsqueeze(0), f[:, q].flip(-1).unsqueeze(1), padding=2,
                       groups=f.shape[0]).squeeze(0)
    return out


def separable_ar_kernel(f, g):
    return _chain(f).unsqueeze(-1) * _chain(g).unsqueeze(-2)


def reparameterize(alpha, beta, a0=1.0, *, form="safe"):
    """Def. 10 forms: see :func:`lmref.arma.reparameterize`."""
    half = math.sqrt(0.5)
    if form == "safe":
        s, d = 0.5 * torch.tanh(alpha), half * beta
    elif form == "paper":
        s, d = half * torch.tanh(alpha), half * beta
    else:  # official: tanh on both stored parameters, then the 45-degree rotation
        s, d = half * torch.tanh(alpha), half * torch.tanh(beta)
    return torch.stack([a0 * (s - d), torch.full_like(s, a0), a0 * (s + d)], dim=-1)
