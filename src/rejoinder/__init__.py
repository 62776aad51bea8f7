"""rejoinder: GPT-2-style multi-turn conversational response generation.

The DialoGPT recipe made practical: dialogue datasets from raw corpora, forward and
reverse GPT-2 models, every standard decoding strategy, and chat from Python, a
terminal or HTTP. Heavy parts import lazily, so `import rejoinder` stays quick.
"""

from rejoinder.dialogue import Dialogue, Turn
from rejoinder.errors import RejoinderError
from rejoinder.version import __version__

__all__ = ["ConversationModel", "Dialogue", "RejoinderError", "Turn", "__version__"]


def __getattr__(name):
    if name == "ConversationModel":
        from rejoinder.generation import ConversationModel

        return ConversationModel
    raise AttributeError(f"module 'rejoinder' has no attribute {name!r}")
