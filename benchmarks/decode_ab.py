"""Two llamachat backend configurations decoding alternately in one process (A, B, A, B, ...), so that
the machine's drift hits both alike; prints each one's median tok/s and the ratio.

    .venv/bin/python benchmarks/decode_ab.py torch:bfloat16 torch:int4 [--model PATH] [--rounds 4] [--n-gen 64]
                                             [--prompt 4]

Each configuration is NAME[:DTYPE], with `int4` as the DTYPE meaning quantize = "int4".
"""

from __future__ import annotations

import argparse
import statistics

from llamachat.api import load
from llamachat.bench import decode_speed


def load_config(model: str | None, spec: str):
    backend, _, dtype = spec.partition(":")
    quantize = dtype if dtype == "int4" else None
    return load(model, backend, dtype=None if quantize else dtype or None, quantize=quantize).runner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--model")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--n-gen", type=int, default=64)
    p.add_argument("--prompt", type=int, default=4, help="tokens in the cache before decoding starts")
    args = p.parse_args()
    runners = {spec: load_config(args.model, spec) for spec in (args.a, args.b)}
    for runner in runners.values():
        decode_speed(runner, 8, runner.config.vocab_size)  # warm-up
    speeds: dict[str, list[float]] = {spec: [] for spec in runners}
    for _ in range(args.rounds):
        for spec, runner in runners.items():
            speeds[spec].append(decode_speed(runner, args.n_gen, runner.config.vocab_size, args.prompt))
    medians = {spec: statistics.median(v) for spec, v in speeds.items()}
    for spec, v in speeds.items():
        print(f"{spec:20} {medians[spec]:6.1f} tok/s  ({', '.join(f'{x:.1f}' for x in v)})")
    print(f"{args.b} / {args.a}: {medians[args.b] / medians[args.a]:.2f}x")


if __name__ == "__main__":
    main()
