"""The HTTP API's request bodies: OpenAI's chat completion schema and rejoinder's sessions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = "text"
    text: str = ""


class Message(BaseModel):
    """One message of an OpenAI chat, in its role. System (and developer) messages come
    first and are a chat-template model's system prompt; other formats have no place for
    them and leave them out. User and assistant messages are the conversation, each in
    its role, in any order (two of one role in a row, the assistant first)."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if p.type == "text")


class RejoinderOptions(BaseModel):
    """rejoinder's own options, in the `rejoinder` field of a chat completion request."""

    model_config = ConfigDict(extra="forbid")
    preset: str | None = Field(
        None,
        description="a decoding preset: greedy, beam, nucleus, top-k, typical, min-p, mmi, "
        "dialogpt-mmi, dialogrpt",
    )
    mmi: bool | None = Field(
        None,
        description="rerank sampled candidates with the reverse model (--reverse) and/or "
        "the rankers (--ranker)",
    )
    mmi_candidates: int | None = Field(None, ge=2, le=64)
    head: str | None = Field(None, description="an extra LM head of a multi-head model")
    persona: str | None = Field(
        None,
        description="text about the bot placed before the conversation, never cut (a "
        "chat-template model's system prompt takes it); default: the server's",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="any other decoding option (top_k, repetition_penalty, num_beams, ...)",
    )


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = Field(
        False, description="end the stream with a chunk holding the request's usage"
    )


class ChatCompletionRequest(BaseModel):
    """POST /v1/chat/completions, as OpenAI defines it (unknown fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(
        None, max_length=256, description="the end user's id: the same id meets the same model"
    )
    rejoinder: RejoinderOptions | None = None


class SessionCreate(BaseModel):
    """POST /v1/sessions: decoding options kept with the session (all optional)."""

    model_config = ConfigDict(extra="forbid")
    preset: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    mmi: bool | None = None
    system: str | None = Field(
        None, description="a system prompt for every reply (chat-template models only)"
    )
    persona: str | None = Field(
        None,
        description="text about the bot placed before the conversation and never cut (every "
        "format; a chat template's system prompt takes it); default: the server's",
    )


class SessionDecoding(BaseModel):
    """Decoding options for one reply of a session (over the session's own), and streaming."""

    model_config = ConfigDict(extra="forbid")
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    preset: str | None = None
    seed: int | None = None


class SessionMessage(SessionDecoding):
    """POST /v1/sessions/{id}/messages."""

    content: str = Field(min_length=1)


class SessionFeedback(BaseModel):
    """POST /v1/sessions/{id}/messages/{seq}/feedback: a rating, a better reply, or both.

    A field left out keeps what earlier feedback said; null takes it back."""

    model_config = ConfigDict(extra="forbid")
    rating: Literal["up", "down"] | None = Field(
        None, description='"up" or "down" for the current reply; null takes a rating back'
    )
    better: str | None = Field(
        None, description="the reply the user would have liked instead; null or blank: none"
    )

    @model_validator(mode="after")
    def _something_said(self):
        if not self.model_fields_set:
            raise ValueError('give a "rating", a "better" reply, or both')
        return self
