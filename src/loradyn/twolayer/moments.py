r"""Gaussian moments of the two-layer model for any activation (pairs and quadruples).

Every population quantity of the two-layer model is an expectation over the jointly
Gaussian pre-activations :math:`g = (\lambda_1..\lambda_K, z^*_1..z^*_K)` with covariance
:math:`\Sigma = \begin{pmatrix} Q & P \\ P^\top & I_K\end{pmatrix}`.

**Pairs.** For a centred pair ``(a, b)`` with variances ``qa, qb`` and covariance ``c`` and two
functions ``f, g`` (the student :math:`\sigma` or the teacher's label function
:math:`t = T\circ\phi`), :func:`pair` returns

.. math::

    E = E[f(a) g(b)],\quad E_c = \partial_c E = E[f'(a) g'(b)],\quad
    E_{q_a} = \partial_{q_a} E = \frac{E[a f'(a) g(b)] - c\,E_c}{2 q_a},\quad
    E_{q_b} = \frac{E[f(a)\, b\, g'(b)] - c\,E_c}{2 q_b}.

The first derivative in ``c`` is Price's theorem; the one in ``qa`` is
:math:`\tfrac12 E[f''(a) g(b)]` rewritten by Gaussian integration by parts,
:math:`E[a f'(a) g(b)] = q_a E[f''(a) g(b)] + c\,E[f'(a) g'(b)]`, so that only first
derivatives appear (a kink such as ReLU's is handled by the split rule, not by a delta
function). The expectations are 2-D quadrature on the rule of :func:`loradyn.gaussian.rule_2d`
(Gauss-Hermite, or piecewise Gauss-Legendre split at the kinks). Exact identities replace it
for the pairs that have one (``method='auto'``):

- linear: :math:`E = c`; ``he2-norm``: :math:`E = c^2 + (q_a - 1)(q_b - 1)/2`; mixed: 0;
- erf: :math:`E = \tfrac2\pi\arcsin\frac{2c}{\sqrt{(1+2q_a)(1+2q_b)}}`,
  :math:`E_c = \tfrac4\pi\,[(1+2q_a)(1+2q_b) - 4c^2]^{-1/2}`,
  :math:`E_{q_a} = -\tfrac4\pi\, c\,(1+2q_a)^{-1}[(1+2q_a)(1+2q_b) - 4c^2]^{-1/2}`;
- relu (arc-cosine kernel, :math:`\theta = \arccos(c/\sqrt{q_a q_b})`):
  :math:`E = \frac{\sqrt{q_aq_b - c^2} + (\pi-\theta)c}{2\pi}`,
  :math:`E_c = \frac{\pi - \theta}{2\pi}`, :math:`E_{q_a} = \frac{\sqrt{q_aq_b - c^2}}{4\pi q_a}`.

**Quadruples** (the finite-step term). With the residual
:math:`\rho = \hat y - y = \nu\sum_m s_m u_m(g_m)` (:math:`u_m = \sigma`, :math:`s_m = 1` for a
student pre-activation, :math:`u_m = t`, :math:`s_m = -1` for a teacher one),

.. math::

    H_{kl} = \nu^2 E[\rho^2\sigma'(\lambda_k)\sigma'(\lambda_l)]
           = \nu^4\sum_{m,n} s_m s_n\,E[\sigma'(g_k)\sigma'(g_l)u_m(g_m)u_n(g_n)],

a sum of expectations over at most four pre-activations. :func:`noise_quadrature` computes
each with a tensor Gauss-Hermite rule in 4-D (``g = L xi``, ``L L^T`` the 4 x 4 covariance,
eigen-factor, so singular covariances are fine), exact for polynomial activations of
total degree :math:`\le 2n - 1`. For erf an exact identity holds:
:math:`\sigma'(x) = \tfrac{2}{\sqrt\pi}e^{-x^2}` tilts the Gaussian,
:math:`E[e^{-g^\top\Lambda g}F(g)] = \det(I + 2\Sigma\Lambda)^{-1/2}E_{\Sigma'}[F]` with
:math:`\Sigma' = (I + 2\Sigma\Lambda)^{-1}\Sigma` (:math:`\Lambda = e_ke_k^\top + e_le_l^\top`),
and :math:`E_{\Sigma'}[\mathrm{erf}\,\mathrm{erf}]` is the arcsine formula above
(:func:`noise_erf`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..activations import get_activation, make_target
from ..gaussian import (
    L_CUT,
    NEAR_KINK,
    Rule2D,
    expect_1d,
    hermite_rule,
    rule_1d,
    rule_2d,
    split_rule,
)

Array = np.ndarray
Fn1 = Callable[[Array], Array]
DEFAULT_NODES = 48
NOISE_NODES = 8  # Gauss-Hermite nodes per dimension of the 4-D rule (smooth activations)
NOISE_NODES_KINKED = 14  # ... when an activation has a kink (slow, O(1/n), convergence)
_TINY = 1e-13


@dataclass(frozen=True)
class Fn:
    """A scalar function with its derivative and kinks (student or teacher label function)."""

    name: str
    f: Fn1
    df: Fn1
    kinks: tuple[float, ...] = ()
    d2f: Fn1 | None = None
    exact: bool = True  # a plain registered activation (exact pair identities may apply)


def _lookup(name: str):
    # registered names (built-in or user, possibly re-registered) straight from the registry;
    # Hermite names and sums are parsed once (they cannot change)
    from ..activations import registered_activation

    return registered_activation(name) or _parsed(name)


@lru_cache(maxsize=128)
def _parsed(name: str):
    return get_activation(name)


def student_fn(name: str) -> Fn:
    """The student activation ``name`` as an :class:`Fn`."""
    a = _lookup(name)
    return Fn(a.name, a.f, a.df, tuple(a.kinks), a.d2f, True)


def target_fn(teacher: str, label: str | None = None) -> Fn:
    r"""The teacher's label function :math:`t = T\circ\phi` (``label``: identity or square)."""
    tg = make_target(_lookup(teacher), label)
    if tg.label.name == "identity":
        a = tg.teacher
        return Fn(a.name, a.f, a.df, tuple(a.kinks), a.d2f, True)
    return Fn(tg.name, tg.y, tg.dy, tuple(tg.kinks), None, False)


@lru_cache(maxsize=64)
def _means(f: Fn, nodes: int) -> tuple[float, float]:
    kb = np.asarray([list(f.kinks)]) if f.kinks else None
    m1 = float(np.ravel(expect_1d(f.f, kb, nodes))[0])
    m2 = float(np.ravel(expect_1d(lambda z: f.f(z) ** 2, kb, nodes))[0])
    return m1, m2


def gaussian_means(f: Fn, nodes: int = 64) -> tuple[float, float]:
    r""":math:`(E[f(z)], E[f(z)^2])` for :math:`z \sim N(0, 1)` (1-D quadrature, kink-split)."""
    return _means(f, max(int(nodes), 64))


# --------------------------------------------------------------------------------------
# exact pair identities


def _lin(qa, qb, c):
    one = np.ones_like(c)
    return c, one, 0.0 * one, 0.0 * one


def _he2(qa, qb, c):
    return c * c + 0.5 * (qa - 1) * (qb - 1), 2.0 * c, 0.5 * (qb - 1), 0.5 * (qa - 1)


def _zero(qa, qb, c):
    z = np.zeros_like(c)
    return z, z, z, z


def _erf(qa, qb, c):
    u, v = 1.0 + 2.0 * qa, 1.0 + 2.0 * qb
    uv = u * v
    root = np.sqrt(np.clip(uv - 4.0 * c * c, 1e-300, None))
    x = np.clip(2.0 * c / np.sqrt(uv), -1.0, 1.0)
    E = (2.0 / math.pi) * np.arcsin(x)
    Ec = (4.0 / math.pi) / root
    return E, Ec, -(4.0 / math.pi) * c / (u * root), -(4.0 / math.pi) * c / (v * root)


def _relu(qa, qb, c):
    n = np.sqrt(qa * qb)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.clip(np.where(n > 0, c / np.where(n > 0, n, 1.0), 0.0), -1.0, 1.0)
        th = np.arccos(rho)
        root = np.sqrt(np.clip(qa * qb - c * c, 0.0, None))
        E = (root + (math.pi - th) * c) / (2 * math.pi)
        Ec = (math.pi - th) / (2 * math.pi)
        Da = np.where(qa > 0, root / (4 * math.pi * np.where(qa > 0, qa, 1.0)), np.inf)
        Db = np.where(qb > 0, root / (4 * math.pi * np.where(qb > 0, qb, 1.0)), np.inf)
    return E, Ec, Da, Db


_EXACT = {
    ("linear", "linear"): _lin, ("he2-norm", "he2-norm"): _he2,
    ("linear", "he2-norm"): _zero, ("he2-norm", "linear"): _zero,
    ("erf", "erf"): _erf, ("relu", "relu"): _relu,
}


def has_exact_pair(f: Fn, g: Fn) -> bool:
    """True when :func:`pair` has an exact identity for ``(f, g)``."""
    return f.exact and g.exact and (f.name, g.name) in _EXACT


# --------------------------------------------------------------------------------------
# quadrature


def rule_pair(c: Array, s: Array, outer_kinks: tuple[float, ...],
              inner_kinks: tuple[float, ...], n: int) -> Rule2D:
    r"""2-D rule for :math:`E[F(z, \eta)]` with kinks of ``F`` at ``z = k`` (``outer_kinks``)
    and at :math:`b = c z + s\eta = k'` (``inner_kinks``).

    :func:`loradyn.gaussian.rule_2d` with one change: the inner (``eta``) rule is also split at
    0, so that a kink pushed outside ``[-L, L]`` (small ``s``) does not leave a single
    Gauss-Legendre panel of width ``2L`` for a unit Gaussian (an error of ~1e-5 at
    ``n = 48``).
    """
    c, s = np.broadcast_arrays(np.asarray(c, dtype=float), np.asarray(s, dtype=float))
    if not outer_kinks and not inner_kinks:
        return rule_2d(c, s, (), (), n)
    batch = c.shape
    ob = [np.full(batch, k) for k in outer_kinks]
    with np.errstate(divide="ignore", invalid="ignore"):
        cnz = np.abs(c) > 1e-300
        csafe = np.where(cnz, c, 1.0)
        width = np.where(cnz, NEAR_KINK * np.abs(s) / np.abs(csafe), 2 * L_CUT)
        width = np.minimum(width, 2 * L_CUT)
        for k in inner_kinks:
            centre = np.where(cnz, k / csafe, 0.0)
            ob.extend([centre, centre - width, centre + width])
    zo, wo = split_rule(np.stack(ob, axis=-1), n)
    if inner_kinks:
        with np.errstate(divide="ignore", invalid="ignore"):
            pos = np.abs(s) > 1e-300
            sb = np.where(pos, s, 1.0)[..., None, None]
            ks = np.asarray(inner_kinks, dtype=float)
            ib = (ks - c[..., None, None] * zo[..., :, None]) / sb
            ib = np.where(pos[..., None, None], ib, 0.0)
        ib = np.concatenate([ib, np.zeros(ib.shape[:-1] + (1,))], axis=-1)
        zi, wi = split_rule(ib, n)
    else:
        x, w = hermite_rule(n)
        zi = np.broadcast_to(x, zo.shape + (n,))
        wi = np.broadcast_to(w, zo.shape + (n,))
    return Rule2D(zo[..., :, None], zi, wo[..., :, None] * wi)


def _pair_quad(f: Fn, g: Fn, qa: Array, qb: Array, c: Array, n: int):
    sa = np.sqrt(np.clip(qa, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        cz = np.where(sa > 0, c / np.where(sa > 0, sa, 1.0), 0.0)
    s2 = qb - cz * cz
    # rounding of an exactly degenerate pair (b = a scaled, e.g. the diagonal of Q)
    s = np.sqrt(np.where(s2 <= 1e-12 * np.abs(qb), 0.0, s2))

    def moments(rule, sa_, cz_, s_):
        a = sa_[..., None, None] * rule.zs
        b = cz_[..., None, None] * rule.zs + s_[..., None, None] * rule.eta
        fa, dfa, gb, dgb = f.f(a), f.df(a), g.f(b), g.df(b)
        return (rule.expect(fa * gb), rule.expect(dfa * dgb), rule.expect(a * dfa * gb),
                rule.expect(fa * b * dgb), rule.expect(gb))

    if all(k == 0.0 for k in f.kinks):
        out = moments(rule_pair(cz, s, f.kinks, g.kinks, n), sa, cz, s)
    else:
        out = tuple(np.empty(qa.shape) for _ in range(5))
        for idx in np.ndindex(qa.shape):
            ks = tuple(k / sa[idx] for k in f.kinks) if sa[idx] > 0 else ()
            one = moments(rule_pair(cz[idx], s[idx], ks, g.kinks, n), np.asarray(sa[idx]),
                          np.asarray(cz[idx]), np.asarray(s[idx]))
            for o, v in zip(out, one, strict=True):
                o[idx] = v
    E, Ec, Ea, Eb, Eg = out
    with np.errstate(divide="ignore", invalid="ignore"):
        Da = np.where(qa > _TINY, (Ea - c * Ec) / (2 * np.where(qa > _TINY, qa, 1.0)), np.nan)
        Db = np.where(qb > _TINY, (Eb - c * Ec) / (2 * np.where(qb > _TINY, qb, 1.0)), np.nan)
    # a vanishing variance: d/dq E = E[f''(0)] E[g(b)] / 2 (needs f'')
    if np.any(qa <= _TINY) and f.d2f is not None:
        Da = np.where(qa <= _TINY, 0.5 * float(np.ravel(f.d2f(np.zeros(1)))[0]) * Eg, Da)
    return E, Ec, Da, Db


def pair(
    f: Fn, g: Fn, qa: Array | float, qb: Array | float, c: Array | float, *,
    method: str = "auto", nodes: int = DEFAULT_NODES,
) -> tuple[Array, Array, Array, Array]:
    r"""``(E, E_c, E_qa, E_qb)`` of :math:`E[f(a)g(b)]` (module docstring); broadcast arrays.

    ``method``: ``auto`` (exact identity when there is one, else quadrature), ``quadrature``.
    """
    qa, qb, c = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (qa, qb, c)))
    if method == "auto" and has_exact_pair(f, g):
        return tuple(np.broadcast_to(np.asarray(v, dtype=float), c.shape).copy()
                     for v in _EXACT[(f.name, g.name)](qa, qb, c))  # type: ignore[return-value]
    return _pair_quad(f, g, qa, qb, c, nodes)


# --------------------------------------------------------------------------------------
# the finite-step term


def joint_covariance(P: Array, Q: Array) -> Array:
    r""":math:`\Sigma = [[Q, P], [P^\top, I]]` of :math:`(\lambda, z^*)` (batched)."""
    K = P.shape[-1]
    eye = np.broadcast_to(np.eye(K), P.shape)
    top = np.concatenate([Q, P], axis=-1)
    bot = np.concatenate([np.swapaxes(P, -1, -2), eye], axis=-1)
    return np.concatenate([top, bot], axis=-2)


@lru_cache(maxsize=8)
def _grid4(n: int) -> tuple[Array, Array]:
    x, w = hermite_rule(n)
    X = np.stack(np.meshgrid(x, x, x, x, indexing="ij"), axis=-1).reshape(-1, 4)
    W = (w[:, None, None, None] * w[None, :, None, None] * w[None, None, :, None]
         * w[None, None, None, :]).ravel()
    return X, W


def _tuples(K: int) -> tuple[Array, Array]:
    """Index tuples ``(k, l, m, n)`` with ``k <= l < K``, ``m <= n < 2K`` and their weights."""
    rows, wts = [], []
    for k in range(K):
        for l in range(k, K):
            for m in range(2 * K):
                for n in range(m, 2 * K):
                    rows.append((k, l, m, n))
                    wts.append(1.0 if m == n else 2.0)
    return np.asarray(rows), np.asarray(wts)


def noise_quadrature(
    Sig: Array, sig: Fn, tgt: Fn, nu: float, *, nodes: int | None = None
) -> Array:
    r""":math:`H` (``... x K x K``) by 4-D Gauss-Hermite quadrature over each quadruple."""
    K = Sig.shape[-1] // 2
    n = nodes or (NOISE_NODES_KINKED if (sig.kinks or tgt.kinks) else NOISE_NODES)
    X, W = _grid4(int(n))
    tup, wt = _tuples(K)
    sgn = np.where(np.arange(2 * K) < K, 1.0, -1.0)
    lead = Sig.shape[:-2]
    flat = Sig.reshape((-1, 2 * K, 2 * K))
    H = np.empty((flat.shape[0], K, K))
    is_t = tup >= K
    coef = wt * sgn[tup[:, 2]] * sgn[tup[:, 3]]
    groups = [(is_t[:, 2] == a2) & (is_t[:, 3] == a3) for a2 in (False, True)
              for a3 in (False, True)]
    for b in range(flat.shape[0]):
        S4 = flat[b][tup[:, :, None], tup[:, None, :]]  # T x 4 x 4
        lam, U = np.linalg.eigh(0.5 * (S4 + np.swapaxes(S4, -1, -2)))
        L = U * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]
        e = np.empty(len(tup))
        for grp, (t2, t3) in zip(groups, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
            if not grp.any():
                continue
            g = np.matmul(X, np.swapaxes(L[grp], -1, -2))  # T' x N x 4
            f2 = tgt.f if t2 else sig.f
            f3 = tgt.f if t3 else sig.f
            val = sig.df(g[..., 0]) * sig.df(g[..., 1]) * f2(g[..., 2]) * f3(g[..., 3])
            e[grp] = val @ W
        h = np.zeros((K, K))
        np.add.at(h, (tup[:, 0], tup[:, 1]), coef * e)
        H[b] = h + np.triu(h, 1).T
    return nu**4 * H.reshape(lead + (K, K))


def noise_erf(Sig: Array, nu: float) -> Array:
    r""":math:`H` for erf student and teacher (identity label), exact (module docstring)."""
    K = Sig.shape[-1] // 2
    n2 = 2 * K
    sgn = np.where(np.arange(n2) < K, 1.0, -1.0)
    out = np.empty(Sig.shape[:-2] + (K, K))
    eye = np.eye(n2)
    for k in range(K):
        for l in range(k, K):
            Lam = np.zeros(n2)
            Lam[k] += 1.0
            Lam[l] += 1.0
            Mt = eye + 2.0 * Sig * Lam  # I + 2 Sigma Lambda (scales columns)
            Sp = np.linalg.solve(Mt, Sig)
            Sp = 0.5 * (Sp + np.swapaxes(Sp, -1, -2))
            det = np.linalg.det(Mt)
            dg = 1.0 + 2.0 * np.diagonal(Sp, axis1=-2, axis2=-1)
            x = np.clip(2.0 * Sp / np.sqrt(dg[..., :, None] * dg[..., None, :]), -1.0, 1.0)
            E2 = (2.0 / math.pi) * np.arcsin(x)
            val = np.einsum("...mn,m,n->...", E2, sgn, sgn)
            h = (4.0 / math.pi) * val / np.sqrt(det)
            out[..., k, l] = h
            out[..., l, k] = h
    return nu**4 * out


# --------------------------------------------------------------------------------------
# relu: the finite-step term by conditioning on the two derivative factors


def _norm_pdf(x: Array) -> Array:
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def bvn_upper(h: Array, k: Array, r: Array) -> Array:
    r""":math:`P(U > h, V > k)` for standard normals with correlation ``r`` (Owen's T:
    :math:`\Phi_2(x, y; r) = \tfrac12\Phi(x) + \tfrac12\Phi(y) - T(x, a_x) - T(y, a_y) - \beta`,
    :math:`a_x = \frac{y - rx}{x\sqrt{1-r^2}}`, :math:`\beta = \tfrac12` when ``x y < 0``)."""
    from scipy.special import ndtr, owens_t

    x, y = -np.asarray(h, dtype=float), -np.asarray(k, dtype=float)
    r = np.clip(np.asarray(r, dtype=float), -1 + 1e-12, 1 - 1e-12)
    x = np.where(x == 0.0, 1e-14, x)
    y = np.where(y == 0.0, 1e-14, y)
    s = np.sqrt(1.0 - r * r)
    beta = np.where(x * y > 0, 0.0, 0.5)
    out = (0.5 * ndtr(x) + 0.5 * ndtr(y) - owens_t(x, (y - r * x) / (x * s))
           - owens_t(y, (x - r * y) / (y * s)) - beta)
    return np.clip(out, 0.0, 1.0)


def relu_pair_shifted(mx: Array, my: Array, sx: Array, sy: Array, r: Array) -> Array:
    r""":math:`E[\mathrm{relu}(X)\mathrm{relu}(Y)]`, ``(X, Y)`` Gaussian with means ``mx, my``,
    standard deviations ``sx, sy`` and correlation ``r`` (closed form; truncated bivariate
    normal moments, Rosenbaum 1961). With :math:`h = -m_x/s_x`, :math:`k = -m_y/s_y`,
    :math:`k^* = (k - rh)/\sqrt{1-r^2}`, :math:`h^* = (h - rk)/\sqrt{1-r^2}`, ``L`` the upper
    orthant probability and ``Qf = 1 - Phi``:
    :math:`E[U;\cdot] = \varphi(h)Qf(k^*) + r\varphi(k)Qf(h^*)`,
    :math:`E[UV;\cdot] = rL + rh\varphi(h)Qf(k^*) + rk\varphi(k)Qf(h^*)
    + \sqrt{1-r^2}\,\varphi(h)\varphi(k^*)`."""
    from scipy.special import ndtr

    sx = np.maximum(sx, 1e-12)
    sy = np.maximum(sy, 1e-12)
    r = np.clip(r, -1 + 1e-12, 1 - 1e-12)
    s = np.sqrt(1 - r * r)
    h, k = -mx / sx, -my / sy
    ks, hs = (k - r * h) / s, (h - r * k) / s
    L = bvn_upper(h, k, r)
    ph, pk = _norm_pdf(h), _norm_pdf(k)
    Qk, Qh = ndtr(-ks), ndtr(-hs)
    IU = ph * Qk + r * pk * Qh
    IV = pk * Qh + r * ph * Qk
    IUV = r * L + r * h * ph * Qk + r * k * pk * Qh + s * ph * _norm_pdf(ks)
    return mx * my * L + mx * sy * IV + my * sx * IU + sx * sy * IUV


def relu_mean_shifted(m: Array, s: Array) -> Array:
    r""":math:`E[\mathrm{relu}(X)] = m\Phi(m/s) + s\varphi(m/s)`, :math:`X \sim N(m, s^2)`."""
    from scipy.special import ndtr

    s = np.maximum(s, 1e-12)
    return m * ndtr(m / s) + s * _norm_pdf(m / s)


def relu_square_shifted(m: Array, s: Array) -> Array:
    r""":math:`E[\mathrm{relu}(X)^2] = (m^2 + s^2)\Phi(m/s) + m s\varphi(m/s)`."""
    from scipy.special import ndtr

    s = np.maximum(s, 1e-12)
    return (m * m + s * s) * ndtr(m / s) + m * s * _norm_pdf(m / s)


@lru_cache(maxsize=8)
def _wedge_nodes(n: int) -> tuple[Array, Array, Array, Array]:
    """Gauss-Legendre nodes/weights on [0, 1] (angle) and on [0, 12] split at 4 (radius)."""
    t, w = np.polynomial.legendre.leggauss(n)
    u, wu = 0.5 * (t + 1), 0.5 * w
    rad = np.concatenate([4 * u, 4 + 8 * u])
    wr = np.concatenate([4 * wu, 8 * wu])
    return u, wu, rad, wr


_DET_SD = 1e-7  # conditional standard deviation below which a pre-activation is fixed


def noise_relu(Sig: Array, nu: float, *, nodes: int = 8) -> Array:
    r""":math:`H` for relu student and teacher (identity labels).

    :math:`H_{kl} = \nu^4 E[1(\lambda_k > 0)1(\lambda_l > 0)\,E[\rho^2\mid\lambda_k,\lambda_l]]`.
    Given :math:`(\lambda_k, \lambda_l)` the other pre-activations are Gaussian (conditional
    mean linear in them, fixed covariance), so :math:`E[\rho^2\mid\cdot] = \sum_{mn}s_ms_n
    E[\mathrm{relu}(g_m)\mathrm{relu}(g_n)\mid\cdot]` is closed form
    (:func:`relu_pair_shifted`). The outer expectation runs over the quadrant
    :math:`\lambda_k, \lambda_l > 0` exactly: in whitened polar coordinates it is a wedge of
    angles, integrated by Gauss-Legendre in angle and radius (``nodes`` each, radius split at 4
    and cut at 12), so the indicator's discontinuity lies on the rule's edges.
    """
    K = Sig.shape[-1] // 2
    n2 = 2 * K
    sgn = np.where(np.arange(n2) < K, 1.0, -1.0)
    iu, ju = np.triu_indices(n2)
    wpair = np.where(iu == ju, 1.0, 2.0) * sgn[iu] * sgn[ju]
    u, wu, rad, wr = _wedge_nodes(int(nodes))
    lead = Sig.shape[:-2]
    S = Sig.reshape((-1, n2, n2))
    S = 0.5 * (S + np.swapaxes(S, -1, -2))
    nb = S.shape[0]
    # every (seed, k, l) block at once: diagonal blocks (1-D radial rule), then k < l
    # (wedge of the quadrant in whitened polar coordinates)
    kd = np.arange(K)
    qd = S[:, kd, kd]  # nb x K
    okd = qd > _TINY
    sqd = np.sqrt(np.where(okd, qd, 1.0))
    ptd = (sqd[..., None] * rad)[..., None]  # nb x K x Nd x 1
    wd = np.where(okd[..., None], wr * _norm_pdf(rad), 0.0)  # nb x K x Nd
    Bd = S[:, :, kd].transpose(0, 2, 1) / np.where(okd, qd, 1.0)[..., None]  # nb x K x n2
    Scd = S[:, None] - Bd[..., :, None] * S[:, kd, :][..., None, :]
    md = ptd * Bd[:, :, None, :]  # nb x K x Nd x n2
    ko, lo = np.triu_indices(K, 1)
    parts = [(md, Scd, wd)]
    if ko.size:
        qa, qb, c = S[:, ko, ko], S[:, lo, lo], S[:, ko, lo]  # nb x Po
        ok = (qa > _TINY) & (qb > _TINY)
        sa = np.sqrt(np.where(ok, qa, 1.0))
        cz = c / sa
        sv = np.sqrt(np.clip(np.where(ok, qb, 1.0) - cz * cz, 0.0, None))
        th0 = np.arctan2(sv, cz) - 0.5 * math.pi
        span = np.clip(0.5 * math.pi - th0, 0.0, None) * ok  # 0: skipped block
        th = th0[..., None] + span[..., None] * u  # nb x Po x Na
        z1 = rad[:, None] * np.cos(th)[..., None, :]  # nb x Po x Nr x Na
        z2 = rad[:, None] * np.sin(th)[..., None, :]
        wo = (wr * rad * np.exp(-0.5 * rad * rad))[:, None] * (wu / (2 * math.pi))
        wo = span[..., None, None] * wo  # nb x Po x Nr x Na
        sh = z1.shape[:2] + (-1,)
        pts = np.stack([(sa[..., None, None] * z1).reshape(sh),
                        (cz[..., None, None] * z1 + sv[..., None, None] * z2).reshape(sh)], -1)
        cols = np.stack([ko, lo], -1)
        Scc = S[:, cols[:, :, None], cols[:, None, :]]  # nb x Po x 2 x 2
        Sxc = S[:, :, cols].transpose(0, 2, 1, 3)  # nb x Po x n2 x 2
        Bo = Sxc @ np.linalg.pinv(Scc)  # nb x Po x n2 x 2
        Sco = S[:, None] - Bo @ np.swapaxes(Sxc, -1, -2)
        mo = pts @ np.swapaxes(Bo, -1, -2)  # nb x Po x N x n2
        parts.append((mo, Sco, wo.reshape(sh)))
    diag = iu == ju
    H = []
    for mean, Sc, w in parts:
        sd = np.sqrt(np.clip(np.diagonal(Sc, axis1=-2, axis2=-1), 0.0, None))  # nb x B x n2
        with np.errstate(divide="ignore", invalid="ignore"):
            den = sd[..., iu] * sd[..., ju]
            rr = np.where(den > 0, Sc[..., iu, ju] / np.where(den > 0, den, 1.0), 0.0)
        shp = mean.shape[:3] + (iu.size,)
        mx, my = mean[..., iu], mean[..., ju]
        sx = np.broadcast_to(sd[..., None, iu], shp)
        sy = np.broadcast_to(sd[..., None, ju], shp)
        rb = np.broadcast_to(rr[..., None, :], shp)
        val = np.empty(shp)
        val[..., diag] = relu_square_shifted(mx[..., diag], sx[..., diag])
        # a pre-activation conditioned on (its own variance 0: one of lambda_k, lambda_l)
        # is deterministic: E[relu(x) relu(Y)] = relu(x) E[relu(Y)], no bivariate CDF
        nd = np.broadcast_to(~diag, shp)
        dx, dy = sx <= _DET_SD, sy <= _DET_SD
        both = nd & dx & dy
        val[both] = np.maximum(mx[both], 0.0) * np.maximum(my[both], 0.0)
        one = nd & dx & ~dy
        val[one] = np.maximum(mx[one], 0.0) * relu_mean_shifted(my[one], sy[one])
        one = nd & dy & ~dx
        val[one] = np.maximum(my[one], 0.0) * relu_mean_shifted(mx[one], sx[one])
        gen = nd & ~dx & ~dy
        val[gen] = relu_pair_shifted(mx[gen], my[gen], sx[gen], sy[gen], rb[gen])
        H.append(np.einsum("ebn,ebn->eb", w, val @ wpair))  # nb x blocks
    out = np.zeros((nb, K, K))
    out[:, kd, kd] = H[0]
    if ko.size:
        out[:, ko, lo] = H[1]
        out[:, lo, ko] = H[1]
    return nu**4 * out.reshape(lead + (K, K))


# accurate tier of the conditional rule (``noise_matrix(method="accurate")``)
# (relative error against the erf identity / relu closed form at a K = 2 state: outer =
# inner = 4: 8e-5 / 3e-5; 6: 6e-8 / 3e-6; 8: 3e-10 / 2e-8 -- geometric convergence)
ACCURATE = dict(outer=6, inner=6, panel=1.0, inner_panel=1.0)
_ZCUT = 9.0  # z range of the panelled rules (Gaussian mass outside: 2e-19)
_MAX_PANELS = 64  # per dimension of a panelled rule (caps very wide variances)
_Z_PANEL = 1.5  # widest panel in z: resolves the Gaussian weight exp(-z^2/2)


def _uniform_breaks(scale: float, width: float | None) -> Array:
    """Interior breaks in a standard variable ``z`` every ``width / scale`` on
    ``[-_ZCUT, _ZCUT]`` (panels of width ``width`` in units of ``scale * z``), at most
    :data:`_Z_PANEL` apart (the Gaussian weight itself is resolved); none when ``width`` is
    None."""
    if width is None:
        return np.empty(0)
    h = _Z_PANEL if scale <= 0 else min(max(width / scale, 2 * _ZCUT / _MAX_PANELS), _Z_PANEL)
    m = int(math.ceil(_ZCUT / h))
    return h * np.arange(-m + 1, m, dtype=float)


def _outer_rule(S: Array, k: int, l: int, sig: Fn, n: int, panel: float | None):
    """Outer points ``(lambda_k[, lambda_l])`` and weights of :func:`noise_conditional`."""
    qa, qb, c = S[k, k], S[l, l], S[k, l]
    sa = math.sqrt(max(qa, 0.0))
    ks = [kk / sa for kk in sig.kinks] if sa > 0 else []
    if k == l:
        if panel is None:
            zo, wo = rule_1d(np.asarray([ks]) if ks else None, n, (1,))
        else:
            zo, wo = split_rule(np.concatenate([ks, _uniform_breaks(sa, panel)])[None], n,
                                cut=_ZCUT)
        zo, wo = np.ravel(zo), np.ravel(wo)
        pts = (sa * zo)[:, None]
        return pts, wo * sig.df(pts[:, 0]) ** 2, [k]
    cz = c / sa if sa > 0 else 0.0
    s2 = qb - cz * cz
    s = math.sqrt(s2) if s2 > 1e-12 * abs(qb) else 0.0
    if panel is None:
        rule = rule_pair(np.asarray(cz), np.asarray(s), tuple(ks), sig.kinks, n)
        zs = np.broadcast_to(rule.zs, rule.w.shape).ravel()
        et = np.broadcast_to(rule.eta, rule.w.shape).ravel()
        w = rule.w.ravel()
    else:
        ob = list(ks)
        if abs(cz) > 1e-300:
            width = min(NEAR_KINK * s / abs(cz), 2 * _ZCUT)
            for kk in sig.kinks:
                ob += [kk / cz, kk / cz - width, kk / cz + width]
        zo, wo = split_rule(np.concatenate([ob, _uniform_breaks(sa, panel)])[None], n,
                            cut=_ZCUT)
        zo, wo = zo[0], wo[0]
        ub = _uniform_breaks(s, panel)
        if s > 0 and sig.kinks:
            kb = (np.asarray(sig.kinks)[None, :] - cz * zo[:, None]) / s
        else:
            kb = np.empty((zo.size, 0))
        ib = np.concatenate([kb, np.broadcast_to(ub, (zo.size, ub.size))], axis=1)
        zi, wi = split_rule(ib, n, cut=_ZCUT)
        zs = np.broadcast_to(zo[:, None], zi.shape).ravel()
        et = zi.ravel()
        w = (wo[:, None] * wi).ravel()
    pts = np.stack([sa * zs, cz * zs + s * et], axis=-1)
    return pts, w * sig.df(pts[:, 0]) * sig.df(pts[:, 1]), [k, l]


def _inner_kinked(fm: Fn, fn: Fn, mx: Array, my: Array, C2: Array, n: int,
                  width: float | None) -> Array:
    r""":math:`E[f_m(X) f_n(Y)]` for ``X = mx + a z``, ``Y = my + c z + s\eta`` (conditional
    covariance ``C2``, means per outer point) on a rule split at both kinks for every outer
    point (the kinks of :math:`f_n` blurred over ``z`` get the extra breaks of
    :func:`rule_pair`), plus uniform panels of ``width`` in pre-activation units."""
    a = math.sqrt(max(C2[0, 0], 0.0))
    cy = C2[0, 1] / a if a > 1e-12 else 0.0
    s2 = C2[1, 1] - cy * cy
    s = math.sqrt(s2) if s2 > 1e-12 * max(abs(C2[1, 1]), 1e-300) else 0.0
    N = mx.size
    zb = []
    if a > 1e-12:
        zb += [(kk - mx) / a for kk in fm.kinks]
    if abs(cy) > 1e-12:
        wd = min(NEAR_KINK * s / abs(cy), 2 * _ZCUT)
        for kk in fn.kinks:
            cen = (kk - my) / cy
            zb += [cen, cen - wd, cen + wd]
    ub = _uniform_breaks(a, width)
    zb = np.concatenate([np.stack(zb, -1) if zb else np.empty((N, 0)),
                         np.broadcast_to(ub, (N, ub.size))], axis=1)
    z, wz = split_rule(zb, n, cut=_ZCUT)  # N x Nz
    ub = _uniform_breaks(s, width)
    if s > 0 and fn.kinks:
        eb = np.stack([(kk - my[:, None] - cy * z) / s for kk in fn.kinks], -1)
    else:
        eb = np.empty(z.shape + (0,))
    eb = np.concatenate([eb, np.broadcast_to(ub, z.shape + (ub.size,))], axis=-1)
    if eb.shape[-1] == 0:
        eb = np.zeros(z.shape + (1,))
    e, we = split_rule(eb, n, cut=_ZCUT)  # N x Nz x Ne
    X = mx[:, None] + a * z
    Y = my[:, None, None] + cy * z[..., None] + s * e
    return np.einsum("iz,iz,ize,ize->i", wz, fm.f(X), we, fn.f(Y))


def noise_conditional(
    Sig: Array, sig: Fn, tgt: Fn, nu: float, *, outer: int = 24, inner: int = 12,
    panel: float | None = None, inner_panel: float | None = None,
) -> Array:
    r""":math:`H` for any activations by conditioning on the two derivative factors.

    :math:`H_{kl} = \nu^4 E\big[\sigma'(\lambda_k)\sigma'(\lambda_l)
    \sum_{mn}s_ms_n E[u_m(g_m)u_n(g_n)\mid\lambda_k,\lambda_l]\big]`: the outer expectation
    over :math:`(\lambda_k, \lambda_l)` (1-D when ``k = l``), the inner one over the
    conditional Gaussian pair :math:`(g_m, g_n)` (mean linear in the outer variables, fixed
    covariance). Each factor of the quadruple is thus integrated on a rule fitted to its own
    variance, unlike a single 4-D Gauss-Hermite rule (:func:`noise_quadrature`).

    Two tiers. *Fast* (``panel=None``, the default of the ODE): the outer rule is the
    kink-split rule of :func:`rule_pair` (``outer`` nodes per dimension or panel), the inner
    one tensor Gauss-Hermite (``inner`` nodes per dimension); about 1-2% for erf-like
    :math:`\sigma'^2`, narrow against the pre-activation's spread, and for kinked
    :math:`u`. *Accurate* (``panel`` a width, :data:`ACCURATE`): the outer rule is piecewise
    Gauss-Legendre on :math:`z \in [-9, 9]` with panels of ``panel`` in pre-activation units
    and breaks at the kinks of :math:`\sigma'` (per outer node for the second variable), the
    inner one Gauss-Hermite when :math:`u` is smooth and otherwise piecewise Gauss-Legendre
    split at the kinks of both factors for every outer point (``inner_panel`` wide panels
    besides), so that every panel integrates an analytic function (geometric convergence).
    Outer nodes whose weight is below ``1e-17`` of the largest are dropped.
    """
    K = Sig.shape[-1] // 2
    n2 = 2 * K
    sgn = np.where(np.arange(n2) < K, 1.0, -1.0)
    iu, ju = np.triu_indices(n2)
    wpair = np.where(iu == ju, 1.0, 2.0) * sgn[iu] * sgn[ju]
    groups = [((iu >= K) == a) & ((ju >= K) == b) for a in (False, True) for b in (False, True)]
    kinds = [(a, b) for a in (False, True) for b in (False, True)]
    xi, wi = hermite_rule(int(inner))
    XI = np.stack(np.meshgrid(xi, xi, indexing="ij"), axis=-1).reshape(-1, 2)
    WI = np.outer(wi, wi).ravel()
    kinked = panel is not None  # the accurate tier: panelled, kink-split inner rule
    lead = Sig.shape[:-2]
    flat = Sig.reshape((-1, n2, n2))
    out = np.zeros((flat.shape[0], K, K))
    for b in range(flat.shape[0]):
        S = 0.5 * (flat[b] + flat[b].T)
        for k in range(K):
            for l in range(k, K):
                pts, w, cols = _outer_rule(S, k, l, sig, int(outer), panel)
                keep = np.abs(w) > 1e-17 * (np.abs(w).max() if w.size else 0.0)
                pts, w = pts[keep], w[keep]
                if not w.size:
                    continue
                Bm = S[:, cols] @ np.linalg.pinv(S[np.ix_(cols, cols)])
                Sc = S - Bm @ S[cols, :]
                mean = pts @ Bm.T  # N x 2K
                C2 = np.stack([np.stack([Sc[iu, iu], Sc[iu, ju]], -1),
                               np.stack([Sc[ju, iu], Sc[ju, ju]], -1)], -2)  # P x 2 x 2
                inner_v = np.empty((pts.shape[0], iu.size))
                if kinked:
                    for p_ in range(iu.size):
                        fm = tgt if iu[p_] >= K else sig
                        fn = tgt if ju[p_] >= K else sig
                        for c0 in range(0, pts.shape[0], 512):
                            sl = slice(c0, c0 + 512)
                            inner_v[sl, p_] = _inner_kinked(
                                fm, fn, mean[sl, iu[p_]], mean[sl, ju[p_]], C2[p_],
                                int(inner), inner_panel)
                else:
                    lam, U = np.linalg.eigh(C2)
                    F = U * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]
                    off = np.einsum("nj,pij->pni", XI, F)  # P x Ni x 2
                    for grp, (tm, tn) in zip(groups, kinds, strict=True):
                        if not grp.any():
                            continue
                        fm = tgt.f if tm else sig.f
                        fn = tgt.f if tn else sig.f
                        X = mean[:, iu[grp]][:, :, None] + off[grp][None, :, :, 0]
                        Y = mean[:, ju[grp]][:, :, None] + off[grp][None, :, :, 1]
                        inner_v[:, grp] = (fm(X) * fn(Y)) @ WI
                out[b, k, l] = out[b, l, k] = float(w @ (inner_v @ wpair))
    return nu**4 * out.reshape(lead + (K, K))
