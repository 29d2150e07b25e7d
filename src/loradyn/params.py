r"""The config protocol: each field of a configuration is declared once, here derived.

A configuration class (:class:`loradyn.config.RunConfig`,
:class:`loradyn.twolayer.TwoLayerConfig`) is a frozen dataclass whose fields are made by
:func:`param`. One declaration gives a field's

- **type** (``kind``: ``str``, ``int``, ``float``, ``bool``, ``floats`` -- a number or a
  flat list of numbers --, or ``any``) and **default** (the dataclass default; ``None``
  makes the field optional);
- **validation**: ``check(value, cfg) -> value`` normalizes one value (``cfg`` holds the
  fields before it, already normalized) and raises
  :class:`~loradyn.errors.LoradynError` with one line; ``choices`` adds a check against a
  fixed list;
- **help** text (docstrings, ``--help``, error messages);
- **role**: ``physics`` (what is computed; always part of the hash) or ``execution``
  (how it is computed: engine, backend, device, sampler...). An execution option enters
  the hash only where it can change the numbers (``applies(cfg)``), and then in its
  resolved form (``resolve(value, cfg)``, e.g. ``device=None`` -> ``cpu``), so that one
  key never names two different results and options that change nothing are left out
  (in the spirit of ``scipy.integrate.solve_ivp(fun, t_span, y0, method=..., **options)``).

From these declarations come, without a second list anywhere:

- :func:`validate` (called by the class's ``__post_init__``), :func:`to_dict`,
  :func:`from_dict`, :func:`canonical_json` and :func:`config_key` (sha256 of the canonical
  JSON of :func:`hash_dict`);
- :func:`check_value`: the sweep-file check of one ``[grid]``/``[fixed]`` value;
- :func:`typer_parameters` / :func:`cli_command`: the Typer options of a CLI command.

Adding a field is a one-place change: add ``name: type = param(default, help=...,
check=...)`` to the class (and, for an execution option, ``applies``/``resolve``); the
CLI option, the sweep check, the JSON and the hash follow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LoradynError, as_int

PHYSICS = "physics"
EXECUTION = "execution"
KINDS = ("str", "int", "float", "bool", "floats", "any")
KEY_LENGTH = 16  # hex characters of the sha256 kept in a config key

__all__ = [
    "EXECUTION",
    "PHYSICS",
    "Declared",
    "Param",
    "canonical_json",
    "check_value",
    "cli_command",
    "config_key",
    "content_hash",
    "declared",
    "execution_options",
    "from_dict",
    "hash_dict",
    "param",
    "parse_floats",
    "parse_ints",
    "physics",
    "to_dict",
    "typer_parameters",
    "validate",
]


@dataclass(frozen=True)
class Param:
    """The declaration of one configuration field (see the module docstring)."""

    help: str
    kind: str = "any"
    role: str = PHYSICS
    check: Callable[[Any, Any], Any] | None = None
    choices: tuple[str, ...] = ()
    applies: Callable[[Any], bool] | None = None
    resolve: Callable[[Any, Any], Any] | None = None
    cli: tuple[str, ...] = ()
    cli_parse: Callable[[str], Any] | None = None
    cli_help: str | None = None
    sweep_context: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.role not in (PHYSICS, EXECUTION):
            raise ValueError(f"role must be {PHYSICS!r} or {EXECUTION!r}, got {self.role!r}")


def param(
    default: Any,
    help: str,
    *,
    kind: str = "any",
    role: str = PHYSICS,
    check: Callable[[Any, Any], Any] | None = None,
    choices: tuple[str, ...] = (),
    applies: Callable[[Any], bool] | None = None,
    resolve: Callable[[Any, Any], Any] | None = None,
    cli: tuple[str, ...] = (),
    cli_parse: Callable[[str], Any] | None = None,
    cli_help: str | None = None,
    sweep_context: Mapping[str, Any] | None = None,
) -> Any:
    """A dataclass field carrying its :class:`Param` declaration.

    Parameters
    ----------
    default
        The default value (``None``: optional).
    help
        One line for ``--help``, the docs and error messages.
    kind
        ``str``, ``int``, ``float``, ``bool``, ``floats`` or ``any`` (the TOML/CLI type).
    role
        ``physics`` or ``execution``.
    check
        ``check(value, cfg) -> value``: normalize and validate (raise ``LoradynError``).
    choices
        Allowed strings (checked case-insensitively, stored lower-case).
    applies, resolve
        Execution options only: whether the option can change the numbers of ``cfg``, and
        its resolved value for the hash.
    cli, cli_parse, cli_help
        Extra option names (``("-t",)``), a parser of the option's text (lists), and a
        help text for the CLI when it differs from ``help``.
    sweep_context
        Other field values under which a lone value of this field is checked in a sweep
        file (``p0`` needs ``pretraining = "misaligned"``).
    """
    spec = Param(help=help, kind=kind, role=role, check=check, choices=tuple(choices),
                 applies=applies, resolve=resolve, cli=tuple(cli), cli_parse=cli_parse,
                 cli_help=cli_help, sweep_context=sweep_context)
    return dataclasses.field(default=default, metadata={"loradyn": spec})


def declared(cls_or_obj: Any) -> list[tuple[dataclasses.Field, Param]]:
    """The declared fields of a config class (or instance), in declaration order."""
    out = []
    for f in dataclasses.fields(cls_or_obj):
        spec = f.metadata.get("loradyn")
        if f.init and spec is not None:
            out.append((f, spec))
    return out


def _choice(name: str, value: Any, options: tuple[str, ...]) -> str:
    v = str(value).strip().lower() if value is not None else ""
    low = {o.lower(): o for o in options}
    if v not in low:
        raise LoradynError(f"{name} = {value!r} is unknown: choose one of {', '.join(options)}")
    return low[v]


def validate(obj: Any) -> None:
    """Normalize and check every declared field of ``obj`` in declaration order.

    Called by ``__post_init__``; a field is checked with the fields before it already
    normalized. ``None`` is kept for an optional field (default ``None``) unless its
    ``check`` fills it in (it is then called with ``None``).
    """
    for f, spec in declared(obj):
        value = getattr(obj, f.name)
        if spec.choices and not (value is None and f.default is None):
            value = _choice(f.name, value, spec.choices)
        if spec.check is not None:
            value = spec.check(value, obj)
        object.__setattr__(obj, f.name, value)


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def to_dict(obj: Any) -> dict[str, Any]:
    """Every declared field of ``obj`` as JSON-friendly values (tuples become lists)."""
    return {f.name: _plain(getattr(obj, f.name)) for f, _ in declared(obj)}


def from_dict(cls: type, data: Any) -> Any:
    """Build ``cls`` from a mapping of field values; an unknown key is a one-line error."""
    if not isinstance(data, Mapping):
        raise LoradynError(
            f"a {cls.__name__} needs a mapping of field names to values, got "
            f"{type(data).__name__}"
        )
    names = [f.name for f, _ in declared(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise LoradynError(
            f"unknown configuration key {unknown[0]!r}: valid keys are {', '.join(sorted(names))}"
        )
    return cls(**dict(data))


def _jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, str | bytes):
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        raise LoradynError(f"value {obj!r} is not finite: configuration values must be finite")
    return obj


def canonical_json(obj: Any) -> str:
    """JSON text with sorted keys and no spaces: the input of every hash in loradyn."""
    return json.dumps(_jsonable(obj), sort_keys=True, separators=(",", ":"), allow_nan=False)


def physics(obj: Any) -> dict[str, Any]:
    """The physics fields of ``obj`` (what is computed)."""
    return {f.name: _plain(getattr(obj, f.name)) for f, s in declared(obj) if s.role == PHYSICS}


def execution_options(obj: Any) -> dict[str, Any]:
    """The execution options of ``obj`` as given (how it is computed)."""
    return {f.name: _plain(getattr(obj, f.name)) for f, s in declared(obj) if s.role == EXECUTION}


def hash_dict(obj: Any) -> dict[str, Any]:
    """What determines the numbers of ``obj``: its physics fields and the execution options
    that apply to it, resolved (``device=None`` -> the device that will run)."""
    out = physics(obj)
    for f, s in declared(obj):
        if s.role != EXECUTION:
            continue
        if s.applies is not None and not s.applies(obj):
            continue
        v = getattr(obj, f.name)
        out[f.name] = _plain(s.resolve(v, obj) if s.resolve is not None else v)
    return out


def content_hash(obj: Any, length: int = KEY_LENGTH) -> str:
    """The one hash of loradyn: sha256 (first ``length`` hex digits) of
    :func:`canonical_json` of ``obj``. Config keys (:func:`config_key`), sweep task keys
    (:func:`loradyn.sweep.spec.task_key`) and ViT experiment keys
    (:meth:`loradyn.vit.config.ExperimentConfig.work_key`) are all made by it."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


def config_key(obj: Any, length: int = KEY_LENGTH) -> str:
    """:func:`content_hash` of :func:`hash_dict`, prefixed by the class name so that two
    kinds of config never share a key."""
    return content_hash({"class": type(obj).__name__, "config": hash_dict(obj)}, length)


class Declared:
    """Mixin of a declared config class: the methods every config gets from its declaration.

    A frozen dataclass whose fields are made by :func:`param` and which inherits this mixin
    has :meth:`to_dict`/:meth:`from_dict`, :meth:`to_json`/:meth:`from_json` (canonical
    JSON), :meth:`physics`, :meth:`options`, :meth:`hash_dict`, :meth:`key` and
    :meth:`replace`, all derived from the field declarations (no second list of fields).
    """

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every declared field (tuples as lists)."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Rebuild a config from :meth:`to_dict` output (an unknown key is an error)."""
        return from_dict(cls, data)

    def to_json(self) -> str:
        """Canonical JSON (sorted keys, compact): the same config gives the same string."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Inverse of :meth:`to_json` (also reads a result's ``attrs["config"]``)."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LoradynError(f"configuration is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise LoradynError("configuration JSON must be an object")
        return cls.from_dict(data)

    def physics(self) -> dict[str, Any]:
        """The fields that say what is computed."""
        return physics(self)

    def options(self) -> dict[str, Any]:
        """The execution options (how it is computed), as given."""
        return execution_options(self)

    def hash_dict(self) -> dict[str, Any]:
        """What determines the numbers: physics plus the applying, resolved options."""
        return hash_dict(self)

    def key(self) -> str:
        """A stable 16-hex-digit key of what determines the numbers (:func:`config_key`).

        Execution options that cannot change the result are left out and those that can
        are resolved first (``device=None`` -> ``cuda`` or ``cpu``), so one key names one
        result.
        """
        return config_key(self)

    def hash(self) -> str:
        """Alias of :meth:`key`."""
        return self.key()

    def replace(self, **changes: Any) -> Any:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# ---------------------------------------------------------------------------- sweep files


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def check_type(key: str, kind: str, value: Any) -> None:
    """Check the TOML type of one value against a field's ``kind`` (message without key)."""
    shown = f"{value!r} ({type(value).__name__})"
    if kind == "str" and not isinstance(value, str):
        raise LoradynError(f"{shown} is not a string: write {key} = \"...\"")
    if kind == "int" and not (_is_number(value) and float(value).is_integer()):
        raise LoradynError(f"{shown} is not an integer: write e.g. {key} = 1000")
    if kind == "float" and not _is_number(value):
        raise LoradynError(f"{shown} is not a number: write e.g. {key} = 0.2")
    if kind == "bool" and not isinstance(value, bool):
        raise LoradynError(f"{shown} is not a boolean: write {key} = true or false")
    if kind == "floats":
        items = value if isinstance(value, list) else [value]
        if not items or not all(_is_number(v) for v in items):
            raise LoradynError(f"{shown} is not a number or a list of numbers")


def check_value(cls: type, key: str, value: Any) -> Any:
    """Check one sweep value of field ``key`` of ``cls`` on its own; return it coerced.

    The TOML type is checked against the field's ``kind``, then the value by the class
    itself (defaults elsewhere, plus the field's ``sweep_context``). The message does not
    repeat the key (the sweep spec prefixes ``grid.KEY:``).
    """
    specs = {f.name: (f, s) for f, s in declared(cls)}
    if key not in specs:
        raise LoradynError(f"unknown parameter; known: {', '.join(sorted(specs))}")
    f, s = specs[key]
    if value is None:
        raise LoradynError("a value is required (TOML has no null): leave the key out instead")
    check_type(key, s.kind, value)
    try:
        cfg = cls(**{**dict(s.sweep_context or {}), key: value})
    except LoradynError:
        raise
    except (TypeError, ValueError) as exc:
        raise LoradynError(f"{value!r} is invalid: {exc}") from None
    if s.kind == "int":
        return int(value)
    if s.kind == "float":
        return float(value)
    if s.kind == "floats":
        return [float(v) for v in value] if isinstance(value, list) else float(value)
    if s.kind == "str" and s.check is not None:
        return _plain(getattr(cfg, key))
    return value


# ---------------------------------------------------------------------------- CLI


def parse_floats(text: str, what: str) -> list[float]:
    """A CLI comma list of numbers (``"0.5,0.8"``); a one-line error names ``what``."""
    try:
        vals = [float(t) for t in str(text).replace(" ", "").split(",") if t]
    except ValueError:
        raise LoradynError(
            f"{what} = {text!r} is not a comma list of numbers, e.g. 0.5,0.8"
        ) from None
    if not vals:
        raise LoradynError(f"{what} is empty: give a comma list, e.g. 0.5,0.8")
    return vals


def parse_ints(text: str, what: str) -> list[int]:
    """A CLI comma list of integers >= 1 below 2^31 (``"1,2,4"``)."""
    vals = parse_floats(text, what)
    try:
        return [as_int(what, v, lo=1, hi=2**31 - 1) for v in vals]
    except LoradynError:
        raise LoradynError(
            f"{what} = {text!r} is invalid: give integers >= 1 (below 2^31), e.g. 1,2,4"
        ) from None


_CLI_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool,
                               "floats": str, "any": str}


def typer_parameters(
    cls: type,
    *,
    skip: tuple[str, ...] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[inspect.Parameter]:
    """One keyword :class:`inspect.Parameter` with a ``typer.Option`` per declared field.

    ``overrides[name]`` may set ``default`` (e.g. ``...`` for a required option),
    ``names`` (the option names), ``help`` or ``type`` (the option's Python type, e.g.
    ``str`` for an integer option that also takes a comma list). Fields in ``skip`` get no
    option (the command must then set them itself).
    """
    import typer

    overrides = overrides or {}
    out = []
    for f, s in declared(cls):
        if f.name in skip:
            continue
        o = dict(overrides.get(f.name, {}))
        flag = "--" + f.name.replace("_", "-")
        names = tuple(o.get("names", (flag, *s.cli)))
        typ = o.get("type", _CLI_TYPES[s.kind])
        default = o.get("default", f.default)
        text = o.get("help", s.cli_help or s.help)
        if s.choices:
            text = f"{text} ({' | '.join(s.choices)})"
        if s.kind == "bool":
            names = (f"{flag}/--no-{f.name.replace('_', '-')}",)
        if isinstance(default, tuple):
            default = ",".join(str(v) for v in default)
        if default is None:
            typ = typ | None  # type: ignore[assignment]
        option = typer.Option(default, *names, help=text, show_default=default is not None)
        out.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                     annotation=typ))
    return out


def cli_command(
    cls: type,
    body: Callable[..., Any],
    *,
    extra: list[inspect.Parameter] = (),  # type: ignore[assignment]
    skip: tuple[str, ...] = (),
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Callable[..., Any]:
    """A function for ``app.command()`` whose options are the declared fields of ``cls``
    (:func:`typer_parameters`) followed by ``extra``.

    When called by Typer, the option texts of ``floats`` fields are parsed with their
    ``cli_parse`` and ``body(fields, **extra_values)`` is called, ``fields`` being the dict
    of field values (without the skipped ones).
    """
    params = typer_parameters(cls, skip=skip, overrides=overrides)
    names = {p.name for p in params}
    specs = {f.name: s for f, s in declared(cls)}

    def command(**kwargs: Any) -> Any:
        fields = {}
        for name in names:
            v = kwargs.pop(name)
            s = specs[name]
            if isinstance(v, str) and s.cli_parse is not None:
                v = s.cli_parse(v)
            fields[name] = v
        return body(fields, **kwargs)

    command.__name__ = getattr(body, "__name__", "command")
    command.__doc__ = body.__doc__
    allp = [*params, *extra]
    command.__signature__ = inspect.Signature(allp)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in allp}
    return command
