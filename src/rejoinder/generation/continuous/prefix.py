"""Sessions' kept keys and values: a session's next message runs only what is new."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from rejoinder.generation.continuous.rows import Row


class PrefixCache:
    """Keys and values of sessions' last rows, the most recently used kept within a byte
    budget: a session's next message reruns only what is new since."""

    def __init__(self, limit: int):
        self.limit = max(0, limit)
        self.entries: OrderedDict[Any, tuple[list[int], list, int]] = OrderedDict()
        self.bytes = 0

    def put(self, key: Any, ids: list[int], layers: list) -> None:
        self.drop(key)
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if size > self.limit:
            return
        self.entries[key] = (ids, layers, size)
        self.bytes += size
        while self.bytes > self.limit:
            self.drop(next(iter(self.entries)))

    def drop(self, key: Any) -> None:
        entry = self.entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def take(self, key: Any, prompt: list[int]) -> tuple[list, int] | None:
        """The kept layers cut to the beginning they share with `prompt` (at most all but
        its last token), and that length; None when nothing is shared. The entry leaves
        the cache: the row that uses it keeps a longer one when it ends."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        self.drop(key)
        ids, layers, _ = entry
        n = 0
        limit = min(len(ids), len(prompt) - 1)
        while n < limit and ids[n] == prompt[n]:
            n += 1
        if n == 0:
            return None
        return [(k[:, :, :n], v[:, :, :n]) for k, v in layers], n

    def start(self, row: Row, config) -> int:
        """Starts `row`'s cache (for a model of `config`) from its session's kept keys and
        values, if they share a beginning with its prompt (the last prompt token is always
        run: its logits are the first reply token's); the prompt tokens not run again."""
        from transformers import DynamicCache

        found = self.take(row.prefix_key, row.prompt)
        if found is None:
            return 0
        layers, n = found
        row.cache = DynamicCache(config=config)
        for layer, (k, v) in zip(row.cache.layers, layers, strict=True):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k, v
        row.prefilled = n
        return n
