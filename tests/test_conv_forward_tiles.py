"""lmref.conv forward: the register-tiled kernel (16 output channels x 8 columns, C_out / groups
>= 8, output width >= 8) against the row kernels and against the summation order both promise,
bit for bit: tails of channels and columns, odd channel counts, groups, strides, dilations,
padding modes, 1-D convolutions, NaN / inf / signed zeros, serial and parallel drivers."""
import numpy as np
import pytest

from lmref import conv
from lmref.conv import kernels as conv_kernels
from lmref.conv import reference as conv_reference
from lmref.conv.geometry import _geometry

#: (x shape, weight shape, keyword arguments): every one runs the tiled kernel
TILED = [
    ((2, 5, 9, 21), (9, 5, 3, 3), dict(padding=2, dilation=2, padding_mode="reflect")),
    ((1, 6, 7, 8), (16, 3, 3, 3), dict(padding=1, groups=2)),
    ((2, 4, 10, 19), (12, 4, 2, 3), dict(stride=2, padding=1, padding_mode="circular")),
    ((1, 3, 8, 31), (8, 3, 3, 3), dict(stride=3, padding=1, padding_mode="replicate")),
    ((2, 7, 12, 30), (10, 7, 3, 3), dict(dilation=(2, 3), padding="same")),
    ((1, 9, 6, 13), (33, 3, 3, 3), dict(padding=1, groups=3)),
    ((2, 1, 6, 9), (8, 1, 3, 3), dict(padding=1)),
    ((1, 3, 30, 30), (16, 3, 7, 7), dict(stride=2, padding=3)),
    ((2, 8, 5, 16), (24, 8, 1, 1), dict()),
    ((1, 4, 9, 40), (8, 4, 3, 5), dict(stride=(1, 2), padding=(1, 2), dilation=(2, 1))),
    ((2, 5, 40), (8, 5, 5), dict(stride=2, padding=2, padding_mode="circular")),
    ((3, 2, 17), (18, 1, 3), dict(groups=2, padding=1, dilation=3)),
    ((1, 5, 6, 11), (40, 5, 3, 3), dict(padding=1)),
    ((2, 6, 5, 12), (40, 3, 3, 3), dict(padding=1, groups=2)),
    ((1, 32, 4, 10), (32, 32, 3, 3), dict(padding=1)),
]
#: C_out / groups < 8 or output width < 8: the row kernels
NOT_TILED = [
    ((1, 4, 5, 5), (8, 4, 3, 3), dict(padding=1)),
    ((2, 4, 9, 12), (6, 4, 3, 3), dict(padding=1)),
    ((2, 3, 7), (16, 3, 3), dict()),
]


def _case_id(case):
    xs, ws, kw = case
    return f"x{'x'.join(map(str, xs))}-w{'x'.join(map(str, ws))}-" + \
        "-".join(f"{k}{v}" for k, v in kw.items())


def _wide_range(rng, shape):
    """Normal numbers scaled by 1e-8 ... 1e8: any other summation order rounds differently."""
    return rng.standard_normal(shape) * 10.0 ** rng.uniform(-8, 8, shape)


def _data(rng, xs, ws):
    return _wide_range(rng, xs), _wide_range(rng, ws), _wide_range(rng, ws[:1])


def _conv(x, w, b, **kw):
    return (conv.conv1d if x.ndim == 3 else conv.conv2d)(x, w, b, **kw)


def _summed_in_order(x, w, b, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                     pairs=True):
    """The forward kernels' summation order in NumPy (one IEEE operation per ufunc: the same
    bits): ``acc = 0``; per channel pair, kernel row, kernel column ``acc += w0 * u + w1 * v``;
    an odd last channel ``acc += w * u``; ``out = acc + bias``. ``pairs=False``: one channel
    at a time (another order, for the test that this one is checked)."""
    nd = x.ndim - 2
    x2, w2 = (x, w) if nd == 2 else (x[:, :, None], w[:, :, None])
    geom = _geometry(nd, x.shape[2:], x.shape[1], w.shape, stride, padding, dilation, groups,
                     padding_mode)
    xp = conv_reference._np_pad_reference(x2, geom.pads, geom.mode)
    c_out, c_in_g = w2.shape[:2]
    c_out_g = c_out // groups
    out = np.empty((x.shape[0], c_out) + geom.out_hw)
    taps = list(conv_reference._taps(geom))
    for grp in range(groups):
        ws = w2[grp * c_out_g:(grp + 1) * c_out_g]

        def term(c, a, bb, window):
            return ws[:, c, a, bb][None, :, None, None] * xp[:, grp * c_in_g + c, window[0],
                                                              window[1]][:, None]
        acc = np.zeros((x.shape[0], c_out_g) + geom.out_hw)
        step = 2 if pairs else 1
        with np.errstate(invalid="ignore"):  # inf - inf, 0 * inf: NaN, as in the kernels
            for c in range(0, c_in_g - step + 1, step):
                for a, bb, window in taps:
                    acc += term(c, a, bb, window) + term(c + 1, a, bb, window) if pairs \
                        else term(c, a, bb, window)
            if pairs and c_in_g % 2:
                for a, bb, window in taps:
                    acc += term(c_in_g - 1, a, bb, window)
        out[:, grp * c_out_g:(grp + 1) * c_out_g] = acc + b[grp * c_out_g:(grp + 1) * c_out_g,
                                                            None, None]
    return out if nd == 2 else out[:, :, 0]


def _assert_same_bits(got, want):
    """Equal bit for bit (``-0.0 != 0.0``), NaN where NaN (its payload aside)."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan].view(np.int64), want[~nan].view(np.int64))


@pytest.fixture(autouse=True)
def _no_direct_path(monkeypatch):
    """Small zero-padded calls take the direct kernels (tested against the layout kernels in
    test_conv.py): here every forward goes through the layout, tiled or by rows."""
    monkeypatch.setattr(conv_kernels, "_DIRECT_FORWARD_MAX_WORK", 0)


@pytest.fixture
def tiles_calls(monkeypatch):
    """How many times the tiled kernel ran (a list of one count)."""
    calls = [0]
    tiled = conv_kernels._forward_tiles

    def counting(*args):
        calls[0] += 1
        return tiled(*args)
    monkeypatch.setattr(conv_kernels, "_forward_tiles", counting)
    return calls


def _rows_kernels(monkeypatch):
    """Route every forward to the row kernels."""
    monkeypatch.setattr(conv_kernels, "_TILE_MIN_OUT_CHANNELS", 1 << 30)


@pytest.mark.parametrize("case", TILED, ids=_case_id)
def test_tiled_forward_is_the_row_kernels_bit_for_bit(case, rng, monkeypatch, tiles_calls):
    xs, ws, kw = case
    x, w, b = _data(rng, xs, ws)
    got = _conv(x, w, b, **kw)
    assert tiles_calls[0] == 1
    _assert_same_bits(got, _summed_in_order(x, w, b, **kw))
    _rows_kernels(monkeypatch)
    _assert_same_bits(got, _conv(x, w, b, **kw))
    assert tiles_calls[0] == 1
    _assert_same_bits(_conv(x, w, None, **kw), _summed_in_order(x, w, np.zeros_like(b), **kw))


@pytest.mark.parametrize("case", NOT_TILED, ids=_case_id)
def test_small_outputs_run_the_row_kernels_in_the_same_order(case, rng, tiles_calls):
    xs, ws, kw = case
    x, w, b = _data(rng, xs, ws)
    _assert_same_bits(_conv(x, w, b, **kw), _summed_in_order(x, w, b, **kw))
    assert tiles_calls[0] == 0


def test_the_order_check_can_fail(rng):
    """On the wide-range data another order (one channel at a time) gives other bits, so the
    tests above would see a kernel that sums differently."""
    x, w, b = _data(rng, (2, 6, 9, 10), (8, 6, 3, 3))
    paired = _summed_in_order(x, w, b, padding=1)
    _assert_same_bits(conv.conv2d(x, w, b, padding=1), paired)
    assert not np.array_equal(paired, _summed_in_order(x, w, b, padding=1, pairs=False))


@pytest.mark.parametrize("c_in", [3, 4])
def test_tiled_forward_nonfinite_and_signed_zeros_as_the_row_kernels(c_in, rng, monkeypatch):
    """NaN, inf and -0.0 in the input and the weights (an odd channel count runs the kernel's
    ``acc += w * u + 0.0``: still the bits of ``acc += w * u``)."""
    x = rng.standard_normal((2, c_in, 6, 19))
    w = rng.standard_normal((9, c_in, 3, 3))
    x[:, :, 2:4] = -0.0  # rows of signed zeros: products -0.0 and +0.0
    w[:, :, 1] *= -1.0
    w[3] = -0.0
    x[0, c_in - 1, 0, 5] = np.nan
    x[1, 0, 5, 18] = np.inf
    x[1, c_in - 1, 1, 0] = -np.inf
    w[5, c_in - 1, 2, 2] = np.inf
    b = np.zeros(9)
    b[3] = -0.0
    got = conv.conv2d(x, w, b, padding=1)
    assert np.isnan(got).any() and np.isinf(got).any()
    assert (got == 0.0).any()
    _assert_same_bits(got, _summed_in_order(x, w, b, padding=1))
    _rows_kernels(monkeypatch)
    _assert_same_bits(got, conv.conv2d(x, w, b, padding=1))


@pytest.mark.parametrize("nd", [1, 2])
def test_tiled_forward_parallel_equals_serial_bit_for_bit(nd, rng, monkeypatch, tiles_calls):
    xs, ws = ((3, 5, 45), (19, 5, 3)) if nd == 1 else ((2, 5, 11, 27), (19, 5, 3, 3))
    x, w, b = _data(rng, xs, ws)
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 1 << 62)
    serial = _conv(x, w, b, stride=2, padding=1)
    monkeypatch.setattr(conv_kernels, "_PARALLEL_MIN_WORK", 0)
    _assert_same_bits(_conv(x, w, b, stride=2, padding=1), serial)
    assert tiles_calls[0] == 2
