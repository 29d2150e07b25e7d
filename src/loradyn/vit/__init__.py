"""ViT LoRA transfer experiments (paper Table 1, App. J; theory.md section 11).

Protocol: pre-train a small timm VisionTransformer on a source task with AdamW and a
cosine schedule, save checkpoints along the way, then for every checkpoint freeze the
backbone, insert peft LoRA adapters in the attention projections, (re-)train the head and
the adapters on a fixed per-class budget of the downstream task, and compare source
accuracy with downstream accuracy at fixed fine-tuning epochs (mean and std over seeds).

This subpackage needs the ``vit`` extra (torch, torchvision, timm, peft, scikit-learn).
Importing :mod:`loradyn.vit` itself is light: torch is imported inside the modules that
need it, which are loaded on first use.

Modules
-------
data      datasets (digits, EMNIST letters, FashionMNIST, CIFAR-10, SVHN, shifts)
model     ViT construction and LoRA injection, trainable-parameter check
train     pre-training, fine-tuning, the resumable experiment runner
presets   documented hyper-parameters per task and scale
table     Table-1 style CSV and HTML
figures   Fig. 10-12 style figures
"""

from __future__ import annotations

from .presets import PRESETS, SCALES, get_preset

__all__ = ["PRESETS", "SCALES", "get_preset"]
