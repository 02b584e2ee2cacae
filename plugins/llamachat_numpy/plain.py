"""A LLaMA forward pass in plain NumPy: the algebra, top to bottom, with nothing done for speed.

This is the model as a from-scratch walk-through writes it (llama2.c, nanoGPT): each weight as the
checkpoint names it (protocols.py), every RMSNorm with its own weight, q, k and v from three matrices,
RoPE as cos/sin on consecutive pairs, the kv heads repeated for the query heads that share them (GQA),
softmax attention under a causal mask, and the SwiGLU feed-forward. model.py computes the same
numbers faster (fused matrices, norms folded in, memory orders chosen, attention in blocks); the tests
check both against transformers. Select it with the numpy backend's option `plain = true`.

Shapes: T new tokens, S = cached + new tokens, D dim, H query heads, K key/value heads, Dh head dim,
F feed-forward dim, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from llamachat.masks import visible
from llamachat.protocols import ModelConfig, Tensor, as_float32, cache_capacity
from llamachat.rope import RopeTables, angles, score_scale

from .model import KVCache

LAYER_WEIGHTS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight, over the last axis."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * weight


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate each pair (x[2i], x[2i+1]) of every head by its angle. x [T, N, Dh]; cos, sin [T, 1, Dh/2]."""
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1 + np.exp(-x))


def cos_sin(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the angle table theta [ctx, Dh/2] (position * inverse frequency), float32."""
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


class PlainModel:
    """A Runner (see llamachat.protocols): the plain forward pass over the canonical weights."""

    dtype = "float32"

    def __init__(self, config: ModelConfig, weights: Mapping[str, Tensor]):
        self.config = c = config
        names = LAYER_WEIGHTS + c.switch_weights()
        self.layers = [{name: as_float32(weights[f"blk.{i}.{name}"]) for name in names} for i in range(c.n_layers)]
        self.token_embd = as_float32(weights["token_embd"])  # [V, D]
        self.output_norm = as_float32(weights["output_norm"])  # [D]
        self.output = self.token_embd if c.tied_embeddings else as_float32(weights["output"])  # [V, D]
        self.rope = RopeTables(c, weights, lambda divisors: cos_sin(angles(c, c.context_length, divisors)))
        arrays = [w for layer in self.layers for w in layer.values()] + [self.token_embd, self.output_norm]
        self.weight_bytes = sum(a.nbytes for a in arrays) + (0 if c.tied_embeddings else self.output.nbytes)

    def new_cache(self, capacity: int | None = None) -> KVCache:
        return KVCache(self.config, cache_capacity(self.config, capacity))

    def forward(self, ids: Sequence[int], cache: KVCache, all_logits: bool = False) -> np.ndarray:
        c = self.config
        with cache.extend(len(ids)) as (start, end):  # the cache holds the new tokens once this block completes
            x = self.token_embd[np.asarray(ids)]  # [T, D]
            cos, sin = (t[start:end, None] for t in self.rope.for_capacity(cache.capacity))  # [T, 1, Dh/2]
            with np.errstate(over="ignore"):  # silu of a very negative gate: exp overflows to inf, x / inf = 0
                for i, layer in enumerate(self.layers):
                    x = x + self.attention(layer, rms_norm(x, layer["attn_norm"], c.norm_eps), cache, i, start, end, cos, sin)
                    x = x + self.feed_forward(layer, rms_norm(x, layer["ffn_norm"], c.norm_eps))
        logits = rms_norm(x, self.output_norm, c.norm_eps) @ self.output.T  # [T, V]
        return logits if all_logits else logits[-1]

    def attention(self, layer, x, cache: KVCache, i: int, start: int, end: int, cos, sin) -> np.ndarray:
        c = self.config
        T, H, K, Dh = len(x), c.n_heads, c.n_kv_heads, c.head_dim
        q, k, v = (x @ layer["attn_q"].T), (x @ layer["attn_k"].T), (x @ layer["attn_v"].T)
        if c.qkv_bias:  # qwen2
            q, k, v = q + layer["attn_q.bias"], k + layer["attn_k.bias"], v + layer["attn_v.bias"]
        q, k, v = q.reshape(T, H, Dh), k.reshape(T, K, Dh), v.reshape(T, K, Dh)
        if c.qk_norm:  # qwen3: each head of q and k normalized before RoPE
            q, k = rms_norm(q, layer["attn_q_norm"], c.norm_eps), rms_norm(k, layer["attn_k_norm"], c.norm_eps)
        q, k = rope(q, cos, sin), rope(k, cos, sin)  # [T, H, Dh], [T, K, Dh]
        cache.k[i, :, start:end] = k.transpose(1, 0, 2)  # [K, T, Dh] after the cached tokens
        cache.v[i, :, start:end] = v.transpose(1, 0, 2)
        keys = np.repeat(cache.k[i, :, :end], H // K, axis=0)  # [H, S, Dh]: query head h reads kv head h // (H/K)
        values = np.repeat(cache.v[i, :, :end], H // K, axis=0)  # [H, S, Dh]
        scores = q.transpose(1, 0, 2) @ keys.transpose(0, 2, 1) * np.float32(score_scale(c))  # [H, T, S], / sqrt(Dh)
        # new token t sits at start + t and sees up to there (within the sliding window, if any)
        scores = np.where(visible(start, T, end, c.sliding_window), scores, np.float32(-np.inf))
        out = softmax(scores) @ values  # [H, T, Dh]
        return out.transpose(1, 0, 2).reshape(T, H * Dh) @ layer["attn_output"].T  # [T, D]

    def feed_forward(self, layer, x: np.ndarray) -> np.ndarray:
        """SwiGLU: down(silu(gate(x)) * up(x))."""
        return (silu(x @ layer["ffn_gate"].T) * (x @ layer["ffn_up"].T)) @ layer["ffn_down"].T  # [T, D]
