"""A synthetic Pushshift Reddit dump (RC_*.zst, optionally RS_*) for tests and benchmarks.

`synth_reddit(n, "RC_synth.zst")` writes `n` comment lines shaped like a real monthly dump:

- heavy-tailed thread sizes (a Pareto draw: most threads have one or two comments, a few
  have thousands, capped at `THREAD_SIZE_CAP`), and reply trees that attach preferentially
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

The same seed gives byte-identical files (numpy's `default_rng`; no `hash()`, no set
order), whether or not submissions are written. Everything is generated in chunks of
`CHUNK` comments after a compact numpy skeleton of the threads, so memory stays small.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections.abc import Iterator
from json.encoder import encode_basestring
from pathlib import Path
from typing import IO

import numpy as np

# --- rates (fractions of all comments unless noted) -------------------------------------------
RATE_DELETED = 0.03
"""Body `[deleted]`, author `[deleted]`."""
RATE_REMOVED = 0.02
"""Body `[removed]`, author `[deleted]`."""
RATE_BLAND = 0.08
"""Body is one of `BLAND_REPLIES`, verbatim (uniform over them)."""
RATE_NON_ENGLISH = 0.03
"""Body in another language, sharing no word with the 100 most frequent English words."""
RATE_URL = 0.03
"""Ordinary body with a bare URL: http://, https:// or www."""
RATE_BRACKETS = 0.02
"""Ordinary body with square brackets; `MARKDOWN_LINK_SHARE` of them markdown links."""
MARKDOWN_LINK_SHARE = 0.6
RATE_REPEAT = 0.02
"""Ordinary body with one word three to six times in a row."""
RATE_OFFENSIVE = 0.01
"""Ordinary body with one word of better_profanity's word list."""
RATE_HTML = 0.02
"""Ordinary body with HTML entities (&amp; &gt; &lt;)."""
RATE_MARKDOWN = 0.02
"""Ordinary body with markdown formatting (no brackets)."""
RATE_LONG = 0.002
"""Ordinary body of 300 to 800 words."""
RATE_DELETED_AUTHOR = 0.01
"""Intact body whose author is `[deleted]` (on top of deleted and removed bodies)."""
RATE_LOW_SCORE = 0.08
"""Score zero or negative."""
RATE_ORPHAN = 0.001
"""`parent_id` names a t1_ comment that no line of the dump has."""
RATE_DUPLICATE = 0.001
"""Lines that repeat the previous line's comment id (another score)."""
RATE_BLOCKED_THREADS = 0.02
"""Threads (not comments) in one of `BLOCKED_SUBREDDITS`."""

# --- shapes -----------------------------------------------------------------------------------
THREAD_SIZE_ALPHA = 1.1
"""Thread sizes are floor(Pareto(alpha)), x_min 1: median 1, mean about 6 under the cap."""
THREAD_SIZE_CAP = 5000
P_TOP_LEVEL = 0.25
"""A comment after a thread's first is a new top-level comment with this probability,"""
P_REPLY_TO_TOP = 0.1
"""a reply to a uniformly chosen top-level comment with this one,"""
P_RECENT_BACK = 0.5
"""and otherwise a reply to a recent one: Geometric(P_RECENT_BACK) - 1 comments back."""
MAX_WORDS = 60
START_UTC = 1420070400
"""2015-01-01T00:00:00Z; threads start uniformly within `WINDOW_S` after it."""
WINDOW_S = 31 * 86400
CHUNK = 1 << 15

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

BLAND_REPLIES = (
    "lol", "Lol", "haha", "This.", "this", "same", "yes", "nice", "ok", "Thanks!",
    "thank you", "thank you so much", "Thank you so much!", "I don't know", "I don't know.",
    "me too", "Me too.", "this is the way", "This is the way.", "I agree", "I agree with you",
    "I don't think so", "I know right", "I love this", "came here to say this",
    "I was thinking the same thing", "thanks for sharing", "you're welcome", "good bot",
    "fair enough", "I see what you did there", "happy cake day", "what", "agreed",
    "me too thanks", "I'm not sure", "that's what she said", "so much this",
)  # fmt: skip
"""Replies too generic to learn from; their trigrams are frequent by design."""

# Sentence templates: "_" is a slot for a filler word; never three slots in a row.
_FRAMES = (
    "I think _ is _", "I don't think the _ is _", "you can _ it with the _",
    "this is the _ _ I have ever seen", "it was _ but the _ was _",
    "what do you _ about the _ ?", "if you _ the _ then it will _",
    "we _ to the _ and it was _", "that's not how _ works", "the _ of the _ is _",
    "they _ the _ for _ years", "my _ has a _ _", "there is no _ in the _",
    "I have been _ for _ and it is _", "did you _ the _ ?", "he said the _ was _",
    "she would _ the _ if she could", "it is just a _ _", "as a _ I can _ that",
    "you should _ your _", "this _ is so _", "all of the _ are _", "I was _ when I _ the _",
    "how do you _ a _ ?", "they are _ with the _", "not sure if _ or _",
    "one of the _ _ in the _", "I would _ it to _", "we have a _ for that",
    "can you _ the _ ?", "it has been _ since the _", "the _ is _ and the _ is _",
    "you are _ about the _", "I had a _ like that", "so _ that it _",
    "people _ on _ all the time", "it's _ to _ the _", "why would you _ that ?",
    "this will _ your _", "there are _ _ in this _", "I just _ the _ on my _",
    "that is _ but _ is _", "my _ and I _ it last _", "it is not _ to be _",
)  # fmt: skip

_FOREIGN = {
    "es": "el la los las una uno pero porque como cuando donde muy también siempre nunca "
    "gracias hola amigo casa perro gato comida tiempo mundo vida trabajo ciudad noche ahora "
    "después antes hoy mañana bueno malo grande pequeño nuevo viejo mucho poco todo nada "
    "algo quiero tengo puedo hacer decir saber creo esto eso aquí allí mejor peor verdad "
    "cosa gente es está son hay del",
    "de": "der die das und ist nicht ein eine ich du wir ihr sie mit auf für von zu den dem "
    "des auch noch nur schon aber oder wenn dann weil sehr gut schlecht heute morgen immer "
    "nie hier dort jetzt Haus Hund Katze Arbeit Zeit Leute Stadt Jahr Tag Nacht Welt Leben "
    "machen sagen gehen kommen sehen wissen glaube wirklich vielleicht natürlich",
    "fr": "le la les un une des et est pas je tu nous vous ils elle avec pour dans sur mais ou "
    "donc car très bien mal aujourd'hui demain toujours jamais ici maintenant maison chien "
    "chat travail temps gens ville année jour nuit monde vie faire dire aller venir voir "
    "savoir pense vraiment peut-être merci bonjour",
    "ru": "и в не на я что он с как это по но они мы ты вы она так все было когда очень уже "
    "только еще может сегодня завтра всегда никогда здесь дом собака кошка работа время "
    "люди город год день ночь мир жизнь делать говорить идти видеть знать думаю спасибо "
    "привет",
    "ja": "これは とても いい ですね わたし あなた ありがとう すごい おもしろい 日本 今日 明日 "
    "ゲーム アニメ 本当に そうですね 分かります 友達 先生 学校 仕事 映画 音楽",
}
_CJK = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家"
    "学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见"
    "经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话"
)
_DOMAINS = (
    "youtube.com", "imgur.com", "en.wikipedia.org", "reddit.com", "nytimes.com",
    "github.com", "amazon.com", "bbc.co.uk", "twitter.com", "i.redd.it",
)  # fmt: skip
_REPEAT_WORDS = ("no", "ha", "yes", "please", "very", "so", "why", "what", "really", "go")
_PLAIN_BRACKETS = ("[citation needed]", "[edit: typo]", "[this]", "[serious]", "[OC]")
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_ID_BASE = int("cn00000", 36)
"""Comment ids are _ID_BASE + 4 * rank + (0, 1 or 2); + 3 is never used (orphans' parents)."""
_SUB_ID_BASE = int("2r0000", 36)

_DELETED, _REMOVED, _BLAND, _FOREIGN_KIND, _ENGLISH = range(5)
# Decoration columns, with their rates over all comments.
_DECORATIONS = (
    ("with_url", RATE_URL),
    ("with_brackets", RATE_BRACKETS),
    ("repeated_word", RATE_REPEAT),
    ("offensive", RATE_OFFENSIVE),
    ("html_entities", RATE_HTML),
    ("markdown", RATE_MARKDOWN),
    ("long", RATE_LONG),
)
_URL, _BRACKETS, _REPEAT, _OFFENSIVE, _HTML, _MARKDOWN, _LONG = range(len(_DECORATIONS))


@functools.lru_cache(maxsize=1)
def _lexicon() -> dict:
    """Word lists, loaded once: filler vocabulary and weights, profanity, foreign words."""
    try:
        import wordfreq
    except ImportError as e:  # pragma: no cover - an environment problem
        raise ImportError("synth_reddit needs the `wordfreq` package") from e
    spec = importlib.util.find_spec("better_profanity")
    if spec is None or spec.origin is None:  # pragma: no cover
        raise ImportError("synth_reddit needs the `better_profanity` package")
    wordlist = Path(spec.origin).parent / "profanity_wordlist.txt"
    entries = [w.strip().lower() for w in wordlist.read_text(encoding="utf-8").splitlines()]
    profane = {w for w in entries if w}
    offensive = sorted({w for w in profane if w.isalpha() and w.isascii()})

    top = wordfreq.top_n_list("en", 5000)
    english_top = set(top[:100])
    filler = [w for w in top[20:] if not any(t in profane for t in re.findall("[a-z]+", w))]
    ranks = np.array([top.index(w) + 1 for w in filler], dtype=np.float64)
    cdf = np.cumsum(ranks**-0.8)
    cdf /= cdf[-1]
    names = [w for w in filler[:3000] if w.isalpha() and w.isascii()]

    avoid = english_top | profane
    foreign = {
        lang: [w for w in text.split() if w.lower() not in avoid] for lang, text in _FOREIGN.items()
    }
    return {
        "filler": np.array(filler, dtype=object),
        "filler_cdf": cdf,
        "names": names,
        "offensive": offensive,
        "profane": frozenset(profane),
        "english_top": english_top,
        "foreign": foreign,
        "frames": [
            (tuple(f.removesuffix(" ?").split()), "?" if f.endswith("?") else ".") for f in _FRAMES
        ],
    }


def _b36_one(v: int) -> str:
    if v == 0:
        return "0"
    out = []
    while v:
        v, r = divmod(v, 36)
        out.append(_ALPHABET[r])
    return "".join(reversed(out))


_ALPHABET_ARR = np.array(list(_ALPHABET))


def _b36(vals: np.ndarray) -> list[str]:
    """Base-36 strings of non-negative ints, vectorised when they share one width."""
    vals = np.asarray(vals, dtype=np.int64)
    if vals.size == 0:
        return []
    width = len(_b36_one(int(vals.max())))
    if len(_b36_one(int(vals.min()))) != width:
        return [_b36_one(v) for v in vals.tolist()]
    powers = 36 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    chars = np.ascontiguousarray(_ALPHABET_ARR[(vals[:, None] // powers) % 36])
    return chars.view(f"<U{width}").ravel().tolist()


def _refill(draw) -> Iterator:
    """An endless iterator over successive blocks from `draw()` (a deterministic rng call)."""
    while True:
        yield from draw()


class _Writer:
    """Text lines to `path`, zstd-compressed (level 3) when it ends with .zst."""

    def __init__(self, path: Path):
        self.path = path
        self._raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._zst = None
        if path.name.endswith(".zst"):
            import zstandard

            self._zst = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)

    def write_lines(self, lines: list[str]) -> None:
        if lines:
            data = ("\n".join(lines) + "\n").encode("utf-8")
            (self._zst or self._raw).write(data)

    def close(self) -> None:
        if self._zst is not None:
            self._zst.close()
        self._raw.close()


class _Text:
    """Bodies, titles and author names from one rng, in a fixed order of draws."""

    def __init__(self, rng: np.random.Generator, authors: list[str]):
        self.rng = rng
        lex = _lexicon()
        self.lex = lex
        filler, cdf = lex["filler"], lex["filler_cdf"]
        self.words = _refill(lambda: filler[np.searchsorted(cdf, rng.random(CHUNK))].tolist())
        frames = lex["frames"]
        self.frames = _refill(lambda: [frames[i] for i in rng.integers(0, len(frames), CHUNK)])
        self.u = _refill(lambda: rng.random(CHUNK).tolist())
        self.authors = authors
        w = 1.0 / np.arange(1, len(authors) + 1) ** 0.9
        self.author_cdf = np.cumsum(w) / w.sum()

    def pick(self, seq):
        return seq[int(next(self.u) * len(seq))]

    def draw_authors(self, m: int) -> list[str]:
        idx = np.searchsorted(self.author_cdf, self.rng.random(m))
        return [self.authors[i] for i in np.minimum(idx, len(self.authors) - 1).tolist()]

    def lengths(self, m: int) -> np.ndarray:
        n = np.rint(self.rng.lognormal(math.log(10.0), 0.85, m)).astype(np.int64)
        wide = self.rng.integers(30, MAX_WORDS + 1, m)
        return np.clip(np.where(n > MAX_WORDS, wide, n), 1, MAX_WORDS)

    def english(self, n_words: int, casual: bool = False) -> str:
        """`n_words` words of English-shaped sentences from the templates."""
        words, frames = self.words, self.frames
        out: list[str] = []
        while len(out) < n_words:
            frame, end = next(frames)
            sent = [next(words) if t == "_" else t for t in frame]
            sent = sent[: n_words - len(out)]
            if not casual:
                sent[0] = sent[0][:1].upper() + sent[0][1:]
                sent[-1] = sent[-1] + end
            out.extend(sent)
        return " ".join(out)

    def long(self) -> str:
        n = int(300 + next(self.u) * 500)
        paragraphs = []
        while n > 0:
            k = min(n, 40 + int(next(self.u) * 80))
            paragraphs.append(self.english(k))
            n -= k
        return "\n\n".join(paragraphs)

    def foreign(self) -> str:
        lang = self.pick(("es", "de", "fr", "ru", "zh", "ja"))
        n = 3 + int(next(self.u) * 18)
        if lang == "zh":
            return "".join(self.pick(_CJK) for _ in range(n + 4)) + "。"
        words = self.lex["foreign"][lang]
        if lang == "ja":
            return "".join(self.pick(words) for _ in range(max(2, n // 3))) + "。"
        text = " ".join(self.pick(words) for _ in range(n))
        return text[:1].upper() + text[1:] + "."

    def url(self) -> str:
        path = int(next(self.u) * 10**9)  # digits only: no accidental words
        scheme = self.pick(("http://", "https://", "https://www.", "www."))
        return f"{scheme}{self.pick(_DOMAINS)}/{path}"

    def decorate(self, body: str, flags: list[bool]) -> str:
        if flags[_OFFENSIVE]:
            toks = body.split(" ")
            toks.insert(int(next(self.u) * (len(toks) + 1)), self.pick(self.lex["offensive"]))
            body = " ".join(toks)
        if flags[_REPEAT]:
            word = self.pick(_REPEAT_WORDS) if next(self.u) < 0.7 else next(self.words)
            rep = " ".join([word] * (3 + int(next(self.u) * 4)))
            body = f"{rep} {body}" if next(self.u) < 0.5 else f"{body} {rep}"
        if flags[_MARKDOWN]:
            body = self._markdown(body)
        if flags[_HTML]:
            r = next(self.u)
            if r < 0.4:
                body = f"&gt; {self.english(3 + int(next(self.u) * 10))}\n\n{body}"
            elif r < 0.7:
                body = f"{body} &amp; {next(self.words)}"
            elif r < 0.85:
                body = f"{body} &lt;3"
            else:
                a = int(next(self.u) * 100)
                body = f"{body} {a} &gt; {a // 2} &amp;&amp; {a // 3} &lt; {a}"
        if flags[_URL]:
            r = next(self.u)
            if r < 0.6:
                body = f"{body} {self.url()}"
            elif r < 0.8:
                body = f"{body}\n\nSource: {self.url()}"
            else:
                body = f"{self.url()} {body}"
        if flags[_BRACKETS]:
            if next(self.u) < MARKDOWN_LINK_SHARE:
                body = f"{body} [{next(self.words)} {next(self.words)}]({self.url()})"
            else:
                body = f"{body} {self.pick(_PLAIN_BRACKETS)}"
        return body

    def _markdown(self, body: str) -> str:
        r = next(self.u)
        if r < 0.45:
            toks = body.split(" ")
            i = int(next(self.u) * len(toks))
            mark = self.pick(("**", "*", "~~", "`"))
            toks[i] = f"{mark}{toks[i]}{mark}"
            return " ".join(toks)
        if r < 0.6:
            return f"{body} ^{next(self.words)}"
        if r < 0.8:
            items = "\n".join(f"* {self.english(2 + int(next(self.u) * 6))}" for _ in range(3))
            return f"{body}\n\n{items}"
        return f"{body}\n\nEdit: {self.english(3 + int(next(self.u) * 8))}"

    def bodies(self, m: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """`m` comment bodies, their kinds, and the decoration flags (m x 7, bool)."""
        rng = self.rng
        u = rng.random(m)
        edges = np.cumsum([RATE_DELETED, RATE_REMOVED, RATE_BLAND, RATE_NON_ENGLISH])
        kinds = np.searchsorted(edges, u, side="right")
        share = 1.0 - edges[-1]
        rates = np.array([r / share for _, r in _DECORATIONS])
        flags = (rng.random((m, len(_DECORATIONS))) < rates) & (kinds == _ENGLISH)[:, None]
        lengths = self.lengths(m).tolist()
        casual = (rng.random(m) < 0.25).tolist()
        bland = rng.integers(0, len(BLAND_REPLIES), m).tolist()
        out = []
        for i, (kind, fl) in enumerate(zip(kinds.tolist(), flags.tolist(), strict=True)):
            if kind == _ENGLISH:
                body = self.long() if fl[_LONG] else self.english(lengths[i], casual[i])
                if any(fl):
                    body = self.decorate(body, fl)
            elif kind == _DELETED:
                body = "[deleted]"
            elif kind == _REMOVED:
                body = "[removed]"
            elif kind == _BLAND:
                body = BLAND_REPLIES[bland[i]]
            else:
                body = self.foreign()
            out.append(body)
        return out, kinds, flags

    def scores(self, m: int, scale: float = 2.0) -> np.ndarray:
        rng = self.rng
        up = 1 + np.floor(rng.pareto(1.3, m) * scale)
        down = -np.floor(rng.pareto(1.5, m) * 2.0)
        low = rng.random(m) < RATE_LOW_SCORE
        return np.clip(np.where(low, down, up), -5000, 50000).astype(np.int64)


def _author_pool(rng: np.random.Generator, n: int) -> list[str]:
    """`n` usernames made of vocabulary words, most active first."""
    names = _lexicon()["names"]
    idx = rng.integers(0, len(names), size=(n, 2))
    style = rng.integers(0, 4, n)
    num = rng.integers(1, 10000, n)
    pool = []
    for (a, b), s, k in zip(idx.tolist(), style.tolist(), num.tolist(), strict=True):
        a, b = names[a], names[b]
        if s == 0:
            pool.append(f"{a}_{b}")
        elif s == 1:
            pool.append(f"{a.capitalize()}{b.capitalize()}{k}")
        elif s == 2:
            pool.append(f"{a}-{b}-{k % 100}")
        else:
            pool.append(f"{a}{k}")
    return pool


def _thread_sizes(rng: np.random.Generator, total: int) -> np.ndarray:
    """Heavy-tailed thread sizes summing to `total`."""
    cap = max(1, min(THREAD_SIZE_CAP, total))
    parts, have = [], 0
    while have < total:
        draw = np.minimum(np.floor(rng.pareto(THREAD_SIZE_ALPHA, 4096) + 1.0), cap)
        parts.append(draw.astype(np.int64))
        have += int(parts[-1].sum())
    sizes = np.concatenate(parts)
    ends = np.cumsum(sizes)
    k = int(np.searchsorted(ends, total)) + 1
    sizes = sizes[:k].copy()
    sizes[-1] -= int(ends[k - 1]) - total
    return sizes


def _skeleton(rng: np.random.Generator, n: int):
    """Threads and reply trees for `n` comments, in generation order (thread by thread).

    Returns (sizes, thread start times, thread of each comment, parent index or -1,
    created_utc, depth).
    """
    sizes = _thread_sizes(rng, n) if n else np.zeros(0, dtype=np.int64)
    starts = START_UTC + rng.integers(0, WINDOW_S, len(sizes))
    thread = np.repeat(np.arange(len(sizes)), sizes)
    u_kind = rng.random(n).tolist()
    u_pick = rng.random(n).tolist()
    back = (rng.geometric(P_RECENT_BACK, n) - 1).tolist()
    d_top = (1 + np.minimum(rng.lognormal(math.log(3600), 1.5, n), 20 * 86400)).astype(np.int64)
    d_reply = (1 + np.minimum(rng.lognormal(math.log(1200), 1.3, n), 10 * 86400)).astype(np.int64)
    d_top, d_reply = d_top.tolist(), d_reply.tolist()
    parent = [-1] * n
    created = [0] * n
    depth = [1] * n
    g = 0
    p_reply_top = P_TOP_LEVEL + P_REPLY_TO_TOP
    for size, start in zip(sizes.tolist(), starts.tolist(), strict=True):
        first = g
        tops: list[int] = []
        for r in range(size):
            u = u_kind[g]
            if r == 0 or u < P_TOP_LEVEL:
                created[g] = start + d_top[g]
                tops.append(g)
            else:
                if u < p_reply_top:
                    p = tops[int(u_pick[g] * len(tops))]
                else:
                    p = max(first, g - 1 - back[g])
                parent[g] = p
                depth[g] = depth[p] + 1
                created[g] = created[p] + d_reply[g]
            g += 1
    return (
        sizes,
        starts,
        thread,
        np.array(parent, dtype=np.int64),
        np.array(created, dtype=np.int64),
        np.array(depth, dtype=np.int64),
    )


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
        raise TypeError(f"n_comments must be an int, got {n_comments!r}")
    n_comments = int(n_comments)
    if n_comments < 0:
        raise ValueError(f"n_comments must be >= 0, got {n_comments}")
    out = Path(out)
    seq = np.random.SeedSequence(seed)
    rng_tree, rng_text, rng_sub, rng_authors = (np.random.default_rng(s) for s in seq.spawn(4))

    n_dup = min(int(rng_tree.binomial(n_comments, RATE_DUPLICATE)), n_comments // 2)
    n = n_comments - n_dup
    sizes, starts, thread, parent, created, depth = _skeleton(rng_tree, n)
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
    sub_ids = _b36(_SUB_ID_BASE + 3 * thread_rank + rng_tree.integers(0, 2, n_threads))
    links = ["t3_" + s for s in sub_ids]

    # Comments in time order; ranks give ids, orphans and duplicates.
    order = np.argsort(created, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    s_thread = thread[order]
    s_parent = parent[order]
    s_parent_rank = np.where(s_parent >= 0, rank[np.maximum(s_parent, 0)], -1)
    s_created = created[order]
    id_val = _ID_BASE + 4 * np.arange(n, dtype=np.int64) + rng_tree.integers(0, 3, n)
    orphan = rng_tree.random(n) < RATE_ORPHAN
    back = rng_tree.integers(1, 50, n)
    missing = _ID_BASE + 4 * np.maximum(np.arange(n) - back, -1) + 3
    parent_val = np.where(orphan, missing, id_val[np.maximum(s_parent_rank, 0)])
    is_top = (s_parent_rank < 0) & ~orphan
    dup = np.zeros(n, dtype=bool)
    if n_dup:
        dup[rng_tree.choice(n, n_dup, replace=False)] = True

    authors = _author_pool(rng_authors, int(min(200_000, max(50, n // 8))))
    text = _Text(rng_text, authors)
    counts = np.zeros(len(_DECORATIONS), dtype=np.int64)
    kind_counts = np.zeros(5, dtype=np.int64)
    n_deleted_author = n_low = 0
    writer = _Writer(out)
    try:
        for a in range(0, n, CHUNK):
            b = min(n, a + CHUNK)
            m = b - a
            ids = _b36(id_val[a:b])
            pids = _b36(parent_val[a:b])
            bodies, kinds, flags = text.bodies(m)
            authors = text.draw_authors(m)
            author_gone = (kinds <= _REMOVED) | (rng_text.random(m) < RATE_DELETED_AUTHOR)
            scores = text.scores(m)
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
        "deleted": int(kind_counts[_DELETED]),
        "removed": int(kind_counts[_REMOVED]),
        "deleted_author": n_deleted_author,
        "bland": int(kind_counts[_BLAND]),
        "non_english": int(kind_counts[_FOREIGN_KIND]),
        "english": int(kind_counts[_ENGLISH]),
    }
    summary.update({name: int(c) for (name, _), c in zip(_DECORATIONS, counts, strict=True)})
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
    text = _Text(rng, authors)
    writer = _Writer(path)
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
