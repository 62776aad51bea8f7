import pytest
from transformers import AutoTokenizer

from rejoinder import RejoinderError
from rejoinder.tokenizers import build_tokenizer, char_tokenizer, text_encoder, train_bpe

CORPUS = [
    "Hello there, how are you doing today?",
    "I am fine, thank you. And you?",
    "Pretty good. The weather is lovely.",
] * 20


def test_gpt2_ids_are_gpt2s(gpt2):
    assert gpt2("Hello").input_ids == [15496]
    assert gpt2(" chartreuse").input_ids == [8262, 260, 1904]
    assert gpt2.eos_token_id == 50256 and gpt2.convert_tokens_to_ids("<|endoftext|>") == 50256
    assert len(gpt2) == 50257
    text = "Ünïcödé, emoji 🙂 and\nnewlines\ttabs"
    assert gpt2.decode(gpt2(text).input_ids) == text


def test_gpt2_saves_and_loads_in_hugging_face_format(gpt2, tmp_path):
    gpt2.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["Hello", " chartreuse", "a<|endoftext|>b"]:
        assert again(text).input_ids == gpt2(text).input_ids


def test_trained_bpe_respects_size_and_round_trips(tmp_path):
    tok = train_bpe(CORPUS, 300)
    assert len(tok) <= 300
    unseen = "Zebras 🦓 ünseen words"  # byte-level: nothing is unknown
    assert tok.decode(tok(unseen).input_ids) == unseen
    assert len(tok("Hello there").input_ids) < len("Hello there")  # merges were learnt
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)(unseen).input_ids == tok(unseen).input_ids


def test_char_vocabulary_is_one_token_per_character(tmp_path):
    tok = char_tokenizer(["你好吗", "我很好，谢谢"])
    ids = tok("你好谢谢").input_ids
    assert len(ids) == 4 and tok.unk_token_id not in ids
    assert tok.decode(ids) == "你好谢谢"
    assert tok("猫").input_ids == [tok.unk_token_id]
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("你好谢谢").input_ids == ids and again.decode(ids) == "你好谢谢"


def test_build_tokenizer_errors():
    with pytest.raises(RejoinderError, match="unknown tokenizer"):
        build_tokenizer("wordpiece")
    with pytest.raises(RejoinderError, match="corpus"):
        build_tokenizer("bpe:1000")
    with pytest.raises(RejoinderError, match="number"):
        build_tokenizer("bpe:lots", CORPUS)
    with pytest.raises(RejoinderError, match="at least"):
        build_tokenizer("bpe:10", CORPUS)
    assert len(build_tokenizer("bpe:280", CORPUS)) <= 280


def test_text_encoder_never_produces_special_ids(gpt2):
    enc = text_encoder(gpt2)
    ids = enc.encode("hi <|endoftext|> there", add_special_tokens=False).ids
    assert gpt2.eos_token_id not in ids
    assert gpt2.decode(ids) == "hi <|endoftext|> there"
    # The shared tokenizer still treats the string as the special token.
    assert gpt2.eos_token_id in gpt2("hi <|endoftext|> there").input_ids
