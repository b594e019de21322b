"""asv benchmarks of lmref.motion against torch.nn.functional.grid_sample (align_corners=True).

The torch side includes the flow -> grid conversion (what a user of a backward flow pays)."""
import numpy as np

from ._common import torch_or_skip

SHAPES = [(4, 64, 56, 56), (1, 3, 224, 224)]


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    n, _, h, w = shape
    x = rng.standard_normal(shape)
    flow = rng.uniform(-3.0, 3.0, size=(n, h, w, 2))
    grad = rng.standard_normal(shape)
    return x, flow, grad


class Warp:
    params = (["lmref", "torch"], ["bilinear", "nearest"], ["zeros", "border"], SHAPES)
    param_names = ["peer", "mode", "boundary", "shape"]

    def setup(self, peer, mode, boundary, shape):
        x, flow, _ = _inputs(shape)
        self.kw = {"mode": mode, "boundary": boundary}
        if peer == "lmref":
            from lmref.motion import warp
            self.fn, self.args = warp, (x, flow)
        else:
            torch = torch_or_skip()
            from lmref.peers.torch_motion import warp
            self.fn, self.args = warp, (torch.from_numpy(x), torch.from_numpy(flow))
        self.fn(*self.args, **self.kw)  # JIT warm-up

    def time_warp(self, peer, mode, boundary, shape):
        self.fn(*self.args, **self.kw)


class WarpBackward:
    params = (["lmref", "torch"], ["zeros", "border"], SHAPES)
    param_names = ["peer", "boundary", "shape"]

    def setup(self, peer, boundary, shape):
        x, flow, grad = _inputs(shape)
        kw = {"mode": "bilinear", "boundary": boundary}
        if peer == "lmref":
            from lmref.motion import warp_backward
            self.run = lambda: warp_backward(grad, x, flow, **kw)
        else:
            torch = torch_or_skip()
            from lmref.peers.torch_motion import warp
            xt = torch.from_numpy(x).requires_grad_(True)
            ft = torch.from_numpy(flow).requires_grad_(True)
            out = warp(xt, ft, **kw)
            gt = torch.from_numpy(grad)
            # the backward pass alone (the graph is kept), as warp_backward is
            self.run = lambda: torch.autograd.grad(out, (xt, ft), gt, retain_graph=True)
        self.run()

    def time_warp_backward(self, peer, boundary, shape):
        self.run()


class MotionMatrix:
    params = ([(56, 56), (224, 224)], ["bilinear", "nearest"])
    param_names = ["hw", "mode"]

    def setup(self, hw, mode):
        from lmref.motion import motion_matrix
        self.flow = np.random.default_rng(0).uniform(-3.0, 3.0, size=hw + (2,))
        self.fn = motion_matrix
        self.fn(self.flow, mode)

    def time_motion_matrix(self, hw, mode):
        self.fn(self.flow, mode)


class FeatureTransfer:
    params = ([6, 12],)
    param_names = ["hw"]

    def setup(self, hw):
        from lmref.motion import feature_transfer, motion_matrix
        rng = np.random.default_rng(0)
        n = 2 * hw * hw
        self.C = np.eye(n) + 0.1 * rng.standard_normal((n, n)) / np.sqrt(n)
        self.M = motion_matrix(rng.uniform(-2, 2, (hw, hw, 2)), boundary="wrap", channels=2)
        self.fn = feature_transfer

    def time_feature_transfer(self, hw):
        self.fn(self.C, self.M)
