"""Preference pairs from what chat users said of a server's replies (`data build feedback`).

The chat page and the session API keep thumbs up and down, better replies users wrote,
and the replies that "regenerate" replaced, in the session database (`serve.store`).
This reader opens that database and yields the pairs they make: `thumbs` and `rewrite`
(see `SessionStore.preference_pairs`).
"""

from __future__ import annotations

from collections.abc import Iterator

from rejoinder.data.pairs import RawPair
from rejoinder.data.report import Report
from rejoinder.errors import RejoinderError


def read_feedback(db: str, *, report: Report) -> Iterator[RawPair]:
    """Every preference pair the feedback in the session database `db` makes.

    `db` is a URL as `rejoinder serve --db` takes it (sqlite:///FILE or
    postgresql://USER@HOST/DB). A database that cannot be opened, or holds no chat
    sessions, is a `RejoinderError` naming --db; feedback that makes no pair is counted
    in `report.not_made` under its kind and reason.
    """
    from rejoinder.serve.store import SessionStore

    store = SessionStore(_session_database(db))
    try:
        # Each kind of pair, from where it is kept; turn-mode judgments (kind `judged`)
        # join this list.
        sources = [store.preference_pairs]
        for pairs in sources:
            yield from pairs(report)
    finally:
        store.close()


def _session_database(url: str):
    """The `Database` at `url`, once it is known to hold chat sessions (nothing is
    created in a database that does not)."""
    import sqlalchemy as sa

    from rejoinder.db import Database

    if url.startswith("sqlite:"):
        path = sa.engine.make_url(url).database
        if not path or path == ":memory:" or not _exists(path):
            raise RejoinderError(f"--db {url}: no such file; give the database the server used")
    db = Database(url)
    try:
        tables = sa.inspect(db.engine).get_table_names()
    except Exception as e:
        db.close()
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RejoinderError(f"--db {url}: cannot read it ({reason})") from None
    if "rejoinder_sessions" not in tables:
        db.close()
        raise RejoinderError(
            f"--db {url} holds no chat sessions (no table rejoinder_sessions); give the "
            "database `rejoinder serve --db` wrote"
        )
    return db


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).expanduser().is_file()
