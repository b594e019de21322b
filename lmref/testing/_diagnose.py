"""Diagnosis of mismatch patterns for :func:`lmref.testing.compare`.

Each detector looks for one bug people actually have when porting a layer (a padding that is
off, a kernel origin or flip, grouping, a layout, a sign, a normalisation factor...) and
returns one sentence, or ``None``. Detectors only run after a mismatch was found, on float64
copies, and are cheap enough for feature maps of a few million elements.
"""
from __future__ import annotations

import itertools

import numpy as np

__all__: list[str] = []  # private

_MAX_SHIFT = 2  # shifts of up to this many pixels are recognised
_MAX_CHANNELS_PERMUTED = 512


def _close(x, y, rtol, atol) -> bool:
    if x.shape != y.shape or x.size == 0:
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True))


def spatial_axes(ndim: int) -> tuple[int, ...]:
    """Spatial axes by lmref's layouts: the last one (1-D), the last two otherwise."""
    if ndim == 0:
        return ()
    return (ndim - 1,) if ndim == 1 else (ndim - 2, ndim - 1)


def channel_axis(ndim: int) -> int | None:
    """Channel axis of ``(C, H, W)`` (0) or ``(N, C, ...)`` (1) arrays."""
    if ndim >= 4:
        return 1
    if ndim == 3:
        return 0
    return None


def _edge_distance(shape, axes) -> np.ndarray:
    """Distance (in pixels) of every position of ``shape`` to the nearest edge along ``axes``."""
    dist = None
    for ax in axes:
        n = shape[ax]
        line = np.minimum(np.arange(n), n - 1 - np.arange(n))
        view = [1] * len(shape)
        view[ax] = n
        line = line.reshape(view)
        dist = line if dist is None else np.minimum(dist, line)
    return np.broadcast_to(dist, shape)


def border_width(bad: np.ndarray) -> int | None:
    """Width ``k`` of the thinnest spatial frame holding every mismatch, when it is a frame.

    ``None`` when the mismatches reach the interior (a frame only counts when it leaves an
    interior of at least one pixel along each spatial axis and is at most a quarter of the
    smaller spatial size, so that "border" really means border).
    """
    axes = spatial_axes(bad.ndim)
    if not axes or not bad.any():
        return None
    smallest = min(bad.shape[a] for a in axes)
    if smallest < 3:
        return None
    dist = _edge_distance(bad.shape, axes)
    k = int(dist[bad].max()) + 1
    if k > max(1, smallest // 4) or 2 * k >= smallest:
        return None
    return k


def _sides(bad: np.ndarray, k: int) -> list[str]:
    """Edges (top/bottom/left/right) whose ``k``-strip holds mismatches.

    Strips first exclude the corners (so a bad bottom row does not count as left and right
    too); when only corners are bad, they count for both of their edges.
    """
    axes = spatial_axes(bad.ndim)
    names = {axes[-1]: ("left", "right")}
    if len(axes) == 2:
        names[axes[0]] = ("top", "bottom")
    for corners in (False, True):
        sides = []
        for ax, (lo, hi) in sorted(names.items()):
            n = bad.shape[ax]
            for label, sl in ((lo, slice(0, k)), (hi, slice(n - k, n))):
                idx = [slice(None)] * bad.ndim
                idx[ax] = sl
                if not corners:
                    for other in axes:
                        if other != ax:
                            idx[other] = slice(k, bad.shape[other] - k)
                if bad[tuple(idx)].any():
                    sides.append(label)
        if sides:
            return sides
    return sides


def border_note(bad, **_):
    k = border_width(bad)
    if k is None:
        return None
    sides = _sides(bad, k)
    frame = "one-pixel frame" if k == 1 else f"{k}-pixel frame"
    note = (f"mismatches only on the border ({frame} of the spatial axes, sides: "
            f"{', '.join(sides)}): look at padding (size, mode zeros/reflect/replicate/circular, "
            f"boundary handling)")
    one_sided = [s for s in sides if s in ("right", "bottom")] == sides or \
        [s for s in sides if s in ("left", "top")] == sides
    if one_sided and len(sides) <= 2:
        note += "; only one side of each axis differs: the extra pixel of 'same' padding with " \
                "an even kernel (lmref puts it at the end, like TensorFlow and PyTorch) or an " \
                "output size off by one"
    return note


def _shift_candidates(ndim):
    axes = spatial_axes(ndim)
    rng = range(-_MAX_SHIFT, _MAX_SHIFT + 1)
    cands = [s for s in itertools.product(rng, repeat=len(axes)) if any(s)]
    cands.sort(key=lambda s: (sum(abs(v) for v in s), [-v for v in s]))
    return axes, cands


def shift_note(actual, desired, rtol, atol, **_):
    """``actual[..., y, x] == desired[..., y - sy, x - sx]`` away from the shifted-in margin."""
    axes, cands = _shift_candidates(actual.ndim)
    for s in cands:
        sl = [slice(None)] * actual.ndim
        for ax, v in zip(axes, s):
            n = actual.shape[ax]
            if n - abs(v) < 2:
                break
            sl[ax] = slice(max(v, 0), n + min(v, 0))
        else:
            rolled = np.roll(desired, s, axis=axes)
            a_in, r_in, d_in = actual[tuple(sl)], rolled[tuple(sl)], desired[tuple(sl)]
            # a desired array that is itself invariant under the shift says nothing
            if _close(a_in, r_in, rtol, atol) and not _close(d_in, r_in, rtol, atol):
                parts = [f"{v:+d} along axis {ax}" for ax, v in zip(axes, s) if v]
                return (f"actual equals desired shifted by {' and '.join(parts)} (away from the "
                        f"shifted-in margin): kernel origin, flip (convolution vs "
                        f"cross-correlation), the side of 'same' padding's extra pixel, or the "
                        f"flow sign convention")
    return None


def mirror_note(actual, desired, rtol, atol, **_):
    axes = spatial_axes(actual.ndim)
    combos = [(a,) for a in axes] + ([axes] if len(axes) == 2 else [])
    for axs in combos:
        flipped = np.flip(desired, axis=axs)
        if _close(actual, flipped, rtol, atol) and not _close(desired, flipped, rtol, atol):
            return (f"actual equals desired mirrored along axis {' and '.join(map(str, axs))}: "
                    f"a flipped coordinate axis (image origin top vs bottom) or a reversed "
                    f"sequence")
    return None


def transpose_note(actual, desired, rtol, atol, **_):
    if actual.ndim < 2 or actual.shape[-1] != actual.shape[-2]:
        return None
    swapped = np.swapaxes(desired, -1, -2)
    if _close(actual, swapped, rtol, atol) and not _close(desired, swapped, rtol, atol):
        return ("actual equals desired with the last two axes swapped: layout (HW vs WH, "
                "x/y or row/column order)")
    return None


def _ranges(idx) -> str:
    out, start, prev = [], None, None
    for i in list(idx) + [None]:
        if start is None:
            start = prev = i
        elif i is not None and i == prev + 1:
            prev = i
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    return ", ".join(out[:8]) + (", ..." if len(out) > 8 else "")


def channel_note(actual, desired, bad, rtol, atol, **_):
    ax = channel_axis(actual.ndim)
    if ax is None or actual.shape[ax] < 2:
        return None
    per_ch = bad.any(axis=tuple(a for a in range(actual.ndim) if a != ax))
    if not per_ch.any() or per_ch.all():
        return None
    idx = np.flatnonzero(per_ch)
    return (f"only channels {_ranges(idx.tolist())} of {per_ch.size} differ: grouping "
            f"(groups, channel split of the weight) or channel order")


def channel_permutation_note(actual, desired, rtol, atol, **_):
    """``actual[:, i] == desired[:, p[i]]`` for a non-identity permutation ``p``."""
    ax = channel_axis(actual.ndim)
    if ax is None or not 2 <= actual.shape[ax] <= _MAX_CHANNELS_PERMUTED:
        return None
    a = np.moveaxis(actual, ax, 0)
    d = np.moveaxis(desired, ax, 0)
    c = a.shape[0]
    with np.errstate(invalid="ignore", over="ignore"):
        a_sig = np.nansum(np.abs(a.reshape(c, -1)), axis=1)
        d_sig = np.nansum(np.abs(d.reshape(c, -1)), axis=1)
    perm = []
    for i in range(c):
        tol = atol * a[i].size + rtol * a_sig[i] + 1e-300
        cands = np.flatnonzero(np.abs(d_sig - a_sig[i]) <= tol)
        match = next((int(j) for j in cands if j not in perm and _close(a[i], d[j], rtol, atol)),
                     None)
        if match is None:
            return None
        perm.append(match)
    if perm == list(range(c)):
        return None
    if perm == list(range(c))[::-1]:
        what = "reversed (e.g. RGB vs BGR)"
    else:
        what = f"permuted: actual channel i is desired channel {perm[:12]}{'...' if c > 12 else ''}[i]"
    return f"channels {what}: channel order or group interleaving (channel shuffle)"


def flow_component_note(actual, desired, rtol, atol, **_):
    """Flows ``(..., 2)``: components swapped, or the sign of one component flipped."""
    if actual.ndim < 2 or actual.shape[-1] != 2:
        return None
    if _close(actual, desired[..., ::-1], rtol, atol) and \
            not _close(desired, desired[..., ::-1], rtol, atol):
        return ("last axis (size 2) swapped: flow component order (lmref: [..., 0] = dx along "
                "columns, [..., 1] = dy along rows)")
    for k, name in ((0, "dx"), (1, "dy")):
        other = 1 - k
        if _close(actual[..., k], -desired[..., k], rtol, atol) and \
                _close(actual[..., other], desired[..., other], rtol, atol) and \
                not _close(desired[..., k], -desired[..., k], rtol, atol):
            return (f"component {k} ({name}) has the opposite sign: backward vs forward flow, or "
                    f"an image y axis pointing up")
    return None


def sign_note(actual, desired, rtol, atol, **_):
    if _close(actual, -desired, rtol, atol) and not _close(desired, -desired, rtol, atol):
        return "actual equals -desired: sign convention (e.g. a - b vs b - a, forward vs backward flow)"
    return None


def _nice_ratio(c: float) -> str:
    for den in (1, 2, 3, 4, 8, 9, 16, 25, 49):
        num = c * den
        if abs(num - round(num)) < 1e-6 * max(1.0, abs(num)) and round(num) != 0:
            n = int(round(num))
            return f"{n}/{den}" if den != 1 else f"{n}"
    return f"{c:.6g}"


def scale_note(actual, desired, rtol, atol, **_):
    fin = np.isfinite(actual) & np.isfinite(desired)
    if fin.sum() < 2:
        return None
    a, d = actual[fin], desired[fin]
    dd = float(np.dot(d, d))
    if dd == 0.0:
        return None
    c = float(np.dot(a, d)) / dd
    if not np.isfinite(c) or abs(c - 1.0) < 1e-12 or abs(c + 1.0) < 1e-12 or c == 0.0:
        return None
    if _close(a, c * d, rtol, atol):
        return (f"actual = {_nice_ratio(c)} x desired: a normalisation factor (sum vs mean, "
                f"dividing by C or by the window area, count_include_pad, a missing 1/n)")
    return None


def offset_note(actual, desired, rtol, atol, **_):
    fin = np.isfinite(actual) & np.isfinite(desired)
    if fin.sum() < 2:
        return None
    diff = actual[fin] - desired[fin]
    c = float(np.median(diff))
    if c == 0.0 or not np.isfinite(c):
        return None
    if _close(actual[fin], desired[fin] + c, rtol, atol):
        return f"actual = desired + {c:.6g} everywhere: a bias added twice, missing, or an epsilon"
    return None


def precision_note(actual, desired, rtol, atol, **_):
    if rtol >= 1e-6:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        fin = np.isfinite(actual) & np.isfinite(desired)
        scale = max(float(np.max(np.abs(desired[fin]), initial=0.0)), 1e-300)
        worst = float(np.max(np.abs(actual[fin] - desired[fin]), initial=0.0)) / scale
    if 0 < worst < 1e-5:
        return (f"errors are small relative to the largest value ({worst:.2g}): float32 "
                f"rounding rather than a logic bug; compare with dtype='float32' tolerances "
                f"or compute in float64")
    return None


def nan_note(actual, desired, **_):
    an, dn = np.isnan(actual), np.isnan(desired)
    notes = []
    if (an & ~dn).any():
        notes.append(f"NaN in actual at {int((an & ~dn).sum())} position(s) where desired is a "
                     f"number")
    if (dn & ~an).any():
        notes.append(f"desired is NaN at {int((dn & ~an).sum())} position(s) where actual is a "
                     f"number (lmref propagates NaN: was it swallowed, e.g. by max or clamp?)")
    ai, di = np.isinf(actual), np.isinf(desired)
    if (ai != di).any():
        notes.append(f"infinity at {int((ai != di).sum())} position(s) in only one of the arrays: "
                     f"overflow (float16/float32 range) or a division by zero")
    return "; ".join(notes) or None


def channels_last_note(actual, desired, rtol, atol, **_):
    """Same shape, but the data is desired's NHWC buffer reshaped (not transposed) to NCHW."""
    if actual.ndim != 4:
        return None
    n, c, h, w = desired.shape
    if c == 1:
        return None
    as_nhwc = np.ascontiguousarray(desired.transpose(0, 2, 3, 1)).reshape(desired.shape)
    from_nhwc = np.ascontiguousarray(desired.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    for cand in (as_nhwc, from_nhwc):
        if _close(actual, cand, rtol, atol):
            return ("actual is desired's data in channels-last order (NHWC) reinterpreted as "
                    "NCHW: a reshape/view where a transpose (permute) was needed")
    return None


DETECTORS = (border_note, shift_note, mirror_note, transpose_note, channel_permutation_note,
             channel_note, flow_component_note, channels_last_note, sign_note, scale_note,
             offset_note, precision_note, nan_note)


def diagnose(actual, desired, bad, rtol, atol) -> list[str]:
    """All diagnoses that apply to a failed comparison of equal-shape float64 arrays."""
    notes = []
    for det in DETECTORS:
        note = det(actual=actual, desired=desired, bad=bad, rtol=rtol, atol=atol)
        if note:
            notes.append(note)
    return notes


def diagnose_shape(actual, desired, rtol, atol) -> list[str]:
    """Explain a shape mismatch: a transpose (layout), a reshape, or an output size off by k."""
    notes = []
    if actual.ndim == desired.ndim and sorted(actual.shape) == sorted(desired.shape):
        for perm in itertools.permutations(range(desired.ndim)):
            if perm == tuple(range(desired.ndim)):
                continue
            cand = desired.transpose(perm)
            if cand.shape == actual.shape and _close(actual, cand, rtol, atol):
                hint = ""
                if desired.ndim == 4 and perm == (0, 2, 3, 1):
                    hint = ": NHWC (channels-last) vs lmref's NCHW"
                elif desired.ndim == 4 and perm == (2, 3, 1, 0):
                    hint = ": HWIO (TensorFlow/JAX kernels) vs lmref's OIHW"
                elif perm[-2:] == (desired.ndim - 1, desired.ndim - 2):
                    hint = ": rows and columns swapped"
                notes.append(f"actual equals desired.transpose{perm}{hint}")
                break
        else:
            notes.append("same sizes in another order: layout, e.g. NCHW vs NHWC")
    elif actual.size == desired.size:
        notes.append(f"same number of elements ({actual.size}): a reshape/view instead of a "
                     f"transpose, or a squeezed/unsqueezed axis")
    if actual.ndim == desired.ndim and actual.shape != desired.shape:
        diff = [a - d for a, d in zip(actual.shape, desired.shape)]
        spatial = spatial_axes(actual.ndim)
        off = [k for k in range(actual.ndim) if diff[k]]
        if off and all(k in spatial and abs(diff[k]) <= 4 for k in off):
            notes.append(f"spatial size differs by {[diff[k] for k in spatial]} (actual - desired): "
                         f"padding amount, 'same' for strided convolution (lmref: ceil(n / "
                         f"stride), like TensorFlow), ceil_mode, or output_padding")
    return notes
