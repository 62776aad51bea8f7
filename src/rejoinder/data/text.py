"""Text clean-up as DialoGPT's Reddit extractor did it, and the word splitting filters use."""

from __future__ import annotations

import html
import re

_MD_LINK = re.compile(r"\[([^\]\n]*)\]\((?:[^()\s]|\([^()\s]*\))*\)")
_MD_MARKUP = re.compile(r"(\*\*|__|~~|\^|&#x200B;|(?m:^\s*&gt;|^\s*>))")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def normalize(text: str) -> str:
    """Unescapes HTML entities, keeps a markdown link's text, drops emphasis, folds whitespace.

    >>> normalize("I &lt;3 [this](http://x.io) **so**\\n\\n much &amp; more")
    'I <3 this so much & more'
    """
    # The checks before each step skip work most comments do not need.
    if "](" in text:
        text = _MD_LINK.sub(r"\1", text)
    if "*" in text or "_" in text or "~" in text or "^" in text or "&" in text or ">" in text:
        text = _MD_MARKUP.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return " ".join(text.split())


def words(text: str) -> list[str]:
    """Lower-cased words, punctuation dropped: what the filters count and compare.

    >>> words("No, no... NO! It's fine.")
    ['no', 'no', 'no', "it's", 'fine']
    """
    return _WORD.findall(text.lower())
