"""Helpers for tests of reasoning models: their real templates and a sampler that writes a given reply.

A tiny random model does not reason; `scripted_chain` makes it write a scripted reply token by token
(then EOS), while the real model still evaluates every token into the KV cache, so the cache tests
see the real cost of what the template keeps and drops.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from llamachat.sampling import SamplerChain

TEMPLATES = Path(__file__).parent / "data" / "templates"
R1_LLAMA = (TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja").read_text(encoding="utf-8")
R1_QWEN = (TEMPLATES / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja").read_text(encoding="utf-8")
QWEN3 = (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")


class Script:
    """A sampler that leaves only the next token of the script (cycling: the script, then EOS)."""

    name = "script"
    params = ()

    def __init__(self, ids: list[int]):
        self.ids = itertools.cycle(ids)

    def apply(self, logits: np.ndarray, ctx) -> np.ndarray:
        out = np.full_like(logits, -np.inf)
        out[next(self.ids)] = 0.0
        return out


def scripted_chain(tokenizer, reply: str) -> SamplerChain:
    """A chain whose every reply is `reply` (as `tokenizer` encodes it) followed by EOS."""
    return SamplerChain({"script": Script([*tokenizer.encode(reply), tokenizer.eos_id])}, ["script"])
