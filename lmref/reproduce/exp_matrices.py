"""Seed 000, Lemma 1 and Theorem 2: convolution and motion as matrices; feature transfer T.

Lemma 1: unroll a frame row-major, multiply by a matrix, reshape: convolution (any stride,
padding, dilation) and motion (a warp by a flow field) are both linear maps, and an integer
periodic motion is a permutation matrix.

Theorem 2: for frames B = M A + delta and a convolution C, features satisfy
B' = T A' + delta' with T = C^-1 M C and delta' = C delta. lmref builds T = C M C^+ (column
vectors, least squares) and measures how exactly it maps the key frame's features onto the moved
frame's. It is exact when C is invertible (stride-1 circular conv with a kernel whose DFT has no
zeros, and chains of them: the seed's Remark); for strided or 'valid' convolutions C^-1 does not
exist and no linear T reproduces the moved features: the theorem needs that assumption.
"""
from __future__ import annotations

import numpy as np

from lmref.reproduce._core import ExperimentResult, register
from lmref.reproduce._images import textured_image
from lmref.reproduce._plotting import LMREF_COLOUR, PAPER_COLOUR, image, new_figure

#: "exact" for these float64 products of a few hundred terms (values ~1..255)
EXACT_RTOL = 1e-10
#: "exact" for T = C M C^+: round-off amplified by the condition number of C (up to ~1e5 for
#: the zero-padded conv on 16x16), far below the O(0.1) error when C is not invertible
THM2_RTOL = 1e-8


@register("matrices", "Seed 000, Lemma 1 / Theorem 2: conv and motion as matrices; feature "
                      "transfer T = C^-1 M C")
def run(ctx) -> ExperimentResult:
    from lmref.conv import conv2d, conv2d_matrix
    from lmref.motion import affine_flow, feature_transfer, motion_matrix, warp

    res = ExperimentResult("matrices")
    rng = ctx.rng("matrices")
    n = ctx.size(12, 16)  # frames n x n: T is dense (n^2 x n^2)
    frame = textured_image(n, rng, objects=1)[None]  # (1, n, n)
    kernel = rng.standard_normal((1, 1, 3, 3))
    kernel[0, 0, 1, 1] += 4.0  # diagonally dominant: its DFT has no zeros, C is invertible
    kernel2 = rng.standard_normal((1, 1, 3, 3))
    kernel2[0, 0, 1, 1] += 4.0

    shift = affine_flow((n, n), translation=(2, -1))  # integer: a permutation under "wrap"
    rotate = affine_flow((n, n), rotation=7.0, translation=(0.4, 0.3))  # fractional, bilinear
    motions = {"integer shift (2, -1), periodic": (shift, "nearest", "wrap"),
               "rotation 7 deg + sub-pixel shift": (rotate, "bilinear", "zeros")}
    convs = {
        "3x3 circular, stride 1": [dict(weight=kernel, padding=1, padding_mode="circular")],
        "two 3x3 circular (Remark)": [dict(weight=kernel, padding=1, padding_mode="circular"),
                                      dict(weight=kernel2, padding=1, padding_mode="circular")],
        "3x3 zero-padded, stride 1": [dict(weight=kernel, padding=1)],
        "3x3 'valid' (no padding)": [dict(weight=kernel, padding=0)],
        "3x3 circular, stride 2": [dict(weight=kernel, padding=1, padding_mode="circular",
                                        stride=2)],
    }

    # --- Lemma 1: the matrices reproduce the operations
    conv_err, motion_err = 0.0, 0.0
    for layers in convs.values():
        x = frame
        for kw in layers:
            C = conv2d_matrix(x.shape, **kw)
            y = conv2d(x[None], **kw)[0]
            conv_err = max(conv_err, _rel(C @ x.ravel(), y.ravel()))
            x = y
    for flow, mode, boundary in motions.values():
        M = motion_matrix(flow, mode=mode, boundary=boundary)
        motion_err = max(motion_err, _rel(M @ frame.ravel(),
                                          warp(frame, flow, mode=mode, boundary=boundary).ravel()))
    P = motion_matrix(shift, mode="nearest", boundary="wrap").toarray()
    is_perm = bool(np.all((P == 0) | (P == 1)) and np.all(P.sum(0) == 1) and np.all(P.sum(1) == 1))
    res.claim("Lemma 1: convolution is a matrix (unroll, multiply, reshape)", "C vec(A) = vec(A')",
              f"{len(convs)} convs (strides, paddings, a chain): max rel. error {conv_err:.1e}",
              _verdict(conv_err <= EXACT_RTOL), conv_err)
    res.claim("Lemma 1: motion is a matrix; a pixel repositioning is a permutation",
              "permutation matrix from the flow",
              f"warp == M vec(A): max rel. error {motion_err:.1e}; integer periodic shift: "
              f"{'a' if is_perm else 'NOT a'} permutation (one 1 per row and column)",
              _verdict(motion_err <= EXACT_RTOL and is_perm), motion_err)

    # --- Theorem 2: T maps A' onto B' = C M A exactly iff C is invertible
    rows, examples = [], {}
    for cname, layers in convs.items():
        mats = _conv_matrices(frame.shape, layers, conv2d_matrix)
        for mname, (flow, mode, boundary) in motions.items():
            M = motion_matrix(flow, mode=mode, boundary=boundary)
            ft = feature_transfer(mats, M)
            a_feat = _apply(mats, frame.ravel())
            b_feat = _apply(mats, M @ frame.ravel())
            err = _rel(ft.T @ a_feat, b_feat)
            rows.append({"convolution": cname, "motion": mname, "C shape": _shape(mats),
                         "cond(C)": _cond(mats), "|T A' - B'| / |B'|": err,
                         "matrix residual": ft.residual})
            examples[(cname, mname)] = (mats, M, ft, a_feat, b_feat)
    res.tables["Theorem 2: feature transfer"] = rows
    exact = [r for r in rows if r["convolution"] in list(convs)[:3]]
    lossy = [r for r in rows if r["convolution"] not in list(convs)[:3]]
    worst_exact = max(r["|T A' - B'| / |B'|"] for r in exact)
    best_lossy = min(r["|T A' - B'| / |B'|"] for r in lossy)

    # the full statement with a residual frame delta: B' = T A' + C delta
    mats, M, ft, a_feat, _ = examples[("3x3 circular, stride 1",
                                       "rotation 7 deg + sub-pixel shift")]
    delta = rng.normal(0.0, 5.0, frame.size)
    b_feat = _apply(mats, M @ frame.ravel() + delta)
    err_delta = _rel(ft.T @ a_feat + _apply(mats, delta), b_feat)
    res.claim("Thm 2 (+Remark): B' = T A' + delta C with T = C^-1 M C, invertible C",
              "exact, one or several conv layers",
              f"stride-1 convs (circular, zero-padded 'same') and a chain, both motions: max rel. "
              f"error "
              f"{max(worst_exact, err_delta):.1e} (residual frame included; round-off times "
              f"cond(C) <= {max(r['cond(C)'] for r in exact):.0e})",
              _verdict(max(worst_exact, err_delta) <= THM2_RTOL), worst_exact)
    res.claim("Thm 2 for any convolution C (the paper writes C^-1 without assuming it exists)",
              "T exists for every conv",
              f"stride-2 and 'valid' convs lose information: the least-squares T = C M C^+ "
              f"leaves a relative error >= {best_lossy:.2f} on the test frame; Thm 2 needs an "
              f"invertible C",
              "paper wrong (documented)" if best_lossy > 1e3 * THM2_RTOL else "not reproduced",
              best_lossy)

    if ctx.plots:
        res.figures.append(_plot(ctx, frame[0], examples, rows, n))
    return res


def _conv_matrices(shape, layers, conv2d_matrix):
    mats, x_shape = [], shape
    for kw in layers:
        C = conv2d_matrix(x_shape, **kw)
        mats.append(C)
        c_out = kw["weight"].shape[0]
        x_shape = (c_out, *_out_hw(x_shape, C.shape[0] // c_out))
    return mats


def _out_hw(shape, pixels):
    side = int(round(np.sqrt(pixels)))
    return side, pixels // side


def _apply(mats, v):
    for C in mats:
        v = C @ v
    return v


def _shape(mats):
    return f"{mats[-1].shape[0]} x {mats[0].shape[1]}"


def _cond(mats) -> float:
    """2-norm condition number of the chain's matrix (inf when it is not square)."""
    C = mats[0].toarray()
    for m in mats[1:]:
        C = m.toarray() @ C
    return float(np.linalg.cond(C)) if C.shape[0] == C.shape[1] else float("inf")


def _rel(a, b) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


def _plot(ctx, frame, examples, rows, n):
    from matplotlib.patches import Patch

    fig, ax = new_figure(
        ctx, "Seed 000, Lemma 1 / Theorem 2: convolution and motion as matrices",
        "Top: the matrices of a 3x3 circular conv C, of an integer shift M (a permutation) and the "
        "feature transfer T = C M C^+. Bottom: T maps the key frame's features onto the moved "
        "frame's to round-off when C is invertible, but not for strided or 'valid' convolutions.",
        2, 3, size=(13, 8.6))
    mats, M, ft, a_feat, b_feat = examples[("3x3 circular, stride 1",
                                            "integer shift (2, -1), periodic")]
    ax[0, 0].spy(mats[0], markersize=1.2, color=LMREF_COLOUR)
    ax[0, 0].set_title(f"C: 3x3 circular conv on {n}x{n} ({mats[0].shape[0]}x{mats[0].shape[1]})",
                       fontsize=9)
    ax[0, 1].spy(M, markersize=1.2, color=LMREF_COLOUR)
    ax[0, 1].set_title("M: shift by (2, -1) px, periodic (a permutation)", fontsize=9)
    t = np.abs(ft.T)
    im = ax[0, 2].imshow(np.log10(np.maximum(t, 1e-16)), cmap="viridis", vmin=-16, vmax=0,
                         interpolation="nearest")
    fig.colorbar(im, ax=ax[0, 2], fraction=0.046, pad=0.02, label="log10 |T_ij|")
    ax[0, 2].set_title("T = C M C^+ (here = M: C commutes with shifts)", fontsize=9)
    for a in ax[0]:
        a.set_xlabel("input index (row-major pixel)", fontsize=8)
        a.set_ylabel("output index", fontsize=8)
        a.tick_params(labelsize=7)
    mats, M, ft, a_feat, b_feat = examples[("3x3 circular, stride 1",
                                            "rotation 7 deg + sub-pixel shift")]
    image(ax[1, 0], b_feat.reshape(n, n), "B' = C M A: features of the rotated frame",
          colorbar=fig)
    image(ax[1, 1], (ft.T @ a_feat - b_feat).reshape(n, n),
          f"T A' - B' (max {np.max(np.abs(ft.T @ a_feat - b_feat)):.0e}: round-off)", cmap="RdBu_r",
          symmetric=True, colorbar=fig)
    a = ax[1, 2]
    labels = [f"{r['convolution']}\n{r['motion'].split(' (')[0].split(' +')[0]}" for r in rows]
    errs = np.maximum([r["|T A' - B'| / |B'|"] for r in rows], 1e-17)
    colours = [LMREF_COLOUR if e < THM2_RTOL else "tab:orange" for e in errs]
    y = np.arange(len(rows))
    a.barh(y, errs, color=colours)
    a.set_xscale("log")
    a.set_yticks(y, labels, fontsize=6.5)
    a.invert_yaxis()
    a.axvline(THM2_RTOL, color=PAPER_COLOUR, ls="--", label="exact (round-off) threshold")
    handles = a.get_legend_handles_labels()[0] + [
        Patch(color=LMREF_COLOUR, label="exact: C invertible"),
        Patch(color="tab:orange", label="no exact T (C not invertible)")]
    a.set_xlabel("|T A' - B'| / |B'|  (relative error)")
    a.set_title("Theorem 2 per convolution and motion", fontsize=9)
    a.legend(handles=handles, fontsize=7, loc="upper right")
    return ctx.savefig(fig, "matrices.png")
