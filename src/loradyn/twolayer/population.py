r"""Population loss, gradients and gradient flow of the two-layer LoRA model.

Let :math:`D = \mathrm{diag}(\mu)`, :math:`P = D + AM` (student-teacher covariances
:math:`E[\lambda_k z^*_l]`) and :math:`Q = D^2 + D M^\top A^\top + A M D + A C A^\top`
(student Gram :math:`E[\lambda_k\lambda_l]`); the teacher Gram is :math:`I_K`. With
:math:`\ell = (\hat y - y)^2/2`,

.. math::

    L = \frac{\nu^2}{2}\Big(\textstyle\sum_{kl} E[\phi_k\phi_l]
        - 2\sum_{kl} E[\sigma(\lambda_k)\phi(z^*_l)]
        + \sum_{kl} E[\sigma(\lambda_k)\sigma(\lambda_l)]\Big).

Closed forms (jointly Gaussian pairs with variances :math:`q_a, q_b` and covariance ``c``):

- linear: :math:`E[ab] = c`;
- ``he2-norm`` (:math:`\sigma = \mathrm{He}_2/\sqrt2`): :math:`E[\sigma(a)\sigma(b)] = c^2 +
  \tfrac12 (q_a - 1)(q_b - 1)` (the mean :math:`E\sigma(a) = (q_a-1)/\sqrt2` does not vanish
  when :math:`q_a \ne 1`);
- mixed linear / ``he2-norm``: 0 (odd times even moment of a centred Gaussian).

Hence (teacher part :math:`\sum_{kl}E[\phi_k\phi_l] = K` for both)

.. math::

    L_{lin} = \tfrac{\nu^2}{2}\,\mathbf 1^\top (I - P - P^\top + Q)\mathbf 1,\qquad
    L_{He_2} = \tfrac{\nu^2}{2}\big(K - 2\|P\|_F^2 + \|Q\|_F^2
               + \tfrac12(\mathrm{tr}\,Q - K)^2\big).

Gradients. Write :math:`dL = \mathrm{tr}(G_P^\top dP) + \mathrm{tr}(G_Q\, dQ)` with :math:`G_Q`
symmetric (linear: :math:`G_P = -\nu^2\mathbf 1\mathbf 1^\top`, :math:`G_Q = \tfrac{\nu^2}{2}
\mathbf 1\mathbf 1^\top`; He\ :sub:`2`: :math:`G_P = -2\nu^2 P`,
:math:`G_Q = \nu^2 (Q + \tfrac12(\mathrm{tr}Q - K) I)`). Since :math:`P = W W^{*\top}`,
:math:`Q = W W^\top`, :math:`\nabla_W L = G_P W^* + 2 G_Q W` and with
:math:`W = D W^* + A V`:

.. math::

    \nabla_A L = G_P M^\top + 2 G_Q (D M^\top + A C),\qquad
    (\nabla_V L) W^{*\top} = A^\top (G_P + 2 G_Q P),\qquad
    (\nabla_V L) V^\top = A^\top \nabla_A L =: S.

Spherical gradient flow of each :math:`v_j` (:math:`\dot v_j = -(I - v_j v_j^\top)\nabla_{v_j}L`)
gives, with :math:`s = \mathrm{diag}(S)`,

.. math::

    \dot A = -\nabla_A L,\quad
    \dot M = -\big(A^\top(G_P + 2G_QP) - \mathrm{diag}(s) M\big),\quad
    \dot C = -(S - \mathrm{diag}(s)C) - (S - \mathrm{diag}(s)C)^\top.

Finite-step term (one-pass SGD, step :math:`\eta`, batch ``B``; theory.md section 4
generalized). The batch gradient of :math:`v_j` has an isotropic part of squared norm
:math:`\approx (d/B) h_{jj}` orthogonal to everything, with :math:`h = A^\top H A`,
:math:`H_{kk'} = \nu^2 E[(\hat y - y)^2 \sigma'(\lambda_k)\sigma'(\lambda_{k'})]`. The
normalization then shrinks :math:`v_j` by :math:`1 - \tfrac{\eta^2 d}{2B} h_{jj}` and the
isotropic parts of two directions overlap by :math:`\eta^2 (d/B) h_{jl}`: per unit time
:math:`t = \eta\cdot\mathrm{step}`,

.. math::

    \dot M_{jk} \mathrel{+}= -\frac{\eta d}{B}\frac{h_{jj}}{2}M_{jk},\qquad
    \dot C_{jl} \mathrel{+}= \frac{\eta d}{B}\Big(h_{jl} - \frac{h_{jj} + h_{ll}}{2}C_{jl}\Big).

:math:`H` in closed form: linear, :math:`H = \nu^2 E[(\hat y-y)^2]\,\mathbf 1\mathbf 1^\top`;
He\ :sub:`2`, with :math:`g = (\lambda, z^*) \sim N(0,\Sigma)`,
:math:`\hat y - y = \tfrac{\nu}{\sqrt2} g^\top \mathcal D g`,
:math:`\mathcal D = \mathrm{diag}(I_K, -I_K)`,
Stein's lemma gives :math:`E[(g^\top\mathcal Dg)^2 g_a g_b] = \Sigma_{ab}(t_1^2 + 2t_2)
+ 4 t_1 (\Sigma\mathcal D\Sigma)_{ab} + 8 (\Sigma\mathcal D\Sigma\mathcal D\Sigma)_{ab}`,
:math:`t_1 = \mathrm{tr}(\mathcal D\Sigma)`, :math:`t_2 = \mathrm{tr}((\mathcal D\Sigma)^2)`, so
:math:`H = \nu^4 [\,\cdot\,]_{\lambda\lambda}`.

Other activations: :func:`loss` uses pairwise 2-D Gaussian quadrature
(:func:`loradyn.gaussian.rule_2d`), exact pair identities for erf and relu, and the
finite-step term of :mod:`.moments` (see :func:`noise_matrix`).
"""

from __future__ import annotations

import numpy as np

from ..activations import get_activation
from ..errors import LoradynError
from .model import CLOSED_FORM, State, TwoLayerConfig, effective_mu
from .moments import (
    ACCURATE,
    gaussian_means,
    joint_covariance,
    noise_conditional,
    noise_erf,
    noise_quadrature,
    noise_relu,
    pair,
    student_fn,
    target_fn,
)

Array = np.ndarray
_SQRT2 = np.sqrt(2.0)
DEFAULT_PAIR_NODES = 48


def _T(x: Array) -> Array:
    return np.swapaxes(x, -1, -2)


def covariances(mu: Array, A: Array, M: Array, C: Array) -> tuple[Array, Array]:
    r"""``(P, Q)``: :math:`P = D + AM`, :math:`Q = D^2 + DM^\top A^\top + AMD + ACA^\top`.

    Leading dimensions of ``A, M, C`` are batch dimensions.
    """
    mu = np.asarray(mu, dtype=float)
    D = np.diag(mu)
    AM = A @ M
    P = D + AM
    # A M D = AM * mu (scales columns); D M^T A^T = (A M D)^T
    Q = D * D + (AM * mu) + _T(AM * mu) + A @ C @ _T(A)
    return P, Q


def cross_term(student: str, teacher: str, P: Array) -> tuple[Array, Array]:
    r"""Closed-form cross term :math:`X = \sum_{kl} E[\sigma(\lambda_k)\phi(z^*_l)]` and
    :math:`\partial X/\partial P`, batched over the leading dimensions of ``P``.

    Linear pair: :math:`X = \mathbf 1^	op P \mathbf 1`, :math:`\partial X/\partial P =
    \mathbf 1\mathbf 1^	op`; ``he2-norm`` pair: :math:`X = \|P\|_F^2`,
    :math:`\partial X/\partial P = 2P`; mixed linear / ``he2-norm``: 0 (module docstring).
    """
    if student == teacher == "linear":
        return P.sum(axis=(-2, -1)), np.ones_like(P)
    if student == teacher == "he2-norm":
        return (P * P).sum(axis=(-2, -1)), 2.0 * P
    return np.zeros(P.shape[:-2]), np.zeros_like(P)


def student_term(student: str, Q: Array) -> tuple[Array, Array]:
    r"""Closed-form student term :math:`S = \sum_{kl} E[\sigma(\lambda_k)\sigma(\lambda_l)]`
    and :math:`\partial S/\partial Q` (symmetric convention), batched over ``Q``.

    Linear: :math:`S = \mathbf 1^	op Q\mathbf 1`, :math:`\partial S/\partial Q =
    \mathbf 1\mathbf 1^	op`; ``he2-norm``: :math:`S = \|Q\|_F^2 + 	frac12(\mathrm{tr}\,Q -
    K)^2`, :math:`\partial S/\partial Q = 2Q + (\mathrm{tr}\,Q - K) I`.
    """
    K = Q.shape[-1]
    if student == "linear":
        return Q.sum(axis=(-2, -1)), np.ones_like(Q)
    tr = np.trace(Q, axis1=-2, axis2=-1) - K
    S = (Q * Q).sum(axis=(-2, -1)) + 0.5 * tr * tr
    return S, 2.0 * Q + tr[..., None, None] * np.eye(K)


def _check_closed(student: str, teacher: str) -> None:
    if student not in CLOSED_FORM or teacher not in CLOSED_FORM:
        raise LoradynError(
            f"the closed-form loss needs linear or he2-norm activations, not {student}/{teacher}:"
            " use one of those, or loradyn.twolayer.population.loss (quadrature)"
        )


def closed_loss(
    mu: Array, A: Array, M: Array, C: Array, *, activation: str, teacher: str | None = None,
    nu: float = 1.0,
) -> Array:
    """Closed-form population loss for linear / he2-norm (module docstring); batched."""
    teacher = teacher or activation
    _check_closed(activation, teacher)
    P, Q = covariances(mu, A, M, C)
    K = P.shape[-1]
    X, _ = cross_term(activation, teacher, P)
    S, _ = student_term(activation, Q)
    return 0.5 * nu * nu * (K - 2.0 * X + S)


def _is_closed(activation: str, teacher: str, label: str | None) -> bool:
    return (activation in CLOSED_FORM and teacher in CLOSED_FORM
            and (label or "identity") in ("identity", "none"))


def generic_terms(
    mu: Array, A: Array, M: Array, C: Array, *, activation: str, teacher: str | None = None,
    label: str | None = None, nu: float = 1.0, method: str = "auto",
    nodes: int = DEFAULT_PAIR_NODES,
) -> tuple[Array, Array, Array]:
    r"""``(G_P, G_Q, L)`` for any activations from pair expectations (:mod:`.moments`).

    With :math:`X_{kl} = E[\sigma(\lambda_k)t(z^*_l)]` (variances ``Q_kk, 1``, covariance
    ``P_kl``) and :math:`S_{kl} = E[\sigma(\lambda_k)\sigma(\lambda_l)]` (``Q_kk, Q_ll,
    Q_kl``),

    .. math::

        L = \tfrac{\nu^2}{2}\big(K E[t^2] + K(K-1)E[t]^2 - 2\textstyle\sum X + \sum S\big),
        \quad G_P = -\nu^2\,\partial_c X,

    :math:`(G_Q)_{kl} = \tfrac{\nu^2}{2}\partial_c S_{kl}` for ``k != l`` and
    :math:`(G_Q)_{kk} = \tfrac{\nu^2}{2}\big(\partial_c S_{kk} + 2\sum_l \partial_{q_a}S_{kl}\big)
    - \nu^2\sum_l \partial_{q_a} X_{kl}` (``G_Q`` symmetric, :math:`dL = tr(G_P^\top dP) +
    tr(G_Q dQ)`).
    """
    sig = student_fn(activation)
    tgt = target_fn(teacher or activation, label)
    P, Q = covariances(mu, A, M, C)
    K = P.shape[-1]
    qd = np.diagonal(Q, axis1=-2, axis2=-1)
    Ex, Exc, Exa, _ = pair(sig, tgt, qd[..., :, None], 1.0, P, method=method, nodes=nodes)
    Es, Esc, Esa, Esb = pair(sig, sig, qd[..., :, None], qd[..., None, :], Q, method=method,
                             nodes=nodes)
    m1, m2 = gaussian_means(tgt)
    n2 = nu * nu
    L = 0.5 * n2 * (K * m2 + K * (K - 1) * m1 * m1 - 2.0 * Ex.sum(axis=(-2, -1))
                    + Es.sum(axis=(-2, -1)))
    GP = -n2 * Exc
    diag = (np.diagonal(Esc, axis1=-2, axis2=-1) + Esa.sum(axis=-1) + Esb.sum(axis=-2))
    GQ = 0.5 * n2 * Esc
    idx = np.arange(K)
    GQ[..., idx, idx] = 0.5 * n2 * diag - n2 * Exa.sum(axis=-1)
    return GP, GQ, L


def loss_gradients(
    mu: Array, A: Array, M: Array, C: Array, *, activation: str, teacher: str | None = None,
    nu: float = 1.0, label: str | None = None, method: str = "auto",
) -> tuple[Array, Array, Array, Array]:
    r"""``(gA, GW, S, L)``: :math:`\nabla_A L`, :math:`(\nabla_V L)W^{*\top}`,
    :math:`(\nabla_V L)V^\top` and L.

    ``method='auto'`` uses the closed forms for linear / he2-norm (identity labels) and the
    pair expectations of :func:`generic_terms` otherwise; ``'quadrature'`` forces pairwise
    quadrature for every activation (used to test the closed forms).
    """
    teacher = teacher or activation
    mu = np.asarray(mu, dtype=float)
    P, Q = covariances(mu, A, M, C)
    if method == "auto" and _is_closed(activation, teacher, label):
        K = P.shape[-1]
        X, dX = cross_term(activation, teacher, P)
        Sv, dS = student_term(activation, Q)
        n2 = nu * nu
        GP = -n2 * dX
        GQ = 0.5 * n2 * dS
        L = 0.5 * n2 * (K - 2.0 * X + Sv)
    else:
        GP, GQ, L = generic_terms(mu, A, M, C, activation=activation, teacher=teacher,
                                  label=label, nu=nu, method=method)
    DMt = _T(M) * mu[:, None]
    gA = GP @ _T(M) + 2.0 * GQ @ (DMt + A @ C)
    GW = _T(A) @ (GP + 2.0 * GQ @ P)
    S = _T(A) @ gA
    return gA, GW, S, L


def noise_matrix(
    mu: Array, A: Array, M: Array, C: Array, *, activation: str, nu: float = 1.0,
    teacher: str | None = None, label: str | None = None, method: str = "auto",
    nodes: int | None = None,
) -> Array:
    r""":math:`H_{kk'} = \nu^2 E[(\hat y - y)^2\sigma'(\lambda_k)\sigma'(\lambda_{k'})]`.

    ``method='auto'``: closed forms for linear / he2-norm; the exact Gaussian-tilt identity
    for erf (:func:`.moments.noise_erf`); for relu, conditioning on the two derivative
    factors with a closed-form inner expectation (:func:`.moments.noise_relu`); otherwise
    the same conditioning with quadrature inside and out (:func:`.moments.noise_conditional`,
    fast tier: about 1-2% accurate for erf-like narrow :math:`\sigma'^2` or kinked labels,
    better for wide smooth ones). ``method='accurate'``: the accurate tier of the same rule
    (panelled, kink-split Gauss-Legendre inside and out, :data:`.moments.ACCURATE`;
    geometric convergence, ~1e-7 relative for erf and ~3e-6 for relu against their exact
    forms, seconds per call). ``method='quadrature'`` forces one 4-D Gauss-Hermite rule per
    quadruple (:func:`.moments.noise_quadrature`, ``nodes`` per dimension; exact for
    polynomials).
    """
    teacher = teacher or activation
    P, Q = covariances(mu, A, M, C)
    K = P.shape[-1]
    plain = (label or "identity") in ("identity", "none") and teacher == activation
    if method == "accurate":
        return noise_conditional(joint_covariance(P, Q), student_fn(activation),
                                 target_fn(teacher, label), nu, **ACCURATE)
    if method != "auto":
        return noise_quadrature(joint_covariance(P, Q), student_fn(activation),
                                target_fn(teacher, label), nu, nodes=nodes)
    if not plain or activation not in ("linear", "he2-norm", "erf", "relu"):
        return noise_conditional(joint_covariance(P, Q), student_fn(activation),
                                 target_fn(teacher, label), nu)
    if activation == "erf":
        return noise_erf(joint_covariance(P, Q), nu)
    if activation == "relu":
        return noise_relu(joint_covariance(P, Q), nu)
    if activation == "linear":
        ER2 = nu * nu * (Q - P - _T(P) + np.eye(K)).sum(axis=(-2, -1))
        return nu * nu * ER2[..., None, None] * np.ones_like(Q)
    Sig = joint_covariance(P, Q)
    dg = np.concatenate([np.ones(K), -np.ones(K)])
    DS = dg[:, None] * Sig
    t1 = np.trace(DS, axis1=-2, axis2=-1)
    t2 = np.trace(DS @ DS, axis1=-2, axis2=-1)
    SDS = Sig @ DS
    SDSDS = SDS @ DS
    E = (Sig * (t1 * t1 + 2 * t2)[..., None, None] + 4 * t1[..., None, None] * SDS + 8 * SDSDS)
    return nu**4 * E[..., :K, :K]


def flow(
    cfg: TwoLayerConfig, A: Array, M: Array, C: Array, *, step_noise: float | None = None,
    H: Array | None = None,
) -> tuple[Array, Array, Array]:
    r"""Right-hand side :math:`(\dot A, \dot M, \dot C)` of the ODE (module docstring).

    Any student / teacher activation and label (closed forms, exact identities or
    quadrature, see :func:`loss_gradients` and :func:`noise_matrix`). ``step_noise`` is
    :math:`\eta d/B` (default from ``cfg`` when ``cfg.noise_term``, else 0). With
    ``cfg.from_scratch`` the pre-trained part is 0 and ``A`` (the identity) is frozen.
    ``H`` (:func:`noise_matrix`) may be given to reuse it (the ODE engine evaluates it once
    per SGD step).
    """
    mu = effective_mu(cfg)
    gA, GW, S, _ = loss_gradients(mu, A, M, C, activation=cfg.activation, teacher=cfg.teacher,
                                  nu=cfg.nu, label=cfg.label)
    s = np.diagonal(S, axis1=-2, axis2=-1)
    dA = np.zeros_like(gA) if cfg.from_scratch else -gA
    dM = -(GW - s[..., :, None] * M)
    X = S - s[..., :, None] * C
    dC = -(X + _T(X))
    if step_noise is None:
        step_noise = cfg.lr * cfg.d / cfg.batch if cfg.noise_term else 0.0
    if step_noise:
        if H is None:
            H = noise_matrix(mu, A, M, C, activation=cfg.activation, nu=cfg.nu,
                             teacher=cfg.teacher, label=cfg.label)
        h = _T(A) @ H @ A
        hd = np.diagonal(h, axis1=-2, axis2=-1)
        dM = dM - step_noise * 0.5 * hd[..., :, None] * M
        dC = dC + step_noise * (h - 0.5 * (hd[..., :, None] + hd[..., None, :]) * C)
    return dA, dM, dC


# --------------------------------------------------------------------------------------
# Generic activations: pairwise quadrature; Monte Carlo for tests


def quadrature_loss(
    mu: Array, A: Array, M: Array, C: Array, *, activation: str, teacher: str | None = None,
    nu: float = 1.0, nodes: int = 48, label: str | None = None,
) -> Array:
    """Population loss for any registered activations by pairwise 2-D Gaussian quadrature
    (kink-split rule of :func:`.moments.rule_pair`)."""
    return generic_terms(mu, A, M, C, activation=activation, teacher=teacher, label=label,
                         nu=nu, method="quadrature", nodes=nodes)[2]


def loss_method(cfg: TwoLayerConfig) -> str:
    """How :func:`loss` computes ``cfg``'s loss: ``closed-form``, ``exact`` (pair identities,
    erf / relu) or ``quadrature``."""
    if cfg.closed_form:
        return "closed-form"
    sig, tgt = student_fn(cfg.activation), target_fn(cfg.teacher, cfg.label)
    from .moments import has_exact_pair

    return "exact" if has_exact_pair(sig, sig) and has_exact_pair(sig, tgt) else "quadrature"


def loss(cfg: TwoLayerConfig, state: State, nodes: int = 48) -> Array:
    """Population loss of ``state`` under ``cfg``: closed form when available, exact pair
    identities or pairwise quadrature otherwise."""
    mu = effective_mu(cfg)
    if cfg.closed_form:
        return closed_loss(mu, state.A, state.M, state.C, activation=cfg.activation,
                           teacher=cfg.teacher, nu=cfg.nu)
    return generic_terms(mu, state.A, state.M, state.C, activation=cfg.activation,
                         teacher=cfg.teacher, label=cfg.label, nu=cfg.nu, nodes=nodes)[2]


def monte_carlo_loss(
    cfg: TwoLayerConfig, state: State, n: int, rng: np.random.Generator
) -> tuple[float, float]:
    """Monte Carlo estimate (mean, standard error) of the loss from ``n`` Gaussian samples.

    Draws the ``2K`` pre-activations :math:`(\\lambda, z^*)` from their joint Gaussian law
    (covariance built from ``P, Q``) and averages :math:`(\\hat y - y)^2/2`.
    """
    P, Q = covariances(effective_mu(cfg), state.A, state.M, state.C)
    K = cfg.K
    Sig = np.block([[Q, P], [P.T, np.eye(K)]])
    lam, U = np.linalg.eigh(Sig)
    F = U * np.sqrt(np.clip(lam, 0.0, None))
    g = rng.standard_normal((n, 2 * K)) @ F.T
    sig, tgt = get_activation(cfg.activation), target_fn(cfg.teacher, cfg.label)
    r = cfg.nu * (sig.f(g[:, :K]).sum(axis=1) - tgt.f(g[:, K:]).sum(axis=1))
    l = 0.5 * r * r
    return float(l.mean()), float(l.std(ddof=1) / np.sqrt(n))
