"""llamachat's llamacpp Runner against llama-cpp-python's own `Llama`, alternating.

    .venv/bin/python benchmarks/llamacpp_ab.py [--model PATH] [--threads 1] [--tokens 24] [--rounds 4] [--prompt 0]

Each round times `--tokens` greedy steps (argmax of the logits, one token a call) after a 4-token
prompt on each, one after the other, and prints both and their ratio; with `--prompt N`, it first
times a prompt of N tokens evaluated at once (one call: the Runner's forward, Llama's eval with
n_batch N) on each, and prints that ratio too. With one thread neither
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
    p.add_argument("--prompt", type=int, default=0, help="also time a prompt of this many tokens (0: decode only)")
    args = p.parse_args()
    model = llamachat.load(args.model, "llamacpp", threads=args.threads)
    runner = model.runner
    n_ctx = max(256, args.prompt + 8)
    batch = max(512, args.prompt)
    llm = llama_cpp.Llama(
        model_path=str(model.path), n_threads=args.threads, n_threads_batch=args.threads, n_ctx=n_ctx, n_batch=batch, verbose=False
    )
    vocab = llm.n_vocab()
    prompt = [int(t) for t in np.random.default_rng(0).integers(10, vocab - 10, args.prompt)]

    def our_prompt() -> float:
        cache = runner.new_cache(len(prompt) + 8)
        start = time.perf_counter()
        runner.forward(prompt, cache)
        return len(prompt) / (time.perf_counter() - start)

    def their_prompt() -> float:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        return len(prompt) / (time.perf_counter() - start)

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
        if prompt:
            a, b = our_prompt(), their_prompt()
            print(f"prompt {len(prompt)}: llamachat llamacpp {a:.1f} tok/s, Llama {b:.1f} tok/s, ratio {a / b:.2f}", flush=True)
        a, b = ours(args.tokens), theirs(args.tokens)
        print(f"llamachat llamacpp {a:.1f} tok/s, Llama {b:.1f} tok/s, ratio {a / b:.2f}", flush=True)


if __name__ == "__main__":
    main()
