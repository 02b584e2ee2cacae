"""The built-in samplers, NumPy implementations (the reference for any backend-native ones).

Each is a logits -> logits transform: candidates it discards become -inf. The order they run in is
the chain's (llama.cpp's order: truncation first on untempered logits, temperature last).
"""

from __future__ import annotations

import numpy as np

from llamachat.hookspecs import hookimpl
from llamachat.protocols import Param, SamplingContext

NEG_INF = np.float32(-np.inf)


def keep_only(logits: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`logits` with every candidate outside the boolean mask `keep` set to -inf."""
    return np.where(keep, logits, NEG_INF)


class RepetitionPenalty:
    """llama.cpp's penalties over the last `repeat_last_n` tokens of the history, prompt included
    (mlx-lm counts only generated tokens: its bug #1773). A seen token's logit is divided by
    `repeat_penalty` if positive, multiplied if negative; then `frequency_penalty` per occurrence and
    `presence_penalty` once are subtracted."""

    name = "repetition_penalty"
    params = (
        Param("repeat_penalty", float, 1.0, "penalise tokens seen in the last repeat_last_n; 1 = off", 0.0, 10.0),
        Param("presence_penalty", float, 0.0, "subtract from the logit of every token seen; 0 = off", -10.0, 10.0),
        Param("frequency_penalty", float, 0.0, "subtract per occurrence of a seen token; 0 = off", -10.0, 10.0),
        Param("repeat_last_n", int, 64, "how many recent tokens the penalties look at (prompt included); 0 = none", 0, None),
    )

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        st = ctx.settings
        n = st["repeat_last_n"]
        if n <= 0 or not ctx.history or (st["repeat_penalty"] == 1.0 and st["presence_penalty"] == 0 and st["frequency_penalty"] == 0):
            return logits
        tokens, counts = np.unique(np.asarray(ctx.history[-n:]), return_counts=True)
        out = logits.copy()
        seen = out[tokens]
        penalty = np.float32(st["repeat_penalty"])
        seen = np.where(seen > 0, seen / penalty, seen * penalty)
        out[tokens] = seen - np.float32(st["frequency_penalty"]) * counts - np.float32(st["presence_penalty"])
        return out


class Greedy:
    name = "greedy"
    subset_safe = True
    params: tuple[Param, ...] = ()

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        out = np.full_like(logits, NEG_INF)
        best = int(np.argmax(logits))
        out[best] = logits[best]
        return out


class Temperature:
    name = "temperature"
    subset_safe = True
    params = (Param("temperature", float, 0.8, "randomness: logits are divided by it; 0 = always the likeliest token", 0.0, 100.0),)

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        t = ctx.settings["temperature"]
        if t == 0:
            return Greedy().apply(logits, ctx)
        return logits / np.float32(t)


class TopK:
    """Keep the k likeliest tokens (exactly k: a tie at the k-th logit keeps the lowest ids). Its
    `narrow` hands the chain just those k, so the samplers after it never touch the whole vocabulary."""

    name = "top_k"
    params = (Param("top_k", int, 40, "keep the k likeliest tokens; 0 = off", 0, None),)
    subset_safe = True

    def narrow(self, logits: np.ndarray, ctx: SamplingContext) -> tuple[np.ndarray, np.ndarray] | None:
        """(ids ascending, their logits) of the k kept; None when top_k is off."""
        k = ctx.settings["top_k"]
        if k <= 0 or k >= len(logits):
            return None
        ids = top_k_ids(logits, k)
        return ids, logits[ids]

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        narrowed = self.narrow(logits, ctx)
        if narrowed is None:
            return logits
        out = np.full_like(logits, NEG_INF)
        out[narrowed[0]] = narrowed[1]
        return out


GROUP_ROWS = 32  # top_k_pool's groups: wide enough that their maxima are one vectorised pass


def top_k_pool(logits: np.ndarray, k: int) -> np.ndarray:
    """Ids holding every logit >= the k-th largest, in a few passes cheaper than one partition of
    the vocabulary (np.argpartition is 0.4-1.7 ms on 128k; this 0.05-0.08 ms; benchmarks/samplers.py).

    The vocabulary is split into m groups (group j: ids j, j+m, j+2m, ...; a [rows, m] view, so the
    maxima are elementwise maxima of rows). The k largest group maxima are k distinct logits, so the
    k-th largest logit is at least the k-th largest group maximum, `floor`: every logit that can be
    kept lies in a group whose maximum reaches `floor`, or in the tail that fills no whole row."""
    n = len(logits)
    m = n // GROUP_ROWS
    if m < 4 * k:
        return np.arange(n)
    group_max = logits[: m * GROUP_ROWS].reshape(GROUP_ROWS, m).max(axis=0)
    floor = np.partition(group_max, m - k)[m - k]
    groups = np.flatnonzero(group_max >= floor)
    ids = (groups[:, None] + m * np.arange(GROUP_ROWS)).ravel()
    return np.concatenate([ids, np.arange(m * GROUP_ROWS, n)])


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, ascending; a tie at the k-th value keeps the lowest ids."""
    pool = top_k_pool(logits, k)
    values = logits[pool]
    kth = np.partition(values, len(values) - k)[len(values) - k]
    above = pool[values > kth]
    tied = np.sort(pool[values == kth])[: k - len(above)]
    return np.sort(np.concatenate([above, tied]))


def candidates(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens still in the running (finite logits), ascending, and their softmax probabilities
    (float64). After top_k that is 40 of a 49,152-token vocabulary: ranking them alone instead of the
    whole vocabulary took top_p from 0.6-1.1 to 0.13-0.24 ms a token (benchmarks/samplers.py)."""
    ids = np.flatnonzero(np.isfinite(logits))
    z = logits[ids].astype(np.float64)
    e = np.exp(z - z.max())
    return ids, e / e.sum()


def keep_mass(logits: np.ndarray, ids: np.ndarray, p: np.ndarray, rank: np.ndarray, mass: float) -> np.ndarray:
    """Keep the shortest prefix of the candidates `ids` (probabilities `p`) in the order `rank`
    whose probability reaches `mass` (at least one token). A stable sort of the ascending `ids`
    breaks ties by token id."""
    n = int(np.searchsorted(np.cumsum(p[rank]), mass, side="left")) + 1
    keep = np.zeros(len(logits), dtype=bool)
    keep[ids[rank[: max(1, n)]]] = True
    return keep_only(logits, keep)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the whole vocabulary (float64; 0 for the -inf logits)."""
    p = np.zeros(len(logits), dtype=np.float64)
    ids, p_ids = candidates(logits)
    p[ids] = p_ids
    return p


class TopP:
    name = "top_p"
    subset_safe = True
    params = (Param("top_p", float, 0.95, "keep the smallest set of likeliest tokens whose probability reaches p; 1 = off", 0.0, 1.0),)

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        top_p = ctx.settings["top_p"]
        if top_p >= 1.0:
            return logits
        ids, p = candidates(logits)
        return keep_mass(logits, ids, p, np.argsort(-p, kind="stable"), top_p)


class TypicalP:
    """Locally typical sampling: keep the tokens whose surprise is closest to the entropy, up to
    `typical_p` of the probability mass."""

    name = "typical_p"
    subset_safe = True
    params = (Param("typical_p", float, 1.0, "keep tokens of typical surprise up to this mass; 1 = off", 0.0, 1.0),)

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        mass = ctx.settings["typical_p"]
        if mass >= 1.0:
            return logits
        ids, p = candidates(logits)
        with np.errstate(divide="ignore"):  # a probability that underflowed to 0: infinite surprise
            surprise = -np.log(p)
        positive = p > 0
        entropy = float((p[positive] * surprise[positive]).sum())
        return keep_mass(logits, ids, p, np.argsort(np.abs(surprise - entropy), kind="stable"), mass)


class XTC:
    """Exclude Top Choices: with probability `xtc_probability`, drop every token at or above
    `xtc_threshold` except the least likely of them (when at least two are there)."""

    name = "xtc"
    subset_safe = True
    params = (
        Param("xtc_probability", float, 0.0, "chance per token of excluding the top choices; 0 = off", 0.0, 1.0),
        Param("xtc_threshold", float, 0.1, "probability from which a token counts as a top choice", 0.0, 1.0),
    )

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        chance = ctx.settings["xtc_probability"]
        if chance <= 0 or ctx.rng.random() >= chance:
            return logits
        p = softmax(logits)
        top = np.flatnonzero(p >= ctx.settings["xtc_threshold"])
        if len(top) < 2:
            return logits
        keep = np.ones(len(p), dtype=bool)
        keep[top] = False
        keep[top[np.argmin(p[top])]] = True
        return keep_only(logits, keep)


class Mirostat:
    """Mirostat 2.0: keep the surprise of the text near `mirostat_tau` by truncating the tokens more
    surprising than mu (in bits) and nudging mu after each draw. While on, it replaces top_k ...
    temperature in the chain."""

    name = "mirostat"
    params = (
        Param("mirostat", int, 0, "0 = off, 2 = Mirostat 2.0 (replaces top_k ... temperature)", 0, 2),
        Param("mirostat_tau", float, 5.0, "target surprise in bits", 0.0, 100.0),
        Param("mirostat_eta", float, 0.1, "learning rate of mu", 0.0, 1.0),
    )
    replaces = ("top_k", "typical_p", "top_p", "min_p", "xtc", "temperature")

    def active(self, settings) -> bool:
        return settings["mirostat"] != 0

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        mu = ctx.state.setdefault("mirostat_mu", 2 * ctx.settings["mirostat_tau"])
        p = softmax(logits)
        surprise = np.full(len(p), np.inf)
        surprise[p > 0] = -np.log2(p[p > 0])
        keep = surprise <= mu
        keep[int(np.argmax(p))] = True  # never an empty set
        ctx.state["mirostat_p"] = p
        return keep_only(logits, keep)

    def observe(self, token: int, ctx: SamplingContext) -> None:
        p = ctx.state.pop("mirostat_p", None)
        if p is None or p[token] <= 0:
            return
        error = -np.log2(p[token]) - ctx.settings["mirostat_tau"]
        ctx.state["mirostat_mu"] -= ctx.settings["mirostat_eta"] * error


class MinP:
    name = "min_p"
    subset_safe = True
    params = (Param("min_p", float, 0.05, "drop tokens less likely than min_p times the likeliest; 0 = off", 0.0, 1.0),)

    def apply(self, logits: np.ndarray, ctx: SamplingContext) -> np.ndarray:
        min_p = ctx.settings["min_p"]
        if min_p <= 0.0:
            return logits
        # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
        return keep_only(logits, logits >= logits.max() + np.float32(np.log(min_p)))


@hookimpl
def register_samplers(register):
    for sampler in (RepetitionPenalty(), TopK(), TypicalP(), TopP(), MinP(), XTC(), Temperature(), Mirostat(), Greedy()):
        register(sampler)
