"""Tokenizers: the real LLaMA-2 vocabulary (ids from Meta's tokenizer) and SmolLM2's byte-level BPE."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llamachat.errors import LlamachatError
from llamachat.tokenizer import bpe_from_gguf, load_tokenizer

TRICKY = [
    "héllo wörld, àçcénts",
    "emoji 😀👍🏽 and a flag 🇫🇷",
    "中文字符 and 日本語のテキスト",
    "tabs\tand  runs   of    spaces",
    "new\nlines\n\n\nand\r\nCRLF",
    "  leading and trailing  ",
    "<s> typed </s> [INST] tags <<SYS>>",
]


def test_llama2_special_ids(llama2_tokenizer):
    tk = llama2_tokenizer
    assert tk.kind == "sentencepiece"
    assert (tk.bos_id, tk.eos_id, tk.vocab_size, tk.eot_ids) == (1, 2, 32000, (2,))
    assert tk.token_id("<unk>") == 0 and tk.token_id("▁") == 29871 and tk.token_id("<0x0A>") == 13
    assert tk.token_id("no-such-piece") is None


def test_llama2_ids_from_meta(llama2_tokenizer):
    """Ids Meta's tokenizer gives (docs/formats.md 4.2): the dummy prefix at the start of every call."""
    tk = llama2_tokenizer
    assert tk.encode("[INST]") == [518, 25580, 29962]
    assert tk.encode("[INST] <<SYS>>\n")[3:] == [3532, 14816, 29903, 6778, 13]
    assert tk.encode("hi [/INST]")[-4:] == [518, 29914, 25580, 29962]
    assert tk.encode("x\n<</SYS>>\n\n")[-8:] == [13, 29966, 829, 14816, 29903, 6778, 13, 13]
    assert tk.encode("") == []


def test_typed_control_tokens_are_text(llama2_tokenizer):
    tk = llama2_tokenizer
    ids = tk.encode("<s>")
    assert 1 not in ids and ids == [529, 29879, 29958]
    assert 2 not in tk.encode("</s>")


@pytest.mark.parametrize("text", TRICKY)
def test_llama2_round_trip(llama2_tokenizer, text):
    tk = llama2_tokenizer
    ids = tk.encode(text)
    assert tk.decode(ids) == text == tk.sp.decode(ids)


@pytest.mark.parametrize("text", TRICKY)
def test_bpe_round_trip(default_model, text):
    tk = default_model.tokenizer
    assert tk.kind == "bpe"
    ids = tk.encode(text)
    assert tk.decode(ids) == text
    assert not any(tk.is_special(i) for i in ids)


def test_smollm_splits_digits(default_model):
    tk = default_model.tokenizer
    ids = tk.encode("12345")
    assert [tk.piece(i) for i in ids] == list("12345")


def test_stream_decoder_holds_back_partial_utf8(llama2_tokenizer):
    tk = llama2_tokenizer
    ids = tk.encode("😀")  # byte-fallback pieces: "▁" then four bytes
    decoder = tk.stream_decoder()
    out = [decoder.push(i) for i in ids]
    assert all("\ufffd" not in piece for piece in out)
    assert "".join(out) == "😀" and out[-1] == "😀"


def test_stream_decoder_keeps_leading_spaces_of_pieces(llama2_tokenizer):
    tk = llama2_tokenizer
    ids = tk.encode("Hello world, again")
    decoder = tk.stream_decoder()
    pieces = [decoder.push(i) for i in ids]
    assert pieces[0] == "Hello"  # the dummy prefix of the first piece goes, as in sp.decode
    assert " world" in pieces


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_stream_equals_decode_equals_text(text):
    from tiny_models import LLAMA2_VOCAB

    tk = _cached(LLAMA2_VOCAB)
    ids = tk.encode(text)
    decoder = tk.stream_decoder()
    streamed = "".join(decoder.push(i) for i in ids) + decoder.flush()
    assert streamed == tk.decode(ids) == tk.sp.decode(ids)


_TOKENIZERS: dict = {}


def _cached(path):
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def test_unsupported_pre_tokenizer_is_refused():
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.merges": []}
    with pytest.raises(LlamachatError, match="pre-type 'qwen2' is not supported .supported: default, gpt-2, smollm, llama-bpe"):
        bpe_from_gguf(meta, "x.gguf")


def test_load_tokenizer_sources(tmp_path, llama2_tokenizer, default_model_path):
    assert load_tokenizer(default_model_path).kind == "bpe"
    assert load_tokenizer(default_model_path.parent).kind == "bpe"  # a directory holding a GGUF
    model_file = tmp_path / "tokenizer.model"
    model_file.write_bytes(llama2_tokenizer.sp.serialized_model_proto())
    assert load_tokenizer(model_file).encode("[INST]") == [518, 25580, 29962]
    assert load_tokenizer(tmp_path).kind == "sentencepiece"
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(LlamachatError, match="not a tokenizer"):
        load_tokenizer(tmp_path / "x.txt")
    with pytest.raises(LlamachatError, match="no such file"):
        load_tokenizer(tmp_path / "missing.model")


def test_tokenizer_json(tmp_path, default_model):
    """A tokenizer.json (written by the tokenizers library from our BPE) loads and keeps specials out of text."""
    src = default_model.tokenizer
    src.tk.save(str(tmp_path / "tokenizer.json"))
    tk = load_tokenizer(tmp_path / "tokenizer.json")
    for text in TRICKY:
        assert tk.encode(text) == src.encode(text)
        assert tk.decode(tk.encode(text)) == text


def test_lone_surrogates_are_encoded_as_the_replacement_character(default_model, llama2_tokenizer):
    """Issue 15 case 8: `tokenizer.encode('a\\udcff b')` raised TypeError (BPE) or failed (SentencePiece)."""
    for tokenizer in (default_model.tokenizer, llama2_tokenizer):
        assert tokenizer.encode("a\udcff b") == tokenizer.encode("a\ufffd b")
