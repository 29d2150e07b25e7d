"""The result store of a sweep: one directory, one file per finished task, written atomically.

Layout of a sweep directory ``DIR``::

    DIR/.lock                  held (flock) by the running `sweep run`, if any
    DIR/sweep.toml             copy of the sweep file
    DIR/manifest.json          sweep identity and every task: key, grid point, parameters
    DIR/results/KEY.nc         result of a finished task (xarray.Dataset, netCDF)
    DIR/results/KEY.error.json a failed task: error type, message, traceback, parameters

``KEY`` is :func:`loradyn.sweep.spec.task_key`, a hash of the task's full configuration.
Every file is written to a temporary file in the same directory (``.NAME.tmp-PID-RANDOM``),
flushed to disk with ``fsync`` and renamed over its final name with :func:`os.replace`,
which is atomic on POSIX file systems: a reader, or a rerun after ``kill -9``, sees either
no file or the whole file, never half of one. Temporaries left by a killed run are
deleted when the sweep is run again. A task is finished exactly when ``KEY.nc`` exists.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xarray as xr

from ..errors import LoradynError
from ..io import TMP_MARK, atomic_write
from ..io import atomic_write_text as _atomic_write_text
from .spec import SweepSpec, Task, canonical_json

SPEC_FILE = "sweep.toml"
MANIFEST_FILE = "manifest.json"
RESULTS_DIR = "results"
FORMAT_VERSION = 1
LOCK_FILE = ".lock"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename, fsync folder)."""
    _atomic_write_text(path, text, fsync=True, mkdir=False)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _netcdf_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """netCDF attributes hold strings and numbers only: dicts become JSON, bools ints."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, Mapping) or (
            isinstance(v, list | tuple) and (not v or not all(_is_number(x) for x in v))
        ):
            out[k] = canonical_json(v)
        else:
            out[k] = v
    return out


def write_netcdf_atomic(ds: xr.Dataset, path: str | Path) -> Path:
    """Save ``ds`` to ``path`` as netCDF atomically; return the path.

    Dataset and variable attributes that netCDF cannot hold (dicts, bools) are converted
    (JSON text, integers) on a shallow copy; ``ds`` is not modified.
    """
    path = Path(path)
    out = ds.copy(deep=False)
    out.attrs = _netcdf_attrs(ds.attrs)
    for name in out.variables:
        out[name].attrs = _netcdf_attrs(ds[name].attrs)
    with atomic_write(path, fsync=True, mkdir=False) as tmp:
        out.to_netcdf(tmp, engine="netcdf4")
    return path


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

    @property
    def pending(self) -> int:
        return self.total - self.done - len(self.failed)

    @property
    def complete(self) -> bool:
        """Every task finished successfully."""
        return self.done == self.total

    def summary(self) -> str:
        """``done N of M`` followed by the failed and pending counts."""
        return (
            f"done {self.done} of {self.total}; {len(self.failed)} failed; "
            f"{self.pending} pending (sweep {self.name!r} in {self.out})"
        )


class SweepStore:
    """A sweep directory (see the module docstring for the layout)."""

    def __init__(self, root: str | Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest

    # -- paths ---------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.root / RESULTS_DIR

    def result_path(self, key: str) -> Path:
        return self.results_dir / f"{key}.nc"

    def error_path(self, key: str) -> Path:
        return self.results_dir / f"{key}.error.json"

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> SweepStore:
        """Open an existing sweep directory; ``LoradynError`` if ``root`` holds none."""
        root = Path(root)
        path = root / MANIFEST_FILE
        if not path.is_file():
            raise LoradynError(
                f"{str(root)!r} is not a sweep directory (no {MANIFEST_FILE}): "
                "run `loradyn sweep run SWEEP.toml --out DIR` first"
            )
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LoradynError(f"{path} is corrupt ({exc}); delete {root} and rerun") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise LoradynError(f"{path} has an unknown format {manifest.get('format')!r}")
        return cls(root, manifest)

    @classmethod
    def prepare(cls, root: str | Path, spec: SweepSpec, tasks: list[Task]) -> SweepStore:
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
            old = cls.open(root)
            if old.manifest.get("identity") != manifest["identity"]:
                raise LoradynError(
                    f"{str(root)!r} holds a different sweep ({old.manifest.get('name')!r}); "
                    "choose another --out directory or delete it"
                )
            if canonical_json(old.manifest["tasks"]) == canonical_json(manifest["tasks"]):
                old.results_dir.mkdir(exist_ok=True)
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
        (root / RESULTS_DIR).mkdir(exist_ok=True)
        manifest["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        atomic_write_text(root / SPEC_FILE, spec.to_toml())
        atomic_write_text(root / MANIFEST_FILE, _manifest_text(manifest))
        return cls(root, manifest)

    # -- tasks ---------------------------------------------------------------------------
    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.manifest["tasks"]

    def has_result(self, key: str) -> bool:
        return self.result_path(key).is_file()

    def has_error(self, key: str) -> bool:
        return self.error_path(key).is_file()

    def write_result(self, key: str, ds: xr.Dataset) -> Path:
        """Store a finished task atomically and drop its error record, if any."""
        path = write_netcdf_atomic(ds, self.result_path(key))
        self.error_path(key).unlink(missing_ok=True)
        return path

    def write_error(self, key: str, record: Mapping[str, Any]) -> Path:
        """Record a failed task atomically (JSON: type, message, traceback, params)."""
        path = self.error_path(key)
        atomic_write_text(path, json.dumps(dict(record), indent=1, default=str) + "\n")
        return path

    def read_result(self, key: str) -> xr.Dataset:
        """Load a finished task's dataset into memory."""
        return xr.load_dataset(self.result_path(key), engine="netcdf4")

    def read_error(self, key: str) -> dict[str, Any]:
        """The error record of a failed task."""
        try:
            return json.loads(self.error_path(key).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            return {"type": "unknown", "message": f"unreadable error record: {exc}"}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory (``DIR/.lock``) for one runner at a time.

        The lock is an ``fcntl.flock`` on an open file: the system releases it when the
        process ends, ``kill -9`` included. Raises ``LoradynError`` if another process
        holds it. On platforms without ``fcntl`` it does nothing.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        with open(self.root / LOCK_FILE, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LoradynError(
                    f"another `loradyn sweep run` is using {str(self.root)!r}: wait for it to "
                    "finish (one runner per sweep directory)"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def clean_temporaries(self) -> int:
        """Delete temporary files left by an interrupted run; return how many."""
        n = 0
        for directory in (self.root, self.results_dir):
            if not directory.is_dir():
                continue
            for p in directory.iterdir():
                if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
                    p.unlink(missing_ok=True)
                    n += 1
        return n

    def status(self) -> SweepStatus:
        """Count finished and failed tasks from the files present."""
        done = 0
        failed: list[FailedTask] = []
        for t in self.tasks:
            key = t["key"]
            if self.has_result(key):
                done += 1
            elif self.has_error(key):
                rec = self.read_error(key)
                msg = f"{rec.get('type', 'Error')}: {rec.get('message', '')}".strip()
                failed.append(FailedTask(key=key, point=t["point"], error=" ".join(msg.split())))
        return SweepStatus(
            name=self.manifest["name"], out=self.root, total=len(self.tasks), done=done,
            failed=failed,
        )


def sweep_status(out: str | Path) -> SweepStatus:
    """Status of the sweep stored in ``out``: tasks done, failed and pending."""
    return SweepStore.open(out).status()
