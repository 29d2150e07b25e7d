"""The sweep kind ``twolayer``: one task = one :func:`loradyn.twolayer.simulate` run.

Parameters are the fields of :class:`loradyn.twolayer.TwoLayerConfig` (``mu``, ``rank``,
``ranks``, ``activation``, ``teacher``, ``norm``, ``d``, ``lr``, ``batch``, ``steps``,
``seeds``, ``seed0``, ``a0``, ``m0``, ``update``, ``threshold``, ``record_every``,
``noise_term``, ``stop_on_escape``, ...), except ``engine``, which is set once in
``[sweep]``; ``seed`` is an alias of ``seed0``. ``mu`` (one alignment per teacher neuron)
and ``ranks`` are lists, so they go in ``[fixed]``; a grid over ``rank`` replaces the
result's ``rank`` dimension. Each value is checked on its own before any task runs, from
the field's declaration (:func:`loradyn.params.check_value`: its TOML kind, then its value
by :class:`TwoLayerConfig` itself; a rank is checked at a large dimension, as it is
checked against ``d`` per task).
"""

from __future__ import annotations

import warnings
from typing import Any

from .kinds import ConfigParams, TaskKind, register_kind


def _config_cls():  # noqa: ANN202 - TwoLayerConfig, imported lazily
    from ..twolayer.model import TwoLayerConfig

    return TwoLayerConfig


PARAMS = ConfigParams(_config_cls)
ALIASES = PARAMS.aliases
NOT_PARAMETERS = PARAMS.not_parameters


def parameter_names() -> list[str]:
    """Keys a ``twolayer`` sweep accepts in ``[grid]`` and ``[fixed]``."""
    return PARAMS.names()


def check_value(key: str, value: Any) -> Any:
    """Check one ``twolayer`` parameter on its own; return it coerced.

    The check comes from the field's declaration (:func:`loradyn.params.check_value`).
    """
    return PARAMS.check_value(key, value)


def prepare(params: dict[str, Any], engine: str) -> dict[str, Any]:
    """Canonical parameters of one task: ``TwoLayerConfig(**params, engine=engine)``."""
    return PARAMS.prepare(params, engine)


def key(params: dict[str, Any], engine: str) -> str:
    """The task's content key: :meth:`TwoLayerConfig.key`."""
    return PARAMS.key(params, engine)


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
