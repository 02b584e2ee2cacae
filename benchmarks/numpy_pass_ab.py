"""What a NumPy forward pass over n tokens costs against one token (lookup decoding's passes), this
working tree's NumPy backend against another git revision's, alternating in one process.

    .venv/bin/python benchmarks/numpy_pass_ab.py REV [--rounds 8]

Both runners read the default model and hold 300 tokens in their caches; each round runs 1, 2, 3, 5
and 9 tokens on each (then drops them again); printed: the best of the rounds, each size against the
same runner's one token, and the largest difference between the two runners' logits of the
several-token passes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from llamachat_numpy.model import NumpyModel
from numpy_revision_ab import model_at

from llamachat.checkpoints import open_checkpoint
from llamachat.default_model import default_model

SIZES = (1, 2, 3, 5, 9)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revision")
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    checkpoint = open_checkpoint(default_model())
    config, weights = checkpoint.config, checkpoint.weights
    runners = {args.revision: model_at(args.revision).NumpyModel(config, weights), "working tree": NumpyModel(config, weights)}
    caches = {}
    for name, runner in runners.items():
        caches[name] = runner.new_cache(512)
        runner.forward(list(range(100, 400)), caches[name])
    best = {(name, n): float("inf") for name in runners for n in SIZES}
    for _ in range(args.rounds):
        for n in SIZES:
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.forward(list(range(500, 500 + n)), caches[name], all_logits=n > 1)
                best[name, n] = min(best[name, n], time.perf_counter() - start)
                caches[name].truncate(300)
    for name in runners:
        print(f"{name}: " + ", ".join(f"{n} tokens {best[name, n] * 1e3:.1f} ms ({best[name, n] / best[name, 1]:.2f}x)" for n in SIZES))
    differ = 0.0
    for n in SIZES[1:]:
        a, b = (runner.forward(list(range(500, 500 + n)), caches[name], all_logits=True) for name, runner in runners.items())
        differ = max(differ, float(np.abs(a - b).max()))
        for name in runners:
            caches[name].truncate(300)
    print(
        f"one token, working tree / {args.revision}: {best['working tree', 1] / best[args.revision, 1]:.2f}; "
        f"logits of the several-token passes differ by {differ:.1e} at most"
    )


if __name__ == "__main__":
    main()
