"""A LLaMA forward pass in MLX: Metal on Apple silicon, CUDA with an mlx-cuda build, else the CPU.

The same model as the NumPy reference (and checked against it), written the MLX way: 4/8-bit affine
weights stay packed and run through `mx.quantized_matmul` (MLX-format weights as they are, GGUF
Q4_0/Q4_1/Q8_0 re-packed onto MLX's layout without requantizing: llamachat.quantize.gguf_to_affine),
`mx.fast.rms_norm`, `mx.fast.rope` with traditional=True (the interleaved pairs of the canonical
layout), `mx.fast.scaled_dot_product_attention` with GQA, and a KV cache that grows in steps.

Shapes: T new tokens, S cached + new, D dim, H heads, K kv heads, Dh head dim, V vocab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import mlx.core as mx
import numpy as np

from llamachat import masks
from llamachat.protocols import CacheLength, ModelConfig, QuantizedTensor, Tensor, as_float32, cache_capacity, checked_state
from llamachat.quantize import gguf_to_affine, scale_floats
from llamachat.rope import RopeTables, inverse_frequencies, score_scale

CACHE_STEP = 256  # the cache grows by this many positions at a time, not by one concatenation a token
PACKABLE_GGUF = ("gguf:Q4_0", "gguf:Q4_1", "gguf:Q8_0")


class Linear:
    """y = x @ W.T for a dense or an affine-packed W [out, in]."""

    def __init__(self, t: Tensor, dtype: mx.Dtype):
        if isinstance(t, QuantizedTensor) and t.scheme in PACKABLE_GGUF:
            t = gguf_to_affine(t)
        if isinstance(t, QuantizedTensor) and t.scheme == "affine" and t.bits in (2, 3, 4, 5, 6, 8):
            self.weight = mx.array(t.data)
            self.scales = mx.array(scale_floats(t.scales)).astype(dtype)
            self.biases = mx.array(scale_floats(t.biases)).astype(dtype)
            self.bits, self.group_size = t.bits, t.group_size
        else:
            self.weight = mx.array(as_float32(t)).astype(dtype)
            self.bits = 0
        self.shape = tuple(t.shape)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in ([self.weight, self.scales, self.biases] if self.bits else [self.weight]))

    def __call__(self, x: mx.array) -> mx.array:
        if self.bits:
            return mx.quantized_matmul(x, self.weight, self.scales, self.biases, transpose=True, group_size=self.group_size, bits=self.bits)
        return x @ self.weight.T

    def rows(self, ids: mx.array) -> mx.array:
        """Rows `ids` as dense values (the embedding lookup, which a packed embedding allows too)."""
        if self.bits:
            return mx.dequantize(self.weight[ids], self.scales[ids], self.biases[ids], group_size=self.group_size, bits=self.bits)
        return self.weight[ids]


class MlxKVCache(CacheLength):
    """Per layer k, v [1, K, allocated, Dh]; `allocated` grows by CACHE_STEP as tokens arrive."""

    def __init__(self, config: ModelConfig, capacity: int, dtype: mx.Dtype):
        self.config, self.capacity, self.dtype, self.length = config, capacity, dtype, 0
        self.k: list[mx.array] = []
        self.v: list[mx.array] = []

    def reserve(self, end: int) -> None:
        allocated = self.k[0].shape[2] if self.k else 0
        if end <= allocated:
            return
        grown = min(self.capacity, -(-end // CACHE_STEP) * CACHE_STEP) - allocated
        c = self.config

        def block() -> mx.array:  # one array each: slice assignment updates an array in place
            return mx.zeros((1, c.n_kv_heads, grown, c.head_dim), dtype=self.dtype)

        if not self.k:
            self.k = [block() for _ in range(c.n_layers)]
            self.v = [block() for _ in range(c.n_layers)]
        else:
            self.k = [mx.concatenate([k, block()], axis=2) for k in self.k]
            self.v = [mx.concatenate([v, block()], axis=2) for v in self.v]

    def state(self) -> dict[str, np.ndarray]:
        c, n = self.config, self.length
        if not n:
            empty = np.zeros((c.n_layers, c.n_kv_heads, 0, c.head_dim), np.float32)
            return {"k": empty, "v": empty.copy()}
        return {
            name: np.array(mx.stack([a[0, :, :n] for a in arrays]).astype(mx.float32)) for name, arrays in (("k", self.k), ("v", self.v))
        }

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        c = self.config
        k, v = checked_state(state, c, self.capacity)
        n = k.shape[2]
        self.k, self.v, self.length = [], [], 0
        self.reserve(n)
        for i in range(c.n_layers):
            self.k[i][0, :, :n] = mx.array(k[i]).astype(self.dtype)
            self.v[i][0, :, :n] = mx.array(v[i]).astype(self.dtype)
        mx.eval(self.k, self.v)
        self.length = n


class MlxModel:
    """A Runner (see llamachat.protocols) on MLX."""

    def __init__(self, config: ModelConfig, weights: Mapping[str, Tensor], dtype: mx.Dtype):
        self.config, self.mx_dtype = config, dtype
        self.score_scale = score_scale(config)  # 1/sqrt(Dh), times longrope's attention factor squared
        self.dtype = str(dtype).removeprefix("mlx.core.")

        def norm(name: str) -> mx.array:
            return mx.array(as_float32(weights[name])).astype(dtype)

        self.layers = []
        for i in range(config.n_layers):
            b = f"blk.{i}."
            self.layers.append(
                {
                    "attn_norm": norm(b + "attn_norm"),
                    **{
                        k: Linear(weights[b + k], dtype)
                        for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
                    },
                    "ffn_norm": norm(b + "ffn_norm"),
                    # the architecture switches' vectors (qwen2 biases, qwen3 q/k norms), as the norms are kept
                    **{k: norm(b + k) for k in config.switch_weights()},
                }
            )
        self.output_norm = norm("output_norm")
        self.embedding = Linear(weights["token_embd"], dtype)  # [V, D]
        self.head = self.embedding if config.tied_embeddings else Linear(weights["output"], dtype)
        # mx.fast.rope takes per-pair periods, 1 / inverse frequency, scaling included
        self.rope_periods = RopeTables(config, weights, lambda d: mx.array((1 / inverse_frequencies(config, d)).astype(np.float32)))
        linears = [lin for layer in self.layers for lin in layer.values() if isinstance(lin, Linear)]
        linears += [self.embedding] + ([] if config.tied_embeddings else [self.head])
        mx.eval([lin.weight for lin in linears])
        self.weight_bytes = sum(lin.nbytes for lin in linears) + (2 * config.n_layers + 1) * config.dim * dtype.size

    def new_cache(self, capacity: int | None = None) -> MlxKVCache:
        return MlxKVCache(self.config, cache_capacity(self.config, capacity), self.mx_dtype)

    def rope(self, x: mx.array, offset: int, periods: mx.array) -> mx.array:
        """Rotate consecutive pairs (traditional=True) of x [1, N, T, Dh] at positions offset.. by the
        per-pair `periods` (1 / inverse frequency, scaling included) of the cache's side."""
        return mx.fast.rope(x, self.config.head_dim, traditional=True, base=None, scale=1.0, offset=offset, freqs=periods)

    def forward(self, ids: Sequence[int], cache: MlxKVCache, all_logits: bool = False) -> np.ndarray:
        c = self.config
        T, H, K, Dh = len(ids), c.n_heads, c.n_kv_heads, c.head_dim
        with cache.extend(T) as (start, end):  # the cache holds the new tokens once this block completes (after mx.eval)
            cache.reserve(end)
            x = self.embedding.rows(mx.array(list(ids)))[None]  # [1, T, D]
            mask = None
            if masks.needed(T, c.sliding_window):  # new token t (at position start + t) attends to positions <= start + t
                mask = mx.array(masks.visible(start, T, end, c.sliding_window))  # [T, S], within the window if any
            keys, values = cache.k, cache.v  # written in place at start:end, beyond what the cache holds
            periods = self.rope_periods.for_capacity(cache.capacity)  # [Dh/2]
            for i, layer in enumerate(self.layers):
                h = mx.fast.rms_norm(x, layer["attn_norm"], c.norm_eps)
                q, k, v = layer["attn_q"](h), layer["attn_k"](h), layer["attn_v"](h)
                if c.qkv_bias:  # qwen2
                    q, k, v = q + layer["attn_q.bias"], k + layer["attn_k.bias"], v + layer["attn_v.bias"]
                q, k, v = q.reshape(1, T, H, Dh), k.reshape(1, T, K, Dh), v.reshape(1, T, K, Dh)
                if c.qk_norm:  # qwen3: each head of q and k normalized before RoPE
                    q = mx.fast.rms_norm(q, layer["attn_q_norm"], c.norm_eps)
                    k = mx.fast.rms_norm(k, layer["attn_k_norm"], c.norm_eps)
                q = self.rope(q.transpose(0, 2, 1, 3), start, periods)  # [1, H, T, Dh]
                k = self.rope(k.transpose(0, 2, 1, 3), start, periods)  # [1, K, T, Dh]
                v = v.transpose(0, 2, 1, 3)
                keys[i][:, :, start:end] = k
                values[i][:, :, start:end] = v
                out = mx.fast.scaled_dot_product_attention(q, keys[i][:, :, :end], values[i][:, :, :end], scale=self.score_scale, mask=mask)
                x = x + layer["attn_output"](out.transpose(0, 2, 1, 3).reshape(1, T, H * Dh))
                h = mx.fast.rms_norm(x, layer["ffn_norm"], c.norm_eps)
                gate = layer["ffn_gate"](h)
                x = x + layer["ffn_down"](gate * mx.sigmoid(gate) * layer["ffn_up"](h))
            if not all_logits:
                x = x[:, -1:]
            logits = self.head(mx.fast.rms_norm(x, self.output_norm, c.norm_eps))[0].astype(mx.float32)  # [T, V]
            mx.eval(logits, keys, values)
        out = np.array(logits)
        return out if all_logits else out[0]
