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
from ..errors import LoradynError
from ..params import check_value as check_field
from ..params import declared
from .kinds import TaskKind, register_kind

ALIASES = {"seed": "seed0"}
NOT_PARAMETERS = {"engine": 'set the engine once in [sweep], e.g. engine = "reduced"'}


def _fields() -> dict[str, str]:
    """RunConfig's declared fields with their kind (``"int"``, ``"floats"``, ...)."""
    return {f.name: s.kind for f, s in declared(RunConfig)}


def parameter_names() -> list[str]:
    """Keys a ``simulate`` sweep accepts in ``[grid]`` and ``[fixed]``."""
    return sorted((set(_fields()) - set(NOT_PARAMETERS)) | set(ALIASES))


def check_value(key: str, value: Any) -> Any:
    """Check one ``simulate`` parameter on its own; return it coerced (``int``/``float``).

    The check comes from the field's declaration (:func:`loradyn.params.check_value`).
    Raises ``LoradynError`` for an unknown key, a wrong type or an invalid value.
    """
    if key in NOT_PARAMETERS:
        raise LoradynError(f"not a task parameter: {NOT_PARAMETERS[key]}")
    field = ALIASES.get(key, key)
    if field not in _fields():
        raise LoradynError(f"unknown parameter; known: {', '.join(parameter_names())}")
    return check_field(RunConfig, field, value)


def prepare(params: dict[str, Any], engine: str) -> dict[str, Any]:
    """Canonical parameters of one task: ``RunConfig(**params, engine=engine).to_dict()``."""
    params = dict(params)
    for alias, field in ALIASES.items():
        if alias in params:
            if field in params:
                raise LoradynError(f"give {alias} or {field}, not both")
            params[field] = params.pop(alias)
    try:
        cfg = RunConfig(**params, engine=engine)
    except TypeError as exc:
        raise LoradynError(f"invalid parameters: {exc}") from None
    return cfg.to_dict()


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
    return RunConfig.from_dict({**params, "engine": engine}).key()


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
