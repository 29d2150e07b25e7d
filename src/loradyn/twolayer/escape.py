r"""Finite-``d`` law of the escape step of the two-layer LoRA model, per rank (App. K).

Linear activation, equal alignments :math:`\mu_k = \mu`. With :math:`\sigma` linear the
student output is :math:`\nu\sum_k w_k\cdot x = \nu(\mu\sum_k w^*_k + \sum_j \alpha_j v_j)
\cdot x` with :math:`\alpha_j = \sum_k A_{kj}`, so the residual is

.. math::

    \hat y - y = \nu\sqrt K\,\big[(\mu - 1)\,\hat w\cdot x + \textstyle\sum_j u_j\, v_j\cdot x\big],
    \qquad \hat w = \frac{1}{\sqrt K}\sum_k w^*_k,\quad u_j = \alpha_j/\sqrt K.

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

from ..errors import LoradynError
from ..escape import QUANTILES, EscapeResult
from ..escape import escape_distribution as _single
from .model import norm_factor


@dataclass(frozen=True)
class TwoLayerEscape:
    """Predicted escape-step law per rank: ``quantiles[rank, level]`` and ``mean[rank]``."""

    mu: float
    ranks: tuple[int, ...]
    quantiles: np.ndarray
    mean: np.ndarray
    config: dict
    results: tuple[EscapeResult, ...]

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
        The common alignment, or a list of ``K`` equal :math:`\mu_k`.
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
    mus = np.atleast_1d(np.asarray(mu, dtype=float))
    if mus.size > 1:
        if K is not None and K != mus.size:
            raise LoradynError(f"K = {K} but {mus.size} alignments were given")
        if np.ptp(mus) > 0:
            raise LoradynError("the two-layer escape prediction needs equal alignments mu_k: "
                               "give one mu")
        K = mus.size
    K = 1 if K is None else int(K)
    if K < 1:
        raise LoradynError(f"K = {K} is invalid: give K >= 1")
    rk = [int(r) for r in np.atleast_1d(ranks)]
    if not rk or min(rk) < 1:
        raise LoradynError(f"ranks = {rk} is invalid: give ranks >= 1")
    c = norm_factor(norm, K) ** 2 * K
    a0v = 1.0 / math.sqrt(d) if a0 is None else float(a0)
    if m0 is None:
        perp2, m0s = (K - 1) / d, None
    else:
        perp2, m0s = float(m0) ** 2 * (1.0 - 1.0 / K), float(m0) / math.sqrt(K)
    if perp2 >= radius * radius:
        raise LoradynError(f"radius = {radius:g} is below the start's overlap off the mismatch "
                           "direction: choose a larger radius")
    r_eff = math.sqrt(radius * radius - perp2)
    res = tuple(_single("linear", [float(mus[0])], d=d, lr=c * lr, batch=batch, radius=r_eff,
                        u0=a0v * math.sqrt(K), m0=m0s, starts=r) for r in rk)
    q = np.stack([r.quantiles[0] for r in res])
    mean = np.array([r.mean[0] for r in res])
    cfg = {"mu": float(mus[0]), "K": K, "ranks": rk, "d": d, "lr": lr, "batch": batch,
           "radius": radius, "a0": a0v, "m0": m0, "norm": norm, "activation": "linear",
           "single_index_lr": c * lr, "single_index_radius": r_eff}
    return TwoLayerEscape(float(mus[0]), tuple(rk), q, mean, cfg, res)
