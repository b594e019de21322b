"""ARMA layers: FFT solve of the autoregressive layer, its backward, separable stable AR kernels,
stability checks and the effective receptive field.

Su, Wang and Huang, "ARMA Nets: Expanding Receptive Field for Dense Prediction" (seed ``004``,
equation numbers refer to it) and its official code (``umd-huang-lab/ARMA-Networks``,
``code/image_classification/utils/ARMA_Layer.py``). An ARMA layer computes ``A * Y = W * X``
(eq. 2) as a convolution ``T = W * X`` (eq. 7a, :mod:`lmref.conv`) followed by the
*autoregressive layer* ``A_t * Y_t = T_t`` per channel (eq. 7b), solved by FFT (eq. 10).

Conventions (those of the official code, so that its users can cross-check directly):

=====================  ======================================================================
AR kernel ``a``        ``(C, kh, kw)`` (1-D: ``(C, k)``), odd sizes, origin (tap ``a_0``) at
                       the centre index ``(kh // 2, kw // 2)``; index ``i`` is offset
                       ``i - kh // 2``.
AR system              ``(a * y)[n] = sum_d a[d] y[n - d] = t[n]``: a circular *convolution*
                       (not a correlation) on the image grid, per channel (eq. 7b); the
                       official code's ``roll(pad(A), (-1, -1))`` + ``rfft`` division.
DFT                    ``X[k] = sum_n x[n] exp(-2 pi i k n / N)`` (eq. 8 with the usual sign);
                       transforms over the last 1 or 2 axes: on 7-smooth grids
                       (sides ``2^a 3^b 5^c 7^d``) lmref's own, else ``scipy.fft``'s
                       (rounding: :func:`ar_solve`).
separable kernel       ``a = F (x) G`` with ``F = f^1 * ... * f^Q`` along H (rows, axis -2) and
                       ``G = g^1 * ... * g^Q`` along W (axis -1) (Def. 8); each length-3
                       factor ``[f_-1, f_0, f_1]`` (index 0 = offset -1), centre 1 in the code.
re-parameterisation    ``[a_-1, a0, a_1]`` from ``(alpha, beta)``: three forms, see
                       :func:`reparameterize`; ``form="official"`` = ``tanh`` on both stored
                       parameters then the 45-degree rotation, as the code does.
ERF offsets            ``p = i_out - i_in`` (Def. 2: input pixel ``i' - p``), maps with the
                       origin ``p = 0`` at index ``shape // 2``.
dtype, NaN             results are float64 whatever real dtype comes in; NaN/Inf inputs raise
                       ``ValueError``; inputs are never modified and outputs never alias them.
=====================  ======================================================================

Where the paper is wrong or ambiguous, and what lmref does (details in the functions):

* Eqs. 16-17 (and the official code) do **not** satisfy Theorem 9's condition (15): they give
  ``a_-1 + a_1 = sqrt(2) a0 tanh(alpha)``, which reaches ``sqrt(2) a0``. Counter-example:
  ``alpha = asinh(1) = 0.8814, beta = 0`` gives the factor ``[0.5, 1, 0.5]`` whose DFT
  ``1 + cos(w)`` vanishes at ``w = pi`` (no unique solution on any even-sized grid), and
  ``alpha = 1, beta = 0`` gives ``[0.5385, 1, 0.5385]``, zero of the DTFT at ``w = 2.761``
  (not BIBO stable). :func:`reparameterize` keeps them as ``form="paper"``/``"official"`` and
  defaults to ``form="safe"`` (``a_-1 + a_1 = a0 tanh(alpha)``, strictly inside the band).
* Theorem 9 calls (15) *necessary*; it is *sufficient* (one zero of the factor inside the unit
  circle, one outside), not necessary: ``[1, 1, 0.5]`` violates (15) yet both zeros
  ``(-1 +- i) / 2`` lie inside the unit circle, so its inverse is causal and BIBO stable.
  :func:`ar_stability_1d` gives the exact root-based answer (Lemmas 18-19).
* Eq. 3 as printed normalises ``g`` by its sum over *output positions* ``i'``, which makes
  ``ERF(p)`` the constant ``1 / (I'_1 I'_2)``; lmref normalises each gradient map over the
  offsets ``p`` (a distribution per output pixel and channel pair), then averages (Def. 2).
* Eq. 4 subtracts ``(sum |p| ERF)^2``: the spread of the *radial distance*, not the standard
  deviation the text (and eqs. 5-6 via eq. A.1) use. For the centred kernel ``[1, 1, 1] / 3``
  eq. 4 gives ``r^2 = 2/9`` while eq. 5 (and the variance) give ``2/3``.
  :func:`erf_radius` defaults to the standard deviation (``form="std"``) and keeps eq. 4 as
  ``form="paper"``; both agree on causal 1-D networks (``p >= 0``), where eqs. 5-6 hold exactly.
* The official code's hand-written backward of its kernel construction
  (``parameterized_weights_backward``) drops the gradient through the centre row and column
  of each 3x3 factor kernel (``A = A_x (x) A_y`` with centre taps 1): its ``alpha`` gradients
  equal autograd's (and lmref's :func:`reparameterize_backward` composed with
  :func:`separable_ar_kernel_backward`) only where ``dL/dA`` vanishes on that cross. Its
  ``F.pad`` also swaps the two padding amounts, so it runs on square images only; lmref
  handles any ``H x W``.
* The appendix's intermediate moments A.34 and A.39 are wrong (the geometric mean is
  ``c / (1 - c)``, not ``1 / (1 - c)``); the final eq. A.41 = eq. 6 is right (tested).
"""
from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import numpy as np
import scipy.fft as _fft

from lmref._fftkernels import (axis_plan, dif_axis, digit_reversal, dit_axis, own_fft_length,
                               transpose_into)
from lmref._numba import jit, pjit, prange
from lmref._validation import (as_float64, as_int, as_real, as_tuple, check_alloc,
                               check_finite, check_shape, check_work, one_of)
from lmref.registry import Op

__all__ = [
    "ar_solve", "ar_solve_backward", "ar_solve_dense",
    "arma2d", "arma2d_backward",
    "separable_ar_kernel", "separable_ar_kernel_backward",
    "reparameterize", "reparameterize_backward", "official_ar_factors",
    "is_stable", "ar_zeros", "ar_stability_1d", "is_stable_1d", "ARStability",
    "erf", "erf_radius", "erf_radius_cnn", "erf_radius_arma", "erf_trend_table",
    "RCOND", "FORMS", "BOUNDARIES",
]

#: default relative threshold of the invertibility check: a kernel is refused when
#: ``min |DFT(a)| <= RCOND * max |DFT(a)|`` on the image grid (condition number >= 1e12)
RCOND = 1e-12
#: forms of :func:`reparameterize`
FORMS = ("safe", "paper", "official")
#: boundaries of :func:`ar_solve_dense`
BOUNDARIES = ("circular", "zeros")
#: default ``workers`` of the scipy.fft transforms
_WORKERS = 2
#: lmref's own FFT solve runs its pairs on several threads from this many reals on (results
#: do not depend on it): below it a transform takes well under 0.1 ms, and handing half of it
#: to a second thread costs more than it saves (3x slower for a (1, 4, 16, 16) solve)
_PARALLEL_FFT_MIN = 2 ** 15
#: tasks of lmref's parallel FFT solve: blocks of pairs, each with its own scratch blocks
_PAIR_BLOCKS = 64
#: columns lmref's FFT solve puts side by side in one transform on small grids
#: (:func:`_pairs_per_group`): a 7-point transform of 7 columns is mostly fixed cost. 2 cores,
#: Zen 5, 2026-12-08, ar_solve (8, 512, 7, 7) / (8, 256, 14, 14) / (8, 128, 28, 28) in ms:
#: 2.7 / 3.1 / 3.7 a pair at a time, 1.3 / 2.0 / 3.1 with 128 columns, 1.2 / 1.9 / 2.9 with
#: 256, the same with 512 or 1024
_GROUP_COLUMNS = 256
#: scipy's transforms get ``workers`` threads only from this many reals on: its threads gain
#: little below (2 cores, Zen 5, 2026-12-07: a (4, 16, 28, 28) solve 0.94 ms on one thread,
#: 1.19 ms on two; (4, 16, 56, 56) 3.7 against 4.2 ms; (8, 16, 56, 56) 7.0 against 6.4 ms)
_PARALLEL_SCIPY_FFT_MIN = 2 ** 18
#: largest grid (pixels) of lmref's own FFT solve: its blocks (two per image pair, split real
#: and imaginary) stay cache-resident up to 256 x 256 (1.3-2x scipy's speed); at 512 x 512 and
#: beyond scipy's is faster (0.7x)
_OWN_FFT_MAX_PIXELS = 1 << 16
#: the spatial grad_a runs its channels on several threads from this many multiply-adds on
#: (~0.1 ms of work; below it waking the threads costs more, 3 ms a call on the loaded machine)
_PARALLEL_MIN_MACS = 1 << 18
#: up to this many kernel taps ``grad_a`` is a direct circular correlation (numba); above it,
#: one more FFT of ``y`` is cheaper
_SPATIAL_TAPS_MAX = 25

_SQRT_HALF = math.sqrt(0.5)


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def _as_signal(x, name, finite=True):
    """``x`` as float64 ``(N, C, H, W)`` (a 1-D ``(N, C, L)`` becomes ``(N, C, 1, L)``).

    ``finite=False`` leaves the NaN/Inf check to the caller (:func:`_finite_through`).
    Returns ``(x4, spatial_ndim)``.
    """
    arr = as_float64(x, name, ndim=(3, 4))
    if finite:
        _finite_fast(arr, name)
    nd = arr.ndim - 2
    return (arr[:, :, None, :] if nd == 1 else arr), nd


def _as_kernel(a, name, spatial_ndim, channels, spatial_shape):
    """Validate an AR kernel against a signal: float64 ``(C, kh, kw)`` (1-D: ``(C, 1, k)``)."""
    arr = as_float64(a, name, ndim=spatial_ndim + 1)
    check_finite(arr, name)
    ks = arr.shape[1:]
    if any(k % 2 == 0 for k in ks):
        raise ValueError(f"{name} must have odd kernel sizes (origin at the centre tap), got "
                         f"shape {arr.shape}")
    if arr.shape[0] != channels:
        raise ValueError(f"{name} must have one kernel per channel: shape ({channels}, ...) "
                         f"for {channels} channels, got {arr.shape}")
    image = tuple(spatial_shape)[-spatial_ndim:]
    if any(k > s for k, s in zip(ks, image)):
        raise ValueError(f"{name}: kernel size {ks} is larger than the image {image}; the "
                         f"circular system needs k <= size per axis")
    return arr[:, None, :] if spatial_ndim == 1 else arr


def _finite_fast(x, name):
    """check_finite at the cost of one sum: a finite sum proves every entry finite."""
    if not math.isfinite(float(np.add.reduce(x, axis=None))):
        check_finite(x, name)


def _finite_through(result, x, name):
    """check_finite of ``x`` through ``result``, computed from it by sums that read every entry
    of ``x`` (the DC bins of its DFT, or a circular correlation with it): IEEE arithmetic
    (no fastmath) carries a NaN or Inf into every sum that reads it, so a finite ``result``
    proves ``x`` finite without another pass over ``x``. Otherwise ``x`` itself is checked (a
    finite ``x`` whose result overflowed passes, as with :func:`_finite_fast`).
    """
    if not np.isfinite(result).all():
        check_finite(x, name)


def _dc_bins(spec):
    """``DFT(x)[..., 0, 0]`` of an ``(N, C, H, W // 2 + 1)`` spectrum: the sum of each image."""
    return spec[:, :, 0, 0]


# ----------------------------------------------------------------------------------------------
# kernel spectrum and the circular solve (eqs. 8-10)
# ----------------------------------------------------------------------------------------------

def _embed_kernel(a3, spatial):
    """Zero-pad ``(C, kh, kw)`` to ``(C, H, W)`` with the centre tap at index (0, 0) (circular)."""
    rows, cols = _tap_positions(a3.shape, spatial)
    out = np.zeros((a3.shape[0],) + tuple(spatial))
    out[:, rows[:, None], cols[None, :]] = a3
    return out


def _fft_workers(workers, size):
    """Threads of a scipy transform of ``size`` reals: ``workers``, or 1 below
    _PARALLEL_SCIPY_FFT_MIN."""
    return workers if size >= _PARALLEL_SCIPY_FFT_MIN else 1


def _tap_positions(kshape, spatial):
    """Grid rows and columns of the kernel's taps: offset ``i - k // 2`` modulo the size
    (distinct, as ``k <= size``); read-only arrays, shared."""
    return _taps_on_grid(kshape[1], spatial[0]), _taps_on_grid(kshape[2], spatial[1])


@functools.lru_cache(maxsize=64)
def _taps_on_grid(k, size):
    taps = (np.arange(k) - k // 2) % size
    taps.flags.writeable = False
    return taps


@functools.lru_cache(maxsize=64)
def _zero_row_spectrum(w):
    """``rfft(zeros(w))``: zeros with the signs of zero the transform gives them (read-only)."""
    spec = _fft.rfft(np.zeros(w))
    spec.flags.writeable = False
    return spec


def _kernel_spectrum(a3, spatial, rcond, workers, name="a"):
    """rfft2 of the embedded kernel ``(C, H, W // 2 + 1)``; raises when it is (numerically) zero.

    The half spectrum suffices: a real kernel's DFT is Hermitian, so every magnitude appears.
    Bitwise ``rfft2(_embed_kernel(a3, spatial))``, at a fraction of its cost: rfft2 is an rfft
    along W then an fft along H (scipy computes it so), and the rows without taps all share
    the rfft of a zero row (zeros, but with the signs of zero the transform gives them).
    """
    rows, cols = _tap_positions(a3.shape, spatial)
    workers = _fft_workers(workers, a3.shape[0] * spatial[0] * spatial[1])
    tap_rows = np.zeros(a3.shape[:2] + (spatial[1],))
    tap_rows[:, :, cols] = a3
    spec = np.empty((a3.shape[0], spatial[0], spatial[1] // 2 + 1), complex)
    spec[...] = _zero_row_spectrum(spatial[1])
    spec[:, rows] = _fft.rfft(tap_rows, axis=-1, workers=workers)
    spec = _fft.fft(spec, axis=-2, workers=workers, overwrite_x=True)
    mag = np.abs(spec).reshape(spec.shape[0], -1)
    lo, hi = mag.min(axis=1), mag.max(axis=1)
    bad = np.nonzero(lo <= rcond * hi)[0]
    if bad.size:
        c = int(bad[0])
        raise ValueError(
            f"{name}: the AR kernel of channel {c} is not invertible on the "
            f"{spatial[0]}x{spatial[1]} circular grid: min |DFT({name})| = {lo[c]:.3g} <= "
            f"rcond * max |DFT({name})| = {rcond:g} * {hi[c]:.3g}; A * Y = T has no unique "
            f"solution ({bad.size} channel(s) affected)")
    return spec


@functools.cache
def _cpu_count():
    """``os.cpu_count()`` once: it reads the system's CPU list, ~0.1 ms per call here."""
    return os.cpu_count() or 1


def _options(workers, rcond):
    # results do not depend on it; more threads than CPUs only cost (and scipy's own int
    # conversion would fail with an unnamed TypeError beyond a C long)
    workers = min(as_int(workers, "workers", minimum=1), _cpu_count())
    rcond = as_real(rcond, "rcond")
    if not 0.0 <= rcond < 1.0:
        raise ValueError(f"rcond must be in [0, 1), got {rcond}")
    return workers, rcond


def _irfft2(spec, spatial, workers):
    """``scipy.fft.irfft2(spec, s=spatial)`` bitwise, overwriting ``spec``, ~20% faster.

    scipy's irfft2 is an unscaled ifft along H into a fresh copy, then the c2r along W with
    the factor ``1 / (H W)`` applied last; here the ifft runs in place and the factor is
    applied by the same single multiplication (tested bitwise on odd, prime and
    power-of-two grids).
    """
    workers = _fft_workers(workers, spec.size * 2)
    spec = _fft.ifft(spec, axis=-2, norm="forward", workers=workers, overwrite_x=True)
    out = _fft.irfft(spec, n=spatial[1], axis=-1, norm="forward", workers=workers,
                     overwrite_x=True)
    out *= 1.0 / (spatial[0] * spatial[1])
    return out


def _solve_spectrum(t4, inv_spec, workers, finite_name=None):
    """``irfft2(rfft2(t) / A)`` (eq. 10) with the reciprocal spectrum ``1 / A``; with
    ``finite_name``, ``t4`` is checked for NaN/Inf through its spectrum. Power-of-two grids
    take lmref's transforms (:func:`_fft_solve`), others scipy's."""
    if _own_fft_grid(t4.shape[2:]):
        return _fft_solve(t4, inv_spec, workers, finite_name=finite_name)
    spec = _fft.rfft2(t4, workers=_fft_workers(workers, t4.size))
    if finite_name is not None:
        _finite_through(_dc_bins(spec), t4, finite_name)
    spec *= inv_spec
    return _irfft2(spec, t4.shape[2:], workers)


def _adjoint_solve(g4, inv_spec, workers, keep_spectrum=False, finite_name=None):
    """``grad_t`` of eq. 11b / B.1a: ``a^T * grad_t = grad_y``, i.e. ``G / conj(A)`` (eq. 12b).

    The adjoint of a circular convolution is the circular correlation, whose DFT is the
    conjugate of the kernel's. With ``keep_spectrum`` also returns ``DFT(grad_t)``; with
    ``finite_name``, ``g4`` is checked for NaN/Inf through its spectrum. On 7-smooth grids
    ``grad_t`` comes from :func:`_fft_solve` (the spectrum, if asked, from scipy's rfft2).
    """
    if _own_fft_grid(g4.shape[2:]):
        grad_t = _fft_solve(g4, inv_spec, workers, adjoint=True, finite_name=finite_name)
        return (grad_t, _adjoint_spectrum(g4, inv_spec, workers)) if keep_spectrum else grad_t
    spec = _adjoint_spectrum(g4, inv_spec, workers, finite_name)
    grad_t = _irfft2(spec.copy() if keep_spectrum else spec, g4.shape[2:], workers)
    return (grad_t, spec) if keep_spectrum else grad_t


def _adjoint_spectrum(g4, inv_spec, workers, finite_name=None):
    """``DFT(grad_t) = rfft2(g4) * conj(1 / A)``; with ``finite_name``, ``g4`` is checked for
    NaN/Inf through its spectrum."""
    spec = _fft.rfft2(g4, workers=_fft_workers(workers, g4.size))
    if finite_name is not None:
        _finite_through(_dc_bins(spec), g4, finite_name)
    spec *= inv_spec.conj()
    return spec


# ----------------------------------------------------------------------------------------------
# 7-smooth grids: lmref's own FFT solve
# ----------------------------------------------------------------------------------------------
# scipy's pocketfft (built for the baseline x86-64 SIMD) spends ~2x MKL's time on the batched
# 64 x 64 transforms of an ARMA layer, ~4x on 56 x 56. On grids whose sides have no prime
# factor above 7 (powers of two, 14, 28, 56, 60, 112, 224, ...) the solve runs here instead: two
# real images of one channel (batch entries 2k and 2k + 1) form one complex image
# ``z = t[2k] + i t[2k + 1]``; as the circular solve maps real images to real images and is
# complex-linear, ``ifft2(fft2(z) / A) = y[2k] + i y[2k + 1]`` (full spectrum of ``1 / A``). Each
# 1-D transform (``lmref._fftkernels``: radix 2 on powers of two, mixed radix else) runs
# along the rows' axis of a split (real, imaginary) ``(n, m)`` block; the second axis is
# transposed in between. Forward transforms leave the spectrum in digit-reversed order and the
# inverse ones take it so, and ``1 / A`` is stored in the digit-reversed, transposed order of
# the spectrum, so no permutation pass is needed.

def _own_fft_grid(spatial):
    """Whether lmref's FFT solves this grid: both sides 7-smooth (1 included: the 1-D
    solves), at most _OWN_FFT_MAX_PIXELS pixels."""
    return (all(own_fft_length(s) for s in spatial)
            and spatial[0] * spatial[1] <= _OWN_FFT_MAX_PIXELS)


def _pair_layout_spectrum(inv_spec, spatial, adjoint):
    """``1 / A`` (or its conjugate, ``adjoint``) as split ``(C, W, H)`` arrays: the full spectrum
    from the half one by Hermitian symmetry, in the transposed, digit-reversed order of
    :func:`_fft_group`'s spectrum (``[c, i, j]`` = bin ``(rev_H(j), rev_W(i))``)."""
    h, w = spatial
    shape = (inv_spec.shape[0], w, h)
    invr, invi = np.empty(shape), np.empty(shape)
    _gather_spectrum(np.ascontiguousarray(inv_spec), digit_reversal(h), digit_reversal(w),
                     -1.0 if adjoint else 1.0, invr, invi)
    return invr, invi


@jit
def _gather_spectrum(half, rev_h, rev_w, sign, invr, invi):
    """Body of :func:`_pair_layout_spectrum`: bin ``(kh, kw)`` with ``kw > W / 2`` is
    ``conj(half[-kh, W - kw])``; ``sign`` -1 conjugates every bin."""
    h, w = rev_h.size, rev_w.size
    for c in range(half.shape[0]):
        for i in range(w):
            kw = rev_w[i]
            for j in range(h):
                kh = rev_h[j]
                if kw <= w // 2:
                    v = half[c, kh, kw]
                    invr[c, i, j], invi[c, i, j] = v.real, sign * v.imag
                else:
                    v = half[c, (h - kh) % h, w - kw]
                    invr[c, i, j], invi[c, i, j] = v.real, -sign * v.imag



@jit
def _sum_squares(x, shift):
    """``sum (x * shift)**2`` of a flat array, in eight interleaved partial sums (it only picks
    a power of two: any order will do, and this one vectorises)."""
    n = x.size
    acc = np.zeros(8)
    for i in range(0, n - 7, 8):
        for lane in range(8):
            y = x[i + lane] * shift
            acc[lane] += y * y
    total = 0.0
    for lane in range(8):
        total += acc[lane]
    for i in range(n - n % 8, n):
        y = x[i] * shift
        total += y * y
    return total


@jit
def _norm_exponent(image):
    """``e`` with ``||image||_F`` about ``2**e`` (``2**(e - 1) <= norm < 2**e`` up to rounding;
    0 for a zero or non-finite image), clamped to +-1000 so that ``2**-e`` is a normal float.
    Where the squares overflow or underflow, the norm is taken of the image scaled by the power
    of two of its largest magnitude."""
    x = image.ravel()
    sumsq = _sum_squares(x, 1.0)
    if 2.0 ** -960 < sumsq < math.inf:
        e = math.frexp(math.sqrt(sumsq))[1]
    else:
        top = 0.0
        for v in x:
            top = max(top, abs(v))
        if top == 0.0 or not math.isfinite(top):
            return 0
        shift = math.ldexp(1.0, -math.frexp(top)[1])
        e = math.frexp(top)[1] + math.frexp(math.sqrt(_sum_squares(x, shift)))[1]
    return min(max(e, -1000), 1000)


@jit
def _block_width(m):
    """Columns of a transform block of ``m`` columns: above 8, ``m`` rounded up to whole
    vectors of 8 doubles (28 -> 32: 4 zero pad columns cost less than each butterfly's
    remainder loop; what the butterflies compute there stays zero and is never read), and 8
    more where that is a multiple of 32 (a row stride of a multiple of 256 bytes puts the rows
    of a tall block in a few cache sets: four 64x64 pairs side by side, 256 columns, took
    6.8 ms for an (8, 32, 64, 64) solve, 3.2 ms with 264; 2026-12-08)."""
    b = m if m <= 8 else (m + 7) // 8 * 8
    return b + 8 if b % 32 == 0 else b


@jit
def _fft_group(t, out, p, g, invr, invi, sth, thr, thi, stw, twr, twi, dc, re, im, re_t, im_t):
    """Pairs ``p .. p + g - 1`` of :func:`_fft_solve`, side by side in one set of scratch
    blocks (pair ``q`` in columns ``q W .. q W + W - 1`` of ``re``, ``im`` and ``q H .. q H + H
    - 1`` of ``re_t``, ``im_t``), so that each 1-D transform runs over all their columns at once
    (a 7-point transform of 7 columns is mostly fixed cost). Pair ``p`` = (batch pair
    ``p // C``, channel ``p % C``): the complex image of entries ``2k``, ``2k + 1`` (zeros for a
    missing last one), each scaled by the power of two that brings its norm to about
    ``[1/2, 1)`` (exact; so each entry's error scales with its own norm, not its partner's), its
    2-D DFT (``dc[p]`` = the DC bin), times ``1 / A``, the inverse DFT scaled by ``1 / (H W)``
    and each entry's scale undone. The butterflies work column by column, the same operations
    on every column, so a pair's bits do not depend on its neighbours or on ``g``."""
    nb, nc, h, w = t.shape
    exps = np.empty((g, 2), np.int64)
    for q in range(g):
        k, c = (p + q) // nc, (p + q) % nc
        n0, n1 = 2 * k, 2 * k + 1
        exps[q, 0] = _norm_exponent(t[n0, c])
        exps[q, 1] = _norm_exponent(t[n1, c]) if n1 < nb else 0
        s0, s1 = math.ldexp(1.0, -exps[q, 0]), math.ldexp(1.0, -exps[q, 1])
        for i in range(h):
            for j in range(w):
                re[i, q * w + j] = t[n0, c, i, j] * s0
                im[i, q * w + j] = t[n1, c, i, j] * s1 if n1 < nb else 0.0
    re[:, g * w:] = 0.0  # a last, short group: columns a longer one left are cleared
    im[:, g * w:] = 0.0
    dif_axis(re, im, sth, thr, thi)
    _transpose_planes(re, re_t, g, h, w)
    _transpose_planes(im, im_t, g, h, w)
    re_t[:, g * h:] = 0.0
    im_t[:, g * h:] = 0.0
    dif_axis(re_t, im_t, stw, twr, twi)
    for q in range(g):
        c = (p + q) % nc
        dc[p + q, 0], dc[p + q, 1] = re_t[0, q * h], im_t[0, q * h]
        for i in range(w):
            for j in range(h):
                xr, xi = re_t[i, q * h + j], im_t[i, q * h + j]
                vr, vi = invr[c, i, j], invi[c, i, j]
                re_t[i, q * h + j] = xr * vr - xi * vi
                im_t[i, q * h + j] = xr * vi + xi * vr
    dit_axis(re_t, im_t, stw, twr, twi)
    _transpose_planes(re_t, re, g, w, h)
    _transpose_planes(im_t, im, g, w, h)
    dit_axis(re, im, sth, thr, thi)
    scale = 1.0 / (h * w)
    for q in range(g):
        k = (p + q) // nc
        c = (p + q) % nc
        n0, n1 = 2 * k, 2 * k + 1
        u0, u1 = math.ldexp(1.0, exps[q, 0]), math.ldexp(1.0, exps[q, 1])
        for i in range(h):
            for j in range(w):
                out[n0, c, i, j] = re[i, q * w + j] * scale * u0
                if n1 < nb:
                    out[n1, c, i, j] = im[i, q * w + j] * scale * u1


@jit
def _transpose_planes(src, dst, g, n, m):
    """``dst[j, q n + i] = src[i, q m + j]``: each of ``g`` side-by-side ``(n, m)`` planes of
    ``src`` transposed into its ``(m, n)`` place in ``dst``."""
    for q in range(g):
        transpose_into(src[:n, q * m:(q + 1) * m], dst[:m, q * n:(q + 1) * n])


def _pairs_per_group(h, w):
    """Pairs :func:`_fft_group` puts side by side: up to _GROUP_COLUMNS columns on the longer
    side (a 7x7 grid: 36 pairs, 56x56: 4), one pair from 129 pixels a side on."""
    return max(1, _GROUP_COLUMNS // max(h, w))


@jit
def _fft_pairs(t, out, p0, p1, group, invr, invi, sth, thr, thi, stw, twr, twi, dc):
    """Pairs ``p0 <= p < p1`` in as few groups of at most ``group`` pairs as will do, of
    equal size but for a last, shorter one (the transforms run over a group's full width), with
    one set of scratch blocks (four allocations a block of pairs, not a pair). Their pad
    columns start at zero and stay so: the butterflies are column by column, and zeros map to
    zeros."""
    h, w = t.shape[2], t.shape[3]
    n = p1 - p0
    size = -(-n // max(1, -(-n // group)))  # n pairs in ceil(n / group) groups
    re, im = np.zeros((h, _block_width(size * w))), np.zeros((h, _block_width(size * w)))
    re_t = np.zeros((w, _block_width(size * h)))
    im_t = np.zeros((w, _block_width(size * h)))
    for p in range(p0, p1, size):
        _fft_group(t, out, p, min(size, p1 - p), invr, invi, sth, thr, thi, stw, twr, twi,
                   dc, re, im, re_t, im_t)


@jit
def _fft_serial(t, out, group, invr, invi, sth, thr, thi, stw, twr, twi, dc):
    _fft_pairs(t, out, 0, dc.shape[0], group, invr, invi, sth, thr, thi, stw, twr, twi, dc)


@pjit
def _fft_parallel(t, out, group, invr, invi, sth, thr, thi, stw, twr, twi, dc):
    n = dc.shape[0]
    blocks = min(-(-n // group), _PAIR_BLOCKS)  # whole groups: not a pair a block
    for b in prange(blocks):  # pairs are independent: any split gives the same bits
        _fft_pairs(t, out, n * b // blocks, n * (b + 1) // blocks, group, invr, invi, sth, thr,
                   thi, stw, twr, twi, dc)


def _fft_solve(t4, inv_spec, workers, adjoint=False, finite_name=None):
    """:func:`_solve_spectrum` (``adjoint``: with ``conj(1 / A)``, as :func:`_adjoint_solve`) on a
    7-smooth grid by lmref's FFT; see the section's notes and :func:`ar_solve` for its
    rounding. Pairs run on several threads from _PARALLEL_FFT_MIN reals on, in groups on small
    grids (the same per-pair operations either way, so the same bits)."""
    nb, nc, h, w = t4.shape
    group = _pairs_per_group(h, w)
    t4 = np.ascontiguousarray(t4)
    invr, invi = _pair_layout_spectrum(inv_spec, (h, w), adjoint)
    out = np.empty(t4.shape)
    dc = np.empty(((nb + 1) // 2 * nc, 2))
    parallel = workers > 1 and t4.size >= _PARALLEL_FFT_MIN
    (_fft_parallel if parallel else _fft_serial)(t4, out, group, invr, invi, *axis_plan(h),
                                                *axis_plan(w), dc)
    if finite_name is not None:
        _finite_through(dc, t4, finite_name)
    return out


def _restore(x4, nd):
    return x4[:, :, 0, :] if nd == 1 else x4


def ar_solve(t, a, *, workers=_WORKERS, rcond=RCOND):
    """Solve the autoregressive layer ``A_c * Y_c = T_c`` per channel by FFT (eqs. 7b, 10).

    ``(a * y)[n] = sum_d a[d] y[n - d] = t[n]`` with circular boundary on the image grid: a
    *convolution* with the kernel's origin at its centre tap (the official ARMA code's
    convention), solved as ``Y = irfft2(rfft2(T) / rfft2(a_embedded))``.

    Parameters
    ----------
    t : array_like, ``(N, C, H, W)`` or 1-D ``(N, C, L)``
        Right-hand side (the moving-average output of eq. 7a).
    a : array_like, ``(C, kh, kw)`` or 1-D ``(C, k)``
        AR kernels, odd sizes, no larger than the image, origin at the centre.
    workers : int
        Threads of scipy's transforms; above 1, lmref's own FFT path (see Notes) runs on
        numba's threads. Results do not depend on it.
    rcond : float
        The kernel is refused (``ValueError``) when ``min |DFT(a)| <= rcond * max |DFT(a)|`` on
        the grid (condition number of the system ``>= 1 / rcond``; default 1e-12).

    Returns
    -------
    ndarray, float64, shape of ``t``

    Raises
    ------
    ValueError
        even kernel sizes, kernel larger than the image, channel mismatch, NaN/Inf, or a
        non-invertible kernel.

    Notes
    -----
    Transforms. Where a side of the grid has a prime factor above 7 (11, 13, 17, ...), or
    beyond 65536 pixels, ``scipy.fft``'s: the result is bit for bit
    ``irfft2(rfft2(t) * (1 / A))`` (tested). On 7-smooth grids (``H`` and ``W`` of the form
    ``2^a 3^b 5^c 7^d``: powers of two, 14, 28, 56, 60, 112, 224, ...; ``1`` counts, so the
    1-D solves too) up to 65536 pixels, lmref's own FFT (radix 2 on powers of two, mixed radix
    2/3/4/5/7 else, ``lmref._fftkernels``), whose rounding differs: with ``Y*`` the exact
    solve with the same computed ``1 / A``, ``u = 2**-53`` and ``E = E(H) + E(W)`` the
    transforms' error constants, per batch entry ``n`` and channel ``c``
    ``||Y[n,c] - Y*[n,c]||_F <= 3 (2 E + 3) u max_k |1 / A_c[k]| ||T[n,c]||_F`` to first
    order, barring underflow and overflow. ``E(n)`` sums a constant per stage of the
    length-``n`` transform (Higham, *Accuracy and Stability of Numerical Algorithms*,
    Thm. 24.2, with twiddles accurate to ``1.5 u`` per component: ``10`` per radix-2 or
    radix-4 stage, so ``E = 10 log2(H W)`` on power-of-two grids; ``21``, ``30``, ``40`` per
    radix-3, 5, 7 stage; derivation in ``lmref._fftkernels``), for the forward and the
    inverse 2-D transforms, plus ``3 u`` for the product by ``1 / A`` (the result and scipy's
    are tested to lie within this of each other; on 56 x 56, ``E = 120``: about
    ``8e-14 max|1 / A| ||T||``). Batch entries ``2k`` and ``2k + 1`` share one complex
    transform (``t[2k] / s + i t[2k + 1] / s'``, each scaled by the power of two ``s`` that
    brings its norm into ``[1/2, 1)``: exact, and the reason an entry's bound is its own
    norm's, the factor 3 covering its partner's share): an entry's last bits depend on its
    partner, so solving a slice of the batch may round differently (within the bound).

    Examples
    --------
    >>> import numpy as np
    >>> from lmref.arma import ar_solve
    >>> t = np.array([[[1.0, 0.0, 0.0, 0.0]]])  # (N, C, L)
    >>> a = np.array([[0.0, 1.0, 0.5]])  # y[n] + 0.5 y[n - 1] = t[n], circular
    >>> y = ar_solve(t, a)
    >>> np.round(15 * y, 12)
    array([[[16., -8.,  4., -2.]]])
    >>> bool(np.allclose(y + 0.5 * np.roll(y, 1, axis=-1), t))
    True
    """
    workers, rcond = _options(workers, rcond)
    t4, nd = _as_signal(t, "t", finite=False)
    a3 = _as_kernel(a, "a", nd, t4.shape[1], t4.shape[2:])
    inv = 1.0 / _kernel_spectrum(a3, t4.shape[2:], rcond, workers)
    return _restore(_solve_spectrum(t4, inv, workers, finite_name="t"), nd)


def ar_solve_backward(grad_y, y, a, *, workers=_WORKERS, rcond=RCOND):
    """Gradients of :func:`ar_solve` from its *output* ``y`` (Theorem 6, eqs. 11-12, B.1a-b).

    ``grad_t`` solves ``a^T * grad_t = grad_y`` (eq. 11b; ``a^T`` the reversed kernel, so in
    frequency ``G / conj(A)``, eq. 12b) and ``a^T * grad_a = -y^T * grad_y`` (eq. 11a), i.e.
    ``grad_a[d] = -sum_{n, i} grad_t[n, i] y[n, i - d]`` (circular), restricted to the kernel's
    taps and summed over the batch. The transforms of ``grad_t``, and their rounding, are
    those of :func:`ar_solve` (with ``conj(1 / A)``).

    Parameters
    ----------
    grad_y : array_like, shape of ``y``
    y : array_like, ``(N, C, H, W)`` or ``(N, C, L)``: the output of ``ar_solve(t, a)``.
    a : array_like, ``(C, kh, kw)`` or ``(C, k)``
    workers, rcond : as in :func:`ar_solve`.

    Returns
    -------
    (grad_t, grad_a) : float64 arrays shaped like ``y`` and ``a``.
    """
    workers, rcond = _options(workers, rcond)
    y4, nd = _as_signal(y, "y", finite=False)
    g4, _ = _as_signal(grad_y, "grad_y", finite=False)
    check_shape(g4, "grad_y", y4.shape, "the shape of y")
    a3 = _as_kernel(a, "a", nd, y4.shape[1], y4.shape[2:])
    inv = 1.0 / _kernel_spectrum(a3, y4.shape[2:], rcond, workers)
    spatial = a3.shape[1] * a3.shape[2] <= _SPATIAL_TAPS_MAX
    out = _adjoint_solve(g4, inv, workers, keep_spectrum=not spatial, finite_name="grad_y")
    if spatial:
        grad_t = out
        # every tap's correlation reads every entry of y: it carries y's NaN/Inf
        grad_a = _ar_grad_a(grad_t, np.ascontiguousarray(y4), a3.shape[1], a3.shape[2])
        _finite_through(grad_a, y4, "y")
    else:
        grad_t, gt_spec = out
        y_spec = _fft.rfft2(y4, workers=_fft_workers(workers, y4.size))
        _finite_through(_dc_bins(y_spec), y4, "y")
        grad_a = _grad_a_from_spectra(gt_spec, y_spec, a3.shape, y4.shape[2:], workers)
    return _restore(grad_t, nd), grad_a.reshape(np.shape(a))


def _grad_a_from_spectra(gt_spec, y_spec, kshape, spatial, workers):
    """``grad_a[d] = -sum_n irfft2(GT * conj(Y))[d]`` at the kernel's offsets ``d`` (eq. 12a)."""
    corr = _irfft2(np.einsum("nchw,nchw->chw", gt_spec, y_spec.conj()), spatial, workers)
    rows, cols = _tap_positions(kshape, spatial)
    return -corr[:, rows[:, None], cols[None, :]]


def _ar_grad_a(gt, y, kh, kw):
    """``out[c, p, q] = -sum_{n,i,j} gt[n,c,i,j] y[n,c,(i-dh)%H,(j-dw)%W]`` (dh = p - kh//2).

    One independent channel per thread, on one thread below _PARALLEL_MIN_MACS (the same
    per-channel code, so the same bits either way).
    """
    out = np.empty((gt.shape[1], kh, kw))
    parallel = gt.size * kh * kw >= _PARALLEL_MIN_MACS
    (_ar_grad_a_parallel if parallel else _ar_grad_a_serial)(gt, y, kh, kw, out)
    return out


@jit
def _ar_grad_a_channel(gt, y, kh, kw, c, out):
    """Channel ``c`` of :func:`_ar_grad_a`. Each tap accumulates into a vector over ``j`` (no
    reduction inside the inner loop, so nothing depends on the previous addition), summed in
    a fixed order at the end. Each row of ``y`` is kept twice in a row (``rings``), so every
    column shift is one contiguous run read from index 0: one loop without a wrap split or a
    negative-index test, which vectorises (the same products and sums: the same bits)."""
    nb, _, h, w = gt.shape
    acc = np.zeros((kh * kw, w))
    rings = np.empty((nb, h, 2 * w))
    for n in range(nb):
        for r in range(h):
            rings[n, r, :w] = y[n, c, r]
            rings[n, r, w:] = y[n, c, r]
    for n in range(nb):
        for i in range(h):
            g = gt[n, c, i]
            for p in range(kh):
                ring = rings[n, (i - (p - kh // 2) + h) % h]
                for q in range(kw):
                    sw = (q - kw // 2 + w) % w
                    v = ring[w - sw:2 * w - sw]  # v[j] = y[n, c, r, (j - sw) % w]
                    a = acc[p * kw + q]
                    for j in range(w):
                        a[j] += g[j] * v[j]
    for k in range(kh * kw):
        total = 0.0
        for j in range(w):
            total += acc[k, j]
        out[c, k // kw, k % kw] = -total


@jit
def _ar_grad_a_serial(gt, y, kh, kw, out):
    for c in range(gt.shape[1]):
        _ar_grad_a_channel(gt, y, kh, kw, c, out)


@pjit
def _ar_grad_a_parallel(gt, y, kh, kw, out):
    for c in prange(gt.shape[1]):
        _ar_grad_a_channel(gt, y, kh, kw, c, out)


# ----------------------------------------------------------------------------------------------
# the dense oracle
# ----------------------------------------------------------------------------------------------

def _ar_matrix(kernel, spatial, boundary):
    """Sparse ``(HW, HW)`` matrix of ``y -> a * y`` (row-major pixels) for one channel."""
    from scipy import sparse

    h, w = spatial
    kh, kw = kernel.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols, vals = [], [], []
    for p in range(kh):
        for q in range(kw):
            if kernel[p, q] == 0.0:
                continue
            si, sj = ii - (p - kh // 2), jj - (q - kw // 2)  # (a * y)[i] needs y[i - d]
            if boundary == "circular":
                keep = np.ones_like(si, dtype=bool)
                si, sj = si % h, sj % w
            else:
                keep = (si >= 0) & (si < h) & (sj >= 0) & (sj < w)
            rows.append((ii * w + jj)[keep])
            cols.append((si * w + sj)[keep])
            vals.append(np.full(int(keep.sum()), kernel[p, q]))
    n = h * w
    if not rows:
        return sparse.csc_array((n, n))
    # duplicates (a tap wrapping onto another on a tiny grid) are summed, as in the circulant
    return sparse.coo_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(n, n)).tocsc()


def _inverse_norm1_estimate(solve, n):
    """Lower estimate of ``||M^-1||_1`` from solves with ``M`` and ``M^T`` (Hager's method
    with Higham's safeguard, as LAPACK's ``dlacon``; deterministic, at most 11 solves).

    ``solve(v, trans)`` returns ``M^-1 v`` (``trans=False``) or ``M^-T v``. A singular or
    nearly singular ``M`` shows as a huge (or non-finite) estimate: LU factors of a singular
    matrix have a pivot of rounding size, and the solve through it blows up.
    """
    x = np.full(n, 1.0 / n)
    est = 0.0
    for it in range(5):
        y = solve(x, False)
        new = float(np.abs(y).sum())
        if not math.isfinite(new):
            return math.inf
        if it > 0 and new <= est:
            break
        est = new
        z = solve(np.where(y >= 0.0, 1.0, -1.0), True)
        j = int(np.argmax(np.abs(z)))
        if it > 0 and abs(z[j]) <= z @ x:
            break
        x = np.zeros(n)
        x[j] = 1.0
    # Higham's alternating vector catches the matrices that fool the iteration
    alt = np.where(np.arange(n) % 2 == 0, 1.0, -1.0) * (1.0 + np.arange(n) / max(n - 1, 1))
    extra = 2.0 * float(np.abs(solve(alt, False)).sum()) / (3.0 * n)
    return max(est, extra) if math.isfinite(extra) else math.inf


def ar_solve_dense(t, a, boundary="circular", *, rcond=RCOND):
    """Independent oracle of :func:`ar_solve`: build the sparse AR matrix, solve by sparse LU.

    ``boundary="circular"``: the same circular-convolution system as :func:`ar_solve` (up to
    rounding). ``boundary="zeros"``: the non-circular system where ``y`` is zero outside the
    image, ``sum_d a[d] y[n - d] [0 <= n - d < size] = t[n]`` -- a block-Toeplitz system the
    FFT cannot solve; offered as a documented alternative. Cost: one sparse LU per channel of
    an ``(H W) x (H W)`` matrix, for small images.

    Singular systems are refused, not "solved": besides an exactly singular factorisation,
    the matrix ``M`` of each channel is refused when its estimated reciprocal 1-norm
    condition number ``1 / (||M||_1 ||M^-1||_1) <= rcond`` (``||M^-1||_1`` from Hager's
    estimator on the LU factors, as LAPACK's ``gecon``: a lower bound, usually within a
    factor 3, so a system that passes is at worst a few times worse conditioned than
    ``1 / rcond``). For the circular system the FFT path's ``min |DFT| / max |DFT|`` is the
    2-norm reciprocal condition of the same (normal) matrix; the two agree within a factor
    ``H W``, exactly at 0 for a singular kernel.

    Parameters
    ----------
    t, a : as in :func:`ar_solve`.
    boundary : {"circular", "zeros"}
    rcond : float in ``[0, 1)``
        Default 1e-12, as :func:`ar_solve`.

    Returns
    -------
    ndarray, float64, shape of ``t``

    Raises
    ------
    ValueError
        bad input as in :func:`ar_solve`, or a singular (or numerically singular) system.
    """
    from scipy.sparse.linalg import splu

    boundary = one_of(boundary, "boundary", BOUNDARIES)
    _, rcond = _options(1, rcond)
    t4, nd = _as_signal(t, "t")
    a3 = _as_kernel(a, "a", nd, t4.shape[1], t4.shape[2:])
    nb, nc, h, w = t4.shape
    check_alloc((h * w, h * w), "ar_solve_dense's LU (dense worst case)")
    out = np.empty_like(t4)
    for c in range(nc):
        mat = _ar_matrix(a3[c], (h, w), boundary)
        what = f"a: the AR system of channel {c} with boundary={boundary!r} is singular"
        try:
            lu = splu(mat)
        except RuntimeError as exc:  # "Factor is exactly singular"
            raise ValueError(f"{what} ({exc})") from None
        norm = float(abs(mat).sum(axis=0).max()) if mat.nnz else 0.0
        inv_norm = _inverse_norm1_estimate(
            lambda v, trans: lu.solve(v, trans="T" if trans else "N"), h * w)
        recip = 1.0 / (norm * inv_norm) if norm * inv_norm > 0 else 0.0
        if not recip > rcond:
            raise ValueError(f"{what} (numerically): its reciprocal 1-norm condition number "
                             f"is about {recip:.3g} <= rcond = {rcond:g}; A * Y = T has no "
                             f"unique solution")
        rhs = t4[:, c].reshape(nb, h * w).T
        out[:, c] = lu.solve(np.ascontiguousarray(rhs)).T.reshape(nb, h, w)
    if not np.isfinite(out).all():
        raise ValueError("a: the AR system is numerically singular (non-finite solution)")
    return _restore(out, nd)


def _ar_solve_reference(t, a, *, workers=_WORKERS, rcond=RCOND):
    """Reference of :func:`ar_solve`: the invertibility check, then the dense circular solve."""
    workers, rcond = _options(workers, rcond)
    t4, nd = _as_signal(t, "t")
    a3 = _as_kernel(a, "a", nd, t4.shape[1], t4.shape[2:])
    _kernel_spectrum(a3, t4.shape[2:], rcond, workers)
    return ar_solve_dense(t, a, "circular", rcond=rcond)


def _ar_solve_backward_from_inputs(grad_y, t, a, **kwargs):
    """Registry adapter: the backward of ``ar_solve(t, a)`` given its inputs."""
    return ar_solve_backward(grad_y, ar_solve(t, a, **kwargs), a, **kwargs)


# ----------------------------------------------------------------------------------------------
# the ARMA layer (eq. 2 = 7a then 7b)
# ----------------------------------------------------------------------------------------------

def _conv_kwargs(stride, padding, dilation, padding_mode, groups):
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=padding_mode)


def _arma_kernel(a, t4):
    return _as_kernel(a, "a", 2, t4.shape[1], t4.shape[2:])


def _finite_conv_inputs(x, weight, bias):
    """lmref.conv propagates NaN; the ARMA layer refuses it, naming the argument."""
    x = as_float64(x, "x", ndim=4)
    weight = as_float64(weight, "weight", ndim=4)
    for arr, name in ((x, "x"), (weight, "weight")):
        _finite_fast(arr, name)
    if bias is not None:
        bias = as_float64(bias, "bias", ndim=1)
        check_finite(bias, "bias")
    return x, weight, bias


def _check_arma_size(x, weight, stride, padding, dilation):
    """Memory guard of the AR stage, naming ``padding`` (the option that grows the conv
    output): the complex half spectrum of the conv output is the layer's largest buffer.
    Options that are not plain ints/pairs are left to :func:`lmref.conv.conv2d` to name."""
    if isinstance(padding, str):
        return  # "same"/"valid": the output is no larger than x
    try:
        pads = as_tuple(padding, "padding", 2, minimum=0)
        strides = as_tuple(stride, "stride", 2, minimum=1)
        dilations = as_tuple(dilation, "dilation", 2, minimum=1)
    except (TypeError, ValueError):
        return
    h, w = (max((n + 2 * p - d * (k - 1) - 1) // s + 1, 1) for n, k, s, p, d in
            zip(x.shape[2:], weight.shape[2:], strides, pads, dilations))
    check_alloc((x.shape[0], weight.shape[0], h, w // 2 + 1),
                f"padding={padding!r}: the spectrum of arma2d's conv output", itemsize=16)


def arma2d(x, weight, a, bias=None, stride=1, padding="same", dilation=1,
           padding_mode="circular", *, groups=1, workers=_WORKERS, rcond=RCOND):
    """ARMA layer (eq. 2): ``T = conv2d(x, weight, bias, ...)`` (eq. 7a) then ``A * Y = T``
    per output channel (eq. 7b, :func:`ar_solve`).

    The moving-average part is :func:`lmref.conv.conv2d` (PyTorch semantics: a
    cross-correlation, ``weight`` OIHW); ``dilation`` dilates it (the paper's *dilated ARMA*),
    never the AR kernel. Defaults follow the paper's layer: ``'same'`` output size and circular
    padding, matching the circular AR solve (its transforms and their rounding as in
    :func:`ar_solve`). ``a`` is ``(C_out, kh, kw)``.

    Returns
    -------
    ndarray, float64, ``(N, C_out, H_out, W_out)``
    """
    from lmref.conv import conv2d

    workers, rcond = _options(workers, rcond)
    x, weight, bias = _finite_conv_inputs(x, weight, bias)
    _check_arma_size(x, weight, stride, padding, dilation)
    t4 = conv2d(x, weight, bias, **_conv_kwargs(stride, padding, dilation, padding_mode, groups))
    a3 = _arma_kernel(a, t4)
    inv = 1.0 / _kernel_spectrum(a3, t4.shape[2:], rcond, workers)
    return _solve_spectrum(t4, inv, workers)


def arma2d_backward(grad_y, x, weight, a, bias=None, stride=1, padding="same", dilation=1,
                    padding_mode="circular", *, groups=1, workers=_WORKERS, rcond=RCOND, y=None):
    """Gradients of :func:`arma2d`: ``(grad_x, grad_weight, grad_a, grad_bias)`` (Theorem 14).

    ``grad_t = G / conj(A)`` (eq. 12b), ``grad_a`` from the spectra as in eq. 12a (the
    forward's spectrum ``Y = T / A`` is reused, no inverse transform of ``y`` is needed), then
    :func:`lmref.conv.conv2d_backward` carries ``grad_t`` to ``x``, ``weight`` and ``bias``
    (B.1a, B.1c). ``grad_bias`` is None when ``bias`` is None.

    Parameters
    ----------
    grad_y : array_like, shape of :func:`arma2d`'s output
    x, weight, a, bias, stride, padding, dilation, padding_mode, groups, workers, rcond :
        as in :func:`arma2d`.
    y : array_like or None
        ``arma2d(x, weight, a, bias, ...)`` if the caller has it (as an autograd tape keeps
        it): the convolution is then not recomputed, and the AR part is exactly
        :func:`ar_solve_backward` ``(grad_y, y, a)``. ``grad_x``, ``grad_weight`` and
        ``grad_bias`` are bitwise those of ``y=None`` (the same ``grad_t``); ``grad_a`` is the
        circular correlation of ``grad_t`` with ``y`` summed in space, not in frequency, and
        differs from ``y=None``'s by rounding only: per channel ``c``,
        ``|delta grad_a[c]| <= (N H + W + N + 10 log2(H W) + 10) u ||grad_t[:, c]||_2
        ||y[:, c]||_2`` with ``u = 2**-53`` (the blocked spatial sum's bound plus a
        ``log2(H W)`` bound per transform; tested).

    Returns
    -------
    (grad_x, grad_weight, grad_a, grad_bias)
    """
    from lmref.conv import conv2d, conv2d_backward

    workers, rcond = _options(workers, rcond)
    kw = _conv_kwargs(stride, padding, dilation, padding_mode, groups)
    x, weight, bias = _finite_conv_inputs(x, weight, bias)
    _check_arma_size(x, weight, stride, padding, dilation)
    if y is not None:
        y4 = as_float64(y, "y", ndim=4)
        check_shape(y4, "y", _conv_output_shape(x, weight, kw), "the shape of arma2d's output")
        grad_t, grad_a = ar_solve_backward(grad_y, y4, a, workers=workers, rcond=rcond)
    else:
        grad_t, grad_a = _arma_ar_backward(grad_y, conv2d(x, weight, bias, **kw), a, workers,
                                           rcond)
    grad_x, grad_w, grad_b = conv2d_backward(grad_t, x, weight, bias, **kw)
    return grad_x, grad_w, grad_a, grad_b


def _conv_output_shape(x, weight, conv_kwargs):
    """Shape of ``conv2d(x, weight, **conv_kwargs)`` without computing it."""
    from lmref.conv.geometry import _geometry

    geom = _geometry(2, x.shape[2:], x.shape[1], weight.shape, conv_kwargs["stride"],
                     conv_kwargs["padding"], conv_kwargs["dilation"], conv_kwargs["groups"],
                     conv_kwargs["padding_mode"])
    return (x.shape[0], weight.shape[0]) + tuple(geom.out_hw)


def _arma_ar_backward(grad_y, t4, a, workers, rcond):
    """``(grad_t, grad_a)`` of the AR stage from its input ``t4``: ``grad_a`` from the spectra
    (eq. 12a) with the forward's spectrum ``Y = T / A``."""
    g4 = as_float64(grad_y, "grad_y", ndim=4)
    check_shape(g4, "grad_y", t4.shape, "the shape of arma2d's output")
    a3 = _arma_kernel(a, t4)
    inv = 1.0 / _kernel_spectrum(a3, t4.shape[2:], rcond, workers)
    grad_t, gt_spec = _adjoint_solve(g4, inv, workers, keep_spectrum=True, finite_name="grad_y")
    y_spec = _fft.rfft2(t4, workers=_fft_workers(workers, t4.size))
    y_spec *= inv
    return grad_t, _grad_a_from_spectra(gt_spec, y_spec, a3.shape, t4.shape[2:], workers)


def _arma2d_reference(x, weight, a, bias=None, stride=1, padding="same", dilation=1,
                      padding_mode="circular", *, groups=1, workers=_WORKERS, rcond=RCOND):
    """Reference of :func:`arma2d`: the conv reference then the dense circular solve."""
    from lmref.conv.reference import _conv2d_reference

    t4 = _conv2d_reference(x, weight, bias, **_conv_kwargs(stride, padding, dilation,
                                                           padding_mode, groups))
    return _ar_solve_reference(t4, a, workers=workers, rcond=rcond)


# ----------------------------------------------------------------------------------------------
# separable AR kernels (Def. 8)
# ----------------------------------------------------------------------------------------------

def _as_factors(f, name):
    arr = as_float64(f, name, ndim=3)
    check_finite(arr, name)
    if arr.shape[2] != 3:
        raise ValueError(f"{name} must hold length-3 factors, shape (C, Q, 3), got {arr.shape}")
    return arr


def _factor_pair(f, g):
    f3, g3 = _as_factors(f, "f"), _as_factors(g, "g")
    check_shape(g3, "g", f3.shape, "the shape of f")
    return f3, g3


@jit
def _poly_product(f, skip):
    """Full convolution of the length-3 factors ``f[q]``, ``q != skip``: length ``2 Q' + 1``."""
    nq = f.shape[0]
    out = np.zeros(2 * nq + 1)
    out[0] = 1.0
    length = 1
    for q in range(nq):
        if q == skip:
            continue
        for m in range(length + 1, -1, -1):  # in place, from the top: out = out * f[q]
            acc = 0.0
            for k in range(3):
                if 0 <= m - k < length:
                    acc += f[q, k] * out[m - k]
            out[m] = acc
        length += 2
    return out[:length]


@pjit
def _separable_kernel(f, g):
    nc, nq, _ = f.shape
    size = 2 * nq + 1
    out = np.empty((nc, size, size))
    for c in prange(nc):
        rows = _poly_product(f[c], -1)
        cols = _poly_product(g[c], -1)
        for i in range(size):
            for j in range(size):
                out[c, i, j] = rows[i] * cols[j]
    return out


@jit
def _factor_grads(f, grad_full):
    """``d L / d f[q, k] = sum_m grad_full[m] P_q[m - k]``, ``P_q`` the product without ``f[q]``."""
    nq = f.shape[0]
    out = np.empty((nq, 3))
    for q in range(nq):
        others = _poly_product(f, q)
        for k in range(3):
            acc = 0.0
            for m in range(others.shape[0]):
                acc += grad_full[m + k] * others[m]
            out[q, k] = acc
    return out


@pjit
def _separable_kernel_backward(grad_k, f, g):
    nc, nq, _ = f.shape
    size = 2 * nq + 1
    grad_f = np.empty(f.shape)
    grad_g = np.empty(g.shape)
    for c in prange(nc):
        rows = _poly_product(f[c], -1)
        cols = _poly_product(g[c], -1)
        grad_rows = np.zeros(size)
        grad_cols = np.zeros(size)
        for i in range(size):
            for j in range(size):
                grad_rows[i] += grad_k[c, i, j] * cols[j]
                grad_cols[j] += grad_k[c, i, j] * rows[i]
        grad_f[c] = _factor_grads(f[c], grad_rows)
        grad_g[c] = _factor_grads(g[c], grad_cols)
    return grad_f, grad_g


def separable_ar_kernel(f, g):
    """Separable AR kernel of Def. 8: ``(f^1 * ... * f^Q) (x) (g^1 * ... * g^Q)``.

    Parameters
    ----------
    f, g : array_like, ``(C, Q, 3)``
        Length-3 factors ``[x_-1, x_0, x_1]`` (index 0 = offset -1); ``f`` acts along H (rows,
        axis -2), ``g`` along W (axis -1), as the official code's ``A[i, j] = A_x[i] A_y[j]``
        (its Q 3x3 kernels solved one after the other equal this one kernel).

    Returns
    -------
    ndarray, float64, ``(C, 2Q + 1, 2Q + 1)``, origin at the centre.
    """
    f3, g3 = _factor_pair(f, g)
    return _separable_kernel(f3, g3)


def separable_ar_kernel_backward(grad_kernel, f, g):
    """Gradients ``(grad_f, grad_g)`` of :func:`separable_ar_kernel`.

    With ``F = f^1 * ... * f^Q`` and ``G`` likewise, ``grad_F = grad_K G``,
    ``grad_G = grad_K^T F``, and ``grad_f^q = grad_F`` correlated with the product of the other
    factors (a valid correlation of length 3).
    """
    f3, g3 = _factor_pair(f, g)
    size = 2 * f3.shape[1] + 1
    gk = as_float64(grad_kernel, "grad_kernel", ndim=3)
    check_shape(gk, "grad_kernel", (f3.shape[0], size, size), "the kernel's shape (C, 2Q+1, 2Q+1)")
    check_finite(gk, "grad_kernel")
    return _separable_kernel_backward(gk, f3, g3)


def _chain_reference(fc):
    full = np.ones(1)
    for q in range(fc.shape[0]):
        full = np.convolve(full, fc[q])
    return full


def _separable_ar_kernel_reference(f, g):
    """Reference: ``np.convolve`` chains and ``np.outer``."""
    f3, g3 = _factor_pair(f, g)
    return np.stack([np.outer(_chain_reference(fc), _chain_reference(gc))
                     for fc, gc in zip(f3, g3)])


# ----------------------------------------------------------------------------------------------
# re-parameterisation (Def. 10, eqs. 16-17) and stability (Theorem 9, Lemmas 18-19)
# ----------------------------------------------------------------------------------------------

def _reparam_parts(alpha, beta, a0, form):
    """``(s, ds_dalpha, d, dd_dbeta)`` with ``a_-1 = a0 (s - d)``, ``a_1 = a0 (s + d)``."""
    ta = np.tanh(alpha)
    if form == "safe":
        return 0.5 * ta, 0.5 * (1.0 - ta * ta), _SQRT_HALF * beta, np.full_like(beta, _SQRT_HALF)
    if form == "paper":
        return (_SQRT_HALF * ta, _SQRT_HALF * (1.0 - ta * ta), _SQRT_HALF * beta,
                np.full_like(beta, _SQRT_HALF))
    tb = np.tanh(beta)
    return (_SQRT_HALF * ta, _SQRT_HALF * (1.0 - ta * ta), _SQRT_HALF * tb,
            _SQRT_HALF * (1.0 - tb * tb))


def _reparam_inputs(alpha, beta, a0, form):
    form = one_of(form, "form", FORMS)
    a0 = as_real(a0, "a0")
    if a0 <= 0:
        raise ValueError(f"a0 must be > 0 (Theorem 9 needs |a_-1 + a_1| < a0), got {a0}")
    # (as_float64 turns a scalar into shape (1,): keep the caller's shape)
    al = as_float64(alpha, "alpha", allow_empty=True).reshape(np.shape(alpha))
    be = as_float64(beta, "beta", allow_empty=True).reshape(np.shape(beta))
    check_shape(be, "beta", al.shape, "the shape of alpha")
    check_finite(al, "alpha")
    check_finite(be, "beta")
    return al, be, float(a0), form


def reparameterize(alpha, beta, a0=1.0, *, form="safe"):
    """Length-3 AR factors ``[a_-1, a0, a_1]`` from unconstrained ``(alpha, beta)`` (Def. 10).

    ==========  ====================================================  ======================
    form        ``a_-1`` / ``a_1``                                    ``a_-1 + a_1``
    ==========  ====================================================  ======================
    "safe"      ``a0 (tanh(alpha) / 2 -/+ beta / sqrt(2))``           ``a0 tanh(alpha)``
    "paper"     ``a0 (tanh(alpha) -/+ beta) / sqrt(2)`` (eqs. 16-17)  ``sqrt(2) a0 tanh(alpha)``
    "official"  ``a0 (tanh(alpha) -/+ tanh(beta)) / sqrt(2)``         ``sqrt(2) a0 tanh(alpha)``
    ==========  ====================================================  ======================

    Only ``"safe"`` satisfies Theorem 9's condition ``|a_-1 + a_1| < a0`` (eq. 15) for every
    real ``(alpha, beta)`` (``|tanh| < 1``): it is the paper's 45-degree rotation with the band
    half-width ``1 / sqrt(2)`` that ``|a_-1 + a_1| < a0`` actually has. The printed eqs.
    16-17 and the official code reach ``sqrt(2) a0``: ``alpha = asinh(1) = 0.8814, beta = 0``
    gives ``[0.5, 1, 0.5]`` (DFT ``1 + cos w`` = 0 at ``w = pi``: singular on even grids) and
    ``alpha = 1, beta = 0`` gives ``[0.5385, 1, 0.5385]`` (DTFT zero at ``w = 2.761``). In
    float64, ``tanh(alpha)`` rounds to +-1 for ``|alpha| > 19.06`` and the safe form then
    meets the band's edge (``ar_solve`` refuses such kernels on grids hitting the zero); and
    the sum of the two rounded taps carries an error of up to ``ulp(max |a_+-1|)``, so with
    ``|beta|`` large the float64 sum can cross the edge when ``1 - |tanh(alpha)|`` is tiny
    (e.g. ``|alpha| > 15`` with ``|beta| > 100``).

    Official code mapping: its parameter ``alpha_code`` ``(T, Q, 2, 2)`` gives, for axis ``r``
    (0: rows/H -> ``f``, 1: columns/W -> ``g``), ``alpha = alpha_code[..., r, 1]`` and
    ``beta = -alpha_code[..., r, 0]`` with ``form="official"``, ``a0 = 1`` (see
    :func:`official_ar_factors`).

    Parameters
    ----------
    alpha, beta : array_like, same shape ``S``
    a0 : float > 0
        The centre tap ``f_0`` of eq. 17 (1 in the official code).

    Returns
    -------
    ndarray, float64, ``S + (3,)``
    """
    al, be, a0, form = _reparam_inputs(alpha, beta, a0, form)
    s, _, d, _ = _reparam_parts(al, be, a0, form)
    return np.stack([a0 * (s - d), np.full_like(s, a0), a0 * (s + d)], axis=-1)


def reparameterize_backward(grad_factors, alpha, beta, a0=1.0, *, form="safe"):
    """Gradients ``(grad_alpha, grad_beta)`` of :func:`reparameterize` (``a0`` is a constant,
    the centre's gradient is dropped)."""
    al, be, a0, form = _reparam_inputs(alpha, beta, a0, form)
    gf = as_float64(grad_factors, "grad_factors", allow_empty=True)
    check_shape(gf, "grad_factors", al.shape + (3,), "alpha.shape + (3,)")
    check_finite(gf, "grad_factors")
    _, ds, _, dd = _reparam_parts(al, be, a0, form)
    g_minus, g_plus = gf[..., 0], gf[..., 2]
    return a0 * ds * (g_minus + g_plus), a0 * dd * (g_plus - g_minus)


def official_ar_factors(alpha_code):
    """The official code's factors from its parameter ``AutoRegressive_circular.alpha``.

    ``alpha_code`` ``(T, Q, 2, 2)``: ``tanh``, then the 45-degree rotation, centre set to 1:
    for axis ``r`` with ``(u, v) = tanh(alpha_code[t, q, r])``, the factor is
    ``[(u + v) / sqrt(2), 1, (v - u) / sqrt(2)]`` (index 0 = offset -1). Returns ``(f, g)``,
    each ``(T, Q, 3)``, ready for :func:`separable_ar_kernel` (``r = 0`` -> ``f``, rows).
    Equal to ``reparameterize(alpha_code[..., r, 1], -alpha_code[..., r, 0], form="official")``.
    """
    arr = as_float64(alpha_code, "alpha_code", ndim=4)
    check_shape(arr, "alpha_code", (None, None, 2, 2), "(T, Q, 2, 2)")
    check_finite(arr, "alpha_code")
    fac = reparameterize(arr[..., 1], -arr[..., 0], 1.0, form="official")
    return np.ascontiguousarray(fac[:, :, 0]), np.ascontiguousarray(fac[:, :, 1])


def is_stable(factors):
    """Theorem 9's condition (eq. 15) per length-3 factor: ``|x_-1 + x_1| < x_0``.

    It is *sufficient* for BIBO stability (one zero of the factor's Z-polynomial strictly
    inside the unit circle, one strictly outside: Lemma 19), and by Lemma 16 a separable
    kernel whose factors all pass is stable. It is **not necessary**, despite the theorem's
    wording: ``[1, 1, 0.5]`` fails it, yet both zeros ``(-1 +- i)/2`` are inside the unit
    circle and the inverse is causal and stable (use :func:`ar_stability_1d`).

    Parameters
    ----------
    factors : array_like, ``(..., 3)``

    Returns
    -------
    ndarray of bool, ``factors.shape[:-1]``
    """
    arr = as_float64(factors, "factors")
    if arr.shape[-1] != 3:
        raise ValueError(f"factors must have a last axis of length 3, got shape {arr.shape}")
    check_finite(arr, "factors")
    return np.abs(arr[..., 0] + arr[..., 2]) < arr[..., 1]


def _as_kernel_1d(a, name="a"):
    arr = as_float64(a, name, ndim=1)
    check_finite(arr, name)
    if arr.size % 2 == 0:
        raise ValueError(f"{name} must have an odd length (origin at the centre), got {arr.size}")
    if not np.any(arr):
        raise ValueError(f"{name} must not be all zeros")
    return arr


def ar_zeros(a):
    """Zeros of the Z-transform of a centred 1-D AR kernel (Lemma 19, Definition 17).

    ``A(z) = sum_d a_d z^{-d}`` for offsets ``d = -m..m``; ``z^m A(z)`` has the coefficients
    ``a`` in index order (highest power first), so these are ``numpy.roots(a / max|a|)``.
    Leading taps with ``|a_d| <= eps * max |a|`` (float64 eps) are dropped first: they put
    zeros at (or beyond ``1 / eps`` of) infinity, which are not listed, and would overflow the
    companion matrix.
    """
    return _finite_zeros(_as_kernel_1d(a))


def _finite_zeros(arr):
    coef = arr / np.abs(arr).max()
    first = int(np.argmax(np.abs(coef) > np.finfo(np.float64).eps))
    return np.roots(coef[first:])


class ARStability(NamedTuple):
    """Root-based stability of a 1-D AR kernel (Lemmas 18-19)."""

    stable: bool           #: no zero on the unit circle: a BIBO-stable inverse exists
    inside: int            #: zeros with ``|z| < 1 - tol``
    outside: int           #: zeros with ``|z| > 1 + tol`` (zeros at infinity included)
    on_circle: int         #: zeros with ``||z| - 1| <= tol``
    margin: float          #: ``min ||z| - 1|`` over the finite zeros (inf if none)


def ar_stability_1d(a, *, tol=1e-9):
    """Root-based stability of one centred 1-D AR kernel ``a`` (odd length ``2m + 1``).

    The system ``a * y = x`` has a BIBO-stable inverse iff no zero of ``A(z)`` lies on the
    unit circle (Lemma 18: the ROC must contain it). ``inside == outside == m`` is Lemma 19's
    two-sided case, implied by Theorem 9's condition for length-3 kernels; other splits are
    stable too (a causal or anti-causal inverse).
    """
    tol = as_real(tol, "tol")
    arr = _as_kernel_1d(a)
    zeros = _finite_zeros(arr)
    radius = np.abs(zeros)
    at_infinity = (arr.size - 1) - zeros.size
    on = int(np.count_nonzero(np.abs(radius - 1.0) <= tol))
    margin = float(np.min(np.abs(radius - 1.0))) if zeros.size else math.inf
    return ARStability(on == 0, int(np.count_nonzero(radius < 1.0 - tol)),
                       int(np.count_nonzero(radius > 1.0 + tol)) + at_infinity, on, margin)


def is_stable_1d(a, *, tol=1e-9):
    """:func:`ar_stability_1d` ``.stable`` for a kernel ``(k,)`` (bool) or per row of ``(C, k)``."""
    arr = as_float64(a, "a", ndim=(1, 2))
    if arr.ndim == 1:
        return ar_stability_1d(arr, tol=tol).stable
    return np.array([ar_stability_1d(row, tol=tol).stable for row in arr], dtype=bool)


# ----------------------------------------------------------------------------------------------
# effective receptive field (Def. 2, eqs. 3-6)
# ----------------------------------------------------------------------------------------------

_LAYER_KINDS = ("conv", "ar", "arma")


def _parse_layer(spec, i, nd):
    """``("conv", weight[, kwargs])``, ``("ar", a)`` or ``("arma", weight, a[, kwargs])``."""
    if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in _LAYER_KINDS:
        raise ValueError(f"layers[{i}] must be ('conv', weight[, kwargs]), ('ar', a) or "
                         f"('arma', weight, a[, kwargs]), got {spec!r:.200}")
    kind = spec[0]
    n_arrays = {"conv": 1, "ar": 1, "arma": 2}[kind]
    if len(spec) not in (1 + n_arrays, 2 + n_arrays) or (kind == "ar" and len(spec) != 2):
        raise ValueError(f"layers[{i}] ({kind!r}) has {len(spec) - 1} entries after the kind")
    kwargs = dict(spec[1 + n_arrays]) if len(spec) == 2 + n_arrays else {}
    if kind == "arma":  # arma2d's defaults for its moving-average part
        kwargs = {"padding": "same", "padding_mode": "circular", **kwargs}
    steps = []
    if kind in ("conv", "arma"):
        w = as_float64(spec[1], f"layers[{i}] weight", ndim=nd + 2)
        check_finite(w, f"layers[{i}] weight")
        steps.append(("conv", _unit_scale(w), kwargs))
    if kind in ("ar", "arma"):
        a = as_float64(spec[-1] if kind == "ar" else spec[2], f"layers[{i}] AR kernel",
                       ndim=nd + 1)
        check_finite(a, f"layers[{i}] AR kernel")
        steps.append(("ar", a, {"name": f"layers[{i}] AR kernel"}))
    return steps


def _unit_scale(arr, peak=None, axis=None):
    """``arr`` times the power of two that brings ``max |arr|`` (over ``axis``; or ``peak``)
    into ``[0.5, 1)``; zero maxima stay. Exact (no rounding) unless an entry falls below the
    normal range, so it leaves a linear network's normalised ERF maps bitwise unchanged while
    keeping the back-propagated gradients of deep networks from over- or underflowing."""
    if peak is None:
        peak = np.abs(arr).max(axis=axis, keepdims=axis is not None)
    return np.ldexp(arr, -np.frexp(peak)[1])


def _erf_steps(layers, input_shape):
    """Validate ``input_shape`` (with the memory guard) and parse ``layers`` into steps.

    Raises
    ------
    ValueError
        ``input_shape`` not ``(S, L)``/``(S, H, W)`` of positive ints or too large for the
        memory guard; ``layers`` empty or an entry malformed.
    TypeError
        non-integer ``input_shape`` entries, or a layer array of a non-real dtype.
    """
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) not in (2, 3):
        raise ValueError(f"input_shape must be (S, L) or (S, H, W), got {input_shape!r:.200}")
    shape = as_tuple(input_shape, "input_shape", len(input_shape), minimum=1)
    # the zero forward pass holds (1, S, *spatial); the maps are at most (2H - 1, 2W - 1)
    check_alloc((1,) + shape, "input_shape")
    check_alloc(tuple(2 * s - 1 for s in shape[1:]), "input_shape")
    nd = len(shape) - 1
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("layers must be a non-empty sequence of layer tuples")
    steps = [s for i, spec in enumerate(layers) for s in _parse_layer(spec, i, nd)]
    return steps, shape, nd


def _erf_out_channels(steps, in_channels):
    """Channels of the network output: the last conv's ``C_out`` (AR solves keep them)."""
    channels = in_channels
    for kind, arr, _ in steps:
        if kind == "conv":
            channels = arr.shape[0]
    return channels


def _check_erf_work(n_points, out_channels, spatial, batch):
    """Memory guard on one gradient batch and work guard on the whole back-propagation.

    Every probe (output pixel and channel) back-propagates one gradient of the input's size,
    so their total is bounded like one allocation (they go batch by batch; only the running
    time would be unbounded).

    Raises
    ------
    ValueError
        naming ``batch`` when one batch of gradients exceeds the memory limit, or
        ``positions`` when all the gradients together do.
    """
    probes = n_points * out_channels
    check_alloc((min(batch, probes), out_channels) + tuple(spatial), "batch")
    check_work(probes * out_channels * math.prod(spatial) * 8,
               f"positions: {n_points} output pixel(s) x {out_channels} channel(s)",
               f"back-propagate gradients over the input {tuple(spatial)} in total",
               hint="pass fewer positions (e.g. 'centre')")


def _erf_forward_shapes(steps, shape, nd):
    """Input shape of every step (a zero forward pass, batch 1) and circularity of the net."""
    from lmref import conv

    conv_fn = conv.conv1d if nd == 1 else conv.conv2d
    x = np.zeros((1,) + shape)
    shapes, circular = [], False
    for kind, arr, kw in steps:
        shapes.append(x.shape[1:])
        if kind == "conv":
            x = conv_fn(x, arr, **kw)
            circular |= kw.get("padding_mode", "zeros") == "circular"
        else:  # the solve keeps the shape: only the invertibility check is needed
            _ar_spectrum_inverse(arr, x, nd, kw["name"])
            circular = True
    if x.shape[2:] != shape[1:]:
        raise ValueError(f"erf needs a size-preserving network (stride 1, 'same' padding): "
                         f"input {shape[1:]} gives output {x.shape[2:]}")
    return shapes, x.shape[1], circular


def _ar_spectrum_inverse(a, x, nd, name):
    """``1 / DFT(a')`` on the grid of ``x`` (``(N, C, *spatial)``), ``a'`` = ``a`` scaled by
    :func:`_unit_scale` (exact: the DFT scales with it), refusing a singular kernel with a
    message naming the layer and quoting ``a``'s own spectrum."""
    a3 = _as_kernel(a, name, nd, x.shape[1], x.shape[2:])
    spec = _kernel_spectrum(a3, (1,) * (2 - nd) + tuple(x.shape[2:]), RCOND, _WORKERS, name)
    return 1.0 / (spec * _unit_scale(1.0, np.abs(a3).max()))


def _erf_backward(g, steps, shapes, nd):
    """Gradients wrt the network input of a batch of output cotangents (our backwards)."""
    from lmref import conv

    conv_bwd = conv.conv1d_backward if nd == 1 else conv.conv2d_backward
    for (kind, arr, kw), shp in zip(reversed(steps), reversed(shapes)):
        if kind == "conv":
            g = conv_bwd(g, np.zeros((g.shape[0],) + shp), arr, **kw)[0]
        else:
            g4 = g[:, :, None, :] if nd == 1 else g
            inv = _ar_spectrum_inverse(arr, g, nd, kw["name"])
            g = _restore(_adjoint_solve(g4, inv, _WORKERS), nd)
        # each probe's gradient rescaled by a power of two (its map is normalised at the
        # end): 400 layers of gain 90 or 1/100 neither overflow nor underflow
        g = _unit_scale(g, axis=tuple(range(1, g.ndim)))
    return g


def _erf_pixel(entry, i, spatial):
    """One entry of ``positions``: a pixel of ``spatial`` (an int allowed for 1-D)."""
    name = f"positions[{i}]"
    if len(spatial) == 1 and not isinstance(entry, (tuple, list, np.ndarray, str)):
        entry = (entry,)
    if not isinstance(entry, (tuple, list, np.ndarray)):
        raise TypeError(f"{name} must be a pixel: a sequence of {len(spatial)} ints, got "
                        f"{type(entry).__name__} {entry!r:.100}")
    seq = list(np.asarray(entry, dtype=object).ravel()) if isinstance(entry, np.ndarray) \
        else list(entry)
    if len(seq) != len(spatial):
        raise ValueError(f"{name} must be a pixel of {len(spatial)} int(s) (the output is "
                         f"{tuple(spatial)}), got {entry!r:.100}")
    pixel = tuple(as_int(v, f"{name}[{j}]") for j, v in enumerate(seq))
    if any(not 0 <= v < s for v, s in zip(pixel, spatial)):
        raise ValueError(f"{name} = {pixel} is outside the output {tuple(spatial)}")
    return pixel


def _erf_positions(positions, spatial):
    """The output pixels of :func:`erf`: ``"all"``, ``"centre"``/``"center"`` or a sequence
    of pixels (tuples of ints inside ``spatial``; 1-D also plain ints).

    Raises
    ------
    TypeError
        ``positions`` neither one of the choices nor a sequence, or a non-integer entry.
    ValueError
        an unknown choice, an empty sequence, a pixel of the wrong length or outside.
    """
    if isinstance(positions, str):
        one_of(positions, "positions", ("all", "centre", "center"))
        if positions == "all":
            return [tuple(p) for p in np.ndindex(*spatial)]
        return [tuple(s // 2 for s in spatial)]
    if isinstance(positions, np.ndarray):
        positions = list(positions) if positions.ndim else None
    if not isinstance(positions, (list, tuple, range)):
        raise TypeError(f"positions must be 'all', 'centre' or a sequence of pixels, got "
                        f"{type(positions).__name__} {positions!r:.100}")
    if not positions:
        raise ValueError("positions must not be empty")
    return [_erf_pixel(p, i, spatial) for i, p in enumerate(positions)]


def _as_wrap(wrap):
    """``None`` or a bool (``np.bool_`` too); raises ``TypeError`` naming ``wrap`` else."""
    if wrap is None or isinstance(wrap, (bool, np.bool_)):
        return None if wrap is None else bool(wrap)
    raise TypeError(f"wrap must be None, True or False, got {type(wrap).__name__} {wrap!r:.100}")


def erf(layers, input_shape, *, positions="all", wrap=None, batch=256):
    """Empirical effective receptive field (Def. 2, eq. 3) of a linear conv / ARMA network.

    ``g(i', p) = |d Y_t[i'] / d X_s[i' - p]|`` comes from lmref's own backwards
    (:func:`lmref.conv.conv2d_backward` / ``conv1d_backward`` and the adjoint AR solve); each
    map ``g(i', .)`` of an output pixel ``i'`` and channel pair ``(s, t)`` is normalised over
    the offsets ``p`` (eq. 3 as printed normalises over ``i'``, which gives a constant; see the
    module notes), and the maps are averaged. Maps that are identically zero (disconnected
    channels) have no normalisation and are left out of the average.

    Parameters
    ----------
    layers : sequence
        ``("conv", weight[, conv_kwargs])``, ``("ar", a)`` or ``("arma", weight, a[, kwargs])``
        (= conv then AR; its conv defaults to :func:`arma2d`'s ``padding="same"``,
        ``padding_mode="circular"``, the conv layer's to :mod:`lmref.conv`'s), applied in order;
        1-D or 2-D after ``input_shape``. The network must
        keep the spatial size (stride 1, ``padding="same"``); no nonlinearity (the ERF of a
        linear network does not depend on the input).
    input_shape : ``(S, L)`` or ``(S, H, W)``
    positions : "all" (Def. 2: every output pixel), "centre"/"center" (the centre pixel only,
        as in Luo et al.; equal to "all" for a circular, shift-invariant network) or a
        non-empty sequence of pixels, each a tuple of ints inside the output (1-D: also an int).
    wrap : bool or None
        Offsets modulo the image size (maps of the image's shape) instead of ``i' - i``
        (maps ``(2H - 1, 2W - 1)``). Default: True when any layer is circular (an AR solve, or
        a conv with ``padding_mode="circular"``), so wrapped neighbours stay near ``p = 0``.
    batch : int
        Output pixels back-propagated together.

    Returns
    -------
    ndarray, float64, sums to 1, origin ``p = 0`` at index ``shape // 2``.

    Raises
    ------
    TypeError
        non-integer ``input_shape`` or ``batch``; ``positions`` neither a choice nor a sequence
        of pixels, or a pixel with non-integer entries; ``wrap`` not None or a bool.
    ValueError
        malformed ``layers``/``input_shape``, a network that changes the spatial size, an
        unknown ``positions`` choice or a pixel outside the output; ``input_shape`` (the
        forward pass or the maps), ``batch`` (one batch of gradients) or ``positions`` (all
        the gradients together) beyond the memory limit (``LMREF_MAX_BYTES``); every gradient
        map zero.
    """
    steps, shape, nd = _erf_steps(layers, input_shape)
    batch = as_int(batch, "batch", minimum=1)
    wrap = _as_wrap(wrap)
    spatial = shape[1:]
    pts = _erf_positions(positions, spatial)
    _check_erf_work(len(pts), _erf_out_channels(steps, shape[0]), spatial, batch)
    shapes, out_channels, circular = _erf_forward_shapes(steps, shape, nd)
    wrap = circular if wrap is None else wrap
    map_shape = spatial if wrap else tuple(2 * s - 1 for s in spatial)
    origin = tuple(m // 2 for m in map_shape)
    total = np.zeros(map_shape)
    count = 0
    probes = [(t, p) for p in pts for t in range(out_channels)]
    for start in range(0, len(probes), batch):
        chunk = probes[start:start + batch]
        g = np.zeros((len(chunk), out_channels) + spatial)
        for b, (t, p) in enumerate(chunk):
            g[(b, t) + p] = 1.0
        grads = np.abs(_erf_backward(g, steps, shapes, nd))
        for b, (_, p) in enumerate(chunk):
            # map index of input pixel i: origin + (i' - i), wrapped if asked
            idx = [o + q - np.arange(s) for o, q, s in zip(origin, p, spatial)]
            if wrap:
                idx = [ix % s for ix, s in zip(idx, spatial)]
            where = np.ix_(*idx)
            for gs in grads[b]:
                norm = gs.sum()
                if norm > 0:
                    total[where] += gs / norm
                    count += 1
    if count == 0:
        raise ValueError("erf: every gradient map is zero (the output does not depend on the "
                         "input)")
    return total / count


def _as_erf_map(erf_map):
    m = as_float64(erf_map, "erf_map", ndim=(1, 2))
    check_finite(m, "erf_map")
    if (m < 0).any():
        raise ValueError("erf_map must be non-negative (a distribution over offsets)")
    total = m.sum()
    if total <= 0:
        raise ValueError("erf_map must have a positive sum")
    return m / total


def erf_radius(erf_map, *, form="std"):
    """Radius of an ERF map (eq. 4), origin at index ``shape // 2`` (as :func:`erf` returns).

    ``form="std"`` (default): the standard deviation of the distribution, as the text defines
    it and as eqs. 5-6 / A.1 compute it: ``r^2 = sum |p|^2 ERF - |sum p ERF|^2``.
    ``form="paper"``: eq. 4 as printed, ``r^2 = sum |p|^2 ERF - (sum |p| ERF)^2`` (the spread of
    the radial distance). They agree when all mass has ``p >= 0`` (causal 1-D); for the centred
    ``[1, 1, 1] / 3`` the paper form gives ``2/9``, the std (and eq. 5) ``2/3``. The map is
    normalised to sum 1 first.
    """
    form = one_of(form, "form", ("std", "paper"))
    m = _as_erf_map(erf_map)
    grids = np.meshgrid(*[np.arange(s) - s // 2 for s in m.shape], indexing="ij")
    sq = sum(p * p for p in grids)
    second = float((sq * m).sum())
    if form == "std":
        first_sq = sum(float((p * m).sum()) ** 2 for p in grids)
    else:
        first_sq = float((np.sqrt(sq) * m).sum()) ** 2
    return math.sqrt(max(second - first_sq, 0.0))


def erf_radius_cnn(K, L):
    """Eq. 5 (Theorem 3): ``sqrt(L) sqrt((K^2 - 1) / 12)`` for ``L`` uniform size-``K`` layers."""
    k = as_int(K, "K", minimum=1)
    depth = as_int(L, "L", minimum=1)
    return math.sqrt(depth * (k * k - 1) / 12.0)


def erf_radius_arma(K, L, a):
    """Eq. 6 (Theorem 4): ``sqrt(L) sqrt((K^2 - 1)/12 + a / (1 - a)^2)``, ``0 <= a < 1``.

    Exact (eq. A.1 is an identity of variances, not an approximation) for the network
    ``y_i - a y_{i-1} = sum_{p<K} x_{i-p} / K`` on an infinite domain; the intermediate
    moments A.34/A.39 are misprinted but A.41 is right.
    """
    k = as_int(K, "K", minimum=1)
    depth = as_int(L, "L", minimum=1)
    c = as_real(a, "a")
    if not 0.0 <= c < 1.0:
        raise ValueError(f"a must satisfy 0 <= a < 1 (Theorem 4), got {c}")
    return math.sqrt(depth * ((k * k - 1) / 12.0 + c / (1.0 - c) ** 2))


def _causal_layer_1d(kernel_size, a):
    """Theorem 4's layer as ``("arma", weight, ar_kernel, kwargs)``: a causal uniform MA of
    size K (a centred kernel of size 2K - 1, zero on the future side) and ``[0, 1, -a]``."""
    weight = np.zeros((1, 1, 2 * kernel_size - 1))
    weight[0, 0, :kernel_size] = 1.0 / kernel_size  # cross-correlation: offsets -(K-1)..0
    return ("arma", weight, np.array([[0.0, 1.0, -a]]), {"padding": "same"})


def _symmetric_layer_2d(a):
    """Fig. 3's layer (our choice, the paper does not give it): uniform 3x3 MA, circular, and
    the separable AR kernel with factors ``[-a/2, 1, -a/2]`` along both axes."""
    weight = np.full((1, 1, 3, 3), 1.0 / 9.0)
    fac = np.array([[[-a / 2, 1.0, -a / 2]]])
    return ("arma", weight, separable_ar_kernel(fac, fac),
            {"padding": "same", "padding_mode": "circular"})


def _as_sequence(value, name):
    """``value`` as a list (a sequence or a 1-D array); raises ``TypeError`` naming ``name``."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return list(value)
    if isinstance(value, (list, tuple, range)):
        return list(value)
    raise TypeError(f"{name} must be a sequence, got {type(value).__name__} {value!r:.100}")


def _as_depths(depths, grid):
    """Validate ``depths`` (ints >= 1) with a work guard: an ``L``-layer network pushes ``L``
    activations of the ``grid`` through the forward pass and as many through each backward.

    Raises
    ------
    TypeError
        ``depths`` not a sequence, or a non-integer entry (``depths[i]``).
    ValueError
        an entry < 1, or one whose network's activations exceed the memory limit.
    """
    out = []
    for i, depth in enumerate(_as_sequence(depths, "depths")):
        depth = as_int(depth, f"depths[{i}]", minimum=1)
        check_work(depth * math.prod(grid) * 8, f"depths[{i}] = {depth}",
                   f"push activations of depth x grid {tuple(grid)} through the network")
        out.append(depth)
    return out


def _as_coefficients(coefficients):
    """Validate the AR coefficients ``a``: reals in ``[0, 1)``.

    Raises
    ------
    TypeError
        ``coefficients`` not a sequence, or a non-real entry (``coefficients[i]``).
    ValueError
        an entry outside ``[0, 1)`` (or NaN/Inf).
    """
    out = []
    for i, a in enumerate(_as_sequence(coefficients, "coefficients")):
        a = as_real(a, f"coefficients[{i}]")
        if not 0.0 <= a < 1.0:
            raise ValueError(f"coefficients[{i}] must be in [0, 1), got {a}")
        out.append(a)
    return out


def erf_trend_table(depths=(1, 3, 5, 7, 9), coefficients=(0.0, 0.6, 0.8), *, dims=2,
                    size=None, kernel_size=3):
    """Fig. 3's trend as rows ``{"dims", "depth", "a", "radius", "predicted"}``.

    ``dims=2``: each layer a uniform 3x3 circular MA then the separable AR kernel with factors
    ``[-a/2, 1, -a/2]`` (its inverse is positive with per-axis variance ``a / (1 - a)``), so
    ``predicted = sqrt(2 L (2/3 + a / (1 - a)))``; ``size`` defaults to 65. ``dims=1``:
    Theorem 4's causal network, ``predicted`` = eq. 6 (eq. 5 at ``a = 0``); ``size`` defaults
    to 4097. Radii from :func:`erf` (centre pixel, exact for these shift-invariant networks)
    and :func:`erf_radius`. The paper's claim: the radius grows with ``a`` and with depth.

    Parameters
    ----------
    depths : sequence of int >= 1
        Numbers of layers ``L``.
    coefficients : sequence of float in ``[0, 1)``
        AR coefficients ``a``.
    dims : {1, 2}
    size : int >= 3 or None
        Side of the (square) grid.
    kernel_size : int >= 1
        ``K`` of the 1-D causal moving average (``dims=1`` only).

    Returns
    -------
    list of dict
        One row per ``(a, depth)``, ``a`` the outer loop.

    Raises
    ------
    TypeError
        non-integer ``dims``, ``size``, ``kernel_size`` or ``depths[i]``; a non-real
        ``coefficients[i]``; ``depths``/``coefficients`` not sequences.
    ValueError
        an option out of range; ``size`` or ``kernel_size`` beyond the memory limit, or a
        depth whose network would push more activations than it allows (``LMREF_MAX_BYTES``).
    """
    dims = as_int(dims, "dims", minimum=1, maximum=2)
    size = as_int(size if size is not None else (65 if dims == 2 else 4097), "size", minimum=3)
    kernel_size = as_int(kernel_size, "kernel_size", minimum=1)
    grid = (size,) * dims
    check_alloc(grid, "size")
    check_alloc((2 * kernel_size - 1,), "kernel_size")
    depths = _as_depths(depths, grid)
    coefficients = _as_coefficients(coefficients)
    rows = []
    for a in coefficients:
        for depth in depths:
            if dims == 2:
                layer, shape = _symmetric_layer_2d(a), (1, size, size)
                predicted = math.sqrt(2 * depth * (2.0 / 3.0 + a / (1.0 - a)))
            else:
                layer, shape = _causal_layer_1d(kernel_size, a), (1, size)
                predicted = erf_radius_arma(kernel_size, depth, a)
            m = erf([layer] * depth, shape, positions="centre")
            rows.append({"dims": dims, "depth": depth, "a": a, "radius": erf_radius(m),
                         "predicted": predicted})
    return rows


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

def _stable_kernels(rng, c, k, ndim):
    """Diagonally dominant (invertible, stable) AR kernels, origin at the centre."""
    a = rng.standard_normal((c,) + (k,) * ndim)
    centre = (slice(None),) + (k // 2,) * ndim
    a[centre] = 0.0
    off = np.abs(a).reshape(c, -1).sum(axis=1).reshape((c,) + (1,) * ndim)
    a *= 0.7 / np.where(off > 0, off, 1.0)
    a[centre] = 1.0
    return a


def _example_ar_solve(rng):
    return (rng.standard_normal((2, 3, 5, 6)), _stable_kernels(rng, 3, 3, 2)), {}


def _example_arma2d(rng):
    x = rng.standard_normal((2, 2, 5, 6))
    w = rng.standard_normal((3, 2, 3, 3))
    return (x, w, _stable_kernels(rng, 3, 3, 2), rng.standard_normal(3)), {"dilation": 2}


def _example_separable(rng):
    f = rng.uniform(-0.4, 0.4, (2, 2, 3))
    g = rng.uniform(-0.4, 0.4, (2, 2, 3))
    f[..., 1] = 1.0 + rng.uniform(0, 0.5, (2, 2))
    return (f, g), {}


def _example_reparameterize(rng):
    return (rng.standard_normal((2, 3)), rng.standard_normal((2, 3))), {"a0": 1.5, "form": "safe"}


_OPS = [
    Op(name="ar_solve", cpu="lmref.arma:ar_solve", reference="lmref.arma:_ar_solve_reference",
       backward="lmref.arma:_ar_solve_backward_from_inputs", peer="lmref.peers.torch_arma:ar_solve",
       peer_name="torch.fft.rfft2 / irfft2 division", example="lmref.arma:_example_ar_solve",
       notes="backward(grad_y, t, a) adapts ar_solve_backward(grad_y, y, a)"),
    Op(name="arma2d", cpu="lmref.arma:arma2d", reference="lmref.arma:_arma2d_reference",
       backward="lmref.arma:arma2d_backward", peer="lmref.peers.torch_arma:arma2d",
       peer_name="F.pad + F.conv2d, then torch.fft division", example="lmref.arma:_example_arma2d"),
    Op(name="separable_ar_kernel", cpu="lmref.arma:separable_ar_kernel",
       reference="lmref.arma:_separable_ar_kernel_reference",
       backward="lmref.arma:separable_ar_kernel_backward",
       peer="lmref.peers.torch_arma:separable_ar_kernel", peer_name="torch conv1d chain + outer",
       example="lmref.arma:_example_separable"),
    Op(name="reparameterize", cpu="lmref.arma:reparameterize",
       backward="lmref.arma:reparameterize_backward", peer="lmref.peers.torch_arma:reparameterize",
       peer_name="torch.tanh formula", example="lmref.arma:_example_reparameterize"),
]
