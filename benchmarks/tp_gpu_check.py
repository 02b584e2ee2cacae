"""The first thing to run for `--tp` on CUDA when a session is lent a GPU machine: the NCCL path of
plugins/llamachat_torch/tp.py was written without a GPU (none was lent), and this says whether it
is right and how fast it is.

    PYTHONPATH=.:plugins python3 benchmarks/tp_gpu_check.py           # on the GPU machine (~3-5 min)
    .venv/bin/python benchmarks/tp_gpu_check.py --device cpu --shape tiny   # the same checks on gloo

1. One process (TP=1): decode tok/s of a 7B-shaped model with RANDOM weights in bfloat16 (speed
   only: see benchmarks/gpu_decode.py) against the ceiling costs.decode_bound sets from the weight
   bytes and the device's measured read bandwidth.
2. With 2 or more GPUs, `--tp 2` over NCCL (tp.start, ranks on cuda:0 and cuda:1) in float32
   against one process on cuda:0, on small random models that take every path of the split (kv
   heads even, uneven and replicated; a tied head; the embedding split along the vocabulary, an
   NCCL all-reduce, and along the dimension, an NCCL all-gather): every logit within 1e-5, the
   gathered cache state within 1e-5, 32 greedy tokens identical, and a cache moved from one to the
   other (load_state) within 1e-4.
3. With 2 or more GPUs: `--tp 2` decode tok/s of the 7B shape in bfloat16 against
   costs.decode_bound(rank 0's bytes, the bandwidth, 2 all-reduces a layer over NVLink 4).

Prints one line a check and `tp_gpu_check: PASS` or `FAIL` last; the exit status is 1 if a check
failed. It needs torch, numpy and pluggy only (what a lent machine's image has).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from gpu_decode import SHAPES, RandomWeights, read_bandwidth
from llamachat_torch import tp
from llamachat_torch.model import TorchModel

from llamachat.bench import decode_speed
from llamachat.costs import NVLINK4, allreduce_seconds_per_token, decode_bound
from llamachat.protocols import ModelConfig

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the random models tests/test_tp.py checks on gloo
from random_weights import random_weights  # noqa: E402

# (name, heads, tied, embedding split along the dimension): each path of tp.py's split
CASES = [
    ("divisible", dict(n_heads=4, n_kv_heads=2), False, False),
    ("uneven kv heads, tied", dict(n_heads=6, n_kv_heads=3), True, False),
    ("replicated kv head", dict(n_heads=4, n_kv_heads=1), False, False),
    ("embedding split along the dim", dict(n_heads=6, n_kv_heads=3), False, True),
]
PROMPT = [3, 14, 15, 92, 65, 35, 89, 79]


class DimSplit(dict):
    """Weights whose embedding the checkpoint splits along the dimension (LLaMA-1/2's Meta shards):
    tp.py's ParallelEmbedding, the one all-gather of a pass."""

    def split_axis(self, name: str) -> int | None:
        return 1 if name == "token_embd" else None


def random_model(heads: dict, tied: bool, dim_split: bool, seed: int = 0) -> tuple[ModelConfig, Mapping[str, np.ndarray]]:
    """A small random LLaMA, the same on every rank (module-level: spawned ranks rebuild it), with
    logits of order 1 tied or not, as tests/test_tp.py's models (tests/random_weights.py)."""
    config = ModelConfig(dim=48, n_layers=2, head_dim=8, ffn_dim=75, vocab_size=101, context_length=128, tied_embeddings=tied, **heads)
    weights = random_weights(config, seed)
    return config, DimSplit(weights) if dim_split else weights


def random_shape(name: str) -> tuple[ModelConfig, RandomWeights]:
    return SHAPES[name], RandomWeights(SHAPES[name])


def greedy(runner, cache, prompt: list[int], n: int) -> list[int]:
    out, logits = [], runner.forward(prompt, cache)
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = runner.forward([out[-1]], cache)
    return out


def parity(case: tuple, device: str) -> list[str]:
    """What differs between --tp 2 and one process on this case (nothing: an empty list)."""
    _, heads, tied, dim_split = case
    factory = functools.partial(random_model, heads, tied, dim_split)
    config, weights = factory()
    first = "cuda:0" if device == "cuda" else device
    one = TorchModel(config, weights, torch.device(first), torch.float32)
    runner = tp.start(2, factory, 1, local=(config, weights), device=device, dtype="float32")
    problems = []
    try:
        c1, c2 = one.new_cache(), runner.new_cache()
        gap = np.abs(runner.forward(PROMPT, c2, all_logits=True) - one.forward(PROMPT, c1, all_logits=True)).max()
        if not gap <= 1e-5:
            problems.append(f"logits differ by {gap:.2e} (> 1e-5)")
        s1, s2 = c1.state(), c2.state()
        for name in ("k", "v"):
            if s1[name].shape != s2[name].shape or not np.abs(s1[name] - s2[name]).max() <= 1e-5:
                problems.append(f"cache state {name} differs")
        c1.truncate(5), c2.truncate(5)
        a, b = greedy(runner, c2, [7], 32), greedy(one, c1, [7], 32)
        if a != b:
            problems.append(f"greedy tokens differ: {a} vs {b}")
        # each side resumes the other's cache (37 tokens: float32 sums in another order, so 1e-4, as tests/test_tp.py)
        c3, c4 = runner.new_cache(), one.new_cache()
        c3.load_state(c1.state()), c4.load_state(c2.state())
        gap = np.abs(runner.forward([42], c3) - one.forward([42], c4)).max()
        if not gap <= 1e-4:
            problems.append(f"after a cache moved between them, logits differ by {gap:.2e} (> 1e-4)")
    finally:
        runner.close()
    return problems


def speed(shape: str, device: str, n_gen: int, bandwidth: float, gpus: int) -> None:
    config = SHAPES[shape]
    dtype = "bfloat16" if device == "cuda" else "float32"
    first = torch.device("cuda:0" if device == "cuda" else device)
    one = TorchModel(config, RandomWeights(config), first, getattr(torch, dtype))
    decode_speed(one, 4, config.vocab_size)  # warm-up
    tg = decode_speed(one, n_gen, config.vocab_size)
    ceiling = decode_bound(one.weight_bytes, bandwidth)
    print(
        f"TP=1 {shape} {dtype}: {tg:.1f} tok/s, ceiling {ceiling:.1f} ({100 * tg / ceiling:.0f}%), {one.weight_bytes / 1e9:.2f} GB of weights"
    )
    del one
    if device == "cuda":
        torch.cuda.empty_cache()
    if gpus < 2:
        return
    factory = functools.partial(random_shape, shape)
    runner = tp.start(2, factory, 1, local=factory(), device=device, dtype=dtype)
    try:
        decode_speed(runner, 4, config.vocab_size)
        tg = decode_speed(runner, n_gen, config.vocab_size)
    finally:
        runner.close()
    allreduce = allreduce_seconds_per_token(config, 2, NVLINK4)
    ceiling = decode_bound(runner.weight_bytes, bandwidth, allreduce)
    print(
        f"TP=2 {shape} {dtype}: {tg:.1f} tok/s, ceiling {ceiling:.1f} ({100 * tg / ceiling:.0f}%; "
        f"rank 0 holds {runner.weight_bytes / 1e9:.2f} GB, all-reduces {allreduce * 1e6:.0f} us a token over {NVLINK4.name})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b", help="the speed checks' model (random weights)")
    p.add_argument("--n-gen", type=int, default=64)
    p.add_argument("--bandwidth-mib", type=int, default=4096)
    p.add_argument("--no-speed", action="store_true", help="the parity checks only")
    args = p.parse_args(argv)
    gpus = torch.cuda.device_count() if args.device == "cuda" else 2  # the CPU stands in for two
    if args.device == "cuda":
        version = torch.cuda.nccl.version()  # a tuple since torch 1.x's int
        nccl = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        print(f"torch {torch.__version__}, NCCL {nccl}, {gpus} x {torch.cuda.get_device_name(0)}")
    failed = False
    if gpus >= 2:
        for case in CASES:
            problems = parity(case, args.device)
            failed |= bool(problems)
            print(f"--tp 2 over {'NCCL' if args.device == 'cuda' else 'gloo'}, {case[0]}: {'; '.join(problems) or 'matches one process'}")
    else:
        print("one GPU: --tp 2 needs two, parity not checked")
    if not args.no_speed:
        first = torch.device("cuda:0" if args.device == "cuda" else "cpu")
        bandwidth = read_bandwidth(first, 3, args.bandwidth_mib << 20)
        print(f"read bandwidth {bandwidth / 1e9:.0f} GB/s; RANDOM weights below (speed only)")
        speed(args.shape, args.device, args.n_gen, bandwidth, gpus)
    print(f"tp_gpu_check: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
