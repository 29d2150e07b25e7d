r"""Gaussian expectations by quadrature.

Every population quantity of the model is an expectation over a standard Gaussian
vector of dimension one or two. Two rules are used:

- **Gauss-Hermite** (probabilists' weight :math:`e^{-x^2/2}/\sqrt{2\pi}`), exact for
  polynomials of degree :math:`\le 2n-1` and exponentially convergent for analytic
  integrands. Used when no activation has a kink.
- **Piecewise Gauss-Legendre** on :math:`[-L, L]` split at the kinks of the
  integrand (e.g. ``relu`` at 0), each piece with ``n`` nodes and the Gaussian
  density folded into the weights. Each piece is analytic, so convergence is again
  exponential; the mass outside :math:`[-L, L]` (``L = 20``) is below ``1e-80``.

Two-dimensional expectations are iterated: the outer variable :math:`z^*` and, given it,
the inner variable :math:`\eta`, with the student pre-activation
:math:`\lambda = c\,z^* + s\,\eta`. The inner split points depend on the outer node,
which keeps the kinks of :math:`\sigma(\lambda)` on panel edges for every :math:`z^*`.

Convergence is checked by doubling ``n`` (:func:`converged`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial import hermite_e as H

Array = np.ndarray

DEFAULT_NODES = 64
L_CUT = 20.0
NEAR_KINK = 8.0  # half-width, in units of s/|c|, of the panels around a blurred kink
_SQRT2PI = np.sqrt(2.0 * np.pi)


@lru_cache(maxsize=32)
def hermite_rule(n: int) -> tuple[Array, Array]:
    r"""Gauss-Hermite nodes and weights for :math:`E[f(Z)]`, :math:`Z\sim N(0,1)`.

    :math:`E[f(Z)] \approx \sum_i w_i f(x_i)`, exact for polynomials of degree
    :math:`\le 2n-1`; the weights sum to one. numpy's ``hermegauss`` overflows beyond about
    370 nodes; there :func:`scipy.special.roots_hermitenorm` (asymptotic formulas) is used.
    """
    if n < 1:
        raise ValueError("the number of quadrature nodes must be at least 1")
    with np.errstate(all="ignore"):
        x, w = H.hermegauss(n)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(x))):
        from scipy.special import roots_hermitenorm

        x, w = roots_hermitenorm(n)
    w = w / _SQRT2PI
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


@lru_cache(maxsize=32)
def _legendre(n: int) -> tuple[Array, Array]:
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w


def split_rule(breaks: Array, n: int = DEFAULT_NODES, cut: float = L_CUT) -> tuple[Array, Array]:
    r"""Piecewise Gauss-Legendre rule for :math:`E[f(Z)]` with panel edges at ``breaks``.

    Parameters
    ----------
    breaks
        Array of shape ``(..., k)`` of split points; they are clipped to
        :math:`[-L, L]` and sorted. Leading dimensions are batch dimensions.
    n
        Nodes per panel.
    cut
        Half-width :math:`L` of the integration range.

    Returns
    -------
    x, w
        Arrays of shape ``(..., (k + 1) * n)``:
        :math:`E[f(Z)] \approx \sum_i w_i f(x_i)` with
        :math:`w_i = \tfrac{h}{2} \omega_i\, e^{-x_i^2/2}/\sqrt{2\pi}` on each panel.
    """
    b = np.sort(np.clip(np.asarray(breaks, dtype=float), -cut, cut), axis=-1)
    shape = b.shape[:-1]
    lo = np.concatenate([np.full(shape + (1,), -cut), b], axis=-1)
    hi = np.concatenate([b, np.full(shape + (1,), cut)], axis=-1)
    t, om = _legendre(n)
    half = 0.5 * (hi - lo)[..., None]
    mid = 0.5 * (hi + lo)[..., None]
    x = mid + half * t
    w = half * om * np.exp(-0.5 * x * x) / _SQRT2PI
    return x.reshape(shape + (-1,)), w.reshape(shape + (-1,))


@dataclass(frozen=True)
class Rule2D:
    r"""Nodes and weights of a 2-D rule for :math:`E[F(z^*, \eta)]`.

    ``zs`` and ``eta`` broadcast against ``w``; the sum of ``w * F`` over the last two axes
    approximates the expectation, :math:`(z^*, \eta)` independent standard normals.
    """

    zs: Array
    eta: Array
    w: Array

    def expect(self, values: Array) -> Array:
        """Sum ``w * values`` over the two quadrature axes."""
        return np.sum(self.w * values, axis=(-2, -1))


def rule_1d(
    breaks: Array | None = None, n: int = DEFAULT_NODES, batch_shape: tuple[int, ...] = ()
) -> tuple[Array, Array]:
    """A 1-D rule: Gauss-Hermite without breaks, piecewise Gauss-Legendre with them.

    ``breaks`` has shape ``batch_shape + (k,)``; the result broadcasts against
    ``batch_shape + (N,)``.
    """
    if breaks is None or np.asarray(breaks).shape[-1] == 0:
        x, w = hermite_rule(n)
        lead = (1,) * len(batch_shape) + (-1,)
        return x.reshape(lead), w.reshape(lead)
    return split_rule(np.asarray(breaks, dtype=float), n)


def rule_2d(
    c: Array,
    s: Array,
    teacher_kinks: tuple[float, ...] = (),
    student_kinks: tuple[float, ...] = (),
    n: int = DEFAULT_NODES,
) -> Rule2D:
    r"""A rule for :math:`E[F(z^*, \eta)]` with :math:`\lambda = c z^* + s \eta`.

    Parameters
    ----------
    c, s
        Arrays (broadcast together) of the coefficients of the student pre-activation.
    teacher_kinks, student_kinks
        Kinks of the teacher in :math:`z^*` and of the student in :math:`\lambda`.
    n
        Nodes per dimension (Gauss-Hermite) or per panel (split rule).

    Returns
    -------
    Rule2D
        ``zs`` of shape ``batch + (No, 1)``, ``eta`` and ``w`` of shape ``batch + (No, Ni)``.
    """
    c, s = np.broadcast_arrays(np.asarray(c, dtype=float), np.asarray(s, dtype=float))
    batch = c.shape
    if not teacher_kinks and not student_kinks:
        x, w = hermite_rule(n)
        zs = x.reshape((1,) * len(batch) + (-1, 1))
        eta = x.reshape((1,) * len(batch) + (1, -1))
        ww = (w[:, None] * w[None, :]).reshape((1,) * len(batch) + (n, n))
        return Rule2D(zs, eta, ww)
    # outer breaks: teacher kinks, plus student kinks seen through lambda = c z*. After the
    # inner integration over eta the integrand is smooth in z* but keeps a blurred kink of
    # width ~ s/|c| around z* = k/c; two extra breaks at k/c +- NEAR_KINK * s/|c| resolve it
    # (they matter when s << |c|, e.g. m -> 1, and fall outside [-L, L] otherwise).
    ob = [np.full(batch, k) for k in teacher_kinks]
    with np.errstate(divide="ignore", invalid="ignore"):
        cnz = np.abs(c) > 1e-300
        csafe = np.where(cnz, c, 1.0)
        width = np.where(cnz, NEAR_KINK * np.abs(s) / np.abs(csafe), 2 * L_CUT)
        width = np.minimum(width, 2 * L_CUT)
        for k in student_kinks:
            centre = np.where(cnz, k / csafe, 0.0)
            ob.extend([centre, centre - width, centre + width])
    outer_b = np.stack(ob, axis=-1)
    zo, wo = split_rule(outer_b, n)  # batch + (No,)
    if student_kinks:
        with np.errstate(divide="ignore", invalid="ignore"):
            sb = np.where(np.abs(s) > 1e-300, s, 1.0)[..., None, None]
            ks = np.asarray(student_kinks, dtype=float)
            inner_b = (ks - c[..., None, None] * zo[..., :, None]) / sb
            inner_b = np.where((np.abs(s) > 1e-300)[..., None, None], inner_b, 0.0)
        zi, wi = split_rule(inner_b, n)  # batch + (No, Ni)
    else:
        x, w = hermite_rule(n)
        zi = np.broadcast_to(x, zo.shape + (n,))
        wi = np.broadcast_to(w, zo.shape + (n,))
    return Rule2D(zo[..., :, None], zi, wo[..., :, None] * wi)


def expect_1d(
    f: Callable[[Array], Array], breaks: Array | None = None, n: int = DEFAULT_NODES
) -> Array:
    r""":math:`E[f(Z)]` for :math:`Z \sim N(0, 1)`, ``f`` vectorized over the last axis."""
    x, w = rule_1d(breaks, n)
    return np.sum(w * f(x), axis=-1)


def converged(compute: Callable[[int], Array], n: int = DEFAULT_NODES) -> tuple[Array, float]:
    """Evaluate ``compute(n)`` and ``compute(2 n)``; return the latter and the max abs change.

    Use it to report the quadrature error of any population quantity.
    """
    a = np.asarray(compute(n), dtype=float)
    b = np.asarray(compute(2 * n), dtype=float)
    return b, float(np.max(np.abs(b - a))) if a.size else 0.0
