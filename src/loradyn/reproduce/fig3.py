"""Fig. 3: misaligned pre-training w0 = mu w* + sqrt(1-mu^2) v (App. A.1).

Aligned and misaligned one-pass SGD (:func:`loradyn.engines.simulate`, ``pretraining``)
at the same mu: the escape from the search phase is the same.
"""

from __future__ import annotations

import numpy as np

from . import _common as C
from .registry import FigureContext, FigureOutput, register

# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
ESTIMATE = {"quick": 3.7, "paper": 37.0}
ACTS = ("linear", "erf")


def settings(scale: str) -> dict:
    return C.pick(
        scale,
        test=dict(d=1000, batch=100, lr=0.2, steps=400, seeds=2, mus=(0.3, 0.6)),
        quick=dict(d=1000, batch=500, lr=0.2, steps=1500, seeds=4, mus=(0.2, 0.5, 0.7)),
        paper=dict(d=1000, batch=500, lr=0.2, steps=10000, seeds=10, mus=(0.2, 0.4, 0.6, 0.8)),
    )


@register("fig3", "misaligned pre-training (App. A.1)")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    s = settings(ctx.scale)
    runs = {}
    k = 0
    for a in ACTS:
        for pre in ("aligned", "misaligned"):
            span = (k / 4 * 0.9, (k + 1) / 4 * 0.9)
            k += 1
            ctx.progress(span[0], f"{a}, {pre}")
            runs[a, pre] = C.simulate(ctx, span, teacher=a, mu=s["mus"], d=s["d"], lr=s["lr"],
                                      batch=s["batch"], steps=s["steps"], seeds=s["seeds"],
                                      pretraining=pre)
    fig, axs = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True)
    for j, a in enumerate(ACTS):
        for pre, ls in (("aligned", "-"), ("misaligned", "--")):
            ds = runs[a, pre]
            for i, mu in enumerate(ds["mu"].values):
                lab = rf"$\mu$={mu:g} {pre}"
                col = C.color(i, ds["mu"].size)
                C.plot_median(axs[0, j], ds, "mse", mu, col, lab, logy=True, ls=ls, band=False)
                C.plot_median(axs[1, j], ds, "m", mu, col, None, absolute=True, ls=ls,
                              band=False)
        axs[0, j].set(title=f"{a}: test MSE", ylabel="test MSE", ylim=(1e-17, 10))
        axs[1, j].set(title=f"{a}: overlap", xlabel="SGD step", ylabel="|m|", ylim=(0, 1.05))
    axs[0, 0].legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig3")
    data = [C.save_dataset(runs[key], ctx, f"fig3_{key[0]}_{key[1]}") for key in runs]

    parts, ratios, mono = [], [], True
    for a in ACTS:
        ea, em = C.first_below(runs[a, "aligned"]), C.first_below(runs[a, "misaligned"])
        with np.errstate(invalid="ignore"):
            ratios.extend((em / ea).tolist())
        # all-inf would be vacuously monotone: the smallest mu must learn within the budget
        mono &= bool(np.isfinite(ea[0]) and np.isfinite(em[0]) and C.is_monotone(em, True)
                     and C.is_monotone(ea, True))
        parts.append(f"{a}: aligned {C.fmt_list(ea)} vs misaligned {C.fmt_list(em)}")
    ratios = np.asarray(ratios)
    ok = bool(np.all(np.isfinite(ratios)) and np.all((ratios > 0.6) & (ratios < 1.6)))
    mis = runs["linear", "misaligned"]
    p_end = np.nanmedian(np.abs(mis["p"].values[:, :, -1]), axis=1)
    m_end = np.nanmedian(np.abs(mis["m"].values[:, :, -1]), axis=1)
    m_pred = np.sqrt((1 - mis["mu"].values) / 2)
    claims = [
        C.claim("A1-same-phenomenology", "App. A.1",
                "With misaligned pre-training the same phenomenology holds: larger mu delays "
                "learning", "; ".join(parts) + " (first step where the median test MSE is "
                f"below 10% of its start, mu={s['mus']}; inf: not within the budget)",
                "non-decreasing in mu for both models, the smallest mu learning",
                bool(mono)),
        C.claim("A1-same-escape", "App. A.1",
                "The extra term sqrt(1-mu^2) v has no effect on the dynamics: misaligned and "
                "aligned models learn at the same time",
                f"ratio misaligned/aligned of the times above: {C.fmt_list(ratios)}",
                "ratio within [0.6, 1.6]", ok),
        C.claim("A1-p-stays-small", "App. A.1",
                "The overlap p = w.v stays O(1/sqrt d) (v and w remain orthogonal)",
                f"linear, final |p| at mu={s['mus']}: {C.fmt_list(p_end)}; final |m|: "
                f"{C.fmt_list(m_end)} (the minimizer w ~ (1-mu) w* - sqrt(1-mu^2) v has "
                f"|m| = sqrt((1-mu)/2) = {C.fmt_list(m_pred)})",
                f"|p| ~ 1/sqrt(d) = {1 / np.sqrt(s['d']):.3f}",
                bool(np.all(p_end < 3 / np.sqrt(s["d"])))),
    ]
    cap = (
        "Aligned (solid, lambda = (mu w* + u w).x) versus misaligned (dashed, lambda = "
        "(mu w* + sqrt(1-mu^2) v + u w).x, v a random unit vector orthogonal to w*) "
        f"pre-training, one-pass spherical SGD for {', '.join(ACTS)} at mu = {s['mus']}; "
        f"d={s['d']}, lr={s['lr']}, batch={s['batch']}, {s['steps']} steps, {s['seeds']} seeds, "
        f"engine {ctx.engine}; median over seeds. The test MSE differs by the extra "
        "pre-activation variance. In the misaligned model the LoRA direction must also cancel "
        "the v component, so |m| ends at sqrt((1-mu)/2), not 1."
    )
    return FigureOutput(cap, files, data, claims)
