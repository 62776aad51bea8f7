"""The one database: chat sessions, feedback and human-evaluation runs share it.

`Database(url)` opens a SQLite file or a PostgreSQL server through SQLAlchemy and
gives the three things every store needs: the engine, the tables (created if
missing), and `write()`, a transaction that takes turns with this process's other
writers on SQLite and is tried again when two servers collide on a key.

Stores (`stores.sessions.SessionStore`, `stores.judgments.JudgeStore`) define their own
tables on `Database.meta`; nothing here knows what a session or a judgment is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rejoinder.errors import RejoinderError

DEFAULT_DB = "sqlite:///rejoinder-sessions.db"

T = TypeVar("T")


class Database:
    """One SQLAlchemy engine, its tables, and writes that retry on a collision."""

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
        self.sqlite = self.engine.dialect.name == "sqlite"
        self._writing = threading.Lock() if self.sqlite else contextlib.nullcontext()
        if self.sqlite:
            database = self.engine.url.database
            if database and database != ":memory:":
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self.engine, "begin", _sqlite_begin)
        self.meta = sa.MetaData()

    def create_tables(self) -> None:
        """Creates the tables defined on `meta` that the database does not have yet."""
        try:
            self.meta.create_all(self.engine)
        except Exception as e:
            raise RejoinderError(f"cannot open the database {self.url}: {e}") from None

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

    def read(self):
        """A connection for reads (`with db.read() as c:`)."""
        return self.engine.connect()

    def write(self, work: Callable[[Any], T], attempts: int = 8) -> T:
        """`work(connection)` in one transaction, committed when it returns.

        Two servers writing at once can collide (the same new key, SQLite's busy
        database): the loser's transaction rolls back and runs again, so `work` must
        read what it depends on inside the transaction. Errors that `work` raises on
        purpose (anything but a collision) end the transaction and propagate.
        """
        import sqlalchemy as sa

        for attempt in range(attempts):
            try:
                with self._writing, self.engine.connect() as c:
                    c.info["immediate"] = self.sqlite
                    with c.begin():
                        return work(c)
            except (sa.exc.IntegrityError, sa.exc.OperationalError):
                if attempt == attempts - 1:
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Python's sqlite3 would begin a transaction only at the first write, so what a
    # transaction read first could be stale by then; transactions begin where SQLAlchemy
    # says instead (_sqlite_begin).
    connection.isolation_level = None


def _sqlite_begin(conn) -> None:
    """Writes take SQLite's write lock when they begin (other processes' writers wait
    their turn, up to the busy timeout), so that what they read stays true until they
    commit; reads begin a plain snapshot."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.pop("immediate", False) else "BEGIN")
