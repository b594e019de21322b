"""PyTorch peers of :mod:`lmref.conv` (differentiable by autograd).

``padding_mode`` other than ``"zeros"`` is what ``torch.nn.Conv{1,2}d`` does: ``F.pad`` with
the mode, then an unpadded convolution. ``padding="same"`` with a stride > 1 (which PyTorch
refuses) is padded explicitly by TensorFlow's rule, the extra pixel after; with stride 1 it is
passed to PyTorch as ``"same"`` so that PyTorch's own rule is what gets compared.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "dilate", "composed_weight"]

_TORCH_PAD_MODE = {"zeros": "constant", "circular": "circular", "reflect": "reflect",
                   "replicate": "replicate"}


def _ntuple(v, nd):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def _tf_same(size, k, s, d):
    out = -(-size // s)
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    fn = F.conv1d if nd == 1 else F.conv2d
    strides, dilations = _ntuple(stride, nd), _ntuple(dilation, nd)
    if padding == "same" and all(s == 1 for s in strides) and padding_mode == "zeros":
        return fn(x, weight, bias, strides, "same", dilations, groups)
    if padding == "same":
        pads = [_tf_same(n, k, s, d) for n, k, s, d in
                zip(x.shape[2:], weight.shape[2:], strides, dilations)]
    elif padding == "valid":
        pads = [(0, 0)] * nd
    else:
        pads = [(p, p) for p in _ntuple(padding, nd)]
    if padding_mode == "zeros" and all(a == b for a, b in pads):
        return fn(x, weight, bias, strides, [a for a, _ in pads], dilations, groups)
    flat = [v for a, b in reversed(pads) for v in (a, b)]  # F.pad wants the last axis first
    x = F.pad(x, flat, mode=_TORCH_PAD_MODE[padding_mode])
    return fn(x, weight, bias, strides, 0, dilations, groups)


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return F.conv_transpose1d(x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)


def dilate(kernel, rate):
    """Zeros with the kernel written at every ``rate``-th spatial position."""
    nd = {1: 1, 2: 2, 3: 1, 4: 2}[kernel.dim()]
    rates = _ntuple(rate, nd)
    lead, ks = kernel.shape[:kernel.dim() - nd], kernel.shape[kernel.dim() - nd:]
    out = kernel.new_zeros(tuple(lead) + tuple((k - 1) * r + 1 for k, r in zip(ks, rates)))
    out[(Ellipsis,) + tuple(slice(None, None, r) for r in rates)] = kernel
    return out


def composed_weight(*weights, strides, dilations=None):
    """Composite kernel of a conv chain as the chain's adjoint applied to one-hot outputs.

    Row ``(o, 0)`` of the chain's matrix (padding 0) is ``K[o]`` placed at the input origin,
    so running ``conv_transpose`` layer by layer, last to first, on a one-hot output per
    output channel gives ``K`` without any composition algebra.
    """
    nd = weights[0].dim() - 2
    dilations = dilations or [1] * len(weights)
    fn = F.conv_transpose1d if nd == 1 else F.conv_transpose2d
    c_out = weights[-1].shape[0]
    y = torch.eye(c_out, dtype=weights[0].dtype, device=weights[0].device)
    y = y.reshape((c_out, c_out) + (1,) * nd)
    for w, s, d in reversed(list(zip(weights, strides, dilations))):
        y = fn(y, w, stride=_ntuple(s, nd), dilation=_ntuple(d, nd))
    return y
