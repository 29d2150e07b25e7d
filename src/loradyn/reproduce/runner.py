"""``reproduce``: run every registered figure, collect the claims, write the report.

Figure modules are discovered in the :mod:`loradyn.reproduce` package: every module named
``figN`` or ``tableN`` is imported (which registers it). A module that cannot be imported
(``ImportError``) or whose ``requires`` are not installed is listed as *pending*, as is
every expected id (figures 1-14, Table 1) that no module provides yet; pending items never
fail the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import json
import pkgutil
import re
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import LoradynError, as_int
from ..io import atomic_write_text
from ..progress import Progress, as_callback
from .environment import PACKAGES, package_versions  # noqa: F401 - re-exported
from .registry import (
    STORE_DIR,
    Claim,
    FigureContext,
    FigureOutput,
    FigureSpec,
    registered,
    store_dir,
)

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


def reproduce(
    out: str | Path,
    scale: str = "quick",
    only: str | list[str] | None = None,
    engine: str = "reduced",
    progress: bool | Progress = True,
    seed: int = 0,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    store: str | Path | None = None,
    reuse_other_code: bool = False,
    from_data: str | Path | None = None,
) -> ReproduceResult:
    """Make every figure and table, the claims table and the HTML report.

    Every simulation of every figure is a task of one result store
    (:class:`loradyn.store.ResultStore`, default ``OUT/data``), keyed by its
    configuration's hash and the code that computes it: a rerun (after a kill, too) reuses
    every finished simulation, and a sweep (``loradyn sweep``) whose directory is given as
    ``store`` shares its results. With ``workers`` or ``scheduler`` the simulations run on
    Dask (a ``LocalCluster`` or a running scheduler); the figures are drawn in this
    process, one at a time, each waiting for its own simulations while the others go on.
    The data, figures and claims are the same as those of a serial run.

    Parameters
    ----------
    out
        Output directory; gets ``figures/``, ``data/`` (the figures' data files and the
        result store of the simulations, ``data/results/``), ``claims.csv``,
        ``index.html`` and ``run.json``. An output made before the store moved to
        ``data/`` keeps using its ``cache/``.
    scale
        ``quick`` (minutes on a laptop), ``paper`` (the paper's sizes: d = 1000, batch 500,
        1e4 steps, the paper's mu grids) or ``test`` (tiny, for the test suite).
    only
        Comma-separated ids (``fig1,fig2``) or a list; ``None`` runs everything.
    engine
        Simulation engine for the SGD points: ``reduced`` (exact, O(batch) per step) or
        ``dense`` (d-dimensional vectors).
    progress
        A callback ``progress(fraction, message)`` (:mod:`loradyn.progress`) for the whole
        run; ``True`` prints one plain line per step on stderr, ``False`` nothing.
    seed
        Base seed of every simulation (results are bit-for-bit reproducible).
    workers, scheduler
        Run the simulations on a new ``LocalCluster`` of ``workers`` processes, or on the
        Dask scheduler at ``scheduler`` (``tcp://host:8786``).
    store
        The result store of the simulations (default ``OUT/data``).
    reuse_other_code
        Serve stored results made by other number-computing code (default: recompute).
    from_data
        A finished reproduction ``DIR``: rebuild the figures, claims and report into
        ``out`` from the simulations stored in ``DIR/data`` (or the ``DIR/cache`` of an
        older output), simulating nothing (a missing simulation is an error naming it).

    Returns
    -------
    ReproduceResult
    """
    if scale not in SCALES:
        raise LoradynError(f"unknown scale {scale!r}: choose quick or paper")
    if engine not in ENGINES:
        raise LoradynError(f"unknown engine {engine!r}: choose reduced or dense")
    if workers is not None and scheduler is not None:
        raise LoradynError("give either --workers or --scheduler, not both")
    from ..sweep.runner import check_workers  # (lazy: the sweep package pulls in Dask)

    check_workers(workers)
    for name, val in (("--store", store), ("--from-data", from_data)):
        if val is not None and not str(val).strip():
            raise LoradynError(f"{name} is empty: give a directory")
    store_arg = store
    if from_data is not None:
        src = Path(from_data)
        store = store_dir(src)
        if not (store / "results").is_dir():
            raise LoradynError(f"--from-data {src}: no stored simulations in "
                               f"{src / STORE_DIR / 'results'}; give the --out of a finished "
                               "reproduction")
        if store_arg is not None:
            raise LoradynError("give either --from-data or --store, not both")
    seed = check_seed(seed)
    t0 = time.perf_counter()
    import_problems = discover()
    ids = parse_only(only, extra=import_problems)
    out = prepare_out(out)
    store_root = Path(store) if store is not None else store_dir(out)
    from ..store import ResultStore

    the_store = ResultStore(store_root).ensure()
    with contextlib.ExitStack() as held:
        if from_data is None:  # one writer per store; a killed run's temporaries go
            held.enter_context(the_store.lock("loradyn reproduce"))
            the_store.clean_temporaries()
        return _reproduce_items(out, scale, only, engine, progress, seed, ids, import_problems,
                                t0, workers, scheduler, store_root, reuse_other_code,
                                from_data)


def _reproduce_items(out, scale, only, engine, progress, seed, ids, import_problems, t0,
                     workers, scheduler, store_root, reuse_other_code, from_data
                     ) -> ReproduceResult:  # noqa: ANN001
    """The body of :func:`reproduce`, with the store held."""
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

    report = as_callback(progress)
    fractions = dict.fromkeys((sp.id for sp in runnable), 0.0)

    def item_progress(fid: str):  # noqa: ANN202 - a progress callback
        def update(fraction: float, message: str = "") -> None:
            fractions[fid] = min(max(float(fraction), 0.0), 1.0)
            report(sum(fractions.values()) / max(len(fractions), 1), f"{fid}: {message}")

        return update

    serial = workers is None and scheduler is None
    # CPU seconds of the item: the whole process in a serial run; its own thread on Dask
    clock = time.process_time if serial else time.thread_time

    def make_item(spec: FigureSpec, submit) -> ItemResult:  # noqa: ANN001
        ctx = FigureContext(out=out, scale=scale, engine=engine, progress=item_progress(spec.id),
                            seed=seed, store=store_root, reuse_other_code=reuse_other_code,
                            submit=submit, offline=from_data is not None)
        t1, c1 = time.perf_counter(), clock()
        try:
            fo = spec.make(ctx)
            item = ItemResult(spec.id, spec.title, "done", fo, time.perf_counter() - t1)
            (out / f"{spec.id}.error.txt").unlink(missing_ok=True)
        except ImportError as exc:
            item = ItemResult(spec.id, spec.title, "pending", None, time.perf_counter() - t1,
                              # a missing module names itself; a figure's own
                              # ImportError (no data, no GPU) says what it needs
                              f"cannot import: {exc}" if exc.name else str(exc))
        except Exception as exc:
            tb = traceback.format_exc()
            atomic_write_text(out / f"{spec.id}.error.txt", tb, mkdir=False)
            item = ItemResult(spec.id, spec.title, "failed", None, time.perf_counter() - t1,
                              f"{type(exc).__name__}: {' '.join(str(exc).split())}")
            report(sum(fractions.values()) / max(len(fractions), 1),
                   f"{spec.id} failed: {type(exc).__name__}: {exc}")
        item.cpu_seconds = clock() - c1
        fractions[spec.id] = 1.0
        report(sum(fractions.values()) / max(len(fractions), 1),
               f"{spec.id}: {item.status} in {item.seconds:.1f} s")
        return item

    if serial:
        for spec in runnable:
            result.items.append(make_item(spec, None))
    else:
        from ..sweep.runner import dask_client

        with dask_client(workers, scheduler, max(len(runnable), 1)) as client:
            result.items.extend(_make_on_dask(runnable, make_item, client, store_root,
                                              reuse_other_code))


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


class _Tasks:
    """Runs store tasks on a Dask client for figure threads (see :func:`_make_on_dask`).

    A task asked for by several figures is submitted once; the thread that submitted it
    writes it to the store (this process is the store's only writer), the others wait for
    it. While a figure waits, it lets the other figures run (``gate``).
    """

    def __init__(self, client: Any, store: Any, gate: threading.Lock):
        self.client = client
        self.store = store
        self.gate = gate
        self.lock = threading.Lock()
        self.cells: dict[str, dict[str, Any]] = {}

    def __call__(self, kind: str, params: dict, engine: str, key: str) -> Any:
        from ..store import code_hash
        from ..sweep.kinds import get_kind
        from ..sweep.runner import run_checked

        with self.lock:
            cell = self.cells.get(key)
            owner = cell is None
            if owner:
                fut = self.client.submit(run_checked, get_kind(kind).run, params, engine,
                                         code_hash(), key=f"loradyn-{key}", pure=False)
                cell = self.cells[key] = {"future": fut, "done": threading.Event()}
        # wait for the cluster without the gate, but write the store only while holding
        # it: netCDF/HDF5 is not thread-safe, and another figure thread may be writing its
        # own data (two concurrent writes crashed the process with a segmentation fault)
        result, error = None, None
        self.gate.release()
        try:
            if owner:
                try:
                    result = cell["future"].result()
                except BaseException as exc:
                    error = exc
            else:
                cell["done"].wait()
        finally:
            self.gate.acquire()
        if owner:
            try:
                if error is not None:
                    raise error
                ds = self.store.stamp(result, key)
                self.store.write(key, ds)
                cell["value"] = ds
            except BaseException as exc:
                cell["error"] = exc
                raise
            finally:
                cell["future"].release()
                cell["done"].set()
        elif "error" in cell:
            raise cell["error"]
        return cell["value"]


def _make_on_dask(runnable: list[FigureSpec], make_item, client: Any, store_root: Path,
                  reuse_other_code: bool) -> list[ItemResult]:  # noqa: ANN001
    """Make every figure in its own thread; only one runs Python code at a time (the
    gate), the others wait for their simulations on the cluster."""
    from ..store import ResultStore

    gate = threading.Lock()
    tasks = _Tasks(client, ResultStore(store_root, reuse_other_code=reuse_other_code), gate)
    items: dict[str, ItemResult] = {}

    def work(spec: FigureSpec) -> None:
        with gate:
            items[spec.id] = make_item(spec, tasks)

    threads = [threading.Thread(target=work, args=(sp,), name=f"loradyn-{sp.id}")
               for sp in runnable]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [items[sp.id] for sp in runnable]


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
