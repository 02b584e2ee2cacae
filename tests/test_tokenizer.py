"""Tokenizers: the real LLaMA-2 vocabulary (ids from Meta's tokenizer), SmolLM2's byte-level BPE,
Meta's Llama-3 tokenizer.model (tiktoken), and llama.cpp's reference vocabularies of the family, each
checked against ids from outside llamachat: llama.cpp's own (tests/data/*.gguf.out) or an independent
implementation (transformers' TikTokenConverter builds a `tokenizers` BPE from the same ranks)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tiny_models import DATA, LLAMA2_VOCAB, LLAMA3_TOKENIZER

from llamachat.errors import LlamachatError
from llamachat.tokenizer import bpe_from_gguf, llama3_special_tokens, load_tokenizer, split_runs

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
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "tekken",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.merges": [],
    }
    with pytest.raises(LlamachatError, match="pre-type 'tekken' is not supported .supported: default, gpt-2, smollm, llama-bpe.*qwen2"):
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


# -------------------------------------------------------------------------------------------------
# llama.cpp's reference vocabularies: its test strings and the ids its tokenizer gives for them


def llamacpp_cases(name: str) -> list[tuple[str, list[int]]]:
    """(text, ids) pairs of `ggml-vocab-NAME.gguf.inp/.out`, split as llama.cpp's test-tokenizer-0 does."""
    sep = "\n__ggml_vocab_test__\n"
    raw = (DATA / f"ggml-vocab-{name}.gguf.inp").read_text(encoding="utf-8").removesuffix(sep)
    texts = raw.split(sep)
    ids = [[int(i) for i in line.split()] for line in (DATA / f"ggml-vocab-{name}.gguf.out").read_text().splitlines()]
    assert len(texts) == len(ids) == 46
    return list(zip(texts, ids))


@pytest.mark.parametrize(
    ("name", "vocab", "kind"),
    [
        ("qwen2", DATA / "ggml-vocab-qwen2.gguf", "bpe"),  # Qwen2, Qwen2.5, Qwen3
        ("deepseek-llm", DATA / "ggml-vocab-deepseek-llm.gguf", "bpe"),
        ("phi-3", DATA / "ggml-vocab-phi-3.gguf", "sentencepiece"),  # "unk is already defined" before
        ("llama-spm", LLAMA2_VOCAB, "sentencepiece"),  # LLaMA-1/2 and Mistral's SentencePiece
        ("llama-bpe", LLAMA3_TOKENIZER, "tiktoken"),  # Meta's tokenizer.model, rebuilt from this vocabulary
    ],
)
def test_ids_from_llamacpp(name, vocab, kind):
    tk = _cached(vocab)
    assert tk.kind == kind
    for text, ids in llamacpp_cases(name):
        assert tk.encode(text) == ids, text
        if kind != "sentencepiece" or text.strip(" "):  # SentencePiece's decode drops the dummy-prefix space
            assert tk.decode(ids) == text


def test_deepseek_r1_qwen_is_qwen2s_split():
    """DeepSeek-R1-Distill-Qwen's GGUF says pre-type deepseek-r1-qwen; llama.cpp splits it as qwen2."""
    from llamachat.checkpoints.gguf import GGUFFile
    from llamachat.tokenizer import tokenizer_from_gguf

    meta = dict(GGUFFile(DATA / "ggml-vocab-qwen2.gguf").metadata) | {"tokenizer.ggml.pre": "deepseek-r1-qwen"}
    tk = tokenizer_from_gguf(meta, "r1-distill-qwen.gguf")
    assert all(tk.encode(text) == ids for text, ids in llamacpp_cases("qwen2"))


def test_qwen2_control_tokens_are_text():
    tk = _cached(DATA / "ggml-vocab-qwen2.gguf")
    im_end = tk.token_id("<|im_end|>")
    assert im_end is not None and tk.is_special(im_end)
    assert im_end not in tk.encode("<|im_end|>") and tk.decode(tk.encode("<|im_end|>")) == "<|im_end|>"


# -------------------------------------------------------------------------------------------------
# Meta's Llama-3 tokenizer.model (tiktoken ranks)


@pytest.fixture(scope="module")
def llama3_oracle():
    """The same ranks handed to the `tokenizers` library by transformers' own converter: another BPE
    implementation (merges derived from the ranks), with Meta's special tokens as added tokens."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    oracle = TikTokenConverter(vocab_file=str(LLAMA3_TOKENIZER), extra_special_tokens=llama3_special_tokens()).converted()
    oracle.encode_special_tokens = True  # typed special tokens are text, as in Meta's encode()
    return lambda text: oracle.encode(text, add_special_tokens=False).ids


def test_llama3_special_tokens_as_meta_numbers_them():
    tk = _cached(LLAMA3_TOKENIZER)
    assert (tk.vocab_size, tk.bos_id, tk.eos_id, tk.eot_ids) == (128256, 128000, 128001, (128001, 128008, 128009))
    expected = {"<|start_header_id|>": 128006, "<|end_header_id|>": 128007, "<|eot_id|>": 128009, "<|python_tag|>": 128010}
    assert {p: tk.token_id(p) for p in expected} == expected
    # Meta names 244 reserved tokens from 2 after its 12 named ones (Hugging Face's files count to 247)
    assert tk.token_id("<|reserved_special_token_245|>") == 128255 and tk.piece(128255) == "<|reserved_special_token_245|>"
    assert tk.is_special(128009) and not tk.is_special(127999)
    assert tk.piece(tk.encode(" Hello")[0]) == "ĠHello"  # pieces spelled as in tokenizer.json / GGUF


@pytest.mark.parametrize("text", [*TRICKY, "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"])
def test_llama3_matches_the_tokenizers_oracle(llama3_oracle, text):
    tk = _cached(LLAMA3_TOKENIZER)
    ids = tk.encode(text)
    assert ids == llama3_oracle(text)
    assert not any(tk.is_special(i) for i in ids) and tk.decode(ids) == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60))
def test_llama3_any_text_matches_the_oracle(llama3_oracle, text):
    tk = _cached(LLAMA3_TOKENIZER)
    assert tk.encode(text) == llama3_oracle(text)


def meta_split_whitespaces_or_nonwhitespaces(s: str, max_consecutive_slice_len: int):
    """meta-llama/llama-models models/llama3/tokenizer.py, `Tokenizer._split_whitespaces_or_nonwhitespaces`
    (the reference; llamachat finds the long runs with a regex instead)."""
    current_slice_len = 0
    current_slice_is_space = s[0].isspace() if len(s) > 0 else False
    slice_start = 0
    for i in range(len(s)):
        is_now_space = s[i].isspace()
        if current_slice_is_space ^ is_now_space:
            current_slice_len = 1
            current_slice_is_space = is_now_space
        else:
            current_slice_len += 1
            if current_slice_len > max_consecutive_slice_len:
                yield s[slice_start:i]
                slice_start = i
                current_slice_len = 1
    yield s[slice_start:]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab \n\t\u3000\u00a0x.", max_size=40), st.integers(1, 6))
def test_long_runs_are_cut_where_meta_cuts_them(text, max_run):
    assert split_runs(text, max_run) == list(meta_split_whitespaces_or_nonwhitespaces(text, max_run))


def test_llama3_long_runs(llama3_oracle):
    """Runs of more than 25,000 (non-)whitespace characters are encoded in pieces, as Meta does."""
    tk = _cached(LLAMA3_TOKENIZER)
    text = "x" * 60_000 + " " * 30_000 + "done"
    ids = tk.encode(text)
    assert tk.decode(ids) == text
    pieces = list(meta_split_whitespaces_or_nonwhitespaces(text, 25_000))
    assert len(pieces) == 4 and ids == [i for piece in pieces for i in llama3_oracle(piece)]


def test_tokenizer_model_is_recognised_by_content(tmp_path, llama2_tokenizer):
    llama3 = tmp_path / "llama3" / "tokenizer.model"
    llama3.parent.mkdir()
    llama3.write_bytes(LLAMA3_TOKENIZER.read_bytes())
    llama2 = tmp_path / "llama2" / "tokenizer.model"
    llama2.parent.mkdir()
    llama2.write_bytes(llama2_tokenizer.sp.serialized_model_proto())
    assert load_tokenizer(llama3).kind == "tiktoken" and load_tokenizer(llama3.parent).kind == "tiktoken"
    assert load_tokenizer(llama2).kind == "sentencepiece"


def _broken_tiktoken(tmp_path, line_number: int, replacement: str):
    lines = LLAMA3_TOKENIZER.read_text().splitlines()
    lines[line_number - 1] = replacement
    path = tmp_path / "tokenizer.model"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("line", "replacement", "message"),
    [
        (5, "not-base64! 4", "line 5 is not 'base64(token bytes) rank'"),
        (7, "IQ== 6 extra", "line 7 is not 'base64(token bytes) rank'"),
        (9, "YWJjZA== 3", "line 9 repeats rank 3 of line 4"),
        (128000, "IQ== 127999", "line 128000 repeats the token of rank 0"),
        (128000, "AP8A/xM= 130000", "ranks do not run 0..127999 without a gap"),
    ],
)
def test_bad_tiktoken_files(tmp_path, line, replacement, message):
    with pytest.raises(LlamachatError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        load_tokenizer(_broken_tiktoken(tmp_path, line, replacement))
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value) and "a tiktoken file has one" in str(e.value)


def test_neither_sentencepiece_nor_tiktoken(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(LlamachatError, match="neither a SentencePiece model nor tiktoken BPE ranks"):
        load_tokenizer(path)


# -------------------------------------------------------------------------------------------------
# Bad tokenizers at start-up: one line naming the file and what is accepted, exit 2


@pytest.fixture(scope="module")
def meta_directory(tmp_path_factory):
    """A tiny Meta-layout model whose tokenizer.model each test replaces."""
    from tiny_models import TinySpec, canonical_weights, hf_model, write_meta

    spec = TinySpec()
    return write_meta(tmp_path_factory.mktemp("meta") / "model", spec, canonical_weights(hf_model(spec), spec))


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (bytes(range(256)) * 8, ("tokenizer.model: neither a SentencePiece model nor tiktoken BPE ranks",)),
        (b"IQ== 0\nIg== 0\n", ("tokenizer.model: line 2 repeats rank 0 of line 1", "one 'base64(token bytes) rank' line per token")),
        (b"IQ== 0\nIg==\n", ("tokenizer.model: line 2 is not 'base64(token bytes) rank'",)),
    ],
)
def test_bad_tokenizer_model_at_start_up(meta_directory, content, fragments):
    from conftest import run_cli
    from test_cli import assert_one_line_error

    (meta_directory / "tokenizer.model").write_bytes(content)
    assert_one_line_error(run_cli("-p", "hi", "-m", str(meta_directory)), str(meta_directory), *fragments)


def test_unknown_pre_tokenizer_at_start_up(tmp_path):
    from conftest import run_cli
    from test_cli import assert_one_line_error
    from tiny_models import TinySpec, canonical_weights, hf_model, write_gguf

    spec = TinySpec()
    vocab = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "tekken",
        "tokenizer.ggml.tokens": ["a", "b"],
        "tokenizer.ggml.merges": ["a b"],
    }
    path = write_gguf(tmp_path / "nemo.gguf", spec, canonical_weights(hf_model(spec), spec), tokenizer=vocab)
    out = run_cli("-p", "hi", "-m", str(path))
    assert_one_line_error(out, f"{path}: tokenizer pre-type 'tekken' is not supported (supported: default, gpt-2", "qwen2", "deepseek-llm")


def test_qwen2_hf_folder_normalizes_and_gguf_does_not(tmp_path):
    """transformers' Qwen2 tokenizer (saved as an HF folder's tokenizer.json) applies NFC; llama.cpp's
    qwen2 GGUF tokenizer has no normalizer. Each source follows its own reference (design.md)."""
    from transformers import Qwen2Tokenizer

    from llamachat.checkpoints.gguf import GGUFFile

    meta = GGUFFile(DATA / "ggml-vocab-qwen2.gguf").metadata
    types, tokens = meta["tokenizer.ggml.token_type"], meta["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens) if int(types[i]) == 1}  # NORMAL pieces; the rest are added tokens
    reference = Qwen2Tokenizer(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]])
    reference.save_pretrained(tmp_path)
    hf, gguf_tk = load_tokenizer(tmp_path / "tokenizer.json"), _cached(DATA / "ggml-vocab-qwen2.gguf")
    decomposed = "Cafe\u0301 cre\u0300me bru\u0302le\u0301e"
    assert hf.encode(decomposed) == reference.encode(decomposed, add_special_tokens=False) == gguf_tk.encode("Café crème brûlée")
    assert hf.decode(hf.encode(decomposed)) == "Café crème brûlée"  # NFC
    assert gguf_tk.encode(decomposed) != hf.encode(decomposed) and gguf_tk.decode(gguf_tk.encode(decomposed)) == decomposed


def test_lone_surrogates_are_encoded_as_the_replacement_character(default_model, llama2_tokenizer):
    """Issue 15 case 8: `tokenizer.encode('a\\udcff b')` raised TypeError (BPE) or failed (SentencePiece)."""
    for tokenizer in (default_model.tokenizer, llama2_tokenizer):
        assert tokenizer.encode("a\udcff b") == tokenizer.encode("a\ufffd b")
