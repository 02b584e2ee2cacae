"""A LLaMA forward pass in NumPy, float32 end to end: the reference the other backends are checked against.

Read it top to bottom: `NumpyModel.forward` embeds the tokens, runs each block (attention, then the
SwiGLU feed-forward, each behind an RMSNorm and a residual add) and projects onto the vocabulary.
The same algebra with none of the speed tricks below is plain.py (the backend's `plain` option): read
that first; the tests hold both to transformers.

Shapes in comments: T new tokens, S = cached + new tokens, D dim, H query heads, K key/value heads,
R = H // K query heads per kv head (GQA), Dh head dim, F feed-forward dim, V vocabulary.

Speed comes from doing the same arithmetic in fewer, larger NumPy calls (decoding is bound by
reading every weight once per token; where the time goes: benchmarks/decode_split.py):
- q/k/v and gate/up are fused into one matrix each;
- every matrix is used as [out, in] (`x @ W.T`) but stored in the memory order OpenBLAS multiplies
  a vector by fastest here (`stored()`): [in, out] when it has at least as many outputs as inputs;
- the RMSNorm weights are folded into the columns of the matrices they feed, and 1/sqrt(Dh) into
  wq (RoPE is linear, so the scale commutes with it): exact algebra, a few ops less per layer;
- with a tied embedding the head is the only copy: a token's embedding is its row;
- the KV cache is preallocated and written in place; nothing is concatenated per token;
- a long prompt is attended in blocks of query rows, each against only the keys it can see;
- a product of a few rows (a lookup pass: the last token and its drafts) runs as matrix-vector
  products over cache-sized chunks of the weight (2-3 rows) or in blocks of it that OpenBLAS
  multiplies without packing (4-16 rows): rows.py.
Every array and every scalar is float32: one float64 scalar would promote the activations and make
each matmul cast the weights (NumPy 2's NEP 50), about 30x slower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from llamachat import masks
from llamachat.protocols import CacheLength, ModelConfig, Tensor, as_float32, cache_capacity, checked_state
from llamachat.rope import RopeTables, angles, score_scale

from .rows import Products, blas_threads

f32 = np.float32


class KVCache(CacheLength):
    """Keys and values of every layer, preallocated to `capacity` tokens.

    Layout (the one `state()` exports, shared by every backend): k, v [n_layers, K, capacity, Dh].
    """

    def __init__(self, config: ModelConfig, capacity: int):
        self.config = config
        shape = (config.n_layers, config.n_kv_heads, capacity, config.head_dim)
        self.k = np.zeros(shape, f32)  # zero pages cost nothing until written
        self.v = np.zeros(shape, f32)
        self.capacity = capacity
        self.length = 0

    def state(self) -> dict[str, np.ndarray]:
        n = self.length
        return {"k": self.k[:, :, :n].copy(), "v": self.v[:, :, :n].copy()}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        k, v = checked_state(state, self.config, self.capacity)
        n = k.shape[2]
        self.k[:, :, :n], self.v[:, :, :n] = k, v
        self.length = n


def stored(w: np.ndarray) -> np.ndarray:
    """w [out, in], laid out in memory for the fastest `x @ w.T` with one row of x: as the transpose of
    a contiguous [in, out] array when out >= in, else contiguous. Measured with OpenBLAS 0.3.31 here,
    30 layers' products, best of 30: gate/up [3072, 576] 7.7 ms against 9.2; the attention output
    [576, 576] 2.9 against 3.3; the head [49152, 576] ~30% faster; down [576, 1536] the other way,
    3.7 against 5.2; q/k/v [960, 576] a tie."""
    return np.ascontiguousarray(w.T).T if w.shape[0] >= w.shape[1] else np.ascontiguousarray(w)


@dataclass
class Layer:
    """A block's matrices, all [out, in] (memory order: see `stored`)."""

    wqkv: np.ndarray  # [H*Dh + 2*K*Dh, D]  attn_norm folded into the columns, 1/sqrt(Dh) into the q rows
    # The switches' vectors; empty (size 0) where the architecture has none, so every field is an array
    bqkv: np.ndarray  # [H*Dh + 2*K*Dh] the q/k/v biases (qwen2), q's scaled like its rows
    q_norm: np.ndarray  # [Dh] qwen3's q norm, carrying 1/sqrt(Dh) (a norm would undo it in wq)
    k_norm: np.ndarray  # [Dh]
    wo: np.ndarray  # [D, H*Dh]
    wgate_up: np.ndarray  # [2F, D]  ffn_norm folded into the columns
    wdown: np.ndarray  # [D, F]


def rope_table(config: ModelConfig, n_positions: int, freq_divisors: np.ndarray | None = None) -> np.ndarray:
    """e^(i * position * inv_freq) as complex64, [n_positions, Dh/2] (angles computed in float64)."""
    return np.exp(1j * angles(config, n_positions, freq_divisors)).astype(np.complex64)


def rope(x: np.ndarray, cis: np.ndarray) -> np.ndarray:
    """Rotate consecutive pairs (x[2i], x[2i+1]) of each head, read as the complex number
    x[2i] + i x[2i+1] (Meta's formulation): one complex multiply. x [T, N, Dh]; cis [T, 1, Dh/2]."""
    return (x.view(np.complex64) * cis).view(np.float32)


class NumpyModel:
    """A Runner (see llamachat.protocols) on NumPy."""

    dtype = "float32"

    def __init__(self, config: ModelConfig, weights: Mapping[str, Tensor]):
        self.config = c = config
        scale = f32(score_scale(c))  # 1/sqrt(Dh), and longrope's attention factor squared
        with ThreadPoolExecutor(2) as pool:  # dequantizing is NumPy work that releases the GIL
            self.layers = list(pool.map(lambda i: self._layer(c, weights, f"blk.{i}.", scale), range(c.n_layers)))
        self.output_norm = as_float32(weights["output_norm"]).copy()
        embedding = as_float32(weights["token_embd"])  # [V, D]
        self.head = stored(embedding if c.tied_embeddings else as_float32(weights["output"]))  # [V, D]
        self.embedding = None if c.tied_embeddings else np.ascontiguousarray(embedding)
        self.rope = RopeTables(c, weights, lambda divisors: rope_table(c, c.context_length, divisors))
        self.eps = f32(c.norm_eps)
        self.weight_bytes = sum(a.nbytes for a in self._arrays())
        self.products = Products(blas_threads())  # x @ w.T, with lookup's few-row passes done faster: rows.py

    @staticmethod
    def _layer(c: ModelConfig, weights: Mapping[str, Tensor], prefix: str, scale: np.float32) -> Layer:
        def w(name: str) -> np.ndarray:
            return as_float32(weights[prefix + name])

        q_scale = f32(1) if c.qk_norm else scale  # with a q norm the scale goes into the norm's weight
        wqkv = np.concatenate([w("attn_q") * q_scale, w("attn_k"), w("attn_v")]) * w("attn_norm")
        none = np.zeros(0, f32)
        bqkv = np.concatenate([w("attn_q.bias") * q_scale, w("attn_k.bias"), w("attn_v.bias")]) if c.qkv_bias else none
        q_norm, k_norm = (w("attn_q_norm") * scale, w("attn_k_norm")) if c.qk_norm else (none, none)
        wgate_up = np.concatenate([w("ffn_gate"), w("ffn_up")]) * w("ffn_norm")
        return Layer(
            wqkv=stored(wqkv),
            bqkv=bqkv,
            q_norm=q_norm,
            k_norm=k_norm,
            wo=stored(w("attn_output")),
            wgate_up=stored(wgate_up),
            wdown=stored(w("ffn_down")),
        )

    def _arrays(self):
        for layer in self.layers:
            yield from (layer.wqkv, layer.wo, layer.wgate_up, layer.wdown)
        yield from (self.head, self.output_norm)
        if self.embedding is not None:
            yield self.embedding

    def new_cache(self, capacity: int | None = None) -> KVCache:
        return KVCache(self.config, cache_capacity(self.config, capacity))

    # -- the forward pass ------------------------------------------------------------------------
    def forward(self, ids: Sequence[int], cache: KVCache, all_logits: bool = False) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        with cache.extend(len(ids)) as (start, end):  # the cache holds the new tokens once this block completes
            x = self.embed(ids)  # [T, D]
            cis = self.rope.for_capacity(cache.capacity)[start:end, None]  # [T, 1, Dh/2] complex
            # causal mask: new token t (at position start + t) sees positions up to its own (and, with
            # a sliding window, none before the window): masks.py
            window = self.config.sliding_window
            mask = masks.additive(start, len(ids), end, window) if masks.needed(len(ids), window) else None  # [T, S]
            with np.errstate(over="ignore"):  # exp(-g) of a very negative gate is inf: silu is then 0, as it should be
                for i, layer in enumerate(self.layers):
                    x += self.attention(layer, self.rms_norm(x), cache, i, start, cis, mask)
                    x += self.feed_forward(layer, self.rms_norm(x))
        if not all_logits:
            x = x[-1:]
        logits = self.products(self.rms_norm(x) * self.output_norm, self.head)  # [T, V]
        return logits if all_logits else logits[0]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        return (self.head if self.embedding is None else self.embedding)[ids]  # [T, D]; tied: the head's rows

    def rms_norm(self, x: np.ndarray) -> np.ndarray:
        """x / rms(x); the weight is folded into the next matrix."""
        return x / np.sqrt(np.add.reduce(x * x, axis=-1, keepdims=True) / x.shape[-1] + self.eps)

    def attention(
        self, layer: Layer, x: np.ndarray, cache: KVCache, i: int, start: int, cis: np.ndarray, mask: np.ndarray | None
    ) -> np.ndarray:
        c = self.config
        T, H, K, Dh = len(x), c.n_heads, c.n_kv_heads, c.head_dim
        S = start + T
        qkv = self.products(x, layer.wqkv)  # [T, H*Dh + 2*K*Dh]
        if layer.bqkv.size:
            qkv += layer.bqkv
        qk = qkv[:, : (H + K) * Dh].reshape(T, H + K, Dh)  # q and k heads side by side
        if layer.q_norm.size:  # qwen3: RMSNorm over each head before RoPE
            qk = np.concatenate([self.rms_norm(qk[:, :H]) * layer.q_norm, self.rms_norm(qk[:, H:]) * layer.k_norm], axis=1)
        qk = rope(qk, cis)
        q, k = qk[:, :H], qk[:, H:]  # [T, H, Dh], [T, K, Dh]
        v = qkv[:, (H + K) * Dh :].reshape(T, K, Dh)
        cache.k[i, :, start:S] = k.transpose(1, 0, 2)  # [K, T, Dh]
        cache.v[i, :, start:S] = v.transpose(1, 0, 2)
        # Causal: rows t0..t1 of the new tokens see no position past start + t1, so a long prompt is
        # attended in blocks of rows, each against the keys it can see (512 tokens: 19.3 ms a layer
        # instead of 25.9).
        out = np.empty((T, H * Dh), f32)
        for t0 in range(0, T, self.query_block):
            t1 = min(T, t0 + self.query_block)
            seen = start + t1
            out[t0:t1] = self.attend(q[t0:t1], cache.k[i, :, :seen], cache.v[i, :, :seen], None if mask is None else mask[t0:t1, :seen])
        return self.products(out, layer.wo)  # [T, D]

    query_block = 64  # rows of new tokens attended at once (decode: one); 64 measured best of 32-256 at pp512

    def attend(self, q: np.ndarray, keys: np.ndarray, values: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """softmax(q k^T + mask) v for t query rows: q [t, H, Dh]; keys, values [K, s, Dh]; mask [t, s]."""
        t, H, Dh = q.shape
        K, s = keys.shape[:2]
        R = H // K
        # Query head h reads kv head h // R: group the R heads of each kv head, with their t rows.
        q = q.reshape(t, K, R, Dh).transpose(1, 2, 0, 3).reshape(K, R * t, Dh)
        scores = q @ keys.transpose(0, 2, 1)  # [K, R*t, s]  (q carries 1/sqrt(Dh))
        if mask is not None:
            scores.reshape(K, R, t, s)[...] += mask
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores, out=scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        out = probs @ values  # [K, R*t, Dh]
        return out.reshape(K, R, t, Dh).transpose(2, 0, 1, 3).reshape(t, H * Dh)

    def feed_forward(self, layer: Layer, x: np.ndarray) -> np.ndarray:
        F = layer.wdown.shape[1]
        gate_up = self.products(x, layer.wgate_up)  # [T, 2F]
        gate, up = gate_up[:, :F], gate_up[:, F:]
        return self.products(gate / (1 + np.exp(-gate)) * up, layer.wdown)  # SwiGLU: silu(gate) * up, [T, D]
