"""Search-phase linearization: closed forms, Jacobian by finite differences of the flow,
singularities against exact polynomial roots, units, exit time, parsing of mu specs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from loradyn.errors import LoradynError
from loradyn.linearization import (
    coefficients,
    exit_time,
    growth_rate,
    jacobian,
    parse_mu_spec,
    singularities,
    tau,
)
from loradyn.population import flow, make_problem

MU = np.linspace(0.0, 1.0, 101)


def test_linear_closed_form():
    r = tau("linear", MU[:-1])
    expected = 2.0 / (np.sqrt(1.0 + 4.0 * (1.0 - MU[:-1]) ** 2) - 1.0)
    assert np.max(np.abs(r.tau - expected) / expected) < 1e-10
    assert np.allclose(r.a, 1.0, atol=1e-12) and np.allclose(r.b, -(1.0 - MU[:-1]), atol=1e-12)
    assert np.isinf(tau("linear", 1.0).tau)
    assert np.all(np.diff(r.tau) > 0)  # monotone increasing


def test_relu_is_exactly_twice_linear():
    r, lin = tau("relu", MU[:-1]), tau("linear", MU[:-1])
    assert np.allclose(r.a, 0.5, atol=1e-12) and np.allclose(r.b, (MU[:-1] - 1) / 2, atol=1e-12)
    assert np.max(np.abs(r.tau / lin.tau - 2.0)) < 1e-10


def test_he3_polynomials():
    a, b = coefficients("he3", MU)
    assert np.max(np.abs(a - (45 * MU**4 - 36 * MU**2 + 9))) < 1e-10
    assert np.max(np.abs(b - (45 * MU**5 - 36 * MU**3 - 18 * MU**2 + 9 * MU))) < 1e-10


@pytest.mark.parametrize(
    "teacher,student,label,loss",
    [("erf", None, None, "mse"), ("relu", None, None, "mse"), ("sigmoid", None, None, "mse"),
     ("he4", None, None, "mse"), ("erf", "relu", None, "mse"), ("relu", "tanh", None, "mse"),
     ("he3", None, "square", "mse"), ("tanh", None, None, "correlation")],
)
def test_jacobian_matches_finite_difference_of_the_flow(teacher, student, label, loss):
    """a, b come from Gaussian integration by parts; check them against the flow itself."""
    pr = make_problem(teacher, student, label=label, loss=loss)
    mu = np.array([0.15, 0.5, 0.85])
    a, b = coefficients(pr, mu)

    def d(axis: int, h: float) -> np.ndarray:
        e = np.array([h, 0.0]) if axis == 0 else np.array([0.0, h])
        hi = np.array(flow(pr, e[0], e[1], mu)[:2])
        lo = np.array(flow(pr, -e[0], -e[1], mu)[:2])
        return (hi - lo) / (2 * h)

    # a kinked student makes the flow O(|u| u) beyond linear order: extrapolate h -> 0
    h = 1e-5
    fu = 2 * d(0, h) - d(0, 2 * h)
    fm = 2 * d(1, h) - d(1, 2 * h)
    J = jacobian(a, b)
    scale = 1.0 + np.abs(a)
    assert np.all(np.abs(fu[0] - J[:, 0, 0]) < 1e-6 * scale)
    assert np.all(np.abs(fu[1] - J[:, 1, 0]) < 1e-6 * scale)
    assert np.all(np.abs(fm[0] - J[:, 0, 1]) < 1e-6 * scale)
    assert np.all(np.abs(fm[1]) < 1e-9)


def test_growth_rate_is_top_eigenvalue():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50) * 3, rng.normal(size=50)
    lam = growth_rate(a, b)
    top = np.linalg.eigvalsh(jacobian(a, b))[:, -1]
    assert np.allclose(lam, top, rtol=1e-12, atol=1e-14)
    assert growth_rate(2.0, 0.0) == 0.0 and growth_rate(-2.0, 0.0) == 2.0


@pytest.mark.parametrize(
    "name,tol",
    # tanh/sigmoid: poles at +-i pi/2 slow Gauss-Hermite down (~1e-7 at 64 nodes for tanh)
    [("relu", 1e-10), ("erf", 1e-10), ("he5", 1e-10), ("sigmoid", 1e-8), ("tanh", 1e-6)],
)
def test_coefficients_converge_when_nodes_double(name, tol):
    mu = np.linspace(0.01, 0.99, 50)
    a1, b1 = coefficients(name, mu, nodes=64)
    a2, b2 = coefficients(name, mu, nodes=128)
    a3, b3 = coefficients(name, mu, nodes=256)
    assert np.max(np.abs(a1 - a2)) < tol * max(1.0, np.max(np.abs(a2)))
    assert np.max(np.abs(b1 - b2)) < tol * max(1.0, np.max(np.abs(b2)))
    # and the error keeps shrinking
    assert np.max(np.abs(a2 - a3)) <= max(np.max(np.abs(a1 - a2)), 1e-13 * np.max(np.abs(a3)))


def test_mu_zero_limit_is_continuous():
    for name in ["erf", "sigmoid", "relu", "he2", "he4", "0.5*relu+he3"]:
        a0, b0 = coefficients(name, 0.0)
        a1, b1 = coefficients(name, 1e-7)
        assert abs(a0 - a1) < 1e-5 * (1 + abs(a0)) and abs(b0 - b1) < 1e-5 * (1 + abs(b0))
    # odd He_K: b(0) = 0 and a(0) > 0, so tau diverges at mu = 0
    r = tau("he3", 0.0)
    assert r.b == 0.0 and r.a > 0 and np.isinf(r.tau)


@pytest.mark.parametrize("teacher,sign", [("he2", 1.0), ("sigmoid", -1.0)])
def test_mu_zero_limit_of_kinked_student_is_infinite_not_extrapolated(teacher, sign):
    """relu student, sigma(0) != y(0): a ~ C/mu with C = (sigma(0) - y(0)) / sqrt(2 pi).

    The old cubic extrapolation returned a finite, meaningless a(0) (e.g. 831.6 for he2);
    the limit is a(0) = +-inf, so tau(0) = inf (C > 0) or 0 (C < 0), with no NaN.
    """
    from scipy.special import expit

    y0 = -1.0 if teacher == "he2" else float(expit(0.0))
    C = (0.0 - y0) / math.sqrt(2 * math.pi)
    a_small, _ = coefficients(teacher, 1e-6, student="relu")
    assert float(a_small) * 1e-6 == pytest.approx(C, rel=1e-3)
    with np.errstate(all="raise"):
        r = tau(teacher, [0.0, 1e-6], student="relu")
    assert r.a[0] == sign * np.inf
    assert r.tau[0] == (np.inf if sign > 0 else 0.0)
    assert not np.any(np.isnan(r.tau)) and not np.any(np.isnan(r.lambda_plus))


def test_overflowing_activation_is_an_error_not_nan():
    """1e300*he3 overflows the quadrature: one-line error, not NaN rows with tau = inf."""
    with pytest.raises(LoradynError, match="overflows") as exc:
        tau("1e300*he3", [0.0, 0.5, 1.0])
    assert "\n" not in str(exc.value)
    with pytest.raises(LoradynError, match="overflows"):
        singularities("1e300*he3")


# ---- exact polynomials of b(mu) for pure He_K (independent of the quadrature)


def _he_power(k: int) -> list[int]:
    """Monomial coefficients of He_k (integers)."""
    p0, p1 = [1], [0, 1]
    if k == 0:
        return p0
    for n in range(1, k):
        nxt = [0] + p1  # x * He_n
        for i, c in enumerate(p0):
            nxt[i] -= n * c
        p0, p1 = p1, nxt
    return p1


def _gauss_moment(i: int) -> int:
    return 0 if i % 2 else math.prod(range(i - 1, 0, -2))


def _b_poly(K: int) -> list[int]:
    """b(mu) = E[z (He_K(mu z) - He_K(z)) K He_{K-1}(mu z)] as integer coefficients in mu."""
    h = _he_power(K)
    dh = [K * c for c in _he_power(K - 1)]
    out = [0] * (2 * K + 1)
    # E[z He_K(mu z) dHe(mu z)] = sum_{i,j} h_i dh_j mu^{i+j} E[z^{i+j+1}]
    for i, hi in enumerate(h):
        for j, dj in enumerate(dh):
            out[i + j] += hi * dj * _gauss_moment(i + j + 1)
            # - E[z He_K(z) dHe(mu z)] = - sum_{i,j} h_i dh_j mu^j E[z^{i+j+1}]
            out[j] -= hi * dj * _gauss_moment(i + j + 1)
    return out


def _eval(poly: list[int], x) -> Fraction | float:
    acc = 0 * x
    for c in reversed(poly):
        acc = acc * x + c
    return acc


def _exact_roots(K: int) -> list[float]:
    poly = _b_poly(K)
    grid = np.linspace(1e-4, 1 - 1e-4, 4001)
    vals = np.polyval(np.array(poly[::-1], dtype=float), grid)  # scan in floats
    roots = []
    for i in np.nonzero(np.sign(vals[:-1]) * np.sign(vals[1:]) < 0)[0]:
        lo, hi = Fraction(float(grid[i])), Fraction(float(grid[i + 1]))
        slo = _eval(poly, lo) > 0
        for _ in range(40):
            mid = (lo + hi) / 2
            if (_eval(poly, mid) > 0) == slo:
                lo = mid
            else:
                hi = mid
        roots.append(float((lo + hi) / 2))
    return roots


def test_exact_b_polynomial_matches_he3_closed_form():
    assert _b_poly(3)[:6] == [0, 9, -18, -36, 0, 45]


@pytest.mark.parametrize("K", list(range(2, 15)))
def test_singularities_of_pure_hermite(K):
    sings = singularities(f"he{K}")
    exact = [r for r in _exact_roots(K)]
    a_at = coefficients(f"he{K}", np.array(exact))[0] if exact else np.array([])
    expected = [r for r, a in zip(exact, a_at, strict=True) if a > 0]
    assert len(sings) == len(expected), (K, sings, exact)
    bscale = np.max(np.abs(coefficients(f"he{K}", np.linspace(0, 1, 101))[1]))
    for s, r in zip(sings, expected, strict=True):
        assert abs(s.mu - r) < 1e-6
        assert s.a > 0 and abs(s.b) < 1e-9 * bscale
    # the structure found: one singularity for odd K >= 3; none for He2..He8;
    # two for even K >= 10
    if K % 2:
        assert len(sings) == 1
    else:
        assert len(sings) == (0 if K <= 8 else 2)


def test_he3_singularity_value_and_label_square_removes_it():
    (s,) = singularities("he3")
    assert s.mu == pytest.approx(0.3207243, abs=1e-6)
    assert singularities("he3", label="square") == []
    assert singularities("he5", label="square") == []
    assert singularities("linear") == [] and singularities("erf") == []


def test_paper_units():
    mu = np.array([0.2, 0.7])
    nat = tau("he4", mu)
    pap = tau("he4", mu, units="paper")
    assert np.allclose(pap.tau, nat.tau * math.factorial(4) * 4)
    assert np.allclose(tau("erf", mu, units="paper").tau, tau("erf", mu).tau)
    with pytest.raises(LoradynError):
        tau("erf", mu, units="weeks")


def test_vectorized_shapes_and_dataset():
    mu = np.linspace(0.1, 0.9, 12).reshape(3, 4)
    r = tau("erf", mu)
    assert r.tau.shape == (3, 4) and len(r.rows()) == 12
    ds = tau("erf", np.linspace(0.1, 0.9, 5)).to_dataset()
    assert set(ds.data_vars) == {"a", "b", "lambda_plus", "tau"} and "config" in ds.attrs


def test_exit_time():
    assert exit_time(2.0, 10_000, radius=1.0) == pytest.approx(2.0 * 0.5 * math.log(10_000))
    with pytest.raises(LoradynError):
        exit_time(1.0, 1)
    with pytest.raises(LoradynError):
        exit_time(1.0, 100, radius=0.0)


def test_exit_time_is_zero_not_nan_when_the_start_is_already_at_the_radius():
    """r0 = 1/sqrt(d) >= R: nothing to escape, even where tau is infinite (no silent NaN)."""
    with np.errstate(all="raise"):
        t = exit_time(np.array([2.0, np.inf]), 4, radius=0.5)  # log(R sqrt d) = 0 exactly
        assert np.array_equal(t, [0.0, 0.0])
        assert np.array_equal(exit_time(np.array([2.0, np.inf]), 3, radius=0.5), [0.0, 0.0])
    assert np.isinf(exit_time(np.inf, 10_000))


def test_parse_mu_spec():
    assert np.allclose(parse_mu_spec("0:1:11"), np.linspace(0, 1, 11))
    assert np.allclose(parse_mu_spec(" 0.2 : 0.4 : 3 "), [0.2, 0.3, 0.4])
    assert np.allclose(parse_mu_spec("0.1,0.5,.9"), [0.1, 0.5, 0.9])
    assert np.allclose(parse_mu_spec("0.5"), [0.5])
    assert np.allclose(parse_mu_spec("1e-1:1:2"), [0.1, 1.0])
    for bad in ["1:0:3", "0:1.5:3", "-0.1,0.5", "abc", "0:1", "0:1:0", "0:1:2.5", "", "0.1,,0.2",
                "nan", "0:1:3:4"]:
        with pytest.raises(LoradynError) as exc:
            parse_mu_spec(bad)
        assert "\n" not in str(exc.value)


# ---------------------------------------------------------------- adaptive quadrature


def _quad_tau(name: str, mu: float) -> float:
    """Reference: a, b by adaptive scipy.integrate.quad on the whole line."""
    from scipy import integrate
    from scipy.stats import norm

    from loradyn.activations import get_activation
    from loradyn.linearization import growth_rate

    act = get_activation(name)
    f, df = act.f, act.df

    def g0(z):
        return (f(mu * z) - f(z)) * df(mu * z)

    opts = dict(epsabs=0.0, epsrel=1e-13, limit=500)
    b = integrate.quad(lambda z: z * g0(z) * norm.pdf(z), -np.inf, np.inf, **opts)[0]
    cross = integrate.quad(lambda z: df(z) * df(mu * z) * norm.pdf(z), -np.inf, np.inf,
                           **opts)[0]
    a = (b + cross) / mu
    return 1.0 / float(growth_rate(a, b))


MU_GRID = np.linspace(0.001, 0.999, 1000)


@pytest.mark.parametrize("name", ["tanh", "erf", "sigmoid"])
def test_tau_relative_accuracy_1e8_against_quad(name):
    """tau (not only a and b) to 1e-8 relative; quad on a subset of the 1000-point grid
    including both ends (the whole grid: the slow test below)."""
    from loradyn.linearization import tau

    ours = tau(name, MU_GRID).tau
    idx = np.r_[0, 1, 100, 333, 500, 666, 900, 998, 999]
    ref = np.array([_quad_tau(name, MU_GRID[i]) for i in idx])
    assert np.max(np.abs(ours[idx] / ref - 1)) < 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tanh", "erf", "sigmoid"])
def test_tau_relative_accuracy_1e8_whole_grid(name):
    from loradyn.linearization import tau

    ours = tau(name, MU_GRID).tau
    ref = np.array([_quad_tau(name, m) for m in MU_GRID])
    assert np.max(np.abs(ours / ref - 1)) < 1e-8


def test_adaptive_nodes_double_from_64_and_polynomials_keep_their_rule():
    from loradyn.linearization import coefficients, quadrature_nodes, tau
    from loradyn.population import make_problem

    # at 64 nodes tanh is off by ~1e-6 at the ends: the adaptive rule must go further
    fixed = tau("tanh", MU_GRID[[0, -1]], nodes=64).tau
    adaptive = tau("tanh", MU_GRID[[0, -1]]).tau
    assert np.max(np.abs(fixed / adaptive - 1)) > 1e-8
    assert quadrature_nodes("tanh", MU_GRID) in (128, 256)
    assert quadrature_nodes("erf", MU_GRID) >= 128
    # polynomials: the exact rule of the problem, never adapted
    for name in ("linear", "he3", "he6"):
        assert quadrature_nodes(name, MU_GRID) == make_problem(name).nodes
    # an explicit node count is used as given
    a64, b64 = coefficients("tanh", 0.5, nodes=64)
    a, b = coefficients("tanh", 0.5)
    assert a64 != a or b64 != b


def test_adaptive_cap_warns(monkeypatch):
    from loradyn import linearization as lin

    monkeypatch.setattr(lin, "ADAPT_RTOL", 1e-30)  # never converged: the cap is reached
    with pytest.warns(lin.QuadratureWarning, match="cap of 256 nodes"):
        t = lin.tau("tanh", np.array([0.2, 0.8])).tau
    assert np.all(np.isfinite(t))
