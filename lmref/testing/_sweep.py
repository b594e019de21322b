"""Robustness sweep machinery for lmref's own tests (private).

* :func:`public_functions`: every function named in a family module's ``__all__``.
* :func:`recipes`: how to call each with valid arguments: registry ops' ``example`` (and their
  backward with a matching ``grad_out``), plus :data:`MANUAL` for functions the registry does
  not cover.
* :func:`cases` / :func:`check`: each bad-input kind applied to each argument, and the verdict
  (works correctly, or raises ``ValueError``/``TypeError`` naming the argument; never another
  exception, a numba error, a modified input or an output aliasing an input).
* ``python -m lmref.testing._sweep worker``: a JSON-lines worker that runs checks in a separate
  process (so a hang or a crash cannot take the test session down); ``... hashes``: a digest
  of every recipe's outputs (the determinism tests compare them across thread counts);
  ``... threads``: the same digests computed serially and from concurrent Python threads.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lmref import registry

__all__: list[str] = []  # private

#: a size that no guard should let through: every allocation it drives is astronomically big
HUGE = 10**12 + 1
#: a valid integer option no int64 holds (a stride or dilation that only saturates): it must
#: work or be refused by name, never raise OverflowError from NumPy or numba
BEYOND_INT64 = 2**63
#: modules whose memory guards are known to name the argument that makes an allocation huge
#: (issue 18 item 9): there a "huge" refusal that names only the limit or an internal buffer
#: fails. Extend it as families fix their messages; "lmref." once every family does.
NAMED_GUARDS = ("lmref.motion.", "lmref.temporal.")
#: numba's threading layer that is not thread-safe itself (tests/test_threads.py runs the
#: ``threads`` sweep under it in a subprocess as well as under the default layer)
UNSAFE_THREADING_LAYER = "workqueue"

# --- public functions and how to call them -----------------------------------------------------


def family_modules() -> dict:
    mods = {}
    for fam in registry.FAMILIES:
        try:
            mods[fam] = importlib.import_module(fam)
        except ModuleNotFoundError as exc:
            if exc.name != fam:
                raise
    return mods


def public_functions() -> dict[str, Callable]:
    """``"lmref.family.name" -> function`` for every function in a family's ``__all__``."""
    out = {}
    for fam, mod in family_modules().items():
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if inspect.isfunction(obj):
                out[f"{fam}.{name}"] = obj
    return out


@dataclass
class Recipe:
    """How to call ``fn`` validly: ``make(rng) -> (args, kwargs)`` (fresh objects every call).

    ``nan_ok``: why a NaN-filled input may legitimately give a NaN-free result: a reason for
    every argument (str), or ``{argument: reason}``.
    ``skip``: kinds that do not apply, with the reason.
    ``saturates``: integer options whose every value beyond some size gives the same result
    (a dilation or block larger than the frame), ``{argument: why}``: there a value beyond
    int64 must work, not be refused.
    """

    qualname: str
    fn: Callable
    make: Callable
    nan_ok: str | dict = ""
    skip: dict = field(default_factory=dict)
    saturates: dict = field(default_factory=dict)
    source: str = "manual"


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _registry_recipes(funcs) -> dict[str, Recipe]:
    out = {}
    for op in registry.ops().values():
        if not op.example:
            continue
        example = op.get("example")
        cpu = op.get("cpu")
        q = f"{cpu.__module__}.{cpu.__name__}"
        if q in funcs:
            out[q] = Recipe(q, cpu, example, source=f"registry:{op.name}")
        if op.backward:
            bwd = op.get("backward")
            qb = f"{bwd.__module__}.{bwd.__name__}"
            if qb in funcs:
                out[qb] = Recipe(qb, bwd, _backward_maker(cpu, example),
                                 source=f"registry:{op.name} backward")
    return out


def _backward_maker(cpu, example):
    def make(rng):
        args, kw = example(rng)
        out = cpu(*args, **kw)
        g_rng = np.random.default_rng(7)
        g = tuple(g_rng.standard_normal(np.shape(o)) for o in _tuple(out))
        return (g if isinstance(out, tuple) else g[0], *args), kw
    return make


def recipes() -> dict[str, Recipe]:
    """A recipe for every public function that has one (see :func:`missing_recipes`)."""
    funcs = public_functions()
    out = _registry_recipes(funcs)
    for q, entry in MANUAL.items():
        if q not in funcs:
            continue
        make, opts = (entry, {}) if callable(entry) else entry
        if q in out:  # a registered function: the entry only adds options
            out[q] = dataclasses.replace(out[q], **opts)
        else:
            out[q] = Recipe(q, funcs[q], make, **opts)
    return dict(sorted(out.items()))


def missing_recipes() -> list[str]:
    have = recipes()
    return sorted(q for q in public_functions() if q not in have)


# --- bad-input kinds ---------------------------------------------------------------------------

# Bad-input kinds, name -> category; what :func:`check` accepts per category:
#   refuse: a ValueError/TypeError naming the argument (working is a failure)
#   identical / identical-or-refuse: works with a bitwise identical result (or refuses, for lists)
#   same-values(-or-refuse): works like the float64 array of the same values (or refuses)
#   shape: refuses (naming any argument), or works as a leading batch axis of 1 would
#   empty: refuses, or returns an empty result
#   nan: refuses, or NaN shows in a float result (unless the recipe's nan_ok excuses it)
#   huge: refuses (ValueError, memory guard), or returns less than 1 GiB
#   huge-valid: like huge, but a refusal must name the argument itself (not only the limit)
#   (huge, in the modules of NAMED_GUARDS: a refusal must name the argument too)
#   no-crash: refuses cleanly or works (no other exception, numba error, hang or crash)
# Every call, whatever the kind: inputs unmodified, outputs not aliasing inputs.
ARRAY_KINDS = {
    "ndim+1": "shape", "ndim-1": "shape", "empty": "empty", "zero-size spatial": "empty",
    "int dtype": "same-values", "float32": "same-values", "float16": "same-values",
    "bool dtype": "refuse", "complex dtype": "refuse", "object dtype": "refuse",
    "string dtype": "refuse", "a string": "refuse", "None": "refuse",
    "non-contiguous": "identical", "negative strides": "identical", "Fortran order": "identical",
    "byte-swapped": "identical", "read-only": "identical", "nested list": "identical-or-refuse",
    "all NaN": "nan", "one NaN": "no-crash", "one Inf": "no-crash",
}
MASK_KINDS = {
    "ndim+1": "shape", "ndim-1": "shape", "empty": "empty", "float 0/1": "same-values-or-refuse",
    "complex dtype": "refuse", "string dtype": "refuse", "a string": "refuse",
    "non-contiguous": "identical", "negative strides": "identical", "read-only": "identical",
    "nested list": "identical-or-refuse",
}
INT_OPTION_KINDS = {"huge": "huge", "beyond int64": "huge-valid", "non-integer": "refuse",
                    "a string": "refuse", "negative": "no-crash"}
FLOAT_OPTION_KINDS = {"NaN": "no-crash", "Inf": "no-crash", "a string": "refuse"}
STR_OPTION_KINDS = {"unknown choice": "refuse", "a float": "refuse"}
TUPLE_OPTION_KINDS = {"huge": "huge", "beyond int64": "huge-valid", "negative": "no-crash",
                      "one more entry": "no-crash", "non-integer": "refuse"}
#: huge-but-valid windows (issue 18): ``kernel_size`` HUGE with ``padding`` HUGE // 2 (PyTorch's
#: largest): a valid call with a small output that must neither hang nor overflow
HUGE_WINDOW = "huge, half padding"


def _arg_names(fn, args) -> list[str]:
    params = list(inspect.signature(fn).parameters.values())
    names = []
    for i in range(len(args)):
        if i < len(params) and params[i].kind in (params[i].POSITIONAL_ONLY,
                                                   params[i].POSITIONAL_OR_KEYWORD):
            names.append(params[i].name)
        else:
            star = next((p.name for p in params if p.kind == p.VAR_POSITIONAL), "args")
            names.append(f"{star}")
    return names


def _slots(recipe: Recipe):
    """``(position, name, value)`` of every argument: positions are ints or kwarg names."""
    args, kw = recipe.make(np.random.default_rng(0))
    return _slots_of(recipe.fn, list(args), kw)


def _defaults(fn) -> dict:
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.default is not inspect.Parameter.empty}


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _kinds_for(value, default) -> dict:
    if isinstance(value, np.ndarray):
        if value.dtype == np.bool_:
            return MASK_KINDS
        kinds = dict(ARRAY_KINDS)
        if value.dtype.kind in "iu":
            for k in ("int dtype", "all NaN", "one NaN", "one Inf"):
                kinds.pop(k)
        if default is None:
            kinds.pop("None")
        if value.ndim < 1:
            for k in ("ndim-1", "empty", "zero-size spatial"):
                kinds.pop(k)
        if value.ndim < 2:
            kinds.pop("Fortran order")
        return kinds
    if _is_int(value):
        kinds = dict(INT_OPTION_KINDS)
        if isinstance(default, float):
            kinds.pop("non-integer")
        return kinds
    if isinstance(value, (float, np.floating)):
        return FLOAT_OPTION_KINDS
    if isinstance(value, str):
        return STR_OPTION_KINDS
    if isinstance(value, tuple) and value and all(_is_int(v) for v in value):
        return TUPLE_OPTION_KINDS
    return {}


def cases(recipe: Recipe) -> list[tuple[str, str]]:
    """``(argument name, kind)`` pairs that apply to ``recipe``."""
    defaults = _defaults(recipe.fn)
    out = []
    try:
        slots = _slots(recipe)
    except Exception:  # the valid call cannot even be built: check_clean reports it
        return []
    names = {name for _, name, _ in slots}
    for _, name, value in slots:
        kinds = list(_kinds_for(value, defaults.get(name, inspect.Parameter.empty)))
        if name == "kernel_size" and "padding" in names and _is_int_option(value):
            kinds.append(HUGE_WINDOW)
        for kind in kinds:
            if kind not in recipe.skip and f"{name}:{kind}" not in recipe.skip:
                out.append((name, kind))
    return out


def _is_int_option(value) -> bool:
    return _is_int(value) or isinstance(value, tuple) and bool(value) and all(map(_is_int, value))


def _same_values_view(x: np.ndarray, kind: str):
    if kind == "non-contiguous":
        big = np.zeros(x.shape + (2,), dtype=x.dtype)
        big[..., 0] = x
        return big[..., 0]
    if kind == "negative strides":
        flipped = np.ascontiguousarray(x[(slice(None, None, -1),) * x.ndim])
        return flipped[(slice(None, None, -1),) * x.ndim]
    if kind == "Fortran order":
        return np.asfortranarray(x)
    if kind == "byte-swapped":
        return x.astype(x.dtype.newbyteorder())
    if kind == "read-only":
        y = x.copy()
        y.setflags(write=False)
        return y
    raise KeyError(kind)


def _mutate(value, kind: str):
    """The bad value, and the clean value it should behave like (None: nothing to compare)."""
    if isinstance(value, np.ndarray):
        x = value
        if kind == "ndim+1":
            return x[None], None
        if kind == "ndim-1":
            return x[0], None
        if kind == "empty":
            return x[:0], None
        if kind == "zero-size spatial":
            return x[..., :0], None
        if kind == "int dtype":
            r = np.round(x * 4)
            return r.astype(np.int64), r
        if kind in ("float32", "float16"):
            r = x.astype(kind)
            return r, r.astype(np.float64)
        if kind == "float 0/1":
            return x.astype(np.float64), x
        if kind == "bool dtype":
            return x > 0, None
        if kind == "complex dtype":
            return x + 0j, None
        if kind == "object dtype":
            return x.astype(object), None
        if kind == "string dtype":
            return x.astype(str), None
        if kind == "a string":
            return "abc", None
        if kind == "None":
            return None, None
        if kind == "nested list":
            return x.tolist(), x
        if kind == "all NaN":
            return np.full(x.shape, np.nan), None
        if kind in ("one NaN", "one Inf"):
            y = x.astype(np.float64, copy=True)
            y.flat[y.size // 2] = np.nan if kind == "one NaN" else np.inf
            return y, None
        return _same_values_view(x, kind), x
    if kind in ("huge", HUGE_WINDOW):
        return ((HUGE,) * len(value) if isinstance(value, tuple) else HUGE), None
    if kind == "beyond int64":
        return ((BEYOND_INT64,) * len(value) if isinstance(value, tuple) else BEYOND_INT64), None
    if kind == "non-integer":
        return ((2.5,) * len(value) if isinstance(value, tuple) else 2.5), None
    if kind == "negative":
        return ((-1,) * len(value) if isinstance(value, tuple) else -1), None
    if kind == "one more entry":
        return value + (value[-1],), None
    if kind == "a string":
        return "3", None
    if kind == "NaN":
        return math.nan, None
    if kind == "Inf":
        return math.inf, None
    if kind == "unknown choice":
        return "no-such-choice", None
    if kind == "a float":  # neither a choice nor an int (options like padding take both)
        return 1.5, None
    raise KeyError(kind)


# --- running and judging -----------------------------------------------------------------------

@dataclass
class Outcome:
    result: object = None
    exc: BaseException | None = None


def _call(fn, args, kw) -> Outcome:
    try:
        return Outcome(fn(*args, **kw), None)
    except Exception as exc:  # judged by the caller
        return Outcome(None, exc)


def leaves(obj) -> list:
    """Arrays and scalars inside a result (tuples, dataclasses, named tuples, sparse arrays)."""
    if isinstance(obj, np.ndarray) or np.isscalar(obj) or obj is None:
        return [obj]
    if hasattr(obj, "tocsr") and hasattr(obj, "shape"):  # scipy.sparse
        m = obj.tocsr()
        return [np.asarray(m.shape), m.indptr, m.indices, m.data]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [v for f in dataclasses.fields(obj) for v in leaves(getattr(obj, f.name))]
    if isinstance(obj, (tuple, list)):
        return [v for o in obj for v in leaves(o)]
    if isinstance(obj, dict):
        return [v for k in sorted(obj) for v in leaves(obj[k])]
    if callable(obj):
        return []
    return [obj]


def _input_arrays(args, kw) -> list[np.ndarray]:
    out = []
    for v in list(args) + list(kw.values()):
        if isinstance(v, np.ndarray):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += [a for a in v if isinstance(a, np.ndarray)]
    return out


def _snapshot(arrays):
    return [(a, a.copy()) for a in arrays if a.dtype.kind not in "OUS"]


def _modified(snap) -> bool:
    return any(not np.array_equal(a, c, equal_nan=a.dtype.kind in "fc") for a, c in snap)


def _aliases(result, inputs) -> bool:
    outs = [o for o in leaves(result) if isinstance(o, np.ndarray) and o.size]
    for o in outs:
        for a in inputs:
            base = a if a.base is None else a.base
            if isinstance(base, np.ndarray) and np.shares_memory(o, base):
                return True
            if np.shares_memory(o, a):
                return True
    return False


def _equal(a, b) -> bool:
    la, lb = leaves(a), leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype:
                return False
            if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
                return False
        elif isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        elif x != y:
            return False
    return True


def _numba_error(exc) -> bool:
    text = str(exc)
    return type(exc).__module__.startswith("numba") or "nopython" in text \
        or "No implementation of function" in text or "Failed in " in text


def _names(text: str, names) -> bool:
    return any(re.search(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])", text) for n in names)


def _exc_text(exc) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


def _clean_exc_ok(exc, strict_names, loose_names) -> tuple[bool, str]:
    """A ValueError/TypeError from lmref's validation whose message names the argument."""
    if _numba_error(exc):
        return False, f"numba error escaped: {_exc_text(exc)}"
    if not isinstance(exc, (ValueError, TypeError)) or type(exc).__module__.startswith("numpy"):
        return False, f"raised {_exc_text(exc)} (want ValueError/TypeError naming the argument)"
    text = str(exc)
    if _names(text, strict_names):
        return True, f"refused: {_exc_text(exc)}"
    if loose_names and (_names(text, loose_names) or "LMREF_MAX_BYTES" in text):
        return True, f"refused: {_exc_text(exc)}"
    return False, f"message does not name {' or '.join(strict_names)}: {_exc_text(exc)}"


def _float_leaves(result):
    return [o for o in leaves(result) if isinstance(o, np.ndarray) and o.dtype.kind == "f"] + \
        [np.asarray(o) for o in leaves(result) if isinstance(o, float)]


def _has_size_zero(result) -> bool:
    arrs = [o for o in leaves(result) if isinstance(o, np.ndarray)]
    return bool(arrs) and any(a.size == 0 for a in arrs)


_CLEAN: dict = {}

#: status of :func:`check` when the valid call itself fails (the recipe or the function is broken)
CLEAN_FAILS = "clean call fails"


def check_clean(recipe: Recipe) -> tuple[bool, str]:
    """The valid call: works, float results are float64, inputs untouched, no aliasing."""
    args, kw = recipe.make(np.random.default_rng(0))
    inputs = _input_arrays(args, kw)
    snap = _snapshot(inputs)
    out = _call(recipe.fn, args, kw)
    if out.exc is not None:
        return False, f"{CLEAN_FAILS}: {_exc_text(out.exc)}"
    if _modified(snap):
        return False, "modified its input"
    if _aliases(out.result, inputs):
        return False, "output shares memory with an input"
    odd = [o.dtype for o in leaves(out.result) if isinstance(o, np.ndarray)
           and o.dtype.kind == "f" and o.dtype != np.float64]
    if odd:
        return False, f"floating results must be float64, got {odd}"
    return True, "works"


def check(recipe: Recipe, name: str, kind: str) -> tuple[bool, str]:
    """Call ``recipe`` with ``kind`` applied to argument ``name``; ``(ok, what happened)``.

    When the valid call itself fails, returns ``(False, "clean call fails: ...")``.
    """
    fn = recipe.fn
    key = (recipe.qualname, id(recipe))
    if key not in _CLEAN:
        _CLEAN[key] = check_clean(recipe)
    clean_ok, clean_detail = _CLEAN[key]
    if not clean_ok and clean_detail.startswith(CLEAN_FAILS):
        return False, clean_detail
    args, kw = recipe.make(np.random.default_rng(0))
    args = list(args)
    slot, value = next((pos, v) for pos, n, v in _slots_of(fn, args, kw) if n == name)
    defaults = _defaults(fn)
    category = "huge" if kind == HUGE_WINDOW else \
        _kinds_for(value, defaults.get(name, inspect.Parameter.empty))[kind]
    bad, like = _mutate(value, kind)
    bad_args, bad_kw = list(args), dict(kw)
    _put(bad_args, bad_kw, slot, bad)
    if kind == HUGE_WINDOW:  # the padding that keeps the huge window valid
        pad_slot = next(pos for pos, n, _ in _slots_of(fn, args, kw) if n == "padding")
        _put(bad_args, bad_kw, pad_slot, HUGE // 2)
    params = list(inspect.signature(fn).parameters)
    inputs = _input_arrays(bad_args, bad_kw)
    snap = _snapshot(inputs)
    before = _specialisations()
    out = _call(fn, bad_args, bad_kw)
    if _modified(snap):
        return False, "modified its input"
    for kernel in _respecialised(before, _specialisations()):
        EXTRA_SPECIALISATIONS.setdefault(kernel, f"{recipe.qualname}({name}=<{kind}>)")
    if out.exc is None and _aliases(out.result, inputs):
        return False, "output shares memory with an input"
    if category == "huge" and recipe.qualname.startswith(NAMED_GUARDS):
        category = "huge-valid"
    loose = params if category in ("shape", "empty", "huge", "no-crash", "same-values",
                                   "same-values-or-refuse", "nan") else []
    if out.exc is not None:
        if category in ("identical",):
            return False, f"refused a valid array layout: {_exc_text(out.exc)}"
        if kind == "beyond int64" and name in recipe.saturates:
            return False, (f"refused {name}={bad!r}, a valid value ({recipe.saturates[name]}): "
                           f"{_exc_text(out.exc)}")
        return _clean_exc_ok(out.exc, [name], loose)
    # it worked: is the result right?
    if category == "refuse":
        return False, f"accepted {kind} for {name} (want a TypeError/ValueError naming it)"
    if category in ("identical", "identical-or-refuse", "same-values", "same-values-or-refuse"):
        ref_args, ref_kw = recipe.make(np.random.default_rng(0))
        ref_args = list(ref_args)
        _put(ref_args, ref_kw, slot, like)
        ref = _call(fn, ref_args, ref_kw)
        if ref.exc is not None:
            return False, f"accepted {kind} but the float64 equivalent raised {_exc_text(ref.exc)}"
        if not _equal(out.result, ref.result):
            return False, f"result differs from the clean input's ({kind} of {name})"
        return True, "works, identical result"
    if category == "shape":
        return _check_shape_kind(recipe, slot, value, kind, out.result)
    if category == "empty":
        if _has_size_zero(out.result):
            return True, "works, empty result"
        return False, f"accepted {kind} {name} and returned a non-empty result"
    if category == "nan":
        floats = _float_leaves(out.result)
        excused = recipe.nan_ok if isinstance(recipe.nan_ok, str) else recipe.nan_ok.get(name)
        if not floats or any(np.isnan(f).any() for f in floats) or excused:
            return True, "works, NaN propagates" if floats else "works (no float output)"
        return False, f"NaN-filled {name} gave a NaN-free result (silently absorbed)"
    if category in ("huge", "huge-valid"):
        total = sum(o.nbytes for o in leaves(out.result) if isinstance(o, np.ndarray))
        return total < 2**30, f"works with {bad!r}: {total} bytes of output"
    return True, "works"


#: modules whose numba kernels are watched for extra specialisations
KERNEL_MODULES = ("lmref.",)


def _dispatchers():
    """numba dispatchers defined in loaded lmref modules (by identity)."""
    out = {}
    for mod_name, mod in list(sys.modules.items()):
        if not mod_name.startswith(KERNEL_MODULES) or mod is None:
            continue
        for attr, obj in list(vars(mod).items()):
            if hasattr(obj, "signatures") and hasattr(obj, "py_func"):
                out[id(obj)] = (f"{mod_name}.{attr}", obj)
    return out


#: kernel -> the first call (function, argument, kind) that gave it another specialisation
EXTRA_SPECIALISATIONS: dict[str, str] = {}


def audit_specialisations() -> tuple[bool, str]:
    """No bad-input call gave a numba kernel another specialisation (the lead's rule: kernels
    only ever see writeable float64 C-contiguous arrays and int64 scalars, so each compiles
    once); else which kernels, their signatures, and the first call that added one.

    Only calls made after the valid ones count: a kernel called from other kernels shows its
    signatures only when its callers were compiled in this process rather than loaded from
    numba's cache, so valid-call signatures depend on the cache's state.
    """
    lines = []
    for key, (name, obj) in sorted(_dispatchers().items(), key=lambda kv: kv[1][0]):
        if name in EXTRA_SPECIALISATIONS:
            sigs = "; ".join("(" + ", ".join(str(t) for t in sig) + ")"
                             for sig in obj.signatures)[:400]
            lines.append(f"{name}: {len(obj.signatures)} specialisations (the extra one from "
                         f"{EXTRA_SPECIALISATIONS[name]}): {sigs}")
    if lines:
        return False, "\n".join(lines)
    return True, "no bad-input call added a kernel specialisation"


def _specialisations() -> dict:
    return {key: (name, len(obj.signatures)) for key, (name, obj) in _dispatchers().items()}


def _respecialised(before: dict, after: dict) -> list[str]:
    """Kernels that had a specialisation and gained another."""
    return sorted(name for key, (name, n) in after.items()
                  if key in before and 0 < before[key][1] < n)


def _slots_of(fn, args, kw):
    """``(slot, name, value)`` per argument; a list of arrays (e.g. ``compose(weights)``) is
    probed through its first element, slot ``(position, 0)``."""
    names = _arg_names(fn, args)
    out = []
    for pos, name, value in [(i, n, v) for i, (n, v) in enumerate(zip(names, args))] + \
            [(k, k, v) for k, v in kw.items()]:
        if isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            out.append(((pos, 0), name, value[0]))
        else:
            out.append((pos, name, value))
    return out


def _put(args: list, kw: dict, slot, value) -> None:
    """Set the argument at ``slot`` (see :func:`_slots_of`) in place."""
    if isinstance(slot, tuple):
        pos, i = slot
        container = args if isinstance(pos, int) else kw
        seq = list(container[pos])
        seq[i] = value
        container[pos] = seq
    elif isinstance(slot, int):
        args[slot] = value
    else:
        kw[slot] = value


def _check_shape_kind(recipe, slot, value, kind, result):
    """ndim +- 1 accepted: only fine as a batch axis that behaves like one."""
    args, kw = recipe.make(np.random.default_rng(0))
    args = list(args)
    if kind == "ndim+1":
        ref = _call(recipe.fn, args, kw)
        expect = [o[None] if isinstance(o, np.ndarray) else o for o in leaves(ref.result)]
        got = leaves(result)
        if ref.exc is None and len(got) == len(expect) and all(
                _equal(g, e) or _equal(g, r) for g, e, r in zip(got, expect, leaves(ref.result))):
            return True, "works, as a leading batch axis of 1"
        return False, "accepted an extra leading axis but the result is not the clean one with " \
                      "that axis"
    _put(args, kw, slot, value[:1])
    ref = _call(recipe.fn, args, kw)
    if ref.exc is not None:
        return False, f"accepted x[0] but x[:1] raised {_exc_text(ref.exc)}"
    got, want = leaves(result), leaves(ref.result)
    arrays = [(g, w) for g, w in zip(got, want) if isinstance(w, np.ndarray)]
    # each array result must be the batch-of-one result without its leading axis of 1 (a result
    # of another shape means the missing axis was broadcast or misread)
    def batch_of_one(g, w):
        return bool(w.ndim) and w.shape[0] == 1 and np.shape(g) == w.shape[1:] \
            and _equal(np.asarray(g), w[0])

    # at least one array result is the batch-of-one result without its leading axis of 1 and
    # the others (e.g. a per-pixel mask) are unchanged: anything else means the missing axis was
    # broadcast or misread
    ok = len(got) == len(want) and any(batch_of_one(g, w) for g, w in arrays) and all(
        batch_of_one(g, w) or _equal(g, w) for g, w in zip(got, want))
    if ok:
        return True, "works, as an input without the batch axis"
    return False, "accepted one axis fewer but the result is not the batch-of-one result"


# --- the worker --------------------------------------------------------------------------------

def _limit_memory(gib: float) -> None:
    try:
        import resource
        lim = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    except (ImportError, ValueError, OSError):
        pass


def worker(stdin=sys.stdin, stdout=sys.stdout) -> None:
    """JSON lines in: ``{"fn", "arg", "kind"}``; out: ``{"ok", "detail"}``."""
    table = recipes()
    for line in stdin:
        req = json.loads(line)
        try:
            if req["kind"] == "audit":
                ok, detail = audit_specialisations()
            else:
                rec = table[req["fn"]]
                ok, detail = check_clean(rec) if req["kind"] == "clean" else \
                    check(rec, req["arg"], req["kind"])
        except Exception as exc:  # a bug in the sweep itself: report it, keep serving
            ok, detail = False, f"sweep error: {_exc_text(exc)}"
        stdout.write(json.dumps({"ok": bool(ok), "detail": detail}) + "\n")
        stdout.flush()


def digest(result) -> str:
    h = hashlib.sha256()
    for leaf in leaves(result):
        if isinstance(leaf, np.ndarray):
            h.update(str((leaf.shape, leaf.dtype.str)).encode())
            h.update(np.ascontiguousarray(leaf).tobytes())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()


def hashes(names=None) -> dict[str, str]:
    """Digest of every recipe's result (seed 0); an exception's type stands for its result."""
    out = {}
    for q, rec in recipes().items():
        if names is not None and q not in names:
            continue
        out[q] = _digest_call(rec)
    return out


def _digest_call(rec: Recipe) -> str:
    args, kw = rec.make(np.random.default_rng(0))
    res = _call(rec.fn, args, kw)
    return digest(res.result) if res.exc is None else f"raised {type(res.exc).__name__}"


def threaded_hashes(workers: int = 4, repeats: int = 4) -> dict:
    """Digests of every recipe computed from ``workers`` Python threads calling all public
    functions concurrently (``repeats`` calls each, interleaved; the first calls also load or
    compile the kernels concurrently), then serially."""
    from concurrent.futures import ThreadPoolExecutor
    table = recipes()
    jobs = [q for q in table for _ in range(repeats)]
    np.random.default_rng(0).shuffle(jobs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digests = list(pool.map(lambda q: _digest_call(table[q]), jobs))
    serial = {q: _digest_call(rec) for q, rec in table.items()}
    threaded: dict[str, list[str]] = {}
    for q, d in zip(jobs, digests):
        threaded.setdefault(q, []).append(d)
    import numba
    return {"serial": serial, "threaded": threaded, "layer": numba.threading_layer()}


# --- recipes for public functions the registry does not cover ----------------------------------
# Each entry: qualname -> make(rng) or (make, {"nan_ok": ..., "skip": {...}}); an entry for a
# registered function only adds options. Keep arrays tiny: the sweep calls each ~40 times.

def _r(rng, *shape):
    return rng.standard_normal(shape)


def _flow(rng, h, w, *batch):
    """A flow with fractional parts in [0.15, 0.85]: no sample on a kink."""
    shape = (*batch, h, w, 2)
    return rng.integers(-2, 3, size=shape) + rng.uniform(0.15, 0.85, size=shape)


def _ar_kernel(rng, c, k, ndim=2):
    """Diagonally dominant AR kernels: invertible on any grid."""
    a = rng.uniform(-1, 1, size=(c,) + (k,) * ndim)
    centre = (slice(None),) + (k // 2,) * ndim
    a[centre] = 0.0
    a *= 0.5 / np.abs(a).reshape(c, -1).sum(axis=1).reshape((c,) + (1,) * ndim)
    a[centre] = 1.0
    return a


def _ar_solve_backward_args(rng):
    from lmref.arma import ar_solve
    t, a = _r(rng, 1, 2, 5, 5), _ar_kernel(rng, 2, 3)
    return (_r(rng, 1, 2, 5, 5), ar_solve(t, a), a), {}


def _halve(image):
    """A user's feature extractor: 2 x 2 mean pooling (stride 2)."""
    im = np.asarray(image, np.float64)
    h, w = im.shape[-2] // 2, im.shape[-1] // 2
    return im[..., :2 * h, :2 * w].reshape(im.shape[:-2] + (h, 2, w, 2)).mean(axis=(-3, -1))


_BIAS_GRADIENT = {"bias": "the gradients do not depend on the bias' values"}

_DILATION_SATURATES = {"dilation": "a dilation >= max(H, W) leaves the centre displacement only"}

_GRADIENT_IGNORES_VALUES = {"nan_ok": "the gradient of a sum or difference does not depend on "
                                      "the operands' values"}

MANUAL: dict = {
    # lmref.motion
    "lmref.motion.motion_matrix": lambda rng: (
        (_flow(rng, 4, 5),), {"mode": "bilinear", "boundary": "zeros", "channels": 2}),
    "lmref.motion.valid_mask": lambda rng: ((_flow(rng, 4, 5),), {"shape": (2, 4, 5)}),
    "lmref.motion.affine_flow": lambda rng: (
        ((6, 7),), {"translation": (1.5, -0.5), "rotation": 10.0, "scale": (1.1, 0.9),
                    "shear": (5.0, 0.0)}),
    "lmref.motion.block_vectors_to_flow": lambda rng: (
        (_r(rng, 2, 3, 2),), {"block_size": 4, "shape": (7, 10)}),
    "lmref.motion.scale_flow": lambda rng: ((_flow(rng, 8, 8),), {"stride": 2, "sample": "center"}),
    "lmref.motion.feature_transfer": lambda rng: (
        (_r(rng, 12, 16), np.eye(16)[np.random.default_rng(3).permutation(16)]), {}),
    "lmref.motion.unit_normal_weights": lambda rng: (((3, 2, 3, 3), np.random.default_rng(1)), {}),
    "lmref.motion.noise_gain": lambda rng: ((_r(rng, 3, 2, 3, 3),), {}),
    "lmref.motion.propagate_noise": lambda rng: (
        (_r(rng, 3, 2, 3, 3), 1.5, (2, 6, 6), 3, np.random.default_rng(1)), {}),
    # lmref.temporal
    "lmref.temporal.context_span": lambda rng: ((_r(rng, 1, 3, 2, 4, 4), 2), {"layout": "seed"}),
    "lmref.temporal.context_offsets": lambda rng: ((2,), {"layout": "seed"}),
    "lmref.temporal.arithmetic_features": lambda rng: (  # log-division needs frames + 1 > 0
        (rng.uniform(0.0, 2.0, size=(1, 3, 2, 4, 4)), 2), {"patch_size": 3}),
    "lmref.temporal.local_multiply": (None, {"saturates": _DILATION_SATURATES}),
    "lmref.temporal.local_multiply_backward": (None, {"saturates": _DILATION_SATURATES}),
    "lmref.temporal.add_backward": (None, _GRADIENT_IGNORES_VALUES),
    "lmref.temporal.subtract_backward": (None, _GRADIENT_IGNORES_VALUES),
    # lmref.arma
    "lmref.arma.ar_solve_backward": lambda rng: _ar_solve_backward_args(rng),
    "lmref.arma.ar_solve_dense": lambda rng: (
        (_r(rng, 1, 2, 5, 5), _ar_kernel(rng, 2, 3)), {"boundary": "zeros"}),
    "lmref.arma.ar_zeros": lambda rng: ((np.array([0.2, 1.0, 0.3]),), {}),
    "lmref.arma.ar_stability_1d": lambda rng: ((np.array([0.2, 1.0, 0.3]),), {}),
    "lmref.arma.is_stable_1d": lambda rng: ((_ar_kernel(rng, 2, 3, ndim=1),), {}),
    "lmref.arma.is_stable": lambda rng: ((_ar_kernel(rng, 6, 3, ndim=1).reshape(2, 3, 3),), {}),
    "lmref.arma.official_ar_factors": lambda rng: ((_r(rng, 2, 1, 2, 2),), {}),
    "lmref.arma.erf": lambda rng: (
        ([("ar", _ar_kernel(rng, 1, 3))], (1, 7, 7)), {"positions": "centre"}),
    "lmref.arma.erf_radius": (lambda rng: ((rng.uniform(0.1, 1.0, size=(7, 7)),), {}),
                              {"skip": {"erf_map:ndim-1": "1-D ERF maps are valid too"}}),
    "lmref.arma.erf_radius_cnn": lambda rng: ((3, 2), {}),
    "lmref.arma.erf_radius_arma": lambda rng: ((3, 2, 0.5), {}),
    "lmref.arma.erf_trend_table": lambda rng: (
        (), {"depths": (1, 2), "coefficients": (0.0, 0.5), "size": 9}),
    # lmref.conv
    "lmref.conv.conv1d_matrix": lambda rng: (
        ((4, 9), _r(rng, 6, 2, 3)), {"stride": 2, "padding": 1, "groups": 2,
                                    "padding_mode": "reflect"}),
    "lmref.conv.conv2d_matrix": lambda rng: (
        ((3, 5, 6), _r(rng, 4, 3, 3, 2)), {"stride": (2, 1), "padding": 1,
                                          "padding_mode": "circular"}),
    "lmref.conv.conv_output_size": lambda rng: ((7, 3), {"stride": 2, "pad_before": 1,
                                                         "pad_after": 1, "dilation": 1}),
    "lmref.conv.same_padding": lambda rng: ((7, 4), {"stride": 2, "dilation": 1}),
    "lmref.conv.conv1d_backward": (None, {"nan_ok": _BIAS_GRADIENT,
                                    "skip": {"stride:beyond int64": "a stride beyond int64 is valid (one output pixel per axis) but changes the output shape, so the recipe's grad_out no longer fits; tests/test_conv_guards.py covers the backward at such strides"}}),
    "lmref.conv.conv2d_backward": (None, {"nan_ok": _BIAS_GRADIENT,
                                    "skip": {"stride:beyond int64": "a stride beyond int64 is valid (one output pixel per axis) but changes the output shape, so the recipe's grad_out no longer fits; tests/test_conv_guards.py covers the backward at such strides"}}),
    "lmref.conv.conv_transpose1d_backward": (None, {"nan_ok": _BIAS_GRADIENT}),
    "lmref.conv.conv_transpose2d_backward": (None, {"nan_ok": _BIAS_GRADIENT}),
    # lmref.compose
    "lmref.compose.dilate": (lambda rng: ((_r(rng, 2, 3, 3, 3), 2), {}), {"skip": {
        "kernel:ndim-1": "(k,), (kH, kW), (C_out, C_in, k) and (C_out, C_in, kH, kW) are all valid"}}),
    "lmref.compose.compose": lambda rng: (([_r(rng, 3, 2, 3), _r(rng, 4, 3, 3)], (2, 2)), {}),
    "lmref.compose.receptive_field": lambda rng: (((3, 3), (2, 2)), {"dilations": (1, 2)}),
    # lmref.layers
    "lmref.layers.max_pool2d_backward": (None, {"nan_ok": {
        "x": "max pooling routes each window's gradient to one element (NaN counts as the "
             "maximum, as in torch): the gradient stays finite"},
        "skip": {"stride:beyond int64": "a stride beyond int64 is valid (one window per axis) but changes the pooled shape, so the recipe's grad_out no longer fits; tests/test_layers.py checks the backward at such strides with a matching grad_out"}}),
    "lmref.layers.avg_pool2d_backward": (None, {"nan_ok": {
        "x": "the gradient of an average does not depend on the values"},
        "skip": {"stride:beyond int64": "a stride beyond int64 is valid (one window per axis) but changes the pooled shape, so the recipe's grad_out no longer fits; tests/test_layers.py checks the backward at such strides with a matching grad_out"}}),
    "lmref.layers.pool_output_size": lambda rng: ((7, 3, 2, 1), {"dilation": 1, "ceil_mode": True}),
    "lmref.layers.feature_extractor": lambda rng: ((2, 3, 0), {"kernel_size": 3, "pool": "avg"}),
    # lmref.blockmatch
    "lmref.blockmatch.nrmse": lambda rng: (  # convention: swept as a choice (the authors'
        # path: tests/test_blockmatch_authors.py)
        (_r(rng, 2, 5, 6), _r(rng, 2, 5, 6)), {"mask": _r(rng, 5, 6) > -0.5,
                                             "convention": "lmref"}),
    "lmref.blockmatch.psnr": lambda rng: (
        (rng.uniform(0, 255, (5, 6)), rng.uniform(0, 255, (5, 6))),
        {"peak": 255.0, "mask": _r(rng, 5, 6) > -0.5}),
    "lmref.blockmatch.psnr_to_nrmse": lambda rng: ((30.0,), {"peak": 255.0, "levels": 256}),
    "lmref.blockmatch.nrmse_to_psnr": lambda rng: ((0.02,), {"peak": 255.0, "levels": 256}),
    "lmref.blockmatch.compensate": lambda rng: (
        (_r(rng, 2, 4, 4), _flow(rng, 8, 8)), {"stride": 2, "mode": "bilinear"}),
    "lmref.blockmatch.latent_motion_error": lambda rng: (
        (_halve, _r(rng, 8, 8), _flow(rng, 8, 8), 2), {"margin": 0}),
    "lmref.blockmatch.motion_similarity": lambda rng: (
        (_flow(rng, 5, 6), _flow(rng, 5, 6)), {"mask": _r(rng, 5, 6) > -0.5}),
    "lmref.blockmatch.block_match": lambda rng: (
        (_r(rng, 2, 8, 8), _r(rng, 2, 8, 8)), {"block_size": 3, "search_range": 2,
                                             "channels": "sum"}),
    "lmref.blockmatch.displacement_order": lambda rng: ((2,), {}),
}


# --- singular systems: every solver refuses them (issue 18) ------------------------------------
# A solver handed a system without a unique solution must raise ValueError naming the system's
# argument, never return a huge "solution". Each entry: qualname -> (argument, make(a, t_shape)
# -> (args, kwargs)) calling the solver on the singular AR kernel ``a`` with a signal of shape
# ``t_shape`` (2-D: (N, C, H, W)).

def _ar_signal(shape):
    return np.random.default_rng(5).standard_normal(shape)


def _arma_args(a, shape):
    x = _ar_signal(shape)
    w = np.zeros((shape[1], shape[1], 1, 1))
    w[np.arange(shape[1]), np.arange(shape[1])] = 1.0  # identity conv: T = x
    return (x, w, a), {}


def _solver_backward(fn_forward_args):
    def make(a, shape):
        args, kw = fn_forward_args(a, shape)
        return (_ar_signal(shape), *args), kw
    return make


SOLVERS: dict = {
    "lmref.arma.ar_solve": ("a", lambda a, shape: ((_ar_signal(shape), a), {})),
    "lmref.arma.ar_solve_backward": ("a", lambda a, shape: (
        (_ar_signal(shape), _ar_signal(shape), a), {})),
    "lmref.arma.ar_solve_dense": ("a", lambda a, shape: ((_ar_signal(shape), a), {})),
    "lmref.arma._ar_solve_reference": ("a", lambda a, shape: ((_ar_signal(shape), a), {})),
    "lmref.arma.arma2d": ("a", _arma_args),
    "lmref.arma.arma2d_backward": ("a", _solver_backward(_arma_args)),
    "lmref.arma._arma2d_reference": ("a", _arma_args),
    "lmref.arma.erf": ("layers", lambda a, shape: (([("ar", a)], shape[1:]), {})),
}

#: name -> (AR kernel (C, kh, kw), signal shape): zeros of the DFT on the grid, exact or within
#: rounding, and one 1e-14 from singular
SINGULAR_SYSTEMS: dict = {
    "half-cosine-even-grid": (np.array([[[0.5, 1.0, 0.5]]]), (1, 1, 1, 8)),
    "zero-sum": (np.array([[[1.0, -2.0, 1.0]]]), (1, 1, 1, 7)),
    "box-of-3-on-6": (np.array([[[1.0, 1.0, 1.0]]]), (1, 1, 1, 6)),
    "laplacian": (np.array([[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]), (1, 1, 5, 6)),
    "separable-second-channel": (np.stack([np.pad([[1.0]], 1), np.outer([0.5, 1, 0.5],
                                                                        [0.5, 1, 0.5])]),
                                 (1, 2, 4, 6)),
    "near-singular-1e-14": (np.array([[[0.5, 1.0, 0.5 - 1e-14]]]), (1, 1, 1, 8)),
}


def singular_cases() -> list[tuple[str, str]]:
    return [(q, k) for q in SOLVERS for k in SINGULAR_SYSTEMS]


def solver_functions() -> list[str]:
    """Functions that solve an AR system: every arma function taking ``rcond`` (plus the
    registry references), which :data:`SOLVERS` must list."""
    out = []
    for q, fn in public_functions().items():
        if "rcond" in inspect.signature(fn).parameters:
            out.append(q)
    for op in registry.ops().values():
        for attr in ("cpu", "reference", "backward"):
            fn = op.get(attr) if getattr(op, attr, None) else None
            if fn is not None and "rcond" in inspect.signature(fn).parameters:
                out.append(f"{fn.__module__}.{fn.__name__}")
    return sorted(set(out))


def check_singular(qualname: str, system: str) -> tuple[bool, str]:
    """The solver on a singular system: ``ValueError`` naming its argument, or a failure."""
    module, name = qualname.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), name)
    arg, make = SOLVERS[qualname]
    a, shape = SINGULAR_SYSTEMS[system]
    if qualname == "lmref.arma.erf" and shape[2] == 1:  # a 1-D network on (S, L)
        a, shape = a[:, 0], (shape[0], shape[1], shape[3])
    args, kw = make(a.copy(), shape)
    res = _call(fn, args, kw)
    if res.exc is None:
        peak = max((float(np.abs(v).max()) for v in leaves(res.result)
                    if isinstance(v, np.ndarray) and v.size), default=0.0)
        return False, f"returned a 'solution' (max |value| {peak:.3g}) of a singular system"
    text = str(res.exc)
    if isinstance(res.exc, ValueError) and _names(text, [arg]) \
            and ("singular" in text or "not invertible" in text):
        return True, "refused"
    return False, f"raised {_exc_text(res.exc)}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        _limit_memory(float(os.environ.get("LMREF_SWEEP_MAX_GIB", "8")))
        worker()
    elif sys.argv[1:2] == ["hashes"]:
        print(json.dumps(hashes(sys.argv[2:] or None)))
    elif sys.argv[1:2] == ["threads"]:
        print(json.dumps(threaded_hashes()))
    else:
        sys.exit("usage: python -m lmref.testing._sweep worker|hashes [names...]")
