"""Registry of sweep task kinds.

A *kind* says what one task of a sweep computes. The built-in kind ``simulate`` runs
:func:`loradyn.engines.simulate` on a :class:`loradyn.config.RunConfig`; another module
(for example the ViT experiments) can add its own kind with :func:`register_kind` and
then run its grids through the same spec, store and runner.

A kind provides:

- ``check_value(key, value) -> value``: validates one parameter on its own (known key,
  right type, known activation name, ...) and returns it coerced; raises
  :class:`~loradyn.errors.LoradynError` with a message that does not repeat the key
  (the spec prefixes ``grid.KEY:`` or ``fixed.KEY:``). Runs before any task starts.
- ``prepare(params, engine) -> dict``: turns the full parameters of one task (the
  ``[fixed]`` table merged with one grid point) into a canonical, JSON-serializable dict
  with every default filled in. The task key is a hash of this dict, so two spellings of
  the same configuration share one result. Raises ``LoradynError`` for a bad combination;
  the runner records that task as failed and runs the others.
- ``run(params, engine) -> xarray.Dataset``: computes the task from the canonical params.
  It is shipped to Dask workers, so it must be a module-level function of an importable
  module (pickled by reference).
- ``key(params, engine) -> str`` (optional): the content key of a task's result, e.g. the
  config's own hash; default: a hash of kind, engine and the canonical params.
- ``replaces``: grid key -> per-task dimension that a grid over that key replaces in the
  collected dataset (for ``simulate``: ``mu -> mu``, ``seed -> seed``); see
  :func:`loradyn.sweep.collect`.

A kind whose task is one declared configuration (:class:`loradyn.config.RunConfig`,
:class:`loradyn.twolayer.TwoLayerConfig`) gets ``check_value``, ``prepare``, ``key`` and
its parameter names from :class:`ConfigParams`, i.e. from the field declarations
(:mod:`loradyn.params`), never from a second list.

Kinds are looked up by name. Modules listed (comma separated) in the environment
variable ``LORADYN_SWEEP_PLUGINS`` are imported before a lookup, so a kind defined
outside loradyn can be used from the command line.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import LoradynError

PLUGIN_ENV = "LORADYN_SWEEP_PLUGINS"


@dataclass(frozen=True)
class TaskKind:
    """A kind of sweep task; see the module docstring for the meaning of each field."""

    name: str
    run: Callable[[dict[str, Any], str], Any]
    check_value: Callable[[str, Any], Any]
    prepare: Callable[[dict[str, Any], str], dict[str, Any]]
    engines: tuple[str, ...]
    default_engine: str
    replaces: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    key: Callable[[dict[str, Any], str], str] | None = None


@dataclass(frozen=True)
class ConfigParams:
    """The task parameters of a kind whose task is one declared config class.

    ``config`` returns the class (a function, so that the class may be imported lazily);
    its declared fields are the parameters, except ``not_parameters`` (``engine``, set
    once in ``[sweep]``), plus the ``aliases`` (``seed`` means ``seed0``). Each value is
    checked on its own by :func:`loradyn.params.check_value` (the field's TOML kind,
    then its value by the class itself, in the field's ``sweep_context``).
    """

    config: Callable[[], type]
    aliases: Mapping[str, str] = field(default_factory=lambda: {"seed": "seed0"})
    not_parameters: Mapping[str, str] = field(default_factory=lambda: {
        "engine": 'set the engine once in [sweep], e.g. engine = "reduced"'})

    def fields(self) -> list[str]:
        """The declared field names of the config class."""
        from ..params import declared

        return [f.name for f, _ in declared(self.config())]

    def names(self) -> list[str]:
        """Keys a sweep of this kind accepts in ``[grid]`` and ``[fixed]``."""
        return sorted((set(self.fields()) - set(self.not_parameters)) | set(self.aliases))

    def check_value(self, key: str, value: Any) -> Any:
        """Check one parameter on its own; return it coerced (``LoradynError`` if bad)."""
        from ..params import check_value

        if key in self.not_parameters:
            raise LoradynError(f"not a task parameter: {self.not_parameters[key]}")
        name = self.aliases.get(key, key)
        if name not in self.fields():
            raise LoradynError(f"unknown parameter; known: {', '.join(self.names())}")
        return check_value(self.config(), name, value)

    def build(self, params: Mapping[str, Any], engine: str) -> Any:
        """The config of one task (aliases resolved; ``engine`` from ``[sweep]``)."""
        params = dict(params)
        for alias, name in self.aliases.items():
            if alias in params:
                if name in params:
                    raise LoradynError(f"give {alias} or {name}, not both")
                params[name] = params.pop(alias)
        params["engine"] = engine
        try:
            return self.config()(**params)
        except TypeError as exc:
            raise LoradynError(f"invalid parameters: {exc}") from None

    def prepare(self, params: dict[str, Any], engine: str) -> dict[str, Any]:
        """Canonical parameters of one task: the config's ``to_dict()``."""
        return self.build(params, engine).to_dict()

    def key(self, params: dict[str, Any], engine: str) -> str:
        """The task's content key: the config's own :meth:`~loradyn.params.Declared.key`."""
        return self.config().from_dict({**params, "engine": engine}).key()


_KINDS: dict[str, TaskKind] = {}
# Built-in kinds, imported lazily so that ``import loradyn.sweep`` stays cheap.
_BUILTIN_MODULES: dict[str, str] = {
    "simulate": "loradyn.sweep.simulate",
    "twolayer": "loradyn.sweep.twolayer",
}


def register_kind(kind: TaskKind, *, replace: bool = False) -> TaskKind:
    """Register a task kind under ``kind.name`` and return it.

    Raises ``ValueError`` if the name is taken, unless ``replace`` is true.
    """
    if not replace and kind.name in _KINDS and _KINDS[kind.name] is not kind:
        raise ValueError(f"sweep kind {kind.name!r} is already registered")
    if kind.default_engine not in kind.engines:
        raise ValueError(f"default engine {kind.default_engine!r} not in {kind.engines}")
    _KINDS[kind.name] = kind
    return kind


def _import_plugins() -> None:
    for mod in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise LoradynError(
                f"cannot import sweep plugin module {mod!r} named in {PLUGIN_ENV}: {exc}"
            ) from exc


def get_kind(name: str) -> TaskKind:
    """Return the registered kind ``name``; raise ``LoradynError`` if there is none."""
    if name not in _KINDS and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    if name not in _KINDS:
        _import_plugins()
    if name not in _KINDS:
        known = ", ".join(available_kinds())
        raise LoradynError(f"sweep.kind: unknown kind {name!r}; known kinds: {known}")
    return _KINDS[name]


def available_kinds() -> list[str]:
    """Names of the registered kinds (built-in ones included)."""
    return sorted(set(_KINDS) | set(_BUILTIN_MODULES))
