"""The plain reference paths (``_conv*_reference``): tap-by-tap sums with ``np.pad`` and
``np.einsum``, obviously correct and slow; tests and the registry compare the fast paths with
these.
"""
from __future__ import annotations

import numpy as np

from lmref._validation import as_float64, as_int, as_tuple
from lmref.conv.geometry import _check_arrays, _check_grad_out, _from2d, _geometry, _to2d

__all__: list[str] = []  # private module

_NP_PAD_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "reflect",
                "replicate": "edge"}


# ----------------------------------------------------------------------------------------------
# plain references (tests compare the fast paths with these)
# ----------------------------------------------------------------------------------------------

def _np_pad_reference(x, pads, mode):
    """Pad the trailing axes with ``np.pad`` (an independent implementation of the modes)."""
    width = ((0, 0), (0, 0)) + tuple(pads)
    return np.pad(x, width, mode=_NP_PAD_MODE[mode])


def _taps(geom):
    """``(a, b, window)``: each kernel tap and the slices of the padded input it reads."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = geom.k_hw, geom.stride, geom.dilation, geom.out_hw
    for a in range(kh):
        for b in range(kw):
            yield a, b, (slice(a * dh, a * dh + (ho - 1) * sh + 1, sh),
                         slice(b * dw, b * dw + (wo - 1) * sw + 1, sw))


def _groups_slices(geom, c_out, c_in):
    co, ci = c_out // geom.groups, c_in // geom.groups
    return [(slice(g * co, (g + 1) * co), slice(g * ci, (g + 1) * ci)) for g in range(geom.groups)]


def _conv_reference_nd(nd, x, weight, bias, stride, padding, dilation, groups, padding_mode):
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                     groups, padding_mode)
    x, w = _to2d(x, nd), _to2d(weight, nd)
    xp = _np_pad_reference(x, geom.pads, geom.mode)
    out = np.zeros((x.shape[0], w.shape[0]) + geom.out_hw)
    for og, ig in _groups_slices(geom, w.shape[0], x.shape[1]):
        for a, b, (rows, cols) in _taps(geom):
            out[:, og] += np.einsum("oc,nchw->nohw", w[og, :, a, b], xp[:, ig, rows, cols])
    if bias is not None:
        out += bias[:, None, None]
    return _from2d(out, nd)


def _conv_backward_reference_nd(nd, grad_out, x, weight, bias, stride, padding, dilation, groups,
                                padding_mode):
    x, weight, bias = _check_arrays(nd, x, weight, bias)
    geom = _geometry(nd, x.shape[2:], x.shape[1], weight.shape, stride, padding, dilation,
                     groups, padding_mode)
    g = _to2d(_check_grad_out(grad_out, nd, x.shape[0], weight.shape[0], geom), nd)
    x2, w = _to2d(x, nd), _to2d(weight, nd)
    xp = _np_pad_reference(x2, geom.pads, geom.mode)
    gxp, gw = np.zeros(xp.shape), np.zeros(w.shape)
    for og, ig in _groups_slices(geom, w.shape[0], x2.shape[1]):
        for a, b, (rows, cols) in _taps(geom):
            gxp[:, ig, rows, cols] += np.einsum("oc,nohw->nchw", w[og, :, a, b], g[:, og])
            gw[og, :, a, b] = np.einsum("nohw,nchw->oc", g[:, og], xp[:, ig, rows, cols])
    # adjoint of the padding: pad an index image the same way, then scatter-add through it
    h, wd = geom.in_hw
    index = np.arange(h * wd).reshape(1, 1, h, wd)
    if geom.mode == "zeros":
        index = np.pad(index, ((0, 0), (0, 0)) + geom.pads, constant_values=-1)
    else:
        index = _np_pad_reference(index, geom.pads, geom.mode)
    index = index[0, 0]
    keep = index >= 0
    gx = np.zeros((x2.shape[0], x2.shape[1], h * wd))
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, as it should be: no warning
        np.add.at(gx, (slice(None), slice(None), index[keep]), gxp[:, :, keep])
    gb = None if bias is None else g.sum(axis=(0, 2, 3))
    return (_from2d(gx.reshape(x2.shape), nd), _from2d(gw, nd), gb)


def _conv1d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    return _conv_reference_nd(1, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def _conv2d_reference(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                      padding_mode="zeros"):
    return _conv_reference_nd(2, x, weight, bias, stride, padding, dilation, groups, padding_mode)


def _conv1d_backward_reference(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1,
                               groups=1, padding_mode="zeros"):
    return _conv_backward_reference_nd(1, grad_out, x, weight, bias, stride, padding, dilation,
                                       groups, padding_mode)


def _conv2d_backward_reference(grad_out, x, weight, bias=None, stride=1, padding=0, dilation=1,
                               groups=1, padding_mode="zeros"):
    return _conv_backward_reference_nd(2, grad_out, x, weight, bias, stride, padding, dilation,
                                       groups, padding_mode)


def _conv_transpose2d_reference(x, weight, bias=None, stride=1, padding=0, output_padding=0,
                                groups=1, dilation=1):
    """Scatter every input pixel times the kernel into the (uncropped) output, then crop."""
    x = as_float64(x, "x", ndim=4)
    weight = as_float64(weight, "weight", ndim=4)
    groups = as_int(groups, "groups", minimum=1)
    (sh, sw), (ph, pw) = as_tuple(stride, "stride", 2), as_tuple(padding, "padding", 2)
    (oph, opw), (dh, dw) = as_tuple(output_padding, "output_padding", 2), \
        as_tuple(dilation, "dilation", 2)
    n, c_in, h, w = x.shape
    _, c_out_g, kh, kw = weight.shape
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (w - 1) * sw + dw * (kw - 1) + 1 + opw
    full = np.zeros((n, c_out_g * groups, full_h + ph, full_w + pw))
    c_in_g = c_in // groups
    for ci in range(c_in):
        g = ci // c_in_g
        for a in range(kh):
            for b in range(kw):
                rows = slice(a * dh, a * dh + (h - 1) * sh + 1, sh)
                cols = slice(b * dw, b * dw + (w - 1) * sw + 1, sw)
                full[:, g * c_out_g:(g + 1) * c_out_g, rows, cols] += \
                    weight[ci, :, a, b][None, :, None, None] * x[:, ci:ci + 1]
    out = full[:, :, ph:full_h - ph, pw:full_w - pw]
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64)[:, None, None]
    return np.ascontiguousarray(out)
