import numpy as np
import pytest

from lmref.testing import assert_close, compare, gradcheck, ulp_distance


def test_compare_reports_border_only(rng):
    a = rng.standard_normal((2, 3, 6, 6))
    b = a.copy()
    b[..., 0, :] += 1
    rep = compare(b, a)
    assert not rep.ok and rep.n_mismatch == 2 * 3 * 6
    assert "only on the border" in rep.message
    assert rep.worst_index[2] == 0


def test_compare_spread_and_shift(rng):
    a = rng.standard_normal((8, 9))
    rep = compare(np.roll(a, 1, axis=-1), a)
    assert "spread" in rep.message and "shifted by +1" in rep.message


def test_compare_exact_and_shape_mismatch(rng):
    a = rng.standard_normal((4, 5))
    assert compare(a, a.copy()).ok
    rep = compare(a, a.T)
    assert not rep.ok and "shape mismatch" in rep.message


def test_float32_tolerance_is_looser(rng):
    a = rng.standard_normal(100)
    b32 = a.astype(np.float32)
    assert compare(b32, a).ok
    with pytest.raises(AssertionError, match="mismatch"):
        assert_close(b32.astype(np.float64), a)


def test_nan_handling():
    a = np.array([1.0, np.nan])
    assert compare(a, a.copy()).ok
    assert not compare(a, a, equal_nan=False).ok
    assert not compare(np.array([1.0, 2.0]), a).ok


def test_ulp_distance():
    assert ulp_distance(1.0, np.nextafter(1.0, 2.0)) == 1
    assert ulp_distance(-0.0, 0.0) == 0


def test_gradcheck_catches_wrong_backward(rng):
    x = rng.standard_normal((3, 4))
    g = rng.standard_normal((3, 4))
    gradcheck(np.sin, [x], g, lambda go, x: (go * np.cos(x),))
    with pytest.raises(AssertionError, match="gradcheck failed"):
        gradcheck(np.sin, [x], g, lambda go, x: (go * np.cos(x) * 1.001,))


# --- diagnosis on constructed bugs -------------------------------------------------------------
# A tiny, obviously-correct NumPy cross-correlation (groups, per-side zero padding) so these tests
# do not depend on lmref.conv: the point is what compare() says about the *pattern* of errors.

from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from lmref.testing import check_vjp, default_tolerances, torch_backward, torch_forward  # noqa: E402


def _conv(x, w, pad=((0, 0), (0, 0)), groups=1, mode="constant"):
    x = np.pad(x, ((0, 0), (0, 0), *pad), mode=mode)
    n, c, _, _ = x.shape
    co, cig, kh, kw = w.shape
    cog = co // groups
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))  # n, c, ho, wo, kh, kw
    out = [np.einsum("nchwij,ocij->nohw", win[:, g * cig:(g + 1) * cig], w[g * cog:(g + 1) * cog])
           for g in range(groups)]
    return np.concatenate(out, axis=1)


def _diag(rep):
    assert not rep.ok
    return "\n".join(rep.diagnosis)


def test_wrong_padding_mode_is_a_border_bug(rng):
    x, w = rng.standard_normal((2, 3, 12, 12)), rng.standard_normal((4, 3, 3, 3))
    desired = _conv(x, w, ((1, 1), (1, 1)))
    actual = _conv(x, w, ((1, 1), (1, 1)), mode="edge")  # replicate instead of zeros
    d = _diag(compare(actual, desired))
    assert "only on the border (one-pixel frame" in d and "top, bottom" in d and "left, right" in d
    # a 5x5 kernel with the same bug leaves a 2-pixel frame
    w5 = rng.standard_normal((4, 3, 5, 5))
    d5 = _diag(compare(_conv(x, w5, ((2, 2), (2, 2)), mode="reflect"), _conv(x, w5, ((2, 2), (2, 2)))))
    assert "2-pixel frame" in d5


def test_same_padding_extra_pixel_on_the_wrong_side(rng):
    # even kernel, 'same': lmref puts the extra padding pixel at the end (bottom/right)
    x, w = rng.standard_normal((1, 2, 10, 10)), rng.standard_normal((3, 2, 2, 2))
    desired = _conv(x, w, ((0, 1), (0, 1)))
    actual = _conv(x, w, ((1, 0), (1, 0)))
    d = _diag(compare(actual, desired))
    assert "shifted by +1 along axis 2 and +1 along axis 3" in d
    # only the last row computed with the wrong padding: a one-sided border bug
    actual2 = desired.copy()
    actual2[..., -1, :] = 0
    d2 = _diag(compare(actual2, desired))
    assert "sides: bottom" in d2 and "extra pixel of 'same'" in d2


def test_flipped_kernel_shows_as_shift_for_offcentre_kernels_and_via_suspects(rng):
    x = rng.standard_normal((1, 1, 9, 9))
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 1, 2] = 1.0  # an off-centre tap: flipping it moves the output by two pixels
    desired = _conv(x, w, ((1, 1), (1, 1)))
    actual = _conv(x, w[..., ::-1, ::-1], ((1, 1), (1, 1)))  # true convolution, not correlation
    # actual[..., j] = x[..., j - 1] = desired[..., j - 2]
    assert "shifted by +2 along axis 3" in _diag(compare(actual, desired))
    # a general kernel: the pattern says nothing, a suspect computed with lmref does
    wr = rng.standard_normal((1, 1, 3, 3))
    desired = _conv(x, wr, ((1, 1), (1, 1)))
    actual = _conv(x, wr[..., ::-1, ::-1], ((1, 1), (1, 1)))
    rep = compare(actual, desired, suspects={"kernel flipped": actual.copy(),
                                             "zero padding 0": _conv(x, wr)})
    assert rep.diagnosis[0] == "actual matches the suspect: kernel flipped"
    assert "zero padding 0" not in rep.message


def test_wrong_groups_names_the_channels(rng):
    x, w = rng.standard_normal((2, 6, 7, 7)), rng.standard_normal((6, 2, 3, 3))
    desired = _conv(x, w, groups=3)
    # bug: the last group reads the first group's input channels
    xb = x.copy()
    xb[:, 4:6] = x[:, 0:2]
    actual = _conv(xb, w, groups=3)
    d = _diag(compare(actual, desired))
    assert "only channels 4-5 of 6 differ: grouping" in d


def test_channel_order_reversed_and_permuted(rng):
    a = rng.standard_normal((2, 3, 5, 5))
    assert "reversed (e.g. RGB vs BGR)" in _diag(compare(a[:, ::-1], a))
    perm = [1, 2, 0, 3]
    b = rng.standard_normal((4, 5, 6))  # (C, H, W)
    assert "desired channel [1, 2, 0, 3][i]" in _diag(compare(b[perm], b))


def test_nhwc_layout(rng):
    x, w = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 3))
    desired = _conv(x, w)  # (2, 4, 4, 5)
    nhwc = desired.transpose(0, 2, 3, 1)
    rep = compare(nhwc, desired)
    assert "shape mismatch" in rep.message and "NHWC (channels-last)" in rep.message
    # the NHWC buffer reshaped (instead of permuted) into NCHW keeps the shape but not the data
    reshaped = np.ascontiguousarray(nhwc).reshape(desired.shape)
    assert "channels-last order (NHWC) reinterpreted as NCHW" in _diag(compare(reshaped, desired))
    # kernels in HWIO
    rep = compare(w.transpose(2, 3, 1, 0), w)
    assert "HWIO" in rep.message


def test_transposed_mirrored_sign_scale_offset(rng):
    a = rng.standard_normal((3, 6, 6))
    assert "last two axes swapped" in _diag(compare(np.swapaxes(a, -1, -2), a))
    assert "mirrored along axis 1" in _diag(compare(a[:, ::-1], a))
    assert "actual equals -desired" in _diag(compare(-a, a))
    assert "actual = 1/9 x desired" in _diag(compare(a / 9, a))
    assert "actual = desired + 0.5" in _diag(compare(a + 0.5, a))


def test_output_size_off_by_one(rng):
    a = rng.standard_normal((1, 2, 8, 8))
    rep = compare(a[..., :7, :7], a)
    assert "spatial size differs by [-1, -1]" in rep.message


def test_flow_component_order_and_sign(rng):
    flow = rng.standard_normal((5, 6, 2))
    assert "flow component order" in _diag(compare(flow[..., ::-1], flow))
    flipped = flow.copy()
    flipped[..., 1] *= -1
    assert "component 1 (dy) has the opposite sign" in _diag(compare(flipped, flow))


def test_float32_rounding_and_nan_notes(rng):
    a = rng.standard_normal((4, 8, 8))
    d = _diag(compare(a.astype(np.float32).astype(np.float64), a))
    assert "float32 rounding" in d
    b = a.copy()
    b[0, 1, 1] = np.nan
    assert "desired is NaN at 1 position(s)" in _diag(compare(a, b))
    assert "NaN in actual at 1 position(s)" in _diag(compare(b, a))
    c = a.copy()
    c[1, 2, 3] = np.inf
    assert "infinity at 1 position(s)" in _diag(compare(c, a))


def test_no_false_diagnosis_on_random_error(rng):
    a = rng.standard_normal((2, 4, 8, 8))
    rep = compare(a + 0.1 * rng.standard_normal(a.shape), a)
    assert not rep.ok and rep.diagnosis == []
    assert "spread over the array" in rep.message


def test_constant_desired_does_not_claim_a_shift():
    a = np.ones((6, 6))
    rep = compare(a * 2, a)
    assert not any("shifted" in n or "mirrored" in n or "swapped" in n for n in rep.diagnosis)


# --- tolerances per dtype, ULP, worst element ---------------------------------------------------

@pytest.mark.parametrize("dtype, expected", [
    (np.float64, (1e-10, 1e-12)), (np.float32, (1.3e-6, 1e-5)), (np.float16, (1e-3, 1e-5)),
    ("bfloat16", (1.6e-2, 1e-5)), (np.int32, (0.0, 0.0)), (np.bool_, (0.0, 0.0)),
    ("torch.float32", (1.3e-6, 1e-5)), ("half", (1e-3, 1e-5))])
def test_default_tolerances(dtype, expected):
    assert default_tolerances(dtype) == expected


@pytest.mark.parametrize("low", [np.float16, np.float32])
def test_tolerance_follows_the_less_precise_operand(rng, low):
    a = rng.standard_normal(1000)
    low_a = a.astype(low)
    assert compare(low_a, a).ok and compare(a, low_a).ok
    assert compare(low_a, a).rtol == default_tolerances(low)[0]
    # one ULP-level error of the low dtype passes, a 10x bigger one does not
    eps = np.finfo(low).eps
    assert not compare(a * (1 + 10 * default_tolerances(low)[0]) + 1, a + 1, dtype=low).ok
    assert compare((a * (1 + eps / 4)).astype(low), a).ok


def test_bfloat16_from_torch_gets_bfloat16_tolerance(torch, rng):
    a = rng.standard_normal(200)
    t = torch.from_numpy(a).to(torch.bfloat16)
    rep = compare(t, a)
    assert rep.ok and rep.rtol == 1.6e-2
    assert not compare(t.float().numpy().astype(np.float64), a).ok  # float64 tolerance


def test_ulp_and_worst_element():
    a = np.array([1.0, 2.0, 3.0, -1.0])
    b = a.copy()
    b[2] = np.nextafter(np.nextafter(3.0, 4.0), 4.0)
    rep = compare(b, a, rtol=0, atol=0)
    assert rep.max_ulp == 2 and rep.worst_index == (2,) and rep.n_mismatch == 1
    assert rep.worst_desired == 3.0
    assert ulp_distance(-1.0, np.nextafter(-1.0, 0.0)) == 1
    assert ulp_distance(np.nextafter(0.0, -1.0), np.nextafter(0.0, 1.0)) == 2


def test_compare_refuses_complex_and_accepts_lists():
    with pytest.raises(TypeError, match="actual must be a real array"):
        compare(np.ones(3) * 1j, np.ones(3))
    assert compare([[1.0, 2.0]], np.array([[1.0, 2.0]])).ok


def test_infinities_match_only_with_the_same_sign():
    assert compare(np.array([np.inf, 1.0]), np.array([np.inf, 1.0])).ok
    assert not compare(np.array([-np.inf, 1.0]), np.array([np.inf, 1.0])).ok


# --- check_vjp, torch helpers -------------------------------------------------------------------

def _mul_backward(g, a, b):
    return g * b, g * a


def test_check_vjp_accepts_equal_and_names_the_wrong_gradient(rng):
    a, b, g = (rng.standard_normal((3, 4)) for _ in range(3))
    reps = check_vjp(_mul_backward, _mul_backward, g, a, b)
    assert len(reps) == 2 and all(reps)
    with pytest.raises(AssertionError, match="gradient 1"):
        check_vjp(lambda g, a, b: (g * b, g * a * 1.01), _mul_backward, g, a, b)
    with pytest.raises(AssertionError, match="returned 1 gradients, lmref 2"):
        check_vjp(lambda g, a, b: (g * b,), _mul_backward, g, a, b)


def test_check_vjp_passes_kwargs_and_skips_none(rng):
    x, g = rng.standard_normal(5), rng.standard_normal(5)

    def ref(g, x, y, *, scale):
        return g * scale, None

    assert len(check_vjp(lambda g, x, y, *, scale: (g * scale, None), ref, g, x, x, scale=2.0)) == 1
    with pytest.raises(AssertionError, match="gradient 0"):
        check_vjp(lambda g, x, y, *, scale: (g, None), ref, g, x, x, scale=2.0)


def test_torch_helpers_gradcheck_and_check_vjp(torch, rng):
    def my_layer(a, b, *, scale):  # a user's torch function
        return scale * torch.sin(a) * b

    def lmref_like_backward(g, a, b, *, scale):
        return g * scale * np.cos(a) * b, g * scale * np.sin(a)

    a, b, g = (rng.standard_normal((3, 4)) for _ in range(3))
    fwd = torch_forward(my_layer)
    np.testing.assert_allclose(fwd(a, b, scale=2.0), 2 * np.sin(a) * b, rtol=1e-15)
    check_vjp(torch_backward(my_layer), lmref_like_backward, g, a, b, scale=2.0)
    gradcheck(lambda a, b: fwd(a, b, scale=2.0), [a, b], g,
              lambda go, a, b: torch_backward(my_layer)(go, a, b, scale=2.0))
    # nondiff inputs give None, float32 autograd needs float32 tolerances
    grads = torch_backward(my_layer, nondiff=(1,))(g, a, b, scale=1.0)
    assert grads[1] is None
    g32 = torch_backward(my_layer, dtype="float32")(g, a, b, scale=2.0)
    assert g32[0].dtype == np.float64
    with pytest.raises(AssertionError):
        check_vjp(torch_backward(my_layer, dtype="float32"), lmref_like_backward, g, a, b, scale=2.0)
    check_vjp(torch_backward(my_layer, dtype="float32"), lmref_like_backward, g, a, b, scale=2.0,
              rtol=1.3e-6, atol=1e-5)


def test_gradcheck_reports_without_raising_and_respects_wrt(rng):
    x, y, g = rng.standard_normal(4), rng.standard_normal(4), rng.standard_normal(4)
    rep = gradcheck(lambda x, y: x * y, [x, y], g, lambda go, x, y: (go * y, go * x * 2),
                    raise_on_failure=False)
    assert not rep.ok and "input 1" in rep.message
    assert gradcheck(lambda x, y: x * y, [x, y], g, lambda go, x, y: (go * y, go * x * 2), wrt=[0])
    with pytest.raises(ValueError, match="backward returned 1 gradients for 2 inputs"):
        gradcheck(lambda x, y: x * y, [x, y], g, lambda go, x, y: (go * y,))


# --- conv_suspects: a user's PyTorch conv with the usual porting bugs ---------------------------

def _user_conv(torch, x, w, b, bug, **kw):
    F = torch.nn.functional
    t = lambda a: None if a is None else torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    tx, tw, tb = t(x), t(w), t(b)
    if bug == "flip":
        tw = tw.flip(-1, -2)
    elif bug == "iohw":
        tw = tw.transpose(0, 1)
    elif bug == "bgr":
        tx = tx.flip(1)
    elif bug == "no bias":
        tb = None
    elif bug == "zeros mode":
        return F.conv2d(tx, tw, tb, padding=kw["padding"]).numpy()
    elif bug == "same before":
        tx = F.pad(tx, (1, 0, 1, 0))
        return F.conv2d(tx, tw, tb).numpy()
    elif bug == "no dilation":
        kw = {**kw, "dilation": 1}
    if kw.get("padding_mode", "zeros") != "zeros":
        p = kw["padding"]
        tx = F.pad(tx, (p, p, p, p), mode=kw["padding_mode"])
        kw = {**kw, "padding": 0}
    return F.conv2d(tx, tw, tb, padding=kw["padding"], dilation=kw.get("dilation", 1)).numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
@pytest.mark.parametrize("bug, kw, suspect", [
    ("flip", {"padding": 1}, "kernel flipped"),
    ("iohw", {"padding": 1}, "weight in/out channels swapped"),
    ("bgr", {"padding": 1}, "input channels reversed"),
    ("no bias", {"padding": 1}, "bias missing"),
    ("zeros mode", {"padding": 1, "padding_mode": "reflect"}, "padding_mode='zeros' instead of 'reflect'"),
    ("same before", {"padding": "same"}, "'same' padding's extra pixel before"),
    ("no dilation", {"padding": 2, "dilation": 2}, "dilation ignored"),
])
def test_conv_suspects_name_the_bug(torch, rng, bug, kw, suspect):
    from lmref.conv import conv2d
    from lmref.testing import conv_suspects
    x = rng.standard_normal((2, 3, 8, 8))
    k = 2 if bug == "same before" else 3
    w = rng.standard_normal((3, 3, k, k))
    b = rng.standard_normal(3)
    mine = _user_conv(torch, x, w, b, bug, **kw)
    desired = conv2d(x, w, b, **kw)
    assert compare(_user_conv(torch, x, w, b, "none", **kw), desired).ok  # the bug-free port
    rep = compare(mine, desired, suspects=conv_suspects(x, w, b, **kw))
    assert not rep.ok
    assert rep.diagnosis and rep.diagnosis[0].startswith(f"actual matches the suspect: {suspect}")
    assert sum(n.startswith("actual matches the suspect") for n in rep.diagnosis) == 1


def test_conv_suspects_1d_and_bad_ndim(rng):
    from lmref.testing import conv_suspects
    x, w = rng.standard_normal((1, 2, 9)), rng.standard_normal((2, 2, 3))
    sus = conv_suspects(x, w, padding=1)
    assert "kernel flipped (convolution instead of cross-correlation)" in sus
    assert {v.shape for v in sus.values()} == {(1, 2, 9), (1, 2, 7), (1, 2, 11)}
    rep = compare(sus["padding one smaller"], sus["kernel flipped (convolution instead of "
                                                  "cross-correlation)"], suspects=sus)
    assert "actual matches the suspect: padding one smaller" in rep.message
    with pytest.raises(ValueError, match="x must be 3- or 4-dimensional"):
        conv_suspects(x[0], w)


# --- issue 17 section 3: suspects found for you, warp suspects, check_vjp's None, input= -------

@pytest.mark.parametrize("axes, suspect", [((-2,), "kernel flipped along its rows only"),
                                           ((-1,), "kernel flipped along its columns only"),
                                           ((-2, -1), "kernel flipped \\(convolution")])
def test_assert_op_close_names_a_flipped_kernel_without_suspects_by_hand(torch, rng, axes,
                                                                         suspect):
    from lmref.testing import assert_op_close
    x, w = rng.standard_normal((1, 2, 6, 7)), rng.standard_normal((3, 2, 3, 3))
    mine = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w).flip(axes),
                                      padding=1).numpy()
    with pytest.raises(AssertionError, match=f"actual matches the suspect: {suspect}"):
        assert_op_close(mine, "conv2d", x, w, padding=1)
    correct = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1)
    assert assert_op_close(correct, "conv2d", input=x, weight=w, padding=1).ok  # torch's names


def _grid_sample_warp(torch, x, flow, *, normalise_for, align_corners, swap=False):
    """A user's warp through grid_sample, the grid normalised for one align_corners value."""
    H, W = flow.shape[:2]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    fl = flow[..., ::-1] if swap else flow
    px, py = xs + fl[..., 0], ys + fl[..., 1]
    if normalise_for:
        gx, gy = 2 * px / (W - 1) - 1, 2 * py / (H - 1) - 1
    else:
        gx, gy = (2 * px + 1) / W - 1, (2 * py + 1) / H - 1
    grid = torch.from_numpy(np.stack([gx, gy], -1)[None])
    return torch.nn.functional.grid_sample(torch.from_numpy(x), grid, mode="bilinear",
                                           padding_mode="zeros",
                                           align_corners=align_corners).numpy()


@pytest.mark.parametrize("normalise_for, align_corners, swap, suspect", [
    (True, True, False, None),  # the correct port
    (True, False, False, "align_corners=False with a grid normalised for True"),
    (False, True, False, "align_corners=True with a grid normalised for False"),
    (True, True, True, "flow components swapped"),
])
def test_warp_suspects_name_grid_sample_mistakes(torch, rng, normalise_for, align_corners, swap,
                                                 suspect):
    from lmref.testing import compare_op, warp_suspects
    x, flow = rng.standard_normal((1, 2, 5, 7)), rng.uniform(-2, 2, (5, 7, 2))
    mine = _grid_sample_warp(torch, x, flow, normalise_for=normalise_for,
                             align_corners=align_corners, swap=swap)
    rep = compare_op(mine, "warp", x, flow)
    if suspect is None:
        assert rep.ok, rep.message
        return
    assert not rep.ok and rep.diagnosis[0].startswith(f"actual matches the suspect: {suspect}")
    assert sum(n.startswith("actual matches the suspect") for n in rep.diagnosis) == 1
    assert len(warp_suspects(x, flow, boundary="wrap")) == 9
    with pytest.raises(ValueError, match="flow must have shape"):
        warp_suspects(x, flow[..., :1])


def test_sign_flip_reports_no_ulp_distance():
    rep = compare(np.array([-1e-3, 2.0]), np.array([1e-3, 2.0]))
    assert rep.n_sign_differs == 1 and "max ULP distance" not in rep.message
    assert "signs differ at 1 element(s)" in rep.message
    assert "max ULP distance" in compare(np.array([1.1]), np.array([1.0])).message


def test_check_vjp_bias_free_conv_and_torch_names(torch, rng):
    from lmref.conv import conv2d_backward
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    g = rng.standard_normal((2, 4, 6, 6))

    def my_conv(x, w, padding):
        return torch.nn.functional.conv2d(x, w, padding=padding)

    reps = check_vjp(torch_backward(my_conv), conv2d_backward, g, x, w, padding=1)
    assert len(reps) == 2  # lmref's (gx, gw, None) against the user's (gx, gw)

    def my_conv_named(input, weight, padding):
        return torch.nn.functional.conv2d(input, weight, padding=padding)

    assert len(check_vjp(torch_backward(my_conv_named), conv2d_backward, g, w, input=x,
                         padding=1)) == 2  # input= is the first array, as in torch
    with pytest.raises(AssertionError, match="gradient 2: lmref has none"):
        check_vjp(lambda g, x, w, padding: (*conv2d_backward(g, x, w, padding=padding)[:2],
                                            np.ones(4)), conv2d_backward, g, x, w, padding=1)
    with pytest.raises(AssertionError, match="gradient 1: the user backward returned None"):
        check_vjp(lambda g, x, w, padding: (conv2d_backward(g, x, w, padding=padding)[0], None),
                  conv2d_backward, g, x, w, padding=1)


def test_readme_testing_example_runs(torch):
    import pathlib
    import re
    text = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## Testing your own code against lmref", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's testing section has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
