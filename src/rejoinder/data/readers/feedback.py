"""Preference pairs from what chat users said of a server's replies (`data build feedback`).

The chat page and the session API keep thumbs up and down, better replies users wrote,
and the replies that "regenerate" replaced, in the session database (`serve.store`).
Human-evaluation runs (`rejoinder judge`) keep their judgments there too. This reader
opens that database and yields the pairs they make: `thumbs` and `rewrite` (see
`SessionStore.preference_pairs`) and `judged` (`judging.pairs.judged_pairs`).
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
    from functools import partial

    from rejoinder.judging.pairs import judged_pairs
    from rejoinder.judging.store import JudgeStore
    from rejoinder.serve.store import SessionStore

    database, tables = _feedback_database(db)
    # Each kind of pair, from the store that keeps it (and only where its tables are).
    sources = []
    if SESSIONS in tables:
        sources.append(SessionStore(database).preference_pairs)
    if RUNS in tables:
        sources.append(partial(judged_pairs, JudgeStore(database)))
    try:
        for pairs in sources:
            yield from pairs(report)
    finally:
        database.close()


SESSIONS, RUNS = "rejoinder_sessions", "rejoinder_judge_runs"


def _feedback_database(url: str):
    """The `Database` at `url` and its tables, once it is known to hold chat sessions or
    judging runs (nothing is created in a database that holds neither)."""
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
    if not {SESSIONS, RUNS} & set(tables):
        db.close()
        raise RejoinderError(
            f"--db {url} holds no chat sessions or judging runs; give the database "
            "`rejoinder serve --db` (or `rejoinder judge create --db`) wrote"
        )
    return db, set(tables)


def _exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).expanduser().is_file()
