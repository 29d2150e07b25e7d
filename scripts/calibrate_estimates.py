"""Compare the figures' ``ESTIMATE`` run times with measured ones (calibration aid).

Usage::

    python scripts/calibrate_estimates.py REPORT_DIR [REPORT_DIR ...] [--inflation 1.25]

Each ``REPORT_DIR/run.json`` (written by ``loradyn reproduce``) holds, per figure, the wall
seconds and the process CPU seconds. On an idle 2-core machine a figure's wall time is close
to its CPU time (the engines and the small ViTs run on one thread); on a loaded machine the
wall time says nothing, while the CPU time is inflated only by contention for caches. The
script therefore predicts the idle wall time as ``cpu_seconds / inflation`` (default 1.25,
measured: fig1+fig3+fig6+fig8 at paper scale took 118 s on an idle machine and 145 CPU s
under a load of ~8 on 2 cores) and prints, per figure and scale, the current ``ESTIMATE``,
that prediction and their ratio, flagging ratios outside [1/1.5, 1.5].
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path)
    ap.add_argument("--inflation", type=float, default=1.25)
    args = ap.parse_args(argv)

    from loradyn.reproduce.runner import discover, registered

    discover()
    modules = {s.id: sys.modules[s.make.__module__] for s in registered()}
    bad = 0
    print(f"{'figure':8} {'scale':6} {'estimate':>9} {'predicted':>9} {'ratio':>6}")
    for rep in args.reports:
        info = json.loads((rep / "run.json").read_text())
        scale = info["scale"]
        for item in info["items"]:
            if item["status"] != "done" or "cpu_seconds" not in item:
                continue
            est = getattr(modules.get(item["id"]), "ESTIMATE", {}).get(scale)
            pred = item["cpu_seconds"] / args.inflation
            ratio = (est / pred) if est and pred > 0 else float("nan")
            flag = "" if 1 / 1.5 <= ratio <= 1.5 else "  <-- outside 1.5x"
            bad += bool(flag)
            print(f"{item['id']:8} {scale:6} {est if est is not None else '-':>9} "
                  f"{pred:9.1f} {ratio:6.2f}{flag}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
