"""A conversation with a model whose KV cache persists across turns.

The invariant: the cache holds exactly the tokens of `ledger`. Each turn the whole conversation is
encoded with the template (so the model always sees exactly the reference format), the longest
common prefix with the ledger is kept, the cache is truncated to it, and only the rest is evaluated.
A follow-up therefore costs the new message plus the few boundary tokens where the re-encoded reply
differs from the sampled ids, never the earlier history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .api import Model
from .errors import LlamachatError
from .generate import Stats, generate
from .protocols import Message, TemplateError
from .sampling import SamplerChain


@dataclass
class Reply:
    text: str
    stats: Stats
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class Session:
    def __init__(self, model: Model, chain: SamplerChain, *, system: str | None = None, max_tokens: int = 1024, context: int | None = None):
        self.model, self.chain = model, chain
        self.max_tokens = max_tokens
        self.context = min(context or model.config.context_length, model.config.context_length)
        self.messages: list[Message] = [{"role": "system", "content": system}] if system else []
        self.cache = model.runner.new_cache(self.context)
        self.ledger: list[int] = []

    def _sync(self, ids: list[int]) -> list[int]:
        """Truncate the cache to its longest prefix shared with `ids` (keeping at least the last id
        to evaluate, whose logits start the reply); return the ids still to evaluate."""
        keep = min(common_prefix(self.ledger, ids), len(ids) - 1)
        self.cache.truncate(keep)
        self.ledger = self.ledger[:keep]
        return ids[keep:]

    def ask(self, text: str, on_text: Callable[[str], None] | None = None) -> Reply:
        """Answer `text`. Ctrl-C (KeyboardInterrupt) during the reply keeps what was generated."""
        if not text.strip():
            raise LlamachatError("empty message: nothing to send")
        messages = [*self.messages, {"role": "user", "content": text}]
        try:
            ids = self.model.template.encode(messages, self.model.tokenizer, add_generation_prompt=True)
        except TemplateError as e:
            raise LlamachatError(str(e)) from None
        if len(ids) + 1 > self.context:
            raise LlamachatError(f"the conversation ({len(ids)} tokens) does not fit the context ({self.context}); try /reset")
        warnings = self.model.template.warnings(messages) if hasattr(self.model.template, "warnings") else []
        new_ids = self._sync(ids)
        stats, history = Stats(), list(ids)
        decoder = self.model.tokenizer.stream_decoder()
        pieces: list[str] = []
        interrupted = False
        budget = min(self.max_tokens, self.context - len(ids))
        try:
            for token in generate(
                self.model.runner,
                self.cache,
                new_ids,
                self.chain,
                history=history,
                max_tokens=budget,
                stop_ids=self.model.template.stop_ids(self.model.tokenizer),
                stats=stats,
            ):
                piece = decoder.push(token)
                if piece:
                    pieces.append(piece)
                    if on_text:
                        on_text(piece)
        except KeyboardInterrupt:
            interrupted = True
            stats.finish_reason = "interrupted"
        pieces.append(decoder.flush())
        self.ledger = history[: len(self.cache)]
        reply = "".join(pieces)
        self.messages = [*messages, {"role": "assistant", "content": reply}]
        return Reply(reply, stats, interrupted, warnings)
