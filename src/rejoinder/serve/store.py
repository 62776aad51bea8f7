"""Chat sessions in a database: a SQLite file by default, PostgreSQL by URL (SQLAlchemy).

A session is a row in `sessions`; its messages are rows in `messages`, numbered from 0
in the order they were said. The store keeps every message; what the model sees is
cut by the model's format. A user's message and the reply to it are written in one
transaction, so a failed reply leaves the history as it was.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from rejoinder.db import DEFAULT_DB, Database

__all__ = ["DEFAULT_DB", "SessionStore"]


class SessionStore:
    """Sessions and their messages, in a `Database` (whose engine other stores may share)."""

    def __init__(self, url: str | Database = DEFAULT_DB):
        import sqlalchemy as sa

        self.db = url if isinstance(url, Database) else Database(url)
        self.url, self.engine = self.db.url, self.db.engine
        meta = self.db.meta
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
            sa.Column(
                "session_id",
                sa.String(64),
                sa.ForeignKey("rejoinder_sessions.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("seq", sa.Integer, primary_key=True),
            sa.Column("role", sa.String(16), nullable=False),
            sa.Column("content", sa.Text, nullable=False),
            sa.Column("created", sa.Float, nullable=False),
        )
        self.db.create_tables()

    def close(self) -> None:
        self.db.close()

    def ping(self) -> bool:
        return self.db.ping()

    def create(self, options: dict[str, Any] | None = None) -> str:
        sid = uuid.uuid4().hex
        row = dict(id=sid, created=time.time(), options=json.dumps(options or {}))
        self.db.write(lambda c: c.execute(self.sessions.insert().values(**row)))
        return sid

    def get(self, sid: str) -> dict[str, Any] | None:
        """The session with its whole history, or None when there is no such session."""
        import sqlalchemy as sa

        with self.engine.connect() as c:
            row = c.execute(sa.select(self.sessions).where(self.sessions.c.id == sid)).first()
            if row is None:
                return None
            messages = c.execute(
                sa.select(self.messages.c.role, self.messages.c.content, self.messages.c.created)
                .where(self.messages.c.session_id == sid)
                .order_by(self.messages.c.seq)
            ).all()
        return {
            "id": row.id,
            "created": row.created,
            "options": json.loads(row.options),
            "messages": [
                {"role": m.role, "content": m.content, "created": m.created} for m in messages
            ],
        }

    def append(self, sid: str, *messages: tuple[str, str]) -> bool:
        """Adds (role, content) messages at the end, in one transaction; False: no session.

        Two servers appending to one session at once would number their messages the
        same; the loser's transaction fails on the key and is tried again.
        """
        return self.db.write(lambda c: self._append(c, sid, messages))

    def _append(self, c, sid: str, messages: tuple[tuple[str, str], ...]) -> bool:
        import sqlalchemy as sa

        # PostgreSQL: the session's row stays locked to this transaction, so appends to
        # one session from several servers take turns (SQLite ignores FOR UPDATE).
        exists = c.execute(
            sa.select(self.sessions.c.id).where(self.sessions.c.id == sid).with_for_update()
        ).first()
        if exists is None:
            return False
        last = c.execute(
            sa.select(sa.func.max(self.messages.c.seq)).where(self.messages.c.session_id == sid)
        ).scalar()
        start = -1 if last is None else last
        now = time.time()
        c.execute(
            self.messages.insert(),
            [
                {
                    "session_id": sid,
                    "seq": start + 1 + i,
                    "role": role,
                    "content": text,
                    "created": now,
                }
                for i, (role, text) in enumerate(messages)
            ],
        )
        return True

    def delete(self, sid: str) -> bool:
        def work(c):
            c.execute(self.messages.delete().where(self.messages.c.session_id == sid))
            return c.execute(self.sessions.delete().where(self.sessions.c.id == sid)).rowcount

        return self.db.write(work) > 0
