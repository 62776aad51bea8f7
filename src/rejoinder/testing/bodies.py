"""Comment bodies, titles and usernames for the synthetic Reddit dump (`testing.reddit`).

Bodies are drawn per comment as one of five kinds (deleted, removed, bland, non-English,
ordinary English), and ordinary ones get decorations (URLs, brackets, repeated words,
offensive words, HTML entities, markdown, great length), each at the rate of its
`RATE_*` constant over all comments. `Text` makes every draw from one rng in a fixed
order, so the same seed gives the same text.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from rejoinder.errors import RejoinderError

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
RATE_LOW_SCORE = 0.08
"""Score zero or negative."""

MAX_WORDS = 60
"""Ordinary bodies have at most this many words (the long ones aside)."""
CHUNK = 1 << 15
"""Draws are made this many at a time, so memory stays small."""

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

DELETED, REMOVED, BLAND, FOREIGN, ENGLISH = range(5)
"""The kinds of body, as `Text.bodies` returns them."""
DECORATIONS = (
    ("with_url", RATE_URL),
    ("with_brackets", RATE_BRACKETS),
    ("repeated_word", RATE_REPEAT),
    ("offensive", RATE_OFFENSIVE),
    ("html_entities", RATE_HTML),
    ("markdown", RATE_MARKDOWN),
    ("long", RATE_LONG),
)
"""The decorations of ordinary bodies (the columns of `Text.bodies`' flags), with their
rates over all comments."""
_URL, _BRACKETS, _REPEAT, _OFFENSIVE, _HTML, _MARKDOWN, _LONG = range(len(DECORATIONS))


@functools.lru_cache(maxsize=1)
def lexicon() -> dict:
    """Word lists, loaded once: filler vocabulary and weights, profanity, foreign words.

    Keys: filler, filler_cdf, names, offensive (the words bodies insert), profane (every
    entry of better_profanity's list), english_top, foreign, frames.
    """
    try:
        import wordfreq
    except ImportError:  # pragma: no cover - an environment problem
        raise RejoinderError(
            "the synthetic Reddit dump takes its words from wordfreq: pip install wordfreq"
        ) from None
    spec = importlib.util.find_spec("better_profanity")
    if spec is None or spec.origin is None:  # pragma: no cover
        raise RejoinderError(
            "the synthetic Reddit dump takes its offensive words from better-profanity: "
            "pip install better-profanity"
        )
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


def _refill(draw) -> Iterator:
    """An endless iterator over successive blocks from `draw()` (a deterministic rng call)."""
    while True:
        yield from draw()


class Text:
    """Bodies, titles and author names from one rng, in a fixed order of draws."""

    def __init__(self, rng: np.random.Generator, authors: list[str]):
        self.rng = rng
        lex = lexicon()
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
        rates = np.array([r / share for _, r in DECORATIONS])
        flags = (rng.random((m, len(DECORATIONS))) < rates) & (kinds == ENGLISH)[:, None]
        lengths = self.lengths(m).tolist()
        casual = (rng.random(m) < 0.25).tolist()
        bland = rng.integers(0, len(BLAND_REPLIES), m).tolist()
        out = []
        for i, (kind, fl) in enumerate(zip(kinds.tolist(), flags.tolist(), strict=True)):
            if kind == ENGLISH:
                body = self.long() if fl[_LONG] else self.english(lengths[i], casual[i])
                if any(fl):
                    body = self.decorate(body, fl)
            elif kind == DELETED:
                body = "[deleted]"
            elif kind == REMOVED:
                body = "[removed]"
            elif kind == BLAND:
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


def author_pool(rng: np.random.Generator, n: int) -> list[str]:
    """`n` usernames made of vocabulary words, most active first."""
    names = lexicon()["names"]
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
