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
}
_GLOBAL_NAMES = {
    "token_embd": ("tok_embeddings", "model.embed_tokens"),
    "output_norm": ("norm", "model.norm"),
    "output": ("output", "lm_head"),
}

META, HF = 0, 1


def source_names(n_layers: int, style: int) -> dict[str, str]:
    """canonical name -> the name (without ".weight") a `style` (META or HF) checkpoint uses."""
    names = {canon: pair[style] for canon, pair in _GLOBAL_NAMES.items()}
    for i in range(n_layers):
        names |= {f"blk.{i}.{canon}": pair[style].format(i=i) for canon, pair in _LAYER_NAMES.items()}
    return names


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
    weights: dict[str, Tensor] = {}
    for canon, shape in expected.items():
        module = names[canon]
        if module + ".weight" not in tensors:
            raise LlamachatError(f"{source}: missing tensor {module}.weight")
        t = tensors[module + ".weight"]
        if module + ".scales" in tensors:
            settings = _quant_settings(quantization, module, source)
            try:
                t = affine_tensor(np.asarray(t), _plain(tensors[module + ".scales"]), _plain(tensors.get(module + ".biases")), **settings)
            except ValueError as e:
                raise LlamachatError(f"{source}: {module}: {e}") from None
        if tuple(t.shape) != shape:
            raise LlamachatError(f"{source}: tensor {module}.weight has shape {list(t.shape)}, the config implies {list(shape)}")
        if hf_qk and canon.endswith(("attn_q", "attn_k")):
            t = hf_to_interleaved(t, config.n_heads if canon.endswith("attn_q") else config.n_kv_heads)
        weights[canon] = t
    if "rope_freqs" in tensors:
        weights["rope_freqs"] = tensors["rope_freqs"]
    return weights


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
