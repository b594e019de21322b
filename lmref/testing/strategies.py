"""Hypothesis strategies that generate *valid* argument sets for lmref's operations.

Every strategy draws ``(args, kwargs)``: ``args`` the arrays in the function's positional
order, ``kwargs`` its options, so ``fn(*args, **kwargs)`` calls lmref and (with the layouts
lmref shares with PyTorch) your own implementation. Arrays are float64 (or the ``dtype`` you
ask for), drawn from a seeded ``numpy`` generator so examples are cheap and reproducible;
Hypothesis shrinks shapes and options. Sizes stay small on purpose: property tests should run
many cases quickly. Requires ``hypothesis`` (``pip install hypothesis``).

Property-test your PyTorch convolution against lmref in a few lines::

    import torch
    from hypothesis import given, settings
    from lmref.conv import conv2d
    from lmref.testing import assert_close
    from lmref.testing.strategies import conv_args

    @settings(max_examples=100, deadline=None)
    @given(conv_args(ndim=2, torch_compatible=True))
    def test_my_conv2d(case):
        (x, w), kw = case
        mine = my_conv2d(torch.from_numpy(x), torch.from_numpy(w), **kw)
        assert_close(mine, conv2d(x, w, **kw))

``torch_compatible=True`` (the default) only draws what PyTorch accepts too: no ``"same"``
padding with a stride, reflect padding smaller than the input, pooling padding at most half
the window. Strategies here: :func:`conv_args`, :func:`flows`, :func:`warp_args`,
:func:`ar_kernels`, :func:`ar_factors`, :func:`ar_solve_args`, :func:`pool_args`,
:func:`local_multiply_args`, :func:`block_match_args`.
"""
from __future__ import annotations

import numpy as np

try:
    from hypothesis import strategies as st
except ImportError as exc:  # a test-only dependency: say what to install
    raise ImportError("lmref.testing.strategies needs hypothesis: pip install hypothesis "
                      "(or pip install 'lmref[test]')") from exc

__all__ = ["conv_args", "flows", "warp_args", "ar_kernels", "ar_factors", "ar_solve_args",
           "pool_args", "local_multiply_args", "block_match_args", "PADDING_MODES"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _normal(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _same_split(total: int) -> tuple[int, int]:
    """'same' padding: the extra pixel of an odd total goes at the end (PyTorch, TensorFlow)."""
    return total // 2, total - total // 2


def _pad_ok(lo: int, hi: int, n: int, mode: str) -> bool:
    """Whether PyTorch's ``F.pad`` (and lmref) accept this per-side padding of a size-n axis."""
    if mode == "reflect":
        return lo < n and hi < n
    if mode == "circular":
        return lo <= n and hi <= n
    return True


@st.composite
def conv_args(draw, ndim: int = 2, *, max_batch: int = 2, max_groups: int = 3,
              max_channels_per_group: int = 3, max_size: int = 9, max_kernel: int = 4,
              max_stride: int = 3, max_dilation: int = 3, padding_modes=PADDING_MODES,
              bias=None, torch_compatible: bool = True, dtype=np.float64):
    """Arguments of ``conv1d`` (``ndim=1``) or ``conv2d`` (``ndim=2``).

    Draws ``((x, weight), kwargs)`` with ``x`` of shape ``(N, C_in, *spatial)``, ``weight``
    ``(C_out, C_in // groups, *k)`` and ``kwargs`` among ``bias`` (an array or None; always
    present when ``bias`` is True, never when False, either way when None), ``stride``,
    ``padding`` (an int, a per-axis tuple, ``"valid"`` or ``"same"``), ``dilation``, ``groups``
    and ``padding_mode``. Every draw has output size >= 1 and a dilated kernel no larger than
    the padded input. ``torch_compatible`` forbids ``"same"`` with a stride > 1 (PyTorch refuses
    it; lmref follows TensorFlow's ``ceil(n / stride)`` there) and keeps reflect padding smaller
    than, and circular padding at most, the input size.
    """
    if ndim not in (1, 2):
        raise ValueError(f"ndim must be 1 or 2, got {ndim!r}")
    rng = _rng(draw)
    groups = draw(st.integers(1, max_groups))
    cin = groups * draw(st.integers(1, max_channels_per_group))
    cout = groups * draw(st.integers(1, max_channels_per_group))
    n = draw(st.integers(1, max_batch))
    mode = draw(st.sampled_from(padding_modes))
    spatial = tuple(draw(st.integers(1, max_size)) for _ in range(ndim))
    padding_kind = draw(st.sampled_from(("int", "tuple", "valid", "same")))

    stride = tuple(draw(st.integers(1, max_stride)) for _ in range(ndim))
    if padding_kind == "same" and torch_compatible:
        stride = (1,) * ndim

    if padding_kind == "int":
        pads = [draw(st.integers(0, min(_max_pad(size, mode, max_kernel) for size in spatial)))] * ndim
    elif padding_kind == "tuple":
        pads = [draw(st.integers(0, _max_pad(size, mode, max_kernel))) for size in spatial]
    else:
        pads = [0] * ndim
    ks, ds = [], []
    for size, s, p in zip(spatial, stride, pads):
        if padding_kind == "same":
            k, d = _draw_kernel_same(draw, size, s, mode, max_kernel, max_dilation)
        else:
            k, d = _draw_kernel_fitting(draw, size + 2 * p, max_kernel, max_dilation)
        ks.append(k)
        ds.append(d)
    padding = {"int": pads[0], "tuple": tuple(pads)}.get(padding_kind, padding_kind)

    x = _normal(rng, (n, cin, *spatial), dtype)
    weight = _normal(rng, (cout, cin // groups, *ks), dtype)
    kwargs = {"stride": _maybe_int(draw, stride), "padding": padding,
              "dilation": _maybe_int(draw, tuple(ds)), "groups": groups, "padding_mode": mode}
    with_bias = draw(st.booleans()) if bias is None else bias
    kwargs["bias"] = _normal(rng, (cout,), dtype) if with_bias else None
    return (x, weight), kwargs


def _max_pad(size: int, mode: str, max_kernel: int) -> int:
    cap = max_kernel
    if mode == "reflect":
        return min(cap, size - 1)
    if mode == "circular":
        return min(cap, size)
    return cap


def _draw_kernel_fitting(draw, padded: int, max_kernel: int, max_dilation: int):
    k = draw(st.integers(1, max(1, min(max_kernel, padded))))
    dmax = max_dilation if k == 1 else max(1, min(max_dilation, (padded - 1) // (k - 1)))
    return k, draw(st.integers(1, dmax))


def _draw_kernel_same(draw, size, stride, mode, max_kernel, max_dilation):
    """Kernel and dilation whose 'same' padding the padding mode allows."""
    def ok(k, d):
        out = -(-size // stride)
        total = max((out - 1) * stride + (k - 1) * d + 1 - size, 0)
        return _pad_ok(*_same_split(total), size, mode)

    ks = [k for k in range(1, max_kernel + 1) if ok(k, 1)]
    k = draw(st.sampled_from(ks))
    dilations = [d for d in range(1, max_dilation + 1) if ok(k, d)]
    return k, draw(st.sampled_from(dilations))


def _maybe_int(draw, values: tuple):
    """An int when every axis is equal and the draw says so, else the tuple."""
    if len(set(values)) == 1 and draw(st.booleans()):
        return values[0]
    return values if len(values) > 1 else values[0]


@st.composite
def flows(draw, shape=None, *, max_size: int = 8, batch: int | None = None,
          max_magnitude: float = 3.0, integer: bool = False, avoid_integer: bool = False,
          avoid_half: bool = False):
    """A flow field ``(H, W, 2)`` (or ``(N, H, W, 2)`` with ``batch=N``), lmref's convention.

    ``flow[..., 0] = dx`` (columns), ``flow[..., 1] = dy`` (rows), a backward map:
    ``out[y, x] = src[y + dy, x + dx]``. ``integer=True`` draws integer-valued vectors;
    ``avoid_integer=True`` keeps every sample position at least 0.05 pixel away from an
    integer (where the bilinear derivative with respect to the flow is one-sided, so
    implementations legitimately disagree); ``avoid_half=True`` keeps them 0.05 away from
    half-integers (ties of nearest-neighbour rounding, also implementation-defined).
    """
    rng = _rng(draw)
    if shape is None:
        shape = (draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))
    full = ((batch,) if batch else ()) + tuple(shape) + (2,)
    if integer:
        m = int(np.floor(max_magnitude))
        return rng.integers(-m, m + 1, size=full).astype(np.float64)
    f = rng.uniform(-max_magnitude, max_magnitude, size=full)
    if avoid_integer or avoid_half:
        whole = np.floor(f)
        lo, hi = (0.05, 0.95) if avoid_integer else (0.0, 1.0)
        frac = rng.uniform(lo, hi, size=full)
        if avoid_half:
            frac = np.where(np.abs(frac - 0.5) < 0.05, frac + 0.1 * np.sign(frac - 0.5 + 1e-9),
                            frac)
        f = whole + frac
    return f


@st.composite
def warp_args(draw, *, max_size: int = 8, max_channels: int = 3, batched=None,
              modes=("bilinear", "nearest"), boundaries=("zeros", "border", "wrap"),
              max_magnitude: float = 3.0, avoid_integer: bool = True):
    """Arguments of ``lmref.motion.warp``: ``((x, flow), {"mode", "boundary"})``.

    ``x`` is ``(C, H, W)`` with flow ``(H, W, 2)``, or (``batched``) ``(N, C, H, W)`` with
    flow ``(N, H, W, 2)``. Sample positions avoid integers (bilinear) and half-integers
    (nearest) by default, where conventions differ between implementations.
    """
    rng = _rng(draw)
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    c = draw(st.integers(1, max_channels))
    mode = draw(st.sampled_from(modes))
    is_batched = draw(st.booleans()) if batched is None else batched
    n = draw(st.integers(1, 2)) if is_batched else None
    flow = draw(flows((h, w), batch=n, max_magnitude=max_magnitude,
                      avoid_integer=avoid_integer and mode == "bilinear",
                      avoid_half=mode == "nearest"))
    x = rng.standard_normal(((n,) if n else ()) + (c, h, w))
    return (x, flow), {"mode": mode, "boundary": draw(st.sampled_from(boundaries))}


@st.composite
def ar_kernels(draw, channels=None, size: int = 3, *, max_channels: int = 3,
               max_ratio: float = 0.9, ndim: int = 2):
    """Invertible, BIBO-stable AR kernels ``(C, k, k)`` (``ndim=1``: ``(C, k)``), origin at the centre.

    Each kernel is diagonally dominant: the centre tap ``a0`` (in [0.5, 2]) exceeds the sum of
    the other taps' magnitudes by the factor ``1 / ratio`` with ``ratio <= max_ratio < 1``. Its
    DFT is then at least ``a0 (1 - ratio) > 0`` everywhere (the circular system ``A * Y = T`` has
    a unique solution, for any image size) and its inverse filter decays geometrically (stable).
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be odd and >= 1, got {size!r}")
    rng = _rng(draw)
    c = channels if channels is not None else draw(st.integers(1, max_channels))
    ratio = draw(st.floats(0.0, max_ratio))
    shape = (c,) + (size,) * ndim
    a = rng.standard_normal(shape)
    centre = (slice(None),) + (size // 2,) * ndim
    a[centre] = 0.0
    off = np.abs(a).reshape(c, -1).sum(axis=1)
    a0 = rng.uniform(0.5, 2.0, size=c)
    scale = np.where(off > 0, ratio * a0 / np.where(off > 0, off, 1.0), 0.0)
    a *= scale.reshape((c,) + (1,) * ndim)
    a[centre] = a0
    return a


@st.composite
def ar_factors(draw, channels=None, q=None, *, max_channels: int = 3, max_q: int = 3,
               max_ratio: float = 0.95):
    """Length-3 AR factors ``(C, Q, 3)`` satisfying Theorem 9 (eq. 15) strictly, centre 1.

    ``f[..., 1] = 1`` (the official ARMA code's normalisation) and ``|f[..., 0]| + |f[..., 2]|
    <= max_ratio < 1``, which implies eq. 15 ``|f_-1 + f_1| < f_0`` and more: one zero of the
    factor's Z-polynomial inside the unit circle and one outside (Lemma 19), so each factor,
    and any separable kernel built from them, is invertible and stable.
    """
    rng = _rng(draw)
    c = channels if channels is not None else draw(st.integers(1, max_channels))
    qq = q if q is not None else draw(st.integers(1, max_q))
    ratio = draw(st.floats(0.0, max_ratio))
    side = rng.uniform(-1, 1, size=(c, qq, 2))
    norm = np.abs(side).sum(axis=-1, keepdims=True)
    side = side / np.where(norm > 0, norm, 1.0) * ratio * rng.uniform(0, 1, size=(c, qq, 1))
    return np.stack([side[..., 0], np.ones((c, qq)), side[..., 1]], axis=-1)


@st.composite
def ar_solve_args(draw, *, max_batch: int = 2, max_channels: int = 3, max_size: int = 9,
                  sizes=(1, 3, 5), ndim: int = 2):
    """Arguments of ``lmref.arma.ar_solve``: ``((t, a), {})`` with ``t`` ``(N, C, H, W)``
    (``ndim=1``: ``(N, C, L)``) and an invertible kernel ``a`` from :func:`ar_kernels`
    no larger than the image."""
    rng = _rng(draw)
    c = draw(st.integers(1, max_channels))
    k = draw(st.sampled_from(sizes))
    spatial = tuple(draw(st.integers(k, max(k, max_size))) for _ in range(ndim))
    t = rng.standard_normal((draw(st.integers(1, max_batch)), c, *spatial))
    return (t, draw(ar_kernels(c, k, ndim=ndim))), {}


@st.composite
def pool_args(draw, *, max_batch: int = 2, max_channels: int = 3, max_size: int = 9,
              max_kernel: int = 4, max_stride: int = 3, torch_compatible: bool = True):
    """Arguments of ``max_pool2d`` / ``avg_pool2d``: ``((x,), {"kernel_size", "stride", "padding"})``.

    ``padding <= kernel_size // 2`` per axis (PyTorch refuses more) and the padded input is at
    least one window, so the output is never empty. ``stride`` may be ``None`` (= kernel_size).
    """
    rng = _rng(draw)
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    ks, pads = [], []
    for size in (h, w):
        k = draw(st.integers(1, max_kernel))
        p = draw(st.integers(0, k // 2))
        if size + 2 * p < k:  # window larger than the padded input: shrink the window
            k = size + 2 * p
            p = min(p, k // 2)
        ks.append(k)
        pads.append(p)
    stride = draw(st.one_of(st.none(), st.integers(1, max_stride),
                            st.tuples(st.integers(1, max_stride), st.integers(1, max_stride))))
    x = rng.standard_normal((draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
                             h, w))
    kernel = ks[0] if ks[0] == ks[1] and draw(st.booleans()) else tuple(ks)
    padding = pads[0] if pads[0] == pads[1] and draw(st.booleans()) else tuple(pads)
    return (x,), {"kernel_size": kernel, "stride": stride, "padding": padding}


@st.composite
def local_multiply_args(draw, *, max_batch: int = 2, max_channels: int = 3, max_size: int = 7,
                        patch_sizes=(1, 3, 5), max_dilation: int = 2,
                        normalizations=("none", "channels", "l2")):
    """Arguments of ``lmref.temporal.local_multiply``: ``((a, b), {"patch_size", "dilation",
    "normalize"})`` with ``a`` and ``b`` of the same shape ``(N, C, H, W)`` and odd ``patch_size``."""
    rng = _rng(draw)
    shape = (draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
             draw(st.integers(1, max_size)), draw(st.integers(1, max_size)))
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    kw = {"patch_size": draw(st.sampled_from(patch_sizes)),
          "dilation": draw(st.integers(1, max_dilation)),
          "normalize": draw(st.sampled_from(normalizations))}
    return (a, b), kw


@st.composite
def block_match_args(draw, *, max_channels: int = 2, max_size: int = 10, block_sizes=(1, 3, 5),
                     max_range: int = 3, channels=("sum", "each"), boundaries=("zeros",)):
    """Arguments of ``lmref.blockmatch.block_match``: ``((reference, current), {...})``.

    Frames are ``(H, W)`` or ``(C, H, W)``; ``current`` is ``reference`` moved by a random
    integer translation plus a little noise, so there is a motion to find.
    """
    rng = _rng(draw)
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    c = draw(st.one_of(st.none(), st.integers(1, max_channels)))
    shape = (h, w) if c is None else (c, h, w)
    ref = rng.standard_normal(shape)
    rngr = draw(st.integers(0, max_range))
    dy, dx = rng.integers(-rngr, rngr + 1, size=2) if rngr else (0, 0)
    cur = np.roll(ref, (int(dy), int(dx)), axis=(-2, -1)) + 0.01 * rng.standard_normal(shape)
    kw = {"block_size": draw(st.sampled_from(block_sizes)), "search_range": rngr,
          "channels": draw(st.sampled_from(channels)), "boundary": draw(st.sampled_from(boundaries))}
    return (ref, cur), kw
