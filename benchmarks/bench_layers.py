"""asv benchmarks of lmref.layers (ReLU, pooling forward and backward) against PyTorch."""
import numpy as np

from lmref import layers

from ._common import torch_or_skip

PEERS = ["lmref", "torch"]
SHAPE = (8, 64, 56, 56)
#: op -> keyword options (ResNet's stem max pool; a 2 x 2 average pool)
POOLS = {
    "max_pool2d": {"kernel_size": 3, "stride": 2, "padding": 1},
    "avg_pool2d": {"kernel_size": 2, "stride": 2},
}


class Pool:
    """Pooling of ``(8, 64, 56, 56)`` float64 maps."""

    params = (PEERS, list(POOLS))
    param_names = ["peer", "op"]

    def setup(self, peer, op):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(SHAPE)
        self.kw = POOLS[op]
        self.g = rng.standard_normal(getattr(layers, op)(self.x, **self.kw).shape)
        if peer == "torch":
            torch = torch_or_skip()
            self.torch = torch
            self.fn = getattr(torch.nn.functional, op)
            self.tx, self.tg = torch.from_numpy(self.x), torch.from_numpy(self.g)
            self.forward, self.both = self._forward_torch, self._both_torch
        else:
            self.fn = getattr(layers, op)
            self.bwd = getattr(layers, op + "_backward")
            self.forward, self.both = self._forward_lmref, self._both_lmref
        self.both()  # JIT compile / warm-up outside the timing

    def _forward_lmref(self):
        return self.fn(self.x, **self.kw)

    def _both_lmref(self):
        self.fn(self.x, **self.kw)
        return self.bwd(self.g, self.x, **self.kw)

    def _forward_torch(self):
        with self.torch.no_grad():
            return self.fn(self.tx, **self.kw)

    def _both_torch(self):
        x = self.tx.clone().requires_grad_(True)
        return self.torch.autograd.grad(self.fn(x, **self.kw), x, self.tg)

    def time_forward(self, peer, op):
        self.forward()

    def time_forward_backward(self, peer, op):
        self.both()


class Relu:
    """ReLU of ``(8, 64, 56, 56)`` float64 maps, and its backward (torch: ``threshold_backward``,
    what autograd runs for ``relu``)."""

    params = (PEERS,)
    param_names = ["peer"]

    def setup(self, peer):
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal(SHAPE)
        self.g = rng.standard_normal(SHAPE)
        if peer == "torch":
            torch = torch_or_skip()
            tx, tg = torch.from_numpy(self.x), torch.from_numpy(self.g)
            self.run = lambda: torch.relu(tx)
            self.back = lambda: torch.ops.aten.threshold_backward(tg, tx, 0.0)
        else:
            self.run = lambda: layers.relu(self.x)
            self.back = lambda: layers.relu_backward(self.g, self.x)
        self.run()
        self.back()

    def time_relu(self, peer):
        self.run()

    def time_relu_backward(self, peer):
        self.back()
