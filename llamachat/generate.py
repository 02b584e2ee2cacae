"""The generation loop: prefill the new prompt tokens, then sample and step until an end-of-turn id,
the token limit or the end of the context, with lookup decoding's drafts checked on the way (lookup.py);
with the timings a user and a benchmark want."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .lookup import draft
from .protocols import Cache, Runner
from .sampling import SamplerChain

# A long prompt is evaluated in passes of this many tokens: each completed pass is committed to the
# cache (CacheLength.extend), so Ctrl-C during a long prefill keeps what was evaluated before it.
PREFILL_CHUNK = 512


def prefill(runner: Runner, cache: Cache, ids: Sequence[int], chunk: int | None = None) -> Any:
    """Evaluate `ids` into `cache` in passes of `chunk` tokens (default PREFILL_CHUNK); the last
    pass's logits. Interrupted, the cache holds the passes that completed."""
    chunk = chunk or PREFILL_CHUNK
    ids = list(ids)
    for start in range(0, len(ids) - chunk, chunk):
        runner.forward(ids[start : start + chunk], cache)
    return runner.forward(ids[(max(len(ids) - 1, 0) // chunk) * chunk :], cache)


@dataclass
class Stats:
    prompt_tokens: int = 0  # prompt tokens evaluated for this reply
    cached_tokens: int = 0  # prompt tokens already in the KV cache
    generated_tokens: int = 0
    prefill_s: float = 0.0
    first_token_s: float = 0.0  # from the start of the prefill to the first generated token
    decode_s: float = 0.0  # from the first generated token to the last
    finish_reason: str = ""  # "stop", "length", "context" or "interrupted"
    drafted: int = 0  # lookup: draft tokens evaluated
    accepted: int = 0  # lookup: draft tokens the chain drew (emitted without a pass of their own)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tok_s(self) -> float:
        return (self.generated_tokens - 1) / self.decode_s if self.decode_s and self.generated_tokens > 1 else 0.0

    def line(self) -> str:
        """`42 tokens, 31.2 tok/s, first token 0.08 s, prompt 12 new / 340 cached`"""
        return (
            f"{self.generated_tokens} tokens, {self.decode_tok_s:.1f} tok/s, first token {self.first_token_s:.2f} s, "
            f"prompt {self.prompt_tokens} new / {self.cached_tokens} cached"
            + (f", lookup {self.accepted}/{self.drafted} drafts accepted" if self.drafted else "")
        )


def generate(
    runner: Runner,
    cache: Cache,
    new_ids: Sequence[int],
    chain: SamplerChain,
    *,
    history: list[int],
    max_tokens: int,
    stop_ids: Sequence[int],
    stats: Stats | None = None,
    lookup: int = 0,
) -> Iterator[int]:
    """Yield generated token ids (the stop id itself is not yielded).

    `new_ids` are the prompt tokens not yet in `cache` (at least one: the last prompt token's logits
    start the reply); `history` (all prompt ids: the cache's tokens, then `new_ids`) grows with each
    generated id, for the samplers. Every yielded id but the last has been evaluated into the cache,
    and whenever the loop stops (or is closed, or interrupted) the cache holds a prefix of `history`.

    With `lookup` k > 0, each step evaluates the last token with up to k drafted ones (lookup.py)
    and yields the drawn tokens while they equal the draft: the same tokens, drawn the same way.
    """
    if not new_ids:
        raise ValueError("generate needs at least one new prompt token")
    stats = stats if stats is not None else Stats()
    stats.prompt_tokens, stats.cached_tokens = len(new_ids), len(cache)
    stops = set(stop_ids)
    start = time.perf_counter()
    rows = [prefill(runner, cache, new_ids)]  # rows[i]: the logits after drafts[:i]
    drafts: list[int] = []  # evaluated into the cache after the last emitted token, not yet drawn
    held = len(cache)  # the cache's tokens that are history's (the rest: drafts not drawn yet)
    stats.prefill_s = time.perf_counter() - start
    if max_tokens <= 0:
        return
    first = None
    try:
        while True:
            for i, logits in enumerate(rows):
                token = chain.sample(logits, history)
                now = time.perf_counter()
                if first is None:
                    first = now
                    stats.first_token_s = now - start
                if token in stops:
                    stats.finish_reason = "stop"
                    return
                in_cache = i < len(drafts) and token == drafts[i]
                held += in_cache
                stats.accepted += in_cache
                history.append(token)
                stats.generated_tokens += 1
                stats.decode_s = now - first
                stats.finish_reason = "length"  # until the next token says otherwise
                yield token
                if stats.generated_tokens == max_tokens:
                    return
                if not in_cache:
                    break  # the drafts after it, if any, were wrong
            cache.truncate(held)
            if len(cache) >= cache.capacity:
                stats.finish_reason = "context"
                return
            room = min(lookup, max_tokens - stats.generated_tokens - 1, cache.capacity - len(cache) - 1)
            drafts = draft(history, room)
            stats.drafted += len(drafts)
            out = runner.forward([token, *drafts], cache, all_logits=bool(drafts))
            rows = list(out) if drafts else [out]
            held = len(cache) - len(drafts)
    finally:
        if len(cache) > held:  # drafts evaluated but never drawn
            cache.truncate(held)
