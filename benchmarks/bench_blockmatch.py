"""asv benchmarks of lmref.blockmatch.block_match (seed 001's two settings) against a PyTorch
box-filter formulation and an OpenCV loop over displacements (issue 14's peer; skipped when
``cv2`` is absent: ``opencv-python-headless`` is in the ``bench`` and ``test`` extras)."""
import numpy as np

from lmref import blockmatch

from ._common import torch_or_skip

PEERS = ["lmref", "torch", "opencv"]
#: name -> (shape, block_size, search_range, data): seed 001's input frames and feature maps;
#: data "normal" (float frames, the general exact path) or "uint8" (8-bit frames, the common
#: case of images: lmref's exact integer path)
CASES = {
    "frame_224x224_b31_s11": ((224, 224), 31, 11, "normal"),
    "frame8_224x224_b31_s11": ((224, 224), 31, 11, "uint8"),
    "features_64x28x28_b3_s5_sum": ((64, 28, 28), 3, 5, "normal"),
}


def case_frames(case):
    """(reference, current): the second a shifted noisy copy of the first."""
    shape, _, _, data = CASES[case]
    rng = np.random.default_rng(0)
    if data == "uint8":
        ref = rng.integers(0, 256, shape)
        noisy = np.roll(ref, (1, -2), axis=(-2, -1)) + rng.integers(-3, 4, shape)
        return ref.astype(np.uint8), np.clip(noisy, 0, 255).astype(np.uint8)
    ref = rng.standard_normal(shape)
    return ref, np.roll(ref, (1, -2), axis=(-2, -1)) + 0.1 * rng.standard_normal(shape)


def torch_block_match(torch, reference, current, block_size, search_range, chunk=64):
    """The fastest PyTorch formulation we found: displacements in chunks, squared differences
    summed over channels, box sums from an integral image (O(1) per pixel), running minimum.

    Same conventions as :func:`lmref.blockmatch.block_match` (``channels="sum"``,
    ``boundary="zeros"``); ties go to the earlier displacement of the chunk order up to
    rounding (the integral image subtracts, so near ties may differ from lmref's exact rule).
    Returns ``(flow, cost)`` tensors.
    """
    F = torch.nn.functional
    ref = reference if reference.dim() == 3 else reference[None]
    cur = current if current.dim() == 3 else current[None]
    C, H, W = cur.shape
    b, s, r = block_size, search_range, block_size // 2
    cp = F.pad(cur, (r, r, r, r))
    rp = F.pad(ref, (r + s, r + s, r + s, r + s))
    order = torch.from_numpy(blockmatch.displacement_order(s))
    best = torch.full((H, W), float("inf"), dtype=cur.dtype)
    arg = torch.zeros((H, W), dtype=torch.long)
    for k0 in range(0, len(order), chunk):
        ks = order[k0:k0 + chunk]
        shifted = torch.stack([rp[:, s + dy:s + dy + H + b - 1, s + dx:s + dx + W + b - 1]
                               for dy, dx in ks.tolist()])
        d2 = ((shifted - cp) ** 2).sum(1)  # (n, H + b - 1, W + b - 1)
        sat = F.pad(d2.cumsum(1).cumsum(2), (1, 0, 1, 0))
        cost = sat[:, b:, b:] - sat[:, :-b, b:] - sat[:, b:, :-b] + sat[:, :-b, :-b]
        cmin, cidx = cost.min(0)  # first minimum within the chunk
        better = cmin < best
        best = torch.where(better, cmin, best)
        arg = torch.where(better, cidx + k0, arg)
    dydx = order[arg].to(cur.dtype)
    return torch.stack([dydx[..., 1], dydx[..., 0]], -1), best


def opencv_block_match(cv2, reference, current, block_size, search_range):
    """The OpenCV loop a user would write: per displacement ``cv2.subtract`` +
    ``cv2.sqrBoxFilter`` (``cv2.multiply``/``cv2.add`` + ``cv2.boxFilter`` over channels) and a
    running minimum with a strict ``<`` in :func:`lmref.blockmatch.displacement_order`.

    Same conventions as :func:`lmref.blockmatch.block_match` (``channels="sum"``,
    ``boundary="zeros"``). OpenCV's float64 box filter keeps running sums (it subtracts), so on
    integer-valued frames the costs are exact and the flow equals lmref's; on other frames
    near ties may differ by rounding. Returns ``(flow, cost)`` as NumPy arrays.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim == 2:
        ref, cur = ref[None], cur[None]
    C, H, W = cur.shape
    b, s, r = block_size, search_range, block_size // 2
    cp = np.pad(cur, ((0, 0), (r, r), (r, r)))
    rp = np.pad(ref, ((0, 0), (r + s, r + s), (r + s, r + s)))
    Hp, Wp = H + b - 1, W + b - 1
    order = blockmatch.displacement_order(s)
    best = np.full((H, W), np.inf)
    arg = np.zeros((H, W), dtype=np.int64)
    less = np.empty((H, W), dtype=bool)
    for k, (dy, dx) in enumerate(order.tolist()):
        shifted = rp[:, s + dy:s + dy + Hp, s + dx:s + dx + Wp]
        if C == 1:
            d = cv2.subtract(cp[0], np.ascontiguousarray(shifted[0]))
            box = cv2.sqrBoxFilter(d, -1, (b, b), normalize=False)
        else:
            d2 = None
            for c in range(C):
                d = cv2.subtract(cp[c], np.ascontiguousarray(shifted[c]))
                d2 = cv2.multiply(d, d) if d2 is None else cv2.add(d2, cv2.multiply(d, d))
            box = cv2.boxFilter(d2, -1, (b, b), normalize=False)
        cost = box[r:r + H, r:r + W]  # windows wholly inside the padded frame
        np.less(cost, best, out=less)  # strict: the earlier displacement keeps a tie
        np.copyto(best, cost, where=less)
        arg[less] = k
    dydx = order[arg].astype(np.float64)
    return np.stack([dydx[..., 1], dydx[..., 0]], axis=-1), best


def cv2_or_skip():
    """Return cv2, or raise NotImplementedError (asv's skip) when OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        raise NotImplementedError("opencv-python-headless not installed") from None
    return cv2


class BlockMatch:
    """Exhaustive SSD block matching, ``channels="sum"``, ``boundary="zeros"``; lmref takes the
    frames as they are (uint8 or float64), the peers in float64."""

    params = (PEERS, list(CASES))
    param_names = ["peer", "case"]
    timeout = 180

    def setup(self, peer, case):
        _, self.b, self.s, _ = CASES[case]
        self.ref, self.cur = case_frames(case)
        if peer == "torch":  # the peers compute in float64 (8-bit frames converted once)
            self.torch = torch_or_skip()
            self.tref = self.torch.from_numpy(self.ref.astype(np.float64))
            self.tcur = self.torch.from_numpy(self.cur.astype(np.float64))
            self.run = self._torch
        elif peer == "opencv":
            self.cv2 = cv2_or_skip()
            self.run = self._opencv
        else:
            self.run = self._lmref
        self.run()  # JIT compile / warm-up outside the timing

    def _lmref(self):
        return blockmatch.block_match(self.ref, self.cur, self.b, self.s)

    def _torch(self):
        with self.torch.no_grad():
            return torch_block_match(self.torch, self.tref, self.tcur, self.b, self.s)

    def _opencv(self):
        return opencv_block_match(self.cv2, self.ref, self.cur, self.b, self.s)

    def time_block_match(self, peer, case):
        self.run()


class Metrics:
    """NRMSE over a masked ``(256, 56, 56)`` feature tensor (correctly rounded sums)."""

    def setup(self):
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((256, 56, 56))
        self.p = self.a + 0.01 * rng.standard_normal(self.a.shape)
        self.mask = rng.random((56, 56)) > 0.1

    def time_nrmse(self):
        blockmatch.nrmse(self.p, self.a, self.mask)
