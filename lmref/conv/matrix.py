"""The convolution as an exact sparse matrix (seed 000, Lemma 1): :func:`conv1d_matrix` and
:func:`conv2d_matrix`, built directly in CSR form; re-exported by :mod:`lmref.conv`.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from lmref._numba import jit, pjit, prange
from lmref._validation import as_float64, as_int, check_alloc
from lmref.conv.geometry import _geometry, _guard, _options_text, _read_positions, _to2d
# the kernels' serial/parallel threshold, bound here: a test that patches it patches both
from lmref.conv.kernels import _PARALLEL_MIN_WORK

__all__ = ["conv1d_matrix", "conv2d_matrix"]


# ----------------------------------------------------------------------------------------------
# the convolution as a sparse matrix (Lemma 1)
#
# Separable construction: along each axis, output position i reads the padded positions
# i*s + a*d, which the padding maps to input pixels (or to a zero). Sorting each output's taps
# by source pixel gives, per axis, the distinct sources in increasing order and the taps that
# meet there; a matrix row (o, i, j) is then the product of the two axes' lists for every input
# channel of the group: already sorted and duplicate-free, so the CSR arrays are written
# directly (canonical form, no dense intermediate, no probing with basis vectors).
# ----------------------------------------------------------------------------------------------

def _axis_taps(src):
    """Per output position along one axis: the distinct source pixels in increasing order and,
    for each, the range of its kernel taps in ``taps`` (tap order kept among equal sources).

    Returns ``(count, sources, start, end, taps, template, shift)`` with ``sources[i, u]`` the
    ``u``-th distinct source of output ``i`` (``u < count[i]``), read by the taps
    ``taps[i, start[i, u]:end[i, u]]``; output ``i`` has the same taps as output
    ``template[i] <= i`` with every source moved by ``shift[i]`` (interior positions are all
    translates of one template, which the matrix builder copies instead of recomputing).
    """
    out_size, k = src.shape
    taps = np.argsort(src, axis=1, kind="stable")
    src = np.take_along_axis(src, taps, axis=1)
    valid = src >= 0
    new = valid.copy()
    new[:, 1:] &= src[:, 1:] != src[:, :-1]
    count = np.count_nonzero(new, axis=1)
    rank = np.cumsum(new, axis=1) - 1  # which distinct source each sorted tap belongs to
    sources = np.zeros((out_size, k), dtype=np.int64)
    start = np.zeros((out_size, k), dtype=np.int64)
    end = np.zeros((out_size, k), dtype=np.int64)
    rows, cols = np.nonzero(new)
    sources[rows, rank[rows, cols]] = src[rows, cols]
    start[rows, rank[rows, cols]] = cols
    vrows, vcols = np.nonzero(valid)
    end[vrows, rank[vrows, vcols]] = vcols + 1
    # translate of the previous position: same counts, tap ranges and taps, sources + const
    step = sources[1:] - sources[:-1]
    used = np.arange(k)[None, :] < count[1:, None]
    same = ((count[1:] == count[:-1]) & (count[1:] > 0)
            & (start[1:] == start[:-1]).all(axis=1) & (end[1:] == end[:-1]).all(axis=1)
            & (taps[1:] == taps[:-1]).all(axis=1)
            & ((step == step[:, :1]) | ~used).all(axis=1))
    first = np.concatenate(([True], ~same))
    template = np.maximum.accumulate(np.where(first, np.arange(out_size), 0))
    shift = sources[:, 0] - sources[template, 0]
    return (count.astype(np.int64), sources, start, end, np.ascontiguousarray(taps),
            template.astype(np.int64), shift.astype(np.int64))


@jit
def _matrix_block(oi, w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data):
    """Rows ``(o, i, 0..wo-1)`` of the matrix (``oi = o * ho + i``)."""
    count_h, src_h, start_h, end_h, taps_h = axis_h[0], axis_h[1], axis_h[2], axis_h[3], \
        axis_h[4]
    count_w, src_w, start_w, end_w, taps_w = axis_w[0], axis_w[1], axis_w[2], axis_w[3], \
        axis_w[4]
    template_w, shift_w = axis_w[5], axis_w[6]
    c_out, c_in_g = w.shape[0], w.shape[1]
    ho, wo = count_h.shape[0], count_w.shape[0]
    o = oi // ho
    i = oi - o * ho
    c0 = (o // (c_out // groups)) * c_in_g
    for j in range(wo):
        pos = indptr[oi * wo + j]
        tj = template_w[j]
        if tj < j:  # a translate of an earlier row: same values, columns moved
            src = indptr[oi * wo + tj]
            delta = shift_w[j]
            for q in range(indptr[oi * wo + j + 1] - pos):
                indices[pos + q] = indices[src + q] + delta
                data[pos + q] = data[src + q]
            continue
        for c in range(c_in_g):
            wc = w[o, c]
            for uh in range(count_h[i]):
                row_base = ((c0 + c) * in_h + src_h[i, uh]) * in_w
                h0, h1 = start_h[i, uh], end_h[i, uh]
                for uw in range(count_w[j]):
                    w0, w1 = start_w[j, uw], end_w[j, uw]
                    if h1 - h0 == 1 and w1 - w0 == 1:
                        value = wc[taps_h[i, h0], taps_w[j, w0]]
                    else:  # taps meeting at one pixel (padding modes) are summed in tap order
                        value = 0.0
                        for p in range(h0, h1):
                            for q in range(w0, w1):
                                value += wc[taps_h[i, p], taps_w[j, q]]
                    indices[pos] = row_base + src_w[j, uw]
                    data[pos] = value
                    pos += 1


@jit
def _matrix_serial(w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data):
    for oi in range(w.shape[0] * axis_h[0].shape[0]):
        _matrix_block(oi, w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data)


@pjit
def _matrix_parallel(w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data):
    for oi in prange(w.shape[0] * axis_h[0].shape[0]):
        _matrix_block(oi, w, axis_h, axis_w, in_h, in_w, groups, indptr, indices, data)


def _matrix(nd, input_shape, weight, stride, padding, dilation, groups, padding_mode):
    if not isinstance(input_shape, (tuple, list, np.ndarray)) or len(input_shape) != nd + 1:
        layout = "(C_in, L)" if nd == 1 else "(C_in, H, W)"
        raise ValueError(f"input_shape must be a sequence {layout} of {nd + 1} ints, got "
                         f"{input_shape!r}")
    names = ("C_in", "L") if nd == 1 else ("C_in", "H", "W")
    shape = tuple(as_int(s, f"input_shape {n}", minimum=1, maximum=None)
                  for s, n in zip(input_shape, names))
    wlayout = "(C_out, C_in // groups, k)" if nd == 1 else "(C_out, C_in // groups, kH, kW)"
    weight = as_float64(weight, f"weight {wlayout}", ndim=nd + 2)
    geom = _geometry(nd, shape[1:], shape[0], weight.shape, stride, padding, dilation, groups,
                     padding_mode, x_name="input_shape")
    w2 = _to2d(weight, nd)
    c_out, c_in, c_in_g = w2.shape[0], shape[0], w2.shape[1]
    (h, w), (ho, wo) = geom.in_hw, geom.out_hw
    call = f"conv{nd}d_matrix(input_shape={shape}, {_options_text(geom, nd)})"
    n_rows, n_cols = c_out * ho * wo, c_in * h * w
    _guard((n_rows + 1,), "the matrix's row pointers", call)
    _guard((ho * geom.k_hw[0] + wo * geom.k_hw[1], 8), "the per-axis tap tables", call)
    axis_h, axis_w = (_axis_taps(_read_positions(
        geom.in_hw[a], geom.k_hw[a], geom.stride[a], geom.dilation[a], geom.pads[a][0],
        geom.out_hw[a], geom.mode).reshape(geom.k_hw[a], geom.out_hw[a]).T) for a in (0, 1))
    row_counts = c_in_g * axis_h[0][:, None] * axis_w[0][None, :]  # the same for every o
    nnz = c_out * int(row_counts.sum())
    _guard((nnz,), "the matrix's entries (value and column index)", call)
    check_alloc((nnz,), f"{call}: the matrix", itemsize=16)
    index_dtype = np.int32 if max(nnz, n_rows, n_cols) < 2**31 else np.int64
    indptr = np.zeros(n_rows + 1, dtype=index_dtype)
    np.cumsum(np.tile(row_counts.ravel(), c_out), out=indptr[1:])
    indices = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz)
    run = _matrix_parallel if nnz >= _PARALLEL_MIN_WORK else _matrix_serial
    run(w2, axis_h, axis_w, h, w, geom.groups, indptr, indices, data)
    mat = sp.csr_array((data, indices, indptr), shape=(n_rows, n_cols))
    mat.has_sorted_indices = True  # sorted and duplicate-free by construction (canonical)
    return mat


_MATRIX_DOC = """The exact matrix ``C`` of :func:`conv{nd}d` (seed 000, Lemma 1), no bias.

    ``C @ x.ravel() == conv{nd}d(x[None], weight, ...).ravel()`` for ``x`` of shape
    ``input_shape``: rows index the output ``(C_out, *out_spatial)`` and columns the input
    ``(C_in, *spatial)``, both unrolled row-major. Built directly in CSR form (sorted column
    indices, no duplicates: taps that meet at one input pixel through circular / reflect /
    replicate padding are summed; taps reading a zero of the padding have no entry). Entries
    are stored for every tap that reads an input pixel, even where the weight is 0.

    Parameters
    ----------
    input_shape : tuple of ints {ishape}
    weight, stride, padding, dilation, groups, padding_mode : as in :func:`conv{nd}d`

    Returns
    -------
    scipy.sparse.csr_array, float64, shape ``(C_out * prod(out_spatial), C_in * prod(spatial))``
        ``C.T`` is :func:`conv_transpose{nd}d` (for ``padding_mode="zeros"``) and the input
        gradient of :func:`conv{nd}d_backward` in every mode.
    """


def conv1d_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _matrix(1, input_shape, weight, stride, padding, dilation, groups, padding_mode)


def conv2d_matrix(input_shape, weight, stride=1, padding=0, dilation=1, groups=1,
                  padding_mode="zeros"):
    return _matrix(2, input_shape, weight, stride, padding, dilation, groups, padding_mode)


conv1d_matrix.__doc__ = _MATRIX_DOC.format(nd=1, ishape="(C_in, L)")
conv2d_matrix.__doc__ = _MATRIX_DOC.format(nd=2, ishape="(C_in, H, W)")
conv2d_matrix.__doc__ += """
    Examples
    --------
    >>> import numpy as np
    >>> from lmref.conv import conv2d, conv2d_matrix
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2))
    >>> C = conv2d_matrix((1, 4, 4), w)
    >>> C.shape, C.nnz
    ((9, 16), 36)
    >>> bool(np.array_equal(C @ x.ravel(), conv2d(x, w).ravel()))
    True
    """
