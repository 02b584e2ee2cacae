"""The sampler chain: an ordered list of sampler plugins, their settings, and the final draw.

Each sampler turns logits into logits (discarded candidates become -inf). The chain then draws once
from the softmax of what is left with the session's seeded generator, or takes the only candidate
left without touching the generator (so temperature 0 is exactly greedy, and a seeded chat
reproduces its replies).

Only the first samplers need the whole vocabulary: a sampler with `narrow` (top_k) hands the chain
the few candidates it keeps, and those after it that are `subset_safe` run on that short vector,
whose candidates keep their id order (so ties break as on the whole vocabulary and the draw is the
same); a sampler that is not (it indexes by token id) gets the whole vocabulary back.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import LlamachatError
from .protocols import Param, Sampler, SamplingContext
from .sampling_defaults import BUILT_IN, group_by_source

DEFAULT_CHAIN = ("repetition_penalty", "top_k", "typical_p", "top_p", "min_p", "xtc", "temperature")


class SamplerChain:
    def __init__(self, samplers: Mapping[str, Sampler], chain: Sequence[str] = DEFAULT_CHAIN, seed: int | None = None):
        self.available = dict(samplers)
        self.set_chain(chain)
        # Parameter names are unique: a name already taken (built-ins register first) is reachable as
        # "sampler.param"; each sampler still reads its own values under its plain names.
        self.params: dict[str, Param] = {}
        self.keys: dict[str, dict[str, str]] = {}  # sampler -> {its param name -> settings key}
        for sampler in self.available.values():
            self.keys[sampler.name] = {}
            for p in sampler.params:
                key = p.name if p.name not in self.params else f"{sampler.name}.{p.name}"
                self.params[key] = p
                self.keys[sampler.name][p.name] = key
        self.settings: dict[str, Any] = {key: p.default for key, p in self.params.items()}
        # where each setting (and the chain) came from: "built-in", "model (...)", "profile NAME", "flag", "/set"
        self.sources: dict[str, str] = dict.fromkeys(self.params, BUILT_IN)
        self.chain_source = BUILT_IN
        self.rng = np.random.default_rng(seed)
        self.state: dict[str, Any] = {}

    def set_chain(self, names: Sequence[str], source: str = "given") -> None:
        """The samplers to run, in order; LlamachatError naming the available ones otherwise."""
        unknown = [n for n in names if n not in self.available]
        if unknown:
            raise LlamachatError(f"unknown sampler {unknown[0]!r} (available: {', '.join(sorted(self.available))})")
        self.chain, self.chain_source = list(names), source

    def configure(self, section: Mapping[str, Any], source: str = "given") -> None:
        """Apply a profile's [sampler] section (or any layer of settings): `chain`, `seed` and
        parameter values, each recorded as coming from `source`."""
        values = dict(section)
        chain, seed = values.pop("chain", None), values.pop("seed", None)
        if chain:
            self.set_chain(chain, source)
        if seed is not None:
            self.seed(seed)
        self.update(values, source)

    def effective(self) -> list[str]:
        """The chain as it runs: an active sampler with `replaces` stands in for those it replaces."""
        steps = list(self.chain)
        for name, sampler in self.available.items():
            replaced = getattr(sampler, "replaces", ())
            if not replaced:
                continue
            if not sampler.active(self.settings):
                steps = [step for step in steps if step != name]
                continue
            # it takes the place of the first step it replaces (or its own place, or the end)
            at = next((i for i, step in enumerate(steps) if step in replaced or step == name), len(steps))
            steps = steps[:at] + [name] + [step for step in steps[at:] if step not in replaced and step != name]
        return steps

    def set(self, name: str, value: Any, source: str = "given") -> Any:
        """Set a parameter from text or a TOML value; LlamachatError with what is accepted otherwise."""
        if name not in self.params:
            raise LlamachatError(f"unknown sampler parameter {name!r} (known: {', '.join(sorted(self.params))})")
        try:
            self.settings[name] = self.params[name].parse(value)
        except ValueError as e:
            raise LlamachatError(str(e)) from None
        self.sources[name] = source
        return self.settings[name]

    def update(self, values: Mapping[str, Any], source: str = "given") -> None:
        for name, value in values.items():
            if value is not None:
                self.set(name, value, source)

    def seed(self, seed: int | None) -> None:
        """Reseed the draw; None takes fresh entropy from the OS."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise LlamachatError(f"seed takes an integer >= 0, got {seed!r}")
        self.rng = np.random.default_rng(seed)
        self.state = {}

    def settings_for(self, name: str) -> Mapping[str, Any]:
        """The settings as sampler `name` sees them: its own parameters under their plain names."""
        keys = self.keys[name]
        if all(param == key for param, key in keys.items()):
            return self.settings
        return ChainMap({param: self.settings[key] for param, key in keys.items()}, self.settings)

    def sample(self, logits: np.ndarray, history: Iterable[int]) -> int:
        history = history if isinstance(history, list) else list(history)
        logits = np.asarray(logits, dtype=np.float32)
        vocab = len(logits)
        ids = None  # the token ids `logits` holds, ascending, once a sampler narrowed it; None: all
        steps = [(self.available[name], self._context(name, history)) for name in self.effective()]
        for sampler, ctx in steps:
            if ids is None and hasattr(sampler, "narrow"):
                narrowed = sampler.narrow(logits, ctx)
                if narrowed is not None:
                    ids, logits = narrowed
                continue
            if ids is not None and not getattr(sampler, "subset_safe", False):
                logits, ids = widen(ids, logits, vocab), None
            logits = sampler.apply(logits, ctx)
        token = draw(logits, self.rng)
        if ids is not None:
            token = int(ids[token])
        for sampler, ctx in steps:
            if hasattr(sampler, "observe"):
                sampler.observe(token, ctx)
        return token

    def _context(self, name: str, history: list[int]) -> SamplingContext:
        return SamplingContext(history=history, rng=self.rng, settings=self.settings_for(name), state=self.state)

    def describe(self) -> str:
        """The chain as it runs, with its parameter values: `top_k(top_k=40) -> ... -> draw`."""
        steps = []
        for name in self.effective():
            values = ", ".join(f"{key}={self.settings[key]}" for key in self.keys[name].values())
            steps.append(f"{name}({values})" if values else name)
        return "logits -> " + " -> ".join(steps + ["draw"])

    def provenance(self) -> list[str]:
        """Where the chain and the values it runs with came from, one line per source
        (`model (its model card): temperature=0.2, top_p=0.9`)."""
        keys = [key for name in self.effective() for key in self.keys[name].values()]
        lines = group_by_source({key: self.settings[key] for key in keys}, self.sources)
        return [f"chain: {self.chain_source}", *lines]


def widen(ids: np.ndarray, logits: np.ndarray, vocab: int) -> np.ndarray:
    """The whole vocabulary's logits again from the candidates `ids` (-inf for every other token)."""
    out = np.full(vocab, -np.inf, dtype=np.float32)
    out[ids] = logits
    return out


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
