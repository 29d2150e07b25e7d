"""The ViT run directory, torch-free: paths, the stored config (manifest) and its update.

Layout (see :mod:`loradyn.vit.train` for what each file holds)::

    DIR/config.json                               the ExperimentConfig (seeds: union of runs)
    DIR/.config.lock                              held while config.json is read and rewritten
    DIR/pretrain/seed<P>/ckpt_<EEE>.pt            backbone after epoch EEE + source metrics
    DIR/pretrain/seed<P>/history.nc               source curves; its presence = finished
    DIR/finetune/p<P>_ckpt<EEE>_seed<S>.nc        downstream curves; presence = finished
    DIR/table.csv, DIR/figure.png                 Table-1 and Fig. 10-12 style outputs

A file that cannot be read back is moved aside to ``NAME.corrupt`` with one
:class:`CorruptFileWarning` naming it and what is redone (:func:`set_aside`).
The table and the figures (:mod:`loradyn.vit.table`, :mod:`loradyn.vit.figures`) read a
run directory through this module and :func:`loradyn.io.load_netcdf` only, so they work
without torch. Several processes (sweep workers) may add their seeds to one
``config.json`` at once: :func:`prepare_run_dir` reads, merges and rewrites it under an
exclusive lock, so no seed is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import xarray as xr

from ..errors import LoradynError
from ..io import atomic_write_text, load_netcdf
from .config import ExperimentConfig

CONFIG_FILE = "config.json"
LOCK_FILE = ".config.lock"

__all__ = [
    "CorruptFileWarning",
    "read_config",
    "set_aside",
    "try_netcdf",
    "check_run_dir",
    "checkpoint_path",
    "finetune_path",
    "load_run_config",
    "prepare_run_dir",
    "pretrain_dir",
]


def pretrain_dir(out: str | Path, pseed: int) -> Path:
    """``out/pretrain/seed<P>``: checkpoints and history of pre-training seed ``pseed``."""
    return Path(out) / "pretrain" / f"seed{pseed}"


def checkpoint_path(out: str | Path, pseed: int, epoch: int) -> Path:
    """The backbone checkpoint after pre-training epoch ``epoch``."""
    return pretrain_dir(out, pseed) / f"ckpt_{epoch:03d}.pt"


def finetune_path(out: str | Path, pseed: int, epoch: int, seed: int) -> Path:
    """The downstream curves of seed ``seed`` fine-tuned from checkpoint ``epoch``."""
    return Path(out) / "finetune" / f"p{pseed}_ckpt{epoch:03d}_seed{seed}.nc"


class CorruptFileWarning(UserWarning):
    """A run-directory file could not be read back; it was moved aside and is redone."""


def set_aside(path: Path, why: object, redo: str) -> None:
    """Move a corrupt file to ``NAME.corrupt`` and warn once, naming it and what is redone."""
    path = Path(path)
    with contextlib.suppress(OSError):
        os.replace(path, path.with_name(path.name + ".corrupt"))
    reason = " ".join(str(why).split())[:160] or type(why).__name__
    warnings.warn(f"{path} was unreadable ({reason}); moved aside to {path.name}.corrupt, "
                  f"{redo}", CorruptFileWarning, stacklevel=3)


_NC_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError, LoradynError)


def try_netcdf(path: Path, epochs: int, variables: tuple[str, ...], attrs: tuple[str, ...],
            redo: str) -> xr.Dataset | None:
    """A result dataset checked to have ``variables`` over ``epochs + 1`` epochs and
    ``attrs``; an unreadable or incomplete file is set aside and ``None`` returned."""
    try:
        ds = load_netcdf(path)
        missing = [v for v in variables if v not in ds.data_vars] + [
            a for a in attrs if a not in ds.attrs]
        if missing:
            raise ValueError(f"lacks {', '.join(missing)}")
        if ds.sizes.get("epoch") != epochs + 1:
            raise ValueError(f"has {ds.sizes.get('epoch')} epochs, expected {epochs + 1}")
        return ds
    except _NC_ERRORS as exc:
        set_aside(path, exc, redo)
        return None


def read_config(p: Path, heal: bool) -> ExperimentConfig | None:
    """The stored config; ``None`` if absent. A corrupt one is set aside when ``heal``
    (the caller rewrites it), else a one-line error."""
    if not p.exists():
        return None
    try:
        return ExperimentConfig.from_dict(json.loads(p.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, LoradynError) as exc:
        if not heal:
            raise LoradynError(
                f"{p} is unreadable ({' '.join(str(exc).split())[:160]}): rerun 'loradyn vit "
                "run' with the experiment's --preset/--config to rewrite it"
            ) from None
        set_aside(p, exc, "rewritten from the given configuration")
        return None


def load_run_config(out: str | Path) -> ExperimentConfig:
    """The experiment stored in ``out/config.json``."""
    p = Path(out) / CONFIG_FILE
    cfg = read_config(p, heal=False)
    if cfg is None:
        raise LoradynError(f"{p} not found; run 'loradyn vit run' or 'vit pretrain' first")
    return cfg


def _other(out: Path, old: ExperimentConfig) -> LoradynError:
    return LoradynError(
        f"{out} holds a run of another configuration ({old.name}, scale {old.scale}); "
        "use another --out directory"
    )


def check_run_dir(cfg: ExperimentConfig, out: str | Path) -> None:
    """Raise a user error if ``out`` holds a run of another configuration (a corrupt
    ``config.json`` is set aside)."""
    old = read_config(Path(out) / CONFIG_FILE, heal=True)
    if old is not None and old.work_key() != cfg.work_key():
        raise _other(Path(out), old)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``out/.config.lock`` (waits for other holders)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(out / LOCK_FILE, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def prepare_run_dir(cfg: ExperimentConfig, out: str | Path) -> ExperimentConfig:
    """Create ``out`` and store ``cfg``; refuse a directory holding another experiment.

    Seeds accumulate: a rerun with new seeds adds them to the stored list. The read,
    merge and rewrite of ``config.json`` happen under an exclusive lock, so processes
    adding seeds at the same time lose none; a corrupt ``config.json`` is set aside and
    rewritten. Returns the stored config.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LoradynError(f"cannot create the run directory {out}: {exc.strerror or exc}; "
                           "choose another --out") from None
    p = out / CONFIG_FILE
    if p.is_dir():
        raise LoradynError(f"{p} is a directory: use another --out directory")
    with _locked(out):
        old = read_config(p, heal=True)
        if old is not None:
            if old.work_key() != cfg.work_key():
                raise _other(out, old)
            seeds = tuple(sorted(set(old.seeds) | set(cfg.seeds)))
            cfg = cfg.with_seeds(seeds)
        atomic_write_text(p, json.dumps(cfg.to_dict(), indent=1, sort_keys=True),
                          encoding=None, mkdir=False)
    return cfg
