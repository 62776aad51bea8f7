"""The formats written without a chat template: DialoGPT's, convmodel's, speaker tokens,
and plain-text roles for base language models."""

from __future__ import annotations

from collections.abc import Sequence

from rejoinder.dialogue import ASSISTANT
from rejoinder.errors import RejoinderError
from rejoinder.formats.base import Builder, Format


class DialoGPTFormat(Format):
    """DialoGPT's: every turn followed by the end-of-text token.

    "Hello", "Hi" -> Hello <|endoftext|> Hi <|endoftext|>; the reply starts right after.
    Roles are not written (DialoGPT has none); they decide only what is learnt. A
    persona comes first, ended like a turn.
    """

    name = "dialogpt"

    def _build(self, turns, roles, generation):
        b = Builder(typed=False)
        if self.persona:
            b.add([*self.persona_ids, self.eos_id])
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
    token, or end-of-text where it has none. A persona comes first, after a separator
    of its own, in the reply's type (the bot's own words).
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

    def _build(self, turns, roles, generation):
        b = Builder(typed=True)
        if self.persona:
            bot = (len(turns) - (0 if generation else 1)) % 2
            b.add([self.sep_id, *self.persona_ids], bot)
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

    The user's turns are `<speaker1>`'s, the assistant's `<speaker2>`'s, and the reply
    is always `<speaker2>`'s: "Hi", "Hello!" -> <speaker1> Hi <speaker2> Hello!
    <|endoftext|> for training, and the input for the reply to "Hi" ends in <speaker2>.
    A persona comes first, typed as the bot's. The speaker tokens are added to the
    tokenizer's vocabulary when missing (the model grows to match).
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

    def _build(self, turns, roles, generation):
        b = Builder(typed=True)
        if self.persona:
            b.add(self.persona_ids, self.bot_id)
        for ids, role in zip(turns, roles, strict=True):
            speaker = self.bot_id if role == ASSISTANT else self.user_id
            start = b.add([speaker], speaker)
            b.spans.append((start, b.add(ids, speaker) + 1))  # + the marker that ends it
        if generation:
            b.add([self.bot_id], self.bot_id)
        elif turns:
            b.add([self.eos_id], b.types[-1])
        return b.encoding()


class TemplateFormat(Format):
    """Plain-text roles for base language models: "User: Hi\\nAgent: Hello\\nUser: …\\nAgent:".

    The reply is always the agent's. A persona is the first line, with no role. The
    reply is cut at the first stop string: either role's prefix or the separator.
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

    def _build(self, turns, roles, generation):
        b = Builder(typed=False)
        if self.persona:
            b.add([*self.persona_ids, *self.literal(self.separator)])
        for ids, role in zip(turns, roles, strict=True):
            start = b.add(self.literal(self.bot if role == ASSISTANT else self.user))
            b.add(ids)
            b.spans.append((start, b.add(self.literal(self.separator))))
        if generation:
            b.add(self.literal(self.bot))
        return b.encoding()
