"""Pre-training, LoRA fine-tuning and the resumable experiment runner.

Run directory layout (every file is written atomically: temp file, then ``os.replace``)::

    DIR/config.json                               the ExperimentConfig (seeds: union of runs)
    DIR/pretrain/seed<P>/ckpt_<EEE>.pt            backbone after epoch EEE + source metrics
    DIR/pretrain/seed<P>/state.pt                 per-epoch resume state (deleted when done)
    DIR/pretrain/seed<P>/history.nc               source curves; its presence = finished
    DIR/results/KEY.nc                            a fine-tune's downstream curves: the run's
                                                  ResultStore, KEY = config.finetune_key
    DIR/finetune/KEY.state.pt                     per-epoch resume state (deleted when done)
    DIR/table.csv, DIR/figure.png                 Table-1 and Fig. 10-12 style outputs

A killed run loses at most the epoch in progress: rerunning skips finished pre-trainings
and fine-tunes and continues unfinished ones from their last completed epoch. A finished
fine-tune is served from the store (:func:`loradyn.vit.rundir.find_finetune`) only when
it was made by the current number-computing code (:func:`loradyn.store.code_hash`);
one made by other code is recomputed unless ``reuse_other_code=True`` (the CLI's
``--reuse-other-code``). A file that cannot be read back (truncated ``state.pt``,
checkpoint, ``history.nc`` or ``config.json``) is moved aside to ``NAME.corrupt``, a
corrupt fine-tune result to ``DIR/corrupt/``, each with one :class:`CorruptFileWarning`
naming it and what is redone, and the work it held is redone: a corrupted run heals on
rerun. Training whose loss becomes NaN or infinite stops with a :class:`DivergenceError`
(nothing is written to the table), and an epoch without an optimizer step is an error. Each epoch
reseeds torch's global generator and the shuffling generator from (seed, epoch), so a
resumed run gives the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr

from ..errors import DivergenceError, LoradynError
from ..io import atomic_write, load_netcdf, save_netcdf
from ..store import ResultStore, code_hash
from .config import ExperimentConfig, finetune_key
from .data import TaskData, load_task, per_class_subset
from .model import add_lora, build_vit, check_geometry, check_trainable
from .rundir import (  # noqa: F401 - the run directory's API, re-exported
    CorruptFileWarning,
    check_run_dir,
    checkpoint_path,
    find_finetune,
    finetune_path,
    finetune_result_path,
    load_run_config,
    prepare_run_dir,
    pretrain_dir,
    read_config,
    result_store,
    set_aside,
    try_netcdf,
)

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]


def _noop(fraction: float, message: str = "") -> None:
    return None


# --------------------------------------------------------------------------- helpers


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise LoradynError("--device cuda was asked but no CUDA GPU is visible; use --device cpu")
    if device not in ("cpu", "cuda"):
        raise LoradynError(f"device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


# torch CPU threads for the small ViTs of this package when the caller does not choose:
# measured on a 2-core machine, the quick digits run (fig12) takes 14 s with torch's default
# 2 threads on an idle machine, 17 s with 1 thread, but 35 s with 2 threads as soon as a
# second process competes for the cores (the threads wait on each other); 1 thread is never
# more than ~1.2x slower and never collapses under load.
CPU_THREADS = 1


@contextlib.contextmanager
def torch_threads(n: int | None, device: torch.device | str = "cpu") -> Iterator[int]:
    """Run the block with ``torch.set_num_threads(n)`` and restore the old count after.

    ``n = None`` or ``0`` picks :data:`CPU_THREADS` on a CPU device and leaves the count
    alone on a GPU; a negative ``n`` is a user error.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise LoradynError(f"threads must be an integer >= 0 (0: automatic), got {n!r}")
    old = torch.get_num_threads()
    dev = resolve_device(device) if isinstance(device, str) else device
    want = n if n else (CPU_THREADS if dev.type == "cpu" else old)
    torch.set_num_threads(want)
    try:
        yield want
    finally:
        torch.set_num_threads(old)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_write(path, mkdir=False) as tmp:
        torch.save(obj, tmp)


_atomic_netcdf = save_netcdf  # the one netCDF pair (kept under the old private names)
_load_nc = load_netcdf
_try_nc = try_netcdf


# what a torch.load of a damaged file raises (truncated zip, bad pickle, short read)
_TORCH_ERRORS = (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
                 AttributeError, IndexError, ImportError, __import__("pickle").UnpicklingError)


def _try_torch(path: Path, keys: tuple[str, ...], map_location: Any, redo: str) -> Any | None:
    """``torch.load(path)`` (weights only) checked to be a dict with ``keys``; a file that
    fails is set aside (:func:`set_aside`) and ``None`` returned."""
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            raise ValueError(f"not a dict with {', '.join(keys)}")
        return obj
    except _TORCH_ERRORS as exc:
        set_aside(path, exc, redo)
        return None


def _epoch_seed(seed: int, epoch: int, salt: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + salt) % (2**63 - 1)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=amp and device.type == "cuda")


@torch.no_grad()
def evaluate(model, x, y, device: torch.device, amp: bool = False,
             batch_size: int = 1024) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``(x, y)``."""
    model.eval()
    correct = 0
    loss = 0.0
    n = len(y)
    for i in range(0, n, batch_size):
        xb = x[i:i + batch_size].to(device, non_blocking=True)
        yb = y[i:i + batch_size].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(xb)
        logits = logits.float()
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return correct / n, loss / n


def _train_epoch(model, opt, x, y, batch_size: int, gen: torch.Generator,
                 device: torch.device, amp: bool, sched=None,
                 label_smoothing: float = 0.0) -> float:
    model.train()
    n = len(y)
    if n == 0 or batch_size < 1:
        raise LoradynError(
            f"no optimizer step would be taken ({n} training examples, batch size "
            f"{batch_size}): give a positive batch_size and a non-empty training set"
        )
    perm = torch.randperm(n, generator=gen).to(x.device)
    total = torch.zeros((), device=device)
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        xb = x[idx].to(device, non_blocking=True)
        yb = y[idx].to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        total += loss.detach() * len(idx)  # no per-step host sync
    mean = float(total) / n
    if not math.isfinite(mean):
        raise DivergenceError(
            f"training diverged: the loss became {mean} (learning rate "
            f"{opt.param_groups[0]['lr']:g}); lower lr. Nothing was written for this run"
        )
    return mean


def _cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay
    ``min_ratio + (1 - min_ratio) (1 + cos(pi t)) / 2`` with t the post-warm-up fraction."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    t = min(max(t, 0.0), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class _Counter:
    """Turns units of work (epochs) into the ``progress(fraction, message)`` calls."""

    def __init__(self, total: int, progress: Progress | None):
        self.total = max(1, total)
        self.done = 0
        self.progress = progress or _noop

    def add(self, k: int, message: str) -> None:
        self.done += k
        self.progress(min(1.0, self.done / self.total), message)


# --------------------------------------------------------------------------- pretrain


def pretrain(
    cfg: ExperimentConfig,
    out: str | Path,
    pretrain_seed: int | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    amp: bool | None = None,
    progress: Progress | None = None,
    source: TaskData | None = None,
    _counter: _Counter | None = None,
    reuse_other_code: bool = False,
) -> xr.Dataset:
    """Pre-train the ViT on the source task and save the checkpoints (resumable).

    A finished pre-training is reused when its ``history.nc`` was made by the current
    number-computing code (:func:`loradyn.store.code_hash`) or ``reuse_other_code`` is set;
    otherwise it is redone (checkpoints overwritten), and so is a resume state of other code.

    AdamW (``lr``, ``weight_decay`` on all parameters) with a per-step learning-rate
    factor :func:`_cosine`; cross-entropy loss. After every epoch the source test accuracy
    and loss are measured; the model is saved at every epoch in ``cfg.pretrain.checkpoints``.

    Returns the source history: ``xarray.Dataset`` over ``epoch`` (0 = initialization) with
    ``test_acc``, ``test_loss``, ``train_loss`` and ``lr``, config JSON in ``attrs``.
    """
    out = Path(out)
    cfg = prepare_run_dir(cfg, out)
    pseed = cfg.pretrain_seed if pretrain_seed is None else int(pretrain_seed)
    pt = cfg.pretrain
    d = pretrain_dir(out, pseed)
    hist_path = d / "history.nc"
    counter = _counter or _Counter(pt.epochs, progress)
    if hist_path.exists() and all(checkpoint_path(out, pseed, e).exists() for e in pt.checkpoints):
        done = _pretrain_done(out, pseed, pt.epochs, pt.checkpoints)
        if done is not None and (reuse_other_code or done.attrs.get("code_hash") == code_hash()):
            counter.add(pt.epochs, f"pretrain seed {pseed}: done")
            return done
        if done is not None:
            log.warning("pre-training seed %d was made by other number-computing code: "
                        "redone (pass --reuse-other-code to keep it)", pseed)
            hist_path.unlink(missing_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    amp = (dev.type == "cuda") if amp is None else amp
    src = source or load_task(cfg.source, data_dir, download)
    check_geometry(cfg.vit, src.channels, src.image_size, "source")

    torch.manual_seed(pseed)
    model = build_vit(cfg.vit, src.num_classes).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=pt.lr, weight_decay=pt.weight_decay)
    steps = math.ceil(len(src.y_train) / pt.batch_size)
    total, warm = steps * pt.epochs, steps * pt.warmup_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _cosine(s, total, warm, pt.min_lr_ratio)
    )
    state_path = d / "state.pt"
    hist: dict[str, list[float]] = {"test_acc": [], "test_loss": [], "train_loss": [], "lr": []}
    start = 0
    st = None
    if state_path.exists():
        st = _try_torch(state_path, ("model", "opt", "sched", "hist", "epoch"), dev,
                        f"pre-training seed {pseed} restarts from epoch 0")
        if st is not None and st.get("code_hash") != code_hash():
            log.info("pre-training seed %d: the resume state was saved by other "
                     "number-computing code; restarting from epoch 0", pseed)
            state_path.unlink(missing_ok=True)
            st = None
    if st is not None:
        try:
            model.load_state_dict(st["model"])
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            hist = {k: list(v) for k, v in st["hist"].items()}
            start = int(st["epoch"])
        except _TORCH_ERRORS as exc:  # a state of another shape: start over
            set_aside(state_path, exc, f"pre-training seed {pseed} restarts from epoch 0")
            torch.manual_seed(pseed)
            model = build_vit(cfg.vit, src.num_classes).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=pt.lr, weight_decay=pt.weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: _cosine(s, total, warm, pt.min_lr_ratio)
            )
            start = 0
        if start:
            counter.add(start, f"pretrain seed {pseed}: resumed after epoch {start}")
    x_tr = src.x_train.to(dev)
    y_tr = src.y_train.to(dev)
    if start == 0:
        acc, loss = evaluate(model, src.x_test, src.y_test, dev, amp)
        hist = {"test_acc": [acc], "test_loss": [loss], "train_loss": [float("nan")],
                "lr": [opt.param_groups[0]["lr"]]}
        if 0 in pt.checkpoints:
            _save_checkpoint(model, out, pseed, 0, acc, loss)
    for epoch in range(start + 1, pt.epochs + 1):
        torch.manual_seed(_epoch_seed(pseed, epoch, 1))
        gen = torch.Generator().manual_seed(_epoch_seed(pseed, epoch, 2))
        lr = opt.param_groups[0]["lr"]
        tl = _train_epoch(model, opt, x_tr, y_tr, pt.batch_size, gen, dev, amp, sched,
                          pt.label_smoothing)
        acc, loss = evaluate(model, src.x_test, src.y_test, dev, amp)
        for k, v in (("test_acc", acc), ("test_loss", loss), ("train_loss", tl), ("lr", lr)):
            hist[k].append(v)
        if epoch in pt.checkpoints:
            _save_checkpoint(model, out, pseed, epoch, acc, loss)
        _atomic_torch_save({"model": model.state_dict(), "opt": opt.state_dict(),
                            "sched": sched.state_dict(), "hist": hist, "epoch": epoch,
                            "code_hash": code_hash()},
                           state_path)
        counter.add(1, f"pretrain seed {pseed}: epoch {epoch}/{pt.epochs}, "
                       f"source acc {100 * acc:.1f}%")
    ds = xr.Dataset(
        {k: ("epoch", np.asarray(v, dtype=float)) for k, v in hist.items()},
        coords={"epoch": np.arange(pt.epochs + 1)},
        attrs={"config": cfg.to_json(), "pretrain_seed": pseed,
               "checkpoints": json.dumps(list(pt.checkpoints)), "device": str(dev)},
    )
    ds = ResultStore.stamp(ds, cfg.work_key())  # returned as a rerun will read it back
    save_netcdf(ds, hist_path)
    state_path.unlink(missing_ok=True)
    return ds


def _pretrain_done(out: Path, pseed: int, epochs: int,
                   checkpoints: tuple[int, ...]) -> xr.Dataset | None:
    """The finished pre-training's history if it and every checkpoint read back, else
    ``None`` (the unreadable files set aside: the pre-training is redone)."""
    redo = f"pre-training seed {pseed} is redone"
    hist = try_netcdf(pretrain_dir(out, pseed) / "history.nc", epochs,
                   ("test_acc", "test_loss", "train_loss", "lr"), ("pretrain_seed",), redo)
    bad = [e for e in checkpoints if _try_torch(
        checkpoint_path(out, pseed, e), ("model", "source_acc", "source_loss"), "cpu",
        redo) is None]
    if hist is None or bad:
        if hist is not None:  # redone anyway: the history is rewritten with the checkpoints
            (pretrain_dir(out, pseed) / "history.nc").unlink(missing_ok=True)
        return None
    return hist


def _save_checkpoint(model, out: Path, pseed: int, epoch: int, acc: float, loss: float) -> None:
    _atomic_torch_save(
        {"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
         "epoch": epoch, "source_acc": acc, "source_loss": loss},
        checkpoint_path(out, pseed, epoch),
    )


# --------------------------------------------------------------------------- finetune


def head_reinitialized(cfg: ExperimentConfig) -> bool:
    """Whether fine-tuning re-initializes the head (``auto``: iff the label space changes)."""
    mode = cfg.finetune.reinit_head
    if mode == "always":
        return True
    if mode == "never":
        return False
    return cfg.source.label_space != cfg.target.label_space


def finetune(
    cfg: ExperimentConfig,
    out: str | Path,
    checkpoint: int,
    seed: int,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    amp: bool | None = None,
    progress: Progress | None = None,
    target: TaskData | None = None,
    reuse_other_code: bool = False,
    _counter: _Counter | None = None,
) -> xr.Dataset:
    """LoRA fine-tuning of one pre-training checkpoint with one seed (resumable).

    The checkpoint's backbone is frozen; LoRA adapters go into the attention projections;
    the head is re-initialized (PyTorch's default ``Linear`` init, after
    ``torch.manual_seed(seed)``) when the label space changes and kept otherwise; AdamW
    with a constant learning rate trains the adapters and the head on ``per_class``
    examples per class; after every epoch the full target test set is evaluated.
    Only LoRA and head parameters may train (asserted by :func:`check_trainable`).

    The result is stored in the run directory's result store under
    ``finetune_key(cfg, checkpoint, seed, device)`` (``out/results/KEY.nc``, written
    atomically by :meth:`loradyn.store.ResultStore.write`) and served from there on a
    rerun (no training) when it is valid and was made by the current number-computing
    code; a result of other code is recomputed unless ``reuse_other_code``; a corrupt
    one is set aside and recomputed.

    Returns ``xarray.Dataset`` over ``epoch`` (0 = before fine-tuning) with ``test_acc``,
    ``test_loss``, ``train_loss``; attrs: config JSON, checkpoint, seed, pretrain_seed,
    source accuracy of the checkpoint, trainable-parameter counts, head_reinit,
    ``result_key`` and ``code_hash``.
    """
    out = Path(out)
    ft = cfg.finetune
    if checkpoint not in cfg.pretrain.checkpoints:
        raise LoradynError(
            f"checkpoint {checkpoint} is not one of the pre-training checkpoints "
            f"{list(cfg.pretrain.checkpoints)}"
        )
    check_run_dir(cfg, out)
    pseed = cfg.pretrain_seed_for(seed)
    dev = resolve_device(device)
    key = finetune_key(cfg, checkpoint, seed, dev.type)
    store = result_store(out, reuse_other_code=reuse_other_code)
    counter = _counter or _Counter(ft.epochs, progress)
    tag = f"finetune ckpt {checkpoint} seed {seed}"
    found = find_finetune(out, cfg, checkpoint, seed, device=dev.type,
                          reuse_other_code=reuse_other_code)
    if found.ds is not None:
        if (found.legacy and found.ds.attrs.get("result_key") == key
                and found.ds.attrs.get("code_hash") == code_hash()):
            store.write(key, found.ds)  # an older layout's result of this code: adopt it
        counter.add(ft.epochs, f"{tag}: done")
        return found.ds
    if found.state == "stale":
        log.warning("%s in %s was made by other number-computing code: recomputing it "
                    "(--reuse-other-code keeps it)", tag, out)
    ck_path = checkpoint_path(out, pseed, checkpoint)
    if not ck_path.exists():
        raise LoradynError(
            f"{ck_path} not found; run 'loradyn vit pretrain' (pre-training seed {pseed}) first"
        )
    state_path = out / "finetune" / f"{key}.state.pt"
    state_path.parent.mkdir(parents=True, exist_ok=True)
    amp = (dev.type == "cuda") if amp is None else amp
    tgt = target or load_task(cfg.target, data_dir, download)
    check_geometry(cfg.vit, tgt.channels, tgt.image_size, "target")
    ck = _try_torch(ck_path, ("model", "source_acc", "source_loss"), "cpu",
                    "rerun 'loradyn vit run' or 'vit pretrain' to redo it")
    if ck is None:
        (pretrain_dir(out, pseed) / "history.nc").unlink(missing_ok=True)  # not finished now
        raise LoradynError(
            f"{ck_path} was unreadable and is set aside: rerun 'loradyn vit run' or "
            f"'vit pretrain' (pre-training seed {pseed}) to redo it"
        )
    n_src = ck["model"]["head.weight"].shape[0]
    reinit = head_reinitialized(cfg)
    if not reinit and n_src != tgt.num_classes:
        raise LoradynError(
            f"the head has {n_src} outputs but the target has {tgt.num_classes} classes; "
            "set finetune.reinit_head to auto or always"
        )
    torch.manual_seed(seed)
    model = build_vit(cfg.vit, n_src)
    model.load_state_dict(ck["model"])
    if reinit:
        model.reset_classifier(tgt.num_classes)
    model = add_lora(model, ft.lora)
    counts = check_trainable(model)
    model = model.to(dev)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=ft.lr, weight_decay=ft.weight_decay)

    bseed = seed if ft.budget_seed is None else ft.budget_seed
    idx = torch.from_numpy(per_class_subset(tgt.y_train.numpy(), ft.per_class, bseed))
    x_tr = tgt.x_train[idx].to(dev)
    y_tr = tgt.y_train[idx].to(dev)

    start = 0
    st = None
    if state_path.exists():
        st = _try_torch(state_path, ("trainable", "opt", "hist", "epoch"), dev,
                        f"{tag} restarts from epoch 0")
        if st is not None and st.get("code_hash") != code_hash():
            log.info("%s: the resume state was saved by other number-computing code; "
                     "restarting from epoch 0", tag)
            state_path.unlink(missing_ok=True)
            st = None
        if st is not None:
            try:
                opt_state = st["opt"]
                hist = {k: list(v) for k, v in st["hist"].items()}
                start = int(st["epoch"])
                bad = model.load_state_dict(st["trainable"], strict=False).unexpected_keys
                if bad:
                    raise KeyError(f"unknown parameters {bad[:2]}")
                opt.load_state_dict(opt_state)
            except _TORCH_ERRORS as exc:
                set_aside(state_path, exc, f"{tag} restarts from epoch 0")
                raise LoradynError(
                    f"{state_path} did not fit the model and was set aside: rerun to redo "
                    f"{tag}"
                ) from None
            counter.add(start, f"{tag}: resumed after epoch {start}")
    if st is None:
        acc, loss = evaluate(model, tgt.x_test, tgt.y_test, dev, amp)
        hist = {"test_acc": [acc], "test_loss": [loss], "train_loss": [float("nan")]}
    names = {id(p): n for n, p in model.named_parameters()}
    for epoch in range(start + 1, ft.epochs + 1):
        torch.manual_seed(_epoch_seed(seed, epoch, 3))
        gen = torch.Generator().manual_seed(_epoch_seed(seed, epoch, 4))
        tl = _train_epoch(model, opt, x_tr, y_tr, ft.batch_size, gen, dev, amp)
        acc, loss = evaluate(model, tgt.x_test, tgt.y_test, dev, amp)
        for k, v in (("test_acc", acc), ("test_loss", loss), ("train_loss", tl)):
            hist[k].append(v)
        _atomic_torch_save(
            {"trainable": {names[id(p)]: p.detach() for p in trainable},
             "opt": opt.state_dict(), "hist": hist, "epoch": epoch,
             "code_hash": code_hash()},
            state_path,
        )
        counter.add(1, f"{tag}: epoch {epoch}/{ft.epochs}, target acc {100 * acc:.1f}%")
    ds = xr.Dataset(
        {k: ("epoch", np.asarray(v, dtype=float)) for k, v in hist.items()},
        coords={"epoch": np.arange(ft.epochs + 1)},
        attrs={"config": cfg.to_json(), "checkpoint": int(checkpoint), "seed": int(seed),
               "pretrain_seed": int(pseed), "source_acc": float(ck["source_acc"]),
               "source_loss": float(ck["source_loss"]), "head_reinit": int(reinit),
               "trainable_lora": counts["lora"], "trainable_head": counts["head"],
               "frozen": counts["frozen"], "per_class": ft.per_class,
               "budget_seed": int(bseed), "device": str(dev)},
    )
    # stamped with the one key and the code that made it; atomic (fsync, os.replace)
    store.write(key, ds)
    state_path.unlink(missing_ok=True)
    return ResultStore.stamp(ds, key)


def finetune_all(
    cfg: ExperimentConfig,
    out: str | Path,
    checkpoints: tuple[int, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    amp: bool | None = None,
    progress: Progress | None = None,
    _counter: _Counter | None = None,
    target: TaskData | None = None,
    reuse_other_code: bool = False,
) -> list[Path]:
    """Fine-tune every (checkpoint, seed) pair (default: all of ``cfg``); skip finished ones
    (see :func:`finetune`; ``reuse_other_code``: also those made by other code).

    Returns the result files: ``out/results/KEY.nc`` (an older layout's file when that
    one was served)."""
    out = Path(out)
    cks = tuple(cfg.pretrain.checkpoints if checkpoints is None else checkpoints)
    sds = tuple(cfg.seeds if seeds is None else seeds)
    prepare_run_dir(cfg.with_seeds(sds), out)
    counter = _counter or _Counter(cfg.finetune.epochs * len(cks) * len(sds), progress)
    dev = resolve_device(device).type
    if target is None and any(
            find_finetune(out, cfg, c, s, device=dev, reuse_other_code=reuse_other_code).ds
            is None for s in sds for c in cks):
        target = load_task(cfg.target, data_dir, download)
    paths = []
    for s in sds:
        for c in cks:
            finetune(cfg, out, c, s, data_dir=data_dir, download=download, device=device,
                     amp=amp, target=target, reuse_other_code=reuse_other_code,
                     _counter=counter)
            path = finetune_result_path(out, cfg, c, s, dev)
            legacy = finetune_path(out, cfg.pretrain_seed_for(s), c, s)
            paths.append(path if path.exists() or not legacy.exists() else legacy)
    return paths


# --------------------------------------------------------------------------- runner


@dataclass
class RunResult:
    """What :func:`run_experiment` produced."""

    out: Path
    table: Path
    figure: Path | None
    rows: list[dict[str, Any]]


def run_experiment(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    data_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    amp: bool | None = None,
    progress: Progress | None = None,
    figure: bool = True,
    threads: int | None = None,
    reuse_other_code: bool = False,
) -> RunResult:
    """The whole protocol: pre-training(s), every (checkpoint, seed) fine-tune, table,
    figure. Resumable; finished work is skipped. ``threads``: torch CPU threads for the
    run (``None``/0: :data:`CPU_THREADS` on a CPU, see :func:`torch_threads`).
    ``reuse_other_code``: serve fine-tune results made by other number-computing code
    instead of recomputing them (the table and figure then use them too)."""
    with torch_threads(threads, device):
        return _run_experiment(cfg, out, data_dir=data_dir, download=download, device=device,
                               amp=amp, progress=progress, figure=figure,
                               reuse_other_code=reuse_other_code)


def _run_experiment(cfg: ExperimentConfig, out: str | Path, *, data_dir, download, device,
                    amp, progress, figure, reuse_other_code) -> RunResult:
    from .figures import plot_run
    from .table import write_table

    out = Path(out)
    prepare_run_dir(cfg, out)  # stores cfg; the work below is that of the requested seeds
    n_pt = len(cfg.pretrain_seeds)
    total = cfg.pretrain.epochs * n_pt + cfg.finetune.epochs * len(cfg.pretrain.checkpoints) * len(
        cfg.seeds)
    counter = _Counter(total, progress)
    source = None
    for p in cfg.pretrain_seeds:
        if not (pretrain_dir(out, p) / "history.nc").exists() and source is None:
            source = load_task(cfg.source, data_dir, download)
        pretrain(cfg, out, p, data_dir=data_dir, download=download, device=device, amp=amp,
                 source=source, _counter=counter, reuse_other_code=reuse_other_code)
    del source
    finetune_all(cfg, out, data_dir=data_dir, download=download, device=device, amp=amp,
                 _counter=counter, reuse_other_code=reuse_other_code)
    table, rows = write_table(out, seeds=cfg.seeds, reuse_other_code=reuse_other_code)
    fig = (plot_run(out, seeds=cfg.seeds, reuse_other_code=reuse_other_code)
           if figure else None)
    return RunResult(out, table, fig, rows)
