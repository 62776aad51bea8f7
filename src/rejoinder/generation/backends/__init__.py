"""What decodes and scores token ids: a small protocol, and its torch and CTranslate2 sides.

A backend knows nothing of text, formats, stop-string clipping or MMI; those are the
layers above it (`ConversationModel`, `streaming`, `scoring`, `mmi`). It is made for
one model, with its tokenizer and the ids that end a reply, and answers three calls:

- `generate(job)`: for each prompt, `num_return_sequences` lists of new token ids;
- `stream(job)`: (row, token id) as tokens are decoded, and (row, None) when a row ends
  (an end-of-turn id, a stop string, its length limit);
- `score(encodings, batch_size)`: for each encoding, the log-probability of each
  labelled token (label != IGNORE, the first position aside) given the tokens before it.

A new backend is one more module here with a class that answers these calls, chosen in
`ConversationModel.use_backend`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from rejoinder.errors import RejoinderError
from rejoinder.formats import Encoding, Format
from rejoinder.generation.config import DecodingConfig

BACKENDS = ("torch", "ctranslate2")


@dataclass
class Job:
    """Prompts to continue, and how."""

    prompts: list[Encoding]
    config: DecodingConfig
    bad_ids: list[list[int]]
    """Token sequences the replies must not contain."""
    stops: list[str]
    """Strings that end a reply (the format's and the config's)."""
    limits: list[int] | None = None
    """Each prompt's own most new tokens, where prompts of one call differ in it (the
    config then holds the largest); None: the config's for all."""

    def limit(self, row: int) -> int:
        """The most new tokens of prompt `row`."""
        return self.limits[row] if self.limits else self.config.max_new_tokens

    @classmethod
    def of(cls, fmt: Format, prompts: list[Encoding], config: DecodingConfig) -> Job:
        """The job of continuing `prompts` in format `fmt` as `config` says."""
        stops = [*fmt.stop_strings, *config.stop]
        if not all(isinstance(x, str) and x for x in stops):
            raise RejoinderError(f"stop strings must be non-empty strings, got {config.stop!r}")
        # Each bad word with and without a leading space: BPE spells the two differently.
        bad = [ids for w in config.bad_words for ids in fmt.tokenize_turns([w, " " + w])]
        return cls(prompts, config, bad, stops)


class Backend(Protocol):
    name: str

    def generate(self, job: Job) -> list[list[list[int]]]: ...

    def stream(self, job: Job) -> Iterator[tuple[int, int | None]]: ...

    def score(self, encodings: list[Encoding], batch_size: int) -> list[list[float]]: ...
