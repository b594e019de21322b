"""lmref's pools against ONNX's own backend node test cases (issue 16 section 2).

The ``onnx`` wheel ships the generators of its backend node tests
(``onnx.backend.test.case.node.maxpool`` / ``.averagepool``); each case calls
``expect(node, inputs, outputs, name)``. We capture them, map the node's attributes onto
lmref's arguments (``pads`` in ONNX's begin..end order -> per-side pairs, ``auto_pad`` ->
``"same"`` / ``"same_lower"`` / ``"valid"``, ``count_include_pad`` defaulting to 0 as in
ONNX) and compare. 1-D cases run as 2-D pools over a height of 1. Cases lmref cannot
express are listed in :data:`INEXPRESSIBLE` with the reason; a captured case that is
neither compared nor listed fails the test, so a new ONNX case cannot slip by.
"""
import inspect

import numpy as np
import pytest

from lmref import layers as L

onnx = pytest.importorskip("onnx", reason="onnx (the backend node test cases) is not installed")

from onnx.backend.test.case.node import averagepool, maxpool  # noqa: E402

#: case name -> why lmref cannot express it
INEXPRESSIBLE = {
    **{name: "3-D pooling: lmref has 2-D pools (and 1-D as a height of 1)" for name in (
        "test_maxpool_3d_default", "test_maxpool_3d_dilations",
        "test_maxpool_3d_dilations_use_ref_impl", "test_maxpool_3d_dilations_use_ref_impl_large",
        "test_averagepool_3d_default", "test_averagepool_3d_dilations_small",
        "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True",
        "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False",
        "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True",
        "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False")},
    "test_averagepool_2d_dilations": "dilated average pooling: avg_pool2d has no dilation "
                                     "(neither has torch.nn.functional.avg_pool2d)",
}
#: cases with a second output (max pooling's Indices): lmref returns no indices, only Y is
#: compared (the gradient routing they encode is max_pool2d_backward's, tested against torch)
#: expected outputs ONNX writes as 4-decimal literals, not all correctly rounded (0.2841 for
#: 0.284044): equal within 1e-4, and equal to onnx's own reference evaluator to float32 rounding.
#: (This case is what looked like a torch/ONNX convention difference: there is none, see
#: test_ceil_mode_windows_in_the_padding_match_onnx_reference.)
LITERAL_4DP = {"test_averagepool_2d_ceil_last_window_starts_on_pad"}
Y_ONLY = {"test_maxpool_with_argmax_2d_precomputed_pads",
          "test_maxpool_with_argmax_2d_precomputed_strides"}


def _capture():
    cases = []
    for module, cls in ((maxpool, maxpool.MaxPool), (averagepool, averagepool.AveragePool)):
        saved = module.expect
        module.expect = lambda node, inputs, outputs, name, **kw: cases.append(
            (node, inputs, outputs, name))
        try:
            for attr, fn in sorted(inspect.getmembers(cls, predicate=inspect.isfunction)):
                if attr.startswith("export"):
                    np.random.seed(0)  # the generators draw their inputs from np.random
                    fn()
        finally:
            module.expect = saved
    return cases


CASES = _capture()


def _attributes(node) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def lmref_call(node, x):
    """``(function, x as lmref takes it, kwargs, un-reshape)`` for an ONNX pooling node."""
    attrs = _attributes(node)
    nd = x.ndim - 2
    if nd not in (1, 2):
        raise NotImplementedError(f"{nd}-D pooling")
    one_d = nd == 1

    def per_axis(v, fill):
        v = list(v) if v is not None else [fill] * nd
        return tuple([fill] + v) if one_d else tuple(v)  # 1-D: a height of 1 in front

    kw = {"kernel_size": per_axis(attrs["kernel_shape"], 1),
          "stride": per_axis(attrs.get("strides"), 1),
          "ceil_mode": bool(attrs.get("ceil_mode", 0))}
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = attrs.get("pads", [0] * 2 * nd)
        pairs = tuple(zip(pads[:nd], pads[nd:]))  # ONNX: all begins, then all ends
        kw["padding"] = ((0, 0),) + pairs if one_d else pairs
    else:
        kw["padding"] = {"SAME_UPPER": "same", "SAME_LOWER": "same_lower",
                         "VALID": "valid"}[auto_pad]
    if node.op_type == "MaxPool":
        kw["dilation"] = per_axis(attrs.get("dilations"), 1)
        fn = L.max_pool2d
    else:
        if any(d != 1 for d in attrs.get("dilations", [1] * nd)):
            raise NotImplementedError("dilated average pooling")
        kw["count_include_pad"] = bool(attrs.get("count_include_pad", 0))  # ONNX default: 0
        fn = L.avg_pool2d
    xs = x[:, :, None] if one_d else x
    return fn, xs, kw, (lambda y: y[:, :, 0]) if one_d else (lambda y: y)


def _params():
    return [pytest.param(c, id=c[3]) for c in CASES if c[3] not in INEXPRESSIBLE]


def test_every_captured_case_is_compared_or_listed():
    names = {c[3] for c in CASES}
    assert len(CASES) >= 30, "the onnx wheel no longer ships the pooling cases"
    assert set(INEXPRESSIBLE) <= names, set(INEXPRESSIBLE) - names
    for node, inputs, _, name in CASES:
        if name in INEXPRESSIBLE:
            with pytest.raises(NotImplementedError):
                lmref_call(node, inputs[0])


@pytest.mark.parametrize("case", _params())
def test_lmref_matches_onnx(case):
    node, inputs, outputs, name = case
    x, want = inputs[0], outputs[0]
    assert len(outputs) == 1 or name in Y_ONLY
    fn, xs, kw, back = lmref_call(node, x)
    got = back(fn(xs.astype(np.float64), **kw))
    assert got.shape == want.shape, (got.shape, want.shape, kw)
    if node.op_type == "MaxPool":  # a max is exact in any dtype
        np.testing.assert_array_equal(got.astype(want.dtype), want)
    elif name in LITERAL_4DP:
        np.testing.assert_allclose(got, want.astype(np.float64), rtol=0, atol=1e-4)
        attrs = _attributes(node)
        np.testing.assert_allclose(got, _onnx_reference(x, **attrs), rtol=2 * 2.0**-24, atol=0)
    else:
        # ONNX's expected averages are summed in float32: n additions and one division, each
        # off by at most half an ulp (2^-24 relative) of the running sum, so |error| <=
        # (n + 1) 2^-24 mean|x| + 2^-24 |y|, with n the window size and mean|x| the window
        # average of |x| (lmref's own float64 rounding is far below)
        n = int(np.prod(kw["kernel_size"]))
        scale = back(fn(np.abs(xs.astype(np.float64)), **kw))
        bound = (n + 1) * 2.0**-24 * scale + 2.0**-24 * np.abs(want)
        err = np.abs(got - want.astype(np.float64))
        assert np.all(err <= bound), (name, float((err / bound).max()), kw)


def _onnx_reference(x, **attrs):
    """onnx.reference's AveragePool (opset 22) on ``x``."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


@pytest.mark.parametrize("size,k,s,pads", [
    (4, 3, 2, [1, 1, 1, 1]), (5, 3, 2, [1, 1, 1, 1]), (3, 2, 2, [1, 1, 1, 1]),
    (2, 3, 3, [1, 1, 1, 1]), (5, 2, 3, [1, 0, 0, 1]), (4, 3, 2, [0, 1, 2, 1]),
])
@pytest.mark.parametrize("include", [0, 1])
def test_ceil_mode_windows_in_the_padding_match_onnx_reference(size, k, s, pads, include):
    """Average pooling with ceil_mode where the last window starts in (or runs past) the
    right padding: onnx 1.23's reference evaluator divides like PyTorch and lmref (the window
    clipped to the padded frame, or the in-frame count), so no convention switch is needed."""
    x = (np.arange(size * size, dtype=np.float32).reshape(1, 1, size, size) + 1) / 8
    want = _onnx_reference(x, kernel_shape=[k, k], strides=[s, s], pads=pads, ceil_mode=1,
                           count_include_pad=include)
    got = L.avg_pool2d(x.astype(np.float64), k, s, tuple(zip(pads[:2], pads[2:])),
                       ceil_mode=True, count_include_pad=bool(include))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2 * 2.0**-24, atol=0)  # float32 sums of k*k/8
