r"""Search-phase linearization of the two-layer LoRA model (App. K).

At the start of fine-tuning ``A`` and ``M`` are small (:math:`O(1/\sqrt d)`) and ``C`` is
close to the identity. Linearizing the gradient flow of
:mod:`loradyn.twolayer.population` in ``(A, M)`` at ``A = M = 0`` with ``C`` fixed
(the ``diag(s)`` and finite-step terms are quadratic or cubic and drop out):

.. math::

    \dot A = X M^\top - Y A C,\qquad \dot M = A^\top X,\qquad
    X = -(G_P^0 + 2 G_Q^0 D),\quad Y = 2 G_Q^0,

with :math:`G_P^0, G_Q^0` the loss derivatives at :math:`P = D`, :math:`Q = D^2`.
:func:`jacobian` builds this ``2Kr x 2Kr`` system for a given rank and Gram ``C`` and
:func:`search_rate` takes its largest real eigenvalue, the escape rate
:math:`\lambda_+`; :math:`\tau = 1/\lambda_+`.

Closed forms (:func:`collective_rate`), :math:`n^2 = \nu^2`, :math:`\delta_k = 1 - \mu_k`,
:math:`C = I`:

- linear: :math:`X = \nu^2\mathbf 1\delta^\top`, :math:`Y = \nu^2 \mathbf 1\mathbf 1^\top`. For each
  rank direction ``j`` the collective coordinates :math:`\alpha_j = \sum_k A_{kj}` and
  :math:`\beta_j = \sum_k \delta_k M_{jk}` obey
  :math:`\dot\alpha_j = \nu^2 K(\beta_j - \alpha_j)`, :math:`\dot\beta_j = \nu^2|\delta|^2\alpha_j`:
  :math:`\lambda_+ = \nu^2(-K + \sqrt{K^2 + 4K|\delta|^2})/2`, the same for every ``j``: the
  rate depends on the mismatch vector only through :math:`|\delta|`, not on ``r``.
- ``he2-norm``: with :math:`S = \sum_k (1-\mu_k^2)`, ``X`` and ``Y`` are diagonal,
  :math:`x_k = 2\nu^2\mu_k(1 - \mu_k^2 + S/2)`, :math:`y_k = 2\nu^2(\mu_k^2 - S/2)`; each pair
  :math:`(A_{kj}, M_{jk})` is a 2x2 block :math:`\begin{pmatrix}-y_k & x_k\\ x_k & 0\end{pmatrix}`,
  :math:`\lambda_+ = \max_k (-y_k + \sqrt{y_k^2 + 4x_k^2})/2`, again the same for every ``j``.

For ``K = 1`` both reduce to the single-index coefficients (linear:
:math:`a = 1, b = -(1-\mu)`; He\ :sub:`2`: :math:`a = 3\mu^2 - 1`, :math:`b = -3\mu(1-\mu^2)`).
With a Gram ``C != I`` (finite ``d``) the rank directions couple through ``Y A C``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..activations import get_label
from ..errors import LoradynError, check_mu
from .model import CLOSED_FORM, activation_name, norm_factor
from .population import cross_term, generic_terms, student_term

Array = np.ndarray


SEARCH_NODES = 128


def _check(activation: str, mu: Array) -> tuple[str, Array]:
    """Canonical activation name (any registered one) and ``mu`` as a checked 1-D array."""
    key = activation_name(activation, "activation")
    mu = np.atleast_1d(np.asarray(mu, dtype=float))
    if mu.ndim != 1:
        raise LoradynError("mu must be a flat list of mu_k, one per teacher neuron")
    check_mu(mu)
    return key, mu


def search_gradients(activation: str, mu: Array, norm: str = "none", *,
                     teacher: str | None = None, label: str | None = None,
                     method: str = "auto", nodes: int = SEARCH_NODES) -> tuple[Array, Array]:
    r"""``(G_P^0, G_Q^0)``: the loss derivatives at the search-phase fixed point
    :math:`P = D`, :math:`Q = D^2` (closed forms for linear / he2-norm, pair expectations of
    :func:`loradyn.twolayer.population.generic_terms` otherwise, ``nodes`` per dimension:
    the default converges tanh, whose Gauss-Hermite rule is the slowest of the built-ins,
    to ~1e-10)."""
    act, mu = _check(activation, mu)
    tea = activation_name(teacher, "teacher") if teacher is not None else act
    lab = get_label(label).name
    K = mu.size
    n2 = norm_factor(norm, K, tea, lab) ** 2
    D = np.diag(mu)
    if method == "auto" and act in CLOSED_FORM and tea == act and lab == "identity":
        _, dX = cross_term(act, act, D)
        _, dS = student_term(act, D @ D)
        GP, GQ = -n2 * dX, 0.5 * n2 * dS
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            GP, GQ, _ = generic_terms(mu, np.zeros((K, 1)), np.zeros((1, K)), np.eye(1),
                                      activation=act, teacher=tea, label=lab,
                                      nu=math.sqrt(n2), method=method, nodes=nodes)
    if not (np.all(np.isfinite(GP)) and np.all(np.isfinite(GQ))):
        raise LoradynError(
            f"the search-phase rate of {act} is singular at mu = {mu.tolist()} (a kinked "
            "activation at mu_k = 0, as in the single-index model): use mu_k > 0"
        )
    return GP, GQ


def search_matrices(activation: str, mu: Array, norm: str = "none", *,
                    teacher: str | None = None, label: str | None = None,
                    method: str = "auto") -> tuple[Array, Array]:
    r"""``(X, Y)`` of the linearized flow: :math:`X = -(G_P^0 + 2G_Q^0 D)`, :math:`Y = 2G_Q^0`.

    Any registered activation (and label transform); for ``K = 1`` these are the
    single-index coefficients, :math:`Y = a(\mu)`, :math:`X = -b(\mu)`.
    """
    _, mu_arr = _check(activation, mu)
    GP, GQ = search_gradients(activation, mu_arr, norm, teacher=teacher, label=label,
                              method=method)
    return -(GP + 2.0 * GQ @ np.diag(mu_arr)), 2.0 * GQ


# largest Jacobian size (2 K r) whose dense eigenvalues :func:`tau` computes (seconds)
MAX_JACOBIAN = 2000


def jacobian(activation: str, mu: Array, rank: int, *, norm: str = "none",
             gram: Array | None = None, teacher: str | None = None,
             label: str | None = None) -> Array:
    r"""The ``2Kr x 2Kr`` matrix of the linearized flow on ``(vec A, vec M)``.

    ``vec A`` is ``A`` (``K x r``) flattened row-major, then ``vec M`` (``r x K``). ``gram``
    is ``C`` (default :math:`I_r`). The matrix is symmetric (``Y`` and ``C`` are, and the
    ``A``-``M`` blocks are transposes of each other).
    """
    X, Y = search_matrices(activation, mu, norm, teacher=teacher, label=label)
    K, r = X.shape[0], int(rank)
    if r < 1:
        raise LoradynError(f"rank = {rank} is invalid: give a rank >= 1")
    C = np.eye(r) if gram is None else np.asarray(gram, dtype=float)
    if C.shape != (r, r):
        raise LoradynError(f"gram must be {r} x {r} for rank {r}")
    eyer = np.eye(r)
    # dA_kj/dA_k'l = -Y_kk' C_lj ; dA_kj/dM_lk' = X_kk' delta_jl
    JAA = -np.einsum("ab,lj->ajbl", Y, C).reshape(K * r, K * r)
    JAM = np.einsum("ab,jl->ajlb", X, eyer).reshape(K * r, r * K)
    # dM_jk/dA_k'l = X_k'k delta_jl
    JMA = np.einsum("ba,jl->jabl", X, eyer).reshape(r * K, K * r)
    JMM = np.zeros((r * K, r * K))
    return np.block([[JAA, JAM], [JMA, JMM]])


def search_rate(activation: str, mu: Array, rank: int, *, norm: str = "none",
                gram: Array | None = None, teacher: str | None = None,
                label: str | None = None) -> float:
    r"""Escape rate :math:`\lambda_+`: largest real part of the eigenvalues of :func:`jacobian`.

    The Jacobian is symmetric whenever ``Y`` and ``C`` are (always for a Gram ``C`` and the
    loss Hessian ``Y``), so the symmetric eigenvalue solver gives exact real eigenvalues;
    a non-symmetric matrix falls back to the general solver (eigenvalues only, no
    eigenvectors).
    """
    J = jacobian(activation, mu, rank, norm=norm, gram=gram, teacher=teacher, label=label)
    ev = np.linalg.eigvalsh(J) if is_symmetric(J) else np.linalg.eigvals(J).real
    return float(max(np.max(ev), 0.0))


def is_symmetric(J: Array, rtol: float = 1e-12) -> bool:
    r"""True if :math:`\|J - J^\top\|_\infty \le \mathrm{rtol}\,\|J\|_\infty`."""
    J = np.asarray(J, dtype=float)
    scale = float(np.max(np.abs(J))) if J.size else 0.0
    return bool(np.max(np.abs(J - J.T), initial=0.0) <= rtol * max(scale, np.finfo(float).tiny))


def propagator(J: Array, x0: Array):
    r"""``t -> exp(J t) x0`` without inverting an eigenvector basis.

    For a symmetric ``J = U diag(w) U^T`` (orthogonal ``U`` from :func:`numpy.linalg.eigh`)
    :math:`e^{Jt}x_0 = U(e^{wt}\odot U^\top x_0)`, exact whatever the multiplicity of the
    eigenvalues. A non-symmetric ``J`` uses :func:`scipy.linalg.expm` (scaling and
    squaring), so no result depends on the conditioning of an eigenvector matrix.
    """
    J = np.asarray(J, dtype=float)
    x0 = np.asarray(x0, dtype=float)
    if is_symmetric(J):
        w, U = np.linalg.eigh(0.5 * (J + J.T))
        c = U.T @ x0

        def flow(t: float) -> Array:
            return U @ (c * np.exp(w * t))

        return flow
    from scipy.linalg import expm

    def flow_general(t: float) -> Array:
        return expm(J * t) @ x0

    return flow_general


def collective_rate(activation: str, mu: Array, *, norm: str = "none",
                    teacher: str | None = None, label: str | None = None) -> float:
    r""":math:`\lambda_+` at :math:`C = I`, independent of ``r``.

    At ``C = I`` the Jacobian is block diagonal over the rank directions, each block the
    same ``2K x 2K`` matrix :math:`\begin{pmatrix}-Y & X\\ X^\top & 0\end{pmatrix}`, so
    the rate is that block's largest eigenvalue for every ``r`` and every activation. Closed
    forms (module docstring) for linear and he2-norm with identity labels.
    """
    act, mu = _check(activation, mu)
    K = mu.size
    tea = activation_name(teacher, "teacher") if teacher is not None else act
    lab = get_label(label).name
    if act not in CLOSED_FORM or tea != act or lab != "identity":
        return search_rate(act, mu, 1, norm=norm, teacher=tea, label=lab)
    n2 = norm_factor(norm, K, tea, lab) ** 2
    if act == "linear":
        d2 = float(np.sum((1.0 - mu) ** 2))
        return n2 * 2.0 * K * d2 / (K + math.sqrt(K * K + 4.0 * K * d2))
    S = float(np.sum(1.0 - mu**2))
    x = 2 * n2 * mu * (1 - mu**2 + S / 2)
    y = 2 * n2 * (mu**2 - S / 2)
    root = np.sqrt(y * y + 4 * x * x)
    lam = np.where(y > 0, 2 * x * x / np.where(y + root > 0, y + root, 1.0), 0.5 * (root - y))
    return float(np.max(lam))


@dataclass(frozen=True)
class TwoLayerTau:
    """Escape rate and time per rank: arrays of the length of ``rank``."""

    activation: str
    mu: tuple[float, ...]
    norm: str
    rank: Array
    lambda_plus: Array
    tau: Array
    closed_form: float
    teacher: str = ""
    label: str = "identity"

    def rows(self) -> list[dict[str, float]]:
        """One dict per rank with keys ``rank, lambda_plus, tau``."""
        return [
            {"rank": int(r), "lambda_plus": float(lp), "tau": float(t)}
            for r, lp, t in zip(self.rank, self.lambda_plus, self.tau, strict=True)
        ]


def tau(activation: str, mu: Array, ranks: Array | int, *, norm: str = "none",
        teacher: str | None = None, label: str | None = None) -> TwoLayerTau:
    r"""Escape rate :math:`\lambda_+` (Jacobian eigenvalue, ``C = I``) and
    :math:`\tau = 1/\lambda_+` for each rank; ``tau`` is ``inf`` where :math:`\lambda_+ = 0`.

    Any registered student activation, teacher (default: the student) and label transform
    (``identity`` or ``square``, applied per teacher neuron). For ``K = 1`` and rank 1 this is
    the single-index :func:`loradyn.linearization.tau`.
    """
    act, mu_arr = _check(activation, mu)
    tea = activation_name(teacher, "teacher") if teacher is not None else act
    lab = get_label(label).name
    rk = np.atleast_1d(np.asarray(ranks))
    if rk.size == 0 or rk.ndim != 1:
        raise LoradynError("rank must be a list of integers >= 1")
    if not np.all(np.equal(np.mod(rk, 1), 0)) or np.any(rk < 1):
        raise LoradynError(f"rank = {rk.tolist()} is invalid: give integers >= 1")
    rk = rk.astype(int)
    n_max = 2 * mu_arr.size * int(rk.max())
    if n_max > MAX_JACOBIAN:
        r_max = MAX_JACOBIAN // (2 * mu_arr.size)
        raise LoradynError(
            f"rank = {int(rk.max())} with K = {mu_arr.size} needs a {n_max} x {n_max} Jacobian: "
            f"choose ranks <= {r_max} (at C = I tau does not depend on the rank)"
        )
    lam = np.array([search_rate(act, mu_arr, int(r), norm=norm, teacher=tea, label=lab)
                    for r in rk])
    with np.errstate(divide="ignore"):
        t = np.where(lam > 0, 1.0 / np.where(lam > 0, lam, 1.0), np.inf)
    return TwoLayerTau(act, tuple(float(v) for v in mu_arr), norm, rk, lam, t,
                       collective_rate(act, mu_arr, norm=norm, teacher=tea, label=lab),
                       tea, lab)


def exit_time(tau_value: Array | float, d: int, radius: float = 0.5) -> Array:
    r"""Predicted exit time :math:`\tau\log(R\sqrt d)` (ODE time; divide by ``lr`` for steps).

    The same prediction as the single-index model's, :func:`loradyn.linearization.exit_time`
    (0 when the start is already at the radius, never ``inf * 0``).
    """
    from ..linearization import exit_time as _exit_time

    return _exit_time(tau_value, d, radius)


def linear_exit_time(
    activation: str, mu: Array, rank: int, *, m0: Array | float, a0: float,
    radius: float = 0.5, norm: str = "none", t_max: float = 1e5,
    teacher: str | None = None, label: str | None = None,
) -> float:
    r"""Exit time of the *linearized* flow from a given start (``C = I``), any activation.

    Solves :math:`x(t) = e^{Jt}x_0` for :math:`x = (\mathrm{vec}A, \mathrm{vec}M)` with
    :math:`A_0 = a_0\mathbf 1\mathbf 1^\top` and :math:`M_0` (``r x K``, or a number ``m``
    placed at ``(j, j mod K)`` as in :class:`~loradyn.twolayer.model.TwoLayerConfig`), and
    returns the first ``t`` with :math:`\max_j |M_{j\cdot}(t)|_2 = R`. Unlike
    :math:`\tau\log(R/|M_0|)` it keeps the projection of the start on the unstable mode.
    ``inf`` if the radius is not reached before ``t_max``.
    """
    from scipy.optimize import brentq

    act, mu_arr = _check(activation, mu)
    K, r = mu_arr.size, int(rank)
    if np.isscalar(m0):
        M0 = np.zeros((r, K))
        M0[np.arange(r), np.arange(r) % K] = float(m0)  # type: ignore[arg-type]
    else:
        M0 = np.asarray(m0, dtype=float)
    x0 = np.concatenate([np.full(K * r, float(a0)), M0.ravel()])
    flow = propagator(jacobian(act, mu_arr, r, norm=norm, teacher=teacher, label=label), x0)

    def overlap(t: float) -> float:
        x = flow(t)
        return float(np.sqrt(np.sum(x[K * r:].reshape(r, K) ** 2, axis=1)).max())

    if overlap(0.0) >= radius:
        return 0.0
    t_lo, t_hi = 0.0, 0.1
    while overlap(t_hi) < radius:
        t_lo, t_hi = t_hi, 1.5 * t_hi
        if t_hi > t_max:
            return float("inf")
    return float(brentq(lambda t: overlap(t) - radius, t_lo, t_hi, xtol=1e-10))
