"""The sampler chain: an ordered list of sampler plugins, their settings, and the final draw.

Each sampler turns logits into logits (discarded candidates become -inf). The chain then draws once
from the softmax of what is left with the session's seeded generator, or takes the only candidate
left without touching the generator (so temperature 0 is exactly greedy, and a seeded chat
reproduces its replies).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import LlamachatError
from .protocols import Param, Sampler, SamplingContext

DEFAULT_CHAIN = ("repetition_penalty", "top_k", "top_p", "min_p", "temperature")


class SamplerChain:
    def __init__(self, samplers: Mapping[str, Sampler], chain: Sequence[str] = DEFAULT_CHAIN, seed: int | None = None):
        self.available = dict(samplers)
        unknown = [n for n in chain if n not in self.available]
        if unknown:
            raise LlamachatError(f"unknown sampler {unknown[0]!r} (available: {', '.join(sorted(self.available))})")
        self.chain = list(chain)
        self.params: dict[str, Param] = {p.name: p for s in self.available.values() for p in s.params}
        self.settings: dict[str, Any] = {name: p.default for name, p in self.params.items()}
        self.rng = np.random.default_rng(seed)

    def set(self, name: str, value: Any) -> Any:
        """Set a parameter from text or a TOML value; LlamachatError with what is accepted otherwise."""
        if name not in self.params:
            raise LlamachatError(f"unknown sampler parameter {name!r} (known: {', '.join(sorted(self.params))})")
        try:
            self.settings[name] = self.params[name].parse(value)
        except ValueError as e:
            raise LlamachatError(str(e)) from None
        return self.settings[name]

    def update(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            if value is not None:
                self.set(name, value)

    def seed(self, seed: int | None) -> None:
        self.rng = np.random.default_rng(seed)

    def sample(self, logits: np.ndarray, history: Iterable[int]) -> int:
        ctx = SamplingContext(history=list(history), rng=self.rng, settings=self.settings)
        logits = np.asarray(logits, dtype=np.float32)
        for name in self.chain:
            logits = self.available[name].apply(logits, ctx)
        return draw(logits, self.rng)

    def describe(self) -> str:
        """The chain in order with its parameter values, e.g. `top_k(top_k=40) -> ... -> draw`."""
        steps = []
        for name in self.chain:
            values = ", ".join(f"{p.name}={self.settings[p.name]}" for p in self.available[name].params)
            steps.append(f"{name}({values})" if values else name)
        return "logits -> " + " -> ".join(steps + ["draw"])


def draw(logits: np.ndarray, rng: np.random.Generator) -> int:
    """The only finite candidate, or one seeded draw from the softmax of the finite ones."""
    finite = np.flatnonzero(np.isfinite(logits))
    if len(finite) == 0:
        raise ValueError("every candidate token was filtered out")
    if len(finite) == 1:
        return int(finite[0])
    z = logits[finite]
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    return int(finite[min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(finite) - 1)])
