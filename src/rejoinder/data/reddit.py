"""Reddit threads the DialoGPT way: read Pushshift dumps, build trees, walk root-to-leaf paths.

These are plain functions over plain tuples, shared by the local and the Spark engine;
an engine only decides how comments travel to their thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.data.io import open_lines
from rejoinder.data.records import RawDialogue
from rejoinder.data.report import Report
from rejoinder.data.text import normalize
from rejoinder.errors import RejoinderError
from rejoinder.options import option

try:
    import orjson

    _loads = orjson.loads
    _JSONError: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is a dependency of the data extra
    import json

    def _loads(b):
        return json.loads(b.decode("utf-8"))

    _JSONError = (ValueError, UnicodeDecodeError)

DELETED = frozenset({"[deleted]", "[removed]"})

# A comment as it travels between stages: a tuple is small and pickles fast.
# (id, parent_id, link_id, body, author, subreddit, score, created_utc)
Comment = tuple[str, str, str, str, str | None, str, int, int]
# A submission: (link_id, title, author, subreddit)
Submission = tuple[str, str, str | None, str]
SUB = "\x00submission"  # tags submission records; no comment id can start with NUL


@dataclass
class RedditOptions:
    """How threads become dialogues (the options of DialoGPT's extractor)."""

    min_depth: int = 2
    """Dialogues need at least this many turns."""
    max_depth: int | None = None
    """Turns deeper than this are not followed: a path stops at this many turns."""
    min_score: int | None = None
    """Comments scored below this break the chain, like deleted ones."""
    leaves_only: bool = option(True, flag="--all-paths")
    """Only root-to-leaf paths become dialogues; --all-paths makes one of the path to every
    comment."""
    max_turn_words: int | None = None
    """Comments longer than this many words break the chain."""
    title: bool = False
    """Put the submission's title first (needs --submissions)."""

    def __post_init__(self):
        if self.min_depth < 1:
            raise RejoinderError("min_depth must be at least 1")
        if self.max_depth is not None and self.max_depth < self.min_depth:
            raise RejoinderError("max_depth must be at least min_depth")


_FIELD_TYPES = {
    "id": str, "parent_id": str, "link_id": str, "body": str, "subreddit": str,
}  # fmt: skip


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value == value:
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None


def _parse(line: bytes, report: Report) -> dict | None:
    try:
        obj = _loads(line)
    except _JSONError as e:
        report.bad("invalid utf-8" if "utf-8" in str(e).lower() else "malformed json", line[:120])
        return None
    if not isinstance(obj, dict):
        report.bad("not a json object", line[:120])
        return None
    return obj


def parse_comment(line: bytes, report: Report) -> Comment | None:
    """One Pushshift comment line as a Comment tuple, or None (counted in `report`)."""
    obj = _parse(line, report)
    if obj is None:
        return None
    for name, kind in _FIELD_TYPES.items():
        value = obj.get(name)
        if value is None:
            report.bad(f"missing field: {name}", line[:120])
            return None
        if not isinstance(value, kind):
            report.bad(f"wrong type: {name}", line[:120])
            return None
    parent, link = obj["parent_id"], obj["link_id"]
    if not parent.startswith(("t1_", "t3_")) or not link.startswith("t3_"):
        report.bad("wrong type: parent_id or link_id", line[:120])
        return None
    score, created = _number(obj.get("score", 0)), _number(obj.get("created_utc", 0))
    if score is None:
        report.bad("wrong type: score", line[:120])
        return None
    if created is None:
        report.bad("wrong type: created_utc", line[:120])
        return None
    author = obj.get("author")
    author = author if isinstance(author, str) and author not in DELETED else None
    return (obj["id"], parent, link, obj["body"], author, obj["subreddit"], score, created)


def parse_submission(line: bytes, report: Report) -> Submission | None:
    """One Pushshift submission line as (link_id, title, author, subreddit), or None."""
    obj = _parse(line, report)
    if obj is None:
        return None
    sid, title = obj.get("id"), obj.get("title")
    if not isinstance(sid, str) or not isinstance(title, str):
        report.bad("submission without id or title", line[:120])
        return None
    author = obj.get("author")
    author = author if isinstance(author, str) and author not in DELETED else None
    return (f"t3_{sid}", title, author, str(obj.get("subreddit") or ""))


def thread_dialogues(
    link_id: str,
    comments: Iterable[Comment],
    options: RedditOptions,
    report: Report,
    submission: Submission | None = None,
) -> tuple[list[RawDialogue], list[str]]:
    """Every root-to-leaf path of one thread as a dialogue, and the texts of its comments.

    Deleted, removed, low-scored or over-long comments break the chain: the path stops
    before them and their replies start paths of their own, as do orphans (whose parent
    is not in the dump). Duplicate ids keep their first occurrence; comments caught in
    a parent cycle are reached by no root and are counted, never looped over.
    """
    nodes: dict[str, Comment] = {}
    for c in comments:
        if c[0] in nodes:
            report.bad("duplicate comment id", c[0])
            continue
        nodes[c[0]] = c

    text: dict[str, str] = {}
    for cid, c in nodes.items():
        body = c[3]
        if body.strip() in DELETED:
            report.count("comments deleted or removed")
            continue
        if options.min_score is not None and c[6] < options.min_score:
            report.count("comments below min score")
            continue
        clean = normalize(body)
        if not clean:
            report.count("comments empty after clean-up")
            continue
        if options.max_turn_words is not None and len(clean.split()) > options.max_turn_words:
            report.count("comments over max turn words")
            continue
        text[cid] = clean

    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for cid in text:
        parent = nodes[cid][1]
        pid = parent[3:]
        if parent.startswith("t1_") and pid in text:
            children.setdefault(pid, []).append(cid)
        else:
            if parent.startswith("t1_") and pid not in nodes:
                report.count("orphan comments")
            roots.append(cid)

    def order(ids: list[str]) -> list[str]:
        return sorted(ids, key=lambda i: (nodes[i][7], i))

    title_turn: list[tuple[str, str | None]] = []
    if options.title and submission is not None and submission[1].strip():
        title_turn = [(normalize(submission[1]), submission[2])]

    out: list[RawDialogue] = []
    seen: set[str] = set()
    for root in order(roots):
        prefix = title_turn if nodes[root][1].startswith("t3_") else []
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = []
        while stack:
            cid, depth = stack.pop()
            if cid in seen:  # only possible through a cycle or a duplicate edge
                continue
            seen.add(cid)
            del path[depth:]
            path.append(cid)
            turns = len(prefix) + len(path)
            kids = [k for k in children.get(cid, ()) if k not in seen]
            at_limit = options.max_depth is not None and turns >= options.max_depth
            is_leaf = not kids or at_limit
            if (is_leaf or not options.leaves_only) and turns >= options.min_depth:
                out.append(
                    RawDialogue(
                        id=f"reddit-{cid}",
                        source="reddit",
                        group=link_id,
                        texts=[t for t, _ in prefix] + [text[i] for i in path],
                        speakers=[s for _, s in prefix] + [nodes[i][4] for i in path],
                        subreddit=nodes[cid][5],
                    )
                )
            elif is_leaf:
                report.count("paths shorter than min depth")
            if not at_limit:
                stack.extend((k, depth + 1) for k in reversed(order(kids)))
    unreached = len(text) - len(seen)
    for _ in range(unreached):
        report.bad("parent cycle")
    return out, [text[i] for i in text]


def check_reddit_source(args: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The comment and submission dumps a reddit source names, each checked to exist."""
    comments = [str(p) for p in args.get("comments") or []]
    submissions = [str(p) for p in args.get("submissions") or []]
    if not comments:
        raise RejoinderError("the reddit source needs --comments FILE (a Pushshift RC_ dump)")
    for p in comments + submissions:
        if not Path(p).is_file():
            raise RejoinderError(f"Reddit dump {p} does not exist")
    return comments, submissions


def read_reddit_file(path: str, kind: str, report: Report) -> Iterator[tuple[str, tuple]]:
    """(link_id, record) for each readable line of one dump; kind is "comments" or "submissions".

    A submission record is (SUB, link_id, title, author, subreddit); a comment is a
    Comment tuple. Both engines read through this.
    """
    for line in open_lines(path, report):
        if not line.strip():
            continue
        if kind == "submissions":
            s = parse_submission(line, report)
            if s is not None:
                report.count("submissions read")
                yield s[0], (SUB, *s)
        else:
            report.count("comment lines read")
            c = parse_comment(line, report)
            if c is not None:
                yield c[2], c


def link_of(record: tuple) -> str:
    """The thread (link_id) of a record that `read_reddit_file` yielded."""
    return record[1] if record[0] == SUB else record[2]
