"""App. B.4 two-stage recovery: vary the switch threshold, the learning rate and the
stage-2 budget, with and without re-aligning the LoRA scale at the switch.

He_3 teacher = student at mu = 0.3 (near mu* = 0.3207), reduced engine, d = 1000,
batch 500. For each (switch threshold |m|, base learning rate, protocol) one run of
``STEPS`` steps; the stage-2 budget is read off the same run at two points (final c after
``BUDGETS`` steps). Prints a markdown table (the one in docs/paper-differences.md):
c at the switch (median), seeds with c at the switch below mu, and recovered seeds
(c > 0.9) per budget; diverged trajectories are counted apart.

Run (about 5 minutes on one core):
``OMP_NUM_THREADS=1 .venv/bin/python scripts/b4_two_stage.py``
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

from loradyn.config import RunConfig  # noqa: E402
from loradyn.engines import simulate  # noqa: E402
from loradyn.reproduce.fig4 import RECOVERED_C, SWITCH_U, switch_states  # noqa: E402

MU = 0.3
SEEDS = 8
STEPS = 20000
BUDGETS = (8000, 20000)
THRESHOLDS = (0.1, 0.25, 0.4)
LRS = (0.05, 0.1)


def run(switch_m: float, lr: float, realign: bool):
    cfg = RunConfig(teacher="he3", mu=(MU,), d=1000, lr=lr / 18, batch=500, steps=STEPS,
                    seeds=SEEDS, seed0=2000, label="square", switch_label="identity",
                    switch_m=switch_m, switch_u=SWITCH_U if realign else None,
                    record_every=20, engine="reduced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return simulate(cfg)


def main() -> None:
    t0 = time.perf_counter()
    head = ("| switch at \\|m\\| | lr | protocol | c at switch (median) | c_switch < mu | "
            + " | ".join(f"recovered at {b} steps" for b in BUDGETS) + " | diverged |")
    print(head)
    print("|" + "---|" * (5 + len(BUDGETS) + 1))
    for sm in THRESHOLDS:
        for lr in LRS:
            for realign in (False, True):
                ds = run(sm, lr, realign)
                div = np.asarray(ds["diverged"].values[0]).astype(bool)
                _, _, c_sw = switch_states(ds)
                ok = ~div & np.isfinite(c_sw)
                steps = ds["step"].values
                rec = []
                for b in BUDGETS:
                    i = int(np.searchsorted(steps, b))
                    c = ds["c"].values[0, :, min(i, steps.size - 1)]
                    rec.append(f"{int(np.sum(c[ok] > RECOVERED_C))}/{int(ok.sum())}")
                name = f"re-aligned (u={SWITCH_U} sign(w.w0))" if realign else "u kept (paper)"
                print(f"| {sm} | {lr}/18 | {name} | {np.nanmedian(c_sw[ok]):.3f} | "
                      f"{int(np.sum(c_sw[ok] < MU))}/{int(ok.sum())} | " + " | ".join(rec) +
                      f" | {int(div.sum())} |", flush=True)
    print(f"\n{SEEDS} seeds per row, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
