"""asv benchmarks of lmref.compose: composing a 3-layer 2-D chain into one kernel, against the
torch peer (conv_transpose of one-hot outputs through the chain), and dilate."""
import numpy as np

from ._common import torch_or_skip

STRIDES, DILATIONS = [2, 1, 2], [1, 2, 1]


def _weights(channels, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((channels, channels, 3, 3)) for _ in range(3)]


class Compose:
    params = (["lmref", "torch"], [4, 32])
    param_names = ["peer", "channels"]

    def setup(self, peer, channels):
        ws = _weights(channels)
        if peer == "lmref":
            from lmref.compose import compose
            self.run = lambda: compose(ws, STRIDES, DILATIONS)
        else:
            torch = torch_or_skip()
            from lmref.peers.torch_conv import composed_weight
            wt = [torch.from_numpy(w) for w in ws]
            self.run = lambda: composed_weight(*wt, strides=STRIDES, dilations=DILATIONS)
        self.run()

    def time_compose(self, peer, channels):
        self.run()


class Dilate:
    params = ([2, 4],)
    param_names = ["rate"]

    def setup(self, rate):
        from lmref.compose import dilate
        w = np.random.default_rng(0).standard_normal((64, 64, 3, 3))
        self.run = lambda: dilate(w, rate)
        self.run()

    def time_dilate(self, rate):
        self.run()
