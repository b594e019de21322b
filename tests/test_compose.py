import numpy as np
import pytest

from lmref.compose import compose, dilate, receptive_field
from lmref.conv import conv1d, conv2d
from lmref.testing import assert_close


def _chain(x, weights, strides, dilations, conv):
    for w, s, d in zip(weights, strides, dilations):
        x = conv(x, w, stride=s, dilation=d)
    return x


def test_seed_002_two_stride2_equal_one_stride4(rng):
    k2 = rng.standard_normal(3)
    x = rng.standard_normal((1, 1, 64))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1)))  # padding once, before the chain
    k4, s = compose([k2, k2], [2, 2])
    assert s == 4
    assert_close(k4, np.convolve(k2, dilate(k2, 2)))  # k4 = k2 (full) conv dilated k2 (symmetric form)
    two = conv1d(conv1d(xp, k2[None, None], stride=2), k2[None, None], stride=2)
    one = conv1d(xp, k4[None, None], stride=4)
    assert_close(one, two)


@pytest.mark.parametrize("strides,dilations", [
    ([2, 2], [1, 1]), ([1, 3, 2], [1, 1, 1]), ([2, 1, 2], [1, 2, 1]), ([3, 2], [2, 3])])
def test_compose_1d_multichannel_equals_chain(rng, strides, dilations):
    chans = [2, 3, 4, 2][:len(strides) + 1]
    ws = [rng.standard_normal((chans[i + 1], chans[i], k)) for i, k in
          zip(range(len(strides)), [3, 2, 4])]
    x = rng.standard_normal((2, chans[0], 97))
    w, s = compose(ws, strides, dilations)
    assert_close(conv1d(x, w, stride=s), _chain(x, ws, strides, dilations, conv1d))


@pytest.mark.parametrize("strides,dilations", [
    ([2, 2], [1, 1]), ([(2, 1), 2, 1], [1, (1, 2), 1]), ([1, 2, 2], [2, 1, 1])])
def test_compose_2d_equals_chain(rng, strides, dilations):
    ws = [rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((4, 3, 2, 3)),
          rng.standard_normal((2, 4, 3, 2))][:len(strides)]
    x = rng.standard_normal((1, 2, 41, 38))
    w, s = compose(ws, strides, dilations)
    assert_close(conv2d(x, w, stride=s), _chain(x, ws, strides, dilations, conv2d))


def test_single_channel_2d_kernel(rng):
    k = rng.standard_normal((3, 3))
    w, s = compose([k, k, k], [2, 2, 2])
    assert s == (8, 8) and w.shape == (15, 15)
    x = rng.standard_normal((1, 1, 47, 47))
    assert_close(conv2d(x, w[None, None], stride=s),
                 _chain(x, [k[None, None]] * 3, [2, 2, 2], [1, 1, 1], conv2d))


def test_dilate_shapes_and_equivalence(rng):
    k = rng.standard_normal((2, 3, 3, 2))
    d = dilate(k, (2, 3))
    assert d.shape == (2, 3, 5, 4)
    x = rng.standard_normal((1, 3, 12, 13))
    assert_close(conv2d(x, d), conv2d(x, k, dilation=(2, 3)))
    assert_close(dilate(np.array([1.0, 2.0, 3.0]), 2), [1, 0, 2, 0, 3])


def test_receptive_field_matches_composed_kernel():
    assert receptive_field([3, 3], [2, 2]) == (7, 4)
    assert receptive_field([3, 3, 3], [1, 1, 1], [1, 2, 4]) == (15, 1)
    w, s = compose([np.ones(3), np.ones(2), np.ones(5)], [2, 3, 1], [1, 2, 1])
    assert (w.size, s) == receptive_field([3, 2, 5], [2, 3, 1], [1, 2, 1])


def test_errors():
    k = np.ones(3)
    with pytest.raises(ValueError, match=r"paddings\[1\].*cannot be composed"):
        compose([k, k], [2, 2], paddings=[1, 1])
    with pytest.raises(ValueError, match="strides"):
        compose([k, k], [2])
    with pytest.raises(ValueError, match=r"weights\[1\] has C_in=3"):
        compose([np.ones((2, 1, 3)), np.ones((1, 3, 3))], [1, 1])
    with pytest.raises(ValueError, match=r"strides\[0\] must be >= 1"):
        compose([k], [0])
    with pytest.raises(TypeError, match="weights"):
        compose(k, [1])
    with pytest.raises(ValueError, match="rate must be >= 1"):
        dilate(k, 0)
    with pytest.raises(TypeError, match="kernel"):
        dilate(np.ones(3, complex), 2)
