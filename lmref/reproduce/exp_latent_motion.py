"""Seed 001: motion in latent space is the input motion scaled by 1 / n^k (eq. 12).

lmref has no trained network, so the "edge sub-model" is lmref.layers.feature_extractor: a
fixed random conv -> ReLU -> 2x2 max-pool stack (He initialisation), depth 1-3 (stride 2, 4, 8;
the paper's ResNet-34 "add 3" layer has stride 8). The image is lmref's generated textured test
image (1/f texture plus sharp-edged objects), not the paper's photograph of a dog.

* Fig. 5: NRMSE (eq. 13) between the features of the moved frame and the reference features
  moved by v / stride, over translation, rotation, scaling and shear sweeps; the paper finds
  "up to about 0.04" and local minima at integer latent shifts.
* Fig. 6: NRMSE histogram over random seven-parameter affine motions.
* Eq. 14: both compared with the 0.009-0.044 NRMSE band of HEVC motion compensation.
* Fig. 2: block matching (31x31, +-11 on the frame; 3x3, +-5 on the feature map) on a clip of a
  textured object moving over a still background: the motion found in feature channels is the
  input motion divided by the stride.
* Conventions (issue 16): Fig. 2 and Fig. 5 under lmref's reading of the text and under the
  authors' published notebook (``convention="authors"`` of block_match and nrmse): the
  notebook's calls (31x31 blocks with search window 11 = +-5 on the frame, 5x5 blocks with
  window 3 = +-1 per feature channel) and its NRMSE (R over the whole target tensor).

Excluded from eq. 13, as in the paper: what enters the frame; also (``MARGIN``) the feature
pixels next to it and to the frame border, whose receptive fields see the entering content
or the convolutions' zero padding (no motion model can predict those).

Every sweep point and every random affine motion is one task of ``ctx.map``; the image and
the network are built from the run's seed alone, and each affine motion from its index.
"""
from __future__ import annotations

import functools

import numpy as np

from lmref.reproduce._core import ExperimentResult, register, task_rng, task_seed
from lmref.reproduce._images import moving_object_pair, textured_image
from lmref.reproduce._plotting import (LMREF_COLOUR, PAPER_COLOUR, image, new_figure, quiver,
                                       reference_band)

PSNR_RANGE = (27.0, 41.0)       # dB, HEVC motion compensation (seed 001, from [20])
BAND = (0.009, 0.044)           # eq. 14 as printed
MARGIN = 1                      # feature pixels left out next to unpredictable regions
AFFINE = {"translation": 32.0, "scale": 0.05, "shear": 5.0, "rotation": 10.0}  # Fig. 6 ranges
FIG2_SHIFT = (8, -8)            # object motion (dx, dy) px in Fig. 2's clip: (1, -1) latent
FIG2_DEPTH = 3                  # stride 8, as ResNet-34's "add 3" (224 -> 28)
#: Fig. 2 block-matching calls (block size, search argument) per convention: the paper's text
#: (lmref: +-s), the notebook's calls and the text's ranges as notebook windows (side 2 s + 1)
FIG2_CALLS = [("lmref", "paper's text", (31, 11), (3, 5)),
              ("authors", "notebook's calls", (31, 11), (5, 3)),
              ("authors", "paper's ranges", (31, 23), (3, 11))]


@register("latent_motion", "Seed 001: latent motion v / n^k, NRMSE sweeps (Fig. 5), random affine "
                           "(Fig. 6) vs eq. 14, block matching (Fig. 2)")
def run(ctx) -> ExperimentResult:
    from lmref.blockmatch import psnr_to_nrmse

    res = ExperimentResult("latent_motion")
    size, channels = ctx.size(128, 224), ctx.size(8, 16)
    depths = ctx.size((2, 3), (1, 2, 3))

    # --- eq. 14: the PSNR range of video coding as NRMSE
    lo, hi = psnr_to_nrmse(PSNR_RANGE[1]), psnr_to_nrmse(PSNR_RANGE[0])
    res.claim("eq. 14: PSNR 27-41 dB <-> NRMSE 0.009-0.044", "0.009-0.044",
              f"{lo:.4f}-{hi:.4f}", _verdict(round(lo, 3) == BAND[0] and round(hi, 3) == BAND[1]),
              hi)

    # --- Fig. 5: sweeps
    sweeps = {
        "translation": ctx.size(np.arange(0, 25, 1.0), np.arange(0, 33, 1.0)),
        "rotation": ctx.size(np.linspace(-10, 10, 9), np.linspace(-10, 10, 21)),
        "scaling": ctx.size(np.linspace(0.9, 1.1, 9), np.linspace(0.9, 1.1, 21)),
        "shear": ctx.size(np.linspace(-10, 10, 9), np.linspace(-10, 10, 21)),
    }
    tasks = [(kind, float(v), d, size, channels) for kind, values in sweeps.items()
             for d in depths for v in values]
    nrmse = dict(zip(tasks, ctx.map("Fig. 5 sweeps", sweep_task, tasks)))  # (lmref, authors)
    curves = _curves(nrmse, sweeps, depths, size, channels, "lmref")
    authors_curves = _curves(nrmse, sweeps, depths, size, channels, "authors")
    rows = [{"motion": kind, "stride": 2**d, "range": f"{values[0]:g}..{values[-1]:g}",
             "max NRMSE": float(curves[(kind, d)].max()),
             "mean NRMSE": float(curves[(kind, d)].mean())}
            for kind, values in sweeps.items() for d in depths]
    res.tables["Fig. 5: NRMSE of eq. 12 per sweep"] = rows
    worst = max(r["max NRMSE"] for r in rows)
    res.claim("Fig. 5: NRMSE of v' = v / n^k stays <= ~0.04 over the sweeps: as accurate as "
              "HEVC motion compensation (eq. 14)", "up to ~0.04; HEVC band 0.009-0.044",
              f"max {worst:.4f} over translation, rotation, scaling, shear at strides "
              f"{', '.join(str(2**d) for d in depths)}", _verdict(worst <= BAND[1]), worst)
    minima = _translation_minima(sweeps["translation"], curves, depths)
    res.claim("Fig. 5: translation NRMSE has local minima at integer latent shifts",
              "minima where t / n^k is an integer",
              "; ".join(f"stride {2**d}: minima at t = {', '.join(f'{m:g}' for m in mins)} px"
                        for d, mins in minima.items()),
              _verdict(all(len(m) >= 2 and all(x % 2**d == 0 for x in m)
                           for d, m in minima.items())), None)

    # --- Fig. 6: random seven-parameter affine motions at the deepest layer
    n_affine = ctx.size(80, 400)
    deepest = depths[-1]
    atasks = [(i, deepest, size, channels) for i in range(n_affine)]
    affine = ctx.map("Fig. 6 random affine motions", affine_task, atasks)
    values = np.array([a["nrmse"] for a in affine])
    authors_values = np.array([a["nrmse (authors)"] for a in affine])
    inside = float(np.mean(values <= BAND[1]))
    res.tables["Fig. 6: random affine NRMSE"] = [
        {"motions": n_affine, "stride": 2**deepest, "median": float(np.median(values)),
         "95th percentile": float(np.percentile(values, 95)), "max": float(values.max()),
         "fraction <= 0.044": inside}]
    res.claim("Fig. 6: random 7-parameter affine motions give NRMSE <= 0.044 (eq. 14's band)",
              "histogram within ~0.009-0.044",
              f"{n_affine} motions, stride {2**deepest}: median {np.median(values):.4f}, "
              f"max {values.max():.4f}; {100 * inside:.0f}% <= 0.044",
              _verdict(inside >= 0.95), float(np.median(values)))

    # --- Fig. 2: block matching in the frame vs in feature channels
    bm = _block_matching(ctx, channels)
    res.tables["Fig. 2: block-matched motion on the object"] = bm["rows"]
    best = bm["rows"][0]
    res.claim("Fig. 2: motion block-matched in feature channels ~ input motion / 8",
              "similar fields (qualitative)",
              f"object interior, summed channels: mean cosine {best['mean cosine']:.2f}, "
              f"end-point error {best['EPE (latent px)']:.2f} latent px vs the block-matched input "
              f"motion / 8",
              _verdict(best["mean cosine"] >= 0.8 and best["EPE (latent px)"] <= 1.0),
              best["mean cosine"])
    _conventions(res, sweeps, curves, authors_curves, depths, values, authors_values, bm)
    res.notes.append(f"extractor: feature_extractor(depth, {channels}, seed) (conv 3x3 'same' "
                     f"zeros -> ReLU -> 2x2 max-pool); image {size}x{size}; eq. 13 over the "
                     f"predictable region eroded by {MARGIN} feature pixel(s)")

    if ctx.plots:
        res.figures.append(_plot_sweeps(ctx, sweeps, curves, depths, size))
        res.figures.append(_plot_affine(ctx, values, affine, deepest, size, channels))
        res.figures.append(_plot_block_matching(ctx, bm))
    return res


# ----------------------------------------------------------------------------- tasks
@functools.lru_cache(maxsize=8)
def _setup(seed: int, size: int, depth: int, channels: int):
    """The test image and the network of a run (cached per process: a worker builds them once)."""
    from lmref.layers import feature_extractor

    img = textured_image(size, task_rng(seed, "latent_motion image", size))
    net, stride = feature_extractor(depth, channels, task_seed(seed, "network") % 2**32)
    return img, net, stride


def _nrmse(seed, size, depth, channels, **motion) -> tuple[float, float]:
    """Eq. 13 of one motion: lmref's (R over the mask) and the authors' (R over the tensor)."""
    from lmref.blockmatch import latent_motion_error, nrmse
    from lmref.motion import affine_flow

    img, net, stride = _setup(seed, size, depth, channels)
    flow = affine_flow(img.shape, **motion)
    r = latent_motion_error(net, img, flow, stride, margin=MARGIN)
    return r.nrmse, nrmse(r.predicted, r.actual, r.mask, convention="authors")


def sweep_task(task, seed) -> tuple[float, float]:
    """One point of a Fig. 5 sweep: ``(kind, value, depth, size, channels)`` -> NRMSE under
    lmref's and the authors' convention."""
    kind, v, depth, size, channels = task
    motion = {"translation": {"translation": (v, 0.0)}, "rotation": {"rotation": v},
              "scaling": {"scale": (v, v)}, "shear": {"shear": (v, 0.0)}}[kind]
    return _nrmse(seed, size, depth, channels, **motion)


def affine_params(rng) -> dict:
    """Fig. 6's seven independent uniform parameters."""
    t, s, sh, r = (AFFINE[k] for k in ("translation", "scale", "shear", "rotation"))
    return {"translation": tuple(rng.uniform(-t, t, 2)),
            "scale": tuple(rng.uniform(1 - s, 1 + s, 2)),
            "shear": tuple(rng.uniform(-sh, sh, 2)), "rotation": float(rng.uniform(-r, r))}


def affine_task(task, seed) -> dict:
    """One random affine motion of Fig. 6: ``(index, depth, size, channels)``."""
    i, depth, size, channels = task
    params = affine_params(task_rng(seed, "affine", i))
    value, authors = _nrmse(seed, size, depth, channels, **params)
    return {"nrmse": value, "nrmse (authors)": authors, **params}


def _curves(nrmse, sweeps, depths, size, channels, convention) -> dict:
    """``(kind, depth) -> NRMSE along the sweep`` under one convention."""
    i = ("lmref", "authors").index(convention)
    return {(kind, d): np.array([nrmse[(kind, float(v), d, size, channels)][i] for v in values])
            for kind, values in sweeps.items() for d in depths}


def _translation_minima(values, curves, depths) -> dict:
    out = {}
    for d in depths:
        c = curves[("translation", d)]
        out[d] = [float(values[i]) for i in range(len(c))
                  if (i == 0 or c[i] < c[i - 1]) and (i == len(c) - 1 or c[i] < c[i + 1])]
    return out


def _verdict(ok: bool) -> str:
    return "reproduced" if ok else "not reproduced"


# ----------------------------------------------------------------------------- Fig. 2
def _block_matching(ctx, channels) -> dict:
    from lmref.blockmatch import block_match, motion_similarity
    from lmref.layers import feature_extractor
    from lmref.motion import scale_flow

    size = 224  # the paper's geometry: 224x224 frames, 28x28 feature maps (cheap either way)
    ref, cur, true_flow, obj = moving_object_pair(size, FIG2_SHIFT, ctx.rng("fig2 clip"))
    net, stride = feature_extractor(FIG2_DEPTH, channels, task_seed(ctx.seed, "network") % 2**32)
    flow_in, _ = block_match(ref, cur, 31, 11)
    f_ref, f_cur = net(ref), net(cur)
    flow_sum, _ = block_match(f_ref, f_cur, 3, 5, channels="sum")
    flow_each, _ = block_match(f_ref, f_cur, 3, 5, channels="each")
    expected = scale_flow(flow_in, stride, sample="center")   # eq. 12 applied to the measurement
    true_latent = scale_flow(true_flow, stride, sample="center")
    interior = _latent_interior(obj, stride)
    activity = f_ref.reshape(f_ref.shape[0], -1).std(axis=1)
    shown = [int(c) for c in np.argsort(activity)[::-1][:3]]
    rows = []
    for label, field in [("all channels (SSD summed)", flow_sum)] + \
            [(f"channel {c}", flow_each[c]) for c in shown]:
        sim = motion_similarity(field, expected, interior)
        rows.append({"latent field": label, "mean cosine": sim.mean_cosine,
                     "EPE (latent px)": sim.epe,
                     "EPE vs true / 8": motion_similarity(field, true_latent, interior).epe})
    return {"rows": rows, "ref": ref, "cur": cur, "flow_in": flow_in, "obj": obj,
            "f_ref": f_ref, "f_cur": f_cur, "flow_sum": flow_sum, "flow_each": flow_each,
            "shown": shown, "stride": stride, "interior": interior, "expected": expected}


def _latent_interior(obj, stride):
    """Latent pixels whose whole stride x stride window lies on the object, one pixel in."""
    h = obj.shape[0] // stride
    window = obj[:h * stride, :h * stride].reshape(h, stride, h, stride).all(axis=(1, 3))
    return window & np.roll(window, 1, 0) & np.roll(window, -1, 0) \
        & np.roll(window, 1, 1) & np.roll(window, -1, 1)


# ----------------------------------------------------------------------------- conventions
def _fig2_convention_row(bm, convention, calls, frame_call, feature_call) -> dict:
    """Fig. 2 under one convention: the frame's motion on the object, and the latent fields
    (all channels summed; each channel) against the frame's motion / stride and the truth.

    lmref's flow is the backward map on the current frame (``-shift`` on the object there);
    the authors' is forward on the reference frame (``+shift`` on the object there).
    """
    from lmref.blockmatch import block_match, motion_similarity
    from lmref.motion import scale_flow

    s, (dx, dy) = bm["stride"], FIG2_SHIFT
    if convention == "lmref":
        obj, sign = bm["obj"], -1.0
    else:
        obj, sign = np.roll(bm["obj"], (-dy, -dx), axis=(0, 1)), 1.0
    kw = {"convention": convention}
    flow_in = block_match(bm["ref"], bm["cur"], *frame_call, **kw)[0]
    fields = {c: block_match(bm["f_ref"], bm["f_cur"], *feature_call, channels=c, **kw)[0]
              for c in ("sum", "each")}
    interior = _latent_interior(obj, s)
    truth = (sign * dx / s, sign * dy / s)
    summed = motion_similarity(fields["sum"], scale_flow(flow_in, s, sample="center"), interior)
    return {"convention": convention, "calls": calls,
            "frame call": _call_text(convention, *frame_call),
            "feature call": _call_text(convention, *feature_call),
            "frame: object pixels = true motion": _share(flow_in[obj], (sign * dx, sign * dy)),
            "summed channels: interior = true / 8": _share(fields["sum"][interior], truth),
            "summed channels: mean cosine vs frame / 8": summed.mean_cosine,
            "per channel: interior = true / 8": _share(fields["each"][:, interior], truth)}


def _share(vectors, target) -> float:
    """Fraction of the ``(..., 2)`` vectors equal to ``target``."""
    return float(np.mean(np.all(vectors == target, axis=-1)))


def _ratio_range(authors, lmref) -> str:
    """``min..max`` of ``authors / lmref`` (= lmref's R / the authors' R) where lmref's NRMSE
    is not 0 (no motion)."""
    some = lmref > 0
    r = authors[some] / lmref[some]
    return f"{r.min():.3f}..{r.max():.3f}" if r.size else "-"


def _call_text(convention, block_size, search) -> str:
    """``search_range`` is +-s under lmref's convention, a window side under the authors'."""
    reach = f"+-{search}" if convention == "lmref" else f"window {search} = +-{search // 2}"
    return f"{block_size}x{block_size}, {reach}"


def _conventions(res, sweeps, curves, authors_curves, depths, values, authors_values, bm):
    """Rows comparing lmref's reading of the text with the authors' notebook (issue 16)."""
    rows = [_fig2_convention_row(bm, *call) for call in FIG2_CALLS]
    res.tables["Conventions: Fig. 2 block matching, lmref vs the authors' notebook"] = rows
    lm, nb = rows[0], rows[1]
    res.claim("Conventions: Fig. 2 under the authors' notebook (window 11 = +-5 on the frame, "
              "5x5 blocks with window 3 = +-1 per channel) vs lmref's reading of the text",
              "31x31, +-11 (frame); 3x3, +-5 (features)",
              f"share of the object moving by the true {FIG2_SHIFT} px found on the frame: "
              f"lmref {lm['frame: object pixels = true motion']:.2f}, notebook "
              f"{nb['frame: object pixels = true motion']:.2f} (+-5 cannot reach 8 px); "
              f"latent vectors = true / 8, per channel: lmref "
              f"{lm['per channel: interior = true / 8']:.2f}, notebook "
              f"{nb['per channel: interior = true / 8']:.2f}", "info",
              nb["frame: object pixels = true motion"])
    deepest = depths[-1]
    table = [{"motion": kind, "stride": 2**d,
              "max NRMSE, lmref (R over the mask)": float(curves[(kind, d)].max()),
              "max NRMSE, authors (R over the tensor)": float(authors_curves[(kind, d)].max()),
              "authors / lmref": _ratio_range(authors_curves[(kind, d)], curves[(kind, d)])}
             for kind in sweeps for d in depths]
    table.append({"motion": "Fig. 6 random affine", "stride": 2**deepest,
                  "max NRMSE, lmref (R over the mask)": float(values.max()),
                  "max NRMSE, authors (R over the tensor)": float(authors_values.max()),
                  "authors / lmref": _ratio_range(authors_values, values)})
    res.tables["Conventions: Fig. 5 / Fig. 6 NRMSE, lmref vs the authors' R"] = table
    worst = max(r["max NRMSE, lmref (R over the mask)"] for r in table)
    worst_nb = max(r["max NRMSE, authors (R over the tensor)"] for r in table)
    res.claim("Conventions: Fig. 5 NRMSE with the notebook's R (max - min of the whole target "
              "tensor; the MSE over the mask) vs lmref's R (over the mask)",
              "up to ~0.04", f"max over the sweeps and Fig. 6: lmref {worst:.4f}, notebook "
              f"{worst_nb:.4f}", "info", worst_nb)


# ----------------------------------------------------------------------------- figures
def _plot_sweeps(ctx, sweeps, curves, depths, size):
    units = {"translation": "x-translation t (px)", "rotation": "rotation (degrees)",
             "scaling": "scale factor (x and y)", "shear": "x-shear (degrees)"}
    fig, ax = new_figure(
        ctx, "Seed 001, Fig. 5: how well v' = v / stride predicts the features of a moved frame",
        f"NRMSE (eq. 13) between the features of the moved {size}x{size} test image and the "
        "reference features moved by the scaled input motion, per layer (stride 2^k). Shaded: the "
        f"0.009-0.044 band of HEVC motion compensation (eq. 14). Dotted lines: shifts by "
        f"multiples of "
        f"{2 ** depths[-1]} px (integer latent shifts at stride {2 ** depths[-1]}), where "
        "translation minima occur.", 2, 2, size=(12, 8))
    colours = {1: "tab:green", 2: "tab:orange", 3: LMREF_COLOUR}
    for a, (kind, values) in zip(ax.ravel(), sweeps.items()):
        reference_band(a, *BAND, "eq. 14 band (27-41 dB)")
        for d in depths:
            a.plot(values, curves[(kind, d)], "o-", ms=3, color=colours[d],
                   label=f"stride {2**d} (depth {d})")
        if kind == "translation":
            for m in np.arange(0, values[-1] + 1, 2 ** depths[-1]):
                a.axvline(m, color="0.5", ls=":", lw=1)
        a.set_xlabel(units[kind])
        a.set_ylabel("NRMSE")
        a.set_title(kind, fontsize=10)
        a.set_ylim(0, max(BAND[1] * 1.15, max(curves[(kind, d)].max() for d in depths) * 1.1))
        a.grid(alpha=0.3)
    ax[0, 1].legend(*ax[0, 0].get_legend_handles_labels(), loc="upper center", ncol=2,
                    fontsize=8, framealpha=0.9)
    return ctx.savefig(fig, "latent_motion_sweeps.png")


def _plot_affine(ctx, values, affine, depth, size, channels):
    from lmref.blockmatch import latent_motion_error
    from lmref.motion import affine_flow

    fig, ax = new_figure(
        ctx, "Seed 001, Fig. 6 / Fig. 4: random seven-parameter affine motions",
        f"Top: one random affine motion (the median-NRMSE one): moved frame, one feature channel "
        f"of it "
        f"(actual), the same channel predicted from the reference frame by eq. 12, and their "
        f"difference (grey: excluded). Bottom: NRMSE of {len(values)} random motions (x/y shift "
        f"+-32 px, x/y scale 0.95-1.05, x/y shear +-5 deg, rotation +-10 deg) vs eq. 14's band.",
        size=(12, 8), mosaic=[["moved", "actual", "predicted", "diff"], ["hist"] * 4],
        height_ratios=[1, 1.1])
    median = int(np.argsort(values)[len(values) // 2])
    p = {k: affine[median][k] for k in ("translation", "scale", "shear", "rotation")}
    img, net, stride = _setup(ctx.seed, size, depth, channels)
    r = latent_motion_error(net, img, affine_flow(img.shape, **p), stride, margin=MARGIN)
    c = int(np.argmax(r.actual.reshape(r.actual.shape[0], -1).std(axis=1)))
    vmax = float(r.actual[c].max())
    image(ax["moved"], r.moved, "moved frame (input)")
    for key, data, title in (("actual", r.actual[c], f"actual: channel {c}, stride {stride}"),
                             ("predicted", r.predicted[c], "predicted: reference moved by v/8")):
        ax[key].imshow(np.where(r.mask, data, np.nan), cmap="magma", vmin=0, vmax=vmax,
                       interpolation="nearest")
        ax[key].set_title(title, fontsize=9)
        ax[key].set_xticks([])
        ax[key].set_yticks([])
        ax[key].set_facecolor("0.8")
    diff = np.where(r.mask, r.predicted[c] - r.actual[c], np.nan)
    image(ax["diff"], diff, f"predicted - actual (NRMSE {r.nrmse:.3f})", cmap="RdBu_r",
          symmetric=False)
    ax["diff"].images[0].set_clim(-vmax / 2, vmax / 2)
    ax["diff"].set_facecolor("0.8")
    a = ax["hist"]
    reference_band(a, *BAND, "eq. 14 band: HEVC motion compensation (27-41 dB)", axis="x")
    a.hist(values, bins=30, color=LMREF_COLOUR, alpha=0.8, label=f"lmref, stride {stride}")
    a.axvline(np.median(values), color="navy", lw=2, label=f"median {np.median(values):.4f}")
    a.set_xlim(0, max(0.05, 1.05 * values.max()))
    a.set_xlabel("NRMSE of the eq. 12 prediction (eq. 13)")
    a.set_ylabel("number of motions")
    a.legend(fontsize=8)
    return ctx.savefig(fig, "latent_motion_affine.png")


def _plot_block_matching(ctx, bm):
    s = bm["stride"]
    fig, ax = new_figure(
        ctx, "Seed 001, Fig. 2: block-matched motion in the frame and in feature channels",
        f"A textured object (red outline) moves by {FIG2_SHIFT[0]} px right and "
        f"{-FIG2_SHIFT[1]} px "
        f"up over a still background; arrows show the motion found by block matching, in pixels "
        f"of each grid. Left: on the 224x224 frames (31x31 blocks, +-11). Right: on the "
        f"{224 // s}x{224 // s} feature maps (3x3 blocks, +-5), all channels together and two "
        f"single channels: the same motion, divided by the stride {s} (eq. 12), noisier in "
        f"flat channels.", 1, 4, size=(15, 4.6))
    quiver(ax[0, 0], -bm["flow_in"], 14, f"frame: motion in px (expected {FIG2_SHIFT})",
           background=bm["cur"])
    ax[0, 0].contour(bm["obj"], levels=[0.5], colors=PAPER_COLOUR, linewidths=1)
    rows = {r["latent field"]: r for r in bm["rows"]}
    panels = [("all channels (SSD summed)", bm["flow_sum"], bm["f_ref"].mean(axis=0))]
    panels += [(f"channel {c}", bm["flow_each"][c], bm["f_ref"][c]) for c in bm["shown"][:2]]
    expected = (FIG2_SHIFT[0] / s, FIG2_SHIFT[1] / s)
    for a, (label, field, background) in zip(ax[0, 1:], panels):
        r = rows[label]
        quiver(a, -field, 1, f"features, {label}: cos {r['mean cosine']:.2f}, EPE "
               f"{r['EPE (latent px)']:.2f}\n(expected ({expected[0]:g}, {expected[1]:g}) "
               f"latent px)", background=background)
        a.contour(bm["interior"], levels=[0.5], colors=PAPER_COLOUR, linewidths=1)
    return ctx.savefig(fig, "latent_motion_block_matching.png")
