"""Two-layer LoRA model (App. K): closed forms, gradients, linearization, engines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from loradyn.errors import LoradynError
from loradyn.linearization import tau as single_tau
from loradyn.twolayer import (
    State,
    TwoLayerConfig,
    closed_loss,
    collective_rate,
    flow,
    jacobian,
    monte_carlo_loss,
    quadrature_loss,
    run,
    search_rate,
    simulate,
    tau,
)
from loradyn.twolayer.model import initial_state
from loradyn.twolayer.population import loss_gradients, noise_matrix


def _explicit(rng, K, r, d):
    """Explicit orthonormal teacher and unit LoRA directions in dimension d."""
    Ws = np.linalg.qr(rng.standard_normal((d, K)))[0].T
    V = rng.standard_normal((r, d)) + 0.8 * rng.standard_normal((r, K)) @ Ws
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    return Ws, V


def _state(rng, K, r, d=9, scale=0.6):
    Ws, V = _explicit(rng, K, r, d)
    A = scale * rng.standard_normal((K, r))
    return Ws, V, State(A, V @ Ws.T, V @ V.T)


@pytest.mark.parametrize(
    "act,teacher,norm",
    [("linear", "linear", "none"), ("he2-norm", "he2-norm", "1/sqrt(K)"),
     ("he2-norm", "linear", "1/K"), ("linear", "he2-norm", "none")],
)
def test_closed_loss_matches_monte_carlo(act, teacher, norm):
    rng = np.random.default_rng(1)
    cfg = TwoLayerConfig(mu=[0.2, 0.7, 0.5], rank=2, activation=act, teacher=teacher, norm=norm,
                         d=20)
    _, _, st = _state(rng, 3, 2)
    L = float(closed_loss(cfg.mu, st.A, st.M, st.C, activation=act, teacher=teacher, nu=cfg.nu))
    mc, se = monte_carlo_loss(cfg, st, 400_000, np.random.default_rng(2))
    assert abs(L - mc) < 4.5 * se + 1e-12, (L, mc, se)
    # the quadrature route gives the same number for these polynomial activations
    Lq = float(quadrature_loss(cfg.mu, st.A, st.M, st.C, activation=act, teacher=teacher,
                               nu=cfg.nu))
    assert abs(Lq - L) < 1e-10 * max(1.0, abs(L))


def test_quadrature_loss_generic_activation_matches_monte_carlo():
    rng = np.random.default_rng(3)
    cfg = TwoLayerConfig(mu=[0.4, 0.8], rank=2, activation="relu", teacher="erf", d=20)
    _, _, st = _state(rng, 2, 2)
    Lq = float(quadrature_loss(cfg.mu, st.A, st.M, st.C, activation="relu", teacher="erf"))
    mc, se = monte_carlo_loss(cfg, st, 400_000, np.random.default_rng(4))
    assert abs(Lq - mc) < 4.5 * se


@pytest.mark.parametrize("act", ["linear", "he2-norm"])
def test_gradients_and_flow_match_finite_differences(act):
    """gA against FD of L in A; (dM, dC) against the spherical flow of explicit vectors."""
    rng = np.random.default_rng(5)
    K, r, d = 3, 2, 9
    Ws, V, st = _state(rng, K, r, d, scale=0.4)
    mu = np.array([0.3, 0.6, 0.9])
    cfg = TwoLayerConfig(mu=mu, rank=r, activation=act, d=d, noise_term=False)

    def L_of(A, V):
        return float(closed_loss(mu, A, V @ Ws.T, V @ V.T, activation=act))

    gA, *_ = loss_gradients(mu, st.A, st.M, st.C, activation=act)
    h = 1e-6
    fdA = np.zeros_like(st.A)
    for idx in np.ndindex(st.A.shape):
        E = np.zeros_like(st.A)
        E[idx] = h
        fdA[idx] = (L_of(st.A + E, V) - L_of(st.A - E, V)) / (2 * h)
    np.testing.assert_allclose(gA, fdA, atol=1e-7)
    gV = np.zeros_like(V)
    for idx in np.ndindex(V.shape):
        E = np.zeros_like(V)
        E[idx] = h
        gV[idx] = (L_of(st.A, V + E) - L_of(st.A, V - E)) / (2 * h)
    Vdot = -(gV - np.sum(gV * V, axis=1, keepdims=True) * V)
    dA, dM, dC = flow(cfg, st.A, st.M, st.C)
    np.testing.assert_allclose(dA, -fdA, atol=1e-7)
    np.testing.assert_allclose(dM, Vdot @ Ws.T, atol=1e-6)
    np.testing.assert_allclose(dC, Vdot @ V.T + V @ Vdot.T, atol=1e-6)


@pytest.mark.parametrize("act", ["linear", "he2-norm"])
def test_noise_matrix_matches_monte_carlo(act):
    rng = np.random.default_rng(6)
    cfg = TwoLayerConfig(mu=[0.3, 0.8], rank=2, activation=act, d=20)
    _, _, st = _state(rng, 2, 2, scale=0.3)
    H = noise_matrix(cfg.mu, st.A, st.M, st.C, activation=act)
    from loradyn.twolayer.population import covariances

    P, Q = covariances(cfg.mu, st.A, st.M, st.C)
    Sig = np.block([[Q, P], [P.T, np.eye(2)]])
    g = np.random.default_rng(7).multivariate_normal(np.zeros(4), Sig, size=400_000)
    lam, zs = g[:, :2], g[:, 2:]
    if act == "linear":
        res, ds = lam.sum(1) - zs.sum(1), np.ones_like(lam)
    else:
        res = ((lam**2 - 1).sum(1) - (zs**2 - 1).sum(1)) / np.sqrt(2)
        ds = np.sqrt(2) * lam
    samples = (res**2)[:, None, None] * ds[:, :, None] * ds[:, None, :]
    mc = samples.mean(0)
    se = samples.std(0) / np.sqrt(len(g))
    assert np.all(np.abs(H - mc) < 5 * se + 1e-9), (H, mc, se)


@pytest.mark.parametrize("act", ["linear", "he2-norm"])
def test_tau_rank_structure_and_single_index_limit(act):
    for mu in ([0.1, 0.5], [0.3, 0.6, 0.95], [0.2, 0.2, 0.4, 0.7]):
        rates = [search_rate(act, mu, r) for r in (1, 2, 3, 5)]
        closed = collective_rate(act, mu)
        np.testing.assert_allclose(rates, closed, rtol=1e-10)
    for m in (0.2, 0.55, 0.8):
        ref = single_tau(act, [m], student=act).lambda_plus[0]
        assert search_rate(act, [m], 2) == pytest.approx(ref, rel=1e-9)


def test_linear_tau_independent_of_rank_but_depends_on_mismatch():
    res = tau("linear", [0.2, 0.5, 0.9], [1, 2, 4, 8])
    assert np.ptp(res.tau) <= 1e-12 * res.tau[0]
    # the collective mismatch |1 - mu| sets it: a permutation gives the same tau,
    # a different mismatch norm does not
    assert tau("linear", [0.9, 0.2, 0.5], [3]).tau[0] == pytest.approx(res.tau[0], rel=1e-12)
    assert abs(tau("linear", [0.2, 0.6, 0.9], [3]).tau[0] - res.tau[0]) > 1e-3


def test_jacobian_is_linearization_of_flow():
    """J (A, M) equals flow(eps A, eps M, C)/eps as eps -> 0, for a non-identity Gram."""
    rng = np.random.default_rng(8)
    K, r = 3, 2
    mu = [0.3, 0.5, 0.8]
    _, V = _explicit(rng, K, r, 30)
    C = V @ V.T
    for act in ("linear", "he2-norm"):
        cfg = TwoLayerConfig(mu=mu, rank=r, activation=act, d=30, noise_term=False)
        A, M = rng.standard_normal((K, r)), rng.standard_normal((r, K))
        eps = 1e-6
        dA, dM, _ = flow(cfg, eps * A, eps * M, C)
        J = jacobian(act, mu, r, gram=C)
        lin = J @ np.concatenate([A.ravel(), M.ravel()])
        np.testing.assert_allclose(np.concatenate([dA.ravel(), dM.ravel()]) / eps, lin,
                                   atol=1e-5)


def test_initial_state_law_matches_dense_init():
    """Exact (Bartlett) draw of (M0, C0) against explicit random unit vectors."""
    r, d = 3, 15
    cfg = TwoLayerConfig(mu=[0.5, 0.5], rank=r, d=d)
    rng = np.random.default_rng(9)
    red = np.array([initial_state(cfg, rng).C[0, 1] for _ in range(3000)])
    dense = []
    for _ in range(3000):
        V = rng.standard_normal((r, d))
        V /= np.linalg.norm(V, axis=1, keepdims=True)
        dense.append(V[0] @ V[1])
    assert stats.ks_2samp(red, np.array(dense)).pvalue > 0.01
    # with fixed overlaps, M0 is exact and C0 has unit diagonal
    st = initial_state(cfg.replace(m0=0.3), rng)
    np.testing.assert_allclose(st.M, [[0.3, 0], [0, 0.3], [0.3, 0]])
    np.testing.assert_allclose(np.diag(st.C), 1.0)


def test_dense_and_reduced_escape_steps_agree_in_law():
    cfg = TwoLayerConfig(mu=[0.4, 0.6], rank=2, activation="linear", d=60, lr=0.05, batch=20,
                         steps=400, seeds=60, record_every=10)
    dense = run(cfg, "dense", stop_on_escape=True)
    red = run(cfg.replace(seed0=1000), "reduced", stop_on_escape=True)
    e1, e2 = dense.escape_step.values, red.escape_step.values
    assert np.all(e1 > 0) and np.all(e2 > 0)
    assert stats.ks_2samp(e1, e2).pvalue > 0.01
    # and the loss at the last recorded step before any escape
    first = min(e1.min(), e2.min())
    step = int(dense.step.values[dense.step.values < first].max())
    assert step > 0
    l1, l2 = dense.loss.sel(step=step).values, red.loss.sel(step=step).values
    assert stats.ks_2samp(l1, l2).pvalue > 0.01


def test_dense_and_reduced_agree_in_law_when_the_wishart_term_matters():
    """He2, renormalized update, lr d / B = 1: the late loss is set by the isotropic gradient
    noise (dropping the Wishart draw from the reduced engine makes this KS test reject with
    p ~ 1e-19); escape steps and late losses must not be distinguishable."""
    cfg = TwoLayerConfig(mu=[0.6, 0.8], rank=2, activation="he2-norm", d=200, lr=0.1, batch=20,
                         steps=150, seeds=50, record_every=50, update="renormalized")
    dense = run(cfg, "dense")
    red = run(cfg.replace(seed0=1000), "reduced")
    assert stats.ks_2samp(dense.escape_step.values, red.escape_step.values).pvalue > 0.01
    l1, l2 = dense.loss.isel(step=-1).values, red.loss.isel(step=-1).values
    assert stats.ks_2samp(l1, l2).pvalue > 0.01


def test_reduced_cost_does_not_grow_with_d():
    import time

    def t(d):
        cfg = TwoLayerConfig(mu=[0.5, 0.5], rank=2, d=d, lr=0.05, batch=50, steps=150)
        s = time.perf_counter()
        run(cfg, "reduced")
        return time.perf_counter() - s

    t(100)
    small, big = min(t(100) for _ in range(2)), min(t(10**9) for _ in range(2))
    assert big < 3 * small


@pytest.mark.parametrize("act,tol", [("linear", 0.01), ("he2-norm", 0.03)])
def test_ode_matches_seed_averaged_reduced_at_large_d(act, tol):
    """Large d, lr d / B = 1: the ODE with the finite-step term tracks the mean loss;
    plain gradient flow does not."""
    cfg = TwoLayerConfig(mu=[0.3, 0.6], rank=2, activation=act, d=20000, lr=0.05, batch=1000,
                         steps=240, seeds=5, m0=0.2, a0=0.1, record_every=20)
    red = run(cfg, "reduced").loss.mean("seed").values
    ode = run(cfg, "ode").loss.mean("seed").values
    gf = run(cfg.replace(noise_term=False), "ode").loss.mean("seed").values
    err = np.max(np.abs(ode - red))
    assert err < tol, (ode, red)
    assert np.max(np.abs(gf - red)) > 2 * err


def test_dataset_layout_reproducibility_and_ranks():
    cfg = TwoLayerConfig(mu=[0.5, 0.7], rank=1, activation="he2-norm", d=50, lr=0.05, batch=10,
                         steps=30, seeds=2, record_every=10)
    ds = simulate(cfg, [1, 3], "reduced")
    assert dict(ds.sizes) == {"rank": 2, "seed": 2, "step": 4, "neuron": 2, "lora": 3,
                              "lora2": 3}
    assert np.isnan(ds.M.sel(rank=1, lora=2)).all() and np.isfinite(ds.M.sel(rank=3)).all()
    assert TwoLayerConfig.from_json(run(cfg, "reduced").attrs["config"]) == cfg
    a, b = run(cfg, "reduced"), run(cfg, "reduced")
    np.testing.assert_array_equal(a.M.values, b.M.values)
    c = run(cfg.replace(seeds=1, seed0=1), "reduced")
    np.testing.assert_array_equal(c.M.values[0], a.M.values[1])


def test_bad_input_raises_one_line_errors():
    with pytest.raises(LoradynError, match="mu"):
        TwoLayerConfig(mu=[0.5, 1.5])
    with pytest.raises(LoradynError, match="d >= K"):
        TwoLayerConfig(mu=[0.5, 0.5], rank=4, d=8)
    with pytest.raises(LoradynError, match="norm"):
        TwoLayerConfig(norm="1/K^2")
    with pytest.raises(LoradynError, match="engine"):
        run(TwoLayerConfig(activation="relu", steps=2), "ode2")
    with pytest.raises(LoradynError, match="unknown activation"):
        tau("nope", [0.5], [1])
    with pytest.raises(LoradynError, match="label"):
        TwoLayerConfig(label="cube")


@pytest.mark.parametrize("teacher,method", [("relu", "exact"), ("erf", "quadrature")])
def test_generic_activation_runs_with_quadrature_loss(teacher, method):
    """Kinked teacher and student (relu): engines run, the recorded loss (arc-cosine identity,
    or kink-split quadrature for the relu/erf pair) agrees with Monte Carlo."""
    cfg = TwoLayerConfig(mu=[0.3, 0.6], rank=2, activation="relu", teacher=teacher, d=100,
                         lr=0.05, batch=20, steps=20, seeds=1, record_every=10)
    for engine in ("reduced", "dense"):
        ds = run(cfg, engine)
        assert ds.attrs["loss_method"] == method
        st = State(ds.A.values[0, -1], ds.M.values[0, -1], ds.C.values[0, -1])
        mc, se = monte_carlo_loss(cfg, st, 200_000, np.random.default_rng(11))
        assert abs(float(ds.loss.values[0, -1]) - mc) < 4.5 * se


@pytest.mark.slow
@pytest.mark.parametrize("act,update", [("linear", "spherical"), ("he2-norm", "renormalized")])
def test_dense_and_reduced_agree_in_law_many_seeds(act, update):
    """Paper-scale version of the KS tests: 300 seeds per engine, lr d / B = 1."""
    cfg = TwoLayerConfig(mu=[0.4, 0.7], rank=2, activation=act, d=200, lr=0.1, batch=20,
                         steps=150, seeds=300, record_every=50, update=update)
    dense = run(cfg, "dense")
    red = run(cfg.replace(seed0=10_000), "reduced")
    assert stats.ks_2samp(dense.escape_step.values, red.escape_step.values).pvalue > 0.01
    for step in dense.step.values[1:]:
        # a diverged trajectory (NaN) counts as an arbitrarily large loss
        l1, l2 = (np.nan_to_num(x.loss.sel(step=step).values, nan=1e300) for x in (dense, red))
        assert stats.ks_2samp(l1, l2).pvalue > 0.01


def test_exit_time_at_the_radius_is_zero_not_nan():
    """d = 4 puts the start 1/sqrt(d) = 0.5 on the radius: exit time 0, even for tau = inf."""
    from loradyn.twolayer.linearization import exit_time

    assert exit_time(np.inf, 4, 0.5) == 0.0
    assert exit_time(2.0, 1000, 0.5) == pytest.approx(2.0 * (0.5 * np.log(1000) + np.log(0.5)))
