"""Benchmark: tau(mu) on 300 values of mu for 12 activations, on one core.

Prints the total time (target: under 1 s), the time per activation, and the speed-up over
two baselines measured in the same process:

- ``scipy.integrate.quad``: a(mu), b(mu) by adaptive quadrature, one mu at a time (the
  direct way to evaluate the integrals; timed on a few mu and scaled to 300);
- a scalar loop: ``loradyn.linearization.tau`` called once per mu instead of vectorized.

It also prints the adaptive node count chosen per activation and checks the accuracy of
tau against ``quad`` (relative 1e-8) on a few mu, including the ends of the grid.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tau.py``.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import time  # noqa: E402

import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402
from scipy.stats import norm  # noqa: E402

from loradyn.activations import get_activation  # noqa: E402
from loradyn.linearization import growth_rate, quadrature_nodes, tau  # noqa: E402
from loradyn.population import make_problem  # noqa: E402

ACTIVATIONS = ["linear", "relu", "erf", "tanh", "sigmoid", "he2", "he3", "he4", "he5", "he6",
               "he3-norm", "he2+he3"]
MU = np.linspace(0.0, 1.0, 300)


def quad_tau(name: str, mu: float) -> float:
    """Baseline: a, b by scipy.integrate.quad (identity label, MSE, teacher = student)."""
    act = get_activation(name)
    f, df = act.f, act.df

    def g0(z):
        return (f(mu * z) - f(z)) * df(mu * z)

    pts = [0.0] if act.kinks else None
    # infinite bounds for smooth integrands (a finite box misses narrow features near
    # mu = 1); a kinked one is split at its kink on [-40, 40]
    lo, hi = (-40.0, 40.0) if pts else (-np.inf, np.inf)
    opts = dict(points=pts, limit=400, epsabs=0.0, epsrel=1e-13)
    b = integrate.quad(lambda z: z * g0(z) * norm.pdf(z), lo, hi, **opts)[0]
    cross = integrate.quad(lambda z: df(z) * df(mu * z) * norm.pdf(z), lo, hi, **opts)[0]
    a = (b + cross) / mu
    return 1.0 / float(growth_rate(a, b))


def best_of(fn, repeat: int = 3) -> float:
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    problems = {n: make_problem(n) for n in ACTIVATIONS}
    for p in problems.values():  # warm caches (quadrature rules, imports)
        tau(p, MU)
    per = {n: best_of(lambda p=p: tau(p, MU)) for n, p in problems.items()}
    total = sum(per.values())
    print(f"tau on {MU.size} mu x {len(ACTIVATIONS)} activations (1 thread): "
          f"total {total:.4f} s (target < 1 s: {'PASS' if total < 1 else 'FAIL'})")
    for n, t in per.items():
        print(f"  {n:10s} {1e3 * t:8.2f} ms  ({quadrature_nodes(problems[n], MU)} nodes)")

    few = np.array([0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
    checked = ("erf", "tanh", "sigmoid", "relu")
    t0 = time.perf_counter()
    worst = 0.0
    for n in checked:
        ref = tau(problems[n], few).tau
        got = np.array([quad_tau(n, m) for m in few])
        err = float(np.max(np.abs(got / ref - 1)))
        worst = max(worst, err)
        assert err < 1e-8, (n, got, ref)
    quad_per_mu = (time.perf_counter() - t0) / (len(checked) * few.size)
    print(f"accuracy against quad on mu={few.tolist()}: max relative error {worst:.1e} "
          f"(target 1e-8) over {', '.join(checked)}")
    ours_per_mu = total / (MU.size * len(ACTIVATIONS))
    print(f"baseline scipy.integrate.quad: {1e3 * quad_per_mu:.2f} ms per (activation, mu) "
          f"-> {quad_per_mu * MU.size * len(ACTIVATIONS):.1f} s for the same job; "
          f"speed-up x{quad_per_mu / ours_per_mu:.0f}")

    sub = MU[::10]
    t_loop = best_of(lambda: [tau(problems["erf"], float(m)) for m in sub], repeat=2)
    loop_per_mu = t_loop / sub.size
    print(f"baseline scalar loop of tau(): {1e3 * loop_per_mu:.3f} ms per mu; "
          f"speed-up of the vectorized call x{loop_per_mu / (per['erf'] / MU.size):.0f} (erf)")


if __name__ == "__main__":
    main()
