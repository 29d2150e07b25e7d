"""Exact population loss and gradients: Hermite series, convergence, finite differences,
Monte Carlo, the correlation loss and the ODE's finite-step term."""

from __future__ import annotations

import numpy as np
import pytest

from loradyn.errors import LoradynError
from loradyn.hermite import series_population_loss
from loradyn.population import flow, make_problem, population

RNG = np.random.default_rng(20260101)
U = RNG.uniform(-1.2, 1.2, 8)
M = RNG.uniform(-0.95, 0.95, 8)
MU = RNG.uniform(0.0, 1.0, 8)
P = RNG.uniform(-0.6, 0.6, 8) * np.sqrt(1 - M**2)  # keeps m^2 + p^2 < 1

POLY_PAIRS = [
    ("he3", None, None, "mse"),
    ("he2+he3", "he4", None, "mse"),
    ("linear", "he2", None, "mse"),
    ("he3", None, "square", "mse"),
    ("he3", "he5", None, "correlation"),
    ("he4-norm", "he2+he3", None, "correlation"),
]


@pytest.mark.parametrize("teacher,student,label,loss", POLY_PAIRS)
@pytest.mark.parametrize("aligned", [True, False])
def test_quadrature_matches_hermite_series(teacher, student, label, loss, aligned):
    pr = make_problem(teacher, student, label=label, loss=loss)
    p = None if aligned else P
    quad = population(pr, U, M, MU, p=p).loss
    series = series_population_loss(pr, U, M, MU, p=p)
    assert np.all(np.abs(quad - series) <= 1e-10 * np.maximum(1.0, np.abs(quad)))


@pytest.mark.parametrize(
    "teacher,student,tol",
    [("relu", None, 1e-9), ("erf", None, 1e-9), ("relu", "erf", 1e-9), ("erf", "relu", 1e-9),
     ("he3", None, 1e-9),
     # tanh and sigmoid have poles at +-i pi/2: Gauss-Hermite converges like exp(-c sqrt(n)),
     # about 1e-8 at 64 nodes (erf is entire and converges much faster)
     ("sigmoid", "tanh", 1e-7)],
)
def test_quadrature_converges_when_nodes_double(teacher, student, tol):
    pr = make_problem(teacher, student)
    a = population(pr, U, M, MU, nodes=64)
    b = population(pr, U, M, MU, nodes=128)
    for f in ("loss", "du", "dm", "h"):
        assert np.max(np.abs(getattr(a, f) - getattr(b, f))) < tol * 10 ** (f == "h"), f
    a = population(pr, U, M, MU, p=P, nodes=64)
    b = population(pr, U, M, MU, p=P, nodes=128)
    for f in ("loss", "du", "dm", "dp"):
        assert np.max(np.abs(getattr(a, f) - getattr(b, f))) < 10 * tol, f


def test_relu_near_perfect_overlap_converges():
    pr = make_problem("relu")
    m = np.array([0.99, 0.999, 0.9999])
    a = population(pr, 0.5, m, 0.5, nodes=64)
    b = population(pr, 0.5, m, 0.5, nodes=256)
    assert np.max(np.abs(a.du - b.du)) < 1e-9 and np.max(np.abs(a.dm - b.dm)) < 1e-9


def _fd(f, x, h=1e-6):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("teacher,student,loss", [("erf", None, "mse"), ("relu", None, "mse"),
                                                  ("he3", "he2+he3", "mse"),
                                                  ("tanh", "sigmoid", "correlation")])
def test_gradients_match_finite_differences(teacher, student, loss):
    pr = make_problem(teacher, student, loss=loss)
    u, m, mu = U[:4], M[:4], MU[:4]
    pop = population(pr, u, m, mu)
    dLdu = _fd(lambda x: population(pr, x, m, mu).loss, u)
    dLdm = _fd(lambda x: population(pr, u, x, mu).loss, m)
    assert np.max(np.abs(pop.du - dLdu)) < 1e-6
    # w* . P_w grad L = (1 - m^2) dL/dm (moving w in the plane of w* and w)
    assert np.max(np.abs(pop.dm - (1 - m**2) * dLdm)) < 1e-6


def test_misaligned_gradients_match_finite_differences():
    pr = make_problem("erf", "tanh")
    u, m, mu, p = U[:4], M[:4], MU[:4], P[:4]
    pop = population(pr, u, m, mu, p=p)
    Lu = _fd(lambda x: population(pr, x, m, mu, p=p).loss, u)
    Lm = _fd(lambda x: population(pr, u, x, mu, p=p).loss, m)
    Lp = _fd(lambda x: population(pr, u, m, mu, p=x).loss, p)
    # tangent P_w w* changes (m, p) by (1 - m^2, -m p); P_w v by (-m p, 1 - p^2)
    assert np.max(np.abs(pop.du - Lu)) < 1e-6
    assert np.max(np.abs(pop.dm - ((1 - m**2) * Lm - m * p * Lp))) < 1e-6
    assert np.max(np.abs(pop.dp - (-m * p * Lm + (1 - p**2) * Lp))) < 1e-6


@pytest.mark.parametrize("teacher,student,aligned", [("erf", None, True), ("relu", "erf", True),
                                                     ("he3", None, False)])
def test_population_matches_monte_carlo(teacher, student, aligned):
    pr = make_problem(teacher, student)
    u, m, mu = 0.7, 0.4, 0.6
    p = None if aligned else 0.5
    rng = np.random.default_rng(7)
    n = 2_000_000
    zs, zv, xi = rng.standard_normal((3, n))
    if aligned:
        z = m * zs + np.sqrt(1 - m * m) * xi
        lam = mu * zs + u * z
    else:
        z = m * zs + p * zv + np.sqrt(1 - m * m - p * p) * xi
        lam = mu * zs + np.sqrt(1 - mu * mu) * zv + u * z
    y = pr.target.y(zs)
    r = pr.student.f(lam) - y
    g = r * pr.student.df(lam)
    samples = {
        "loss": 0.5 * r * r,
        "du": g * z,
        "dm": u * (g * zs - m * g * z),
        "h": g * g,
    }
    if not aligned:
        samples["dp"] = u * (g * zv - p * g * z)
    pop = population(pr, u, m, mu, p=p)
    for k, v in samples.items():
        se = v.std() / np.sqrt(n)
        assert abs(float(getattr(pop, k)) - v.mean()) < 5 * se + 1e-12, k


def test_correlation_loss_linear_gradients_do_not_depend_on_mu():
    pr = make_problem("linear", loss="correlation")
    mus = np.linspace(0.0, 1.0, 7)
    for u, m in [(0.3, 0.2), (-0.8, 0.7), (1.1, -0.4)]:
        pop = population(pr, u, m, mus)
        assert np.allclose(pop.du, -m, atol=1e-13)
        assert np.allclose(pop.dm, -u * (1 - m * m), atol=1e-13)
    # whereas the MSE gradients do depend on mu
    mse = population(make_problem("linear"), 0.3, 0.2, mus)
    assert np.ptp(mse.du) > 0.1


def test_flow_includes_finite_step_term():
    pr = make_problem("erf")
    u, m, mu = 0.4, 0.3, 0.5
    pop = population(pr, u, m, mu)
    du0, dm0, _ = flow(pr, u, m, mu)
    du1, dm1, _ = flow(pr, u, m, mu, step_noise=0.4)
    assert du0 == pytest.approx(-float(pop.du)) and du1 == pytest.approx(du0)
    assert dm0 == pytest.approx(-float(pop.dm))
    assert dm1 - dm0 == pytest.approx(-0.4 * (m / 2) * u * u * float(pop.h), rel=1e-12)


def test_bad_inputs():
    with pytest.raises(LoradynError):
        population(make_problem("erf"), 0.1, 0.1, 1.5)
    with pytest.raises(LoradynError):
        make_problem("erf", loss="hinge")
    with pytest.raises(LoradynError):
        make_problem("erf", nodes=1)


def test_default_nodes_make_noise_moment_exact_for_high_degree_polynomials():
    """h = E[g^2] has degree 2 (max(dt, ds) + ds - 1): the default rule must be exact.

    He_30 with squared labels: dt = 60, ds = 30, so h needs 90 Gauss-Hermite nodes; with
    64 it was off by 20 %, which distorted the finite-step term of the ODE engine.
    """
    pr = make_problem("he30", label="square")
    auto = population(pr, 0.3, 0.2, 0.5)
    ref = population(pr, 0.3, 0.2, 0.5, nodes=2 * pr.nodes)
    for name in ("h", "loss", "du", "dm"):
        a, b = float(getattr(auto, name)), float(getattr(ref, name))
        assert a == pytest.approx(b, rel=1e-10), name


def test_with_label_keeps_an_explicit_node_count():
    from loradyn.population import make_problem

    pr = make_problem("he3", nodes=200)
    sq = pr.with_label("square")
    assert sq.target.label.name == "square" and sq.nodes == 200
    auto = make_problem("he3", label="square").nodes
    assert make_problem("he3").with_label("square").nodes == auto
