"""Tokenizers behind one interface (see `protocols.Tokenizer`): SentencePiece, byte-level BPE and
Llama-3's tiktoken ranks.

Each kind is built from what people have: a `tokenizer.model`, a `tokenizer.json`, or the
vocabulary stored in a GGUF file. Whatever the source, `encode` treats its input as text: control
and special tokens are never produced from it (a user who types "<s>" or "<|im_end|>" gets those
characters, not the ids), and no BOS/EOS is added. Templates splice special ids in themselves.

Decoding goes through one table, `token_bytes(id)`, shared by `decode` and the streaming decoder, so
a streamed reply is byte-for-byte the decoded reply; the streaming decoder holds back incomplete
UTF-8 sequences and keeps the leading spaces of pieces.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import LlamachatError

# GGUF token types (llama.cpp), equal to SentencePiece's piece types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (  # Meta's Llama-3 tokenizer.py `pat_str`, also Llama-3's tokenizer.json
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (  # Llama-3's with single digits
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK_LLM_SPLITS = (  # llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEEPSEEK_LLM, copied character for character
    "[\r\n]",
    "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
    "\\s?[!-/:-~！-／：-～‘-‟\u3000-。]+",
    "\\s+$",
    "[一-龥ࠀ-一가-\ud7ff]+",
    "\\p{N}+",
)


@dataclass(frozen=True)
class PreTokenizer:
    """How a GGUF `tokenizer.ggml.pre` type splits text before the merges, as llama.cpp's
    llama-vocab.cpp defines it: each regex in turn splits every piece the previous one left, keeping
    matches and the text between them; `ignore_merges` looks a whole piece up in the vocabulary first."""

    splits: tuple[str, ...]
    ignore_merges: bool = False


_GPT2 = PreTokenizer((_GPT2_SPLIT,))
_LLAMA3 = PreTokenizer((LLAMA3_SPLIT,), ignore_merges=True)
_QWEN2 = PreTokenizer((_QWEN2_SPLIT,))
# GGUF `tokenizer.ggml.pre` values for byte-level BPE. Mistral-Nemo's "tekken" is not here: llama.cpp's
# sdist has no reference ids to check it against.
SUPPORTED_PRE = {
    "default": _GPT2,
    "gpt-2": _GPT2,
    "smollm": PreTokenizer((r"\p{N}", _GPT2_SPLIT)),  # SmolLM: every digit its own token, then GPT-2's split
    "llama-bpe": _LLAMA3,  # Llama-3
    "llama3": _LLAMA3,
    "llama-v3": _LLAMA3,
    "qwen2": _QWEN2,  # Qwen2, Qwen2.5, Qwen3
    "deepseek-r1-qwen": _QWEN2,  # DeepSeek-R1-Distill-Qwen
    "deepseek-llm": PreTokenizer(_DEEPSEEK_LLM_SPLITS),  # DeepSeek LLM 7B/67B (and R1-Distill-Llama's is llama-bpe)
}


class StreamDecoder:
    """Ids in, text out as soon as it is whole UTF-8; see the module docstring."""

    def __init__(self, tokenizer: BaseTokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = tokenizer.strip_leading_space

    def push(self, token_id: int) -> str:
        text = self._utf8.decode(self._tokenizer.token_bytes(token_id))
        if self._at_start and text:
            # SentencePiece's decode drops the dummy-prefix space of the first piece; so do we.
            text, self._at_start = text.removeprefix(" "), False
        return text

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def replace_lone_surrogates(text: str) -> tuple[str, bool]:
    """`text` with every lone surrogate (a pasted byte that was not UTF-8, kept by Python's
    surrogateescape as U+DC80-U+DCFF) replaced by U+FFFD, and whether there was one: no tokenizer
    and no UTF-8 file can take them ("TextInputSequence must be str")."""
    if not any("\ud800" <= ch <= "\udfff" for ch in text):
        return text, False
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text), True


class BaseTokenizer:
    """What both kinds share: special-id bookkeeping and byte-table decoding."""

    kind = "base"
    strip_leading_space = False

    def __init__(self, bos_id: int | None, eos_id: int | None, eot_ids: Sequence[int], vocab_size: int):
        self.bos_id, self.eos_id, self.vocab_size = bos_id, eos_id, vocab_size
        self.eot_ids = tuple(dict.fromkeys(i for i in (eos_id, *eot_ids) if i is not None))

    def token_bytes(self, token_id: int) -> bytes:  # pragma: no cover - each kind defines it
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        decoder = self.stream_decoder()
        return "".join(decoder.push(i) for i in ids) + decoder.flush()

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class SentencePieceTokenizer(BaseTokenizer):
    """Meta's tokenizer: `sp.encode` semantics (dummy prefix "▁" at the start of every call)."""

    kind = "sentencepiece"

    def __init__(self, proto: bytes, eot_ids: Sequence[int] = ()):
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor()
        self.sp.LoadFromSerializedProto(proto)
        self.proto = proto
        n = self.sp.get_piece_size()
        bos, eos = self.sp.bos_id(), self.sp.eos_id()
        super().__init__(bos if bos >= 0 else None, eos if eos >= 0 else None, eot_ids, n)
        self.strip_leading_space = _adds_dummy_prefix(proto)
        self._bytes = [self._piece_bytes(i) for i in range(n)]

    def _piece_bytes(self, i: int) -> bytes:
        if self.sp.is_control(i) or self.sp.is_unused(i):
            return b""
        if self.sp.is_unknown(i):
            return " \u2047 ".encode()  # what sp.decode shows for <unk>
        piece = self.sp.id_to_piece(i)
        if self.sp.is_byte(i):
            return bytes([int(piece[3:5], 16)])  # "<0x0A>"
        return piece.replace("\u2581", " ").encode("utf-8")

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(replace_lone_surrogates(text)[0]))

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_id(self, piece: str) -> int | None:
        i, unk = self.sp.piece_to_id(piece), self.sp.unk_id()
        if i == unk:  # an unknown piece maps to the unk id, which is -1 in a vocabulary without one
            return None if unk < 0 or piece != self.sp.id_to_piece(i) else i
        return i

    def piece(self, token_id: int) -> str:
        return self.sp.id_to_piece(token_id)

    def is_special(self, token_id: int) -> bool:
        return bool(self.sp.is_control(token_id))

    def gguf_fields(self) -> dict[str, Any]:
        """The `tokenizer.ggml.*` fields of a GGUF `llama` vocabulary (token types are SentencePiece's
        piece types: GGUF numbers them the same way)."""
        from sentencepiece import sentencepiece_model_pb2 as pb

        m = pb.ModelProto()
        m.ParseFromString(self.proto)
        fields: dict[str, Any] = {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": [p.piece for p in m.pieces],
            "tokenizer.ggml.scores": [p.score for p in m.pieces],
            "tokenizer.ggml.token_type": [int(p.type) for p in m.pieces],
            "tokenizer.ggml.add_space_prefix": m.normalizer_spec.add_dummy_prefix,
        }
        for key, i in (("bos", self.bos_id), ("eos", self.eos_id), ("unknown", self.sp.unk_id())):
            if i is not None and i >= 0:
                fields[f"tokenizer.ggml.{key}_token_id"] = i
        return fields

    def save(self, directory: Path) -> None:
        """tokenizer.model (+ tokenizer_config.json), as Hugging Face and mlx-lm expect them."""
        (directory / "tokenizer.model").write_bytes(self.proto)
        _write_tokenizer_config(directory, self, "LlamaTokenizer")


def _adds_dummy_prefix(proto: bytes) -> bool:
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(proto)
    return m.normalizer_spec.add_dummy_prefix


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[str, int]:
    """GPT-2's reversible map of bytes to printable characters, inverted (character -> byte)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


@lru_cache(maxsize=1)
def _byte_characters() -> list[str]:
    """GPT-2's map of bytes to printable characters (byte -> character)."""
    characters = [""] * 256
    for c, b in _byte_alphabet().items():
        characters[b] = c
    return characters


def _byte_level_bytes(token: str) -> bytes:
    alphabet = _byte_alphabet()
    if all(c in alphabet for c in token):
        return bytes(alphabet[c] for c in token)
    return token.encode("utf-8")  # an added token stored as plain text


def _metaspace_bytes(token: str) -> bytes:
    """SentencePiece-style pieces in a tokenizer.json (Llama-2's): "▁" is a space, "<0x0A>" a byte."""
    if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return bytes([int(token[3:5], 16)])
    return token.replace("\u2581", " ").encode("utf-8")


class BPETokenizer(BaseTokenizer):
    """Byte-level BPE (GPT-2 style) on the `tokenizers` library."""

    kind = "bpe"

    def __init__(self, tk: Any, tokens: Sequence[str], special: set[int], bos_id, eos_id, eot_ids=(), byte_level=True):
        self.tk = tk
        self.pre: str | None = None  # the GGUF pre-tokenizer type (from a GGUF, or matched in a tokenizer.json)
        self.user_defined: set[int] = set()  # added tokens that are not special (GGUF USER_DEFINED)
        # Special tokens (if the tokenizer knows them as added tokens) are encoded as plain text.
        self.tk.encode_special_tokens = True
        super().__init__(bos_id, eos_id, eot_ids, len(tokens))
        self._tokens, self._special = list(tokens), special
        self._ids = {t: i for i, t in enumerate(self._tokens)}
        to_bytes = _byte_level_bytes if byte_level else _metaspace_bytes
        self._bytes = [b"" if i in special else to_bytes(t) for i, t in enumerate(self._tokens)]

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(replace_lone_surrogates(text)[0], add_special_tokens=False).ids

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_id(self, piece: str) -> int | None:
        return self._ids.get(piece)

    def piece(self, token_id: int) -> str:
        return self._tokens[token_id]

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special

    def gguf_fields(self) -> dict[str, Any]:
        """The `tokenizer.ggml.*` fields of a GGUF `gpt2` vocabulary. Only a tokenizer that came from a
        GGUF file knows its pre-tokenizer type; a tokenizer.json's regexes are not mapped back."""
        if self.pre is None:
            raise LlamachatError(
                "this tokenizer.json's pre-tokenizer is none llama.cpp names "
                f"(accepted: byte-level BPE splitting as one of {', '.join(SUPPORTED_PRE)})"
            )
        merges = json.loads(self.tk.to_str())["model"]["merges"]
        # as llama.cpp's converter types them: special added tokens CONTROL, other added ones USER_DEFINED
        types = [CONTROL if i in self._special else USER_DEFINED if i in self.user_defined else NORMAL for i in range(len(self._tokens))]
        fields: dict[str, Any] = {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": self.pre,
            "tokenizer.ggml.tokens": list(self._tokens),
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in merges],
        }
        for key, i in (("bos", self.bos_id), ("eos", self.eos_id)):
            if i is not None:
                fields[f"tokenizer.ggml.{key}_token_id"] = i
        return fields

    def save(self, directory: Path) -> None:
        """tokenizer.json with the special tokens marked (+ tokenizer_config.json)."""
        from tokenizers import AddedToken, Tokenizer

        tk = Tokenizer.from_str(self.tk.to_str())
        tk.add_special_tokens([AddedToken(self._tokens[i], special=True, normalized=False) for i in sorted(self._special)])
        tk.save(str(directory / "tokenizer.json"))
        _write_tokenizer_config(directory, self, "PreTrainedTokenizerFast")


def _write_tokenizer_config(directory: Path, tokenizer: BaseTokenizer, cls: str) -> None:
    config: dict[str, Any] = {"tokenizer_class": cls, "add_bos_token": tokenizer.kind == "sentencepiece"}
    for key, i in (("bos_token", tokenizer.bos_id), ("eos_token", tokenizer.eos_id)):
        if i is not None:
            config[key] = tokenizer.piece(i)
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# Meta's Llama-3 tokenizer (meta-llama/llama-models, models/llama3/tokenizer.py): the special tokens
# after the file's ranks, in this order, then reserved ones up to 256; looked up by name, never by id.
LLAMA3_SPECIAL_TOKENS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",  # end of message (a tool call follows)
    "<|eot_id|>",  # end of turn
    "<|python_tag|>",
    "<|image|>",
)
LLAMA3_RESERVED_SPECIAL_TOKENS = 256
TIKTOKEN_MAX_ENCODE_CHARS = 400_000  # tiktoken panics beyond this (Meta's comment)
TIKTOKEN_MAX_RUN = 25_000  # longer runs of (non-)whitespace are split: tiktoken issue #195


def llama3_special_tokens() -> list[str]:
    named = list(LLAMA3_SPECIAL_TOKENS)
    reserved = [f"<|reserved_special_token_{2 + i}|>" for i in range(LLAMA3_RESERVED_SPECIAL_TOKENS - len(named))]
    return named + reserved


def split_runs(text: str, max_run: int = TIKTOKEN_MAX_RUN) -> list[str]:
    """`text` cut so that no piece holds more than `max_run` consecutive whitespace or consecutive
    non-whitespace characters, where Meta's `_split_whitespaces_or_nonwhitespaces` cuts: every
    `max_run` characters into a longer run, counted from its start. (A regex finds the long runs:
    Meta's loop over characters would cost as much as the encoding itself.)"""
    if len(text) <= max_run:
        return [text]
    cuts = [
        run.start() + k * max_run
        for run in re.finditer(rf"\s{{{max_run + 1},}}|\S{{{max_run + 1},}}", text)
        for k in range(1, (len(run.group()) - 1) // max_run + 1)
    ]
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


class TiktokenTokenizer(BaseTokenizer):
    """Meta's Llama-3 `tokenizer.model` (tiktoken BPE ranks) on the `tiktoken` package, as Meta loads
    it: Llama-3's split pattern, the 256 special tokens from id len(ranks), and input cut at 400,000
    characters and at runs of 25,000 (non-)whitespace characters. Text never yields a special id."""

    kind = "tiktoken"

    def __init__(self, ranks: dict[bytes, int], name: str = "tokenizer.model"):
        import tiktoken

        n = len(ranks)
        self.special_ids = {token: n + i for i, token in enumerate(llama3_special_tokens())}
        self.encoding = tiktoken.Encoding(name=name, pat_str=LLAMA3_SPLIT, mergeable_ranks=ranks, special_tokens=self.special_ids)
        s = self.special_ids
        super().__init__(s["<|begin_of_text|>"], s["<|end_of_text|>"], (s["<|eom_id|>"], s["<|eot_id|>"]), n + len(s))
        self.n_ranks = n
        self._bytes = [b""] * self.vocab_size
        for token, rank in ranks.items():
            self._bytes[rank] = token
        self._names = list(s)
        self._ids: dict[str, int] | None = None  # piece -> id, built on the first look-up of a plain piece

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for start in range(0, len(text), TIKTOKEN_MAX_ENCODE_CHARS):
            for piece in split_runs(text[start : start + TIKTOKEN_MAX_ENCODE_CHARS]):
                ids += self.encoding.encode_ordinary(piece)  # = Meta's encode(allowed_special=(), disallowed_special=())
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_id(self, piece: str) -> int | None:
        if piece in self.special_ids:
            return self.special_ids[piece]
        if self._ids is None:  # 0.6 s for 128,000 pieces: not at start-up
            self._ids = {self.piece(i): i for i in range(self.n_ranks)}
        return self._ids.get(piece)

    def piece(self, token_id: int) -> str:
        """Plain tokens spelled as Hugging Face and GGUF spell Llama-3's (GPT-2's byte-to-character
        map, "ĠHello"); special tokens by name."""
        if token_id >= self.n_ranks:
            return self._names[token_id - self.n_ranks]
        return "".join(_byte_characters()[b] for b in self._bytes[token_id])

    def is_special(self, token_id: int) -> bool:
        return token_id >= self.n_ranks

    def gguf_fields(self) -> dict[str, Any]:
        raise LlamachatError(
            "a tiktoken tokenizer.model cannot be written to GGUF yet (its merges would have to be derived from the ranks)"
        )

    def save(self, directory: Path) -> None:
        raise LlamachatError("a tiktoken tokenizer.model cannot be written as tokenizer.json yet")


# ------------------------------------------------------------------------------------------------
# Building tokenizers from each source


def sentencepiece_from_gguf(meta: dict[str, Any], source: str = "GGUF") -> SentencePieceTokenizer:
    """A SentencePiece model rebuilt from a GGUF `llama` vocabulary (pieces, scores, types): BPE with
    byte fallback, identity normalizer, dummy prefix, no whitespace folding, as Meta's model is."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    tokens = meta["tokenizer.ggml.tokens"]
    scores = meta.get("tokenizer.ggml.scores")
    types = meta.get("tokenizer.ggml.token_type")
    m = pb.ModelProto()
    t = m.trainer_spec
    t.model_type = pb.TrainerSpec.BPE
    t.vocab_size = len(tokens)
    t.byte_fallback = True
    ids = {k: meta.get(f"tokenizer.ggml.{k}_token_id", -1) for k in ("unknown", "bos", "eos", "padding")}
    t.unk_id, t.bos_id, t.eos_id, t.pad_id = (int(ids[k]) for k in ("unknown", "bos", "eos", "padding"))
    for key, field in (("unknown", "unk_piece"), ("bos", "bos_piece"), ("eos", "eos_piece"), ("padding", "pad_piece")):
        if 0 <= ids[key] < len(tokens):
            setattr(t, field, tokens[ids[key]])
    n = m.normalizer_spec
    n.name = "identity"
    n.add_dummy_prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    n.remove_extra_whitespaces = False
    n.escape_whitespaces = True
    for i, piece in enumerate(tokens):
        p = m.pieces.add()
        p.piece = piece
        p.score = float(scores[i]) if scores is not None else 0.0
        p.type = _piece_type(int(types[i]) if types is not None else NORMAL, i, t.unk_id)
    try:
        return SentencePieceTokenizer(m.SerializeToString(), eot_ids=_gguf_eot_ids(meta))
    except RuntimeError as e:
        raise LlamachatError(f"{source}: cannot build a SentencePiece tokenizer from its vocabulary ({e})") from None


def _piece_type(gguf_type: int, i: int, unk_id: int) -> int:
    """SentencePiece allows one UNKNOWN piece, the unk id's. Phi-3's GGUF vocabulary marks <unk> CONTROL
    and its 53 [PADnnnnn] fillers UNKNOWN; llama.cpp never produces either from text, nor does an
    UNUSED piece in SentencePiece."""
    if i == unk_id:
        return UNKNOWN
    return UNUSED if gguf_type == UNKNOWN else gguf_type


def bpe_from_gguf(meta: dict[str, Any], source: str = "GGUF") -> BPETokenizer:
    """A byte-level BPE tokenizer from a GGUF `gpt2` vocabulary (tokens and merges)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in SUPPORTED_PRE:
        raise LlamachatError(f"{source}: tokenizer pre-type {pre!r} is not supported (supported: {', '.join(SUPPORTED_PRE)})")
    tokens = meta["tokenizer.ggml.tokens"]
    types = meta.get("tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    vocab = {t: i for i, t in enumerate(tokens)}
    spec = SUPPORTED_PRE[pre]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=spec.ignore_merges))
    steps = [pre_tokenizers.Split(Regex(split), behavior="isolated") for split in spec.splits]
    tk.pre_tokenizer = pre_tokenizers.Sequence([*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    special = {i for i, ty in enumerate(types) if int(ty) in (CONTROL, UNUSED)} if types is not None else set()
    bos, eos = meta.get("tokenizer.ggml.bos_token_id"), meta.get("tokenizer.ggml.eos_token_id")
    tokenizer = BPETokenizer(tk, tokens, special, _opt_int(bos), _opt_int(eos), _gguf_eot_ids(meta))
    tokenizer.pre = pre
    return tokenizer


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


def _gguf_eot_ids(meta: dict[str, Any]) -> list[int]:
    return [int(meta[k]) for k in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id") if k in meta]


def tokenizer_from_gguf(meta: dict[str, Any], source: str = "GGUF") -> BaseTokenizer:
    model = meta.get("tokenizer.ggml.model")
    if "tokenizer.ggml.tokens" not in meta:
        raise LlamachatError(f"{source}: the GGUF file holds no tokenizer vocabulary")
    if model == "llama":
        return sentencepiece_from_gguf(meta, source)
    if model == "gpt2":
        return bpe_from_gguf(meta, source)
    raise LlamachatError(f"{source}: tokenizer model {model!r} is not supported (supported: llama, gpt2)")


def tokenizer_from_json(path: Path) -> BPETokenizer:
    """A `tokenizer.json` (Hugging Face tokenizers), with its added special tokens kept out of text."""
    from tokenizers import Tokenizer

    try:
        tk = Tokenizer.from_file(str(path))
        spec = json.loads(path.read_text(encoding="utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise LlamachatError(f"{path}: not a readable tokenizer.json ({e})") from None
    vocab = tk.get_vocab(with_added_tokens=True)
    tokens = [""] * (max(vocab.values()) + 1)
    for piece, i in vocab.items():
        tokens[i] = piece
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    config = _read_json(path.with_name("tokenizer_config.json"))
    bos = vocab.get(_token_text(config.get("bos_token")))
    eos = vocab.get(_token_text(config.get("eos_token")))
    byte_level = "ByteLevel" in json.dumps(spec.get("decoder"))
    tokenizer = BPETokenizer(tk, tokens, special, bos, eos, byte_level=byte_level)
    tokenizer.strip_leading_space = not byte_level  # Metaspace decoders drop the prefix space
    tokenizer.pre = json_pre_type(spec) if byte_level else None
    tokenizer.user_defined = {t["id"] for t in spec.get("added_tokens", []) if not t.get("special")}
    return tokenizer


def _splits_of(step: dict[str, Any]) -> list[str] | None:
    """The regexes one tokenizers pre-tokenizer step splits by (None: a step llama.cpp has no name for)."""
    kind = step.get("type")
    if kind == "Sequence":
        out: list[str] = []
        for sub in step.get("pretokenizers", []):
            got = _splits_of(sub)
            if got is None:
                return None
            out += got
        return out
    if kind == "Split" and step.get("behavior") == "Isolated" and not step.get("invert"):
        pattern = step.get("pattern", {})
        return [pattern["Regex"]] if "Regex" in pattern else None
    if kind == "Digits" and step.get("individual_digits"):
        return [r"\p{N}"]
    if kind == "ByteLevel":
        return [_GPT2_SPLIT] if step.get("use_regex", True) else []
    return None


def json_pre_type(spec: dict[str, Any]) -> str | None:
    """The GGUF `tokenizer.ggml.pre` name whose regexes (llama.cpp's) are exactly the ones this
    tokenizer.json's pre-tokenizer splits by, with the same ignore_merges; the first such name, which
    is the one llama.cpp's converter writes for that family; None if there is none."""
    splits = _splits_of(spec.get("pre_tokenizer") or {})
    if splits is None:
        return None
    ignore_merges = bool((spec.get("model") or {}).get("ignore_merges", False))
    for name in ("gpt-2", "smollm", "llama-bpe", "qwen2", "deepseek-llm"):
        pre = SUPPORTED_PRE[name]
        if pre.splits == tuple(splits) and pre.ignore_merges == ignore_merges:
            return name
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


TIKTOKEN_LINE = "one 'base64(token bytes) rank' line per token, ranks 0, 1, 2, ... each once"


def read_tiktoken_ranks(path: Path, data: bytes) -> dict[bytes, int]:
    """The BPE ranks of a tiktoken file; LlamachatError naming the first bad line. Stricter than Meta's
    `load_bpe_file`, which skips a malformed line with a warning and so shifts every id after it."""
    ranks: dict[bytes, int] = {}
    seen: dict[int, int] = {}
    for number, line in enumerate(data.decode("ascii").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
            if len(fields) != 2 or rank < 0:
                raise ValueError
        except (ValueError, IndexError, binascii.Error):
            raise LlamachatError(f"{path}: line {number} is not 'base64(token bytes) rank' (a tiktoken file has {TIKTOKEN_LINE})") from None
        if rank in seen:
            raise LlamachatError(f"{path}: line {number} repeats rank {rank} of line {seen[rank]} (a tiktoken file has {TIKTOKEN_LINE})")
        if token in ranks:
            raise LlamachatError(f"{path}: line {number} repeats the token of rank {ranks[token]} (a tiktoken file has {TIKTOKEN_LINE})")
        ranks[token], seen[rank] = rank, number
    if not ranks or max(seen) != len(ranks) - 1:
        raise LlamachatError(f"{path}: ranks do not run 0..{len(ranks) - 1} without a gap (a tiktoken file has {TIKTOKEN_LINE})")
    return ranks


def _is_text(data: bytes) -> bool:
    """tiktoken files are printable ASCII lines; a SentencePiece model is binary protobuf."""
    return all(32 <= b < 127 or b in b"\r\n\t" for b in data[:4096]) and data.isascii()


def tokenizer_from_model_file(path: Path) -> BaseTokenizer:
    """A `tokenizer.model`, recognised by its content: SentencePiece protobuf (LLaMA-1/2, Mistral,
    Phi-3) or tiktoken BPE ranks (Llama-3)."""
    data = path.read_bytes()
    if data and _is_text(data):
        return TiktokenTokenizer(read_tiktoken_ranks(path, data), path.name)
    try:
        return SentencePieceTokenizer(data)
    except RuntimeError:
        raise LlamachatError(
            f"{path}: neither a SentencePiece model nor tiktoken BPE ranks (accepted: those two kinds of tokenizer.model)"
        ) from None


def load_tokenizer(path: str | Path) -> BaseTokenizer:
    """A tokenizer from a `tokenizer.model`, a `tokenizer.json`, a GGUF file or a model directory."""
    path = Path(path)
    if path.is_dir():
        for name in ("tokenizer.model", "tokenizer.json"):
            if (path / name).is_file():
                return load_tokenizer(path / name)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return load_tokenizer(ggufs[0])
        raise LlamachatError(f"{path}: no tokenizer here (looked for tokenizer.model, tokenizer.json, *.gguf)")
    if not path.exists():
        raise LlamachatError(f"{path}: no such file")
    if path.suffix == ".gguf":
        from .checkpoints.gguf import GGUFFile

        return tokenizer_from_gguf(GGUFFile(path).metadata, str(path))
    if path.suffix == ".json":
        return tokenizer_from_json(path)
    if path.suffix == ".model":
        return tokenizer_from_model_file(path)
    raise LlamachatError(f"{path}: not a tokenizer (accepted: tokenizer.model, tokenizer.json, .gguf, or a model directory)")
