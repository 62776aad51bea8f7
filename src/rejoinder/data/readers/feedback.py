"""Preference pairs from what chat users said of a server's replies (`data build feedback`).

The chat page and the session API keep thumbs up and down, better replies users wrote,
and the replies that "regenerate" replaced, in the session database
(`stores.sessions`). Human-evaluation runs (`rejoinder judge`) keep their judgments
there too (`stores.judgments`). This reader opens that database and pairs the rows the
stores export: `thumbs` and `rewrite` (`data.chat_feedback.reply_pairs`), `flagged`
(replies the safety policy stopped, `chat_feedback.flagged_pairs`) and `judged`
(`chat_feedback.judged_pairs`). With `--kind unpaired` it makes unpaired rows for KTO
instead (`chat_feedback.reply_rows`, `flagged_rows`; judgments compare two replies and
stay pairs).
"""

from __future__ import annotations

from collections.abc import Iterator

from rejoinder.data.pairs import RawPair
from rejoinder.data.report import Report
from rejoinder.data.unpaired import RawUnpaired
from rejoinder.errors import RejoinderError

FEEDBACK_KINDS = ("pairs", "unpaired")
"""What `data build feedback --kind` makes: pairs (for DPO and rankers, the default) or
unpaired rows (for KTO)."""


def read_feedback(
    db: str, makes: str = "pairs", *, report: Report
) -> Iterator[RawPair] | Iterator[RawUnpaired]:
    """Every preference pair the feedback in the session database `db` makes, or with
    `makes="unpaired"` every unpaired row (KTO's data).

    `db` is a URL as `rejoinder serve --db` takes it (sqlite:///FILE or
    postgresql://USER@HOST/DB). A database that cannot be opened, or holds no chat
    sessions, is a `RejoinderError` naming --db; feedback that makes no pair is counted
    in `report.not_made` under its kind and reason.
    """
    if makes not in FEEDBACK_KINDS:
        raise RejoinderError(f"--kind {makes}: choose {' or '.join(FEEDBACK_KINDS)}")
    database, tables = _feedback_database(db)
    try:
        if makes == "unpaired":
            yield from _rows(database, tables, report)
        else:
            yield from _pairs(database, tables, report)
    finally:
        database.close()


def _rows(database, tables: set[str], report: Report) -> Iterator[RawUnpaired]:
    from rejoinder.data.chat_feedback import flagged_rows, reply_rows
    from rejoinder.stores.sessions import SessionStore

    if SESSIONS in tables:
        sessions = SessionStore(database)
        for sid, seq, replies, context in sessions.feedback_rows():
            report.count("feedback: bot messages read")
            yield from reply_rows(sid, seq, replies, context, report)
        if FLAGS in tables:
            yield from flagged_rows(sessions.flags.rows(), report)


def _pairs(database, tables: set[str], report: Report) -> Iterator[RawPair]:
    from rejoinder.data.chat_feedback import flagged_pairs, judged_pairs, reply_pairs
    from rejoinder.stores.judgments import JudgeStore
    from rejoinder.stores.sessions import SessionStore

    # Each kind of pair, from the store that keeps it (and only where its tables are).
    if SESSIONS in tables:
        sessions = SessionStore(database)
        for sid, seq, replies, context in sessions.feedback_rows():
            report.count("feedback: bot messages read")
            yield from reply_pairs(sid, seq, replies, context, report)
        if FLAGS in tables:
            yield from flagged_pairs(sessions.flags.rows(), report)
    if RUNS in tables:
        judges = JudgeStore(database)
        yield from judged_pairs((judges.export(n) for n in judges.run_names()), report)


SESSIONS, RUNS, FLAGS = "rejoinder_sessions", "rejoinder_judge_runs", "rejoinder_flags"


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
