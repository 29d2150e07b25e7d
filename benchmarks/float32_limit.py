"""Where float32 stops being enough for the dense engine (issue 16).

The same samples drive a float64 and a float32 run (the float32 run gets the float64
draws rounded to float32), so the two trajectories differ only by the rounding of the
arithmetic. For learning rates spanning the relative step size
``rho = lr |u0| sqrt((d - 1) E[g^2] / B)`` (:func:`loradyn.engines.dense.float32_step`)
from 1e-9 to 1e-2, the script prints the path-wise difference of ``m`` after ``steps``
steps, relative to how far float64's ``m`` moved:

    rel = rms_seeds(m32 - m64) / rms_seeds(m64(steps) - m64(0)).

``2e-8/rho`` is the size of float32's rounding of a coordinate against the SGD step of
that coordinate (rounding error ~ 2^-24 / sqrt(3) relative, step ~ rho relative): the
noise that rounding adds to the finite-step (noise) term is about its square. ``rel`` is
smaller, as ``m`` moves mostly by drift over many steps. The engine refuses float32 below
``FLOAT32_MIN_STEP`` = 1e-6 (rounding noise <= 2% of the step, 4e-4 in variance).

Usage: ``python benchmarks/float32_limit.py [--steps 200] [--seeds 16]`` (about 10 s).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from loradyn.config import RunConfig  # noqa: E402
from loradyn.engines import dense  # noqa: E402
from loradyn.engines._common import STREAM_DENSE, trajectory_rngs  # noqa: E402


def _shared_draw(seed: int):
    """A ``make_draw`` whose samples are float64 draws of one stream, cast to X's dtype."""

    def make(X):
        rng = np.random.default_rng(seed)
        buf = np.empty(X.shape)

        def draw() -> None:
            rng.standard_normal(out=buf)
            X[...] = buf

        return draw

    return make


def run(cfg: RunConfig) -> np.ndarray:
    """``m`` at steps 0 and ``cfg.steps`` for every seed (flat), one group."""
    rngs = trajectory_rngs(cfg, STREAM_DENSE)
    D0 = dense._initial_rows(cfg, rngs, False)
    mu = np.repeat(cfg.mus, cfg.seeds)
    tr, _ = dense._group_host(cfg, D0, mu, _shared_draw(1234), None, (0, len(rngs)))
    return tr.M


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=16)
    args = ap.parse_args()
    base = RunConfig(teacher="linear", mu=0.5, d=100, batch=20, steps=args.steps,
                     seeds=args.seeds, record_every=args.steps, engine="dense")
    rho1 = dense.float32_step(base.replace(lr=1.0))  # rho is proportional to lr
    print(f"linear, mu = 0.5, d = {base.d}, batch {base.batch}, {args.steps} steps, "
          f"{args.seeds} seeds; same samples in float64 and float32")
    print(f"{'rho':>9} {'lr':>9} {'rms move f64':>13} {'rms(m32-m64)':>13} {'rel':>9} "
          f"{'2e-8/rho':>9}  float32")
    for rho in 10.0 ** np.arange(-9.0, -1.5, 1.0):
        cfg = base.replace(lr=rho / rho1)
        m64 = run(cfg)
        m32 = run(cfg.replace(dtype="float32"))
        move = np.sqrt(np.mean((m64[:, -1] - m64[:, 0]) ** 2))
        diff = np.sqrt(np.mean((m32[:, -1] - m64[:, -1]) ** 2))
        ok = "refused" if rho < dense.FLOAT32_MIN_STEP else "accepted"
        print(f"{rho:9.0e} {cfg.lr:9.2e} {move:13.3e} {diff:13.3e} {diff / move:9.2e} "
              f"{2e-8 / rho:9.1e}  {ok}")


if __name__ == "__main__":
    main()
