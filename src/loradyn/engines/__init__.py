r"""Simulation engines for one-pass SGD on the rank-one LoRA single-index model.

One entry point, :func:`simulate`, runs a :class:`~loradyn.config.RunConfig` on one of
three engines and returns an :class:`xarray.Dataset` with the same layout for all:

- ``reduced`` (default): exact in law, O(batch) work per step, independent of ``d``
  (theory.md section 7; :mod:`loradyn.engines.reduced`);
- ``dense``: the d-dimensional algorithm of theory.md section 4, numpy or torch
  (:mod:`loradyn.engines.dense`);
- ``ode``: the population flow with the finite-step term, integrated by scipy
  (:mod:`loradyn.engines.ode`).

Result layout
-------------
Dimensions ``mu`` (the configured values), ``seed`` and ``step`` (recorded steps).

Coordinates

- ``mu`` (float), ``seed`` (int64: ``seed0 .. seed0+seeds-1``; the ODE engine is
  deterministic and has a single seed, ``seed0``), ``step`` (int64: the recorded step
  indices ``0, k, 2k, ..., steps``), ``time`` (on ``step``: ``step * lr``, ODE time).

Variables on ``(mu, seed, step)``

- ``u``: LoRA scale; ``m``: overlap :math:`w\cdot w^*`;
- ``p``: overlap :math:`w\cdot v` (misaligned pre-training only);
- ``c``: effective alignment :math:`\mathrm{Cov}(z^*, \lambda)` (aligned: :math:`\mu + um`;
  misaligned: :math:`\mu + um` too, computed by :func:`loradyn.population.population`);
- ``mse``: exact test MSE :math:`E[(\sigma(\lambda)-y)^2]/2` at the recorded ``(u, m[, p])``
  by quadrature (against the label the run ends on; may be ``inf`` for a frozen diverged
  trajectory of a high-degree polynomial, never NaN).

Variables on ``(mu, seed)``

- ``escape_step`` (int64): first step with :math:`|m| \ge` ``threshold``, detected at
  every step (not only recorded ones); ``-1`` means no escape within ``steps``.
  (ODE: the first step-grid point at or after the crossing time.)
- ``escape_time`` (float): ``escape_step * lr`` (ODE: the exact crossing time of the
  integrator's event); ``NaN`` exactly where ``escape_step == -1``.
- ``escaped`` (bool): ``escape_step >= 0``.
- ``diverged`` (bool) and ``diverge_step`` (int64, ``-1`` if not diverged): a trajectory
  diverges at the first step whose update is non-finite or gives :math:`|u| > 10^8`. That
  update is rejected and the trajectory is **frozen at its last finite state**: every
  later recorded value repeats it. Frozen values are therefore finite but meaningless
  after ``diverge_step``; always mask with ``diverged``.
- ``switch_step`` (int64, two-stage schedules only): step at which the label switched,
  ``-1`` if it never did.

Variables on ``(mu,)``

- ``tau_theory``: search-phase time :math:`\tau(\mu)` of :func:`loradyn.linearization.tau`
  (natural ODE units, stage-1 label; ``inf`` at a singularity). For misaligned
  pre-training the aligned-model value is given (attrs ``tau_note`` says so).
- ``exit_time_theory``: :math:`\tau\log(R\sqrt d)` with :math:`R` = ``threshold``
  (ODE time); ``exit_step_theory``: the same divided by ``lr`` (steps).

Attributes: ``config`` (the RunConfig as canonical JSON), ``config_key``, ``engine``,
``backend``, ``loradyn_version``, ``wall_time_s``, ``n_diverged``, ``warnings``
(divergence warning line or empty string), ``tau_note``.

Use :func:`escape_steps_json` for a JSON-friendly list (``None`` for no escape).

Divergence: one warning line per run names the first diverged ``(mu, seed, step)`` and
the likely cause; when every trajectory diverges, :func:`simulate` raises
:class:`~loradyn.errors.DivergenceError` (a :class:`~loradyn.errors.LoradynError`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import numpy as np
import xarray as xr

from ..config import ENGINES, RunConfig
from ..errors import DivergenceError, LoradynError
from ._layout import EngineOutput, build_dataset, divergence_message

Progress = Callable[[float, str], None]

__all__ = [
    "simulate",
    "escape_steps_json",
    "runs_json",
    "DivergenceWarning",
    "EngineOutput",
]


class DivergenceWarning(RuntimeWarning):
    """Some trajectories of a run diverged (the message is one line)."""


def _engine_fn(name: str):
    if name == "reduced":
        from .reduced import run_reduced

        return run_reduced
    if name == "dense":
        from .dense import run_dense

        return run_dense
    if name == "ode":
        from .ode import run_ode

        return run_ode
    raise LoradynError(f"engine = {name!r} is unknown: choose one of {', '.join(ENGINES)}")


def simulate(
    config: RunConfig,
    engine: str | None = None,
    progress: Progress | None = None,
    **options: object,
) -> xr.Dataset:
    """Run one configuration and return the trajectories as an :class:`xarray.Dataset`.

    Parameters
    ----------
    config
        What to run (:class:`~loradyn.config.RunConfig`).
    engine
        ``reduced``, ``dense`` or ``ode``; overrides ``config.engine`` (the dataset's
        ``attrs["config"]`` records the engine actually used).
    progress
        Optional callback ``progress(fraction, message)`` with ``fraction`` in [0, 1].
    **options
        Other execution options of :class:`~loradyn.config.RunConfig` (``backend``,
        ``device``, ``sampler``, ``teacher_direction``), overriding the config's, as
        ``method=`` and ``**options`` do in :func:`scipy.integrate.solve_ivp`. The dataset
        records the config actually run.

    Returns
    -------
    xarray.Dataset
        The layout described in the module docstring.

    Raises
    ------
    DivergenceError
        When every trajectory diverged.
    """
    if not isinstance(config, RunConfig):
        raise LoradynError("simulate() needs a RunConfig: build one with loradyn.config.RunConfig")
    if engine is not None:
        options["engine"] = engine
    if options:
        allowed = set(config.options())
        bad = sorted(set(options) - allowed)
        if bad:
            raise LoradynError(
                f"simulate() got {bad[0]!r}, which is not an execution option: give physics "
                f"in the RunConfig; options are {', '.join(sorted(allowed))}"
            )
        config = config.replace(**options)
    fn = _engine_fn(config.engine)
    t0 = time.perf_counter()
    out: EngineOutput = fn(config, progress)
    wall = time.perf_counter() - t0
    n_div = int(np.count_nonzero(out.diverged))
    if n_div and n_div == out.diverged.size:
        raise DivergenceError(divergence_message(config, out, every=True))
    msg = divergence_message(config, out) if n_div else ""
    if msg:
        warnings.warn(msg, DivergenceWarning, stacklevel=2)
    ds = build_dataset(config, out, wall_time=wall, warning=msg)
    if progress is not None:
        progress(1.0, "done")
    return ds


def escape_steps_json(ds: xr.Dataset) -> list[list[int | None]]:
    """Escape steps as nested lists ``[mu][seed]``, ``None`` where there was no escape."""
    es = np.asarray(ds["escape_step"].values)
    return [[int(v) if v >= 0 else None for v in row] for row in es]


def runs_json(ds: xr.Dataset) -> dict:
    """The CLI's JSON summary: ``{"runs": [{"mu", "escape_steps", "final_abs_m"}, ...]}``."""
    esc = escape_steps_json(ds)
    final = np.abs(np.asarray(ds["m"].isel(step=-1).values))
    runs = []
    for i, mu in enumerate(np.asarray(ds["mu"].values)):
        runs.append(
            {
                "mu": float(mu),
                "escape_steps": esc[i],
                "final_abs_m": [float(v) for v in final[i]],
            }
        )
    return {"runs": runs}
