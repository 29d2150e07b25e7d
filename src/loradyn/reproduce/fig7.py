"""Fig. 7: the plateau of even Hermite students after the search phase (App. E.5).

One-pass SGD for He_4 (learning rate scaled by 1/(K!K) = 1/96) at several mu: the mean is
learned at once, the test error then sits on a plateau that shortens as mu grows.
"""

from __future__ import annotations

import numpy as np

from . import _common as C
from . import stats as S
from .registry import FigureContext, FigureOutput, register

# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
ESTIMATE = {"quick": 2.7, "paper": 13.0}
K = 4


def settings(scale: str) -> dict:
    return C.pick(
        scale,
        test=dict(d=1000, batch=100, lr=0.05, steps=500, seeds=1, mus=(0.1, 0.7)),
        quick=dict(d=1000, batch=500, lr=0.05, steps=4000, seeds=2, mus=(0.1, 0.3, 0.5, 0.7)),
        paper=dict(d=1000, batch=500, lr=0.05, steps=10000, seeds=5,
                   mus=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)),
    )


@register("fig7", "plateau of even Hermite students (App. E.5)")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    s = settings(ctx.scale)
    scale = 24.0 * K
    ds = C.simulate(ctx, (0.0, 0.9), teacher=f"he{K}", mu=s["mus"], d=s["d"],
                    lr=s["lr"] / scale, batch=s["batch"], steps=s["steps"], seeds=s["seeds"])
    fig, axs = plt.subplots(1, 3, figsize=(13, 3.8))
    for i, mu in enumerate(ds["mu"].values):
        col = C.color(i, ds["mu"].size)
        C.plot_median(axs[0], ds, "mse", mu, col, rf"$\mu$={mu:g}", logy=True)
        C.plot_median(axs[1], ds, "m", mu, col, absolute=True)
        C.plot_median(axs[2], ds, "u", mu, col)
    axs[0].set(xlabel="SGD step", ylabel="test MSE", title=f"He$_{K}$: test error")
    axs[1].set(xlabel="SGD step", ylabel="|m|", title="overlap", ylim=(0, 1.05))
    axs[2].set(xlabel="SGD step", ylabel="u", title="LoRA scale")
    axs[0].legend(fontsize=7)
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig7")
    data = [C.save_dataset(ds, ctx, f"fig7_he{K}")]

    mse = np.nanmedian(np.asarray(ds["mse"].values, dtype=float), axis=1)
    steps = ds["step"].values
    mus = np.asarray(ds["mu"].values, dtype=float)
    each = C.first_below_each(ds, 0.5)  # (mu, seed); NaN: diverged
    half = np.nanmedian(each, axis=1)
    trend = S.trend_test(np.repeat(mus, each.shape[1]), each.ravel(), "decreasing")
    n_div = int(np.isnan(each).sum())
    m_end = np.nanmedian(np.abs(ds["m"].values[:, :, -1]), axis=1)
    drop0 = (mse[0, 0] - mse[0, 1]) / mse[0, 0]
    claims = [C.claim(
        "E5-plateau", "App. E.5",
        "Even Hermite (He_4): after a fast first drop the test error sits on a plateau for small "
        "mu while m keeps growing; the plateau shortens as mu increases",
        f"median first step with MSE < half its initial value for mu={C.fmt_list(mus)}: "
        f"{C.fmt_list(half)} (inf: never within {s['steps']} steps); {trend.text}; final |m|: "
        f"{C.fmt_list(m_end)}; relative MSE drop by step {int(steps[1])} at mu="
        f"{mus[0]:g}: {C.fmt(drop0)}" + (f"; {n_div} diverged trajectories excluded"
                                         if n_div else ""),
        "time to halve the test error decreasing in mu: Kendall trend test over every "
        f"(mu, seed), censored at the budget, one-sided p < {S.ALPHA}", trend.verdict)]
    cap = (
        f"He_{K} teacher = student, one-pass spherical SGD at mu = {s['mus']}; learning rate "
        f"{s['lr']}/(K!K) = {s['lr'] / scale:.3g} (K!K = {int(scale)}), d={s['d']}, "
        f"batch={s['batch']}, {s['steps']} steps, {s['seeds']} seeds, engine {ctx.engine}; median "
        "over seeds (band: min-max). Left: exact test MSE; middle: |m|; right: u."
    )
    return FigureOutput(cap, files, data, claims)
