"""Which A/B arm each session was given (`rejoinder serve --arm`), and the rows an A/B
report reads.

One row per session in `rejoinder_session_arms`, a table of its own, so databases made
before arms existed keep working as they are and the sessions' tables never change. A
session without a row was made by a server with one model. The arm is never shown to
a client: `SessionStore.get` does not read this table.
"""

from __future__ import annotations

import time
from typing import Any


class ArmStore:
    """The arm of each session, in a `Database` that `SessionStore` shares."""

    def __init__(self, db):
        import sqlalchemy as sa

        self.db = db
        self.table = sa.Table(
            "rejoinder_session_arms",
            db.meta,
            sa.Column(
                "session_id",
                sa.String(64),
                sa.ForeignKey("rejoinder_sessions.id", ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("arm", sa.String(128), nullable=False),
            sa.Column("created", sa.Float, nullable=False),
        )

    def add(self, c, sid: str, arm: str) -> None:
        """Gives session `sid` its arm, inside the caller's transaction."""
        c.execute(self.table.insert().values(session_id=sid, arm=arm, created=time.time()))

    def of(self, sid: str) -> str | None:
        """The session's arm, or None (a session made by a server with one model)."""
        import sqlalchemy as sa

        t = self.table.c
        with self.db.read() as c:
            return c.execute(sa.select(t.arm).where(t.session_id == sid)).scalar()

    def keep(self, sid: str, arm: str) -> str | None:
        """The session's arm: its own if it has one, else `arm`, stored now (a session made
        before the server had arms joins one and stays in it); None: no such session."""
        import sqlalchemy as sa

        t, sessions = self.table.c, self.db.meta.tables["rejoinder_sessions"]

        def work(c):
            had = c.execute(sa.select(t.arm).where(t.session_id == sid)).scalar()
            if had is not None:
                return had
            if c.execute(sa.select(sessions.c.id).where(sessions.c.id == sid)).first() is None:
                return None
            self.add(c, sid, arm)
            return arm

        return self.db.write(work)

    def sessions(self, arm: str) -> list[str]:
        """The ids of the sessions given `arm`, oldest first."""
        import sqlalchemy as sa

        t = self.table.c
        with self.db.read() as c:
            rows = c.execute(sa.select(t.session_id).where(t.arm == arm).order_by(t.created))
            return [sid for (sid,) in rows]

    def names(self) -> list[str]:
        """Every arm some session was given, by name."""
        import sqlalchemy as sa

        with self.db.read() as c:
            return sorted(c.execute(sa.select(self.table.c.arm).distinct()).scalars())

    def delete_session(self, c, sid: str) -> None:
        c.execute(self.table.delete().where(self.table.c.session_id == sid))


def ab_rows(store, since: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """What an A/B report counts, as plain rows (`evaluation.ab.summarize` reads them),
    for the sessions that have an arm, made at or after `since` (a Unix time):

    - "sessions": {"session", "arm", "created", "turns" (the user's messages),
      "replies" (the bot's: assistant messages)};
    - "replies": one per assistant message, {"session", "arm", "seq", "rating" ("up",
      "down" or None: the current reply's, the one the user saw last), "regenerations"
      (replies that "regenerate" replaced at it), "rewritten" (whether the user wrote a
      better reply for any of them)}.

    `store` is a `SessionStore`.
    """
    import sqlalchemy as sa

    a, m, r = store.arms.table.c, store.messages.c, store.replies.c
    where = [a.created >= since] if since is not None else []
    with store.db.read() as c:
        kept_arms = c.execute(
            sa.select(a.session_id, a.arm, a.created).where(*where).order_by(a.created)
        ).all()
        joined = [a.session_id == m.session_id, *where]
        said = c.execute(
            sa.select(m.session_id, m.seq, m.role).where(*joined).order_by(m.session_id, m.seq)
        ).all()
        joined = [a.session_id == r.session_id, *where]
        variants = c.execute(
            sa.select(r.session_id, r.seq, r.variant, r.rating, r.better)
            .where(*joined)
            .order_by(r.session_id, r.seq, r.variant)
        ).all()
    by_reply: dict[tuple[str, int], list] = {}
    for v in variants:
        by_reply.setdefault((v.session_id, v.seq), []).append(v)
    sessions = {
        sid: {"session": sid, "arm": arm, "created": t, "turns": 0, "replies": 0}
        for sid, arm, t in kept_arms
    }
    replies = []
    for row in said:
        session = sessions[row.session_id]
        if row.role == "user":
            session["turns"] += 1
        elif row.role == "assistant":
            session["replies"] += 1
            kept = by_reply.get((row.session_id, row.seq), [])
            rating = kept[-1].rating if kept else None
            replies.append(
                {
                    "session": row.session_id,
                    "arm": session["arm"],
                    "seq": row.seq,
                    "rating": {1: "up", -1: "down"}.get(rating),
                    "regenerations": max(0, len(kept) - 1),
                    "rewritten": any(v.better for v in kept),
                }
            )
    return {"sessions": list(sessions.values()), "replies": replies}
