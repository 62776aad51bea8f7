"""What the safety policy flagged, kept: users' messages and the bot's replies it stopped.

One row per flagged text (`rejoinder_flags`): the session and the message it belongs to
(None for a request without a session), whose text it was ("user" or "reply"), the text,
the layer and the label and score that flagged it, the context it was said in, and the
reply that was sent instead (and its finish reason: "content_filter" for a canned one).
Nothing flagged is lost: a reply the client never saw is here, which is what makes it
negative data (`data.chat_feedback.flagged_pairs`). A new table, so databases from
before it need nothing done to them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rejoinder.db import Database

FIELDS = ("who", "text", "layer", "label", "score")
"""A flag's own fields (`rejoinder.safety.Flag`), as stored."""


class FlagStore:
    """Flagged texts in a `Database` shared with the session store."""

    def __init__(self, db: Database):
        import sqlalchemy as sa

        self.db = db
        self.table = sa.Table(
            "rejoinder_flags",
            db.meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("session_id", sa.String(64), nullable=True, index=True),
            sa.Column("seq", sa.Integer, nullable=True),
            sa.Column("who", sa.String(16), nullable=False),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("layer", sa.String(32), nullable=False),
            sa.Column("label", sa.Text, nullable=False),
            sa.Column("score", sa.Float, nullable=False),
            sa.Column("context", sa.Text, nullable=False),
            sa.Column("answer", sa.Text, nullable=False),
            sa.Column("answer_finish", sa.String(32), nullable=False),
            sa.Column("created", sa.Float, nullable=False),
        )

    def add(
        self,
        flags: Sequence[Any],
        context: Sequence[str],
        answer: str,
        answer_finish: str,
        sid: str | None = None,
        seqs: dict[str, int] | None = None,
    ) -> int:
        """Stores flags (objects with FIELDS, or mappings), raised while answering
        `context` with `answer`; `seqs` maps "user" and "reply" to the session's message
        seqs they belong to. Returns how many were stored."""
        if not flags:
            return 0
        now, said = time.time(), json.dumps(list(context), ensure_ascii=False)
        rows = []
        for flag in flags:
            values = flag if isinstance(flag, dict) else {k: getattr(flag, k) for k in FIELDS}
            rows.append(
                {
                    **{k: values[k] for k in FIELDS},
                    "session_id": sid,
                    "seq": (seqs or {}).get(values["who"]),
                    "context": said,
                    "answer": answer,
                    "answer_finish": answer_finish,
                    "created": now,
                }
            )
        self.db.write(lambda c: c.execute(self.table.insert(), rows))
        return len(rows)

    def of_session(self, c, sid: str) -> list[dict[str, Any]]:
        """A session's flags, in the order they were stored (on connection `c`)."""
        import sqlalchemy as sa

        t = self.table.c
        query = sa.select(t.seq, *(t[k] for k in FIELDS)).where(t.session_id == sid)
        return [dict(r._mapping) for r in c.execute(query.order_by(t.id))]

    def delete_session(self, c, sid: str) -> None:
        c.execute(self.table.delete().where(self.table.c.session_id == sid))

    def counts(self) -> dict[str, dict[str, int]]:
        """How many texts were flagged, by whose ("user", "reply") and by layer, and how
        many answers were canned replies."""
        import sqlalchemy as sa

        t = self.table.c
        out: dict[str, dict[str, int]] = {"user": {}, "reply": {}}
        with self.db.read() as c:
            rows = c.execute(sa.select(t.who, t.layer, sa.func.count()).group_by(t.who, t.layer))
            for who, layer, n in rows:
                out.setdefault(who, {})[layer] = n
        return out

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every flag as a plain row (the context decoded), oldest first: what
        `data build feedback` turns into negative data."""
        import sqlalchemy as sa

        t = self.table.c
        with self.db.read() as c:
            for r in c.execute(sa.select(self.table).order_by(t.id)):
                row = dict(r._mapping)
                row["context"] = json.loads(row["context"])
                yield row
