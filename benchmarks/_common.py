"""Shared benchmark plumbing: peers as an asv parameter, torch thread settings."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
# torch's intra-op threads; OMP_NUM_THREADS=1 (with NUMBA_NUM_THREADS=1) runs both peers on one
# thread, e.g. to compare commits on a machine shared with other jobs.
TORCH_THREADS = int(os.environ["OMP_NUM_THREADS"])


def torch_or_skip():
    """Return torch, or raise NotImplementedError (asv's skip) when it is not installed."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch not installed") from None
    torch.set_num_threads(TORCH_THREADS)
    return torch
