"""``reproduce``: run every registered figure, collect the claims, write the report.

Figure modules are discovered in the :mod:`loradyn.reproduce` package: every module named
``figN`` or ``tableN`` is imported (which registers it). A module that cannot be imported
(``ImportError``) or whose ``requires`` are not installed is listed as *pending*, as is
every expected id (figures 1-14, Table 1) that no module provides yet; pending items never
fail the run.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import pkgutil
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from ..errors import LoradynError, as_int
from ..io import atomic_write_text
from .registry import Claim, FigureContext, FigureOutput, FigureSpec, registered

SCALES = ("quick", "paper", "test")
ENGINES = ("reduced", "dense")
# fig1..fig14 and table1 are the paper's; fig15 and fig16 go beyond it
EXPECTED = tuple(f"fig{i}" for i in range(1, 17)) + ("table1",)
_MODULE = re.compile(r"^(fig|table)\d+$")

# what each expected item is, for the pending list
DESCRIPTIONS = {
    "fig1": "linear dynamics and tau(mu) for linear, erf, ReLU, sigmoid",
    "fig2": "tau for pure Hermite activations and squared labels",
    "fig3": "misaligned pre-training",
    "fig4": "two-stage label squaring near the He3 singularity",
    "fig5": "dynamics across activations and mu",
    "fig6": "mean of even Hermite students",
    "fig7": "even-Hermite plateau",
    "fig8": "mechanical potential (App. F)",
    "fig9": "He3 near its singularity",
    "fig10": "ViT CIFAR-10 -> SVHN (App. J)",
    "fig11": "ViT EMNIST -> FashionMNIST (App. J)",
    "fig12": "ViT EMNIST -> shifted EMNIST (App. J)",
    "fig13": "two-layer LoRA escape times (App. K)",
    "fig14": "two-layer LoRA dynamics and rank (App. K)",
    "fig15": "escape-step distribution at finite d, prediction against SGD (beyond the paper)",
    "fig16": "two-layer from-scratch baseline beside LoRA (beyond the paper)",
    "table1": "ViT LoRA transfer table",
}

PACKAGES = ("numpy", "scipy", "xarray", "matplotlib", "netCDF4", "rich", "typer", "torch", "timm",
            "peft")


@dataclass
class ItemResult:
    """Outcome of one figure or table: ``done``, ``pending`` or ``failed``."""

    id: str
    title: str
    status: str
    output: FigureOutput | None = None
    seconds: float = 0.0
    reason: str = ""
    # CPU seconds of this process (all threads) spent on the item: on an idle machine a
    # single-threaded figure's wall time; kept in run.json to calibrate the ESTIMATEs
    cpu_seconds: float = 0.0


@dataclass
class ReproduceResult:
    """What :func:`reproduce` returns."""

    out: Path
    scale: str
    engine: str
    seed: int = 0
    items: list[ItemResult] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    seconds: float = 0.0
    report: Path | None = None
    claims_csv: Path | None = None

    @property
    def done(self) -> list[ItemResult]:
        return [i for i in self.items if i.status == "done"]

    @property
    def pending(self) -> list[ItemResult]:
        return [i for i in self.items if i.status == "pending"]

    @property
    def failed(self) -> list[ItemResult]:
        return [i for i in self.items if i.status == "failed"]


def discover() -> dict[str, str]:
    """Import every ``figN``/``tableN`` module of the package.

    Returns
    -------
    dict
        ``{module id: reason}`` for the modules that could not be imported.
    """
    from .. import reproduce as pkg

    problems: dict[str, str] = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        if not _MODULE.match(info.name):
            continue
        try:
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        except ImportError as exc:
            problems[info.name] = f"cannot import: {exc}"
        except Exception as exc:  # a broken module must not take the whole run down
            problems[info.name] = f"import error: {type(exc).__name__}: {exc}"
    return problems


def _missing(spec: FigureSpec) -> list[str]:
    return [r for r in spec.requires if importlib.util.find_spec(r) is None]


def parse_only(
    only: str | list[str] | tuple[str, ...] | None, extra: dict[str, str] | None = None
) -> list[str] | None:
    """Normalize ``--only`` (comma list) and check every id; ``None`` means all.

    Known ids: the expected figures/tables, the registered ones and ``extra`` (modules
    that exist but could not be imported).
    """
    if only is None:
        return None
    items = only.split(",") if isinstance(only, str) else list(only)
    ids = [s.strip().lower() for s in items if s.strip()]
    if not ids:
        raise LoradynError("--only is empty: give figure ids such as fig1,fig2")
    known = set(EXPECTED) | {s.id for s in registered()} | set(extra or {})
    bad = [i for i in ids if i not in known]
    if bad:
        raise LoradynError(
            f"unknown figure id {bad[0]!r}: choose from {', '.join(sorted(known, key=_order))}"
        )
    return ids


def _order(id: str) -> tuple[int, int]:
    digits = "".join(ch for ch in id if ch.isdigit()) or "99"
    return (1 if id.startswith("table") else 0, int(digits))


def expected_seconds(scale: str, ids: list[str] | None = None) -> float | None:
    """Sum of the figures' own run-time estimates (``ESTIMATE`` dicts); a figure without
    one for ``scale`` counts 0."""
    discover()
    total = 0.0
    for spec in registered():
        if ids is not None and spec.id not in ids:
            continue
        mod = sys.modules.get(spec.make.__module__)
        est = getattr(mod, "ESTIMATE", None)
        if not est or scale not in est:
            continue
        total += float(est[scale])
    return total


class _Progress:
    """Rich progress display (or a silent stand-in)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled
        self._p = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.console = Console(stderr=True)
            self._p = Progress(
                TextColumn("[bold]{task.fields[fid]:>7}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                transient=False,
            )
            self._overall = None
            self._total = total

    def __enter__(self) -> _Progress:
        if self._p is not None:
            self._p.__enter__()
            self._overall = self._p.add_task("all figures", total=max(self._total, 1), fid="total")
        return self

    def __exit__(self, *exc) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def start(self, fid: str, title: str):
        if self._p is None:
            return lambda fraction, message="": None
        task = self._p.add_task(title, total=1.0, fid=fid)

        def update(fraction: float, message: str = "") -> None:
            f = min(max(float(fraction), 0.0), 1.0)
            self._p.update(task, completed=f, description=message or title)

        update.task = task  # type: ignore[attr-defined]
        return update

    def finish(self, update, status: str, seconds: float) -> None:
        if self._p is None:
            return
        self._p.update(update.task, completed=1.0, description=f"{status} in {seconds:.1f} s")
        self._p.advance(self._overall, 1)

    def log(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(text)


def reproduce(
    out: str | Path,
    scale: str = "quick",
    only: str | list[str] | None = None,
    engine: str = "reduced",
    progress: bool = True,
    seed: int = 0,
) -> ReproduceResult:
    """Make every figure and table, the claims table and the HTML report.

    Parameters
    ----------
    out
        Output directory; gets ``figures/``, ``data/``, ``claims.csv``, ``index.html``
        and ``run.json``.
    scale
        ``quick`` (minutes on a laptop), ``paper`` (the paper's sizes: d = 1000, batch 500,
        1e4 steps, the paper's mu grids) or ``test`` (tiny, for the test suite).
    only
        Comma-separated ids (``fig1,fig2``) or a list; ``None`` runs everything.
    engine
        Simulation engine for the SGD points: ``reduced`` (exact, O(batch) per step) or
        ``dense`` (d-dimensional vectors).
    progress
        Show a rich progress display on stderr.
    seed
        Base seed of every simulation (results are bit-for-bit reproducible).

    Returns
    -------
    ReproduceResult
    """
    if scale not in SCALES:
        raise LoradynError(f"unknown scale {scale!r}: choose quick or paper")
    if engine not in ENGINES:
        raise LoradynError(f"unknown engine {engine!r}: choose reduced or dense")
    seed = check_seed(seed)
    t0 = time.perf_counter()
    import_problems = discover()
    ids = parse_only(only, extra=import_problems)
    out = prepare_out(out)
    kept = _previous_items(out, scale, engine, seed) if ids is not None else []

    specs = {s.id: s for s in registered()}
    every = set(EXPECTED) | set(specs) | set(import_problems)
    wanted = sorted(set(ids) if ids is not None else every, key=_order)
    result = ReproduceResult(out=out, scale=scale, engine=engine, seed=seed)
    runnable = []
    for fid in wanted:
        spec = specs.get(fid)
        if spec is None:
            reason = import_problems.get(fid, "module not available yet")
            title = DESCRIPTIONS.get(fid, fid)
            result.items.append(ItemResult(fid, title, "pending", reason=reason))
            continue
        miss = _missing(spec)
        if miss:
            result.items.append(
                ItemResult(fid, spec.title, "pending", reason=f"needs {', '.join(miss)}")
            )
            continue
        runnable.append(spec)

    with _Progress(progress, len(runnable)) as bar:
        for spec in runnable:
            update = bar.start(spec.id, spec.title)
            ctx = FigureContext(out=out, scale=scale, engine=engine, progress=update, seed=seed)
            t1, c1 = time.perf_counter(), time.process_time()
            try:
                fo = spec.make(ctx)
                item = ItemResult(spec.id, spec.title, "done", fo, time.perf_counter() - t1)
                (out / f"{spec.id}.error.txt").unlink(missing_ok=True)  # stale: it works now
            except ImportError as exc:
                item = ItemResult(spec.id, spec.title, "pending", None, time.perf_counter() - t1,
                                  # a missing module names itself; a figure's own
                                  # ImportError (no data, no GPU) says what it needs
                                  f"cannot import: {exc}" if exc.name else str(exc))
            except Exception as exc:
                tb = traceback.format_exc()
                atomic_write_text(out / f"{spec.id}.error.txt", tb, mkdir=False)
                item = ItemResult(spec.id, spec.title, "failed", None, time.perf_counter() - t1,
                                  f"{type(exc).__name__}: {exc}")
                bar.log(f"[red]{spec.id} failed: {type(exc).__name__}: {exc}")
            item.cpu_seconds = time.process_time() - c1
            bar.finish(update, item.status, item.seconds)
            result.items.append(item)

    # a partial rerun (--only) keeps the other items of the report it reruns into
    ran = {i.id for i in result.items}
    result.items += [i for i in kept if i.id not in ran]
    result.items.sort(key=lambda i: _order(i.id))
    from . import claims as claims_mod
    from . import report as report_mod

    result.claims = claims_mod.collect(result)
    result.claims_csv = claims_mod.write_csv(result.claims, out / "claims.csv")
    result.seconds = time.perf_counter() - t0
    _write_run_json(result, ids)
    result.report = report_mod.write_report(result)
    return result


def check_seed(seed: object) -> int:
    """The base seed as an int in [0, 2^32 - 1 - 10^6] (room for the figures' offsets), else
    a one-line error before any figure runs."""
    return as_int("--seed", seed, lo=0, hi=2**32 - 1 - 10**6)


def _previous_items(out: Path, scale: str, engine: str, seed: int) -> list[ItemResult]:
    """The items of the report already in ``out`` (same scale, engine and seed), rebuilt
    from its run.json; a done item whose files are gone is not kept."""
    p = out / "run.json"
    try:
        info = json.loads(p.read_text())
        if (info.get("scale"), info.get("engine"), info.get("seed", 0)) != (scale, engine, seed):
            return []
        items = []
        for d in info.get("items", []):
            fo = None
            if d["status"] == "done":
                o = d.get("output")
                if not isinstance(o, dict):
                    continue
                files = [out / f for f in o.get("files", [])]
                data = [out / f for f in o.get("data", [])]
                if not all(f.exists() for f in files + data):
                    continue
                fo = FigureOutput(o.get("caption", ""), files, data,
                                  [Claim(*c) for c in o.get("claims", [])],
                                  o.get("kind", "figure"), o.get("html"))
            item = ItemResult(d["id"], d.get("title", d["id"]), d["status"], fo,
                              float(d.get("seconds", 0.0)), d.get("reason", ""))
            item.cpu_seconds = float(d.get("cpu_seconds", 0.0))
            items.append(item)
        return items
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return []  # no readable earlier report: nothing to keep


def _output_json(result: ReproduceResult, item: ItemResult) -> dict | None:
    fo = item.output
    if item.status != "done" or fo is None:
        return None

    def rel(f: Path) -> str:
        try:
            return Path(f).resolve().relative_to(result.out.resolve()).as_posix()
        except ValueError:
            return str(f)

    return {"caption": fo.caption, "files": [rel(f) for f in fo.files],
            "data": [rel(f) for f in fo.data], "kind": fo.kind, "html": fo.html,
            "claims": [list(dataclasses.astuple(c)) for c in fo.claims]}


def prepare_out(out: str | Path) -> Path:
    """Create ``out`` with ``figures/`` and ``data/``; a path that cannot be a directory
    (an existing file, or a folder below a file) is a user error."""
    if not str(out).strip():
        raise LoradynError("--out is empty: give the report's directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LoradynError(f"--out {out} exists and is not a directory: choose another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "figures").mkdir(exist_ok=True)
        (out / "data").mkdir(exist_ok=True)
    except OSError as exc:
        raise LoradynError(f"cannot create --out {out}: {exc.strerror or exc}; "
                           "choose another path") from None
    return out


def package_versions() -> dict[str, str]:
    """Versions of Python, loradyn and the main dependencies (``-`` when absent)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        out["loradyn"] = metadata.version("loradyn")
    except metadata.PackageNotFoundError:
        from .. import __version__

        out["loradyn"] = __version__
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def _write_run_json(result: ReproduceResult, ids: list[str] | None) -> Path:
    info = {
        "command": "loradyn reproduce --scale {} --engine {}{} --out {}".format(
            result.scale, result.engine, f" --only {','.join(ids)}" if ids else "", result.out
        ),
        "scale": result.scale,
        "engine": result.engine,
        "seed": result.seed,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(result.seconds, 2),
        "versions": package_versions(),
        "items": [
            {"id": i.id, "title": i.title, "status": i.status, "seconds": round(i.seconds, 2),
             "cpu_seconds": round(i.cpu_seconds, 2), "reason": i.reason,
             "output": _output_json(result, i)}
            for i in result.items
        ],
    }
    return atomic_write_text(result.out / "run.json", json.dumps(info, indent=2), mkdir=False)
