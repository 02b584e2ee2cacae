"""Decode speed with --tp 2 x 1 thread against 1 process x 2 threads (torch, CPU, float32), and the
time rank 0 spends in all-reduces per token (issue 20). Not expected to be faster on one CPU: it
shows the communication cost.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tp_decode.py [--model PATH] [-n 32]
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
from llamachat_torch import tp
from llamachat_torch.model import TorchModel

from llamachat.default_model import default_model


def decode(runner, n: int) -> float:
    cache = runner.new_cache(256)
    runner.forward(list(range(1, 17)), cache)
    t = time.perf_counter()
    for i in range(n):
        runner.forward([100 + i], cache)
    return n / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("-n", type=int, default=32)
    args = p.parse_args()
    path = args.model or str(default_model())
    config, weights = tp.open_weights(path)
    torch.set_num_threads(2)
    one = TorchModel(config, weights, torch.device("cpu"), torch.float32)
    rate1 = decode(one, args.n)
    del one
    torch.set_num_threads(1)
    runner = tp.start(2, functools.partial(tp.open_weights, path), 1, local=(config, weights))
    decode(runner, 4)  # warm the sockets
    tp.AllReduced.seconds = 0.0
    rate2 = decode(runner, args.n)
    per_token_ms = tp.AllReduced.seconds / args.n * 1e3
    runner.close()
    print(
        f"{path}: 1 process x 2 threads {rate1:.1f} tok/s; --tp 2 x 1 thread {rate2:.1f} tok/s, all-reduce {per_token_ms:.2f} ms a token on rank 0 ({2 * config.n_layers} a token)"
    )


if __name__ == "__main__":
    main()
