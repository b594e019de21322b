"""Side-by-side table of the CPU benchmarks, for the record in benchmarks/README.md.

``python -m benchmarks.table [bench_conv bench_motion ...]`` (from the repository root) runs
every asv benchmark class of the named modules (default: all CPU ones) outside asv, in this
process: ``setup`` of every peer (data, JIT warm-up), then the peers' calls of each
``time_*`` method *interleaved* (lmref, torch, lmref, torch, ...: both sample the same machine
state, which matters on a shared or throttled machine) for up to 41 rounds (at most ~2 s per
peer), and prints one Markdown row per case with the medians of the lmref and torch times and
the speed-up (torch time / lmref time); a peer other than torch (block matching's OpenCV
loop) gets a row of its own, ``<case> vs <peer>``, its time in the torch column. asv remains
the tool to track speed over commits; this is the quick side-by-side view with the machine
and date. ``--faults`` follows each time with the median minor page faults per call
(``ms/faults``): on a machine where a fresh page costs microseconds (a VM), a row can be bound
by the allocator giving memory back and taking it again rather than by its arithmetic.
"""
import datetime
import importlib
import itertools
import os
import platform
import sys
import time

import numpy as np

CPU_MODULES = ("bench_conv", "bench_compose", "bench_motion", "bench_arma", "bench_blockmatch",
               "bench_layers", "bench_temporal")
MAX_RUNS, MAX_SECONDS = 41, 2.0
#: ``--faults``: each time is followed by the median minor page faults per call, ``ms/faults``
COUNT_FAULTS = False


def _minor_faults() -> int:
    import resource  # POSIX only: imported where --faults asks for it

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _median_ms(*fns) -> list:
    """Median ms of each function, their calls interleaved round by round (with
    ``COUNT_FAULTS``, ``(ms, minor page faults per call)`` pairs)."""
    times = [[] for _ in fns]
    faults = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < MAX_RUNS and (
            len(times[0]) < 5 or time.perf_counter() - start < MAX_SECONDS * len(fns)):
        for fn, ts, fs in zip(fns, times, faults):
            f0 = _minor_faults() if COUNT_FAULTS else 0
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
            fs.append(_minor_faults() - f0 if COUNT_FAULTS else 0)
    ms = [1e3 * float(np.median(ts)) for ts in times]
    if COUNT_FAULTS:
        return [_Timed(t, int(np.median(fs))) for t, fs in zip(ms, faults)]
    return ms


class _Timed(float):
    """A median time in ms that also carries the median minor page faults per call."""

    def __new__(cls, ms, faults):
        obj = super().__new__(cls, ms)
        obj.faults = faults
        return obj


def _cases(cls):
    """(peers or None, list of the other parameter tuples) of an asv class."""
    params = cls.params if isinstance(cls.params[0], (list, tuple)) else (cls.params,)
    names = list(getattr(cls, "param_names", []))
    if names and names[0] == "peer":
        return list(params[0]), list(itertools.product(*params[1:]))
    return None, list(itertools.product(*params))


def _call(cls, method, args):
    """A set-up benchmark's ``time_*`` call, or why it skipped."""
    bench = cls()
    try:
        if hasattr(bench, "setup"):
            bench.setup(*args)
    except NotImplementedError as exc:
        return f"skipped ({exc})"
    return lambda: getattr(bench, method)(*args)


def _time_peers(cls, method, cases) -> list:
    """Interleaved medians (ms) of the cases that set up, the skip reasons of the others."""
    calls = [_call(cls, method, args) for args in cases]
    ready = [c for c in calls if callable(c)]
    ms = iter(_median_ms(*ready)) if ready else iter(())
    return [next(ms) if callable(c) else c for c in calls]


def _fmt(v) -> str:
    if isinstance(v, _Timed):
        return f"{v:.3f}/{v.faults}"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _rows(module):
    for name, cls in vars(module).items():
        if not isinstance(cls, type) or not hasattr(cls, "params") or name.startswith("_"):
            continue
        methods = [m for m in dir(cls) if m.startswith("time_")]
        peers, rest = _cases(cls)
        for method, args in itertools.product(methods, rest):
            label = ", ".join(map(str, args))
            if peers is None:
                yield name, method, label, _time_peers(cls, method, [args])[0], "-", "-"
                continue
            ms = dict(zip(peers, _time_peers(cls, method, [(p, *args) for p in peers])))
            mine = ms.get("lmref", "-")
            # torch in the torch column; any other peer (block matching's OpenCV loop) on a
            # row of its own, its time in that column
            for peer in ["torch"] + [p for p in peers if p not in ("lmref", "torch")]:
                other = ms.get(peer, "-")
                ratio = (f"{other / mine:.2f}x" if isinstance(mine, float)
                         and isinstance(other, float) else "-")
                yield name, method, label if peer == "torch" else f"{label} vs {peer}", \
                    mine, other, ratio


def main(argv=None) -> None:
    global COUNT_FAULTS
    args = list(argv if argv is not None else sys.argv[1:])
    COUNT_FAULTS = "--faults" in args
    names = [a for a in args if a != "--faults"] or CPU_MODULES
    import numba

    try:
        from ._common import torch_or_skip
        torch = torch_or_skip()
        peer = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    except NotImplementedError:
        peer = "torch not installed (its column is skipped)"
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, numba "
          f"{numba.__version__} ({numba.get_num_threads()} threads), {peer}, "
          f"{datetime.date.today()}\n")
    unit = "ms/faults" if COUNT_FAULTS else "ms"
    print(f"| benchmark | method | case | lmref ({unit}) | torch ({unit}) | speed-up |")
    print("|---|---|---|---|---|---|")
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        for cls, method, label, mine, other, ratio in _rows(module):
            print(f"| {cls} | {method.removeprefix('time_')} | {label} | {_fmt(mine)} | "
                  f"{_fmt(other)} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
