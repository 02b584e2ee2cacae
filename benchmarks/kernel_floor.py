"""The weight products of one decode step alone, per kernel: the floor under any backend built on it.

    .venv/bin/python benchmarks/kernel_floor.py [--model PATH] [--reps 7]

Decoding one token multiplies the activation vector by every weight matrix once: per layer the fused
q/k/v, the attention output, the fused gate/up and the down matrices, then the output head. This
times exactly those products, back to back with nothing else, in the layouts the backends use, with
random weights of the model's shapes (speed does not depend on the values). The best of `reps`
passes is the floor: a backend built on that kernel cannot decode faster than 1 / floor, whatever
the rest of its forward pass costs. It also prints each matrix kind's effective bandwidth, which
shows where a BLAS runs a small product on one thread.

Kernels: NumPy float32 (`x @ W.T`, each matrix in the memory order the backend stores it in) and
PyTorch float32 (`SlicedLinear`, one slice per thread, as the backend holds it); bfloat16 (`F.linear`);
weight-only int8 (`_weight_int8pack_mm`, bf16 activations, one scale per row) and int4
(`_weight_int4pack_mm_for_cpu`, bf16 activations, group 32), the int4 rows once with the head in bf16
(as llamachat's int4 path keeps it) and once with the head in int4 too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from llamachat_numpy.model import stored as numpy_stored

from llamachat.bench import memory_bandwidth
from llamachat.checkpoints import read_config_only
from llamachat.default_model import default_model

GROUP = 32


def shapes(config) -> list[tuple[str, int, int]]:
    """(kind, out, in) of every product of one decode step, in order."""
    c = config
    q, kv = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
    layer = [("qkv", q + 2 * kv, c.dim), ("o", c.dim, q), ("gate_up", 2 * c.ffn_dim, c.dim), ("down", c.dim, c.ffn_dim)]
    return layer * c.n_layers + [("head", c.vocab_size, c.dim)]


def best_of(reps: int, products: list[Callable[[], object]]) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for product in products:
            product()
        best = min(best, time.perf_counter() - start)
    return best


def numpy_products(plan, rng) -> list[tuple[str, int, Callable]]:
    out = []
    for kind, n, k in plan:
        x = rng.standard_normal((1, k), dtype=np.float32)
        w = numpy_stored(rng.standard_normal((n, k), dtype=np.float32))  # in the backend's memory order
        out.append((kind, w.nbytes, lambda x=x, w=w: x @ w.T))
    return out


def torch_products(plan, kernel: str, int4_head: bool = False) -> list[tuple[str, int, Callable]]:
    import torch
    import torch.nn.functional as F
    from llamachat_torch.sliced import SlicedLinear

    out = []
    for kind, n, k in plan:
        dense = kind == "head" and not int4_head and kernel == "int4"
        if kernel == "fp32":
            x, w = torch.randn(1, k), SlicedLinear(torch.randn(n, k), torch.get_num_threads())  # as the backend holds it
            out.append((kind, w.nbytes, lambda x=x, w=w: w(x)))
        elif kernel == "bf16" or dense:
            x, w = torch.randn(1, k, dtype=torch.bfloat16), torch.randn(n, k, dtype=torch.bfloat16)
            out.append((kind, w.nbytes, lambda x=x, w=w: F.linear(x, w)))
        elif kernel == "int8":
            x = torch.randn(1, k, dtype=torch.bfloat16)
            w, s = torch.randint(-127, 128, (n, k), dtype=torch.int8), torch.rand(n, dtype=torch.bfloat16)
            out.append((kind, w.nbytes + s.nbytes, lambda x=x, w=w, s=s: torch.ops.aten._weight_int8pack_mm(x, w, s)))
        else:
            x = torch.randn(1, k, dtype=torch.bfloat16)
            codes = torch.randint(0, 16, (n, k), dtype=torch.int32)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, next(t for t in (8, 4, 2) if k % (16 * t) == 0))
            sz = torch.rand(k // GROUP, n, 2, dtype=torch.bfloat16)
            out.append(
                (kind, packed.nbytes + sz.nbytes, lambda x=x, p=packed, sz=sz: torch.ops.aten._weight_int4pack_mm_for_cpu(x, p, GROUP, sz))
            )
    return out


def report(name: str, products, reps: int, bandwidth: float) -> None:
    total = best_of(reps, [p for _, _, p in products])
    nbytes = sum(b for _, b, _ in products)
    print(
        f"{name:28} {total * 1e3:6.2f} ms  floor {1 / total:6.1f} tok/s  {nbytes / 1e6:5.0f} MB  {nbytes / total / 1e9:5.1f} GB/s", end=""
    )
    print(f"  ({100 * nbytes / total / bandwidth:.0f}% of the bandwidth)")
    by_kind: dict[str, list] = {}
    for kind, b, p in products:
        by_kind.setdefault(kind, []).append((b, p))
    parts = []
    for kind, items in by_kind.items():
        t = best_of(reps, [p for _, p in items])
        parts.append(f"{kind} {t * 1e3:.2f} ms {sum(b for b, _ in items) / t / 1e9:.0f} GB/s")
    print(" " * 29 + "; ".join(parts))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model")
    p.add_argument("--reps", type=int, default=7)
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    path = Path(args.model) if args.model else default_model()
    plan = shapes(read_config_only(path).config)
    rng = np.random.default_rng(0)
    bandwidth = memory_bandwidth()
    print(f"{path.name}: {len(plan)} products per token; bandwidth {bandwidth / 1e9:.1f} GB/s")
    with torch.inference_mode():
        report("numpy float32", numpy_products(plan, rng), args.reps, bandwidth)
        report("torch float32 (sliced bmm)", torch_products(plan, "fp32"), args.reps, bandwidth)
        report("torch bfloat16 (F.linear)", torch_products(plan, "bf16"), args.reps, bandwidth)
        report("torch int8pack (bf16 x)", torch_products(plan, "int8"), args.reps, bandwidth)
        report("torch int4pack, bf16 head", torch_products(plan, "int4"), args.reps, bandwidth)
        report("torch int4pack, int4 head", torch_products(plan, "int4", int4_head=True), args.reps, bandwidth)


if __name__ == "__main__":
    main()
