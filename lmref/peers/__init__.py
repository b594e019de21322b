"""Peer implementations (PyTorch) of lmref's ops, used by tests, benchmarks and conformance.

One file per family (``lmref.peers.torch_conv`` ...). A peer function takes torch tensors and
the op's keyword options and returns a tensor; :func:`run_peer` converts NumPy inputs, runs
it in float64 and, given ``grad_out``, also returns autograd's gradients. Importing this
package does not import torch.
"""
from __future__ import annotations

import numpy as np

__all__ = ["torch_available", "run_peer"]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def run_peer(fn, args, kwargs, grad_out=None, *, nondiff=()):
    """Run torch peer ``fn(*tensors, **kwargs)`` on NumPy ``args`` in float64.

    Returns the output as a NumPy array, or ``(output, grads)`` when ``grad_out`` is given,
    ``grads`` being a tuple with one entry per arg (``None`` for ``nondiff`` indices).
    """
    import torch

    tensors = []
    for i, a in enumerate(args):
        t = torch.from_numpy(np.array(a, dtype=np.float64))
        if grad_out is not None and i not in nondiff:
            t.requires_grad_(True)
        tensors.append(t)
    out = fn(*tensors, **kwargs)
    out_np = out.detach().numpy().copy()
    if grad_out is None:
        return out_np
    diff = [t for i, t in enumerate(tensors) if i not in nondiff]
    grads = torch.autograd.grad(out, diff, torch.from_numpy(np.asarray(grad_out, np.float64)),
                                allow_unused=True)
    it = iter(grads)
    result = []
    for i, t in enumerate(tensors):
        if i in nondiff:
            result.append(None)
        else:
            g = next(it)
            result.append(np.zeros(t.shape) if g is None else g.numpy().copy())
    return out_np, tuple(result)
