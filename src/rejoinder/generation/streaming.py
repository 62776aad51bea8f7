"""From decoded token ids to clean text as it arrives: stop strings, whole characters.

A backend streams (row, token id) events and (row, Finish) when a row ends; `text_stream`
turns them into each row's text pieces, cut at the first stop string, the way a whole
reply would be cut, and passes each row's Finish on. Both backends end a row early once
its text holds a stop string (`StopStrings`), so no time goes on text nobody will see.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from rejoinder.generation.replies import STOP, Finish


class StopStrings:
    """Whether newly generated ids spell one of the stop strings.

    transformers' StopStringCriteria does this too, but spends about 0.3 s per call
    building tables over the whole vocabulary: more than a tiny model's whole reply.
    This one decodes only the last few new tokens.
    """

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer, self.stops = tokenizer, list(stops)
        # A token holds at least one byte, and a character at most four.
        self.window = 4 * max((len(s) for s in self.stops), default=0) + 4

    def found(self, replies: Sequence[Sequence[int]]) -> list[bool]:
        """For each reply so far (its new ids), whether its text holds a stop string."""
        tails = [list(ids[-self.window :]) for ids in replies]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return [any(s in text for s in self.stops) for text in texts]


class StopClipper:
    """Cuts a streamed reply at its first stop string.

    Text that could be the start of a stop string is held back until it is known not
    to be one; leading and trailing whitespace is dropped, as in a whole reply.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.text, self.sent, self.stopped = "", 0, False

    def feed(self, piece: str) -> str:
        """Takes the next piece of text; returns what can be shown now."""
        if self.stopped:
            return ""
        self.text += piece
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = self.text[:cut], True
            return ""
        safe = len(self.text) - self.hold
        if safe <= self.sent:
            return ""
        chunk = self.text[self.sent : safe]
        if self.sent == 0:
            chunk = chunk.lstrip()
            if not chunk:  # only leading whitespace so far: show nothing yet
                return ""
        self.sent = safe
        return chunk

    def finish(self) -> str:
        """The rest of the reply, once no more text comes."""
        rest = self.text[self.sent :].rstrip()
        if self.sent == 0:
            rest = rest.lstrip()
        self.sent = len(self.text)
        return rest


def whole_text(tokenizer, ids: list[int], shown: str) -> str | None:
    """The text of `ids` when it adds whole characters to `shown`; else None (wait)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if text.endswith("\ufffd"):  # part of a character: wait for the rest
        return None
    return text if len(text) > len(shown) and text.startswith(shown) else None


class RowText:
    """One reply's text as its tokens arrive: whole characters only (a token can end
    inside one), cut at the first stop string as a whole reply is cut. `text_stream` and
    the server's continuous batcher both stream through it."""

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer, self.clip = tokenizer, StopClipper(stops)
        self.ids: list[int] = []
        self.shown = ""

    @property
    def stopped(self) -> bool:
        """Whether a stop string has ended the reply."""
        return self.clip.stopped

    def add(self, token: int) -> str:
        """Takes the next token; returns the text that can be shown now ("" for none)."""
        self.ids.append(token)
        text = whole_text(self.tokenizer, self.ids, self.shown)
        if text is None:
            return ""
        piece, self.shown = text[len(self.shown) :], text
        return self.clip.feed(piece)

    def finish(self) -> str:
        """The rest of the reply, once no more tokens come."""
        return self.clip.finish()


def text_stream(
    events: Iterable[tuple[int, int | Finish]], rows: int, tokenizer, stops: Sequence[str]
) -> Iterator[tuple[int, str | Finish]]:
    """(row, text) as each row's text grows by whole characters, and (row, Finish) once
    that row's reply is complete; every row ends with its Finish."""
    texts = [RowText(tokenizer, stops) for _ in range(rows)]
    live = set(range(rows))

    def end(row: int, finish: Finish) -> Iterator[tuple[int, str | Finish]]:
        live.discard(row)
        if rest := texts[row].finish():
            yield row, rest
        yield row, finish

    try:
        for row, token in events:
            if row not in live:
                continue
            if isinstance(token, Finish):
                yield from end(row, token)
                continue
            if chunk := texts[row].add(token):
                yield row, chunk
            if texts[row].stopped:  # the backend's Finish for this token is skipped
                yield from end(row, Finish(len(texts[row].ids), STOP))
    finally:  # a caller that stops early stops the backend's decoding too
        close = getattr(events, "close", None)
        if close is not None:
            close()
    for row in sorted(live):  # events ended without a row's end
        yield from end(row, Finish(len(texts[row].ids), STOP))
