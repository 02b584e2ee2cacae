"""Tiny random LLaMA models for tests, built in HF transformers (the oracle) and written as GGUF.

transformers' default init (std 0.02, unit norms) makes attention nearly uniform, which hides layout
bugs below any tolerance; the weights are redrawn: unit-variance embeddings, projections with std
~1/sqrt(fan_in) (q/k larger, so attention is sharp), norm weights 1 +- 0.2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

DATA = Path(__file__).parent / "data"
LLAMA2_VOCAB = DATA / "llama2-vocab.gguf"
LLAMA3_TOKENIZER = DATA / "llama3-tokenizer.model"  # Meta's tiktoken ranks (tokenizers.README.md)


@dataclass(frozen=True)
class TinySpec:
    n_heads: int = 4
    n_kv_heads: int = 2
    dim: int = 64
    ffn: int = 96
    n_layers: int = 2
    rope_theta: float = 10000.0
    tied: bool = False
    vocab: int = 32000  # the LLaMA-2 vocabulary travels with the file
    context: int = 256
    llama3_rope_factor: float | None = None  # Llama-3.1's RoPE scaling (low 1, high 4, original 8192)
    # Issue 17's families: the transformers class, and the switches each one has
    arch: str = "llama"  # llama, mistral, qwen2, qwen3, phi3 (ARCH_CLASSES)
    sliding_window: int | None = None  # mistral, phi3; qwen2 with use_sliding_window
    explicit_head_dim: int | None = None  # qwen3's head_dim, independent of dim // n_heads
    longrope_original: int | None = None  # phi3: longrope with this original_max_position_embeddings

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.dim // self.n_heads


# transformers' classes per family: (config class, model class)
ARCH_CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
}

# One tiny model per family and switch (issue 17): GQA on and off, tied and untied, windows shorter
# than the tests' 36-token prompt so the mask matters, longrope with an original context the prompt
# exceeds (long factors) and one it does not (short factors).
ARCH_SPECS = {
    "mistral": TinySpec(arch="mistral", rope_theta=1e6),  # Mistral-7B-v0.2's; not a reader's default
    "mistral-swa": TinySpec(arch="mistral", sliding_window=8, n_kv_heads=4),
    "qwen2": TinySpec(arch="qwen2", rope_theta=1e6),
    "qwen2-tied-mha": TinySpec(arch="qwen2", rope_theta=1e6, tied=True, n_kv_heads=4),
    "qwen2-swa": TinySpec(arch="qwen2", rope_theta=1e6, sliding_window=8),
    "qwen3": TinySpec(arch="qwen3", rope_theta=1e6, explicit_head_dim=32, tied=True),
    "qwen3-mha": TinySpec(arch="qwen3", rope_theta=1e6, n_kv_heads=4),
    "phi3": TinySpec(arch="phi3", n_kv_heads=4, sliding_window=11),
    "phi3-gqa": TinySpec(arch="phi3", rope_theta=2.5e5),  # not a reader's default either
    "phi3-longrope": TinySpec(arch="phi3", n_kv_heads=4, longrope_original=16),
    "phi3-longrope-short": TinySpec(arch="phi3", longrope_original=128),
}


def llama3_rope(spec: TinySpec) -> dict | None:
    if spec.llama3_rope_factor is None:
        return None
    return {
        "rope_type": "llama3",
        "factor": spec.llama3_rope_factor,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }


def longrope(spec: TinySpec) -> dict | None:
    """Phi-3's longrope: per-frequency long and short factors (drawn, fixed), the original context."""
    if spec.longrope_original is None:
        return None
    g = np.random.default_rng(7)
    half = spec.head_dim // 2
    return {
        "rope_type": "longrope",
        "rope_theta": spec.rope_theta,
        "long_factor": [float(f) for f in np.sort(g.uniform(1.0, 16.0, half))],
        "short_factor": [float(f) for f in np.sort(g.uniform(1.0, 2.0, half))],
        "original_max_position_embeddings": spec.longrope_original,
    }


def hf_config(spec: TinySpec):
    """The transformers config of `spec`'s family."""
    import transformers

    kwargs = dict(
        vocab_size=spec.vocab,
        hidden_size=spec.dim,
        intermediate_size=spec.ffn,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        max_position_embeddings=spec.context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=spec.tied,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    if spec.arch == "llama":
        kwargs |= {"rope_theta": spec.rope_theta, "rope_scaling": llama3_rope(spec)}
    elif spec.arch == "phi3":
        rope = longrope(spec) or {"rope_type": "default", "rope_theta": spec.rope_theta}
        kwargs |= {"rope_parameters": rope, "sliding_window": spec.sliding_window, "pad_token_id": 0}
        if spec.longrope_original is not None:
            kwargs["original_max_position_embeddings"] = spec.longrope_original
    else:
        kwargs |= {"rope_parameters": {"rope_type": "default", "rope_theta": spec.rope_theta}, "sliding_window": spec.sliding_window}
        if spec.arch in ("qwen2", "qwen3"):  # every layer slides (max_window_layers 0), or none does
            kwargs |= {"use_sliding_window": spec.sliding_window is not None, "max_window_layers": 0}
        if spec.explicit_head_dim is not None or spec.arch == "qwen3":
            kwargs["head_dim"] = spec.head_dim
    config_class, _ = ARCH_CLASSES[spec.arch]
    return getattr(transformers, config_class)(**kwargs)


def hf_model(spec: TinySpec, seed: int = 0):
    """A transformers model of `spec`'s family (LlamaForCausalLM by default; float32, eval mode) with
    redrawn weights. Biases are drawn with std 0.5 and q/k norms as 1 +- 0.4, so a bias or norm left
    out, or permuted wrongly, moves the logits far beyond any tolerance."""
    import torch
    import transformers

    config = hf_config(spec)
    torch.manual_seed(seed)
    model = getattr(transformers, ARCH_CLASSES[spec.arch][1])(config).float().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif "q_norm" in name or "k_norm" in name:
                p.copy_(1 + 0.8 * (torch.rand(p.shape, generator=g) - 0.5))
            elif p.ndim == 1:
                p.copy_(1 + 0.4 * (torch.rand(p.shape, generator=g) - 0.5))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                boost = 1.5 if any(k in name for k in ("q_proj", "k_proj", "qkv_proj")) else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * boost / p.shape[1] ** 0.5)
    return model


def hf_to_gguf_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's half-split q/k rows back to the interleaved layout GGUF stores (llama.cpp's converter)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_state(model, spec: TinySpec) -> dict[str, np.ndarray]:
    """The model's state dict as float32 arrays, Phi-3's fused qkv_proj and gate_up_proj split into
    LLaMA's q/k/v_proj and gate/up_proj (rows: q, k, v; gate, then up, as Phi3MLP chunks them)."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    if spec.arch != "phi3":
        return sd
    q_dim, kv_dim = spec.n_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
    for i in range(spec.n_layers):
        p = f"model.layers.{i}."
        q, k, v = np.split(sd.pop(p + "self_attn.qkv_proj.weight"), [q_dim, q_dim + kv_dim])
        gate, up = np.split(sd.pop(p + "mlp.gate_up_proj.weight"), 2)
        sd |= {p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v}
        sd |= {p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up}
    return sd


def canonical_weights(model, spec: TinySpec, permute_qk: bool = True) -> dict[str, np.ndarray]:
    """The HF model's weights under GGUF names, in the canonical layout: q/k rows, q/k biases and q/k
    norms interleaved (which is GGUF's own layout for `llama`; llama.cpp stores qwen2, qwen3 and phi3
    rows unpermuted). `permute_qk` False is the negative control that must fail the logits comparison."""
    sd = hf_state(model, spec)
    out = {"token_embd.weight": sd["model.embed_tokens.weight"], "output_norm.weight": sd["model.norm.weight"]}
    if not spec.tied:
        out["output.weight"] = sd["lm_head.weight"]

    def qk(t: np.ndarray, n_heads: int) -> np.ndarray:
        return hf_to_gguf_permute(t, n_heads) if permute_qk else t

    for i in range(spec.n_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        out |= {
            b + "attn_norm.weight": sd[p + "input_layernorm.weight"],
            b + "attn_q.weight": qk(sd[p + "self_attn.q_proj.weight"], spec.n_heads),
            b + "attn_k.weight": qk(sd[p + "self_attn.k_proj.weight"], spec.n_kv_heads),
            b + "attn_v.weight": sd[p + "self_attn.v_proj.weight"],
            b + "attn_output.weight": sd[p + "self_attn.o_proj.weight"],
            b + "ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
            b + "ffn_gate.weight": sd[p + "mlp.gate_proj.weight"],
            b + "ffn_up.weight": sd[p + "mlp.up_proj.weight"],
            b + "ffn_down.weight": sd[p + "mlp.down_proj.weight"],
        }
        if p + "self_attn.q_proj.bias" in sd:
            out |= {
                b + "attn_q.bias": qk(sd[p + "self_attn.q_proj.bias"], spec.n_heads),
                b + "attn_k.bias": qk(sd[p + "self_attn.k_proj.bias"], spec.n_kv_heads),
                b + "attn_v.bias": sd[p + "self_attn.v_proj.bias"],
            }
        if p + "self_attn.q_norm.weight" in sd:  # one head's vector: the within-head permutation
            out |= {
                b + "attn_q_norm.weight": qk(sd[p + "self_attn.q_norm.weight"], 1),
                b + "attn_k_norm.weight": qk(sd[p + "self_attn.k_norm.weight"], 1),
            }
    return out


def longrope_factors(spec: TinySpec) -> dict[str, np.ndarray]:
    """GGUF's rope_factors_long / rope_factors_short [Dh/2] of a longrope spec (empty otherwise)."""
    rope = longrope(spec)
    if rope is None:
        return {}
    return {
        "rope_factors_long.weight": np.asarray(rope["long_factor"], np.float32),
        "rope_factors_short.weight": np.asarray(rope["short_factor"], np.float32),
    }


def copy_vocab(writer: gguf.GGUFWriter, source: Path = LLAMA2_VOCAB) -> None:
    """Copy the tokenizer fields of a vocabulary-only GGUF (read with gguf's own reader)."""
    reader = gguf.GGUFReader(source)
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(name, value)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_string(name, value)
        elif vtype == gguf.GGUFValueType.BOOL:
            writer.add_bool(name, value)
        else:
            writer.add_uint32(name, int(value))


def write_gguf(
    path: Path,
    spec: TinySpec,
    weights: dict[str, np.ndarray],
    qtype: str = "F32",
    arch: str = "llama",
    tokenizer: dict | None = None,
    chat_template: str | None = None,
    metadata: Callable[[gguf.GGUFWriter], None] | None = None,
) -> Path:
    """A GGUF file holding `weights` (2-D ones stored as `qtype`: F32, F16, BF16, Q8_0, Q4_0 or Q4_1), with
    the LLaMA-2 vocabulary, or the `tokenizer.*` string fields given instead, and `chat_template`;
    `metadata` may add more keys through the writer's own methods (e.g. `w.add_sampling_temp(0.6)`)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-llama")
    if metadata is not None:
        metadata(w)
    w.add_context_length(spec.context)
    w.add_embedding_length(spec.dim)
    w.add_block_count(spec.n_layers)
    w.add_feed_forward_length(spec.ffn)
    w.add_head_count(spec.n_heads)
    w.add_head_count_kv(spec.n_kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(spec.rope_theta)
    w.add_rope_dimension_count(spec.head_dim)
    w.add_vocab_size(spec.vocab)
    if tokenizer is None:
        copy_vocab(w)
    else:
        for key, value in tokenizer.items():
            w.add_array(key, value) if isinstance(value, list) else w.add_string(key, value)
    if chat_template is not None:
        w.add_chat_template(chat_template)
    q = gguf.GGMLQuantizationType[qtype]
    for name, arr in weights.items():
        if arr.ndim == 1 or q == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, arr.astype(np.float32))
        elif q == gguf.GGMLQuantizationType.F16:
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def dequantized(weights: dict[str, np.ndarray], qtype: str) -> dict[str, np.ndarray]:
    """What a reader of a `qtype` file should see: 2-D weights through gguf's quantize/dequantize."""
    q = gguf.GGMLQuantizationType[qtype]
    if q == gguf.GGMLQuantizationType.F32:
        return weights
    return {
        k: v
        if v.ndim == 1
        else (v.astype(np.float16).astype(np.float32) if qtype == "F16" else gguf.quants.dequantize(gguf.quants.quantize(v, q), q))
        for k, v in weights.items()
    }


def load_into_hf(model, weights: dict[str, np.ndarray], spec: TinySpec) -> None:
    """Overwrite an HF model's weights with canonical (interleaved) ones, undoing the q/k permutation
    (of biases and q/k norms too) and fusing Phi-3's qkv_proj and gate_up_proj again."""
    import torch

    def hf_permute(w, n_heads):  # GGUF/Meta interleaved -> HF half-split (transformers' converter)
        return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    sd = model.state_dict()
    new = {"model.embed_tokens.weight": weights["token_embd.weight"], "model.norm.weight": weights["output_norm.weight"]}
    if not spec.tied:
        new["lm_head.weight"] = weights["output.weight"]
    for i in range(spec.n_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        q = hf_permute(weights[b + "attn_q.weight"], spec.n_heads)
        k = hf_permute(weights[b + "attn_k.weight"], spec.n_kv_heads)
        v = weights[b + "attn_v.weight"]
        gate, up = weights[b + "ffn_gate.weight"], weights[b + "ffn_up.weight"]
        new |= {
            p + "input_layernorm.weight": weights[b + "attn_norm.weight"],
            p + "self_attn.o_proj.weight": weights[b + "attn_output.weight"],
            p + "post_attention_layernorm.weight": weights[b + "ffn_norm.weight"],
            p + "mlp.down_proj.weight": weights[b + "ffn_down.weight"],
        }
        if spec.arch == "phi3":
            new |= {p + "self_attn.qkv_proj.weight": np.concatenate([q, k, v]), p + "mlp.gate_up_proj.weight": np.concatenate([gate, up])}
        else:
            new |= {p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k, p + "self_attn.v_proj.weight": v}
            new |= {p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up}
        if b + "attn_q.bias" in weights:
            new |= {
                p + "self_attn.q_proj.bias": hf_permute(weights[b + "attn_q.bias"], spec.n_heads),
                p + "self_attn.k_proj.bias": hf_permute(weights[b + "attn_k.bias"], spec.n_kv_heads),
                p + "self_attn.v_proj.bias": weights[b + "attn_v.bias"],
            }
        if b + "attn_q_norm.weight" in weights:
            new |= {
                p + "self_attn.q_norm.weight": hf_permute(weights[b + "attn_q_norm.weight"], 1),
                p + "self_attn.k_norm.weight": hf_permute(weights[b + "attn_k_norm.weight"], 1),
            }
    with torch.no_grad():
        for k, v in new.items():
            sd[k].copy_(torch.from_numpy(np.ascontiguousarray(v)))


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


def cached_logits(runner, ids: list[int], prefill: int, chunk: int = 0) -> np.ndarray:
    """The logits of `ids[prefill:]` as a chat computes them, on a warm cache: a prefill of
    `ids[:prefill]`, then `chunk` tokens in one forward (all rows), then the rest one token at a time.
    Compare with transformers' rows `prefill:` of the whole prompt."""
    cache = runner.new_cache(64)
    runner.forward(ids[:prefill], cache)
    rows = [runner.forward(ids[prefill : prefill + chunk], cache, all_logits=True)] if chunk else []
    rows += [runner.forward([t], cache)[None] for t in ids[prefill + chunk :]]
    return np.concatenate(rows)


# -------------------------------------------------------------------------------------------------
# The same tiny model in every checkpoint format, written the way each format's own tools write it

_META = {
    "token_embd": "tok_embeddings",
    "output_norm": "norm",
    "output": "output",
    "attn_norm": "attention_norm",
    "attn_q": "attention.wq",
    "attn_k": "attention.wk",
    "attn_v": "attention.wv",
    "attn_output": "attention.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "feed_forward.w1",
    "ffn_up": "feed_forward.w3",
    "ffn_down": "feed_forward.w2",
}


def meta_names(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical (GGUF-named, interleaved q/k) weights under Meta's names: no permutation needed."""
    out = {}
    for name, w in weights.items():
        base = name.removesuffix(".weight")
        if base.startswith("blk."):
            _, i, part = base.split(".", 2)
            out[f"layers.{i}.{_META[part]}.weight"] = w
        else:
            out[f"{_META[base]}.weight"] = w
    return out


def params_json(spec: TinySpec, vocab_size: int = -1) -> dict:
    """A params.json whose ffn_dim_multiplier and multiple_of give exactly `spec.ffn` through Meta's
    formula (int(m * 8 * dim / 3) rounded up to a multiple of ffn)."""
    multiplier = round(spec.ffn / int(8 * spec.dim / 3) * 0.9, 3)
    return {
        "dim": spec.dim,
        "n_layers": spec.n_layers,
        "n_heads": spec.n_heads,
        "n_kv_heads": spec.n_kv_heads,
        "multiple_of": spec.ffn,
        "ffn_dim_multiplier": multiplier,
        "norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "vocab_size": vocab_size,
    }


def write_tokenizer_model(directory: Path) -> None:
    """The LLaMA-2 tokenizer.model (rebuilt from the vocabulary fixture) and its tokenizer_config."""
    from llamachat.tokenizer import load_tokenizer

    load_tokenizer(LLAMA2_VOCAB).save(directory)


def write_meta(
    directory: Path, spec: TinySpec, weights: dict[str, np.ndarray], n_shards: int = 1, dtype=None, llama3: bool = False
) -> Path:
    """consolidated.NN.pth split as fairscale's model parallelism splits them (docs/formats.md 2(a)), plus
    params.json and tokenizer.model. Written with torch.save, the way Meta's files were. `llama3`:
    Llama-3.1's download (VocabParallelEmbedding splits the embedding along the vocabulary,
    params.json says use_scaled_rope and the vocabulary size, Meta's tiktoken tokenizer.model)."""
    import json
    import shutil

    import torch

    directory.mkdir(parents=True, exist_ok=True)
    state = meta_names(weights)
    state["rope.freqs"] = np.ones(spec.head_dim // 2, np.float32)  # Meta saves this buffer; loaders ignore it
    shards: list[dict] = [{} for _ in range(n_shards)]
    row_parallel = ("attention.wo", "feed_forward.w2") + (() if llama3 else ("tok_embeddings",))
    for name, w in state.items():
        t = torch.from_numpy(np.ascontiguousarray(w)).to(dtype or torch.float32)
        if t.ndim == 1:
            parts = [t.clone() for _ in range(n_shards)]
        else:
            parts = [p.clone() for p in torch.chunk(t, n_shards, dim=1 if any(k in name for k in row_parallel) else 0)]
        for shard, p in zip(shards, parts):
            shard[name] = p
    for i, shard in enumerate(shards):
        torch.save(shard, directory / f"consolidated.{i:02d}.pth")
    params = params_json(spec, vocab_size=spec.vocab if llama3 else -1)
    if llama3:
        params["use_scaled_rope"] = spec.llama3_rope_factor is not None
        shutil.copyfile(LLAMA3_TOKENIZER, directory / "tokenizer.model")
    else:
        write_tokenizer_model(directory)
    (directory / "params.json").write_text(json.dumps(params))
    return directory


def write_hf(directory: Path, model, sharded: bool = False) -> Path:
    """transformers' own save_pretrained (safetensors; several files and an index when sharded)."""
    model.save_pretrained(directory, max_shard_size="100KB" if sharded else "10GB")
    write_tokenizer_model(directory)
    return directory


def write_mlx_npz(
    directory: Path, spec: TinySpec, weights: dict[str, np.ndarray], bits: int | None = None, group_size: int = 64, hf_source=None
) -> Path:
    """mlx-examples' llms/llama/convert.py output: Meta names, weights.npz written by mx.savez, and
    with `bits` every Linear and the Embedding quantized by mx.quantize (as nn.quantize does). With
    `hf_source` (a transformers model), q/k come from it in HF's order and the config says
    rope_traditional: false, as convert.py's `--model-name tiny_llama` path writes them."""
    import json

    import mlx.core as mx

    directory.mkdir(parents=True, exist_ok=True)
    named = meta_names(weights)
    if hf_source is not None:
        sd = hf_source.state_dict()
        for i in range(spec.n_layers):
            for meta, hf in (("wq", "q_proj"), ("wk", "k_proj")):
                named[f"layers.{i}.attention.{meta}.weight"] = sd[f"model.layers.{i}.self_attn.{hf}.weight"].numpy()
    arrays = {}
    for name, w in named.items():
        if bits and w.ndim == 2:
            q, s, b = mx.quantize(mx.array(w), group_size=group_size, bits=bits)
            base = name.removesuffix(".weight")
            arrays |= {name: q, base + ".scales": s, base + ".biases": b}
        else:
            arrays[name] = mx.array(w)
    mx.savez(str(directory / "weights.npz"), **arrays)
    config = params_json(spec) | {"model_type": "llama", "rope_traditional": hf_source is None}
    if bits:
        config["quantization"] = {"group_size": group_size, "bits": bits}
    (directory / "config.json").write_text(json.dumps(config))
    write_tokenizer_model(directory)
    return directory


def hf_from_mlx_lm(directory: Path, spec: TinySpec):
    """A transformers model of `spec` holding the weights of an mlx-lm folder (HF names, so its state
    dict loads as it is), every packed weight unpacked by mx.dequantize with the folder's own
    `quantization` entry: the reference for what mlx-lm runs from that folder."""
    import json

    import mlx.core as mx
    import torch

    quantization = json.loads((directory / "config.json").read_text()).get("quantization") or {}
    stored = mx.load(str(directory / "model.safetensors"))
    state = {}
    for name, w in stored.items():
        if name.endswith((".scales", ".biases")):  # a packed weight's parts (HF's own biases end in .bias)
            continue
        module = name.removesuffix(".weight")
        if module + ".scales" in stored:
            q = quantization.get(module, quantization)
            w = mx.dequantize(w, stored[module + ".scales"], stored[module + ".biases"], group_size=q["group_size"], bits=q["bits"])
        state[name] = torch.from_numpy(np.array(w.astype(mx.float32)))
    model = hf_model(spec)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= ({"lm_head.weight"} if spec.tied else set()), (missing, unexpected)
    return model


def mlx_dequantized(weights: dict[str, np.ndarray], bits: int, group_size: int = 64) -> dict[str, np.ndarray]:
    """What a reader of a quantized MLX model should see: mx.dequantize(mx.quantize(w))."""
    import mlx.core as mx

    out = {}
    for name, w in weights.items():
        if w.ndim == 2:
            q, s, b = mx.quantize(mx.array(w), group_size=group_size, bits=bits)
            w = np.array(mx.dequantize(q, s, b, group_size=group_size, bits=bits))
        out[name] = w
    return out
