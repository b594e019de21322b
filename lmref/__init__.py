"""lmref: exact float64 reference implementations of motion in convolutional feature space.

Families (one module each): :mod:`lmref.conv`, :mod:`lmref.compose`, :mod:`lmref.motion`,
:mod:`lmref.arma`, :mod:`lmref.blockmatch`, :mod:`lmref.layers`, :mod:`lmref.temporal`,
:mod:`lmref.cuda`, and the user-facing :mod:`lmref.testing`.

Importing :mod:`lmref` is cheap: submodules load on first attribute access, numba kernels
compile on first call, and no GPU is probed.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "conv", "compose", "motion", "arma", "blockmatch", "layers", "temporal",
    "cuda", "testing", "registry", "peers", "reproduce", "cli",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'lmref' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
