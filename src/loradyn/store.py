"""The one content-addressed result store: sweeps, the reproduce cache and task kinds use it.

Layout of a store rooted at ``ROOT``::

    ROOT/results/KEY.nc          a finished result (netCDF, :func:`loradyn.io.save_netcdf`)
    ROOT/results/KEY.error.json  a failed task: error type, message, traceback, parameters
    ROOT/corrupt/KEY.nc[.N]      a result found corrupt, moved aside (kept for inspection)
    ROOT/.lock                   held (flock) by the process that writes the store

``KEY`` names what determines the numbers (:meth:`loradyn.config.RunConfig.key` or a
task key, see :mod:`loradyn.sweep.spec`). Each result records, in its attributes,

- ``result_key``: its own key, checked on every read (a file copied or renamed over
  another result is caught);
- ``code_hash``: :func:`code_hash`, the sha256 of the source of the modules that compute
  numbers (theory, engines, models, training; not docs, CLI, report or figure code).

Reading validates (:meth:`ResultStore.state`): a result that cannot be read (truncated,
empty, replaced by garbage) or whose ``result_key`` differs is **corrupt**; one made by
other code is **stale** and is recomputed, unless the store was opened with
``reuse_other_code=True`` (the CLI's ``--reuse-other-code``). A corrupt result is moved
aside (:meth:`ResultStore.quarantine`) with one warning line naming it, and redone.

Every write is atomic (temporary file, ``fsync``, :func:`os.replace`), so a killed run
leaves either no file or a whole one; temporaries are removed on the next run.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import xarray as xr

from .errors import LoradynError
from .io import TMP_MARK, atomic_write_text, load_netcdf, save_netcdf

__all__ = [
    "CODE_MODULES",
    "CorruptResult",
    "ResultStore",
    "code_hash",
]

RESULTS_DIR = "results"
CORRUPT_DIR = "corrupt"
LOCK_FILE = ".lock"

#: Modules (files, or folders taken whole) of :mod:`loradyn` whose code computes numbers;
#: their source makes :func:`code_hash`. Docs, the CLI, sweeps, figures and the report
#: are left out: changing them changes no result.
CODE_MODULES = (
    "activations.py",
    "gaussian.py",
    "hermite.py",
    "population.py",
    "linearization.py",
    "mechanics.py",
    "config.py",
    "params.py",
    "engines",
    "twolayer",
    "vit/config.py",
    "vit/data.py",
    "vit/model.py",
    "vit/train.py",
)


def _code_files() -> list[Path]:
    root = Path(__file__).resolve().parent
    files: list[Path] = []
    for name in CODE_MODULES:
        p = root / name
        if p.is_dir():
            files.extend(sorted(p.rglob("*.py")))
        elif p.is_file():
            files.append(p)
    return sorted(files)


@functools.lru_cache(maxsize=1)
def code_hash() -> str:
    """sha256 (16 hex digits) of the source of :data:`CODE_MODULES` (paths and bytes).

    Two processes with the same number-computing code give the same hash, whatever
    their docs, CLI or report code; a change to an engine changes it.
    """
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in _code_files():
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class CorruptResult(LoradynError):
    """A stored result that cannot be read or does not match its key."""


def _stderr_warning(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


class ResultStore:
    """A folder of results keyed by content (see the module docstring).

    Parameters
    ----------
    root
        The store's folder (created by :meth:`ensure`).
    reuse_other_code
        Serve results made by other code (another :func:`code_hash`) instead of
        recomputing them.
    warn
        Called with one line for every corrupt result moved aside (default: print
        ``warning: ...`` on stderr).
    """

    def __init__(self, root: str | Path, *, reuse_other_code: bool = False,
                 warn: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.reuse_other_code = reuse_other_code
        self.warn = warn or _stderr_warning

    # -- paths ---------------------------------------------------------------------------
    @property
    def results_dir(self) -> Path:
        return self.root / RESULTS_DIR

    def result_path(self, key: str) -> Path:
        return self.results_dir / f"{key}.nc"

    def error_path(self, key: str) -> Path:
        return self.results_dir / f"{key}.error.json"

    def check_layout(self) -> None:
        """One line if ``ROOT`` or ``ROOT/results`` exists but is not a folder."""
        for p in (self.root, self.results_dir):
            if p.exists() and not p.is_dir():
                raise LoradynError(
                    f"{str(p)!r} is a file, not a folder: a result store keeps its results in "
                    f"{RESULTS_DIR}/; move the file away"
                )

    def ensure(self) -> ResultStore:
        """Create ``ROOT/results`` (after :meth:`check_layout`); return ``self``."""
        self.check_layout()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        return self

    # -- results -------------------------------------------------------------------------
    def _load(self, key: str) -> xr.Dataset:
        path = self.result_path(key)
        try:
            ds = load_netcdf(path)
        except Exception as exc:  # noqa: BLE001 - any failure to read means corrupt
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise CorruptResult(f"result {path} cannot be read ({msg})") from None
        found = ds.attrs.get("result_key")
        if found != key:
            raise CorruptResult(
                f"result {path} holds key {found!r}, not {key!r} (replaced or copied over)"
            )
        return ds

    def state(self, key: str) -> tuple[str, str]:
        """``(state, reason)``: ``done``, ``missing``, ``stale`` (other code) or ``corrupt``."""
        if not self.result_path(key).exists():
            return "missing", ""
        try:
            ds = self._load(key)
        except CorruptResult as exc:
            return "corrupt", str(exc)
        made_by = ds.attrs.get("code_hash")
        if made_by != code_hash() and not self.reuse_other_code:
            return "stale", f"made by other code ({made_by}, now {code_hash()})"
        return "done", ""

    def has(self, key: str) -> bool:
        """True when a valid result for ``key`` made by this code (or reusable) exists."""
        return self.state(key)[0] == "done"

    def read(self, key: str) -> xr.Dataset:
        """The result of ``key``, validated; :class:`CorruptResult` if it is corrupt."""
        return self._load(key)

    @staticmethod
    def stamp(ds: xr.Dataset, key: str) -> xr.Dataset:
        """A shallow copy of ``ds`` with the attributes ``result_key`` and ``code_hash``:
        the dataset exactly as :meth:`read` will give it back."""
        out = ds.copy(deep=False)
        out.attrs = {**ds.attrs, "result_key": key, "code_hash": code_hash()}
        return out

    def write(self, key: str, ds: xr.Dataset) -> Path:
        """Store ``ds`` under ``key`` atomically (:meth:`stamp` first) and drop the key's
        error record, if any."""
        path = save_netcdf(self.stamp(ds, key), self.result_path(key), fsync=True, mkdir=True)
        self.error_path(key).unlink(missing_ok=True)
        return path

    def quarantine(self, key: str, reason: str = "") -> Path | None:
        """Move a corrupt result to ``ROOT/corrupt/`` with one warning line; return where."""
        src = self.result_path(key)
        if not src.exists():
            return None
        dest_dir = self.root / CORRUPT_DIR
        dest_dir.mkdir(exist_ok=True)
        dest = dest_dir / src.name
        n = 1
        while dest.exists():
            dest = dest_dir / f"{src.name}.{n}"
            n += 1
        src.replace(dest)
        why = f" ({reason})" if reason else ""
        self.warn(f"result {src} is corrupt{why}: moved to {dest}; it is redone")
        return dest

    def get(self, key: str, compute: Callable[[], xr.Dataset]) -> xr.Dataset:
        """The result of ``key``: read it when valid, else (corrupt: moved aside first)
        compute, store and return it."""
        state, reason = self.state(key)
        if state == "done":
            return self.read(key)
        if state == "corrupt":
            self.quarantine(key, reason)
        ds = self.stamp(compute(), key)
        self.write(key, ds)
        return ds

    # -- errors --------------------------------------------------------------------------
    def has_error(self, key: str) -> bool:
        return self.error_path(key).is_file()

    def write_error(self, key: str, record: Mapping[str, Any]) -> Path:
        """Record a failed task atomically (JSON: type, message, traceback, params)."""
        path = self.error_path(key)
        return atomic_write_text(path, json.dumps(dict(record), indent=1, default=str) + "\n",
                                 fsync=True, mkdir=True)

    def read_error(self, key: str) -> dict[str, Any]:
        """The error record of a failed task."""
        try:
            rec = json.loads(self.error_path(key).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return {"type": "unknown", "message": f"unreadable error record: {exc}"}
        if not isinstance(rec, dict):
            return {"type": "unknown", "message": "unreadable error record: not an object"}
        return rec

    # -- housekeeping --------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str = "loradyn") -> Iterator[None]:
        """Hold an exclusive lock (``ROOT/.lock``) for one writer at a time.

        The lock is an ``fcntl.flock`` on an open file: the system releases it when the
        process ends, ``kill -9`` included. Raises ``LoradynError`` if another process
        holds it. On platforms without ``fcntl`` it does nothing.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise LoradynError(
                    f"another `{what}` is using {str(self.root)!r}: wait for it to finish "
                    "(one writer per store)"
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
