"""lmref._fftkernels: lmref's own FFT (radix 2, mixed radix 2/3/4/5/7), its twiddles, orders
and stated rounding."""
import math

import numpy as np
import pytest

from lmref import _fftkernels as fk

U = 2.0 ** -53
SMOOTH = [2, 3, 4, 5, 6, 7, 9, 12, 14, 15, 25, 28, 35, 49, 56, 60, 63, 96, 100, 105, 112, 224]
POWERS = [1, 2, 4, 8, 32, 128]


def test_lengths_and_stages():
    assert [fk.own_fft_length(n) for n in (0, 1, 7, 11, 22, 56, 13 * 8, 2 ** 16)] == [
        False, True, True, False, False, True, False, True]
    assert fk.radices(64) == () and fk.radices(1) == ()
    assert fk.radices(56) == (7, 4, 2) and fk.radices(60) == (5, 3, 4)
    for n in SMOOTH:
        assert math.prod(fk.radices(n) or (1,)) == n or n & (n - 1) == 0


def test_stage_error_constants():
    """The module notes' constants: 10 per radix-2/4 stage, ceil(sqrt(r) (r + 6)) + 5 per odd
    radix; powers of two give Higham's 10 log2(n)."""
    assert [fk._stage_error(r) for r in (2, 3, 4, 5, 7)] == [10, 21, 10, 30, 40]
    assert fk.transform_error(56) == 60 and fk.transform_error(1) == 0
    assert [fk.transform_error(2 ** k) for k in range(6)] == [0, 10, 20, 30, 40, 50]


@pytest.mark.parametrize("n", POWERS + SMOOTH)
def test_digit_reversal_is_a_permutation_bit_reversal_on_powers_of_two(n):
    rev = fk.digit_reversal(n)
    assert sorted(rev) == list(range(n))
    if n & (n - 1) == 0:
        assert np.array_equal(rev, fk.bit_reversal(n))
        assert np.array_equal(rev[rev], np.arange(n))  # an involution


def _extended():
    return np.finfo(np.longdouble).eps < 2.0 ** -60


@pytest.mark.skipif(not _extended(), reason="needs an extended long double (x86) as the oracle")
@pytest.mark.parametrize("n", [1, 2, 3, 5, 6, 7, 12, 56, 60, 63, 64, 224, 4096, 65535, 65536])
def test_unit_roots_within_one_and_a_half_u(n):
    """Each component within 1.5 u of ``exp(-2 pi i k / n)`` (long double oracle; numpy's own
    ``np.exp(-2j * np.pi * k / n)`` is off by up to ~12 u on these lengths)."""
    cos, sin = fk.unit_roots(n, n)
    k = np.arange(n, dtype=np.longdouble)
    pi = np.longdouble("3.14159265358979323846264338327950288")
    angle = -2 * pi * k / n
    assert np.max(np.abs(cos - np.cos(angle))) <= 1.5 * U
    assert np.max(np.abs(sin - np.sin(angle))) <= 1.5 * U


@pytest.mark.parametrize("n", [8, 12, 56, 60, 64, 100])
def test_unit_roots_symmetries_are_exact(n):
    """The octant reduction makes the quarter-turn and conjugate symmetries exact (a wrong
    octant's swap or sign would break them, and the accuracy)."""
    cos, sin = fk.unit_roots(n, n)
    k = np.arange(1, n)
    assert np.array_equal(cos[k], cos[n - k]) and np.array_equal(sin[k], -sin[n - k])
    if n % 4 == 0:
        q = np.arange(n - n // 4)
        # w[k + n/4] = -i w[k]
        assert np.array_equal(cos[q + n // 4], sin[q]) and np.array_equal(sin[q + n // 4], -cos[q])
    assert cos[0] == 1.0 and sin[0] == 0.0


@pytest.mark.parametrize("m", [1, 5, 8, 24])
@pytest.mark.parametrize("n", POWERS + SMOOTH)
def test_transforms_are_dfts_in_digit_reversed_order(rng, n, m):
    """dif_axis is the DFT along axis 0 with digit-reversed output, dit_axis the unscaled
    inverse from digit-reversed input, each within transform_error(n) u of the exact result
    (numpy.fft as the reference, far closer than the bound)."""
    x = rng.standard_normal((n, m)) + 1j * rng.standard_normal((n, m))
    re, im = x.real.copy(), x.imag.copy()
    plan = fk.axis_plan(n)
    fk.dif_axis(re, im, *plan)
    spectrum = np.fft.fft(x, axis=0)
    bound = max(fk.transform_error(n), 1) * U * np.linalg.norm(spectrum)
    assert np.linalg.norm(re + 1j * im - spectrum[fk.digit_reversal(n)]) <= bound
    fk.dit_axis(re, im, *plan)
    # the inverse's own error on a spectrum of norm sqrt(n) ||x||, and the forward's carried
    assert np.linalg.norm(re + 1j * im - n * x) <= 2 * max(fk.transform_error(n), 1) * U * (
        n * np.linalg.norm(x))


def test_mixed_transform_is_exact_on_an_impulse_and_linear(rng):
    """An impulse at row 0 has a flat spectrum (every butterfly adds zeros: exact), and the
    transform is linear in the data up to its rounding."""
    n = 56
    re, im = np.zeros((n, 3)), np.zeros((n, 3))
    re[0] = [1.0, -2.0, 0.5]
    fk.dif_axis(re, im, *fk.axis_plan(n))
    assert np.array_equal(re, np.tile([1.0, -2.0, 0.5], (n, 1))) and not im.any()
