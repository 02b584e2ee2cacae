"""Hugging Face checkpoints (`config.json` + safetensors), including mlx-lm's, which are HF-named and
HF-laid-out with 4/8-bit affine weights (`.weight` uint32, `.scales`, `.biases`) and a
`quantization` entry in config.json. No torch needed: the files are memory-mapped."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LlamachatError
from ..protocols import ARCHITECTURES, ModelConfig, QuantizedTensor, RopeScaling, Tensor
from ..rope import is_longrope, llama3_divisors, longrope_attention_factor
from .layouts import HF, split_rows, to_canonical, with_tied
from .names import display_name
from .safetensors_file import read_safetensors

INDEX = "model.safetensors.index.json"
HF_CLASSES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise LlamachatError(f"{path}: cannot read ({e.strerror})") from None
    except ValueError as e:
        raise LlamachatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise LlamachatError(f"{path}: expected a JSON object")
    return data


def _int(cfg: dict[str, Any], key: str, source: Path, default: Any = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise LlamachatError(f"{source}: config.json lacks {key!r}")
    if (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value) or value < 1
    ):  # a size
        raise LlamachatError(f"{source}: {key!r} must be an integer >= 1, got {value!r}")
    return int(value)


def _first(value: Any) -> int | None:
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def read_hf_config(path: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """ModelConfig from an HF `config.json`, and the rope extras (llama3 scaling) and quantization."""
    cfg = read_json(path)
    model_type = cfg.get("model_type", "llama")
    if model_type not in ARCHITECTURES:
        raise LlamachatError(f"{path}: a {model_type!r} model; llamachat runs these architectures: {', '.join(ARCHITECTURES)}")
    dim = _int(cfg, "hidden_size", path)
    n_heads = _int(cfg, "num_attention_heads", path)
    head_dim = _int(cfg, "head_dim", path, dim // n_heads)
    context = _int(cfg, "max_position_embeddings", path, 4096)
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})  # transformers 5 | 4
    theta = float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if model_type == "phi3" and kind == "su":  # Phi-3-mini-128k's first name for it; Phi3Config reads it so
        kind = "longrope"
    scaling, extras = None, {"quantization": cfg.get("quantization")}
    if kind == "linear":
        scaling = RopeScaling("linear", float(rope["factor"]))
    elif kind == "llama3":
        extras["llama3_rope"] = rope
    elif kind == "longrope" and model_type == "phi3":
        scaling, extras["longrope"] = longrope(cfg, rope, head_dim, context, path)
    elif kind != "default":
        raise LlamachatError(
            f"{path}: RoPE scaling {kind!r} is not supported for {model_type!r} (supported: default, linear, llama3; longrope for phi3)"
        )
    if float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))) != 1.0:
        raise LlamachatError(f"{path}: a partial_rotary_factor other than 1 is not supported (RoPE over the whole head only)")
    eos = cfg.get("eos_token_id")
    eot = end_of_turn_ids(eos, path.with_name("generation_config.json"))
    config = ModelConfig(
        dim=dim,
        n_layers=_int(cfg, "num_hidden_layers", path),
        n_heads=n_heads,
        n_kv_heads=_int(cfg, "num_key_value_heads", path, n_heads),
        head_dim=head_dim,
        ffn_dim=_int(cfg, "intermediate_size", path),
        vocab_size=_int(cfg, "vocab_size", path),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
        rope_theta=theta,
        rope_scaling=scaling,
        context_length=context,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_id=_first(cfg.get("bos_token_id")),
        eos_id=_first(eos),
        eot_ids=eot,
        name=display_name(path.parent.name),
        **switches(cfg, model_type, path),
    )
    return config, extras


def longrope(cfg: dict[str, Any], rope: dict[str, Any], head_dim: int, context: int, path: Path) -> tuple[RopeScaling, dict]:
    """Phi-3's longrope as transformers reads it (Phi3Config, `_compute_longrope_parameters`): the
    original context is config.json's top-level original_max_position_embeddings (Phi3Config's own
    field, default 4096, which wins over the copy inside rope_scaling); factor is given or context /
    original; the attention factor is given or sqrt(1 + ln factor / ln original). The long and short
    factors, head_dim / 2 numbers each, become the divisor weights GGUF stores (rope_factors_*)."""
    original = cfg.get("original_max_position_embeddings", 4096)
    if not isinstance(original, int) or original < 1:
        raise LlamachatError(f"{path}: original_max_position_embeddings must be a positive integer, got {original!r}")
    factors = {}
    for key in ("long_factor", "short_factor"):
        values = rope.get(key)
        if not (isinstance(values, list) and len(values) == head_dim // 2 and all(isinstance(v, (int, float)) for v in values)):
            got = f"{len(values)} values" if isinstance(values, list) else repr(values)
            raise LlamachatError(f"{path}: longrope's {key} must be a list of {head_dim // 2} numbers (head_dim / 2), got {got}")
        factors["rope_factors_" + key.removesuffix("_factor")] = np.asarray(values, dtype=np.float32)
    factor = float(rope["factor"]) if rope.get("factor") is not None else context / original
    given = rope.get("attention_factor")
    attention = float(given) if given is not None else longrope_attention_factor(factor, original)
    return RopeScaling("longrope", factor, original, attention), factors


def switches(cfg: dict[str, Any], model_type: str, path: Path) -> dict[str, Any]:
    """The architecture switches of an HF config (protocols.ModelConfig): Mistral's and Phi-3's
    sliding_window; Qwen2's q/k/v biases and its window only where use_sliding_window is true (and
    then on every layer: a max_window_layers that leaves some layers full is refused); Qwen3's q/k norms."""
    if cfg.get("attention_bias") and model_type != "qwen2" or cfg.get("mlp_bias"):
        raise LlamachatError(f"{path}: attention_bias/mlp_bias are not supported for {model_type!r} (only qwen2's q/k/v biases)")
    window = cfg.get("sliding_window")
    if model_type in ("qwen2", "qwen3"):
        if not cfg.get("use_sliding_window", False):
            window = None
        elif 0 < int(cfg.get("max_window_layers", 0) or 0) < int(cfg["num_hidden_layers"]):
            raise LlamachatError(f"{path}: a sliding window on only some layers (max_window_layers) is not supported")
    elif model_type not in ("mistral", "phi3"):
        window = None
    if window is not None and (not isinstance(window, int) or window < 1):
        raise LlamachatError(f"{path}: sliding_window must be a positive integer or null, got {window!r}")
    return {"arch": model_type, "sliding_window": window, "qkv_bias": model_type == "qwen2", "qk_norm": model_type == "qwen3"}


def split_fused(tensors: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Phi-3's qkv_proj and gate_up_proj (each part: .weight, and mlx-lm's .scales/.biases) cut into
    LLaMA's q/k/v_proj and gate/up_proj rows, so the rest of the reader sees one layout."""
    out = dict(tensors)
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        for fused, parts, sizes in (
            (
                "self_attn.qkv_proj",
                ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                [config.q_dim, config.kv_dim, config.kv_dim],
            ),
            ("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj"), [config.ffn_dim, config.ffn_dim]),
        ):
            for suffix in (".weight", ".scales", ".biases"):
                t = out.pop(p + fused + suffix, None)
                if t is None:
                    continue
                if t.shape[0] != sum(sizes):
                    raise LlamachatError(f"{p}{fused}{suffix} has {t.shape[0]} rows, the config implies {sum(sizes)}")
                out |= {p + name + suffix: piece for name, piece in zip(parts, split_rows(t, sizes))}
    return out


def end_of_turn_ids(eos: Any, generation_config: Path) -> tuple[int, ...]:
    """config.json's eos_token_id (an id or a list), then generation_config.json's, which is what
    transformers' generate stops at (Llama-3.1: [128001, 128008, 128009]; Qwen2.5: [151645, 151643])."""
    declared = [eos]
    if generation_config.is_file():
        declared.append(read_json(generation_config).get("eos_token_id"))
    ids = [e for d in declared for e in (d if isinstance(d, list) else [d]) if e is not None]
    try:
        return tuple(dict.fromkeys(int(i) for i in ids))
    except (TypeError, ValueError):
        raise LlamachatError(f"{generation_config.parent}: eos_token_id must be an id or a list of ids, got {ids!r}") from None


def safetensors_files(directory: Path) -> list[Path]:
    """The weight files of an HF/mlx-lm directory: the index's, or every *.safetensors."""
    index = directory / INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise LlamachatError(f"{index}: no 'weight_map'")
        files = [directory / name for name in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise LlamachatError(f"{index}: names {f.name}, which is missing")
        return files
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise LlamachatError(f"{directory}: config.json but no *.safetensors weights")
    return files


def read_hf(directory: Path) -> tuple[ModelConfig, dict[str, Tensor]]:
    config, extras = read_hf_config(directory / "config.json")
    tensors: dict[str, Tensor] = {}
    for f in safetensors_files(directory):
        tensors |= read_safetensors(f)
    tensors = {k.removeprefix("language_model."): v for k, v in tensors.items()}  # some exports nest the LM
    config = with_tied(config, tensors, HF)
    if config.arch == "phi3":
        tensors = split_fused(tensors, config)
    if "llama3_rope" in extras:
        tensors["rope_freqs"] = llama3_divisors(config.head_dim, config.rope_theta, extras["llama3_rope"])
    tensors |= extras.get("longrope", {})  # Phi-3's long and short factors, as GGUF's weights
    weights = to_canonical(tensors, config, HF, str(directory), hf_qk=True, quantization=extras["quantization"])
    return config, weights


# -------------------------------------------------------------------------------------------------
# Writing (llamachat convert --to hf / --to mlx: mlx-lm's layout is HF's plus packed weights)


def hf_config(
    config: ModelConfig, dtype: str, quantization: dict[str, int] | None = None, weights: dict[str, Tensor] | None = None
) -> dict[str, Any]:
    """config.json as transformers 4 wrote it (top-level rope_theta), which transformers 5 and mlx-lm
    both read; mlx-lm's `quantization` (and transformers' copy of it) when packed. Longrope's factors
    come from `weights` (rope_factors_long / _short)."""
    out: dict[str, Any] = {
        "architectures": [HF_CLASSES[config.arch]],
        "model_type": config.arch,
        "hidden_size": config.dim,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "intermediate_size": config.ffn_dim,
        "vocab_size": config.vocab_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "max_position_embeddings": config.context_length,
        "tie_word_embeddings": config.tied_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": dtype,
    }
    if config.arch == "qwen2":  # the biases are implied by the architecture; attention_bias is not read
        del out["attention_bias"]
    if config.arch != "llama":
        out["sliding_window"] = config.sliding_window
    if config.arch in ("qwen2", "qwen3"):
        out |= {"use_sliding_window": config.sliding_window is not None, "max_window_layers": 0}
    if config.arch == "phi3":  # Phi3Config's default pad id (32000) must lie inside the vocabulary: say none
        out["pad_token_id"] = None
    if is_longrope(config):
        out |= longrope_entries(config, weights or {})
    elif config.rope_scaling is not None:
        out["rope_scaling"] = {
            "type": config.rope_scaling.kind,
            "rope_type": config.rope_scaling.kind,
            "factor": config.rope_scaling.factor,
        }
    if config.bos_id is not None:
        out["bos_token_id"] = config.bos_id
    if config.eos_id is not None:  # every id a turn ends at (a GGUF's eot/eom too), as Llama-3.1's config.json lists them
        ids = list(dict.fromkeys([config.eos_id, *config.eot_ids]))
        out["eos_token_id"] = ids[0] if len(ids) == 1 else ids
    if quantization:
        out["quantization"] = out["quantization_config"] = dict(quantization)
    return out


def longrope_entries(config: ModelConfig, weights: dict[str, Tensor]) -> dict[str, Any]:
    """Phi-3's longrope as Phi-3-mini-128k's config.json has it, which transformers and mlx-lm read
    (mlx-lm's SuScaledRoPE takes `type`, the factors and the top-level original context); the
    attention factor written out, so transformers does not recompute it."""
    from ..protocols import as_float32

    scaling = config.rope_scaling
    assert scaling is not None
    factors = {}
    for key in ("long", "short"):
        if f"rope_factors_{key}" not in weights:
            raise LlamachatError(f"a longrope model without its rope_factors_{key} weights cannot be written as HF")
        factors[f"{key}_factor"] = [float(v) for v in as_float32(weights[f"rope_factors_{key}"])]
    return {
        "original_max_position_embeddings": scaling.original_context or config.context_length,
        "rope_scaling": {"type": "longrope", "rope_type": "longrope", **factors, "attention_factor": scaling.attention_factor},
    }


def hf_tensors(config: ModelConfig, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Canonical weights under HF names with q/k permuted to HF's order; packed affine weights split
    into `.weight`, `.scales` and `.biases` as mlx-lm stores them."""
    from ..protocols import QuantizedTensor
    from .layouts import from_interleaved, source_names

    names = source_names(config.n_layers, HF)
    out: dict[str, Tensor] = {}
    for canon, t in weights.items():
        if canon == "rope_freqs":
            raise LlamachatError("a model with Llama-3.1 rope_freqs cannot be written in the HF layout yet (write GGUF)")
        if canon.startswith("rope_factors_"):  # longrope's factors live in config.json (longrope_entries)
            continue
        t = from_interleaved(canon, t, config)
        module = names[canon]
        if canon.endswith(".bias"):
            out[module] = t
        elif isinstance(t, QuantizedTensor) and t.scheme == "affine":
            out |= {module + ".weight": t.data, module + ".scales": t.scales, module + ".biases": t.biases}
        else:
            out[module + ".weight"] = t
    return fuse(out, config) if config.arch == "phi3" else out


def fuse(tensors: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Phi-3's layout (HF's and mlx-lm's): q/k/v_proj rows joined into qkv_proj, gate/up_proj into
    gate_up_proj, each part (.weight, .scales, .biases) alike: the inverse of `split_fused`."""
    out = dict(tensors)
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        for fused, parts in (
            ("self_attn.qkv_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
            ("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj")),
        ):
            for suffix in (".weight", ".scales", ".biases"):
                if p + parts[0] + suffix in out:
                    out[p + fused + suffix] = _joined([out.pop(p + name + suffix) for name in parts])
    return out


def _joined(pieces: list[Tensor]) -> Tensor:
    """Row blocks concatenated: dense arrays, or bfloat16 bit patterns kept as such."""
    from ..quantize import bf16_tensor

    if all(isinstance(x, QuantizedTensor) and x.scheme == "bf16" for x in pieces):
        return bf16_tensor(np.concatenate([x.data for x in pieces]))
    if any(isinstance(x, QuantizedTensor) for x in pieces):
        raise LlamachatError("cannot fuse Phi-3's weights from mixed storage; convert with one --dtype")
    return np.concatenate([np.asarray(x) for x in pieces])
