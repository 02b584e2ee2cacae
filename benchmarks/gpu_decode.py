"""The PyTorch backend on a GPU: decode and prompt speed of a LLaMA-2-7B-shaped model with RANDOM
weights, against the ceiling the device's memory bandwidth sets.

    PYTHONPATH=.:plugins python3 benchmarks/gpu_decode.py [--device cuda] [--dtypes float16,bfloat16]
                                                           [--shape 7b] [--n-gen 128] [--reps 3]

Decoding reads every weight once a token, so its speed does not depend on the weights' values: a
7B-shaped model with random weights is an honest stand-in for speed, never for quality. Say so wherever
a figure from this script is shown.

It needs only torch, numpy and pluggy, what a lent GPU machine's image has: run it from the
repository's root with PYTHONPATH=.:plugins there, as above (or from the venv anywhere). It builds the
backend's model directly from random weights instead of loading a checkpoint, and times it with the
same `prompt_speed` / `decode_speed` as `llamachat bench` (each decoded token's logits come back to the
host, as in a chat, which also synchronises the device). The ceiling is the device's read bandwidth
(best of `reps` sums over a tensor of `--bandwidth-mib`, 4 GiB, on it) over the bytes of the weights
as the backend holds them.
`--shape tiny --device cpu` runs the same code in a second, for the tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator, Mapping

import numpy as np

from llamachat.bench import decode_speed, memory_bandwidth, prompt_speed
from llamachat.protocols import ModelConfig

SHAPES = {
    # LLaMA-2-7B: 6.74e9 parameters, 13.5 GB in fp16
    "7b": ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, head_dim=128, ffn_dim=11008, vocab_size=32000, context_length=4096),
    "tiny": ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128, vocab_size=256, context_length=1024),
}


class RandomWeights(Mapping):
    """Every weight of `config`, made when asked for: a view into one pool of random float32 values
    (std 1/sqrt(dim), norms 1), so that a 7B model's 27 GB of float32 never exist at once on the host."""

    def __init__(self, config: ModelConfig, seed: int = 0):
        self.shapes = config.weight_shapes()
        largest = max(int(np.prod(s)) for s in self.shapes.values())
        self.pool = np.random.default_rng(seed).standard_normal(largest, dtype=np.float32) * np.float32(config.dim**-0.5)

    def __getitem__(self, name: str) -> np.ndarray:
        shape = self.shapes[name]
        if len(shape) == 1:  # a norm's weight
            return np.ones(shape, np.float32)
        return self.pool[: int(np.prod(shape))].reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def read_bandwidth(device, reps: int, nbytes: int) -> float:
    """Bytes per second the device reads: the best of `reps` timed sums over `nbytes` held on it."""
    import torch

    if device.type == "cpu":
        return memory_bandwidth(reps, nbytes)
    a = torch.ones(nbytes // 2, dtype=torch.float16, device=device)
    a.sum().item()  # warm-up; .item() waits for the device
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a.sum().item()  # .item() waits for the result
        best = min(best, time.perf_counter() - start)
    return a.nbytes / best


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtypes", default="float16,bfloat16")
    p.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    p.add_argument("--n-prompt", type=int, default=512)
    p.add_argument("--n-gen", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--bandwidth-mib", type=int, default=4096, help="size of the tensor the bandwidth is read on")
    args = p.parse_args(argv)

    import torch
    from llamachat_torch.model import TorchModel

    device, config = torch.device(args.device), SHAPES[args.shape]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    bandwidth = read_bandwidth(device, args.reps, args.bandwidth_mib << 20)
    weights = RandomWeights(config)
    print(f"{name}; {args.shape}-shaped model with RANDOM weights (speed only); read bandwidth {bandwidth / 1e9:.0f} GB/s\n")
    print(f"| dtype | weights | tg{args.n_gen} tok/s | ceiling tok/s | % of ceiling | pp{args.n_prompt} tok/s |")
    print("|---|---|---|---|---|---|")
    rows = []
    for dtype in args.dtypes.split(","):
        runner = TorchModel(config, weights, device, getattr(torch, dtype))
        prompt_speed(runner, 16, config.vocab_size)  # warm-up
        decode_speed(runner, 4, config.vocab_size)
        pp = statistics.median(prompt_speed(runner, args.n_prompt, config.vocab_size) for _ in range(args.reps))
        tg = statistics.median(decode_speed(runner, args.n_gen, config.vocab_size) for _ in range(args.reps))
        ceiling = bandwidth / runner.weight_bytes
        print(f"| {dtype} | {runner.weight_bytes / 1e9:.2f} GB | {tg:.1f} | {ceiling:.1f} | {100 * tg / ceiling:.0f}% | {pp:.0f} |")
        rows.append({"dtype": dtype, "weight_bytes": runner.weight_bytes, "tg_tok_s": tg, "roofline_tg_tok_s": ceiling, "pp_tok_s": pp})
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    main()
