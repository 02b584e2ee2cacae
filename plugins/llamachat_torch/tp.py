"""Tensor parallelism over torch.distributed: the torch model split Megatron-style over N ranks.

Each rank holds a TorchModel of its share (the same forward pass, not a copy of it): q/k/v and
gate/up cut by output rows (column-parallel), wo and down by input columns (row-parallel, each
followed by one all-reduce, so two a layer), the output head cut along the vocabulary with the
logits gathered on rank 0. KV heads are split as evenly as they go, each with its group of query
heads (uneven is fine: 3 kv heads over 2 ranks is 2 + 1); with fewer kv heads than ranks, each rank
holds one replicated kv head and a share of its group's query heads (as vLLM does). The embedding is
replicated (every rank needs the token's full row before the first layer).

Rank 0 owns the chat and is the Runner (`TPRunner`); the other ranks run `worker_loop`, executing
what rank 0 broadcasts: new_cache, forward, truncate, state (gathered to rank 0 in the common layout
[n_layers, n_kv_heads, tokens, head_dim], so a session saved with --tp 2 resumes with --tp 1),
load_state, drop and shutdown. Processes start through `torch.multiprocessing` (spawn) with a
`TCPStore` rendezvous on 127.0.0.1 (`start`); each worker opens the checkpoint itself (memory-mapped)
and keeps its slices. Not yet: torchrun / several machines, Meta's shards read rank by rank, CUDA/NCCL.
"""

from __future__ import annotations

import atexit
import itertools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from llamachat.interrupts import sigint_held
from llamachat.protocols import CacheLength, ModelConfig, Tensor, as_float32, cache_capacity, checked_state
from llamachat.rope import DIVISOR_WEIGHTS

from .model import TorchModel

# Idle ranks wait in a broadcast while the user types: the collective's own timeout must outlast that.
IDLE_TIMEOUT = timedelta(hours=24)
# A dead rank is found by rank 0 polling its workers this often, not by a collective's timeout: the
# chat ends within POLL_S + the time to stop the others (well under 2 s).
POLL_S = 0.5


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, end) of each of `parts` runs of range(n), as even as they go (the first ones longer)."""
    size, extra = divmod(n, parts)
    bounds = [0] + list(itertools.accumulate(size + (i < extra) for i in range(parts)))
    return list(zip(bounds, bounds[1:]))


@dataclass(frozen=True)
class Shard:
    """What rank `rank` of `world` holds: kv heads [kv0, kv1), query heads [q0, q1), ffn rows, vocab rows."""

    kv: tuple[int, int]
    q: tuple[int, int]
    ffn: tuple[int, int]
    vocab: tuple[int, int]
    owns_kv: bool  # False for a replica of a kv head another rank exports


def shard(config: ModelConfig, world: int, rank: int) -> Shard:
    """Rank `rank`'s share, or ValueError when `world` is more ranks than the query heads allow."""
    H, K = config.n_heads, config.n_kv_heads
    if world > H:
        raise ValueError(f"--tp {world} is more ranks than the model's {H} attention heads (accepted: 1 to {H})")
    G = H // K
    ffn, vocab = split(config.ffn_dim, world)[rank], split(config.vocab_size, world)[rank]
    if K >= world:
        kv = split(K, world)[rank]
        return Shard(kv, (kv[0] * G, kv[1] * G), ffn, vocab, True)
    head = rank * K // world  # the kv head this rank replicates; its ranks share its G query heads
    sharers = [r for r in range(world) if r * K // world == head]
    if len(sharers) > G:
        raise ValueError(f"--tp {world} leaves a rank without a query head ({H} heads over {K} kv heads; accepted: 1 to {K * G})")
    q0, q1 = split(G, len(sharers))[sharers.index(rank)]
    return Shard((head, head + 1), (head * G + q0, head * G + q1), ffn, vocab, rank == sharers[0])


def shard_weights(config: ModelConfig, weights: Mapping[str, Tensor], s: Shard) -> tuple[ModelConfig, dict[str, np.ndarray]]:
    """The sub-model a rank runs (its heads, ffn rows and vocabulary rows) and its weights."""
    Dh = config.head_dim
    rows = {"attn_q": s.q, "attn_k": s.kv, "attn_v": s.kv}
    sub: dict[str, np.ndarray] = {}
    for name in weights:
        if name.startswith("blk."):
            kind = name.split(".", 2)[2]
            base = kind.removesuffix(".bias")
            w = weights[name]
            if base in rows:
                a, b = rows[base]
                sub[name] = as_float32(w)[a * Dh : b * Dh]
            elif kind in ("ffn_gate", "ffn_up"):
                sub[name] = as_float32(w)[s.ffn[0] : s.ffn[1]]
            elif kind == "attn_output":
                sub[name] = as_float32(w)[:, s.q[0] * Dh : s.q[1] * Dh]
            elif kind == "ffn_down":
                sub[name] = as_float32(w)[:, s.ffn[0] : s.ffn[1]]
            else:
                sub[name] = w  # norms: replicated
    head = weights["token_embd" if config.tied_embeddings else "output"]
    sub["output"] = as_float32(head)[s.vocab[0] : s.vocab[1]]
    sub["token_embd"] = weights["token_embd"]
    sub["output_norm"] = weights["output_norm"]
    sub |= {name: weights[name] for name in DIVISOR_WEIGHTS if name in weights}  # RoPE divisors: replicated
    local = replace(
        config,
        n_heads=s.q[1] - s.q[0],
        n_kv_heads=s.kv[1] - s.kv[0],
        ffn_dim=s.ffn[1] - s.ffn[0],
        vocab_size=s.vocab[1] - s.vocab[0],
        tied_embeddings=False,  # the head is a vocabulary slice; the embedding stays whole
    )
    return local, sub


class AllReduced:
    """A row-parallel Linear: this rank's partial product, summed over every rank (TorchModel.linear
    calls a non-tensor weight, so the forward pass itself is shared with one process)."""

    def __init__(self, model: TorchModel, w):
        self.model, self.w = model, w
        self.nbytes = w.nbytes

    seconds = 0.0  # time in all-reduces on this rank (benchmarks/tp_decode.py reads it)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model.linear(x, self.w).contiguous()
        t = time.perf_counter()
        dist.all_reduce(y)
        AllReduced.seconds += time.perf_counter() - t
        return y


def local_model(config: ModelConfig, weights: Mapping[str, Tensor], world: int, rank: int, **options) -> tuple[TorchModel, Shard]:
    s = shard(config, world, rank)
    local, sub = shard_weights(config, weights, s)
    model = TorchModel(local, sub, options.get("device", torch.device("cpu")), options.get("dtype", torch.float32))
    for layer in model.layers:
        layer["wo"] = AllReduced(model, layer["wo"])
        layer["wdown"] = AllReduced(model, layer["wdown"])
    return model, s


# -- the command channel: rank 0 broadcasts, every rank executes ------------------------------------


def _broadcast(command: tuple | None = None) -> tuple:
    box = [command]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Executor:
    """What every rank does with a command, rank 0 included: its own caches, by id."""

    def __init__(self, config: ModelConfig, model: TorchModel, s: Shard, world: int):
        self.config, self.model, self.shard, self.world = config, model, s, world
        self.caches: dict[int, object] = {}
        self.vocab = split(config.vocab_size, world)
        self.kv = [shard(config, world, r) for r in range(world)]

    def run(self, op: str, cid: int, *args):
        return getattr(self, "op_" + op)(cid, *args)

    def op_new_cache(self, cid: int, capacity: int) -> None:
        self.caches[cid] = self.model.new_cache(capacity)

    def op_drop(self, cid: int) -> None:
        self.caches.pop(cid, None)

    def op_truncate(self, cid: int, n: int) -> None:
        self.caches[cid].truncate(n)

    def op_forward(self, cid: int, ids: list[int], all_logits: bool):
        logits = self.model.forward(ids, self.caches[cid], all_logits=True)  # [T, V_r]
        return self._gather_columns(torch.from_numpy(np.ascontiguousarray(logits)), self.vocab)

    def _gather_columns(self, part: torch.Tensor, bounds: list[tuple[int, int]]):
        """Rank 0 gets the ranks' column blocks side by side (gloo gathers equal sizes: pad to the widest)."""
        width = max(b - a for a, b in bounds)
        padded = torch.zeros(part.shape[0], width, *part.shape[2:], dtype=part.dtype)
        padded[:, : part.shape[1]] = part
        rank = dist.get_rank()
        out = [torch.empty_like(padded) for _ in bounds] if rank == 0 else None
        dist.gather(padded, out, dst=0)
        if rank:
            return None
        return torch.cat([o[:, : b - a] for o, (a, b) in zip(out, bounds)], dim=1).numpy()

    def op_state(self, cid: int):
        """k and v [n_layers, n_kv_heads, n, Dh] on rank 0; replicated kv heads counted once."""
        cache = self.caches[cid]
        n = len(cache)
        result = []
        for t in (cache.k, cache.v):
            mine = t[:, :, :n].float().transpose(0, 1).contiguous()  # [K_r, L, n, Dh]: heads first to gather
            width = max(s.kv[1] - s.kv[0] for s in self.kv)
            padded = torch.zeros(width, *mine.shape[1:])
            padded[: mine.shape[0]] = mine
            out = [torch.empty_like(padded) for _ in self.kv] if dist.get_rank() == 0 else None
            dist.gather(padded, out, dst=0)
            if out is not None:
                heads = [o[: s.kv[1] - s.kv[0]] for o, s in zip(out, self.kv) if s.owns_kv]
                result.append(torch.cat(heads).transpose(0, 1).numpy())
        return {"k": result[0], "v": result[1]} if result else None

    def op_load_state(self, cid: int, state: dict):
        k, v = state["k"], state["v"]
        a, b = self.shard.kv
        self.caches[cid].load_state({"k": k[:, a:b], "v": v[:, a:b]})


def worker_loop(executor: Executor) -> None:
    """A rank other than 0: execute rank 0's commands until it says shutdown. A failed collective
    means rank 0 is gone (it prints the one line): leave quietly."""
    while True:
        try:
            command = _broadcast()
            if command[0] == "shutdown":
                return
            executor.run(*command)
        except Exception:  # noqa: BLE001 - gloo's error when a peer's socket closes
            os._exit(2)


class TPCache(CacheLength):
    """Rank 0's handle on a cache spread over the ranks: the length here, the tensors on each rank."""

    def __init__(self, runner: TPRunner, cid: int, capacity: int):
        self.runner, self.cid, self.capacity, self.length = runner, cid, capacity, 0

    def truncate(self, n: int) -> None:
        super().truncate(n)
        self.runner.command("truncate", self.cid, n)

    def state(self) -> dict[str, np.ndarray]:
        return self.runner.command("state", self.cid)

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        k, v = checked_state(state, self.runner.config, self.capacity)
        self.runner.command("load_state", self.cid, {"k": k, "v": v})
        self.length = k.shape[2]

    def __del__(self) -> None:
        # a finalizer may run inside another command's collectives: the drop waits for the next command
        self.runner.dropped.append(self.cid)


class TPRunner:
    """A Runner (llamachat.protocols) on rank 0 of a tensor-parallel group."""

    default_lookup = TorchModel.default_lookup

    def __init__(self, config: ModelConfig, executor: Executor, on_close: Callable[[], None] = lambda: None):
        self.config, self.executor, self.on_close = config, executor, on_close
        self.world = executor.world
        self.dtype = executor.model.dtype
        self.weight_bytes = executor.model.weight_bytes  # rank 0's share: the decode roofline per rank
        self.closed = False
        self._ids = itertools.count()
        self.dropped: list[int] = []

    def command(self, op: str, cid: int, *args):
        while self.dropped:
            self._run("drop", self.dropped.pop())
        return self._run(op, cid, *args)

    def _run(self, op: str, cid: int, *args):
        with sigint_held():
            try:
                _broadcast((op, cid, *args))
                return self.executor.run(op, cid, *args)
            except RuntimeError:  # a peer's socket closed: the watcher names the rank and ends the chat
                time.sleep(4 * POLL_S)
                raise

    def new_cache(self, capacity: int | None = None) -> TPCache:
        capacity = cache_capacity(self.config, capacity)
        cid = next(self._ids)
        self.command("new_cache", cid, capacity)
        return TPCache(self, cid, capacity)

    def forward(self, ids: Sequence[int], cache: TPCache, all_logits: bool = False) -> np.ndarray:
        with cache.extend(len(ids)):
            logits = self.command("forward", cache.cid, list(ids), all_logits)
        return logits if all_logits else logits[-1]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            _broadcast(("shutdown",))
            self.on_close()


# -- starting the group ------------------------------------------------------------------------------

WeightsFactory = Callable[[], tuple[ModelConfig, Mapping[str, Tensor]]]


def join(rank: int, world: int, host: str, port: int, store: dist.Store | None = None) -> None:
    """Join the gloo group through the TCPStore at host:port (rank 0 hosts it)."""
    store = store or dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=IDLE_TIMEOUT)


def _worker(rank: int, world: int, port: int, factory: WeightsFactory, threads: int, config: ModelConfig) -> None:
    # Ctrl-C reaches every process of the terminal's group: only rank 0 acts on it, between passes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    join(rank, world, "127.0.0.1", port)
    _, weights = factory()  # rank 0's config: the chat may have changed it (the context)
    model, s = local_model(config, weights, world, rank)
    worker_loop(Executor(config, model, s, world))
    dist.destroy_process_group()


def open_weights(path: str) -> tuple[ModelConfig, Mapping[str, Tensor]]:
    """A rank's own view of the checkpoint (memory-mapped: it materialises only the slices it keeps)."""
    from llamachat.checkpoints import open_checkpoint

    checkpoint = open_checkpoint(path)
    return checkpoint.config, checkpoint.weights


def start(world: int, factory: WeightsFactory, threads: int = 1, local: tuple | None = None) -> TPRunner:
    """Rank 0 here, ranks 1..world-1 spawned (torch.multiprocessing, TCPStore on 127.0.0.1).
    `factory` (picklable) gives each rank the config and the weights it slices its share from."""
    import torch.multiprocessing as mp

    config, weights = local or factory()
    for r in range(world):
        shard(config, world, r)  # a world too large for the heads fails here, before anything starts
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, world, store.port, factory, threads, config), daemon=True) for r in range(1, world)]
    for p in procs:
        p.start()
    join(0, world, "127.0.0.1", store.port, store=store)
    model, s = local_model(config, weights, world, 0)

    def stop() -> None:
        for p in procs:
            p.join(timeout=30)
        dist.destroy_process_group()

    runner = TPRunner(config, Executor(config, model, s, world), on_close=stop)
    runner.procs = procs
    threading.Thread(target=_watch, args=(runner, procs), daemon=True, name="tp-watch").start()
    atexit.register(runner.close)  # the chat lets the model go at exit: the workers leave their loop
    return runner


def _watch(runner: TPRunner, procs: list) -> None:
    """Rank 0's watch over its workers: a rank that stops ends the chat on every rank, in one line."""
    while not runner.closed:
        for rank, p in enumerate(procs, 1):
            if not p.is_alive() and not runner.closed:
                print(
                    f"llamachat: error: rank {rank} of --tp {runner.world} stopped (exit code {p.exitcode}); the chat cannot go on",
                    file=sys.stderr,
                    flush=True,
                )
                for q in procs:
                    if q.is_alive():
                        q.kill()
                os._exit(2)  # the main thread may be inside a collective that never returns
        time.sleep(POLL_S)
