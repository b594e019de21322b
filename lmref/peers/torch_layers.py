"""PyTorch peers of :mod:`lmref.layers` (float64 tensors in, tensor out)."""
import torch
import torch.nn.functional as F


def relu(x):
    return torch.relu(x)


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    return F.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad)
