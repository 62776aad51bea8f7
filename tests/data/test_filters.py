import pickle
import random
import re
import zlib

import pytest

from rejoinder.data.filters import FILTERS, FilterConfig, Filters, TrigramSketch
from rejoinder.data.text import normalize, word_hashes, words
from rejoinder.errors import RejoinderError

CLEAN = ["What did you do today?", "I went to the park with my dog."]


@pytest.fixture(scope="module")
def filters():
    return Filters(FilterConfig())


@pytest.mark.parametrize(
    "texts, name",
    [
        (["see https://example.com", "I went to the park."], "url"),
        (["hi", "the site is www.example.org for you"], "url"),
        (["hi", "no no no, that is not it"], "repetition"),
        (["hi", "Ha, ha, HA. I like that"], "repetition"),
        (["hi", "hola amigo, qué tal estás hoy"], "non_english"),
        (["hi", "the [citation needed] is here"], "brackets"),
        (["hi " * 150, "and the rest " * 20], "too_long"),
        (["hi", "you are a fucking idiot and I know it"], "offensive"),
    ],
)
def test_each_filter_drops_what_it_names(filters, texts, name):
    assert filters.check(CLEAN) is None
    assert filters.check(texts) == name
    others = Filters(FilterConfig(enabled=tuple(f for f in FILTERS if f != name)))
    assert others.check(texts) != name  # switched off, it drops nothing


def test_filters_judge_the_target_unless_asked_for_every_response():
    texts = ["no no no, that is not it", "I see what you mean there."]
    assert Filters(FilterConfig()).check(texts) is None  # the source may repeat
    assert Filters(FilterConfig(targets="responses")).check([*texts, "ok then"]) is not None


def test_parameters(tmp_path):
    assert Filters(FilterConfig(repetition_run=4)).check(["a", "no no no is the answer"]) is None
    assert Filters(FilterConfig(max_words=5)).check(CLEAN) == "too_long"
    words = tmp_path / "words.txt"
    words.write_text("# my list\npark\nhot dog\n")
    custom = Filters(FilterConfig(offensive_words=str(words)))
    assert custom.check(CLEAN) == "offensive"
    assert custom.check(["a", "the hot dog is in the oven"]) == "offensive"
    blocked = tmp_path / "subs.txt"
    blocked.write_text("Pics\n")
    subs = Filters(FilterConfig(subreddit_blocklist=str(blocked)))
    assert subs.check(CLEAN, "pics") == "subreddit" and subs.check(CLEAN, "aww") is None


def test_bad_configs_are_refused():
    with pytest.raises(RejoinderError, match="unknown filter 'spam'"):
        FilterConfig.parse("url,spam")
    with pytest.raises(RejoinderError, match="bland_share"):
        FilterConfig(bland_share=1.5)
    with pytest.raises(RejoinderError, match="does not exist"):
        Filters(FilterConfig(subreddit_blocklist="/nonexistent"))
    assert FilterConfig.parse("none").enabled == ()
    assert FilterConfig.parse("bland,url").enabled == ("url", "bland")  # canonical order


def test_trigram_sketch_counts_and_merges():
    a, b = TrigramSketch(width_bits=16), TrigramSketch(width_bits=16)
    a.add(["I do not know"] * 600)
    b.add(["I do not know"] * 600 + ["the cat sat on the mat"])
    merged = a.merge(b)
    shares = merged.frequent_share(["I do not know", "I do not know the cat", "lol"], 1000)
    assert shares[0] == 1.0  # both trigrams seen 1,200 times
    assert 0 < shares[1] < 1
    assert shares[2] is None  # no trigrams to judge
    # Collisions can only raise counts: nothing seen once reads as frequent.
    assert merged.frequent_share(["the cat sat on the mat"], 1)[0] == 0.0


def test_sketches_merged_or_pickled_count_like_one_sketch():
    texts = ["I do not know"] * 700 + ["the cat sat on the mat", "what do you know"] * 5
    one = TrigramSketch(width_bits=16, batch=100)
    one.add(texts)
    parts = [TrigramSketch(width_bits=16, batch=100) for _ in range(3)]
    for i, text in enumerate(texts):
        parts[i % 3].add([text])  # each part still holds texts it has not counted yet
    shipped = [pickle.loads(pickle.dumps(part)) for part in parts]
    merged = shipped[0].merge(shipped[1]).merge(shipped[2])
    probes = ["I do not know", "the cat sat on the mat", "what do you know", "no such words here"]
    for count in (0, 4, 5, 699, 700):
        assert merged.frequent_share(probes, count) == one.frequent_share(probes, count), count
    assert one.frequent_share(probes, 699)[0] == 1.0 and one.frequent_share(probes, 700)[0] == 0.0
    with pytest.raises(ValueError, match="same width"):
        one.merge(TrigramSketch(width_bits=12))


def test_normalize_like_the_dialogpt_extractor():
    assert normalize("a &amp; b &gt; c") == "a & b > c"
    assert normalize("see [the docs](https://x.io/a_(b)) now") == "see the docs now"
    assert normalize("**bold** and ~~gone~~\n\n&gt; quoted") == "bold and gone quoted"
    assert normalize("  lots \t of\n space ") == "lots of space"


def test_word_hashes_are_zlibs_crc32_of_each_word():
    """The sketch hashes a batch of texts at once; what it gets must be, word by word,
    what zlib gives: texts with any whitespace, letters whose lower case depends on their
    neighbours (a final sigma), words longer than the hashing tables, newlines in a text."""
    drop = b'!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'
    rng = random.Random(7)
    alphabet = "abcXYZ \u00e9\u4e2d\u03a3\u0130'.,!-_ \t\x0b\x0c\r\x1c\x85\xa0" + "q" * 5
    cases = [[], [""], ["", "a"], ["line\nbreak", "x"], ["\u0391\u03a3", "\u03a3 b"]]
    for _ in range(300):
        texts = [
            "".join(rng.choices(alphabet, k=rng.randrange(80))) for _ in range(rng.randrange(6))
        ]
        cases.append([*texts, "w" * rng.randrange(25, 40) + " " + "y" * rng.randrange(28, 70)])
    for texts in cases:
        hashes, owners = word_hashes(texts, drop)
        expected = [
            (zlib.crc32(w), i)
            for i, t in enumerate(texts)
            for w in t.lower().encode().translate(None, drop).split()
        ]
        assert list(zip(hashes.tolist(), owners.tolist(), strict=True)) == expected, texts


def test_words_are_the_same_on_the_quick_path_for_ascii_texts():
    rng = random.Random(3)
    alphabet = "abcXYZ019 _-.,!?'[]()\t\n\x1c\x7f" + "e" * 5
    texts = ["".join(rng.choices(alphabet, k=rng.randrange(60))) for _ in range(2000)]
    texts += ["Don't STOP, no_no", "caf\u00e9 na\u00efve", "x\x1cy", ""]
    pattern = re.compile(r"[^\W_]+(?:'[^\W_]+)?")  # what a word is
    quick = 0
    for text in texts:
        assert words(text) == pattern.findall(text.lower()), text
        quick += text.isascii() and "'" not in text
    assert quick > 500
