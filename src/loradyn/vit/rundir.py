"""The ViT run directory, torch-free: paths, the stored config (manifest) and its update.

Layout (see :mod:`loradyn.vit.train` for what each file holds)::

    DIR/config.json                               the ExperimentConfig (seeds: union of runs)
    DIR/.config.lock                              held while config.json is read and rewritten
    DIR/pretrain/seed<P>/ckpt_<EEE>.pt            backbone after epoch EEE + source metrics
    DIR/pretrain/seed<P>/history.nc               source curves; its presence = finished
    DIR/finetune/p<P>_ckpt<EEE>_seed<S>.nc        downstream curves; presence = finished
    DIR/table.csv, DIR/figure.png                 Table-1 and Fig. 10-12 style outputs

The table and the figures (:mod:`loradyn.vit.table`, :mod:`loradyn.vit.figures`) read a
run directory through this module and :func:`loradyn.io.load_netcdf` only, so they work
without torch. Several processes (sweep workers) may add their seeds to one
``config.json`` at once: :func:`prepare_run_dir` reads, merges and rewrites it under an
exclusive lock, so no seed is lost.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import LoradynError
from ..io import atomic_write_text
from .config import ExperimentConfig

CONFIG_FILE = "config.json"
LOCK_FILE = ".config.lock"

__all__ = [
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


def _read_config(p: Path) -> ExperimentConfig:
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoradynError(f"{p} is unreadable ({' '.join(str(exc).split())}): delete it and "
                           "rerun with --config or --preset") from None
    return ExperimentConfig.from_dict(data)


def load_run_config(out: str | Path) -> ExperimentConfig:
    """The experiment stored in ``out/config.json``."""
    p = Path(out) / CONFIG_FILE
    if not p.exists():
        raise LoradynError(f"{p} not found; run 'loradyn vit run' or 'vit pretrain' first")
    return _read_config(p)


def _other(out: Path, old: ExperimentConfig) -> LoradynError:
    return LoradynError(
        f"{out} holds a run of another configuration ({old.name}, scale {old.scale}); "
        "use another --out directory"
    )


def check_run_dir(cfg: ExperimentConfig, out: str | Path) -> None:
    """Raise a user error if ``out`` holds a run of another configuration."""
    p = Path(out) / CONFIG_FILE
    if p.exists():
        old = _read_config(p)
        if old.work_key() != cfg.work_key():
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
    adding seeds at the same time lose none. Returns the stored config.
    """
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LoradynError(f"cannot create the run directory {out}: {exc.strerror or exc}; "
                           "choose another --out") from None
    p = out / CONFIG_FILE
    with _locked(out):
        if p.exists():
            old = _read_config(p)
            if old.work_key() != cfg.work_key():
                raise _other(out, old)
            seeds = tuple(sorted(set(old.seeds) | set(cfg.seeds)))
            cfg = cfg.with_seeds(seeds)
        atomic_write_text(p, json.dumps(cfg.to_dict(), indent=1, sort_keys=True),
                          encoding=None, mkdir=False)
    return cfg
