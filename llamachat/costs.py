"""What a model costs, from its config alone: parameters, weight memory per storage format, KV cache
bytes and FLOPs per token. `info` prints these, `memory` checks them against the machine, and the
backends estimate their own memory with them (docs/design.md, "Model arithmetic").

Parameters are counted from the config (docs/formats.md 4.1):
    embedding   vocab * dim
    attention   n_layers * (dim * q_dim + 2 * dim * kv_dim + q_dim * dim)
                + n_layers * (q_dim + 2 * kv_dim) with q/k/v biases (qwen2)
    ffn         n_layers * 3 * dim * ffn_dim
    norms       n_layers * 2 * dim + dim, + n_layers * 2 * head_dim with q/k norms (qwen3)
    output      vocab * dim, unless tied to the embedding
Weight memory is parameters x bits per weight / 8 for each storage format (a block format's bits
include its scales: Q8_0 keeps one fp16 scale per 32 weights, 8.5 bits). The KV cache holds keys and
values of every layer: 2 * n_layers * kv_dim elements per token. FLOPs per generated token at context
n are 2 * params (one multiply-add per weight, as LLaMA write-ups count) plus attention's
4 * n_layers * n * q_dim (scores and weighted sum).
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocols import ModelConfig

GIB = 1 << 30
GB = 1e9

# (name, bits per weight): dense dtypes, then GGUF blocks, then MLX affine (fp16 scale + bias per group)
STORAGE_FORMATS: tuple[tuple[str, float], ...] = (
    ("fp32", 32.0),
    ("fp16/bf16", 16.0),
    ("Q8_0 (int8)", 8.5),
    ("MLX 8-bit g64", 8.5),
    ("Q4_1", 5.0),
    ("MLX 4-bit g32", 5.0),
    ("Q4_0", 4.5),
    ("MLX 4-bit g64", 4.5),
)

BYTES_PER_ELEMENT = {"float32": 4, "float16": 2, "bfloat16": 2}  # the dense dtypes the backends compute in


@dataclass(frozen=True)
class ParamCounts:
    embedding: int
    attention: int
    ffn: int
    norms: int
    output: int

    @property
    def total(self) -> int:
        return self.embedding + self.attention + self.ffn + self.norms + self.output


def param_counts(c: ModelConfig) -> ParamCounts:
    return ParamCounts(
        embedding=c.vocab_size * c.dim,
        attention=c.n_layers * (2 * c.dim * c.q_dim + 2 * c.dim * c.kv_dim + (c.q_dim + 2 * c.kv_dim if c.qkv_bias else 0)),
        ffn=c.n_layers * 3 * c.dim * c.ffn_dim,
        norms=c.n_layers * (2 * c.dim + (2 * c.head_dim if c.qk_norm else 0)) + c.dim,
        output=0 if c.tied_embeddings else c.vocab_size * c.dim,
    )


def weight_bytes(c: ModelConfig, bits_per_weight: float) -> int:
    """Bytes of every weight stored at `bits_per_weight` (see STORAGE_FORMATS)."""
    return round(param_counts(c).total * bits_per_weight / 8)


def dense_weight_bytes(c: ModelConfig, dtype: str) -> int:
    """Bytes of every weight held densely in `dtype` ("float32", "float16" or "bfloat16")."""
    return BYTES_PER_ELEMENT[dtype] * param_counts(c).total


def kv_bytes_per_token(c: ModelConfig, bytes_per_element: int = 2) -> int:
    return 2 * c.n_layers * c.kv_dim * bytes_per_element


def flops_per_token(c: ModelConfig, context: int) -> int:
    """FLOPs to generate one token with `context` tokens already in the cache."""
    return 2 * param_counts(c).total + 4 * c.n_layers * context * c.q_dim
