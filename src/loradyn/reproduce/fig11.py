"""Fig. 11: ViT LoRA transfer EMNIST letters -> FashionMNIST (App. J), on the real datasets.

Runs the ``emnist-fashion`` preset (at the preset scale matching the reproduce scale) when the
datasets are under ``$LORADYN_DATA`` and a CUDA GPU is visible; otherwise the item is
listed as pending with the command that produces it (``loradyn vit run --preset emnist-fashion``).
The offline stand-in of these figures is fig12 (digits -> shifted digits).
"""

from __future__ import annotations

from ._vit import real_dataset_figure
from .registry import FigureContext, FigureOutput, register

PRESET = "emnist-fashion"


@register("fig11", "ViT LoRA transfer, EMNIST letters -> FashionMNIST (App. J, Fig. 11)",
          requires=("torch", "timm", "peft", "torchvision"))
def make(ctx: FigureContext) -> FigureOutput:
    return real_dataset_figure(ctx, PRESET, "fig11")
