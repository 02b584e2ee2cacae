"""A long chat on a small context: first-token time before and after the context fills, dropping
just enough each turn (overflow_free 0, the old behaviour) and in large steps (the default 0.5).

    .venv/bin/python benchmarks/full_context.py [--turns 150] [--context 512] [--max-tokens 16] [--backend numpy]

Default model, greedy replies, the questions of benchmarks/chat.py in turn. Prints the median, p90 and
max first-token time of the turns before the context first filled and of the turns after, per setting.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

from chat import QUESTIONS


def run(model, turns: int, context: int, max_tokens: int, share: float) -> tuple[list[float], list[float], int]:
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=max_tokens, context=context, overflow_free=share)
    before, after, drops = [], [], 0
    for i in range(turns):
        r = s.ask(QUESTIONS[i % len(QUESTIONS)])
        full = any(n.startswith("context full") for n in r.notices)
        drops += full
        (after if drops else before).append(r.stats.first_token_s)
    return before, after, drops


def summary(times: list[float]) -> str:
    if not times:
        return "- | - | -"
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"{statistics.median(times):.3f} | {p90:.3f} | {max(times):.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--turns", type=int, default=150)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--backend", default="numpy")
    args = p.parse_args()
    os.environ.setdefault("XDG_DATA_HOME", tempfile.mkdtemp())
    import llamachat

    model = llamachat.load(backend=args.backend)
    model.runner.forward([1] * 8, model.runner.new_cache(8))  # warm-up, as the chat does while you type
    print(f"{args.turns} turns, context {args.context}, max_tokens {args.max_tokens}, {args.backend}; first-token time (s)\n")
    print("| overflow_free | drops | before full: median | p90 | max | after: median | p90 | max | after / before (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for share in (0.0, 0.5):
        before, after, drops = run(model, args.turns, args.context, args.max_tokens, share)
        ratio = statistics.median(after) / statistics.median(before) if before and after else float("nan")
        print(f"| {share:g} | {drops} | {summary(before)} | {summary(after)} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
