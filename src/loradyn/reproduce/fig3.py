"""Fig. 3: misaligned pre-training w0 = mu w* + sqrt(1-mu^2) v (App. A.1).

Aligned and misaligned one-pass SGD (:func:`loradyn.engines.simulate`, ``pretraining``)
at the same mu: the escape from the search phase is the same.
"""

from __future__ import annotations

import numpy as np

from . import _common as C
from . import stats as S
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

    mus = np.asarray(s["mus"], dtype=float)
    first = {key: C.first_below_each(runs[key]) for key in runs}  # (mu, seed), NaN: diverged
    n_div = {key: int(np.isnan(v).sum()) for key, v in first.items()}
    div_note = "" if not sum(n_div.values()) else (
        "; diverged trajectories excluded: " + ", ".join(
            f"{a} {p}: {k}" for (a, p), k in n_div.items() if k))
    parts, trends, cells, cell_v, ks_p = [], [], [], [], []
    for a in ACTS:
        ea, em = first[a, "aligned"], first[a, "misaligned"]
        t = S.trend_test(np.repeat(mus, em.shape[1]), em.ravel(), "increasing")
        trends.append(t.verdict)
        parts.append(f"{a}: median aligned {C.fmt_list(np.nanmedian(ea, axis=1))} vs misaligned "
                     f"{C.fmt_list(np.nanmedian(em, axis=1))}; misaligned {t.text}")
        for i, mu in enumerate(mus):
            est, lo, hi = S.bootstrap_ratio_ci(em[i], ea[i])
            cell_v.append(S.interval_verdict(lo, hi, 0.8, 1.25))
            ks_p.append(S.ks_test(em[i], ea[i])[1])
            cells.append(f"{a} mu={mu:g}: {S.fmt_ci(est, lo, hi)}")
    mis = runs["linear", "misaligned"]
    p_all = np.abs(np.asarray(mis["p"].values[:, :, -1], dtype=float))
    ok_div = ~np.asarray(mis["diverged"].values).astype(bool) if "diverged" in mis else \
        np.ones(p_all.shape, bool)
    p_end = np.nanmedian(p_all, axis=1)
    m_end = np.nanmedian(np.abs(mis["m"].values[:, :, -1]), axis=1)
    m_pred = np.sqrt((1 - mis["mu"].values) / 2)
    small = p_all[ok_div] < 3 / np.sqrt(s["d"])
    prop = S.proportion_test(int(small.sum()), int(small.size), 0.5)
    claims = [
        C.claim("A1-same-phenomenology", "App. A.1",
                "With misaligned pre-training the same phenomenology holds: larger mu delays "
                "learning", "; ".join(parts) + " (per trajectory: first step where its test "
                f"MSE is below 10% of its start, mu={s['mus']}; inf: not within the budget)"
                + div_note,
                "learning step increasing in mu for the misaligned model, both activations: "
                f"Kendall trend test over every (mu, seed), one-sided p < {S.ALPHA}",
                S.combine(trends)),
        C.claim("A1-same-escape", "App. A.1",
                "The extra term sqrt(1-mu^2) v has no effect on the dynamics: misaligned and "
                "aligned models learn at the same time",
                "ratio misaligned/aligned of the median learning steps, bootstrap 95% CI: "
                + "; ".join(cells) + f"; two-sample KS p-values {C.fmt_list(ks_p, 2)}" + div_note,
                "every CI inside [0.8, 1.25] (no effect, up to a 25% margin); a CI outside it: "
                "fails; straddling an edge: inconclusive", S.combine(cell_v)),
        C.claim("A1-p-stays-small", "App. A.1",
                "The overlap p = w.v stays O(1/sqrt d) (v and w remain orthogonal)",
                f"linear, median final |p| at mu={s['mus']}: {C.fmt_list(p_end)}; trajectories "
                f"with final |p| < 3/sqrt(d): {prop.text}; final |m|: {C.fmt_list(m_end)} (the "
                "minimizer w ~ (1-mu) w* - sqrt(1-mu^2) v has |m| = sqrt((1-mu)/2) = "
                f"{C.fmt_list(m_pred)})",
                f"|p| < 3/sqrt(d) = {3 / np.sqrt(s['d']):.3f} in most trajectories: binomial test "
                f"against 1/2, p < {S.ALPHA}", prop.verdict),
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
