"""The ViT run directory, torch-free: paths, the stored config (manifest) and its update,
and the fine-tune results (a :class:`loradyn.store.ResultStore` rooted at the directory).

Layout (see :mod:`loradyn.vit.train` for what each file holds)::

    DIR/config.json                               the ExperimentConfig (seeds: union of runs)
    DIR/.config.lock                              held while config.json is read and rewritten
    DIR/pretrain/seed<P>/ckpt_<EEE>.pt            backbone after epoch EEE + source metrics
    DIR/pretrain/seed<P>/history.nc               source curves; its presence = finished
    DIR/results/KEY.nc                            a fine-tune's downstream curves (the store;
                                                  KEY = vit.config.finetune_key)
    DIR/corrupt/KEY.nc                            a fine-tune result found corrupt, set aside
    DIR/finetune/KEY.state.pt                     resume state of an unfinished fine-tune
    DIR/finetune/p<P>_ckpt<EEE>_seed<S>.nc        fine-tune result of older versions (read only)
    DIR/table.csv, DIR/figure.png                 Table-1 and Fig. 10-12 style outputs

A fine-tune result is served (:func:`find_finetune`) only when it is valid and made by
the current number-computing code (:func:`loradyn.store.code_hash`), or by other code
when the caller passes ``reuse_other_code`` (the CLI's ``--reuse-other-code``); a
result of other code otherwise counts as unfinished and training recomputes it. A
corrupt result is moved to ``DIR/corrupt/`` with one :class:`CorruptFileWarning` and
redone. Results of older loradyn versions, ``DIR/finetune/p<P>_ckpt<EEE>_seed<S>.nc``,
are still read (never written or moved) when the store has none for a fine-tune, under
the same code-hash rule (a file without ``code_hash`` counts as other code).

Any other file that cannot be read back is moved aside to ``NAME.corrupt`` with one
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
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from ..errors import LoradynError
from ..io import atomic_write_text, load_netcdf
from ..store import ResultStore, code_hash
from .config import ExperimentConfig, finetune_key

CONFIG_FILE = "config.json"
LOCK_FILE = ".config.lock"

__all__ = [
    "CorruptFileWarning",
    "FoundFinetune",
    "find_finetune",
    "finetune_result_path",
    "result_store",
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
    """Where loradyn versions before the result store kept the downstream curves of seed
    ``seed`` fine-tuned from checkpoint ``epoch`` (read only now: :func:`find_finetune`)."""
    return Path(out) / "finetune" / f"p{pseed}_ckpt{epoch:03d}_seed{seed}.nc"


class CorruptFileWarning(UserWarning):
    """A run-directory file could not be read back; it was moved aside and is redone."""


#: The devices a fine-tune key can name (:func:`loradyn.vit.config.finetune_key`), in the
#: order :func:`find_finetune` looks for a result when the caller names none.
DEVICES = ("cuda", "cpu")
#: What a fine-tune result must hold: variables over ``epoch`` and attributes.
FINETUNE_VARIABLES = ("test_acc", "test_loss", "train_loss")
FINETUNE_ATTRS = ("source_acc", "checkpoint", "seed")


def _warn_corrupt(message: str) -> None:
    warnings.warn(message, CorruptFileWarning, stacklevel=4)


def result_store(out: str | Path, *, reuse_other_code: bool = False) -> ResultStore:
    """The fine-tune result store of run directory ``out`` (``out/results/KEY.nc``); a
    corrupt result it sets aside is reported as a :class:`CorruptFileWarning`."""
    return ResultStore(Path(out), reuse_other_code=reuse_other_code, warn=_warn_corrupt)


def finetune_result_path(out: str | Path, cfg: ExperimentConfig, checkpoint: int, seed: int,
                         device: str) -> Path:
    """``out/results/KEY.nc`` with ``KEY = finetune_key(cfg, checkpoint, seed, device)``."""
    return result_store(out).result_path(finetune_key(cfg, checkpoint, seed, device))


@dataclass(frozen=True)
class FoundFinetune:
    """What :func:`find_finetune` found for one (checkpoint, seed).

    ``state`` is ``done`` (``ds`` and ``path`` given), ``stale`` (only results of other
    code exist) or ``missing``; ``legacy`` marks a result served from the older layout
    (``DIR/finetune/p<P>_ckpt<EEE>_seed<S>.nc``)."""

    state: str
    ds: xr.Dataset | None = None
    path: Path | None = None
    legacy: bool = False


def _shape_problem(ds: xr.Dataset, epochs: int) -> str:
    """Why ``ds`` is not a fine-tune result over ``epochs + 1`` epochs ('' when it is)."""
    missing = [v for v in FINETUNE_VARIABLES if v not in ds.data_vars] + [
        a for a in FINETUNE_ATTRS if a not in ds.attrs]
    if missing:
        return f"lacks {', '.join(missing)}"
    if ds.sizes.get("epoch") != epochs + 1:
        return f"has {ds.sizes.get('epoch')} epochs, expected {epochs + 1}"
    return ""


def _device_type(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("device", "")).split(":")[0]


def find_finetune(out: str | Path, cfg: ExperimentConfig, checkpoint: int, seed: int, *,
                  device: str | None = None, reuse_other_code: bool = False) -> FoundFinetune:
    """The stored result of fine-tuning checkpoint ``checkpoint`` with seed ``seed``.

    Looks up ``finetune_key(cfg, checkpoint, seed, device)`` in :func:`result_store`
    (``device=None``: each of :data:`DEVICES` in turn, the first valid one wins). A
    result that cannot be read, holds another key or lacks the fine-tune variables is
    moved to ``out/corrupt/`` (one :class:`CorruptFileWarning`); one made by other code
    (another :func:`loradyn.store.code_hash`) is ``stale`` unless ``reuse_other_code``.
    When the store has none, the older layout's file is read (never moved or written)
    under the same rule. A result of the current code is preferred to one of other code
    (on any device). Torch-free: the table and figures use it.
    """
    found = _find(out, cfg, checkpoint, seed, device, False)
    if found.state == "stale" and reuse_other_code:
        found = _find(out, cfg, checkpoint, seed, device, True)
    return found


def _find(out: str | Path, cfg: ExperimentConfig, checkpoint: int, seed: int,
          device: str | None, reuse_other_code: bool) -> FoundFinetune:
    store = result_store(out, reuse_other_code=reuse_other_code)
    stale = False
    for dev in (device,) if device else DEVICES:
        key = finetune_key(cfg, checkpoint, seed, dev)
        state, reason = store.state(key)
        if state == "corrupt":
            store.quarantine(key, reason)
        elif state == "stale":
            stale = True
        elif state == "done":
            try:
                ds = store.read(key)
            except LoradynError as exc:  # changed since state(): corrupt after all
                store.quarantine(key, str(exc))
                continue
            bad = _shape_problem(ds, cfg.finetune.epochs)
            if bad:
                store.quarantine(key, f"the dataset {bad}")
                continue
            return FoundFinetune("done", ds, store.result_path(key))
    legacy = finetune_path(out, cfg.pretrain_seed_for(seed), checkpoint, seed)
    if legacy.is_file():
        ds = _read_legacy(legacy, cfg.finetune.epochs)
        if ds is not None and (device is None or _device_type(ds) == device):
            if reuse_other_code or ds.attrs.get("code_hash") == code_hash():
                return FoundFinetune("done", ds, legacy, legacy=True)
            stale = True
    return FoundFinetune("stale" if stale else "missing")


def _read_legacy(path: Path, epochs: int) -> xr.Dataset | None:
    """A fine-tune result of the older layout, or ``None`` (with one warning) when it
    cannot be used; the file is left where it is."""
    try:
        ds = load_netcdf(path)
        bad = _shape_problem(ds, epochs)
    except _NC_ERRORS as exc:
        bad = " ".join(str(exc).split())[:160] or type(exc).__name__
    if not bad:
        return ds
    warnings.warn(f"{path} (a fine-tune result of an older loradyn) is unusable ({bad}); "
                  "it is ignored and the fine-tune counts as unfinished",
                  CorruptFileWarning, stacklevel=3)
    return None


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
