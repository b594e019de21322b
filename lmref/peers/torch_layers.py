"""PyTorch peers of :mod:`lmref.layers` (float64 tensors in, tensor out).

torch 2.13's own ``max_pool2d`` misbehaves when a dilated window has no tap inside the frame
(e.g. ``x`` of shape (2, 1, 5), ``kernel_size=(3, 1)``, ``padding=(1, 0)``, ``dilation=2``,
``ceil_mode=True``: out-of-range indices, heap corruption in the backward). lmref is right
there (``-inf``, no gradient), and this peer refuses to feed torch that geometry.
"""
import torch
import torch.nn.functional as F

from lmref.layers import _has_window_without_taps


def relu(x):
    return torch.relu(x)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    try:
        unsafe = _has_window_without_taps(tuple(x.shape), kernel_size, stride, padding,
                                          dilation, ceil_mode)
    except ValueError:  # a geometry torch refuses by itself
        unsafe = False
    if unsafe:
        raise ValueError("refusing to call torch.nn.functional.max_pool2d on a geometry with a "
                         "dilated window that has no tap inside the frame: torch 2.13 reads "
                         "out of range there (a torch defect; lmref gives -inf, no gradient)")
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override)
