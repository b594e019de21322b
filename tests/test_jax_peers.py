"""JAX peers (lmref.peers.jax_*) against lmref, and the conformance runner on JAX.

Lean on purpose: JAX runs eagerly here (no jit), every op once, small shapes.
"""
import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX (a cross-check peer) is not installed: "
                                        "pip install -e '.[test]'")

from lmref import registry  # noqa: E402
from lmref.peers import jax_peer, run_jax_peer  # noqa: E402
from lmref.testing import assert_close  # noqa: E402
from lmref.testing import conformance as C  # noqa: E402

OPS = registry.ops()


def test_float64_per_call_leaves_the_global_flag_alone():
    import jax.numpy as jnp
    before = jax.config.jax_enable_x64
    from lmref.peers.jax_layers import relu
    out = run_jax_peer(relu, [np.array([-1.0, 1.0 + 1e-12])], {})
    assert out.dtype == np.float64 and out[1] == 1.0 + 1e-12  # not rounded to float32
    assert jax.config.jax_enable_x64 == before
    if not before:
        assert jnp.ones(2).dtype == jnp.float32


def test_every_op_with_a_torch_peer_has_a_jax_peer():
    missing = [n for n, op in OPS.items() if op.peer and jax_peer(op) is None]
    assert not missing


def test_conformance_table_covers_every_op_and_passes():
    res = C.run_conformance("jax", seeds=1, checks=("f64 fwd", "f64 bwd", "f32 fwd"))
    text = "\n".join(C.format_result(res, ("f64 fwd", "f64 bwd", "f32 fwd")))
    assert res.ok, text
    covered = {r.op for r in res.rows}
    assert {n for n, op in OPS.items() if jax_peer(op)} == covered
    assert res.deviations, "the JAX convention differences were not probed"
    for dev, status, detail in res.deviations:
        assert status == dev.expected, f"{dev.op}: {dev.title}: {status} ({detail})"


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("boundary", ["zeros", "border", "wrap"])
def test_warp_peer_every_mode(mode, boundary):
    from lmref.motion import warp, warp_backward
    from lmref.peers.jax_motion import warp as jwarp
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 5))
    flow = rng.uniform(-2.5, 2.5, (4, 5, 2))
    flow[0, 0] = (0.0, 0.0)           # exactly on a pixel
    flow[1, 0, 0] = -1.0              # x = -1... integer position
    flow[0, 4, 0] = 0.0               # the right edge x = W - 1 (border clamp point)
    kw = {"mode": mode, "boundary": boundary}
    g = rng.standard_normal(x.shape)
    out, (gx, gf) = run_jax_peer(jwarp, [x, flow], kw, g)
    assert_close(out, warp(x, flow, **kw))
    want_gx, want_gf = warp_backward(g, x, flow, **kw)
    assert_close(gx, want_gx)
    assert_close(gf, want_gf)  # right-sided derivatives at integer and clamp positions


def test_pool_and_conv_peers_other_options():
    from lmref.conv import conv2d, conv_transpose2d
    from lmref.layers import avg_pool2d, max_pool2d
    from lmref.peers import jax_conv, jax_layers
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 7, 6))
    for kw in ({"kernel_size": 3, "stride": None, "padding": 1, "dilation": 2},
               {"kernel_size": (2, 3), "stride": 2, "ceil_mode": True}):
        assert_close(run_jax_peer(jax_layers.max_pool2d, [x], kw), max_pool2d(x, **kw))
    for kw in ({"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
               {"kernel_size": (2, 3), "count_include_pad": False, "padding": (1, 1)}):
        assert_close(run_jax_peer(jax_layers.avg_pool2d, [x], kw), avg_pool2d(x, **kw))
    w = rng.standard_normal((3, 2, 2, 3))
    for kw in ({"padding": "same"}, {"padding": "same", "stride": 2, "padding_mode": "replicate"},
               {"padding": (1, 2), "padding_mode": "reflect"}, {"padding": "valid"}):
        assert_close(run_jax_peer(jax_conv.conv2d, [x, w], kw), conv2d(x, w, **kw))
    wt = rng.standard_normal((2, 2, 3, 2))
    kw = {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}
    assert_close(run_jax_peer(jax_conv.conv_transpose2d, [x, wt], kw),
                 conv_transpose2d(x, wt, **kw))


def test_a_wrong_jax_peer_fails(monkeypatch):
    real = jax_peer(OPS["conv2d"])[0]
    monkeypatch.setattr(C._Jax, "peer", lambda self, op: lambda *a, **k: real(*a, **k) * 1.001)
    res = C.run_conformance("jax", ops=["conv2d"], seeds=1, probe_deviations=False)
    assert not res.ok
    assert not res.rows[0].cells["f64 fwd"].ok and not res.rows[0].cells["f64 bwd"].ok


def test_user_jax_function_through_the_runner():
    import jax.numpy as jnp

    def my_relu(x):
        return jnp.where(x > 0, x, 0.0)

    def my_buggy_relu(x):
        return jnp.abs(x)

    assert C.run_conformance("jax", peers={"relu": my_relu}, seeds=1).ok
    res = C.run_conformance("jax", peers={"relu": my_buggy_relu}, seeds=1)
    assert not res.ok and "yours:" in res.rows[0].peer
