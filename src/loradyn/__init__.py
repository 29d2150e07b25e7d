"""loradyn: the dynamics of LoRA fine-tuning in single-index models."""

__version__ = "0.1.0"
