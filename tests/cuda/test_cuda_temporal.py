"""lmref.cuda.local_multiply and its backward against lmref.temporal."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import temporal


@pytest.mark.parametrize("patch, dilation", [(3, 1), (3, 2), (1, 1)])
@pytest.mark.parametrize("normalize", ["none", "channels", "l2"])
def test_local_multiply_and_backward_equal_cpu(rng, close, normalize, patch, dilation):
    a = rng.standard_normal((2, 3, 5, 7))
    b = rng.standard_normal((2, 3, 5, 7))
    a[0, :, 1, 2] = 0.0  # an all-zero pixel: "l2" gives 0, never NaN
    kw = dict(dilation=dilation, normalize=normalize)
    close(lc.local_multiply(a, b, patch, **kw), temporal.local_multiply(a, b, patch, **kw))
    g = rng.standard_normal((2, patch * patch, 5, 7))
    close(lc.local_multiply_backward(g, a, b, patch, **kw),
          temporal.local_multiply_backward(g, a, b, patch, **kw))


def test_displacement_order_on_one_hot(close):
    """Output channel p = (i+r)*P + (j+r) holds the product with b shifted by (i, j)."""
    a = np.zeros((1, 1, 5, 7))
    b = np.zeros((1, 1, 5, 7))
    a[0, 0, 2, 3] = 1.0
    b[0, 0, 1, 4] = 2.0  # i = -1 (row above), j = +1
    out = lc.local_multiply(a, b, 3)
    expected = np.zeros((1, 9, 5, 7))
    expected[0, 2, 2, 3] = 2.0
    close(out, expected)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(patch_size=2), ValueError, "patch_size must be odd"),
    (dict(patch_size=3, normalize="max"), ValueError, "normalize must be one of"),
    (dict(patch_size=3, dilation=0), ValueError, "dilation must be >= 1"),
])
def test_bad_input_is_refused_like_the_cpu(kwargs, err, match):
    a = np.zeros((1, 2, 5, 7))
    with pytest.raises(err, match=match):
        lc.local_multiply(a, a, **kwargs)
    with pytest.raises(ValueError, match="same shape"):
        lc.local_multiply(a, a[:, :1], 3)
