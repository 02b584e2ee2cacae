"""An outside llamachat plugin, as a third party would write one.

Install it next to llamachat (`pip install ./examples/llamachat-example-plugin`) and it appears in
`llamachat plugins`, in `/set` and `/sampler` (the `top_a` sampler) and as `--backend counting`.
"""

from __future__ import annotations

import numpy as np

import llamachat
from llamachat.protocols import Param


class TopA:
    """Top-A: drop tokens whose probability is below top_a * p_max^2 (0 = off). Its `temperature`
    parameter clashes with the built-in one on purpose: it is reachable as `top_a.temperature`."""

    name = "top_a"
    params = (
        Param("top_a", float, 0.0, "drop tokens below top_a * p_max^2; 0 = off", 0.0, 1.0),
        Param("temperature", float, 1.0, "softmax temperature top_a judges probabilities at", 0.01, 10.0),
    )

    def apply(self, logits: np.ndarray, ctx) -> np.ndarray:
        a = ctx.settings["top_a"]
        if a <= 0:
            return logits
        z = logits / np.float32(ctx.settings["temperature"])
        p = np.exp(z - z.max())
        p /= p.sum()
        return np.where(p >= a * p.max() ** 2, logits, np.float32(-np.inf))


class CountingBackend:
    """Wraps the NumPy backend and counts the tokens each runner evaluates."""

    name = "counting"
    description = "the NumPy backend, counting evaluated tokens (an example of a backend wrapper)"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def load(self, config, weights, **options):
        from llamachat_numpy import NumpyBackend

        return CountingRunner(NumpyBackend().load(config, weights, **options))


class CountingRunner:
    def __init__(self, inner):
        self.inner, self.evaluated = inner, 0
        self.config, self.weight_bytes, self.dtype = inner.config, inner.weight_bytes, inner.dtype

    def new_cache(self, capacity=None):
        return self.inner.new_cache(capacity)

    def forward(self, ids, cache, all_logits=False):
        self.evaluated += len(ids)
        return self.inner.forward(ids, cache, all_logits)


@llamachat.hookimpl
def register_samplers(register):
    register(TopA())


@llamachat.hookimpl
def register_backends(register):
    register(CountingBackend())
