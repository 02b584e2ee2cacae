"""Lookup decoding against plain decoding on three chat workloads, the default model, greedy.

    .venv/bin/python benchmarks/lookup.py [--backends numpy,torch] [--ks 8] [--n-gen 128] [--rounds 2]
                                          [--workloads edit,quote,chat] [--llama-cpp PYTHON]  # a Python with llama_cpp, e.g. .venv/bin/python after make test
    .venv/bin/python benchmarks/lookup.py --pass-cost [--backends numpy,torch] [--rounds 4]

Workloads: "edit" (a function, then "Repeat it with the loop replaced by a list comprehension"),
"quote" (three paragraphs, then "Quote the second paragraph of this text, then summarise it") and
"chat" (an ordinary question: what a lookup default costs when the history gives it nothing), each
one user message in the model's template. For every backend, plain decoding (lookup 0) and lookup at
each k take turns within a round, so the machine's drift hits them alike; a reply runs to the
template's stop id or `n_gen` tokens. Reported: decode tok/s (from the first generated token to the
last, as the chat's stats line), its ratio to the same backend's plain decode in the same round
(median over rounds), the drafts accepted / proposed, and whether the text equals plain decoding's.

The peer: llama.cpp's plain decode through llama-cpp-python, if a Python with `llama_cpp` is given
(`--llama-cpp`), on the same GGUF and the same prompt ids (2 threads, the prompt in one batch, then
the argmax of its logits one token at a time, as benchmarks/peers.py), as many tokens as llamachat's
plain reply took, in a subprocess between the rounds of the llamachat backends.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from llamachat.api import Model, load
from llamachat.generate import Stats, generate
from llamachat.plugins import registry
from llamachat.sampling import SamplerChain

FUNCTION = '''def summarise_orders(orders, min_total=0.0):
    """Return the id, customer and total of every order whose total reaches min_total."""
    summaries = []
    for order in orders:
        total = sum(item["price"] * item["quantity"] for item in order["items"])
        if total >= min_total:
            summaries.append({"id": order["id"], "customer": order["customer"], "total": round(total, 2)})
    return summaries
'''

TEXT = """The town of Alderbrook sits in a narrow valley between two ranges of low hills. Its first houses were built by \
millers who used the fast water of the river to turn their stones, and the old mill still stands at the north end of the main street.

In the spring the river floods the meadows below the town, and for a few weeks the fields turn into a shallow lake. \
The farmers plant late, after the water has gone, and the soil left behind by the flood makes their crops grow quickly \
through the summer.

Today most people in Alderbrook work in the nearby city, and the mill has become a small museum. Visitors come in the \
autumn to walk the hill paths and to see the leaves change colour along the river."""

WORKLOADS = {
    "edit": f"Here is a function:\n\n```python\n{FUNCTION}```\n\nRepeat it with the loop replaced by a list comprehension.",
    "quote": f"{TEXT}\n\nQuote the second paragraph of this text, then summarise it.",
    # an ordinary question, nothing to repeat: what a default costs a chat that gives lookup nothing
    "chat": "Tell me about the history of Paris, from the Romans to today.",
}

LLAMA_CPP_DECODE = """
import json, sys, time
import numpy as np, llama_cpp
path, ids, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=path, n_threads=2, n_threads_batch=2, n_ctx=len(ids) + n + 8, n_batch=len(ids), verbose=False)
vocab = llm.n_vocab()
llm.eval(ids)
start = time.perf_counter()
for _ in range(n - 1):
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(vocab,))
    llm.eval([int(np.argmax(logits))])
print(json.dumps({"tok_s": (n - 1) / (time.perf_counter() - start)}))
"""


def reply(model: Model, ids: list[int], lookup: int, n_gen: int) -> tuple[list[int], Stats]:
    stats = Stats()
    cache = model.runner.new_cache(len(ids) + n_gen + 1)
    chain = SamplerChain(registry().samplers, ["greedy"])
    stops = model.template.stop_ids(model.tokenizer)
    tokens = list(
        generate(model.runner, cache, ids, chain, history=list(ids), max_tokens=n_gen, stop_ids=stops, stats=stats, lookup=lookup)
    )
    return tokens, stats


def llama_cpp_decode(python: str, path: str, ids: list[int], n: int) -> float:
    out = subprocess.run([python, "-c", LLAMA_CPP_DECODE, path, json.dumps(ids), str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["tok_s"]


def pass_cost(backends: list[str], rounds: int) -> None:
    """What a pass over n tokens costs against one token, 300 tokens into the cache (best of `rounds`,
    the sizes taking turns): what a draft must save to pay."""
    sizes = (1, 2, 3, 5, 9)
    for name in backends:
        runner = load(None, name).runner
        cache = runner.new_cache(512)
        runner.forward(list(range(100, 400)), cache)
        held, best = len(cache), {n: float("inf") for n in sizes}
        for _ in range(rounds):
            for n in sizes:
                start = time.perf_counter()
                runner.forward(list(range(500, 500 + n)), cache, all_logits=n > 1)
                best[n] = min(best[n], time.perf_counter() - start)
                cache.truncate(held)
        print(f"{name}: " + ", ".join(f"{n} tokens {best[n] * 1e3:.0f} ms ({best[n] / best[1]:.2f}x)" for n in sizes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="numpy,torch")
    p.add_argument("--ks", default="8", help="comma-separated lookup values to compare with 0")
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--llama-cpp", metavar="PYTHON", help="a Python with llama_cpp installed, for llama.cpp's plain decode")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    p.add_argument("--pass-cost", action="store_true", help="only measure a pass over 1, 2, 3, 5, 9 tokens on each backend")
    args = p.parse_args()
    workloads = args.workloads.split(",")
    unknown = set(workloads) - WORKLOADS.keys()
    if unknown:
        p.error(f"unknown workload {sorted(unknown)[0]!r} (known: {', '.join(WORKLOADS)})")
    if args.pass_cost:
        return pass_cost(args.backends.split(","), args.rounds)
    ks = [int(k) for k in args.ks.split(",")]
    models = {name: load(None, name) for name in args.backends.split(",")}
    some = next(iter(models.values()))
    prompts = {w: some.encode_prompt(WORKLOADS[w]) for w in workloads}
    for model in models.values():  # warm-up: one-time costs out of the first round
        reply(model, next(iter(prompts.values()))[:32], 4, 8)
    speed: dict[tuple, list[float]] = defaultdict(list)  # (workload, backend, k) -> tok/s per round
    ratio: dict[tuple, list[float]] = defaultdict(list)
    seen: dict[tuple, Stats] = {}
    same: dict[tuple, bool] = {}
    for _ in range(args.rounds):
        for workload, ids in prompts.items():
            for name, model in models.items():
                plain, base = reply(model, ids, 0, args.n_gen)
                speed[workload, name, 0].append(base.decode_tok_s)
                seen[workload, name, 0] = base
                for k in ks:
                    tokens, stats = reply(model, ids, k, args.n_gen)
                    speed[workload, name, k].append(stats.decode_tok_s)
                    ratio[workload, name, k].append(stats.decode_tok_s / base.decode_tok_s)
                    seen[workload, name, k], same[workload, name, k] = stats, tokens == plain
                    print(
                        f"{workload} {name}: plain {base.decode_tok_s:.2f}, lookup {k} {stats.decode_tok_s:.2f} tok/s, "
                        f"{stats.accepted}/{stats.drafted} accepted, same text {tokens == plain}",
                        file=sys.stderr,
                    )
            if args.llama_cpp:
                n = seen[workload, next(iter(models)), 0].generated_tokens
                speed[workload, "llama.cpp", 0].append(llama_cpp_decode(args.llama_cpp, str(some.path), ids, n))
                print(f"{workload} llama.cpp plain: {speed[workload, 'llama.cpp', 0][-1]:.2f} tok/s", file=sys.stderr)
    med = statistics.median
    print(f"default model, greedy, replies up to {args.n_gen} tokens; median of {args.rounds} alternating rounds\n")
    print("| workload | system | lookup | reply tokens | decode tok/s | vs own plain | drafts accepted / proposed | same text |")
    print("|---|---|---|---|---|---|---|---|")
    for workload in prompts:
        for name in [*models, *(["llama.cpp"] if args.llama_cpp else [])]:
            for k in [0, *ks] if name in models else [0]:
                tok_s = med(speed[workload, name, k])
                if name not in models:
                    print(f"| {workload} | llama.cpp (plain) | 0 | | {tok_s:.1f} | | | |")
                    continue
                st = seen[workload, name, k]
                vs = f"{med(ratio[workload, name, k]):.2f}x" if k else ""
                acc = f"{st.accepted} / {st.drafted} ({st.accepted / st.drafted:.0%})" if st.drafted else ""
                text = ("yes" if same[workload, name, k] else "NO") if k else ""
                print(f"| {workload} | llamachat {name} | {k} | {st.generated_tokens} | {tok_s:.1f} | {vs} | {acc} | {text} |")


if __name__ == "__main__":
    main()
