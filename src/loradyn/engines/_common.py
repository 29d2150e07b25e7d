"""Helpers shared by the SGD engines: random streams, labels, per-sample gradients."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import RunConfig
from ..population import Problem

Array = np.ndarray

#: Stream tags: engines never share random numbers by accident.
STREAM_REDUCED = 1
STREAM_DENSE = 2


def seed_sequence(stream: int, seed: int, mu: float) -> np.random.SeedSequence:
    """The random stream of one trajectory: a function of ``(engine, seed, mu)`` only.

    A trajectory's numbers therefore do not depend on the other ``mu`` values of the run,
    on their order, or on how trajectories are grouped in memory.
    """
    bits = int(np.asarray(float(mu) + 0.0, dtype=np.float64).view(np.int64))
    return np.random.SeedSequence([int(stream), int(seed), bits])


def trajectory_rngs(config: RunConfig, stream: int) -> list[np.random.Generator]:
    """One :class:`numpy.random.Generator` per ``(mu, seed)``, flat in ``mu``-major order."""
    return [
        np.random.Generator(np.random.PCG64(seed_sequence(stream, int(s), float(mu))))
        for mu in config.mus
        for s in config.seed_list
    ]


class Labels:
    """Targets of a (possibly two-stage) run and the per-sample loss derivative.

    ``g(lam, zs, stage2)`` returns :math:`\\partial\\ell/\\partial\\lambda` for each sample:
    MSE :math:`(\\sigma(\\lambda) - y)\\sigma'(\\lambda)`, correlation
    :math:`-y\\,\\sigma'(\\lambda)`, with :math:`y = T(\\phi(z^*))` of stage 1 or 2 per
    trajectory (``stage2`` is a boolean array over trajectories, or ``None``).
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.p1: Problem = config.problem(config.label)
        self.p2: Problem | None = (
            config.problem(config.switch_label) if config.switch_label is not None else None
        )
        self.student = self.p1.student
        self.mse = config.loss == "mse"

    def y(self, zs: Array, stage2: Array | None) -> Array:
        r"""Labels :math:`y = T(\phi(z^*))`, with the stage-2 ``T`` where ``stage2`` is set."""
        if self.p2 is None or stage2 is None or not np.any(stage2):
            return self.p1.target.y(zs)
        if np.all(stage2):
            return self.p2.target.y(zs)
        sel = stage2.reshape(stage2.shape + (1,) * (zs.ndim - stage2.ndim))
        return np.where(sel, self.p2.target.y(zs), self.p1.target.y(zs))

    def g(self, lam: Array, zs: Array, stage2: Array | None) -> Array:
        r""":math:`g = \partial\ell/\partial\lambda` per sample (see the class docstring)."""
        y = self.y(zs, stage2)
        ds = self.student.df(lam)
        if self.mse:
            return (self.student.f(lam) - y) * ds
        return -y * ds


class Schedule:
    """Two-stage switching state over a flat array of trajectories."""

    def __init__(self, config: RunConfig, n: int) -> None:
        self.config = config
        self.on = config.two_stage
        self.stage2 = np.zeros(n, dtype=bool) if self.on else None
        self.switch_step = np.full(n, -1, dtype=np.int64)
        self.new: Array | None = None

    def realign(self, u: Array, m: Array, p: Array | None, mu: Array) -> Array:
        """``u`` with the trajectories that switched at this step re-aligned when
        ``config.switch_u`` is set: ``u = switch_u * sign(w . w0)``, where
        ``w . w0 = mu m (+ sqrt(1 - mu^2) p)`` (the pre-trained weight, known without the
        teacher)."""
        su = self.config.switch_u
        if su is None or self.new is None or not np.any(self.new):
            return u
        ww0 = mu * m
        if p is not None:
            ww0 = ww0 + np.sqrt(np.maximum(1.0 - mu * mu, 0.0)) * p
        sign = np.where(ww0 >= 0, 1.0, -1.0)
        return np.where(self.new, su * sign, u)

    def update(self, step: int, m: Array) -> Array | None:
        """Switch trajectories whose trigger fired before the update made at ``step``."""
        if not self.on:
            return None
        c = self.config
        trig = np.zeros_like(self.stage2)
        if c.switch_step is not None and step >= c.switch_step:
            trig[:] = True
        if c.switch_m is not None:
            trig |= np.abs(m) >= c.switch_m
        new = trig & ~self.stage2
        self.new = new
        if np.any(new):
            self.switch_step[new] = step
            self.stage2 |= new
        return self.stage2


def initial_overlaps(
    config: RunConfig, rng: np.random.Generator, misaligned: bool
) -> tuple[float, float]:
    r"""Draw :math:`(m_0, p_0)` of a :math:`w_0` uniform on the sphere (exact, O(1)).

    With :math:`g_1, g_2 \sim N(0,1)` and :math:`\chi^2` independent,
    :math:`m_0 = g_1/\sqrt{g_1^2 + \chi^2_{d-1}}` (aligned) and
    :math:`(m_0, p_0) = (g_1, g_2)/\sqrt{g_1^2 + g_2^2 + \chi^2_{d-2}}` (misaligned). A
    fixed ``m0`` (``p0``) keeps the other coordinate uniform on the orthogonal sphere.
    """
    d = config.d
    m0, p0 = config.m0, config.p0
    if not misaligned:
        if m0 is not None:
            return float(m0), 0.0
        g1 = rng.standard_normal()
        return float(g1 / np.sqrt(g1 * g1 + rng.chisquare(d - 1))), 0.0
    if m0 is not None and p0 is not None:
        return float(m0), float(p0)
    g1, g2 = rng.standard_normal(2)
    if m0 is None and p0 is None:
        nrm = np.sqrt(g1 * g1 + g2 * g2 + rng.chisquare(d - 2))
        return float(g1 / nrm), float(g2 / nrm)
    rest = rng.chisquare(d - 2)
    if m0 is not None:
        return float(m0), float(np.sqrt(1 - m0 * m0) * g2 / np.sqrt(g2 * g2 + rest))
    return float(np.sqrt(1 - p0 * p0) * g1 / np.sqrt(g1 * g1 + rest)), float(p0)  # type: ignore[operator]


def tick(
    progress: Callable[[float, str], None] | None,
    step: int,
    total: int,
    where: tuple[int, int],
    n_here: int,
) -> None:
    """Report progress about every 1% of the steps of a group of ``n_here`` trajectories.

    ``where = (a, n)``: the group starts at trajectory ``a`` of ``n``; the fraction is
    ``(a + n_here * step / total) / n``.
    """
    if progress is None:
        return
    if step % max(1, total // 100) == 0:
        a, n = where
        progress(min(1.0, (a + n_here * step / total) / n), f"step {step}/{total}")
