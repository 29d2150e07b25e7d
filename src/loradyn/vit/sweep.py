"""Sweep kind ``vit``: one task = one (checkpoint, seed) LoRA fine-tune of a preset.

This runs the fine-tuning grid of a ViT experiment through ``loradyn sweep`` (Dask: a local
cluster or any scheduler, SLURM included), with its atomic hash-keyed store::

    # sweep_vit.toml; run with LORADYN_SWEEP_PLUGINS=loradyn.vit.sweep loradyn sweep run ...
    [sweep]
    kind = "vit"
    [grid]
    checkpoint = [2, 5, 100]
    seed = [0, 1, 2]
    [fixed]
    preset = "emnist-fashion"
    scale = "paper"
    run_dir = "runs/emnist-fashion"     # shared by every task: checkpoints, curves
    data_dir = "/data/torchvision"

A task pre-trains first if its checkpoint is missing (resumable; run ``loradyn vit
pretrain`` for each pre-training seed beforehand to avoid two workers pre-training the
same seed at once: harmless, the result is the same, but wasted work). The task result is
the fine-tune's curves (``test_acc``, ``test_loss``, ``train_loss`` over ``epoch``), kept
under the same key (:func:`loradyn.vit.config.finetune_key`) in the sweep's store and in
the result store of ``run_dir`` (``run_dir/results/KEY.nc``); ``loradyn vit table --out
RUN_DIR`` then writes the Table-1 CSV from ``run_dir``.
"""

from __future__ import annotations

from typing import Any

from ..errors import LoradynError
from ..sweep.kinds import TaskKind, register_kind

PARAMS: dict[str, tuple[type, Any]] = {  # name -> (type, default; ... = required)
    "preset": (str, ...),
    "scale": (str, "quick"),
    "run_dir": (str, ...),
    "checkpoint": (int, ...),
    "seed": (int, ...),
    "data_dir": (str, ""),
    "device": (str, "auto"),
    "download": (bool, False),
}


def check_value(key: str, value: Any) -> Any:
    """Check one parameter of a ``vit`` task on its own; return it coerced."""
    if key not in PARAMS:
        raise LoradynError(f"unknown parameter; known: {', '.join(sorted(PARAMS))}")
    typ, _ = PARAMS[key]
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise LoradynError(f"{value!r} is not an integer")
        value = int(value)
    elif typ is bool:
        if not isinstance(value, bool):
            raise LoradynError(f"{value!r} is not true or false")
    elif not isinstance(value, str):
        raise LoradynError(f"{value!r} is not a string")
    if key == "preset":
        from .presets import PRESETS

        if value not in PRESETS:
            raise LoradynError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
    if key == "scale":
        from .presets import SCALES

        if value not in SCALES:
            raise LoradynError(f"unknown scale {value!r}; choose one of {', '.join(SCALES)}")
    if key == "device" and value not in ("auto", "cpu", "cuda"):
        raise LoradynError(f"{value!r} is not auto, cpu or cuda")
    return value


def prepare(params: dict[str, Any], engine: str) -> dict[str, Any]:
    """Canonical parameters: defaults filled in; the checkpoint must be one of the preset's."""
    from .presets import get_preset

    missing = [k for k, (_, d) in PARAMS.items() if d is ... and k not in params]
    if missing:
        raise LoradynError(f"vit task lacks {', '.join(missing)}")
    out = {k: check_value(k, params.get(k, d)) for k, (_, d) in PARAMS.items()}
    cfg = get_preset(out["preset"], out["scale"])
    if out["checkpoint"] not in cfg.pretrain.checkpoints:
        raise LoradynError(
            f"checkpoint {out['checkpoint']} is not one of {list(cfg.pretrain.checkpoints)} "
            f"({out['preset']}, {out['scale']} scale)"
        )
    return out


def key(params: dict[str, Any], engine: str) -> str:
    """The task's content key: :func:`loradyn.vit.config.finetune_key` of the preset's
    experiment, the checkpoint, the seed and the device, resolved (``auto`` -> ``cuda``
    or ``cpu``). The run and data directories and ``download`` change nothing and are
    left out."""
    from ..config import resolve_device_name
    from .config import finetune_key
    from .presets import get_preset

    p = prepare(params, engine)
    cfg = get_preset(p["preset"], p["scale"])
    return finetune_key(cfg, p["checkpoint"], p["seed"], resolve_device_name(p["device"]))


def run(params: dict[str, Any], engine: str) -> Any:
    """Pre-train if needed, then fine-tune (checkpoint, seed); return the curves."""
    from .presets import get_preset
    from .train import finetune, pretrain

    p = prepare(params, engine)
    cfg = get_preset(p["preset"], p["scale"]).with_seeds((p["seed"],))
    kw = {"data_dir": p["data_dir"] or None, "download": p["download"], "device": p["device"]}
    pretrain(cfg, p["run_dir"], cfg.pretrain_seed_for(p["seed"]), **kw)
    ds = finetune(cfg, p["run_dir"], p["checkpoint"], p["seed"], **kw)
    return ds


VIT = register_kind(
    TaskKind(
        name="vit",
        run=run,
        check_value=check_value,
        prepare=prepare,
        engines=("torch",),
        default_engine="torch",
        replaces={},
        description="one LoRA fine-tune (checkpoint, seed) of a loradyn.vit preset",
        key=key,
    ),
    replace=True,
)
