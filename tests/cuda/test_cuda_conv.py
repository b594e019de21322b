"""lmref.cuda.conv2d / conv2d_backward against lmref.conv (PyTorch semantics)."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import conv

CASES = [
    dict(),
    dict(padding=1, stride=2),
    dict(padding="same", stride=2, dilation=(1, 2)),  # TF "same": extra pixel at the end
    dict(padding="valid", groups=2),
    dict(padding=(2, 1), padding_mode="reflect", dilation=2),
    dict(padding=2, padding_mode="circular", stride=(2, 1)),
    dict(padding="same", padding_mode="replicate", groups=2),
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_conv2d_and_backward_equal_cpu(rng, close, kw):
    groups = kw.get("groups", 1)
    x = rng.standard_normal((2, 4, 5, 7))  # odd sizes: partial tiles and borders
    w = rng.standard_normal((6, 4 // groups, 3, 2))  # 6 = one full and one partial CB block
    b = rng.standard_normal(6)
    out = conv.conv2d(x, w, b, **kw)
    close(lc.conv2d(x, w, b, **kw), out)
    g = rng.standard_normal(out.shape)
    close(lc.conv2d_backward(g, x, w, b, **kw), conv.conv2d_backward(g, x, w, b, **kw))


def test_untiled_fallback_and_no_bias(rng, close, monkeypatch):
    """Tiles that do not fit in shared memory use the plain kernel; grad_bias is None."""
    from lmref.cuda import conv as cuda_conv

    monkeypatch.setattr(cuda_conv, "_SMEM_DOUBLES", 1)
    x = rng.standard_normal((1, 3, 5, 6))
    w = rng.standard_normal((2, 3, 2, 3))
    close(lc.conv2d(x, w, padding=1, dilation=2), conv.conv2d(x, w, padding=1, dilation=2))
    gx, gw, gb = lc.conv2d_backward(np.ones((1, 2, 4, 4)), x, w)
    assert gb is None
    close((gx, gw), conv.conv2d_backward(np.ones((1, 2, 4, 4)), x, w)[:2])


def test_several_channel_chunks_and_column_tiles(rng, close):
    x = rng.standard_normal((1, 9, 4, 19))  # 9 > 8 channels staged per shared-memory step;
    w = rng.standard_normal((9, 9, 1, 2))  # 19 columns: several tiles, the last partial
    close(lc.conv2d(x, w, stride=(1, 2)), conv.conv2d(x, w, stride=(1, 2)))


@pytest.mark.parametrize("kw, match", [
    (dict(groups=3), "groups=3 must divide"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(padding=5, padding_mode="reflect"), "reflect"),
    (dict(padding="full"), "padding must be one of"),
])
def test_bad_input_is_refused_like_the_cpu(kw, match):
    x, w = np.zeros((1, 2, 5, 7)), np.zeros((2, 2, 3, 3))
    with pytest.raises(ValueError, match=match):
        lc.conv2d(x, w, **kw)
    with pytest.raises(ValueError, match="channel mismatch"):
        lc.conv2d(x, np.zeros((2, 3, 3, 3)))


HUGE = [  # valid calls whose padding is far larger than the work (issue 18 items 4, 6, 7)
    dict(stride=10**12, padding=10**12),  # a 14.6 TiB padding index map before
    dict(stride=2**64, padding=2**63),  # beyond int64: numpy's "maximum size exceeded" before
    dict(stride=(1, 10**4), padding=(1, 3 * 10**7), padding_mode="replicate"),
    dict(stride=(10**9, 1), dilation=(10**9, 1), padding=(10**9, 1)),
]


@pytest.mark.parametrize("kw", HUGE, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_huge_stride_and_padding_run_on_the_compacted_plan(rng, close, kw):
    x = rng.standard_normal((1, 2, 5, 6))
    w = rng.standard_normal((3, 2, 3, 2))
    b = rng.standard_normal(3)
    out = conv.conv2d(x, w, b, **kw)
    close(lc.conv2d(x, w, b, **kw), out)
    g = rng.standard_normal(out.shape)
    close(lc.conv2d_backward(g, x, w, b, **kw), conv.conv2d_backward(g, x, w, b, **kw))


def test_huge_output_is_refused_naming_the_argument():
    with pytest.raises(ValueError, match="padding"):
        lc.conv2d(np.ones((1, 1, 5, 5)), np.ones((1, 1, 3, 3)), padding=10**5)
