"""A synthetic Pushshift Reddit dump (RC_*.zst, optionally RS_*) for tests and benchmarks.

`synth_reddit(n, "RC_synth.zst")` writes `n` comment lines shaped like a real monthly dump:

- heavy-tailed thread sizes (a Pareto draw: most threads have one or two comments, a few
  have thousands, capped at `threads.THREAD_SIZE_CAP`), and reply trees that attach preferentially
  to recent and to top-level comments (depths mostly 1-6, a tail past 20);
- comments ordered by `created_utc` across the whole file, threads interleaved; a reply is
  always created at least one second after its parent, so parents come first;
- ids in base 36 that grow with time, as Reddit's do.

Injected phenomena, each at a documented rate (the `RATE_*` constants; a rate is a
fraction of all comments unless it says threads). Bodies are one of five kinds,
drawn per comment:

- `[deleted]` body (author `[deleted]`): `RATE_DELETED`; `[removed]` body (author
  `[deleted]`): `RATE_REMOVED`; together about 5%;
- bland replies, verbatim from `BLAND_REPLIES`: `RATE_BLAND`;
- non-English (Spanish, German, French, Russian, Chinese, Japanese) with none of the 100
  most frequent English words: `RATE_NON_ENGLISH`;
- ordinary English otherwise: sentence templates filled from `wordfreq`'s top 5,000 English
  words (minus the 20 most frequent, and minus any word with a letter run in
  `better_profanity`'s list, such as "god's"), 1 to 60 words (lognormal, median 10).

Ordinary bodies then get decorations, each drawn independently and scaled so that its
rate over all comments is the constant's:

- a bare URL (http://, https:// or www.): `RATE_URL`;
- square brackets: `RATE_BRACKETS`, of which `MARKDOWN_LINK_SHARE` are markdown links
  `[text](https://...)` (so they contain a URL too) and the rest plain `[edit: typo]`;
- one word repeated three to six times in a row ("no no no"): `RATE_REPEAT`;
- one word from `better_profanity`'s `profanity_wordlist.txt`: `RATE_OFFENSIVE` (no other
  generated text contains any word of that list);
- HTML entities (&amp; &gt; &lt;): `RATE_HTML`; markdown formatting (bold, italics,
  strike-through, lists, paragraphs, code): `RATE_MARKDOWN`;
- a very long body (300 to 800 words, in paragraphs): `RATE_LONG`.

And per comment, whatever its body: an intact body whose author is `[deleted]`
(`RATE_DELETED_AUTHOR`); a score of zero or below (`RATE_LOW_SCORE`, otherwise 1 and up
with a heavy tail); an orphan whose `parent_id` names a `t1_` comment that is in no line
of the dump (`RATE_ORPHAN`); and duplicate lines, the same comment (same id, another
score) written twice in a row (`RATE_DUPLICATE` of the lines). Threads in
`BLOCKED_SUBREDDITS` make up `RATE_BLOCKED_THREADS` of threads; the others draw from
`SUBREDDITS` with Zipf-like weights.

Scores, direct replies and the depth of the thread below depend on what an ordinary
comment says (informative clauses, questions, challenges): see `testing.feedback`.

The same seed gives byte-identical files (numpy's `default_rng`; no `hash()`, no set
order), whether or not submissions are written. Everything is generated in chunks of
`CHUNK` comments after a compact numpy skeleton of the threads, so memory stays small.

The text of the bodies, and the rates of their kinds and decorations, are made in
`rejoinder.testing.bodies`; this module re-exports those rates with its own.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from pathlib import Path

import numpy as np

from rejoinder.errors import RejoinderError
from rejoinder.testing.bodies import (
    BLAND,
    BLAND_REPLIES,
    CHUNK,
    DECORATIONS,
    DELETED,
    ENGLISH,
    FOREIGN,
    MARKDOWN_LINK_SHARE,
    RATE_BLAND,
    RATE_BRACKETS,
    RATE_DELETED,
    RATE_HTML,
    RATE_LONG,
    RATE_LOW_SCORE,
    RATE_MARKDOWN,
    RATE_NON_ENGLISH,
    RATE_OFFENSIVE,
    RATE_REMOVED,
    RATE_REPEAT,
    RATE_URL,
    REMOVED,
    Text,
    author_pool,
)
from rejoinder.testing.feedback import widths_and_heights, with_feedback
from rejoinder.testing.threads import ID_BASE, SUB_ID_BASE, LineWriter, b36, skeleton

__all__ = [
    "BLAND_REPLIES", "BLOCKED_SUBREDDITS", "MARKDOWN_LINK_SHARE", "RATE_BLAND",
    "RATE_BLOCKED_THREADS", "RATE_BRACKETS", "RATE_DELETED", "RATE_DELETED_AUTHOR",
    "RATE_DUPLICATE", "RATE_HTML", "RATE_LONG", "RATE_LOW_SCORE", "RATE_MARKDOWN",
    "RATE_NON_ENGLISH", "RATE_OFFENSIVE", "RATE_ORPHAN", "RATE_REMOVED", "RATE_REPEAT",
    "RATE_URL", "SUBREDDITS", "synth_reddit",
]  # fmt: skip

# --- rates (fractions of all comments unless noted); those of bodies are in `bodies` -------------
RATE_DELETED_AUTHOR = 0.01
"""Intact body whose author is `[deleted]` (on top of deleted and removed bodies)."""
RATE_ORPHAN = 0.001
"""`parent_id` names a t1_ comment that no line of the dump has."""
RATE_DUPLICATE = 0.001
"""Lines that repeat the previous line's comment id (another score)."""
RATE_BLOCKED_THREADS = 0.02
"""Threads (not comments) in one of `BLOCKED_SUBREDDITS`."""

BLOCKED_SUBREDDITS = ("spamtopia", "toxicpit", "xxxdumpster", "shadyleaks")
"""Made-up subreddit names that a pipeline's blocklist should drop."""

SUBREDDITS = (
    "AskReddit", "funny", "pics", "gaming", "worldnews", "news", "videos", "todayilearned",
    "movies", "aww", "leagueoflegends", "nfl", "pcmasterrace", "politics", "soccer", "nba",
    "AdviceAnimals", "gifs", "explainlikeimfive", "IAmA", "science", "Music", "books",
    "television", "technology", "hockey", "DotA2", "GlobalOffensive", "mildlyinteresting",
    "Showerthoughts", "LifeProTips", "personalfinance", "relationships", "cars", "Fitness",
    "food", "space", "history", "askscience", "programming", "Python", "learnprogramming",
    "buildapc", "hiphopheads", "MMA", "CFB", "DestinyTheGame", "Android", "apple", "anime",
    "photography", "travel", "gardening", "DIY", "Cooking", "bicycling", "running",
    "Futurology", "dataisbeautiful", "Documentaries", "Jokes", "tifu", "nottheonion",
    "europe", "canada", "australia", "unitedkingdom", "de", "mexico", "chess",
)  # fmt: skip
"""Ordinary subreddits, most popular first (weights 1 / rank**1.1)."""


def synth_reddit(
    n_comments: int,
    out: str | Path,
    *,
    submissions_out: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Writes `n_comments` synthetic Reddit comments as zstd-compressed NDJSON (Pushshift's
    RC_*.zst layout; plain NDJSON when `out` does not end with .zst).

    Each line has `id`, `parent_id`, `link_id`, `body`, `author`, `subreddit`, `score` and
    `created_utc`, sorted by `created_utc`. With `submissions_out`, also writes one
    submission per thread (RS_ layout: `id`, `title`, `selftext`, `subreddit`, `author`,
    `score`, `created_utc`, `num_comments`), sorted by `created_utc`. The rates of what is
    injected are this module's `RATE_*` constants (see the module docstring).

    Returns a summary: `comments` (lines written), `unique_ids`, `threads`, and counts of
    each phenomenon over distinct comments (duplicated lines are counted once).
    """
    if isinstance(n_comments, bool) or not isinstance(n_comments, (int, np.integer)):
        raise RejoinderError(f"the number of comments must be an int, got {n_comments!r}")
    n_comments = int(n_comments)
    if n_comments < 0:
        raise RejoinderError(f"the number of comments must be 0 or more, got {n_comments}")
    out = Path(out)
    seq = np.random.SeedSequence(seed)
    # A fifth stream for the feedback clauses: the first four draw what they always drew.
    rng_tree, rng_text, rng_sub, rng_authors, rng_feedback = (
        np.random.default_rng(s) for s in seq.spawn(5)
    )

    n_dup = min(int(rng_tree.binomial(n_comments, RATE_DUPLICATE)), n_comments // 2)
    n = n_comments - n_dup
    sizes, starts, thread, parent, created, depth = skeleton(rng_tree, n)
    n_threads = len(sizes)

    # Threads: subreddit and submission id (ids grow with the start time).
    blocked = rng_tree.random(n_threads) < RATE_BLOCKED_THREADS
    weights = 1.0 / np.arange(1, len(SUBREDDITS) + 1) ** 1.1
    ordinary = rng_tree.choice(len(SUBREDDITS), n_threads, p=weights / weights.sum())
    which_blocked = rng_tree.integers(0, len(BLOCKED_SUBREDDITS), n_threads)
    subreddit = [
        BLOCKED_SUBREDDITS[b] if is_b else SUBREDDITS[o]
        for is_b, o, b in zip(
            blocked.tolist(), ordinary.tolist(), which_blocked.tolist(), strict=True
        )
    ]
    thread_order = np.argsort(starts, kind="stable")
    thread_rank = np.empty(n_threads, dtype=np.int64)
    thread_rank[thread_order] = np.arange(n_threads)
    sub_ids = b36(SUB_ID_BASE + 3 * thread_rank + rng_tree.integers(0, 2, n_threads))
    links = ["t3_" + s for s in sub_ids]

    # Comments in time order; ranks give ids, orphans and duplicates.
    order = np.argsort(created, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    s_thread = thread[order]
    s_parent = parent[order]
    s_parent_rank = np.where(s_parent >= 0, rank[np.maximum(s_parent, 0)], -1)
    s_created = created[order]
    width, height = widths_and_heights(parent)
    s_width, s_height = width[order], height[order]
    id_val = ID_BASE + 4 * np.arange(n, dtype=np.int64) + rng_tree.integers(0, 3, n)
    orphan = rng_tree.random(n) < RATE_ORPHAN
    back = rng_tree.integers(1, 50, n)
    missing = ID_BASE + 4 * np.maximum(np.arange(n) - back, -1) + 3
    parent_val = np.where(orphan, missing, id_val[np.maximum(s_parent_rank, 0)])
    is_top = (s_parent_rank < 0) & ~orphan
    dup = np.zeros(n, dtype=bool)
    if n_dup:
        dup[rng_tree.choice(n, n_dup, replace=False)] = True

    authors = author_pool(rng_authors, int(min(200_000, max(50, n // 8))))
    text = Text(rng_text, authors)
    counts = np.zeros(len(DECORATIONS), dtype=np.int64)
    kind_counts = np.zeros(5, dtype=np.int64)
    n_deleted_author = n_low = 0
    writer = LineWriter(out)
    try:
        for a in range(0, n, CHUNK):
            b = min(n, a + CHUNK)
            m = b - a
            ids = b36(id_val[a:b])
            pids = b36(parent_val[a:b])
            bodies, kinds, flags = text.bodies(m)
            authors = text.draw_authors(m)
            author_gone = (kinds <= REMOVED) | (rng_text.random(m) < RATE_DELETED_AUTHOR)
            scores = text.scores(m)
            bodies, scores = with_feedback(
                rng_feedback, bodies, kinds == ENGLISH, scores, s_width[a:b], s_height[a:b]
            )
            rescore = (scores + rng_text.integers(1, 20, m)).tolist()
            kind_counts += np.bincount(kinds, minlength=5)
            counts += flags.sum(axis=0)
            n_deleted_author += int(author_gone.sum())
            n_low += int((scores <= 0).sum())
            lines = []
            for i, (t, top, created_utc, gone, score, twice) in enumerate(
                zip(
                    s_thread[a:b].tolist(),
                    is_top[a:b].tolist(),
                    s_created[a:b].tolist(),
                    author_gone.tolist(),
                    scores.tolist(),
                    dup[a:b].tolist(),
                    strict=True,
                )
            ):
                link = links[t]
                head = (
                    f'{{"id":"{ids[i]}","parent_id":"{link if top else "t1_" + pids[i]}",'
                    f'"link_id":"{link}","body":{encode_basestring(bodies[i])},'
                    f'"author":"{"[deleted]" if gone else authors[i]}",'
                    f'"subreddit":"{subreddit[t]}","score":'
                )
                tail = f',"created_utc":{created_utc}}}'
                lines.append(f"{head}{score}{tail}")
                if twice:
                    lines.append(f"{head}{rescore[i]}{tail}")
            writer.write_lines(lines)
    finally:
        writer.close()

    per_thread = np.bincount(thread, minlength=n_threads)
    if submissions_out is not None:
        _write_submissions(
            Path(submissions_out),
            rng_sub,
            thread_order,
            sub_ids,
            subreddit,
            starts,
            per_thread,
            authors,
        )

    summary = {
        "seed": seed,
        "comments": n_comments,
        "unique_ids": n,
        "threads": n_threads,
        "submissions": n_threads if submissions_out is not None else 0,
        "largest_thread": int(sizes.max()) if n_threads else 0,
        "median_thread": float(np.median(sizes)) if n_threads else 0.0,
        "top_level": int((parent < 0).sum()),
        "max_depth": int(depth.max()) if n else 0,
        "deleted": int(kind_counts[DELETED]),
        "removed": int(kind_counts[REMOVED]),
        "deleted_author": n_deleted_author,
        "bland": int(kind_counts[BLAND]),
        "non_english": int(kind_counts[FOREIGN]),
        "english": int(kind_counts[ENGLISH]),
    }
    summary.update({name: int(c) for (name, _), c in zip(DECORATIONS, counts, strict=True)})
    summary.update(
        {
            "low_score": n_low,
            "orphans": int(orphan.sum()),
            "duplicates": n_dup,
            "blocked_threads": int(blocked.sum()),
            "blocked_comments": int(per_thread[blocked].sum()),
        }
    )
    return summary


def _write_submissions(
    path: Path,
    rng: np.random.Generator,
    thread_order: np.ndarray,
    sub_ids: list[str],
    subreddit: list[str],
    starts: np.ndarray,
    per_thread: np.ndarray,
    authors: list[str],
) -> None:
    text = Text(rng, authors)
    writer = LineWriter(path)
    try:
        for a in range(0, len(thread_order), CHUNK):
            chunk = thread_order[a : a + CHUNK].tolist()
            m = len(chunk)
            authors = text.draw_authors(m)
            scores = text.scores(m, scale=8.0).tolist()
            title_len = rng.integers(3, 16, m).tolist()
            kind = rng.random(m).tolist()
            lines = []
            for i, t in enumerate(chunk):
                title = text.english(title_len[i])
                author = authors[i]
                if kind[i] < 0.7:
                    selftext = ""
                elif kind[i] < 0.9:
                    selftext = text.english(int(text.lengths(1)[0]) * 2)
                elif kind[i] < 0.95:
                    selftext, author = "[deleted]", "[deleted]"
                else:
                    selftext = "[removed]"
                lines.append(
                    f'{{"id":"{sub_ids[t]}","title":{encode_basestring(title)},'
                    f'"selftext":{encode_basestring(selftext)},"subreddit":"{subreddit[t]}",'
                    f'"author":"{author}","score":{scores[i]},'
                    f'"created_utc":{int(starts[t])},"num_comments":{int(per_thread[t])}}}'
                )
            writer.write_lines(lines)
    finally:
        writer.close()
