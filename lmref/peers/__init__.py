"""Peer implementations (PyTorch and JAX) of lmref's ops, used by tests, benchmarks and conformance.

One file per framework and family (``lmref.peers.torch_conv``, ``lmref.peers.jax_conv`` ...).
A peer function takes framework arrays and the op's keyword options and returns an array;
:func:`run_peer` (torch) and :func:`run_jax_peer` (JAX) convert NumPy inputs, run the peer in
float64 and, given ``grad_out``, also return the framework's gradients (autograd /
``jax.vjp``). Importing this package imports neither torch nor JAX.

JAX computes in float32 unless 64-bit mode is on. lmref never flips JAX's *global*
``jax_enable_x64`` flag (that would change the dtype of every array in the user's process):
:func:`run_jax_peer` and the conformance runner enable it per call with the thread-local
context manager ``jax.enable_x64(True)``, and pass float32 arrays explicitly for the float32
checks. To call a ``jax_*`` peer yourself in float64, do the same (or set the flag globally in
your own process).
"""
from __future__ import annotations

import numpy as np

__all__ = ["torch_available", "jax_available", "run_peer", "run_jax_peer", "jax_peer"]


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def jax_available() -> bool:
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def jax_peer(op):
    """``(function, description)`` of the JAX peer of registry op ``op``, or ``None``.

    ``op.jax_peer`` when set; otherwise ``lmref.peers.jax_<family>:<name>`` where ``<family>``
    and ``<name>`` are the torch peer's (``torch_conv:conv2d`` -> ``jax_conv:conv2d``) or, for
    an op without a torch peer, the family of ``op.cpu`` and the op's name. The description is
    the module's ``PEER_NAMES[op.name]``. Imports JAX.
    """
    import importlib

    from lmref.registry import resolve

    if op.jax_peer:
        path = op.jax_peer
    elif op.peer and ":torch_" not in op.peer and ".torch_" in op.peer:
        module, _, attr = op.peer.partition(":")
        pkg, _, fam = module.rpartition(".")
        path = f"{pkg}.{fam.replace('torch_', 'jax_', 1)}:{attr}"
    else:
        path = f"lmref.peers.jax_{op.cpu.partition(':')[0].rpartition('.')[2]}:{op.name}"
    module = path.partition(":")[0]
    try:
        fn = resolve(path)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
    except AttributeError:
        return None
    names = getattr(importlib.import_module(module), "PEER_NAMES", {})
    return fn, names.get(op.name, path)


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


def run_jax_peer(fn, args, kwargs, grad_out=None, *, nondiff=(), dtype="float64"):
    """Run JAX peer ``fn(*arrays, **kwargs)`` on NumPy ``args`` in ``dtype`` (x64 per call).

    Returns the output as a NumPy float64 array, or ``(output, grads)`` when ``grad_out`` is
    given, ``grads`` being a tuple with one entry per arg (``None`` for ``nondiff`` indices),
    computed by ``jax.vjp``. A tuple of outputs comes back as a tuple (``grad_out`` then is a
    tuple too).
    """
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        xs = [jnp.asarray(np.asarray(a, np.float64), dtype=dtype) for a in args]

        def f(*diff):
            it = iter(diff)
            return fn(*[x if i in nondiff else next(it) for i, x in enumerate(xs)], **kwargs)

        out, vjp = jax.vjp(f, *[x for i, x in enumerate(xs) if i not in nondiff])
        multi = isinstance(out, (tuple, list))
        out_np = tuple(np.asarray(o, np.float64) for o in out) if multi else \
            np.asarray(out, np.float64)
        if grad_out is None:
            return out_np
        ct = tuple(jnp.asarray(np.asarray(g, np.float64), dtype=dtype) for g in grad_out) \
            if multi else jnp.asarray(np.asarray(grad_out, np.float64), dtype=dtype)
        it = iter(vjp(ct))
        grads = tuple(None if i in nondiff else np.asarray(next(it), np.float64)
                      for i in range(len(xs)))
    return out_np, grads
