"""ViT construction (timm) and LoRA injection (peft) for the transfer protocol."""

from __future__ import annotations

import logging

from ..errors import LoradynError
from .config import LoraSpec, ViTSpec

log = logging.getLogger(__name__)


def build_vit(spec: ViTSpec, num_classes: int):
    """A timm ``VisionTransformer`` with a class token and a linear head."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=spec.img_size,
        patch_size=spec.patch_size,
        in_chans=spec.in_chans,
        num_classes=num_classes,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        mlp_ratio=spec.mlp_ratio,
        drop_rate=spec.drop_rate,
        global_pool="token",
        class_token=True,
    )


def lora_target_regex(lora: LoraSpec) -> str:
    """peft target pattern (full match on module names) for the attention projections only.

    A bare ``proj`` would also match ``patch_embed.proj`` (a Conv2d), hence the pattern
    ``blocks.<i>.attn.(qkv|proj)``.
    """
    return r"blocks\.\d+\.attn\.(" + "|".join(lora.target_modules) + ")"


def add_lora(model, lora: LoraSpec):
    """Freeze ``model`` and insert LoRA adapters; the head stays trainable.

    The adapted projection is ``W x + (alpha / rank) B A x`` (peft's default scaling) with
    ``A`` Kaiming-uniform and ``B = 0`` at start, so the adapted model starts equal to the
    backbone. Returns the ``peft.PeftModel``.
    """
    import peft

    cfg = peft.LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_regex(lora),
        bias="none",
    )
    pm = peft.get_peft_model(model, cfg)
    for p in head_of(pm).parameters():
        p.requires_grad_(True)
    return pm


def head_of(model):
    """The classification head of a (possibly peft-wrapped) timm ViT."""
    m = model
    while not hasattr(m, "head") and hasattr(m, "base_model"):
        m = m.base_model
    if not hasattr(m, "head") and hasattr(m, "model"):
        m = m.model
    return m.head


def check_trainable(model) -> dict[str, int]:
    """Assert that only LoRA adapters and the head are trainable, and log the counts.

    Returns ``{"lora": n_lora, "head": n_head, "frozen": n_frozen, "total": n_total}``.
    Raises ``AssertionError`` (a bug, not a user error) if any other parameter trains or if
    no LoRA parameter does.
    """
    lora = head = frozen = 0
    bad = []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            frozen += p.numel()
        elif ".lora_A." in n or ".lora_B." in n:
            lora += p.numel()
        elif n.split(".")[-2] == "head" or ".head." in n:
            head += p.numel()
        else:
            bad.append(n)
    assert not bad, f"parameters outside LoRA and the head are trainable: {bad[:5]}"
    assert lora > 0, "no LoRA parameter is trainable"
    counts = {"lora": lora, "head": head, "frozen": frozen, "total": lora + head + frozen}
    log.info(
        "trainable-parameter check passed: %d LoRA + %d head parameters train, %d backbone "
        "parameters frozen",
        lora, head, frozen,
    )
    return counts


def check_geometry(spec: ViTSpec, channels: int, image_size: int, what: str) -> None:
    """Raise a user error when the data does not fit the ViT input."""
    if channels != spec.in_chans or image_size != spec.img_size:
        raise LoradynError(
            f"{what} images are {channels}x{image_size}x{image_size} but the ViT expects "
            f"{spec.in_chans}x{spec.img_size}x{spec.img_size}; change vit.in_chans/img_size"
        )
