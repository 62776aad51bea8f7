"""Conversation formats: how a list of turns becomes token ids, and where a reply ends.

`base.Format` does what every format shares (roles, truncation, labels, plain-text
turns; see its module); `plain` and `chat_template` hold the formats themselves, each
only a `_build` that lays turns out. `get_format` names them.
"""

from __future__ import annotations

from typing import Any

from rejoinder.errors import RejoinderError
from rejoinder.formats.base import IGNORE, LOSS_ON, Encoding, Format, resolve_roles
from rejoinder.formats.chat_template import ChatTemplateFormat
from rejoinder.formats.plain import DialoGPTFormat, SepFormat, SpeakerFormat, TemplateFormat

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


__all__ = [
    "ChatTemplateFormat",
    "DialoGPTFormat",
    "Encoding",
    "Format",
    "FORMATS",
    "IGNORE",
    "LOSS_ON",
    "SepFormat",
    "SpeakerFormat",
    "TemplateFormat",
    "format_from_dict",
    "get_format",
    "resolve_roles",
]
