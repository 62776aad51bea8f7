"""Text clean-up as DialoGPT's Reddit extractor did it, and the word splitting filters use."""

from __future__ import annotations

import functools
import html
import itertools
import re
import zlib

_MD_LINK = re.compile(r"\[([^\]\n]*)\]\((?:[^()\s]|\([^()\s]*\))*\)")
_MD_MARKUP = re.compile(r"(\*\*|__|~~|\^|&#x200B;|(?m:^\s*&gt;|^\s*>))")
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_LETTERS_AND_DIGITS = bytes(c if chr(c).isalnum() and c < 128 else 32 for c in range(256))
"""A bytes.translate table: ASCII letters and digits kept, every other byte a space."""


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
    if text.isascii() and "'" not in text:
        # The same words, found faster: on ASCII without apostrophes a word is a run of
        # letters and digits, and everything else separates words.
        return text.lower().encode().translate(_LETTERS_AND_DIGITS).decode().split()
    return _WORD.findall(text.lower())


_SPACES = b" \t\n\r\x0b\x0c"  # what bytes.split() splits on
_CRC_SPAN = 32  # words up to this long are hashed by the tables; longer ones by zlib


@functools.cache
def _crc_tables():
    """CRC-32 (zlib's) is linear: a word's CRC is the XOR of what each of its bytes adds
    at its distance from the word's end (`by_distance[distance * 256 + byte]`) and of
    what the initial and final values give a word of its length (`by_length[length]`)."""
    import numpy as np

    # The register after each byte from 0 (zlib's value is the register inverted).
    table = ~np.array([zlib.crc32(bytes([b]), 0xFFFFFFFF) for b in range(256)], np.uint32)

    def zero_byte(register):
        return table[register & 0xFF] ^ (register >> np.uint32(8))

    by_distance = np.empty((_CRC_SPAN, 256), np.uint32)
    by_distance[0] = table
    for d in range(1, _CRC_SPAN):
        by_distance[d] = zero_byte(by_distance[d - 1])
    by_length = np.empty(_CRC_SPAN + 1, np.uint32)
    by_length[0] = 0xFFFFFFFF
    for n in range(1, _CRC_SPAN + 1):
        by_length[n] = zero_byte(by_length[n - 1 : n])[0]
    spaces = np.zeros(256, bool)
    spaces[list(_SPACES)] = True
    return by_distance.ravel(), by_length ^ np.uint32(0xFFFFFFFF), spaces


def word_hashes(texts: list[str], drop: bytes):
    """The CRC-32 of each word of `texts` (lower-cased, UTF-8, the bytes in `drop`
    deleted, split on ASCII whitespace), in order, and the index of the text each word
    is in: as `zlib.crc32` gives them, a hundred thousand words at once (two numpy arrays).
    """
    import numpy as np

    joined = "\n".join(texts)
    if joined.count("\n") != max(len(texts) - 1, 0) or b"\n" in drop:
        # A text with a newline of its own: one text at a time.
        cleaned = (t.lower().encode().translate(None, drop) for t in texts)
        per_text = [list(map(zlib.crc32, c.split())) for c in cleaned]
        lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        hashes = np.fromiter(itertools.chain.from_iterable(per_text), dtype=np.uint64)
        return hashes, np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
    by_distance, by_length, spaces = _crc_tables()
    # Lower-casing text by text or all at once is the same: the final sigma, the one
    # letter whose case depends on its neighbours, does not look past a newline.
    data = joined.lower().encode().translate(None, drop)
    raw = np.frombuffer(data, np.uint8)
    inside = ~spaces[raw]
    edges = np.diff(inside.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    lengths = ends - starts
    owners = np.searchsorted(np.flatnonzero(raw == 10), starts)
    if not len(starts):
        return np.zeros(0, np.uint64), owners
    at = np.flatnonzero(inside)
    distance = np.minimum(np.repeat(ends - 1, lengths) - at, _CRC_SPAN - 1)
    added = by_distance[distance * 256 + raw[at]]
    firsts = np.concatenate(([0], np.cumsum(lengths[:-1])))
    hashes = np.bitwise_xor.reduceat(added, firsts) ^ by_length[np.minimum(lengths, _CRC_SPAN)]
    hashes = hashes.astype(np.uint64)
    for i in np.flatnonzero(lengths >= _CRC_SPAN):
        hashes[i] = zlib.crc32(data[starts[i] : ends[i]])
    return hashes, owners
