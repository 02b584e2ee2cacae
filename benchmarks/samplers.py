"""What the sampler chain costs per token: each sampler of the default profile's chain, and the whole
chain before and after top_k narrowed the candidates (issue 19), alternating in one run.

    .venv/bin/python benchmarks/samplers.py [--reps 300] [--rounds 4]

Two vocabularies: the default model's logits after a chat prompt (49,152 candidates), and those
logits tiled to Llama-3's 128,256 plus N(0, 0.01) noise (so the tiles do not tie exactly). The
built-in settings (the default profile now sets none): top_k 40, top_p 0.95, min_p 0.05, temperature 0.8. "before" is the
previous chain, kept here: every sampler on the whole vocabulary, top_k by np.argpartition. Both
draw from identically seeded generators over the logits of every position of the prompt (and their
tiled copies); the tokens they draw are compared. Best of `rounds` of `reps` calls, in milliseconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import llamachat
from llamachat.plugins import registry
from llamachat.profiles import load_profile
from llamachat.sampling import SamplerChain, draw

LLAMA3_VOCAB = 128256


def argpartition_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """The previous TopK.apply: np.argpartition over the whole vocabulary."""
    if k <= 0 or k >= len(logits):
        return logits
    keep = np.zeros(len(logits), dtype=bool)
    keep[np.argpartition(-logits, k - 1)[:k]] = True
    return np.where(keep, logits, np.float32(-np.inf))


def sample_before(chain: SamplerChain, logits: np.ndarray, history: list[int]) -> int:
    """The previous SamplerChain.sample: every sampler's apply on the whole vocabulary."""
    logits = np.asarray(logits, dtype=np.float32)
    for name in chain.effective():
        ctx = chain._context(name, history)
        if name == "top_k":
            logits = argpartition_top_k(logits, ctx.settings["top_k"])
        else:
            logits = chain.available[name].apply(logits, ctx)
    return draw(logits, chain.rng)


def per_call_ms(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1e3


def tiled(logits: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.resize(logits, n)
    return (out + rng.normal(0, 0.01, n)).astype(np.float32)


def chain_for(seed: int) -> SamplerChain:
    chain = SamplerChain(registry().samplers, seed=seed)
    chain.configure(load_profile("default")["sampler"])
    return chain


def same_draws(rows: np.ndarray, history: list[int]) -> tuple[int, int]:
    """(identical, total) tokens drawn by the chain before and after, 20 seeded draws per row."""
    before, after = chain_for(7), chain_for(7)
    same = total = 0
    for row in rows:
        for _ in range(20):
            same += sample_before(before, row, history) == after.sample(row, history)
            total += 1
    return same, total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=300)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    model = llamachat.load()
    ids = model.encode_prompt("What is the capital of France?")
    rows49 = model.logits(ids)
    rng = np.random.default_rng(0)
    rows128 = np.stack([tiled(row, LLAMA3_VOCAB, rng) for row in rows49])
    chain = chain_for(0)
    for label, rows in (("49k (the default model's logits)", rows49), ("128k (those logits tiled, + noise)", rows128)):
        logits = rows[-1]
        print(f"\n{label}: {len(logits)} candidates")
        print(f"{'sampler':20} ms a token, after")
        x = logits
        for name in chain.effective():
            sampler, ctx = chain.available[name], chain._context(name, ids)
            if hasattr(sampler, "narrow"):  # what follows runs on the candidates it keeps, as in the chain
                print(
                    f"{name + ' (before)':20} {per_call_ms(lambda x=x, k=ctx.settings['top_k']: argpartition_top_k(x, k), args.reps):.3f}"
                )
                print(f"{name + ' (narrow)':20} {per_call_ms(lambda s=sampler, x=x, ctx=ctx: s.narrow(x, ctx), args.reps):.3f}")
                x = sampler.narrow(x, ctx)[1]
                continue
            print(f"{name:20} {per_call_ms(lambda s=sampler, x=x, ctx=ctx: s.apply(x, ctx), args.reps):.3f}")
            x = sampler.apply(x, ctx)
        before, after = [], []
        for _ in range(args.rounds):  # alternating, so both see the same load
            before.append(per_call_ms(lambda x=logits: sample_before(chain, x, ids), args.reps))
            after.append(per_call_ms(lambda x=logits: chain.sample(x, ids), args.reps))
        print(f"{'whole chain before':20} {min(before):.3f}  (rounds: {', '.join(f'{t:.3f}' for t in before)})")
        print(f"{'whole chain after':20} {min(after):.3f}  (rounds: {', '.join(f'{t:.3f}' for t in after)})")
        same, total = same_draws(rows, ids)
        print(f"identical draws before/after: {same}/{total} ({len(rows)} positions x 20 seeded draws)")


if __name__ == "__main__":
    main()
