"""asv benchmarks of lmref.conv against torch.nn.functional (float64, CPU).

Cases: the issue's target (N=8, 64 -> 64 channels, 56x56, 3x3, padding 1) and a strided
large-kernel stem (1, 3 -> 16, 224x224, 7x7, stride 2, padding 3). The torch backward is
autograd's backward pass alone (graph kept), like ``conv2d_backward``.
"""
import numpy as np

from ._common import torch_or_skip

#: name -> (x shape, C_out, kernel, stride, padding)
CASES = {
    "8x64x56x56-64-3x3": ((8, 64, 56, 56), 64, 3, 1, 1),
    "1x3x224x224-16-7x7s2": ((1, 3, 224, 224), 16, 7, 2, 3),
}


def _inputs(case, seed=0):
    shape, c_out, k, stride, padding = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((c_out, shape[1], k, k)) / np.sqrt(shape[1] * k * k)
    b = rng.standard_normal(c_out)
    kw = {"stride": stride, "padding": padding}
    return x, w, b, kw


class Conv2d:
    params = (["lmref", "torch"], list(CASES))
    param_names = ["peer", "case"]

    def setup(self, peer, case):
        x, w, b, kw = _inputs(case)
        if peer == "lmref":
            from lmref.conv import conv2d
            self.run = lambda: conv2d(x, w, b, **kw)
        else:
            torch = torch_or_skip()
            import torch.nn.functional as F
            xt, wt, bt = (torch.from_numpy(a) for a in (x, w, b))
            self.run = lambda: F.conv2d(xt, wt, bt, **kw)
        self.run()  # JIT warm-up

    def time_conv2d(self, peer, case):
        self.run()


class Conv2dBackward:
    params = (["lmref", "torch"], list(CASES))
    param_names = ["peer", "case"]

    def setup(self, peer, case):
        x, w, b, kw = _inputs(case)
        if peer == "lmref":
            from lmref.conv import conv2d, conv2d_backward
            g = np.random.default_rng(1).standard_normal(conv2d(x, w, b, **kw).shape)
            self.run = lambda: conv2d_backward(g, x, w, b, **kw)
        else:
            torch = torch_or_skip()
            import torch.nn.functional as F
            xt, wt, bt = (torch.from_numpy(a).requires_grad_(True) for a in (x, w, b))
            out = F.conv2d(xt, wt, bt, **kw)
            g = torch.from_numpy(np.random.default_rng(1).standard_normal(tuple(out.shape)))
            self.run = lambda: torch.autograd.grad(out, (xt, wt, bt), g, retain_graph=True)
        self.run()

    def time_conv2d_backward(self, peer, case):
        self.run()


class ConvTranspose2d:
    params = (["lmref", "torch"],)
    param_names = ["peer"]

    def setup(self, peer):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((4, 64, 28, 28))
        w = rng.standard_normal((64, 32, 4, 4)) / 32.0
        kw = {"stride": 2, "padding": 1}
        if peer == "lmref":
            from lmref.conv import conv_transpose2d
            self.run = lambda: conv_transpose2d(x, w, **kw)
        else:
            torch = torch_or_skip()
            import torch.nn.functional as F
            xt, wt = torch.from_numpy(x), torch.from_numpy(w)
            self.run = lambda: F.conv_transpose2d(xt, wt, **kw)
        self.run()

    def time_conv_transpose2d(self, peer):
        self.run()


class SmallCalls:
    """Tiny inputs (1x4x5x5, 3x3 kernels), as in test loops: argument checks and geometry,
    not arithmetic, set the time (issue 14)."""

    params = (["lmref", "torch"], ["conv2d", "conv2d_backward", "conv_transpose2d"])
    param_names = ["peer", "op"]

    def setup(self, peer, op):
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((1, 4, 5, 5)), rng.standard_normal((2, 4, 3, 3))
        g = rng.standard_normal((1, 2, 5, 5))
        wt = rng.standard_normal((4, 2, 3, 3))  # (C_in, C_out, k, k) of a transposed conv
        if peer == "lmref":
            from lmref import conv
            runs = {"conv2d": lambda: conv.conv2d(x, w, padding=1),
                    "conv2d_backward": lambda: conv.conv2d_backward(g, x, w, padding=1),
                    "conv_transpose2d": lambda: conv.conv_transpose2d(x, wt, stride=2,
                                                                      padding=1)}
        else:
            torch = torch_or_skip()
            import torch.nn.functional as F
            xt, w_t, gt, wtt = (torch.from_numpy(a) for a in (x, w, g, wt))
            xg = xt.clone().requires_grad_(True)
            wg = w_t.clone().requires_grad_(True)
            out = F.conv2d(xg, wg, padding=1)
            runs = {"conv2d": lambda: F.conv2d(xt, w_t, padding=1),
                    "conv2d_backward": lambda: torch.autograd.grad(out, (xg, wg), gt,
                                                                   retain_graph=True),
                    "conv_transpose2d": lambda: F.conv_transpose2d(xt, wtt, stride=2,
                                                                   padding=1)}
        self.run = runs[op]
        self.run()

    def time_small_call(self, peer, op):
        self.run()


class Conv2dMatrix:
    """Building the exact CSR matrix of Lemma 1 (no peer: torch has no such operation)."""

    params = (["3->8 32x32 3x3 pad1", "16->16 28x28 3x3 reflect"],)
    param_names = ["case"]

    def setup(self, case):
        from lmref.conv import conv2d_matrix
        rng = np.random.default_rng(0)
        if case.startswith("3->8"):
            w, shape, kw = rng.standard_normal((8, 3, 3, 3)), (3, 32, 32), {"padding": 1}
        else:
            w, shape = rng.standard_normal((16, 16, 3, 3)), (16, 28, 28)
            kw = {"padding": 1, "padding_mode": "reflect"}
        self.run = lambda: conv2d_matrix(shape, w, **kw)
        self.run()

    def time_conv2d_matrix(self, case):
        self.run()
