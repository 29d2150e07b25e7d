"""Atomic file writes and the netCDF round trip of result datasets.

Result, figure, report and checkpoint files are written through :func:`atomic_write`:
the content goes to a temporary file in the target's folder (``.NAME.tmp-PID-RANDOM``),
then renamed over the target with :func:`os.replace` (atomic on POSIX file systems).
A reader, or a rerun after a crash, sees either the old file or the whole new one, never half;
a failed write leaves the old file untouched and no temporary behind.

- :func:`atomic_write`: the context manager itself (optionally with ``fsync``);
- :func:`atomic_write_text`, :func:`atomic_savefig`: the two common cases;
- :func:`save_netcdf` / :func:`load_netcdf`: the one netCDF writer/reader pair (native bool);
- :func:`require_folder`: the one-line user error for a missing output folder;
- :func:`check_output_file`, :func:`check_distinct`, :func:`plot_format`: every output path
  checked before any work (empty, a directory, below a file, unwritable, two outputs on
  one file, an image format matplotlib does not know);
- :func:`write_errors`: a failed write (full disk, permission) as one line.

This module imports neither matplotlib nor torch: pass the temporary path to their own
save functions (``fig.savefig(tmp)``, ``torch.save(obj, tmp)``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from .errors import LoradynError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "TMP_MARK",
    "atomic_savefig",
    "atomic_write",
    "atomic_write_text",
    "check_distinct",
    "check_output_file",
    "check_outputs",
    "load_netcdf",
    "memory_errors",
    "netcdf_attrs",
    "plot_format",
    "require_folder",
    "save_netcdf",
    "write_errors",
]

TMP_MARK = ".tmp-"
"""Marks a temporary file name: ``.NAME.tmp-PID-RANDOM`` (see :func:`atomic_write`)."""


def _tmp_path(target: Path, suffix: str | None) -> Path:
    name = f".{target.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix or ''}"
    return target.with_name(name)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def require_folder(path: str | os.PathLike) -> Path:
    """Return ``Path(path)``; raise :class:`LoradynError` if its folder does not exist.

    Parameters
    ----------
    path
        The file about to be written.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    LoradynError
        When the parent folder is missing (a user error: the CLI does not create it).
    """
    target = Path(path)
    if not target.parent.exists():
        raise LoradynError(f"folder {str(target.parent)!r} does not exist: create it first")
    return target


def check_output_file(
    path: str | os.PathLike, what: str = "output", *, create_folder: bool = False
) -> Path:
    """Check, before any work, that a file can be written at ``path``; return it as a Path.

    Parameters
    ----------
    path
        The file about to be written.
    what
        How the user named it (``--out``), for the message.
    create_folder
        Whether a missing folder will be created (else it is an error).

    Raises
    ------
    LoradynError
        When ``path`` is empty, is a directory, lies below a file, its folder is missing
        (unless ``create_folder``), or that folder cannot be written.
    """
    text = os.fspath(path)
    if not str(text).strip():
        raise LoradynError(f"{what} is empty: give a file name")
    target = Path(text)
    if target.is_dir():
        raise LoradynError(f"{what} {text} is a directory: give a file name")
    anc = target.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise LoradynError(f"{what} {text}: {anc} is not a directory: choose another path")
    if anc != target.parent and not create_folder:
        raise LoradynError(f"folder {str(target.parent)!r} does not exist: create it first")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise LoradynError(f"{what} {text}: the folder {anc} is not writable: choose another path")
    return target


def check_distinct(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Raise :class:`LoradynError` when two given outputs name the same file.

    ``outputs`` maps the option name (``--out``) to its path; ``None`` entries are skipped.
    """
    seen: dict[Path, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        key = Path(os.path.abspath(os.fspath(path)))
        if key.exists():
            key = key.resolve()
        if key in seen:
            raise LoradynError(
                f"{seen[key]} and {what} name the same file {os.fspath(path)}: give two files"
            )
        seen[key] = what


def plot_format(path: str | os.PathLike, what: str = "plot") -> str:
    """The image format of ``path`` from its extension (``png`` without one).

    Raises
    ------
    LoradynError
        When matplotlib cannot write that format.
    """
    suffix = Path(path).suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    if suffix not in known:
        raise LoradynError(
            f"{what} {os.fspath(path)}: matplotlib cannot write .{suffix} images: use one of "
            f"{', '.join('.' + k for k in sorted(known))}"
        )
    return suffix


def check_outputs(
    files: dict[str, str | os.PathLike | None],
    plots: dict[str, str | os.PathLike | None] | None = None,
    *,
    create_folder: bool = False,
) -> None:
    """Check every output of a command before it computes anything.

    ``files`` and ``plots`` map option names (``--out``, ``--plot``) to paths (``None``:
    not asked for). Each path must be writable (:func:`check_output_file`), each plot's
    extension an image format (:func:`plot_format`), and no two outputs may be one file
    (:func:`check_distinct`).
    """
    plots = plots or {}
    for what, path in {**files, **plots}.items():
        if path is not None:
            check_output_file(path, what, create_folder=create_folder)
    for what, path in plots.items():
        if path is not None:
            plot_format(path, what)
    check_distinct({**files, **plots})


_TOO_BIG = ("array is too big", "Maximum allowed dimension exceeded")


@contextmanager
def memory_errors(advice: str) -> Iterator[None]:
    """Turn running out of memory (``MemoryError``, numpy's "array is too big") into one line.

    ``advice`` says what to reduce, e.g. ``"reduce --d or --batch"``.
    """
    try:
        yield
    except (MemoryError, ValueError) as exc:
        too_big = isinstance(exc, MemoryError) or any(t in str(exc) for t in _TOO_BIG)
        if isinstance(exc, LoradynError) or not too_big:
            raise
        what = " ".join(str(exc).split()) or "MemoryError"
        raise LoradynError(f"the run does not fit in memory ({what}): {advice}") from None


@contextmanager
def write_errors(path: str | os.PathLike, what: str = "output", lost: str = "") -> Iterator[None]:
    """Turn an :class:`OSError` of the body (disk full, permission, ...) into one line.

    The message names the file and says what happened to the results (``lost``, e.g.
    ``"the dataset was not saved"``).
    """
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        tail = f"; {lost}" if lost else ""
        raise LoradynError(f"cannot write {what} {os.fspath(path)}: {reason}{tail}") from None


@contextmanager
def atomic_write(
    path: str | os.PathLike, *, suffix: str | None = None, fsync: bool = False,
    mkdir: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` when the body succeeds.

    The temporary file, ``.NAME.tmp-PID-RANDOM[SUFFIX]`` in the target's folder, is not
    created: the body writes it (any writer that takes a path). On success it replaces
    ``path`` with :func:`os.replace`; on any exception, :class:`KeyboardInterrupt`
    included, it is deleted and the exception propagates, leaving ``path`` as it was.

    Parameters
    ----------
    path
        The final file.
    suffix
        Appended to the temporary name (an extension for writers that infer the format
        from it); none by default.
    fsync
        Flush the temporary file to disk before the rename and the folder after it, so the
        new file survives a power loss as well as a killed process.
    mkdir
        Create the target's folder (and its parents) if it is missing.

    Yields
    ------
    Path
        The temporary path to write.

    Examples
    --------
    >>> with atomic_write("out/table.csv") as tmp:  # doctest: +SKIP
    ...     frame.to_csv(tmp)
    """
    target = Path(path)
    if mkdir:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(target, suffix)
    try:
        yield tmp
        if fsync:
            _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        _fsync_dir(target.parent)


def atomic_write_text(
    path: str | os.PathLike, text: str, *, encoding: str | None = "utf-8",
    newline: str | None = None, fsync: bool = False, mkdir: bool = True,
) -> Path:
    """Write ``text`` to ``path`` atomically and return the path.

    Parameters
    ----------
    path
        The final file.
    text
        The whole content.
    encoding, newline
        As for :func:`open` (``encoding=None``: the locale's).
    fsync, mkdir
        As for :func:`atomic_write`.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    with atomic_write(target, fsync=fsync, mkdir=mkdir) as tmp:
        with open(tmp, "w", encoding=encoding, newline=newline) as fh:
            fh.write(text)
    return target


def atomic_savefig(fig: Figure, path: str | os.PathLike, **kw: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically and return the path.

    Parameters
    ----------
    fig
        The figure; it is not closed.
    path
        The final file; its folder is created if missing.
    **kw
        Passed to :meth:`matplotlib.figure.Figure.savefig`. Without ``format``, the
        extension of ``path`` decides it (else ``rcParams["savefig.format"]``).

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.
    """
    target = Path(path)
    if kw.get("format") is None:
        # the temporary name has no extension of its own: take the target's, as savefig would
        import matplotlib

        kw["format"] = target.suffix[1:] or matplotlib.rcParams["savefig.format"]
    with atomic_write(target) as tmp:
        fig.savefig(tmp, **kw)
    return target


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def netcdf_attrs(attrs: Any) -> dict[str, Any]:
    """Attributes netCDF can hold: dicts and mixed lists become JSON text, bools ints,
    ``None`` is dropped (strings and numbers are kept)."""
    import json

    out: dict[str, Any] = {}
    for k, v in dict(attrs).items():
        if v is None:
            continue
        if isinstance(v, bool | np.bool_):
            out[k] = int(v)
        elif isinstance(v, dict) or (
            isinstance(v, list | tuple) and (not v or not all(_is_number(x) for x in v))
        ):
            out[k] = json.dumps(v, sort_keys=True, default=str)
        else:
            out[k] = v
    return out


def save_netcdf(
    ds: xr.Dataset, path: str | os.PathLike, *, fsync: bool = False, mkdir: bool = False
) -> Path:
    """Write ``ds`` to ``path`` as netCDF, atomically, and return the path.

    The one netCDF writer of loradyn. Boolean variables are stored natively (xarray
    round-trips them); attributes netCDF cannot hold are converted on a shallow copy
    (:func:`netcdf_attrs`); ``ds`` itself is not modified.

    Parameters
    ----------
    ds
        The dataset.
    path
        The final file; its folder must exist unless ``mkdir``.
    fsync
        Flush the file and its folder to disk (see :func:`atomic_write`).
    mkdir
        Create the folder if it is missing.

    Returns
    -------
    Path
        ``path`` as a :class:`~pathlib.Path`.

    Raises
    ------
    LoradynError
        When the folder of ``path`` does not exist (and ``mkdir`` is false).
    """
    target = Path(path) if mkdir else require_folder(path)
    out = ds.copy(deep=False)
    out.attrs = netcdf_attrs(ds.attrs)
    for name in out.variables:
        out[name].attrs = netcdf_attrs(ds[name].attrs)
    with atomic_write(target, fsync=fsync, mkdir=mkdir) as tmp:
        out.to_netcdf(tmp, engine="netcdf4")
    return target


def load_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Read a dataset written by :func:`save_netcdf` into memory; the file is closed.

    The one netCDF reader of loradyn. Booleans come back as bool (files of older
    versions, which stored them as int8 marked ``loradyn_bool``, too).

    Parameters
    ----------
    path
        The netCDF file.

    Returns
    -------
    xarray.Dataset
        The loaded dataset.

    Raises
    ------
    LoradynError
        When ``path`` does not exist.
    """
    p = Path(path)
    if not p.exists():
        raise LoradynError(f"file {str(p)!r} does not exist: check the path")
    with xr.open_dataset(p, engine="netcdf4") as ds:
        ds = ds.load()
    for name in list(ds.data_vars):
        if ds[name].attrs.get("loradyn_bool"):
            attrs = {k: v for k, v in ds[name].attrs.items() if k != "loradyn_bool"}
            ds[name] = ds[name].astype(bool)
            ds[name].attrs = attrs
    return ds
