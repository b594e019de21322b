"""lmref.compose: a chain of convolutions (padding once, before) equals one convolution."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmref.compose import _compose_reference, compose, dilate, receptive_field
from lmref.conv import conv1d, conv2d
from lmref.testing import assert_close


def _chain(x, weights, strides, dilations, conv):
    for w, s, d in zip(weights, strides, dilations):
        x = conv(x, w, stride=s, dilation=d)
    return x


# ----------------------------------------------------------------------------------------------
# seed 002
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize("n", [64, 67])
def test_seed_002_two_stride2_convs_equal_one_stride4(k, n, rng):
    """The homework: pad once so that the output is n/4, then k2 twice with stride 2 ==
    k4 = k2 (full-)convolved with dilate(k2, 2), once with stride 4."""
    k2 = rng.standard_normal(k)
    x = rng.standard_normal((1, 1, n))
    k4, s = compose([k2, k2], [2, 2])
    assert s == 4 and k4.shape == (3 * (k - 1) + 1,)
    assert_close(k4, np.convolve(dilate(k2, 2), k2))
    pad = k4.size - 1  # enough for the whole chain; applied once, before it
    xp = np.pad(x, ((0, 0), (0, 0), (pad // 2, pad - pad // 2)))
    two = conv1d(conv1d(xp, k2[None, None], stride=2), k2[None, None], stride=2)
    one = conv1d(xp, k4[None, None], stride=4)
    assert one.shape == two.shape
    assert_close(one, two)
    # the composed convolution takes the first layer's padding directly
    assert_close(conv1d(x, k4[None, None], stride=4, padding=3),
                 conv1d(conv1d(x, k2[None, None], stride=2, padding=3), k2[None, None],
                        stride=2))


# ----------------------------------------------------------------------------------------------
# chains vs the sequential application
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("strides,dilations", [
    ([2, 2], [1, 1]), ([1, 3, 2], [1, 1, 1]), ([2, 1, 2], [1, 2, 1]), ([3, 2], [2, 3]),
    ([2, 2, 2, 2], [1, 1, 2, 1])])
def test_compose_1d_multichannel_equals_chain(strides, dilations, rng):
    chans = [2, 3, 4, 2, 3][:len(strides) + 1]
    ws = [rng.standard_normal((chans[i + 1], chans[i], k))
          for i, k in zip(range(len(strides)), [3, 2, 4, 3])]
    x = rng.standard_normal((2, chans[0], 131))
    w, s = compose(ws, strides, dilations)
    assert w.shape == (chans[len(strides)], chans[0], receptive_field(
        [v.shape[-1] for v in ws], strides, dilations)[0])
    assert_close(conv1d(x, w, stride=s), _chain(x, ws, strides, dilations, conv1d))


@pytest.mark.parametrize("strides,dilations", [
    ([2, 2], [1, 1]), ([(2, 1), 2, 1], [1, (1, 2), 1]), ([1, 2, 2], [2, 1, 1]),
    ([2, 1, 2], [1, 2, 1])])
@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_compose_2d_equals_chain_with_padding_once(strides, dilations, mode, rng):
    ws = [rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((4, 3, 2, 3)),
          rng.standard_normal((2, 4, 3, 2))][:len(strides)]
    x = rng.standard_normal((1, 2, 23, 21))
    w, s = compose(ws, strides, dilations, paddings=[(2, 1), 0, 0][:len(strides)])
    first = dict(padding=(2, 1), padding_mode=mode)
    y = conv2d(x, ws[0], stride=strides[0], dilation=dilations[0], **first)
    y = _chain(y, ws[1:], strides[1:], dilations[1:], conv2d)
    assert_close(conv2d(x, w, stride=s, **first), y)


def test_single_channel_2d_kernels(rng):
    k = rng.standard_normal((3, 3))
    w, s = compose([k, k, k], [2, 2, 2])
    assert s == 8 and w.shape == (15, 15)
    w_t, s_t = compose([k, k, k], [2, (2, 2), 2])
    assert s_t == (8, 8)  # a stride given as a tuple gives a tuple
    assert_close(w_t, w)
    x = rng.standard_normal((1, 1, 47, 47))
    assert_close(conv2d(x, w[None, None], stride=s),
                 _chain(x, [k[None, None]] * 3, [2, 2, 2], [1, 1, 1], conv2d))


def test_anisotropic_strides_give_a_tuple(rng):
    ws = [rng.standard_normal((2, 1, 2, 3)), rng.standard_normal((1, 2, 3, 2))]
    w, s = compose(ws, [(1, 2), (3, 1)])
    assert s == (3, 2)
    x = rng.standard_normal((2, 1, 19, 17))
    assert_close(conv2d(x, w, stride=s), _chain(x, ws, [(1, 2), (3, 1)], [1, 1], conv2d))


def test_composition_matches_impulse_response_reference(rng):
    ws = [rng.standard_normal((3, 2, 3, 2)), rng.standard_normal((2, 3, 2, 3))]
    w, s = compose(ws, [2, (1, 3)], [(2, 1), 1])
    w_ref, s_ref = _compose_reference(ws, [2, (1, 3)], [(2, 1), 1])
    assert_close(w, w_ref)
    assert s == s_ref == (2, 6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), nd=st.sampled_from([1, 2]), depth=st.integers(1, 4))
def test_property_composed_conv_equals_chain(data, nd, depth):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    chans = [data.draw(st.integers(1, 3)) for _ in range(depth + 1)]
    ks = [tuple(data.draw(st.integers(1, 3)) for _ in range(nd)) for _ in range(depth)]
    strides = [data.draw(st.integers(1, 3)) for _ in range(depth)]
    dilations = [data.draw(st.integers(1, 2)) for _ in range(depth)]
    ws = [rng.standard_normal((chans[i + 1], chans[i]) + ks[i]) for i in range(depth)]
    w, s = compose(ws, strides, dilations)
    sizes = [receptive_field([k[a] for k in ks], strides, dilations)[0] for a in range(nd)]
    jump = int(np.prod(strides))
    assert w.shape[2:] == tuple(sizes) and s == jump
    extra = data.draw(st.integers(0, 2 * jump))
    x = rng.standard_normal((1, chans[0]) + tuple(n + extra for n in sizes))
    conv = conv1d if nd == 1 else conv2d
    assert_close(conv(x, w, stride=s), _chain(x, ws, strides, dilations, conv))


# ----------------------------------------------------------------------------------------------
# dilate and receptive_field
# ----------------------------------------------------------------------------------------------

def test_dilate_shapes_and_equivalence(rng):
    k = rng.standard_normal((2, 3, 3, 2))
    d = dilate(k, (2, 3))
    assert d.shape == (2, 3, 5, 4)
    x = rng.standard_normal((1, 3, 12, 13))
    assert_close(conv2d(x, d), conv2d(x, k, dilation=(2, 3)))
    assert_close(dilate(np.array([1.0, 2.0, 3.0]), 2), [1, 0, 2, 0, 3])
    assert_close(dilate(np.array([[1.0, 2.0]]), (1, 3)), [[1, 0, 0, 2]])
    w1 = rng.standard_normal((2, 2, 3))  # (C_out, C_in, k): only the last axis
    assert dilate(w1, 2).shape == (2, 2, 5)
    assert_close(dilate(k, 1), k)


def test_receptive_field():
    assert receptive_field([3, 3], [2, 2]) == (7, 4)
    assert receptive_field([3, 3, 3], [1, 1, 1], [1, 2, 4]) == (15, 1)
    assert receptive_field([(3, 1), 3], [2, (1, 2)]) == ((7, 5), (2, 4))
    w, s = compose([np.ones(3), np.ones(2), np.ones(5)], [2, 3, 1], [1, 2, 1])
    assert (w.size, s) == receptive_field([3, 2, 5], [2, 3, 1], [1, 2, 1])


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

K = np.ones(3)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: compose([K, K], [2, 2], paddings=[1, 1]), ValueError,
     r"paddings\[1\]=1: padding between layers cannot be composed exactly"),
    (lambda: compose([K, K], [2, 2], paddings=["same", 0]), ValueError, "explicit integer"),
    (lambda: compose([K, K], [2]), ValueError, "strides must be a sequence with one entry"),
    (lambda: compose([K, K], [1, 1], [1]), ValueError, "dilations must be a sequence"),
    (lambda: compose([np.ones((2, 1, 3)), np.ones((1, 3, 3))], [1, 1]), ValueError,
     "channel mismatch between layers 0 and 1"),
    (lambda: compose([K, np.ones((3, 3))], [1, 1]), ValueError, "same ndim"),
    (lambda: compose([K], [0]), ValueError, r"strides\[0\] must be >= 1"),
    (lambda: compose([K], [1], [1.5]), TypeError, r"dilations\[0\] must be an integer"),
    (lambda: compose(K, [1]), TypeError, "weights must be a list or tuple"),
    (lambda: compose([], []), ValueError, "at least one layer"),
    (lambda: compose([np.ones(3, complex)], [1]), TypeError, r"weights\[0\].*complex"),
    (lambda: compose([np.ones((1, 1, 1, 1, 3))], [1]), ValueError, "1 or 2 or 3 or 4"),
    (lambda: dilate(K, 0), ValueError, "rate must be >= 1"),
    (lambda: dilate(K, (2, 2)), ValueError, "rate must be an int or a sequence of 1"),
    (lambda: dilate(np.ones(3, complex), 2), TypeError, "kernel"),
    (lambda: receptive_field([], []), ValueError, "non-empty"),
    (lambda: receptive_field([3, 3], [1]), ValueError, "strides"),
    # issue 18 item 7: huge rates name the argument (no OverflowError)
    (lambda: dilate(K, 1e300), ValueError, r"^rate=1e\+300: the dilated kernel would need"),
    (lambda: dilate(K, 2**63), ValueError, r"^rate=9223372036854775808: the dilated kernel"),
    (lambda: dilate(np.ones((2, 3)), (2, 10**30)), ValueError, r"^rate=\(2, 10{30}\)"),
    (lambda: compose([K, K], [2**70, 2]), ValueError, "the composed kernel .* would need"),
])
def test_bad_input_raises_clearly(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_huge_rates_and_strides_on_size_one_axes_are_valid(rng):
    """A size-1 axis has no gap to fill: any rate (even beyond int64) leaves it alone."""
    w = rng.standard_normal((2, 3, 1, 3))
    np.testing.assert_array_equal(dilate(w, (10**30, 2)), dilate(w, (1, 2)))
    np.testing.assert_array_equal(dilate(np.ones(1), 1e300), np.ones(1))
    k, s = compose([np.ones((1, 1, 3)), np.ones((1, 1, 1))], [2**70, 2**70])
    np.testing.assert_array_equal(k, np.ones((1, 1, 3)))
    assert s == 2**140
    assert receptive_field([3, 1], [2**70, 3]) == (3, 3 * 2**70)


# ----------------------------------------------------------------------------------------------
# the lattice kernels: both fold orders, exact sums, the stated rounding bound, threads
# ----------------------------------------------------------------------------------------------

def _exact_compose(ws, strides, dilations):
    """``K`` in exact rational arithmetic (``fractions.Fraction``), from the definition:
    ``K[o, i, S t] += W_L[o, m, u_L] ... W_1[m', i, u_1]`` over every path, ``t = sum_l
    J_l d_l u_l`` (2-D weights). Also returns ``compose(|W|)`` exactly."""
    from fractions import Fraction
    import itertools

    strides = [(s, s) if np.isscalar(s) else s for s in strides]
    dilations = [(d, d) if np.isscalar(d) else d for d in dilations]
    sizes = [receptive_field([w.shape[2 + a] for w in ws], [s[a] for s in strides],
                             [d[a] for d in dilations])[0] for a in range(2)]
    rates, jump = [], (1, 1)
    for s, d in zip(strides, dilations):
        rates.append((jump[0] * d[0], jump[1] * d[1]))
        jump = (jump[0] * s[0], jump[1] * s[1])
    # T[i] maps (position, channel) -> exact value, folded from the input side
    t = {}
    w0 = ws[0]
    for o, i, a, b in itertools.product(*map(range, w0.shape)):
        t[(o, i, a * rates[0][0], b * rates[0][1])] = (Fraction(w0[o, i, a, b]),
                                                       Fraction(abs(w0[o, i, a, b])))
    for w, (rh, rw) in zip(ws[1:], rates[1:]):
        nxt = {}
        for (m, i, ph, pw), (v, va) in t.items():
            for o, a, b in itertools.product(range(w.shape[0]), range(w.shape[2]),
                                             range(w.shape[3])):
                key = (o, i, ph + a * rh, pw + b * rw)
                f = Fraction(w[o, m, a, b])
                old = nxt.get(key, (Fraction(0), Fraction(0)))
                nxt[key] = (old[0] + f * v, old[1] + abs(f) * va)
        t = nxt
    k = np.zeros((ws[-1].shape[0], ws[0].shape[1]) + tuple(sizes), dtype=object)
    k_abs = np.zeros_like(k)
    k[...] = Fraction(0)
    k_abs[...] = Fraction(0)
    for (o, i, ph, pw), (v, va) in t.items():
        k[o, i, ph, pw], k_abs[o, i, ph, pw] = v, va
    return k, k_abs


def _both_orders(ws, strides, dilations):
    """The lattice fold from the output side and from the input side (whichever compose
    would take)."""
    import lmref.compose as C

    arrays, _, nd = C._check_weights(ws)
    ss = C._per_layer(strides, "strides", len(ws), nd)[0]
    ds = C._per_layer(dilations, "dilations", len(ws), nd, default=1)[0]
    rates = C._layer_rates(ss, ds)
    out = list(zip(arrays[::-1], rates[::-1]))
    inp = [(w.transpose(1, 0, 2, 3), r) for w, r in zip(arrays, rates)]
    return (C._fold(out, C._fold_plan(out)).transpose(0, 3, 1, 2),
            C._fold(inp, C._fold_plan(inp)).transpose(3, 0, 1, 2))


_LATTICE_CASES = [
    # channels per layer boundary, kernel sizes, strides, dilations
    ([2, 3, 2], [(3, 3), (3, 2)], [2, 1], [1, 2]),
    ([1, 5, 6, 3], [(3, 3), (2, 3), (3, 1)], [2, (1, 2), 3], [1, (2, 1), 2]),
    ([3, 1, 4], [(1, 3), (3, 1)], [(1, 2), 2], [(10**30, 1), (2, 10**30)]),
    ([5, 4, 3, 6], [(3, 3), (3, 3), (3, 3)], [2, 1, 2], [1, 2, 1]),
    ([2, 2, 2], [(2, 2), (2, 2)], [1, 1], [2, 2]),  # a dilated lattice to the end
    ([4, 7, 5], [(1, 1), (3, 3)], [3, 1], [1, 1]),
]


@pytest.mark.parametrize("chans,ks,strides,dilations", _LATTICE_CASES)
def test_lattice_orders_within_the_stated_bound_of_the_exact_kernel(chans, ks, strides,
                                                                    dilations, rng):
    """compose, both fold orders and the dense NumPy path all lie within ``gamma_n *
    compose(|W|)`` of the exact (rational) kernel, ``n`` = ``_rounding_terms``."""
    import lmref.compose as C

    ws = [rng.standard_normal((chans[i + 1], chans[i]) + k) for i, k in enumerate(ks)]
    exact, exact_abs = _exact_compose(ws, strides, dilations)
    n = C._rounding_terms(ws)
    u = 2.0**-53
    bound = (n * u / (1 - n * u)) * exact_abs.astype(float)
    got, _ = compose(ws, strides, dilations)
    arrays, _, _ = C._check_weights(ws)
    ss = C._per_layer(strides, "strides", len(ws), 2)[0]
    ds = C._per_layer(dilations, "dilations", len(ws), 2, default=1)[0]
    for name, k in [("compose", got), ("dense", C._compose_dense(arrays, ss, ds))] + \
            list(zip(["from output", "from input"], _both_orders(ws, strides, dilations))):
        assert k.shape == exact.shape, name
        err = np.abs(np.array(k - exact, dtype=object)).astype(float)
        assert (err <= bound).all(), f"{name}: worst excess {(err - bound).max()}"


@pytest.mark.parametrize("chans,ks,strides,dilations", _LATTICE_CASES)
def test_integer_weights_compose_exactly(chans, ks, strides, dilations, rng):
    ws = [rng.integers(-9, 10, (chans[i + 1], chans[i]) + k).astype(float)
          for i, k in enumerate(ks)]
    exact = _exact_compose(ws, strides, dilations)[0].astype(float)
    np.testing.assert_array_equal(compose(ws, strides, dilations)[0], exact)
    for k in _both_orders(ws, strides, dilations):
        np.testing.assert_array_equal(k, exact)


def test_lattice_gaps_stay_zero_with_infinite_weights():
    """Positions no path reaches (the gaps of a dilated result) hold an exact 0: the lattice
    never multiplies a structural zero, so an infinite weight does not spread NaN there."""
    w0 = np.array([1.0, 2.0])
    w1 = np.array([np.inf, 3.0])
    k, s = compose([w0, w1], [1, 1], [2, 2])
    np.testing.assert_array_equal(k, [np.inf, 0.0, np.inf, 0.0, 6.0])
    assert s == 1


def test_compose_does_not_depend_on_the_thread_count(rng):
    """The parallel fold (above _PARALLEL_MIN_WORK) gives the serial result bit for bit."""
    import numba

    import lmref.compose as C

    ws = [rng.standard_normal((17, 17, 3, 3)) for _ in range(3)]
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = compose(ws, [2, 1, 2], [1, 2, 1])[0]
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = compose(ws, [2, 1, 2], [1, 2, 1])[0]
    finally:
        numba.set_num_threads(before)
    # the last step: 17 rows (four blocks of 4 and one left over), 7x7 lattice taps times
    # 3x3 taps, 17 x 17 channels
    assert 17 * 49 * 9 * 17 * 17 >= C._PARALLEL_MIN_WORK
    np.testing.assert_array_equal(one, two)


# ----------------------------------------------------------------------------------------------
# the whole fold in one call (_fold_chain) and the plans kept per call pattern
# ----------------------------------------------------------------------------------------------

_CHAIN_CASES = _LATTICE_CASES + [
    ([4, 4, 4, 4], [(3, 3), (3, 3), (3, 3)], [2, 1, 2], [1, 2, 1]),  # the benchmark's chain
    ([3, 2], [(2, 3)], [2], [(1, 3)]),  # one layer: the dilated weight itself
    ([1, 1, 1, 1, 1], [(3, 1), (2, 2), (1, 3), (3, 3)], [1, 2, 1, 3], [2, 1, 3, 1]),
    ([6, 1, 2], [(3, 3), (3, 3)], [(2, 3), 1], [1, (3, 2)]),
    ([1, 4, 4, 8], [(3, 3), (2, 3), (3, 3)], [1, 1, 1], [1, 1, 1]),  # from the input side
]


def _lattice_reference(ws, strides, dilations):
    """compose's kernel the step-by-step way (_compose_lattice: one launch per factor)."""
    import lmref.compose as C

    arrays, _, nd = C._check_weights(ws)
    ss = C._per_layer(strides, "strides", len(ws), nd)[0]
    ds = C._per_layer(dilations, "dilations", len(ws), nd, default=1)[0]
    if nd == 1:  # as a 2-D chain with height-1 kernels
        k = C._compose_lattice([w[:, :, None] for w in arrays], [(1,) + s for s in ss],
                               [(1,) + d for d in ds])
        return k[:, :, 0]
    return C._compose_lattice(arrays, ss, ds)


@pytest.mark.parametrize("chans,ks,strides,dilations", _CHAIN_CASES)
def test_fold_chain_equals_the_step_by_step_fold_bitwise(chans, ks, strides, dilations, rng):
    import lmref.compose as C

    ws = [rng.standard_normal((chans[i + 1], chans[i]) + k) for i, k in enumerate(ks)]
    ws[0][0, 0, 0, 0] = -np.inf  # infinities and NaNs land where the step-by-step fold puts them
    plan = C._plan(ws, strides, dilations, None)[1]
    assert plan.chain
    np.testing.assert_array_equal(compose(ws, strides, dilations)[0],
                                  _lattice_reference(ws, strides, dilations))


def test_fold_chain_cases_cover_both_fold_sides(rng):
    import lmref.compose as C

    sides = {C._plan([np.ones((chans[i + 1], chans[i]) + k) for i, k in enumerate(ks)],
                     strides, dilations, None)[1].from_input
             for chans, ks, strides, dilations in _CHAIN_CASES}
    assert sides == {False, True}


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("bare", [False, True])
def test_fold_chain_1d_and_bare_kernels_equal_the_step_by_step_fold(nd, bare, rng):
    chans = [1, 1, 1] if bare else [2, 3, 2]
    ws = [rng.standard_normal((chans[i + 1], chans[i]) + (3,) * nd) for i in range(2)]
    if bare:
        ws = [w[0, 0] for w in ws]
    got, s = compose(ws, [2, 3], [2, 1])
    ref = _lattice_reference(ws, [2, 3], [2, 1])
    np.testing.assert_array_equal(got, ref[0, 0] if bare else ref)
    assert s == 6 and got.flags.c_contiguous


def test_step_by_step_path_above_the_parallel_threshold_equals_the_chain(rng, monkeypatch):
    """compose's other path (one launch per factor, parallel when large) on the same call."""
    import lmref.compose as C

    ws = [rng.standard_normal((3, 3, 3, 3)) for _ in range(3)]
    chain = compose(ws, [2, 1, 2], [1, 2, 1])[0]
    monkeypatch.setattr(C, "_PLANS", {})
    monkeypatch.setattr(C, "_PARALLEL_MIN_WORK", 0)
    assert not C._plan(ws, [2, 1, 2], [1, 2, 1], None)[1].chain
    np.testing.assert_array_equal(compose(ws, [2, 1, 2], [1, 2, 1])[0], chain)


@pytest.mark.parametrize("spell", [
    lambda ws: (ws, [2, 1, 2], [1, 2, 1]),
    lambda ws: (tuple(ws), (2, 1, 2), (1, (2, 2), 1)),  # tuples: the same plan
    lambda ws: ([w.tolist() for w in ws], [2, 1, 2], [1, 2, 1]),  # not memoised
    lambda ws: ([np.stack([w, w], -1)[..., 0] for w in ws], np.array([2, 1, 2]), [1, 2, 1]),
    lambda ws: ([np.asfortranarray(w) for w in ws], [2, 1, 2], [np.int64(1), 2, 1]),
])
def test_memoised_plans_hold_no_weight_values(spell, rng):
    """A second call of a pattern with other weights composes those weights; every spelling
    (memoised or not) gives the same bits."""
    for _ in range(2):
        ws = [rng.standard_normal((3, 3, 3, 3)) for _ in range(3)]
        got = compose(*spell(ws))
        np.testing.assert_array_equal(got[0], _lattice_reference(ws, [2, 1, 2], [1, 2, 1]))
        assert got[1] == 4 or got[1] == (4, 4)


def test_read_only_weights_are_composed(rng):
    ws = [rng.standard_normal((2, 2, 3)) for _ in range(2)]
    ref = compose(ws, [2, 2])[0]
    for w in ws:
        w.flags.writeable = False
    np.testing.assert_array_equal(compose(ws, [2, 2])[0], ref)


@pytest.mark.parametrize("call,exc,match", [
    (lambda w: compose([w, w], [0, 2]), ValueError, r"strides\[0\] must be >= 1"),
    (lambda w: compose([w, w], [True, 2]), TypeError, r"strides\[0\] must be an integer"),
    (lambda w: compose([w, w], [2, 2], [1]), ValueError, "dilations must be a sequence"),
    (lambda w: compose([w, w], [2, 2], paddings=[1, 1]), ValueError, r"paddings\[1\]=1"),
    (lambda w: compose([w, w[:, :1]], [2, 2]), ValueError, "channel mismatch"),
    (lambda w: compose([w, np.ones((2, 2, 0))], [2, 2]), ValueError, r"weights\[1\] must not"),
    (lambda w: compose([w, w.astype(complex)], [2, 2]), TypeError, r"weights\[1\].*complex"),
])
def test_errors_are_unchanged_once_a_pattern_is_memoised(call, exc, match):
    """A valid call of the same shapes first: the bad ones still raise, every time."""
    w = np.ones((2, 2, 3))
    compose([w, w], [2, 2])
    for _ in range(2):
        with pytest.raises(exc, match=match):
            call(w)


def test_memoised_pattern_still_checks_the_allocation_limit(monkeypatch):
    w = np.ones((2, 2, 3, 3))
    compose([w, w], [2, 2])
    monkeypatch.setenv("LMREF_MAX_BYTES", "100")
    with pytest.raises(ValueError, match="the composed kernel .* would need"):
        compose([w, w], [2, 2])
    monkeypatch.delenv("LMREF_MAX_BYTES")
    assert compose([w, w], [2, 2])[0].shape == (2, 2, 7, 7)


def test_paddings_spelled_plainly_are_memoised_and_still_checked():
    w = np.ones((2, 2, 3))
    for _ in range(2):
        assert compose([w, w], [2, 2], paddings=[(1, 2), 0])[1] == 4
    for _ in range(2):
        with pytest.raises(ValueError, match=r"paddings\[1\]=\(0, 1\): padding between layers"):
            compose([w, w], [2, 2], paddings=[(1, 2), (0, 1)])
        with pytest.raises(ValueError, match=r"paddings\[0\] must be >= 0"):
            compose([w, w], [2, 2], paddings=[-1, 0])


@pytest.mark.parametrize("c_mid", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("c_in", [1, 2, 4, 5, 6, 9])
def test_narrow_row_update_equals_the_vectorised_one_bitwise(c_mid, c_in, rng):
    """_fold_rows with ``narrow`` (sums kept over the middle channels) and without (the column
    loop innermost) make the same additions in the same order, whatever the column count."""
    import lmref.compose as C

    t = rng.standard_normal((6, 3, 2, c_mid))
    x = rng.standard_normal((2, 3, c_mid, c_in))
    t[1, 0, 0, 0], x[0, 1, -1, 0] = np.inf, -0.0  # special values follow the same path
    start = rng.standard_normal((6, 6, 8, c_in))  # rh <= 2 * 2 + 1, rw <= 3 * 1 + 2 * 2
    outs = []
    for narrow in (False, True):
        out = start.copy()
        # rows 1..4; T taps 2 / 3 apart, X taps 1 / 2 apart: several tap pairs meet
        C._fold_rows(t, x, 2, 3, 1, 2, 1, 4, narrow, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], start)
