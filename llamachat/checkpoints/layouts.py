"""Tensor names and q/k row orders of the formats, mapped onto llamachat's canonical ones.

Meta, GGUF and MLX's `rope_traditional` store q/k rows for interleaved RoPE; Hugging Face (and so
mlx-lm) permutes them within each head for its half-split `rotate_half` (docs/formats.md 2(b)). One pair
of functions moves between the two; a QuantizedTensor is permuted by its rows (packed data, scales and
biases alike), which is valid because quantization groups never cross a row.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from ..errors import LlamachatError
from ..protocols import ModelConfig, QuantizedTensor, Tensor

# canonical name (no ".weight") -> Meta name, HF name; "{i}" is the layer
_LAYER_NAMES = {
    "attn_norm": ("layers.{i}.attention_norm", "model.layers.{i}.input_layernorm"),
    "attn_q": ("layers.{i}.attention.wq", "model.layers.{i}.self_attn.q_proj"),
    "attn_k": ("layers.{i}.attention.wk", "model.layers.{i}.self_attn.k_proj"),
    "attn_v": ("layers.{i}.attention.wv", "model.layers.{i}.self_attn.v_proj"),
    "attn_output": ("layers.{i}.attention.wo", "model.layers.{i}.self_attn.o_proj"),
    "ffn_norm": ("layers.{i}.ffn_norm", "model.layers.{i}.post_attention_layernorm"),
    "ffn_gate": ("layers.{i}.feed_forward.w1", "model.layers.{i}.mlp.gate_proj"),
    "ffn_up": ("layers.{i}.feed_forward.w3", "model.layers.{i}.mlp.up_proj"),
    "ffn_down": ("layers.{i}.feed_forward.w2", "model.layers.{i}.mlp.down_proj"),
    # the architecture switches' weights (qwen3's q/k norms; Meta never had them)
    "attn_q_norm": ("layers.{i}.attention.q_norm", "model.layers.{i}.self_attn.q_norm"),
    "attn_k_norm": ("layers.{i}.attention.k_norm", "model.layers.{i}.self_attn.k_norm"),
}
_GLOBAL_NAMES = {
    "token_embd": ("tok_embeddings", "model.embed_tokens"),
    "output_norm": ("norm", "model.norm"),
    "output": ("output", "lm_head"),
}

META, HF = 0, 1


def source_names(n_layers: int, style: int) -> dict[str, str]:
    """canonical name -> the name (without ".weight") a `style` (META or HF) checkpoint uses. A bias
    (canonical "blk.{i}.attn_q.bias") maps to its full source name ("...q_proj.bias")."""
    names = {canon: pair[style] for canon, pair in _GLOBAL_NAMES.items()}
    for i in range(n_layers):
        names |= {f"blk.{i}.{canon}": pair[style].format(i=i) for canon, pair in _LAYER_NAMES.items()}
        names |= {f"blk.{i}.{p}.bias": names[f"blk.{i}.{p}"] + ".bias" for p in ("attn_q", "attn_k", "attn_v")}
    return names


def tensor_name(canon: str, module: str) -> str:
    """The source tensor holding canonical weight `canon` (module name from `source_names`)."""
    return module if canon.endswith(".bias") else module + ".weight"


def layer_of(name: str) -> int | None:
    m = re.search(r"layers\.(\d+)\.", name)
    return int(m.group(1)) if m else None


def _rows(t: Tensor, order: np.ndarray) -> Tensor:
    if isinstance(t, QuantizedTensor):
        pick = lambda a: None if a is None else np.ascontiguousarray(a[order])  # noqa: E731
        return replace(t, data=pick(t.data), scales=pick(t.scales), biases=pick(t.biases))
    return np.ascontiguousarray(t[order])


def _order(rows: int, n_heads: int, to_interleaved: bool) -> np.ndarray:
    half = rows // n_heads // 2
    index = np.arange(rows)
    if to_interleaved:  # HF half-split -> interleaved: w.reshape(h, 2, half).swapaxes(1, 2)
        return index.reshape(n_heads, 2, half).swapaxes(1, 2).reshape(-1)
    return index.reshape(n_heads, half, 2).swapaxes(1, 2).reshape(-1)  # interleaved -> HF


def hf_to_interleaved(t: Tensor, n_heads: int) -> Tensor:
    """q/k rows in HF's half-split order -> the interleaved (Meta/GGUF) order."""
    return _rows(t, _order(t.shape[0], n_heads, True))


def interleaved_to_hf(t: Tensor, n_heads: int) -> Tensor:
    """The inverse of `hf_to_interleaved` (what transformers' converter does to Meta's wq/wk)."""
    return _rows(t, _order(t.shape[0], n_heads, False))


# -------------------------------------------------------------------------------------------------
# From a format's tensors to the canonical weights


def with_tied(config: ModelConfig, tensors: dict[str, Tensor], style: int) -> ModelConfig:
    """Tied when the file has no output projection (Llama-3.2 1B/3B, SmolLM2; some exports tie without
    saying so in their config): believe the file."""
    from dataclasses import replace

    has_output = source_names(0, style)["output"] + ".weight" in tensors
    return replace(config, tied_embeddings=not has_output)


def to_canonical(
    tensors: dict[str, Tensor],
    config: ModelConfig,
    style: int,
    source: str,
    *,
    hf_qk: bool,
    quantization: dict | None = None,
) -> dict[str, Tensor]:
    """The canonical weights from `tensors` named in `style` (META or HF).

    `hf_qk`: q/k rows are in HF's half-split order and are permuted once, here. `quantization` is an
    MLX config's {"group_size", "bits"} (plus per-module overrides keyed by module name): a weight with
    `.scales` and `.biases` beside it becomes an affine QuantizedTensor. Shapes are checked against the
    config; tensors nobody needs (rope.freqs, rotary_emb.inv_freq) are ignored.
    """
    from ..quantize import affine_tensor

    expected = config.weight_shapes()
    names = source_names(config.n_layers, style)
    check_switches(tensors, config, names, expected, source)
    weights: dict[str, Tensor] = {}
    for canon, shape in expected.items():
        module = names[canon]
        if tensor_name(canon, module) not in tensors:
            raise LlamachatError(f"{source}: missing tensor {tensor_name(canon, module)} (the {config.arch!r} architecture has it)")
        t = tensors[tensor_name(canon, module)]
        if module + ".scales" in tensors:
            settings = _quant_settings(quantization, module, source)
            try:
                t = affine_tensor(np.asarray(t), _plain(tensors[module + ".scales"]), _plain(tensors.get(module + ".biases")), **settings)
            except ValueError as e:
                raise LlamachatError(f"{source}: {module}: {e}") from None
        if tuple(t.shape) != shape:
            raise LlamachatError(
                f"{source}: tensor {tensor_name(canon, module)} has shape {list(t.shape)}, the config implies {list(shape)}"
            )
        if hf_qk:
            t = to_interleaved(canon, t, config)
        weights[canon] = t
    from ..rope import DIVISOR_WEIGHTS

    weights |= {name: tensors[name] for name in DIVISOR_WEIGHTS if name in tensors}  # RoPE divisors (made by the reader)
    return weights


def qk_heads(canon: str, config: ModelConfig) -> int | None:
    """How many heads a q/k weight, bias or norm holds (its rows are permuted head by head); None for
    every other weight. A q/k norm is one head's vector, permuted within the head."""
    part = canon.split(".")[2] if canon.startswith("blk.") else canon
    return {"attn_q": config.n_heads, "attn_k": config.n_kv_heads, "attn_q_norm": 1, "attn_k_norm": 1}.get(part)


def to_interleaved(canon: str, t: Tensor, config: ModelConfig) -> Tensor:
    """A weight from HF's half-split q/k layout into the canonical one (unchanged if not q/k)."""
    heads = qk_heads(canon, config)
    return t if heads is None else hf_to_interleaved(t, heads)


def from_interleaved(canon: str, t: Tensor, config: ModelConfig) -> Tensor:
    """The inverse of `to_interleaved`, for writers of HF's layout."""
    heads = qk_heads(canon, config)
    return t if heads is None else interleaved_to_hf(t, heads)


def check_switches(tensors: dict[str, Tensor], config: ModelConfig, names: dict[str, str], expected: dict, source: str) -> None:
    """A file holding q/k/v biases or q/k norms its config does not declare contradicts it: running
    without them would be subtly wrong, so refuse in one line."""
    for canon, module in names.items():
        if canon in expected or tensor_name(canon, module) not in tensors:
            continue
        if canon.endswith((".bias", "attn_q_norm", "attn_k_norm")):
            kind = "q/k/v biases" if canon.endswith(".bias") else "q/k norms"
            raise LlamachatError(
                f"{source}: holds {tensor_name(canon, module)}, but its config declares no {kind} "
                f"(architecture {config.arch!r}; qwen2 has biases, qwen3 q/k norms)"
            )


def split_rows(t: Tensor, sizes: list[int]) -> list[Tensor]:
    """A fused weight's rows cut into consecutive parts of `sizes` rows (packed rows alike)."""
    bounds = np.cumsum([0, *sizes])
    parts = [_rows(t, np.arange(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]
    if isinstance(t, QuantizedTensor):  # the logical shape follows the rows kept
        parts = [replace(p, shape=(n, *t.shape[1:])) for p, n in zip(parts, sizes)]
    return parts


def _plain(t: Tensor | None) -> np.ndarray:
    """Scales and biases as arrays (bfloat16 ones stay uint16 bit patterns; quantize.py reads them)."""
    if t is None:
        raise ValueError("scales without biases")
    return t.data if isinstance(t, QuantizedTensor) else np.asarray(t)


def _quant_settings(quantization: dict | None, module: str, source: str) -> dict[str, int]:
    if not quantization:
        raise LlamachatError(f"{source}: {module} is quantized but the config has no 'quantization' entry")
    own = quantization.get(module)
    chosen = own if isinstance(own, dict) else quantization
    mode = chosen.get("mode", "affine")
    if mode != "affine":
        raise LlamachatError(f"{source}: quantization mode {mode!r} is not supported (supported: affine, 2-8 bits)")
    try:
        return {"bits": int(chosen["bits"]), "group_size": int(chosen["group_size"])}
    except (KeyError, TypeError, ValueError):
        raise LlamachatError(f"{source}: 'quantization' needs integer 'bits' and 'group_size', got {chosen!r}") from None
