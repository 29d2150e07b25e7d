"""Fig. 12 analog: ViT pre-trained on 8x8 digits, LoRA-adapted to shifted digits.

The paper's Fig. 12 is EMNIST letters -> shifted EMNIST (rotation plus Gaussian noise);
its offline stand-in here is the ``digits-shifted`` preset (scikit-learn's bundled digits,
rotated 45 degrees plus noise of std 0.2), which runs on a CPU in about a minute. Top:
source accuracy and loss along pre-training; bottom: downstream accuracy and loss along
LoRA fine-tuning from each checkpoint (mean +- std over seeds).
"""

from __future__ import annotations

from ._vit import draw, run_preset
from .registry import FigureContext, FigureOutput, register

# idle 2-core seconds, calibrated from measured CPU time (scripts/calibrate_estimates.py)
ESTIMATE = {"test": 15.0, "quick": 25.0, "paper": 130.0}


@register("fig12", "ViT LoRA transfer, digits -> shifted digits (App. J, Fig. 12 analog)",
          requires=("torch", "timm", "peft", "sklearn"))
def make(ctx: FigureContext) -> FigureOutput:
    cfg, res = run_preset(ctx, "digits-shifted")
    ctx.progress(0.99, "drawing")
    files = draw(ctx, cfg, res, "fig12")
    ctx.progress(1.0, "done")
    lora = cfg.finetune.lora
    caption = (
        f"ViT ({cfg.vit.depth} blocks, width {cfg.vit.embed_dim}, patch {cfg.vit.patch_size}) "
        f"pre-trained on 8x8 digits for {cfg.pretrain.epochs} epochs (AdamW, cosine); from "
        f"checkpoints {', '.join(str(c) for c in cfg.pretrain.checkpoints)} the backbone is "
        f"frozen and LoRA (rank {lora.rank}, alpha {lora.alpha:g}, on "
        f"{'+'.join(lora.target_modules)}) plus the kept head are trained on "
        f"{cfg.finetune.per_class} examples/class of the digits rotated by "
        f"{cfg.target.rotation:g} deg with noise std {cfg.target.noise_std:g}. Top: source "
        "test accuracy/loss along pre-training (dashed: checkpoints). Bottom: downstream "
        f"test accuracy/loss during fine-tuning, mean +- std over {len(cfg.seeds)} seeds. "
        "Offline stand-in for the paper's EMNIST -> shifted-EMNIST Fig. 12."
    )
    return FigureOutput(caption=caption, files=files, data=[res.table])
