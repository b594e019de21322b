"""Convolution with PyTorch semantics, its backward, its transpose and its exact sparse matrix.

Seed ``000`` Lemma 1: a convolution is a matrix acting on the row-major unrolled input
("unroll, multiply, reshape"); :func:`conv2d_matrix` builds that matrix ``C`` exactly.

Conventions
-----------
Layout
    ``x`` is ``(N, C_in, *spatial)`` (NCL / NCHW), ``weight`` is ``(C_out, C_in // groups, *k)``
    (OIL / OIHW), ``bias`` is ``(C_out,)``: exactly ``torch.nn.functional.conv1d/conv2d``.
Cross-correlation
    ``out[n, o, i, j] = bias[o] + sum_{c, a, b} weight[o, c, a, b] *
    xpad[n, g*C_in/groups + c, i*sh + a*dh, j*sw + b*dw]`` with ``g = o // (C_out/groups)``:
    no kernel flip, the kernel origin is its top-left tap (tap ``(0, 0)`` reads the top-left
    of the padded window).
Padding
    ``padding`` is an int, a tuple (one int per spatial axis, applied on both sides), ``"valid"``
    (no padding) or ``"same"``. ``"same"`` follows TensorFlow for every stride: the output size
    is ``ceil(size / stride)`` and the total padding ``max((out - 1) * stride + (k - 1) *
    dilation + 1 - size, 0)`` is split as ``total // 2`` before (top/left) and the rest, the
    extra pixel when the total is odd, after (bottom/right). For stride 1 this is PyTorch's
    ``padding="same"`` (which refuses stride > 1).
Padding modes
    ``padding_mode`` as in ``torch.nn.Conv2d``: ``"zeros"``, ``"circular"`` (periodic; the
    padding may not exceed the input size), ``"reflect"`` (mirror without repeating the edge;
    the padding must be smaller than the input size) and ``"replicate"`` (repeat the edge).
    The backward routes gradients through the padding: a padded pixel that copies input pixel
    ``p`` sends its gradient back to ``p`` (accumulated).
Output size
    ``floor((size + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1``; a kernel
    larger than the padded input is a ``ValueError``.
Dtypes and NaN
    Integer and floating inputs are accepted; every result is float64 (the oracle computes in
    float64 whatever comes in). NaN and Inf propagate like in any sum of products; as in
    PyTorch, an infinite weight times a zero of the padding gives NaN.
Summation order
    Each output is accumulated in a fixed order that does not depend on the number of threads
    (the fast kernels add input channels in pairs, ``acc += w0 * u + w1 * v``, or, for the
    weight gradient with many input channels, output columns in fours, and for the input
    gradient with many input channels, output channels in eights; the plain references
    in ``_conv*_reference`` sum tap by tap), so results are reproducible bit for bit
    on a machine; fast and reference paths agree to rounding (~1e-15 relative).
Threads
    Problems above ~2 million multiply-adds run numba ``prange`` drivers over independent
    output blocks; smaller ones run the same blocks serially (no thread start-up).
"""
from __future__ import annotations

from lmref.conv.api import (conv1d, conv1d_backward, conv2d, conv2d_backward, conv_transpose1d,
                            conv_transpose1d_backward, conv_transpose2d,
                            conv_transpose2d_backward)
from lmref.conv.geometry import PADDING_MODES, conv_output_size, same_padding
from lmref.conv.matrix import conv1d_matrix, conv2d_matrix
from lmref.registry import Op

__all__ = [
    "conv1d", "conv2d", "conv1d_backward", "conv2d_backward",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose1d_backward",
    "conv_transpose2d_backward", "conv1d_matrix", "conv2d_matrix",
    "conv_output_size", "same_padding", "PADDING_MODES",
]

# The public functions are lmref.conv's (the submodules are how the code is organised, not
# part of the API): documentation, doctests, the robustness sweep and error labels name them
# ``lmref.conv.<name>``, as NumPy does for the functions its packages re-export.
for _name in __all__:
    if callable(globals()[_name]):
        globals()[_name].__module__ = __name__
del _name


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

def _example_conv1d(rng):
    x = rng.standard_normal((2, 4, 9))
    w = rng.standard_normal((6, 2, 3))
    b = rng.standard_normal(6)
    return (x, w, b), {"stride": 2, "padding": "same", "dilation": 1, "groups": 2,
                       "padding_mode": "reflect"}


def _example_conv2d(rng):
    x = rng.standard_normal((2, 3, 7, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    return (x, w, b), {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2),
                       "padding_mode": "circular"}


def _example_conv_transpose2d(rng):
    x = rng.standard_normal((2, 4, 4, 3))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    return (x, w, b), {"stride": (2, 1), "padding": (1, 0), "output_padding": (1, 0),
                       "groups": 2, "dilation": (1, 2)}


def _example_conv_transpose1d(rng):
    x = rng.standard_normal((2, 2, 5))
    w = rng.standard_normal((2, 3, 3))
    b = rng.standard_normal(3)
    return (x, w, b), {"stride": 3, "padding": 1, "output_padding": 2}


_OPS = [
    Op(name="conv1d", cpu="lmref.conv:conv1d",
       reference="lmref.conv.reference:_conv1d_reference",
       backward="lmref.conv:conv1d_backward", peer="lmref.peers.torch_conv:conv1d",
       peer_name="torch.nn.functional.conv1d (F.pad for padding modes / strided 'same')",
       example="lmref.conv:_example_conv1d",
       notes="cross-correlation; 'same' = TensorFlow rule (extra pixel after)"),
    Op(name="conv2d", cuda="lmref.cuda:conv2d", cpu="lmref.conv:conv2d",
       reference="lmref.conv.reference:_conv2d_reference",
       backward="lmref.conv:conv2d_backward", peer="lmref.peers.torch_conv:conv2d",
       peer_name="torch.nn.functional.conv2d (F.pad for padding modes / strided 'same')",
       example="lmref.conv:_example_conv2d",
       notes="NCHW/OIHW cross-correlation; gradients routed through the padding"),
    Op(name="conv_transpose1d", cpu="lmref.conv:conv_transpose1d",
       backward="lmref.conv:conv_transpose1d_backward",
       peer="lmref.peers.torch_conv:conv_transpose1d",
       peer_name="torch.nn.functional.conv_transpose1d",
       example="lmref.conv:_example_conv_transpose1d", notes="adjoint of conv1d in its input"),
    Op(name="conv_transpose2d", cpu="lmref.conv:conv_transpose2d",
       reference="lmref.conv.reference:_conv_transpose2d_reference",
       backward="lmref.conv:conv_transpose2d_backward",
       peer="lmref.peers.torch_conv:conv_transpose2d",
       peer_name="torch.nn.functional.conv_transpose2d",
       example="lmref.conv:_example_conv_transpose2d",
       notes="adjoint of conv2d in its input (C.T); weight (C_in, C_out // groups, kH, kW)"),
]
