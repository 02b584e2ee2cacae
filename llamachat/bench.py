"""`llamachat bench`: llama-bench's pp512 / tg128, and the decode ceiling of this machine.

pp: prompt tokens per second evaluating `n_prompt` tokens on an empty cache.
tg: tokens per second generating `n_gen` tokens one at a time after a short prompt (the sampler
    is excluded, as llama-bench does: this measures the backend).
Each is run `reps` times after one warm-up; the median is reported.

The ceiling: decoding one token reads every weight once, so tok/s <= bandwidth / weight bytes. The
bandwidth is the best of `reps` reductions over a 1 GiB float32 array. NumPy's `arr.sum()` is a
single-threaded pairwise sum that is compute-bound here (~10 GB/s, well below what a gemv reads), so
the reduction is a row sum through BLAS (`matrix @ ones`), which streams the array at the speed the
memory system allows; the better of the two readings is used.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from .costs import GIB
from .protocols import Runner


@dataclass
class BenchResult:
    backend: str
    model: str
    pp_tok_s: float
    tg_tok_s: float
    roofline_tg_tok_s: float
    bandwidth_gb_s: float
    weight_bytes: int
    n_prompt: int
    n_gen: int
    reps: int
    n_depth: int = 0

    def as_json(self) -> dict:
        d = asdict(self)
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()}


def memory_bandwidth(reps: int = 3, nbytes: int = GIB) -> float:
    """Bytes per second: the best of `reps` timed reductions over a float32 array of `nbytes`."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    rows = a.reshape(-1, 4096)
    ones = np.ones(4096, dtype=np.float32)
    best = float("inf")
    for _ in range(reps):
        for reduce in (a.sum, lambda: rows @ ones):
            start = time.perf_counter()
            reduce()
            best = min(best, time.perf_counter() - start)
    return a.nbytes / best


def prompt_speed(runner: Runner, n_prompt: int, vocab: int) -> float:
    ids = [int(i) for i in np.random.default_rng(0).integers(3, vocab, n_prompt)]
    cache = runner.new_cache(n_prompt)
    start = time.perf_counter()
    runner.forward(ids, cache)
    return n_prompt / (time.perf_counter() - start)


def decode_speed(runner: Runner, n_gen: int, vocab: int, n_prompt: int = 4) -> float:
    """Tokens per second generating `n_gen` tokens after a prompt of `n_prompt` (a long prompt
    measures decoding deep in a conversation, where attention over the cache weighs more)."""
    cache = runner.new_cache(n_prompt + n_gen + 8)
    logits = runner.forward([1 + i % (vocab - 1) for i in range(n_prompt)], cache)
    start = time.perf_counter()
    for _ in range(n_gen):
        logits = runner.forward([int(np.argmax(logits)) % vocab], cache)
    return n_gen / (time.perf_counter() - start)


def run_bench(
    runner: Runner, backend: str, model: str, n_prompt: int = 512, n_gen: int = 128, reps: int = 3, n_depth: int = 0, log=print
) -> BenchResult:
    """pp and tg as llama-bench measures them; `n_depth` tokens in the cache before tg starts (its -d)."""
    vocab = runner.config.vocab_size
    n_prompt = min(n_prompt, runner.config.context_length)
    n_depth = min(n_depth, runner.config.context_length // 2)
    n_gen = min(n_gen, runner.config.context_length - 8 - n_depth)
    log(f"warm-up on {backend} ...")
    prompt_speed(runner, min(n_prompt, 32), vocab)
    decode_speed(runner, 8, vocab)
    pp, tg = [], []
    for rep in range(reps):
        pp.append(prompt_speed(runner, n_prompt, vocab))
        tg.append(decode_speed(runner, n_gen, vocab, max(4, n_depth)))
        log(f"rep {rep + 1}/{reps}: pp{n_prompt} {pp[-1]:.1f} tok/s, {tg_label(n_gen, n_depth)} {tg[-1]:.1f} tok/s")
    bandwidth = memory_bandwidth(reps)
    return BenchResult(
        backend=backend,
        model=model,
        pp_tok_s=statistics.median(pp),
        tg_tok_s=statistics.median(tg),
        roofline_tg_tok_s=bandwidth / runner.weight_bytes,
        bandwidth_gb_s=bandwidth / 1e9,
        weight_bytes=runner.weight_bytes,
        n_prompt=n_prompt,
        n_gen=n_gen,
        reps=reps,
        n_depth=n_depth,
    )


def tg_label(n_gen: int, n_depth: int) -> str:
    """`tg128`, or llama-bench's `tg128 @ d1000` when the cache held tokens before."""
    return f"tg{n_gen}" + (f" @ d{n_depth}" if n_depth else "")
