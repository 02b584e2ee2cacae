"""Chat-level timings: cache reuse across turns, /load with a saved cache, start-up to a usable prompt.

    .venv/bin/python benchmarks/chat.py [--turns 20] [--history-tokens 2000]

1. A 20-turn scripted chat (greedy, 24-token replies), time to first token per turn, with llamachat's
   persistent cache and with a chat that re-evaluates the whole history every turn (the cache
   cleared before each turn, as tools without cache reuse do).
2. A session of ~2,000 tokens saved with its KV cache: time to the next reply's first token after
   /load (cache reused) vs after re-evaluating the same history.
3. Start-up: from `llamachat` to a prompt that accepts input, in a pseudo-terminal, and the model's
   load time (which the chat does in the background), separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

QUESTIONS = [
    "What is the capital of France?",
    "And of Germany?",
    "Name a river in Spain.",
    "What is 2 plus 2?",
    "Who wrote Hamlet?",
    "What colour is the sky?",
    "Name a planet.",
    "What is water made of?",
    "Say hello in Spanish.",
    "What is a cat?",
    "Name a fruit.",
    "What is the largest ocean?",
    "What do bees make?",
    "Name a mountain.",
    "What is ice?",
    "Name a bird.",
    "What is the sun?",
    "Name a tree.",
    "What is snow?",
    "Say goodbye.",
]


def turns(model, n: int, reuse: bool) -> list[float]:
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=24)
    ttft = []
    for q in (QUESTIONS * 2)[:n]:
        if not reuse:
            s.cache.truncate(0)
            s.ledger = []
        ttft.append(s.ask(q).stats.first_token_s)
    return ttft


def load_vs_reevaluate(model, history_tokens: int) -> tuple[float, float, int]:
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=24)
    s.messages = []
    paragraph = "The quick brown fox jumps over the lazy dog near the quiet river bank. "
    while len(s.encode(s.chat(s.messages + [{"role": "user", "content": "x"}]))) < history_tokens:
        s.messages += [{"role": "user", "content": paragraph * 8}, {"role": "assistant", "content": paragraph * 4}]
    s.resync(evaluate=True)
    transcript.save(s, "bench-load")
    n = len(s.ledger)

    def next_reply(restore_cache: bool) -> float:
        fresh = Session(model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=8)
        saved = transcript.read("bench-load")
        if not restore_cache:
            saved.cache_state = None
        start = time.perf_counter()
        transcript.restore(fresh, saved)
        restored = time.perf_counter() - start
        return restored + fresh.ask("Summarise that in one sentence.").stats.first_token_s

    with_cache = statistics.median(next_reply(True) for _ in range(3))
    without = statistics.median(next_reply(False) for _ in range(3))
    return with_cache, without, n


def startup() -> tuple[float, float]:
    import pexpect

    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        child = pexpect.spawn(sys.executable, ["-m", "llamachat", "--no-history"], env=env, timeout=60, encoding="utf-8")
        child.expect(">>> ")
        times.append(time.perf_counter() - start)
        child.sendline("/quit")
        child.expect(pexpect.EOF)
    import llamachat

    start = time.perf_counter()
    llamachat.load()
    return statistics.median(times), time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--history-tokens", type=int, default=2000)
    args = p.parse_args()
    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp())  # keep the user's sessions out of it
    import llamachat

    model = llamachat.load()
    model.runner.forward([1] * 8, model.runner.new_cache(8))  # one-time warm-up, as the chat does while you type
    reuse = turns(model, args.turns, reuse=True)
    full = turns(model, args.turns, reuse=False)
    print(f"## {args.turns}-turn chat, time to first token (s)\n")
    print("| turn | cache reused | history re-evaluated |\n|---|---|---|")
    for i in (1, 2, 5, 10, 15, args.turns):
        print(f"| {i} | {reuse[i - 1]:.3f} | {full[i - 1]:.3f} |")
    print(f"\nturn {args.turns} / turn 2: cache reused {reuse[-1] / reuse[1]:.2f}x, re-evaluated {full[-1] / full[1]:.2f}x\n")
    with_cache, without, n = load_vs_reevaluate(model, args.history_tokens)
    print(f"## /load of a {n}-token session, then the next reply's first token (s)\n")
    print(
        f"| with the saved cache | re-evaluated | speed-up |\n|---|---|---|\n| {with_cache:.3f} | {without:.3f} | {without / with_cache:.1f}x |\n"
    )
    prompt_s, load_s = startup()
    print("## Start-up\n")
    print(f"`llamachat` to a prompt that accepts input: {prompt_s:.2f} s (median of 3); model load (in the background): {load_s:.2f} s")


if __name__ == "__main__":
    main()
