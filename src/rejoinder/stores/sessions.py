"""Chat sessions in a database: a SQLite file by default, PostgreSQL by URL (SQLAlchemy).

A session is a row in `sessions`; its messages are rows in `messages`, numbered from 0
in the order they were said. The store keeps every message; what the model sees is
cut by the model's format. A user's message and the reply to it are written in one
transaction, so a failed reply leaves the history as it was.

What users say of the bot's replies lives in `replies`, one row per reply the bot gave
at an assistant message (its `variant`, 0 first): the thumbs up or down, a better reply
the user wrote, and the replies that "regenerate" replaced. The highest variant is the
current reply, whose text `messages` holds too. A reply gets its row when it is first
rated or replaced, so sessions from before this table need nothing done to them.
`feedback_rows` exports them as plain rows, which `data.chat_feedback` pairs for rankers
and DPO. A session's A/B arm, when a server with arms made it, is in `stores.arms`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from itertools import groupby
from typing import Any

from rejoinder.db import DEFAULT_DB, Database
from rejoinder.stores.arms import ArmStore
from rejoinder.stores.flags import FlagStore

__all__ = [
    "DEFAULT_DB",
    "KEEP",
    "MessageError",
    "NoSuchMessage",
    "NotAReply",
    "NotTheLast",
    "SessionStore",
]

RATINGS = {"up": 1, "down": -1, None: None}
KEEP: Any = object()
"""`feedback`'s default: the field keeps its earlier value."""


class MessageError(Exception):
    """Feedback or a new reply refused because of the message it names."""


class NoSuchMessage(MessageError):
    """No such session, or no message at that seq."""


class NotAReply(MessageError):
    """The message is the user's, not one of the bot's replies."""


class NotTheLast(MessageError):
    """The reply to replace is no longer the session's last message (someone wrote since)."""


class SessionStore:
    """Sessions and their messages, in a `Database` (whose engine other stores may share)."""

    def __init__(self, url: str | Database = DEFAULT_DB):
        import sqlalchemy as sa

        self.db = url if isinstance(url, Database) else Database(url)
        self.url, self.engine = self.db.url, self.db.engine
        meta = self.db.meta

        def session_key():
            return sa.Column(
                "session_id",
                sa.String(64),
                sa.ForeignKey("rejoinder_sessions.id", ondelete="CASCADE"),
                primary_key=True,
            )

        self.sessions = sa.Table(
            "rejoinder_sessions",
            meta,
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("options", sa.Text, nullable=False, default="{}"),
        )
        self.messages = sa.Table(
            "rejoinder_messages",
            meta,
            session_key(),
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("content", sa.Text, nullable=False),
            sa.Column("created", sa.Float, nullable=False),
        )
        self.replies = sa.Table(
            "rejoinder_replies",
            meta,
            session_key(),
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("variant", sa.Integer, primary_key=True),
            sa.Column("content", sa.Text, nullable=False),
            sa.Column("created", sa.Float, nullable=False),
            sa.Column("rating", sa.SmallInteger, nullable=True),  # +1 up, -1 down
            sa.Column("better", sa.Text, nullable=True),
            sa.Column("rated", sa.Float, nullable=True),
        )
        self.flags = FlagStore(self.db)
        self.arms = ArmStore(self.db)
        self.db.create_tables()

    def close(self) -> None:
        self.db.close()

    def ping(self) -> bool:
        return self.db.ping()

    def create(self, options: dict[str, Any] | None = None, arm: str | None = None) -> str:
        """A new session's id; `arm`: the A/B arm it is given, stored with it (`arms`)."""
        sid = uuid.uuid4().hex
        row = dict(id=sid, created=time.time(), options=json.dumps(options or {}))

        def work(c):
            c.execute(self.sessions.insert().values(**row))
            if arm is not None:
                self.arms.add(c, sid, arm)

        self.db.write(work)
        return sid

    def ids(self) -> list[str]:
        """Every session's id, the oldest first."""
        import sqlalchemy as sa

        with self.db.read() as c:
            query = sa.select(self.sessions.c.id).order_by(self.sessions.c.created)
            return list(c.execute(query).scalars())

    def get(self, sid: str) -> dict[str, Any] | None:
        """The session with its whole history, or None when there is no such session.

        Each message has its `seq`; the bot's replies also their `rating` ("up", "down"
        or None), the user's `better` reply (or None) and the `earlier` replies that
        regenerating replaced, oldest first. A message the safety policy flagged (a
        user's), or whose drafts it stopped (a reply's), has them in `flagged`.
        """
        import sqlalchemy as sa

        with self.engine.connect() as c:
            row = c.execute(sa.select(self.sessions).where(self.sessions.c.id == sid)).first()
            if row is None:
                return None
            messages = self._messages(c, sid)
            flagged = self.flags.of_session(c, sid)
        by_seq: dict[int, list] = {}
        for flag in flagged:
            by_seq.setdefault(flag.pop("seq"), []).append(flag)
        for message in messages:
            if message["seq"] in by_seq:
                message["flagged"] = by_seq[message["seq"]]
        return {
            "id": row.id,
            "created": row.created,
            "options": json.loads(row.options),
            "messages": messages,
        }

    def _messages(self, c, sid: str, seq: int | None = None) -> list[dict[str, Any]]:
        """The session's messages (or the one at `seq`) as `get` shows them."""
        import sqlalchemy as sa

        m, r = self.messages.c, self.replies.c
        where = [m.session_id == sid, *([m.seq == seq] if seq is not None else [])]
        rows = c.execute(
            sa.select(m.seq, m.role, m.content, m.created).where(*where).order_by(m.seq)
        ).all()
        where = [r.session_id == sid, *([r.seq == seq] if seq is not None else [])]
        variants = c.execute(
            sa.select(r.seq, r.content, r.rating, r.better).where(*where).order_by(r.seq, r.variant)
        ).all()
        replies = {s: list(v) for s, v in groupby(variants, key=lambda v: v.seq)}
        out = []
        for row in rows:
            message = {
                "role": row.role,
                "content": row.content,
                "created": row.created,
                "seq": row.seq,
            }
            if row.role == "assistant":
                *earlier, current = replies.get(row.seq) or [None]
                rating = current.rating if current else None
                message["rating"] = {1: "up", -1: "down"}.get(rating)
                message["better"] = current.better if current else None
                message["earlier"] = [v.content for v in earlier]
            out.append(message)
        return out

    def append(self, sid: str, *messages: tuple[str, str]) -> list[int] | None:
        """Adds (role, content) messages at the end, in one transaction; returns the seqs
        they got, or None when there is no such session.

        Two servers appending to one session at once would number their messages the
        same; the loser's transaction fails on the key and is tried again.
        """
        return self.db.write(lambda c: self._append(c, sid, messages))

    def _lock(self, c, sid: str) -> bool:
        """Whether the session exists. On PostgreSQL its row stays locked to this
        transaction, so writes to one session from several servers take turns (SQLite
        ignores FOR UPDATE: its writers take turns anyway)."""
        import sqlalchemy as sa

        query = sa.select(self.sessions.c.id).where(self.sessions.c.id == sid).with_for_update()
        return c.execute(query).first() is not None

    def _append(self, c, sid: str, messages: tuple[tuple[str, str], ...]) -> list[int] | None:
        import sqlalchemy as sa

        if not self._lock(c, sid):
            return None
        last = c.execute(
            sa.select(sa.func.max(self.messages.c.seq)).where(self.messages.c.session_id == sid)
        ).scalar()
        start = -1 if last is None else last
        now = time.time()
        seqs = [start + 1 + i for i in range(len(messages))]
        c.execute(
            self.messages.insert(),
            [
                {"session_id": sid, "seq": seq, "role": role, "content": text, "created": now}
                for seq, (role, text) in zip(seqs, messages, strict=True)
            ],
        )
        return seqs

    def delete(self, sid: str) -> bool:
        def work(c):
            self.flags.delete_session(c, sid)
            self.arms.delete_session(c, sid)
            c.execute(self.replies.delete().where(self.replies.c.session_id == sid))
            c.execute(self.messages.delete().where(self.messages.c.session_id == sid))
            return c.execute(self.sessions.delete().where(self.sessions.c.id == sid)).rowcount

        return self.db.write(work) > 0

    # -- feedback on the bot's replies ---------------------------------------------------

    def feedback(
        self, sid: str, seq: int, rating: str | None = KEEP, better: str | None = KEEP
    ) -> dict[str, Any]:
        """Rates the current reply at `seq` ("up", "down", or None to take a rating
        back) and/or keeps the `better` reply the user wrote for it (None or blank: none).

        A field not given keeps its earlier value; one given replaces it. Returns the
        message as `get` shows it; raises `NoSuchMessage` or `NotAReply`.
        """
        if rating is not KEEP and rating not in RATINGS:
            raise ValueError(f"rating {rating!r}: use 'up', 'down' or None")
        values: dict[str, Any] = {"rated": time.time()}
        if rating is not KEEP:
            values["rating"] = RATINGS[rating]
        if better is not KEEP:
            values["better"] = better if better and better.strip() else None

        def work(c):
            variant = self._current(c, sid, seq)
            r = self.replies.c
            c.execute(
                self.replies.update()
                .where(r.session_id == sid, r.seq == seq, r.variant == variant)
                .values(**values)
            )
            return self._messages(c, sid, seq)[0]

        return self.db.write(work)

    def replace_last_reply(self, sid: str, seq: int, text: str) -> dict[str, Any]:
        """Makes `text` the current reply at `seq`, which must still be the session's last
        message; the reply it replaces stays as an earlier variant, its rating with it.

        Returns the message as `get` shows it; raises `NoSuchMessage`, `NotAReply`, or
        `NotTheLast` when a message was added since the caller read the session.
        """
        import sqlalchemy as sa

        def work(c):
            variant = self._current(c, sid, seq)
            last = c.execute(
                sa.select(sa.func.max(self.messages.c.seq)).where(self.messages.c.session_id == sid)
            ).scalar()
            if last != seq:
                raise NotTheLast(f"message {seq} of session {sid!r} is no longer the last")
            now = time.time()
            c.execute(
                self.replies.insert().values(
                    session_id=sid, seq=seq, variant=variant + 1, content=text, created=now
                )
            )
            m = self.messages.c
            c.execute(
                self.messages.update()
                .where(m.session_id == sid, m.seq == seq)
                .values(content=text, created=now)
            )
            return self._messages(c, sid, seq)[0]

        return self.db.write(work)

    def _current(self, c, sid: str, seq: int) -> int:
        """The variant of the current reply at `seq`, its row made first if it has none
        (a reply that was never rated nor replaced). Locks the session (`_lock`)."""
        import sqlalchemy as sa

        if not self._lock(c, sid):
            raise NoSuchMessage(f"no session {sid!r}")
        m, r = self.messages.c, self.replies.c
        message = c.execute(
            sa.select(m.role, m.content, m.created).where(m.session_id == sid, m.seq == seq)
        ).first()
        if message is None:
            raise NoSuchMessage(f"session {sid!r} has no message {seq}")
        if message.role != "assistant":
            raise NotAReply(f"message {seq} of session {sid!r} is the user's, not a bot reply")
        variant = c.execute(
            sa.select(sa.func.max(r.variant)).where(r.session_id == sid, r.seq == seq)
        ).scalar()
        if variant is None:
            variant = 0
            c.execute(
                self.replies.insert().values(
                    session_id=sid,
                    seq=seq,
                    variant=0,
                    content=message.content,
                    created=message.created,
                )
            )
        return variant

    def feedback_rows(self) -> Iterator[tuple[str, int, list, list[str]]]:
        """The feedback on the bot's replies, as plain rows for pairing
        (`data.chat_feedback.reply_pairs`): for each assistant message that has replies
        rows, (session id, seq, its replies oldest variant first, each with `variant`,
        `content`, `rating` and `better`, and the context: the text of the session's
        messages before it, oldest first, empty ones left out). A session's system
        prompt (its options) is not part of the context."""
        import sqlalchemy as sa

        r, m = self.replies.c, self.messages.c
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(r.session_id, r.seq, r.variant, r.content, r.rating, r.better).order_by(
                    r.session_id, r.seq, r.variant
                )
            ).all()
            for sid, variants in groupby(rows, key=lambda v: v.session_id):
                said = c.execute(
                    sa.select(m.seq, m.content).where(m.session_id == sid).order_by(m.seq)
                ).all()
                for seq, replies in groupby(variants, key=lambda v: v.seq):
                    context = [s.content.strip() for s in said if s.seq < seq and s.content.strip()]
                    yield sid, seq, list(replies), context
