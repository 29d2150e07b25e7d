"""Registry of reproducible figures and tables.

A figure module defines one function ``make(ctx) -> FigureOutput`` and registers it with
:func:`register`. ``loradyn reproduce`` runs the registered figures in order; a figure
whose optional requirements (e.g. ``torch``) are missing, or whose module is not yet
available, is listed as pending instead of failing the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("quick", "paper")
# holds / fails: the stated test decides; inconclusive: the test cannot tell at this
# sample size (an interval straddling the criterion, a non-significant trend);
# not-tested: no data (the figure is pending, or nothing could be checked)
VERDICTS = ("holds", "fails", "inconclusive", "not-tested")


@dataclass(frozen=True)
class Claim:
    """One row of the claims table, evaluated from data produced in the run."""

    id: str
    section: str
    statement: str
    measured: str
    expected: str
    verdict: str

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


STORE_DIR = "data"
OLD_STORE_DIR = "cache"  # where earlier outputs kept the store of a reproduction


def store_dir(out: str | Path) -> Path:
    """The result store of a reproduction into ``out``: ``out/data`` (next to the figures'
    own data files), or ``out/cache`` for an output made before the store moved there
    (it has ``cache/results/`` and no ``data/results/``), so that its results are kept."""
    out = Path(out)
    new, old = out / STORE_DIR, out / OLD_STORE_DIR
    if not (new / "results").is_dir() and (old / "results").is_dir():
        return old
    return new


@dataclass
class FigureContext:
    """What a figure function gets: where to write, at which scale, how to report progress.

    ``figures_dir`` and ``data_dir`` exist. ``progress(fraction, message)`` advances the
    progress display of this figure (fraction in [0, 1]). ``store`` is the result store
    of the simulations (default ``out/data``, :func:`store_dir`), ``reuse_other_code``
    serves results of other code from it, and ``submit(kind, params, engine, key)``, when
    set, runs a task on the Dask cluster of the run and returns its stored result;
    ``offline`` (``reproduce --from-data``) serves stored results only and simulates
    nothing.
    """

    out: Path
    scale: str = "quick"
    engine: str = "reduced"
    progress: Callable[[float, str], None] = lambda fraction, message="": None
    seed: int = 0
    store: Path | None = None
    reuse_other_code: bool = False
    submit: Callable[[str, dict, str, str], Any] | None = None
    offline: bool = False

    @property
    def figures_dir(self) -> Path:
        return self.out / "figures"

    @property
    def data_dir(self) -> Path:
        return self.out / "data"

    @property
    def store_root(self) -> Path:
        """The folder of the run's result store (``store``, else :func:`store_dir`)."""
        return Path(self.store) if self.store is not None else store_dir(self.out)


@dataclass
class FigureOutput:
    """What a figure function returns: files written, caption, claims evaluated."""

    caption: str
    files: list[Path] = field(default_factory=list)
    data: list[Path] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    kind: str = "figure"  # or "table"
    html: str | None = None  # optional HTML snippet (e.g. a table) for the report


@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: id (``fig1``), title, function, optional module requirements."""

    id: str
    title: str
    make: Callable[[FigureContext], FigureOutput]
    requires: tuple[str, ...] = ()
    order: float = 0.0


_FIGURES: dict[str, FigureSpec] = {}
MakeFn = Callable[[FigureContext], FigureOutput]


def register(
    id: str, title: str, *, requires: tuple[str, ...] = (), order: float | None = None
) -> Callable[[MakeFn], MakeFn]:
    """Decorator registering ``make(ctx) -> FigureOutput`` under ``id``."""

    def deco(fn: MakeFn) -> MakeFn:
        o = order if order is not None else _default_order(id)
        _FIGURES[id] = FigureSpec(id, title, fn, tuple(requires), o)
        return fn

    return deco


def _default_order(id: str) -> float:
    digits = "".join(ch for ch in id if ch.isdigit())
    base = float(digits) if digits else 99.0
    return base + (100.0 if id.startswith("table") else 0.0)


def registered() -> list[FigureSpec]:
    """Registered figures, in order."""
    return sorted(_FIGURES.values(), key=lambda s: (s.order, s.id))
