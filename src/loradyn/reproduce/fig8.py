"""Fig. 8: the mechanical picture of the search phase (App. F).

Potential :math:`V(m) = -b^2m^2/2`, trajectory and energy
:math:`E = \\dot m^2/2 + V(m)` with :math:`\\dot E = -a\\dot m^2`, all from
:func:`loradyn.mechanics.mechanics_dataset`.
"""

from __future__ import annotations

import numpy as np

from ..linearization import coefficients
from ..mechanics import mechanics_dataset
from . import _common as C
from .registry import FigureContext, FigureOutput, register

# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
ESTIMATE = {"quick": 1.4, "paper": 2.5}
MUS = (0.0, 0.25, 0.5, 0.75, 0.9)
AMPLIFIED = ("he4", (0.05, 0.1))  # a < 0 there: negative friction


@register("fig8", "mechanical potential and energy of the search phase (App. F)")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    nt = C.pick(ctx.scale, test=201, quick=401, paper=2001)
    t = np.linspace(0.0, 8.0, nt)
    lin = mechanics_dataset(MUS, teacher="linear", t=t, u0=0.0, m0=0.01)
    ctx.progress(0.3, "amplified case (He4, a < 0)")
    amp = mechanics_dataset(AMPLIFIED[1], teacher=AMPLIFIED[0], t=np.linspace(0, 0.2, nt),
                            u0=0.0, m0=0.01)
    ctx.progress(0.6, "drawing")

    fig, axs = plt.subplots(1, 3, figsize=(12, 3.5))
    for i, mu in enumerate(MUS):
        col = C.COLORS[i]
        axs[0].plot(lin["m"], lin["V"].sel(mu=mu), color=col, label=rf"$\mu$={mu:g}")
        axs[1].semilogy(t, np.abs(lin["m_t"].sel(mu=mu)), color=col, label=rf"$\mu$={mu:g}")
        axs[2].semilogy(t, -lin["E"].sel(mu=mu), color=col, label=rf"$\mu$={mu:g}")
    axs[0].set(xlabel="m", ylabel=r"$V(m) = -b^2 m^2/2$", title="potential (linear activation)")
    axs[1].set(xlabel="t", ylabel="|m(t)|", title="particle leaving the top (m0=0.01, u0=0)")
    axs[2].set(xlabel="t", ylabel=r"$-E = -\dot m^2/2 - V(m)$ (log)",
               title=r"energy decreasing: $dE/dt = -a\,\dot m^2$")
    axs[0].legend()
    ins = axs[2].inset_axes([0.55, 0.1, 0.4, 0.36])
    for j, mu in enumerate(amp["mu"].values):
        ins.plot(amp["t"], amp["E"].sel(mu=mu), color=C.COLORS[5 + j],
                 label=rf"He$_4$ $\mu$={mu:g}")
    ins.set_title("He$_4$, a<0: energy grows", fontsize=7)
    ins.tick_params(labelsize=6)
    ins.legend(fontsize=6)
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig8")
    data = [C.save_dataset(lin, ctx, "fig8_linear"), C.save_dataset(amp, ctx, "fig8_he4")]

    # claims
    a_lin = lin["a"].values
    dE = np.diff(lin["E"].values, axis=1)
    fd = np.gradient(lin["E"].values, t, axis=1)
    pred = lin["dE_dt"].values
    relerr = float(np.max(np.abs(fd[:, 2:-2] - pred[:, 2:-2])) /
                   max(float(np.max(np.abs(pred))), 1e-300))
    a_amp = amp["a"].values
    dE_amp = np.diff(amp["E"].values, axis=1)
    mus_b = np.linspace(0.0, 0.999, 200)
    _, b = coefficients("linear", mus_b)
    curv_err = float(np.max(np.abs(b * b - (1 - mus_b) ** 2)))
    claims = [
        C.claim("F-energy-damped", "App. F",
                "When a > 0 the energy E = m'^2/2 + V(m) decreases along the search phase",
                f"linear: a = {C.fmt_list(a_lin)}; max step change of E: {C.fmt(dE.max())}; "
                f"finite-difference dE/dt vs -a m'^2: relative error {C.fmt(relerr)}",
                "dE/dt <= 0 and = -a m'^2", bool(np.all(a_lin > 0) and dE.max() <= 1e-15
                                                   and relerr < 1e-2)),
        C.claim("F-energy-amplified", "App. F",
                "When a < 0 the velocity term injects energy (E increases)",
                f"He4 at mu={AMPLIFIED[1]}: a = {C.fmt_list(a_amp)}; min step change of E: "
                f"{C.fmt(dE_amp.min())}", "dE/dt >= 0",
                bool(np.all(a_amp < 0) and dE_amp.min() >= -1e-15)),
        C.claim("F-flat-potential", "App. F / E.2",
                "For the linear activation the curvature b^2 = (1-mu)^2 of the potential vanishes "
                "as mu->1 (and a = 1)",
                f"max |b^2 - (1-mu)^2| on mu in [0, 0.999]: {C.fmt(curv_err)}; b^2(0.999) = "
                f"{C.fmt(b[-1] ** 2)}; a = {C.fmt_list(np.unique(np.round(a_lin, 12)))}",
                "b^2 = (1-mu)^2 -> 0", curv_err < 1e-10 and b[-1] ** 2 < 1e-5),
    ]
    cap = (
        "App. F mechanical picture of the linearized search phase, m'' + a m' - b^2 m = 0 "
        f"(exact solution of d/dt (u, m) = J (u, m), u0 = 0, m0 = 0.01). Linear activation, "
        f"mu = {MUS}: left, the inverted-parabola potential V(m) = -b^2 m^2/2, flattening as "
        "mu -> 1 (b = -(1 - mu)); middle, |m(t)| leaving the top; right, minus the energy "
        "E = m'^2/2 + V(m) on a log scale: E decreases since a = 1 > 0 (friction). Inset: He_4 at "
        f"mu = {AMPLIFIED[1]}, where a < 0 and the energy grows (negative friction). ODE time "
        "units (learning rate 1); no simulation."
    )
    return FigureOutput(cap, files, data, claims)
