r"""Hermite machinery of App. B: coefficients, information exponent, series loss.

Conventions (probabilists' Hermite polynomials, :math:`\mathrm{He}_2 = x^2 - 1`):

- standard basis: :math:`\phi = \sum_k a_k \mathrm{He}_k`,
  :math:`a_k = E[\phi(z)\mathrm{He}_k(z)]/k!`, :math:`z \sim N(0, 1)`;
- variance-:math:`Q` basis: :math:`\mathrm{He}^{[Q]}_k(x) = Q^{k/2}\mathrm{He}_k(x/\sqrt Q)`,
  orthogonal under :math:`N(0, Q)` with norm :math:`k!\,Q^k`, and
  :math:`c_k(Q) = E[\sigma(\ell)\mathrm{He}^{[Q]}_k(\ell)]/(k!\,Q^k)`, :math:`\ell\sim N(0,Q)`.
  With :math:`\ell = \sqrt Q x`:
  :math:`c_k(Q) = E[\sigma(\sqrt Q x)\mathrm{He}_k(x)]/(k!\,Q^{k/2})`.

Every coefficient is a 1-D Gaussian expectation computed by quadrature (Gauss-Hermite for
smooth functions, Gauss-Legendre panels split at the kinks otherwise), with the
convergence measured by doubling the number of nodes. Polynomials are evaluated through
the orthonormal recurrence :math:`h_{k+1} = (x h_k - \sqrt k\, h_{k-1})/\sqrt{k+1}`,
:math:`h_k = \mathrm{He}_k/\sqrt{k!}`, which stays well scaled for large ``k``.

The series form of the population loss (Mehler's formula,
:math:`E[\mathrm{He}_j(z^*)\mathrm{He}^{[Q]}_k(\lambda)] = \delta_{jk}\,k!\,c^k`),

.. math::

    L = \tfrac12 E[y^2] + \tfrac12 E[\sigma(\lambda)^2] - \sum_k k!\, a_k\, c_k(Q)\, c^k,

is an independent cross-check of :func:`loradyn.population.population` (exact for
polynomials).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from .activations import Activation, Target, get_activation, make_target
from .errors import LoradynError, check_mu, check_positive
from .gaussian import DEFAULT_NODES, rule_1d

if TYPE_CHECKING:  # pragma: no cover
    from .population import Problem

Array = np.ndarray

__all__ = [
    "HermiteCoefficients",
    "TauScaling",
    "even_hermite_mean",
    "even_hermite_mean_closed",
    "hermite_coefficients",
    "information_exponent",
    "label_expansion",
    "normalized_hermite",
    "series_population_loss",
    "standard_from_variance",
    "student_information_exponent",
    "student_mean_dataset",
    "tau_scaling",
]


def normalized_hermite(x: Array, kmax: int) -> Array:
    r"""Orthonormal Hermite polynomials :math:`h_k(x) = \mathrm{He}_k(x)/\sqrt{k!}`, k = 0..kmax.

    Returns an array of shape ``x.shape + (kmax + 1,)``; :math:`E[h_j h_k] = \delta_{jk}`.
    """
    x = np.asarray(x, dtype=float)
    out = np.empty(x.shape + (kmax + 1,))
    out[..., 0] = 1.0
    if kmax >= 1:
        out[..., 1] = x
    for k in range(1, kmax):
        out[..., k + 1] = (x * out[..., k] - math.sqrt(k) * out[..., k - 1]) / math.sqrt(k + 1)
    return out


def _sqrt_fact(kmax: int) -> Array:
    r""":math:`\sqrt{k!}` for k = 0..kmax, as :math:`\exp(\tfrac12\ln\Gamma(k+1))`: finite for
    every kmax allowed (k! itself overflows a float beyond k = 170)."""
    return np.array([math.exp(0.5 * math.lgamma(k + 1)) for k in range(kmax + 1)])


def _resolve(fn: str | Activation | Target, label: str | None) -> tuple[str, Callable, tuple]:
    """Name, vectorized callable and kinks of an activation or a target ``T(phi)``."""
    if isinstance(fn, Target):
        return fn.name, fn.y, fn.kinks
    if label not in (None, "identity", "none", "id"):
        t = make_target(fn, label)
        return t.name, t.y, t.kinks
    act = get_activation(fn)
    return act.name, act.f, act.kinks


def _degree(fn: str | Activation | Target, label: str | None) -> int | None:
    if isinstance(fn, Target):
        d = fn.teacher.degree
        return None if d is None else (2 * d if fn.label.name == "square" else d)
    d = get_activation(fn).degree
    if d is not None and label == "square":
        d *= 2
    return d


def _std_coeffs(f: Callable, kinks: tuple, scale: Array, kmax: int, n: int) -> Array:
    r"""Standard coefficients of :math:`x \mapsto f(\sqrt Q x)`.

    Implements :math:`E[f(\sqrt Q x)\mathrm{He}_k(x)]/k!` for k = 0..kmax.

    ``scale`` holds :math:`\sqrt Q` (1-D array, entries > 0); returns ``scale.shape + (kmax+1,)``.
    """
    scale = np.asarray(scale, dtype=float)
    if kinks:
        breaks = np.stack([k / scale for k in kinks], axis=-1)
        x, w = rule_1d(breaks, n, batch_shape=scale.shape)
    else:
        x, w = rule_1d(None, n, batch_shape=scale.shape)
    x = np.broadcast_to(x, scale.shape + (x.shape[-1],))
    fx = f(scale[..., None] * x)
    h = normalized_hermite(x, kmax)  # batch + (N, K+1)
    proj = np.einsum("...n,...n,...nk->...k", w * np.ones_like(fx), fx, h)
    return proj / _sqrt_fact(kmax)


@dataclass(frozen=True)
class HermiteCoefficients:
    r"""Coefficients of a function in the variance-:math:`Q` Hermite basis.

    Attributes
    ----------
    name
        The function (activation, or label transform applied to a teacher).
    variance
        :math:`Q` (1 for the standard basis, where ``coeffs`` are the :math:`a_k`).
    coeffs
        :math:`c_k(Q)`, k = 0..kmax.
    error
        Largest change of any normalized coefficient :math:`c_k\sqrt{k!\,Q^k}` when the node
        count is doubled (the quadrature error estimate).
    nodes
        Node count of the reported values (the doubled one).
    """

    name: str
    variance: float
    coeffs: Array
    error: float
    nodes: int

    @property
    def kmax(self) -> int:
        """Highest degree ``k`` of the coefficients."""
        return int(self.coeffs.size - 1)

    @property
    def normalized(self) -> Array:
        r""":math:`c_k\sqrt{k!\,Q^k}`: components on the orthonormal basis under :math:`N(0,Q)`."""
        k = np.arange(self.kmax + 1)
        return self.coeffs * _sqrt_fact(self.kmax) * self.variance ** (k / 2.0)

    def information_exponent(self, tol: float = 1e-8) -> int | None:
        """Lowest ``k >= 1`` with a non-zero coefficient (see :func:`information_exponent`)."""
        return information_exponent(self.normalized, tol=tol, atol=max(10 * self.error, 0.0))

    def to_dataset(self) -> xr.Dataset:
        """The coefficients as an :class:`xarray.Dataset` (dim ``k``), config in ``attrs``."""
        cfg = {"name": self.name, "variance": self.variance, "nodes": self.nodes}
        return xr.Dataset(
            {
                "coeff": ("k", self.coeffs),
                "normalized": ("k", self.normalized),
            },
            coords={"k": np.arange(self.kmax + 1)},
            attrs={
                "config": json.dumps(cfg),
                "quadrature_error": self.error,
                "information_exponent": self.information_exponent() or -1,
            },
        )


def hermite_coefficients(
    fn: str | Activation | Target,
    *,
    variance: float = 1.0,
    kmax: int = 10,
    label: str | None = None,
    nodes: int | None = None,
) -> HermiteCoefficients:
    r"""Hermite coefficients :math:`c_k(Q)` of an activation (or of ``T(phi)``), k = 0..kmax.

    Implements :math:`c_k(Q) = E[\sigma(\sqrt Q x)\,\mathrm{He}_k(x)]/(k!\,Q^{k/2})`, which is
    :math:`E[\sigma(\ell)\mathrm{He}^{[Q]}_k(\ell)]/(k!\,Q^k)` for :math:`\ell \sim N(0, Q)`;
    ``variance=1`` gives the standard :math:`a_k = E[\phi\,\mathrm{He}_k]/k!`.

    Parameters
    ----------
    fn
        Activation name or object, or a :class:`~loradyn.activations.Target`.
    variance
        :math:`Q > 0`.
    kmax
        Highest degree (0..200).
    label
        Optional label transform (e.g. ``square``): expand :math:`T(\phi)` instead.
    nodes
        Quadrature nodes (per panel for kinked functions); the value is computed with
        ``nodes`` and ``2 * nodes`` and the difference reported as ``error``.
    """
    check_positive("variance", variance)
    if not isinstance(kmax, int | np.integer) or not 0 <= int(kmax) <= 200:
        raise LoradynError(f"kmax = {kmax!r} is invalid: use an integer between 0 and 200")
    kmax = int(kmax)
    name, f, kinks = _resolve(fn, label)
    deg = _degree(fn, label)
    if nodes is None:
        base = DEFAULT_NODES if deg is None else (deg + kmax) // 2 + 2
        n = max(DEFAULT_NODES, base, kmax + 8)
    else:
        if int(nodes) < 2:
            raise LoradynError(f"nodes = {nodes} is too small: use at least 2 quadrature nodes")
        n = int(nodes)
    sq = np.array([math.sqrt(variance)])
    lo = _std_coeffs(f, kinks, sq, kmax, n)[0]
    hi = _std_coeffs(f, kinks, sq, kmax, 2 * n)[0]
    norm = _sqrt_fact(kmax)
    err = float(np.max(np.abs(hi - lo) * norm)) if kmax >= 0 else 0.0
    k = np.arange(kmax + 1)
    with np.errstate(over="ignore", under="ignore"):
        qk = float(variance) ** (k / 2.0)
    if not np.all(np.isfinite(qk) & (qk > 0)):
        # Q^(k/2) over- or underflows: c_k = inf or 0 and c_k sqrt(k! Q^k) = NaN
        raise LoradynError(
            f"variance = {variance:g} is too far from 1 for kmax = {kmax}: Q^(k/2) overflows; "
            "choose Q closer to 1 or a smaller kmax"
        )
    coeffs = hi / qk
    return HermiteCoefficients(name, float(variance), coeffs, err, 2 * n)


def information_exponent(normalized: Array, *, tol: float = 1e-8, atol: float = 0.0) -> int | None:
    r"""Information exponent: the lowest :math:`k \ge 1` with a non-zero coefficient.

    A coefficient counts as zero when its normalized size :math:`|c_k|\sqrt{k!\,Q^k}` is at most
    ``max(tol * norm, atol)``, ``norm`` being the largest normalized coefficient of order
    ``k >= 1``. Returns ``None`` when every coefficient of order 1..kmax vanishes (a constant,
    or an IE above ``kmax``).
    """
    v = np.abs(np.asarray(normalized, dtype=float))
    if v.size < 2:
        return None
    ref = float(np.max(v[1:]))
    if ref == 0.0:
        return None
    thr = max(tol * ref, atol)
    nz = np.nonzero(v[1:] > thr)[0]
    return int(nz[0] + 1) if nz.size else None


def standard_from_variance(coeffs_q: Array, variance: float) -> Array:
    r"""Map coefficients in the variance-:math:`Q` basis onto the standard basis (App. B.3).

    Uses :math:`\mathrm{He}^{[Q]}_k(x) = \sum_{j \le k/2} \frac{k!}{j!\,(k-2j)!}
    \left(\frac{1-Q}{2}\right)^j \mathrm{He}_{k-2j}(x)`, so a pure :math:`\mathrm{He}^{[Q]}_K`
    acquires every lower degree of the same parity when :math:`Q \ne 1`: its standard-basis IE
    is 1 (odd ``K``) or 2 (even ``K``).

    Parameters
    ----------
    coeffs_q
        :math:`c_k(Q)`, k = 0..kmax: the function is :math:`\sum_k c_k \mathrm{He}^{[Q]}_k`.
    variance
        :math:`Q`.

    Returns
    -------
    Array
        :math:`a_k`, k = 0..kmax, with the same function equal to :math:`\sum_k a_k\mathrm{He}_k`.
    """
    c = np.asarray(coeffs_q, dtype=float)
    out = np.zeros_like(c)
    r = (1.0 - float(variance)) / 2.0
    for k, ck in enumerate(c):
        if ck == 0.0:
            continue
        for j in range(k // 2 + 1):
            coef = math.factorial(k) / (math.factorial(j) * math.factorial(k - 2 * j))
            out[k - 2 * j] += ck * coef * r**j
    return out


def student_information_exponent(
    activation: str | Activation, variance: float, *, kmax: int = 12, tol: float = 1e-8
) -> int | None:
    r"""IE of a student whose pre-activation has variance :math:`Q` (App. B.3).

    The student :math:`\sigma(\lambda)`, :math:`\lambda \sim N(0, Q)`, expanded in the
    orthogonal basis of its own measure (equivalently, :math:`x \mapsto \sigma(\sqrt Q x)` in
    the standard basis): for a pure :math:`\mathrm{He}_K` and :math:`Q \ne 1` every lower degree
    of the parity of ``K`` appears, so the IE is at most 2.
    """
    return hermite_coefficients(activation, variance=variance, kmax=kmax).information_exponent(
        tol
    )


def label_expansion(
    teacher: str | Activation, label: str = "square", *, kmax: int | None = None
) -> HermiteCoefficients:
    r"""Standard Hermite coefficients of the transformed label :math:`y = T(\phi(z))` (App. B.4).

    For a pure :math:`\mathrm{He}_K` and ``square``,
    :math:`\mathrm{He}_K^2 = \sum_{r=0}^{K} \binom{K}{r}^2 r!\,\mathrm{He}_{2K-2r}`: besides the
    constant :math:`K!` the lowest term is :math:`K^2 (K-1)!\,\mathrm{He}_2`, so
    ``information_exponent()`` of the result is 2. ``kmax`` defaults to twice the degree
    (or 20 for non-polynomials).
    """
    tgt = make_target(teacher, label)
    deg = tgt.teacher.degree
    if kmax is None:
        kmax = 20 if deg is None else max(2, 2 * deg if tgt.label.name == "square" else deg)
    return hermite_coefficients(tgt, kmax=kmax)


def _double_factorial(n: int) -> int:
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def even_hermite_mean_closed(K: int, mu: Array | float) -> Array:
    r"""Closed form :math:`E[\mathrm{He}_K(\mu z)] = (\mu^2 - 1)^{K/2}(K-1)!!` (0 for odd K)."""
    mu = np.asarray(mu, dtype=float)
    if K % 2:
        return np.zeros_like(mu)
    return (mu * mu - 1.0) ** (K // 2) * _double_factorial(K - 1)


def even_hermite_mean(K: int, mu: Array | float, *, nodes: int | None = None) -> Array:
    r"""Mean :math:`E[\mathrm{He}_K(\mu z)]` of a :math:`\mathrm{He}_K` student at the start.

    At :math:`(u, m) = (0, 0)` the student pre-activation is :math:`\mu z`, so the model's mean
    is this quadrature; it vanishes for odd ``K`` and at :math:`\mu = 1`, and is non-zero for
    even ``K`` and :math:`\mu \ne 1` (App. E.5, Fig. 6).
    """
    check_mu(mu)
    if not 1 <= int(K) <= 30:
        raise LoradynError(f"Hermite degree K = {K} is out of range: use 1 ... 30")
    act = get_activation(f"he{int(K)}")
    n = nodes or max(DEFAULT_NODES, int(K) // 2 + 2)
    x, w = rule_1d(None, n)
    mu_arr = np.asarray(mu, dtype=float)
    vals = np.sum(w.reshape(-1) * act.f(mu_arr[..., None] * x.reshape(-1)), axis=-1)
    return vals


def student_mean_dataset(
    degrees: list[int] | tuple[int, ...] = (2, 4, 6, 8), mu: Array | None = None
) -> xr.Dataset:
    r"""Fig. 6 data: :math:`E[\mathrm{He}_K(\mu z)]` versus :math:`\mu` for several ``K``.

    Variables ``mean`` (quadrature) and ``closed_form``, dims ``(K, mu)``.
    """
    mu = np.linspace(0.0, 1.0, 101) if mu is None else np.asarray(mu, dtype=float)
    check_mu(mu)
    ks = [int(k) for k in degrees]
    mean = np.stack([even_hermite_mean(k, mu) for k in ks])
    closed = np.stack([even_hermite_mean_closed(k, mu) for k in ks])
    cfg = {"degrees": ks, "mu": mu.tolist()}
    return xr.Dataset(
        {"mean": (("K", "mu"), mean), "closed_form": (("K", "mu"), closed)},
        coords={"K": ks, "mu": mu},
        attrs={"config": json.dumps(cfg), "description": "E[He_K(mu z)], z ~ N(0,1)"},
    )


def series_population_loss(
    problem: Problem,
    u: Array | float,
    m: Array | float,
    mu: Array | float,
    *,
    p: Array | float | None = None,
    kmax: int | None = None,
    nodes: int | None = None,
) -> Array:
    r"""Population loss from the Hermite series (Mehler), a cross-check of the quadrature.

    With :math:`\rho = c/\sqrt Q` and :math:`\hat c_k = E[\sigma(\sqrt Q x)\mathrm{He}_k(x)]/k!
    = c_k(Q)\,Q^{k/2}`,

    .. math::

        L_{mse} = \tfrac12\sum_k k!\,a_k^2 + \tfrac12\sum_k k!\,\hat c_k^2
                  - \sum_k k!\,a_k\,\hat c_k\,\rho^k,
        \qquad L_{corr} = -\sum_k k!\,a_k\,\hat c_k\,\rho^k,

    where :math:`a_k` are the coefficients of :math:`y = T(\phi)`. Exact when both functions
    are polynomials (``kmax`` defaults to the larger degree); a truncation otherwise
    (``kmax`` defaults to 40). ``c`` and ``Q`` are those of
    :func:`loradyn.population.population` (aligned, or misaligned when ``p`` is given).
    """
    from .population import Problem

    if not isinstance(problem, Problem):
        raise LoradynError("series_population_loss needs a Problem: build one with make_problem")
    check_mu(mu)
    u, m, mu = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (u, m, mu)))
    m = np.clip(m, -1.0, 1.0)
    c = mu + u * m
    if p is None:
        Q = mu * mu + 2.0 * mu * u * m + u * u
    else:
        p = np.broadcast_to(np.asarray(p, dtype=float), u.shape)
        nu = np.sqrt(np.maximum(1.0 - mu * mu, 0.0))
        Q = mu * mu + nu * nu + u * u + 2.0 * u * (mu * m + nu * p)
    Q = np.maximum(Q, 0.0)
    dt = problem.teacher.degree
    if dt is not None and problem.target.label.name == "square":
        dt *= 2
    ds = problem.student.degree
    if kmax is None:
        kmax = 40 if dt is None or ds is None else max(dt, ds)
    n = nodes or max(DEFAULT_NODES, kmax + 8)
    tgt = problem.target
    a = _std_coeffs(tgt.y, tgt.kinks, np.array([1.0]), kmax, n)[0]
    sq = np.sqrt(Q).ravel()
    pos = sq > 1e-300
    chat = np.zeros(sq.shape + (kmax + 1,))
    if np.any(pos):
        chat[pos] = _std_coeffs(problem.student.f, problem.student.kinks, sq[pos], kmax, n)
    if np.any(~pos):
        chat[~pos, 0] = float(np.asarray(problem.student.f(np.zeros(1)))[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(pos, c.ravel() / np.where(pos, sq, 1.0), 0.0)
    rho = np.clip(rho, -1.0, 1.0)
    fact = _sqrt_fact(kmax) ** 2
    powers = rho[:, None] ** np.arange(kmax + 1)
    cross = np.sum(fact * a * chat * powers, axis=-1)
    if problem.loss == "mse":
        loss = 0.5 * np.sum(fact * a * a) + 0.5 * np.sum(fact * chat * chat, axis=-1) - cross
    else:
        loss = -cross
    return loss.reshape(u.shape)


@dataclass(frozen=True)
class TauScaling:
    r"""Fitted power laws of :math:`\tau(\mu)` at the ends of [0, 1] (Prop. 3).

    :math:`\tau \sim C_0\,\mu^{-\alpha_0}` as :math:`\mu \to 0` and
    :math:`\tau \sim C_1\,(1-\mu)^{-\alpha_1}` as :math:`\mu \to 1`; ``alpha0 = 0`` means a
    finite limit. ``resid0``/``resid1`` are the largest residuals of the log-log fits.
    """

    activation: str
    alpha0: float
    prefactor0: float
    resid0: float
    alpha1: float
    prefactor1: float
    resid1: float

    def as_dict(self) -> dict[str, float | str]:
        """The fields as a plain dict."""
        return dict(self.__dict__)


def _fit(x: Array, t: Array) -> tuple[float, float, float]:
    lx, lt = np.log(x), np.log(t)
    slope, icpt = np.polyfit(lx, lt, 1)
    resid = float(np.max(np.abs(lt - (slope * lx + icpt))))
    return float(-slope), float(np.exp(icpt)), resid


def tau_scaling(
    teacher: str,
    student: str | None = None,
    *,
    eps: tuple[float, float] = (1e-4, 1e-2),
    num: int = 25,
    **kw,
) -> TauScaling:
    r"""Fit the exponents of :math:`\tau` as :math:`\mu\to0` and :math:`\mu\to1` (Prop. 3).

    ``tau`` is evaluated on ``num`` log-spaced points :math:`\epsilon \in` ``eps`` at
    :math:`\mu = \epsilon` and :math:`\mu = 1 - \epsilon`, and :math:`\log\tau` is fitted
    linearly against :math:`\log\epsilon`.

    For a pure :math:`\mathrm{He}_K` (teacher = student) the small-:math:`\mu` expansion gives
    :math:`b \approx \mu\,(\sigma'(0)^2 + \sigma(0)\sigma''(0))`,
    :math:`a(0) = \sigma'(0)^2 + \sigma(0)\sigma''(0)`: for odd ``K >= 3`` :math:`a(0) > 0`
    and :math:`\tau \propto \mu^{-2}`; for even ``K``, :math:`a(0) < 0` and :math:`\tau` stays
    finite (:math:`\alpha_0 = 0`). Near 1, :math:`b \propto (1-\mu)` with :math:`a(1) > 0`,
    so :math:`\tau \propto (1-\mu)^{-2}`.
    """
    from .linearization import tau as _tau

    e = np.geomspace(eps[0], eps[1], int(num))
    t0 = _tau(teacher, e, student=student, **kw).tau
    t1 = _tau(teacher, 1.0 - e, student=student, **kw).tau
    if not (np.all(np.isfinite(t0)) and np.all(np.isfinite(t1))):
        raise LoradynError("tau is infinite near mu = 0 or 1: choose a smaller eps range")
    a0, c0, r0 = _fit(e, t0)
    a1, c1, r1 = _fit(e, t1)
    name = get_activation(teacher).name + ("" if student is None else f"/{student}")
    return TauScaling(name, a0, c0, r0, a1, c1, r1)
