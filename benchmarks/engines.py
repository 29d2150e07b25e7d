"""Benchmark of the simulation engines (issues 3 and 16), single thread, one process.

1. The paper's Fig. 1 setting on the reduced engine: linear, d = 1000, batch 500,
   lr = 0.2, 9 values of mu, 3 seeds, 10^4 steps. Target: under 5 s on one core.
2. The dense engine at d = 1000, batch 500 (one trajectory): the per-step time of numpy
   float64 (the default), numpy float32, torch float64 and torch float32 (cpu).
3. The raw draw of batch * d normals into a preallocated buffer by each generator: numpy
   PCG64 (float64, float32), numpy SFC64 (float64, float32), torch ``normal_`` (float64,
   float32). Ratios dense step / raw draw of the generator it uses. Targets: numpy float64
   within 2 (issue 3), torch float32 within 1.5 (issue 16).

The machine is shared, so every quantity of part 2 and 3 is measured in ``--repeats``
rounds that interleave all of them (each round times every generator and every dense
variant once, in turn); the minimum and the median over rounds are printed, and each
ratio is also computed per round (numerator and denominator measured seconds apart) and
its median printed. The load average before and after is printed with the numbers.

Usage: ``python benchmarks/engines.py [--dense-steps 40] [--repeats 7] [--samples]``
(``--samples`` also times the O(batch) sample-based reduced sampler on the full run).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402

from loradyn.config import RunConfig  # noqa: E402
from loradyn.engines import simulate  # noqa: E402
from loradyn.engines.dense import run_dense  # noqa: E402

try:  # noqa: E402
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is optional
    torch = None

FIG1 = dict(teacher="linear", d=1000, batch=500, lr=0.2, steps=10_000, seeds=3,
            mu=np.round(np.linspace(0.1, 0.9, 9), 10).tolist())

#: dense variants: label -> RunConfig changes
DENSE = {
    "dense numpy f64": dict(backend="numpy", dtype="float64"),
    "dense numpy f32": dict(backend="numpy", dtype="float32"),
    "dense torch f64": dict(backend="torch", device="cpu", dtype="float64"),
    "dense torch f32": dict(backend="torch", device="cpu", dtype="float32"),
}
#: the generator each dense variant draws with
DRAWN_BY = {
    "dense numpy f64": "numpy PCG64 f64",
    "dense numpy f32": "numpy PCG64 f32",
    "dense torch f64": "torch normal_ f64",
    "dense torch f32": "torch normal_ f32",
}


def _draws(batch: int, d: int) -> dict[str, Callable[[], None]]:
    """One function per generator that draws ``batch * d`` normals into a buffer in place."""
    out: dict[str, Callable[[], None]] = {}
    for name, bitgen in (("PCG64", np.random.PCG64(0)), ("SFC64", np.random.SFC64(0))):
        rng = np.random.Generator(bitgen)
        for bits, dt in (("64", np.float64), ("32", np.float32)):
            buf = np.empty((batch, d), dtype=dt)
            out[f"numpy {name} f{bits}"] = (
                lambda rng=rng, buf=buf, dt=dt: rng.standard_normal(dtype=dt, out=buf)
            )
    if torch is not None:
        gen = torch.Generator().manual_seed(0)
        for bits, tdt in (("64", torch.float64), ("32", torch.float32)):
            t = torch.empty((batch, d), dtype=tdt)
            out[f"torch normal_ f{bits}"] = lambda t=t: t.normal_(generator=gen)
    return out


def _time(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of ``fn`` over ``calls`` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def _load() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover
        return "load average unknown"


def _stats(v: list[float]) -> str:
    return f"min {min(v) * 1e3:7.3f} ms  median {np.median(v) * 1e3:7.3f} ms"


def dense_vs_draws(batch: int, d: int, steps: int, repeats: int) -> dict[str, list[float]]:
    """Interleaved timings (seconds) of every generator's draw and every dense variant."""
    draws = _draws(batch, d)
    base = RunConfig(teacher="linear", mu=0.5, d=d, batch=batch, lr=0.2, steps=steps,
                     seeds=1, record_every=steps, engine="dense")
    cfgs = {k: base.replace(**kw) for k, kw in DENSE.items()
            if torch is not None or kw["backend"] == "numpy"}
    setup = {k: c.replace(steps=1, record_every=1) for k, c in cfgs.items()}
    for f in draws.values():  # warm-up (first-touch of the buffers, lazy initialization)
        _time(f, 2)
    for c in setup.values():
        run_dense(c)
    times: dict[str, list[float]] = {k: [] for k in (*draws, *cfgs)}
    for _ in range(repeats):
        for k, f in draws.items():
            times[k].append(_time(f, 10))
        for k, c in cfgs.items():
            # per step: (run of `steps` steps - run of 1 step) / (steps - 1), set-up removed
            t_run = _time(lambda c=c: run_dense(c), 1)
            t_one = _time(lambda k=k: run_dense(setup[k]), 1)
            times[k].append(max(t_run - t_one, 0.0) / (steps - 1))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dense-steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--samples", action="store_true", help="also time sampler='samples'")
    args = ap.parse_args()
    n_traj = len(FIG1["mu"]) * FIG1["seeds"]
    print(f"one thread; {_load()} at start ({os.cpu_count()} cpus)")

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

    B, d = cfg.batch, cfg.d
    times = dense_vs_draws(B, d, args.dense_steps, args.repeats)
    print(f"\nraw draw of batch*d = {B * d} normals and dense per-step time "
          f"(d = {d}, batch {B}, {args.dense_steps} steps), {args.repeats} interleaved rounds:")
    for k, v in times.items():
        rate = B * d / min(v) / 1e6
        extra = f"  ({rate:.0f} M normals/s at the min)" if not k.startswith("dense") else ""
        print(f"  {k:20s} {_stats(v)}{extra}")
    print("ratios (min / min; median of the per-round ratios):")
    targets = {"dense numpy f64": 2.0, "dense torch f32": 1.5}
    for k, gen in DRAWN_BY.items():
        if k not in times:
            continue
        a, b = np.asarray(times[k]), np.asarray(times[gen])
        tgt = f"  [target <= {targets[k]:g}]" if k in targets else ""
        print(f"  {k} / raw {gen}: {a.min() / b.min():.2f}; {np.median(a / b):.2f}{tgt}")
    ref = np.asarray(times["dense numpy f64"])
    for k in ("dense numpy f32", "dense torch f64", "dense torch f32"):
        if k in times:
            r = np.asarray(times[k])
            print(f"  dense numpy f64 / {k}: {ref.min() / r.min():.2f}; "
                  f"{np.median(ref / r):.2f} (speed-up)")
    if "torch normal_ f32" in times:
        r32 = np.asarray(times["torch normal_ f32"])
        for k in ("numpy PCG64 f64", "numpy SFC64 f64", "torch normal_ f64"):
            r = np.asarray(times[k])
            print(f"  raw {k} / raw torch normal_ f32: {r.min() / r32.min():.2f}; "
                  f"{np.median(r / r32):.2f}")
    red_ratio = red_step / min(times["dense numpy f64"])
    print(f"  reduced step / dense numpy f64 step: {red_ratio:.2e} "
          f"(reduced is {1 / red_ratio:,.0f}x faster per trajectory-step)")
    print(f"{_load()} at the end")


if __name__ == "__main__":
    main()
