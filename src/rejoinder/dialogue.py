"""Turn and Dialogue: the one record that every stage of rejoinder speaks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rejoinder.errors import RejoinderError

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
SYSTEM_ROLES = ("system", "developer")
"""Speakers (OpenAI roles) whose text instructs the model rather than takes a turn."""
PERSONA = "persona"
"""The speaker of a persona: text about the bot that formats place before the
conversation and never cut (a chat template's system prompt takes it)."""


def role_of(speaker: str | None) -> str | None:
    """The role a speaker name stands for: USER, ASSISTANT, SYSTEM (system or developer)
    or PERSONA; None for a person's name or no speaker, whose role formats give by
    alternating back from the reply.

    Only these exact names are roles: a corpus's speaker ids ("A", a username) are not.

    >>> [role_of(s) for s in ("user", "assistant", "developer", "persona", "A", None)]
    ['user', 'assistant', 'system', 'persona', None, None]
    """
    if speaker in (USER, ASSISTANT, PERSONA):
        return speaker
    return SYSTEM if speaker in SYSTEM_ROLES else None


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation: what one speaker said before the other answered."""

    text: str
    """What was said. Never empty."""
    speaker: str | None = None
    """Who said it (a username, a role such as "user"), when the corpus knows."""
    labels: Mapping[str, Any] = field(default_factory=dict)
    """Annotations of this turn, e.g. {"emotion": "happiness", "act": "inform"}."""

    def __post_init__(self):
        if not isinstance(self.text, str):
            raise RejoinderError(
                f"a turn's text must be a string, got {type(self.text).__name__} "
                f"{self.text!r:.60}; convert it with str() first"
            )
        if not self.text.strip():
            raise RejoinderError("a turn's text is empty; drop empty turns before making a Turn")
        if self.speaker is not None and not isinstance(self.speaker, str):
            raise RejoinderError(
                f"a turn's speaker must be a string or None, got {type(self.speaker).__name__}"
            )
        if not isinstance(self.labels, Mapping):
            raise RejoinderError(
                f"a turn's labels must be a mapping such as {{'emotion': 'joy'}}, "
                f"got {type(self.labels).__name__}"
            )
        for key, value in self.labels.items():
            if not isinstance(key, str) or not isinstance(value, str | int | float | bool | None):
                raise RejoinderError(
                    f"turn label {key!r}: {value!r} is not a name with a plain value "
                    "(string, number, boolean or None)"
                )

    def __hash__(self) -> int:
        return hash((self.text, self.speaker, tuple(sorted(self.labels.items()))))

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "speaker": self.speaker, **dict(self.labels)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Turn:
        """Reads {"text": …, "speaker": …, other keys as labels}; also OpenAI's role/content."""
        if "text" in d:
            text, speaker = d["text"], d.get("speaker")
            rest = {k: v for k, v in d.items() if k not in ("text", "speaker")}
        elif "content" in d:
            text, speaker = d["content"], d.get("role")
            rest = {k: v for k, v in d.items() if k not in ("content", "role")}
        else:
            raise RejoinderError(
                f"a turn given as a mapping needs a 'text' (or 'content') key, got keys {sorted(d)}"
            )
        return cls(text=text, speaker=speaker, labels={k: v for k, v in rest.items()})


@dataclass(frozen=True)
class Dialogue:
    """A conversation: turns in the order they were said, with where it came from."""

    turns: tuple[Turn, ...]
    """At least one turn; the last is the response a model learns to give."""
    id: str
    """Unique within its source (a Reddit path, a DailyDialog index, …)."""
    source: str = "unknown"
    """The corpus it came from, e.g. "reddit", "dailydialog", "chitchat"."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Facts about the whole dialogue (subreddit, thread id, style, split key, …)."""

    def __post_init__(self):
        turns = tuple(self.turns) if not isinstance(self.turns, str) else None
        if turns is None:
            raise RejoinderError("a dialogue's turns must be a list of turns, not one string")
        if not turns:
            raise RejoinderError(f"dialogue {self.id!r} has no turns")
        bad = [i for i, t in enumerate(turns) if not isinstance(t, Turn)]
        if bad:
            raise RejoinderError(
                f"dialogue {self.id!r}: turn {bad[0]} is a {type(turns[bad[0]]).__name__}, "
                "not a Turn; build dialogues with Dialogue.from_turns()"
            )
        object.__setattr__(self, "turns", turns)
        if not isinstance(self.id, str) or not self.id:
            raise RejoinderError(f"a dialogue's id must be a non-empty string, got {self.id!r}")

    def __len__(self) -> int:
        return len(self.turns)

    @property
    def texts(self) -> list[str]:
        return [t.text for t in self.turns]

    def reversed(self) -> Dialogue:
        """The same dialogue with its turns in reverse order (the backward model's view)."""
        return Dialogue(self.turns[::-1], self.id, self.source, self.meta)

    @classmethod
    def from_turns(cls, turns: Iterable[Any], id: str, source: str = "unknown", **meta):
        """Builds a dialogue from strings, Turns or mappings; empty turns are an error."""
        return cls(tuple(to_turn(t, i) for i, t in enumerate(turns)), id, source, meta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "turns": [t.to_dict() for t in self.turns],
            **({"meta": dict(self.meta)} if self.meta else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Dialogue:
        try:
            return cls.from_turns(
                d["turns"], d["id"], d.get("source", "unknown"), **d.get("meta", {})
            )
        except KeyError as e:
            raise RejoinderError(
                f"a dialogue mapping needs the key {e}; got keys {sorted(d)}"
            ) from None


def to_turn(item: Any, index: int = 0) -> Turn:
    """One turn from a string, a Turn or a mapping, with an error that says which turn."""
    if isinstance(item, Turn):
        return item
    if isinstance(item, str):
        if not item.strip():
            raise RejoinderError(f"turn {index} is empty")
        return Turn(item)
    if isinstance(item, Mapping):
        return Turn.from_dict(item)
    raise RejoinderError(
        f"turn {index} is a {type(item).__name__} ({item!r:.60}); a turn must be a string, "
        "a Turn or a mapping with 'text'"
    )


def as_context(context: Any) -> list[Turn]:
    """Normalises a conversation history given by a user into turns.

    `context` is a list of turns (strings, Turns or {"text"/"content": …} mappings),
    oldest first, or one string for a single turn. None or [] is the start of a
    conversation. Empty and whitespace-only turns are skipped (a user pressing enter
    says nothing); anything that is not text is an error naming the turn.

    >>> [t.text for t in as_context(["Hi", "  ", "How are you?"])]
    ['Hi', 'How are you?']
    """
    if context is None:
        return []
    if isinstance(context, str | Turn | Mapping):
        context = [context]
    if not isinstance(context, Iterable):
        raise RejoinderError(
            f"the context must be a list of turns (strings), got {type(context).__name__}"
        )
    turns = []
    for i, item in enumerate(context):
        text = item.get("text", item.get("content")) if isinstance(item, Mapping) else item
        if isinstance(text, str) and not text.strip():
            continue
        turns.append(to_turn(item, i))
    return turns
