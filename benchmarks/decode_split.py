"""Where a NumPy decode step's time goes: the weight products, timed inside the real forward pass, and
everything else, against the decode ceiling measured in the same run.

    .venv/bin/python benchmarks/decode_split.py [--model PATH] [--rounds 5] [--n-gen 64]

`kernel_floor.py` times the products back to back with random weights; this times them where they
happen, between the norms, RoPE, attention and SwiGLU of the backend's own `forward`, unchanged. The
runner's `products` (every `x @ w.T` of a pass, rows.py) is wrapped in a stand-in that runs the same
products and adds their duration to a clock (about a microsecond of bookkeeping per product, 121
products a token).

The line that matters for the target of ">= 80% of the ceiling": the products alone, with nothing
else, reach `ceiling time / product time` of the ceiling. When that is under 80%, no forward pass
built on NumPy's matrix products can meet the target at that moment, however lean the rest.
Each round reads the bandwidth again right after decoding, because it moves from one minute to the next.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from llamachat.api import load
from llamachat.bench import memory_bandwidth


class Clock:
    seconds = 0.0
    products = 0


class TimedProducts:
    """Stands in for the runner's `products` (x @ w.T for every weight matrix): each product is timed."""

    def __init__(self, products, clock: Clock):
        self.products, self.clock = products, clock

    def __call__(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        y = self.products(x, w)
        self.clock.seconds += time.perf_counter() - start
        self.clock.products += 1
        return y


def time_products(runner, clock: Clock) -> None:
    runner.products = TimedProducts(runner.products, clock)


def decode(runner, clock: Clock, n_gen: int) -> tuple[float, float]:
    """(seconds per token, seconds of weight products per token) over `n_gen` greedy steps."""
    cache = runner.new_cache(n_gen + 8)
    logits = runner.forward([1, 2, 3, 4], cache)
    clock.seconds, clock.products = 0.0, 0
    start = time.perf_counter()
    for _ in range(n_gen):
        logits = runner.forward([int(np.argmax(logits))], cache)
    return (time.perf_counter() - start) / n_gen, clock.seconds / n_gen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--n-gen", type=int, default=64)
    args = p.parse_args()
    runner = load(args.model, "numpy").runner
    clock = Clock()
    time_products(runner, clock)
    decode(runner, clock, 8)  # warm-up
    print(f"weights {runner.weight_bytes / 1e6:.0f} MB; ms per token, the mean of {args.n_gen} greedy steps a round")
    print("round  step  products  rest  | bandwidth  ceiling | step at  products alone at (% of the ceiling)")
    shares = []
    for r in range(args.rounds):
        step, products = decode(runner, clock, args.n_gen)
        bandwidth = memory_bandwidth()
        ceiling = runner.weight_bytes / bandwidth  # seconds a token at the memory's speed
        shares.append(ceiling / products)
        print(
            f"{r + 1:5}  {step * 1e3:4.1f}  {products * 1e3:8.1f}  {(step - products) * 1e3:4.1f}  |"
            f" {bandwidth / 1e9:6.1f} GB/s {ceiling * 1e3:5.1f} | {100 * ceiling / step:5.0f}%"
            f"  {100 * ceiling / products:5.0f}%"
        )
    print(f"products alone: median {100 * statistics.median(shares):.0f}% of the ceiling ({', '.join(f'{100 * s:.0f}' for s in shares)})")


if __name__ == "__main__":
    main()
