"""ChatSession: a conversation with a model, and the terminal REPL around it."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Any, TextIO

from rejoinder.dialogue import ASSISTANT, PERSONA, SYSTEM, USER, Turn
from rejoinder.errors import RejoinderError

SELF_OVERLAP = 0.5
"""The repetition guard of a chat that does not set max_self_overlap (1: every reply
passes)."""

HELP = """commands:
  /reset            forget the conversation
  /history          show the conversation so far
  /set key=value    set a decoding option, e.g. /set do_sample=true top_p=0.9
  /set              show the decoding options
  /flagged          what the safety policy stopped in this chat
  /help             this text
  /quit or quit     leave (Ctrl-D and Ctrl-C too)"""


class ChatSession:
    """The history of one conversation and the decoding options used to continue it.

    The whole history is kept; the model sees the most recent turns that fit its
    context (the format truncates them), always with the system prompt and persona.
    Replies that repeat one of the bot's earlier turns are drawn again
    (`max_self_overlap`, SELF_OVERLAP unless the options say otherwise). With the model's
    safety policy on, what it flagged (the user's messages, the replies it stopped) is
    kept in `flagged`.
    """

    def __init__(
        self, model, *, system: str | None = None, persona: str | None = None, **options: Any
    ):
        """`system`: a system prompt (chat-template models); `persona`: text about the bot
        before the conversation (every format; default: the checkpoint's own)."""
        self.model = model
        self.options: dict[str, Any] = dict(options)
        self.history: list[Turn] = []
        self.flagged: list = []
        """What the safety policy flagged in this chat (`rejoinder.safety.Flag`s)."""
        self.preamble = [
            Turn(text.strip(), speaker=role)
            for role, text in ((SYSTEM, system), (PERSONA, persona))
            if text and text.strip()
        ]

    @property
    def context(self) -> list[Turn]:
        """What the model reads: the system prompt, the persona, the history."""
        return [*self.preamble, *self.history]

    def config(self, options: dict[str, Any] | None = None):
        """The DecodingConfig of the session's options (or of `options`), checked
        against the model: MMI needs a reverse model, a head must exist."""
        from rejoinder.generation.config import decoding_config

        options = self.options if options is None else options
        given = {k: v for k, v in options.items() if k != "preset" and v is not None}
        given.setdefault("max_self_overlap", SELF_OVERLAP)
        config = decoding_config(options.get("preset"), **given)
        self.model.check(config)
        return config

    def send(self, text: str) -> str:
        """Adds the user's message, and returns (and remembers) the model's reply."""
        if not text.strip():
            raise RejoinderError("say something: the message is empty")
        config = self.config()
        self.history.append(Turn(text, speaker=USER))
        try:
            # Several return sequences: the first continues the chat.
            made = self.model.reply_batch([self.context], config)[0][0]
        except Exception:
            self.history.pop()  # a failed reply leaves the conversation as it was
            raise
        self.flagged += made.flags
        reply = made.text
        if reply.strip():
            self.history.append(Turn(reply, speaker=ASSISTANT))
        return reply

    def can_stream(self) -> bool:
        return self.config().streamable

    def stream(self, text: str):
        """Like `send`, yielding the reply's text as it is generated."""
        if not text.strip():
            raise RejoinderError("say something: the message is empty")
        config = self.config()
        self.history.append(Turn(text, speaker=USER))
        pieces = []
        try:
            for _, piece in self.model.stream_batch([self.context], config):
                if isinstance(piece, str):
                    pieces.append(piece)
                    yield piece
                else:  # the Finish: what the safety policy flagged on the way
                    self.flagged += piece.flags
        except BaseException:
            self.history.pop()
            raise
        reply = "".join(pieces)
        if reply.strip():
            self.history.append(Turn(reply, speaker=ASSISTANT))

    def reset(self) -> None:
        self.history.clear()

    def set_options(self, assignments: str) -> dict[str, Any]:
        """Parses "key=value key=value"; values are JSON where they parse (true, 0.9, [..])."""
        new = {}
        for item in assignments.split():
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise RejoinderError(f"/set takes key=value pairs, got {item!r}")
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            new[key] = None if raw.lower() in ("none", "null") else value
        trial = {**self.options, **new}
        self.config(trial)  # refuse bad ones before keeping them
        self.options = {k: v for k, v in trial.items() if v is not None}
        return self.options

    def command(self, line: str) -> tuple[list[str], bool]:
        """Runs a /command; returns the lines to print and whether to quit."""
        name, _, rest = line.strip().partition(" ")
        if name in ("/quit", "/exit", "quit", "exit"):
            return [], True
        if name == "/reset":
            self.reset()
            return ["(conversation reset)"], False
        if name == "/history":
            names = {ASSISTANT: "bot"}
            return [f"{names.get(t.speaker, t.speaker)} >> {t.text}" for t in self.context] or [
                "(no history)"
            ], False
        if name == "/set":
            opts = self.set_options(rest) if rest.strip() else self.options
            return [json.dumps(opts, sort_keys=True)], False
        if name == "/flagged":
            shown = [
                f"{f.who} ({f.layer}: {f.label}, {f.score:.2f}) >> {f.text}" for f in self.flagged
            ]
            return shown or ["(nothing flagged)"], False
        if name == "/help":
            return HELP.splitlines(), False
        raise RejoinderError(f"unknown command {name!r}; /help lists the commands")


def is_command(line: str) -> bool:
    return line.startswith("/") or line.strip().lower() in ("quit", "exit")


def repl(
    session: ChatSession,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    interactive: bool | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Chats on a terminal with `usr >>` / `bot >>`; from a pipe, one reply a line.

    From a pipe (stdin not a terminal) each input line is a message and each reply is
    printed on one line, so `printf 'Hello\\nquit\\n' | rejoinder chat DIR` works in
    scripts: stdout holds exactly one line per message (an empty one for an empty
    message or an error), and what commands and errors print goes to stderr. The
    streams default to the process's, as they are when called.
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    if interactive is None:
        interactive = stdin.isatty()
    notes = stdout if interactive else (stderr or sys.stderr)
    if interactive:
        with contextlib.suppress(ImportError):  # not on every platform
            import readline  # noqa: F401  (line editing and history for input())
        print("Chatting. /help lists commands; /quit or Ctrl-D leaves.", file=stdout)
    while True:
        try:
            if interactive:
                line = input("usr >> ")
            else:
                line = stdin.readline()
                if not line:
                    return 0
                line = line.rstrip("\n")
        except (EOFError, KeyboardInterrupt):
            if interactive:
                print(file=stdout)
            return 0
        try:
            if is_command(line):
                lines, leave = session.command(line)
                for out in lines:
                    print(out, file=notes)
                if leave:
                    return 0
                continue
            if not line.strip():
                if not interactive:
                    print(file=stdout)
                continue
            if interactive and session.can_stream():
                print("bot >> ", end="", file=stdout, flush=True)
                for piece in session.stream(line):
                    print(piece, end="", file=stdout, flush=True)
                print(file=stdout)
                continue
            reply = session.send(line)
        except RejoinderError as e:
            print(f"error: {e}", file=notes)
            if not interactive:
                print(file=stdout)
            continue
        except KeyboardInterrupt:
            print(file=stdout)
            return 0
        if interactive:
            print(f"bot >> {reply}", file=stdout)
        else:
            print(" ".join(reply.split()), file=stdout, flush=True)
