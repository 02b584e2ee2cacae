"""RoPE's inverse frequencies, computed once for every backend (docs/formats.md 3).

Each backend rotates the consecutive pairs (x[2i], x[2i+1]) of a head by position * inv_freq[i]; how
it applies the rotation (a complex multiply, `mx.fast.rope`) is its own, the frequencies are these:

    inv_freq[i] = theta ** -(2i / Dh)            i = 0 .. Dh/2 - 1
    linear      inv_freq / factor                (position interpolation)
    llama3      inv_freq / divisors[i]           (Llama-3.1: per-frequency divisors, GGUF's `rope_freqs`)

Llama-3.1's scaling travels as divisors, not as a `RopeScaling`, because that is how GGUF stores it:
every loader turns its source's description into the same `rope_freqs` weight (`llama3_divisors`).
A new scheme (longrope, yarn) is one more function in SCALINGS, keyed by `RopeScaling.kind`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .protocols import ModelConfig, RopeScaling


def base_frequencies(head_dim: int, theta: float) -> np.ndarray:
    """theta ** -(2i / Dh) for each pair i, float64 [Dh/2]."""
    return theta ** -(np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def linear(inv_freq: np.ndarray, scaling: RopeScaling) -> np.ndarray:
    return inv_freq / scaling.factor


SCALINGS: dict[str, Callable[[np.ndarray, RopeScaling], np.ndarray]] = {"linear": linear}


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
