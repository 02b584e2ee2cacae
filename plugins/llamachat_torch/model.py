"""A LLaMA forward pass in PyTorch: MPS, CUDA or the CPU, in float32, float16 or bfloat16.

The same model as the NumPy reference (and checked against it), written the PyTorch way:
`scaled_dot_product_attention` with GQA, RoPE as a complex multiply on interleaved pairs (computed in
float32 whatever the weights' dtype, as Meta does), RMSNorm in float32, and a preallocated KV cache
written in place (float32 on the CPU, where attention in bf16 is several times slower). Matrices are
fused (q/k/v, gate/up). Float32 on the CPU cuts each into one slice per thread, multiplied as one
batch (sliced.py: MKL's matrix-vector product uses one thread here); everything else is a contiguous
[out, in] tensor for `F.linear`, or an Int4Linear (int4.py).

Shapes: T new tokens, S cached + new, D dim, H heads, K kv heads, Dh head dim, F ffn dim, V vocab.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from llamachat import masks
from llamachat.protocols import CacheLength, ModelConfig, Tensor, as_float32, cache_capacity, checked_state
from llamachat.rope import RopeTables, angles, score_scale

from .int4 import Int4Linear
from .sliced import SlicedLinear

Linear = torch.Tensor | Int4Linear | SlicedLinear  # a weight [out, in] as this model multiplies it


def cpu_has_matrix_unit(dtype: torch.dtype) -> bool:
    """Whether this CPU multiplies matrices of `dtype` natively (float32 always; bf16 with AVX512-BF16
    or AMX, fp16 with AMX-FP16). PyTorch asks through private functions; a missing one counts as no."""
    if dtype == torch.float32:
        return True
    names = {torch.bfloat16: ("_is_avx512_bf16_supported", "_is_amx_tile_supported"), torch.float16: ("_is_amx_fp16_supported",)}
    return any(getattr(torch.cpu, name, lambda: False)() for name in names.get(dtype, ()))


class TorchKVCache(CacheLength):
    """k, v [n_layers, K, capacity, Dh] on the model's device; `state()` exports float32 NumPy arrays
    in the layout every backend shares."""

    def __init__(self, config: ModelConfig, capacity: int, device: torch.device, dtype: torch.dtype):
        self.config = config
        shape = (config.n_layers, config.n_kv_heads, capacity, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.capacity, self.length = capacity, 0

    def state(self) -> dict[str, np.ndarray]:
        n = self.length
        return {name: t[:, :, :n].float().cpu().numpy() for name, t in (("k", self.k), ("v", self.v))}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        k, v = checked_state(state, self.config, self.capacity)
        n = k.shape[2]
        self.k[:, :, :n] = torch.from_numpy(k).to(self.k)
        self.v[:, :, :n] = torch.from_numpy(v).to(self.v)
        self.length = n


class TorchModel:
    """A Runner (see llamachat.protocols) on PyTorch."""

    # Lookup decoding's drafts a pass, unless the chat says otherwise: one. A pass over 2 tokens costs
    # about one step here (sliced.py's matrix-vector form up to a few rows), 5 tokens ~1.7x, so one
    # draft token measured best on both of benchmarks/lookup.py's workloads (1.24x and 1.32x plain
    # decode on the editing one, 1.07-1.09x on the quoting one; 4 drafts 1.16x and 1.00x):
    # docs/benchmarks.md. NumPy and MLX keep 0.
    default_lookup = 1

    def __init__(self, config: ModelConfig, weights: Mapping[str, Tensor], device: torch.device, dtype: torch.dtype, int4: bool = False):
        self.config, self.device, self.torch_dtype = config, device, dtype
        self.score_scale = score_scale(config)
        # Keys, values and attention in float32 on the CPU whatever the weights' dtype: PyTorch 2.13's
        # CPU attention is ~7x slower in bfloat16 (measured, one decode step, 9 heads over 3 kv heads:
        # 83 vs 24 us a layer at 100 cached tokens, 769 vs 111 us at 1,000), which a long chat pays
        # every token. It costs twice the cache memory of bf16; GPUs keep the model's dtype.
        self.cache_dtype = torch.float32 if device.type == "cpu" else dtype
        self.dtype = str(dtype).removeprefix("torch.") + ("+int4" if int4 else "")
        # A CPU without bf16/fp16 matrix instructions multiplies several rows by a bf16/fp16 matrix 5-7x
        # slower than in float32 (measured here, AVX2: 512 rows by gate/up [3072, 576], bf16 108-133 ms,
        # fp16 118 ms, float32 16-20 ms including casting the weights), so a prompt's products run in
        # float32; a single row (decoding) stays in the weights' dtype, where it is the faster one.
        self.upcast_rows = device.type == "cpu" and not cpu_has_matrix_unit(dtype)

        def w(name: str) -> torch.Tensor:  # float32 NumPy, zero-copy where the loader's array allows
            with warnings.catch_warnings():  # memory-mapped weights are read-only; nothing here writes to them
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                return torch.from_numpy(np.ascontiguousarray(as_float32(weights[name])))

        def put(*names: str) -> Linear:
            """Linear weights [out, in] (several: rows concatenated), stored as this model multiplies them."""
            if int4:  # the layers' matrices only: the embedding and the head stay dense (see int4.py)
                return Int4Linear([weights[n] for n in names], dtype)
            return self.dense(torch.cat([w(n) for n in names]) if len(names) > 1 else w(names[0]))

        self.layers = []
        for i in range(config.n_layers):
            b = f"blk.{i}."
            self.layers.append(
                {
                    "attn_norm": w(b + "attn_norm").to(device),  # norms stay float32
                    "wqkv": put(b + "attn_q", b + "attn_k", b + "attn_v"),  # [(H+2K)*Dh, D]
                    "wo": put(b + "attn_output"),  # [D, H*Dh]
                    "ffn_norm": w(b + "ffn_norm").to(device),
                    "wgate_up": put(b + "ffn_gate", b + "ffn_up"),  # [2F, D]
                    "wdown": put(b + "ffn_down"),  # [D, F]
                }
            )
            if config.qkv_bias:  # qwen2: [(H+2K)*Dh], float32 like the norms
                self.layers[-1]["bqkv"] = torch.cat([w(b + "attn_q.bias"), w(b + "attn_k.bias"), w(b + "attn_v.bias")]).to(device)
            if config.qk_norm:  # qwen3: [Dh] each
                self.layers[-1] |= {"q_norm": w(b + "attn_q_norm").to(device), "k_norm": w(b + "attn_k_norm").to(device)}
        self.output_norm = w("output_norm").to(device)
        self.head = self.dense(w("token_embd" if config.tied_embeddings else "output"))  # [V, D]
        # tied: one copy, the head's, and a token's embedding is its row
        self.embedding = None if config.tied_embeddings else w("token_embd").to(device=device, dtype=dtype)  # [V, D]
        self.rope_tables = RopeTables(config, weights, lambda divisors: self.rope_table(divisors))
        tensors = [t for layer in self.layers for t in layer.values()] + [self.output_norm, self.head]
        if self.embedding is not None:
            tensors.append(self.embedding)
        self.weight_bytes = sum(t.nbytes for t in tensors)

    def dense(self, t: torch.Tensor) -> torch.Tensor | SlicedLinear:
        """A Linear weight [out, in] on the model's device and dtype, as this model multiplies it."""
        t = t.to(device=self.device, dtype=self.torch_dtype)
        if self.device.type == "cpu" and self.torch_dtype == torch.float32:
            return SlicedLinear(t, torch.get_num_threads())
        return t.contiguous()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding[ids]
        return self.head.rows(ids) if isinstance(self.head, SlicedLinear) else self.head[ids]  # tied: the head's rows

    def new_cache(self, capacity: int | None = None) -> TorchKVCache:
        return TorchKVCache(self.config, cache_capacity(self.config, capacity), self.device, self.cache_dtype)

    def linear(self, x: torch.Tensor, w: Linear) -> torch.Tensor:
        if not isinstance(w, torch.Tensor):  # an Int4Linear or a SlicedLinear
            return w(x)
        if self.upcast_rows and x.shape[0] > 4:  # 4 rows: a tie, measured
            return F.linear(x.float(), w.float()).to(x.dtype)
        return F.linear(x, w)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """In float32, as Meta does, then back to x's dtype (one fused op)."""
        return F.rms_norm(x.float(), weight.shape, weight, self.config.norm_eps).to(x.dtype)

    def rope_table(self, divisors: np.ndarray | None) -> torch.Tensor:
        """e^(i * position * inv_freq), complex64 [ctx, Dh/2] on the device (angles in float64)."""
        theta = torch.from_numpy(angles(self.config, self.config.context_length, divisors))
        return torch.polar(torch.ones_like(theta), theta).to(torch.complex64).to(self.device)

    def rope(self, x: torch.Tensor, cis: torch.Tensor) -> torch.Tensor:
        """Rotate consecutive pairs of each head, in float32. x [T, N, Dh]; cis [T, 1, Dh/2]."""
        rotated = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2)) * cis
        return torch.view_as_real(rotated).flatten(-2)

    def block(self, x, layer, k_cache, v_cache, cis, mask, start: int, end: int) -> torch.Tensor:
        """One transformer layer on x [T, D]; writes this layer's new keys and values into its cache."""
        c = self.config
        T, H, K, Dh = x.shape[0], c.n_heads, c.n_kv_heads, c.head_dim
        qkv = self.linear(self.rms_norm(x, layer["attn_norm"]), layer["wqkv"])  # [T, (H+2K)*Dh]
        if "bqkv" in layer:
            qkv = (qkv.float() + layer["bqkv"]).to(qkv.dtype)
        qk = qkv[:, : (H + K) * Dh].view(T, H + K, Dh)
        if "q_norm" in layer:  # qwen3: each head of q and k normalized before RoPE
            qk = torch.cat([self.rms_norm(qk[:, :H], layer["q_norm"]), self.rms_norm(qk[:, H:], layer["k_norm"])], dim=1)
        qk = self.rope(qk, cis)  # q and k heads rotated together, float32
        q, k = qk[:, :H].to(k_cache.dtype), qk[:, H:]
        v = qkv[:, (H + K) * Dh :].view(T, K, Dh)
        k_cache[:, start:end] = k.transpose(0, 1)  # cast to the cache's dtype as they are written
        v_cache[:, start:end] = v.transpose(0, 1)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None],  # [1, H, T, Dh]
            k_cache[None, :, :end],  # [1, K, S, Dh]
            v_cache[None, :, :end],
            attn_mask=mask,
            scale=self.score_scale,  # 1/sqrt(Dh), times longrope's attention factor squared
            enable_gqa=True,  # query head h reads kv head h // (H // K)
        )
        x = x + self.linear(out[0].transpose(0, 1).reshape(T, H * Dh).to(x.dtype), layer["wo"])
        gate, up = self.linear(self.rms_norm(x, layer["ffn_norm"]), layer["wgate_up"]).chunk(2, dim=-1)
        return x + self.linear(F.silu(gate) * up, layer["wdown"])

    @torch.inference_mode()
    def forward(self, ids: Sequence[int], cache: TorchKVCache, all_logits: bool = False) -> np.ndarray:
        logits = self.device_logits(ids, cache, all_logits).cpu().numpy()  # [T, V]
        return logits if all_logits else logits[0]

    @torch.inference_mode()
    def device_logits(self, ids: Sequence[int], cache: TorchKVCache, all_logits: bool = False) -> torch.Tensor:
        """The pass itself: float32 logits [T, V] (all_logits) or [1, V] of the last token, on the
        device (tensor parallel gathers them there: tp.py)."""
        T = len(ids)
        with cache.extend(T) as (start, end):  # the cache holds the new tokens once this block completes
            x = self.embed(torch.tensor(list(ids), device=self.device))  # [T, D]
            cis = self.rope_tables.for_capacity(cache.capacity)[start:end, None]  # [T, 1, Dh/2]
            # new token t (at position start + t) attends to positions <= start + t (and within the
            # sliding window, if any: masks.py)
            window = self.config.sliding_window
            mask = None
            if masks.needed(T, window):  # additive (0 / -inf): PyTorch 2.13's CPU attention takes it ~25% faster than a bool one
                mask = torch.from_numpy(masks.additive(start, T, end, window)).to(self.device, self.cache_dtype)
            for i, layer in enumerate(self.layers):
                x = self.block(x, layer, cache.k[i], cache.v[i], cis, mask, start, end)
        if not all_logits:
            x = x[-1:]
        return self.linear(self.rms_norm(x, self.output_norm), self.head).float()
