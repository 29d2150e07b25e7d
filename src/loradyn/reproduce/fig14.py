"""Fig. 14: full He_2 dynamics of the two-layer LoRA model for several ranks (App. K).

Loss against time for ranks ``r = 1..K`` at two pre-training strengths: the closed-form
ODE (:func:`loradyn.twolayer.simulate` with ``engine='ode'``, finite-step term included)
and one-pass SGD (``ctx.engine``), both averaged over the same random starts. The
search-phase length is set by the ``mu_k`` (it barely moves with ``r``), the loss reached
after it by the rank.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..twolayer import TwoLayerConfig, summary, tau
from . import _common as C
from . import stats as S
from .registry import VERDICTS, Claim, FigureContext, FigureOutput, register

ACT = "he2-norm"
# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py);
# quick doubled for 4 seeds (was 2)
# (+ the erf / ReLU rows of fig14_general, estimated from their loaded-machine share)
ESTIMATE = {"test": 12.0, "quick": 17.0, "paper": 900.0}
ACTS_GENERAL = ("erf", "relu")  # panels in the reference code's readout (norm = auto)
DENSE_MAX_D = 2000  # the dense engine costs O(B d) per step: cap d (and B = d / 2) there


def settings(scale: str) -> dict:
    return C.pick(
        scale,
        test=dict(K=3, d=500, batch=250, lr=0.1, steps=400, seeds=2,
                  mus=((0.5, 0.5, 0.5), (0.8, 0.8, 0.8))),
        quick=dict(K=4, d=1000, batch=500, lr=0.1, steps=600, seeds=4,
                   mus=((0.5,) * 4, (0.8,) * 4)),
        paper=dict(K=4, d=10000, batch=5000, lr=0.05, steps=2400, seeds=10,
                   mus=((0.5,) * 4, (0.8,) * 4, (0.3, 0.5, 0.7, 0.9))),
    )


def _final(ds: xr.Dataset) -> np.ndarray:
    """Seed-mean loss at the last step, per rank."""
    return np.array([row["loss_final"] for row in summary(ds)])


def _seed_finals(ds: xr.Dataset) -> np.ndarray:
    """Final (last finite) loss per (rank, seed)."""
    L = np.asarray(ds.loss.values, dtype=float)  # (rank, seed, step)
    out = np.full(L.shape[:2], np.nan)
    for i in range(L.shape[0]):
        for j in range(L.shape[1]):
            row = L[i, j][np.isfinite(L[i, j])]
            out[i, j] = row[-1] if row.size else np.nan
    return out


def rank_verdict(finals: dict, L0: dict) -> tuple[str, str]:
    """K2: per setting, the ratio of the seed-mean final loss of rank r+1 to rank r, with a
    bootstrap 95% CI over seeds, must lie below 0.95, and the rank-K final loss below 5% of
    the initial loss. ``finals[p]`` has dims (rank, seed)."""
    verdicts, parts = [], []
    for p, f in finals.items():
        cells = []
        for r in range(f.shape[0] - 1):
            est, lo, hi = S.bootstrap_ratio_ci(f[r + 1], f[r], stat=np.mean, seed=r)
            verdicts.append(S.interval_verdict(lo, hi, 0.0, 0.95))
            cells.append(f"r{r + 2}/r{r + 1} {S.fmt_ci(est, lo, hi, 2)}")
        est, lo, hi = S.bootstrap_ci(f[-1] / L0[p], np.mean)
        verdicts.append(S.interval_verdict(lo, hi, 0.0, 0.05))
        cells.append(f"r=K / initial {S.fmt_ci(est, lo, hi, 2)}")
        parts.append(f"setting {p}: " + ", ".join(cells))
    return S.combine(verdicts), "; ".join(parts)


def search_phase_test(seed_esc: dict, n_boot: int = 2000, seed: int = 0) -> tuple[str, str]:
    """K2b as a test: ``seed_esc[p]`` holds escape times (rank, seed) of setting ``p``.

    Bootstrap (seeds resampled within each (setting, rank)) of the largest relative spread
    over ranks and of the ratio of the largest to the smallest setting mean.
    """
    def stats_of(arrs):
        means = [a.mean(axis=-1) for a in arrs]
        sp = max(float(np.ptp(m) / np.mean(m)) for m in means)
        em = [float(np.mean(m)) for m in means]
        return sp, max(em) / min(em)

    arrs = list(seed_esc.values())
    sp, ratio = stats_of(arrs)
    n = min(a.shape[-1] for a in arrs)
    if n < 2 or not (np.isfinite(sp) and np.isfinite(ratio)):
        return "inconclusive", (f"spread {C.fmt(sp)}, ratio {C.fmt(ratio)}: no interval "
                                f"({n} seed(s) or a rank with no escape)")
    rng = np.random.default_rng(seed)
    boots = np.array([stats_of([np.take_along_axis(a, rng.integers(0, a.shape[-1], a.shape),
                                                   axis=-1) for a in arrs])
                      for _ in range(n_boot)])
    sp_lo, sp_hi = np.quantile(boots[:, 0], [0.025, 0.975])
    r_lo, r_hi = np.quantile(boots[:, 1], [0.025, 0.975])
    v = S.combine([S.interval_verdict(sp_lo, sp_hi, 0.0, 0.3),
                   S.interval_verdict(r_lo, r_hi, 1.5, np.inf)])
    return v, (f"bootstrap: largest spread {S.fmt_ci(sp, sp_lo, sp_hi, 2)}, ratio "
               f"{S.fmt_ci(ratio, r_lo, r_hi, 2)}")


def search_phase_verdict(escapes: dict) -> tuple[dict, float, bool]:
    """Claim K2b from the mean escape time per rank of each pre-training setting.

    Returns the relative spread over ranks per setting, the ratio of the largest to the
    smallest setting mean, and whether the spread stays below 0.3 while the settings differ
    by more than 1.5x. A NaN (a rank where no seed escaped) makes the claim fail: ``np.max``
    propagates it where the builtin ``max`` could skip it.
    """
    spread = {p: float(np.ptp(e) / np.mean(e)) for p, e in escapes.items()}
    e_mean = [float(np.mean(e)) for e in escapes.values()]
    ratio = float(np.max(e_mean) / np.min(e_mean))
    ok = bool(np.max(list(spread.values())) < 0.3 and ratio > 1.5)
    return spread, ratio, ok


def general_settings(scale: str) -> dict:
    """erf and relu panels (norm = auto: 1/sqrt(K) for erf, 1/K for relu) and the seeds of
    the App. K verdicts; lr scaled with 1/nu^2 so both run on the same time grid."""
    return C.pick(
        scale,
        test=dict(K=2, d=300, batch=300, steps=60, seeds=4, ode_seeds=1,
                  lr={"erf": 0.4, "relu": 1.2},
                  mus={"erf": ((0.2,) * 3, (0.4,) * 3), "relu": ((0.3,) * 3, (0.6,) * 3)}),
        quick=dict(K=3, d=1000, batch=1000, steps=120, seeds=6, ode_seeds=1,
                   lr={"erf": 0.4, "relu": 1.2},
                   mus={"erf": ((0.2,) * 3, (0.35,) * 3), "relu": ((0.3,) * 3, (0.5,) * 3)}),
        paper=dict(K=3, d=10000, batch=5000, steps=1500, seeds=40, ode_seeds=4,
                   lr={"erf": 0.15, "relu": 0.45},
                   mus={"erf": ((0.2,) * 3, (0.4,) * 3), "relu": ((0.3,) * 3, (0.6,) * 3)}),
    )


def _general_panels(ctx: FigureContext, axs, engine: str, data: list, rows: list,
                    span: tuple[float, float]) -> list:
    """erf / relu: ODE and SGD loss for ranks 1..K at the first setting; SGD at both
    settings feeds the verdicts on App. K's two statements."""
    from ..twolayer.verdicts import escape_verdict, final_loss_verdict

    g = general_settings(ctx.scale)
    K = g["K"]
    ranks = list(range(1, K + 1))
    claims = []
    for a_i, act in enumerate(ACTS_GENERAL):
        lr = g["lr"][act]
        esc: dict[str, dict[int, np.ndarray]] = {}
        fin: dict[str, dict[int, np.ndarray]] = {}
        ax = axs[a_i]
        for p, mu in enumerate(g["mus"][act]):
            f0 = span[0] + (span[1] - span[0]) * (2 * a_i + p) / 4
            ctx.progress(f0, f"{act}, mu = {mu[0]:g}: {engine}")
            cfg = TwoLayerConfig(mu=list(mu), rank=1, activation=act, norm="auto", d=g["d"],
                                 lr=lr, batch=g["batch"], steps=g["steps"], seeds=g["seeds"],
                                 seed0=ctx.seed, record_every=max(1, g["steps"] // 30))
            sim = C.simulate_twolayer(ctx, cfg.replace(ranks=ranks, engine=engine))
            data.append(C.save_dataset(sim, ctx, f"fig14_{act}_mu{p}_{engine}"))
            key = f"mu={mu[0]:g}"
            esc[key] = {r: sim.escape_step.sel(rank=r).values * lr for r in ranks}
            fin[key] = {r: _last(sim.loss.sel(rank=r).values) for r in ranks}
            ode = None
            if p == 0:
                ode = C.simulate_twolayer(ctx, cfg.replace(seeds=g["ode_seeds"], ranks=ranks,
                                                           engine="ode"))
                data.append(C.save_dataset(ode, ctx, f"fig14_{act}_mu{p}_ode"))
                t = ode.time.values
                for j, r in enumerate(ranks):
                    ax.plot(t, ode.loss.sel(rank=r).mean("seed"), "-", color=C.COLORS[j],
                            label=f"r = {r} ODE")
                    ax.plot(t, sim.loss.sel(rank=r).mean("seed"), "o", ms=2.2,
                            color=C.COLORS[j], alpha=0.7, label=f"r = {r} {engine}")
            else:
                for j, r in enumerate(ranks):
                    ax.plot(sim.time.values, sim.loss.sel(rank=r).mean("seed"), ":",
                            color=C.COLORS[j], lw=1.0,
                            label=f"r = {r} {engine}, mu = {mu[0]:g}" if j == 0 else None)
            for r in ranks:
                e = esc[key][r]
                rows.append({"mu": " ".join(f"{m:g}" for m in mu), "rank": r,
                             "activation": act, "norm": cfg.norm_used,
                             "escape_time_median": float(np.median(np.where(e >= 0, e, np.inf))),
                             "loss_final_sim": float(np.nanmean(fin[key][r])),
                             "loss_final_ode": (float(_last(ode.loss.sel(rank=r).values).mean())
                                                if ode is not None else float("nan"))})
        ax.set_yscale("log")
        ax.set(title=f"{act}, K = {K}, norm {cfg.norm_used}, mu_k = "
                     f"{g['mus'][act][0][0]:g} (solid/points), {g['mus'][act][1][0]:g} (dotted)",
               xlabel="time (step x lr)")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=6, ncol=2)
        ev = escape_verdict(esc, cap=(g["steps"] + 1) * lr)
        fv = final_loss_verdict(fin)
        claims.append(Claim(
            f"K3-{act}", "App. K",
            f"{act}: the pretrained weights primarily control the escape from the search "
            "phase (not the LoRA rank)",
            f"{ev.measured} ({g['seeds']} seeds per rank, ranks {ranks}, {engine} SGD, "
            f"random starts, K = {K}, d = {g['d']})", ev.criterion, _verdict(ev.verdict)))
        claims.append(Claim(
            f"K4-{act}", "App. K",
            f"{act}: the LoRA rank mainly shapes the subsequent descent phase and the final "
            "attainable loss",
            f"{fv.measured} (after {g['steps']} steps, {g['seeds']} seeds per rank)",
            fv.criterion, _verdict(fv.verdict)))
    return claims


def _last(L: np.ndarray) -> np.ndarray:
    """Last finite recorded loss of each seed (NaN when none)."""
    return np.array([row[np.isfinite(row)][-1] if np.isfinite(row).any() else np.nan
                     for row in np.atleast_2d(L)])


def _verdict(v: str) -> str:
    """The verdict, or ``fails`` where this build's claims table has no ``inconclusive``."""
    return v if v in VERDICTS else "fails"


@register("fig14", "two-layer LoRA: He_2 dynamics for several ranks (App. K)")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    s = settings(ctx.scale)
    engine = ctx.engine if ctx.engine in ("reduced", "dense") else "reduced"
    if engine == "dense" and s["d"] > DENSE_MAX_D:
        s = dict(s, d=DENSE_MAX_D, batch=DENSE_MAX_D // 2)
    K = s["K"]
    ranks = list(range(1, K + 1))
    n = len(s["mus"])
    fig, axs = plt.subplots(1, n, figsize=(4.6 * n, 3.8), sharey=True)
    data, rows = [], []
    finals, odefinals, escapes, L0, seed_finals, seed_esc = {}, {}, {}, {}, {}, {}
    for p, mu in enumerate(s["mus"]):
        cfg = TwoLayerConfig(mu=list(mu), rank=1, activation=ACT, norm="1/sqrt(K)", d=s["d"],
                             lr=s["lr"], batch=s["batch"], steps=s["steps"], seeds=s["seeds"],
                             seed0=ctx.seed, record_every=max(1, s["steps"] // 100))
        ctx.progress(p / n, f"mu = {list(mu)}: ODE")
        ode = C.simulate_twolayer(ctx, cfg.replace(ranks=ranks, engine="ode"))
        ctx.progress((p + 0.3) / n, f"mu = {list(mu)}: {engine}")
        sim = C.simulate_twolayer(ctx, cfg.replace(ranks=ranks, engine=engine),
                                  ((p + 0.3) / n, (p + 1) / n))
        for name, ds in (("ode", ode), (engine, sim)):
            data.append(C.save_dataset(ds, ctx, f"fig14_mu{p}_{name}"))
        ax = axs[p] if n > 1 else axs
        for j, r in enumerate(ranks):
            t = ode.time.values
            ax.plot(t, ode.loss.sel(rank=r).mean("seed"), "-", color=C.COLORS[j],
                    label=f"r = {r} ODE")
            ax.plot(t, sim.loss.sel(rank=r).mean("seed"), "o", ms=2.2, color=C.COLORS[j],
                    alpha=0.7, label=f"r = {r} {engine}")
        lam = float(tau(ACT, list(mu), [1], norm="1/sqrt(K)").lambda_plus[0])
        ax.set_yscale("log")
        ax.set(title=f"mu_k = {list(mu)}\n" + rf"$\tau$ = 1/$\lambda_+$ = {1 / lam:.3g}",
               xlabel="time (step x lr)")
        finals[p], odefinals[p] = _final(sim), _final(ode)
        seed_finals[p] = _seed_finals(sim)
        es = np.asarray(sim.escape_step.values, dtype=float)  # (rank, seed)
        seed_esc[p] = np.where(es >= 0, es * s["lr"], np.nan)
        esc = [row["escape_step_mean"] * s["lr"] for row in summary(sim)]
        escapes[p] = np.array(esc)
        L0[p] = float(sim.loss.isel(step=0).mean())
        for j, r in enumerate(ranks):
            rows.append({"mu": " ".join(f"{m:g}" for m in mu), "rank": r,
                         "tau": 1 / lam, "escape_time_mean": float(escapes[p][j]),
                         "loss_initial": L0[p], "loss_final_sim": float(finals[p][j]),
                         "loss_final_ode": float(odefinals[p][j])})
    first = axs[0] if n > 1 else axs
    first.set_ylabel("population loss")
    first.legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig14")
    # erf and ReLU: a second panel row, saved as fig14_general (App. K's questions beyond He_2)
    fig2, axg = plt.subplots(1, 2, figsize=(10, 3.8))
    grows: list[dict] = []
    general_claims = _general_panels(ctx, axg, engine, data, grows, (0.9, 0.97))
    axg[0].set_ylabel("population loss")
    fig2.tight_layout()
    files += C.save_figure(fig2, ctx, "fig14_general")
    data.append(C.save_csv(grows, ctx, "fig14_general"))
    data.append(C.save_csv(rows, ctx, "fig14"))
    ctx.progress(0.97, "claims")

    # final loss set by rank: decreasing in r, r = K reaches the teacher (bootstrap CIs)
    v_rank, rank_text = rank_verdict(seed_finals, L0)
    spread, ratio, ok_search = search_phase_verdict(escapes)
    v_search, search_text = search_phase_test(seed_esc)
    claims = [
        C.claim(
            "K2", "App. K",
            "For He_2 the LoRA rank sets the loss reached after the search phase",
            "; ".join(
                f"mu_k={s['mus'][p][0]:g}..: final loss (sim) {C.fmt_list(finals[p])}, ODE "
                f"{C.fmt_list(odefinals[p])}, initial {C.fmt(L0[p])}" for p in finals
            ) + f" for r = {ranks}; bootstrap 95% CIs over {s['seeds']} seeds: {rank_text}",
            "every CI of the ratio final(r+1)/final(r) below 0.95 and of final(K)/initial "
            "below 0.05; a CI entirely above: fails; straddling: inconclusive", v_rank),
        C.claim(
            "K2b", "App. K",
            "For He_2 the pre-trained alignments mu_k, not the rank, set the length of the "
            "search phase",
            "mean escape time per rank: " + "; ".join(
                f"mu_k={s['mus'][p][0]:g}..: {C.fmt_list(escapes[p])} (spread "
                f"{C.fmt(spread[p])})" for p in escapes) + f"; ratio between settings "
                f"{C.fmt(ratio)}; {search_text}",
            "bootstrap 95% CI (over seeds) of the largest spread over ranks below 0.3 and of "
            "the ratio between pre-training settings above 1.5; a CI on the wrong side: "
            "fails; straddling: inconclusive (quick and paper scale can differ here: "
            f"{settings('quick')['seeds']} vs {settings('paper')['seeds']} seeds)", v_search),
        *general_claims,
    ]
    cap = (
        f"Full dynamics of the two-layer LoRA model with He_2/sqrt(2) activations, K = {K} "
        "teacher neurons, output normalization 1/sqrt(K), ranks r = 1..K, for "
        f"{n} pre-training settings (panels). Lines: the closed-form ODE (gradient flow of "
        "the population loss plus the finite-step term lr d/B); points: one-pass spherical "
        f"SGD ({engine} engine); d = {s['d']}, lr = {s['lr']}, batch = {s['batch']}, "
        f"{s['steps']} steps, mean over {s['seeds']} random starts (LoRA directions uniform "
        "on the sphere, A_0 entries 1/sqrt(d)), the ODE started from the same draws. The "
        "search phase (plateau at the initial loss) has a length set by mu_k; the plateau "
        "reached after it is set by r: with r < K only r teacher neurons are corrected. "
        "For r = K the last neuron is recovered through a slow phase in which LoRA "
        "directions that started toward the same neuron separate; SGD noise shortens it, "
        "so SGD runs ahead of the ODE there. Second image (fig14_general): erf (left) and "
        "ReLU (right) in the reference code's readout convention (norm = auto: 1/sqrt(K) for "
        "erf, whose Gaussian mean is 0, 1/K for ReLU), ranks 1..K; lines: the ODE for any "
        "activation (pair expectations, finite-step term), points: SGD seed means at the "
        "first pre-training strength, dotted: SGD at the second. Their per-seed escape times "
        "and final losses give the verdicts K3/K4 (rank tests at 1%)."
    )
    ctx.progress(1.0, "done")
    return FigureOutput(cap, files, data, claims)
