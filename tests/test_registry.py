"""Registry-driven checks every op gets for free: fast == reference, gradcheck of the
backward, PyTorch peer forward/backward, inputs never modified, outputs never alias inputs."""
import numpy as np
import pytest

from lmref import registry
from lmref.peers import run_peer, torch_available
from lmref.testing import assert_close, gradcheck

OPS = registry.ops()
NAMES = sorted(OPS)


def _example(op, seed=0):
    rng = np.random.default_rng(seed)
    return op.get("example")(rng)


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def test_registry_is_not_empty():
    assert OPS, "no op registered"


@pytest.mark.parametrize("name", [n for n in NAMES if OPS[n].reference])
def test_fast_equals_reference(name):
    op = OPS[name]
    args, kw = _example(op)
    fast = _outputs(op.get("cpu")(*args, **kw))
    ref = _outputs(op.get("reference")(*args, **kw))
    for f, r in zip(fast, ref, strict=True):
        assert_close(f, r, rtol=op.rtol, atol=op.atol)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_untouched_and_not_aliased(name):
    op = OPS[name]
    args, kw = _example(op)
    before = [np.array(a, copy=True) for a in args]
    outs = _outputs(op.get("cpu")(*args, **kw))
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
    for o in outs:
        if isinstance(o, np.ndarray):
            for a in args:
                if isinstance(a, np.ndarray):
                    assert not np.shares_memory(o, a)


@pytest.mark.parametrize("name", [n for n in NAMES if OPS[n].backward])
def test_backward_gradcheck(name):
    op = OPS[name]
    args, kw = _example(op)
    fwd, bwd = op.get("cpu"), op.get("backward")
    out = fwd(*args, **kw)
    g = np.random.default_rng(1).standard_normal(np.shape(out))
    wrt = [i for i in range(len(args)) if i not in op.nondiff]
    gradcheck(lambda *a: fwd(*a, **kw), args, g, lambda go, *a: bwd(go, *a, **kw), wrt=wrt,
              max_checks=60)


@pytest.mark.torch
@pytest.mark.skipif(not torch_available(), reason="PyTorch (the cross-check peer) is not installed")
@pytest.mark.parametrize("name", [n for n in NAMES if OPS[n].peer])
def test_against_torch_peer(name):
    op = OPS[name]
    args, kw = _example(op)
    peer = op.get("peer")
    ours = op.get("cpu")(*args, **kw)
    if op.backward:
        g = np.random.default_rng(2).standard_normal(np.shape(ours))
        theirs, peer_grads = run_peer(peer, args, kw, g, nondiff=op.nondiff)
        grads = op.get("backward")(g, *args, **kw)
        for k, (ga, gp) in enumerate(zip(grads, peer_grads)):
            if gp is not None and ga is not None:
                assert_close(ga, gp, rtol=max(op.rtol, 1e-9), atol=max(op.atol, 1e-10),
                             msg=f"{name}: gradient of input {k} vs torch")
    else:
        theirs = run_peer(peer, args, kw)
    assert_close(ours, theirs, rtol=max(op.rtol, 1e-9), atol=max(op.atol, 1e-10))
