"""Configuration dataclasses of the ViT transfer protocol (torch-free).

One :class:`ExperimentConfig` says everything a run needs: the source and target data,
the ViT architecture, the pre-training recipe with its checkpoint epochs, the LoRA
fine-tuning recipe, the seeds and the fine-tuning epochs reported in the table. It is
stored as ``config.json`` in the run directory so that separate steps (pretrain,
finetune, table) and reruns can check that they continue the same experiment.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import LoradynError, as_float, as_int, as_int_tuple


def _norm(obj: object, **fields_: Any) -> None:
    """Store checked values on a frozen dataclass."""
    for k, v in fields_.items():
        object.__setattr__(obj, k, v)

DATASETS = ("digits", "emnist-letters", "fashionmnist", "cifar10", "svhn")


@dataclass(frozen=True)
class DataSpec:
    """A dataset, optionally shifted by a rotation and additive Gaussian pixel noise.

    The shifted image is ``x' = rotate(x, rotation) + noise_std * xi`` with ``xi`` standard
    normal, drawn from a generator seeded by ``shift_seed`` (and the split), so the shifted
    data set is the same in every run. Pixels are in [0, 1] before the shift; the shifted
    image is not clipped.

    Parameters
    ----------
    name : one of ``digits``, ``emnist-letters``, ``fashionmnist``, ``cifar10``, ``svhn``.
    rotation : rotation angle in degrees (counter-clockwise), 0 for none.
    noise_std : standard deviation of the additive Gaussian noise, 0 for none.
    shift_seed : seed of the noise.
    train_subset : if > 0, keep only this many training images (a fixed random subset,
        seed ``shift_seed``); used by the quick scales.
    """

    name: str
    rotation: float = 0.0
    noise_std: float = 0.0
    shift_seed: int = 1234
    train_subset: int = 0

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise LoradynError(
                f"unknown dataset {self.name!r}; choose one of {', '.join(DATASETS)}"
            )
        _norm(self, rotation=as_float("rotation", self.rotation),
              noise_std=as_float("noise_std", self.noise_std, lo=0.0),
              shift_seed=as_int("shift_seed", self.shift_seed, lo=0),
              train_subset=as_int("train_subset", self.train_subset, lo=0))

    @property
    def shifted(self) -> bool:
        return self.rotation != 0.0 or self.noise_std > 0.0

    @property
    def label_space(self) -> str:
        """Name of the label space: a shift keeps it, another dataset changes it."""
        return self.name

    @property
    def label(self) -> str:
        if not self.shifted:
            return self.name
        return f"{self.name} (rot {self.rotation:g} deg, noise {self.noise_std:g})"


@dataclass(frozen=True)
class ViTSpec:
    """timm ``VisionTransformer`` architecture (class token, no dropout by default)."""

    img_size: int = 28
    patch_size: int = 4
    in_chans: int = 1
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    drop_rate: float = 0.0

    def __post_init__(self) -> None:
        _norm(self, **{k: as_int(k, getattr(self, k), lo=1) for k in
                       ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads")})
        _norm(self, mlp_ratio=as_float("mlp_ratio", self.mlp_ratio, lo=0.0, lo_open=True),
              drop_rate=as_float("drop_rate", self.drop_rate, lo=0.0, hi=1.0, hi_open=True))
        if self.img_size % self.patch_size:
            raise LoradynError(
                f"img_size {self.img_size} must be a multiple of patch_size {self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise LoradynError(
                f"embed_dim {self.embed_dim} must be a multiple of num_heads {self.num_heads}"
            )


@dataclass(frozen=True)
class LoraSpec:
    """peft LoRA on the attention projections.

    timm's attention has a fused ``qkv`` Linear and an output ``proj`` Linear; the adapter
    ``W + (alpha / rank) B A`` is inserted in the modules ``blocks.<i>.attn.<name>`` for
    each name of ``target_modules`` (the patch embedding's ``proj`` is never targeted).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ("qkv", "proj")

    def __post_init__(self) -> None:
        _norm(self, rank=as_int("LoRA rank", self.rank, lo=1),
              alpha=as_float("LoRA alpha", self.alpha, lo=0.0, lo_open=True),
              dropout=as_float("LoRA dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True))
        if isinstance(self.target_modules, str) or not isinstance(self.target_modules,
                                                                   tuple | list):
            raise LoradynError("LoRA target_modules must be a list such as ['qkv', 'proj']")
        if not self.target_modules:
            raise LoradynError("LoRA target_modules must name at least one module")
        bad = [t for t in self.target_modules if t not in ("qkv", "proj")]
        if bad:
            raise LoradynError(
                f"LoRA target modules must be among 'qkv', 'proj' (timm attention), got {bad}"
            )


@dataclass(frozen=True)
class PretrainSpec:
    """Source pre-training: AdamW, linear warm-up then cosine decay of the learning rate
    (per step) to ``min_lr_ratio * lr`` at ``epochs``; checkpoints after the given epochs
    (0 is the random initialization)."""

    epochs: int = 100
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 5
    min_lr_ratio: float = 0.0
    checkpoints: tuple[int, ...] = (2, 5, 100)
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _norm(self, epochs=as_int("pretrain epochs", self.epochs, lo=1),
              batch_size=as_int("pretrain batch_size", self.batch_size, lo=1),
              lr=as_float("pretrain lr", self.lr, lo=0.0, lo_open=True),
              weight_decay=as_float("pretrain weight_decay", self.weight_decay, lo=0.0),
              warmup_epochs=as_int("pretrain warmup_epochs", self.warmup_epochs, lo=0),
              min_lr_ratio=as_float("pretrain min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0),
              checkpoints=as_int_tuple("pretrain checkpoints", self.checkpoints, lo=0),
              label_smoothing=as_float("pretrain label_smoothing", self.label_smoothing,
                                       lo=0.0, hi=1.0, hi_open=True))
        if not self.checkpoints:
            raise LoradynError("give at least one pre-training checkpoint epoch")
        if any(c < 0 or c > self.epochs for c in self.checkpoints):
            raise LoradynError(
                f"checkpoint epochs {list(self.checkpoints)} must lie in [0, {self.epochs}]"
            )


@dataclass(frozen=True)
class FinetuneSpec:
    """Downstream LoRA fine-tuning: backbone frozen, AdamW with a constant learning rate
    on the LoRA and head parameters, ``per_class`` training images per class sampled with
    ``budget_seed`` (``None``: with the fine-tuning seed), evaluation on the full target
    test set after every epoch. ``reinit_head``: ``auto`` re-initializes the head when the
    label space changes and keeps it otherwise; ``always``/``never`` force the choice."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    per_class: int = 100
    budget_seed: int | None = 0
    reinit_head: str = "auto"
    lora: LoraSpec = field(default_factory=LoraSpec)

    def __post_init__(self) -> None:
        if self.reinit_head not in ("auto", "always", "never"):
            raise LoradynError(
                f"reinit_head must be auto, always or never, got {self.reinit_head!r}"
            )
        _norm(self, epochs=as_int("finetune epochs", self.epochs, lo=1),
              batch_size=as_int("finetune batch_size", self.batch_size, lo=1),
              lr=as_float("finetune lr", self.lr, lo=0.0, lo_open=True),
              weight_decay=as_float("finetune weight_decay", self.weight_decay, lo=0.0),
              per_class=as_int("per_class", self.per_class, lo=1))
        if self.budget_seed is not None:
            _norm(self, budget_seed=as_int("budget_seed", self.budget_seed, lo=0))
        if not isinstance(self.lora, LoraSpec):
            raise LoradynError("finetune.lora must be a LoRA spec (rank, alpha, dropout, ...)")


@dataclass(frozen=True)
class ExperimentConfig:
    """A full transfer experiment (one row group of Table 1)."""

    name: str
    task: str
    source: DataSpec
    target: DataSpec
    vit: ViTSpec
    pretrain: PretrainSpec
    finetune: FinetuneSpec
    seeds: tuple[int, ...] = (0, 1, 2)
    report_epochs: tuple[int, ...] = (20, 100)
    matched_pretraining: bool = False
    pretrain_seed: int = 0
    scale: str = "paper"

    def __post_init__(self) -> None:
        for name in ("seeds", "report_epochs"):
            v = getattr(self, name)
            if not isinstance(v, tuple | list) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise LoradynError(f"{name} must be a list of integers, got {v!r}")
        _norm(self, seeds=as_int_tuple("seeds", self.seeds, lo=0, hi=2**63 - 1),
              pretrain_seed=as_int("pretrain_seed", self.pretrain_seed, lo=0, hi=2**63 - 1))
        for name, cls in (("source", DataSpec), ("target", DataSpec), ("vit", ViTSpec),
                          ("pretrain", PretrainSpec), ("finetune", FinetuneSpec)):
            if not isinstance(getattr(self, name), cls):
                raise LoradynError(f"{name} must be a {cls.__name__} (a JSON object)")
        if not self.seeds:
            raise LoradynError("give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise LoradynError(f"seeds must be distinct, got {list(self.seeds)}")
        bad = [e for e in self.report_epochs if e < 0 or e > self.finetune.epochs]
        if bad:
            raise LoradynError(
                f"report epochs {bad} must lie in [0, {self.finetune.epochs}] "
                "(the fine-tuning epochs)"
            )

    def pretrain_seed_for(self, seed: int) -> int:
        """The pre-training seed whose checkpoints fine-tuning seed ``seed`` starts from."""
        return seed if self.matched_pretraining else self.pretrain_seed

    @property
    def pretrain_seeds(self) -> tuple[int, ...]:
        return tuple(sorted({self.pretrain_seed_for(s) for s in self.seeds}))

    # -- serialization ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExperimentConfig:
        try:
            d = dict(d)
            ft = dict(d["finetune"])
            ft["lora"] = _build(LoraSpec, ft.get("lora", {}))
            d["finetune"] = _build(FinetuneSpec, ft)
            d["source"] = _build(DataSpec, d["source"])
            d["target"] = _build(DataSpec, d["target"])
            d["vit"] = _build(ViTSpec, d["vit"])
            d["pretrain"] = _build(PretrainSpec, d["pretrain"])
            return _build(cls, d)
        except LoradynError:
            raise
        except KeyError as exc:
            raise LoradynError(f"experiment config lacks the field {exc}") from None
        except (TypeError, ValueError) as exc:  # wrong JSON shape or value type
            raise LoradynError(f"invalid experiment config: {exc}") from None

    def work_key(self) -> str:
        """Hash of everything that determines the trained models (not seeds, not reports).

        Two configs with the same key can share pre-training checkpoints and fine-tune
        results; a run directory refuses a config with another key. Made by the one hash
        of loradyn, :func:`loradyn.params.content_hash` (canonical JSON, sha256), like the
        keys of every other config and task.
        """
        from ..params import content_hash

        d = self.to_dict()
        for k in ("seeds", "report_epochs", "scale", "name"):
            d.pop(k)
        return content_hash({"class": type(self).__name__, "config": d})

    def with_seeds(self, seeds: tuple[int, ...]) -> ExperimentConfig:
        return replace(self, seeds=tuple(seeds))


def _build(cls: type, d: dict[str, Any]) -> Any:
    if not isinstance(d, dict):
        raise LoradynError(f"{cls.__name__} must be a JSON object, got {d!r}")
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise LoradynError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    kw = {}
    for k, v in d.items():
        kw[k] = tuple(v) if isinstance(v, list) else v
    return cls(**kw)


def finetune_key(cfg: ExperimentConfig, checkpoint: int, seed: int, device: str) -> str:
    """The content key of one fine-tune's curves (:func:`loradyn.params.content_hash`):
    the experiment's :meth:`~ExperimentConfig.work_key`, the checkpoint, the seed, its
    pre-training seed and the resolved device (``cuda`` or ``cpu``). The ``vit`` sweep
    kind names its tasks by it and :func:`loradyn.vit.train.finetune` stamps it, with the
    code hash, on the result (:meth:`loradyn.store.ResultStore.stamp`)."""
    from ..params import content_hash

    return content_hash({"kind": "vit", "work": cfg.work_key(), "checkpoint": int(checkpoint),
                         "seed": int(seed), "pretrain_seed": int(cfg.pretrain_seed_for(seed)),
                         "device": str(device)}, 20)  # 20: the length of a sweep task key
