"""Sweep files: parse, validate and expand a TOML sweep into tasks.

A sweep file has three tables::

    [sweep]
    name = "fig1"          # required
    engine = "reduced"     # reduced | dense | ode (default: the kind's default)
    kind = "simulate"      # optional; what one task computes (see loradyn.sweep.kinds)

    [grid]                 # each value is a non-empty list; the tasks are the
    teacher = ["linear", "he3"]   # Cartesian product of these lists
    mu = [0.1, 0.5, 0.9]
    seed = [0, 1, 2]

    [fixed]                # the same value for every task
    d = 1000
    lr = 0.2

The parameters of one task are ``[fixed]`` merged with one grid point. Everything is
validated before any task runs: an unknown table or key, a value of the wrong type, an
unknown activation, an empty grid raise :class:`~loradyn.errors.LoradynError` with one
line that names the key (``grid.teacher: ...``). A combination of valid values that the
configuration rejects (checked per task) makes only that task fail.

Each task is named by a hash of what determines its numbers (for ``simulate``, the
:meth:`loradyn.config.RunConfig.key` of its configuration), see :func:`task_key`; a
sweep and ``loradyn reproduce`` therefore name the same simulation alike.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LoradynError
from ..params import content_hash
from .kinds import TaskKind, get_kind

TABLES = ("sweep", "grid", "fixed")
SWEEP_KEYS = ("name", "engine", "kind", "description")
KEY_LENGTH = 20  # hex characters of the sha256 kept in a task key


def task_key(kind: str, engine: str, params: Mapping[str, Any]) -> str:
    """Hash naming a task's result.

    A kind that declares ``key`` (``simulate``: :meth:`loradyn.config.RunConfig.key`, which
    hashes what determines the numbers) names it; otherwise, or for an invalid task, the
    sha256 of the canonical JSON of kind, engine and params.
    """
    k = get_kind(kind)
    if k.key is not None:
        try:
            return k.key(dict(params), engine)
        except LoradynError:
            pass
    return content_hash({"kind": kind, "engine": engine, "params": params}, KEY_LENGTH)


@dataclass(frozen=True)
class Task:
    """One task of a sweep.

    ``point`` holds the grid values (as written in the spec, coerced), ``index`` their
    positions in the grid lists, ``params`` the canonical parameters the task runs with.
    ``error`` is set (and ``params`` holds the raw merged parameters) when the
    configuration of this grid point is invalid; such a task is recorded as failed.
    """

    key: str
    index: tuple[int, ...]
    point: dict[str, Any]
    params: dict[str, Any]
    error: str | None = None

    def label(self) -> str:
        """``teacher=he3 mu=0.5``: the grid point in one short line."""
        return " ".join(f"{k}={v}" for k, v in self.point.items())


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: name, kind, engine, ordered grid, fixed parameters."""

    name: str
    kind: str
    engine: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    description: str = ""
    source: str | None = field(default=None, compare=False)

    @property
    def size(self) -> int:
        """Number of tasks (product of the grid list lengths)."""
        return math.prod(len(v) for v in self.grid.values())

    def identity(self) -> str:
        """Hash of what defines the sweep (comments and layout of the file excluded)."""
        return content_hash(self.to_dict(), KEY_LENGTH)

    def to_dict(self) -> dict[str, Any]:
        """The spec as nested tables (grid order preserved as a list of pairs)."""
        sweep = {"name": self.name, "kind": self.kind, "engine": self.engine}
        if self.description:
            sweep["description"] = self.description
        return {
            "sweep": sweep,
            "grid": [[k, list(v)] for k, v in self.grid.items()],
            "fixed": dict(self.fixed),
        }

    def to_toml(self) -> str:
        """The spec as TOML text (the original text when the spec was read from a file)."""
        if self.source is not None:
            return self.source
        lines = ["[sweep]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.to_dict()["sweep"].items()]
        lines += ["", "[grid]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.grid.items()]
        lines += ["", "[fixed]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.fixed.items()]
        return "\n".join(lines) + "\n"

    def task_kind(self) -> TaskKind:
        """The registered :class:`TaskKind` of this sweep."""
        return get_kind(self.kind)

    def tasks(self) -> list[Task]:
        """Expand the grid into tasks, in C order (the last grid key varies fastest).

        Raises ``LoradynError`` if two grid points describe the same configuration.
        """
        kind = self.task_kind()
        keys = list(self.grid)
        out: list[Task] = []
        seen: dict[str, Task] = {}
        for index in itertools.product(*(range(len(self.grid[k])) for k in keys)):
            point = {k: self.grid[k][i] for k, i in zip(keys, index, strict=True)}
            merged = {**self.fixed, **point}
            try:
                params = kind.prepare(dict(merged), self.engine)
                error = None
            except LoradynError as exc:
                params, error = merged, str(exc)
            key = task_key(self.kind, self.engine, params)
            task = Task(key=key, index=tuple(index), point=point, params=params, error=error)
            if key in seen:
                raise LoradynError(
                    f"grid points {seen[key].label()!r} and {task.label()!r} describe the same "
                    "task: remove one of them from [grid]"
                )
            seen[key] = task
            out.append(task)
        return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise LoradynError(f"cannot write {v!r} as a TOML value")


def _check_table(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, Mapping):
        raise LoradynError(
            f"{name} must be a table: write it as [{name}] followed by key = value lines"
        )
    return dict(value)


def spec_from_dict(data: Mapping[str, Any], source: str | None = None) -> SweepSpec:
    """Validate a sweep given as nested dicts (the parsed TOML) and return a :class:`SweepSpec`.

    Raises
    ------
    LoradynError
        One line naming the offending table or key.
    """
    if not isinstance(data, Mapping):
        raise LoradynError("a sweep must be a table with [sweep], [grid] and [fixed]")
    for top in data:
        if top not in TABLES:
            raise LoradynError(
                f"unknown table or key {top!r} at the top level: a sweep file has only "
                "[sweep], [grid] and [fixed]"
            )
    sweep = _check_table(data, "sweep")
    if "sweep" not in data:
        raise LoradynError('missing [sweep] table: add [sweep] with name = "..."')
    for k in sweep:
        if k not in SWEEP_KEYS:
            raise LoradynError(f"sweep.{k}: unknown key; [sweep] takes {', '.join(SWEEP_KEYS)}")
    name = sweep.get("name")
    if not isinstance(name, str) or not name.strip():
        raise LoradynError('sweep.name: give the sweep a non-empty name, e.g. name = "fig1"')
    kind_name = sweep.get("kind", "simulate")
    if not isinstance(kind_name, str):
        raise LoradynError(f"sweep.kind: {kind_name!r} is not a string")
    kind = get_kind(kind_name)
    engine = sweep.get("engine", kind.default_engine)
    if engine not in kind.engines:
        raise LoradynError(
            f"sweep.engine: unknown engine {engine!r}; choose one of {', '.join(kind.engines)}"
        )
    description = sweep.get("description", "")
    if not isinstance(description, str):
        raise LoradynError("sweep.description: must be a string")

    raw_grid = _check_table(data, "grid")
    if not raw_grid:
        raise LoradynError(
            "the [grid] table is empty: give at least one parameter with a list of values, "
            "e.g. mu = [0.1, 0.5]"
        )
    grid: dict[str, list[Any]] = {}
    for key, values in raw_grid.items():
        where = f"grid.{key}"
        if not isinstance(values, list) or not values:
            raise LoradynError(
                f"{where}: must be a non-empty list of values, e.g. {key} = [value1, value2]"
            )
        coerced = []
        for v in values:
            if isinstance(v, list | dict):
                raise LoradynError(
                    f"{where}: each grid value must be a number, string or boolean, got {v!r}"
                )
            coerced.append(_check(kind, where, key, v))
        seen: set[Any] = set()
        for v in coerced:
            if v in seen:
                raise LoradynError(f"{where}: value {v!r} appears twice; list each value once")
            seen.add(v)
        grid[key] = coerced

    raw_fixed = _check_table(data, "fixed")
    fixed: dict[str, Any] = {}
    for key, value in raw_fixed.items():
        if key in grid:
            raise LoradynError(
                f"fixed.{key}: {key} is also in [grid]; keep it in one table only"
            )
        fixed[key] = _check(kind, f"fixed.{key}", key, value)

    return SweepSpec(
        name=name.strip(),
        kind=kind.name,
        engine=engine,
        grid=grid,
        fixed=fixed,
        description=description,
        source=source,
    )


def _check(kind: TaskKind, where: str, key: str, value: Any) -> Any:
    try:
        return kind.check_value(key, value)
    except LoradynError as exc:
        raise LoradynError(f"{where}: {exc}") from None


def parse_spec(text: str, origin: str = "sweep file") -> SweepSpec:
    """Parse and validate TOML text; ``origin`` names the source in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = " ".join(str(exc).split())
        raise LoradynError(f"{origin} is not valid TOML: {msg}") from None
    return spec_from_dict(data, source=text)


def load_spec(source: SweepSpec | Mapping[str, Any] | str | Path) -> SweepSpec:
    """Return a validated :class:`SweepSpec` from a spec, a dict or a path to a TOML file."""
    if isinstance(source, SweepSpec):
        return source
    if isinstance(source, Mapping):
        return spec_from_dict(source)
    if not isinstance(source, str | os.PathLike):
        raise LoradynError(f"a sweep is a SweepSpec, a dict or the path of a TOML file, not "
                           f"{type(source).__name__}")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoradynError(f"sweep file {str(path)!r} does not exist") from None
    except (IsADirectoryError, UnicodeDecodeError, PermissionError) as exc:
        raise LoradynError(f"cannot read sweep file {str(path)!r}: {exc}") from None
    return parse_spec(text, origin=str(path))
