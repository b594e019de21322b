"""asv benchmarks of lmref.arma against its PyTorch peers (``torch.fft``, autograd)."""
import numpy as np

from lmref import arma

from ._common import torch_or_skip

PEERS = ["lmref", "torch"]


def _stable_kernels(rng, c, k):
    a = rng.uniform(-1.0, 1.0, (c, k, k))
    a[:, k // 2, k // 2] = 0.0
    a *= 0.8 / np.abs(a).sum(axis=(1, 2), keepdims=True)
    a[:, k // 2, k // 2] = 1.0
    return a


class ARSolve:
    """AR layer solve (eq. 10) of ``(8, 32, H, W)`` float64 maps, 3x3 AR kernels; fwd+bwd =
    ``ar_solve`` then ``ar_solve_backward`` (lmref) vs autograd through ``torch.fft``. Grids:
    64 x 64 (lmref's radix-2 FFT) and 56 x 56 (a ResNet stage's size: mixed radix 7 x 4 x 2)."""

    params = (PEERS, ["64x64", "56x56"])
    param_names = ["peer", "grid"]
    kernel_size = 3

    def setup(self, peer, grid):
        rng = np.random.default_rng(0)
        self.shape = (8, 32) + tuple(int(v) for v in grid.split("x"))
        self.t = rng.standard_normal(self.shape)
        self.a = _stable_kernels(rng, self.shape[1], self.kernel_size)
        self.g = rng.standard_normal(self.shape)
        if peer == "torch":
            torch = torch_or_skip()
            from lmref.peers import torch_arma
            self.torch, self.peer = torch, torch_arma.ar_solve
            self.tt, self.ta = torch.from_numpy(self.t), torch.from_numpy(self.a)
            self.tg = torch.from_numpy(self.g)
        self.forward = getattr(self, f"_forward_{peer}")
        self.both = getattr(self, f"_forward_backward_{peer}")
        self.both()  # JIT warm-up / first-call allocations outside the timing

    def _forward_lmref(self):
        return arma.ar_solve(self.t, self.a)

    def _forward_backward_lmref(self):
        y = arma.ar_solve(self.t, self.a)
        return arma.ar_solve_backward(self.g, y, self.a)

    def _forward_torch(self):
        with self.torch.no_grad():
            return self.peer(self.tt, self.ta)

    def _forward_backward_torch(self):
        t = self.tt.clone().requires_grad_(True)
        a = self.ta.clone().requires_grad_(True)
        return self.torch.autograd.grad(self.peer(t, a), (t, a), self.tg)

    def time_forward(self, peer, grid):
        self.forward()

    def time_forward_backward(self, peer, grid):
        self.both()


class ARMA2d:
    """ARMA layer (conv 3x3 circular 'same' then 3x3 AR solve) on ``(4, 16, H, W)``, 16 -> 16
    channels, forward and forward+backward; grids 32 x 32 and 28 x 28 (mixed radix 7 x 4)."""

    params = (PEERS, ["32x32", "28x28"])
    param_names = ["peer", "grid"]

    def setup(self, peer, grid):
        rng = np.random.default_rng(0)
        shape = (4, 16) + tuple(int(v) for v in grid.split("x"))
        self.x = rng.standard_normal(shape)
        self.w = rng.standard_normal((16, 16, 3, 3)) / 12
        self.a = _stable_kernels(rng, 16, 3)
        self.g = rng.standard_normal(shape)
        if peer == "torch":
            torch = torch_or_skip()
            from lmref.peers import torch_arma
            self.torch, self.peer = torch, torch_arma.arma2d
            self.targs = [torch.from_numpy(v) for v in (self.x, self.w, self.a)]
            self.tg = torch.from_numpy(self.g)
        self.forward = getattr(self, f"_forward_{peer}")
        self.both = getattr(self, f"_forward_backward_{peer}")
        self.both()

    def _forward_lmref(self):
        return arma.arma2d(self.x, self.w, self.a)

    def _forward_backward_lmref(self):
        # the forward's output goes to the backward, as autograd keeps it for the torch peer
        y = arma.arma2d(self.x, self.w, self.a)
        return arma.arma2d_backward(self.g, self.x, self.w, self.a, y=y)

    def _forward_torch(self):
        with self.torch.no_grad():
            return self.peer(*self.targs)

    def _forward_backward_torch(self):
        args = [v.clone().requires_grad_(True) for v in self.targs]
        return self.torch.autograd.grad(self.peer(*args), args, self.tg)

    def time_forward(self, peer, grid):
        self.forward()

    def time_forward_backward(self, peer, grid):
        self.both()
