"""lmref's own FFT kernels: the 1-D transforms of :func:`lmref.arma.ar_solve`'s solve.

Every transform runs along axis 0 of a split (real, imaginary) ``(n, m)`` block, in place, each
butterfly a loop over the ``m`` contiguous columns (SIMD). Forward transforms (sign -1) are
decimation in frequency: natural order in, *digit-reversed* order out; the unscaled inverse
ones (sign +1) decimation in time: digit-reversed in, natural out. A caller that multiplies
the spectrum by a diagonal (the AR solve's ``1 / A``) stores that diagonal in the same order
and needs no permutation pass.

Lengths:

* powers of two: radix-2 kernels, two stages per pass over the block (:func:`_dif_rows`,
  :func:`_dit_rows`; bit reversal, :func:`bit_reversal`);
* other 7-smooth lengths (``2^a 3^b 5^c 7^d``: 14, 28, 56, 60, 112, 224, ...): mixed radix,
  one pass per factor (radix 4 and 2 with exact +-1 and +-i; 3, 5 and 7 in symmetric form,
  :func:`_dft7`), each stage's butterflies one long SIMD loop per block of rows; digit
  reversal, :func:`digit_reversal`.

Rounding (first order, ``u = 2**-53``). The twiddles (:func:`unit_roots`) are within
``1.5 u`` per component, ``mu <= 1.5 sqrt(2) u`` in modulus. Each stage maps a block to
``sqrt(r)`` times a unitary image of it and adds at most ``eta_r u`` of the exact output's
2-norm, so a transform's relative error is at most ``sum_stages eta_r u``
(:func:`transform_error`):

* radix 2 on powers of two: ``mu + gamma_4 (sqrt 2 + mu) <= 8 u`` (Higham, *Accuracy and
  Stability of Numerical Algorithms*, Thm. 24.2), stated as ``eta_2 = 10``;
* radix 2 and 4 in the mixed kernels: one or two levels of exact-twiddle additions (``u``
  each) and the twiddle product (``(sqrt 8) u + mu``): under ``7 u``, stated as ``10``;
* odd ``r = 2 h + 1``: each term ``s_q c`` or ``d_q w`` is within ``3.5 u (|x_q| + |x_{r-q}|)``
  (the rounded sum or difference, the stored twiddle component, the product), the sums of
  ``h + 1`` and ``h`` terms add ``h u`` and ``(h - 1) u`` times ``S = sum_q |x_q|``, and
  ``A +- i B`` rounds once more (``|y_k| <= S``): per output ``(r + 6) u S <= (r + 6) u
  sqrt(r) ||x||``, over the ``r`` outputs ``sqrt(r) (r + 6) u ||y||`` (``||y|| = sqrt(r)
  ||x||``), plus the twiddle product (``5 u``): ``eta_r = ceil(sqrt(r) (r + 6)) + 5``, that
  is 21, 30 and 40 for 3, 5 and 7.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from lmref._numba import jit

__all__ = ["MAX_PRIME", "own_fft_length", "radices", "axis_plan", "transform_error", "unit_roots",
           "bit_reversal", "digit_reversal", "dif_axis", "dit_axis", "transpose_into"]

#: largest prime factor of a length the mixed-radix kernels take: their odd butterflies are
#: written out for 3, 5 and 7 (lengths with larger prime factors take scipy's pocketfft)
MAX_PRIME = 7


def _factors(n):
    """Prime factors of ``n`` (ascending; ``[]`` for 1)."""
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def own_fft_length(n):
    """Whether lmref's kernels transform length ``n``: ``n >= 1`` with no prime factor above
    :data:`MAX_PRIME`."""
    return n >= 1 and all(p <= MAX_PRIME for p in _factors(n))


def _is_power_of_two(n):
    return n & (n - 1) == 0


@functools.cache
def radices(n):
    """The mixed-radix stages of length ``n``, first to last of the forward transform: the
    odd primes, largest first, then 4s, then a 2 when the power of two is odd; ``()`` for
    powers of two (the radix-2 kernels)."""
    if _is_power_of_two(n):
        return ()
    f = _factors(n)
    twos = f.count(2)
    odd = sorted((p for p in f if p != 2), reverse=True)
    return tuple(odd) + (4,) * (twos // 2) + (2,) * (twos % 2)


def _stage_error(r):
    """``eta_r``: a stage's relative error bound in units of ``u`` (module notes)."""
    if r in (2, 4):
        return 10
    return math.ceil(math.sqrt(r) * (r + 6)) + 5


def transform_error(n):
    """First-order bound, in units of ``u = 2**-53``, on the relative 2-norm error of one
    transform of length ``n`` (forward or unscaled inverse; module notes): ``10 log2(n)`` for
    powers of two, the sum of the stages' ``eta_r`` otherwise."""
    if _is_power_of_two(n):
        return 10 * (n.bit_length() - 1)
    return sum(_stage_error(r) for r in radices(n))


@functools.cache
def bit_reversal(n):
    """``r[k]`` = ``k`` with its ``log2(n)`` bits reversed (``n`` a power of two)."""
    bits = n.bit_length() - 1
    k = np.arange(n)
    out = np.zeros(n, np.int64)
    for b in range(bits):
        out |= ((k >> b) & 1) << (bits - 1 - b)
    out.flags.writeable = False
    return out


#: ``pi / 4`` as a double-double: ``fl(pi) / 4`` (exact) and the rest, ``(pi - fl(pi)) / 4``
_PI4_HI, _PI4_LO = math.pi / 4, 1.2246467991473532e-16 / 4
#: Veltkamp's splitter for doubles, ``2**27 + 1``
_SPLITTER = 134217729.0


def _split(a):
    """``(hi, lo)``, ``a = hi + lo`` exactly, each half of ``a``'s significand (Veltkamp)."""
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_product(a, b):
    """``(p, e)``: ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker)."""
    p = a * b
    a1, a2 = _split(a)
    b1, b2 = _split(b)
    return p, ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2


def unit_roots(n, count):
    """``(cos, sin)`` of ``-2 pi k / n`` for ``k < count``, each within ``1.5 u`` (libm's
    ulp and the final rounding's half ulp, values below 1; so the twiddles' error
    ``mu <= 1.5 sqrt(2) u``, module notes): the angle reduced to an octant
    exactly, ``alpha = pi / 4 * j / n`` with ``0 <= j <= n`` from integer arithmetic, formed
    as a double-double, and ``cos(alpha_hi) - sin(alpha_hi) alpha_lo`` (and the sine) mapped
    back by exact swaps and sign changes. ``np.exp(-2j * np.pi * k / n)`` instead carries
    the rounding of ``2 pi k / n`` (up to ~12 u measured)."""
    k = np.arange(count, dtype=np.int64)
    octant, rem = np.divmod(8 * k, n)  # the angle is pi / 4 (octant + rem / n)
    odd = octant % 2 == 1
    j = np.where(odd, n - rem, rem).astype(np.float64)  # odd octants: from the next multiple
    q_hi = j / n
    p, e = _two_product(q_hi, float(n))
    q_lo = ((j - p) - e) / n  # j / n = q_hi + q_lo to ~u^2 (j - p is exact, Sterbenz)
    a_hi, a_err = _two_product(_PI4_HI, q_hi)
    a_lo = a_err + (_PI4_HI * q_lo + _PI4_LO * q_hi)
    c_hi, s_hi = np.cos(a_hi), np.sin(a_hi)
    c, s = c_hi - s_hi * a_lo, s_hi + c_hi * a_lo  # cos, sin of alpha
    s = np.where(j == n, c, s)  # alpha = pi / 4: one value for both (exact symmetries)
    # the octant's angle as +-alpha or +-(pi/2 - alpha) about a multiple of pi/2: swap the pair
    # on octants 1, 2, 5, 6, then the signs of cos and sin of octant o
    swap = (octant % 4 == 1) | (octant % 4 == 2)
    cos_t = np.where(swap, s, c) * np.array([1, 1, -1, -1, -1, -1, 1, 1])[octant]
    sin_t = np.where(swap, c, s) * np.array([1, 1, 1, 1, -1, -1, -1, -1])[octant]
    re, im = np.ascontiguousarray(cos_t), np.ascontiguousarray(-sin_t)
    re.flags.writeable = im.flags.writeable = False
    return re, im


@jit
def _rotate(xr, xi, wr, wi):
    """``(xr + i xi) (wr + i wi)`` as ``(re, im)``: four products, no FMA (no fastmath)."""
    return xr * wr - xi * wi, xr * wi + xi * wr


@jit
def _dif_rows(re, im, twr, twi):
    """In-place radix-2 DFT (sign -1, ``tw`` = :func:`axis_plan`'s) along axis 0 of the split
    complex ``(n, m)`` block, decimation in frequency: natural order in, bit-reversed out.

    Two radix-2 stages per pass over the block (four rows at a time, the same operations as
    one stage after the other: half the loads and stores), one single stage at the end when
    ``log2(n)`` is odd; every butterfly is a loop over the ``m`` contiguous columns.
    """
    n, m = re.shape
    half, step = n // 2, 1
    while half >= 2:  # stages ``half`` and ``half / 2`` on rows r0 < r1 < r2 < r3
        q = half // 2
        for start in range(0, n, 2 * half):
            for j in range(q):
                w1r, w1i = twr[j * step], twi[j * step]
                w3r, w3i = twr[(j + q) * step], twi[(j + q) * step]
                w2r, w2i = twr[2 * j * step], twi[2 * j * step]
                r0 = start + j
                r1, r2, r3 = r0 + q, r0 + half, r0 + half + q
                for c in range(m):
                    x0r, x0i, x1r, x1i = re[r0, c], im[r0, c], re[r1, c], im[r1, c]
                    x2r, x2i, x3r, x3i = re[r2, c], im[r2, c], re[r3, c], im[r3, c]
                    y0r, y0i = x0r + x2r, x0i + x2i
                    y2r, y2i = _rotate(x0r - x2r, x0i - x2i, w1r, w1i)
                    y1r, y1i = x1r + x3r, x1i + x3i
                    y3r, y3i = _rotate(x1r - x3r, x1i - x3i, w3r, w3i)
                    re[r0, c], im[r0, c] = y0r + y1r, y0i + y1i
                    re[r1, c], im[r1, c] = _rotate(y0r - y1r, y0i - y1i, w2r, w2i)
                    re[r2, c], im[r2, c] = y2r + y3r, y2i + y3i
                    re[r3, c], im[r3, c] = _rotate(y2r - y3r, y2i - y3i, w2r, w2i)
        half //= 4
        step *= 4
    if half == 1:
        for a in range(0, n, 2):
            for c in range(m):
                ar, ai, br, bi = re[a, c], im[a, c], re[a + 1, c], im[a + 1, c]
                re[a, c], im[a, c] = ar + br, ai + bi
                re[a + 1, c], im[a + 1, c] = _rotate(ar - br, ai - bi, twr[0], twi[0])


@jit
def _dit_rows(re, im, twr, twi):
    """In-place unscaled inverse DFT along axis 0 (conjugate twiddles), decimation in time:
    bit-reversed order in, natural out; two stages per pass as in :func:`_dif_rows`."""
    n, m = re.shape
    half, step = 1, n // 2
    while 4 * half <= n:  # stages ``half`` and ``2 half`` on rows r0 < r1 < r2 < r3
        for start in range(0, n, 4 * half):
            for j in range(half):
                war, wai = twr[j * step], -twi[j * step]
                wbr, wbi = twr[j * step // 2], -twi[j * step // 2]
                wcr, wci = twr[(j + half) * step // 2], -twi[(j + half) * step // 2]
                r0 = start + j
                r1, r2, r3 = r0 + half, r0 + 2 * half, r0 + 3 * half
                for c in range(m):
                    x0r, x0i, x2r, x2i = re[r0, c], im[r0, c], re[r2, c], im[r2, c]
                    tr, ti = _rotate(re[r1, c], im[r1, c], war, wai)
                    y0r, y0i, y1r, y1i = x0r + tr, x0i + ti, x0r - tr, x0i - ti
                    tr, ti = _rotate(re[r3, c], im[r3, c], war, wai)
                    y2r, y2i, y3r, y3i = x2r + tr, x2i + ti, x2r - tr, x2i - ti
                    tr, ti = _rotate(y2r, y2i, wbr, wbi)
                    re[r0, c], im[r0, c] = y0r + tr, y0i + ti
                    re[r2, c], im[r2, c] = y0r - tr, y0i - ti
                    tr, ti = _rotate(y3r, y3i, wcr, wci)
                    re[r1, c], im[r1, c] = y1r + tr, y1i + ti
                    re[r3, c], im[r3, c] = y1r - tr, y1i - ti
        half *= 4
        step //= 4
    if half < n:  # the last stage, ``half = n / 2``
        for j in range(half):
            wr, wi = twr[j * step], -twi[j * step]
            for c in range(m):
                br, bi = _rotate(re[j + half, c], im[j + half, c], wr, wi)
                ar, ai = re[j, c], im[j, c]
                re[j, c], im[j, c] = ar + br, ai + bi
                re[j + half, c], im[j + half, c] = ar - br, ai - bi


@jit
def transpose_into(src, dst):
    n, m = src.shape
    for i in range(n):
        for j in range(m):
            dst[j, i] = src[i, j]



@functools.cache
def digit_reversal(n):
    """``r[pos]`` = the frequency the mixed-radix forward transform of length ``n`` leaves at
    position ``pos``: with stages ``r_1, r_2, ...`` (:func:`radices`) and spans
    ``L_i = n / (r_1 ... r_i)``, frequency ``k_1 + r_1 k_2 + r_1 r_2 k_3 + ...`` lands at
    ``k_1 L_1 + k_2 L_2 + ...`` (bit reversal for powers of two)."""
    if _is_power_of_two(n):
        return bit_reversal(n)
    pos, freq = np.zeros(1, np.int64), np.zeros(1, np.int64)
    span, weight = n, 1
    for r in radices(n):
        span //= r
        k = np.arange(r)
        pos = (pos[:, None] + k[None, :] * span).ravel()
        freq = (freq[:, None] + k[None, :] * weight).ravel()
        weight *= r
    out = np.empty(n, np.int64)
    out[pos] = freq
    out.flags.writeable = False
    return out


@functools.cache
def axis_plan(n):
    """``(stages, twr, twi)`` of length ``n`` as the kernels take them (read-only, shared;
    :func:`own_fft_length` must hold): an empty int64 array and the twiddles
    ``-2 pi k / n``, ``k < n / 2``, for powers of two (the radix-2 kernels), else the
    :func:`radices` and the twiddles of every ``k < n``."""
    stages = np.array(radices(n), np.int64)
    stages.flags.writeable = False
    return (stages, *unit_roots(n, n // 2 if _is_power_of_two(n) else n))


@jit
def _odd_outputs(ar, ai, br, bi, fwd):
    """Outputs ``k`` and ``r - k`` of an odd ``r``-point DFT from ``A_k`` and ``B_k``:
    ``A_k + i B_k`` and ``A_k - i B_k`` (``fwd`` = 1; -1 for the conjugate DFT, exact)."""
    return ar - fwd * bi, ai + fwd * br, ar + fwd * bi, ai - fwd * br


@jit
def _sum_diff(ar, ai, br, bi):
    """``(a + b, a - b)`` of two complex numbers as ``(sr, si, dr, di)``."""
    return ar + br, ai + bi, ar - br, ai - bi


@jit
def _rows(fr, fi, off, stride, q, count):
    """Input ``q`` of the butterflies at ``off``: ``count`` elements from ``off + q stride``
    (slices from 0: no negative-index test in the loops, so they vectorise)."""
    lo = off + q * stride
    return fr[lo:lo + count], fi[lo:lo + count]


@jit
def _dft2(fr, fi, blocks, block, stride, count):
    """2-point DFTs in place: ``count`` in each of ``blocks`` blocks, input ``q`` of DFT ``t`` in
    block ``b`` at ``b block + q stride + t`` (flat)."""
    for b in range(blocks):
        off = b * block
        x0r, x0i = _rows(fr, fi, off, stride, 0, count)
        x1r, x1i = _rows(fr, fi, off, stride, 1, count)
        for t in range(count):
            x0r[t], x0i[t], x1r[t], x1i[t] = _sum_diff(x0r[t], x0i[t], x1r[t], x1i[t])


@jit
def _dft4(fr, fi, blocks, block, stride, count, fwd):
    """``count`` 4-point DFTs in place (``fwd`` -1: conjugate), exact +-1 and +-i: the two
    radix-2 stages of length 4."""
    for b in range(blocks):
        off = b * block
        x0r, x0i = _rows(fr, fi, off, stride, 0, count)
        x1r, x1i = _rows(fr, fi, off, stride, 1, count)
        x2r, x2i = _rows(fr, fi, off, stride, 2, count)
        x3r, x3i = _rows(fr, fi, off, stride, 3, count)
        for t in range(count):
            ar, ai, br, bi = _sum_diff(x0r[t], x0i[t], x2r[t], x2i[t])
            cr, ci, dr, di = _sum_diff(x1r[t], x1i[t], x3r[t], x3i[t])
            x0r[t], x0i[t], x2r[t], x2i[t] = _sum_diff(ar, ai, cr, ci)
            # y1 = b - fwd i d, y3 = b + fwd i d (forward: omega_4 = -i)
            x1r[t], x1i[t] = br + fwd * di, bi - fwd * dr
            x3r[t], x3i[t] = br - fwd * di, bi + fwd * dr


@jit
def _dft3(fr, fi, blocks, block, stride, count, twr, twi, fwd):
    """``count`` 3-point DFTs in place, in the symmetric form of :func:`_dft7`."""
    e = twr.size // 3
    c1, w1 = twr[e], twi[e]
    for b in range(blocks):
        off = b * block
        x0r, x0i = _rows(fr, fi, off, stride, 0, count)
        x1r, x1i = _rows(fr, fi, off, stride, 1, count)
        x2r, x2i = _rows(fr, fi, off, stride, 2, count)
        for t in range(count):
            ar, ai = x0r[t], x0i[t]
            sr, si, dr, di = _sum_diff(x1r[t], x1i[t], x2r[t], x2i[t])
            x0r[t], x0i[t] = ar + sr, ai + si
            x1r[t], x1i[t], x2r[t], x2i[t] = _odd_outputs(
                ar + sr * c1, ai + si * c1, dr * w1, di * w1, fwd)


@jit
def _dft5(fr, fi, blocks, block, stride, count, twr, twi, fwd):
    """``count`` 5-point DFTs in place, in the symmetric form of :func:`_dft7`."""
    e = twr.size // 5
    c1, c2, c4 = twr[e], twr[2 * e], twr[4 * e]
    w1, w2, w4 = twi[e], twi[2 * e], twi[4 * e]
    for b in range(blocks):
        off = b * block
        x0r, x0i = _rows(fr, fi, off, stride, 0, count)
        x1r, x1i = _rows(fr, fi, off, stride, 1, count)
        x2r, x2i = _rows(fr, fi, off, stride, 2, count)
        x3r, x3i = _rows(fr, fi, off, stride, 3, count)
        x4r, x4i = _rows(fr, fi, off, stride, 4, count)
        for t in range(count):
            ar, ai = x0r[t], x0i[t]
            s1r, s1i, d1r, d1i = _sum_diff(x1r[t], x1i[t], x4r[t], x4i[t])
            s2r, s2i, d2r, d2i = _sum_diff(x2r[t], x2i[t], x3r[t], x3i[t])
            x0r[t], x0i[t] = ar + s1r + s2r, ai + s1i + s2i
            x1r[t], x1i[t], x4r[t], x4i[t] = _odd_outputs(
                ar + s1r * c1 + s2r * c2, ai + s1i * c1 + s2i * c2,
                d1r * w1 + d2r * w2, d1i * w1 + d2i * w2, fwd)
            x2r[t], x2i[t], x3r[t], x3i[t] = _odd_outputs(
                ar + s1r * c2 + s2r * c4, ai + s1i * c2 + s2i * c4,
                d1r * w2 + d2r * w4, d1i * w2 + d2i * w4, fwd)


@jit
def _dft7(fr, fi, blocks, block, stride, count, twr, twi, fwd):
    """``count`` 7-point DFTs in place, in symmetric form: with ``s_q = x_q + x_{7-q}``,
    ``d_q = x_q - x_{7-q}`` and ``omega^e = c_e + i w_e`` (the stored twiddles),
    ``A_k = x_0 + sum_q s_q c_{qk}``, ``B_k = sum_q d_q w_{qk}`` and
    ``y_k, y_{7-k} = A_k +- i B_k`` (``q, k = 1, 2, 3``; ``fwd`` -1: the conjugate DFT)."""
    e = twr.size // 7
    c1, c2, c3, c4, c6 = twr[e], twr[2 * e], twr[3 * e], twr[4 * e], twr[6 * e]
    w1, w2, w3, w4, w6 = twi[e], twi[2 * e], twi[3 * e], twi[4 * e], twi[6 * e]
    for b in range(blocks):
        off = b * block
        x0r, x0i = _rows(fr, fi, off, stride, 0, count)
        x1r, x1i = _rows(fr, fi, off, stride, 1, count)
        x2r, x2i = _rows(fr, fi, off, stride, 2, count)
        x3r, x3i = _rows(fr, fi, off, stride, 3, count)
        x4r, x4i = _rows(fr, fi, off, stride, 4, count)
        x5r, x5i = _rows(fr, fi, off, stride, 5, count)
        x6r, x6i = _rows(fr, fi, off, stride, 6, count)
        for t in range(count):
            ar, ai = x0r[t], x0i[t]
            s1r, s1i, d1r, d1i = _sum_diff(x1r[t], x1i[t], x6r[t], x6i[t])
            s2r, s2i, d2r, d2i = _sum_diff(x2r[t], x2i[t], x5r[t], x5i[t])
            s3r, s3i, d3r, d3i = _sum_diff(x3r[t], x3i[t], x4r[t], x4i[t])
            x0r[t], x0i[t] = ar + s1r + s2r + s3r, ai + s1i + s2i + s3i
            # k = 1: q k = 1, 2, 3; k = 2: 2, 4, 6; k = 3: 3, 6, 9 = 2 (mod 7)
            x1r[t], x1i[t], x6r[t], x6i[t] = _odd_outputs(
                ar + s1r * c1 + s2r * c2 + s3r * c3, ai + s1i * c1 + s2i * c2 + s3i * c3,
                d1r * w1 + d2r * w2 + d3r * w3, d1i * w1 + d2i * w2 + d3i * w3, fwd)
            x2r[t], x2i[t], x5r[t], x5i[t] = _odd_outputs(
                ar + s1r * c2 + s2r * c4 + s3r * c6, ai + s1i * c2 + s2i * c4 + s3i * c6,
                d1r * w2 + d2r * w4 + d3r * w6, d1i * w2 + d2i * w4 + d3i * w6, fwd)
            x3r[t], x3i[t], x4r[t], x4i[t] = _odd_outputs(
                ar + s1r * c3 + s2r * c6 + s3r * c2, ai + s1i * c3 + s2i * c6 + s3i * c2,
                d1r * w3 + d2r * w6 + d3r * w2, d1i * w3 + d2i * w6 + d3i * w2, fwd)


@jit
def _stage_dfts(re, im, size, r, twr, twi, fwd):
    """The ``r``-point DFTs of one stage in place (``fwd`` 1: forward, -1: the conjugate DFT):
    in each block of ``size`` rows, those of rows ``j + q size / r``. Flat, the rows
    ``j < size / r`` of input ``q`` are one run of ``size m / r`` elements, so each block is one
    long SIMD loop (not one short loop per ``j``)."""
    n, m = re.shape
    fr, fi = re.reshape(n * m), im.reshape(n * m)
    blocks, count = n // size, size // r * m
    if r == 2:
        _dft2(fr, fi, blocks, size * m, count, count)
    elif r == 4:
        _dft4(fr, fi, blocks, size * m, count, count, fwd)
    elif r == 3:
        _dft3(fr, fi, blocks, size * m, count, count, twr, twi, fwd)
    elif r == 5:
        _dft5(fr, fi, blocks, size * m, count, count, twr, twi, fwd)
    else:
        _dft7(fr, fi, blocks, size * m, count, count, twr, twi, fwd)


@jit
def _twiddle_block(re, im, start, span, r, step, twr, twi, fwd):
    """Rows ``start + j + k span`` (``0 < j < span``, ``0 < k < r``) times ``omega^(j k step)``
    (``omega = tw[1]``; ``fwd`` -1: conjugated)."""
    m = re.shape[1]
    for k in range(1, r):
        for j in range(1, span):
            e = j * k * step
            wr, wi = twr[e], fwd * twi[e]
            row = start + j + k * span
            xr, xi = re[row], im[row]
            for c in range(m):
                xr[c], xi[c] = _rotate(xr[c], xi[c], wr, wi)


@jit
def _dif_mixed(re, im, stages, twr, twi):
    """Forward mixed-radix DFT along axis 0 (decimation in frequency, digit-reversed out):
    stage ``r`` on blocks of ``size`` rows does the ``r``-point DFTs of rows ``j + q size / r``,
    then multiplies output ``k`` by ``omega_size^(j k)``."""
    n = re.shape[0]
    size = n
    for r in stages:
        span = size // r
        _stage_dfts(re, im, size, r, twr, twi, 1.0)
        if span > 1:  # a last stage (one row a butterfly) has no twiddles: no call a block
            for start in range(0, n, size):
                _twiddle_block(re, im, start, span, r, n // size, twr, twi, 1.0)
        size = span


@jit
def _dit_mixed(re, im, stages, twr, twi):
    """Unscaled inverse of :func:`_dif_mixed` (decimation in time, digit-reversed in): its
    stages in reverse order, each the conjugate transpose (conjugate twiddles, then the
    conjugate ``r``-point DFTs)."""
    n = re.shape[0]
    size = 1
    for i in range(stages.size - 1, -1, -1):
        r = stages[i]
        span, size = size, size * r
        if span > 1:
            for start in range(0, n, size):
                _twiddle_block(re, im, start, span, r, n // size, twr, twi, -1.0)
        _stage_dfts(re, im, size, r, twr, twi, -1.0)


@jit
def dif_axis(re, im, stages, twr, twi):
    """The forward transform along axis 0 with :func:`axis_plan`'s arrays."""
    if stages.size == 0:
        _dif_rows(re, im, twr, twi)
    else:
        _dif_mixed(re, im, stages, twr, twi)


@jit
def dit_axis(re, im, stages, twr, twi):
    """The unscaled inverse transform along axis 0 with :func:`axis_plan`'s arrays."""
    if stages.size == 0:
        _dit_rows(re, im, twr, twi)
    else:
        _dit_mixed(re, im, stages, twr, twi)
