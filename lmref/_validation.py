"""Input validation shared by every family: validate in Python, compute in numba.

Every public function funnels its arguments through these helpers, so bad input produces a
``TypeError``/``ValueError`` that names the argument, what was expected and what was received,
instead of a silent broadcast or a numba typing traceback.
"""
from __future__ import annotations

import math
import numbers
import os
from typing import Sequence

import numpy as np

__all__: list[str] = []  # private module

#: Largest single array lmref will allocate (bytes); override with ``LMREF_MAX_BYTES``.
_DEFAULT_MAX_BYTES = 8 * 2**30

#: Default upper bound of :func:`as_int`: numba and NumPy index with int64. An option that is
#: meaningful beyond it (a stride or dilation that only saturates) passes ``maximum=None`` and
#: clamps to an equivalent int64 value itself.
INT64_MAX = 2**63 - 1

_UNSET = object()

#: NumPy's float64 dtype (arrays of native float64 share this very object)
_FLOAT64 = np.dtype(np.float64)


def _environ_reader(name: str):
    """A function returning ``os.environ.get(name)``, cheaply where the variable is unset.

    ``os.environ.get`` of an unset variable raises and catches a ``KeyError`` inside
    ``Mapping.get`` (about 0.5 us, a tenth of a small convolution). The reader looks the key up
    in the dict that ``os.environ`` keeps in step with every change made through it
    (``os.environ[...] = ...``, ``del``, ``monkeypatch.setenv``), with the key encoded and the
    value decoded as ``os.environ`` itself does: the same answers, read on every call.
    """
    env = os.environ
    try:
        data, key, decode = env._data, env.encodekey(name), env.decodevalue
    except AttributeError:  # an os.environ without CPython's internals
        return lambda: env.get(name)

    def read():
        raw = data.get(key)
        return None if raw is None else decode(raw)
    return read


_max_bytes_setting = _environ_reader("LMREF_MAX_BYTES")


def max_bytes() -> int:
    """The memory guard's limit in bytes: ``LMREF_MAX_BYTES`` (read on every call) or 8 GiB."""
    raw = _max_bytes_setting()
    return _DEFAULT_MAX_BYTES if raw is None else int(raw)


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"array of shape {x.shape} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"[:200]


def is_float64_ready(x, ndim: int | None = None, allow_empty: bool = False) -> bool:
    """Whether :func:`as_float64` would return ``x`` itself: a writeable C-contiguous float64
    ndarray of ``ndim`` dimensions (not empty unless ``allow_empty``). A cheap test, for the
    callers that check several arrays at once on small inputs."""
    if type(x) is np.ndarray and x.dtype is _FLOAT64 and (ndim is None or x.ndim == ndim) \
            and (x.size or allow_empty):
        flags = x.flags
        return flags.c_contiguous and flags.writeable
    return False


def as_float64(x, name: str, *, ndim: int | Sequence[int] | None = None,
               allow_empty: bool = False) -> np.ndarray:
    """Return ``x`` as a new-or-shared C-contiguous float64 array after checking it.

    Accepts real integer and floating arrays (and nested lists of numbers); rejects bool,
    complex, object, string and datetime dtypes with a ``TypeError`` naming ``name``. The
    returned array may share memory with ``x``; callers never write into it.
    """
    if is_float64_ready(x, ndim, allow_empty):
        return x  # what the checks below return for it (small calls: they cost ~1 us)
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be a real array, got {_describe(x)}")
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a real array, got {type(x).__name__} ({exc})") from None
    kind = arr.dtype.kind
    if kind not in "iuf":
        what = {"b": "bool", "c": "complex", "O": "object", "U": "string", "S": "bytes",
                "M": "datetime", "m": "timedelta", "V": "structured"}.get(kind, str(arr.dtype))
        raise TypeError(f"{name} must have a real integer or floating dtype, got {what} "
                        f"({_describe(arr)})")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            exp = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must be {exp}-dimensional, got {arr.ndim}-dimensional "
                             f"{_describe(arr)}")
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} must not be empty, got {_describe(arr)}")
    # np.asarray(order='C'), not np.ascontiguousarray, which turns a 0-d scalar into shape (1,)
    out = np.asarray(arr, dtype=np.float64, order="C")
    # a read-only array would make numba compile a second (readonly) specialisation of every kernel
    return out if out.flags.writeable else out.copy()


def as_int(value, name: str, *, minimum: int | None = None, maximum=_UNSET) -> int:
    """Check that ``value`` is an integer (not bool, not a float) within bounds.

    ``maximum`` defaults to :data:`INT64_MAX` (a named ``ValueError`` instead of an
    ``OverflowError`` from numba or NumPy); ``maximum=None`` returns any Python int.
    """
    if maximum is _UNSET:
        maximum = INT64_MAX
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) \
                and math.isfinite(value) and float(value).is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {_describe(value)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def as_real(value, name: str, *, finite: bool = True) -> float:
    """Check that ``value`` is a real scalar (and finite unless ``finite=False``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            value = value.item()
        else:
            raise TypeError(f"{name} must be a real number, got {_describe(value)}")
    try:
        value = float(value)
    except OverflowError:  # a Python int beyond the float range, e.g. 10**400
        raise ValueError(f"{name} must be a finite real number within the float64 range, "
                         f"got an integer of {len(str(abs(int(value))))} digits") from None
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def as_tuple(value, name: str, n: int, *, minimum: int | None = None,
             maximum=_UNSET) -> tuple[int, ...]:
    """Expand an int or a length-``n`` sequence of ints into an ``n``-tuple of ints.

    A NumPy array must be 0-d (a scalar) or 1-d: ``np.array([[1, 1]])`` is refused rather than
    flattened. ``minimum``/``maximum`` as in :func:`as_int`.
    """
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            value = value.item()
        elif value.ndim != 1:
            raise ValueError(f"{name} must be an int or a 1-d sequence of {n} ints, got "
                             f"{_describe(value)}")
        else:
            value = list(value)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints, got {value!r}")
        return tuple(as_int(v, f"{name}[{i}]", minimum=minimum, maximum=maximum)
                     for i, v in enumerate(value))
    v = as_int(value, name, minimum=minimum, maximum=maximum)
    return (v,) * n


def one_of(value, name: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_shape(arr: np.ndarray, name: str, expected: tuple, what: str = "") -> None:
    """Raise if ``arr.shape != expected`` (``None`` entries in ``expected`` match anything)."""
    ok = arr.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, arr.shape))
    if not ok:
        parts = ["*" if e is None else str(e) for e in expected]
        exp = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape {exp}{extra}, got {arr.shape}")


def check_finite(arr: np.ndarray, name: str) -> None:
    if not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or Inf)")


def check_alloc(shape: Sequence[int], name: str, itemsize: int = 8) -> None:
    """Memory guard: refuse to allocate an array larger than :func:`max_bytes`."""
    n = 1
    for s in shape:
        n *= int(s)
    nbytes = n * itemsize
    if nbytes > max_bytes():
        raise ValueError(f"{name} would need {nbytes / 2**30:.3g} GiB (shape {tuple(shape)}), "
                         f"more than the {max_bytes() / 2**30:.3g} GiB limit "
                         f"(set LMREF_MAX_BYTES to raise it)")


def check_work(nbytes: int, name: str, what: str, *, hint: str | None = None) -> None:
    """Work guard: refuse a call whose work, done piece by piece, adds up to more float64
    data than :func:`max_bytes` (no single allocation is too big, but the call would run for
    hours). The message reads ``"{name} would {what}: N GiB, more than ..."``."""
    if nbytes > max_bytes():
        advice = f"{hint} or set" if hint else "set"
        raise ValueError(f"{name} would {what}: {nbytes / 2**30:.3g} GiB, more than the "
                         f"{max_bytes() / 2**30:.3g} GiB limit on the work of one call "
                         f"({advice} LMREF_MAX_BYTES to raise it)")
