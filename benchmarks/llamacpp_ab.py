"""llamachat's llamacpp Runner against llama-cpp-python's own `Llama`, decode only, alternating.

    .venv/bin/python benchmarks/llamacpp_ab.py [--model PATH] [--threads 1] [--tokens 24] [--rounds 4]

Each round times `--tokens` greedy steps (argmax of the logits, one token a call) after a 4-token
prompt on each, one after the other, and prints both and their ratio. With one thread neither
engine waits at ggml's thread barriers, so the comparison holds on a machine busy with other work,
where two spinning threads make any 2-thread figure noise (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import llamachat


def main() -> None:
    import llama_cpp

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a GGUF file (default: the default model)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    model = llamachat.load(args.model, "llamacpp", threads=args.threads)
    runner = model.runner
    llm = llama_cpp.Llama(model_path=str(model.path), n_threads=args.threads, n_threads_batch=args.threads, n_ctx=256, verbose=False)
    vocab = llm.n_vocab()

    def ours(n: int) -> float:
        cache = runner.new_cache(n + 8)
        logits = runner.forward([1, 2, 3, 4], cache)
        start = time.perf_counter()
        for _ in range(n):
            logits = runner.forward([int(np.argmax(logits))], cache)
        return n / (time.perf_counter() - start)

    def theirs(n: int) -> float:
        llm.reset()
        llm.eval([1, 2, 3, 4])
        start = time.perf_counter()
        for _ in range(n):
            llm.eval([int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(vocab,))))])
        return n / (time.perf_counter() - start)

    ours(4), theirs(4)  # warm-up
    for _ in range(args.rounds):
        a, b = ours(args.tokens), theirs(args.tokens)
        print(f"llamachat llamacpp {a:.1f} tok/s, Llama {b:.1f} tok/s, ratio {a / b:.2f}", flush=True)


if __name__ == "__main__":
    main()
