"""The tokenizer's own Jinja chat template as a conversation format."""

from __future__ import annotations

import copy
import logging
import re

from rejoinder.dialogue import ASSISTANT, USER
from rejoinder.errors import RejoinderError
from rejoinder.formats.base import Builder, Format

log = logging.getLogger(__name__)

JOINER = "\n"
"""What joins several messages of one role in a row, for templates that refuse them."""


class ChatTemplateFormat(Format):
    """The tokenizer's own Jinja chat template, with roles "user" and "assistant".

    Each turn is a message of its role (`Format` gives the roles); the reply is always
    the assistant's. A `system` prompt and a persona, when set, are one system message,
    first. Several messages of one role in a row are rendered as the template renders
    them; a template that refuses them (Llama 2's and Mistral's raise an exception) gets
    them joined into one message by a newline, with a warning. The template is rendered
    with a placeholder for each message, so the literal parts (role headers, markers)
    are tokenized with their special tokens and each message as plain text. A turn's
    labels cover its text and the template's end-of-turn token after it (the first
    special token that follows a message, e.g. <|im_end|>), never the next header or
    the generation prompt; that token also ends a reply. `loss_on="responses"` learns
    the assistant's turns only.
    """

    name = "chat-template"
    _mark = "\ue000{}\ue001"
    _mark_re = re.compile("\ue000(\\d+)\ue001")

    def __init__(self, tokenizer, *, template: str | None = None, system: str | None = None, **kw):
        super().__init__(tokenizer, **kw)
        self.template, self.system = template, system
        self._joins = {"on": False}  # shared with twins: a template refuses once for all
        if not (template or getattr(tokenizer, "chat_template", None)):
            raise RejoinderError(
                "the tokenizer has no chat template; pass template='…' (a Jinja template) "
                "or choose another format (dialogpt, sep, speaker, template)"
            )
        mark = self._mark.format
        try:
            alike = [self._render([(role, mark(0))], False) for role in (USER, ASSISTANT)]
        except RejoinderError:  # a template that insists on who speaks first tells them apart
            alike = ["", self._render([(USER, mark(1)), (ASSISTANT, mark(0))], False)]
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

    def _learns(self, index, role, given):
        return role == ASSISTANT

    def with_system(self, system):
        if not system or system == self.system:
            return self
        twin = copy.copy(self)  # the same tokenizer and caches, another system prompt
        twin.system = system
        return twin

    @property
    def system_text(self) -> str:
        """The system message: the system prompt, then the persona."""
        return "\n\n".join(x for x in (self.system, self.persona) if x)

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

    def _rendered(self, messages: list[tuple[str, str]], generation: bool) -> str:
        """`_render`, joining messages of one role in a row where the template refuses them."""
        repeats = any(a[0] == b[0] for a, b in zip(messages, messages[1:], strict=False))
        if not (repeats and self._joins["on"]):
            try:
                return self._render(messages, generation)
            except RejoinderError as e:
                if not repeats:
                    raise
                self._joins["on"] = True
                log.warning(
                    "%s; rejoinder joins messages of one role in a row into one, a newline "
                    "between them, for this template",
                    e,
                )
        joined: list[tuple[str, str]] = []
        for role, content in messages:
            if joined and joined[-1][0] == role:
                joined[-1] = (role, joined[-1][1] + JOINER + content)
            else:
                joined.append((role, content))
        return self._render(joined, generation)

    def _build(self, turns, roles, generation):
        messages = [(role, self._mark.format(i)) for i, role in enumerate(roles)]
        # The system prompt is a message of its own, tokenized as plain text like a turn.
        system, system_text = len(turns), self.system_text
        if system_text:
            messages.insert(0, ("system", self._mark.format(system)))
        pieces = self._mark_re.split(self._rendered(messages, generation))
        b = Builder(typed=False)
        b.add(self.literal(pieces[0]) if pieces[0] else [])
        special = set(self.tokenizer.all_special_ids)
        seen = []
        for index, after in zip(pieces[1::2], pieces[2::2], strict=True):
            tail = self.literal(after) if after else []
            if int(index) == system:
                b.add(self.tokenize_turns([system_text])[0])
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
