"""Anonymous memory per rank after loading Meta's 2-shard layout: one process against --tp N
(issue 20: "no rank materialises more than its share"). Memory, not time, so load matters little.

    .venv/bin/python benchmarks/tp_memory.py DIR [--write] [--tp 2]

`--write` first writes DIR: a random bfloat16 model in Meta's 2-shard layout with the tests' own
writer (tests/tiny_models.write_meta), dim 1024, 12 layers, 16 heads over 8 kv heads, ffn 2816,
LLaMA-2's 32,000-token vocabulary: 207 M weights, 2 x 207 MB of shards.

Printed per process: RssAnon (/proc/PID/status) and Pss_Anon (smaps_rollup) once loaded, the peak
RssAnon sampled every 20 ms while loading, and the same process's RssAnon with torch imported and
nothing loaded (the floor the weights add to). Weights run float32 on the CPU (what --tp runs).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

SHAPE = dict(dim=1024, n_layers=12, n_heads=16, n_kv_heads=8, ffn=2816, vocab=32000)


def write(directory: Path) -> None:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import TinySpec, write_meta

    from llamachat.protocols import ModelConfig

    spec = TinySpec(
        n_heads=SHAPE["n_heads"], n_kv_heads=SHAPE["n_kv_heads"], dim=SHAPE["dim"], ffn=SHAPE["ffn"], n_layers=SHAPE["n_layers"]
    )
    config = ModelConfig(
        dim=spec.dim,
        n_layers=spec.n_layers,
        n_heads=spec.n_heads,
        n_kv_heads=spec.n_kv_heads,
        head_dim=spec.head_dim,
        ffn_dim=spec.ffn,
        vocab_size=SHAPE["vocab"],
    )
    rng = np.random.default_rng(0)
    weights = {name: (rng.standard_normal(shape, dtype=np.float32) * 0.02) for name, shape in config.weight_shapes().items()}
    write_meta(directory, spec, weights, n_shards=2, dtype=torch.bfloat16)


def anon_kb(pid: int) -> tuple[int, int]:
    """(RssAnon, Pss_Anon) of process `pid`, in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(next(line.split()[1] for line in status.splitlines() if line.startswith("RssAnon:")))
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    pss = int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss_Anon:")))
    return rss, pss


class Peak(threading.Thread):
    """The largest RssAnon seen for each pid while the load runs (pids may be added later)."""

    def __init__(self, pids: list[int]):
        super().__init__(daemon=True)
        self.pids, self.peak, self.running = pids, {}, True

    def run(self) -> None:
        while self.running:
            for pid in list(self.pids):
                try:
                    self.peak[pid] = max(self.peak.get(pid, 0), anon_kb(pid)[0])
                except (OSError, StopIteration):
                    pass
            time.sleep(0.02)


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f} MB"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("directory", type=Path)
    p.add_argument("--write", action="store_true")
    p.add_argument("--tp", type=int, default=1)
    args = p.parse_args()
    if args.write and not (args.directory / "params.json").exists():
        write(args.directory)
    import torch
    from llamachat_torch import tp
    from llamachat_torch.model import TorchModel

    torch.set_num_threads(1)
    floor = anon_kb(os.getpid())[0]
    peak = Peak([os.getpid()])
    peak.start()
    config, weights = tp.open_weights(str(args.directory))
    if args.tp == 1:
        model = TorchModel(config, weights, torch.device("cpu"), torch.float32)
        pids = [os.getpid()]
    else:
        model = tp.start(args.tp, functools.partial(tp.open_weights, str(args.directory)), 1, local=(config, weights))
        pids = [os.getpid()] + [q.pid for q in model.procs]
        peak.pids.extend(pids[1:])
        model.forward([1, 2, 3], model.new_cache(16))  # every rank has loaded once a pass returns
    time.sleep(0.1)
    peak.running = False
    share = sum(t.nbytes for layer in getattr(model, "layers", []) for t in layer.values())
    print(f"{args.directory} --tp {args.tp}: torch imported, nothing loaded: RssAnon {mb(floor)} (rank 0)")
    for rank, pid in enumerate(pids):
        rss, pss = anon_kb(pid)
        print(f"  rank {rank}: RssAnon {mb(rss)}, Pss_Anon {mb(pss)}, peak RssAnon while loading {mb(peak.peak.get(pid, 0))}")
    if share:
        print(f"  (one process's float32 layer weights: {mb(share // 1024)})")
    if args.tp > 1:
        model.close()


if __name__ == "__main__":
    main()
