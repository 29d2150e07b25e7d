"""The built-in sweep kind ``simulate``: one task = one :func:`loradyn.engines.simulate` run.

Parameters are the fields of :class:`loradyn.config.RunConfig` (``teacher``, ``student``,
``label``, ``loss``, ``mu``, ``d``, ``lr``, ``batch``, ``steps``, ``seeds``, ``seed0``,
``u0``, ``m0``, ``p0``, ``update``, ``pretraining``, ``record_every``, ``threshold``,
``backend``, ``device``, ``teacher_direction``, ``switch_label``, ``switch_step``,
``switch_m``, ``nodes``, ``sampler``), except ``engine``, which is set once in
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

import dataclasses
import warnings
from typing import Any

from ..config import ENGINES, RunConfig
from ..errors import LoradynError
from .kinds import TaskKind, register_kind

ALIASES = {"seed": "seed0"}
NOT_PARAMETERS = {"engine": 'set the engine once in [sweep], e.g. engine = "reduced"'}
# Fields validated together with the value that makes them meaningful.
_CONTEXT: dict[str, dict[str, Any]] = {
    "p0": {"pretraining": "misaligned"},
    "switch_step": {"switch_label": "square"},
    "switch_m": {"switch_label": "square"},
    "switch_label": {"switch_step": 0},
}


def _fields() -> dict[str, str]:
    """RunConfig's init fields with their annotation text (``"int | None"``, ...)."""
    return {f.name: str(f.type) for f in dataclasses.fields(RunConfig) if f.init}


def parameter_names() -> list[str]:
    """Keys a ``simulate`` sweep accepts in ``[grid]`` and ``[fixed]``."""
    return sorted((set(_fields()) - set(NOT_PARAMETERS)) | set(ALIASES))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_type(key: str, field: str, annotation: str, value: Any) -> None:
    base = annotation.replace(" ", "").replace("|None", "").replace("None|", "")
    shown = f"{value!r} ({type(value).__name__})"
    if base == "str" and not isinstance(value, str):
        raise LoradynError(f"{shown} is not a string: write {key} = \"...\"")
    if base == "int" and not (_is_number(value) and float(value).is_integer()):
        raise LoradynError(f"{shown} is not an integer: write e.g. {key} = 1000")
    if base == "float" and not _is_number(value):
        raise LoradynError(f"{shown} is not a number: write e.g. {key} = 0.2")
    if field == "mu":
        items = value if isinstance(value, list) else [value]
        if not items or not all(_is_number(v) for v in items):
            raise LoradynError(f"{shown} is not a number or a list of numbers in [0, 1]")


def check_value(key: str, value: Any) -> Any:
    """Check one ``simulate`` parameter on its own; return it coerced (``int``/``float``).

    Raises ``LoradynError`` for an unknown key, a wrong type or an invalid value.
    """
    if key in NOT_PARAMETERS:
        raise LoradynError(f"not a task parameter: {NOT_PARAMETERS[key]}")
    field = ALIASES.get(key, key)
    fields = _fields()
    if field not in fields:
        raise LoradynError(f"unknown parameter; known: {', '.join(parameter_names())}")
    annotation = fields[field]
    _check_type(key, field, annotation, value)
    try:
        cfg = RunConfig(**{**_CONTEXT.get(field, {}), field: value})
    except LoradynError:
        raise
    except (TypeError, ValueError) as exc:
        raise LoradynError(f"{value!r} is invalid: {exc}") from None
    if "int" in annotation and _is_number(value):
        return int(value)
    if "float" in annotation and _is_number(value):
        return float(value)
    if field == "mu":
        return [float(v) for v in value] if isinstance(value, list) else float(value)
    if field in ("teacher", "student"):
        return getattr(cfg, field)
    return value


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


def run(params: dict[str, Any], engine: str) -> Any:
    """Run one task: :func:`loradyn.engines.simulate` on ``RunConfig.from_dict(params)``.

    Divergence warnings are not printed by the worker; the dataset keeps them in
    ``attrs["warnings"]``. A run whose every trajectory diverged raises
    :class:`~loradyn.errors.DivergenceError`, which the runner records.
    """
    from ..engines import simulate

    cfg = RunConfig.from_dict(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return simulate(cfg, engine=engine)


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
    ),
    replace=True,
)
