"""Seed 000, Theorem 3: white noise keeps its variance through a unit-normal convolution.

The residual frame delta ~ N(0, sigma^2) becomes delta' = delta C after a convolution whose
weights have d Var[C] = 1 (d = fan-in); the theorem concludes Var[delta'] = sigma^2. The proof
averages over the weights: for one fixed kernel the variance is sigma^2 * sum(w^2)
(lmref.motion.noise_gain), a chi-square / d spread around 1. We draw many unit-normal kernels
(one task each, seeded from its index), estimate Var[delta'] by Monte-Carlo and compare the
average with sigma^2, for a small fan-in (d = 9) and a typical one (d = 144).
"""
from __future__ import annotations

import numpy as np

from lmref.reproduce._core import ExperimentResult, register, task_rng
from lmref.reproduce._plotting import LMREF_COLOUR, new_figure, reference_line

SIGMA = 2.0
#: kernel shapes (C_out, C_in, kH, kW) and their fan-in d = C_in kH kW
SHAPES = {"d = 9 (1 channel, 3x3)": (1, 1, 3, 3), "d = 144 (16 channels, 3x3)": (1, 16, 3, 3)}
Z_CRIT = 4.0  # |mean - 1| within 4 standard errors (a 6e-5 false-alarm rate)


@register("noise", "Seed 000, Theorem 3: variance of the propagated residual vs sigma^2 over "
                   "many unit-normal kernels")
def run(ctx) -> ExperimentResult:
    res = ExperimentResult("noise")
    kernels = ctx.size(150, 2000)
    frame, trials = ctx.size(16, 24), ctx.size(8, 16)
    tasks = [(name, k, frame, trials) for name in SHAPES for k in range(kernels)]
    out = ctx.map("Monte-Carlo over kernels", noise_task, tasks)
    stats, rows = {}, []
    for name in SHAPES:
        r = [o for t, o in zip(tasks, out) if t[0] == name]
        ratio = np.array([o["mc_var"] for o in r]) / SIGMA**2
        gain = np.array([o["gain"] for o in r])
        mean = np.array([o["mc_mean"] for o in r])
        se = ratio.std(ddof=1) / np.sqrt(ratio.size)
        stats[name] = {"ratio": ratio, "gain": gain, "mean": ratio.mean(), "se": se,
                       "mu": mean.mean() / SIGMA,
                       "mu_se": mean.std(ddof=1) / SIGMA / np.sqrt(mean.size)}
        rows.append({"kernels": name, "n": ratio.size, "mean Var/sigma^2": ratio.mean(),
                     "std. error": se, "5%": np.percentile(gain, 5), "95%": np.percentile(gain, 95),
                     "median |MC/exact - 1|": float(np.median(np.abs(ratio / gain - 1))),
                     "mean of delta' / sigma": stats[name]["mu"]})
    res.tables["Var[delta'] / sigma^2 over unit-normal kernels"] = rows

    for name, s in stats.items():
        z = abs(s["mean"] - 1.0) / s["se"]
        res.claim(f"Thm 3: Var[delta C] = sigma^2 (average over kernels, {name.split(' (')[0]})",
                  "Var[delta'] = sigma^2",
                  f"{s['ratio'].size} kernels: mean Var/sigma^2 = {s['mean']:.3f} +- "
                  f"{s['se']:.3f} ({z:.1f} std. errors from 1)",
                  "reproduced" if z <= Z_CRIT else "not reproduced", s["mean"])
    z_mean = max(abs(s["mu"]) / s["mu_se"] for s in stats.values())
    worst_mean = max(abs(s["mu"]) for s in stats.values())
    res.claim("Thm 3, eq. 4: E[delta'] = 0", "zero mean",
              f"mean of delta' over all kernels and samples: |mean| <= {worst_mean:.4f} sigma "
              f"({z_mean:.1f} std. errors from 0)",
              "reproduced" if z_mean <= Z_CRIT else "not reproduced", worst_mean)
    d9, d144 = rows
    res.claim("one fixed kernel: Var[delta C] = sigma^2 sum(w^2), not sigma^2",
              "(the proof averages over weights)",
              f"5-95% of sum(w^2): {d9['5%']:.2f}-{d9['95%']:.2f} (d = 9), {d144['5%']:.2f}-"
              f"{d144['95%']:.2f} (d = 144); Monte-Carlo matches each kernel's exact gain "
              f"(median deviation {100 * max(r['median |MC/exact - 1|'] for r in rows):.1f}%)",
              "info",
              d144["95%"] - d144["5%"])

    if ctx.plots:
        res.figures.append(_plot(ctx, stats, kernels))
    return res


def noise_task(task, seed):
    """One kernel: draw it, its exact gain and a Monte-Carlo estimate of Var[delta']."""
    from lmref.motion import noise_gain, propagate_noise, unit_normal_weights

    name, k, frame, trials = task
    rng = task_rng(seed, "noise", name, k)
    shape = SHAPES[name]
    w = unit_normal_weights(shape, rng)
    est = propagate_noise(w, SIGMA, (shape[1], frame, frame), trials, rng)
    return {"gain": float(noise_gain(w)[0]), "mc_var": float(est.var[0]),
            "mc_mean": float(est.mean[0])}


def _plot(ctx, stats, kernels):
    fig, ax = new_figure(
        ctx, "Seed 000, Theorem 3: noise variance through unit-normal convolutions",
        f"Histograms over {kernels} random kernels (d Var[w] = 1) of the Monte-Carlo variance of "
        f"delta' = delta C, in units of sigma^2 (sigma = {SIGMA:g}). The average sits on the "
        "paper's value 1; a single kernel scatters around it, less so for a larger fan-in d.",
        1, 2, size=(12, 4.4), sharey=False)
    every = np.concatenate([np.concatenate([s["ratio"], s["gain"]]) for s in stats.values()])
    bins = np.linspace(0.0, 1.05 * every.max(), 50)  # one scale for both: compare the spreads
    for a, (name, s) in zip(ax[0], stats.items()):
        a.hist(s["ratio"], bins=bins, color=LMREF_COLOUR, alpha=0.7,
               label="Monte-Carlo Var[delta'] / sigma^2")
        a.hist(s["gain"], bins=bins, histtype="step", color="k", lw=1.2,
               label="exact gain sum(w^2) of each kernel")
        a.axvline(s["mean"], color="navy", lw=3, alpha=0.6,
                  label=f"mean over kernels: {s['mean']:.3f} +- {s['se']:.3f}")
        reference_line(a, 1.0, "paper: Var[delta'] = sigma^2", axis="x")
        a.set_xlabel("Var[delta'] / sigma^2  (variance gain)")
        a.set_ylabel("number of kernels")
        a.set_title(name, fontsize=10)
        a.legend(fontsize=8)
    return ctx.savefig(fig, "noise_variance.png")
