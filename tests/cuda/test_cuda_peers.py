"""The torch peers follow their inputs' device and dtype (so they serve CUDA conformance and
bench_cuda), checked without a GPU: on torch's "meta" device, and statically."""
import ast
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

PEERS = sorted((Path(__file__).parents[2] / "lmref" / "peers").glob("torch_*.py"))
FACTORIES = {"arange", "eye", "tensor", "zeros", "ones", "full", "empty", "linspace",
             "logspace", "rand", "randn", "randint", "as_tensor"}


@pytest.mark.parametrize("path", PEERS, ids=lambda p: p.name)
def test_every_torch_factory_call_names_a_device(path):
    calls = [node for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in FACTORIES and isinstance(node.func.value, ast.Name)
             and node.func.value.id == "torch"]
    missing = [f"{path.name}:{c.lineno} torch.{c.func.attr}" for c in calls
               if "device" not in {k.arg for k in c.keywords}]
    assert not missing, f"factory calls without device= (tensors land on the CPU): {missing}"


@pytest.mark.parametrize("boundary", ["zeros", "border", "wrap"])
def test_peers_run_on_meta_tensors(boundary):
    from lmref.peers import torch_conv, torch_layers, torch_motion, torch_temporal

    m = dict(device="meta", dtype=torch.float64)
    x = torch.empty(2, 3, 5, 7, **m)
    outs = [torch_motion.warp(x, torch.empty(2, 5, 7, 2, **m), boundary=boundary),
            torch_conv.conv2d(x, torch.empty(4, 3, 3, 3, **m), torch.empty(4, **m), padding=1,
                              padding_mode="reflect"),
            torch_conv.composed_weight(torch.empty(4, 3, 3, 3, **m), strides=[1]),
            torch_temporal.local_multiply(x, x, 3, normalize="l2"),
            torch_temporal.context_span(torch.empty(4, 3, 5, 7, **m), 3),
            torch_layers.max_pool2d(x, 2)]
    for out in outs:
        assert out.device.type == "meta" and out.dtype == torch.float64
