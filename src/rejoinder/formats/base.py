"""The base of every conversation format: roles, truncation, labels, plain-text turns.

A format is a small object around a tokenizer. It makes the model input for the next
reply (`encode`), a training example with labels (`training_example`), and knows the
ids and strings that end a reply (`stop_ids`, `stop_strings`). Its name and settings
are saved in the checkpoint's `rejoinder.json`, so a model always chats in the format
it was trained in.

Every format shares these behaviours, implemented once in `Format`:

- roles: a turn whose speaker is "user" or "assistant" has that role; a turn without
  one (a corpus's speaker id, or none) takes the role opposite to the turn after it,
  counting back from the reply, which is the assistant's (`resolve_roles`). System
  and persona turns are no turns: they become the system prompt and the persona;
- truncation to a token budget keeps the most recent whole turns; a single turn too
  long on its own is cut from its start, keeping the words nearest the reply. The
  system prompt and the persona are never cut;
- `reverse=True` reverses the order of the turns (the backward model of MMI), whose
  roles then alternate by position, as it was trained;
- what people wrote is encoded as plain text: "<|endoftext|>", the separator or a
  speaker token typed by a user become ordinary tokens, never the special id.

Subclasses only say how turns (and the persona) are laid out, in `_build`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rejoinder.dialogue import ASSISTANT, PERSONA, SYSTEM, USER, Dialogue, as_context, role_of
from rejoinder.errors import RejoinderError
from rejoinder.tokenizers import text_encoder

IGNORE = -100
"""The label of a position that does not count in the loss (PyTorch's ignore_index)."""

LOSS_ON = ("responses", "last", "all")


TURN_CACHE = 50_000
"""How many turns' ids a format remembers."""


@dataclass
class Encoding:
    """Token ids for a model, and which stretch of them belongs to each turn."""

    input_ids: list[int]
    token_type_ids: list[int] | None = None
    """None for formats without token types: GPT-2 adds the embedding of a type id to
    its input, so all-zeros is not the same as no types."""
    labels: list[int] | None = None
    """For training: the token where the loss counts, IGNORE (-100) elsewhere."""
    turn_spans: list[tuple[int, int]] = field(default_factory=list)
    """[start, end) of each turn kept: its text and the marker that ends it."""
    dropped_turns: int = 0
    """How many of the oldest turns truncation left out."""
    turn_roles: list[str] = field(default_factory=list)
    """Each kept turn's role, "user" or "assistant" (given, or by alternation)."""
    role_given: list[bool] = field(default_factory=list)
    """Whether each kept turn's role was given (its speaker named it) or alternated."""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def attention_mask(self) -> list[int]:
        return [1] * len(self.input_ids)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "input_ids": self.input_ids,
            "token_type_ids": self.token_type_ids,
            "attention_mask": self.attention_mask,
        }
        if self.labels is not None:
            d["labels"] = self.labels
        return d


def resolve_roles(given: Sequence[str | None], generation: bool) -> list[str]:
    """Each turn's role: the one given, else the opposite of the next turn's, counting
    back from the end. After the last turn comes the reply (the assistant's) when
    generating; in a training example the last turn is the reply itself.

    >>> resolve_roles([None, None, None], generation=True)
    ['user', 'assistant', 'user']
    >>> resolve_roles(["user", "user", None], generation=False)
    ['user', 'user', 'assistant']
    """
    out: list[str] = [USER] * len(given)
    after = ASSISTANT if generation else USER
    for i in range(len(given) - 1, -1, -1):
        after = out[i] = given[i] or (USER if after == ASSISTANT else ASSISTANT)
    return out


class Builder:
    """Appends pieces of ids with their token type and records each turn's span."""

    def __init__(self, typed: bool):
        self.ids: list[int] = []
        self.types: list[int] | None = [] if typed else None
        self.spans: list[tuple[int, int]] = []

    def add(self, ids: Sequence[int], type_id: int = 0) -> int:
        self.ids.extend(ids)
        if self.types is not None:
            self.types.extend([type_id] * len(ids))
        return len(self.ids)

    def encoding(self) -> Encoding:
        return Encoding(self.ids, self.types, turn_spans=self.spans)


class Format:
    """The base of every conversation format; see the module docstring."""

    name: ClassVar[str]

    def __init__(
        self,
        tokenizer,
        *,
        reverse: bool = False,
        max_tokens: int | None = 1024,
        persona: str | None = None,
    ):
        """
        Args:
            tokenizer: a `transformers` fast tokenizer (see `rejoinder.tokenizers`).
            reverse: reverse the order of turns, for the backward (MMI) model.
            max_tokens: default token budget of `encode` and `training_example`
                (GPT-2's context is 1024); None for no limit.
            persona: text about the bot placed before every conversation and never
                cut (a chat template's system prompt holds it); a conversation's own
                persona turns replace it.
        """
        if tokenizer.eos_token_id is None:
            raise RejoinderError("the tokenizer has no end-of-text token; formats need one")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise RejoinderError(f"max_tokens must be a positive number, got {max_tokens!r}")
        if persona is not None and not isinstance(persona, str):
            raise RejoinderError(f"a persona is text, got {type(persona).__name__}")
        self.tokenizer = tokenizer
        self.reverse = bool(reverse)
        self.max_tokens = max_tokens
        self.persona = persona.strip() or None if persona else None
        self.eos_id: int = tokenizer.eos_token_id
        self._text = text_encoder(tokenizer)
        self._literals: dict[str, list[int]] = {}
        self._turn_ids: dict[str, list[int]] = {}

    # -- what subclasses provide -------------------------------------------------------

    def _build(self, turns: list[list[int]], roles: list[str], generation: bool) -> Encoding:
        """Lays out the persona (`persona_ids`) and the token ids of each turn's text,
        each turn in its role ("user" or "assistant"); `generation` adds the reply
        prompt."""
        raise NotImplementedError

    def _turn_text(self, text: str) -> str:
        """The string tokenized for a turn (a template may put a space before it)."""
        return text

    def _learns(self, index: int, role: str, given: bool) -> bool:
        """Whether `loss_on="responses"` learns a turn: an assistant's turn, never a
        user's; a turn whose role was not given, when it is not the first (DialoGPT's
        recipe: both sides of a conversation between people are replies to learn)."""
        return role == ASSISTANT if given else index > 0

    def with_system(self, system: str | None) -> Format:
        """This format with `system` as its system prompt (a dialogue's own, from its
        meta or its system messages); formats that have no place for one (all but
        chat-template) are returned as they are, so the prompt is left out."""
        return self

    def with_persona(self, persona: str | None) -> Format:
        """This format with `persona` in place of its own (None or "": its own)."""
        persona = persona.strip() if persona else None
        if not persona or persona == self.persona:
            return self
        twin = copy.copy(self)  # the same tokenizer and caches, another persona
        twin.persona = persona
        return twin

    @property
    def persona_ids(self) -> list[int]:
        """The persona's ids as plain text ([] without one)."""
        if not self.persona:
            return []
        key = ("persona", self.persona)
        if key not in self._literals:
            self._literals[key] = self._text.encode(self.persona, add_special_tokens=False).ids
        return self._literals[key]

    @property
    def stop_ids(self) -> list[int]:
        """Token ids that end a reply."""
        return [self.eos_id]

    @property
    def stop_strings(self) -> list[str]:
        """Strings that end a reply (for formats whose turns end in plain text)."""
        return []

    @property
    def uses_token_types(self) -> bool:
        """Whether the format gives tokens types (only GPT-2 models take them)."""
        return self.encode([]).token_type_ids is not None

    def settings(self) -> dict[str, Any]:
        """The constructor's keyword arguments, as saved in rejoinder.json."""
        out: dict[str, Any] = {"reverse": self.reverse, "max_tokens": self.max_tokens}
        if self.persona:
            out["persona"] = self.persona
        return out

    # -- shared behaviour --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.settings()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def literal(self, text: str) -> list[int]:
        """Ids of format text such as a role name; special tokens in it are recognised."""
        if text not in self._literals:
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            self._literals[text] = ids
        return self._literals[text]

    def tokenize_turns(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of what people wrote: special-token strings in it stay plain text.

        Recent turns are remembered: windowing a long dialogue for training, or a chat
        history growing by a turn at a time, encodes the same turns again and again.
        """
        cache = self._turn_ids
        known = {t: cache.get(t) for t in texts}  # one read each: other threads may clear it
        missing = [t for t, ids in known.items() if ids is None]
        if missing:
            encoded = self._text.encode_batch(
                [self._turn_text(t) for t in missing], add_special_tokens=False
            )
            fresh = {t: e.ids for t, e in zip(missing, encoded, strict=True)}
            known.update(fresh)
            if len(cache) + len(fresh) > TURN_CACHE:
                cache.clear()
            cache.update(fresh)
        return [list(known[t]) for t in texts]

    def _laid_out(self, turns: Any, generation: bool, budget: int | None) -> Encoding:
        """`_fit` for turns given any way `as_context` reads. System messages among them
        (role "system" or "developer") become the system prompt and persona turns the
        persona, not turns; the others keep the roles their speakers give."""
        if isinstance(turns, Dialogue):
            turns = turns.turns
        turns = as_context(turns)
        roles = [role_of(t.speaker) for t in turns]
        system = "\n\n".join(t.text for t, r in zip(turns, roles, strict=True) if r == SYSTEM)
        persona = "\n".join(t.text for t, r in zip(turns, roles, strict=True) if r == PERSONA)
        said = [
            (t.text, r) for t, r in zip(turns, roles, strict=True) if r in (USER, ASSISTANT, None)
        ]
        texts, given = [t for t, _ in said], [r for _, r in said]
        if self.reverse:
            # A backward model reads the conversation from its end, and learnt its roles
            # by position: the turn it is asked to explain is always the "reply".
            texts, given = texts[::-1], [None] * len(said)
        fmt = self.with_system(system or None).with_persona(persona or None)
        return fmt._fit(fmt.tokenize_turns(texts), given, generation, budget)

    def _built(self, turns: list[list[int]], given: list, generation: bool) -> Encoding:
        roles = resolve_roles(given, generation)
        enc = self._build(turns, roles, generation)
        enc.turn_roles, enc.role_given = roles, [g is not None for g in given]
        return enc

    def _fit(
        self, turns: list[list[int]], given: list, generation: bool, budget: int | None
    ) -> Encoding:
        """Builds with as many of the latest whole turns as fit in `budget` tokens, the
        persona and system prompt always.

        "Latest" is in the order the turns were said, also when `reverse` has put them
        last to first: the backward model keeps the reply and what led to it.
        """
        if budget is None:
            return self._built(turns, given, generation)
        n = len(turns)

        def latest(k: int) -> slice:
            return slice(0, k) if self.reverse else slice(n - k, n)

        for k in range(n, 0, -1):
            enc = self._built(turns[latest(k)], given[latest(k)], generation)
            if len(enc) <= budget:
                enc.dropped_turns = n - k
                return enc
        if turns:
            # Even the latest turn alone is too long: keep its end, nearest the reply.
            newest = turns[latest(1)][0]
            over = len(enc) - budget
            if over < len(newest):
                enc = self._built([newest[over:]], given[latest(1)], generation)
                enc.dropped_turns = n - 1
                return enc
        enc = self._built([], [], generation)
        if len(enc) <= budget and not turns:
            return enc
        fixed = [what for what, on in (("the persona", self.persona),
                                       ("the system prompt", getattr(self, "system", None)))
                 if on]  # fmt: skip
        raise RejoinderError(
            f"the {self.name} format needs more than {budget} tokens for its own markers"
            + (f" and {' and '.join(fixed)}, which are never cut" if fixed else "")
            + "; raise the token budget (max_tokens)"
            + (f" or shorten {' and '.join(fixed)}" if fixed else "")
        )

    def encode(self, turns: Any, max_tokens: int | None = None) -> Encoding:
        """The model input that asks for the next reply to `turns` (oldest first).

        `turns` may be empty: that is the start of a conversation. `max_tokens` (default:
        the format's) bounds the length; the oldest turns go first.
        """
        return self._laid_out(turns, True, max_tokens or self.max_tokens)

    def training_example(
        self, dialogue: Any, loss_on: str = "responses", max_tokens: int | None = None
    ) -> Encoding:
        """Input ids and labels for one dialogue.

        Args:
            dialogue: a Dialogue or a list of turns.
            loss_on: which turns the loss counts: "responses" (the assistant's turns,
                and turns of no given role that `_learns` picks: by default every
                turn after the first, the assistant's side in a chat template),
                "last" (only the latest turn that is not the user's) or "all". A
                turn's labels cover its text and the marker that ends it, so the
                model learns to stop.
            max_tokens: token budget (default: the format's); the oldest turns go first.

        Every label is either the input id at that position or IGNORE (-100); shifting
        is left to the model, as in `transformers`.
        """
        if loss_on not in LOSS_ON:
            raise RejoinderError(f"loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
        enc = self._laid_out(dialogue, False, max_tokens or self.max_tokens)
        turns = list(zip(enc.turn_spans, enc.turn_roles, enc.role_given, strict=True))
        if loss_on == "all":
            chosen = enc.turn_spans
        elif loss_on == "responses":
            chosen = [s for i, (s, r, g) in enumerate(turns) if self._learns(i, r, g)]
        else:  # the latest turn that is not the user's
            chosen = [s for s, r, g in turns if not (g and r == USER)][-1:]
        labels = [IGNORE] * len(enc.input_ids)
        for start, end in chosen:
            labels[start:end] = enc.input_ids[start:end]
        enc.labels = labels
        return enc

    def clean_reply(self, text: str, extra_stops: Sequence[str] = ()) -> str:
        """Cuts generated text at the first stop string and trims it."""
        cut = len(text)
        for s in [*self.stop_strings, *extra_stops]:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
        return text[:cut].strip()

    def decode_reply(self, ids: Sequence[int], extra_stops: Sequence[str] = ()) -> str:
        """The reply text in generated ids: up to the first stop id, then `clean_reply`."""
        stops = set(self.stop_ids)
        end = next((i for i, t in enumerate(ids) if t in stops), len(ids))
        text = self.tokenizer.decode(list(ids[:end]), skip_special_tokens=True)
        return self.clean_reply(text, extra_stops)
