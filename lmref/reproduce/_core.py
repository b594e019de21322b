"""Plumbing of ``lmref reproduce``: experiments, claims, runners, seeding, output files.

An experiment is a function ``run(ctx) -> ExperimentResult`` registered with :func:`register`.
It states each of the paper's claims next to what lmref measured (:class:`Claim`), sends its
embarrassingly parallel sweeps through ``ctx.map`` (serial in-process, or a dask cluster), and
draws its figures through ``ctx`` (skipped when matplotlib is missing).

Reproducibility: every task of a sweep draws its random numbers from :func:`task_rng`, a
generator seeded from the run's seed and the task's own parameters, never from shared state, so a
sweep gives bit-identical results whatever runs it and in whatever order.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["Claim", "Context", "Experiment", "ExperimentResult", "SerialRunner", "DaskRunner",
           "task_rng", "task_seed", "EXPERIMENTS", "register", "run_experiments", "VERDICTS"]

#: what a claim's verdict can be; only "not reproduced" and "error" fail a run
VERDICTS = ("reproduced", "not reproduced", "paper wrong (documented)", "info", "error")


@dataclass
class Claim:
    """One row of the summary table: what the paper says and what lmref measured."""

    experiment: str
    claim: str
    paper: str            # the paper's figure / statement, as text
    measured: str         # what lmref measured, as text
    verdict: str          # one of VERDICTS
    value: float | None = None  # the measured number, machine-readable

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.value is not None:
            self.value = float(self.value)

    def passed(self) -> bool:
        return self.verdict not in ("not reproduced", "error")


@dataclass
class ExperimentResult:
    name: str
    claims: list[Claim] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def claim(self, claim: str, paper: str, measured: str, verdict: str,
              value: float | None = None) -> Claim:
        c = Claim(self.name, claim, paper, measured, verdict, value)
        self.claims.append(c)
        return c


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    run: Callable  # run(ctx) -> ExperimentResult


#: registered experiments, in registration (= run) order
EXPERIMENTS: dict[str, Experiment] = {}


def register(name: str, title: str):
    """Decorator registering ``run(ctx) -> ExperimentResult`` under ``name``."""
    def deco(fn):
        old = EXPERIMENTS.get(name)
        if old and (old.run.__module__, old.run.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"experiment {name!r} is already registered by {old.run.__module__}")
        EXPERIMENTS[name] = Experiment(name, title, fn)
        return fn
    return deco


def task_seed(base_seed: int, *params) -> int:
    """A seed derived from the run's seed and a task's parameters alone.

    Whatever runs a task (in-process, a LocalCluster worker, a remote scheduler) and in
    whatever order, the task draws the same random numbers: results are identical.
    """
    text = json.dumps([int(base_seed), *[repr(p) for p in params]])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def task_rng(base_seed: int, *params) -> np.random.Generator:
    return np.random.default_rng(task_seed(base_seed, *params))


@contextlib.contextmanager
def _numba_threads(n: int):
    """Run numba's parallel kernels with ``n`` threads inside the block (this thread only)."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _run_task(fn: Callable, seed: int, task):
    """One task of a sweep, numba single-threaded (in this process or on a dask worker).

    The experiments' arrays are small and their sweeps many: tasks are the unit of parallelism
    (dask workers), and a numba parallel region per small kernel costs more than it gains, badly
    so when the cores are shared (the quick run took 79 s instead of 13 s on a loaded 2-core
    machine). lmref's kernels give identical results whatever the thread count, so this changes
    the speed only.
    """
    with _numba_threads(1):
        return fn(task, seed=seed)


class SerialRunner:
    """Runs tasks one after another in this process."""

    description = "serial (in-process)"

    def map(self, fn: Callable, tasks: Sequence, progress: Callable | None = None) -> list:
        out = []
        for i, t in enumerate(tasks):
            out.append(fn(t))
            if progress:
                progress(i + 1, len(tasks))
        return out

    def close(self):
        pass


class DaskRunner:
    """Runs tasks on a dask.distributed cluster (a LocalCluster or an existing scheduler).

    Task functions must be importable module-level functions (they are pickled by reference),
    and the workers need lmref installed.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError("--workers/--scheduler need dask.distributed: "
                               "pip install 'lmref[dask]'") from None
        if scheduler:
            self._cluster = None
            self.client = Client(scheduler)
            self.description = f"dask scheduler {scheduler}"
        else:
            workers = int(workers)
            if workers < 1:
                raise ValueError(f"workers must be >= 1, got {workers}")
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self.client = Client(self._cluster)
            self.description = f"dask LocalCluster with {workers} worker(s)"

    def map(self, fn: Callable, tasks: Sequence, progress: Callable | None = None) -> list:
        from dask.distributed import as_completed

        futures = self.client.map(fn, list(tasks), pure=False)
        for done, fut in enumerate(as_completed(futures), start=1):
            fut.result()  # a failing task raises here, early
            if progress:
                progress(done, len(futures))
        return self.client.gather(futures)  # in task order, not completion order

    def close(self):
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


@dataclass
class Context:
    """What an experiment gets: sizes, seed, runner, output folder, plotting."""

    quick: bool
    seed: int
    runner: object
    out: str
    log: Callable
    plt: object | None  # matplotlib.pyplot, or None when plots are skipped

    @property
    def plots(self) -> bool:
        return self.plt is not None

    def size(self, quick, full):
        """``quick`` under ``--quick``, else ``full``."""
        return quick if self.quick else full

    def rng(self, *params) -> np.random.Generator:
        """A generator for in-process work, seeded like a task with these parameters."""
        return task_rng(self.seed, *params)

    def map(self, label: str, fn: Callable, tasks: Sequence) -> list:
        """Run ``fn(task, seed=run_seed)`` for every task through the runner, in task order.

        ``fn`` must be a module-level function and should seed itself with
        ``task_rng(seed, *task)`` so the result does not depend on who runs it.
        """
        return self.runner.map(functools.partial(_run_task, fn, self.seed), list(tasks),
                               self.progress(label))

    def progress(self, label: str) -> Callable:
        start = time.monotonic()
        last = [start]

        def report(done, total):
            now = time.monotonic()
            if done == total or now - last[0] > 5.0:
                last[0] = now
                self.log(f"    {label}: {done}/{total} ({now - start:.1f} s)")
        return report

    def savefig(self, fig, name: str) -> str:
        path = os.path.join(self.out, name)
        fig.savefig(path, dpi=110, bbox_inches="tight")
        self.plt.close(fig)
        return path


def _load_pyplot(log):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: plots are skipped (pip install 'lmref[plot]')")
        return None
    return plt


def _fmt_table(rows: list[Claim]) -> str:
    cols = [("experiment", 13), ("claim", 40), ("paper", 26), ("measured", 34), ("verdict", 12)]
    lines = ["  ".join(c.ljust(w) for c, w in cols).rstrip(),
             "  ".join("-" * w for _, w in cols)]
    for r in rows:
        cells = [r.experiment, r.claim, r.paper, r.measured, r.verdict]
        wrapped = [_wrap(c, w) for c, (_, w) in zip(cells, cols)]
        for k in range(max(len(w) for w in wrapped)):
            lines.append("  ".join((w[k] if k < len(w) else "").ljust(cw)
                                   for w, (_, cw) in zip(wrapped, cols)).rstrip())
    return "\n".join(lines)


def _fmt_rows(rows: list[dict]) -> str:
    """A small aligned text table of a list of dicts (the experiments' detail tables)."""
    if not rows:
        return "  (empty)"
    keys = list(rows[0])
    cells = [[_fmt_cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  " + "  ".join(k.rjust(w) for k, w in zip(keys, widths))]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def _fmt_cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = str(text).split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    lines.append(cur)
    return lines


def _run_one(exp: Experiment, ctx: Context) -> ExperimentResult:
    """Run one experiment; a crash becomes an "error" claim so the other experiments still run."""
    t0 = time.monotonic()
    try:
        res = exp.run(ctx)
    except Exception as exc:  # report, keep going; the run's exit status says it failed
        ctx.log(traceback.format_exc())
        res = ExperimentResult(exp.name)
        res.claim(exp.title, "-", f"{type(exc).__name__}: {exc}"[:300], "error")
        res.notes.append(traceback.format_exc())
    res.seconds = time.monotonic() - t0
    return res


def run_experiments(names: Iterable[str] | None = None, *, out: str, quick: bool, seed: int = 0,
                    workers: int | None = None, scheduler: str | None = None,
                    plots: bool = True, log: Callable | None = None,
                    print_fn: Callable = print) -> dict:
    """Run the named experiments (all when ``names`` is empty or None).

    Writes ``summary.json`` and the PNG figures into ``out``, prints the experiments' detail
    tables and the summary table with ``print_fn`` (progress goes to ``log``, stderr by
    default) and returns the summary dict.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    _load_experiments()
    names = list(names or EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; choose from {list(EXPERIMENTS)}")
    os.makedirs(out, exist_ok=True)
    runner = DaskRunner(workers, scheduler) if (workers or scheduler) else SerialRunner()
    plt = _load_pyplot(log) if plots else None
    ctx = Context(quick=quick, seed=int(seed), runner=runner, out=out, log=log, plt=plt)
    results = []
    try:
        log(f"lmref reproduce: {len(names)} experiment(s), {'quick' if quick else 'full'} sizes, "
            f"seed {seed}, runner: {runner.description}")
        with _numba_threads(1):  # parallelism is over tasks (dask workers), see _run_task
            for n in names:
                exp = EXPERIMENTS[n]
                log(f"[{n}] {exp.title}")
                res = _run_one(exp, ctx)
                log(f"[{n}] done in {res.seconds:.1f} s")
                results.append(res)
    finally:
        runner.close()
    claims = [c for r in results for c in r.claims]
    summary = {
        "quick": quick, "seed": int(seed), "runner": runner.description,
        "plots": plt is not None,
        "experiments": [{"name": r.name, "title": EXPERIMENTS[r.name].title,
                         "seconds": round(r.seconds, 3),
                         "figures": [os.path.basename(f) for f in r.figures],
                         "tables": r.tables, "notes": r.notes} for r in results],
        "claims": [asdict(c) for c in claims],
        "all_passed": all(c.passed() for c in claims),
    }
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(_strict_json(summary), fh, indent=2, allow_nan=False)
    for r in results:
        for tname, rows in r.tables.items():
            print_fn(f"\n[{r.name}] {tname}\n{_fmt_rows(rows)}")
    print_fn("\n" + _fmt_table(claims))
    n_fig = sum(len(r.figures) for r in results)
    n_ok = sum(c.passed() for c in claims)
    print_fn(f"\n{n_ok} of {len(claims)} claims reproduced or explained; "
             f"{n_fig} figure(s) and summary.json in {out}"
             + ("" if plt is not None else
                " (plots skipped: " + ("--no-plots)" if not plots else "matplotlib missing)")))
    return summary


def _load_experiments():
    """Import the experiment modules so that they register themselves."""
    import lmref.reproduce  # noqa: F401  (its __init__ imports every exp_* module)


def _strict_json(o):
    """Plain JSON types; numpy scalars/arrays converted, inf/NaN written as strings
    ("inf", "nan") so that summary.json stays standard JSON."""
    if isinstance(o, dict):
        return {str(k): _strict_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict_json(v) for v in o]
    if isinstance(o, np.ndarray):
        return _strict_json(o.tolist())
    if isinstance(o, (np.bool_, bool)):
        return bool(o)
    if isinstance(o, (np.integer, int)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        return float(o) if np.isfinite(o) else str(float(o))
    if o is None or isinstance(o, str):
        return o
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
