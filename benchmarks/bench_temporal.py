"""asv benchmarks of lmref.temporal against its PyTorch peers (loop over shifts for local x)."""
import numpy as np

from lmref import temporal

from ._common import torch_or_skip

PEERS = ["lmref", "torch"]


class LocalMultiply:
    """ATM local multiplication of ``(4, 64, 32, 32)`` float64 maps, P = 7."""

    params = (PEERS, ["none", "l2"])
    param_names = ["peer", "normalize"]
    shape = (4, 64, 32, 32)
    patch = 7

    def setup(self, peer, normalize):
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal(self.shape)
        self.b = rng.standard_normal(self.shape)
        self.g = rng.standard_normal((self.shape[0], self.patch ** 2, *self.shape[2:]))
        self.kw = {"normalize": normalize}
        if peer == "torch":
            torch = torch_or_skip()
            from lmref.peers import torch_temporal
            self.torch = torch
            self.peer = torch_temporal.local_multiply
            self.ta, self.tb = torch.from_numpy(self.a), torch.from_numpy(self.b)
            self.tg = torch.from_numpy(self.g)
        self.forward = getattr(self, f"_forward_{peer}")
        self.both = getattr(self, f"_forward_backward_{peer}")
        self.forward()  # JIT warm-up / first-call allocations outside the timing
        self.both()

    def _forward_lmref(self):
        return temporal.local_multiply(self.a, self.b, self.patch, **self.kw)

    def _forward_backward_lmref(self):
        self._forward_lmref()
        return temporal.local_multiply_backward(self.g, self.a, self.b, self.patch, **self.kw)

    def _forward_torch(self):
        with self.torch.no_grad():
            return self.peer(self.ta, self.tb, self.patch, **self.kw)

    def _forward_backward_torch(self):
        a = self.ta.clone().requires_grad_(True)
        b = self.tb.clone().requires_grad_(True)
        out = self.peer(a, b, self.patch, **self.kw)
        return self.torch.autograd.grad(out, (a, b), self.tg)

    def time_forward(self, peer, normalize):
        self.forward()

    def time_forward_backward(self, peer, normalize):
        self.both()


class ArithmeticFeatures:
    """All four ATM features of a ``(2, 8, 16, 14, 14)`` clip (official layout, Z = 5, P = 9)."""

    params = (PEERS, ["seed", "atm"])
    param_names = ["peer", "layout"]

    def setup(self, peer, layout):
        rng = np.random.default_rng(0)
        self.clip = rng.uniform(0.0, 2.0, (2, 8, 16, 14, 14))
        self.z = 5 if layout == "atm" else 4
        self.kw = {"patch_size": 9, "layout": layout}
        if peer == "torch":
            torch = torch_or_skip()
            from lmref.peers import torch_temporal
            self.fn = lambda: torch_temporal.arithmetic_features(
                torch.from_numpy(self.clip), self.z, **self.kw)
            self.torch = torch
        else:
            self.fn = lambda: temporal.arithmetic_features(self.clip, self.z, **self.kw)
        self.fn()

    def time_arithmetic_features(self, peer, layout):
        if peer == "torch":
            with self.torch.no_grad():
                self.fn()
        else:
            self.fn()


class LogDivide:
    """Seed log-division of two ``(8, 64, 28, 28)`` float64 maps, with its backward."""

    params = (PEERS,)
    param_names = ["peer"]

    def setup(self, peer):
        rng = np.random.default_rng(0)
        shape = (8, 64, 28, 28)
        self.a, self.b = rng.uniform(0, 2, shape), rng.uniform(0, 2, shape)
        self.g = rng.standard_normal(shape)
        if peer == "torch":
            torch = torch_or_skip()
            from lmref.peers import torch_temporal
            ta, tb, tg = (torch.from_numpy(x) for x in (self.a, self.b, self.g))

            def run():
                x, y = ta.clone().requires_grad_(True), tb.clone().requires_grad_(True)
                return torch.autograd.grad(torch_temporal.log_divide(x, y), (x, y), tg)
        else:
            def run():
                temporal.log_divide(self.a, self.b)
                return temporal.log_divide_backward(self.g, self.a, self.b)
        self.run = run
        run()

    def time_forward_backward(self, peer):
        self.run()


class AddSubtract:
    """ATM addition and subtraction of two ``(8, 64, 28, 28)`` float64 maps (memory-bound)."""

    params = (PEERS, ["add", "subtract"])
    param_names = ["peer", "op"]

    def setup(self, peer, op):
        rng = np.random.default_rng(0)
        shape = (8, 64, 28, 28)
        self.a, self.b = rng.standard_normal(shape), rng.standard_normal(shape)
        if peer == "torch":
            torch = torch_or_skip()
            fn = torch.add if op == "add" else torch.sub
            ta, tb = torch.from_numpy(self.a), torch.from_numpy(self.b)
            self.run = lambda: fn(ta, tb)
        else:
            fn = getattr(temporal, op)
            self.run = lambda: fn(self.a, self.b)
        self.run()

    def time_elementwise(self, peer, op):
        self.run()
