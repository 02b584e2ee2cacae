"""llamachat's backends and their peers on the same weights, measured alternately in one run.

    .venv/bin/python benchmarks/peers.py [--model PATH] [--backends numpy,torch,torch:bfloat16,torch:int4,mlx]
                                         [--peers transformers,mlx-lm,llama.cpp] [--n-gen 128] [--reps 3]

Prints a Markdown table: decode tok/s (tg), prompt tok/s (pp512), the decode ceiling of this machine
for the weights as each system holds them, and each system's decode speed against the first peer's.
transformers runs `generate()` greedily in fp32 (eager attention, 2 threads) on the same file (a GGUF
is dequantized to fp32 by transformers). mlx-lm runs `stream_generate` greedily on the same
directory, which must be in MLX/HF layout: make one with
`llamachat convert MODEL DIR --to mlx [--dtype f32 | -q 4]`. llama.cpp runs through llama-cpp-python on
the same GGUF as it is (2 threads, the prompt in one batch of 512, then one token at a time with the
argmax of its logits, as `llamachat bench` decodes). It is not a dependency of llamachat: it compiles
llama.cpp, ~10 minutes here, so install it by hand when you want this peer:
`CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install llama-cpp-python==0.3.36`.

These machines are shared and their speed drifts by tens of percent within minutes, so every system
is loaded first and the repetitions take turns: rep 1 measures each system once, then rep 2, and so
on. "tg vs" ("pp vs") is the median over the reps of a system's tg (pp) against the peer's in the same rep; the
tok/s columns are medians; the ceiling is the memory bandwidth (best of `reps` readings, taken after
the reps: read between them, with the backends' BLAS threads still spinning, it scattered from 2 to
35 GB/s) over the bytes of the weights as each system holds them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llamachat.api import load
from llamachat.bench import decode_speed, memory_bandwidth, prompt_speed


@dataclass
class System:
    name: str
    weight_bytes: int
    measure: Callable[[], tuple[float, float]]  # one (pp tok/s, tg tok/s) measurement
    pp: list[float] = field(default_factory=list)
    tg: list[float] = field(default_factory=list)


THREADS: int | None = None  # --threads: llamachat's backends and llama.cpp alike (unset: each its default, llama.cpp 2)


def llamachat_system(model_path, spec: str, n_prompt: int, n_gen: int) -> tuple[System, object]:
    backend, _, dtype = spec.partition(":")
    quantize = dtype if dtype == "int4" else None  # torch:int4, the weight-only int4 kernel
    model = load(model_path, backend, dtype=None if quantize else dtype or None, quantize=quantize, threads=THREADS)
    runner, vocab = model.runner, model.config.vocab_size
    prompt_speed(runner, 32, vocab)  # warm-up
    decode_speed(runner, 8, vocab)

    def measure() -> tuple[float, float]:
        return prompt_speed(runner, n_prompt, vocab), decode_speed(runner, n_gen, vocab)

    return System(f"llamachat {backend} {runner.dtype}", runner.weight_bytes, measure), model.path


def transformers_system(path, n_prompt: int, n_gen: int) -> System:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    prompt = torch.randint(3, model.config.vocab_size, (1, n_prompt))
    short = prompt[:, :4]
    with torch.no_grad():
        model(prompt[:, :32])  # warm-up

    @torch.no_grad()
    def measure() -> tuple[float, float]:
        start = time.perf_counter()
        model(prompt)
        pp = n_prompt / (time.perf_counter() - start)
        # decode speed: generate n_gen tokens, minus the time to the first one
        start = time.perf_counter()
        model.generate(short, max_new_tokens=1, min_new_tokens=1, do_sample=False)
        first = time.perf_counter() - start
        start = time.perf_counter()
        model.generate(short, max_new_tokens=n_gen, min_new_tokens=n_gen, do_sample=False)
        return pp, (n_gen - 1) / (time.perf_counter() - start - first)

    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return System("transformers generate() fp32", weight_bytes, measure)


def mlx_lm_system(path, n_prompt: int, n_gen: int) -> System:
    import mlx.core as mx
    import mlx_lm
    import numpy as np
    from mlx.utils import tree_flatten

    model, tokenizer = mlx_lm.load(str(path))
    prompt = [int(i) for i in np.random.default_rng(0).integers(3, 1000, n_prompt)]
    sampler = lambda logits: mx.argmax(logits, axis=-1)  # noqa: E731  greedy, as the others
    list(mlx_lm.stream_generate(model, tokenizer, prompt[:32], max_tokens=8, sampler=sampler))  # warm-up

    def measure() -> tuple[float, float]:
        *_, first = mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=1, sampler=sampler)
        *_, last = mlx_lm.stream_generate(model, tokenizer, prompt[:4], max_tokens=n_gen, sampler=sampler)
        return first.prompt_tps, last.generation_tps

    weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return System("mlx-lm stream_generate()", weight_bytes, measure)


def llama_cpp_system(path, n_prompt: int, n_gen: int) -> System:
    import llama_cpp
    import numpy as np

    threads = THREADS or 2
    llm = llama_cpp.Llama(
        model_path=str(path), n_threads=threads, n_threads_batch=threads, n_ctx=n_prompt + n_gen + 8, n_batch=n_prompt, verbose=False
    )
    vocab = llm.n_vocab()
    prompt = [int(i) for i in np.random.default_rng(0).integers(3, vocab, n_prompt)]

    def last_logits() -> np.ndarray:
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits(llm.ctx), shape=(vocab,))  # the last evaluated token's

    def measure() -> tuple[float, float]:
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        pp = n_prompt / (time.perf_counter() - start)
        llm.reset()
        llm.eval(prompt[:4])
        start = time.perf_counter()
        for _ in range(n_gen):
            llm.eval([int(np.argmax(last_logits()))])
        return pp, n_gen / (time.perf_counter() - start)

    llm.eval(prompt[:32])  # warm-up
    return System("llama.cpp (llama-cpp-python)", llama_cpp.llama_model_size(llm.model), measure)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a GGUF file (default: the default model)")
    p.add_argument(
        "--backends", default="numpy", help="comma-separated llamachat backends, each NAME or NAME:DTYPE (torch:bfloat16, torch:int4)"
    )
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, help="threads for every system (default: each its own; llama.cpp 2)")
    p.add_argument("--peers", default="transformers", help="comma-separated: transformers, mlx-lm, llama.cpp (or empty)")
    args = p.parse_args()
    global THREADS
    THREADS = args.threads

    systems, path = [], None
    for spec in args.backends.split(","):
        system, path = llamachat_system(args.model, spec, args.n_prompt, args.n_gen)
        systems.append(system)
    makers = {"transformers": transformers_system, "mlx-lm": mlx_lm_system, "llama.cpp": llama_cpp_system}
    peers = [makers[name](path, args.n_prompt, args.n_gen) for name in args.peers.split(",") if name]
    systems += peers
    for rep in range(args.reps):  # the systems take turns, so that the machine's drift hits all alike
        for system in systems:
            pp, tg = system.measure()
            system.pp.append(pp)
            system.tg.append(tg)
            print(
                f"rep {rep + 1}: {system.name}: pp{args.n_prompt} {pp:.1f} tok/s, tg{args.n_gen} {tg:.1f} tok/s",
                file=sys.stderr,
                flush=True,
            )
    report(systems, memory_bandwidth(args.reps), peers[0] if peers else None, path.name, args)


def report(systems: list[System], bandwidth: float, peer: System | None, model: str, args) -> None:
    med = statistics.median
    print(f"model {model}; memory bandwidth {bandwidth / 1e9:.1f} GB/s; median of {args.reps} alternating reps\n")
    vs = f" | tg vs {peer.name.split()[0]} | pp vs {peer.name.split()[0]}" if peer else ""
    print(f"| system | weights in memory | tg{args.n_gen} tok/s | ceiling tok/s | % of ceiling | pp{args.n_prompt} tok/s{vs} |")
    print("|---|---|---|---|---|---|" + ("---|---|" if peer else ""))
    for s in systems:
        ceiling = bandwidth / s.weight_bytes
        row = f"| {s.name} | {s.weight_bytes / 1e6:.0f} MB | {med(s.tg):.1f} | {ceiling:.1f} | {100 * med(s.tg) / ceiling:.0f}% | {med(s.pp):.0f} |"
        if peer:
            row += f" {med(a / b for a, b in zip(s.tg, peer.tg)):.2f}x | {med(a / b for a, b in zip(s.pp, peer.pp)):.2f}x |"
        print(row)


if __name__ == "__main__":
    main()
