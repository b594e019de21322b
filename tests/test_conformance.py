"""The conformance runner, in-process on a couple of registered ops (all of them is the CLI's job)."""
import importlib.util

import numpy as np
import pytest

from lmref import registry
from lmref.testing import conformance as C

pytestmark = pytest.mark.torch

OPS = registry.ops()
WITH_PEER = [n for n, op in OPS.items() if op.peer and op.example]
SOME = WITH_PEER[:1] + [n for n in WITH_PEER[1:] if OPS[n].backward][:1]


@pytest.fixture
def some_ops(torch):
    if not SOME:
        pytest.skip("no registered op has a torch peer yet")
    return SOME


def test_real_peers_pass_in_float64_and_float32(some_ops):
    res = C.run_conformance("torch", ops=some_ops, seeds=2)
    assert res.ok, "\n".join(C.format_result(res))
    assert {r.op for r in res.rows} == set(some_ops) and len(res.rows) == 2 * len(some_ops)
    for r in res.rows:
        assert set(r.cells) == set(C.CHECKS)
        assert r.cells["f64 fwd"].err <= 1e-9 * 10
        if OPS[r.op].backward:
            assert r.cells["f64 bwd"].err is not None


def test_table_and_exit_code(some_ops):
    out = []
    rc = C.main(["--framework", "torch", "--ops", ",".join(some_ops), "--seeds", "1"],
                print_fn=out.append)
    text = "\n".join(out)
    assert rc == 0, text
    for col in ("op", "counterpart", "case", *C.CHECKS, "verdict"):
        assert col in out[2]
    assert f"{len(some_ops)} of {len(some_ops)} cases pass" in text


def test_no_float32_option(some_ops):
    out = []
    assert C.main(["--ops", some_ops[0], "--seeds", "1", "--no-float32"], print_fn=out.append) == 0
    assert "f32 fwd" not in out[2] and "f64 fwd" in out[2]


def _perturbed(real, factor, offset=0.0):
    def peer(*tensors, **kw):
        out = real(*tensors, **kw)
        return out * factor + offset
    return peer


@pytest.mark.parametrize("factor, failing", [
    (1 + 1e-4, {"f64 fwd", "f32 fwd"}),        # a real bug: both precisions fail
    (1 + 1e-8, {"f64 fwd"}),                   # float32-level error: only float64 notices
])
def test_a_wrong_framework_result_fails(some_ops, monkeypatch, factor, failing):
    name = some_ops[0]
    real = OPS[name].get("peer")
    monkeypatch.setattr(C._Torch, "peer", lambda self, op: _perturbed(real, factor, 0.5))
    res = C.run_conformance("torch", ops=[name], seeds=1, probe_deviations=False)
    assert not res.ok
    bad = {k for k, c in res.rows[0].cells.items() if not c.ok}
    assert failing <= bad
    assert "FAIL" in "\n".join(C.format_result(res))
    out = []
    assert C.main(["--ops", name, "--seeds", "1"], print_fn=out.append) == 1


def test_a_crashing_peer_is_a_failed_row(some_ops, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("peer exploded")
    monkeypatch.setattr(C._Torch, "peer", lambda self, op: boom)
    res = C.run_conformance("torch", ops=some_ops[:1], seeds=1, probe_deviations=False)
    assert not res.ok and "RuntimeError: peer exploded" in res.rows[0].error
    assert "peer exploded" in "\n".join(C.format_result(res))


def test_wrong_gradient_fails_backward_only(torch, monkeypatch):
    name = next((n for n in WITH_PEER if OPS[n].backward), None)
    if name is None:
        pytest.skip("no op with a backward and a peer yet")
    real = OPS[name].get("peer")

    class _ScaleGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    monkeypatch.setattr(C._Torch, "peer", lambda self, op: lambda *t, **k: _ScaleGrad.apply(real(*t, **k)))
    res = C.run_conformance("torch", ops=[name], seeds=1, probe_deviations=False)
    cells = res.rows[0].cells
    assert cells["f64 fwd"].ok and cells["f32 fwd"].ok
    assert not cells["f64 bwd"].ok and not cells["f32 bwd"].ok


def test_deviations_are_reported_not_failed(torch):
    probed = [d for d in C.DEVIATIONS if d.op in OPS]
    if not probed:
        pytest.skip("no op with a documented deviation registered yet")
    ops = sorted({d.op for d in probed})
    res = C.run_conformance("torch", ops=ops, seeds=1)
    text = "\n".join(C.format_result(res))
    assert "Known convention differences" in text
    for dev, status, detail in res.deviations:
        assert status == dev.expected, f"{dev.op}: {dev.title}: {status} ({detail})"
    assert res.ok


def test_changed_deviation_is_flagged_but_not_a_failure(torch, monkeypatch):
    probed = [d for d in C.DEVIATIONS if d.op in OPS]
    if not probed:
        pytest.skip("no op with a documented deviation registered yet")
    dev = C.Deviation(probed[0].op, "torch", "made-up difference", "a", "b", "differs",
                      lambda fw: ("agrees", "no difference found"))
    monkeypatch.setattr(C, "DEVIATIONS", [dev])
    res = C.run_conformance("torch", ops=[dev.op], seeds=1)
    assert res.ok
    assert "made-up difference [CHANGED: agrees]" in "\n".join(C.format_result(res))
    broken = C.Deviation(dev.op, "torch", "broken probe", "a", "b", "differs",
                         lambda fw: 1 / 0)
    monkeypatch.setattr(C, "DEVIATIONS", [broken])
    res = C.run_conformance("torch", ops=[dev.op], seeds=1)
    assert not res.ok and "PROBE ERROR" in "\n".join(C.format_result(res))


def test_unknown_op_and_framework():
    out = []
    assert C.main(["--ops", "no_such_op"], print_fn=out.append) == 2
    assert "unknown: ['no_such_op']" in out[0]
    with pytest.raises(ValueError, match="framework must be one of"):
        C.run_conformance("tensorflow")


@pytest.mark.skipif(importlib.util.find_spec("jax") is not None, reason="JAX is installed here")
def test_absent_framework_is_a_clear_message_not_a_traceback():
    out = []
    assert C.main(["--framework", "jax"], print_fn=out.append) == 2
    assert out == ["jax is not installed: nothing to check (pip install jax)"]


def test_module_runs_as_a_script(some_ops):
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "lmref.testing.conformance", "--framework", "torch",
                        "--ops", some_ops[0], "--seeds", "1", "--no-float32"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 of 1 cases pass" in p.stdout


def test_float32_tolerance_scales_with_the_result():
    # an element that is a cancelling sum of 1e4-sized terms carries ~1e-3 float32 error
    ours = np.array([1e4, 1e-3])
    theirs = np.array([1e4, 1e-3 + 5e-4])
    assert C._cell(ours, theirs, *C._F32, scaled=True).ok
    assert not C._cell(ours, theirs, *C._F32, scaled=False).ok
    assert not C._cell(ours, ours * (1 + 1e-4), *C._F32, scaled=True).ok


# --- your own functions (issue 17 section 3) --------------------------------------------------

def test_user_torch_peer_mapping(torch):
    def my_relu(x):
        return torch.clamp(x, min=0)

    res = C.run_conformance("torch", peers={"relu": my_relu}, seeds=1)
    assert res.ok and [r.op for r in res.rows] == ["relu"] and "my_relu" in res.rows[0].peer
    assert not res.deviations  # the built-in peers' deviations are not about your code
    bad = C.run_conformance("torch", peers={"relu": lambda x: torch.abs(x)}, seeds=1)
    assert not bad.ok and not bad.rows[0].cells["f64 fwd"].ok


def test_user_numpy_peer_with_and_without_backward():
    from lmref.layers import relu, relu_backward
    res = C.run_conformance("numpy", peers={"relu": (relu, relu_backward)}, seeds=1)
    assert res.ok and res.rows[0].cells["f64 bwd"].err is not None
    fwd_only = C.run_conformance("numpy", peers={"relu": lambda x: np.maximum(x, 0)}, seeds=1)
    assert fwd_only.ok and fwd_only.rows[0].cells["f64 bwd"].note == "-"

    def wrong_backward(g, x):
        return (g,)  # passes the gradient everywhere

    res = C.run_conformance("numpy", peers={"relu": (relu, wrong_backward)}, seeds=1)
    assert not res.ok and res.rows[0].cells["f64 fwd"].ok and not res.rows[0].cells["f64 bwd"].ok


def test_peer_option_on_the_command_line(torch):
    out = []
    rc = C.main(["--peer", "relu=lmref.peers.torch_layers:relu", "--seeds", "1"],
                print_fn=out.append)
    assert rc == 0, "\n".join(out)
    assert "1 of 1 cases pass" in "\n".join(out)
    out = []
    rc = C.main(["--framework", "numpy", "--peer", "relu=lmref.layers:relu",
                 "--peer-backward", "relu=lmref.layers:relu_backward", "--seeds", "1"],
                print_fn=out.append)
    assert rc == 0, "\n".join(out)
    for bad, match in ((["--peer", "relu"], "OP=MODULE:FUNC"),
                       (["--peer", "relu=no_such_module_xyz:f"], "cannot load peer"),
                       (["--peer", "nope=lmref.layers:relu"], "unknown: ['nope']"),
                       (["--peer-backward", "relu=lmref.layers:relu_backward"], "numpy")):
        out = []
        assert C.main(bad, print_fn=out.append) == 2
        assert match in out[0], out


def test_a_run_that_checked_nothing_fails():
    out = []
    assert C.main(["--framework", "numpy", "--seeds", "1"], print_fn=out.append) == 1
    assert "no case was checked" in "\n".join(out) and "0 of 0" not in "\n".join(out)
    res = C.run_conformance("numpy", ops=["relu"], seeds=1)
    assert res.rows == [] and not res.ok
