"""asv benchmarks of lmref.cuda against PyTorch CUDA, side by side in one process.

Every benchmark skips (``NotImplementedError``) unless a real GPU is usable (numba's CUDA
simulator gives no meaningful timings) and, for the torch peer, ``torch.cuda.is_available()``.
Data live on the device before the timer starts (numba device arrays for lmref.cuda, CUDA
tensors for torch: transfers are not timed) and every ``time_*`` method synchronises the
device before returning, so the timings cover the kernels, not just their launch.

The torch peers are lmref.peers' formulations on CUDA float64 tensors (cuDNN convolution,
``grid_sample``, a loop over shifts for local multiplication, ``max_pool2d``; backward passes
through autograd, graph kept) and, for block matching, the best plain-PyTorch box filter
below (all displacements of a dy row at once, separable box sums by cumulative sums,
``argmin`` in tie order). See benchmarks/README.md for how to run them and what was measured.

``LMREF_BENCH_SIM=1`` lets the classes run in numba's simulator; only for smoke-testing this
file with tiny shapes (``python benchmarks/bench_cuda.py``), never for timings.
"""
import os

import numpy as np

from ._common import torch_or_skip

PEERS = ["lmref.cuda", "torch"]


def _numba_gpu_or_skip():
    """numba.cuda with a real GPU, or NotImplementedError (asv's skip)."""
    import lmref.cuda
    from lmref.cuda import _runtime

    if not lmref.cuda.is_available():
        raise NotImplementedError("no CUDA GPU usable by numba-cuda")
    if _runtime.simulator() and os.environ.get("LMREF_BENCH_SIM") != "1":
        raise NotImplementedError("numba's CUDA simulator: no meaningful timings")
    return _runtime.numba_cuda()


def _torch_cuda_or_skip():
    torch = torch_or_skip()
    if not torch.cuda.is_available():
        raise NotImplementedError("torch has no CUDA device")
    return torch


class _Bench:
    """Common setup: ``self.run`` (one call on device data) and ``self.sync``."""

    def _setup(self, peer, lmref_run, torch_run):
        if peer == "lmref.cuda":
            cuda = _numba_gpu_or_skip()
            self.run, self.sync = lmref_run(cuda), cuda.synchronize
        else:
            torch = _torch_cuda_or_skip()
            self.run, self.sync = torch_run(torch), torch.cuda.synchronize
        self.run()  # compile (numba) / autotune (cuDNN) outside the timer
        self.sync()

    def _time(self):
        self.run()
        self.sync()


def _rng():
    return np.random.default_rng(0)


def _to_torch(torch, *arrays, grad=False):
    return [torch.from_numpy(a).cuda().requires_grad_(grad) for a in arrays]


# ---------------------------------------------------------------------------- convolution

class Conv2d(_Bench):
    """N=8, 64 -> 64 channels, 56 x 56, 3 x 3, padding 1 (issue 2's CPU benchmark shape), and
    N=32, 128 -> 128 (issue 13's second shape)."""

    params = (PEERS, [(8, 64, 56, 56), (32, 128, 56, 56)], ["forward", "backward"])
    param_names = ["peer", "shape", "pass"]

    def setup(self, peer, shape, which):
        rng = _rng()
        n, c, h, w = shape
        x, wt = rng.standard_normal(shape), rng.standard_normal((c, c, 3, 3)) / (3 * c ** 0.5)
        b, g = rng.standard_normal(c), rng.standard_normal(shape)

        def lmref_run(cuda):
            import lmref.cuda as lc
            dx, dw, db, dg = (cuda.to_device(a) for a in (x, wt, b, g))
            if which == "forward":
                return lambda: lc.conv2d(dx, dw, db, padding=1)
            return lambda: lc.conv2d_backward(dg, dx, dw, db, padding=1)

        def torch_run(torch):
            from lmref.peers.torch_conv import conv2d
            tx, tw, tb = _to_torch(torch, x, wt, b, grad=which == "backward")
            if which == "forward":
                return lambda: conv2d(tx, tw, tb, padding=1)
            out, (tg,) = conv2d(tx, tw, tb, padding=1), _to_torch(torch, g)
            return lambda: torch.autograd.grad(out, (tx, tw, tb), tg, retain_graph=True)

        self._setup(peer, lmref_run, torch_run)

    def time_conv2d(self, peer, shape, which):
        self._time()


# ---------------------------------------------------------------------------- warp

class Warp(_Bench):
    """Bilinear backward-flow warp of (4, 64, 56, 56), zeros boundary (issue 3's shape)."""

    params = (PEERS, [(4, 64, 56, 56)], ["forward", "backward"])
    param_names = ["peer", "shape", "pass"]

    def setup(self, peer, shape, which):
        rng = _rng()
        n, _, h, w = shape
        x, flow = rng.standard_normal(shape), rng.uniform(-3.0, 3.0, (n, h, w, 2))
        g = rng.standard_normal(shape)

        def lmref_run(cuda):
            import lmref.cuda as lc
            dx, df, dg = (cuda.to_device(a) for a in (x, flow, g))
            if which == "forward":
                return lambda: lc.warp(dx, df)
            return lambda: lc.warp_backward(dg, dx, df)

        def torch_run(torch):
            from lmref.peers.torch_motion import warp
            tx, tf = _to_torch(torch, x, flow, grad=which == "backward")
            if which == "forward":
                return lambda: warp(tx, tf)
            out, (tg,) = warp(tx, tf), _to_torch(torch, g)
            return lambda: torch.autograd.grad(out, (tx, tf), tg, retain_graph=True)

        self._setup(peer, lmref_run, torch_run)

    def time_warp(self, peer, shape, which):
        self._time()


# ---------------------------------------------------------------------------- block matching

def torch_block_match(torch, ref, cur, block_size, search_range):
    """Plain-PyTorch box-filter block matcher ("sum" over channels, zeros boundary): for each
    dy, the squared differences of all dx at once, separable box sums by cumulative sums,
    then ``argmin`` over displacements in tie order (ties to rounding, unlike lmref)."""
    import torch.nn.functional as F

    r, s = block_size // 2, search_range
    c, h, w = cur.shape
    curp = F.pad(cur, (r, r, r, r))
    refp = F.pad(ref, (r + s, r + s, r + s, r + s))
    costs = []
    for dy in range(-s, s + 1):
        rows = refp[:, r + s + dy - r:r + s + dy + h + r, :]
        shifted = torch.stack([rows[:, :, s + dx:s + dx + w + 2 * r]
                               for dx in range(-s, s + 1)])  # (D, C, H + 2r, W + 2r)
        d2 = ((shifted - curp) ** 2).sum(dim=1)
        cs = F.pad(d2.cumsum(dim=1), (0, 0, 1, 0))
        v = cs[:, block_size:] - cs[:, :-block_size]
        cs = F.pad(v.cumsum(dim=2), (1, 0))
        costs.append(cs[:, :, block_size:] - cs[:, :, :-block_size])  # (D, H, W)
    cost = torch.cat(costs)  # displacement k = (dy + s) * (2 s + 1) + dx + s
    d = torch.arange(-s, s + 1, device=cur.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    order = torch.from_numpy(np.lexsort((dx.cpu().numpy(), dy.cpu().numpy(),
                                         (dx * dx + dy * dy).cpu().numpy()))).to(cur.device)
    best, k = cost[order].min(dim=0)
    k = order[k]
    return torch.stack([dx[k], dy[k]], dim=-1).double(), best


class BlockMatch(_Bench):
    """Seed 001's searches: 224 x 224, 31 x 31 blocks, +-11; 64 x 28 x 28, 3 x 3, +-5 summed;
    and a 1920 x 1080 frame with the same blocks and range (issue 13)."""

    params = (PEERS, [((1, 224, 224), 31, 11), ((64, 28, 28), 3, 5), ((1, 1080, 1920), 31, 11)])
    param_names = ["peer", "frames_block_range"]

    def setup(self, peer, case):
        shape, block, srange = case
        rng = _rng()
        ref = rng.integers(0, 256, shape).astype(np.float64)  # image-like integer frames
        cur = np.roll(ref, (0, 2, -3), axis=(0, 1, 2))

        def lmref_run(cuda):
            import lmref.cuda as lc
            dref, dcur = cuda.to_device(ref), cuda.to_device(cur)
            return lambda: lc.block_match(dref, dcur, block, srange)

        def torch_run(torch):
            tref, tcur = _to_torch(torch, ref, cur)
            return lambda: torch_block_match(torch, tref, tcur, block, srange)

        self._setup(peer, lmref_run, torch_run)

    def time_block_match(self, peer, case):
        self._time()


# ---------------------------------------------------------------------------- local multiply

class LocalMultiply(_Bench):
    """(4, 64, 32, 32), P = 7 (issue 6's shape); torch: the peer's loop over shifts."""

    params = (PEERS, [((4, 64, 32, 32), 7)], ["forward", "backward"])
    param_names = ["peer", "shape_patch", "pass"]

    def setup(self, peer, case, which):
        shape, patch = case
        rng = _rng()
        a, b = rng.standard_normal(shape), rng.standard_normal(shape)
        g = rng.standard_normal((shape[0], patch * patch) + shape[2:])

        def lmref_run(cuda):
            import lmref.cuda as lc
            da, db, dg = (cuda.to_device(v) for v in (a, b, g))
            if which == "forward":
                return lambda: lc.local_multiply(da, db, patch)
            return lambda: lc.local_multiply_backward(dg, da, db, patch)

        def torch_run(torch):
            from lmref.peers.torch_temporal import local_multiply
            ta, tb = _to_torch(torch, a, b, grad=which == "backward")
            if which == "forward":
                return lambda: local_multiply(ta, tb, patch)
            out, (tg,) = local_multiply(ta, tb, patch), _to_torch(torch, g)
            return lambda: torch.autograd.grad(out, (ta, tb), tg, retain_graph=True)

        self._setup(peer, lmref_run, torch_run)

    def time_local_multiply(self, peer, case, which):
        self._time()


# ---------------------------------------------------------------------------- max pooling

class MaxPool2d(_Bench):
    """(8, 64, 112, 112), 3 x 3, stride 2, padding 1 (a ResNet stem's pooling)."""

    params = (PEERS, [(8, 64, 112, 112)], ["forward", "backward"])
    param_names = ["peer", "shape", "pass"]

    def setup(self, peer, shape, which):
        rng = _rng()
        x = rng.standard_normal(shape)
        oh, ow = (shape[2] - 1) // 2 + 1, (shape[3] - 1) // 2 + 1
        g = rng.standard_normal(shape[:2] + (oh, ow))
        kw = dict(kernel_size=3, stride=2, padding=1)

        def lmref_run(cuda):
            import lmref.cuda as lc
            dx, dg = cuda.to_device(x), cuda.to_device(g)
            if which == "forward":
                return lambda: lc.max_pool2d(dx, **kw)
            return lambda: lc.max_pool2d_backward(dg, dx, **kw)

        def torch_run(torch):
            from lmref.peers.torch_layers import max_pool2d
            (tx,) = _to_torch(torch, x, grad=which == "backward")
            if which == "forward":
                return lambda: max_pool2d(tx, **kw)
            out, (tg,) = max_pool2d(tx, **kw), _to_torch(torch, g)
            return lambda: torch.autograd.grad(out, (tx,), tg, retain_graph=True)

        self._setup(peer, lmref_run, torch_run)

    def time_max_pool2d(self, peer, shape, which):
        self._time()


# ---------------------------------------------------------------------------- host floor

def _floor_calls(cuda, torch):
    """``{function: (lmref.cuda call, torch CUDA call)}`` on 8 x 8 device inputs: the time of
    such a call is all host path (validation, caches, allocation, launch), issue 15's floor."""
    import lmref.cuda as lc
    from lmref.peers import torch_conv, torch_layers, torch_motion, torch_temporal

    rng = _rng()
    x, w = rng.standard_normal((1, 2, 8, 8)), rng.standard_normal((2, 2, 3, 3))
    flow, g = rng.uniform(-1, 1, (1, 8, 8, 2)), rng.standard_normal((1, 2, 8, 8))
    frame, gl = rng.integers(0, 256, (8, 8)).astype(float), rng.standard_normal((1, 9, 8, 8))
    gp = rng.standard_normal((1, 2, 4, 4))
    d = {k: cuda.to_device(v) for k, v in dict(x=x, w=w, flow=flow, g=g, frame=frame,
                                                gl=gl, gp=gp).items()}
    t = {k: torch.from_numpy(v).cuda() for k, v in dict(x=x, w=w, flow=flow, g=g, frame=frame,
                                                         gl=gl, gp=gp).items()}
    tx, tw, tf = (t[k].clone().requires_grad_(True) for k in ("x", "w", "flow"))

    def grad(forward, inputs, g):  # the backward alone: the graph is built once, kept
        out = forward()
        return lambda: torch.autograd.grad(out, inputs, g, retain_graph=True)
    return {
        "conv2d": (lambda: lc.conv2d(d["x"], d["w"], padding=1),
                   lambda: torch_conv.conv2d(t["x"], t["w"], padding=1)),
        "conv2d_backward": (lambda: lc.conv2d_backward(d["g"], d["x"], d["w"], padding=1),
                            grad(lambda: torch_conv.conv2d(tx, tw, padding=1), (tx, tw), t["g"])),
        "warp": (lambda: lc.warp(d["x"], d["flow"]), lambda: torch_motion.warp(t["x"], t["flow"])),
        "warp_backward": (lambda: lc.warp_backward(d["g"], d["x"], d["flow"]),
                          grad(lambda: torch_motion.warp(tx, tf), (tx, tf), t["g"])),
        "block_match": (lambda: lc.block_match(d["frame"], d["frame"], 3, 1),
                        lambda: torch_block_match(torch, t["frame"][None], t["frame"][None], 3, 1)),
        "local_multiply": (lambda: lc.local_multiply(d["x"], d["x"], 3),
                           lambda: torch_temporal.local_multiply(t["x"], t["x"], 3)),
        "local_multiply_backward": (
            lambda: lc.local_multiply_backward(d["gl"], d["x"], d["x"], 3),
            grad(lambda: torch_temporal.local_multiply(tx, tx, 3), (tx,), t["gl"])),
        "max_pool2d": (lambda: lc.max_pool2d(d["x"], 2),
                       lambda: torch_layers.max_pool2d(t["x"], 2)),
        "max_pool2d_backward": (lambda: lc.max_pool2d_backward(d["gp"], d["x"], 2),
                                grad(lambda: torch_layers.max_pool2d(tx, 2), (tx,), t["gp"])),
    }


def _floor_table(cuda, torch, runs=200):
    """Median host floor (us) of every function, lmref.cuda and torch CUDA, synchronised."""
    import time

    print("| function | lmref.cuda floor (us) | torch CUDA floor (us) | ratio |")
    print("|---|---|---|---|")
    for name, calls in _floor_calls(cuda, torch).items():
        us = []
        for call, sync in zip(calls, (cuda.synchronize, torch.cuda.synchronize)):
            for _ in range(5):  # compile, caches, allocator pools
                call()
            sync()
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                call()
                sync()
                times.append(time.perf_counter() - t0)
            us.append(1e6 * float(np.median(times)))
        print(f"| {name} | {us[0]:.1f} | {us[1]:.1f} | {us[0] / us[1]:.2f}x |")


# ---------------------------------------------------------------------------- side-by-side table

def _conv_tflops(rest, ms):
    """TFLOP/s of a Conv2d case (2 flops a multiply-add; the backward does two convs' work)."""
    (n, c, h, w), which = rest
    flops = 2.0 * n * c * h * w * c * 9 * (1 if which == "forward" else 2)
    return flops / (ms * 1e-3) / 1e12


# ---------------------------------------------------------------------------- side-by-side table

def _main():
    """Median time of every benchmark for both peers as a Markdown table (a real GPU only):
    ``python -m benchmarks.bench_cuda`` from the repository root; ``--floor`` prints the host
    floor table (8 x 8 inputs) instead."""
    import datetime
    import itertools
    import time

    import sys

    import numba

    cuda = _numba_gpu_or_skip()
    torch = torch_or_skip()
    name = cuda.get_current_device().name
    name = name.decode() if isinstance(name, bytes) else name
    from importlib.metadata import version
    print(f"{name}, torch {torch.__version__}, numba {numba.__version__}, numba-cuda "
          f"{version('numba-cuda')}, numpy {np.__version__}, {datetime.date.today()}\n")
    if "--floor" in sys.argv[1:]:
        _floor_table(cuda, torch)
        return
    print("| benchmark | case | lmref.cuda (ms) | torch CUDA (ms) | speed-up "
          "| TFLOP/s lmref / torch |")
    print("|---|---|---|---|---|---|")
    for cls in (Conv2d, Warp, BlockMatch, LocalMultiply, MaxPool2d):
        for rest in itertools.product(*cls.params[1:]):
            ms = {}
            for peer in PEERS:
                bench = cls()
                try:
                    bench.setup(peer, *rest)
                except NotImplementedError as exc:
                    ms[peer] = f"skipped ({exc})"
                    continue
                times = []
                for _ in range(25):
                    t0 = time.perf_counter()
                    bench._time()
                    times.append(time.perf_counter() - t0)
                ms[peer] = 1e3 * float(np.median(times))
            a, b = ms["lmref.cuda"], ms["torch"]
            ratio = f"{b / a:.2f}x" if isinstance(a, float) and isinstance(b, float) else "-"
            fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else v  # noqa: E731
            tf = f"{_conv_tflops(rest, a):.2f} / {_conv_tflops(rest, b):.2f}" \
                if cls is Conv2d and isinstance(a, float) and isinstance(b, float) else "-"
            print(f"| {cls.__name__} | {', '.join(map(str, rest))} | {fmt(a)} | {fmt(b)} | {ratio} "
                  f"| {tf} |")


if __name__ == "__main__":
    _main()
