"""Escape-time distribution (loradyn.escape): API, exact pieces, agreement with the reduced
engine on a small subset, CLI and bad input. Budget: about 15 s."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

import loradyn
from loradyn.cli import main
from loradyn.config import RunConfig
from loradyn.engines import simulate
from loradyn.errors import LoradynError
from loradyn.escape import QUANTILE_NAMES, QUANTILES, _cdf_x, _quantile_x, escape_distribution


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_api_shapes_order_and_dataset():
    r = loradyn.escape_distribution("erf", [0.2, 0.5], d=1000, lr=0.2, batch=500)
    assert r.quantiles.shape == (2, 7)
    assert np.all(np.diff(r.quantiles, axis=1) > 0)  # quantiles increase
    # the median sits above Prop. 1's leading order (projection, nonlinear exit)
    assert np.all(r.quantiles[:, 3] > r.leading)
    assert np.all(r.quantiles[:, 0] < r.mean) and np.all(r.mean < r.quantiles[:, -1])
    assert np.all(r.in_regime)
    ds = r.to_dataset()
    assert list(ds.level.values) == list(QUANTILES)
    cfg = json.loads(ds.attrs["config"])
    assert cfg["d"] == 1000 and cfg["batch"] == 500 and cfg["m0"] is None
    assert math.isclose(cfg["u0"], 1 / math.sqrt(1000))
    np.testing.assert_allclose(ds.escape_quantile.values, r.quantiles)
    assert [k for k in r.rows()[0]][:9] == ["mu", *QUANTILE_NAMES, "mean"]


def test_folded_normal_quantiles_invert_the_cdf():
    c = np.array([0.0, 0.3, -1.0])
    s = np.array([1.0, 0.2, 0.5])
    p = np.array([0.05, 0.5, 0.95])
    for r in (1, 3):
        x = _quantile_x(p, c, s, r)
        np.testing.assert_allclose(_cdf_x(x, c[:, None], s[:, None], r),
                                   np.broadcast_to(p, x.shape), atol=1e-10)


def test_mean_and_quantiles_agree_with_monte_carlo_of_the_same_law():
    """The quadrature of the mean and the quantile inversion against draws of X."""
    r = escape_distribution("linear", [0.3], d=500, lr=0.2, batch=100, starts=2)
    tab = r._tables[0]
    rng = np.random.default_rng(1)
    a = rng.normal(tab["c"], tab["sigma"], size=(400_000, 2))
    from loradyn.escape import _steps_of_x
    t = _steps_of_x(tab, np.abs(a).max(axis=1))
    if "spread" in tab:  # the multiplicative noise: inverse Gaussian first passage (part 6)
        g_eff, sig1 = tab["spread"][1], tab["spread"][2]
        t = rng.wald(t, t * t * g_eff * g_eff / sig1)
    t = t + 0.5
    assert abs(t.mean() / r.mean[0] - 1) < 3e-3
    np.testing.assert_allclose(np.quantile(t, QUANTILES), r.quantiles[0], rtol=3e-3)
    # and the CDF used by the KS test is the law of the quantiles
    np.testing.assert_allclose(r.cdf(0, r.quantiles[0]), QUANTILES, atol=1e-6)


def test_ode_and_quadrature_convergence(monkeypatch):
    import loradyn.escape as E

    base = escape_distribution("erf", [0.1, 0.6, 0.9], d=1000, lr=0.2, batch=500)
    fine = escape_distribution("erf", [0.1, 0.6, 0.9], d=1000, lr=0.2, batch=500, nodes=48)
    np.testing.assert_allclose(base.quantiles, fine.quantiles, rtol=2e-3)
    monkeypatch.setattr(E, "_ODE_TOL", E._ODE_TOL / 10)
    tight = escape_distribution("erf", [0.1, 0.6, 0.9], d=1000, lr=0.2, batch=500)
    np.testing.assert_allclose(base.quantiles, tight.quantiles, rtol=4e-3)


def test_fixed_m0_narrows_and_noise_widens():
    rand = escape_distribution("linear", [0.5], d=1000, lr=0.2, batch=500)
    fixed = escape_distribution("linear", [0.5], d=1000, lr=0.2, batch=500, m0=1 / math.sqrt(1000))
    assert np.ptp(fixed.quantiles) < 0.5 * np.ptp(rand.quantiles)
    assert math.isclose(fixed.noise_fraction[0], 1.0)
    noisy = escape_distribution("linear", [0.5], d=1000, lr=0.2, batch=50, m0=1 / math.sqrt(1000))
    assert np.ptp(noisy.quantiles) > 2 * np.ptp(fixed.quantiles)
    # more competing directions escape earlier
    r4 = escape_distribution("linear", [0.5], d=1000, lr=0.2, batch=500, starts=4)
    assert r4.quantiles[0, 3] < rand.quantiles[0, 3]


def test_outside_regime_is_flagged():
    r = escape_distribution("linear", [0.2], d=1000, lr=0.2, batch=10)  # lr d / B = 20
    assert not r.in_regime[0]
    # He3 at small batch: the multiplicative noise (eta^2/B per step) accumulates a large
    # variance of log alpha, beyond what the validation supports
    from loradyn.escape import MAX_MULT_NOISE
    # (d = 100, B = 20: lr d / B = 1 in the paper's units, mult_noise ~ 1.4 at mu = 0.8)
    small = escape_distribution("he3", [0.2, 0.8], d=100, lr=0.2 / 18, batch=20)
    large = escape_distribution("he3", [0.2, 0.8], d=100, lr=0.2 / 18, batch=200)
    assert small.mult_noise[1] > MAX_MULT_NOISE > large.mult_noise[1]
    assert list(small.in_regime) == [True, False] and list(large.in_regime) == [True, True]
    # the regime's noise parameter is in the paper's units: K! K lr d / B = 18 lr d / B for He3
    r = escape_distribution("he3", [0.2], d=300, lr=0.2 / 18, batch=15)  # lr d / B = 0.22
    assert r.config["noise_parameter"] == pytest.approx(4.0) and not r.in_regime[0]
    # mult_noise scales like 1 / B at a fixed law
    np.testing.assert_allclose(small.mult_noise[0] / large.mult_noise[0], 10, rtol=0.05)


def test_nonlinear_start_reduces_to_the_linear_law(monkeypatch):
    """Forcing the flow-from-the-start path where the start is linear changes nothing."""
    import loradyn.escape as E

    base = escape_distribution("erf", [0.1, 0.5], d=1000, lr=0.2, batch=200)
    assert not np.any(base.nonlinear_start)
    monkeypatch.setattr(E, "START_NONLINEAR_SWITCH", -1.0)
    forced = escape_distribution("erf", [0.1, 0.5], d=1000, lr=0.2, batch=200)
    assert np.all(forced.nonlinear_start)
    # (the exit times from the start points carry the ODE tolerance: ~0.5%)
    np.testing.assert_allclose(forced.quantiles, base.quantiles, rtol=6e-3)
    np.testing.assert_allclose(forced.mean, base.mean, rtol=6e-3)
    fixed = escape_distribution("linear", [0.4], d=1000, lr=0.2, batch=200, m0=0.02)
    monkeypatch.setattr(E, "START_NONLINEAR_SWITCH", 1.0)
    lin = escape_distribution("linear", [0.4], d=1000, lr=0.2, batch=200, m0=0.02)
    # a fixed m0: all the spread is SGD noise; the path version evaluates h along the path
    # (h grows with u) instead of at the saddle, a ~1% wider law
    np.testing.assert_allclose(fixed.quantiles[0, 3], lin.quantiles[0, 3], rtol=2e-3)
    np.testing.assert_allclose(fixed.quantiles, lin.quantiles, rtol=1.5e-2)


def _check_against_the_reduced_engine(pred, act, mu, d, lr, batch):
    """The targets of issue 15 on one cell: 400 seeds of the exact reduced engine; median
    within 10%, q10 and q90 within 15%, one-sample KS (uniform jitter) not rejected at 1%."""
    steps = int(1.6 * pred.quantiles[0, -1]) + 20
    ds = simulate(RunConfig(teacher=act, mu=[mu], d=d, lr=lr, batch=batch, steps=steps,
                            seeds=400, record_every=steps))
    e = ds.escape_step.values[0].astype(float)
    e[e < 0] = np.inf
    sim = np.quantile(e, QUANTILES)
    assert abs(pred.quantiles[0, 3] / sim[3] - 1) < 0.10
    assert np.all(np.abs(pred.quantiles[0, [1, 5]] / sim[[1, 5]] - 1) < 0.15)
    jit = e - np.random.default_rng(0).random(e.size)
    assert stats.kstest(jit, lambda t: pred.cdf(0, t)).pvalue > 0.01


def test_relu_small_mu_nonlinear_start_agrees_with_the_reduced_engine():
    """ReLU at mu = 0.05: u0 = 1/sqrt(d) is as large as mu, the start is far off the
    unstable manifold. The law comes from the flow integrated from (u0, m0); it is narrow
    (the u0 kick dominates) and agrees with the exact engine."""
    d, lr, batch = 300, 0.2, 60
    pred = escape_distribution("relu", [0.05], d=d, lr=lr, batch=batch)
    assert pred.start_nonlinearity[0] > 1.0 and pred.nonlinear_start[0] and pred.in_regime[0]
    # the kinked student switches at start_nonlinearity 0.25, the smooth ones at 1
    r = escape_distribution("relu", [0.2, 0.6], d=1000, lr=0.2, batch=500)
    assert list(r.nonlinear_start) == [True, False] and r.start_nonlinearity[0] < 1.0
    _check_against_the_reduced_engine(pred, "relu", 0.05, d, lr, batch)


def test_relu_closed_form_flow_matches_the_quadrature():
    from loradyn.escape import _flow
    from loradyn.population import flow, make_problem

    pr = make_problem("relu", None)
    rng = np.random.default_rng(0)
    u, m, mu = rng.uniform(-0.8, 0.8, 60), rng.uniform(-0.95, 0.95, 60), rng.uniform(0.01, 1, 60)
    quad = np.array(flow(pr, u, m, mu, step_noise=0.7, nodes=64))
    np.testing.assert_allclose(np.array(_flow(pr, u, m, mu, step_noise=0.7)), quad, atol=1e-10)
    # other activations go through the quadrature unchanged
    pe = make_problem("erf", None)
    np.testing.assert_array_equal(np.array(_flow(pe, u, m, mu, step_noise=0.7)),
                                  np.array(flow(pe, u, m, mu, step_noise=0.7)))


def test_singularity_gives_infinite_escape():
    r = escape_distribution("linear", [1.0], d=1000, lr=0.2, batch=500)
    assert np.all(np.isinf(r.quantiles)) and not r.in_regime[0]


@pytest.mark.parametrize("mu", [0.2, 0.6])
def test_agrees_with_the_reduced_engine_linear(mu):
    """Small subset of scripts/escape_validation.py: linear (Gram sampler), d = 300."""
    d, lr, batch = 300, 0.2, 60  # lr d / B = 1
    pred = escape_distribution("linear", [mu], d=d, lr=lr, batch=batch)
    _check_against_the_reduced_engine(pred, "linear", mu, d, lr, batch)


def test_bad_input_is_a_loradyn_error():
    for kw, word in [(dict(d=2), "d = 2"), (dict(lr=0.0), "lr"), (dict(batch=0), "batch"),
                     (dict(radius=1.5), "radius"), (dict(m0=0.6), "m0"),
                     (dict(starts=0), "starts"), (dict(u0=float("nan")), "u0")]:
        args = dict(d=1000, lr=0.2, batch=500) | kw
        with pytest.raises(LoradynError, match=word):
            escape_distribution("erf", [0.5], **args)
    with pytest.raises(LoradynError, match="mu = 0"):
        escape_distribution("erf", [0.0, 0.5], d=1000, lr=0.2, batch=500)
    with pytest.raises(LoradynError, match="outside"):
        escape_distribution("erf", [1.5], d=1000, lr=0.2, batch=500)


def test_cli_csv_header_and_values(capsys):
    code, out, _ = run(["escape", "--teacher", "erf", "--mu", "0.2,0.5,0.8", "--d", "1000",
                        "--lr", "0.2", "--batch", "500", "--format", "csv"], capsys)
    assert code == 0
    assert out.splitlines()[0].startswith("mu,q05,q10,q25,q50,q75,q90,q95,mean")
    rows = list(csv.DictReader(io.StringIO(out)))
    lib = escape_distribution("erf", [0.2, 0.5, 0.8], d=1000, lr=0.2, batch=500)
    np.testing.assert_allclose([float(r["q50"]) for r in rows], lib.quantiles[:, 3])


def test_cli_json_fixed_m0_and_u0(capsys):
    code, out, _ = run(["escape", "--teacher", "linear", "--mu", "0.3", "--m0", "0.03",
                        "--u0", "0.05", "--radius", "0.4", "--format", "json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["m0"] == 0.03 and data["u0"] == 0.05 and data["radius"] == 0.4
    assert data["rows"][0]["in_regime"] is True


def test_cli_bad_input_one_line_exit_2(capsys):
    for args in (["--mu", "0.5", "--m0", "0.7"], ["--mu", "0.5", "--d", "2"],
                 ["--mu", "1.5"], ["--mu", "0.5", "--lr", "-1"], ["--mu", "0.5", "-f", "xml"],
                 ["--mu", "0.5", "--m0", "abc"], ["--mu", "0.5", "--batch", "0"]):
        code, out, err = run(["escape", "--teacher", "erf", *args], capsys)
        assert code == 2, (args, err)
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert out == ""
    # and through a real process (no traceback on stderr)
    code = "import sys; from loradyn.cli import main; main(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, "escape", "--teacher", "nope", "--mu", "0.5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_mult_var_closed_form_and_quadrature(monkeypatch):
    """v of the projected per-sample Jacobian: ReLU closed form = quadrature; He3 by hand."""
    import loradyn.escape as E
    from loradyn.population import make_problem

    pr = make_problem("relu")
    mu, eu, em = np.array([0.2, 0.6]), np.array([0.6, 0.3]), np.array([0.8, math.sqrt(0.91)])
    closed = E._mult_var(pr, mu, eu, em)
    monkeypatch.setattr(E, "_is_relu_pair", lambda p: False)
    np.testing.assert_allclose(E._mult_var(pr, mu, eu, em), closed, rtol=1e-8)
    # He3: the variance of the per-sample projected Jacobian, by a 2-D Gauss-Hermite product
    # rule over (z*, xi) written out here (exact for these polynomials; g0' with sigma'')
    he3 = make_problem("he3")
    x, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    zs, xi = np.meshgrid(x, x, indexing="ij")
    W = np.outer(w, w)
    m_ = 0.5
    lam = m_ * zs
    st, y = he3.student, he3.target.y(zs)
    g = (st.f(lam) - y) * st.df(lam)
    gp = st.df(lam) ** 2 + (st.f(lam) - y) * st.d2f(lam)
    e_u, e_m = 0.54, math.sqrt(1 - 0.54 ** 2)
    q = e_u ** 2 * gp * xi ** 2 + 2 * e_u * e_m * g * zs
    ref = np.sum(W * q * q) - np.sum(W * q) ** 2
    v = E._mult_var(he3, np.array([m_]), np.array([e_u]), np.array([e_m]))[0]
    assert v == pytest.approx(ref, rel=1e-9)
    # and the 1/B batch variance is what a Monte Carlo of batch means of 60 samples shows
    rng = np.random.default_rng(3)
    zb, xb = rng.standard_normal((2, 4000, 60))
    lb = m_ * zb
    yb = he3.target.y(zb)
    gb = (st.f(lb) - yb) * st.df(lb)
    gpb = st.df(lb) ** 2 + (st.f(lb) - yb) * st.d2f(lb)
    means = np.mean(e_u ** 2 * gpb * xb ** 2 + 2 * e_u * e_m * gb * zb, axis=1)
    assert abs(np.var(means) * 60 / v - 1) < 0.25  # heavy tails: a loose bound


def test_mult_correction_vanishes_for_large_batch(monkeypatch):
    import loradyn.escape as E

    kw = dict(d=300, lr=0.2 / 18, radius=0.5)
    big = escape_distribution("he3", [0.5, 0.8], batch=10**9, **kw)
    monkeypatch.setattr(E, "_mult_var", lambda pr, mu, eu, em, nodes=64: np.zeros(mu.shape))
    none = escape_distribution("he3", [0.5, 0.8], batch=10**9, **kw)
    np.testing.assert_allclose(big.quantiles, none.quantiles, rtol=1e-6)
    np.testing.assert_allclose(big.mean, none.mean, rtol=1e-6)
    small_none = escape_distribution("he3", [0.5, 0.8], batch=60, **kw)
    monkeypatch.undo()
    small = escape_distribution("he3", [0.5, 0.8], batch=60, **kw)
    # at B = 60 the multiplicative noise slows the median by several percent and widens
    assert np.all(small.quantiles[:, 3] > 1.04 * small_none.quantiles[:, 3])
    assert np.all(np.ptp(small.quantiles, axis=1) > np.ptp(small_none.quantiles, axis=1))
    np.testing.assert_allclose(small.cdf(0, small.quantiles[0]), QUANTILES, atol=1e-6)


def test_mult_law_matches_monte_carlo_of_the_scalar_recursion():
    """alpha_{k+1} = (1 + eta lam + eta delta_k) alpha_k, delta_k ~ N(0, v/B), alpha_0 = |N(0,
    s^2)|: the first step with alpha >= A against the corrected law (linear K)."""
    from loradyn.escape import _apply_mult, _spread_quantiles

    eta, lam, v, B, s, A = 0.01, 2.0, 1800.0, 60, 0.03, 0.5
    g = math.log1p(eta * lam)
    eps = 1e-3
    tab = {"logA": np.array([math.log(eps), math.log(A)]),
           "K": np.array([math.log(A / eps) / g, 0.0]), "g": g, "c": 0.0, "sigma": s,
           "starts": 1}
    sig1 = eta * eta * v / B / (1 + eta * lam) ** 2
    _apply_mult(tab, sig1)
    assert "spread" in tab
    pred = _spread_quantiles(tab, np.asarray(QUANTILES)) + 0.5
    rng = np.random.default_rng(11)
    n = 20000
    la = np.log(np.abs(rng.normal(0.0, s, n)))
    step = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, bool)
    for k in range(1, 3000):
        fac = 1 + eta * lam + eta * rng.normal(0.0, math.sqrt(v / B), alive.sum())
        la[alive] += np.log(fac)
        hit = alive.copy()
        hit[alive] = la[alive] >= math.log(A)
        step[hit] = k
        alive &= ~hit
        if not alive.any():
            break
    sim = np.quantile(step, QUANTILES)
    np.testing.assert_allclose(pred, sim, rtol=0.03)
    # without the correction the median would be off by much more than that
    no = np.quantile(np.log(A / np.abs(rng.normal(0.0, s, n))) / g, 0.5) + 0.5
    assert abs(no / sim[3] - 1) > 0.06


def test_fig15_median_ci_with_censored_seeds():
    # a censored seed (no escape within the cap) is inf: it sorts last, and the
    # order-statistic interval of the median stays finite while few seeds are censored
    from loradyn.reproduce.fig15 import median_ci

    rng = np.random.default_rng(3)
    x = rng.exponential(50.0, 400)
    lo, hi = median_ci(x)
    x_cens = x.copy()
    x_cens[np.argsort(x)[-5:]] = np.inf  # the 5 slowest seeds did not escape
    assert median_ci(x_cens) == (lo, hi)
    assert lo < np.median(x) < hi and np.isfinite(hi)
    x_cens[np.argsort(x)[-250:]] = np.inf  # most censored: the upper end is unknown
    assert median_ci(x_cens)[1] == np.inf
