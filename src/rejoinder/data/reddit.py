"""Reddit threads the DialoGPT way: read Pushshift dumps, build trees, walk root-to-leaf paths.

These are plain functions over plain tuples, shared by the local and the Spark engine;
an engine only decides how comments travel to their thread.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rejoinder.data.io import Lines, has_surrogate_escape, load_json
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
# (id, parent_id, link_id, body, author, subreddit, score, created_utc); score and
# created_utc are None when the dump does not have them.
Comment = tuple[str, str, str, str, str | None, str, int | None, int | None]
# A submission: (link_id, title, author, subreddit)
Submission = tuple[str, str, str | None, str]
SUB = "\x00submission"  # tags submission records; no comment id can start with NUL
PROGRESS_LINES = 8192
"""`read_reddit_file` reports its progress every this many lines."""


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
        obj = _with_surrogates(line, report)
        if obj is None:
            reason = "invalid utf-8" if "utf-8" in str(e).lower() else "malformed json"
            report.bad(reason, line[:120])
            return None
    if not isinstance(obj, dict):
        report.bad("not a json object", line[:120])
        return None
    return obj


def _with_surrogates(line: bytes, report: Report) -> Any:
    """A line orjson refused because it escapes a lone surrogate, parsed and repaired
    (None when it is bad for another reason): the comment is kept, so its replies are
    not orphaned."""
    if not has_surrogate_escape(line):
        return None
    try:
        return load_json(line, report)
    except (ValueError, RecursionError):
        return None


def parse_comment(line: bytes, report: Report) -> Comment | None:
    """One Pushshift comment line as a Comment tuple, or None (counted in `report`)."""
    # The common line takes the quick path; anything unusual takes `_parse` and
    # `_checked_comment`, which say exactly what is wrong with it.
    try:
        obj = _loads(line)
        cid, parent, link, body = obj["id"], obj["parent_id"], obj["link_id"], obj["body"]
        sub, score, created = obj["subreddit"], obj["score"], obj["created_utc"]
    except (*_JSONError, KeyError, TypeError, IndexError):
        obj = _parse(line, report)
        return None if obj is None else _checked_comment(obj, line, report)
    if type(obj) is dict and (
        type(cid) is str
        and type(parent) is str
        and type(link) is str
        and type(body) is str
        and type(sub) is str
        and type(score) is int
        and type(created) is int
        and parent.startswith(("t1_", "t3_"))
        and link.startswith("t3_")
    ):
        author = obj.get("author")
        author = author if type(author) is str and author not in DELETED else None
        return (cid, parent, link, body, author, sub, score, created)
    obj = _parse(line, report)
    return None if obj is None else _checked_comment(obj, line, report)


def _checked_comment(obj: dict, line: bytes, report: Report) -> Comment | None:
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
    # A dump without score or created_utc still makes dialogues; pairs need to know.
    score = created = None
    for name in ("score", "created_utc"):
        value = obj.get(name)
        if value is None:
            report.count(f"comments without {name}")
            continue
        number = _number(value)
        if number is None:
            report.bad(f"wrong type: {name}", line[:120])
            return None
        if name == "score":
            score = number
        else:
            created = number
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


@dataclass
class Thread:
    """One thread's reply tree, built once (`build_thread`): dialogues and pairs both walk it.

    Only kept comments are in the tree (`text`): deleted, removed, low-scored or over-long
    ones break the chain, and their replies are roots, as are orphans (whose parent is not
    in the dump).
    """

    link_id: str
    nodes: dict[str, Comment]
    """Every comment of the thread by id (the first line of a duplicated id)."""
    text: dict[str, str]
    """The cleaned text of each kept comment."""
    children: dict[str, list[str]]
    """The kept replies of each kept comment, oldest first."""
    roots: list[str]
    """Kept comments whose parent is not kept, oldest first."""
    order: list[str]
    """Every comment a root reaches, depth-first, each before its replies, replies oldest
    first (comments caught in a parent cycle are reached by no root)."""
    title: list[tuple[str, str | None]]
    """The title turn (text, author) that top-level paths start with; empty without one."""

    def prefix(self, root: str) -> list[tuple[str, str | None]]:
        """The turns before a root's own: the title for a top-level comment, else none."""
        return self.title if self.nodes[root][1].startswith("t3_") else []

    def path(self, cid: str) -> list[str]:
        """The ids from `cid`'s root down to `cid`."""
        path = [cid]
        while True:
            parent = self.nodes[path[-1]][1]
            if not parent.startswith("t1_") or parent[3:] not in self.text:
                return path[::-1]
            path.append(parent[3:])

    def heights(self) -> dict[str, int]:
        """How many replies deep the thread goes below each reached comment (0 for a leaf)."""
        height: dict[str, int] = {}
        for cid in reversed(self.order):  # every reply comes after its parent in `order`
            height[cid] = 1 + max((height[k] for k in self.children.get(cid, ())), default=-1)
        return height


def _created(c: Comment) -> int:
    return c[7] if c[7] is not None else 0


def build_thread(
    link_id: str,
    comments: Iterable[Comment],
    options: RedditOptions,
    report: Report,
    submission: Submission | None = None,
) -> Thread:
    """One thread's comments as a tree, counting what is left out and why.

    Duplicate ids keep their first occurrence; comments caught in a parent cycle are
    reached by no root and are counted, never looped over.
    """
    nodes: dict[str, Comment] = {}
    for c in comments:
        if c[0] in nodes:
            report.bad("duplicate comment id", c[0])
            continue
        nodes[c[0]] = c

    text: dict[str, str] = {}
    left_out: Counter[str] = Counter()  # counted once a thread: a thread has many comments
    min_score, max_words = options.min_score, options.max_turn_words
    for cid, c in nodes.items():
        body = c[3]
        if "]" in body and body.strip() in DELETED:
            left_out["comments deleted or removed"] += 1
            continue
        if min_score is not None and (c[6] or 0) < min_score:
            left_out["comments below min score"] += 1
            continue
        clean = normalize(body)
        if not clean:
            left_out["comments empty after clean-up"] += 1
            continue
        if max_words is not None and len(clean.split()) > max_words:
            left_out["comments over max turn words"] += 1
            continue
        text[cid] = clean

    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for cid in text:
        parent = nodes[cid][1]
        pid = parent[3:]
        if pid in text and parent.startswith("t1_"):
            if pid in children:
                children[pid].append(cid)
            else:
                children[pid] = [cid]
        else:
            if parent.startswith("t1_") and pid not in nodes:
                left_out["orphan comments"] += 1
            roots.append(cid)
    report.counts.update(left_out)

    def by_time(ids: list[str]) -> list[str]:
        if len(ids) < 2:
            return ids
        return sorted(ids, key=lambda i: (_created(nodes[i]), i))

    for kids in children.values():
        if len(kids) > 1:
            kids[:] = by_time(kids)
    roots = by_time(roots)
    # Each kept comment is in one list, its parent's children or the roots, so the walk
    # meets it once at most; one caught in a parent cycle is reached by no root.
    order: list[str] = []
    stack = roots[::-1]
    while stack:
        cid = stack.pop()
        order.append(cid)
        kids = children.get(cid)
        if kids:
            stack.extend(reversed(kids))
    for _ in range(len(text) - len(order)):
        report.bad("parent cycle")

    title: list[tuple[str, str | None]] = []
    if options.title and submission is not None and submission[1].strip():
        title = [(normalize(submission[1]), submission[2])]
    return Thread(link_id, nodes, text, children, roots, order, title)


def tree_dialogues(thread: Thread, options: RedditOptions, report: Report) -> list[RawDialogue]:
    """Every root-to-leaf path of a thread as a dialogue (every path, with --all-paths).

    A path stops at `max_depth` turns: its last comment then ends a dialogue.
    """
    out: list[RawDialogue] = []
    nodes, text, children = thread.nodes, thread.text, thread.children
    max_depth, min_depth, leaves_only = options.max_depth, options.min_depth, options.leaves_only
    # The turns of the path to each comment: its parent's and one, or a root's own (and
    # the title's); `order` puts every reply after its parent.
    turns_to: dict[str, int] = {}
    short = 0
    for cid in thread.order:
        parent = nodes[cid][1]
        above = turns_to.get(parent[3:]) if parent.startswith("t1_") else None
        if above is None:  # a root
            above = len(thread.prefix(cid))
        turns = turns_to[cid] = above + 1
        if max_depth is not None and turns > max_depth:
            continue
        at_limit = max_depth is not None and turns >= max_depth
        is_leaf = not children.get(cid) or at_limit
        if (is_leaf or not leaves_only) and turns >= min_depth:
            path = thread.path(cid)
            prefix = thread.prefix(path[0])
            out.append(
                RawDialogue(
                    id=f"reddit-{cid}",
                    source="reddit",
                    group=thread.link_id,
                    texts=[t for t, _ in prefix] + [text[i] for i in path],
                    speakers=[s for _, s in prefix] + [nodes[i][4] for i in path],
                    subreddit=nodes[cid][5],
                )
            )
        elif is_leaf:
            short += 1
    if short:
        report.count("paths shorter than min depth", short)
    return out


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
    is not in the dump). See `build_thread` and `tree_dialogues`.
    """
    thread = build_thread(link_id, comments, options, report, submission)
    return tree_dialogues(thread, options, report), list(thread.text.values())


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


def read_reddit_file(
    path: str,
    kind: str,
    report: Report,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[str, tuple]]:
    """(link_id, record) for each readable line of one dump; kind is "comments" or "submissions".

    A submission record is (SUB, link_id, title, author, subreddit); a comment is a
    Comment tuple. Both engines read through this (the local one a block of lines at a
    time: `parse_lines`). `on_progress(lines, position)` hears every few thousand lines
    how many were read and how many bytes of the file.
    """
    lines = Lines(path, report)

    def shown() -> Iterator[bytes]:
        for n, line in enumerate(lines, start=1):
            if on_progress is not None and n % PROGRESS_LINES == 0:
                on_progress(n, lines.position())
            yield line

    return parse_lines(shown(), kind, report)


def parse_lines(lines: Iterable[bytes], kind: str, report: Report) -> Iterator[tuple[str, tuple]]:
    """(link_id, record) for each readable line of a dump's `lines`, as `read_reddit_file`
    yields them; blank lines are skipped, bad ones counted."""
    subs = kind == "submissions"
    parse = parse_submission if subs else parse_comment
    read = parsed = 0
    try:
        for line in lines:
            if line and not line.isspace():
                read += 1
                r = parse(line, report)
                if r is not None:
                    parsed += 1
                    yield (r[0], (SUB, *r)) if subs else (r[2], r)
    finally:  # counted once, however far the caller read; a count is never 0
        counts = {"comment lines read": read, "comments parsed": parsed}
        counts = {"submissions read": parsed} if subs else counts
        report.counts.update({name: n for name, n in counts.items() if n})


def link_of(record: tuple) -> str:
    """The thread (link_id) of a record that `read_reddit_file` yielded."""
    return record[1] if record[0] == SUB else record[2]
