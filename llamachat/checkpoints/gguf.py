"""GGUF files (llama.cpp): metadata, a ModelConfig, and memory-mapped weights.

The header is parsed here directly (one pass over the key/value pairs and tensor infos): gguf's own
`GGUFReader` builds an object per field and takes 4-6 s on the default model's 49k-token vocabulary,
which is most of a chat's start-up. The `gguf` package still supplies the type tables and the
dequantizers (`gguf.quants.dequantize`), and `GGUFReader` is the oracle this reader is tested against.

Tensors stay memory-mapped: F32 weights are zero-copy views of the file, quantized ones are handed
to backends as `QuantizedTensor`s over the file's bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LlamachatError
from ..protocols import ModelConfig, QuantizedTensor, RopeScaling, Tensor, as_float32
from ..quantize import bf16_tensor
from ..rope import DIVISOR_WEIGHTS, longrope_attention_factor
from .names import display_name

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF value types -> struct format (scalars); 8 = string, 9 = array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9

# ggml tensor types held as plain arrays; everything else is a block-quantized type.
_DENSE = {0: np.float32, 1: np.float16}
SUPPORTED_QUANTS = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K")


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (ggml stores the dims reversed)
    ggml_type: int
    offset: int  # from the start of the data section


class GGUFFile:
    """A parsed GGUF header over a read-only memory map of the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # mmap of an empty file
            raise LlamachatError(f"{self.path}: empty file, not a GGUF model") from None
        except OSError as e:
            raise LlamachatError(f"{self.path}: cannot read ({e.strerror})") from None
        if self._map[:4] != MAGIC:
            raise LlamachatError(f"{self.path}: not a GGUF file (no GGUF magic)")
        try:
            self._parse()
        except (struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError) as e:
            raise LlamachatError(f"{self.path}: truncated or corrupt GGUF file ({e})") from None

    # -- parsing ---------------------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self._map
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise LlamachatError(f"{self.path}: GGUF version {version} is not supported (2 and 3 are)")
        self._pos = 24
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            (vtype,) = self._unpack("<I")
            self.metadata[key] = self._value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            dims = self._unpack(f"<{n_dims}Q")
            ggml_type, offset = self._unpack("<IQ")
            infos.append(TensorInfo(name, tuple(int(d) for d in reversed(dims)), ggml_type, offset))
        alignment = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        self.data_offset = -(-self._pos // alignment) * alignment
        self.tensors = {t.name: t for t in infos}
        for t in infos:
            end = self.data_offset + t.offset + self._nbytes(t)
            if end > len(buf):
                raise LlamachatError(f"{self.path}: truncated GGUF file (tensor {t.name} ends past the end of the file)")

    def _unpack(self, fmt: str) -> tuple:
        values = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return values

    def _string(self) -> str:
        (n,) = struct.unpack_from("<Q", self._map, self._pos)
        start = self._pos + 8
        self._pos = start + n
        if self._pos > len(self._map):
            raise IndexError("string runs past the end of the file")
        return self._map[start : self._pos].decode("utf-8", errors="surrogateescape")

    def _value(self, vtype: int) -> Any:
        if vtype in _SCALAR:
            return self._unpack(_SCALAR[vtype])[0]
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            item_type, count = self._unpack("<IQ")
            if item_type in _NUMPY:
                arr = np.frombuffer(self._map, dtype=_NUMPY[item_type], count=count, offset=self._pos)
                self._pos += arr.nbytes
                return arr
            if item_type == _STRING:
                return self._strings(count)
            return [self._value(item_type) for _ in range(count)]
        raise ValueError(f"unknown GGUF value type {vtype}")

    def _strings(self, count: int) -> list[str]:
        # The hot loop of the header (vocabularies and merges): keep it to bare slicing.
        buf, pos, unpack, out = self._map, self._pos, struct.Struct("<Q").unpack_from, []
        for _ in range(count):
            (n,) = unpack(buf, pos)
            pos += 8
            out.append(buf[pos : pos + n].decode("utf-8", errors="surrogateescape"))
            pos += n
        if pos > len(buf):
            raise IndexError("string array runs past the end of the file")
        self._pos = pos
        return out

    # -- tensors ---------------------------------------------------------------------------------
    @staticmethod
    def _nbytes(t: TensorInfo) -> int:
        import gguf

        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
        return int(np.prod(t.shape)) // block * type_size

    def type_name(self, name: str) -> str:
        import gguf

        try:
            return gguf.GGMLQuantizationType(self.tensors[name].ggml_type).name
        except ValueError:
            return f"type {self.tensors[name].ggml_type}"

    def tensor(self, name: str) -> Tensor:
        """One tensor, memory-mapped: an ndarray for F32/F16, a QuantizedTensor otherwise."""
        t = self.tensors[name]
        start = self.data_offset + t.offset
        if t.ggml_type in _DENSE:
            return np.frombuffer(self._map, dtype=_DENSE[t.ggml_type], count=int(np.prod(t.shape)), offset=start).reshape(t.shape)
        type_name = self.type_name(name)
        import gguf

        block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
        if t.shape[-1] % block:
            raise LlamachatError(f"{self.path}: tensor {name} rows ({t.shape[-1]}) are not whole {type_name} blocks of {block}")
        row_bytes = t.shape[-1] // block * type_size
        raw = np.frombuffer(self._map, dtype=np.uint8, count=self._nbytes(t), offset=start).reshape(*t.shape[:-1], row_bytes)
        if type_name not in SUPPORTED_QUANTS:
            # kept packed and refused only when dequantized: a backend that runs the file itself
            # (llamacpp) takes any type llama.cpp has, K-quants and i-quants included
            refusal = f"{self.path}: tensor {name} is {type_name}, which llamachat does not read (supported: {', '.join(SUPPORTED_QUANTS)})"
            return QuantizedTensor(f"gguf:{type_name}", t.shape, 8 * type_size // block, block, raw, dequantizer=_refuse(refusal))
        if type_name == "BF16":  # dense bfloat16, as a safetensors BF16 tensor is (so convert keeps it bf16)
            return bf16_tensor(raw)
        bits = {"Q8_0": 8, "Q6_K": 6}.get(type_name, 4)
        return QuantizedTensor(f"gguf:{type_name}", t.shape, bits, block, raw, dequantizer=_dequantize_gguf)


def _refuse(message: str):
    def dequantize(_q: QuantizedTensor) -> np.ndarray:
        raise LlamachatError(message)

    return dequantize


def _dequantize_gguf(q: QuantizedTensor) -> np.ndarray:
    import gguf

    qtype = gguf.GGMLQuantizationType[q.scheme.removeprefix("gguf:")]
    out = gguf.quants.dequantize(q.data, qtype)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(q.shape)


# ------------------------------------------------------------------------------------------------
# From a GGUF file to llamachat's config and canonical weights


def _meta(gf: GGUFFile, key: str, default: Any = None, *, required: bool = False) -> Any:
    if key in gf.metadata:
        return gf.metadata[key]
    if required:
        raise LlamachatError(f"{gf.path}: GGUF metadata lacks {key}")
    return default


# The token texts llama.cpp ends generation at, whatever ids the file declares (llama-vocab.cpp,
# llama_vocab::impl::load, `special_eog_ids`, as vendored in llama-cpp-python 0.3.36). A GGUF declares
# one EOS (Llama-3.1-Instruct's is <|eot_id|>, Qwen2.5's <|im_end|>, Phi-3's <|endoftext|>), while the
# model also ends turns with <|end_of_text|> and <|eom_id|>, <|endoftext|>, <|end|>: llama.cpp finds
# those by their text. (Its FIM tokens, also on that list, end infilling, not a chat turn: left out.)
EOG_TEXTS = frozenset(
    (
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
        "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
        "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[",
    )
)  # fmt: skip


def end_of_generation_ids(declared: list[Any], tokens: list[str]) -> tuple[int, ...]:
    """The declared EOS/EOT/EOM ids, then every token whose text is on llama.cpp's list (without <|end|>
    where <|return|> and <|call|> both exist, the workaround llama.cpp applies to gpt-oss's vocabulary)."""
    texts = set(EOG_TEXTS)
    if {"<|return|>", "<|call|>"} <= set(tokens) or {"<|calls|>", "<|flush|>"} <= set(tokens):
        texts.discard("<|end|>")
    by_text = (i for i, t in enumerate(tokens) if t in texts)
    return tuple(dict.fromkeys([*(int(i) for i in declared if i is not None), *by_text]))


# llama.cpp runs these with NEOX (half-split) RoPE and its converter stores their q/k rows as HF has
# them; `llama` (Mistral included: llama.cpp writes it as "llama") stores them interleaved.
NEOX_ARCHS = ("qwen2", "qwen3", "phi3")
GGUF_ARCHS = ("llama", "qwen2", "qwen3", "phi3")  # general.architecture values read (mistral is "llama")
ROPE_SCALINGS = ("none", "linear", "longrope (phi3)")


def tensor_name(canonical: str) -> str:
    """The GGUF tensor name of a canonical weight: biases keep their own suffix, the rest get ".weight"."""
    return canonical if canonical.endswith(".bias") else canonical + ".weight"


def _arch(gf: GGUFFile) -> str:
    """The canonical architecture: GGUF's own name, or "mistral" for a `llama` file with a sliding window."""
    arch = _meta(gf, "general.architecture", "unknown")
    if arch not in GGUF_ARCHS:
        raise LlamachatError(
            f"{gf.path}: a {arch!r} model; llamachat runs the architectures {', '.join(GGUF_ARCHS)} (Mistral is stored as llama)"
        )
    if arch == "llama" and _meta(gf, "llama.attention.sliding_window"):
        return "mistral"
    return arch


def _rope_scaling(gf: GGUFFile, a: str, arch: str, context: int) -> RopeScaling | None:
    kind = _meta(gf, a + "rope.scaling.type", "none")
    original = _meta(gf, a + "rope.scaling.original_context_length")
    if kind == "linear":
        factor = float(_meta(gf, a + "rope.scaling.factor", 1.0))
        return RopeScaling("linear", factor, int(original) if original else None)
    if arch == "phi3" and ("rope_factors_long.weight" in gf.tensors or "rope_factors_short.weight" in gf.tensors):
        # Phi-3 longrope: per-frequency divisors, long or short by the cache's context (llamachat/rope.py)
        if not original or not {"rope_factors_long.weight", "rope_factors_short.weight"} <= set(gf.tensors):
            raise LlamachatError(
                f"{gf.path}: longrope needs rope_factors_long, rope_factors_short and {a}rope.scaling.original_context_length"
            )
        factor = context / int(original)
        attention = _meta(gf, a + "rope.scaling.attn_factor")
        attention = float(attention) if attention is not None else longrope_attention_factor(factor, int(original))
        return RopeScaling("longrope", factor, int(original), attention)
    if kind not in ("none", ""):
        raise LlamachatError(f"{gf.path}: RoPE scaling {kind!r} is not supported (supported: {', '.join(ROPE_SCALINGS)})")
    return None


def read_config(gf: GGUFFile) -> ModelConfig:
    """ModelConfig from the metadata of a llama, mistral, qwen2, qwen3 or phi3 GGUF."""
    arch = _arch(gf)
    a = ("llama" if arch == "mistral" else arch) + "."
    dim = int(_meta(gf, a + "embedding_length", required=True))
    n_heads = int(_meta(gf, a + "attention.head_count", required=True))
    n_kv = int(_meta(gf, a + "attention.head_count_kv", n_heads))
    head_dim = int(_meta(gf, a + "attention.key_length", _meta(gf, a + "rope.dimension_count", dim // n_heads)))
    tokens = _meta(gf, "tokenizer.ggml.tokens")
    vocab = int(_meta(gf, a + "vocab_size", len(tokens) if tokens is not None else gf.tensors["token_embd.weight"].shape[0]))
    context = int(_meta(gf, a + "context_length", 4096))
    window = int(_meta(gf, a + "attention.sliding_window", 0) or 0)
    bos = _meta(gf, "tokenizer.ggml.bos_token_id")
    eos = _meta(gf, "tokenizer.ggml.eos_token_id")
    declared = [_meta(gf, f"tokenizer.ggml.{k}_token_id") for k in ("eos", "eot", "eom")]
    return ModelConfig(
        dim=dim,
        n_layers=int(_meta(gf, a + "block_count", required=True)),
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        ffn_dim=int(_meta(gf, a + "feed_forward_length", required=True)),
        vocab_size=vocab,
        norm_eps=float(_meta(gf, a + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_meta(gf, a + "rope.freq_base", 10000.0)),
        rope_scaling=_rope_scaling(gf, a, arch, context),
        context_length=context,
        tied_embeddings="output.weight" not in gf.tensors,
        bos_id=None if bos is None else int(bos),
        eos_id=None if eos is None else int(eos),
        eot_ids=end_of_generation_ids(declared, tokens or []),
        chat_template=_meta(gf, "tokenizer.chat_template"),
        name=display_name(gf.path.stem, gf.metadata),
        arch=arch,
        sliding_window=window or None,
        qkv_bias=arch == "qwen2",
        qk_norm=arch == "qwen3",
    )


# Tensors a switch adds: present in a file whose architecture does not declare the switch, they
# would be silently ignored, so the file is refused instead.
_SWITCH_TENSORS = {
    "attn_q.bias": "qwen2",
    "attn_k.bias": "qwen2",
    "attn_v.bias": "qwen2",
    "attn_q_norm.weight": "qwen3",
    "attn_k_norm.weight": "qwen3",
}


def _row_slice(t: Tensor, start: int, stop: int) -> Tensor:
    """Rows start:stop of a weight, dense or packed (GGUF blocks never cross a row)."""
    if isinstance(t, QuantizedTensor):
        return replace(t, shape=(stop - start, *t.shape[1:]), data=t.data[start:stop])
    return t[start:stop]


def _unfused(gf: GGUFFile, config: ModelConfig) -> dict[str, Tensor]:
    """Phi-3's fused attn_qkv and ffn_up (gate rows, then up rows) split into canonical weights."""
    out: dict[str, Tensor] = {}
    q, kv, ffn = config.q_dim, config.kv_dim, config.ffn_dim
    for i in range(config.n_layers):
        b = f"blk.{i}."
        for fused, want in ((b + "attn_qkv.weight", (q + 2 * kv, config.dim)), (b + "ffn_up.weight", (2 * ffn, config.dim))):
            if fused not in gf.tensors:
                raise LlamachatError(f"{gf.path}: missing tensor {fused} (a phi3 GGUF fuses q/k/v and gate/up)")
            if gf.tensors[fused].shape != want:
                raise LlamachatError(
                    f"{gf.path}: tensor {fused} has shape {list(gf.tensors[fused].shape)}, the config implies {list(want)}"
                )
        qkv, gate_up = gf.tensor(b + "attn_qkv.weight"), gf.tensor(b + "ffn_up.weight")
        out[b + "attn_q"] = _row_slice(qkv, 0, q)
        out[b + "attn_k"] = _row_slice(qkv, q, q + kv)
        out[b + "attn_v"] = _row_slice(qkv, q + kv, q + 2 * kv)
        out[b + "ffn_gate"] = _row_slice(gate_up, 0, ffn)
        out[b + "ffn_up"] = _row_slice(gate_up, ffn, 2 * ffn)
    return out


def _check_switches(gf: GGUFFile, config: ModelConfig) -> None:
    for name in gf.tensors:
        part = name.split(".", 2)[-1] if name.startswith("blk.") else ""
        owner = _SWITCH_TENSORS.get(part)
        if owner and owner != config.arch:
            raise LlamachatError(
                f"{gf.path}: tensor {name} belongs to a {owner} model but the file says {config.arch!r} "
                f"(accepted: {owner} files carry it, others must not)"
            )


def read_weights(gf: GGUFFile, config: ModelConfig) -> dict[str, Tensor]:
    """The canonical weights (see protocols.py), memory-mapped. `llama` files store q/k interleaved
    (llama.cpp's converter undoes HF's permutation); qwen2, qwen3 and phi3 files store them in HF's
    half-split order, which is permuted here, q/k biases and q/k norms (within a head) included."""
    from .layouts import hf_to_interleaved

    _check_switches(gf, config)
    expected = config.weight_shapes()
    weights = _unfused(gf, config) if config.arch == "phi3" else {}
    for name in expected:
        if name in weights:
            t = weights[name]
        else:
            gguf_name = tensor_name(name)
            if gguf_name not in gf.tensors:
                raise LlamachatError(f"{gf.path}: missing tensor {gguf_name} (a {config.arch} model has it)")
            t = gf.tensor(gguf_name)
        if tuple(t.shape) != expected[name]:
            raise LlamachatError(
                f"{gf.path}: tensor {tensor_name(name)} has shape {list(t.shape)}, the config implies {list(expected[name])}"
            )
        weights[name] = t
    if config.arch in NEOX_ARCHS:
        for i in range(config.n_layers):
            for part, heads in (("attn_q", config.n_heads), ("attn_k", config.n_kv_heads)):
                for name, n in ((f"blk.{i}.{part}", heads), (f"blk.{i}.{part}.bias", heads), (f"blk.{i}.{part}_norm", 1)):
                    if name in weights:
                        weights[name] = hf_to_interleaved(weights[name], n)
    for extra in DIVISOR_WEIGHTS:  # RoPE divisors (Llama-3.1, longrope): one per rotated pair
        if extra + ".weight" in gf.tensors:
            weights[extra] = gf.tensor(extra + ".weight")
            if tuple(weights[extra].shape) != (config.head_dim // 2,):
                raise LlamachatError(
                    f"{gf.path}: tensor {extra}.weight has shape {list(weights[extra].shape)}, expected [{config.head_dim // 2}] (head_dim / 2)"
                )
    return {k: weights[k] for k in [*expected, *(e for e in DIVISOR_WEIGHTS if e in weights)]}


# ------------------------------------------------------------------------------------------------
# Writing (llamachat convert --to gguf), with gguf's own GGUFWriter


def _fuse(parts: list[Tensor]) -> Tensor:
    """Rows of several weights stacked (Phi-3's attn_qkv, gate/up), dense or packed alike."""
    if all(isinstance(t, QuantizedTensor) for t in parts) and len({t.scheme for t in parts}) == 1:  # type: ignore[union-attr]
        first = parts[0]
        data = np.concatenate([t.data for t in parts])  # type: ignore[union-attr]
        return replace(first, shape=(sum(t.shape[0] for t in parts), *first.shape[1:]), data=data)
    if all(isinstance(t, np.ndarray) for t in parts) and len({t.dtype for t in parts}) == 1:  # type: ignore[union-attr]
        return np.concatenate(parts)
    return np.concatenate([np.asarray(as_float32(t)) for t in parts])


def gguf_tensors(config: ModelConfig, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Canonical weights under the GGUF names and q/k layout of `config.arch` (see read_weights),
    Phi-3's q/k/v and gate/up fused again."""
    from .layouts import interleaved_to_hf

    out = dict(tensors)
    if config.arch in NEOX_ARCHS:
        for i in range(config.n_layers):
            for part, heads in (("attn_q", config.n_heads), ("attn_k", config.n_kv_heads)):
                for name, n in ((f"blk.{i}.{part}", heads), (f"blk.{i}.{part}.bias", heads), (f"blk.{i}.{part}_norm", 1)):
                    if name in out:
                        out[name] = interleaved_to_hf(out[name], n)
    if config.arch == "phi3":
        for i in range(config.n_layers):
            b = f"blk.{i}."
            out[b + "attn_qkv"] = _fuse([out.pop(b + k) for k in ("attn_q", "attn_k", "attn_v")])
            out[b + "ffn_up"] = _fuse([out.pop(b + "ffn_gate"), out.pop(b + "ffn_up")])
    return {tensor_name(k): v for k, v in out.items()}


def write_gguf(path: Path, config: ModelConfig, tensors: dict[str, Tensor], tokenizer_fields: dict[str, Any]) -> None:
    """A GGUF of canonical `tensors` for `config.arch` (Mistral as llama.cpp writes it: "llama", plus
    its sliding window): float32/float16 arrays as F32/F16, `bf16` as BF16 and `gguf:*`
    QuantizedTensors as their raw blocks. The caller makes the write atomic."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama" if config.arch == "mistral" else config.arch)
    w.add_name(config.name)
    w.add_context_length(config.context_length)
    w.add_embedding_length(config.dim)
    w.add_block_count(config.n_layers)
    w.add_feed_forward_length(config.ffn_dim)
    w.add_head_count(config.n_heads)
    w.add_head_count_kv(config.n_kv_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_layer_norm_rms_eps(config.norm_eps)
    w.add_rope_freq_base(config.rope_theta)
    w.add_rope_dimension_count(config.head_dim)
    w.add_vocab_size(config.vocab_size)
    if config.sliding_window:
        w.add_sliding_window(config.sliding_window)
    if config.rope_scaling is not None and config.rope_scaling.kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(config.rope_scaling.factor)
    elif config.rope_scaling is not None and config.rope_scaling.kind == "longrope":
        w.add_rope_scaling_orig_ctx_len(config.rope_scaling.original_context or config.context_length)
        w.add_rope_scaling_attn_factors(config.rope_scaling.attention_factor)
    for key, value in tokenizer_fields.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, list(value))
    if config.chat_template:
        w.add_chat_template(config.chat_template)
    for name, t in gguf_tensors(config, tensors).items():
        if isinstance(t, QuantizedTensor):
            kind = "BF16" if t.scheme == "bf16" else t.scheme.removeprefix("gguf:")
            w.add_tensor(name, t.data, raw_dtype=gguf.GGMLQuantizationType[kind])
        else:
            w.add_tensor(name, np.ascontiguousarray(t))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
