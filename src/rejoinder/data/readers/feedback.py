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
    from rejoinder.data import chat_feedback as made

    # What each kind makes of the stores' rows: reply feedback, flagged replies, judgments.
    if makes == "unpaired":
        of_replies, of_flags, of_runs = made.reply_rows, made.flagged_rows, None
    else:
        of_replies, of_flags, of_runs = made.reply_pairs, made.flagged_pairs, made.judged_pairs
    database, tables = _feedback_database(db)
    try:
        # Each from the store that keeps it (and only where its tables are).
        if SESSIONS in tables:
            from rejoinder.stores.sessions import SessionStore

            sessions = SessionStore(database)
            for sid, seq, replies, context in sessions.feedback_rows():
                report.count("feedback: bot messages read")
                yield from of_replies(sid, seq, replies, context, report)
            if FLAGS in tables:
                yield from of_flags(sessions.flags.rows(), report)
        if RUNS in tables and of_runs is not None:
            from rejoinder.stores.judgments import JudgeStore

            judges = JudgeStore(database)
            yield from of_runs((judges.export(n) for n in judges.run_names()), report)
    finally:
        database.close()


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
