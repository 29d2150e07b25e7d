"""The built-in sweep kind ``simulate``: one task = one :func:`loradyn.engines.simulate` run.

Parameters are the fields of :class:`loradyn.config.RunConfig` (``teacher``, ``student``,
``label``, ``loss``, ``mu``, ``d``, ``lr``, ``batch``, ``steps``, ``seeds``, ``seed0``,
``u0``, ``m0``, ``p0``, ``update``, ``pretraining``, ``record_every``, ``threshold``,
``backend``, ``device``, ``teacher_direction``, ``switch_label``, ``switch_step``,
``switch_m``, ``nodes``, ``sampler``, ``dtype``), except ``engine``, which is set once in
``[sweep]``. One alias: ``seed`` means ``seed0``; with the default ``seeds = 1`` each task
then runs the single seed ``seed`` (``grid.seed = [0, 1, 2]`` is three tasks of one seed
each). Give ``seed`` or ``seed0``, not both.

Each value is checked on its own before any task runs: its TOML type against the field's
type (a string for ``teacher``, an integer for ``d``, a number for ``lr``, a number or a
list of numbers for ``mu``, ...), then its value by :class:`RunConfig` itself (known
activation, ``mu`` in [0, 1], ``lr > 0``, ...). Fields that only make sense with another
one (``p0`` needs ``pretraining = "misaligned"``, ``switch_step`` needs ``switch_label``)
are checked in that context; whether the combination holds is checked per task.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..config import ENGINES, RunConfig
from .kinds import ConfigParams, TaskKind, register_kind

PARAMS = ConfigParams(lambda: RunConfig)
ALIASES = PARAMS.aliases
NOT_PARAMETERS = PARAMS.not_parameters


def parameter_names() -> list[str]:
    """Keys a ``simulate`` sweep accepts in ``[grid]`` and ``[fixed]``."""
    return PARAMS.names()


def check_value(key: str, value: Any) -> Any:
    """Check one ``simulate`` parameter on its own; return it coerced (``int``/``float``).

    The check comes from the field's declaration (:func:`loradyn.params.check_value`).
    Raises ``LoradynError`` for an unknown key, a wrong type or an invalid value.
    """
    return PARAMS.check_value(key, value)


def prepare(params: dict[str, Any], engine: str) -> dict[str, Any]:
    """Canonical parameters of one task: ``RunConfig(**params, engine=engine).to_dict()``."""
    return PARAMS.prepare(params, engine)


def run(params: dict[str, Any], engine: str, progress: Any = None) -> Any:
    """Run one task: :func:`loradyn.engines.simulate` on ``RunConfig.from_dict(params)``.

    Divergence warnings are not printed by the worker; the dataset keeps them in
    ``attrs["warnings"]``. A run whose every trajectory diverged raises
    :class:`~loradyn.errors.DivergenceError`, which the runner records.
    """
    from ..engines import simulate

    cfg = RunConfig.from_dict(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return simulate(cfg, engine=engine, progress=progress)


def key(params: dict[str, Any], engine: str) -> str:
    """The task's content key: :meth:`RunConfig.key` of its configuration."""
    return PARAMS.key(params, engine)


SIMULATE = register_kind(
    TaskKind(
        name="simulate",
        run=run,
        check_value=check_value,
        prepare=prepare,
        engines=tuple(ENGINES),
        default_engine="reduced",
        replaces={"mu": "mu", "seed": "seed", "seed0": "seed"},
        description="one loradyn.engines.simulate run per task (RunConfig fields)",
        key=key,
    ),
    replace=True,
)
