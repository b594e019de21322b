"""One resolver for a user's ``padding``: per spatial axis, a ``(before, after)`` pair.

Shared by the convolutions and the pools so that every op spells padding the same way.

Accepted spellings (``nd`` spatial axes)
----------------------------------------
``int p``
    ``p`` before and after on every axis (PyTorch).
tuple of ``nd`` ints ``(p_h, p_w)``
    symmetric per axis (PyTorch).
tuple of ``nd`` pairs ``((top, bottom), (left, right))`` (1-D: ``((left, right),)``)
    explicit per side: JAX's ``lax.conv_general_dilated`` padding pairs. Entries may mix ints
    and pairs (``(1, (0, 2))``); a NumPy array of shape ``(nd, 2)`` is read as pairs.
``"valid"``
    no padding (PyTorch, TensorFlow ``VALID``, ONNX ``auto_pad="VALID"``).
``"same"`` (alias ``"same_upper"``)
    TensorFlow ``SAME`` / ONNX ``SAME_UPPER`` for every stride: output size ``ceil(size /
    stride)``, total padding ``max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)``
    split ``total // 2`` before and the rest (the extra pixel of an odd total) after. For
    stride 1 this is PyTorch's ``padding="same"``.
``"same_lower"``
    ONNX ``SAME_LOWER``: the same total, the extra pixel before.

Mapping other frameworks' padding onto lmref
--------------------------------------------
* ONNX ``pads`` is ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` (all begins, then all
  ends): pass ``tuple(zip(pads[:nd], pads[nd:]))``. ``auto_pad`` ``SAME_UPPER`` -> ``"same"``,
  ``SAME_LOWER`` -> ``"same_lower"``, ``VALID`` -> ``"valid"``, ``NOTSET`` -> the ``pads``.
* JAX padding pairs ``[(lo_h, hi_h), (lo_w, hi_w)]`` are lmref's pairs as they are;
  ``"SAME"`` -> ``"same"``, ``"SAME_LOWER"`` -> ``"same_lower"``, ``"VALID"`` -> ``"valid"``.
  (Negative JAX padding, which crops, is refused: crop the input instead.)
* TensorFlow ``padding="SAME"`` -> ``"same"``, ``"VALID"`` -> ``"valid"``; explicit
  ``[[0, 0], [t, b], [l, r], [0, 0]]`` (NHWC) -> ``((t, b), (l, r))``.
* ``torch.nn.functional.pad(x, (l, r, t, b))`` (last axis first) -> ``((t, b), (l, r))``.
"""
from __future__ import annotations

import numbers

import numpy as np

from lmref._validation import INT64_MAX, _describe, as_int

__all__: list[str] = []  # private module

#: the strings a ``padding`` may be, and the side that gets the extra pixel of an odd total
SAME_SPLIT = {"same": "after", "same_upper": "after", "same_lower": "before"}
PADDING_STRINGS = ("valid",) + tuple(SAME_SPLIT)

_AXES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def same_pads(size: int, kernel_size: int, stride: int = 1, dilation: int = 1, *,
              extra: str = "after") -> tuple[int, int]:
    """``(before, after)`` of ``"same"`` padding along one axis (exact Python ints).

    Output size ``ceil(size / stride)``; ``extra="after"`` (TensorFlow, ONNX ``SAME_UPPER``)
    or ``"before"`` (ONNX ``SAME_LOWER``) says where the extra pixel of an odd total goes.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)
    small, large = total // 2, total - total // 2
    return (small, large) if extra == "after" else (large, small)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _expected(nd: int) -> str:
    pair = "((top, bottom), (left, right))" if nd == 2 else \
        "((left, right),)" if nd == 1 else f"{nd} (before, after) pairs"
    return (f"an int, a tuple of {nd} ints, per-side pairs {pair} or one of "
            f"{PADDING_STRINGS}")


def resolve_padding(padding, nd: int, *, sizes=None, kernel_sizes=None, strides=None,
                    dilations=None, name: str = "padding", maximum=INT64_MAX,
                    strings=PADDING_STRINGS) -> tuple[tuple[int, int], ...]:
    """Per-axis ``(before, after)`` padding (Python ints >= 0) from any accepted spelling.

    Parameters
    ----------
    padding
        See the module docstring.
    nd : int
        Number of spatial axes.
    sizes, kernel_sizes, strides, dilations : sequences of ``nd`` ints
        Needed only for the ``"same"`` strings (dilations default to 1).
    name : str
        The argument's name in error messages.
    maximum : int or None
        Upper bound of each entry (``None``: any int; the caller clamps).
    strings : tuple of str
        The strings this op accepts (e.g. ``("valid",)`` for an op without ``"same"``).

    Raises
    ------
    TypeError, ValueError
        Naming ``name``, what was expected and what was received.
    """
    if isinstance(padding, str):
        if padding not in strings:
            raise ValueError(f"{name} must be one of {tuple(strings)} or numbers (an int, a "
                             f"tuple of {nd} ints or per-side pairs), got {padding!r}")
        if padding == "valid":
            return ((0, 0),) * nd
        if sizes is None or kernel_sizes is None or strides is None:
            raise ValueError(f"{name}={padding!r} needs the input, kernel and stride sizes")
        dilations = (1,) * nd if dilations is None else dilations
        return tuple(same_pads(int(n), int(k), int(s), int(d), extra=SAME_SPLIT[padding])
                     for n, k, s, d in zip(sizes, kernel_sizes, strides, dilations))
    if isinstance(padding, np.ndarray):
        if padding.ndim == 0:
            padding = padding.item()
        elif padding.ndim == 2 and padding.shape == (nd, 2):
            padding = [tuple(row) for row in padding.tolist()]
        elif padding.ndim == 1:
            padding = padding.tolist()
        else:
            raise ValueError(f"{name} must be {_expected(nd)}; an array must have shape ({nd},) "
                             f"or ({nd}, 2), got {_describe(padding)}")
    if _is_int(padding) or isinstance(padding, numbers.Real) and not isinstance(padding, bool):
        p = as_int(padding, name, minimum=0, maximum=maximum)
        return ((p, p),) * nd
    if not isinstance(padding, (tuple, list)):
        raise TypeError(f"{name} must be {_expected(nd)}, got {_describe(padding)}")
    if len(padding) != nd:
        hint = (f" (a 1-D per-side pair is written (({padding[0]!r}, {padding[1]!r}),))"
                if nd == 1 and len(padding) == 2 else "")
        raise ValueError(f"{name} must be {_expected(nd)}: {nd} entr{'y' if nd == 1 else 'ies'}"
                         f" (one per spatial axis), got {len(padding)}: {padding!r}{hint}")
    out = []
    for i, entry in enumerate(padding):
        where = f"{name}[{i}]"
        if isinstance(entry, np.ndarray):
            entry = entry.item() if entry.ndim == 0 else entry.tolist()
        if isinstance(entry, (tuple, list)):
            if len(entry) != 2:
                raise ValueError(f"{where} must be an int or a (before, after) pair, got "
                                 f"{entry!r}")
            out.append(tuple(as_int(v, f"{where}[{j}]", minimum=0, maximum=maximum)
                             for j, v in enumerate(entry)))
        elif isinstance(entry, (str, bytes)) or entry is None:
            raise TypeError(f"{where} must be an int or a (before, after) pair of ints, got "
                            f"{_describe(entry)}")
        else:
            p = as_int(entry, where, minimum=0, maximum=maximum)
            out.append((p, p))
    return tuple(out)


def onnx_pads(pads, nd: int) -> tuple[tuple[int, int], ...]:
    """lmref's per-side pairs from ONNX ``pads = [x1_begin, ..., xn_begin, x1_end, ...]``."""
    pads = [int(p) for p in pads]
    if len(pads) != 2 * nd:
        raise ValueError(f"ONNX pads must have 2 * {nd} entries (all begins, then all ends), "
                         f"got {len(pads)}: {pads}")
    return tuple(zip(pads[:nd], pads[nd:]))


def axis_names(nd: int) -> tuple[str, ...]:
    return _AXES.get(nd, tuple(f"axis {i}" for i in range(nd)))
