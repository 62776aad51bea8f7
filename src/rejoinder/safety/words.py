"""Word lists: a text is flagged when it holds a listed word or phrase, matched on whole
words after lower-casing, as the data pipeline's `offensive` filter matches them."""

from __future__ import annotations

from collections.abc import Sequence

from rejoinder.data.filters import default_offensive_words, read_list
from rejoinder.data.text import words


class WordList:
    """Listed words and phrases: better-profanity's (`default`) and the files given."""

    def __init__(self, files: Sequence[str] = (), default: bool = True):
        listed = list(default_offensive_words()) if default else []
        for file in files:
            listed += read_list(file, "safety word list")
        self.single = frozenset(w for w in listed if " " not in w)
        self.phrases = tuple(sorted({f" {w} " for w in listed if " " in w}))
        self.size = len(self.single) + len(self.phrases)

    def match(self, text: str) -> str | None:
        """The first listed word or phrase in `text`, or None."""
        said = words(text)
        for w in said:
            if w in self.single:
                return w
        if self.phrases:
            padded = f" {' '.join(said)} "
            for p in self.phrases:
                if p in padded:
                    return p.strip()
        return None
