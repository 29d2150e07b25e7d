"""Benchmark: cost per SGD step of the two-layer engines against the dense baseline.

The ``reduced`` engine draws the batch projections on the ``K + r`` frame and the Gram of
the orthogonal gradient parts (Wishart, Bartlett) instead of ``d``-dimensional vectors,
so its cost should not grow with ``d``. Prints the time per step of ``dense`` and
``reduced`` for growing ``d`` (K = 3, r = 2, batch 100), and the ratio dense/reduced,
measured in the same process.

Second part: the theory for any activation. Time per ODE step (RK4 with the finite-step
term) for erf (exact pair identities and the Gaussian-tilt finite-step term) and relu
(closed-form conditional finite-step term) against the linear closed form; the cost of the
erf finite-step term ``H`` by its exact identity against the generic conditional
quadrature; and the cost of ``loradyn twolayer tau`` for erf against linear, all measured in
the same process. The accurate tier of the generic finite-step term is timed too.

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


def _best(fn, repeat: int = 3) -> float:
    fn()  # warm-up (imports, caches)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def theory() -> None:
    import numpy as np

    from loradyn.twolayer import tau
    from loradyn.twolayer.moments import joint_covariance, noise_conditional, student_fn
    from loradyn.twolayer.population import covariances, noise_matrix

    steps = 30
    base = TwoLayerConfig(mu=[0.3, 0.5, 0.7], rank=2, d=10000, lr=0.1, batch=1000,
                          steps=steps, seeds=4, record_every=steps)
    t_lin = _best(lambda: run(base, "ode")) / steps
    print(f"\n{'ODE (K=3, r=2, 4 seeds)':<28} {'ms/step':>10} {'vs linear':>10}")
    print(f"{'linear (closed form)':<28} {1e3 * t_lin:>10.3f} {1.0:>10.1f}")
    for act in ("erf", "relu"):
        t = _best(lambda act=act: run(base.replace(activation=act, teacher=act), "ode")) / steps
        print(f"{act:<28} {1e3 * t:>10.3f} {t / t_lin:>10.1f}")
    rng = np.random.default_rng(0)
    A, M = 0.3 * rng.standard_normal((3, 2)), 0.3 * rng.standard_normal((2, 3))
    C = np.eye(2)
    mu = np.array([0.3, 0.5, 0.7])
    t_ex = _best(lambda: noise_matrix(mu, A, M, C, activation="erf"), 20)
    S = joint_covariance(*covariances(mu, A, M, C))
    erf = student_fn("erf")
    t_q = _best(lambda: noise_conditional(S, erf, erf, 1.0), 3)
    print(f"\nerf finite-step term H: exact {1e3 * t_ex:.3f} ms, conditional quadrature "
          f"{1e3 * t_q:.3f} ms, ratio {t_q / t_ex:.0f}")
    t0 = time.perf_counter()  # one call (tens of seconds): no warm-up, no repeat
    noise_matrix(mu, A, M, C, activation="erf", method="accurate")
    t_acc = time.perf_counter() - t0
    print(f"erf H, accurate tier (method='accurate', ~1e-7): {1e3 * t_acc:.0f} ms, ratio "
          f"{t_acc / t_ex:.0f} to the exact identity")
    relu = student_fn("relu")
    t_rx = _best(lambda: noise_matrix(mu, A, M, C, activation="relu"), 20)
    t_rq = _best(lambda: noise_conditional(S, relu, relu, 1.0), 3)
    print(f"relu H: closed-form conditional {1e3 * t_rx:.3f} ms, generic conditional "
          f"quadrature {1e3 * t_rq:.3f} ms, ratio {t_rq / t_rx:.1f}")
    ranks = [1, 2, 4]
    t_tl = _best(lambda: tau("linear", [0.3, 0.3, 1.0], ranks), 5)
    t_te = _best(lambda: tau("erf", [0.3, 0.3, 1.0], ranks), 5)
    print(f"twolayer tau, K=3, ranks {ranks}: linear {1e3 * t_tl:.2f} ms, erf "
          f"{1e3 * t_te:.2f} ms, ratio {t_te / t_tl:.1f}")


def main() -> None:
    print(f"{'d':>8} {'dense ms/step':>14} {'reduced ms/step':>16} {'dense/reduced':>14}")
    for d in (100, 1000, 10000):
        steps = 200 if d <= 1000 else 40
        td, tr = per_step("dense", d, steps), per_step("reduced", d, 200)
        print(f"{d:>8} {1e3 * td:>14.3f} {1e3 * tr:>16.3f} {td / tr:>14.1f}")
    print(f"{10**9:>8} {'-':>14} {1e3 * per_step('reduced', 10**9, 200):>16.3f} {'-':>14}")
    theory()


if __name__ == "__main__":
    main()
