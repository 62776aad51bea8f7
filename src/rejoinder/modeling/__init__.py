"""Checkpoints: plain Hugging Face model directories plus rejoinder.json."""

from rejoinder.modeling.architectures import ARCHS, SIZES
from rejoinder.modeling.checkpoint import (
    Checkpoint,
    init_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["ARCHS", "SIZES", "Checkpoint", "init_checkpoint", "load_checkpoint", "save_checkpoint"]
