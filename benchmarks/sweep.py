"""Overhead of the sweep machinery against plain simulate() calls in the same process.

Runs the same grid twice: as a loop of :func:`loradyn.engines.simulate` calls (baseline,
one core) and through :func:`loradyn.sweep.run_sweep` on a LocalCluster of ``--workers``
processes (cluster start-up, scheduling, transfer and atomic netCDF writes included), then
a rerun (every task skipped) and a collect. Prints the wall times and the ratios.

    .venv/bin/python benchmarks/sweep.py [--tasks 40] [--steps 2000] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from loradyn.config import RunConfig
from loradyn.engines import simulate
from loradyn.sweep import collect, run_sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=40, help="number of tasks (seeds)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    fixed = {"teacher": "erf", "mu": 0.5, "d": 1000, "lr": 0.2, "batch": 200,
             "steps": args.steps, "record_every": 100}
    spec = {"sweep": {"name": "bench", "engine": "reduced"},
            "grid": {"seed": list(range(args.tasks))}, "fixed": fixed}

    t0 = time.perf_counter()
    for s in range(args.tasks):
        simulate(RunConfig(**fixed, seed0=s))
    base = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        t0 = time.perf_counter()
        status = run_sweep(spec, out, workers=args.workers)
        swept = time.perf_counter() - t0
        assert status.complete, status.summary()
        t0 = time.perf_counter()
        run_sweep(spec, out, workers=args.workers)
        rerun = time.perf_counter() - t0
        t0 = time.perf_counter()
        collect(out)
        collected = time.perf_counter() - t0

    print(f"{args.tasks} tasks of {args.steps} steps (reduced engine, erf, d=1000, batch 200)")
    print(f"  baseline loop of simulate() on 1 core : {base:8.2f} s")
    print(f"  run_sweep on {args.workers} workers (cold cluster) : {swept:8.2f} s"
          f"   ratio sweep/baseline = {swept / base:.2f}"
          f"   (ideal 1/{args.workers} = {1 / args.workers:.2f} plus start-up)")
    print(f"  rerun, everything skipped           : {rerun:8.2f} s")
    print(f"  collect into one Dataset            : {collected:8.2f} s")


if __name__ == "__main__":
    main()
