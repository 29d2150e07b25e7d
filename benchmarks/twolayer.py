"""Benchmark: cost per SGD step of the two-layer engines against the dense baseline.

The ``reduced`` engine draws the batch projections on the ``K + r`` frame and the Gram of
the orthogonal gradient parts (Wishart, Bartlett) instead of ``d``-dimensional vectors,
so its cost should not grow with ``d``. Prints the time per step of ``dense`` and
``reduced`` for growing ``d`` (K = 3, r = 2, batch 100), and the ratio dense/reduced,
measured in the same process.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/twolayer.py``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import time  # noqa: E402

from loradyn.twolayer import TwoLayerConfig, run  # noqa: E402


def per_step(engine: str, d: int, steps: int) -> float:
    cfg = TwoLayerConfig(mu=[0.5, 0.6, 0.7], rank=2, d=d, lr=0.01, batch=100, steps=steps,
                         record_every=steps)
    run(cfg.replace(steps=5, record_every=5), engine)  # warm-up
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        run(cfg, engine)
        best = min(best, time.perf_counter() - t)
    return best / steps


def main() -> None:
    print(f"{'d':>8} {'dense ms/step':>14} {'reduced ms/step':>16} {'dense/reduced':>14}")
    for d in (100, 1000, 10000):
        steps = 200 if d <= 1000 else 40
        td, tr = per_step("dense", d, steps), per_step("reduced", d, 200)
        print(f"{d:>8} {1e3 * td:>14.3f} {1e3 * tr:>16.3f} {td / tr:>14.1f}")
    print(f"{10**9:>8} {'-':>14} {1e3 * per_step('reduced', 10**9, 200):>16.3f} {'-':>14}")


if __name__ == "__main__":
    main()
