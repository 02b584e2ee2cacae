"""The torch backend's float32 products on the CPU (sliced.py) against the order they had before,
alternating in one process: each product of a decode step, and whole forward passes of the default
model, for one token (decoding) and for the 5 of a lookup pass.

    .venv/bin/python benchmarks/torch_sliced_ab.py [--rounds 7]

"before" is the previous SlicedLinear, kept here: a tall matrix (out >= in) stored [parts, in,
out/parts] and multiplied x @ W_p, a wide one stored [parts, out/parts, in] and multiplied x @ W_p.T.
Reported: the best of `rounds` for each side, products per shape (30 layers' worth of distinct
matrices, so they stream from memory as in the model) and the default model's forward pass 300 tokens
into its cache.
"""

from __future__ import annotations

import argparse
import time

import torch
from llamachat_torch import model as torch_model
from llamachat_torch.sliced import SlicedLinear

from llamachat.api import load

SHAPES = {"q/k/v": (960, 576, 30), "attention output": (576, 576, 30), "gate/up": (3072, 576, 30), "down": (576, 1536, 30)}
SHAPES["head"] = (49152, 576, 1)


class BeforeSlicedLinear(SlicedLinear):
    """sliced.py's SlicedLinear before 2026-12-04 (a subclass only so that TorchModel.embed takes its rows)."""

    def __init__(self, w: torch.Tensor, parts: int):
        out, n_in = w.shape
        self.parts = parts if out % parts == 0 else 1
        rows = w.reshape(self.parts, out // self.parts, n_in)
        self.weight = rows.contiguous().transpose(1, 2) if out < n_in else rows.transpose(1, 2).contiguous()
        self.nbytes = self.weight.nbytes

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        T, n_in = x.shape
        return torch.bmm(x.expand(self.parts, T, n_in), self.weight).transpose(0, 1).reshape(T, -1)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        n = self.weight.shape[2]
        return self.weight[ids // n, :, ids % n]


def timed(f, n: int = 3) -> float:
    f()
    start = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - start) / n * 1e3


def products(rounds: int, threads: int) -> None:
    for name, (out, n_in, layers) in SHAPES.items():
        ws = [torch.randn(out, n_in) / n_in**0.5 for _ in range(layers)]
        sides = {"before": [BeforeSlicedLinear(w, threads) for w in ws], "after": [SlicedLinear(w, threads) for w in ws]}
        x5 = torch.randn(5, n_in)
        assert all(torch.allclose(a(x5), b(x5), rtol=1e-4, atol=1e-4) for a, b in zip(sides["before"], sides["after"]))
        best: dict[tuple[str, int], float] = {}
        for _ in range(rounds):
            for T in (1, 5):
                x = torch.randn(T, n_in)
                for side, mats in sides.items():
                    ms = timed(lambda x=x, mats=mats: [m(x) for m in mats])
                    best[side, T] = min(best.get((side, T), ms), ms)
        print(
            f"{name} x{layers}: " + ", ".join(f"{T} rows {best['before', T]:.2f} -> {best['after', T]:.2f} ms" for T in (1, 5)), flush=True
        )


def passes(rounds: int) -> None:
    runners = {}
    for side, cls in (("before", BeforeSlicedLinear), ("after", SlicedLinear)):
        torch_model.SlicedLinear = cls  # what TorchModel.dense builds
        runners[side] = load(None, "torch").runner
    torch_model.SlicedLinear = SlicedLinear
    caches = {side: r.new_cache(512) for side, r in runners.items()}
    for side, r in runners.items():
        r.forward(list(range(100, 400)), caches[side])
    held = len(caches["after"])
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for T in (1, 5):
            for side, r in runners.items():
                start = time.perf_counter()
                r.forward(list(range(500, 500 + T)), caches[side], all_logits=T > 1)
                ms = (time.perf_counter() - start) * 1e3
                best[side, T] = min(best.get((side, T), ms), ms)
                caches[side].truncate(held)
    for side in runners:
        print(
            f"default model, {side}: 1 token {best[side, 1]:.1f} ms, 5 tokens {best[side, 5]:.1f} ms ({best[side, 5] / best[side, 1]:.2f}x)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    products(args.rounds, torch.get_num_threads())
    passes(args.rounds)


if __name__ == "__main__":
    main()
