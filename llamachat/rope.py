"""RoPE's inverse frequencies, computed once for every backend (docs/formats.md 3).

Each backend rotates the consecutive pairs (x[2i], x[2i+1]) of a head by position * inv_freq[i]; how
it applies the rotation (a complex multiply, `mx.fast.rope`) is its own, the frequencies are these:

    inv_freq[i] = theta ** -(2i / Dh)            i = 0 .. Dh/2 - 1
    linear      inv_freq / factor                (position interpolation)
    llama3      inv_freq / divisors[i]           (Llama-3.1: per-frequency divisors, GGUF's `rope_freqs`)
    longrope    inv_freq / long[i] or short[i]   (Phi-3: GGUF's `rope_factors_long` / `_short`),
                cos and sin times attention_factor

Llama-3.1's scaling travels as divisors, not as a `RopeScaling`, because that is how GGUF stores it:
every loader turns its source's description into the same `rope_freqs` weight (`llama3_divisors`).
Longrope travels the same way, as two divisor weights, plus a `RopeScaling("longrope", ...)` saying
which applies: a cache of more than the original context rotates with the long factors, any other
with the short ones (`divisor_name`), chosen once per cache as llama.cpp chooses by n_ctx, never per
forward call as transformers does (docs/design.md, "RoPE"). A new scheme (yarn) is one more function
in SCALINGS, keyed by `RopeScaling.kind`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import numpy as np

from .protocols import ModelConfig, RopeScaling, Tensor, as_float32

T = TypeVar("T")
DIVISOR_WEIGHTS = ("rope_freqs", "rope_factors_long", "rope_factors_short")  # GGUF's names, canonical too


def base_frequencies(head_dim: int, theta: float) -> np.ndarray:
    """theta ** -(2i / Dh) for each pair i, float64 [Dh/2]."""
    return theta ** -(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def linear(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    return inv_freq / scaling.factor


def longrope(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    return inv_freq  # the long or short factors are the divisors (`divisor_name`)


SCALINGS: dict[str, Callable[[np.ndarray, RopeScaling], np.ndarray]] = {"linear": linear, "longrope": longrope}


def is_longrope(config: ModelConfig) -> bool:
    return config.rope_scaling is not None and config.rope_scaling.kind == "longrope"


def divisor_name(config: ModelConfig, capacity: int) -> str:
    """The divisor weight a cache of `capacity` tokens rotates with: longrope's long factors when the
    cache can hold more than the original context, its short ones otherwise (llama.cpp's rule by
    n_ctx: a cache never switches, so its keys stay valid across turns); else Llama-3.1's `rope_freqs`
    (used where the checkpoint has it)."""
    if is_longrope(config):
        original = config.rope_scaling.original_context or config.context_length  # type: ignore[union-attr]
        return "rope_factors_long" if capacity > original else "rope_factors_short"
    return "rope_freqs"


def attention_factor(config: ModelConfig) -> float:
    """What longrope multiplies cos and sin by (1 otherwise). The backends fold its square into the
    attention's score scale instead, which is the same product q.k and leaves the cached keys plain
    rotated keys, alike on every backend (a cache's state moves between them)."""
    return config.rope_scaling.attention_factor if is_longrope(config) else 1.0  # type: ignore[union-attr]


def score_scale(config: ModelConfig) -> float:
    """The factor on q.k before the softmax: 1/sqrt(Dh), times longrope's attention factor squared."""
    return attention_factor(config) ** 2 / math.sqrt(config.head_dim)


def longrope_attention_factor(factor: float, original: int) -> float:
    """transformers' default (`_compute_longrope_parameters`, and llama.cpp's converter's):
    sqrt(1 + ln(factor) / ln(original)), or 1 where the context is not extended."""
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


class RopeTables(Generic[T]):
    """A backend's rotation tables, one per divisor set a cache may pick (longrope: long and short),
    each built by `build(divisors or None)` the first time a cache of that side asks for it."""

    def __init__(self, config: ModelConfig, weights: Mapping[str, Tensor], build: Callable[[np.ndarray | None], T]):
        self.config, self.build = config, build
        self.divisors = {name: as_float32(weights[name]) for name in DIVISOR_WEIGHTS if name in weights}
        self.tables: dict[str, T] = {}

    def for_capacity(self, capacity: int) -> T:
        name = divisor_name(self.config, capacity)
        if name not in self.tables:
            self.tables[name] = self.build(self.divisors.get(name))
        return self.tables[name]


def inverse_frequencies(config: ModelConfig, divisors: np.ndarray | None = None) -> np.ndarray:
    """The model's inverse frequencies, float64 [Dh/2]: the base ones, scaled as `config.rope_scaling`
    says, divided by the checkpoint's per-frequency `divisors` (the `rope_freqs` weight) if it has them."""
    inv_freq = base_frequencies(config.head_dim, config.rope_theta)
    if config.rope_scaling is not None:
        inv_freq = SCALINGS[config.rope_scaling.kind](inv_freq, config.rope_scaling)
    if divisors is not None:
        inv_freq = inv_freq / np.asarray(divisors, dtype=np.float64)
    return inv_freq


def angles(config: ModelConfig, n_positions: int, divisors: np.ndarray | None = None) -> np.ndarray:
    """position * inv_freq, float64 [n_positions, Dh/2]: the table the backends turn into cos/sin."""
    return np.outer(np.arange(n_positions, dtype=np.float64), inverse_frequencies(config, divisors))


def llama3_divisors(head_dim: int, theta: float, rope: Mapping[str, Any]) -> np.ndarray:
    """Llama-3.1's frequency scaling as the per-frequency divisors GGUF stores in `rope_freqs`
    (docs/formats.md 3; HF `_compute_llama3_parameters`): wavelengths shorter than
    original_context / high_freq_factor are kept, longer than original_context / low_freq_factor are
    divided by `factor`, and those between are blended smoothly."""
    factor, low, high = float(rope["factor"]), float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old = float(rope.get("original_max_position_embeddings", 8192))
    inv = base_frequencies(head_dim, theta)
    wavelen = 2 * math.pi / inv
    smooth = np.clip((old / wavelen - low) / (high - low), 0.0, 1.0)
    scaled = (1 - smooth) * inv / factor + smooth * inv
    scaled = np.where(wavelen < old / high, inv, np.where(wavelen > old / low, inv / factor, scaled))
    return (inv / scaled).astype(np.float32)
