"""llamachat's backends and HF transformers on the same weights, measured in one run.

    .venv/bin/python benchmarks/peers.py [--model PATH] [--backends numpy,torch,torch:bfloat16,torch:int4,mlx]
                                         [--peers transformers,mlx-lm] [--n-gen 128] [--reps 3]

Prints a Markdown table: decode tok/s (tg), prompt tok/s (pp512) and the decode ceiling of this
machine for the weights as each system holds them. transformers runs `generate()` greedily in fp32
(eager attention, 2 threads) on the same file (a GGUF is dequantized to fp32 by transformers).
mlx-lm runs `stream_generate` greedily on the same directory, which must be in MLX/HF layout: make
one with `llamachat convert MODEL DIR --to mlx [--dtype f32 | -q 4]`. Compare ratios measured side by
side: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

from llamachat.api import load
from llamachat.bench import memory_bandwidth, run_bench


def transformers_speed(path, n_prompt: int, n_gen: int, reps: int) -> tuple[float, float, int]:
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    if path.is_dir():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    prompt = torch.randint(3, model.config.vocab_size, (1, n_prompt))
    short = prompt[:, :4]
    pp, tg = [], []
    with torch.no_grad():
        model(prompt[:, :32])  # warm-up
        for _ in range(reps):
            start = time.perf_counter()
            model(prompt)
            pp.append(n_prompt / (time.perf_counter() - start))
            # decode speed: generate n_gen tokens, minus the time to the first one
            start = time.perf_counter()
            model.generate(short, max_new_tokens=1, min_new_tokens=1, do_sample=False)
            first = time.perf_counter() - start
            start = time.perf_counter()
            model.generate(short, max_new_tokens=n_gen, min_new_tokens=n_gen, do_sample=False)
            tg.append((n_gen - 1) / (time.perf_counter() - start - first))
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return statistics.median(pp), statistics.median(tg), weight_bytes


def mlx_lm_speed(path, n_prompt: int, n_gen: int, reps: int) -> tuple[float, float, int]:
    import mlx.core as mx
    import mlx_lm
    import numpy as np
    from mlx.utils import tree_flatten

    model, tokenizer = mlx_lm.load(str(path))
    prompt = [int(i) for i in np.random.default_rng(0).integers(3, 1000, n_prompt)]
    sampler = lambda logits: mx.argmax(logits, axis=-1)  # noqa: E731  greedy, as the others
    list(mlx_lm.stream_generate(model, tokenizer, prompt[:32], max_tokens=8, sampler=sampler))  # warm-up
    pp, tg = [], []
    for _ in range(reps):
        *_, last = mlx_lm.stream_generate(model, tokenizer, prompt, max_tokens=1, sampler=sampler)
        pp.append(last.prompt_tps)
        *_, last = mlx_lm.stream_generate(model, tokenizer, prompt[:4], max_tokens=n_gen, sampler=sampler)
        tg.append(last.generation_tps)
    weight_bytes = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    return statistics.median(pp), statistics.median(tg), weight_bytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a GGUF file (default: the default model)")
    p.add_argument(
        "--backends", default="numpy", help="comma-separated llamachat backends, each NAME or NAME:DTYPE (torch:bfloat16, torch:int4)"
    )
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--peers", default="transformers", help="comma-separated: transformers, mlx-lm (or empty)")
    args = p.parse_args()

    rows = []
    path = None
    for spec in args.backends.split(","):
        backend, _, dtype = spec.partition(":")
        quantize = dtype if dtype == "int4" else None  # torch:int4, the weight-only int4 kernel
        model = load(args.model, backend, dtype=None if quantize else dtype or None, quantize=quantize)
        path = model.path
        r = run_bench(model.runner, backend, path.name, args.n_prompt, args.n_gen, args.reps, log=lambda m: None)
        rows.append((f"llamachat {backend} {model.runner.dtype}", r.weight_bytes, r.tg_tok_s, r.pp_tok_s))
        del model
    peers = {"transformers": ("transformers generate() fp32", transformers_speed), "mlx-lm": ("mlx-lm stream_generate()", mlx_lm_speed)}
    for peer in filter(None, args.peers.split(",")):
        name, measure = peers[peer]
        pp, tg, nbytes = measure(path, args.n_prompt, args.n_gen, args.reps)
        rows.append((name, nbytes, tg, pp))
    bandwidth = memory_bandwidth(args.reps)
    print(f"model {path.name}; memory bandwidth {bandwidth / 1e9:.1f} GB/s; median of {args.reps}\n")
    print(f"| system | weights in memory | tg{args.n_gen} tok/s | ceiling tok/s | % of ceiling | pp{args.n_prompt} tok/s |")
    print("|---|---|---|---|---|---|")
    for name, nbytes, tg, pp in rows:
        ceiling = bandwidth / nbytes
        print(f"| {name} | {nbytes / 1e6:.0f} MB | {tg:.1f} | {ceiling:.1f} | {100 * tg / ceiling:.0f}% | {pp:.0f} |")


if __name__ == "__main__":
    main()
