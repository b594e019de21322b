"""CUDA twins of :func:`lmref.temporal.local_multiply` and its backward.

Same arguments, validation (``lmref.temporal``'s own), displacement order
(``p = (i+r)*P + (j+r)``, row displacement slowest), normalisations ("none", "channels",
"l2" with eps 1e-6 under the root) and summation orders; float64 results equal to the CPU
ones to rounding, deterministic.
"""
from __future__ import annotations

from lmref import temporal as _cpu
from lmref._validation import as_float64, check_shape
from lmref.cuda._runtime import Session, blocks, threads

__all__ = ["local_multiply", "local_multiply_backward"]


def _grid(H, W, depth):
    bx, by = threads(32, 4), threads(8, 4)
    return (blocks(W, bx), blocks(H, by), depth), (bx, by)


def _prepare(s, a, b, patch_size, dilation, normalize):
    """Validate with lmref.temporal's checks; device copies of a and b, and the operands of
    the correlation (the same arrays, or their L2-normalised copies for "l2")."""
    ha, hb, patch, dilation, normalize = _cpu._local_multiply_args(
        s.stand_in(a), s.stand_in(b), patch_size, dilation, normalize)
    da, db = s.upload(a, ha), s.upload(b, hb)
    an, bn = (_l2_normalize(s, da), _l2_normalize(s, db)) if normalize == "l2" else (da, db)
    divisor = _cpu._divisor(normalize, ha.shape[1])
    return (da, db), (an, bn), ha.shape, patch, dilation, normalize, divisor


def _l2_normalize(s, x):
    n, _, h, w = x.shape
    out = s.scratch(x.shape)
    grid, block = _grid(h, w, n)
    s.launch(s.k.l2_normalize, grid, block, x, _cpu.L2_EPS, out)
    return out


def local_multiply(a, b, patch_size, *, dilation=1, normalize="none"):
    """GPU :func:`lmref.temporal.local_multiply`: ``(N, P*P, H, W)`` float64.

    NumPy in, NumPy out; device arrays stay on the device (see :mod:`lmref.cuda`).
    """
    s = Session("temporal")
    _, (an, bn), (n, c, h, w), patch, dilation, _, divisor = _prepare(
        s, a, b, patch_size, dilation, normalize)
    out = s.empty((n, patch * patch, h, w))
    grid, block = _grid(h, w, n * patch * patch)
    s.launch(s.k.local_multiply, grid, block, an, bn, patch, dilation, divisor, out)
    return s.give(out)


def local_multiply_backward(grad_out, a, b, patch_size, *, dilation=1, normalize="none"):
    """GPU :func:`lmref.temporal.local_multiply_backward`: ``(grad_a, grad_b)``, float64."""
    s = Session("temporal")
    (da, db), (an, bn), (n, c, h, w), patch, dilation, normalize, divisor = _prepare(
        s, a, b, patch_size, dilation, normalize)
    g = as_float64(s.stand_in(grad_out), "grad_out", ndim=4)
    check_shape(g, "grad_out", (n, patch * patch, h, w), "the output of local_multiply")
    dg = s.upload(grad_out, g)
    new = s.scratch if normalize == "l2" else s.empty  # l2: the normalisation's backward follows
    ga, gb = new((n, c, h, w)), new((n, c, h, w))
    grid, block = _grid(h, w, n * c)
    s.launch(s.k.local_multiply_backward, grid, block, dg, an, bn, patch, dilation, divisor,
             ga, gb)
    if normalize == "l2":
        ga, gb = _l2_normalize_backward(s, ga, da), _l2_normalize_backward(s, gb, db)
    return s.give(ga, gb)


def _l2_normalize_backward(s, g, x):
    n, _, h, w = x.shape
    gx = s.empty(x.shape)
    grid, block = _grid(h, w, n)
    s.launch(s.k.l2_normalize_backward, grid, block, g, x, _cpu.L2_EPS, gx)
    return gx
