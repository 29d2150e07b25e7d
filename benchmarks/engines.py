"""Benchmark of the simulation engines (issue 3), single thread.

1. The paper's Fig. 1 setting on the reduced engine: linear, d = 1000, batch 500,
   lr = 0.2, 9 values of mu, 3 seeds, 10^4 steps. Target: under 5 s on one core.
2. The dense engine on a slice of it (one mu, 3 seeds, 200 steps by default): per-step
   time, and the per-step ratio reduced/dense.
3. numpy's raw normal generation in the same process: the time to draw batch * d
   normals into a preallocated buffer; the ratio dense-step / raw-draw. Target: within 2.

Usage: ``python benchmarks/engines.py [--dense-steps 200] [--samples]``
(``--samples`` also times the O(batch) sample-based reduced sampler on the full run).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from loradyn.config import RunConfig  # noqa: E402
from loradyn.engines import simulate  # noqa: E402

FIG1 = dict(teacher="linear", d=1000, batch=500, lr=0.2, steps=10_000, seeds=3,
            mu=np.round(np.linspace(0.1, 0.9, 9), 10).tolist())


def _raw_draw_time(batch: int, d: int, repeats: int = 30) -> float:
    """Seconds to draw ``batch * d`` float64 normals into a preallocated buffer."""
    rng = np.random.default_rng(0)
    buf = np.empty((batch, d))
    rng.standard_normal(out=buf)
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            rng.standard_normal(out=buf)
        best.append((time.perf_counter() - t0) / repeats)
    return min(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dense-steps", type=int, default=200)
    ap.add_argument("--samples", action="store_true", help="also time sampler='samples'")
    args = ap.parse_args()
    n_traj = len(FIG1["mu"]) * FIG1["seeds"]

    cfg = RunConfig(**FIG1)
    # warm-up: pay the one-time imports (xarray's duck-array probing, scipy) outside the timing
    simulate(cfg.replace(steps=10, mu=[0.5], seeds=1), engine="reduced")
    t0 = time.perf_counter()
    ds = simulate(cfg, engine="reduced")
    total = time.perf_counter() - t0
    eng = float(ds.attrs["wall_time_s"])
    red_step = eng / (n_traj * cfg.steps)
    print(f"reduced (sampler={ds.attrs['sampler']}), Fig. 1 setting "
          f"({n_traj} trajectories x {cfg.steps} steps): engine {eng:.2f} s, "
          f"with exact test MSE and layout {total:.2f} s  [target < 5 s]")
    print(f"  escape steps (median over seeds) per mu: "
          f"{np.median(ds['escape_step'].values, axis=1).astype(int).tolist()}")

    if args.samples:
        t0 = time.perf_counter()
        dss = simulate(cfg.replace(sampler="samples"), engine="reduced")
        print(f"reduced (sampler=samples, O(batch)/step), same run: "
              f"engine {dss.attrs['wall_time_s']:.2f} s, total {time.perf_counter() - t0:.2f} s")

    raw = _raw_draw_time(cfg.batch, cfg.d)
    dcfg = cfg.replace(mu=[0.5], steps=args.dense_steps, record_every=args.dense_steps)
    dd = simulate(dcfg, engine="dense")
    dense_step = float(dd.attrs["wall_time_s"]) / (dcfg.seeds * dcfg.steps)
    print(f"dense (numpy), slice of 1 mu x {dcfg.seeds} seeds x {dcfg.steps} steps: "
          f"{dense_step * 1e3:.3f} ms per trajectory-step")
    print(f"raw numpy normal draw of batch*d = {cfg.batch * cfg.d} float64: {raw * 1e3:.3f} ms "
          f"({cfg.batch * cfg.d / raw / 1e6:.1f} M normals/s)")
    print(f"ratio dense step / raw draw: {dense_step / raw:.2f}  [target <= 2]")
    print(f"ratio reduced step / dense step: {red_step / dense_step:.2e} "
          f"(reduced is {dense_step / red_step:,.0f}x faster per trajectory-step)")


if __name__ == "__main__":
    main()
