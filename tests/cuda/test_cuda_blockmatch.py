"""lmref.cuda.block_match against lmref.blockmatch: flows identical, costs to rounding."""
import numpy as np
import pytest

import lmref.cuda as lc
from lmref import blockmatch


def _frames(rng, shape, integer):
    ref = rng.standard_normal(shape)
    cur = np.roll(ref, (1, -1), axis=(-2, -1)) + 0.1 * rng.standard_normal(shape)
    if integer:
        return np.round(4 * ref), np.round(4 * cur)
    return ref, cur


def _check(close, ref, cur, *args, **kw):
    flow, cost = lc.block_match(ref, cur, *args, **kw)
    rflow, rcost = blockmatch.block_match(ref, cur, *args, **kw)
    close(flow, rflow, rtol=0, atol=0)  # flows exactly
    close(cost, rcost)


@pytest.mark.parametrize("shape, block, srange, channels, boundary, integer", [
    ((5, 7), 3, 1, "sum", "zeros", False),
    ((5, 7), 3, 2, "sum", "replicate", True),
    ((2, 5, 7), 3, 1, "sum", "replicate", False),
    ((2, 6, 5), 5, 1, "each", "zeros", True),
    ((6, 5), 1, 2, "sum", "zeros", False),
    ((4, 6), 7, 1, "sum", "replicate", False),  # block larger than the frame
    ((5, 7), 3, 0, "sum", "zeros", False),
])
def test_block_match_equals_cpu(rng, close, shape, block, srange, channels, boundary, integer):
    ref, cur = _frames(rng, shape, integer)
    _check(close, ref, cur, block, srange, channels=channels, boundary=boundary)


@pytest.mark.parametrize("value", [3.0, 0.1])
def test_tie_rule_on_flat_frames(close, value):
    """Flat frames tie everywhere: zero motion, except where a bump breaks the tie. 0.1 is not
    an integer, so the GPU re-decides those pixels on exact costs, as the CPU does."""
    ref = np.full((5, 7), value)
    cur = ref.copy()
    cur[2, 3] = 2 * value
    _check(close, ref, cur, 3, 1)


def test_known_translation_is_recovered(rng, close):
    ref = rng.integers(0, 255, (9, 10)).astype(float)
    cur = np.roll(ref, (-1, 2), axis=(0, 1))  # cur[y, x] = ref[y + 1, x - 2]
    flow, _ = lc.block_match(ref, cur, 3, 2)
    assert np.array_equal(flow[3:-3, 3:-3], np.broadcast_to([-2.0, 1.0], (3, 4, 2)))
    close(flow, blockmatch.block_match(ref, cur, 3, 2)[0], rtol=0, atol=0)


def test_bad_input_is_refused_like_the_cpu(to_device):
    a = np.zeros((5, 7))
    with pytest.raises(ValueError, match="block_size must be odd"):
        lc.block_match(a, a, 2, 1)
    with pytest.raises(ValueError, match="shape of reference"):
        lc.block_match(a, a[:4], 3, 1)
    bad = a.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="current contains 1 non-finite"):
        lc.block_match(a, bad, 3, 1)
    with pytest.raises(ValueError, match="current contains 1 non-finite"):  # checked on device
        lc.block_match(to_device(a), to_device(bad), 3, 1)
    with pytest.raises(ValueError, match="too large"):
        lc.block_match(to_device(a + 1e160), to_device(a), 3, 1)


def test_only_lmrefs_convention_runs_on_the_gpu():
    f = np.zeros((5, 7))
    with pytest.raises(ValueError, match=r"convention='lmref' only.*lmref\.blockmatch"):
        lc.block_match(f, f, 3, 1, convention="authors")
    with pytest.raises(ValueError, match="convention must be one of"):
        lc.block_match(f, f, 3, 1, convention="paper")
