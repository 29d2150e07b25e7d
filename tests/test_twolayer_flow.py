"""The linearized two-layer flow does not depend on eigenvector conditioning (issue: make demo).

With ``K`` identical alignments the symmetric search-phase Jacobian has repeated
eigenvalues; a general eigen-decomposition then may return a nearly dependent eigenvector
basis (cond 4e18 with ``OPENBLAS_CORETYPE=Haswell``) and ``solve(U, x0)`` raised
``LinAlgError`` in ``make demo``. The flow now uses the orthogonal basis of ``eigh``; these
tests check it against an independent propagation of ``x' = J x`` and run the check in
subprocesses with and without ``OPENBLAS_CORETYPE``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from loradyn.twolayer.linearization import (
    is_symmetric,
    jacobian,
    linear_exit_time,
    propagator,
)

# the quick-scale grid point that raised LinAlgError in make demo, plus a grid around it
MU_BAD = 0.19067796610169493
MU_GRID = sorted({MU_BAD, *np.linspace(0.02, 0.98, 9).tolist()})
M0 = A0 = 1.0 / np.sqrt(10_000)
RADIUS = 0.5


def _reference_exit_time(mu: float, K: int, r: int) -> float:
    """Exit time from ``solve_ivp`` of ``x' = J x`` with an event at ``max_j |M_j| = R``."""
    J = jacobian("linear", [mu] * K, r)
    M0m = np.zeros((r, K))
    M0m[np.arange(r), np.arange(r) % K] = M0
    x0 = np.concatenate([np.full(K * r, A0), M0m.ravel()])

    def event(t, x):
        return np.sqrt(np.sum(x[K * r:].reshape(r, K) ** 2, axis=1)).max() - RADIUS

    event.terminal = True
    sol = solve_ivp(lambda t, x: J @ x, (0.0, 1e4), x0, method="DOP853", rtol=1e-13,
                    atol=1e-18, events=event)
    assert sol.t_events[0].size == 1
    return float(sol.t_events[0][0])


def _check_grid(Ks=(1, 2, 3, 4), ranks=(1, 2, 3, 4), mus=MU_GRID) -> float:
    """Largest relative error of :func:`linear_exit_time` against the reference."""
    worst = 0.0
    for K in Ks:
        for r in ranks:
            for mu in mus:
                t = linear_exit_time("linear", [mu] * K, r, m0=M0, a0=A0, radius=RADIUS)
                ref = _reference_exit_time(mu, K, r)
                worst = max(worst, abs(t - ref) / ref)
    return worst


@pytest.mark.parametrize("K,r", [(1, 1), (3, 1), (3, 3), (4, 2)])
@pytest.mark.parametrize("act", ["linear", "he2-norm"])
def test_jacobian_is_symmetric(act, K, r):
    J = jacobian(act, np.linspace(0.1, 0.8, K) if K > 1 else [0.3], r)
    assert is_symmetric(J)
    np.testing.assert_array_equal(J, J.T)


def test_linear_exit_time_identical_alignments_matches_solve_ivp():
    assert _check_grid() < 1e-8


def test_propagator_general_matrix_matches_solve_ivp():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((6, 6))
    J[0, 1] += 3.0  # not symmetric
    x0 = rng.standard_normal(6)
    assert not is_symmetric(J)
    sol = solve_ivp(lambda t, x: J @ x, (0.0, 1.3), x0, method="DOP853", rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(propagator(J, x0)(1.3), sol.y[:, -1], rtol=1e-9, atol=1e-11)


def test_propagator_defective_matrix():
    # a Jordan block: no eigenvector basis exists at all; expm still gives the exact flow
    J = np.array([[1.0, 1.0], [0.0, 1.0]])
    x = propagator(J, np.array([0.0, 1.0]))(2.0)
    np.testing.assert_allclose(x, [2.0 * np.exp(2.0), np.exp(2.0)], rtol=1e-13)


@pytest.mark.parametrize("coretype", ["Haswell", None])
def test_exit_time_with_and_without_openblas_coretype(coretype):
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if coretype is not None:
        env["OPENBLAS_CORETYPE"] = coretype
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "import test_twolayer_flow as t;"
        "print(json.dumps(t._check_grid(Ks=(1, 3, 4), ranks=(1, 2, 4))))"
    )
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) < 1e-8
