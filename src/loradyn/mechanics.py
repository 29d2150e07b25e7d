r"""The mechanical picture of the search phase (App. F).

The linearized search phase :math:`\dot u = -a u - b m`, :math:`\dot m = -b u` gives, after
eliminating :math:`u = -\dot m / b`,

.. math::

    \ddot m + a\,\dot m - b^2 m = 0,

a particle in the inverted parabola :math:`V(m) = -b^2 m^2/2` with friction ``a``
(damping when :math:`a > 0`, amplification when :math:`a < 0`). The energy
:math:`E = \dot m^2/2 + V(m)` obeys :math:`\dot E = \dot m(\ddot m + V'(m)) = -a\,\dot m^2`.

The trajectory is exact: the Jacobian :math:`J = [[-a, -b], [-b, 0]]` is symmetric, so
:math:`e^{tJ} = P\,\mathrm{diag}(e^{t r_\pm})P^\top` with its eigen-decomposition
(:math:`r_\pm = (-a \pm \sqrt{a^2 + 4b^2})/2`; :math:`r_+ = \lambda_+`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .errors import LoradynError, check_mu
from .linearization import coefficients

Array = np.ndarray

__all__ = ["Trajectory", "energy", "mechanics_dataset", "potential", "trajectory"]


def potential(m: Array | float, b: Array | float) -> Array:
    r"""The potential :math:`V(m) = -b^2 m^2 / 2` (arrays broadcast)."""
    m = np.asarray(m, dtype=float)
    b = np.asarray(b, dtype=float)
    return -0.5 * b * b * m * m


def energy(m: Array, mdot: Array, b: Array | float) -> Array:
    r"""Mechanical energy :math:`E = \dot m^2/2 + V(m)`."""
    mdot = np.asarray(mdot, dtype=float)
    return 0.5 * mdot * mdot + potential(m, b)


@dataclass(frozen=True)
class Trajectory:
    """Solution of the linear system at times ``t``: ``u``, ``m`` and ``mdot`` = dm/dt."""

    t: Array
    u: Array
    m: Array
    mdot: Array


def trajectory(
    a: float, b: float, u0: float, m0: float, t: Array | float
) -> Trajectory:
    r"""Exact solution of :math:`\tfrac{d}{dt}(u, m) = J(u, m)`, :math:`J = [[-a,-b],[-b,0]]`.

    Returns :math:`u(t)`, :math:`m(t)` and :math:`\dot m(t) = -b\,u(t)`; :math:`m` solves
    :math:`\ddot m + a\dot m - b^2 m = 0` with :math:`m(0) = m_0`, :math:`\dot m(0) = -b u_0`.
    """
    for name, v in (("a", a), ("b", b), ("u0", u0), ("m0", m0)):
        if not np.isfinite(v):
            raise LoradynError(f"{name} = {v!r} is not finite: give a finite number")
    t = np.asarray(t, dtype=float)
    J = np.array([[-a, -b], [-b, 0.0]], dtype=float)
    r, P = np.linalg.eigh(J)
    coef = P.T @ np.array([u0, m0], dtype=float)  # coordinates in the eigenbasis
    ex = np.exp(t[..., None] * r) * coef  # (..., 2)
    state = ex @ P.T  # (..., 2): (u, m)
    u, m = state[..., 0], state[..., 1]
    return Trajectory(t, u, m, -b * u)


def mechanics_dataset(
    mu: Array | list[float] = (0.0, 0.25, 0.5, 0.75, 0.9),
    *,
    teacher: str = "linear",
    student: str | None = None,
    m_grid: Array | None = None,
    t: Array | None = None,
    u0: float = 0.0,
    m0: float = 0.01,
    **kw,
) -> xr.Dataset:
    r"""Fig. 8 data: potential, trajectory and energy of the App. F particle for several ``mu``.

    Variables: ``a``, ``b`` (dim ``mu``); ``V`` (dims ``mu, m``); ``u``, ``m_t``, ``mdot``,
    ``E`` (energy) and ``dE_dt`` = :math:`-a\dot m^2` (dims ``mu, t``).
    """
    mu = np.atleast_1d(np.asarray(mu, dtype=float))
    check_mu(mu)
    m_grid = np.linspace(-1.0, 1.0, 201) if m_grid is None else np.asarray(m_grid, float)
    t = np.linspace(0.0, 10.0, 201) if t is None else np.asarray(t, dtype=float)
    a, b = coefficients(teacher, mu, student=student, **kw)
    V = potential(m_grid[None, :], b[:, None])
    U, M, MD = (np.empty((mu.size, t.size)) for _ in range(3))
    for i in range(mu.size):
        tr = trajectory(float(a[i]), float(b[i]), u0, m0, t)
        U[i], M[i], MD[i] = tr.u, tr.m, tr.mdot
    E = energy(M, MD, b[:, None])
    cfg = {"mu": mu.tolist(), "teacher": teacher, "student": student, "u0": u0, "m0": m0}
    return xr.Dataset(
        {
            "a": ("mu", a),
            "b": ("mu", b),
            "V": (("mu", "m"), V),
            "u": (("mu", "t"), U),
            "m_t": (("mu", "t"), M),
            "mdot": (("mu", "t"), MD),
            "E": (("mu", "t"), E),
            "dE_dt": (("mu", "t"), -a[:, None] * MD * MD),
        },
        coords={"mu": mu, "m": m_grid, "t": t},
        attrs={"config": json.dumps(cfg), "equation": "m'' + a m' - b^2 m = 0, V = -b^2 m^2/2"},
    )
