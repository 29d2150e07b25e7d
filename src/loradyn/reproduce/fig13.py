"""Fig. 13: escape time of the two-layer LoRA model against mu and rank (App. K).

Theory: the search-phase escape rate of :func:`loradyn.twolayer.tau` (largest eigenvalue of
the linearized flow at ``C = I``), turned into an exit time ``tau log(R sqrt d)``.
Simulation: escape times of :func:`loradyn.twolayer.simulate` (first step with
``max_j |M_j| >= R``), mean over seeds, for several ranks, on the same axes.
Finite-d theory (linear): :func:`loradyn.twolayer.escape.escape_distribution`, the mean
escape step per rank (the first of r noisy directions escapes), plotted as open markers.
erf and ReLU (issue 14, App. K's rank question beyond linear and He_2): the same theory
curves (the linearization and tau of :mod:`loradyn.twolayer.linearization` hold for any
activation) and simulated escape times per rank, in the default readout (norm ``none``,
like the linear and He_2 panels); claims ``K1/erf`` and ``K1/relu`` ask whether the escape
depends on the rank.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..twolayer import TwoLayerConfig, exit_time, linear_exit_time, tau
from ..twolayer.escape import escape_distribution
from . import _common as C
from . import stats as S
from .registry import FigureContext, FigureOutput, register

ACTS = ("linear", "he2-norm", "erf", "relu")
ACTS_GENERAL = ("erf", "relu")  # App. K's rank question asked beyond the paper's activations
RADIUS = 0.25
# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
# (quick: 16.2 CPU s measured with the erf / ReLU panels, 4 activations; paper: 2x the
# 2-activation calibration)
ESTIMATE = {"test": 10.0, "quick": 32.0, "paper": 420.0}
DENSE_MAX_D = 2000  # the dense engine costs O(B d) per step: cap d (and B = d / 10) there


def settings(scale: str) -> dict:
    return C.pick(
        scale,
        test=dict(K=3, d=4000, batch=400, lr=0.05, seeds=4, ranks=(1, 2),
                  mus={"linear": (0.45, 0.7), "he2-norm": (0.4, 0.7), "erf": (0.15, 0.3),
                       "relu": (0.3, 0.6)}),
        quick=dict(K=3, d=10000, batch=1000, lr=0.05, seeds=20, ranks=(1, 2, 4),
                   mus={"linear": (0.2, 0.45, 0.7), "he2-norm": (0.3, 0.55, 0.8),
                        "erf": (0.1, 0.25, 0.4), "relu": (0.2, 0.45, 0.7)}),
        paper=dict(K=3, d=40000, batch=4000, lr=0.05, seeds=20, ranks=(1, 2, 4, 8),
                   mus={"linear": tuple(np.round(np.linspace(0.1, 0.85, 7), 3)),
                        "he2-norm": tuple(np.round(np.linspace(0.2, 0.9, 8), 3)),
                        "erf": tuple(np.round(np.linspace(0.1, 0.55, 6), 3)),
                        "relu": tuple(np.round(np.linspace(0.1, 0.8, 8), 3))}),
    )


def _escape_table(s: dict, engine: str, ctx: FigureContext, span: tuple[float, float],
                  act: str) -> xr.Dataset:
    """Escape steps, dims (mu, rank, seed)."""
    mus = s["mus"][act]
    out = []
    for i, mu in enumerate(mus):
        lo = span[0] + (span[1] - span[0]) * i / len(mus)
        ctx.progress(lo, f"{act}, mu = {mu:g}")
        m0 = 1.0 / np.sqrt(s["d"])
        t_pred = linear_exit_time(act, [mu] * s["K"], 1, m0=m0, a0=m0, radius=RADIUS)
        steps = int(min(3.0 * t_pred / s["lr"] + 200, 200_000))
        cfg = TwoLayerConfig(mu=[mu] * s["K"], rank=1, activation=act, d=s["d"], lr=s["lr"],
                             batch=s["batch"], steps=steps, seeds=s["seeds"], seed0=ctx.seed,
                             threshold=RADIUS, record_every=steps, m0=m0)
        ds = C.simulate_twolayer(ctx, cfg.replace(ranks=list(s["ranks"]), engine=engine,
                                                  stop_on_escape=True))
        out.append(ds.escape_step.assign_coords(mu=mu).expand_dims("mu"))
    esc = xr.concat(out, dim="mu").to_dataset(name="escape_step")
    esc.attrs.update(activation=act, K=s["K"], d=s["d"], lr=s["lr"], batch=s["batch"],
                     engine=engine, threshold=RADIUS)
    return esc


@register("fig13", "two-layer LoRA: escape time against mu and rank (App. K)")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    s = settings(ctx.scale)
    engine = ctx.engine if ctx.engine in ("reduced", "dense") else "reduced"
    if engine == "dense" and s["d"] > DENSE_MAX_D:
        s = dict(s, d=DENSE_MAX_D, batch=DENSE_MAX_D // 10)
    K, ranks = s["K"], list(s["ranks"])
    fig, axs2 = plt.subplots(2, 2, figsize=(10, 7.4))
    axs = axs2.ravel()
    data, rows, spreads, sim_spreads, rel_err = [], [], {}, {}, {}
    times, t_lin_at, n_div, fd = {}, {}, {}, {}
    for a_i, act in enumerate(ACTS):
        esc = _escape_table(s, engine, ctx, (0.23 * a_i, 0.23 * (a_i + 1)), act)
        data.append(C.save_dataset(esc, ctx, f"fig13_{act}"))
        grid = np.linspace(min(s["mus"][act]) - 0.05, max(s["mus"][act]) + 0.05, 60)
        grid = grid[(grid > 0) & (grid < 1)]
        theo = np.array([tau(act, [m] * K, ranks).tau for m in grid])  # (grid, rank)
        spreads[act] = float(np.max(np.ptp(theo, axis=1) / theo.min(axis=1)))
        ax = axs[a_i]
        m0 = 1.0 / np.sqrt(s["d"])
        t_lin = np.array([linear_exit_time(act, [m] * K, ranks[0], m0=m0, a0=m0, radius=RADIUS)
                          for m in grid])
        ax.plot(grid, t_lin, "k-", lw=1.6, label="theory: linearized flow, same start")
        ax.plot(grid, exit_time(theo[:, 0], s["d"], RADIUS), "k--", lw=1.0,
                label=r"theory $\tau\log(R\sqrt{d})$")
        mus = esc["mu"].values
        t_sim = np.where(esc.escape_step >= 0, esc.escape_step * s["lr"], np.nan)
        times[act] = t_sim  # (mu, rank, seed); NaN: no escape in the budget
        if "diverged" in esc:
            n_div[act] = int(np.asarray(esc["diverged"].values).sum())
        mean = np.nanmean(t_sim, axis=-1)  # (mu, rank)
        sem = np.nanstd(t_sim, axis=-1) / np.sqrt(np.sum(np.isfinite(t_sim), axis=-1))
        width = 0.012 * (len(ranks) - 1)
        for j, r in enumerate(ranks):
            off = -width / 2 + (width * j / max(1, len(ranks) - 1))
            ax.errorbar(mus + off, mean[:, j], yerr=sem[:, j], fmt="o", ms=4, capsize=2,
                        color=C.COLORS[j], label=f"simulation r = {r}")
        t_th = np.array([linear_exit_time(act, [m] * K, ranks[0], m0=m0, a0=m0, radius=RADIUS)
                         for m in mus])
        t_lin_at[act] = t_th
        if act == "linear":
            fd[act] = finite_d_means(s, mus, ranks) * s["lr"]  # (mu, rank), time units
            for j in range(len(ranks)):
                off = -width / 2 + (width * j / max(1, len(ranks) - 1))
                ax.plot(mus + off, fd[act][:, j], "D", mfc="none", ms=6, color=C.COLORS[j],
                        label="finite-d prediction" if j == 0 else None)
        # a rank with no escaping seed (NaN mean) makes the spread NaN and K1 fail
        sim_spreads[act] = float(np.max(np.ptp(mean, axis=1) / np.mean(mean, axis=1)))
        rel_err[act] = np.nanmean(mean, axis=1) / t_th - 1.0
        rel_err[act] = np.where(np.isfinite(rel_err[act]), rel_err[act], np.inf)
        for i, m in enumerate(mus):
            for j, r in enumerate(ranks):
                rows.append({"activation": act, "mu": float(m), "rank": r,
                             "tau": float(tau(act, [m] * K, [r]).tau[0]),
                             "exit_time_linearized": float(t_th[i]),
                             "exit_time_tau_log": float(exit_time(tau(act, [m] * K, [r]).tau[0],
                                                                  s["d"], RADIUS)),
                             "escape_time_mean": float(mean[i, j]),
                             "escape_time_sem": float(sem[i, j])})
        ax.set_yscale("log")
        ax.set(title=f"{act}: K = {K}, all mu_k = mu", xlabel=r"pre-training alignment $\mu$",
               ylabel="escape time (step x lr)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig13")
    data.append(C.save_csv(rows, ctx, "fig13"))
    ctx.progress(0.95, "claims")

    tol_rank, tol_theory = 0.1, 0.2
    spread_ci = {a: rank_spread_ci(times[a]) for a in ACTS}
    v_theory = spreads["linear"] < 1e-9
    err_ci = {a: [S.bootstrap_ci(times[a][i].ravel() / t_lin_at[a][i] - 1.0, np.nanmean,
                                 seed=i) for i in range(times[a].shape[0])] for a in ACTS}
    paper_acts = [a for a in ACTS if a not in ACTS_GENERAL]  # K1b: the paper's two
    v_err = S.combine([S.interval_verdict(lo, hi, -tol_theory, tol_theory)
                       for a in paper_acts for _, lo, hi in err_ci[a]])
    div_note = "".join(f"; {a}: {k} diverged trajectories excluded" for a, k in n_div.items()
                       if k)
    tol_fd = 0.05
    # leading order: after removing the predicted finite-d start effect (the rate is the
    # same for every rank), the rank-1 minus top-rank gap relative to the mean escape time
    ex_ci = [excess_gap_ci(times["linear"][i], fd["linear"][i], seed=i)
             for i in range(times["linear"].shape[0])]
    v_excess = S.combine([S.interval_verdict(lo, hi, -tol_rank, tol_rank)
                          for _, lo, hi in ex_ci])
    # finite d: every (mu, rank) mean against the prediction
    fd_ci = [[S.bootstrap_ci(fd["linear"][i, j] / times["linear"][i, j], _mean_ratio,
                             seed=10 * i + j) for j in range(len(ranks))]
             for i in range(times["linear"].shape[0])]
    v_fd = S.combine([S.interval_verdict(lo, hi, 1 - tol_fd, 1 + tol_fd)
                      for row in fd_ci for _, lo, hi in row])
    pred_spread = float(np.max(np.ptp(fd["linear"], axis=1) / np.mean(fd["linear"], axis=1)))
    claims = [
        C.claim(
            "K1", "App. K",
            "for linear activations the leading-order escape depends only on the collective "
            "mismatch vector, and not on the rank r: each rank direction obeys the same "
            "reduced two-dimensional dynamics",
            f"theory (leading order): max relative spread of the escape rate over ranks "
            f"{ranks} = {C.fmt(spreads['linear'])}; simulation ({engine}, {s['seeds']} "
            f"seeds): gap of the mean escape time rank {ranks[0]} - rank {ranks[-1]} beyond "
            "the finite-d start effect (loradyn.twolayer.escape, same rate for every rank), "
            "relative to the mean, with bootstrap 95% CI, per mu = "
            f"{C.fmt_list(s['mus']['linear'])}: "
            + ", ".join(S.fmt_ci(*c) for c in ex_ci) + div_note,
            f"theory spread < 1e-9 (exact) and every CI of the excess gap inside "
            f"[-{tol_rank}, {tol_rank}]; one outside: fails; straddling: inconclusive",
            S.combine(["holds" if v_theory else "fails", v_excess])),
        C.claim(
            "K1-finite-d", "App. K (beyond the paper: docs/theory.md s. 12.1)",
            "Linear two-layer model at finite d: the mean escape time per rank follows the "
            "finite-d prediction (r noisy directions, the first to reach the radius escapes, "
            "so higher ranks escape slightly earlier)",
            "predicted / simulated mean escape time per (mu, rank), bootstrap 95% CI: "
            + "; ".join(", ".join(S.fmt_ci(*c) for c in row) for row in fd_ci)
            + f"; relative spread over ranks: simulated {S.fmt_ci(*spread_ci['linear'])}, "
            f"predicted {C.fmt(pred_spread)}",
            f"every CI inside [{1 - tol_fd:g}, {1 + tol_fd:g}]; one outside: fails; "
            "straddling: inconclusive", v_fd),
        C.claim(
            "K1b", "App. K",
            "The search-phase linearization predicts the simulated escape time of the "
            "two-layer model (linear and He_2)",
            "relative error of the escape time (all ranks and seeds) against the "
            "linearized-flow exit time, mean and bootstrap 95% CI per mu: " + "; ".join(
                f"{a}: " + ", ".join(f"{est:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                                     for est, lo, hi in err_ci[a]) for a in paper_acts),
            f"every CI inside [-{tol_theory}, {tol_theory}]; a CI outside it: fails; "
            "straddling an edge: inconclusive", v_err),
        *[general_claim(a, s, engine, spreads[a], spread_ci[a], err_ci[a], n_div.get(a, 0),
                        tol_rank) for a in ACTS_GENERAL],
    ]
    cap = (
        f"Escape time of the two-layer LoRA model (App. K) with K = {K} teacher neurons, all "
        "pre-trained alignments mu_k = mu, teacher normalization none, for the linear "
        "activation (left) and He_2/sqrt(2) (right). Solid line: exit time of the "
        "linearized search-phase flow from the simulations' start (the same for every rank, "
        "its rate lambda_+ is rank independent); dashed: tau log(R sqrt d), tau = 1/lambda_+. "
        f"Points: one-pass spherical SGD ({engine} engine), d = {s['d']}, lr = {s['lr']}, "
        f"batch = {s['batch']}, start: entries of A_0 = 1/sqrt(d), each LoRA direction j with "
        "overlap 1/sqrt(d) on teacher neuron j mod K and uniform otherwise; escape at the first "
        f"step with max_j |M_j| >= R = {RADIUS}; mean +- s.e.m. over {s['seeds']} seeds for "
        f"ranks {ranks} (slightly offset in mu). Theory rank spread of tau: linear "
        f"{C.fmt(spreads['linear'])}, He_2 {C.fmt(spreads['he2-norm'])}, erf "
        f"{C.fmt(spreads['erf'])}, ReLU {C.fmt(spreads['relu'])}. Bottom row: erf (left) and "
        "ReLU (right), the same theory (the linearization holds for any activation) and "
        "simulations, in the same readout (norm none): App. K's rank question beyond the "
        "paper's activations (claims K1/erf, K1/relu). A fixed start "
        "removes the extreme-value effect of r random starts (more directions, larger "
        "largest initial overlap), which shortens the escape by O(tau) at larger r; a small "
        "radius R keeps the criterion in the search phase, where the r directions have not "
        "yet started to share the residual."
    )
    ctx.progress(1.0, "done")
    return FigureOutput(cap, files, data, claims)


def general_claim(act: str, s: dict, engine: str, spread: float,
                  spread_ci: tuple[float, float, float], err_ci: list, n_div: int,
                  tol: float):  # noqa: ANN201 - a Claim
    """``K1/<act>``: App. K's rank question (K1's statement) asked for erf or ReLU.

    Theory: the search-phase rate at ``C = I`` is the same for every rank (exact, spread
    below 1e-9). Simulation: the bootstrap 95% CI of the largest relative spread of the mean
    escape time over ranks (:func:`rank_spread_ci`) must lie inside ``[0, tol]``; no finite-d
    prediction exists for these activations, so the spread includes the finite-d start effect
    (the first of ``r`` noisy directions escapes), which the linear claim K1 removes.
    """
    label = {"erf": "erf", "relu": "ReLU"}[act]
    v_sim = S.interval_verdict(spread_ci[1], spread_ci[2], -tol, tol)
    div = f"; {n_div} diverged trajectories excluded" if n_div else ""
    return C.claim(
        f"K1/{act}", "App. K (asked beyond the paper: issue 14)",
        f"App. K's rank question for {label} (K = {s['K']}, all mu_k = mu, norm none): the "
        "escape from the search phase does not depend on the LoRA rank r",
        f"theory (leading order): max relative spread of the escape rate over ranks "
        f"{list(s['ranks'])} = {C.fmt(spread)}; simulation ({engine}, {s['seeds']} seeds, "
        f"d = {s['d']}, mu = {C.fmt_list(s['mus'][act])}): largest relative spread of the mean "
        f"escape time over ranks {S.fmt_ci(*spread_ci)} (bootstrap 95% CI); for reference, "
        "relative error against the linearized-flow exit time per mu: "
        + ", ".join(f"{est:+.2f} [{lo:+.2f}, {hi:+.2f}]" for est, lo, hi in err_ci) + div,
        f"theory spread < 1e-9 (exact) and the CI of the simulated spread inside [0, {tol}] "
        "(it includes the finite-d start effect, not predicted for this activation); a CI "
        "outside: fails; straddling: inconclusive",
        S.combine(["holds" if spread < 1e-9 else "fails", v_sim]))


def finite_d_means(s: dict, mus: np.ndarray, ranks: list[int]) -> np.ndarray:
    """Predicted mean escape step per (mu, rank) (:func:`loradyn.twolayer.escape`)."""
    m0 = 1.0 / np.sqrt(s["d"])
    return np.array([escape_distribution(float(mu), ranks, K=s["K"], d=s["d"], lr=s["lr"],
                                         batch=s["batch"], radius=RADIUS, a0=m0, m0=m0).mean
                     for mu in mus])


def _mean_ratio(x: np.ndarray) -> float:
    """``pred / mean(t)`` for bootstrap samples of ``pred / t`` (harmonic trick)."""
    return float(1.0 / np.mean(1.0 / x))


def excess_gap_ci(t: np.ndarray, pred: np.ndarray, n_boot: int = 2000, seed: int = 0
                  ) -> tuple[float, float, float]:
    """``((m_1 - m_R) - (p_1 - p_R)) / mean`` for one mu: the simulated gap of the mean escape
    time between the first and last rank beyond the predicted one, relative to the mean over
    ranks, with a bootstrap 95% CI (seeds resampled within each rank). ``t``: (rank, seed).
    """
    def stat(x: np.ndarray) -> float:
        m = x.mean(axis=-1)
        return float(((m[0] - m[-1]) - (pred[0] - pred[-1])) / np.mean(m))

    est = stat(t)
    n = t.shape[-1]
    if n < 2 or not np.isfinite(est):
        return est, -np.inf if n < 2 else np.nan, np.inf if n < 2 else np.nan
    rng = np.random.default_rng(seed)
    boots = np.array([stat(np.take_along_axis(t, rng.integers(0, n, size=t.shape), axis=-1))
                      for _ in range(n_boot)])
    return est, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def rank_spread_ci(t: np.ndarray, n_boot: int = 2000, seed: int = 0
                   ) -> tuple[float, float, float]:
    """Max over mu of the relative spread ``(max - min) / mean`` over ranks of the mean
    escape time, with a bootstrap 95% CI (seeds resampled within each (mu, rank) cell).

    ``t`` has dims (mu, rank, seed); NaN (no escape) makes that cell's mean NaN and the
    spread NaN (inconclusive), never a smaller spread.
    """
    def spread(x: np.ndarray) -> float:
        mean = x.mean(axis=-1)
        return float(np.max(np.ptp(mean, axis=1) / np.mean(mean, axis=1)))

    est = spread(t)
    n = t.shape[-1]
    if n < 2 or not np.isfinite(est):
        return est, -np.inf if n < 2 else np.nan, np.inf if n < 2 else np.nan
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=t.shape)
        boots[b] = spread(np.take_along_axis(t, idx, axis=-1))
    return est, float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))
