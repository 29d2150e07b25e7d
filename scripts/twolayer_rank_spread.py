"""Is the rank spread of the two-layer escape time real, and does the finite-d theory give it?

    python scripts/twolayer_rank_spread.py --seeds 100 --out runs/rank_spread
    python scripts/twolayer_rank_spread.py --out runs/rank_spread --report

Setting of Fig. 13 at paper scale (reproduce/fig13.py): linear activation, K = 3, all
mu_k = mu, d = 40000, batch 4000, lr 0.05, A_0 = M_0 entries 1/sqrt(d) (direction j toward
neuron j mod K), escape at max_j |M_j| >= 0.25, ranks 1, 2, 4, 8; reduced engine (exact in
law). Per mu: the escape steps of every seed and rank (one JSON file per mu, atomic;
finished mu are skipped on a rerun). The report gives, per mu, the mean escape step per
rank (simulated +- s.e.m. and predicted by loradyn.twolayer.escape), the relative spread
over ranks, a Kruskal-Wallis test of "the escape step does not depend on the rank", and a
z-test of each predicted mean against the simulated one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

K, D, BATCH, LR, RADIUS = 3, 40000, 4000, 0.05, 0.25
RANKS = (1, 2, 4, 8)
MUS = (0.1, 0.225, 0.35, 0.475, 0.6)


def run_mu(mu: float, seeds: int) -> dict:
    from loradyn.twolayer import TwoLayerConfig, simulate
    from loradyn.twolayer.escape import escape_distribution

    m0 = 1.0 / np.sqrt(D)
    pred = escape_distribution(mu, list(RANKS), K=K, d=D, lr=LR, batch=BATCH, radius=RADIUS,
                               a0=m0, m0=m0)
    steps = int(2.0 * pred.quantiles[0, -1]) + 50
    cfg = TwoLayerConfig(mu=[mu] * K, rank=1, activation="linear", d=D, lr=LR, batch=BATCH,
                         steps=steps, seeds=seeds, threshold=RADIUS, record_every=steps, m0=m0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = simulate(cfg, list(RANKS), "reduced", stop_on_escape=True)
    return {"mu": mu, "seeds": seeds, "steps": steps, "seconds": time.perf_counter() - t0,
            "ranks": list(RANKS), "escape_step": ds.escape_step.values.tolist(),
            "pred_mean": pred.mean.tolist(), "pred_q": pred.quantiles.tolist()}


def analyse(r: dict) -> dict:
    from scipy import stats

    e = np.asarray(r["escape_step"], dtype=float)  # (rank, seed)
    e[e < 0] = np.nan
    mean = np.nanmean(e, axis=1)
    sem = np.nanstd(e, axis=1, ddof=1) / np.sqrt(np.sum(np.isfinite(e), axis=1))
    kw = stats.kruskal(*[row[np.isfinite(row)] for row in e]).pvalue
    pred = np.asarray(r["pred_mean"])
    z = (pred - mean) / sem
    return {"mu": r["mu"], "seeds": r["seeds"], "mean": mean, "sem": sem, "pred": pred, "z": z,
            "spread_sim": float(np.ptp(mean) / np.mean(mean)),
            "spread_pred": float(np.ptp(pred) / np.mean(pred)), "kruskal_p": float(kw),
            "censored": int(np.sum(~np.isfinite(e)))}


def report(out: Path) -> str:
    rows = [analyse(json.loads(p.read_text())) for p in sorted(out.glob("mu*.json"))]
    lines = ["| mu | seeds | mean escape step per rank 1/2/4/8: simulated (+- s.e.m.) | "
             "predicted | z | spread sim / pred | Kruskal-Wallis p |",
             "|---:|---:|---|---|---|---|---:|"]
    for a in rows:
        sim = ", ".join(f"{m:.1f} +- {s:.1f}" for m, s in zip(a["mean"], a["sem"], strict=True))
        lines.append(f"| {a['mu']:g} | {a['seeds']} | {sim} | "
                     f"{', '.join(f'{p:.1f}' for p in a['pred'])} | "
                     f"{', '.join(f'{z:+.1f}' for z in a['z'])} | "
                     f"{100 * a['spread_sim']:.1f}% / {100 * a['spread_pred']:.1f}% | "
                     f"{a['kruskal_p']:.2g} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--out", default="runs/rank_spread")
    ap.add_argument("--mu", default=",".join(str(m) for m in MUS))
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(report(out), end="")
        return
    for mu in (float(v) for v in args.mu.split(",")):
        path = out / f"mu{mu:g}_s{args.seeds}.json"
        if path.exists():
            continue
        r = run_mu(mu, args.seeds)
        fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(r, fh)
        os.replace(tmp, path)
        a = analyse(r)
        print(f"mu = {mu:g}: sim {np.round(a['mean'], 1)} pred {np.round(a['pred'], 1)} "
              f"KW p {a['kruskal_p']:.2g} ({r['seconds']:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
