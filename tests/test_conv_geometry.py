"""lmref.conv.geometry's memoised plans (issue 14): a call pattern seen before skips the option
checks and the geometry, never a check of the arrays, never ``LMREF_MAX_BYTES``, and never an
error message (errors always come from the full path)."""
import numpy as np
import pytest

from lmref import conv
from lmref.conv import api as conv_api
from lmref.conv import geometry as conv_geometry

MEMOS = (conv_geometry._conv_memo, conv_api._transpose_memo)


@pytest.fixture
def cold():
    """Empty memos before and after the test (no other test's call patterns)."""
    for memo in MEMOS:
        memo.cache_clear()
    yield
    for memo in MEMOS:
        memo.cache_clear()


CONV_OPTIONS = [  # stride, padding, dilation, groups, padding_mode
    (1, 1, 1, 1, "zeros"), (2, "same", 1, 2, "reflect"), ((2, 1), (1, 2), (1, 2), 1, "circular"),
    (1, ((0, 2), (1, 0)), 2, 2, "replicate"), (3, "valid", 1, 1, "zeros"),
    (10**4, (0, 3 * 10**7), 1, 1, "zeros"),  # a compacted axis: never memoised as a plan
]


@pytest.mark.parametrize("options", CONV_OPTIONS)
def test_memoised_conv_plan_is_the_full_paths(options, cold):
    stride, padding, dilation, groups, mode = options
    x_shape, w_shape = (2, 4, 7, 6), (6, 4 // groups, 3, 2)
    geom = conv_geometry._geometry(2, x_shape[2:], 4, w_shape, stride, padding, dilation, groups,
                                   mode)
    plan = conv_geometry._plan(geom, 2, 4, "call")
    memo = conv_geometry._conv_memo(2, x_shape, w_shape, *options)
    assert memo.plan == (None if plan.maps is not None else plan)
    assert memo.out_bytes == 8 * 2 * 6 * np.prod(geom.out_hw)
    assert conv_geometry._recall(conv_geometry._conv_memo, True, 2, x_shape, w_shape,
                                 *options) == memo.plan


@pytest.mark.parametrize("options", [  # stride, padding, output_padding, dilation, groups
    (2, 1, 0, 1, 1), ((2, 3), (1, 0), (1, 2), (1, 2), 2), (1, ((0, 2), (1, 0)), 0, 2, 1)])
def test_memoised_transpose_plan_is_the_full_paths(options, cold):
    x, w = np.ones((2, 4, 5, 4)), np.ones((4, 3, 3, 2))
    full = conv_api._transpose_geometry(2, x, w, *options)  # cold: the full path
    memo = conv_api._transpose_memo(2, x.shape, w.shape, *options)
    assert (memo.plan, memo.plan) == full
    assert conv_api._transpose_geometry(2, x, w, *options) == full  # now from the memo


def _data(rng):
    return rng.standard_normal((1, 4, 5, 5)), rng.standard_normal((2, 4, 3, 3))


def _calls(x, w, g):
    return {"conv2d": lambda: conv.conv2d(x, w, padding=1),
            "conv2d_backward": lambda: conv.conv2d_backward(g, x, w, padding=1),
            "conv_transpose2d": lambda: conv.conv_transpose2d(x, w.transpose(1, 0, 2, 3),
                                                              stride=2, padding=1),
            "conv_transpose2d_backward": lambda: conv.conv_transpose2d_backward(
                np.ones((1, 4, 9, 9)), g, w, stride=2, padding=1)}


@pytest.mark.parametrize("name", ["conv2d", "conv2d_backward", "conv_transpose2d",
                                  "conv_transpose2d_backward"])
def test_max_bytes_takes_effect_on_a_warm_call_pattern(name, monkeypatch, rng, cold):
    x, w = _data(rng)
    call = _calls(x, w, np.ones((1, 2, 5, 5)))[name]
    want = call()
    monkeypatch.setenv("LMREF_MAX_BYTES", "64")  # below every buffer of these calls
    with pytest.raises(ValueError, match=r"^conv.*\(stride=.*LMREF_MAX_BYTES") as warm:
        call()
    for memo in MEMOS:
        memo.cache_clear()
    with pytest.raises(ValueError) as cold_error:
        call()
    assert str(warm.value) == str(cold_error.value)
    monkeypatch.delenv("LMREF_MAX_BYTES")
    got = call()
    for a, b in zip(got if isinstance(got, tuple) else (got,),
                    want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(a, b)


BAD = [  # (call, the same call pattern with valid arrays)
    lambda x, w: conv.conv2d(x, w, stride=True, padding=1),  # True == 1 as a key
    lambda x, w: conv.conv2d(x, w, stride=np.int64(0), padding=1),
    lambda x, w: conv.conv2d(x, w, padding=1, padding_mode="zero"),
    lambda x, w: conv.conv2d(x, w, padding=1, groups=3),
    lambda x, w: conv.conv2d(x, w, padding=1.5),
    lambda x, w: conv.conv2d(x, w, padding=(1, -1)),
    lambda x, w: conv.conv2d(x, w[:, :3], padding=1),
    lambda x, w: conv.conv2d(x[..., :2, :2], w),  # kernel larger than the input
    lambda x, w: conv.conv2d(x, w, np.ones(3), padding=1),
    lambda x, w: conv.conv2d(x.astype(bool), w, padding=1),
    lambda x, w: conv.conv2d_backward(np.ones((1, 2, 4, 5)), x, w, padding=1),
    lambda x, w: conv.conv2d_backward(np.ones((1, 2, 5, 5)), x, w, stride=False, padding=1),
    lambda x, w: conv.conv_transpose2d(x, w.transpose(1, 0, 2, 3), stride=2, padding=1,
                                       output_padding=2),
    lambda x, w: conv.conv_transpose2d(x, w.transpose(1, 0, 2, 3), stride=2, padding="same"),
    lambda x, w: conv.conv_transpose2d(x, w.transpose(1, 0, 2, 3), np.ones(3), stride=2,
                                       padding=1),
    lambda x, w: conv.conv_transpose2d_backward(np.ones((1, 2, 9, 8)), x,
                                                w.transpose(1, 0, 2, 3), stride=2, padding=1),
]


@pytest.mark.parametrize("bad", BAD)
def test_errors_are_the_same_once_the_call_pattern_is_warm(bad, rng, cold):
    x, w = _data(rng)
    with pytest.raises((TypeError, ValueError)) as first:
        bad(x, w)
    for call in _calls(x, w, np.ones((1, 2, 5, 5))).values():  # warm every pattern
        call()
    for _ in range(2):
        with pytest.raises(first.type) as again:
            bad(x, w)
        assert str(again.value) == str(first.value)


def test_plain_options_are_exact_builtin_values():
    for value in (1, 2**70, "same", (1, 2), ((0, 1), (2, 3)), (1, (0, 2)), ()):
        assert conv_geometry._is_plain(value)
    for value in (True, np.int64(1), 1.0, [1, 1], np.array([1, 1]), (1, True), ((0, 1.0),),
                  (1, np.int64(2)), ((1, (2, 3)),), None):
        assert not conv_geometry._is_plain(value)


def test_options_that_are_not_plain_take_the_full_path(rng, cold):
    x, w = _data(rng)
    want = conv.conv2d(x, w, stride=2, padding=1)
    for stride in (np.int64(2), [2, 2], np.array([2, 2]), (2.0, 2)):
        assert conv_geometry._recall(conv_geometry._conv_memo, True, 2, x.shape, w.shape,
                                     stride, 1, 1, 1, "zeros") is None
        np.testing.assert_array_equal(conv.conv2d(x, w, stride=stride, padding=1), want)
    assert conv_geometry._conv_memo.cache_info().currsize == 1  # stride=2 only


@pytest.mark.parametrize("padding", [((1, 2), (3, 0)), ((0, 0), (0, 4)), 2])
def test_zero_padding_is_numpys(padding, rng):
    x = rng.standard_normal((2, 3, 5, 4))
    geom = conv_geometry._geometry(2, (5, 4), 3, (1, 3, 2, 2), 1, padding, 1, 1, "zeros")
    (t, b), (l, r) = geom.pads
    got = conv_geometry._pad(x, geom)
    np.testing.assert_array_equal(got, np.pad(x, ((0, 0), (0, 0), (t, b), (l, r))))
    assert geom.padded_hw == got.shape[2:] and geom.has_padding


def test_max_bytes_reads_os_environ_on_every_call(monkeypatch):
    """``max_bytes`` (read by every warm call) follows every change made through
    ``os.environ``, set and unset, with the default 8 GiB when unset; an ``os.environ``
    without CPython's internals is read through its ``get``."""
    import os

    from lmref import _validation
    monkeypatch.delenv("LMREF_MAX_BYTES", raising=False)
    assert _validation.max_bytes() == 8 * 2**30
    monkeypatch.setenv("LMREF_MAX_BYTES", "4096")
    assert _validation.max_bytes() == 4096
    os.environ["LMREF_MAX_BYTES"] = "77"
    assert _validation.max_bytes() == 77
    del os.environ["LMREF_MAX_BYTES"]
    assert _validation.max_bytes() == 8 * 2**30
    monkeypatch.setattr(os, "environ", {"LMREF_PROBE": "12"})
    assert _validation._environ_reader("LMREF_PROBE")() == "12"
    assert _validation._environ_reader("LMREF_ABSENT")() is None
