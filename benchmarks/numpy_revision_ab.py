"""The NumPy backend's decode speed against its own forward pass at another git revision, alternating
in one process (A, B, A, B, ...) so the machine's drift hits both alike; prints each one's median
tok/s and the ratio. For changes to the NumPy backend that must not cost speed.

    .venv/bin/python benchmarks/numpy_revision_ab.py REV [--model PATH] [--rounds 6] [--n-gen 64] [--prompt 4] [--plain]

REV's plugins/llamachat_numpy (model.py and the modules it imports) is taken with `git show` and
imported as a package of its own; both read the same checkpoint. `--plain` adds the plain
walk-through forward (plain.py).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from llamachat.bench import decode_speed
from llamachat.checkpoints import open_checkpoint
from llamachat.default_model import default_model

PLUGIN = "plugins/llamachat_numpy"


def model_at(revision: str):
    """The module plugins/llamachat_numpy/model.py as it was at `revision`, imported from a copy of the
    whole plugin package at that revision (so that its relative imports, rows.py and the rest, are of
    the same revision; the llamachat package it imports is the working tree's)."""
    sha = subprocess.run(["git", "rev-parse", revision], capture_output=True, text=True, check=True).stdout.strip()
    package = Path(tempfile.mkdtemp()) / f"llamachat_numpy_at_{sha[:12]}"  # a name of its own per revision
    package.mkdir()
    listing = subprocess.run(
        ["git", "ls-tree", "--full-tree", "--name-only", revision, f"{PLUGIN}/"], capture_output=True, text=True, check=True
    )
    for path in listing.stdout.split():
        if path.endswith(".py"):
            source = subprocess.run(["git", "show", f"{revision}:{path}"], capture_output=True, text=True, check=True).stdout
            (package / Path(path).name).write_text(source)
    sys.path.insert(0, str(package.parent))
    return importlib.import_module(f"{package.name}.model")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("revision")
    p.add_argument("--model")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--n-gen", type=int, default=64)
    p.add_argument("--prompt", type=int, default=4, help="tokens in the cache before decoding starts")
    p.add_argument("--plain", action="store_true", help="also time the plain forward pass (plain.py)")
    args = p.parse_args()
    from llamachat_numpy.model import NumpyModel
    from llamachat_numpy.plain import PlainModel

    checkpoint = open_checkpoint(Path(args.model) if args.model else default_model())
    config, weights = checkpoint.config, checkpoint.weights
    runners = {"working tree": NumpyModel(config, weights), args.revision: model_at(args.revision).NumpyModel(config, weights)}
    if args.plain:
        runners["plain (working tree)"] = PlainModel(config, weights)
    for runner in runners.values():
        decode_speed(runner, 8, config.vocab_size)  # warm-up
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            speeds[name].append(decode_speed(runner, args.n_gen, config.vocab_size, args.prompt))
    medians = {name: statistics.median(s) for name, s in speeds.items()}
    for name, s in speeds.items():
        print(f"{name:>22}: median {medians[name]:6.1f} tok/s  ({', '.join(f'{x:.1f}' for x in s)})")
    first, second = list(medians)[:2]
    print(f"{first} / {second}: {medians[first] / medians[second]:.3f}")
    if args.plain:
        print(f"plain / working tree: {medians['plain (working tree)'] / medians[first]:.3f}")


if __name__ == "__main__":
    main()
