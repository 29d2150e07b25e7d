"""The result store of a sweep: one directory, one file per finished task, written atomically.

Layout of a sweep directory ``DIR``::

    DIR/.lock                  held (flock) by the running `sweep run`, if any
    DIR/sweep.toml             copy of the sweep file
    DIR/manifest.json          sweep identity and every task: key, grid point, parameters
    DIR/results/KEY.nc         result of a finished task (xarray.Dataset, netCDF)
    DIR/results/KEY.error.json a failed task: error type, message, traceback, parameters

``KEY`` is :func:`loradyn.sweep.spec.task_key`, a hash of what determines the task's
numbers. A sweep directory is a :class:`loradyn.store.ResultStore` (the one result store
of loradyn) plus the sweep file and a manifest: every file is written atomically, and a
task is finished exactly when ``KEY.nc`` exists, reads back, holds its own key and was
made by this code (:func:`loradyn.store.code_hash`). A corrupt result is reported by
:meth:`SweepStore.status`, moved aside and redone by the runner, and named by
:func:`loradyn.sweep.collect`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import LoradynError
from ..io import atomic_write_text as _atomic_write_text
from ..io import save_netcdf
from ..params import canonical_json
from ..store import LOCK_FILE, RESULTS_DIR, TMP_MARK, ResultStore  # noqa: F401 (re-exported)
from .spec import SweepSpec, Task

SPEC_FILE = "sweep.toml"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename, fsync folder)."""
    _atomic_write_text(path, text, fsync=True, mkdir=False)


def write_netcdf_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Save ``ds`` to ``path`` as netCDF atomically (fsync); see :func:`loradyn.io.save_netcdf`."""
    return save_netcdf(ds, path, fsync=True, mkdir=False)


def _manifest_text(manifest: Mapping[str, Any]) -> str:
    """The manifest as JSON text: one line per header key, then one line per task."""
    head = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in manifest.items() if k != "tasks"]
    tasks = ",\n".join("  " + json.dumps(t, separators=(",", ":")) for t in manifest["tasks"])
    return "{\n" + "\n".join(head) + '\n "tasks": [\n' + tasks + "\n ]\n}\n"


@dataclass(frozen=True)
class FailedTask:
    """A task that raised: its key, grid point and the one-line error."""

    key: str
    point: dict[str, Any]
    error: str

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.point.items())


@dataclass(frozen=True)
class SweepStatus:
    """Where a sweep stands: tasks done, failed (with errors) and pending out of total."""

    name: str
    out: Path
    total: int
    done: int
    failed: list[FailedTask] = field(default_factory=list)
    corrupt: list[FailedTask] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Tasks without a valid result or an error record (corrupt ones included)."""
        return self.total - self.done - len(self.failed)

    @property
    def complete(self) -> bool:
        """Every task finished successfully."""
        return self.done == self.total

    def summary(self) -> str:
        """``done N of M`` followed by the failed and pending counts."""
        bad = f" ({len(self.corrupt)} corrupt, redone by `sweep run`)" if self.corrupt else ""
        return (
            f"done {self.done} of {self.total}; {len(self.failed)} failed; "
            f"{self.pending} pending{bad} (sweep {self.name!r} in {self.out})"
        )


class SweepStore(ResultStore):
    """A sweep directory: a :class:`~loradyn.store.ResultStore` with a sweep file and a
    manifest (see the module docstring for the layout)."""

    def __init__(self, root: str | Path, manifest: dict[str, Any], *,
                 reuse_other_code: bool = False, warn: Callable[[str], None] | None = None):
        super().__init__(root, reuse_other_code=reuse_other_code, warn=warn)
        self.manifest = manifest

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, **kw: Any) -> SweepStore:
        """Open an existing sweep directory; ``LoradynError`` (one line) if ``root`` holds
        none, or its manifest is malformed, or ``results`` is not a folder."""
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            raise LoradynError(
                f"{str(root)!r} is not a sweep directory (no {MANIFEST_FILE}): "
                "run `loradyn sweep run SWEEP.toml --out DIR` first"
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            msg = " ".join(str(exc).split())
            raise LoradynError(f"{path} is corrupt ({msg}); delete {root} and rerun") from None
        _check_manifest(manifest, path, root)
        store = cls(root, manifest, **kw)
        store.check_layout()
        return store

    @classmethod
    def prepare(cls, root: str | Path, spec: SweepSpec, tasks: list[Task], **kw: Any
                ) -> SweepStore:
        """Create the directory for ``spec`` or reopen it for a rerun.

        Raises ``LoradynError`` if ``root`` holds a different sweep, or files that are
        not a sweep.
        """
        root = Path(root)
        manifest = {
            "format": FORMAT_VERSION,
            "name": spec.name,
            "kind": spec.kind,
            "engine": spec.engine,
            "identity": spec.identity(),
            "spec": spec.to_dict(),
            "total": len(tasks),
            "tasks": [
                {
                    "key": t.key,
                    "index": list(t.index),
                    "point": t.point,
                    "params": t.params,
                    **({"error": t.error} if t.error else {}),
                }
                for t in tasks
            ],
        }
        if (root / MANIFEST_FILE).is_file():
            old = cls.open(root, **kw)
            if old.manifest.get("identity") != manifest["identity"]:
                raise LoradynError(
                    f"{str(root)!r} holds a different sweep ({old.manifest.get('name')!r}); "
                    "choose another --out directory or delete it"
                )
            if canonical_json(old.manifest["tasks"]) == canonical_json(manifest["tasks"]):
                old.ensure()
                return old
            # Same spec, but the task keys changed (e.g. a new loradyn added a config field):
            # rewrite the manifest; results under old keys are ignored.
        elif root.exists() and (
            not root.is_dir() or any(p.name != LOCK_FILE for p in root.iterdir())
        ):
            raise LoradynError(
                f"{str(root)!r} exists and is not a sweep directory: choose a new or empty --out"
            )
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, manifest, **kw).ensure()
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(root / SPEC_FILE, spec.to_toml())
        atomic_write_text(root / MANIFEST_FILE, _manifest_text(manifest))
        return store

    # -- tasks ---------------------------------------------------------------------------
    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.manifest["tasks"]

    def has_result(self, key: str) -> bool:
        """True when a valid result of this code (or a reusable one) is stored."""
        return self.has(key)

    def write_result(self, key: str, ds: xr.Dataset) -> Path:
        """Store a finished task atomically and drop its error record, if any."""
        return self.write(key, ds)

    def read_result(self, key: str) -> xr.Dataset:
        """Load a finished task's dataset into memory (validated: CorruptResult if not)."""
        return self.read(key)

    def status(self) -> SweepStatus:
        """Count finished, failed and corrupt tasks, reading every result back."""
        done = 0
        failed: list[FailedTask] = []
        corrupt: list[FailedTask] = []
        for t in self.tasks:
            key = t["key"]
            state, reason = self.state(key)
            if state == "done":
                done += 1
                continue
            if state == "corrupt":
                corrupt.append(FailedTask(key=key, point=t["point"], error=reason))
            if self.has_error(key):
                rec = self.read_error(key)
                msg = f"{rec.get('type', 'Error')}: {rec.get('message', '')}".strip()
                failed.append(FailedTask(key=key, point=t["point"], error=" ".join(msg.split())))
        return SweepStatus(
            name=self.manifest["name"], out=self.root, total=len(self.tasks), done=done,
            failed=failed, corrupt=corrupt,
        )


def _check_manifest(manifest: Any, path: Path, root: Path) -> None:
    """One line for a manifest that is not what :meth:`SweepStore.prepare` writes."""
    hint = f"delete {root} and rerun `loradyn sweep run`"

    def bad(what: str) -> LoradynError:
        return LoradynError(f"{path} is malformed ({what}); {hint}")

    if not isinstance(manifest, dict):
        raise bad(f"a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT_VERSION:
        raise LoradynError(f"{path} has an unknown format {manifest.get('format')!r}; {hint}")
    for k, typ in (("name", str), ("kind", str), ("tasks", list), ("spec", dict)):
        if not isinstance(manifest.get(k), typ):
            raise bad(f"{k!r} missing or not a {typ.__name__}")
    grid = manifest["spec"].get("grid")
    if not isinstance(grid, list) or not all(
        isinstance(g, list) and len(g) == 2 and isinstance(g[1], list) for g in grid
    ):
        raise bad("spec.grid is not a list of [key, values] pairs")
    sizes = [len(g[1]) for g in grid]
    for i, t in enumerate(manifest["tasks"]):
        if not isinstance(t, dict) or not isinstance(t.get("key"), str) or not t["key"]:
            raise bad(f"task {i} has no key")
        if not isinstance(t.get("point"), dict):
            raise bad(f"task {i} has no grid point")
        idx = t.get("index")
        if (not isinstance(idx, list) or len(idx) != len(sizes)
                or not all(isinstance(j, int) and not isinstance(j, bool) and 0 <= j < n
                           for j, n in zip(idx, sizes, strict=False))):
            raise bad(f"task {i} has a grid index {idx!r} out of range")


def sweep_status(out: str | Path) -> SweepStatus:
    """Status of the sweep stored in ``out``: tasks done, failed, corrupt and pending."""
    return SweepStore.open(out).status()
