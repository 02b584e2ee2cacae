"""Lookup decoding (prompt lookup, n-gram speculation): guess a reply's next tokens from the
conversation, and let one forward pass check several of them.

A reply that repeats what the conversation holds (a quoted passage, code being edited) continues the
way an earlier occurrence of its last few tokens did. `draft` finds the longest such n-gram and
proposes the tokens that followed it; generate.generate evaluates the last token and the draft in
one forward pass (`all_logits`: a pass over k tokens reads the weights once, like one token), draws
each position's token with the sampler chain as usual, and keeps the draft while the drawn token
equals it. The first mismatch keeps the drawn token and drops the rest from the cache (`truncate`).
The chain draws exactly once per emitted token, from the logits of exactly the tokens emitted, so
the reply is the one plain decoding gives (up to the last bits of a k-token pass against one-token
steps). Everything a backend needs is the Runner protocol's `forward(..., all_logits=True)` and
`Cache.truncate`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import LlamachatError
from .protocols import Runner

MAX_LOOKUP = 16  # the most draft tokens a pass checks (the `lookup` setting's range is 0..16)
MAX_NGRAM = 4  # the longest n-gram matched against the history
MIN_NGRAM = 2  # shorter matches (one token) guess too poorly to pay for the longer pass


def parse_lookup(value: object, where: str = "lookup") -> int:
    """The `lookup` setting checked: an integer 0..16; LlamachatError naming `where` otherwise."""
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        n = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        n = -1
    if not 0 <= n <= MAX_LOOKUP:
        raise LlamachatError(f"{where} takes an integer from 0 to {MAX_LOOKUP} (draft tokens a pass checks; 0 = off), got {value!r}")
    return n


def default_lookup(runner: Runner) -> int:
    """What a backend's measurements say pays (a runner's optional `default_lookup`; else off)."""
    return int(getattr(runner, "default_lookup", 0))


def draft(history: Sequence[int], k: int, max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM) -> list[int]:
    """Up to `k` tokens that followed the most recent earlier occurrence of the longest n-gram
    (`min_ngram` to `max_ngram` tokens) that ends `history`; [] when there is none."""
    n = len(history)
    if k <= 0 or n <= min_ngram:
        return []
    seq = np.asarray(history)
    ends = np.flatnonzero(seq[:-1] == seq[-1])  # earlier positions holding the last token
    length = np.ones(len(ends), dtype=np.int64)  # how far back each of them matches, up to max_ngram
    alive = np.ones(len(ends), dtype=bool)
    for back in range(1, min(max_ngram, n - 1)):
        alive &= (ends >= back) & (seq[ends - back] == seq[n - 1 - back])
        length += alive
    if not len(ends) or length.max() < min_ngram:
        return []
    end = ends[length == length.max()][-1]
    return seq[end + 1 : end + 1 + k].tolist()
