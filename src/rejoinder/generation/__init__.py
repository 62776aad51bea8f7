"""Replies from a checkpoint: the ConversationModel API and its decoding options."""

from rejoinder.generation.model import ConversationModel

__all__ = ["ConversationModel"]
