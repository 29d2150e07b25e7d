r"""Finite-``d`` law of the escape step of the two-layer LoRA model, per rank (App. K).

Linear activation, any alignments :math:`\mu_k`. With :math:`\sigma` linear the
student output is :math:`\nu\sum_k w_k\cdot x = \nu(\mu\sum_k w^*_k + \sum_j \alpha_j v_j)
\cdot x` with :math:`\alpha_j = \sum_k A_{kj}` (equal :math:`\mu_k = \mu` here), so the
residual is

.. math::

    \hat y - y = \nu\sqrt K\,\big[(\mu - 1)\,\hat w\cdot x + \textstyle\sum_j u_j\, v_j\cdot x\big],
    \qquad \hat w = \frac{1}{\sqrt K}\sum_k w^*_k,\quad u_j = \alpha_j/\sqrt K.

For unequal :math:`\mu_k` the residual is :math:`\nu[-\delta + \sum_j \alpha_j v_j]\cdot x`
with the collective mismatch :math:`\delta = \sum_k (1 - \mu_k) w^*_k`: the same form with
:math:`\hat w = \hat\delta` and :math:`\mu_{eff} = 1 - |\delta|/\sqrt K` (App. K: "the
leading-order escape depends only on the collective mismatch vector"), and everything below
holds with these.

Every SGD step moves all :math:`A_{kj}` of a column by the same amount (``sigma' = 1``), so
``A`` keeps the form :math:`a\,\mathbf 1\mathbf 1^\top` of its start plus equal column
increments, and one SGD step of the two-layer model is, in law, one step of the rank-one
single-index linear model with teacher :math:`\hat w`, overlap :math:`m_j = v_j\cdot\hat w`
(:math:`= \hat\delta\cdot M_j`), scale :math:`u_j` and learning rate
:math:`\eta' = \nu^2 K\eta` (the ``u``-gradient, the sphere step of :math:`v_j` and its
finite-step term all carry the factor :math:`\nu^2 K`). For rank ``r`` the ``r``
directions obey the same dynamics from independent starts and noise (coupled only through
the Gram ``C - I = O(1/sqrt d)`` and, in the nonlinear phase, the shared residual, both
neglected) and the first to reach the radius escapes: ``starts = r`` in
:func:`loradyn.escape.escape_distribution`. The start maps to
:math:`u_0 = a_0\sqrt K`, and :math:`m_0 = m/\sqrt K` for the fixed start of
:class:`~loradyn.twolayer.model.TwoLayerConfig` (direction ``j`` has overlap ``m`` on
neuron ``j mod K``), or the uniform law (variance ``1/d``). The escape criterion
:math:`|M_j|_2 \ge R` becomes :math:`|m_j| \ge \sqrt{R^2 - |M_j^\perp|^2}` with
:math:`|M_j^\perp|^2 = m^2(1 - 1/K)` (fixed start) or its mean :math:`(K-1)/d` (uniform).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from ..errors import LoradynError, check_mu
from ..escape import QUANTILES, EscapeResult
from ..escape import escape_distribution as _single
from .model import norm_factor


@dataclass(frozen=True)
class TwoLayerEscape:
    r"""Predicted escape-step law per rank: ``quantiles[rank, level]`` and ``mean[rank]``.

    ``mu`` is the common alignment, or :math:`\mu_{eff} = 1 - |\delta|/\sqrt K` for unequal
    ones (all of them are in ``config["mu"]``); ``results`` the law per rank (its ``cdf``).
    """

    mu: float
    ranks: tuple[int, ...]
    quantiles: np.ndarray
    mean: np.ndarray
    config: dict
    results: tuple[EscapeResult | _FirstOf, ...]

    def to_dataset(self) -> xr.Dataset:
        """An :class:`xarray.Dataset` over ``(rank, level)``, the config as JSON in ``attrs``."""
        return xr.Dataset(
            {"escape_quantile": (("rank", "level"), self.quantiles),
             "escape_mean": ("rank", self.mean)},
            coords={"rank": list(self.ranks), "level": list(QUANTILES)},
            attrs={"config": json.dumps(self.config, sort_keys=True), "units": "SGD steps"})

    def cdf(self, i: int, steps: np.ndarray) -> np.ndarray:
        """Predicted CDF of the escape step for ``ranks[i]`` (see :meth:`EscapeResult.cdf`)."""
        return self.results[i].cdf(0, steps)


def escape_distribution(
    mu: float | list[float],
    ranks: int | list[int],
    *,
    K: int | None = None,
    d: int,
    lr: float,
    batch: int,
    radius: float = 0.5,
    a0: float | None = None,
    m0: float | None = None,
    norm: str = "none",
    activation: str = "linear",
) -> TwoLayerEscape:
    r"""Predicted law of the two-layer escape step (first step with :math:`\max_j|M_j| \ge R`).

    Parameters
    ----------
    mu
        The common alignment, or a list of ``K`` alignments :math:`\mu_k`. Only the
        collective mismatch :math:`\delta = \sum_k (1 - \mu_k) w^*_k` enters: the model is
        the equal-alignment one with :math:`\mu_{eff} = 1 - |\delta|/\sqrt K` and teacher
        direction :math:`\hat\delta`. With a fixed start, direction ``j`` (overlap ``m0`` on
        neuron ``j mod K``) starts at :math:`m_0\hat\delta_{j \bmod K}`; unequal starts make
        the law that of the first of the ``r`` directions to escape,
        :math:`P(T > t) = \prod_j P(T_j > t)`.
    ranks
        LoRA rank(s) ``r``.
    K
        Number of teacher neurons (when ``mu`` is a number).
    d, lr, batch, radius
        As in :class:`~loradyn.twolayer.model.TwoLayerConfig` (``radius`` = ``threshold``).
    a0, m0
        Initial entries of ``A`` (default :math:`1/\sqrt d`) and the fixed initial overlap
        (default: directions uniform on the sphere).
    norm
        Output normalization ``none``, ``1/K`` or ``1/sqrt(K)``.

    Returns
    -------
    TwoLayerEscape
        Quantiles and mean per rank, from the exact reduction to the single-index model
        (module docstring) and :func:`loradyn.escape.escape_distribution`.
    """
    if activation.strip().lower() not in ("linear", "x", "identity", "id"):
        raise LoradynError(f"the two-layer escape prediction covers the linear activation, not "
                           f"{activation!r}")
    if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 3:
        raise LoradynError(f"d = {d!r} is invalid: the dimension must be an integer >= 3")
    mus = np.atleast_1d(np.asarray(mu, dtype=float)).ravel()
    check_mu(mus)
    if mus.size > 1:
        if K is not None and K != mus.size:
            raise LoradynError(f"K = {K} but {mus.size} alignments were given")
        K = mus.size
    K = 1 if K is None else int(K)
    if K < 1:
        raise LoradynError(f"K = {K} is invalid: give K >= 1")
    mus = np.broadcast_to(mus, (K,)).astype(float) if mus.size == 1 else mus
    rk = [int(r) for r in np.atleast_1d(ranks)]
    if not rk or min(rk) < 1:
        raise LoradynError(f"ranks = {rk} is invalid: give ranks >= 1")
    c = norm_factor(norm, K) ** 2 * K
    a0v = 1.0 / math.sqrt(d) if a0 is None else float(a0)
    # the collective mismatch delta = sum_k (1 - mu_k) w*_k: the single-index teacher is its
    # direction and the effective alignment mu_eff = 1 - |delta| / sqrt(K)
    dvec = 1.0 - mus
    dn = float(np.linalg.norm(dvec))
    mu_eff = (float(mus[0]) if np.ptp(mus) == 0  # equal: exactly the common mu
              else float(np.clip(1.0 - dn / math.sqrt(K), 0.0, 1.0)))
    dhat = dvec / dn if dn > 0 else np.full(K, 1.0 / math.sqrt(K))

    def single(m0_j: float | None, perp2: float, starts: int) -> EscapeResult:
        if perp2 >= radius * radius:
            raise LoradynError(f"radius = {radius:g} is below the start's overlap off the "
                               "mismatch direction: choose a larger radius")
        return _single("linear", [mu_eff], d=d, lr=c * lr, batch=batch,
                       radius=math.sqrt(radius * radius - perp2), u0=a0v * math.sqrt(K),
                       m0=m0_j, starts=starts)

    laws: list[EscapeResult | _FirstOf] = []
    for r in rk:
        if m0 is None:  # uniform directions: iid starts, off-direction overlap (K - 1)/d
            laws.append(single(None, (K - 1) / d, r))
            continue
        # the fixed start: direction j has overlap m0 on neuron j mod K only
        m0_j = float(m0) * dhat[np.arange(r) % K]
        perp2_j = float(m0) ** 2 - m0_j ** 2
        if np.ptp(m0_j) == 0.0:  # equal alignments: r identical directions
            laws.append(single(float(m0_j[0]), float(perp2_j[0]), r))
        else:
            laws.append(_FirstOf(tuple(single(float(a), float(b), 1)
                                       for a, b in zip(m0_j, perp2_j, strict=True))))
    q = np.stack([law.quantiles[0] for law in laws])
    mean = np.array([law.mean[0] for law in laws])
    mu_out = float(mus[0]) if np.ptp(mus) == 0 else float(mu_eff)
    cfg = {"mu": [float(v) for v in mus], "K": K, "ranks": rk, "d": d, "lr": lr,
           "batch": batch, "radius": radius, "a0": a0v, "m0": m0, "norm": norm,
           "activation": "linear", "single_index_lr": c * lr, "single_index_mu": mu_eff,
           "mismatch_norm": dn}
    return TwoLayerEscape(mu_out, tuple(rk), q, mean, cfg, tuple(laws))


@dataclass(frozen=True)
class _FirstOf:
    r"""The first of independent directions to escape: :math:`P(T > t) = \prod_j P(T_j > t)`.

    ``parts`` are single-index laws (one direction each); ``quantiles`` (1, levels) and
    ``mean`` (1,) as in :class:`~loradyn.escape.EscapeResult`, ``cdf(0, steps)`` the same
    continuity-corrected CDF.
    """

    parts: tuple[EscapeResult, ...]

    def cdf(self, i: int, steps: np.ndarray) -> np.ndarray:
        t = np.asarray(steps, dtype=float)
        surv = np.ones(t.shape)
        for p in self.parts:
            surv = surv * (1.0 - np.nan_to_num(p.cdf(0, t), nan=0.0))
        return 1.0 - surv

    @property
    def quantiles(self) -> np.ndarray:
        # the first escape comes before each direction's own: bisection below the smallest
        # quantile of the parts, at every level
        levels = np.asarray(QUANTILES)
        hi = np.min(np.stack([p.quantiles[0] for p in self.parts]), axis=0)
        if not np.all(np.isfinite(hi)):
            return np.full((1, levels.size), np.nan)
        lo = np.zeros_like(hi)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            below = self.cdf(0, mid) < levels
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return (0.5 * (lo + hi))[None, :]

    @property
    def mean(self) -> np.ndarray:
        # E[T] = 0.5 + int_0^inf P(T_cont > s) ds (the steps carry the +1/2 of the parts)
        # (fixed starts give narrow laws: beyond 4 q95 + 20 of the slowest part the
        # survival of the first escape is negligible)
        top = 4.0 * float(np.max([p.quantiles[0, -1] for p in self.parts])) + 20.0
        if not np.isfinite(top):
            return np.array([np.nan])
        s = np.linspace(0.0, top, 4001)
        surv = 1.0 - self.cdf(0, s + 0.5)
        return np.array([0.5 + float(np.sum(0.5 * (surv[1:] + surv[:-1]) * np.diff(s)))])
