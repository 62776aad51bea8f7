"""Checkpoints: plain Hugging Face model directories plus rejoinder.json."""

from rejoinder.modeling.checkpoint import (
    SIZES,
    Checkpoint,
    init_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

__all__ = ["SIZES", "Checkpoint", "init_checkpoint", "load_checkpoint", "save_checkpoint"]
