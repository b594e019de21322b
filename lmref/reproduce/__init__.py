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

# Importing the experiment modules registers them; this order is the run order (the issue's).
from lmref.reproduce import (exp_matrices, exp_noise, exp_composition,  # noqa: E402,F401
                             exp_latent_motion, exp_erf, exp_arithmetic)

__all__ = ["EXPERIMENTS", "VERDICTS", "Claim", "Context", "DaskRunner", "ExperimentResult",
           "SerialRunner", "register", "run_experiments", "task_rng", "task_seed"]
