"""``lmref reproduce``: re-run the papers' claims and show them as tables and plots.

Each ``exp_*`` module registers one experiment (see :mod:`lmref.reproduce._core`); they
import the capability modules inside their ``run`` so that listing experiments stays cheap.

>>> from lmref.reproduce import run_experiments
>>> summary = run_experiments(["composition"], out="report", quick=True)  # doctest: +SKIP
"""
from __future__ import annotations

from lmref.reproduce._core import (EXPERIMENTS, VERDICTS, Claim, Context, DaskRunner,
                                   ExperimentResult, SerialRunner, register, run_experiments,
                                   task_rng, task_seed)

# Registration order is the run order (the papers' order of the issue).
_EXPERIMENT_MODULES = ("exp_matrices", "exp_noise", "exp_composition", "exp_latent_motion",
                       "exp_erf", "exp_arithmetic")


def _import_experiments():
    import importlib
    for mod in _EXPERIMENT_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{mod}":  # a broken experiment module must not hide
                raise


_import_experiments()

__all__ = ["EXPERIMENTS", "VERDICTS", "Claim", "Context", "DaskRunner", "ExperimentResult",
           "SerialRunner", "register", "run_experiments", "task_rng", "task_seed"]
