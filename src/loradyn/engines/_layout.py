"""What every engine shares: raw output, result layout, escape and divergence helpers.

An engine returns an :class:`EngineOutput` (plain arrays); :func:`build_dataset` turns it
into the :class:`xarray.Dataset` described in :mod:`loradyn.engines` (adds ``c``, the exact
test MSE by quadrature, the theory prediction and the attributes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .. import __version__
from ..config import RunConfig

Array = np.ndarray

#: A step whose update gives ``|u|`` above this bound (or any non-finite value) diverges.
U_BOUND = 1e8
#: Number of recorded points per quadrature call (bounds the memory of the MSE).
MSE_CHUNK = 512


@dataclass
class EngineOutput:
    """Raw trajectories of an engine, arrays indexed ``[mu, seed, record]``.

    ``escape_time`` may be omitted (then ``escape_step * lr``); ``p`` only for the
    misaligned model; ``switch_step`` only for two-stage schedules.
    """

    u: Array
    m: Array
    seeds: Array
    escape_step: Array
    diverged: Array
    diverge_step: Array
    p: Array | None = None
    escape_time: Array | None = None
    switch_step: Array | None = None
    backend: str = "numpy"
    attrs: dict = field(default_factory=dict)


class GroupCollector:
    """Gathers the trajectories of an SGD engine, run in groups of flat ``(mu, seed)`` slices.

    The flat index is ``mu_index * seeds + seed_index``; :meth:`output` reshapes every array
    to ``[mu, seed, record]`` (``[mu, seed]`` for per-trajectory values).
    """

    def __init__(self, config: RunConfig, misaligned: bool) -> None:
        self.config = config
        self.shape2 = (config.mus.size, config.seeds)
        n, n_rec = config.mus.size * config.seeds, config.record_steps.size
        self.U = np.empty((n, n_rec))
        self.M = np.empty((n, n_rec))
        self.P = np.empty((n, n_rec)) if misaligned else None
        self.esc = np.empty(n, dtype=np.int64)
        self.dstep = np.empty(n, dtype=np.int64)
        self.sw = np.empty(n, dtype=np.int64)

    def add(self, sl: slice, tracker: StepTracker, switch_step: Array) -> None:
        """Store the finished group ``sl`` (its tracker and two-stage switch steps)."""
        self.U[sl], self.M[sl] = tracker.U, tracker.M
        if self.P is not None and tracker.P is not None:
            self.P[sl] = tracker.P
        self.esc[sl], self.dstep[sl], self.sw[sl] = tracker.escape, tracker.div_step, switch_step

    def output(self, backend: str, attrs: dict | None = None) -> EngineOutput:
        """The :class:`EngineOutput` of every group added so far."""
        s2 = self.shape2
        s3 = s2 + (self.U.shape[1],)
        return EngineOutput(
            u=self.U.reshape(s3),
            m=self.M.reshape(s3),
            p=None if self.P is None else self.P.reshape(s3),
            seeds=self.config.seed_list,
            escape_step=self.esc.reshape(s2),
            diverged=(self.dstep >= 0).reshape(s2),
            diverge_step=self.dstep.reshape(s2),
            switch_step=self.sw.reshape(s2) if self.config.two_stage else None,
            backend=backend,
            attrs=dict(attrs or {}),
        )


class StepTracker:
    """Per-step bookkeeping shared by the SGD engines (escape, divergence, recording).

    Works on flat arrays of ``n`` trajectories. Call :meth:`accept` after computing a
    candidate update: it rejects (freezes) diverged trajectories, records escapes and
    stores the state at recorded steps.
    """

    def __init__(self, config: RunConfig, n: int, misaligned: bool) -> None:
        self.config = config
        self.n = n
        self.rec_steps = config.record_steps
        self.n_rec = self.rec_steps.size
        self.U = np.empty((n, self.n_rec))
        self.M = np.empty((n, self.n_rec))
        self.P = np.empty((n, self.n_rec)) if misaligned else None
        self.escape = np.full(n, -1, dtype=np.int64)
        self.div_step = np.full(n, -1, dtype=np.int64)
        self.alive = np.ones(n, dtype=bool)
        self.switch = np.full(n, -1, dtype=np.int64)
        self._next = 0

    def record(self, step: int, u: Array, m: Array, p: Array | None = None) -> None:
        """Store the state if ``step`` is a recorded step; mark escapes."""
        hit = (self.escape < 0) & (np.abs(m) >= self.config.threshold)
        if np.any(hit):
            self.escape[hit] = step
        if self._next < self.n_rec and self.rec_steps[self._next] == step:
            self.U[:, self._next] = u
            self.M[:, self._next] = m
            if self.P is not None and p is not None:
                self.P[:, self._next] = p
            self._next += 1

    def check(self, step: int, new: list[Array]) -> Array:
        """Mask of trajectories whose candidate state ``new`` (u first) is acceptable.

        Newly failing trajectories are marked diverged at ``step``; the caller keeps their
        old state (``np.where(ok, new, old)``).
        """
        ok = np.abs(new[0]) <= U_BOUND
        for a in new:
            ok &= np.isfinite(a)
        bad = self.alive & ~ok
        if np.any(bad):
            self.div_step[bad] = step
            self.alive &= ok
        return self.alive.copy()


def divergence_message(config: RunConfig, out: EngineOutput, every: bool = False) -> str:
    """One line naming the first diverged (mu, seed, step) and the likely cause."""
    ds = np.asarray(out.diverge_step)
    div = np.asarray(out.diverged)
    idx = np.argwhere(div)
    if idx.size == 0:
        return ""
    first = min(idx, key=lambda ij: (ds[tuple(ij)], ij[0], ij[1]))
    i, j = int(first[0]), int(first[1])
    mu = config.mus[i]
    seed = int(out.seeds[j])
    step = int(ds[i, j])
    n, tot = int(div.sum()), div.size
    head = "every trajectory diverged" if every else f"{n} of {tot} trajectories diverged"
    return (
        f"{head} (first at mu={mu:g}, seed={seed}, step={step}): learning rate too large "
        f"for this activation ({config.student}, lr={config.lr:g}): reduce --lr"
    )


def _mse_nodes(config: RunConfig) -> int | None:
    """Exact Gauss-Hermite size for polynomial problems, else ``None`` (problem default)."""
    if config.nodes is not None:
        return config.nodes
    from ..activations import get_activation

    t = get_activation(config.teacher).degree
    s = get_activation(config.student).degree
    if t is None or s is None:
        return None
    if config.final_label == "square":
        t *= 2
    # the squared residual has degree 2 max(t, s): exact with max(t, s) + 1 nodes.
    return max(t, s) + 2


def exact_mse(config: RunConfig, u: Array, m: Array, mu: Array, p: Array | None) -> Array:
    r"""Exact test MSE :math:`E[(\sigma(\lambda) - y)^2]/2` at many points, by quadrature.

    The same 2-D rule as :func:`loradyn.population.population` (``lambda = c z* + s eta``)
    but only the squared residual is integrated, in chunks of :data:`MSE_CHUNK` points.
    """
    from ..gaussian import rule_2d
    from ..population import gaussian_params

    prob = config.problem(config.final_label)
    nodes = _mse_nodes(config) or prob.nodes
    shape = np.broadcast_shapes(u.shape, m.shape, mu.shape)
    uf = np.broadcast_to(u, shape).ravel()
    mf = np.broadcast_to(m, shape).ravel()
    muf = np.broadcast_to(mu, shape).ravel()
    pf = None if p is None else np.broadcast_to(p, shape).ravel()
    out = np.empty(uf.size)
    st, tg = prob.student, prob.target
    with np.errstate(over="ignore", invalid="ignore"):
        for a in range(0, uf.size, MSE_CHUNK):
            sl = slice(a, a + MSE_CHUNK)
            c, s, _ = gaussian_params(uf[sl], mf[sl], muf[sl], None if pf is None else pf[sl])
            rule = rule_2d(c, s, tg.kinks, st.kinks, nodes)
            lam = c[:, None, None] * rule.zs + s[:, None, None] * rule.eta
            r = st.f(lam) - tg.y(rule.zs)
            out[sl] = 0.5 * np.sum(rule.w * r * r, axis=(-2, -1))
    out = np.where(np.isnan(out), np.inf, out)
    return out.reshape(shape)


def theory(config: RunConfig) -> tuple[Array, Array, Array, str]:
    """``tau``, exit time (ODE time) and exit step from :mod:`loradyn.linearization`."""
    from ..linearization import exit_time, tau

    res = tau(config.problem(config.label), config.mus, nodes=config.nodes)
    t = np.asarray(res.tau, dtype=float)
    ex = np.asarray(exit_time(t, config.d, config.threshold), dtype=float)
    note = "aligned model, stage-1 label"
    if config.pretraining == "misaligned":
        note = "aligned-model prediction shown; the misaligned model has no closed form here"
    return t, ex, ex / config.lr, note


def build_dataset(
    config: RunConfig, out: EngineOutput, *, wall_time: float, warning: str = ""
) -> xr.Dataset:
    """Assemble the :mod:`loradyn.engines` result layout from an engine's raw output."""
    mus = config.mus
    steps = config.record_steps
    mu3 = mus[:, None, None]
    c = mu3 + out.u * out.m
    mse = exact_mse(config, out.u, out.m, mu3, out.p)
    dims3 = ("mu", "seed", "step")
    dims2 = ("mu", "seed")
    esc = np.asarray(out.escape_step, dtype=np.int64)
    if out.escape_time is None:
        et = np.where(esc >= 0, esc * config.lr, np.nan)
    else:
        et = np.where(esc >= 0, out.escape_time, np.nan)
    tau_t, exit_t, exit_s, note = theory(config)
    data = {
        "u": (dims3, out.u),
        "m": (dims3, out.m),
        "c": (dims3, c),
        "mse": (dims3, mse),
        "escape_step": (dims2, esc),
        "escape_time": (dims2, et),
        "escaped": (dims2, esc >= 0),
        "diverged": (dims2, np.asarray(out.diverged, dtype=bool)),
        "diverge_step": (dims2, np.asarray(out.diverge_step, dtype=np.int64)),
        "tau_theory": (("mu",), tau_t),
        "exit_time_theory": (("mu",), exit_t),
        "exit_step_theory": (("mu",), exit_s),
    }
    if out.p is not None:
        data["p"] = (dims3, out.p)
    if out.switch_step is not None:
        data["switch_step"] = (dims2, np.asarray(out.switch_step, dtype=np.int64))
    coords = {
        "mu": ("mu", mus),
        "seed": ("seed", np.asarray(out.seeds, dtype=np.int64)),
        "step": ("step", steps),
        "time": ("step", steps * config.lr),
    }
    attrs = {
        "config": config.to_json(),
        "config_key": config.key(),
        "engine": config.engine,
        "backend": out.backend,
        "loradyn_version": __version__,
        "wall_time_s": float(wall_time),
        "n_diverged": int(np.count_nonzero(out.diverged)),
        "warnings": warning,
        "tau_note": note,
        "conventions": "escape_step=-1: no escape (escape_time NaN there); diverged "
        "trajectories are frozen at their last finite state after diverge_step",
    }
    for k, v in out.attrs.items():
        attrs[k] = v if isinstance(v, str | int | float) else json.dumps(v)
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    ds["u"].attrs["long_name"] = "LoRA scale u"
    ds["m"].attrs["long_name"] = "overlap m = w.w*"
    ds["c"].attrs["long_name"] = "effective alignment c = mu + u m"
    ds["mse"].attrs["long_name"] = "exact test MSE"
    ds["escape_step"].attrs["missing"] = "-1 = no escape"
    ds["time"].attrs["long_name"] = "ODE time = step * lr"
    return ds
