"""Preference pairs from what people said of replies in a session database: chat users'
thumbs, better replies and regenerated replies (`reply_pairs`), replies the safety
policy stopped (`flagged_pairs`), and turn-mode human judgments (`judged_pairs`); or
the same feedback as unpaired rows, for KTO (`reply_rows`, `flagged_rows`). They read
the plain rows the stores export (`SessionStore.feedback_rows`, `FlagStore.rows`,
`JudgeStore.export`), so this module needs no store."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from rejoinder.data.pairs import RawPair
from rejoinder.data.report import Report
from rejoinder.data.unpaired import RawUnpaired


def reply_pairs(sid: str, seq: int, replies: list, context: list[str], report: Report):
    """The pairs of one assistant message's replies (variants, the last the current one),
    as `SessionStore.feedback_rows` gives them:

    - `thumbs`: at one message (so one context), each liked reply against each reply
      disliked, or replaced by regenerating and not liked;
    - `rewrite`: the better reply a user wrote against the bot's reply it was written
      for (unless they are the same text).

    Pairs of one session share its id as their group, so they land in one split. A reply
    with feedback that makes no pair is counted in `report.not_made`, with why."""

    def pair(kind, chosen, rejected, suffix, chosen_feedback=None, rejected_feedback=None):
        return RawPair(
            id=f"{sid}-{seq}-{suffix}-{kind}", kind=kind, group=sid, context=context,
            chosen=chosen.strip(), rejected=rejected.strip(), chosen_feedback=chosen_feedback,
            rejected_feedback=rejected_feedback, source="feedback", subreddit=None,
        )  # fmt: skip

    current = replies[-1].variant
    liked = [v for v in replies if v.rating == 1]
    others = [v for v in replies if v.rating == -1 or (v.variant < current and v.rating != 1)]
    if liked and others:
        for good in liked:
            for bad in others:
                if good.content.strip() == bad.content.strip():
                    report.not_made("thumbs", "the liked and the other reply are the same text")
                    continue
                rejected = None if bad.rating is None else float(bad.rating)
                suffix = f"{good.variant}-{bad.variant}"
                yield pair("thumbs", good.content, bad.content, suffix, 1.0, rejected)
    elif liked:
        report.not_made("thumbs", "a liked reply with nothing disliked or replaced beside it")
    elif others:
        report.not_made("thumbs", "disliked or replaced replies with no liked one beside them")
    for v in replies:
        if v.better is None:
            continue
        if v.better.strip() == v.content.strip():
            report.not_made("rewrite", "the better reply is the bot's own")
            continue
        yield pair("rewrite", v.better, v.content, str(v.variant))


def flagged_pairs(rows, report: Report) -> Iterator[RawPair]:
    """Replies the safety policy stopped, as pairs (kind `flagged`), from the rows
    `FlagStore.rows` gives: the reply sent instead against the flagged one, in the same
    context. A canned reply (finish "content_filter") makes no pair (a model tuned
    towards one fixed sentence learns nothing good), nor does a flagged user message;
    both are counted in `report.not_made`."""
    for row, group, row_id in _flagged_replies(rows, report):
        if row["answer_finish"] == "content_filter":
            report.not_made("flagged", "the reply sent instead was a canned one")
            continue
        if row["answer"].strip() == row["text"].strip():
            report.not_made("flagged", "the flagged and the sent reply are the same text")
            continue
        yield RawPair(
            id=row_id, kind="flagged", group=group,
            context=[t for t in row["context"] if t.strip()], chosen=row["answer"].strip(),
            rejected=row["text"].strip(), chosen_feedback=None,
            rejected_feedback=-float(row["score"]), source="feedback", subreddit=None,
        )  # fmt: skip


def judged_pairs(runs, report) -> Iterator[RawPair]:
    """Turn-mode judgments as preference pairs (kind `judged`), from runs as
    `JudgeStore.export` gives them ((run, items, judgments) each): per judged item, the
    reply that won more of the kept judges' decisive votes (every criterion counted)
    against the other. Items whose votes tie, or are all ties, give none and are counted
    under the report's skipped reasons; items nobody judged are not feedback and are
    passed."""
    for run, items, judgments in runs:
        name = run["name"]
        if run["mode"] != "turn":
            continue
        votes: dict[str, Counter] = {}
        for j in judgments:
            counter = votes.setdefault(j["item"], Counter())
            counter.update(w for w in j["choices"].values() if w != "tie")
        for item in items:
            if item["id"] not in votes:
                continue
            counter = votes[item["id"]]
            if not counter:
                report.bad("judged: only ties", f"{name}/{item['id']}")
                continue
            (best, most), *rest = counter.most_common() + [("", 0)]
            second = next((n for s, n in rest if s), 0)
            if most == second:
                report.bad("judged: votes tied", f"{name}/{item['id']}")
                continue
            other = next(s for s in item["pair"] if s != best)
            chosen, rejected = item["replies"][best], item["replies"][other]
            if chosen.strip() == rejected.strip():
                report.bad("judged: identical replies", f"{name}/{item['id']}")
                continue
            yield RawPair(
                id=f"{name}-{item['id']}",
                kind="judged",
                group=f"{name}-{item['id']}",
                context=list(item["context"]),
                chosen=chosen,
                rejected=rejected,
                chosen_feedback=float(most),
                rejected_feedback=float(second),
                source="judging",
            )


def reply_rows(sid: str, seq: int, replies: list, context: list[str], report: Report):
    """The unpaired rows of one assistant message's replies (as `reply_pairs` takes
    them), for KTO: each rated reply (`thumbs`: up desirable, down undesirable), each
    reply replaced by regenerating and not liked (`regenerated`, undesirable) and each
    better reply a user wrote (`rewrite`, desirable; none when it is the bot's own,
    counted in `report.not_made`). Rows of one session share its id as their group."""

    def row(kind, text, desirable, suffix):
        return RawUnpaired(
            id=f"{sid}-{seq}-{suffix}-{kind}", kind=kind, group=sid, context=context,
            reply=text.strip(), desirable=desirable, source="feedback",
        )  # fmt: skip

    current = replies[-1].variant
    for v in replies:
        if v.rating in (1, -1):
            yield row("thumbs", v.content, v.rating == 1, str(v.variant))
        elif v.variant < current:
            yield row("regenerated", v.content, False, str(v.variant))
        if v.better is None:
            continue
        if v.better.strip() == v.content.strip():
            report.not_made("rewrite", "the better reply is the bot's own")
            continue
        yield row("rewrite", v.better, True, f"{v.variant}b")


def flagged_rows(rows, report: Report) -> Iterator[RawUnpaired]:
    """Replies the safety policy flagged, as undesirable rows (kind `flagged`), from the
    rows `FlagStore.rows` gives; a flagged user message is no reply, and is counted in
    `report.not_made`."""
    for row, group, row_id in _flagged_replies(rows, report):
        yield RawUnpaired(
            id=row_id, kind="flagged", group=group,
            context=[t for t in row["context"] if t.strip()], reply=row["text"].strip(),
            desirable=False, source="feedback",
        )  # fmt: skip


def _flagged_replies(rows, report: Report) -> Iterator[tuple[dict, str, str]]:
    """The flagged replies of `FlagStore.rows` with their group (the session, else the
    flag) and row id; a flagged user message is no reply, counted in `report.not_made`."""
    for row in rows:
        if row["who"] != "reply":
            report.not_made("flagged", "a user's message, not a reply")
            continue
        group = row["session_id"] or f"flag-{row['id']}"
        yield row, group, f"{group}-{row['seq']}-flag{row['id']}"
