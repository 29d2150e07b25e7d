r"""The correlated search phase: linearization at ``(u, m) = (0, 0)`` (Prop. 1-3).

Near the saddle, :math:`\tfrac{d}{dt}(u, m)^\top = J (u, m)^\top` with

.. math::

    J = \begin{pmatrix} -a & -b \\ -b & 0 \end{pmatrix},\qquad
    b(\mu) = E[z\, g_0(z)],\qquad
    a(\mu) = \frac{b(\mu) + E[y'(z)\,\sigma'(\mu z)]}{\mu},

where :math:`g_0(z) = \partial\ell/\partial\lambda` at :math:`\lambda = \mu z`
(MSE: :math:`(\sigma(\mu z) - y(z))\sigma'(\mu z)`; correlation loss:
:math:`-y(z)\sigma'(\mu z)`). :math:`a = E[\partial_\lambda g_0]` is rewritten by Gaussian
integration by parts so that only first derivatives appear. At :math:`\mu = 0` the limit
is taken: :math:`a(0) = E[\partial_\lambda g_0(0)]` from :math:`\sigma''` when the activation
provides it, otherwise by cubic extrapolation from :math:`\mu = 10^{-3}, \dots, 4\cdot10^{-3}`.
For a student kinked at 0 whose value differs from the label there (e.g. ``relu`` on
``he2``), :math:`a \sim C/\mu` and :math:`a(0) = \pm\infty` is returned (the limit:
:math:`\tau(0) = \infty` for :math:`C > 0`, :math:`\tau(0) = 0` for :math:`C < 0`).

Growth rate :math:`\lambda_+ = (-a + \sqrt{a^2 + 4b^2})/2`, characteristic time
:math:`\tau = 1/\lambda_+`; exit time :math:`t_{exit} \approx \tau \log(R/r_0)` with
:math:`r_0 = 1/\sqrt d`.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from scipy.optimize import brentq

from .errors import LoradynError, as_float, as_int, check_mu
from .gaussian import DEFAULT_NODES, rule_1d
from .io import atomic_savefig, plot_format, require_folder
from .population import Problem, make_problem

Array = np.ndarray
UNITS = ("natural", "paper")
ADAPT_START = 64  # adaptive node count for non-polynomial problems: start,
ADAPT_CAP = 256  # cap (Gauss-Hermite loses accuracy above about 350 nodes),
ADAPT_RTOL = 1e-9  # and the relative change of tau between doublings that stops it
B_ROUNDING = 1e-12  # |b| below this fraction of sum |w z g0| is quadrature rounding: b = 0
SINGULAR_A = 1e-7  # lim mu a(mu) above this (relative) size: a(0) = +-inf (kinked student)


def _as_problem(problem: Problem | str, student: str | None = None, **kw) -> Problem:
    if isinstance(problem, Problem):
        return problem
    return make_problem(problem, student, **kw)


def _ab_positive(problem: Problem, mu: Array, nodes: int) -> tuple[Array, Array]:
    """``a`` and ``b`` for ``mu > 0`` (1-D array)."""
    st, tg = problem.student, problem.target
    breaks = [np.full(mu.shape, k) for k in tg.kinks]
    breaks += [k / mu for k in st.kinks]
    b_arr = np.stack(breaks, axis=-1) if breaks else None
    z, w = rule_1d(b_arr, nodes, batch_shape=mu.shape)
    lam = mu[:, None] * z
    y = tg.y(z)
    ds = st.df(lam)
    if problem.loss == "mse":
        g0 = (st.f(lam) - y) * ds
    else:
        g0 = -y * ds
    zg = w * z * g0
    b = np.sum(zg, axis=-1)
    # b = 0 exactly in many cases (mu = 0 for odd He_K, mu = 1): snap rounding noise,
    # measured against the size of the summed terms, to an exact zero.
    b = np.where(np.abs(b) <= B_ROUNDING * np.sum(np.abs(zg), axis=-1), 0.0, b)
    cross = np.sum(w * tg.dy(z) * ds, axis=-1)
    a = (b + cross) / mu
    return a, b


def _a_at_zero(problem: Problem, nodes: int) -> float:
    st, tg = problem.student, problem.target
    if st.d2f is not None:
        z, w = rule_1d(np.asarray([list(tg.kinks)]) if tg.kinks else None, nodes, (1,))
        Ey = float(np.sum(w * tg.y(z)))
        s0, d0, dd0 = (float(np.asarray(f(np.zeros(1)))[0]) for f in (st.f, st.df, st.d2f))
        if problem.loss == "mse":
            return d0 * d0 + (s0 - Ey) * dd0
        return -Ey * dd0
    # no sigma'': cubic extrapolation from mu = h, 2h, 3h, 4h (error O(h^4) plus rounding
    # amplified by 1/h; about 1e-11 for relu, 1e-9 for relu + he3)
    h = 1e-3
    mus = h * np.arange(1.0, 5.0)
    a, _ = _ab_positive(problem, mus, nodes)
    # A student kinked at 0 whose value there differs from the label puts a delta of sigma''
    # at lambda = 0: a ~ C / mu with C = jump(sigma') (sigma(0) - y(0)) / sqrt(2 pi). The
    # extrapolated mu * a(mu) -> C tells it; the limit of a is then +-inf, not a number.
    ma = mus * a
    C = float(4 * ma[0] - 6 * ma[1] + 4 * ma[2] - ma[3])
    if abs(C) > SINGULAR_A * (1.0 + float(np.max(np.abs(a)))):
        return math.copysign(math.inf, C)
    return float(4 * a[0] - 6 * a[1] + 4 * a[2] - a[3])


class QuadratureWarning(UserWarning):
    """The adaptive node count of :func:`coefficients` reached its cap unconverged."""


def _polynomial(problem: Problem) -> bool:
    return problem.teacher.degree is not None and problem.student.degree is not None


def _tau_of(a: Array, b: Array) -> Array:
    lam = growth_rate(a, b)
    with np.errstate(divide="ignore"):
        return np.where(lam > 0, 1.0 / np.where(lam > 0, lam, 1.0), np.inf)


def _adaptive(pr: Problem, flat: Array, pos: Array) -> tuple[Array, Array, int]:
    r"""``a``, ``b`` on ``flat`` with the node count doubled from :data:`ADAPT_START` until
    :math:`\tau` changes by less than :data:`ADAPT_RTOL` (relative, every finite
    :math:`\tau`) or :data:`ADAPT_CAP` is reached (then a :class:`QuadratureWarning`)."""
    n = ADAPT_START
    a, b = _fixed(pr, flat, pos, n)
    t = _tau_of(a, b)
    # a(0) of a student without sigma'' is a cubic extrapolation whose rounding error
    # (about 1e-11, amplified by 1/h) does not shrink with the node count: not checked
    check = pos | (pr.student.d2f is not None)
    # a = (b + E[y' sigma'])/mu carries the absolute error of its sums (~1e-13 on the
    # panels of a kinked activation) amplified by 1/mu: below mu ~ 1e-4 that, not the node
    # count, sets the floor of the relative change
    tol = np.maximum(ADAPT_RTOL, 1e-13 / np.where(pos, flat, 1.0))
    while n < ADAPT_CAP:
        n *= 2
        a2, b2 = _fixed(pr, flat, pos, n)
        t2 = _tau_of(a2, b2)
        fin = np.isfinite(t) & np.isfinite(t2) & check
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(t2[fin] - t[fin]) / np.abs(t2[fin]) / tol[fin]
        same_inf = np.all(np.isfinite(t) == np.isfinite(t2))
        a, b, t = a2, b2, t2
        if same_inf and (rel.size == 0 or float(np.max(rel)) < 1.0):
            return a, b, n
    warnings.warn(
        f"tau for {pr.describe()}: the quadrature did not converge to {ADAPT_RTOL:g} "
        f"(relative) at the cap of {ADAPT_CAP} nodes; pass nodes= to choose the rule",
        QuadratureWarning, stacklevel=3)
    return a, b, n


def _fixed(pr: Problem, flat: Array, pos: Array, n: int) -> tuple[Array, Array]:
    a = np.empty_like(flat)
    b = np.empty_like(flat)
    with np.errstate(over="ignore", invalid="ignore"):
        if np.any(pos):
            a[pos], b[pos] = _ab_positive(pr, flat[pos], n)
        if np.any(~pos):
            a[~pos] = _a_at_zero(pr, n)
            # b(0) = E[z g0(z)] with lambda = 0
            _, b0 = _ab_positive(pr, np.array([1e-300]), n)
            b[~pos] = b0[0]
    return a, b


def quadrature_nodes(problem: Problem | str, mu: Array | float, **kw) -> int:
    """The node count :func:`coefficients` uses by default for ``problem`` on ``mu``: the
    problem's own (exact) rule for polynomials, else the adaptive choice (64 to 256)."""
    pr = _as_problem(problem, **kw)
    check_mu(mu)
    if _polynomial(pr) or pr.nodes != DEFAULT_NODES:
        return pr.nodes
    flat = np.atleast_1d(np.asarray(mu, dtype=float)).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuadratureWarning)
        return _adaptive(pr, flat, flat > 0)[2]


def coefficients(
    problem: Problem | str, mu: Array | float, *, nodes: int | None = None, **kw
) -> tuple[Array, Array]:
    r"""The search-phase coefficients :math:`a(\mu)` and :math:`b(\mu)`.

    Parameters
    ----------
    problem
        A :class:`~loradyn.population.Problem`, or a teacher name (then ``student``,
        ``label``, ``loss`` may be passed as keywords).
    mu
        Pre-training alignment(s) in [0, 1].

    nodes
        Quadrature size. ``None`` (default): the problem's own rule when both activations
        are polynomials (exact) or when the problem was built with a node count other than
        the default; otherwise adaptive: doubled from 64 until :math:`\tau = 1/\lambda_+`
        changes by less than ``1e-9`` relative at every ``mu``, with a cap at 256 nodes
        (a :class:`QuadratureWarning` when the cap is reached unconverged).

    Returns
    -------
    a, b
        Arrays of the shape of ``mu``: damping ``a`` and coupling ``b``.
    """
    pr = _as_problem(problem, **kw)
    check_mu(mu)
    mu_arr = np.atleast_1d(np.asarray(mu, dtype=float))
    flat = mu_arr.ravel()
    pos = flat > 0
    if nodes is None and not _polynomial(pr) and pr.nodes == DEFAULT_NODES:
        a, b, _ = _adaptive(pr, flat, pos)
    else:
        a, b = _fixed(pr, flat, pos, nodes or pr.nodes)
    # a = +-inf is the mu = 0 limit of a kinked student; anything else non-finite is overflow
    if np.any(np.isnan(a)) or not np.all(np.isfinite(b)) or np.any(np.isinf(a[pos])):
        bad = float(flat[np.argmax(np.isnan(a) | ~np.isfinite(b) | (np.isinf(a) & pos))])
        raise LoradynError(
            f"a(mu) or b(mu) overflows at mu = {bad:g} for {pr.describe()}: the activation or "
            "label values exceed double precision; rescale the activation"
        )
    shape = np.shape(mu)
    return a.reshape(shape), b.reshape(shape)


def jacobian(a: Array | float, b: Array | float) -> Array:
    """The Jacobian ``[[-a, -b], [-b, 0]]`` (shape ``(..., 2, 2)``)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    return np.stack([np.stack([-a, -b], -1), np.stack([-b, np.zeros_like(b)], -1)], -2)


def growth_rate(a: Array | float, b: Array | float) -> Array:
    r""":math:`\lambda_+ = (-a + \sqrt{a^2 + 4 b^2})/2`, computed without cancellation."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    # a = +-inf (the mu = 0 limit of a kinked student) gives lambda_+ = 0 or inf, never NaN
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(a * a + 4.0 * b * b)
        lam = np.where(a > 0, 2.0 * b * b / np.where(a + root > 0, a + root, 1.0), 0.5 * (root - a))
        return np.where(a > 0, np.where(a + root > 0, lam, 0.0), lam)


@dataclass(frozen=True)
class TauResult:
    """Result of :func:`tau`: every array has the shape of ``mu``.

    ``tau`` is in ``units`` (``natural``: ODE time; ``paper``: multiplied by
    ``scale``, the factor :math:`K!\\,K` of a pure ``heK`` student).
    """

    mu: Array
    a: Array
    b: Array
    lambda_plus: Array
    tau: Array
    units: str
    scale: float
    problem: str

    def to_dataset(self) -> xr.Dataset:
        """The result as an :class:`xarray.Dataset` over ``mu``, config JSON in ``attrs``."""
        mu = np.atleast_1d(self.mu)
        cfg = {"problem": self.problem, "units": self.units, "scale": self.scale}
        data = {
            k: ("mu", np.atleast_1d(getattr(self, k)))
            for k in ("a", "b", "lambda_plus", "tau")
        }
        return xr.Dataset(data, coords={"mu": mu}, attrs={"config": json.dumps(cfg)})

    def rows(self) -> list[dict[str, float]]:
        """One dict per mu with keys ``mu, a, b, lambda_plus, tau``."""
        return [
            {
                "mu": float(m), "a": float(a), "b": float(b),
                "lambda_plus": float(lp), "tau": float(t),
            }
            for m, a, b, lp, t in zip(
                np.ravel(self.mu), np.ravel(self.a), np.ravel(self.b),
                np.ravel(self.lambda_plus), np.ravel(self.tau), strict=True,
            )
        ]


def tau(
    problem: Problem | str,
    mu: Array | float,
    *,
    units: str = "natural",
    nodes: int | None = None,
    **kw,
) -> TauResult:
    r"""Characteristic time :math:`\tau(\mu) = 1/\lambda_+` of the search phase.

    Parameters
    ----------
    problem
        A :class:`~loradyn.population.Problem` or a teacher name (with ``student=``,
        ``label=``, ``loss=`` keywords).
    mu
        Alignment(s) in [0, 1]; vectorized.
    units
        ``natural`` (ODE time, learning rate 1) or ``paper`` (times :math:`K!\,K` for a
        pure ``heK`` student, as the paper's plots).

    Returns
    -------
    TauResult
        ``tau`` is ``inf`` where :math:`\lambda_+ = 0` (a singularity).
    """
    if units not in UNITS:
        raise LoradynError(f"unknown units {units!r}: choose natural or paper")
    pr = _as_problem(problem, **kw)
    a, b = coefficients(pr, mu, nodes=nodes)
    lam = growth_rate(a, b)
    scale = pr.student.paper_scale if units == "paper" else 1.0
    with np.errstate(divide="ignore"):
        t = np.where(lam > 0, scale / np.where(lam > 0, lam, 1.0), np.inf)
    return TauResult(np.asarray(mu, dtype=float), a, b, lam, t, units, scale, pr.describe())


def exit_time(tau_value: Array | float, d: int, radius: float = 0.5) -> Array:
    r"""Predicted exit time :math:`\tau \log(R / r_0)` with :math:`r_0 = 1/\sqrt d`.

    Equals :math:`\tau\,(\tfrac12\log d + \log R)`; in ODE time (divide by the learning
    rate for SGD steps). When the start already reaches the radius (:math:`r_0 \ge R`) the
    prediction is 0, also where :math:`\tau = \infty` (never ``inf * 0 = NaN``).
    """
    d = as_int("d", d, lo=2)
    radius = as_float("radius", radius, lo=0.0, lo_open=True)
    factor = 0.5 * math.log(d) + math.log(radius)
    try:
        t = np.asarray(tau_value, dtype=float)
    except (TypeError, ValueError):
        raise LoradynError(f"tau = {tau_value!r} is not a number: give tau >= 0") from None
    if factor <= 0.0:
        return np.zeros_like(t)
    return t * factor


@dataclass(frozen=True)
class Singularity:
    """A value of ``mu`` in (0, 1) where ``b = 0`` while ``a > 0`` (tau diverges)."""

    mu: float
    a: float
    b: float


def singularities(
    problem: Problem | str,
    *,
    grid: int = 2001,
    xtol: float = 1e-12,
    nodes: int | None = None,
    **kw,
) -> list[Singularity]:
    r"""Every :math:`\mu \in (0, 1)` where :math:`\tau` diverges: :math:`b(\mu) = 0`, :math:`a > 0`.

    ``b`` is scanned on ``grid`` points of :math:`[10^{-6}, 1 - 10^{-6}]`, each sign change
    is bracketed and refined with Brent's method to ``xtol`` (far below the 1e-6 asked for),
    and roots with :math:`a \le 0` are dropped. Returns an empty list when there is none.
    """
    pr = _as_problem(problem, **kw)
    n = nodes or pr.nodes
    mus = np.linspace(1e-6, 1 - 1e-6, grid)
    a, b = coefficients(pr, mus, nodes=n)
    out: list[Singularity] = []
    scale = max(float(np.max(np.abs(b))), 1e-300)
    sb = np.sign(np.where(np.abs(b) < 1e-13 * scale, 0.0, b))

    def bf(x: float) -> float:
        return float(coefficients(pr, np.array([x]), nodes=n)[1][0])

    i = 0
    while i < grid - 1:
        if sb[i] == 0:
            # an exact zero on the grid (interior only)
            if 0 < i < grid - 1 and sb[i - 1] * sb[i + 1] < 0:
                root = float(mus[i])
                aa = float(a[i])
                if aa > 0:
                    out.append(Singularity(root, aa, float(b[i])))
            i += 1
            continue
        if sb[i] * sb[i + 1] < 0:
            root = brentq(bf, mus[i], mus[i + 1], xtol=xtol, rtol=4 * np.finfo(float).eps)
            aa, bb = coefficients(pr, np.array([root]), nodes=n)
            if aa[0] > 0:
                out.append(Singularity(float(root), float(aa[0]), float(bb[0])))
        i += 1
    return out


_NUM = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_RANGE = re.compile(rf"^{_NUM}:{_NUM}:\s*(\d+)\s*$")
MAX_MU_POINTS = 1_000_000


def parse_mu_spec(text: str) -> Array:
    """Parse a ``mu`` specification: ``START:STOP:NUM`` or a comma list.

    ``START:STOP:NUM`` gives ``numpy.linspace(START, STOP, NUM)`` (both ends included);
    ``0.1,0.5,0.9`` gives those values. Every value must lie in [0, 1].

    Raises
    ------
    LoradynError
        Malformed text, ``START > STOP``, ``NUM < 1`` or a value outside [0, 1].
    """
    hint = "write START:STOP:NUM (e.g. 0:1:11) or a comma list (e.g. 0.1,0.5,0.9)"
    if not isinstance(text, str) or not text.strip():
        raise LoradynError(f"--mu is empty: {hint}")
    s = text.strip()
    if ":" in s:
        m = _RANGE.match(s)
        if not m:
            raise LoradynError(f"cannot parse --mu {text!r}: {hint}")
        start, stop, num = float(m.group(1)), float(m.group(2)), int(m.group(3))
        if start > stop:
            raise LoradynError(
                f"--mu {text!r} has START = {start:g} > STOP = {stop:g}: "
                "put the smaller value first"
            )
        if not 1 <= num <= MAX_MU_POINTS:
            raise LoradynError(f"--mu {text!r} has NUM = {num}: use 1 to {MAX_MU_POINTS} points")
        check_mu([start, stop])
        return np.linspace(start, stop, num)
    vals = []
    for part in s.split(","):
        if not re.fullmatch(_NUM, part):
            raise LoradynError(f"cannot parse {part.strip()!r} in --mu {text!r}: {hint}")
        vals.append(float(part))
    arr = np.asarray(vals, dtype=float)
    check_mu(arr)
    return arr


def plot_tau(result: TauResult, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write a PNG of ``tau`` against ``mu`` (log ``y`` axis), atomically; returns the path.

    Infinite values (singularities, ``mu = 1``) are left out of the curve and marked by
    dashed vertical lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = require_folder(path)
    mu = np.atleast_1d(result.mu)
    t = np.atleast_1d(result.tau).astype(float)
    fin = np.isfinite(t) & (t > 0)
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    try:
        ax.plot(mu[fin], t[fin], marker="." if fin.sum() < 40 else None, lw=1.5)
        for x in mu[~fin]:
            ax.axvline(float(x), ls="--", lw=0.8, color="grey")
        ax.set_yscale("log")
        ax.set_xlabel("pre-training alignment mu")
        ax.set_ylabel(f"tau ({result.units} units)")
        ax.set_title(title or result.problem, fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        atomic_savefig(fig, target, format=plot_format(target))
    finally:
        plt.close(fig)
    return target
