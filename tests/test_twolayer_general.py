"""Two-layer model for every activation: pair moments, gradients, finite-step term,
search-phase Jacobian and tau, readout convention, from-scratch baseline."""

from __future__ import annotations

import numpy as np
import pytest

from loradyn.activations import register_activation, unregister_activation
from loradyn.errors import LoradynError
from loradyn.linearization import tau as single_tau
from loradyn.twolayer import TwoLayerConfig, flow, jacobian, run, simulate, tau
from loradyn.twolayer.linearization import search_rate
from loradyn.twolayer.model import State, auto_norm
from loradyn.twolayer.moments import pair, student_fn
from loradyn.twolayer.population import (
    covariances,
    generic_terms,
    loss_gradients,
    monte_carlo_loss,
    noise_matrix,
)


def _state(rng, K, r, d=9, scale=0.4):
    Ws = np.linalg.qr(rng.standard_normal((d, K)))[0].T
    V = rng.standard_normal((r, d)) + 0.8 * rng.standard_normal((r, K)) @ Ws
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    A = scale * rng.standard_normal((K, r))
    return Ws, V, State(A, V @ Ws.T, V @ V.T)


@pytest.mark.parametrize("act", ["erf", "relu"])
def test_exact_pair_identities_equal_kink_aware_quadrature(act):
    f = student_fn(act)
    qa = np.array([0.5, 0.5, 1.0, 0.3, 0.5, 2.0])
    qb = np.array([0.8, 0.8, 1.0, 1.0, 0.5, 1.0])
    c = np.array([0.3, 0.62, 0.999, 0.2, 0.5, -1.2])
    ex = pair(f, f, qa, qb, c)
    q = pair(f, f, qa, qb, c, method="quadrature", nodes=96)
    for a, b in zip(ex, q, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("act", ["linear", "he2-norm"])
def test_general_path_equals_closed_forms(act):
    """Gradients, loss and the finite-step term of the general (quadrature) path equal the
    closed forms to 1e-10."""
    rng = np.random.default_rng(0)
    _, _, st = _state(rng, 3, 2)
    mu = np.array([0.3, 0.6, 0.9])
    a = loss_gradients(mu, st.A, st.M, st.C, activation=act, nu=0.7)
    b = loss_gradients(mu, st.A, st.M, st.C, activation=act, nu=0.7, method="quadrature")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-10)
    h1 = noise_matrix(mu, st.A, st.M, st.C, activation=act, nu=0.7)
    h2 = noise_matrix(mu, st.A, st.M, st.C, activation=act, nu=0.7, method="quadrature",
                      nodes=4)
    np.testing.assert_allclose(h1, h2, atol=1e-10)


@pytest.mark.parametrize("act,teacher,label", [
    ("erf", "erf", "identity"), ("relu", "relu", "identity"), ("tanh", "erf", "square"),
    ("sigmoid", "sigmoid", "identity"), ("he2+he3", "he2+he3", "identity"),
])
def test_gradients_and_flow_match_finite_differences(act, teacher, label):
    """gA and the spherical flow of (M, C) against finite differences of the population loss
    of explicit vectors (d = 9), for non-polynomial, kinked, sum and squared-label cases."""
    rng = np.random.default_rng(5)
    K, r, d = 3, 2, 9
    Ws, V, st = _state(rng, K, r, d)
    mu = np.array([0.3, 0.6, 0.9])
    cfg = TwoLayerConfig(mu=mu, rank=r, activation=act, teacher=teacher, label=label, d=d,
                         noise_term=False)

    def L_of(A, V):
        return float(generic_terms(mu, A, V @ Ws.T, V @ V.T, activation=act, teacher=teacher,
                                   label=label)[2])

    gA, *_ = loss_gradients(mu, st.A, st.M, st.C, activation=act, teacher=teacher,
                            label=label)
    # exact pair identities (erf, relu) vs 48-node quadrature (tanh: ~1e-6)
    tol = 1e-7 if act in ("erf", "relu") and label == "identity" else 3e-6
    h = 1e-5
    fdA = np.zeros_like(st.A)
    for idx in np.ndindex(st.A.shape):
        E = np.zeros_like(st.A)
        E[idx] = h
        fdA[idx] = (L_of(st.A + E, V) - L_of(st.A - E, V)) / (2 * h)
    np.testing.assert_allclose(gA, fdA, atol=tol)
    gV = np.zeros_like(V)
    for idx in np.ndindex(V.shape):
        E = np.zeros_like(V)
        E[idx] = h
        gV[idx] = (L_of(st.A, V + E) - L_of(st.A, V - E)) / (2 * h)
    Vdot = -(gV - np.sum(gV * V, axis=1, keepdims=True) * V)
    dA, dM, dC = flow(cfg, st.A, st.M, st.C)
    np.testing.assert_allclose(dA, -fdA, atol=tol)
    np.testing.assert_allclose(dM, Vdot @ Ws.T, atol=10 * tol)
    np.testing.assert_allclose(dC, Vdot @ V.T + V @ Vdot.T, atol=10 * tol)


@pytest.mark.parametrize("act,teacher,label", [
    ("erf", "erf", "identity"), ("relu", "relu", "identity"), ("tanh", "tanh", "square"),
])
def test_loss_and_noise_matrix_match_monte_carlo(act, teacher, label):
    rng = np.random.default_rng(6)
    cfg = TwoLayerConfig(mu=[0.3, 0.8], rank=2, activation=act, teacher=teacher, label=label,
                         d=20)
    _, _, st = _state(rng, 2, 2, scale=0.5)
    L = float(generic_terms(cfg.mu, st.A, st.M, st.C, activation=act, teacher=teacher,
                            label=label)[2])
    mc, se = monte_carlo_loss(cfg, st, 400_000, np.random.default_rng(2))
    assert abs(L - mc) < 4.5 * se
    H = noise_matrix(cfg.mu, st.A, st.M, st.C, activation=act, teacher=teacher, label=label)
    P, Q = covariances(cfg.mu, st.A, st.M, st.C)
    Sig = np.block([[Q, P], [P.T, np.eye(2)]])
    lam_, U = np.linalg.eigh(Sig)
    g = np.random.default_rng(7).standard_normal((400_000, 4)) @ (U * np.sqrt(lam_)).T
    from loradyn.twolayer.moments import target_fn

    s, t = student_fn(act), target_fn(teacher, label)
    res = s.f(g[:, :2]).sum(1) - t.f(g[:, 2:]).sum(1)
    ds = s.df(g[:, :2])
    smp = (res**2)[:, None, None] * ds[:, :, None] * ds[:, None, :]
    se = smp.std(0) / np.sqrt(len(g))
    # exact for erf and relu; the conditional quadrature of other activations is ~1% accurate
    rel = 1e-3 if label == "identity" else 0.02
    assert np.all(np.abs(H - smp.mean(0)) < 5 * se + rel * np.abs(H)), (H, smp.mean(0), se)


def test_generic_finite_step_term_converges_to_the_exact_ones():
    """The conditional rule used for other activations against the erf identity and the relu
    closed form (K = 2: diagonal and off-diagonal outer rules): the fast tier (the ODE's) is
    ~1-2% accurate and improves with its nodes; the accurate tier (panelled, kink-split) is
    within 5e-6 relative."""
    from loradyn.twolayer.moments import (
        ACCURATE,
        joint_covariance,
        noise_conditional,
        noise_erf,
        noise_relu,
        target_fn,
    )

    rng = np.random.default_rng(6)
    _, _, st = _state(rng, 2, 2, scale=0.5)
    S = joint_covariance(*covariances(np.array([0.3, 0.8]), st.A, st.M, st.C))
    for act, exact in (("erf", noise_erf(S, 1.0)), ("relu", noise_relu(S, 1.0, nodes=48))):
        f, t = student_fn(act), target_fn(act)
        err = [np.max(np.abs(noise_conditional(S, f, t, 1.0, outer=o, inner=i) / exact - 1))
               for o, i in ((16, 8), (32, 16))]
        assert err[1] < 0.01 and err[1] < err[0] / 2, (act, err)
        acc = np.max(np.abs(noise_conditional(S, f, t, 1.0, **ACCURATE) / exact - 1))
        assert acc < 5e-6, (act, acc)


@pytest.mark.parametrize("act,label", [("tanh", "identity"), ("sigmoid", "identity"),
                                       ("relu", "square"), ("he2+he3", "identity")])
def test_accurate_finite_step_term_converges_geometrically(act, label):
    """No exact form: the accurate tier against a much finer rule of the same family
    (12 nodes per panel inside and out): within 1e-6 relative, and 4 nodes are worse."""
    from loradyn.twolayer.moments import (
        ACCURATE,
        joint_covariance,
        noise_conditional,
        target_fn,
    )

    rng = np.random.default_rng(11)
    _, _, st = _state(rng, 1, 1, scale=0.6)
    S = joint_covariance(*covariances(np.array([0.4]), st.A, st.M, st.C))
    f, t = student_fn(act), target_fn(act, label)
    ref = noise_conditional(S, f, t, 1.0, **dict(ACCURATE, outer=12, inner=12))
    acc = np.max(np.abs(noise_conditional(S, f, t, 1.0, **ACCURATE) / ref - 1))
    coarse = np.max(np.abs(noise_conditional(S, f, t, 1.0, **dict(ACCURATE, outer=4, inner=4))
                           / ref - 1))
    assert acc < 1e-6 and (acc < coarse or coarse < 1e-12), (acc, coarse)
    via = noise_matrix(np.array([0.4]), st.A, st.M, st.C, activation=act, label=label,
                       method="accurate")
    np.testing.assert_allclose(via, noise_conditional(S, f, t, 1.0, **ACCURATE), rtol=1e-12)


def test_erf_finite_step_identity_equals_4d_quadrature():
    rng = np.random.default_rng(3)
    _, _, st = _state(rng, 2, 2, scale=0.3)
    mu = np.array([0.4, 0.7])
    ex = noise_matrix(mu, st.A, st.M, st.C, activation="erf")
    err = [np.max(np.abs(noise_matrix(mu, st.A, st.M, st.C, activation="erf",
                                      method="quadrature", nodes=n) / ex - 1))
           for n in (16, 32)]
    # Gauss-Hermite converges slowly on the narrow erf'^2 (0.7% at 16 nodes, 2e-4 at 32)
    assert err[1] < 3e-4 and err[1] < err[0] / 10, err


@pytest.mark.parametrize("act", ["erf", "relu", "sigmoid", "tanh", "he3", "he2+he3"])
def test_single_index_limit_of_tau(act):
    """K = 1, rank 1: the two-layer rate is the single-index one (loradyn tau) to 1e-6."""
    for m in (0.3, 0.6, 0.9):
        for label in ("identity", "square"):
            two = tau(act, [m], [1], label=label).tau[0]
            one = single_tau(act, m, student=act, label=label, nodes=160).tau
            assert two == pytest.approx(float(one), rel=1e-6), (act, m, label)


@pytest.mark.parametrize("act", ["erf", "relu", "tanh", "he3"])
def test_jacobian_equals_finite_differences_of_the_flow(act):
    """J (A, M) equals flow(eps A, eps M, C)/eps (central differences) for a random Gram;
    J is symmetric."""
    rng = np.random.default_rng(8)
    K, r = 3, 2
    mu = [0.3, 0.5, 0.8]
    V = rng.standard_normal((r, 30))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    C = V @ V.T
    cfg = TwoLayerConfig(mu=mu, rank=r, activation=act, d=30, noise_term=False)
    A, M = rng.standard_normal((K, r)), rng.standard_normal((r, K))
    # relu: the flow is once differentiable at the fixed point (the student-teacher pair sits
    # at correlation 1, where the arc-cosine kernel has a sqrt), so central differences
    # carry an O(eps) error: eps = 1e-7
    eps = 1e-7
    up = flow(cfg, eps * A, eps * M, C)
    dn = flow(cfg, -eps * A, -eps * M, C)
    fd = np.concatenate([((u - d) / (2 * eps)).ravel() for u, d in zip(up[:2], dn[:2],
                                                                      strict=True)])
    J = jacobian(act, mu, r, gram=C)
    np.testing.assert_allclose(J, J.T, atol=1e-12)
    np.testing.assert_allclose(fd, J @ np.concatenate([A.ravel(), M.ravel()]), atol=1e-6)


def test_tau_rank_independent_at_identity_gram_for_every_activation():
    for act in ("erf", "relu", "sigmoid"):
        res = tau(act, [0.3, 0.3, 1.0], [1, 2, 3])
        np.testing.assert_allclose(res.lambda_plus, res.closed_form, rtol=1e-10)
    # a custom registered activation works by name
    register_activation("softplus_t", lambda x: np.logaddexp(0, x),
                        lambda x: 1 / (1 + np.exp(-x)), overwrite=True)
    try:
        assert np.isfinite(search_rate("softplus_t", [0.4, 0.6], 2))
    finally:
        unregister_activation("softplus_t")


def test_relu_at_mu_zero_is_a_one_line_error():
    with pytest.raises(LoradynError, match="mu_k > 0"):
        tau("relu", [0.0, 0.5], [1])


def test_norm_auto_follows_the_gaussian_mean():
    assert auto_norm("erf") == "1/sqrt(K)" and auto_norm("he3") == "1/sqrt(K)"
    assert auto_norm("relu") == "1/K" and auto_norm("sigmoid") == "1/K"
    assert auto_norm("erf", "square") == "1/K"
    cfg = TwoLayerConfig(mu=[0.5] * 4, activation="erf", norm="auto")
    assert cfg.nu == pytest.approx(0.5) and cfg.norm == "auto"
    assert TwoLayerConfig(mu=[0.5] * 4, activation="relu", norm="auto").nu == 0.25
    assert TwoLayerConfig(mu=[0.5] * 4, activation="relu").nu == 1.0  # default stays none
    t1 = tau("relu", [0.5] * 4, [1], norm="auto").lambda_plus[0]
    t2 = tau("relu", [0.5] * 4, [1], norm="1/K").lambda_plus[0]
    assert t1 == t2


def test_ode_runs_every_activation():
    for act, label in (("erf", "identity"), ("relu", "identity"), ("he2+he3", "identity"),
                       ("tanh", "square")):
        cfg = TwoLayerConfig(mu=[0.4, 0.7], rank=2, activation=act, label=label, d=200,
                             lr=0.1, batch=100, steps=4, seeds=1, record_every=2)
        ds = run(cfg, "ode")
        assert np.all(np.isfinite(ds.loss.values))


def test_from_scratch_config_and_engines():
    cfg = TwoLayerConfig(mu=[0.5, 0.5, 0.5], from_scratch=True, activation="erf", d=200,
                         lr=0.1, batch=50, steps=20, seeds=2, record_every=10)
    assert cfg.rank == 3
    for engine in ("dense", "reduced", "ode"):
        ds = run(cfg, engine)
        assert ds.attrs["model"] == "twolayer-from-scratch"
        np.testing.assert_allclose(ds.A.values, np.broadcast_to(np.eye(3), ds.A.shape))
        np.testing.assert_allclose(ds.overlap.values, np.abs(ds.M.values).max(axis=(-2, -1)))
    # ranks are ignored: one run with the K rows
    assert simulate(cfg, [1, 2], "reduced").sizes["rank"] == 1
    assert TwoLayerConfig.from_json(cfg.to_json()) == cfg
