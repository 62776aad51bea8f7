"""Chat sessions in a database: a SQLite file by default, PostgreSQL by URL (SQLAlchemy).

A session is a row in `sessions`; its messages are rows in `messages`, numbered from 0
in the order they were said. The store keeps every message; what the model sees is
cut by the model's format. A user's message and the reply to it are written in one
transaction, so a failed reply leaves the history as it was.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from rejoinder.errors import RejoinderError

DEFAULT_DB = "sqlite:///rejoinder-sessions.db"


class SessionStore:
    """Sessions and their messages, through one SQLAlchemy engine."""

    def __init__(self, url: str = DEFAULT_DB):
        import sqlalchemy as sa

        self.url = url
        if url.startswith("postgresql://"):  # psycopg 3 is the driver we install
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        try:
            self.engine = sa.create_engine(url, pool_pre_ping=True, future=True)
        except Exception as e:  # an unknown dialect, a missing driver
            raise RejoinderError(
                f"--db {self.url}: {e}. Use sqlite:///FILE or postgresql://USER@HOST/DB"
            ) from None
        # SQLite has one writer at a time, and a transaction that read before it wrote
        # fails at once when another wrote in between: this process's writes take turns.
        self._writing = threading.Lock() if url.startswith("sqlite") else contextlib.nullcontext()
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        meta = sa.MetaData()
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
        try:
            meta.create_all(self.engine)
        except Exception as e:
            raise RejoinderError(f"cannot open the session database {self.url}: {e}") from None

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> bool:
        import sqlalchemy as sa

        try:
            with self.engine.connect() as c:
                c.execute(sa.text("SELECT 1"))
            return True
        except Exception:
            return False

    def create(self, options: dict[str, Any] | None = None) -> str:
        sid = uuid.uuid4().hex
        with self._writing, self.engine.begin() as c:
            c.execute(
                self.sessions.insert().values(
                    id=sid, created=time.time(), options=json.dumps(options or {})
                )
            )
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
        import sqlalchemy as sa

        for attempt in range(8):
            try:
                with self._writing:
                    return self._append(sid, messages)
            except (sa.exc.IntegrityError, sa.exc.OperationalError):
                if attempt == 7:
                    raise
                time.sleep(0.01 * 2**attempt)
        return False

    def _append(self, sid: str, messages: tuple[tuple[str, str], ...]) -> bool:
        import sqlalchemy as sa

        with self.engine.begin() as c:
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
        with self._writing, self.engine.begin() as c:
            c.execute(self.messages.delete().where(self.messages.c.session_id == sid))
            gone = c.execute(self.sessions.delete().where(self.sessions.c.id == sid))
        return gone.rowcount > 0


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
