"""The op registry: op -> reference, cpu, backward, cuda, peer, example.

Tests (``tests/test_registry.py``), benchmarks (``benchmarks/``) and the conformance runner
(:mod:`lmref.testing`) all read this one table instead of keeping their own lists.

Each family module declares ``_OPS = [Op(...), ...]`` at its bottom; entries name functions by
``"module:attribute"`` strings so that building the table imports neither torch nor numba.cuda.

An op's ``example(rng)`` returns ``(args, kwargs)``: small arrays for tests and the
conformance runner. ``args`` are the differentiable array inputs in order (those ``backward``
returns gradients for); ``kwargs`` are the options, passed identically to every implementation.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Op", "ops", "get", "resolve", "FAMILIES"]

#: family modules that declare ``_OPS``
FAMILIES = ("lmref.conv", "lmref.compose", "lmref.motion", "lmref.arma", "lmref.blockmatch",
            "lmref.layers", "lmref.temporal")


@dataclass(frozen=True)
class Op:
    """One registered operation. Every callable is a ``"module:attr"`` string (resolved lazily).

    Attributes
    ----------
    name : public op name, e.g. ``"conv2d"``.
    cpu : the fast (numba) public function.
    reference : the plain, obviously-correct path (same signature as ``cpu``).
    backward : ``op_backward(grad_out, *args, **kwargs) -> tuple`` of gradients of ``args``.
    cuda : the :mod:`lmref.cuda` twin, if any.
    peer : a PyTorch formulation ``f(*tensors, **kwargs) -> tensor`` (differentiable by autograd).
    peer_name : what the peer is, in words (shown in tables).
    jax_peer : a JAX formulation ``f(*arrays, **kwargs) -> array`` (differentiable by ``jax.vjp``);
        by default ``lmref.peers.jax_<family>`` with the torch peer's name, or the op's name
        (see ``lmref.peers.jax_peer``).
    example : ``example(rng) -> (args, kwargs)`` with small inputs.
    rtol, atol : tolerance of fast vs reference and vs the peer (float64).
    nondiff : indices of ``args`` that are not differentiable (no gradient is checked).
    """

    name: str
    cpu: str
    reference: str | None = None
    backward: str | None = None
    cuda: str | None = None
    peer: str | None = None
    peer_name: str = ""
    jax_peer: str | None = None
    example: str | None = None
    rtol: float = 1e-10
    atol: float = 1e-12
    nondiff: tuple[int, ...] = ()
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)

    def get(self, role: str) -> Callable | None:
        """Resolve the callable for ``role`` (``"cpu"``, ``"reference"``, ``"cuda"``...)."""
        path = getattr(self, role)
        return None if path is None else resolve(path)


def resolve(path: str) -> Callable:
    """Import ``"package.module:attr"`` and return the attribute."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def ops(families=FAMILIES) -> dict[str, Op]:
    """All registered ops, by name, in family order. Families not yet importable are skipped."""
    table: dict[str, Op] = {}
    for fam in families:
        try:
            mod = importlib.import_module(fam)
        except ModuleNotFoundError as exc:
            if exc.name == fam:
                continue
            raise
        for op in getattr(mod, "_OPS", ()):
            if op.name in table:
                raise RuntimeError(f"op {op.name!r} registered twice")
            table[op.name] = op
    return table


def get(name: str) -> Op:
    table = ops()
    if name not in table:
        raise KeyError(f"no op named {name!r}; registered: {sorted(table)}")
    return table[name]
