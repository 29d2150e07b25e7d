"""App. F: potential, exact trajectory of the linear system, energy balance, Fig. 8 data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from loradyn.errors import LoradynError
from loradyn.mechanics import energy, mechanics_dataset, potential, trajectory


@pytest.mark.parametrize("a,b", [(1.0, -0.5), (-0.7, 0.3), (2.0, 1e-3), (0.0, 0.8), (1.5, 0.0)])
def test_trajectory_solves_the_linear_system(a, b):
    t = np.linspace(0.0, 4.0, 81)
    tr = trajectory(a, b, 0.2, 0.05, t)
    sol = solve_ivp(lambda _, y: [-a * y[0] - b * y[1], -b * y[0]], (0, 4), [0.2, 0.05],
                    t_eval=t, rtol=1e-12, atol=1e-14)
    assert np.allclose(tr.u, sol.y[0], atol=1e-9) and np.allclose(tr.m, sol.y[1], atol=1e-9)
    assert np.allclose(tr.mdot, -b * tr.u)
    assert tr.u[0] == pytest.approx(0.2) and tr.m[0] == pytest.approx(0.05)


def test_second_order_equation_and_energy_balance():
    a, b = 0.8, -0.6
    t = np.linspace(0.0, 3.0, 30001)
    tr = trajectory(a, b, 0.1, 0.02, t)
    mdd = np.gradient(tr.mdot, t)
    resid = mdd + a * tr.mdot - b * b * tr.m
    assert np.max(np.abs(resid[2:-2])) < 1e-7
    E = energy(tr.m, tr.mdot, b)
    dE = np.gradient(E, t)
    assert np.max(np.abs(dE - (-a * tr.mdot**2))[2:-2]) < 1e-7
    # with damping a > 0 the energy only decreases
    assert np.all(np.diff(E) <= 1e-15)


def test_potential():
    m = np.linspace(-1, 1, 5)
    assert np.allclose(potential(m, 0.5), -0.125 * m**2)
    with pytest.raises(LoradynError):
        trajectory(np.nan, 1.0, 0.0, 0.1, [0.0, 1.0])


def test_fig8_dataset_linear_flattens_as_mu_to_one():
    ds = mechanics_dataset([0.0, 0.5, 0.9])
    assert np.allclose(ds["b"], [-1.0, -0.5, -0.1]) and np.allclose(ds["a"], 1.0)
    curvature = -ds["V"].sel(m=1.0).values * 2  # b^2
    assert np.allclose(curvature, (1 - ds["mu"].values) ** 2)
    assert np.all(np.diff(curvature) < 0)
    assert set(ds.data_vars) >= {"V", "m_t", "E", "dE_dt"} and "config" in ds.attrs
