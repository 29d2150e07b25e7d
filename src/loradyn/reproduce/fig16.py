"""Fig. 16 (beyond the paper): the from-scratch baseline beside LoRA, two-layer model.

For erf and ReLU (readout norm = auto, the reference code's convention), ``K`` teacher
neurons: loss against time of LoRA from a pre-trained first layer (all ``mu_k = mu``,
ranks 1 and ``K``) and of the full ``K x d`` first layer trained from random unit rows with
no pre-trained part and no LoRA (``from_scratch``). Same data, optimizer (spherical
one-pass SGD), learning rate and batch; escape = first step at which some row reaches the
threshold overlap with some teacher direction (from scratch) or the LoRA escape rule.
"""

from __future__ import annotations

from ..twolayer import TwoLayerConfig, simulate, summary
from . import _common as C
from .registry import FigureContext, FigureOutput, register

ACTS = ("erf", "relu")
ESTIMATE = {"test": 6.0, "quick": 2.1, "paper": 600.0}


def settings(scale: str) -> dict:
    return C.pick(
        scale,
        test=dict(K=2, d=300, batch=300, steps=80, seeds=2, mu=0.3,
                  lr={"erf": 0.4, "relu": 1.2}),
        quick=dict(K=3, d=1000, batch=1000, steps=150, seeds=3, mu=0.3,
                   lr={"erf": 0.4, "relu": 1.2}),
        paper=dict(K=3, d=10000, batch=5000, steps=1500, seeds=20, mu=0.3,
                   lr={"erf": 0.15, "relu": 0.45}),
    )


@register("fig16", "two-layer: from-scratch baseline beside LoRA (erf, ReLU)")
def make(ctx: FigureContext) -> FigureOutput:
    C.setup_style()
    import matplotlib.pyplot as plt

    s = settings(ctx.scale)
    engine = ctx.engine if ctx.engine in ("reduced", "dense") else "reduced"
    K = s["K"]
    fig, axs = plt.subplots(1, len(ACTS), figsize=(10, 3.8))
    data, rows = [], []
    for a_i, act in enumerate(ACTS):
        ax = axs[a_i]
        cfg = TwoLayerConfig(mu=[s["mu"]] * K, rank=1, activation=act, norm="auto", d=s["d"],
                             lr=s["lr"][act], batch=s["batch"], steps=s["steps"],
                             seeds=s["seeds"], seed0=ctx.seed,
                             record_every=max(1, s["steps"] // 40))
        ctx.progress(a_i / len(ACTS), f"{act}: LoRA")
        lora = simulate(cfg, [1, K], engine)
        ctx.progress((a_i + 0.5) / len(ACTS), f"{act}: from scratch")
        scratch = simulate(cfg.replace(from_scratch=True), None, engine)
        data.append(C.save_dataset(lora, ctx, f"fig16_{act}_lora"))
        data.append(C.save_dataset(scratch, ctx, f"fig16_{act}_scratch"))
        t = lora.time.values
        for j, r in enumerate([1, K]):
            ax.plot(t, lora.loss.sel(rank=r).mean("seed"), "-", color=C.COLORS[j],
                    label=f"LoRA r = {r}, mu_k = {s['mu']:g}")
        ax.plot(t, scratch.loss.isel(rank=0).mean("seed"), "-", color="k",
                label=f"from scratch ({K} x d rows)")
        for row, name in ((summary(lora), "lora"), (summary(scratch), "from scratch")):
            for x in row:
                rows.append({"activation": act, "model": name,
                             "rank": x["rank"] if name == "lora" else K,
                             "escaped": x["escaped"],
                             "escape_time_mean": x["escape_step_mean"] * s["lr"][act],
                             "loss_initial": x["loss_initial"], "loss_final": x["loss_final"]})
        ax.set_yscale("log")
        ax.set(title=f"{act}, K = {K}, norm {cfg.norm_used}", xlabel="time (step x lr)")
        ax.legend(fontsize=7)
    axs[0].set_ylabel("population loss")
    fig.tight_layout()
    files = C.save_figure(fig, ctx, "fig16")
    data.append(C.save_csv(rows, ctx, "fig16"))
    fin = {(r["activation"], r["model"], r["rank"]): r for r in rows}
    cap = (
        f"The two-layer model with K = {K} teacher neurons, erf (left) and ReLU (right), readout "
        "norm = auto (1/sqrt(K) for erf, 1/K for ReLU). Colours: LoRA from a pre-trained first "
        f"layer (mu_k = {s['mu']:g}) with ranks 1 and K; black: the from-scratch baseline, the "
        "full K x d first layer trained from random unit rows (no pre-trained part, no LoRA). "
        f"One-pass spherical SGD ({engine} engine), d = {s['d']}, batch = {s['batch']}, "
        f"lr = {s['lr']}, {s['steps']} steps, mean over {s['seeds']} seeds. Mean escape time "
        "(step x lr; from scratch: first step with some |M_jk| >= 0.5; LoRA: max_j |M_j| >= "
        "0.5): " + "; ".join(
            f"{a}: LoRA r=1 {C.fmt(fin[(a, 'lora', 1)]['escape_time_mean'])}, r={K} "
            f"{C.fmt(fin[(a, 'lora', K)]['escape_time_mean'])}, scratch "
            f"{C.fmt(fin[(a, 'from scratch', K)]['escape_time_mean'])}" for a in ACTS) + "."
    )
    ctx.progress(1.0, "done")
    return FigureOutput(cap, files, data, [])
