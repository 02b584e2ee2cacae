"""The contracts between llamachat's rooms.

Checkpoint loaders produce a `ModelConfig` and a mapping of weights; tokenizers, templates,
samplers and backends are plugins that meet these shapes. Change a contract here, deliberately,
and update every implementation with it.

Canonical weight names (GGUF's, without the ".weight" suffix), all Linear weights [out, in]:

    token_embd                  [vocab, dim]
    blk.{i}.attn_norm           [dim]
    blk.{i}.attn_q              [n_heads * head_dim, dim]      q/k rows in the interleaved RoPE
    blk.{i}.attn_k              [n_kv_heads * head_dim, dim]   layout (Meta, GGUF, MLX traditional)
    blk.{i}.attn_v              [n_kv_heads * head_dim, dim]
    blk.{i}.attn_output         [dim, n_heads * head_dim]
    blk.{i}.ffn_norm            [dim]
    blk.{i}.ffn_gate            [ffn_dim, dim]   (Meta w1)
    blk.{i}.ffn_up              [ffn_dim, dim]   (Meta w3)
    blk.{i}.ffn_down            [dim, ffn_dim]   (Meta w2)
    output_norm                 [dim]
    output                      [vocab, dim]     absent when the embedding is tied

Architecture switches (`ModelConfig.arch` and the fields after it) add weights, named as GGUF names them:

    blk.{i}.attn_q.bias         [n_heads * head_dim]           qkv_bias (qwen2): q/k bias entries
    blk.{i}.attn_k.bias         [n_kv_heads * head_dim]        in the same interleaved order as
    blk.{i}.attn_v.bias         [n_kv_heads * head_dim]        their weight rows
    blk.{i}.attn_q_norm         [head_dim]                     qk_norm (qwen3): RMSNorm over each head
    blk.{i}.attn_k_norm         [head_dim]                     of q and k before RoPE, interleaved order

Phi-3's fused qkv and gate/up projections are split into the canonical weights at load and fused
again by the writers of formats that fuse them.

Loaders whose source stores q/k in HF's half-split layout permute those rows once at load, so
every backend implements one RoPE: rotation of consecutive pairs (x[2i], x[2i+1]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

# --------------------------------------------------------------------------------------------
# Model description and weights


@dataclass(frozen=True)
class RopeScaling:
    """How positions are stretched beyond the trained context. `kind` "linear": position
    interpolation, inverse frequencies divided by `factor`. "longrope" (Phi-3): the per-frequency
    divisors are the weights `rope_factors_long` / `rope_factors_short`, long for a cache of more
    than `original_context` tokens (llamachat/rope.py), and cos/sin are scaled by `attention_factor`;
    `factor` is context / original_context, kept for display."""

    kind: str
    factor: float
    original_context: int | None = None
    attention_factor: float = 1.0


class ConfigError(ValueError):
    """A model configuration that describes no model (a count below 1, heads that do not divide)."""


# The architectures llamachat runs, as GGUF's `general.architecture` names them.
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3")


@dataclass(frozen=True)
class ModelConfig:
    """Everything a backend needs to build a LLaMA-family model, and what a chat needs to talk to it."""

    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    context_length: int = 4096
    tied_embeddings: bool = False
    bos_id: int | None = None
    eos_id: int | None = None
    eot_ids: tuple[int, ...] = ()  # ids that end an assistant turn (EOS included)
    chat_template: str | None = None  # the model's own Jinja template, if it ships one
    name: str = "model"
    # Architecture switches: each family is LLaMA plus some of these (docs/design.md).
    arch: str = "llama"  # one of ARCHITECTURES
    sliding_window: int | None = None  # a query attends to the last `sliding_window` positions only
    qkv_bias: bool = False  # q/k/v projections carry biases (qwen2)
    qk_norm: bool = False  # RMSNorm over each head of q and k before RoPE (qwen3)

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"architecture {self.arch!r} is not one of {', '.join(ARCHITECTURES)}")
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "vocab_size", "context_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"head_dim must be even for RoPE, got {self.head_dim}")

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def switch_weights(self) -> tuple[str, ...]:
        """The per-layer weights (names after "blk.{i}.") that this config's switches add."""
        bias = ("attn_q.bias", "attn_k.bias", "attn_v.bias") if self.qkv_bias else ()
        return bias + (("attn_q_norm", "attn_k_norm") if self.qk_norm else ())

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The canonical weights this config needs, with their shapes (see the module docstring)."""
        shapes: dict[str, tuple[int, ...]] = {"token_embd": (self.vocab_size, self.dim)}
        for i in range(self.n_layers):
            b = f"blk.{i}."
            shapes |= {
                b + "attn_norm": (self.dim,),
                b + "attn_q": (self.q_dim, self.dim),
                b + "attn_k": (self.kv_dim, self.dim),
                b + "attn_v": (self.kv_dim, self.dim),
                b + "attn_output": (self.dim, self.q_dim),
                b + "ffn_norm": (self.dim,),
                b + "ffn_gate": (self.ffn_dim, self.dim),
                b + "ffn_up": (self.ffn_dim, self.dim),
                b + "ffn_down": (self.dim, self.ffn_dim),
            }
            if self.qkv_bias:
                shapes |= {b + "attn_q.bias": (self.q_dim,), b + "attn_k.bias": (self.kv_dim,), b + "attn_v.bias": (self.kv_dim,)}
            if self.qk_norm:
                shapes |= {b + "attn_q_norm": (self.head_dim,), b + "attn_k_norm": (self.head_dim,)}
        shapes["output_norm"] = (self.dim,)
        if not self.tied_embeddings:
            shapes["output"] = (self.vocab_size, self.dim)
        return shapes


@dataclass(frozen=True, eq=False)
class QuantizedTensor:
    """A weight kept in its packed form, with one way back to float32.

    `scheme` names the packing: "gguf:Q4_1" and friends hold GGUF blocks in `data` (uint8, one row
    of blocks per output row; scales live inside the blocks); "affine" is MLX's layout: `data`
    uint32-packed codes, `scales` and `biases` per group of `group_size` elements of a row (see
    llamachat/quantize.py); "bf16" holds bfloat16 bit patterns as uint16, which NumPy has no type for.
    `dequantize` is pluggable so that loaders own the formulas and backends stay format-free.
    """

    scheme: str
    shape: tuple[int, ...]  # the logical (dequantized) shape, numpy order
    bits: int
    group_size: int
    data: np.ndarray
    scales: np.ndarray | None = None
    biases: np.ndarray | None = None
    dequantizer: Callable[[QuantizedTensor], np.ndarray] | None = field(default=None, repr=False)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.data, self.scales, self.biases) if a is not None)

    def dequantize(self) -> np.ndarray:
        """The float32 values, shape `self.shape`."""
        if self.dequantizer is None:
            raise TypeError(f"no dequantizer for scheme {self.scheme!r}")
        out = self.dequantizer(self)
        assert out.dtype == np.float32 and out.shape == self.shape, (out.dtype, out.shape, self.shape)
        return out


Tensor = np.ndarray | QuantizedTensor


def as_float32(t: Tensor) -> np.ndarray:
    """A dense float32 array for `t`, whatever form the loader handed over."""
    if isinstance(t, QuantizedTensor):
        return t.dequantize()
    return np.asarray(t, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Tokenizer


class StreamDecoder(Protocol):
    """Turns ids into text one at a time, holding back bytes until they form whole characters."""

    def push(self, token_id: int) -> str: ...
    def flush(self) -> str: ...


@runtime_checkable
class Tokenizer(Protocol):
    """One interface over SentencePiece and byte-level BPE.

    `encode` treats its input as text only: it never yields control or special ids and adds no
    BOS/EOS (templates splice those in as ids). SentencePiece tokenizers add the dummy-prefix
    space at the start of every call, as Meta's `sp.encode` does.
    """

    kind: str  # "sentencepiece" or "bpe"
    bos_id: int | None
    eos_id: int | None
    eot_ids: tuple[int, ...]
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def token_id(self, piece: str) -> int | None: ...
    def piece(self, token_id: int) -> str: ...
    def is_special(self, token_id: int) -> bool: ...
    def stream_decoder(self) -> StreamDecoder: ...


# --------------------------------------------------------------------------------------------
# Templates

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


class TemplateError(ValueError):
    """A conversation the template cannot format (with a one-line reason)."""


@runtime_checkable
class Template(Protocol):
    """Formats a conversation exactly as the model was trained on it.

    Optional (the built-ins have them): `takes_context = True` with a `context` keyword on encode and
    render (a `templates.ChatContext`: the chat's start, for dates, and the thinking switch), a
    `tokenizer` keyword on render (BOS/EOS spelled as it spells them), and for reasoning models
    `thinking_tags` ((open, close), e.g. ("<think>", "</think>")) and `thinking_switch` (the format
    reads ChatContext.thinking).
    """

    name: str

    def encode(self, messages: Sequence[Message], tokenizer: Tokenizer, add_generation_prompt: bool = True) -> list[int]: ...
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str: ...
    def stop_ids(self, tokenizer: Tokenizer) -> tuple[int, ...]: ...


# --------------------------------------------------------------------------------------------
# Samplers


@dataclass(frozen=True)
class Param:
    """A sampler parameter: what `/set` validates and completes and `llamachat plugins` documents."""

    name: str
    type: type  # int, float, bool or str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None

    def parse(self, value: Any) -> Any:
        """`value` (a string from the command line, or a TOML value) checked and converted;
        ValueError with a one-line reason otherwise."""
        try:
            if self.type is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "on", "off", "1", "0", "yes", "no"):
                    raise ValueError
                converted: Any = value.lower() in ("true", "on", "1", "yes")
            elif self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            else:
                converted = self.type(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} takes {self.describe_range()}, got {value!r}") from None
        if isinstance(converted, float) and not np.isfinite(converted):
            raise ValueError(f"{self.name} takes {self.describe_range()}, got {value!r}")
        if (self.min is not None and converted < self.min) or (self.max is not None and converted > self.max):
            raise ValueError(f"{self.name} takes {self.describe_range()}, got {value!r}")
        return converted

    def describe_range(self) -> str:
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(self.type, str(self.type))
        if self.min is not None and self.max is not None:
            return f"{kind} from {self.min:g} to {self.max:g}"
        if self.min is not None:
            return f"{kind} >= {self.min:g}"
        if self.max is not None:
            return f"{kind} <= {self.max:g}"
        return kind


@dataclass
class SamplingContext:
    """What a sampler may look at besides the logits."""

    history: list[int]  # prompt and generated ids so far
    rng: np.random.Generator  # the session's one seeded generator
    settings: Mapping[str, Any]  # parameter values by name
    state: dict[str, Any] = field(default_factory=dict)  # per-chain memory of stateful samplers (mirostat's mu)


@runtime_checkable
class Sampler(Protocol):
    """One step of the chain: logits in, logits out (filtered candidates set to -inf).

    The chain's final draw (softmax and one seeded categorical draw, or the only candidate left)
    is the chain's own job, so every sampler stays a logits transform. Optional extras: a method
    `observe(token, ctx)` that the chain calls with the drawn token (for samplers with state), and a
    `replaces` tuple of sampler names with `active(settings) -> bool`: while active, the sampler
    takes the place of those in the chain (as mirostat replaces top_k ... temperature). For speed,
    `narrow(logits, ctx) -> (ids, logits) | None`: the candidates it keeps (ids ascending), so the
    chain runs what follows on them alone (top_k); and `subset_safe = True`: `apply` gives the same
    result on any id-ordered part of the logits holding every finite one (it never indexes by id).
    """

    name: str
    params: tuple[Param, ...]

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------
# Backends


@runtime_checkable
class Cache(Protocol):
    """The KV cache of one conversation, holding the keys and values of its first `len()` tokens."""

    capacity: int

    def __len__(self) -> int: ...
    def truncate(self, n: int) -> None:
        """Keep the first `n` tokens."""
        ...

    def state(self) -> dict[str, np.ndarray]:
        """The cached keys and values for saved sessions: {"k", "v"}, float32 NumPy arrays of shape
        [n_layers, n_kv_heads, len(), head_dim], the layout every backend exports and imports; or,
        for an opaque cache (an engine that owns its cells: llamacpp), {"blob": uint8 [n]}, which
        only the same backend on the same model and engine version reads back."""
        ...

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Hold the tokens of a saved `state()`; ValueError (and the cache unchanged) when it does not fit."""
        ...


def cache_capacity(config: ModelConfig, capacity: int | None) -> int:
    """The capacity a new cache gets: what was asked for, at most the model's context (all of it by default)."""
    return min(capacity or config.context_length, config.context_length)


def checked_state(state: Mapping[str, np.ndarray], config: ModelConfig, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """The keys and values of a saved state (see `Cache.state`) as float32 arrays, checked against this
    model's layout [n_layers, n_kv_heads, tokens, head_dim] and the cache's capacity; ValueError otherwise."""
    k, v = np.asarray(state["k"], np.float32), np.asarray(state["v"], np.float32)
    layout = (config.n_layers, config.n_kv_heads, config.head_dim)
    if k.shape != v.shape or k.ndim != 4 or k.shape[:2] + k.shape[3:] != layout or k.shape[2] > capacity:
        expected = (config.n_layers, config.n_kv_heads, capacity, config.head_dim)
        raise ValueError(f"cache state of shape {k.shape} does not fit this model's cache {expected}")
    return k, v


class CacheLength:
    """The bookkeeping every cache shares: `length` tokens held of `capacity`, truncation that keeps
    the first n, and `extend`, the one place a forward pass's new length is committed. Backends
    subclass it for their storage."""

    capacity: int
    length: int = 0

    def __len__(self) -> int:
        return self.length

    def truncate(self, n: int) -> None:
        if not 0 <= n <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {n}")
        self.length = n

    def span(self, n: int) -> tuple[int, int]:
        """(start, end): the positions n new tokens will take; ValueError when they do not fit."""
        end = self.length + n
        if end > self.capacity:
            raise ValueError(f"{end} tokens do not fit the cache ({self.capacity})")
        return self.length, end

    @contextmanager
    def extend(self, n: int) -> Iterator[tuple[int, int]]:
        """`with cache.extend(T) as (start, end):` write the new tokens' keys and values at start:end.
        The cache holds them (its length becomes `end`) only when the block ends normally: an exception
        raised inside it (Ctrl-C's KeyboardInterrupt included) leaves the length, and so `state()` and
        every later forward pass, exactly as before. Writes past the length are invisible until then."""
        start, end = self.span(n)
        yield start, end
        self.length = end  # not reached when the block raises: contextmanager re-raises at the yield


@runtime_checkable
class Runner(Protocol):
    """A model loaded on a backend."""

    config: ModelConfig
    weight_bytes: int  # bytes of the weights as this backend holds them (the decode roofline)
    dtype: str

    def new_cache(self, capacity: int | None = None) -> Cache: ...
    def forward(self, ids: Sequence[int], cache: Cache, all_logits: bool = False) -> np.ndarray:
        """Evaluate `ids` after the cache's tokens and append them to it. Returns float32 logits,
        (vocab,) for the last position, or (len(ids), vocab) with `all_logits`. The cache's length
        changes only when the whole call succeeds, so an interrupted forward (Ctrl-C) leaves the
        cache holding exactly what it held before."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A plugin that runs models: `available()` says whether it can here, `load()` builds a Runner."""

    name: str
    description: str

    def available(self) -> tuple[bool, str]: ...
    def load(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any) -> Runner: ...

    # Optional: `memory_needed(config, weights, **options) -> int`, the bytes the loaded weights will
    # take (checked against the memory available before loading); without it, 4 bytes a parameter.
    # Optional: `close()` on the Runner it builds, called when the chat lets the model go: a runner
    # spread over several processes (tensor parallelism) stops its other ranks there.
    # Optional: `tensor_parallel = True` and `serve(launch) -> int`: load() gets `tp=N` (and under a
    # launcher, `launch=`, a llamachat.ranks.Launch) and builds rank 0's Runner; serve() is what a
    # launched rank above 0 runs instead of the chat (it returns the exit code).
    # Optional: `reads_file = True`: load() also gets `source=`, the checkpoint's path (llamacpp maps
    # the GGUF itself). A Runner may name its `engine` ("llama-cpp-python 0.3.36"): saved sessions
    # record it, since an opaque cache state is that engine's format.
