"""The public convolutions: :func:`conv1d`, :func:`conv2d`, their backward, the transposed
convolutions and their backward (validation in Python, then the kernels of
:mod:`lmref.conv.kernels`); re-exported by :mod:`lmref.conv`.
"""
from __future__ import annotations

from functools import lru_cache, partial

import numpy as np

from lmref._padding import resolve_padding
from lmref._validation import as_float64
from lmref.conv.geometry import (_MEMO_SIZE, _check_arrays, _check_grad_out, _conv_memo,
                                 _describe_call, _from2d, _geometry, _groups, _guard,
                                 _int_tuple, _lift, _memo, _plan, _recall, _to2d)
from lmref.conv.kernels import _forward, _input_grad, _weight_grad

__all__ = [
    "conv1d", "conv2d", "conv1d_backward", "conv2d_backward",
    "conv_transpose1d", "conv_transpose2d", "conv_transpose1d_backward",
    "conv_transpose2d_backward",
]


# ----------------------------------------------------------------------------------------------
# public convolution API
# ----------------------------------------------------------------------------------------------

def _conv(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    x, unbatched = _lift(x, nd)
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    plan = _recall(_conv_memo, True, nd, x.shape, weight.shape, stride, padding, dilation,
                   groups, padding_mode)
    if plan is None:  # the full path: checks and guards that name the call
        geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                         groups, padding_mode)
        call = partial(_describe_call, f"conv{nd}d", x.shape[1 if unbatched else 0:], geom, nd)
        _guard((x.shape[0], weight.shape[0]) + geom.out_hw, "the output", call)
        plan = _plan(geom, x.shape[0], x.shape[1], call)
    out = _from2d(_forward(_to2d(x, nd), _to2d(weight, nd), bias, plan), nd)
    return out[0] if unbatched else out


def _conv_backward(nd, grad_out, x, weight, bias, stride, padding, dilation, groups,
                   padding_mode):
    x, unbatched = _lift(x, nd)
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    plan = _recall(_conv_memo, False, nd, x.shape, weight.shape, stride, padding, dilation,
                   groups, padding_mode)
    if plan is None:  # the full path: grad_out is checked before the guards
        geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                         groups, padding_mode)
        g = _check_grad_out(grad_out, nd, x.shape[0], weight.shape[0], geom, unbatched)
        call = partial(_describe_call, f"conv{nd}d_backward", x.shape[1 if unbatched else 0:],
                       geom, nd)
        plan = _plan(geom, x.shape[0], x.shape[1], call)
    else:
        g = _check_grad_out(grad_out, nd, x.shape[0], weight.shape[0], plan, unbatched)
    g2, w2 = _to2d(g, nd), _to2d(weight, nd)
    grad_x = _from2d(_input_grad(g2, w2, plan, x.shape[0], x.shape[1]), nd)
    grad_w = _from2d(_weight_grad(g2, _to2d(x, nd), w2.shape, plan), nd)
    grad_b = None if bias is None else g.sum(axis=tuple(range(2, nd + 2)) + (0,))
    return (grad_x[0] if unbatched else grad_x), grad_w, grad_b


_CONV_DOC = """{nd}-D convolution (cross-correlation) with ``torch.nn.functional.conv{nd}d`` semantics.

    Parameters
    ----------
    x : array_like, shape {xshape}
    weight : array_like, shape {wshape}
    bias : array_like, shape (C_out,), optional
    stride, dilation : int or tuple of {nd} ints, >= 1
    padding : int, tuple of {nd} ints, ``"valid"`` or ``"same"``
        ``"same"``: output size ``ceil(size / stride)``, extra pixel of an odd total padding
        after (TensorFlow's rule; equals PyTorch's ``"same"`` for stride 1).
    groups : int, dividing ``C_in`` and ``C_out``
    padding_mode : ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"replicate"``

    Returns
    -------
    ndarray, float64, shape {oshape}
        Whatever float or integer dtype comes in (see the module docstring for the formula).
    """


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
           padding_mode="zeros"):
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


conv1d.__doc__ = _CONV_DOC.format(nd=1, xshape="(N, C_in, L)",
                                  wshape="(C_out, C_in // groups, k)", oshape="(N, C_out, L_out)")
conv2d.__doc__ = _CONV_DOC.format(nd=2, xshape="(N, C_in, H, W)",
                                  wshape="(C_out, C_in // groups, kH, kW)",
                                  oshape="(N, C_out, H_out, W_out)")
conv2d.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> conv2d(x, w)
    array([[[[10., 14., 18.],
             [26., 30., 34.],
             [42., 46., 50.]]]])
    >>> conv2d(x, w, padding="same").shape
    (1, 1, 4, 4)
    """

_BACKWARD_DOC = """Backward (vector-Jacobian product) of :func:`conv{nd}d`.

    Same arguments as :func:`conv{nd}d` after ``grad_out`` (the gradient of the output, shape
    of the output). Gradients flow through the padding: with ``padding_mode`` other than
    ``"zeros"`` a padded copy of an input pixel adds its gradient to that pixel.

    Returns
    -------
    (grad_x, grad_weight, grad_bias) : float64 arrays shaped like ``x``, ``weight`` and
        ``bias``; ``grad_bias`` is ``None`` when ``bias`` is ``None``.
    """


def conv1d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _conv_backward(1, grad_out, x, weight, bias, stride, padding, dilation, groups,
                          padding_mode)


def conv2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                    padding_mode="zeros"):
    return _conv_backward(2, grad_out, x, weight, bias, stride, padding, dilation, groups,
                          padding_mode)


conv1d_backward.__doc__ = _BACKWARD_DOC.format(nd=1)
conv2d_backward.__doc__ = _BACKWARD_DOC.format(nd=2)
conv2d_backward.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d_backward
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> grad_x, grad_w, grad_b = conv2d_backward(np.ones((1, 1, 3, 3)), x, w)
    >>> grad_x[0, 0]  # how many 2 x 2 windows cover each pixel
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    >>> grad_w[0, 0]
    array([[45., 54.],
           [81., 90.]])
    >>> grad_b is None
    True
    """


# ----------------------------------------------------------------------------------------------
# transposed convolution (the adjoint of conv in its input)
# ----------------------------------------------------------------------------------------------

def _transpose_sizes(nd, x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    """Checked options and output sizes of a transposed convolution: ``(groups, strides, pads,
    out_pads, dilations, sizes)``.

    ``padding`` may be per-side pairs: ``(before, after)`` are cropped from the start and the
    end of the full output (ONNX ``pads``); an int or a tuple of ints is symmetric (PyTorch).
    """
    groups = _groups(groups)
    c_in = w_shape[0]
    if x_shape[1] != c_in:
        raise ValueError(f"channel mismatch: x has {x_shape[1]} channels but a transposed "
                         f"convolution weight (C_in, C_out // groups, *k) needs C_in = "
                         f"weight.shape[0] = {c_in}")
    if c_in % groups:
        raise ValueError(f"groups={groups} must divide the number of input channels "
                         f"x.shape[1]={c_in}")
    strides = _int_tuple(stride, "stride", nd)
    dilations = _int_tuple(dilation, "dilation", nd)
    if isinstance(padding, str):
        raise ValueError(f"padding of a transposed convolution must be an int, a tuple of {nd} "
                         f"ints or per-side (before, after) pairs, got {padding!r}")
    pads = resolve_padding(padding, nd, maximum=None, strings=())
    out_pads = _int_tuple(output_padding, "output_padding", nd, minimum=0)
    sizes = []
    for n, k, s, (pb, pa), op, d in zip(x_shape[2:], w_shape[2:], strides, pads, out_pads,
                                        dilations):
        if op >= max(s, d):
            raise ValueError(f"output_padding must be smaller than stride or dilation (as in "
                             f"PyTorch), got output_padding={out_pads}, stride={strides}, "
                             f"dilation={dilations}")
        size = (n - 1) * s - pb - pa + d * (k - 1) + op + 1
        if size < 1:
            raise ValueError(f"transposed convolution output would be empty: size {size} from "
                             f"input {n}, kernel {k}, stride {s}, padding {(pb, pa)}, "
                             f"dilation {d}")
        sizes.append(size)
    return groups, strides, pads, out_pads, dilations, tuple(sizes)


def _transpose_geometry(nd, x, weight, stride, padding, output_padding, dilation, groups):
    """``(geom, plan)`` of the *forward* convolution whose input gradient is this transposed
    conv (:func:`_transpose_sizes`), after the memory guards: the memoised plan (both) where
    :func:`_recall` has it, else the full path's checks, guards and plan."""
    plan = _recall(_transpose_memo, True, nd, x.shape, weight.shape, stride, padding,
                   output_padding, dilation, groups)
    if plan is not None:
        return plan, plan
    return _transpose_checked(nd, x, weight, stride, padding, output_padding, dilation, groups)


def _transpose_checked(nd, x, weight, stride, padding, output_padding, dilation, groups):
    """:func:`_transpose_geometry`'s full path (the checks name the arguments)."""
    groups, strides, pads, out_pads, dilations, sizes = _transpose_sizes(
        nd, x.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    c_out = weight.shape[1] * groups

    def call():
        return f"conv_transpose{nd}d(stride={strides}, padding={pads}, output_padding=" \
               f"{out_pads}, dilation={dilations}) on x of shape {tuple(x.shape)}"
    _guard((x.shape[0], c_out) + sizes, "the output", call)
    geom = _geometry(nd, sizes, c_out, weight.shape, strides, pads, dilations, groups, "zeros",
                     x_name="output")
    return geom, _plan(geom, x.shape[0], c_out, call)


@lru_cache(maxsize=_MEMO_SIZE)
def _transpose_memo(nd, x_shape, w_shape, stride, padding, output_padding, dilation, groups):
    """:class:`lmref.conv.geometry._Memo` of :func:`_transpose_geometry` for these shapes."""
    groups, strides, pads, _, dilations, sizes = _transpose_sizes(
        nd, x_shape, w_shape, stride, padding, output_padding, dilation, groups)
    c_out = w_shape[1] * groups
    geom = _geometry(nd, sizes, c_out, w_shape, strides, pads, dilations, groups, "zeros",
                     x_name="output")
    return _memo(geom, (x_shape[0], c_out) + sizes, x_shape[0], c_out)


def _check_transpose_bias(bias, c_out):
    if bias is None:
        return None
    bias = as_float64(bias, "bias (C_out,)", ndim=1)
    if bias.shape[0] != c_out:
        raise ValueError(f"bias must have shape ({c_out},) (C_out = weight.shape[1] * groups), "
                         f"got {bias.shape}")
    return bias


def _fit(a, hw):
    """Crop or zero-extend the trailing two axes of ``a`` to ``hw`` (bottom/right)."""
    if a.shape[2:] == tuple(hw):
        return a
    out = np.zeros(a.shape[:2] + tuple(hw))
    h, w = min(hw[0], a.shape[2]), min(hw[1], a.shape[3])
    out[:, :, :h, :w] = a[:, :, :h, :w]
    return out


def _conv_transpose(nd, x, weight, bias, stride, padding, output_padding, groups, dilation):
    x, unbatched = _lift(x, nd)
    x, weight, _ = _check_arrays(nd, x, weight, None, weight_name="weight (C_in, C_out // "
                                 "groups, *k) of a transposed convolution")
    # _transpose_geometry's two steps written out, and no call for a missing bias: on a tiny
    # input (1x4x5x5) each call saved is ~0.1 us of ~3.5 (measured; the row is near parity)
    plan = _recall(_transpose_memo, True, nd, x.shape, weight.shape, stride, padding,
                   output_padding, dilation, groups)
    if plan is None:
        plan = _transpose_checked(nd, x, weight, stride, padding, output_padding, dilation,
                                  groups)[1]
    c_out = weight.shape[1] * plan.groups
    if bias is not None:
        bias = _check_transpose_bias(bias, c_out)
    # output_padding >= stride (allowed when < dilation) makes the forward conv one row
    # longer than x: that row of its output is simply absent here; the input-gradient kernels
    # read only the rows and columns x has (no zero row times an Inf weight)
    out = _input_grad(_to2d(x, nd), _to2d(weight, nd), plan, x.shape[0], c_out)
    if bias is not None:
        out = out + bias[:, None, None]
    out = _from2d(out, nd)
    return out[0] if unbatched else out


def _conv_transpose_backward(nd, grad_out, x, weight, bias, stride, padding, output_padding,
                             groups, dilation):
    x, unbatched = _lift(x, nd)
    x, weight, _ = _check_arrays(nd, x, weight, None)
    geom, plan = _transpose_geometry(nd, x, weight, stride, padding, output_padding, dilation,
                                     groups)
    c_out = weight.shape[1] * geom.groups
    _check_transpose_bias(bias, c_out)
    g = as_float64(grad_out, "grad_out", ndim=nd + 1 if unbatched else nd + 2)
    expected = (x.shape[0], c_out) + geom.in_hw[2 - nd:]
    if unbatched:
        expected = expected[1:]
    if g.shape != expected:
        raise ValueError(f"grad_out must have the output's shape {expected}, got {g.shape}")
    if unbatched:
        g = g[None]
    g2, w2, x2 = _to2d(g, nd), _to2d(weight, nd), _to2d(x, nd)
    # y = C(w)^T x  =>  grad_x = C(w) g and <g, C(w)^T x> = <C(w) g, x> gives grad_w; x may
    # lack the forward conv's last row (output_padding >= stride): the kernels read x's rows
    grad_x = _from2d(_fit(_forward(g2, w2, None, plan), x2.shape[2:]), nd)
    grad_w = _weight_grad(x2, g2, w2.shape, plan)
    grad_b = None if bias is None else g.sum(axis=tuple(range(2, nd + 2)) + (0,))
    return (grad_x[0] if unbatched else grad_x), _from2d(grad_w, nd), grad_b


_TRANSPOSE_DOC = """{nd}-D transposed convolution, ``torch.nn.functional.conv_transpose{nd}d`` semantics.

    The adjoint of :func:`conv{nd}d` in its input (its ``grad_x``): with ``C`` the matrix of
    :func:`conv{nd}d_matrix` for the same weight, stride, padding, dilation and groups,
    ``conv_transpose{nd}d(y, weight).ravel() == C.T @ y.ravel()`` (one sample, no bias).

    Parameters
    ----------
    x : array_like, shape {xshape}
    weight : array_like, shape {wshape} (PyTorch's layout for transposed convolutions)
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or tuple of {nd} ints
        Output size ``(size - 1) * stride - 2 * padding + dilation * (k - 1) +
        output_padding + 1``; ``output_padding`` must be smaller than stride or dilation.
    groups : int

    Returns
    -------
    ndarray, float64
    """


def conv_transpose1d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(1, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    return _conv_transpose(2, x, weight, bias, stride, padding, output_padding, groups, dilation)


def conv_transpose1d_backward(grad_out, x, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1):
    """Backward of :func:`conv_transpose1d`: ``(grad_x, grad_weight, grad_bias)``."""
    return _conv_transpose_backward(1, grad_out, x, weight, bias, stride, padding,
                                    output_padding, groups, dilation)


def conv_transpose2d_backward(grad_out, x, weight, bias=None, stride=1, padding=0,
                              output_padding=0, groups=1, dilation=1):
    """Backward of :func:`conv_transpose2d`: ``(grad_x, grad_weight, grad_bias)``
    (``grad_bias`` is ``None`` when ``bias`` is ``None``)."""
    return _conv_transpose_backward(2, grad_out, x, weight, bias, stride, padding,
                                    output_padding, groups, dilation)


conv_transpose1d.__doc__ = _TRANSPOSE_DOC.format(nd=1, xshape="(N, C_in, L)",
                                                 wshape="(C_in, C_out // groups, k)")
conv_transpose2d.__doc__ = _TRANSPOSE_DOC.format(nd=2, xshape="(N, C_in, H, W)",
                                                 wshape="(C_in, C_out // groups, kH, kW)")
conv_transpose2d.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d_matrix, conv_transpose2d
    >>> w = np.ones((1, 1, 2, 2))
    >>> conv_transpose2d(np.ones((1, 1, 2, 2)), w)
    array([[[[1., 2., 1.],
             [2., 4., 2.],
             [1., 2., 1.]]]])
    >>> y = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> C = conv2d_matrix((1, 4, 4), w)
    >>> bool(np.array_equal(conv_transpose2d(y, w).ravel(), C.T @ y.ravel()))
    True
    """
