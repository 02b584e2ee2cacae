"""What the sampler chain costs per token: each sampler of the default profile's chain, and the whole.

    .venv/bin/python benchmarks/samplers.py [--reps 500]

On the default model's logits after a chat prompt (49,152 candidates; the built-in settings, as the
default profile now sets none: top_k 40, top_p 0.95, min_p 0.05, temperature 0.8), each sampler is fed what the one before it
returns, as in the chain. Best of 3 rounds of `reps` calls, in milliseconds.
"""

from __future__ import annotations

import argparse
import time

import llamachat
from llamachat.plugins import registry
from llamachat.profiles import load_profile
from llamachat.sampling import SamplerChain, draw


def per_call_ms(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=500)
    args = p.parse_args()
    model = llamachat.load()
    ids = model.encode_prompt("What is the capital of France?")
    logits = model.logits(ids)[-1]
    chain = SamplerChain(registry().samplers, seed=0)
    chain.configure(load_profile("default")["sampler"])
    print(f"{'sampler':20} ms a token  ({len(logits)} candidates in)")
    x = logits
    for name in chain.effective():
        sampler, ctx = chain.available[name], chain._context(name, ids)
        print(f"{name:20} {per_call_ms(lambda s=sampler, x=x, ctx=ctx: s.apply(x, ctx), args.reps):.3f}")
        x = sampler.apply(x, ctx)
    print(f"{'draw':20} {per_call_ms(lambda: draw(x, chain.rng), args.reps):.3f}")
    print(f"{'whole chain':20} {per_call_ms(lambda: chain.sample(logits, ids), args.reps):.3f}")


if __name__ == "__main__":
    main()
