"""Fig. 11: ViT LoRA transfer EMNIST letters -> FashionMNIST (App. J), on the real datasets.

Runs the ``emnist-fashion`` preset (at the preset scale matching the reproduce scale) when the
datasets are under ``$LORADYN_DATA`` and a CUDA GPU is visible; otherwise the item is
listed as pending with the command that produces it (``loradyn vit run --preset emnist-fashion``).
The offline stand-in of these figures is fig12 (digits -> shifted digits).
"""

from __future__ import annotations

from ._vit import require_data_and_gpu, run_preset
from .registry import FigureContext, FigureOutput, register

PRESET = "emnist-fashion"


@register("fig11", "ViT LoRA transfer, EMNIST letters -> FashionMNIST (App. J, Fig. 11)",
          requires=("torch", "timm", "peft", "torchvision"))
def make(ctx: FigureContext) -> FigureOutput:
    require_data_and_gpu(PRESET)
    from ..vit.figures import plot_run

    cfg, res = run_preset(ctx, PRESET)
    path = plot_run(res.out, seeds=cfg.seeds, path=ctx.figures_dir / "fig11.png")
    caption = (
        f"{cfg.task} ({cfg.scale} scale): source accuracy/loss along pre-training (top) and "
        f"downstream LoRA accuracy/loss from checkpoints {list(cfg.pretrain.checkpoints)} "
        f"(bottom), mean +- std over {len(cfg.seeds)} seeds."
    )
    return FigureOutput(caption=caption, files=[path], data=[res.table])
