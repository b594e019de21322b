"""lmref.arma: FFT AR solve and its backward, dense oracle, ARMA layer, separable kernels,
re-parameterisation, stability and the effective receptive field."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmref import arma
from lmref._fftkernels import transform_error
from lmref.peers import run_peer
from lmref.testing import assert_close, gradcheck
from lmref.testing.strategies import ar_factors, ar_solve_args


# ---------------------------------------------------------------------------------------------
# independent helpers (plain NumPy, no lmref code)
# ---------------------------------------------------------------------------------------------

def _circular_conv(y, a):
    """``sum_d a[d] y[n - d]`` with wrap-around, origin at the kernel's centre (2-D)."""
    out = np.zeros_like(y)
    kh, kw = a.shape[1:]
    for p in range(kh):
        for q in range(kw):
            out += a[None, :, p, q, None, None] * np.roll(y, (p - kh // 2, q - kw // 2),
                                                          axis=(-2, -1))
    return out


def _zero_boundary_conv(y, a):
    """``sum_d a[d] y[n - d]`` with ``y`` zero outside the image (2-D)."""
    n, c, h, w = y.shape
    kh, kw = a.shape[1:]
    padded = np.zeros((n, c, h + 2 * kh, w + 2 * kw))
    padded[:, :, kh:kh + h, kw:kw + w] = y
    out = np.zeros_like(y)
    for p in range(kh):
        for q in range(kw):
            dh, dw = p - kh // 2, q - kw // 2
            out += a[None, :, p, q, None, None] * padded[:, :, kh - dh:kh - dh + h,
                                                         kw - dw:kw - dw + w]
    return out


def _stable_kernels(rng, c, k, ndim=2, ratio=0.8):
    a = rng.standard_normal((c,) + (k,) * ndim)
    centre = (slice(None),) + (k // 2,) * ndim
    a[centre] = 0.0
    off = np.abs(a).reshape(c, -1).sum(axis=1).reshape((c,) + (1,) * ndim)
    a *= ratio / np.where(off > 0, off, 1.0)
    a[centre] = 1.0
    return a


CASES_2D = [((2, 3, 6, 7), 3), ((1, 2, 5, 5), 1), ((2, 2, 8, 6), 5), ((1, 1, 4, 9), 3),
            ((1, 2, 9, 9), 7)]


# ---------------------------------------------------------------------------------------------
# ar_solve: residual, dense oracle, 1-D
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,k", CASES_2D)
def test_ar_solve_residual(rng, shape, k):
    t = rng.standard_normal(shape)
    a = _stable_kernels(rng, shape[1], k)
    y = arma.ar_solve(t, a)
    assert y.dtype == np.float64 and y.shape == t.shape
    np.testing.assert_allclose(_circular_conv(y, a), t, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape,k", CASES_2D)
def test_ar_solve_fft_equals_dense(rng, shape, k):
    t = rng.standard_normal(shape)
    a = _stable_kernels(rng, shape[1], k)
    assert_close(arma.ar_solve(t, a), arma.ar_solve_dense(t, a, "circular"))


def test_ar_solve_1d_equals_2d_with_one_row(rng):
    t = rng.standard_normal((2, 3, 11))
    a = _stable_kernels(rng, 3, 5, ndim=1)
    y = arma.ar_solve(t, a)
    assert y.shape == t.shape
    assert_close(y, arma.ar_solve(t[:, :, None, :], a[:, None, :])[:, :, 0, :])
    assert_close(y, arma.ar_solve_dense(t, a))
    # residual of the 1-D circular convolution
    res = sum(a[None, :, d, None] * np.roll(y, d - 2, axis=-1) for d in range(5))
    np.testing.assert_allclose(res, t, rtol=0, atol=1e-10)


def test_ar_solve_shift_kernel_is_a_roll(rng):
    """A kernel with one off-centre tap is a pure circular shift (|DFT| = 1): y = roll(t)."""
    t = rng.standard_normal((1, 1, 5, 6))
    a = np.zeros((1, 3, 3))
    a[0, 0, 2] = 1.0  # offset (-1, +1): t[n] = y[n - (-1, 1)] -> y[m] = t[m + (-1, 1)]
    assert_close(arma.ar_solve(t, a), np.roll(t, (1, -1), axis=(-2, -1)))


def test_ar_solve_delta_kernel_is_identity_and_accepts_float32(rng):
    t = rng.standard_normal((2, 2, 4, 5)).astype(np.float32)
    a = np.zeros((2, 3, 3), np.float32)
    a[:, 1, 1] = 1
    y = arma.ar_solve(t, a)
    assert y.dtype == np.float64
    assert_close(y, t.astype(np.float64))


@pytest.mark.parametrize("shape", [(3, 2, 8, 8), (4, 4, 128, 130)])  # below / above the
def test_ar_solve_workers_do_not_change_results(rng, shape):       # threading threshold
    t = rng.standard_normal(shape)
    a = _stable_kernels(rng, shape[1], 3)
    g = rng.standard_normal(shape)
    y = arma.ar_solve(t, a, workers=1)
    assert np.array_equal(y, arma.ar_solve(t, a, workers=3))
    for one, many in zip(arma.ar_solve_backward(g, y, a, workers=1),
                         arma.ar_solve_backward(g, y, a, workers=3)):
        assert np.array_equal(one, many)
    assert (math.prod(shape) >= arma._PARALLEL_SCIPY_FFT_MIN) == (shape[0] == 4)


def _scipy_solve(t, a):
    """The scipy path of :func:`arma.ar_solve`, ``irfft2(rfft2(t) * (1 / A))``, and ``1 / A``."""
    from scipy import fft

    inv = 1.0 / arma._kernel_spectrum(a, t.shape[2:], 0.0, 1)
    return fft.irfft2(fft.rfft2(t) * inv, s=t.shape[2:]), inv


def _own_fft_bound(t, inv):
    """ar_solve's stated bound per entry and channel on lmref's FFT path:
    ``3 (2 E + 3) u max|1 / A_c| ||T[n, c]||_F``, ``E = E(H) + E(W)``."""
    e = transform_error(t.shape[2]) + transform_error(t.shape[3])
    norms = np.sqrt((t * t).sum(axis=(2, 3)))
    return 3 * (2 * e + 3) * 2.0 ** -53 * np.abs(inv).max(axis=(1, 2)) * norms


def test_own_fft_bound_on_power_of_two_grids_is_the_radix2_one():
    """On powers of two E = 10 log2(H W): the bound ``3 (20 L + 3) u ...`` of the radix-2 path."""
    for h, w in ((64, 64), (8, 16), (1, 32)):
        assert transform_error(h) + transform_error(w) == 10 * math.log2(h * w)


@pytest.mark.parametrize("shape,k,ratio", [
    ((3, 4, 64, 64), 3, 0.8), ((2, 3, 8, 16), 3, 0.8), ((5, 2, 4, 4), 3, 0.8),
    ((1, 2, 32, 8), 5, 0.8), ((1, 1, 2, 2), 1, 0.8), ((2, 2, 16, 16), 3, 0.999999),
    # 7-smooth grids: mixed radix (padded block widths 28 -> 32, 60 -> 64; 9, 5 unpadded)
    ((3, 4, 56, 56), 3, 0.8), ((2, 3, 28, 14), 3, 0.8), ((1, 2, 60, 12), 5, 0.8),
    ((5, 2, 7, 9), 3, 0.8), ((2, 2, 15, 21), 3, 0.999999), ((3, 1, 49, 5), 3, 0.8),
    ((2, 2, 6, 64), 3, 0.8)])
def test_ar_solve_own_fft_grid_within_the_stated_bound(rng, shape, k, ratio):
    """7-smooth grids (powers of two: radix 2; others: mixed radix): lmref's solve is within
    ar_solve's stated bound of scipy's (itself far closer to the exact solve with the same
    ``1 / A``), entry by entry: odd batches, a batch of one, nearly singular kernels (ratio
    0.999999), and entries of very different sizes in one batch (a pair shares one complex
    transform: the small entry's error must still scale with its own norm)."""
    assert arma._own_fft_grid(shape[2:])
    t = rng.standard_normal(shape) * np.exp(rng.uniform(-3, 3, shape[:2] + (1, 1)))
    t[::4] *= 1e12
    t[1::4] *= 1e-12
    a = _stable_kernels(rng, shape[1], k, ratio=ratio)
    y = arma.ar_solve(t, a)
    expected, inv = _scipy_solve(t, a)
    err = np.sqrt(((y - expected) ** 2).sum(axis=(2, 3)))
    assert (err <= _own_fft_bound(t, inv)).all()
    if ratio < 0.9:
        assert_close(y, arma.ar_solve_dense(t, a))


@pytest.mark.parametrize("length", [12, 100, 63, 1])
def test_ar_solve_1d_own_fft_within_the_stated_bound(rng, length):
    """1-D solves (an ``(N, C, 1, L)`` grid) on 7-smooth lengths take lmref's FFT too."""
    t = rng.standard_normal((3, 2, length))
    a = _stable_kernels(rng, 2, 1 if length == 1 else 3, ndim=1)
    y = arma.ar_solve(t, a)
    expected, inv = _scipy_solve(t[:, :, None, :], a[:, None, :])
    err = np.sqrt(((y - expected[:, :, 0]) ** 2).sum(axis=-1))
    assert (err <= _own_fft_bound(t[:, :, None, :], inv)).all()


def test_ar_solve_backward_on_a_mixed_radix_grid_matches_scipys_adjoint(rng):
    """The adjoint solve of ar_solve_backward (conjugate spectrum) on a 7-smooth grid: within
    the bound of the scipy path; grad_a (a direct correlation of grad_t with y) follows."""
    shape = (3, 2, 14, 21)
    y = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    a = _stable_kernels(rng, 2, 3)
    from scipy import fft

    inv = 1.0 / arma._kernel_spectrum(a, shape[2:], 0.0, 1)
    expected = fft.irfft2(fft.rfft2(g) * inv.conj(), s=shape[2:])
    grad_t, grad_a = arma.ar_solve_backward(g, y, a)
    err = np.sqrt(((grad_t - expected) ** 2).sum(axis=(2, 3)))
    assert (err <= _own_fft_bound(g, inv)).all()
    assert_close(grad_a, arma._ar_grad_a(expected, y, 3, 3), rtol=1e-10)


def test_ar_solve_other_grids_are_bitwise_scipys(rng):
    """Grids with a side that has a prime factor above 7, or beyond _OWN_FFT_MAX_PIXELS, keep
    scipy's transforms bit for bit."""
    assert arma._OWN_FFT_MAX_PIXELS == 256 * 256
    for shape in ((2, 3, 11, 8), (3, 2, 8, 13), (1, 2, 1, 22), (1, 1, 512, 256),
                  (1, 1, 256, 280)):
        assert not arma._own_fft_grid(shape[2:])
        t = rng.standard_normal(shape)
        a = _stable_kernels(rng, shape[1], 1 if shape[2] == 1 else 3)
        expected, _ = _scipy_solve(t, a)
        assert np.array_equal(arma.ar_solve(t, a).view(np.int64), expected.view(np.int64))


@pytest.mark.parametrize("shape", [(6, 3, 8, 8), (7, 2, 28, 7), (6, 3, 5, 56)])
def test_own_fft_solve_pairs_share_scratch_without_leaking(rng, shape):
    """A block of pairs reuses one set of scratch blocks (pad columns included): each pair's
    result is the one it gets solved alone, bit for bit, whatever came before it (here a
    pair of huge, one of tiny and one of ordinary entries)."""
    t = rng.standard_normal(shape)
    t[0:2] *= 1e300
    t[2:4] *= 1e-300
    a = _stable_kernels(rng, shape[1], 3)
    y = arma.ar_solve(t, a, workers=1)
    for k in range(0, shape[0], 2):
        alone = arma.ar_solve(t[k:k + 2], a, workers=1)
        assert np.array_equal(y[k:k + 2].view(np.int64), alone.view(np.int64))


@pytest.mark.parametrize("shape", [(5, 7, 7, 7), (4, 3, 14, 6), (9, 80, 7, 7), (5, 3, 28)])
def test_own_fft_solve_groups_of_pairs_do_not_change_the_bits(rng, monkeypatch, shape):
    """Small grids put several pairs side by side in one transform (``_pairs_per_group``):
    forward and backward have the bits of one pair at a time, for any group size (groups of
    2, of 5, the default, all pairs in one), an odd batch (a last pair without partner), a
    last short group and the parallel pair loop ((9, 80, 7, 7): above _PARALLEL_FFT_MIN)."""
    t = rng.standard_normal(shape)
    g = rng.standard_normal(shape)
    a = _stable_kernels(rng, shape[1], 3, ndim=len(shape) - 2)
    side = max(shape[2:])

    def solve(columns):
        monkeypatch.setattr(arma, "_GROUP_COLUMNS", columns)
        y = arma.ar_solve(t, a)
        return (y,) + tuple(arma.ar_solve_backward(g, y, a))

    assert arma._pairs_per_group(7, 7) > 1  # the default groups these grids
    alone = solve(1)
    for columns in (2 * side, 5 * side, arma._GROUP_COLUMNS, 10**6):
        for got, want in zip(solve(columns), alone):
            assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.parametrize("shape", [(5, 4, 64, 32), (5, 4, 56, 30)])
def test_own_fft_solve_pairs_do_not_depend_on_threads(rng, shape):
    """An odd batch above the threading threshold: serial and parallel pair loops agree (radix 2
    and mixed radix)."""
    t = rng.standard_normal(shape)
    a = _stable_kernels(rng, 4, 3)
    assert t.size >= arma._PARALLEL_FFT_MIN
    y = arma.ar_solve(t, a, workers=1)
    assert np.array_equal(y.view(np.int64), arma.ar_solve(t, a, workers=2).view(np.int64))


def test_ar_solve_inputs_untouched_output_fresh(rng):
    t = rng.standard_normal((1, 2, 5, 5))
    a = _stable_kernels(rng, 2, 3)
    t0, a0 = t.copy(), a.copy()
    y = arma.ar_solve(t, a)
    gt, ga = arma.ar_solve_backward(np.ones_like(y), y, a)
    np.testing.assert_array_equal(t, t0)
    np.testing.assert_array_equal(a, a0)
    for out in (y, gt, ga):
        assert not np.shares_memory(out, t) and not np.shares_memory(out, a)


@settings(max_examples=25, deadline=None)
@given(ar_solve_args(ndim=2), st.sampled_from([1, 2]))
def test_ar_solve_property_fft_dense_residual(case, ndim):
    (t, a), _ = case
    if ndim == 1:  # reuse the draw as a 1-D problem: first row, middle row of the kernel
        t, a = t[:, :, 0, :], np.ascontiguousarray(a[:, a.shape[1] // 2, :])
    y = arma.ar_solve(t, a)
    assert_close(y, arma.ar_solve_dense(t, a), rtol=1e-9, atol=1e-11)


def test_dense_zero_boundary_solves_its_system(rng):
    t = rng.standard_normal((2, 2, 5, 6))
    a = _stable_kernels(rng, 2, 3)
    y = arma.ar_solve_dense(t, a, boundary="zeros")
    np.testing.assert_allclose(_zero_boundary_conv(y, a), t, rtol=0, atol=1e-10)
    # and it differs from the circular solution (the boundary matters)
    assert np.abs(y - arma.ar_solve(t, a)).max() > 1e-3


def test_dense_zero_boundary_singular_system_raises():
    # a pure shift is invertible circularly but singular with zero boundary (a row is empty)
    a = np.array([[1.0, 0.0, 0.0]])
    t = np.ones((1, 1, 6))
    assert_close(arma.ar_solve_dense(t, a, "circular"), arma.ar_solve(t, a))
    with pytest.raises(ValueError, match="singular"):
        arma.ar_solve_dense(t, a, "zeros")


# singular circular systems (issue 18 item 2): the dense oracle refuses them like the FFT path;
# (kernel, t shape): each has a zero of its DFT on the grid, or one within 1e-14 of it
SINGULAR = [
    ([[0.5, 1.0, 0.5]], (1, 1, 8)),            # 1 + cos w = 0 at w = pi (the case)
    ([[1.0, -2.0, 1.0]], (1, 1, 7)),           # taps sum to 0: w = 0
    ([[1.0, 1.0, 1.0]], (1, 1, 6)),            # 1 + 2 cos w = 0 at w = 2 pi / 3
    ([[1.0, 0.0, -1.0]], (2, 1, 5)),           # 2i sin w = 0 at w = 0
    ([[1.0, 0.0, 2.0, 0.0, 1.0]], (1, 1, 8)),  # 2 + 2 cos 2w = 0 at w = pi / 2
    ([[0.5, 1.0, 0.5 - 1e-14]], (1, 1, 8)),    # numerically singular: cond ~ 4e14
    ([[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]], (1, 1, 5, 6)),  # Laplacian
    (np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5])[None], (1, 1, 4, 6)),
]


@pytest.mark.parametrize("kernel,shape", SINGULAR)
def test_dense_refuses_singular_circular_systems(kernel, shape, rng):
    t = rng.standard_normal(shape)
    with pytest.raises(ValueError, match=r"a: the AR kernel of channel 0 is not invertible"):
        arma.ar_solve(t, kernel)
    with pytest.raises(ValueError, match=r"a: the AR system of channel 0 with "
                                         r"boundary='circular' is singular"):
        arma.ar_solve_dense(t, kernel)


def test_dense_singularity_message_and_rcond():
    t = np.random.default_rng(0).standard_normal((1, 1, 8))
    with pytest.raises(ValueError, match=r"reciprocal 1-norm condition number is about "
                                         r"\S+ <= rcond = 1e-12"):
        arma.ar_solve_dense(t, [[0.5, 1.0, 0.5]])
    # cond ~ 4e10: solved (and equal to the FFT path), refused under a stricter rcond
    a = [[0.5, 1.0, 0.5 - 1e-10]]
    assert_close(arma.ar_solve_dense(t, a), arma.ar_solve(t, a), rtol=1e-4)
    with pytest.raises(ValueError, match="singular"):
        arma.ar_solve_dense(t, a, rcond=1e-8)
    with pytest.raises(ValueError, match=r"rcond must be in \[0, 1\)"):
        arma.ar_solve_dense(t, a, rcond=1.0)


@pytest.mark.parametrize("kernel,size,singular", [
    ([[1.0, 0.0, 1.0]], 7, True),   # tridiagonal, zero diagonal: eigenvalue 2 cos(4 pi / 8) = 0
    ([[1.0, 0.0, 1.0]], 6, False),  # even size: invertible
    ([[0.0, 0.0, 1.0]], 6, True),   # pure shift: an empty row
    ([[1.0, 2.0, 1.0]], 5, False),  # 2 + 2 cos(k pi / 6) > 0
])
def test_dense_zero_boundary_singularity(kernel, size, singular, rng):
    t = rng.standard_normal((1, 1, size))
    if singular:
        with pytest.raises(ValueError, match="boundary='zeros' is singular"):
            arma.ar_solve_dense(t, kernel, "zeros")
    else:
        y = arma.ar_solve_dense(t, kernel, "zeros")
        assert_close(_zero_boundary_conv(y[:, :, None], np.asarray(kernel)[:, None]), t[:, :, None])


def test_inverse_norm1_estimate_brackets_the_exact_norm(rng):
    """Hager's estimate is a lower bound, here within a factor 3 (LAPACK's experience)."""
    for n in (1, 2, 5, 12, 30):
        for _ in range(5):
            m = rng.standard_normal((n, n)) + n * np.eye(n) * rng.uniform(0, 1)
            inv = np.linalg.inv(m)
            est = arma._inverse_norm1_estimate(lambda v, tr: (inv.T if tr else inv) @ v, n)
            exact = np.abs(inv).sum(axis=0).max()
            assert exact / 3 <= est <= exact * (1 + 1e-12)


# ---------------------------------------------------------------------------------------------
# ar_solve: bad input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t_shape,a_shape,match", [
    ((1, 2, 6, 6), (2, 2, 2), "odd kernel sizes"),
    ((1, 2, 6, 6), (2, 3, 4), "odd kernel sizes"),
    ((1, 2, 4, 6), (2, 5, 5), "larger than the image"),
    ((1, 2, 6, 6), (3, 3, 3), "one kernel per channel"),
    ((1, 2, 6), (2, 3, 3), "2-dimensional"),
    ((2, 6, 6), (2, 3, 3), "2-dimensional"),
    ((6, 6), (1, 3, 3), "3 or 4-dimensional"),
    ((1, 2, 9), (2, 11), "larger than the image"),
])
def test_ar_solve_bad_shapes(t_shape, a_shape, match):
    a = np.zeros(a_shape)
    with pytest.raises(ValueError, match=match):
        arma.ar_solve(np.ones(t_shape), a)


@pytest.mark.parametrize("bad", ["t", "a"])
def test_ar_solve_nan_raises(rng, bad):
    t = rng.standard_normal((1, 2, 5, 5))
    a = _stable_kernels(rng, 2, 3)
    arr = t if bad == "t" else a
    arr[(0,) * (arr.ndim - 1) + (1,)] = np.nan
    with pytest.raises(ValueError, match=f"^{bad} contains 1 non-finite"):
        arma.ar_solve(t, a)


NON_FINITE_GRIDS = [(1, 1, 5, 6), (2, 2, 3, 7), (1, 1, 4, 4), (1, 1, 1, 1031)]


def _spread_positions(shape, rng):
    """Every position of a small grid; first, last and 8 random ones of a large one."""
    size = int(np.prod(shape))
    flat = range(size) if size <= 64 else [0, size - 1, *rng.integers(0, size, 8)]
    return [np.unravel_index(i, shape) for i in flat]


@pytest.mark.parametrize("shape", NON_FINITE_GRIDS)
def test_non_finite_inputs_are_found_through_the_transforms(rng, shape):
    """t, y and grad_y are checked for NaN/Inf through their spectra's DC bins or grad_a, not
    by a pass of their own: a NaN, +Inf or -Inf at any position (1031: Bluestein's
    transform) is still found and named."""
    a = _stable_kernels(rng, shape[1], 3) if shape[2] >= 3 else np.array(
        [[[0.0, 0.0, 0.0], [0.2, 1.0, -0.3], [0.0, 0.0, 0.0]]] * shape[1])[:, 1:2, :]
    for value in (np.nan, np.inf, -np.inf):
        for pos in _spread_positions(shape, rng):
            for name in ("t", "y", "grad_y"):
                arrs = {k: rng.standard_normal(shape) for k in ("t", "y", "grad_y")}
                arrs[name][pos] = value
                with pytest.raises(ValueError, match=f"^{name} contains 1 non-finite"):
                    if name == "t":
                        arma.ar_solve(arrs["t"], a)
                    else:
                        arma.ar_solve_backward(arrs["grad_y"], arrs["y"], a)


def test_non_finite_y_found_on_the_spectral_grad_a_path(rng):
    y = rng.standard_normal((1, 1, 7, 7))
    y[0, 0, 3, 5] = np.inf
    with pytest.raises(ValueError, match="^y contains 1 non-finite"):
        arma.ar_solve_backward(np.ones_like(y), y, _stable_kernels(rng, 1, 7))  # 49 taps


def test_overflow_from_finite_inputs_is_not_refused():
    """A finite t whose spectrum overflows passes the check (as before): the check is of the
    input, not of the arithmetic (scipy's transforms: an 11 x 4 grid). On 7-smooth grids lmref's
    FFT scales each image by a power of two first: no overflow; the exact answer on powers of
    two (a constant's differences are exact zeros), within a few ulps on mixed radix (the odd
    butterflies' twiddle sums are not)."""
    a = np.zeros((1, 3, 3))
    a[0, 1, 1] = 1.0
    with np.errstate(over="ignore", invalid="ignore"):
        y = arma.ar_solve(np.full((1, 1, 11, 4), 1.5e308), a)
    assert not np.isfinite(y).all()
    for spatial in ((4, 4), (3, 4), (7, 6)):
        t = np.full((2, 1) + spatial, 1.5e308)
        t[1] = 1e-300
        if spatial == (4, 4):
            np.testing.assert_array_equal(arma.ar_solve(t, a), t)
        else:
            np.testing.assert_allclose(arma.ar_solve(t, a), t, rtol=1e-14, atol=0)


@pytest.mark.parametrize("spatial", [(64, 64), (60, 60), (7, 9), (97, 101), (1, 11), (5, 6),
                                     (1, 1), (3, 1), (13, 1031)])
def test_split_irfft2_and_kernel_spectrum_are_bitwise_scipys(rng, spatial):
    """The faster in-place inverse transform and the tap-rows-only kernel spectrum give
    scipy.fft.irfft2 / rfft2(_embed_kernel) bit for bit, at any scale."""
    from scipy import fft

    h, w = spatial
    for scale in (1.0, 1e-300, 1e300):
        spec = fft.rfft2(rng.standard_normal((2, 3, h, w)) * scale)
        spec *= rng.standard_normal(spec.shape[1:]) + 1j * rng.standard_normal(spec.shape[1:])
        expected = fft.irfft2(spec, s=spatial)
        actual = arma._irfft2(spec.copy(), spatial, 2)
        assert np.array_equal(actual.view(np.int64), expected.view(np.int64))
    for kh, kw in ((1, 1), (3, 3), (1, 3), (3, 5), (7, 7)):
        if kh <= h and kw <= w:
            a3 = rng.standard_normal((3, kh, kw))
            expected = fft.rfft2(arma._embed_kernel(a3, spatial))
            actual = arma._kernel_spectrum(a3, spatial, 0.0, 1)
            assert np.array_equal(actual.view(np.int64), expected.view(np.int64))


@pytest.mark.parametrize("kernel,size", [
    ([0.5, 1.0, 0.5], 8),    # DFT 1 + cos(w) = 0 at w = pi
    ([-0.5, 1.0, -0.5], 5),  # DFT 1 - cos(w) = 0 at w = 0 (any size)
    ([0.0, 0.0, 0.0], 5),    # all zero
])
def test_ar_solve_non_invertible_kernel_raises(kernel, size):
    a = np.array([kernel, [0.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"a: the AR kernel of channel 0 is not invertible"):
        arma.ar_solve(np.ones((1, 2, size)), a)


def test_ar_solve_rcond_is_the_threshold():
    # min |DFT| of [0.5, 1, 0.5] on an odd grid of 7 is 1 + cos(6 pi / 7) = 0.099
    a = np.array([[0.5, 1.0, 0.5]])
    t = np.ones((1, 1, 7))
    arma.ar_solve(t, a, rcond=0.049)
    with pytest.raises(ValueError, match="rcond"):
        arma.ar_solve(t, a, rcond=0.051)
    with pytest.raises(ValueError, match=r"rcond must be in \[0, 1\)"):
        arma.ar_solve(t, a, rcond=1.5)


@pytest.mark.parametrize("kw,err,match", [
    ({"workers": 0}, ValueError, "workers must be >= 1"),
    ({"workers": 1.5}, TypeError, "workers must be an integer"),
    ({"rcond": "x"}, TypeError, "rcond must be a real number"),
    ({"workers": 10**30}, ValueError, "workers must be <= "),    # issue 18 item 8b
    ({"rcond": 10**400}, ValueError, "rcond must be a finite real number within"),
])
def test_ar_solve_bad_options(kw, err, match):
    with pytest.raises(err, match=match):
        arma.ar_solve(np.ones((1, 1, 5)), np.array([[0.0, 1.0, 0.0]]), **kw)


@pytest.mark.parametrize("bad", [np.ones((1, 1, 5), bool), np.ones((1, 1, 5), complex)])
def test_ar_solve_bad_dtype(bad):
    with pytest.raises(TypeError, match="^t must have a real"):
        arma.ar_solve(bad, np.array([[0.0, 1.0, 0.0]]))


def test_ar_solve_backward_bad_grad_shape(rng):
    y = rng.standard_normal((1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"grad_y must have shape \(1, 2, 5, 5\)"):
        arma.ar_solve_backward(np.ones((1, 2, 5, 4)), y, _stable_kernels(rng, 2, 3))


# ---------------------------------------------------------------------------------------------
# ar_solve backward: finite differences, torch autograd, both grad_a paths
# ---------------------------------------------------------------------------------------------

BWD_CASES = [((2, 2, 5, 6), 3, 2), ((1, 2, 7, 7), 7, 2), ((2, 3, 9), 3, 1), ((1, 2, 8), 7, 1)]


@pytest.mark.parametrize("shape,k,ndim", BWD_CASES)
def test_ar_solve_backward_gradcheck(rng, shape, k, ndim):
    t = rng.standard_normal(shape)
    a = _stable_kernels(rng, shape[1], k, ndim=ndim)
    g = rng.standard_normal(shape)
    gradcheck(lambda t_, a_: arma.ar_solve(t_, a_), [t, a], g,
              lambda go, t_, a_: arma.ar_solve_backward(go, arma.ar_solve(t_, a_), a_),
              max_checks=40)


@pytest.mark.parametrize("shape,k,ndim", BWD_CASES)
def test_ar_solve_backward_matches_torch_autograd(torch, rng, shape, k, ndim):
    from lmref.peers import torch_arma

    t = rng.standard_normal(shape)
    a = _stable_kernels(rng, shape[1], k, ndim=ndim)
    g = rng.standard_normal(shape)
    y = arma.ar_solve(t, a)
    y_t, (gt_t, ga_t) = run_peer(torch_arma.ar_solve, (t, a), {}, g)
    gt, ga = arma.ar_solve_backward(g, y, a)
    assert_close(y, y_t, rtol=1e-10, atol=1e-12)
    assert_close(gt, gt_t, rtol=1e-10, atol=1e-12)
    assert_close(ga, ga_t, rtol=1e-10, atol=1e-11)


def test_grad_a_spatial_and_spectral_paths_agree(rng, monkeypatch):
    t = rng.standard_normal((2, 3, 6, 7))
    a = _stable_kernels(rng, 3, 5)
    y = arma.ar_solve(t, a)
    g = rng.standard_normal(t.shape)
    spatial = arma.ar_solve_backward(g, y, a)
    monkeypatch.setattr(arma, "_SPATIAL_TAPS_MAX", 0)
    spectral = arma.ar_solve_backward(g, y, a)
    for s, f in zip(spatial, spectral):
        assert_close(s, f, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("shape,k", [((2, 3, 6, 7), 3), ((3, 5, 9, 8), 5), ((2, 2, 1, 9), 1)])
def test_grad_a_serial_and_parallel_kernels_agree_bitwise(rng, shape, k):
    gt, y = rng.standard_normal(shape), rng.standard_normal(shape)
    kh = 1 if shape[2] == 1 else k
    one, many = (np.empty((shape[1], kh, k)) for _ in range(2))
    arma._ar_grad_a_serial(gt, y, kh, k, one)
    arma._ar_grad_a_parallel(gt, y, kh, k, many)
    assert np.array_equal(one.view(np.int64), many.view(np.int64))
    assert np.array_equal(arma._ar_grad_a(gt, y, kh, k), one)


def _grad_a_in_order(gt, y, kh, kw):
    """_ar_grad_a's documented order in NumPy: per channel and tap a vector over the columns
    accumulating ``gt[n, c, i] * y[n, c, i - dh]`` (circular, column shift ``dw``) for ``n``,
    then ``i`` ascending, then its sum over the columns in order, from 0.0."""
    nb, nc, h, w = gt.shape
    out = np.empty((nc, kh, kw))
    for c in range(nc):
        for p in range(kh):
            for q in range(kw):
                acc = np.zeros(w)
                for n in range(nb):
                    for i in range(h):
                        row = y[n, c, (i - (p - kh // 2)) % h]
                        acc += gt[n, c, i] * np.roll(row, q - kw // 2)
                total = 0.0
                for v in acc:
                    total += v
                out[c, p, q] = -total
    return out


@pytest.mark.parametrize("shape,k", [((2, 3, 6, 7), 3), ((3, 2, 9, 8), 5), ((2, 2, 1, 9), 1),
                                     ((1, 2, 3, 3), 3), ((2, 1, 5, 1), 1)])
def test_grad_a_kernel_is_its_documented_order_bitwise(rng, shape, k):
    """The spatial grad_a (rows of y kept twice, every shift one run) gives the bits of its
    documented summation order, replayed in NumPy."""
    gt, y = rng.standard_normal(shape), rng.standard_normal(shape)
    kh = 1 if shape[2] == 1 else k
    kw = 1 if shape[3] == 1 else k
    np.testing.assert_array_equal(arma._ar_grad_a(gt, y, kh, kw), _grad_a_in_order(gt, y, kh, kw))


def test_ar_solve_backward_is_the_dense_adjoint(rng):
    """grad_t = M^-T g and grad_a[d] = -grad_t . (shift_d y), with M the dense circulant."""
    t = rng.standard_normal((1, 1, 4, 5))
    a = _stable_kernels(rng, 1, 3)
    y = arma.ar_solve(t, a)
    g = rng.standard_normal(t.shape)
    eye = np.eye(20).reshape(20, 1, 1, 4, 5)
    mat = np.stack([_circular_conv(e, a).ravel() for e in eye], axis=1)  # columns: M e_j
    grad_t_dense = np.linalg.solve(mat.T, g.ravel()).reshape(t.shape)
    gt, ga = arma.ar_solve_backward(g, y, a)
    assert_close(gt, grad_t_dense)
    for p in range(3):
        for q in range(3):
            assert ga[0, p, q] == pytest.approx(
                -np.sum(grad_t_dense * np.roll(y, (p - 1, q - 1), axis=(-2, -1))), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# separable kernels, re-parameterisation, stability
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("q", [1, 2, 3])
def test_separable_kernel_is_outer_product_of_convolved_factors(rng, q):
    f, g = rng.standard_normal((2, q, 3)), rng.standard_normal((2, q, 3))
    k = arma.separable_ar_kernel(f, g)
    assert k.shape == (2, 2 * q + 1, 2 * q + 1)
    for c in range(2):
        F, G = f[c, 0], g[c, 0]
        for i in range(1, q):
            F, G = np.convolve(F, f[c, i]), np.convolve(G, g[c, i])
        assert_close(k[c], np.outer(F, G))


def test_separable_kernel_solve_equals_cascade_of_3x3_solves(rng):
    """The official code solves its Q 3x3 kernels one after the other: same as one kernel."""
    f = rng.uniform(-0.4, 0.4, (2, 3, 3))
    g = rng.uniform(-0.4, 0.4, (2, 3, 3))
    f[..., 1] = g[..., 1] = 1.0
    t = rng.standard_normal((2, 2, 9, 8))
    y = arma.ar_solve(t, arma.separable_ar_kernel(f, g))
    z = t
    for q in range(3):
        z = arma.ar_solve(z, arma.separable_ar_kernel(f[:, q:q + 1], g[:, q:q + 1]))
    assert_close(y, z)


@pytest.mark.parametrize("q", [1, 3])
def test_separable_kernel_backward(rng, q):
    f, g = rng.standard_normal((2, q, 3)), rng.standard_normal((2, q, 3))
    gk = rng.standard_normal((2, 2 * q + 1, 2 * q + 1))
    gradcheck(arma.separable_ar_kernel, [f, g], gk, arma.separable_ar_kernel_backward,
              max_checks=None)


@pytest.mark.parametrize("f_shape,g_shape,match", [
    ((2, 1, 4), (2, 1, 4), "length-3 factors"),
    ((2, 1, 3), (2, 2, 3), r"g must have shape \(2, 1, 3\)"),
    ((2, 3), (2, 3), "3-dimensional"),
])
def test_separable_kernel_bad_input(f_shape, g_shape, match):
    with pytest.raises(ValueError, match=match):
        arma.separable_ar_kernel(np.ones(f_shape), np.ones(g_shape))


@pytest.mark.parametrize("form", arma.FORMS)
def test_reparameterize_backward(rng, form):
    al, be = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    g = rng.standard_normal((3, 2, 3))
    gradcheck(lambda x, y: arma.reparameterize(x, y, 1.3, form=form), [al, be], g,
              lambda go, x, y: arma.reparameterize_backward(go, x, y, 1.3, form=form),
              max_checks=None)


@pytest.mark.parametrize("form", arma.FORMS)
def test_reparameterize_matches_torch(torch, rng, form):
    from lmref.peers import torch_arma

    al, be = rng.standard_normal(5), rng.standard_normal(5)
    g = rng.standard_normal((5, 3))
    out, (ga, gb) = run_peer(torch_arma.reparameterize, (al, be), {"a0": 0.7, "form": form}, g)
    assert_close(arma.reparameterize(al, be, 0.7, form=form), out)
    mine = arma.reparameterize_backward(g, al, be, 0.7, form=form)
    assert_close(mine[0], ga)
    assert_close(mine[1], gb)


def test_reparameterize_printed_formulas():
    f = arma.reparameterize(0.3, -1.2, 2.0, form="paper")  # eqs. 16-17 verbatim
    h = math.sqrt(2) / 2
    assert_close(f, [2 * (h * math.tanh(0.3) + h * 1.2), 2.0, 2 * (h * math.tanh(0.3) - h * 1.2)])
    off = arma.reparameterize(0.3, -1.2, form="official")
    assert_close(off, [h * (math.tanh(0.3) - math.tanh(-1.2)), 1.0,
                       h * (math.tanh(0.3) + math.tanh(-1.2))])


def test_theorem_11_over_a_grid():
    """Theorem 11 claims eqs. 17 satisfy eq. 15 for all (alpha, beta): false; 'safe' does."""
    grid = np.linspace(-6, 6, 121)
    al, be = np.meshgrid(grid, grid, indexing="ij")
    for a0 in (0.5, 1.0, 3.0):
        assert arma.is_stable(arma.reparameterize(al, be, a0, form="safe")).all()
        for form in ("paper", "official"):
            ok = arma.is_stable(arma.reparameterize(al, be, a0, form=form))
            # violated exactly where sqrt(2) |tanh(alpha)| >= 1
            np.testing.assert_array_equal(ok, math.sqrt(2) * np.abs(np.tanh(al)) < 1)
    # beyond the grid: safe holds while float64 keeps tanh(alpha) below 1 by more than the
    # rounding of a_-1 + a_1 (documented) ...
    far_a, far_b = np.meshgrid([-15.0, -10.0, 10.0, 15.0], [-100.0, -1.0, 0.0, 1.0, 100.0])
    assert arma.is_stable(arma.reparameterize(far_a, far_b, form="safe")).all()
    # ... and meets the band's edge where tanh rounds to 1: [-0.5, 1, -0.5] has DFT 0 at w = 0
    edge = arma.reparameterize(-20.0, 0.0, form="safe")
    assert_close(edge, [-0.5, 1.0, -0.5])
    assert not arma.is_stable(edge)
    with pytest.raises(ValueError, match="not invertible"):
        arma.ar_solve(np.ones((1, 1, 5)), edge[None])


def test_paper_counter_example_is_singular_and_safe_is_not():
    alpha = math.asinh(1.0)  # tanh = 1/sqrt(2)
    fac = arma.reparameterize(alpha, 0.0, form="paper")
    assert_close(fac, [0.5, 1.0, 0.5])
    with pytest.raises(ValueError, match="not invertible"):
        arma.ar_solve(np.ones((1, 1, 8)), fac[None])
    fac_off = arma.reparameterize(1.0, 0.0, form="official")
    st_off = arma.ar_stability_1d(fac_off)
    assert not st_off.stable and st_off.on_circle == 2  # DTFT zero at w = 2.761
    w = math.acos(-1 / (2 * fac_off[0]))
    assert w == pytest.approx(2.7610, abs=1e-4)
    st_safe = arma.ar_stability_1d(arma.reparameterize(1.0, 0.0, form="safe"))
    assert st_safe.stable and st_safe.inside == st_safe.outside == 1


def test_official_factors_mapping(rng):
    code = rng.standard_normal((3, 2, 2, 2))
    f, g = arma.official_ar_factors(code)
    u, v = np.tanh(code[..., 0, 0]), np.tanh(code[..., 0, 1])
    h = math.sqrt(0.5)
    assert_close(f, np.stack([h * (u + v), np.ones_like(u), h * (v - u)], axis=-1))
    assert_close(g, arma.reparameterize(code[..., 1, 1], -code[..., 1, 0], form="official"))


@pytest.mark.parametrize("kw,err,match", [
    ({"a0": 0.0}, ValueError, "a0 must be > 0"),
    ({"form": "tanh"}, ValueError, "form must be one of"),
    ({"a0": float("nan")}, ValueError, "a0 must be finite"),
])
def test_reparameterize_bad_options(kw, err, match):
    with pytest.raises(err, match=match):
        arma.reparameterize(np.zeros(2), np.zeros(2), **kw)


def test_reparameterize_shape_mismatch_and_nan():
    with pytest.raises(ValueError, match=r"beta must have shape .*got \(3,\)"):
        arma.reparameterize(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="alpha contains 1 non-finite"):
        arma.reparameterize(np.array([0.0, np.nan]), np.zeros(2))


@settings(max_examples=30, deadline=None)
@given(ar_factors())
def test_theorem_9_factors_have_one_zero_inside_one_outside(f):
    assert arma.is_stable(f).all()
    for fac in f.reshape(-1, 3):
        s = arma.ar_stability_1d(fac)
        assert s.stable and s.inside == 1 and s.outside == 1


def test_theorem_9_condition_equals_root_split(rng):
    """With centre 1, eq. 15 holds iff one zero is inside and one outside (Lemma 19)."""
    facs = rng.uniform(-1.5, 1.5, (400, 3))
    facs[:, 1] = 1.0
    thm9 = arma.is_stable(facs)
    split = [(lambda s: s.inside == 1 and s.outside == 1)(arma.ar_stability_1d(f)) for f in facs]
    np.testing.assert_array_equal(thm9, split)
    assert 50 < thm9.sum() < 350  # both outcomes are exercised


def test_theorem_9_is_not_necessary():
    """[1, 1, 0.5] violates eq. 15, yet its zeros (-1 +- i)/2 are inside: stable, causal."""
    fac = np.array([1.0, 1.0, 0.5])
    assert not arma.is_stable(fac)
    s = arma.ar_stability_1d(fac)
    assert s.stable and s.inside == 2 and s.outside == 0
    z = np.sort_complex(arma.ar_zeros(fac))
    np.testing.assert_allclose(z, [-0.5 - 0.5j, -0.5 + 0.5j], rtol=0, atol=1e-14)
    # its inverse decays: the circular solve of a delta is small far from the origin
    y = arma.ar_solve(np.eye(1, 64)[None], fac[None])
    assert np.abs(y[0, 0, 20:44]).max() < 1e-3


def test_stability_1d_general_kernels():
    assert arma.is_stable_1d(np.array([0.0, 1.0, -0.9]))          # causal, zero at 0.9
    assert not arma.is_stable_1d(np.array([0.0, 1.0, -1.0]))      # zero on the circle
    s = arma.ar_stability_1d(np.array([0.0, 0.0, 1.0, -2.0, 0.0]))  # zeros at 2, 0 and inf x2
    assert (s.inside, s.outside, s.on_circle) == (1, 3, 0)
    np.testing.assert_array_equal(
        arma.is_stable_1d(np.array([[0.5, 1.0, 0.5], [0.2, 1.0, 0.3]])), [False, True])
    # a subnormal leading tap is a zero (near) infinity, not an overflow
    s = arma.ar_stability_1d(np.array([1.7e-310, 1.0, -2.9e-310]))
    assert s.stable and (s.inside, s.outside) == (1, 1)
    with pytest.raises(ValueError, match="odd length"):
        arma.ar_zeros(np.ones(4))
    with pytest.raises(ValueError, match="all zeros"):
        arma.ar_zeros(np.zeros(3))
    with pytest.raises(ValueError, match="last axis of length 3"):
        arma.is_stable(np.ones((2, 4)))


# ---------------------------------------------------------------------------------------------
# ERF: radii and maps
# ---------------------------------------------------------------------------------------------

def test_erf_radius_forms_counter_example():
    m = np.array([1.0, 1.0, 1.0]) / 3
    assert arma.erf_radius(m) == pytest.approx(math.sqrt(2 / 3), rel=1e-14)
    assert arma.erf_radius(m, form="paper") == pytest.approx(math.sqrt(2 / 9), rel=1e-14)
    assert arma.erf_radius_cnn(3, 1) == pytest.approx(math.sqrt(2 / 3), rel=1e-14)
    causal = np.array([0.0, 0.0, 1.0, 1.0, 1.0]) / 3  # p = 0, 1, 2: both forms agree
    assert arma.erf_radius(causal) == pytest.approx(arma.erf_radius(causal, form="paper"))


def test_erf_radius_closed_forms():
    assert arma.erf_radius_arma(5, 4, 0.0) == pytest.approx(arma.erf_radius_cnn(5, 4))
    assert arma.erf_radius_arma(3, 2, 0.5) == pytest.approx(math.sqrt(2 * (8 / 12 + 2)))
    with pytest.raises(ValueError, match="0 <= a < 1"):
        arma.erf_radius_arma(3, 2, 1.0)
    with pytest.raises(ValueError, match="erf_map must be non-negative"):
        arma.erf_radius(np.array([1.0, -1.0, 1.0]))


def test_erf_of_ar_only_network_is_its_normalised_inverse():
    """One AR layer [0, 1, -a]: the gradient map is the geometric inverse a^p, p >= 0."""
    a, n = 0.6, 257
    m = arma.erf([("ar", np.array([[0.0, 1.0, -a]]))], (1, n))
    p = np.arange(n) - n // 2
    expected = np.where(p >= 0, a ** np.clip(p, 0, None), 0.0)
    assert_close(m, expected / expected.sum(), atol=1e-14)
    # (the FFT's 1e-17 noise floor over 257 offsets weighs p^2 up to 1.6e4: rel ~ 1e-11)
    assert arma.erf_radius(m) == pytest.approx(math.sqrt(a) / (1 - a), rel=1e-10)


# ---------------------------------------------------------------------------------------------
# the ARMA layer
# ---------------------------------------------------------------------------------------------

ARMA_CASES = [
    dict(),
    dict(padding_mode="zeros", dilation=2),
    dict(padding=1, padding_mode="reflect", bias=True),
    dict(padding="same", padding_mode="replicate", groups=2, bias=True),
    dict(stride=2, padding=1, padding_mode="zeros"),
]


def _arma_case(rng, kw, k_ar=3):
    kw = dict(kw)
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 2, 7, 8))
    w = rng.standard_normal((4, 2 // groups, 3, 3)) / 3  # outputs O(1): FD noise ~1e-10
    bias = rng.standard_normal(4) if kw.pop("bias", False) else None
    return x, w, _stable_kernels(rng, 4, k_ar), bias, kw


@pytest.mark.parametrize("kw", ARMA_CASES)
def test_arma2d_with_delta_kernel_equals_conv2d(rng, kw):
    from lmref.conv import conv2d

    x, w, _, bias, kw = _arma_case(rng, kw)
    delta = np.zeros((4, 3, 3))
    delta[:, 1, 1] = 1.0
    ref = conv2d(x, w, bias, **{"padding": "same", "padding_mode": "circular", **kw})
    assert_close(arma.arma2d(x, w, delta, bias, **kw), ref)


@pytest.mark.parametrize("kw", ARMA_CASES)
def test_arma2d_is_conv_then_solve_and_equals_reference(rng, kw):
    from lmref.conv import conv2d

    x, w, a, bias, kw = _arma_case(rng, kw)
    y = arma.arma2d(x, w, a, bias, **kw)
    t = conv2d(x, w, bias, **{"padding": "same", "padding_mode": "circular", **kw})
    np.testing.assert_allclose(_circular_conv(y, a), t, rtol=0, atol=1e-10)
    assert_close(y, arma._arma2d_reference(x, w, a, bias, **kw))


@pytest.mark.parametrize("kw", ARMA_CASES)
def test_arma2d_backward_gradcheck(rng, kw):
    x, w, a, bias, kw = _arma_case(rng, kw)
    args = [x, w, a] + ([bias] if bias is not None else [])
    g = rng.standard_normal(arma.arma2d(*args, **kw).shape)
    gradcheck(lambda *z: arma.arma2d(*z, **kw), args, g,
              lambda go, *z: arma.arma2d_backward(go, *z, **kw)[:len(args)], max_checks=30)
    if bias is None:
        assert arma.arma2d_backward(g, x, w, a, **kw)[3] is None


@pytest.mark.parametrize("kw", ARMA_CASES)
def test_arma2d_matches_torch_autograd(torch, rng, kw):
    from lmref.peers import torch_arma

    x, w, a, bias, kw = _arma_case(rng, kw, k_ar=3 if "stride" in kw else 5)
    args = (x, w, a) + ((bias,) if bias is not None else ())
    y = arma.arma2d(*args, **kw)
    g = rng.standard_normal(y.shape)
    y_t, grads_t = run_peer(torch_arma.arma2d, args, kw, g)
    assert_close(y, y_t, rtol=1e-10, atol=1e-11)
    for mine, theirs in zip(arma.arma2d_backward(g, *args, **kw), grads_t):
        assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_arma2d_dilation_is_in_the_moving_average_part(rng):
    from lmref.conv import conv2d

    x, w, a, _, _ = _arma_case(rng, {})
    y = arma.arma2d(x, w, a, dilation=3)
    t = conv2d(x, w, padding="same", dilation=3, padding_mode="circular")
    assert_close(y, arma.ar_solve(t, a))


@pytest.mark.parametrize("bad,match", [
    ("a_channels", "one kernel per channel"),
    ("a_even", "odd kernel sizes"),
    ("a_nan", "a contains 1 non-finite"),
    ("x_nan", "x contains 1 non-finite"),
    ("w_nan", "weight contains 1 non-finite"),
    ("grad", r"grad_y must have shape"),
])
def test_arma2d_bad_input(rng, bad, match):
    x, w, a, _, _ = _arma_case(rng, {})
    g = np.ones((2, 4, 7, 8))
    if bad == "a_channels":
        a = a[:3]
    elif bad == "a_even":
        a = np.ones((4, 2, 2))
    elif bad == "a_nan":
        a[1, 0, 0] = np.nan
    elif bad == "x_nan":
        x[0, 0, 0, 0] = np.nan
    elif bad == "w_nan":
        w[0, 0, 0, 0] = np.inf
    else:
        g = np.ones((2, 4, 7, 7))
    with pytest.raises(ValueError, match=match):
        arma.arma2d_backward(g, x, w, a)
    if bad != "grad":
        with pytest.raises(ValueError, match=match):
            arma.arma2d(x, w, a)


@pytest.mark.parametrize("kw", ARMA_CASES + [dict(dilation=2, bias=True)])
@pytest.mark.parametrize("k_ar", [3, 7])
def test_arma2d_backward_with_y_is_within_its_stated_bound(rng, kw, k_ar):
    """``y=`` skips the convolution: grad_x, grad_weight, grad_bias bitwise those of
    ``y=None``, grad_a within the docstring's bound, and the AR part is ar_solve_backward."""
    x, w, a, bias, kw = _arma_case(rng, kw, k_ar=k_ar if "stride" not in kw else 3)
    y = arma.arma2d(x, w, a, bias, **kw)
    g = rng.standard_normal(y.shape)
    plain = arma.arma2d_backward(g, x, w, a, bias, **kw)
    fast = arma.arma2d_backward(g, x, w, a, bias, y=y, **kw)
    for i in (0, 1, 3):
        assert (plain[i] is None and fast[i] is None) or np.array_equal(plain[i], fast[i])
    grad_t, grad_a = arma.ar_solve_backward(g, y, a)
    assert np.array_equal(fast[2], grad_a)
    n, c, h, wd = y.shape
    norms = np.sqrt((grad_t ** 2).sum(axis=(0, 2, 3)) * (y ** 2).sum(axis=(0, 2, 3)))
    bound = (n * h + wd + n + 10 * math.log2(h * wd) + 10) * 2.0 ** -53 * norms
    assert (np.abs(fast[2] - plain[2]).reshape(c, -1).max(axis=1) <= bound).all()


def test_arma2d_backward_y_is_validated(rng):
    x, w, a, _, _ = _arma_case(rng, {})
    y = arma.arma2d(x, w, a)
    g = np.ones_like(y)
    with pytest.raises(ValueError, match=r"^y must have shape \(2, 4, 7, 8\)"):
        arma.arma2d_backward(g, x, w, a, y=y[:, :, :, :7])
    with pytest.raises(ValueError, match=r"grad_y must have shape"):
        arma.arma2d_backward(g[:, :, :6], x, w, a, y=y)
    y[1, 2, 3, 4] = np.nan
    with pytest.raises(ValueError, match="^y contains 1 non-finite"):
        arma.arma2d_backward(g, x, w, a, y=y)
    g[0, 0, 0, 0] = np.inf
    for y_arg in (None, y):
        with pytest.raises(ValueError, match="^grad_y contains 1 non-finite"):
            arma.arma2d_backward(g, x, w, a, y=y_arg)


# ---------------------------------------------------------------------------------------------
# ERF of conv / ARMA networks (Def. 2, eqs. 4-6, Fig. 3)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("K,L,a", [(3, 1, 0.0), (3, 4, 0.0), (5, 3, 0.0), (3, 1, 0.5),
                                   (3, 5, 0.8), (4, 3, 0.6), (2, 9, 0.9)])
def test_erf_causal_1d_matches_eq6(K, L, a):
    """Theorem 4's network on a long domain: the empirical radius is eq. 6 (eq. 5 at a = 0)."""
    layer = arma._causal_layer_1d(K, a)
    m = arma.erf([layer] * L, (1, 2049), positions="centre")
    expected = arma.erf_radius_arma(K, L, a)
    if a == 0:
        assert expected == arma.erf_radius_cnn(K, L)
    # both radius forms agree (all mass at p >= 0); residual = FFT noise floor over the domain
    assert arma.erf_radius(m) == pytest.approx(expected, rel=1e-8)
    assert arma.erf_radius(m, form="paper") == pytest.approx(expected, rel=1e-8)
    assert m[:2049 // 2 - 1].max() < 1e-12  # nothing at p < 0: causal


def test_erf_all_positions_equals_centre_for_circular_network(rng):
    w = np.abs(rng.standard_normal((2, 2, 3, 3)))
    a = _stable_kernels(rng, 2, 3)
    layers = [("arma", w, a, {"padding": "same", "padding_mode": "circular"}), ("ar", a)]
    m_all = arma.erf(layers, (2, 6, 7), batch=7)
    m_c = arma.erf(layers, (2, 6, 7), positions="centre")
    assert m_all.shape == (6, 7) and m_all.sum() == pytest.approx(1.0)
    assert_close(m_all, m_c, atol=1e-14)


def test_erf_zero_padded_conv_matches_hand_count():
    """1-D, one uniform 3-tap zero-padded conv on 4 pixels: maps over p = i' - i in [-3, 3]."""
    w = np.ones((1, 1, 3)) / 3
    m = arma.erf([("conv", w, {"padding": 1})], (1, 4))
    # outputs 0 and 3 see 2 inputs (p in {0,-1} / {1,0}), outputs 1, 2 see 3 (p in {-1,0,1})
    expected = np.zeros(7)
    expected[3 + np.array([0, -1])] += 0.5
    expected[3 + np.array([1, 0])] += 0.5
    expected[3 + np.array([-1, 0, 1])] += 2 / 3
    assert_close(m, expected / 4)


def test_erf_bad_input():
    w = np.ones((1, 1, 3))
    with pytest.raises(ValueError, match="size-preserving"):
        arma.erf([("conv", w)], (1, 8))
    with pytest.raises(ValueError, match=r"layers\[0\] must be"):
        arma.erf([("pool", w)], (1, 8))
    with pytest.raises(ValueError, match="input_shape must be"):
        arma.erf([("conv", w, {"padding": 1})], (8,))
    with pytest.raises(ValueError, match="outside the output"):
        arma.erf([("conv", w, {"padding": 1})], (1, 8), positions=[(9,)])


@pytest.mark.parametrize("gain", [1e3, 1e-5])
def test_erf_deep_network_neither_overflows_nor_underflows(gain):
    """Issue 18 item 3: 100 layers of gain ~9e3 (or 9e-5) overflow (underflow) float64; the
    map is normalised, so it equals the unit-weight network's (up to the rounding of the
    non-power-of-two weights) instead of NaN or 'does not depend on the input'."""
    layer = ("conv", np.full((1, 1, 3, 3), gain), {"padding": "same"})
    unit = ("conv", np.full((1, 1, 3, 3), 1.0), {"padding": "same"})
    m = arma.erf([layer] * 100, (1, 5, 5))
    assert np.isfinite(m).all() and m.sum() == pytest.approx(1.0)
    assert_close(m, arma.erf([unit] * 100, (1, 5, 5)), rtol=1e-12, atol=1e-15)


def test_erf_power_of_two_scaling_is_exact(rng):
    """Powers of two scale the propagation without rounding: the maps are bitwise equal."""
    w, a = rng.standard_normal((2, 1, 3, 3)), _stable_kernels(rng, 2, 3)
    w2 = rng.standard_normal((1, 2, 3, 3))
    layers = [("arma", w, a), ("conv", w2, {"padding": "same"})] * 3
    scaled = [("arma", w * 2.0**600, a * 2.0**-700), ("conv", w2 * 2.0**-900, {"padding": "same"})] * 3
    np.testing.assert_array_equal(arma.erf(layers, (1, 6, 5)), arma.erf(scaled, (1, 6, 5)))


def test_erf_refuses_non_finite_layers_and_zero_networks():
    with pytest.raises(ValueError, match=r"layers\[1\] weight contains 1 non-finite"):
        arma.erf([("conv", np.ones((1, 1, 3)), {"padding": 1}),
                  ("conv", np.array([[[1.0, np.inf, 1.0]]]), {"padding": 1})], (1, 8))
    with pytest.raises(ValueError, match=r"layers\[0\] AR kernel contains"):
        arma.erf([("ar", np.array([[0.1, np.nan, 0.1]]))], (1, 8))
    with pytest.raises(ValueError, match="every gradient map is zero"):  # truly zero
        arma.erf([("conv", np.zeros((1, 1, 3)), {"padding": 1})], (1, 8))


def test_arma2d_memory_guard_names_padding(rng):
    """Issue 18 item 9: the guard names the option, not an internal buffer."""
    args = (np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), _stable_kernels(rng, 1, 3))
    with pytest.raises(ValueError, match=r"^padding=100000: the spectrum of arma2d's conv "
                                         r"output would need 298 GiB"):
        arma.arma2d(*args, padding=10**5, padding_mode="zeros")
    with pytest.raises(ValueError, match=r"^padding=\(30000, 100000\): the spectrum"):
        arma.arma2d_backward(np.ones((1, 1, 5, 5)), *args, padding=(3 * 10**4, 10**5),
                             padding_mode="zeros")


@pytest.mark.parametrize("call,name", [
    (lambda: arma.reparameterize(np.ones(2), np.ones(2), 10**400), "a0"),
    (lambda: arma.ar_stability_1d([0.2, 1.0, 0.3], tol=10**400), "tol"),
    (lambda: arma.erf_radius_arma(3, 2, 10**400), "a"),
    (lambda: arma.erf_trend_table(depths=(1,), coefficients=(10**400,), size=9),
     r"coefficients\[0\]"),
    (lambda: arma.ar_solve_dense(np.ones((1, 1, 5)), [[0.0, 1.0, 0.0]], rcond=10**400), "rcond"),
    (lambda: arma.arma2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), np.ones((1, 1, 1)),
                         rcond=10**400), "rcond"),
    (lambda: arma.erf_trend_table(depths=(2**63,), size=9), r"depths\[0\]"),
    (lambda: arma.erf([("conv", np.ones((1, 1, 3)), {"padding": 1})], (1, 8), batch=2**64),
     "batch"),
])
def test_huge_numbers_name_the_argument(call, name):
    """Issue 18 item 8b: reals beyond the float range and ints beyond int64 are named."""
    with pytest.raises(ValueError, match=rf"^{name} must be"):
        call()


def test_fig3_trend_table():
    rows = arma.erf_trend_table(depths=(1, 3, 5), coefficients=(0.0, 0.6, 0.8), size=49)
    assert len(rows) == 9
    radius = {(r["a"], r["depth"]): r["radius"] for r in rows}
    for a in (0.0, 0.6, 0.8):
        assert radius[a, 1] < radius[a, 3] < radius[a, 5]  # grows with depth
    for d in (1, 3, 5):
        assert radius[0.0, d] < radius[0.6, d] < radius[0.8, d]  # grows with a
    for r in rows:  # closed form of the separable network (periodic domain: tails cut)
        assert r["radius"] == pytest.approx(r["predicted"], rel=2e-3)
    one_d = arma.erf_trend_table(depths=(2,), coefficients=(0.5,), dims=1, size=1025)
    assert one_d[0]["radius"] == pytest.approx(arma.erf_radius_arma(3, 2, 0.5), rel=1e-8)


def _erf_net_1d():
    return [("conv", np.ones((1, 1, 3)) / 3, {"padding": 1})]


@pytest.mark.parametrize("positions,exc,match", [
    (1.5, TypeError, r"positions must be 'all', 'centre' or a sequence"),
    (None, TypeError, r"positions must be"),
    ("middle", ValueError, r"positions must be one of"),
    ([], ValueError, r"positions must not be empty"),
    ([(1.5,)], TypeError, r"positions\[0\]\[0\] must be an integer"),
    ([(2,), "3"], TypeError, r"positions\[1\] must be a pixel"),
    ([(2, 3)], ValueError, r"positions\[0\] must be a pixel of 1 int"),
    ([(-1,)], ValueError, r"positions\[0\] = \(-1,\) is outside the output"),
    ([(8,)], ValueError, r"positions\[0\] = \(8,\) is outside the output"),
])
def test_erf_positions_validated(positions, exc, match):
    with pytest.raises(exc, match=match):
        arma.erf(_erf_net_1d(), (1, 8), positions=positions)


def test_erf_positions_forms_agree():
    """A 1-D pixel may be an int, a 1-tuple or an array row; all give the same map."""
    net = _erf_net_1d()
    ref = arma.erf(net, (1, 8), positions=[(2,), (5,)])
    assert_close(arma.erf(net, (1, 8), positions=[2, 5]), ref, atol=0)
    assert_close(arma.erf(net, (1, 8), positions=np.array([[2], [5]])), ref, atol=0)
    w = np.ones((1, 1, 3, 3)) / 9
    net2 = [("conv", w, {"padding": 1})]
    with pytest.raises(TypeError, match=r"positions\[0\] must be a pixel"):
        arma.erf(net2, (1, 5, 6), positions=[3])
    assert_close(arma.erf(net2, (1, 5, 6), positions=np.array([[2, 3]])),
                 arma.erf(net2, (1, 5, 6), positions=[(2, 3)]), atol=0)


def test_erf_wrap_validated():
    with pytest.raises(TypeError, match="wrap must be None, True or False"):
        arma.erf(_erf_net_1d(), (1, 8), wrap=1.5)


def test_erf_memory_guards(monkeypatch):
    huge = 10**12 + 1
    with pytest.raises(ValueError, match=r"input_shape would need .*LMREF_MAX_BYTES"):
        arma.erf(_erf_net_1d(), (huge, huge))
    with pytest.raises(ValueError, match=r"input_shape would need"):
        arma.erf([("conv", np.ones((1, 1, 3, 3)), {"padding": 1})], (1, huge, huge))
    monkeypatch.setenv("LMREF_MAX_BYTES", str(2**16))
    # one batch of 256 gradients (1, 1024) is 2 MiB: refused naming batch; with batch=4 the
    # 1024 gradients together (8 MiB) are refused naming positions; the centre alone is fine
    with pytest.raises(ValueError, match=r"batch would need"):
        arma.erf(_erf_net_1d(), (1, 1024))
    with pytest.raises(ValueError, match=r"positions: 1024 output pixel\(s\).*'centre'"):
        arma.erf(_erf_net_1d(), (1, 1024), batch=4)
    assert arma.erf(_erf_net_1d(), (1, 1024), positions="centre").shape == (2047,)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"depths": (10**12 + 1,)}, ValueError, r"depths\[0\] = 1000000000001 would push"),
    ({"depths": (1, -1)}, ValueError, r"depths\[1\] must be >= 1"),
    ({"depths": (0,)}, ValueError, r"depths\[0\] must be >= 1"),
    ({"depths": (2.5,)}, TypeError, r"depths\[0\] must be an integer"),
    ({"depths": 3}, TypeError, r"depths must be a sequence"),
    ({"depths": "3"}, TypeError, r"depths must be a sequence"),
    ({"coefficients": (0.5, 1.0)}, ValueError, r"coefficients\[1\] must be in \[0, 1\)"),
    ({"coefficients": (math.nan,)}, ValueError, r"coefficients\[0\] must be finite"),
    ({"coefficients": ("a",)}, TypeError, r"coefficients\[0\] must be a real number"),
    ({"coefficients": 0.5}, TypeError, r"coefficients must be a sequence"),
    ({"size": 10**12 + 1}, ValueError, r"size would need"),
    ({"dims": 1, "kernel_size": 10**12 + 1}, ValueError, r"kernel_size would need"),
    ({"kernel_size": 0}, ValueError, r"kernel_size must be >= 1"),
])
def test_erf_trend_table_validated(kwargs, exc, match):
    kwargs = {"depths": (1,), "coefficients": (0.5,), "size": 9, **kwargs}
    with pytest.raises(exc, match=match):
        arma.erf_trend_table(**kwargs)


def test_erf_trend_table_work_guard_names_depths(monkeypatch):
    monkeypatch.setenv("LMREF_MAX_BYTES", str(9 * 9 * 8 * 4))
    assert len(arma.erf_trend_table(depths=(4,), coefficients=(0.5,), size=9)) == 1
    with pytest.raises(ValueError, match=r"depths\[1\] = 5 would push .*LMREF_MAX_BYTES"):
        arma.erf_trend_table(depths=(4, 5), coefficients=(0.5,), size=9)
    # any sequence or 1-D array of depths and coefficients is accepted
    assert arma.erf_trend_table(depths=range(1, 3), coefficients=np.array([0.0, 0.5]),
                                size=9)[-1]["depth"] == 2
