"""Shared by the ViT items of ``reproduce`` (fig10-12, table1): run a preset once per
output directory (the run is resumable, so a second item reuses it)."""

from __future__ import annotations

from pathlib import Path

from .registry import FigureContext, FigureOutput

# reproduce scale -> preset scale
PRESET_SCALE = {"test": "smoke", "quick": "quick", "paper": "paper"}


def run_preset(ctx: FigureContext, preset: str, data_dir: Path | None = None,
               progress: bool = True):
    """Run ``preset`` at the scale matching ``ctx.scale`` under ``ctx.data_dir``.

    Returns ``(config, RunResult)``. Finished work found in the directory is reused.
    """
    from ..vit.presets import get_preset
    from ..vit.train import run_experiment

    cfg = get_preset(preset, PRESET_SCALE.get(ctx.scale, "quick"))
    out = ctx.data_dir / f"vit-{preset}-{cfg.scale}"
    res = run_experiment(cfg, out, data_dir=data_dir, device="auto",
                         progress=ctx.progress if progress else None, figure=False,
                         reuse_other_code=ctx.reuse_other_code)
    return cfg, res


def require_data_and_gpu(preset: str) -> None:
    """Raise ImportError (the runner lists the item as pending) unless the preset's data
    files are under ``$LORADYN_DATA`` (or ``~/.cache/loradyn/data``) and a GPU is visible."""
    import torch

    from ..vit.data import dataset_available, default_data_dir
    from ..vit.presets import get_preset

    cfg = get_preset(preset, "paper")
    names = sorted({cfg.source.name, cfg.target.name})
    missing = [n for n in names if not dataset_available(n)]
    if missing:
        raise ImportError(
            f"needs the {', '.join(missing)} files under {default_data_dir()} ($LORADYN_DATA) "
            f"and a GPU; or run 'loradyn vit run --preset {preset} --scale paper --download'"
        )
    if not torch.cuda.is_available():
        raise ImportError(f"needs a CUDA GPU; run 'loradyn vit run --preset {preset}' on one")


def draw(ctx: FigureContext, cfg, res, fid: str) -> list[Path]:
    """The Fig. 10-12 style figure of a finished run as ``figures/<fid>.png`` and ``.pdf``."""
    from ..vit.figures import plot_run

    return [plot_run(res.out, seeds=cfg.seeds, path=ctx.figures_dir / f"{fid}.{ext}",
                     reuse_other_code=ctx.reuse_other_code)
            for ext in ("png", "pdf")]


def real_dataset_figure(ctx: FigureContext, preset: str, fid: str) -> FigureOutput:
    """Fig. 10 / 11: run ``preset`` on the real datasets (pending without them or a GPU)."""
    require_data_and_gpu(preset)
    cfg, res = run_preset(ctx, preset)
    files = draw(ctx, cfg, res, fid)
    caption = (
        f"{cfg.task} ({cfg.scale} scale): source accuracy/loss along pre-training (top) and "
        f"downstream LoRA accuracy/loss from checkpoints {list(cfg.pretrain.checkpoints)} "
        f"(bottom), mean +- std over {len(cfg.seeds)} seeds."
    )
    return FigureOutput(caption=caption, files=files, data=[res.table])
