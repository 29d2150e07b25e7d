"""Fig. 6: mean of an even Hermite student at the start of the search phase (App. E.5).

:math:`E[\\mathrm{He}_K(\\mu z)] = (\\mu^2-1)^{K/2}(K-1)!!` from
:func:`loradyn.hermite.student_mean_dataset` (quadrature and closed form).
"""

from __future__ import annotations

import numpy as np

from ..hermite import label_expansion, student_information_exponent, student_mean_dataset
from . import _common as C
from .registry import FigureContext, FigureOutput, register

# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
ESTIMATE = {"quick": 1.1, "paper": 1.3}
DEGREES = (2, 4, 6, 8)


@register("fig6", "mean of even Hermite students versus mu")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    n = C.pick(ctx.scale, test=101, quick=201, paper=1001)
    mu = np.linspace(0.0, 1.0, n)
    ds = student_mean_dataset(DEGREES, mu)
    ctx.progress(0.5, "drawing")
    mean = ds["mean"].values
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, k in enumerate(DEGREES):
        axs[0].plot(mu, mean[i], color=C.COLORS[i], label=f"He$_{k}$")
        axs[1].semilogy(mu[:-1], np.abs(mean[i][:-1]), color=C.COLORS[i], label=f"He$_{k}$")
    axs[0].axhline(0, color="k", lw=0.6)
    axs[0].set(xlabel=r"$\mu$", ylabel=r"$E[\mathrm{He}_K(\mu z)]$",
               title="mean of the student at (u, m) = (0, 0)")
    axs[1].set(xlabel=r"$\mu$", ylabel=r"$|E[\mathrm{He}_K(\mu z)]|$", title="magnitude (log)")
    axs[0].legend()
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig6")
    data = [C.save_dataset(ds, ctx, "fig6_mean")]

    err = float(np.max(np.abs(ds["mean"].values - ds["closed_form"].values)))
    inner = (mu > 0) & (mu < 1)
    nonzero = bool(np.all(np.abs(mean[:, inner]) > 0))
    at1 = np.abs(mean[:, -1])
    i5 = int(np.argmin(np.abs(mu - 0.5)))
    mags = np.abs(mean[:, i5])
    # where the ordering in K first breaks
    incr = np.all(np.diff(np.abs(mean), axis=0) > 0, axis=0)
    flip = float(mu[np.argmax(~incr & (mu > 0))]) if np.any(~incr & (mu > 0)) else float("nan")
    claims = [
        C.claim("E5-mean", "App. E.5",
                "The mean of an even He_K student is non-zero for mu<1 and vanishes at mu=1",
                f"min |mean| on 0<mu<1: {C.fmt(np.min(np.abs(mean[:, inner])))}; |mean| at mu=1: "
                f"{C.fmt_list(at1)} for K={DEGREES}; quadrature vs closed form max error "
                f"{C.fmt(err)}", "non-zero inside, 0 at mu=1",
                nonzero and bool(np.all(at1 < 1e-10))),
        C.claim("E5-mean-degree", "Sec. 3.2 / App. E.5",
                "The magnitude of the mean increases with the Hermite degree",
                f"|mean| at mu=0.5 for K={DEGREES}: {C.fmt_list(mags)}; the order in K holds "
                f"for mu < {C.fmt(flip)} and reverses above", "increasing in K",
                C.is_monotone(mags, True)),
    ]
    ie = {(k, q): student_information_exponent(f"he{k}", q) for k in (3, 4, 5, 6)
          for q in (0.5, 1.0)}
    sq_ie = {k: label_expansion(f"he{k}").information_exponent() for k in (3, 4, 5, 6)}
    claims.append(C.claim(
        "B3-student-ie", "Sec. 2.2 / App. B.3",
        "With a pre-activation variance Q != 1 the student's information exponent (standard "
        "basis) is at most 2",
        "IE of He_K(sqrt(Q) x): " + ", ".join(f"K={k}: Q=0.5 -> {ie[k, 0.5]}, Q=1 -> {ie[k, 1.0]}"
                                               for k in (3, 4, 5, 6)),
        "<= 2 for Q != 1 (K for Q = 1)",
        all(ie[k, 0.5] is not None and ie[k, 0.5] <= 2 and ie[k, 1.0] == k for k in (3, 4, 5, 6))))
    claims.append(C.claim(
        "B4-square-ie", "Sec. 3.3 / App. B.4",
        "Squaring a pure He_K label leaves He_2 as its lowest non-constant Hermite term",
        "IE of He_K^2: " + ", ".join(f"K={k}: {v}" for k, v in sq_ie.items()),
        "2 for every K", all(v == 2 for v in sq_ie.values())))
    cap = (
        f"Mean E[He_K(mu z)], z ~ N(0,1), of a pure even Hermite student at the search-phase "
        f"start (u, m) = (0, 0), for K = {DEGREES} on {n} values of mu in [0, 1] "
        "(Gauss-Hermite quadrature; equals (mu^2-1)^(K/2) (K-1)!!). Natural units (no K!K "
        "factor). Right: magnitude on a log scale."
    )
    return FigureOutput(cap, files, data, claims)
