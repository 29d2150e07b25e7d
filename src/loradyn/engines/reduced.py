r"""Exact reduced simulation of one-pass SGD: O(batch) work per step, independent of d.

Derivation (theory.md section 7, extended to the misaligned model)
------------------------------------------------------------------
Fresh samples :math:`x_i \sim N(0, I_d)` are isotropic. Let :math:`S` be the span of the
fixed directions and of the current weight: :math:`S = \mathrm{span}\{w^*, w\}` (aligned,
:math:`k = 2`) or :math:`\mathrm{span}\{w^*, v, w\}` (misaligned, :math:`k = 3`). Take the
orthonormal basis :math:`e_1 = w^*`, (:math:`e_2 = v`), and :math:`e_k = (w - m w^* [- p v])/r`
with :math:`r = \sqrt{1 - m^2 [- p^2]}`. Write :math:`\xi_{ij} = e_j\cdot x_i`; these are iid
:math:`N(0,1)`, independent of the components :math:`x_i^\perp` orthogonal to :math:`S`.
Every scalar the step needs is a function of the :math:`\xi`:

.. math::

    z^*_i = \xi_{i1},\quad z_i = w\cdot x_i = m\xi_{i1} [+ p\xi_{i2}] + r\xi_{ik},\quad
    \lambda_i = \mu z^*_i [+ \sqrt{1-\mu^2}\,\xi_{i2}] + u z_i,

so the per-sample derivative :math:`g_i = \partial\ell/\partial\lambda(\lambda_i, z^*_i)` is
too. The weight gradient of the batch loss is :math:`G = \sum_i c_i x_i` with
:math:`c_i = u g_i / B`. Its components in :math:`S` are :math:`A = \sum_i c_i\xi_{i1}`
(:math:`= w^*\cdot G`), (:math:`V = \sum_i c_i\xi_{i2} = v\cdot G`),
:math:`E = \sum_i c_i\xi_{ik}`; hence :math:`B_w = w\cdot G = mA [+ pV] + rE`. Its part
orthogonal to :math:`S` is :math:`\sum_i c_i x_i^\perp`, which given the :math:`c_i` is
:math:`N(0, \sum_i c_i^2\, I_{d-k})`: its squared norm is
:math:`(\sum_i c_i^2)\,\chi^2_{d-k}`, drawn exactly in O(1), and by symmetry its
direction does not matter for the next step. Therefore

.. math::

    |G|^2 = A^2 [+ V^2] + E^2 + \Big(\sum_i c_i^2\Big)\chi^2_{d-k}.

Spherical step :math:`w' = (w - \eta P_w G)/N` with :math:`N^2 = 1 + \eta^2(|G|^2 - B_w^2)`:

.. math::

    m' = \frac{m - \eta(A - m B_w)}{N},\qquad p' = \frac{p - \eta(V - p B_w)}{N}.

Renormalized step :math:`w' = (w - \eta G)/N` with :math:`N^2 = 1 - 2\eta B_w + \eta^2|G|^2`:
:math:`m' = (m - \eta A)/N`, :math:`p' = (p - \eta V)/N`. The scale moves by
:math:`u' = u - \eta\,\frac1B\sum_i g_i z_i`.

The new weight lies in :math:`\mathrm{span}\{S, G\}`; by the rotation invariance of the
fresh samples about :math:`w^*` (and :math:`v`), the law of the next step depends only
on :math:`(u', m'[, p'])`. The sequence of :math:`(u, m[, p])` thus has exactly the law
of the dense algorithm's, for every ``d`` — only the floating-point rounding differs.

Gram sampler (O(1) per step)
----------------------------
When :math:`g` is linear in the :math:`\xi` (linear teacher and student without constant
term, identity label, MSE or correlation loss), write :math:`g_i = \alpha\cdot\xi_i` and
:math:`z_i = \beta\cdot\xi_i`. Then every sum above is a quadratic form of the Gram
matrix :math:`W = \sum_i \xi_i\xi_i^\top \sim \mathrm{Wishart}_k(B, I)`:
:math:`(A, [V,] E) = (u/B) W\alpha`, :math:`\sum c_i^2 = (u/B)^2\alpha^\top W\alpha`,
:math:`\sum g_i z_i = \alpha^\top W\beta`. :math:`W = LL^\top` is drawn by Bartlett's
decomposition (:math:`L_{jj}^2 \sim \chi^2_{B-j+1}`, :math:`L_{jl} \sim N(0,1)` for
:math:`j > l`), so a step costs O(1) and is still exact in law.

Random streams: each ``(mu, seed)`` has its own generator (see
:func:`loradyn.engines._common.seed_sequence`); numbers are drawn in fixed blocks of
steps, so results do not depend on the other trajectories of the run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import RunConfig, linear_coefficient
from ._common import (
    STREAM_REDUCED,
    Labels,
    Schedule,
    initial_overlaps,
    tick,
    trajectory_rngs,
)
from ._layout import EngineOutput, GroupCollector, StepTracker

Array = np.ndarray

#: Floats drawn per trajectory and block (samples sampler) and per memory group.
_BLOCK_FLOATS = 1 << 16
_GROUP_FLOATS = 1 << 23
_GRAM_BLOCK = 1024


def gram_applies(config: RunConfig) -> bool:
    """True when the per-sample gradient is linear in the projections (Gram sampler exact)."""
    return config.gram_applies()


def _sampler(config: RunConfig) -> str:
    return config.resolved_sampler()


def sphere_step(
    config: RunConfig,
    m: Array,
    p: Array | None,
    r: Array,
    A: Array,
    V: Array | None,
    E: Array,
    S2: Array,
    chi: Array,
) -> tuple[Array, Array | None]:
    """Update of the overlaps from the in-span gradient components (module docstring)."""
    eta = config.lr
    Bw = m * A + r * E
    G2 = A * A + E * E + S2 * chi
    if p is not None and V is not None:
        Bw = Bw + p * V
        G2 = G2 + V * V
    if config.update == "spherical":
        N = np.sqrt(1.0 + eta * eta * np.maximum(G2 - Bw * Bw, 0.0))
        m_new = (m - eta * (A - m * Bw)) / N
        p_new = None if p is None else (p - eta * (V - p * Bw)) / N
    else:
        N = np.sqrt(np.maximum(1.0 - 2.0 * eta * Bw + eta * eta * G2, 0.0))
        m_new = (m - eta * A) / N
        p_new = None if p is None else (p - eta * V) / N
    m_new = np.clip(m_new, -1.0, 1.0)
    if p_new is not None:
        p_new = np.clip(p_new, -1.0, 1.0)
    return m_new, p_new


def _chi2(rng: np.random.Generator, df: int, size: int) -> Array:
    """``size`` draws of chi2(df); chi2(0) is identically 0 (``d = k``: no orthogonal part)."""
    if df <= 0:
        return np.zeros(size)
    return rng.chisquare(df, size=size)


def _radius(m: Array, p: Array | None) -> Array:
    q = 1.0 - m * m if p is None else 1.0 - m * m - p * p
    return np.sqrt(np.maximum(q, 0.0))


def run_reduced(
    config: RunConfig, progress: Callable[[float, str], None] | None = None
) -> EngineOutput:
    """Run the reduced engine on every ``(mu, seed)`` of ``config`` (see module docstring)."""
    mis = config.pretraining == "misaligned"
    k = 3 if mis else 2
    sampler = _sampler(config)
    rngs = trajectory_rngs(config, STREAM_REDUCED)
    n_mu, n_seed = config.mus.size, config.seeds
    n = n_mu * n_seed
    mu_flat = np.repeat(config.mus, n_seed)
    if sampler == "gram":
        K = _GRAM_BLOCK
        per_traj = K * (k * k + 2)
    else:
        K = int(max(1, min(64, _BLOCK_FLOATS // (k * config.batch))))
        per_traj = K * k * config.batch
    group = int(max(1, _GROUP_FLOATS // per_traj))
    out = GroupCollector(config, mis)
    for a in range(0, n, group):
        sl = slice(a, min(n, a + group))
        fn = _run_group_gram if sampler == "gram" else _run_group_samples
        tr, sched = fn(config, rngs[sl], mu_flat[sl], K, progress, (a, n))
        out.add(sl, tr, sched.switch_step)
    return out.output("numpy", {"sampler": sampler})


def _init(config: RunConfig, rngs: list[np.random.Generator], mis: bool):
    n = len(rngs)
    m = np.empty(n)
    p = np.zeros(n) if mis else None
    for t, g in enumerate(rngs):
        m0, p0 = initial_overlaps(config, g, mis)
        m[t] = m0
        if p is not None:
            p[t] = p0
    u = np.full(n, float(config.u0))
    return u, m, p


def _accept(config, tr, step, u, m, p, r, grads, chi, gz):
    """One exact step from the batch statistics, with divergence check and recording.

    ``grads = (A, V, E, S2)`` are the projections of the weight gradient (theory.md
    section 7); ``gz = sum_i g_i z_i``, so ``u' = u - lr * gz / batch``. Trajectories whose
    candidate state is not finite are frozen by ``tr.check``.
    """
    A, V, E, S2 = grads
    m_new, p_new = sphere_step(config, m, p, r, A, V, E, S2, chi)
    u_new = u - config.lr * gz / config.batch
    mis = p is not None
    ok = tr.check(step, [u_new, m_new] + ([p_new] if mis else []))
    u = np.where(ok, u_new, u)
    m = np.where(ok, m_new, m)
    if mis:
        p = np.where(ok, p_new, p)
    tr.record(step, u, m, p)
    return u, m, p


def _run_group_samples(config, rngs, mu, K, progress, where):
    mis = config.pretraining == "misaligned"
    k = 3 if mis else 2
    n, B, d = len(rngs), config.batch, config.d
    labels = Labels(config)
    sched = Schedule(config, n)
    tr = StepTracker(config, n, mis)
    u, m, p = _init(config, rngs, mis)
    nu = np.sqrt(np.maximum(1.0 - mu * mu, 0.0))
    buf = np.empty((n, K, k, B))
    chi = np.empty((n, K))
    tr.record(0, u, m, p)
    with np.errstate(all="ignore"):
        for s in range(config.steps):
            j = s % K
            if j == 0:
                for t, g in enumerate(rngs):
                    g.standard_normal(out=buf[t])
                    chi[t] = _chi2(g, d - k, K)
            st2 = sched.update(s, m)
            u = sched.realign(u, m, p if mis else None, mu)
            Z = buf[:, j]
            x1 = Z[:, 0]
            xk = Z[:, k - 1]
            r = _radius(m, p)
            z = m[:, None] * x1 + r[:, None] * xk
            lam = mu[:, None] * x1
            if mis:
                x2 = Z[:, 1]
                z += p[:, None] * x2
                lam = lam + nu[:, None] * x2
            lam = lam + u[:, None] * z
            gv = labels.g(lam, x1, st2)
            S1 = np.einsum("ij,ij->i", gv, x1)
            Sk = np.einsum("ij,ij->i", gv, xk)
            Sgg = np.einsum("ij,ij->i", gv, gv)
            cu = u / B
            A, E, S2 = cu * S1, cu * Sk, cu * cu * Sgg
            if mis:
                S2v = np.einsum("ij,ij->i", gv, x2)
                V = cu * S2v
                gz = m * S1 + p * S2v + r * Sk
            else:
                V = None
                gz = m * S1 + r * Sk
            u, m, p = _accept(config, tr, s + 1, u, m, p, r, (A, V, E, S2), chi[:, j], gz)
            tick(progress, s + 1, config.steps, where, n)
    return tr, sched


def _bartlett(rng: np.random.Generator, K: int, k: int, B: int, d: int) -> tuple[Array, Array]:
    """``K`` Wishart_k(B, I) matrices (Bartlett) and ``K`` chi2(d-k) draws."""
    L = np.zeros((K, k, k))
    diag = np.sqrt(rng.chisquare(B - np.arange(k), size=(K, k)))
    L[:, np.arange(k), np.arange(k)] = diag
    il = np.tril_indices(k, -1)
    L[:, il[0], il[1]] = rng.standard_normal((K, il[0].size))
    W = L @ np.swapaxes(L, -1, -2)
    return W, _chi2(rng, d - k, K)


def _run_group_gram(config, rngs, mu, K, progress, where):
    mis = config.pretraining == "misaligned"
    k = 3 if mis else 2
    n, B, d = len(rngs), config.batch, config.d
    if B < k:
        # Bartlett needs B >= k degrees of freedom; fall back to explicit samples.
        return _run_group_samples(config, rngs, mu, K, progress, where)
    s1 = linear_coefficient(config.student)
    t1 = linear_coefficient(config.teacher)
    sched = Schedule(config, n)  # identity -> identity switch changes nothing but is recorded
    tr = StepTracker(config, n, mis)
    u, m, p = _init(config, rngs, mis)
    nu = np.sqrt(np.maximum(1.0 - mu * mu, 0.0))
    W = np.empty((n, K, k, k))
    chi = np.empty((n, K))
    tr.record(0, u, m, p)
    corr = config.loss == "correlation"
    with np.errstate(all="ignore"):
        for s in range(config.steps):
            j = s % K
            if j == 0:
                for t, g in enumerate(rngs):
                    W[t], chi[t] = _bartlett(g, K, k, B, d)
            sched.update(s, m)
            u = sched.realign(u, m, p if mis else None, mu)
            r = _radius(m, p)
            alpha = np.zeros((n, k))
            beta = np.empty((n, k))
            beta[:, 0] = m
            beta[:, k - 1] = r
            if corr:
                alpha[:, 0] = -s1 * t1
            else:
                alpha[:, 0] = s1 * (s1 * (mu + u * m) - t1)
                alpha[:, k - 1] = s1 * s1 * u * r
                if mis:
                    alpha[:, 1] = s1 * s1 * (nu + u * p)
            if mis:
                beta[:, 1] = p
            Wj = W[:, j]
            Wa = np.einsum("nij,nj->ni", Wj, alpha)
            cu = u / B
            A = cu * Wa[:, 0]
            E = cu * Wa[:, k - 1]
            V = cu * Wa[:, 1] if mis else None
            S2 = cu * cu * np.einsum("ni,ni->n", alpha, Wa)
            gz = np.einsum("ni,ni->n", beta, Wa)
            u, m, p = _accept(config, tr, s + 1, u, m, p, r, (A, V, E, S2), chi[:, j], gz)
            tick(progress, s + 1, config.steps, where, n)
    return tr, sched
