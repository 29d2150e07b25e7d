"""Benchmark: the escape-step prediction against the reduced simulation of the same cells.

For each activation (d = 1000, lr = 0.2 (He_3: 0.2 / 18), batch = 500, one core):

- ``predict 100 mu``: ``escape_distribution`` on 100 values of mu in [0.05, 0.9]
  (target: under 1 s);
- ``predict 3 mu`` and ``simulate 3 mu``: the prediction and the reduced engine on the same
  cells mu = 0.2, 0.5, 0.8 (``SEEDS`` seeds, steps up to 1.6 times the predicted q95; the
  default reduced sampler: Gram for linear, samples otherwise), measured in this process;
  ``ratio`` = simulate / predict, and the same ratio scaled to 200 seeds (what a
  validation cell needs).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/escape.py [SEEDS]``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from loradyn.config import RunConfig  # noqa: E402
from loradyn.engines import simulate  # noqa: E402
from loradyn.escape import escape_distribution  # noqa: E402

ACTS = ("linear", "erf", "tanh", "sigmoid", "relu", "he3")
D, LR, BATCH = 1000, 0.2, 500
# the paper divides the learning rate of a pure He_K by K! K (He_3: 18), as the validation
LR_OF = {"he3": LR / 18.0}
CELLS = (0.2, 0.5, 0.8)


def main() -> None:
    seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    mu100 = np.linspace(0.05, 0.9, 100)
    print(f"d = {D}, lr = {LR}, batch = {BATCH}; simulation with {seeds} seeds per mu; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'activation':>10} {'predict 100 mu':>15} {'predict 3 mu':>13} "
          f"{'simulate 3 mu':>14} {'ratio':>9} {'ratio @200 seeds':>17}")
    for act in ACTS:
        lr = LR_OF.get(act, LR)
        escape_distribution(act, [0.5], d=D, lr=lr, batch=BATCH)  # warm caches
        t0 = time.perf_counter()
        escape_distribution(act, mu100, d=D, lr=lr, batch=BATCH)
        t100 = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = escape_distribution(act, list(CELLS), d=D, lr=lr, batch=BATCH)
        t3 = time.perf_counter() - t0
        steps = int(1.6 * np.nanmax(pred.quantiles[:, -1])) + 20
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            simulate(RunConfig(teacher=act, mu=list(CELLS), d=D, lr=lr, batch=BATCH,
                               steps=steps, seeds=seeds, record_every=steps))
        ts = time.perf_counter() - t0
        print(f"{act:>10} {t100:14.2f}s {t3:12.2f}s {ts:13.2f}s {ts / t3:9.0f} "
              f"{ts / t3 * 200 / seeds:17.0f}")


if __name__ == "__main__":
    main()
