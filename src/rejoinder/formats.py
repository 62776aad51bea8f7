"""Conversation formats: how a list of turns becomes token ids, and where a reply ends.

A format is a small object around a tokenizer. It makes the model input for the next
reply (`encode`), a training example with labels (`training_example`), and knows the
ids and strings that end a reply (`stop_ids`, `stop_strings`). Its name and settings
are saved in the checkpoint's `rejoinder.json`, so a model always chats in the format
it was trained in.

Every format shares three behaviours, implemented once in `Format`:

- truncation to a token budget keeps the most recent whole turns; a single turn too
  long on its own is cut from its start, keeping the words nearest the reply;
- `reverse=True` reverses the order of the turns (the backward model of MMI);
- what people wrote is encoded as plain text: "<|endoftext|>", the separator or a
  speaker token typed by a user become ordinary tokens, never the special id.

Subclasses only say how turns are laid out, in `_build`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rejoinder.dialogue import SYSTEM_ROLES, Dialogue, as_context
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


class _Builder:
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

    def __init__(self, tokenizer, *, reverse: bool = False, max_tokens: int | None = 1024):
        """
        Args:
            tokenizer: a `transformers` fast tokenizer (see `rejoinder.tokenizers`).
            reverse: reverse the order of turns, for the backward (MMI) model.
            max_tokens: default token budget of `encode` and `training_example`
                (GPT-2's context is 1024); None for no limit.
        """
        if tokenizer.eos_token_id is None:
            raise RejoinderError("the tokenizer has no end-of-text token; formats need one")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise RejoinderError(f"max_tokens must be a positive number, got {max_tokens!r}")
        self.tokenizer = tokenizer
        self.reverse = bool(reverse)
        self.max_tokens = max_tokens
        self.eos_id: int = tokenizer.eos_token_id
        self._text = text_encoder(tokenizer)
        self._literals: dict[str, list[int]] = {}
        self._turn_ids: dict[str, list[int]] = {}

    # -- what subclasses provide -------------------------------------------------------

    def _build(self, turns: list[list[int]], generation: bool) -> Encoding:
        """Lays out the token ids of each turn's text; `generation` adds the reply prompt."""
        raise NotImplementedError

    def _turn_text(self, text: str) -> str:
        """The string tokenized for a turn (a template may put a space before it)."""
        return text

    def _responses(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The spans `loss_on="responses"` learns: every turn after the first."""
        return spans[1:]

    def with_system(self, system: str | None) -> Format:
        """This format with `system` as its system prompt (a dialogue's own, from its
        meta or its system messages); formats that have no place for one (all but
        chat-template) are returned as they are, so the prompt is left out."""
        return self

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
        return {"reverse": self.reverse, "max_tokens": self.max_tokens}

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
        """`_fit` for turns given any way `as_context` reads; system messages among them
        (role "system" or "developer") become the system prompt, not turns."""
        if isinstance(turns, Dialogue):
            turns = turns.turns
        turns = as_context(turns)
        system = "\n\n".join(t.text for t in turns if t.speaker in SYSTEM_ROLES)
        texts = [t.text for t in turns if t.speaker not in SYSTEM_ROLES]
        if self.reverse:
            texts = texts[::-1]
        fmt = self.with_system(system or None)
        return fmt._fit(fmt.tokenize_turns(texts), generation, budget)

    def _fit(self, turns: list[list[int]], generation: bool, budget: int | None) -> Encoding:
        """Builds with as many of the latest whole turns as fit in `budget` tokens.

        "Latest" is in the order the turns were said, also when `reverse` has put them
        last to first: the backward model keeps the reply and what led to it.
        """
        if budget is None:
            return self._build(turns, generation)
        n = len(turns)

        def latest(k: int) -> list[list[int]]:
            return turns[:k] if self.reverse else turns[n - k :]

        for k in range(n, 0, -1):
            enc = self._build(latest(k), generation)
            if len(enc) <= budget:
                enc.dropped_turns = n - k
                return enc
        if turns:
            # Even the latest turn alone is too long: keep its end, nearest the reply.
            newest = latest(1)[0]
            over = len(enc) - budget
            if over < len(newest):
                enc = self._build([newest[over:]], generation)
                enc.dropped_turns = n - 1
                return enc
        enc = self._build([], generation)
        if len(enc) <= budget and not turns:
            return enc
        raise RejoinderError(
            f"the {self.name} format needs more than {budget} tokens for its own markers; "
            "raise the token budget (max_tokens)"
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
            loss_on: which turns the loss counts: "responses" (every turn after the
                first), "last" (only the last) or "all". A turn's labels cover its
                text and the marker that ends it, so the model learns to stop.
            max_tokens: token budget (default: the format's); the oldest turns go first.

        Every label is either the input id at that position or IGNORE (-100); shifting
        is left to the model, as in `transformers`.
        """
        if loss_on not in LOSS_ON:
            raise RejoinderError(f"loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
        enc = self._laid_out(dialogue, False, max_tokens or self.max_tokens)
        spans = enc.turn_spans
        chosen = {"all": spans, "responses": self._responses(spans), "last": spans[-1:]}[loss_on]
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


class DialoGPTFormat(Format):
    """DialoGPT's: every turn followed by the end-of-text token.

    "Hello", "Hi" -> Hello <|endoftext|> Hi <|endoftext|>; the reply starts right after.
    """

    name = "dialogpt"

    def _build(self, turns, generation):
        b = _Builder(typed=False)
        for ids in turns:
            start = len(b.ids)
            b.spans.append((start, b.add([*ids, self.eos_id])))
        if generation and not b.ids:
            b.add([self.eos_id])  # nothing to condition on: start from end-of-text
        return b.encoding()


class SepFormat(Format):
    """convmodel's: a separator before every turn and one at the end, types 0/1 by turn.

    With GPT-2's tokenizer ["Hello", "How are you"] is
    [sep] Hello [sep] How are you [sep] with token types 0 0 1 1 1 1 0: the closing
    separator starts the type of the next turn. The separator is the tokenizer's sep
    token, or end-of-text where it has none.
    """

    name = "sep"

    def __init__(self, tokenizer, *, sep_token: str | None = None, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.sep_token = sep_token or tokenizer.sep_token or tokenizer.eos_token
        ids = tokenizer.convert_tokens_to_ids([self.sep_token])
        if ids[0] is None or ids[0] == tokenizer.unk_token_id != tokenizer.eos_token_id:
            raise RejoinderError(
                f"separator {self.sep_token!r} is not in the tokenizer's vocabulary"
            )
        self.sep_id = ids[0]

    def settings(self):
        return {**super().settings(), "sep_token": self.sep_token}

    @property
    def stop_ids(self):
        return [self.sep_id]

    def _build(self, turns, generation):
        b = _Builder(typed=True)
        starts = []
        for i, ids in enumerate(turns):
            b.add([self.sep_id], i % 2)
            starts.append(b.add(ids, i % 2) - len(ids))
        b.add([self.sep_id], len(turns) % 2)
        # A turn ends at the separator after it: the model emits that to finish a reply.
        b.spans = [(s, s + len(ids) + 1) for s, ids in zip(starts, turns, strict=True)]
        return b.encoding()


class SpeakerFormat(Format):
    """TransferTransfo's: a speaker token before each turn, token types = speaker tokens.

    Speakers alternate back from the reply, which is always `<speaker2>` (the bot):
    "Hi", "Hello!" -> <speaker1> Hi <speaker2> Hello! <|endoftext|> for training, and
    the input for the reply to "Hi" ends in <speaker2>. The speaker tokens are added
    to the tokenizer's vocabulary when missing (the model grows to match).
    """

    name = "speaker"

    def __init__(self, tokenizer, *, speakers: Sequence[str] = ("<speaker1>", "<speaker2>"), **kw):
        from tokenizers import AddedToken

        if len(speakers) != 2 or len(set(speakers)) != 2:
            raise RejoinderError(
                f"the speaker format needs two different speaker tokens, got {speakers!r}"
            )
        missing = [s for s in speakers if s not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens(
                [AddedToken(s, special=True) for s in missing], special_tokens=True
            )
        super().__init__(tokenizer, **kw)
        self.speakers = list(speakers)
        self.user_id, self.bot_id = tokenizer.convert_tokens_to_ids(self.speakers)

    def settings(self):
        return {**super().settings(), "speakers": self.speakers}

    @property
    def stop_ids(self):
        return [self.user_id, self.bot_id, self.eos_id]

    def _build(self, turns, generation):
        b = _Builder(typed=True)
        last = len(turns) if generation else len(turns) - 1  # the index that is the bot's
        for i, ids in enumerate(turns):
            speaker = self.bot_id if (last - i) % 2 == 0 else self.user_id
            start = b.add([speaker], speaker)
            b.spans.append((start, b.add(ids, speaker) + 1))  # + the marker that ends it
        if generation:
            b.add([self.bot_id], self.bot_id)
        elif turns:
            b.add([self.eos_id], b.types[-1])
        return b.encoding()


class TemplateFormat(Format):
    """Plain-text roles for base language models: "User: Hi\\nAgent: Hello\\nUser: …\\nAgent:".

    Roles alternate back from the reply, which is always the agent's. The reply is cut
    at the first stop string: either role's prefix or the separator.
    """

    name = "template"

    def __init__(
        self, tokenizer, *, user: str = "User:", bot: str = "Agent:", separator: str = "\n", **kw
    ):
        super().__init__(tokenizer, **kw)
        if not user or not bot or user == bot:
            raise RejoinderError(
                f"the template format needs two different role prefixes, got {user!r}, {bot!r}"
            )
        self.user, self.bot, self.separator = user, bot, separator

    def settings(self):
        return {
            **super().settings(),
            "user": self.user,
            "bot": self.bot,
            "separator": self.separator,
        }

    @property
    def stop_strings(self):
        return [s for s in (self.user, self.bot, self.separator) if s.strip() or s == "\n"]

    def _turn_text(self, text):
        return " " + text

    def _build(self, turns, generation):
        b = _Builder(typed=False)
        last = len(turns) if generation else len(turns) - 1
        for i, ids in enumerate(turns):
            start = b.add(self.literal(self.bot if (last - i) % 2 == 0 else self.user))
            b.add(ids)
            b.spans.append((start, b.add(self.literal(self.separator))))
        if generation:
            b.add(self.literal(self.bot))
        return b.encoding()


ROLES = ("user", "assistant")


class ChatTemplateFormat(Format):
    """The tokenizer's own Jinja chat template, with roles "user" and "assistant".

    Roles alternate back from the reply, which is always the assistant's; a `system`
    prompt, when set, comes first. The template is rendered with a placeholder for each
    message, so the literal parts (role headers, markers) are tokenized with their
    special tokens and each message as plain text. A turn's labels cover its text and
    the template's end-of-turn token after it (the first special token that follows a
    message, e.g. <|im_end|>), never the next header or the generation prompt; that
    token also ends a reply. `loss_on="responses"` learns the assistant's turns only.
    """

    name = "chat-template"
    _mark = "\ue000{}\ue001"
    _mark_re = re.compile("\ue000(\\d+)\ue001")

    def __init__(self, tokenizer, *, template: str | None = None, system: str | None = None, **kw):
        super().__init__(tokenizer, **kw)
        self.template, self.system = template, system
        if not (template or getattr(tokenizer, "chat_template", None)):
            raise RejoinderError(
                "the tokenizer has no chat template; pass template='…' (a Jinja template) "
                "or choose another format (dialogpt, sep, speaker, template)"
            )
        alike = [self._render([(role, self._mark.format(0))], False) for role in ROLES]
        if alike[0] == alike[1]:
            raise RejoinderError(
                "the chat template renders user and assistant messages alike, so replies "
                "cannot be told apart (nor masked); give a template that marks the roles"
            )
        tail = self._mark_re.split(alike[1])[-1]  # what follows an assistant message
        special = set(tokenizer.all_special_ids)
        self.end_of_turn = next((i for i in self.literal(tail) if i in special), None)

    def settings(self):
        return {**super().settings(), "template": self.template, "system": self.system}

    @property
    def stop_ids(self):
        ends = [self.end_of_turn, self.eos_id]
        return list(dict.fromkeys(i for i in ends if i is not None))

    def _responses(self, spans):
        return [s for i, s in enumerate(spans) if (len(spans) - 1 - i) % 2 == 0]

    def with_system(self, system):
        if not system or system == self.system:
            return self
        twin = copy.copy(self)  # the same tokenizer and caches, another system prompt
        twin.system = system
        return twin

    def _render(self, messages: list[tuple[str, str]], generation: bool) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        conversation = [{"role": role, "content": content} for role, content in messages]
        try:
            # Rendered directly rather than through apply_chat_template, which refuses an
            # empty conversation: the start of a chat is just the generation prompt.
            rendered, _ = render_jinja_template(
                conversations=[conversation],
                chat_template=self.template or self.tokenizer.chat_template,
                add_generation_prompt=generation,
                **self.tokenizer.special_tokens_map,
            )
        except Exception as e:  # a template is user code: report it, whatever it raised
            raise RejoinderError(f"the chat template failed to render: {e}") from None
        return rendered[0]

    def _build(self, turns, generation):
        last = len(turns) if generation else len(turns) - 1
        messages = [
            ("assistant" if (last - i) % 2 == 0 else "user", self._mark.format(i))
            for i in range(len(turns))
        ]
        # The system prompt is a message of its own, tokenized as plain text like a turn.
        system = len(turns)
        if self.system:
            messages.insert(0, ("system", self._mark.format(system)))
        pieces = self._mark_re.split(self._render(messages, generation))
        b = _Builder(typed=False)
        b.add(self.literal(pieces[0]) if pieces[0] else [])
        special = set(self.tokenizer.all_special_ids)
        seen = []
        for index, after in zip(pieces[1::2], pieces[2::2], strict=True):
            tail = self.literal(after) if after else []
            if int(index) == system:
                b.add(self.tokenize_turns([self.system])[0])
                b.add(tail)
                continue
            start = len(b.ids)
            end = b.add(turns[int(index)])
            marker = next((k for k, i in enumerate(tail) if i in special), None)
            b.spans.append((start, end + (0 if marker is None else marker + 1)))
            b.add(tail)
            seen.append(int(index))
        if seen != list(range(len(turns))):
            raise RejoinderError("the chat template must render every message once, in order")
        return b.encoding()


FORMATS: dict[str, type[Format]] = {
    f.name: f
    for f in (DialoGPTFormat, SepFormat, SpeakerFormat, TemplateFormat, ChatTemplateFormat)
}


def get_format(name: str, tokenizer, **settings) -> Format:
    """The format called `name` ("dialogpt", "sep", "speaker", "template", "chat-template")."""
    if name not in FORMATS:
        raise RejoinderError(f"unknown format {name!r}; choose one of {', '.join(FORMATS)}")
    try:
        return FORMATS[name](tokenizer, **settings)
    except TypeError as e:
        raise RejoinderError(f"format {name!r}: bad settings {settings}: {e}") from None


def format_from_dict(d: dict[str, Any], tokenizer) -> Format:
    """The inverse of `Format.to_dict`, as read from rejoinder.json."""
    d = dict(d)
    return get_format(d.pop("name", "dialogpt"), tokenizer, **d)


__all__ = ["Encoding", "Format", "FORMATS", "IGNORE", "LOSS_ON", "format_from_dict", "get_format"]
