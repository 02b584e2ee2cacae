"""What evaluating a long prompt in passes of PREFILL_CHUNK costs, against one pass, per backend.

    .venv/bin/python benchmarks/prefill_chunk.py [--tokens 1536] [--rounds 3] [--backends numpy,torch,llamacpp]

Chunked prefill (generate.prefill) is what lets Ctrl-C keep the passes already done; this shows
whether it is paid for in prompt speed. Default model, random token ids, alternating rounds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import llamachat
from llamachat import generate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, default=1536)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backends", default="numpy,torch,llamacpp")
    args = p.parse_args()
    ids = [int(i) for i in np.random.default_rng(0).integers(100, 40000, args.tokens)]
    for backend in args.backends.split(","):
        runner = llamachat.load(None, backend).runner

        def rate(chunk: int, runner=runner) -> float:
            cache = runner.new_cache(args.tokens + 8)
            start = time.perf_counter()
            generate.prefill(runner, cache, ids, chunk)
            return args.tokens / (time.perf_counter() - start)

        rate(generate.PREFILL_CHUNK)  # warm-up
        for n in range(args.rounds):
            chunked, whole = rate(generate.PREFILL_CHUNK), rate(args.tokens)
            print(
                f"{backend} round {n}: chunk {generate.PREFILL_CHUNK} {chunked:.0f} tok/s, "
                f"one pass {whole:.0f} tok/s, ratio {chunked / whole:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
