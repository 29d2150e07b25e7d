"""The sweep kind ``twolayer``: one task = one :func:`loradyn.twolayer.simulate` run.

Parameters are the fields of :class:`loradyn.twolayer.TwoLayerConfig` (``mu``, ``rank``,
``ranks``, ``activation``, ``teacher``, ``norm``, ``d``, ``lr``, ``batch``, ``steps``,
``seeds``, ``seed0``, ``a0``, ``m0``, ``update``, ``threshold``, ``record_every``,
``noise_term``, ...), except ``engine``, which is set once in ``[sweep]``; ``seed`` is
an alias of ``seed0``. ``mu`` (one alignment per teacher neuron) and ``ranks`` are lists,
so they go in ``[fixed]``; a grid over ``rank`` replaces the result's ``rank``
dimension. Each value is checked on its own before any task runs (its TOML type from the
field's annotation, then its value by :class:`TwoLayerConfig` itself).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from ..errors import LoradynError
from ..params import check_type
from .kinds import TaskKind, register_kind

ALIASES = {"seed": "seed0"}
NOT_PARAMETERS = {"engine": 'set the engine once in [sweep], e.g. engine = "reduced"'}
LISTS = {"mu": "floats", "ranks": "any", "m0": "any"}


def _config_cls():  # noqa: ANN202 - TwoLayerConfig, imported lazily
    from ..twolayer.model import TwoLayerConfig

    return TwoLayerConfig


def _kinds() -> dict[str, str]:
    """Field name -> TOML kind, from the dataclass annotations."""
    out = {}
    for f in dataclasses.fields(_config_cls()):
        if not f.init:
            continue
        base = str(f.type).replace(" ", "").replace("|None", "").replace("None|", "")
        out[f.name] = LISTS.get(f.name, base if base in ("str", "int", "float", "bool") else "any")
    return out


def parameter_names() -> list[str]:
    """Keys a ``twolayer`` sweep accepts in ``[grid]`` and ``[fixed]``."""
    return sorted((set(_kinds()) - set(NOT_PARAMETERS)) | set(ALIASES))


def check_value(key: str, value: Any) -> Any:
    """Check one ``twolayer`` parameter on its own; return it coerced."""
    if key in NOT_PARAMETERS:
        raise LoradynError(f"not a task parameter: {NOT_PARAMETERS[key]}")
    field = ALIASES.get(key, key)
    kinds = _kinds()
    if field not in kinds:
        raise LoradynError(f"unknown parameter; known: {', '.join(parameter_names())}")
    check_type(key, kinds[field], value)
    context: dict[str, Any] = {}
    if field in ("rank", "ranks"):
        context["d"] = 10**6  # a rank is checked against the dimension per task
    try:
        _config_cls()(**{**context, field: value})
    except LoradynError:
        raise
    except (TypeError, ValueError) as exc:
        raise LoradynError(f"{value!r} is invalid: {exc}") from None
    if kinds[field] == "int":
        return int(value)
    if kinds[field] == "float":
        return float(value)
    return value


def prepare(params: dict[str, Any], engine: str) -> dict[str, Any]:
    """Canonical parameters of one task: ``TwoLayerConfig(**params, engine=engine)``."""
    params = dict(params)
    for alias, field in ALIASES.items():
        if alias in params:
            if field in params:
                raise LoradynError(f"give {alias} or {field}, not both")
            params[field] = params.pop(alias)
    if "rank" in params and "ranks" not in params:
        params["ranks"] = None  # a grid over rank runs that rank alone
    try:
        cfg = _config_cls()(**params, engine=engine)
    except TypeError as exc:
        raise LoradynError(f"invalid parameters: {exc}") from None
    return cfg.to_dict()


def key(params: dict[str, Any], engine: str) -> str:
    """The task's content key: :meth:`TwoLayerConfig.key`."""
    return _config_cls().from_dict({**params, "engine": engine}).key()


def run(params: dict[str, Any], engine: str, progress: Any = None) -> Any:
    """Run one task: :func:`loradyn.twolayer.simulate` on ``TwoLayerConfig.from_dict``."""
    from ..twolayer import simulate

    cfg = _config_cls().from_dict({**params, "engine": engine})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return simulate(cfg, progress=progress)


TWOLAYER = register_kind(
    TaskKind(
        name="twolayer",
        run=run,
        check_value=check_value,
        prepare=prepare,
        engines=("reduced", "dense", "ode"),
        default_engine="reduced",
        replaces={"seed": "seed", "seed0": "seed", "rank": "rank"},
        description="one loradyn.twolayer.simulate run per task (TwoLayerConfig fields)",
        key=key,
    ),
    replace=True,
)
