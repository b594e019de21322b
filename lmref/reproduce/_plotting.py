"""Figure helpers shared by the experiments: one look for every plot.

Every figure gets a bold title naming the paper's figure or theorem and, underneath the
axes, a one-line caption saying what to look at. The paper's reference value is drawn in
with :func:`reference_line` / :func:`reference_band` so a reader can judge at a glance.
"""
from __future__ import annotations

import numpy as np

#: colours used for "the paper says" and "lmref measured" throughout
PAPER_COLOUR = "tab:red"
LMREF_COLOUR = "tab:blue"


def new_figure(ctx, title: str, caption: str, nrows: int = 1, ncols: int = 1,
               size: tuple[float, float] = (7.0, 4.5), *, mosaic=None, **kwargs):
    """A figure with ``nrows x ncols`` axes (always a 2-D array), a title and a caption.

    With ``mosaic`` (see ``plt.subplot_mosaic``) the axes come back as a dict instead.
    """
    if mosaic is not None:
        fig, axes = ctx.plt.subplot_mosaic(mosaic, figsize=size, layout="constrained", **kwargs)
    else:
        fig, axes = ctx.plt.subplots(nrows, ncols, figsize=size, squeeze=False,
                                     layout="constrained", **kwargs)
    fig.suptitle(title, fontweight="bold", fontsize=12)
    # the caption sits below everything; bbox_inches="tight" keeps it in the saved PNG
    fig.text(0.5, -0.01, caption, ha="center", va="top", fontsize=9, style="italic",
             wrap=True)
    return fig, axes


def reference_band(ax, lo: float, hi: float, label: str, *, axis: str = "y"):
    """Shade the paper's range [lo, hi] on the y (or x) axis."""
    span = ax.axhspan if axis == "y" else ax.axvspan
    span(lo, hi, color=PAPER_COLOUR, alpha=0.12, label=label, zorder=0)


def reference_line(ax, value: float, label: str, *, axis: str = "y", style: str = "--"):
    """Draw the paper's value as a dashed line on the y (or x) axis."""
    line = ax.axhline if axis == "y" else ax.axvline
    line(value, color=PAPER_COLOUR, linestyle=style, linewidth=1.5, label=label)


def image(ax, data, title: str, *, cmap: str = "gray", symmetric: bool = False, colorbar=None):
    """Show a 2-D array with no ticks; ``symmetric`` centres a diverging map on 0."""
    kw = {}
    if symmetric:
        m = float(np.max(np.abs(data))) or 1.0
        kw = {"vmin": -m, "vmax": m}
    im = ax.imshow(data, cmap=cmap, interpolation="nearest", **kw)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if colorbar is not None:
        colorbar.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    return im


def quiver(ax, flow, step: int, title: str, *, scale: float | None = None,
           background=None, colour: str = LMREF_COLOUR):
    """Arrows of a flow field ``(H, W, 2)`` (dx, dy) every ``step`` pixels, image orientation."""
    h, w = flow.shape[:2]
    ys, xs = np.mgrid[step // 2:h:step, step // 2:w:step]
    if background is not None:
        ax.imshow(background, cmap="gray", interpolation="nearest", alpha=0.5)
    ax.quiver(xs, ys, flow[ys, xs, 0], flow[ys, xs, 1], color=colour, angles="xy",
              scale_units="xy", scale=scale or 1.0, width=0.006)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
