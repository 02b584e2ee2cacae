"""The attention mask every backend applies: causal, and for a sliding-window model (Mistral-7B-v0.1,
Phi-3-mini, Qwen2 with use_sliding_window) limited to the last `window` positions.

A query at position p sees key position j when j <= p and, with a window, p - j < window (the query's
own position counts: transformers' `sliding_window_overlay`). The KV cache keeps every position (it
does not roll): the window is a mask only, so truncating a cache or saving it works as for LLaMA.
"""

from __future__ import annotations

import numpy as np


def visible(start: int, n_new: int, n_keys: int, window: int | None) -> np.ndarray:
    """bool [n_new, n_keys]: new token t (at position start + t) may attend to key position j."""
    position = np.arange(start, start + n_new)[:, None]
    keys = np.arange(n_keys)[None]
    seen = keys <= position
    if window is not None:
        seen &= position - keys < window
    return seen


def additive(start: int, n_new: int, n_keys: int, window: int | None) -> np.ndarray:
    """float32 [n_new, n_keys]: 0 where `visible`, -inf elsewhere (added to the scores)."""
    return np.where(visible(start, n_new, n_keys, window), np.float32(0), np.float32(-np.inf)).astype(np.float32)


def needed(n_new: int, window: int | None) -> bool:
    """Whether a forward pass of n_new tokens needs a mask at all: a single decode step without a
    window sees everything cached."""
    return n_new > 1 or window is not None
