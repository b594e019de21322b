"""Robustness sweep: every public function x every bad-input kind.

Each public function of each family module (its ``__all__``) is called validly (the registry's
example, or a recipe in ``lmref/testing/_sweep.py``), then with one argument replaced by a bad
value: wrong ndim, int/float32/float16/bool/complex/object/string dtypes, a string, None, empty
arrays and zero-size spatial axes, non-contiguous, negative-stride, Fortran-order, byte-swapped
and read-only views, nested lists, NaN and Inf, and for options: huge sizes, non-integers,
strings, negative values and unknown choices. Each call must work correctly (identical result
for views/byte-swapped/lists, the same result as the equivalent float64 input for other
dtypes, a batch axis that behaves as one) or raise ``ValueError``/``TypeError`` naming the
argument: never another exception, a numba error, a modified input, an output aliasing an
input, an attempted multi-terabyte allocation or a hang. The calls run in a separate worker
process (memory-limited, with a timeout), so a crash or a hang is a failed case, not a dead
test session. The counts are printed at the end of this module's tests.
"""
import collections
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
import pytest

import lmref
from lmref._validation import as_float64, check_alloc, check_shape, one_of
from lmref.testing import _sweep as S

ROOT = Path(lmref.__file__).resolve().parent.parent
RECIPES = S.recipes()
CASES = [(q, name, kind) for q, rec in RECIPES.items() for name, kind in S.cases(rec)]
CLEAN_TIMEOUT_S = 300  # the first (valid) call of a function compiles its numba kernels
TIMEOUT_S = 30  # later calls reuse them: longer means a hang or a runaway loop

#: Failures the sweep found in modules that were still being written, as
#: ``(function, argument, kind) -> "what happens; suggested fix"`` (argument ``"*"`` and kind
#: ``"clean"`` for the valid call itself). Each case runs as ``xfail(strict=True)``: fixing it
#: makes the case XPASS, which fails the suite until the entry is removed here.
#: a known failure that hangs (a runaway loop) is not run: it would cost the timeout every time
HANG = "HANG: "

KNOWN_FAILURES: dict[tuple[str, str, str], str] = {
    # empty: every failure the sweep found has been fixed
}

RESULTS: list = []  # (function, argument, kind, outcome) for the summary


# --- the worker process ------------------------------------------------------------------------

class Worker:
    """A JSON-lines ``lmref.testing._sweep worker`` subprocess, restarted after a hang or crash."""

    def __init__(self, cmd=None, env=None):
        self.cmd = cmd or [sys.executable, "-m", "lmref.testing._sweep", "worker"]
        self.env = env
        self.proc = None
        self.warm: dict[str, tuple[bool, str]] = {}  # function -> outcome of its valid call
        self.stderr = tempfile.TemporaryFile(mode="w+")

    def _start(self):
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, PYTHONPATH=path, LMREF_MAX_BYTES=str(2**30), OMP_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1",  # thread counts are test_determinism's business
                   LMREF_SWEEP_MAX_GIB="8", **(self.env or {}))
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, cwd=str(ROOT), env=env)

    def ask(self, request: dict, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
        """Send one request; a timeout or a dead process is a failed check (and a restart)."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            self.warm.clear()
            return False, f"did not return within {timeout:g} s (a hang or a runaway loop)"
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            self.warm.clear()
            self.stderr.seek(0)
            tail = self.stderr.read()[-300:].strip().replace("\n", " | ")
            return False, f"the process died (exit code {code}): {tail}"
        answer = json.loads(line)
        return answer["ok"], answer["detail"]

    def clean(self, qualname: str) -> tuple[bool, str]:
        """The valid call (compiles the kernels), once per worker process."""
        if qualname not in self.warm or self.proc is None:
            self.warm[qualname] = self.ask({"fn": qualname, "arg": "*", "kind": "clean"},
                                           CLEAN_TIMEOUT_S)
        return self.warm[qualname]

    def check(self, qualname: str, arg: str, kind: str) -> tuple[bool, str]:
        self.clean(qualname)
        return self.ask({"fn": qualname, "arg": arg, "kind": kind})

    def close(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    yield
    if not RESULTS:
        return
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # visible even without -s
        print("\n" + "\n".join(_summary_lines(RESULTS)))


def _summary_lines(results) -> list[str]:
    funcs = {q for q, *_ in results}
    kinds = collections.Counter(k for _, _, k, _ in results)
    bad = collections.Counter(k for _, _, k, o in results if o == "failed")
    known = collections.Counter(k for _, _, k, o in results if o == "known failure")
    n_bad, n_known = sum(bad.values()), sum(known.values())
    n_skip = sum(o == "skipped" for *_, o in results)
    lines = [f"robustness sweep: {len(funcs)} public functions x {len(kinds)} bad-input kinds "
             f"= {len(results)} calls; {len(results) - n_bad - n_known - n_skip} correct, "
             f"{n_bad} failed, {n_known} known failures (KNOWN_FAILURES), {n_skip} skipped "
             f"(the valid call itself fails)"]
    width = max(len(k) for k in kinds)
    for k in sorted(kinds):
        lines.append(f"  {k.ljust(width)}  tried {kinds[k]:4d}  failed {bad[k]:3d}  "
                     f"known {known[k]:3d}")
    return lines


# --- the sweep ---------------------------------------------------------------------------------

def _short(q):
    return q.removeprefix("lmref.")


def _known(key):
    reason = KNOWN_FAILURES.get(key)
    if not reason:
        return []
    return [pytest.mark.xfail(strict=True, reason=reason, run=not reason.startswith(HANG))]


def _params():
    out = []
    for q, name, kind in CASES:
        marks = _known((q, name, kind))
        out.append(pytest.param(q, name, kind, id=f"{_short(q)}-{name}-{kind}", marks=marks))
    return out


def _clean_params():
    out = []
    for q in RECIPES:
        out.append(pytest.param(q, id=_short(q), marks=_known((q, "*", "clean"))))
    return out


def _audit_params():
    return [pytest.param("*", id="all-kernels", marks=_known(("*", "*", "audit")))]


@pytest.mark.parametrize("qualname", _clean_params())
def test_valid_call(worker, qualname):
    """The valid call works, returns float64, leaves its inputs alone and aliases none."""
    ok, detail = worker.clean(qualname)
    assert ok, f"{qualname}: {detail}"


@pytest.mark.parametrize("qualname, arg, kind", _params())
def test_bad_input(worker, qualname, arg, kind):
    ok, detail = worker.check(qualname, arg, kind)
    known = (qualname, arg, kind) in KNOWN_FAILURES
    if not ok and detail.startswith(S.CLEAN_FAILS):
        RESULTS.append((qualname, arg, kind, "skipped"))
        pytest.skip(f"{qualname}: {detail} (see test_valid_call)")
    RESULTS.append((qualname, arg, kind, "correct" if ok else
                    ("known failure" if known else "failed")))
    assert ok, f"{qualname}({arg}=<{kind}>): {detail}"


@pytest.mark.parametrize("qualname", _audit_params())
def test_numba_kernels_keep_one_specialisation(worker, qualname):
    """After the sweep: no bad input made a kernel compile again (views, dtypes and read-only
    arrays must all be normalised before they reach numba). Runs after test_bad_input."""
    ok, detail = worker.ask({"fn": qualname, "arg": "*", "kind": "audit"})
    assert ok, detail


def test_every_public_function_has_a_recipe():
    missing = S.missing_recipes()
    assert not missing, (f"public functions without a way to call them in the sweep: {missing}; "
                         f"register the op (with an example) or add a MANUAL recipe in "
                         f"lmref/testing/_sweep.py")


def test_known_failures_are_real_cases():
    cases = set(CASES) | {(q, "*", "clean") for q in RECIPES} | {("*", "*", "audit")}
    stale = [k for k in KNOWN_FAILURES if k not in cases]
    assert not stale, f"KNOWN_FAILURES entries that are no longer sweep cases: {stale}"


def test_the_sweep_covers_every_family_that_exists():
    fams = {q.rsplit(".", 1)[0] for q in RECIPES}
    assert fams == set(S.family_modules()), "a family module exports no function"


# --- singular systems: every solver refuses them (issue 18; in-process, each call is tiny) -----

@pytest.mark.parametrize("qualname, system", [
    pytest.param(q, k, id=f"{_short(q)}-{k}") for q, k in S.singular_cases()])
def test_solver_refuses_singular_system(qualname, system):
    ok, detail = S.check_singular(qualname, system)
    assert ok, f"{qualname} on the singular system {system!r}: {detail}"


def test_every_arma_solver_is_in_the_singular_sweep():
    # (other families' solvers, e.g. motion.feature_transfer's least squares, are their own)
    solvers = [q for q in S.solver_functions() if q.startswith("lmref.arma.")]
    assert set(solvers) <= set(S.SOLVERS), (
        f"solvers without singular-system cases: {sorted(set(solvers) - set(S.SOLVERS))}; "
        f"add them to SOLVERS in lmref/testing/_sweep.py")


def test_the_singular_sweep_flags_a_silent_solve():
    """The check fails a solver that returns a 'solution' (the old ar_solve_dense)."""
    S.SOLVERS["tests.fake_solver.fake_solver"] = ("a", lambda a, shape: ((a,), {}))
    try:
        import types
        sys.modules["tests.fake_solver"] = types.SimpleNamespace(fake_solver=lambda a: a * 1e15)
        ok, detail = S.check_singular("tests.fake_solver.fake_solver", "zero-sum")
    finally:
        del S.SOLVERS["tests.fake_solver.fake_solver"]
        sys.modules.pop("tests.fake_solver", None)
    assert not ok and "returned a 'solution'" in detail


def test_as_float64_returns_a_ready_array_itself_and_still_checks_it():
    """The shortcut for a C-contiguous, writeable float64 array (small calls) returns what the
    full conversion does, and the ndim and emptiness checks still run."""
    x = np.ones((2, 3))
    assert as_float64(x, "x", ndim=2) is x and as_float64(x, "x") is x
    with pytest.raises(ValueError, match=r"^x must be 3-dimensional, got 2-dimensional array"):
        as_float64(x, "x", ndim=3)
    assert as_float64(x, "x", ndim=(1, 2)) is x
    with pytest.raises(ValueError, match=r"^x must not be empty"):
        as_float64(np.ones((0, 3)), "x", ndim=2)
    assert as_float64(np.ones((0, 3)), "x", allow_empty=True).shape == (0, 3)
    frozen = np.ones((2, 3))
    frozen.flags.writeable = False
    subclass = x.view(type("Sub", (np.ndarray,), {}))
    for view in (frozen, x.T, x[:, ::2], x.astype(">f8"), subclass):
        got = as_float64(view, "x")
        assert got is not view and type(got) is np.ndarray and got.flags.writeable
        assert got.flags.c_contiguous and got.dtype == np.float64
        np.testing.assert_array_equal(got, np.asarray(view))


# --- the sweep's own judgement, on functions with known defects (runs in-process) ---------------

def _good(x, y, *, mode="a", k=2):
    x = as_float64(x, "x", ndim=2)
    y = as_float64(y, "y", ndim=2)
    check_shape(y, "y", x.shape)
    one_of(mode, "mode", ("a", "b"))
    if not isinstance(k, int) or isinstance(k, bool):
        raise TypeError(f"k must be an int, got {k!r}")
    if k < 0 or k > 100:
        raise ValueError(f"k must be in [0, 100], got {k}")
    return x * k + y


def _recipe(fn, nan_ok=""):
    def make(rng):
        return (rng.standard_normal((3, 4)), rng.standard_normal((3, 4))), {"mode": "a", "k": 2}
    return S.Recipe(f"fake.{fn.__name__}", fn, make, nan_ok=nan_ok)


def _verdicts(fn):
    rec = _recipe(fn)
    return {(name, kind): S.check(rec, name, kind) for name, kind in S.cases(rec)}


def test_a_careful_function_passes_every_case():
    verdicts = _verdicts(_good)
    assert len(verdicts) > 40
    bad = {k: v for k, v in verdicts.items() if not v[0]}
    assert not bad


def _unvalidated(x, y, *, mode="a", k=2):
    return np.asarray(x) * k + np.asarray(y)


def _mutating(x, y, *, mode="a", k=2):
    x = as_float64(x, "x", ndim=2)
    np.multiply(x, k, out=x) if x.flags.writeable else None
    return x + y


def _aliasing(x, y, *, mode="a", k=2):
    return as_float64(x, "x", ndim=2)


def _vague(x, y, *, mode="a", k=2):
    if np.ndim(x) != 2:
        raise ValueError("bad input")
    return _good(x, y, mode=mode, k=k)


def _index_error(x, y, *, mode="a", k=2):
    x = np.asarray(x)
    return _good(x[:, [0, 1, 2, 3]], y, mode=mode, k=k)


def _swallows_nan(x, y, *, mode="a", k=2):
    return np.nan_to_num(_good(x, y, mode=mode, k=k))


def _forgets_layout(x, y, *, mode="a", k=2):
    x = np.asarray(x, np.float64)
    # the classic strides bug: read the buffer in memory order, ignoring the view's strides
    buf = x if x.base is None else np.asarray(x.base)
    in_memory_order = np.ravel(buf, order="K")[:x.size].reshape(x.shape)
    return _good(in_memory_order, y, mode=mode, k=k)


def _allocates(x, y, *, mode="a", k=2):
    scratch = np.zeros((k, k, k))  # no memory guard
    return _good(x, y, mode=mode, k=min(k, 100)) + scratch.sum()


@pytest.mark.parametrize("fn, case, words", [
    (_unvalidated, ("x", "bool dtype"), "accepted bool dtype"),
    (_unvalidated, ("x", "complex dtype"), "accepted complex dtype"),
    (_unvalidated, ("x", "ndim-1"), "accepted one axis fewer"),
    (_unvalidated, ("mode", "unknown choice"), "accepted unknown choice"),
    (_allocates, ("k", "huge"), "does not name k"),  # numpy's "array is too big"
    (_mutating, ("y", "float32"), "modified its input"),
    (_aliasing, ("y", "float32"), "shares memory"),
    (_vague, ("x", "ndim+1"), "does not name x"),
    (_index_error, ("x", "zero-size spatial"), "raised IndexError"),
    (_swallows_nan, ("x", "all NaN"), "silently absorbed"),
    (_forgets_layout, ("x", "Fortran order"), "result differs"),
    (_forgets_layout, ("x", "negative strides"), "result differs"),
])
def test_the_sweep_flags_defects(fn, case, words):
    ok, detail = S.check(_recipe(fn), *case)
    assert not ok and words in detail, detail


@numba.njit(cache=False)
def _double_kernel(x):
    return x * 2.0


def _unnormalised(x, y, *, mode="a", k=2):
    _good(x, y, mode=mode, k=k)  # validates, but then hands the raw array to the kernel
    return _double_kernel(np.asarray(x))


def test_the_audit_flags_a_second_numba_specialisation(monkeypatch):
    monkeypatch.setattr(S, "KERNEL_MODULES", (__name__,))
    monkeypatch.setattr(S, "EXTRA_SPECIALISATIONS", {})
    rec = _recipe(_unnormalised)
    assert S.check_clean(rec)[0]
    assert S.audit_specialisations()[0]
    assert S.check(rec, "x", "float32")[0]  # the result is right...
    ok, detail = S.audit_specialisations()  # ...but the kernel compiled a float32 variant
    assert not ok and "_double_kernel: 2 specialisations" in detail
    assert "fake._unnormalised(x=<float32>)" in detail and "float32" in detail


def test_a_documented_nan_absorption_is_accepted():
    assert S.check(_recipe(_swallows_nan, nan_ok="documented"), "x", "all NaN")[0]


def test_a_broken_valid_call_is_reported_once():
    def broken(x, y, *, mode="a", k=2):
        raise RuntimeError("not implemented")
    rec = _recipe(broken)
    ok, detail = S.check_clean(rec)
    assert not ok and detail.startswith(S.CLEAN_FAILS) and "RuntimeError" in detail
    assert S.check(rec, "x", "bool dtype")[1].startswith(S.CLEAN_FAILS)


def test_numba_errors_are_recognised():
    from numba.core.errors import TypingError
    ok, detail = S._clean_exc_ok(TypingError("Failed in nopython mode pipeline"), ["x"], [])
    assert not ok and "numba error" in detail


def test_worker_survives_hangs_and_crashes():
    hang = Worker([sys.executable, "-c", "import sys, time; sys.stdin.readline(); time.sleep(60)"])
    ok, detail = hang.ask({"fn": "x", "arg": "x", "kind": "x"}, timeout=2)
    assert not ok and "did not return within 2 s" in detail and hang.proc is None
    crash = Worker([sys.executable, "-c",
                    "import sys; sys.stdin.readline(); sys.stderr.write('boom'); sys.exit(3)"])
    ok, detail = crash.ask({"fn": "x", "arg": "x", "kind": "x"}, timeout=30)
    assert not ok and "exit code 3" in detail and "boom" in detail


def test_summary_counts():
    lines = _summary_lines([("f", "x", "a", "correct"), ("f", "x", "b", "failed"),
                            ("g", "y", "a", "known failure"), ("g", "y", "b", "skipped")])
    assert lines[0].startswith("robustness sweep: 2 public functions x 2 bad-input kinds = 4 calls; "
                               "1 correct, 1 failed, 1 known failures")


def _overflows(x, y, *, mode="a", k=2):
    np.zeros(1, np.int64)[0] = k  # OverflowError: Python int too large to convert to C long
    return _good(x, y, mode=mode, k=min(k, 100))


def _refuses_saturating(x, y, *, mode="a", k=2):
    if k > 100:
        raise ValueError(f"k must be <= 100, got {k}")
    return _good(x, y, mode=mode, k=k)


def test_the_sweep_flags_overflow_and_refused_saturating_options():
    """Issue 18 item 7: a valid int beyond int64 must never raise OverflowError, and one that
    only saturates (a dilation beyond the frame) must work."""
    ok, detail = S.check(_recipe(_overflows), "k", "beyond int64")
    assert not ok and "OverflowError" in detail, detail
    rec = _recipe(_refuses_saturating)
    assert S.check(rec, "k", "beyond int64")[0]  # a named refusal is fine...
    rec.saturates = {"k": "k only saturates"}
    ok, detail = S.check(rec, "k", "beyond int64")  # ...unless the value is valid
    assert not ok and "a valid value (k only saturates)" in detail, detail


def test_the_sweep_wants_guards_named_in_named_guard_modules(monkeypatch):
    """Issue 18 item 9: in NAMED_GUARDS modules a memory guard naming only an internal
    buffer fails the huge kind."""
    def _names_buffer(x, y, *, mode="a", k=2):
        check_alloc((k, k, k), "the scratch buffer")
        return _good(x, y, mode=mode, k=min(k, 100))
    rec = _recipe(_names_buffer)
    assert S.check(rec, "k", "huge")[0]  # outside NAMED_GUARDS: the limit's name suffices
    monkeypatch.setattr(S, "NAMED_GUARDS", ("fake.",))
    ok, detail = S.check(rec, "k", "huge")
    assert not ok and "does not name k" in detail, detail
