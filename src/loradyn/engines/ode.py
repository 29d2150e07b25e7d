r"""The ODE limit of one-pass SGD, integrated with :func:`scipy.integrate.solve_ivp`.

Integrates, for each ``mu``, the flow of theory.md section 4 including the finite-step
term (:func:`loradyn.population.flow` with ``step_noise`` :math:`=\eta d/B`):

.. math::

    \dot u = -E[gz],\qquad
    \dot m = -uE[g(z^*-mz)] - \frac{\eta d}{B}\frac{m}{2}u^2E[g^2]
    \quad(\text{and likewise } \dot p \text{ for the misaligned model}),

from :math:`u_0` and :math:`m_0 = p_0 = 1/\sqrt d` (or the configured ``m0``/``p0``),
and reports the solution on the recorded step grid :math:`t = \text{step}\cdot\eta`.
The ODE is deterministic: the result has a single seed (``seed0``).

The integrator is LSODA (:func:`scipy.integrate.solve_ivp`), which switches between an
explicit Adams and a stiff BDF method: with a large learning rate the finite-step term
makes the flow stiff (``lr = 1e6`` settles on a fixed point that an explicit Runge-Kutta
method crosses in ~1e9 tiny steps, for minutes), which LSODA integrates in about a second.

Escape is an integrator event (:math:`|m|` crossing ``threshold``): ``escape_time`` is the
crossing time and ``escape_step`` the first grid step at or after it. A two-stage
schedule switches the problem at ``switch_step * lr`` or at the event
:math:`|m| = ` ``switch_m``. Blow-up is a terminal event on the norm of the state,
:math:`\sqrt{u^2 + m^2 (+ p^2)} = 10^8`; it, a failed integration or a non-finite state
marks the trajectory diverged (reported like the SGD engines' divergence) and freezes it
at its last good state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from ..config import RunConfig
from ..population import flow
from ._layout import U_BOUND, EngineOutput

Array = np.ndarray
RTOL = 1e-8
ATOL = 1e-12


def run_ode(
    config: RunConfig, progress: Callable[[float, str], None] | None = None
) -> EngineOutput:
    """Integrate the ODE for every ``mu`` of ``config`` (see the module docstring)."""
    mis = config.pretraining == "misaligned"
    steps = config.record_steps
    t_grid = steps * config.lr
    n_mu = config.mus.size
    U = np.empty((n_mu, 1, steps.size))
    M = np.empty_like(U)
    P = np.empty_like(U) if mis else None
    esc = np.full((n_mu, 1), -1, dtype=np.int64)
    esc_t = np.full((n_mu, 1), np.nan)
    dstep = np.full((n_mu, 1), -1, dtype=np.int64)
    sw = np.full((n_mu, 1), -1, dtype=np.int64)
    r0 = 1.0 / math.sqrt(config.d)
    m0 = config.m0 if config.m0 is not None else r0
    p0 = config.p0 if config.p0 is not None else r0
    problems = [config.problem(config.label)]
    if config.two_stage:
        problems.append(config.problem(config.switch_label))
    for i, mu in enumerate(config.mus):
        y0 = np.array([config.u0, m0, p0] if mis else [config.u0, m0], dtype=float)
        res = _integrate(config, problems, float(mu), y0, t_grid)
        U[i, 0], M[i, 0] = res["y"][0], res["y"][1]
        if P is not None:
            P[i, 0] = res["y"][2]
        if res["t_escape"] is not None:
            esc_t[i, 0] = res["t_escape"]
            esc[i, 0] = _grid_step(res["t_escape"], config.lr)
        if res["t_div"] is not None:
            dstep[i, 0] = _grid_step(res["t_div"], config.lr)
        if res["t_switch"] is not None:
            sw[i, 0] = _grid_step(res["t_switch"], config.lr)
        if progress is not None:
            progress((i + 1) / n_mu, f"mu={mu:g} integrated")
    return EngineOutput(
        u=U,
        m=M,
        p=P,
        seeds=np.array([config.seed0], dtype=np.int64),
        escape_step=esc,
        escape_time=esc_t,
        diverged=dstep >= 0,
        diverge_step=dstep,
        switch_step=sw if config.two_stage else None,
        backend="scipy",
    )


def _grid_step(t: float, lr: float) -> int:
    """First step index ``k`` with ``k * lr >= t`` (tolerating rounding)."""
    return int(math.ceil(t / lr - 1e-9))


def _integrate(config: RunConfig, problems, mu: float, y0: Array, t_grid: Array) -> dict:
    mis = y0.size == 3
    noise = config.step_noise
    nodes = config.nodes
    thr = config.threshold
    out = np.empty((y0.size, t_grid.size))
    t_escape = 0.0 if abs(y0[1]) >= thr else None
    t_switch = None
    t_div = None
    stage = 0
    t0, y = 0.0, y0.copy()
    out[:, 0] = y
    filled = 1  # grid points already written
    t_end = float(t_grid[-1])
    if config.two_stage and config.switch_step is not None and config.switch_step == 0:
        stage, t_switch = 1, 0.0
    if config.two_stage and config.switch_m is not None and abs(y[1]) >= config.switch_m:
        stage, t_switch = 1, 0.0

    while t0 < t_end and t_div is None:
        prob = problems[stage]

        def rhs(t, s, prob=prob):
            u, m = s[0], s[1]
            p = s[2] if mis else None
            du, dm, dp = flow(prob, u, m, mu, p=p, step_noise=noise, nodes=nodes)
            vals = [float(du), float(dm)] + ([float(dp)] if mis else [])
            return np.array(vals)

        # events in a fixed order: 0 escape (recorded only), 1 blow-up, 2 switch
        def esc_ev(t, s):
            return abs(s[1]) - thr

        def blow(t, s):
            return U_BOUND - float(np.sqrt(np.sum(np.square(s))))

        blow.terminal = True  # type: ignore[attr-defined]
        events = [esc_ev, blow]
        seg_end = t_end
        if config.two_stage and stage == 0:
            if config.switch_step is not None:
                seg_end = min(seg_end, config.switch_step * config.lr)
            if config.switch_m is not None:

                def sw_ev(t, s):
                    return abs(s[1]) - config.switch_m

                sw_ev.terminal = True  # type: ignore[attr-defined]
                sw_ev.direction = 1.0  # type: ignore[attr-defined]
                events.append(sw_ev)
        with np.errstate(all="ignore"):
            sol = solve_ivp(
                rhs,
                (t0, seg_end),
                y,
                method="LSODA",
                rtol=RTOL,
                atol=ATOL,
                events=events,
                dense_output=True,
            )
        ev = sol.t_events
        if t_escape is None and ev[0].size:
            t_escape = float(ev[0][0])
        good = np.all(np.isfinite(sol.y), axis=0)
        blew = ev[1].size > 0
        if sol.status == -1 or not np.all(good) or blew:
            # failure or blow-up: keep the last good point, freeze afterwards
            last = int(np.nonzero(good)[0][-1]) if np.any(good) else 0
            if blew and np.all(good):
                last = sol.t.size - 1
            t_stop = float(sol.t[last])
            y = sol.y[:, last].copy()
            t_div = t_stop
        else:
            t_stop = float(sol.t[-1])
            y = sol.y[:, -1].copy()
        idx = np.nonzero((t_grid > t0) & (t_grid <= t_stop))[0]
        if idx.size:
            out[:, idx] = sol.sol(t_grid[idx])
            filled = int(idx[-1]) + 1
        t0 = t_stop
        if t_div is None and config.two_stage and stage == 0 and t0 < t_end:
            stage, t_switch = 1, t0
            if config.switch_u is not None:  # re-align u with the pre-trained weight
                ww0 = mu * y[1] + (np.sqrt(max(1.0 - mu * mu, 0.0)) * y[2] if mis else 0.0)
                y[0] = config.switch_u * (1.0 if ww0 >= 0 else -1.0)
    if filled < t_grid.size:
        out[:, filled:] = out[:, filled - 1 : filled]
    # clamp the overlaps the integrator may overshoot by rounding
    out[1] = np.clip(out[1], -1.0, 1.0)
    if mis:
        out[2] = np.clip(out[2], -1.0, 1.0)
    return {"y": out, "t_escape": t_escape, "t_switch": t_switch, "t_div": t_div}
