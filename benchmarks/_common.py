"""Shared benchmark plumbing: peers as an asv parameter, torch thread settings."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "2")


def torch_or_skip():
    """Return torch, or raise NotImplementedError (asv's skip) when it is not installed."""
    try:
        import torch
    except ImportError:
        raise NotImplementedError("torch not installed") from None
    torch.set_num_threads(2)
    return torch
