"""Seed 002: a chain of strided convolutions is one convolution with a composed kernel.

The homework's claim: two stride-2 1-D convolutions with kernel k2 (padding applied once,
before the chain) equal one stride-4 convolution with k4 = k2 * dilate(k2, 2) (a full
convolution of k2 with its 2-dilated copy). lmref.compose generalises this to any chain; we
check the seed's 1-D example and a 3-layer multi-channel 2-D chain, exactly in float64.
"""
from __future__ import annotations

import numpy as np

from lmref.reproduce._core import ExperimentResult, register
from lmref.reproduce._plotting import LMREF_COLOUR, PAPER_COLOUR, image, new_figure

#: what "exact" means for a composed chain in float64 (sums of a few hundred products)
EXACT_TOL = 1e-12


@register("composition", "Seed 002: two stride-2 convs == one stride-4 conv with a dilated kernel")
def run(ctx) -> ExperimentResult:
    from lmref.compose import compose, dilate, receptive_field
    from lmref.conv import conv1d, conv2d

    res = ExperimentResult("composition")
    rng = ctx.rng("composition")

    # --- the seed's 1-D example: k2 applied twice with stride 2 == k4 with stride 4
    n, k = ctx.size(64, 256), 3
    k2 = rng.standard_normal((1, 1, k))
    pad = 2 * (k - 1) + (k - 1) // 2  # padding applied once, enough for the whole chain
    x = rng.standard_normal((1, 1, n))
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad)))
    chain = conv1d(conv1d(xp, k2, stride=2), k2, stride=2)
    k4, s4 = compose([k2, k2], [2, 2])
    single = conv1d(xp, k4, stride=s4)
    err_1d = float(np.max(np.abs(chain - single)))
    # the homework's closed form: k4 = k2 (full-)convolved with k2 dilated by 2
    k4_formula = np.convolve(dilate(k2[0, 0], 2), k2[0, 0])
    err_formula = float(np.max(np.abs(k4[0, 0] - k4_formula)))
    res.claim("two stride-2 convs with k2 == one stride-4 conv with k4 (1-D)",
              "exactly equal", f"max |diff| {err_1d:.1e}; stride {s4}, k4 has {k4.shape[-1]} taps",
              _verdict(err_1d <= EXACT_TOL and s4 == 4), err_1d)
    res.claim("k4 = k2 * dilate(k2, 2) (hint: dilated convolution)", "k4 built from dilated k2",
              f"max |k4 - k2*dilate(k2,2)| {err_formula:.1e}",
              _verdict(err_formula <= EXACT_TOL), err_formula)

    # --- a 3-layer multi-channel 2-D chain with strides and a dilation
    ws = [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((5, 4, 3, 3)),
          rng.standard_normal((2, 5, 2, 2))]
    strides, dilations = [2, 1, 2], [1, 2, 1]
    size, jump = receptive_field([w.shape[-1] for w in ws], strides, dilations)
    x2 = rng.standard_normal((2, 3, ctx.size(64, 128), ctx.size(64, 128)))
    y = x2
    for w, s, d in zip(ws, strides, dilations):
        y = conv2d(y, w, stride=s, dilation=d)
    w3, s3 = compose(ws, strides, dilations)  # int strides in -> an int stride out
    y3 = conv2d(x2, w3, stride=s3)
    err_2d = float(np.max(np.abs(y - y3)) / np.max(np.abs(y)))
    res.claim("3-layer 2-D chain (strides 2,1,2; dilation 2 in the middle) == one conv",
              "exactly equal (seed's argument, any depth)",
              f"max |diff| / max |output| {err_2d:.1e}; one {w3.shape[-2]}x{w3.shape[-1]} conv, "
              f"stride {s3}", _verdict(err_2d <= EXACT_TOL), err_2d)
    res.claim("receptive field of the chain == size of the composed kernel",
              "(not in the paper) consistency", f"receptive field {size}, jump {jump}; "
              f"kernel {w3.shape[-1]}, stride {s3}",
              _verdict(size == w3.shape[-1] and jump == s3), size)
    res.tables["composition"] = [
        {"case": "seed 1-D: k2 (3 taps) x2, stride 2", "composed taps": k4.shape[-1],
         "stride": s4, "max |diff|": err_1d},
        {"case": "2-D: 3x3 s2, 3x3 d2, 2x2 s2", "composed taps": w3.shape[-1],
         "stride": s3, "max |diff|": err_2d * float(np.max(np.abs(y)))}]

    if ctx.plots:
        res.figures.append(_plot(ctx, k2[0, 0], k4[0, 0], chain[0, 0], single[0, 0], w3, y, y3,
                                 err_1d, err_2d, dilate))
    return res


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


def _plot(ctx, k2, k4, chain, single, w3, y, y3, err_1d, err_2d, dilate):
    fig, ax = new_figure(
        ctx, "Seed 002: composing strided convolutions into one",
        "1-D (seed's example): the stride-4 kernel k4 is k2 convolved with k2 dilated by 2, and "
        "one "
        "stride-4 conv with k4 gives the chain's output. 2-D: a 3-layer chain (3x3 stride 2, 3x3 "
        "dilation 2, 2x2 stride 2) is one 13x13 stride-4 conv; the outputs differ by round-off "
        "only.",
        1, 4, size=(16, 4.2))
    a = ax[0, 0]
    d2 = dilate(k2, 2)
    a.stem(np.arange(len(k2)) - 0.15, k2, linefmt="C2-", markerfmt="C2o", basefmt=" ",
           label="k2 (3 taps)")
    a.stem(np.arange(len(d2)), d2, linefmt="C1-", markerfmt="C1s", basefmt=" ",
           label="k2 dilated by 2")
    a.stem(np.arange(len(k4)) + 0.15, k4, linefmt="C0-", markerfmt="C0D", basefmt=" ",
           label=f"k4 = k2 * dilate(k2, 2) ({len(k4)} taps)")
    a.axhline(0, color="0.6", lw=0.8)
    a.set_xlabel("tap index")
    a.set_ylabel("weight")
    a.set_title("1-D kernels", fontsize=10)
    a.legend(fontsize=8)
    a = ax[0, 1]
    t = np.arange(len(chain))
    a.plot(t, chain, "-", color=PAPER_COLOUR, lw=3, alpha=0.5, label="two stride-2 convs (chain)")
    a.plot(t, single, "o", color=LMREF_COLOUR, ms=4, label="one stride-4 conv with k4")
    a.set_xlabel("output sample (stride-4 grid)")
    a.set_ylabel("output value")
    a.set_title(f"1-D outputs: max |diff| = {err_1d:.1e}", fontsize=10)
    a.legend(fontsize=8)
    image(ax[0, 2], w3[0, 0], f"2-D composed kernel ({w3.shape[-2]}x{w3.shape[-1]}, "
          f"channels 0->0)", cmap="RdBu_r", symmetric=True, colorbar=fig)
    image(ax[0, 3], np.abs(y - y3)[0, 0] / np.max(np.abs(y)),
          f"2-D |chain - single| / max|output|\n(max {err_2d:.1e})", cmap="viridis", colorbar=fig)
    return ctx.savefig(fig, "composition.png")
