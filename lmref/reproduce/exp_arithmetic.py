"""Seed 003 (ATM): what subtraction and log-division of neighbouring frames capture.

A clip of a soft-edged bright square translating over a dark background (exact sub-pixel
motion: the square is rendered analytically). With ``layout="seed"`` and Z = 1 the context of
anchor frame t is frame t + 1, so the ATM features are ``A_t - A_{t+1}`` and
``log(A_t + 1) - log(A_{t+1} + 1)``.

* "Subtraction approximates motion": by brightness constancy (seed 001 eq. 1),
  ``A_t - A_{t+1} ~ grad(A_t) . u`` for a displacement u per frame, so the displacement can be
  read back from the subtraction feature alone by least squares (one Lucas-Kanade window
  over the frame). We compare it with the true u over a sweep of speeds.
* "Division is a normalised difference": ``log(A + 1) - log(B + 1)`` has the sign of ``A - B``
  everywhere and, unlike subtraction, hardly changes when the whole clip gets brighter.
"""
from __future__ import annotations

import math

import numpy as np

from lmref.reproduce._core import ExperimentResult, register
from lmref.reproduce._plotting import LMREF_COLOUR, PAPER_COLOUR, image, new_figure

BACKGROUND, SQUARE = 20.0, 200.0
#: the displacement read back from subtraction must match the truth to this relative error
#: for sub-pixel and pixel-sized motions (the first-order Taylor model's range)
SPEED_TOL = 0.05
SMALL_SPEED = 1.0  # px/frame: where the first-order model is expected to hold


@register("arithmetic", "Seed 003 (ATM): frame subtraction vs true motion, log-division vs "
                        "subtraction")
def run(ctx) -> ExperimentResult:
    from lmref.temporal import arithmetic_features

    res = ExperimentResult("arithmetic")
    size, side, edge = ctx.size(48, 96), ctx.size(14, 28), 2.0
    direction = np.array([0.8, 0.6])  # unit vector (x, y) of the motion

    # --- subtraction vs true motion: read the displacement back, for a sweep of speeds
    speeds = ctx.size([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0],
                      [0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0])
    rows = []
    for v in speeds:
        u = v * direction
        clip = moving_square_clip(size, side, edge, u, frames=3)
        feats = arithmetic_features(clip, 1, ops=("sub",))  # (T, Z=1, C, H, W)
        sub = feats[0, 0, 0]  # anchor 0, context = frame 1
        u_est = displacement_from_subtraction(sub, clip[0, 0])
        rows.append({"true speed px/frame": v, "estimated dx": u_est[0], "estimated dy": u_est[1],
                     "relative error": float(np.linalg.norm(u_est - u) / v)})
    res.tables["displacement read from A_t - A_t+1"] = rows
    small = [r["relative error"] for r in rows if r["true speed px/frame"] <= SMALL_SPEED]
    worst_small = max(small)
    res.claim("subtraction approximates motion: A_t - A_t+1 ~ grad A . u gives u back",
              "subtraction approximates optical flow",
              f"u read back within {100 * worst_small:.1f}% up to {SMALL_SPEED:g} px/frame; "
              f"{100 * rows[-1]['relative error']:.0f}% at {speeds[-1]:g} px/frame",
              "reproduced" if worst_small <= SPEED_TOL else "not reproduced", worst_small)

    # where subtraction is non-zero: exactly where the square moved (leading/trailing edges)
    clip = moving_square_clip(size, side, edge, 1.0 * direction, frames=4)
    feats = arithmetic_features(clip, 1, ops=("sub", "div"))  # (T, 1, 2, H, W)
    sub, div = feats[1, 0, 0], feats[1, 0, 1]
    moved = np.abs(clip[1, 0] - BACKGROUND) > 1e-3 * (SQUARE - BACKGROUND)
    # compare signs where the difference is above round-off (far from the square both are ~1e-14)
    significant = np.abs(sub) > 1e-9 * np.max(np.abs(sub))
    sign_agree = float(np.mean(np.sign(div[significant]) == np.sign(sub[significant])))
    outside = float(np.max(np.abs(sub[~_dilated(moved)]))) if (~_dilated(moved)).any() else 0.0
    last = float(np.max(np.abs(feats[-1, 0, 0])))  # last anchor: context clamped to itself
    res.claim("log-division has the sign of subtraction everywhere",
              "division ~ normalised difference",
              f"signs agree on {100 * sign_agree:.2f}% of the {int(significant.sum())} "
              f"pixels where |A_t - A_t+1| is above round-off",
              "reproduced" if sign_agree == 1.0 else "not reproduced", sign_agree)

    # --- illumination: multiply the clip by a gain; subtraction scales, log-division does not
    gains = [1.0, 2.0, 4.0, 8.0, 16.0]
    light = []
    for g in gains:
        f = arithmetic_features(g * clip, 1, ops=("sub", "div"))[1, 0]
        light.append({"gain": g, "rms subtraction": _rms(f[0]), "rms log-division": _rms(f[1])})
    res.tables["brightness gain"] = light
    sub_range = light[-1]["rms subtraction"] / light[0]["rms subtraction"]
    div_rms = [r["rms log-division"] for r in light]
    div_range = max(div_rms) / min(div_rms)
    res.claim("log-division is normalised: ~invariant to a brightness gain, unlike subtraction",
              "division normalises the difference",
              f"gain x{gains[-1]:g}: subtraction x{sub_range:.1f}, log-division x{div_range:.2f}",
              "reproduced" if div_range < 1.5 and sub_range > 0.9 * gains[-1] else "not reproduced",
              div_range)
    res.notes.append(f"subtraction is non-zero only around the moving square (max |sub| outside "
                     f"it {outside:.1e}); the last anchor's context is clamped to itself, so its "
                     f"subtraction is {last:.1e} (seed layout)")

    if ctx.plots:
        res.figures.append(_plot(ctx, clip, sub, div, rows, light, direction))
    return res


def moving_square_clip(size: int, side: float, edge: float, u, frames: int) -> np.ndarray:
    """``(T, 1, size, size)`` frames of a soft-edged square moving by ``u = (dx, dy)`` per frame.

    The square's profile is a box convolved with a Gaussian of std ``edge`` (rendered
    analytically with erf), so every frame is the exact translate of the first.
    """
    coords = np.arange(size, dtype=np.float64)
    centre = (size - 1) / 2.0 - 0.5 * (frames - 1) * np.asarray(u, float)  # stay in frame

    def profile(x, c):
        s = math.sqrt(2.0) * edge
        return 0.5 * (_erf((x - c + side / 2) / s) - _erf((x - c - side / 2) / s))

    clip = np.empty((frames, 1, size, size))
    for t in range(frames):
        cx, cy = centre + t * np.asarray(u, float)
        clip[t, 0] = BACKGROUND + (SQUARE - BACKGROUND) * np.outer(profile(coords, cy),
                                                                    profile(coords, cx))
    return clip


def displacement_from_subtraction(sub: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Least-squares ``u`` in ``sub = A_t - A_t+1 ~ grad(A_t) . u`` (forward motion ``(dx, dy)``).

    A_{t+1}(p) = A_t(p - u), so to first order A_t - A_{t+1} = grad(A_t) . u.
    Central differences for the gradient; one window over the whole frame.
    """
    gy, gx = np.gradient(anchor)
    g = np.stack([gx.ravel(), gy.ravel()], axis=1)
    u, *_ = np.linalg.lstsq(g, sub.ravel(), rcond=None)
    return u


def _erf(x):
    from scipy.special import erf
    return erf(x)


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _dilated(mask, r: int = 3):
    from scipy.ndimage import binary_dilation
    return binary_dilation(mask, iterations=r)


def _plot(ctx, clip, sub, div, rows, light, direction):
    fig, ax = new_figure(
        ctx, "Seed 003 (ATM): subtracting and log-dividing neighbouring frames",
        "Top: the square moves 1 px/frame towards the lower right; A_t - A_t+1 is a +/- pair at "
        "the trailing/leading edges and log-division has the same sign. Bottom: the motion read "
        "back from the subtraction matches the truth for small motions; a brightness gain scales "
        "subtraction "
        "but barely changes log-division.", 2, 3, size=(13, 8.2))
    image(ax[0, 0], clip[1, 0], "anchor frame A_t (intensity 20..200)", colorbar=fig)
    h, w = clip.shape[-2:]
    ax[0, 0].annotate("", xy=(w / 2 + 8 * direction[0], h / 2 + 8 * direction[1]),
                      xytext=(w / 2, h / 2), arrowprops={"color": PAPER_COLOUR, "width": 2})
    ax[0, 0].text(0.03, 0.04, "true motion: 1 px/frame", color=PAPER_COLOUR, fontsize=9,
                  transform=ax[0, 0].transAxes)
    image(ax[0, 1], sub, "subtraction A_t - A_t+1 (intensity units)", cmap="RdBu_r",
          symmetric=True, colorbar=fig)
    image(ax[0, 2], div, "log-division log(A_t+1) - log(A_t+1 + 1)", cmap="RdBu_r",
          symmetric=True, colorbar=fig)
    ax[0, 2].set_title("log-division log(A_t + 1) - log(A_{t+1} + 1)", fontsize=9)
    ax[0, 1].set_title("subtraction A_t - A_{t+1} (intensity units)", fontsize=9)
    a = ax[1, 0]
    v = np.array([r["true speed px/frame"] for r in rows])
    est = np.array([math.hypot(r["estimated dx"], r["estimated dy"]) for r in rows])
    a.plot(v, v, "--", color=PAPER_COLOUR, label="true motion (ideal)")
    a.plot(v, est, "o-", color=LMREF_COLOUR, label="read back from A_t - A_{t+1}")
    a.axvspan(0, SMALL_SPEED, color="0.9", zorder=0, label="first-order range (<= 1 px/frame)")
    a.set_xlabel("true speed (px / frame)")
    a.set_ylabel("estimated speed (px / frame)")
    a.set_title("subtraction vs true motion", fontsize=10)
    a.legend(fontsize=8)
    a = ax[1, 1]
    a.plot(v, [100 * r["relative error"] for r in rows], "o-", color=LMREF_COLOUR)
    a.axhline(100 * SPEED_TOL, color=PAPER_COLOUR, ls="--", label=f"{100 * SPEED_TOL:g}% tolerance")
    a.axvspan(0, SMALL_SPEED, color="0.9", zorder=0, label="first-order range")
    a.set_xlabel("true speed (px / frame)")
    a.set_ylabel("|u_est - u| / |u|  (%)")
    a.set_yscale("log")
    a.set_title("error of the motion read from subtraction", fontsize=10)
    a.legend(fontsize=8)
    a = ax[1, 2]
    g = [r["gain"] for r in light]
    s0, d0 = light[0]["rms subtraction"], light[0]["rms log-division"]
    a.plot(g, [r["rms subtraction"] / s0 for r in light], "s-", color="tab:orange",
           label="subtraction")
    a.plot(g, [r["rms log-division"] / d0 for r in light], "o-", color=LMREF_COLOUR,
           label="log-division (eps = 1)")
    a.plot(g, g, ":", color="0.5", label="proportional to the gain")
    a.set_xscale("log", base=2)
    a.set_yscale("log", base=2)
    a.set_xlabel("brightness gain applied to the clip")
    a.set_ylabel("RMS of the feature / RMS at gain 1")
    a.set_title("normalisation: log-division ignores brightness", fontsize=10)
    a.legend(fontsize=8)
    return ctx.savefig(fig, "arithmetic.png")
