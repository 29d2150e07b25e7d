r"""Exact population loss and gradients of the rank-one LoRA single-index model.

Model (theory.md sections 1-3). Data :math:`x \sim N(0, I_d)`, label
:math:`y = T(\phi(z^*))` with :math:`z^* = w^*\cdot x`. Student
:math:`\hat y = \sigma(\lambda)` with

- aligned pre-training: :math:`\lambda = (\mu w^* + u w)\cdot x`;
- misaligned pre-training (App. A.1): :math:`\lambda = (w_0 + u w)\cdot x`,
  :math:`w_0 = \mu w^* + \sqrt{1-\mu^2}\, v`, :math:`v \perp w^*`.

Order parameters: :math:`m = w\cdot w^*`, :math:`u`, and (misaligned) :math:`p = w\cdot v`.
The pair :math:`(z^*, \lambda)` is jointly Gaussian with :math:`\mathrm{Var}\,z^* = 1`,
:math:`\mathrm{Var}\,\lambda = Q`, :math:`\mathrm{Cov} = c` (the effective alignment).
Writing :math:`\lambda = c z^* + s\eta` with :math:`s = \sqrt{Q - c^2}` and
:math:`\eta \perp z^*`, every population quantity needs only

.. math::

    G_1 = E[g z^*], \quad G_2 = E[g \eta], \quad h = E[g^2], \quad L = E[\ell],

with :math:`g = \partial\ell/\partial\lambda` (MSE: :math:`g = (\sigma(\lambda)-y)\sigma'(\lambda)`;
correlation loss :math:`\ell = -y\sigma(\lambda)`: :math:`g = -y\sigma'(\lambda)`).
For any linear statistic :math:`X` of :math:`x`, :math:`E[gX] = \mathrm{Cov}(X, z^*) G_1
+ \mathrm{Cov}(X, \eta) G_2`. In particular, with :math:`z = w\cdot x`,

.. math::

    \partial_u L = E[g z],\qquad
    w^*\cdot P_w \nabla_w L = u\,(E[g z^*] - m E[g z]).

All expectations are computed by the quadrature of :mod:`loradyn.gaussian`; only first
derivatives of the activations are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .activations import Activation, Target, get_activation, make_target
from .errors import LoradynError, check_mu
from .gaussian import DEFAULT_NODES, rule_2d

Array = np.ndarray
LOSSES = ("mse", "correlation")


@dataclass(frozen=True)
class Problem:
    """A teacher/student pair with a label transform and a loss.

    Build it with :func:`make_problem`. ``nodes`` is the quadrature size (per dimension
    for Gauss-Hermite, per panel for the split rule used with kinked activations).
    """

    target: Target
    student: Activation
    loss: str = "mse"
    nodes: int = DEFAULT_NODES
    label_name: str = field(default="identity")

    @property
    def teacher(self) -> Activation:
        r"""The teacher activation :math:`\phi`."""
        return self.target.teacher

    def describe(self) -> str:
        """A short human-readable description, e.g. ``teacher=erf student=erf loss=mse``."""
        return (
            f"teacher={self.teacher.name} student={self.student.name} "
            f"label={self.target.label.name} loss={self.loss}"
        )

    def with_nodes(self, n: int) -> Problem:
        """The same problem with another quadrature size."""
        return Problem(self.target, self.student, self.loss, int(n), self.label_name)

    def with_label(self, label: str | None) -> Problem:
        """The same problem with another label transform (two-stage schedules)."""
        other = make_problem(self.teacher, self.student, label=label, loss=self.loss)
        return other.with_nodes(max(self.nodes, other.nodes))


def _auto_nodes(target: Target, student: Activation, label: str) -> int:
    dt, ds = target.teacher.degree, student.degree
    if dt is None or ds is None:
        return DEFAULT_NODES
    if label == "square":
        dt *= 2
    # Per variable: the loss has degree 2 max(dt, ds), g = (sigma - y) sigma' degree
    # max(dt, ds) + ds - 1, g z* one more, and h = E[g^2] the largest, 2 (max(dt, ds) + ds - 1).
    # n Gauss-Hermite nodes are exact up to degree 2n - 1, so n = max(dt, ds) + ds suffices.
    return max(DEFAULT_NODES, max(dt, ds) + ds)


def make_problem(
    teacher: str | Activation,
    student: str | Activation | None = None,
    *,
    label: str | None = None,
    loss: str = "mse",
    nodes: int | None = None,
) -> Problem:
    """Build a :class:`Problem`. The student defaults to the teacher.

    Raises
    ------
    LoradynError
        Unknown activation, label transform or loss, or a non-positive node count.
    """
    target = make_target(teacher, label)
    st = get_activation(student) if student is not None else target.teacher
    if loss not in LOSSES:
        raise LoradynError(f"unknown loss {loss!r}: choose mse or correlation")
    if nodes is not None and int(nodes) < 2:
        raise LoradynError(f"nodes = {nodes} is too small: use at least 2 quadrature nodes")
    n = int(nodes) if nodes is not None else _auto_nodes(target, st, target.label.name)
    return Problem(target, st, loss, n, target.label.name)


@dataclass(frozen=True)
class Moments:
    r"""The Gaussian moments from which every population quantity follows.

    ``G1 = E[g z*]``, ``G2 = E[g eta]``, ``h = E[g^2]``, ``loss = E[l]``, ``mse`` the
    test MSE :math:`E[(\sigma(\lambda)-y)^2]/2` (equal to ``loss`` for the MSE loss).
    """

    G1: Array
    G2: Array
    h: Array
    loss: Array
    mse: Array


def moments(problem: Problem, c: Array, s: Array, nodes: int | None = None) -> Moments:
    r"""Moments of :math:`g` for :math:`\lambda = c z^* + s\eta` (arrays broadcast together).

    Implements :math:`G_1 = E[g z^*]`, :math:`G_2 = E[g\eta]`, :math:`h = E[g^2]`,
    :math:`L = E[\ell]` by the 2-D rule of :func:`loradyn.gaussian.rule_2d`.
    """
    n = nodes or problem.nodes
    c = np.asarray(c, dtype=float)
    s = np.asarray(s, dtype=float)
    rule = rule_2d(c, s, problem.teacher.kinks, problem.student.kinks, n)
    zs, eta = rule.zs, rule.eta
    lam = c[..., None, None] * zs + s[..., None, None] * eta
    y = problem.target.y(zs)
    sig = problem.student.f(lam)
    dsig = problem.student.df(lam)
    resid = sig - y
    mse_vals = 0.5 * resid * resid
    if problem.loss == "mse":
        g = resid * dsig
        loss_vals = mse_vals
    else:
        g = -y * dsig
        loss_vals = -y * sig
    w = rule.w
    G1 = np.sum(w * g * zs, axis=(-2, -1))
    G2 = np.sum(w * g * eta, axis=(-2, -1))
    h = np.sum(w * g * g, axis=(-2, -1))
    L = np.sum(w * loss_vals, axis=(-2, -1))
    mse = L if problem.loss == "mse" else np.sum(w * mse_vals, axis=(-2, -1))
    return Moments(G1, G2, h, L, mse)


@dataclass(frozen=True)
class Population:
    r"""Population quantities at one or many points ``(u, m[, p])``.

    Attributes
    ----------
    loss
        :math:`L(u, m)` (the training loss: MSE or correlation).
    mse
        Test MSE :math:`E[(\sigma(\lambda) - y)^2]/2`.
    du
        :math:`\partial_u L = E[g z]`.
    dm
        :math:`w^*\cdot P_w\nabla_w L = u(E[gz^*] - mE[gz])`.
    dp
        :math:`v\cdot P_w\nabla_w L` (misaligned model; zero otherwise).
    h
        :math:`E[g^2]`, the size of the per-sample gradient noise.
    c, Q
        Effective alignment :math:`c = \mathrm{Cov}(z^*, \lambda)` and student variance.
    """

    loss: Array
    mse: Array
    du: Array
    dm: Array
    dp: Array
    h: Array
    c: Array
    Q: Array


def _sign(u: Array) -> Array:
    return np.where(u < 0, -1.0, 1.0)


def gaussian_params(
    u: Array, m: Array, mu: Array, p: Array | None = None
) -> tuple[Array, Array, Array]:
    r"""``(c, s, Q)`` of :math:`\lambda = c z^* + s\eta` at ``(u, m[, p])`` (arrays broadcast).

    Aligned: :math:`c = \mu + um`, :math:`Q = \mu^2 + 2\mu u m + u^2`,
    :math:`s = |u|\sqrt{1-m^2}`. Misaligned (``p`` given):
    :math:`Q = 1 + u^2 + 2u(\mu m + \sqrt{1-\mu^2}\,p)`, :math:`s = \sqrt{Q - c^2}`.
    ``m`` is clipped to [-1, 1].
    """
    m = np.clip(m, -1.0, 1.0)
    c = mu + u * m
    if p is None:
        Q = mu * mu + 2.0 * mu * u * m + u * u
        return c, np.abs(u) * np.sqrt(np.maximum(1.0 - m * m, 0.0)), Q
    nu = np.sqrt(np.maximum(1.0 - mu * mu, 0.0))
    Q = 1.0 + u * u + 2.0 * u * (mu * m + nu * p) - (1.0 - mu * mu - nu * nu)
    return c, np.sqrt(np.maximum(Q - c * c, 0.0)), Q


def population(
    problem: Problem,
    u: Array | float,
    m: Array | float,
    mu: Array | float,
    *,
    p: Array | float | None = None,
    nodes: int | None = None,
) -> Population:
    r"""Exact population loss and gradients at ``(u, m)`` (aligned) or ``(u, m, p)``.

    Parameters
    ----------
    problem
        Teacher, student, label transform and loss (:func:`make_problem`).
    u, m, mu
        LoRA scale, overlap :math:`w\cdot w^*` and pre-training alignment; arrays broadcast.
    p
        Overlap :math:`w\cdot v` with the misaligned pre-training direction; ``None``
        selects the aligned model :math:`\lambda = (\mu w^* + u w)\cdot x`.
    nodes
        Quadrature size (default: the problem's).

    Returns
    -------
    Population
        Loss, test MSE, gradients and the Gaussian parameters ``c`` and ``Q``.

    Notes
    -----
    Aligned: :math:`c = \mu + um`, :math:`Q = \mu^2 + 2\mu u m + u^2`,
    :math:`s = |u|\sqrt{1-m^2}`, :math:`\mathrm{Cov}(z,\eta) = \mathrm{sign}(u)\sqrt{1-m^2}`.
    Misaligned: :math:`Q = 1 + u^2 + 2u(\mu m + \sqrt{1-\mu^2}\,p)`,
    :math:`\mathrm{Cov}(z, \lambda) = \mu m + \sqrt{1-\mu^2}p + u`,
    :math:`\mathrm{Cov}(z_v, \lambda) = \sqrt{1-\mu^2} + up`.
    """
    check_mu(mu)
    u, m, mu = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (u, m, mu)))
    m = np.clip(m, -1.0, 1.0)
    if p is not None:
        p = np.broadcast_to(np.asarray(p, dtype=float), u.shape)
    c, s, Q = gaussian_params(u, m, mu, p)
    if p is None:
        kz = _sign(u) * np.sqrt(np.maximum(1.0 - m * m, 0.0))
        kv = np.zeros_like(u)
    else:
        nu = np.sqrt(np.maximum(1.0 - mu * mu, 0.0))
        safe = np.where(s > 1e-300, s, 1.0)
        kz = np.where(s > 1e-300, (mu * m + nu * p + u - c * m) / safe, 0.0)
        kv = np.where(s > 1e-300, (nu + u * p) / safe, 0.0)
    mo = moments(problem, c, s, nodes)
    Egz = m * mo.G1 + kz * mo.G2
    du = Egz
    dm = u * (mo.G1 - m * Egz)
    dp = np.zeros_like(du) if p is None else u * (kv * mo.G2 - p * Egz)
    return Population(mo.loss, mo.mse, du, dm, dp, mo.h, c, Q)


def population_loss(
    problem: Problem, u: Array | float, m: Array | float, mu: Array | float, **kw
) -> Array:
    """The population loss :math:`L(u, m)` (see :func:`population`)."""
    return population(problem, u, m, mu, **kw).loss


def flow(
    problem: Problem,
    u: Array | float,
    m: Array | float,
    mu: Array | float,
    *,
    p: Array | float | None = None,
    step_noise: float = 0.0,
    nodes: int | None = None,
) -> tuple[Array, Array, Array]:
    r"""Right-hand side of the ODE followed by one-pass SGD (theory.md section 4).

    .. math::

        \dot u = -E[g z], \qquad
        \dot m = -u E[g(z^* - m z)] - \tfrac{\eta d}{B}\,\tfrac{m}{2}\,u^2 E[g^2],

    and likewise for ``p`` in the misaligned model. ``step_noise`` is
    :math:`\eta d / B`; zero gives the plain gradient flow.

    Returns
    -------
    (du_dt, dm_dt, dp_dt)
    """
    if not isinstance(problem, Problem):
        raise LoradynError(
            f"flow() needs a Problem, got {type(problem).__name__}: build one with make_problem"
        )
    pop = population(problem, u, m, mu, p=p, nodes=nodes)
    u = np.asarray(u, dtype=float)
    drift = 0.5 * step_noise * u * u * pop.h
    dmdt = -pop.dm - drift * np.asarray(m, dtype=float)
    dpdt = -pop.dp - (drift * np.asarray(p, dtype=float) if p is not None else 0.0)
    return -pop.du, dmdt, np.asarray(dpdt, dtype=float)
