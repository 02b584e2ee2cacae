"""Tensor parallelism over torch.distributed: the torch model split Megatron-style over N ranks.

Each rank holds a TorchModel of its share (the same forward pass, not a copy of it): q/k/v and
gate/up cut by output rows (column-parallel), wo and down by input columns (row-parallel, each
followed by one all-reduce, so two a layer), the output head cut along the vocabulary with the
logits gathered on rank 0. KV heads are split as evenly as they go, each with its group of query
heads (uneven is fine: 3 kv heads over 2 ranks is 2 + 1); with fewer kv heads than ranks, each rank
holds one replicated kv head and a share of its group's query heads (as vLLM does). The embedding is
split as the checkpoint splits it: LLaMA-1/2's shards along the dimension (each rank looks up its
columns, an all-gather joins them), Llama-3's and every other format along the vocabulary (each rank
looks up the ids it holds, an all-reduce sums them; a tied model's are its head's rows), so no rank
holds the whole table. Every weight is sliced before it is converted to float32, and from Meta's
shards a rank whose split is the files' reads only its own `consolidated.0R.pth`
(llamachat/checkpoints/sharded.py).

Rank 0 owns the chat and is the Runner (`TPRunner`); the other ranks run `worker_loop`, executing
what rank 0 broadcasts: new_cache, forward, truncate, state (gathered to rank 0 in the common layout
[n_layers, n_kv_heads, tokens, head_dim], so a session saved with --tp 2 resumes with --tp 1),
load_state, drop and shutdown. Processes start in one of two ways: `llamachat --tp N` spawns ranks
1..N-1 through `torch.multiprocessing` with a `TCPStore` rendezvous on 127.0.0.1 (`start`), or a
launcher (torchrun, over several machines) starts every rank and they meet through torch's env://
rendezvous (`start_launched` on rank 0, `serve_launched` on the others). Both then shake hands the
same way (`handshake`); each worker opens the checkpoint itself (memory-mapped) and keeps its slices.
On CUDA each rank runs on cuda:LOCAL_RANK and the forward pass's collectives go over an NCCL group,
the commands over gloo (placement.py says why); on the CPU everything goes over the one gloo group.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from llamachat.checkpoints.sharded import weight_part
from llamachat.costs import Shard, shard, split  # the shares' arithmetic: info --tp counts the same ones
from llamachat.errors import LlamachatError
from llamachat.interrupts import sigint_held
from llamachat.protocols import CacheLength, ModelConfig, Tensor, as_float32, cache_capacity, checked_state
from llamachat.ranks import Launch
from llamachat.rope import DIVISOR_WEIGHTS
from llamachat.version import __version__

from .model import TorchModel
from .placement import CPU, Placement, rank_device, tensor_backend
from .sliced import SlicedLinear

# Idle ranks wait in a broadcast while the user types: the collective's own timeout must outlast that.
IDLE_TIMEOUT = timedelta(hours=24)
# The NCCL group's timeout, torch's default for NCCL: its collectives run only inside a pass every rank
# is in (the commands that start one go over gloo), so they wait for the slowest rank's share of one
# layer, never for the user. Past it the watchdog ends the process (TORCH_NCCL_ASYNC_ERROR_HANDLING's
# default, 3: "tearing down process", torch's ProcessGroupNCCL environment variables page).
NCCL_TIMEOUT = timedelta(minutes=10)
# A dead rank is found by rank 0 polling its workers this often, not by a collective's timeout: the
# chat ends within POLL_S + the time to stop the others (well under 2 s).
POLL_S = 0.5
# A rank whose start failed waits this long before its exit, so that rank 0 has printed the reason.
FAILED_START_GRACE_S = 3.0


def _part(weights: Mapping[str, Tensor], name: str, rows=None, cols=None, replica: int = 0) -> np.ndarray:
    """Rows [a, b) and/or columns [a, b) of weight `name` in float32: sliced first, so only this rank's
    share is converted, and from Meta's shards only the files it overlaps are read (sharded.py)."""
    key = (slice(*rows) if rows else slice(None), slice(*cols) if cols else slice(None))
    return as_float32(weight_part(weights, name, key[: 1 if cols is None else 2], replica))


def embedding_axis(config: ModelConfig, weights: Mapping[str, Tensor]) -> int:
    """How the ranks split the embedding: as the checkpoint's shards do (LLaMA-1/2's along the
    dimension, 1; Llama-3's along the vocabulary, 0), else along the vocabulary, which a tied model
    shares with its head's rows."""
    split_axis = getattr(weights, "split_axis", lambda name: None)("token_embd")
    return 1 if split_axis == 1 and not config.tied_embeddings else 0


def shard_weights(
    config: ModelConfig, weights: Mapping[str, Tensor], s: Shard, rank: int = 0, world: int = 1
) -> tuple[ModelConfig, Mapping[str, np.ndarray]]:
    """The sub-model a rank runs (its heads, ffn rows, vocabulary rows and embedding share) and its
    weights, each sliced before it is converted, when it is read (`Slices`). `rank` also picks whose
    copy of a norm it reads."""
    Dh = config.head_dim
    rows = {"attn_q": s.q, "attn_k": s.kv, "attn_v": s.kv}
    sub: dict[str, Callable[[], np.ndarray]] = {}
    for name in weights:
        if name.startswith("blk."):
            kind = name.split(".", 2)[2]
            base = kind.removesuffix(".bias")
            if base in rows:
                a, b = rows[base]
                sub[name] = partial(_part, weights, name, rows=(a * Dh, b * Dh))
            elif kind in ("ffn_gate", "ffn_up"):
                sub[name] = partial(_part, weights, name, rows=s.ffn)
            elif kind == "attn_output":
                sub[name] = partial(_part, weights, name, cols=(s.q[0] * Dh, s.q[1] * Dh))
            elif kind == "ffn_down":
                sub[name] = partial(_part, weights, name, cols=s.ffn)
            else:
                sub[name] = partial(_part, weights, name, replica=rank)  # norms: replicated
    if config.tied_embeddings:  # the embedding is the head's vocabulary rows (see local_model)
        sub["token_embd"] = partial(_part, weights, "token_embd", rows=s.vocab)
    else:
        sub["output"] = partial(_part, weights, "output", rows=s.vocab)
        if embedding_axis(config, weights) == 1:
            sub["token_embd"] = partial(_part, weights, "token_embd", cols=split(config.dim, world)[rank])
        else:
            sub["token_embd"] = partial(_part, weights, "token_embd", rows=s.vocab)
    sub["output_norm"] = partial(_part, weights, "output_norm", replica=rank)
    for name in DIVISOR_WEIGHTS:  # RoPE divisors (Llama-3.1, longrope): replicated
        if name in weights:
            sub[name] = partial(weights.__getitem__, name)
    local = replace(
        config,
        n_heads=s.q[1] - s.q[0],
        n_kv_heads=s.kv[1] - s.kv[0],
        ffn_dim=s.ffn[1] - s.ffn[0],
        vocab_size=s.vocab[1] - s.vocab[0],
    )
    return local, Slices(sub)


class Slices(Mapping[str, np.ndarray]):
    """A rank's weights, each cut and widened to float32 when read and not kept: TorchModel copies each
    into its own layout, so one matrix's float32 staging copy is alive at a time, not the whole share's
    (on the 207 M-weight shards of docs/benchmarks.md, a rank peaked at 888 MB with them all kept)."""

    def __init__(self, cuts: Mapping[str, Callable[[], np.ndarray]]):
        self.cuts = cuts

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cuts[name]()

    def __contains__(self, name: object) -> bool:
        return name in self.cuts

    def __iter__(self):
        return iter(self.cuts)

    def __len__(self) -> int:
        return len(self.cuts)


class VocabParallelEmbedding:
    """Rows [a, b) of the embedding on this rank (fairscale's VocabParallelEmbedding): each rank looks
    up the ids it holds, zeros the others, and the all-reduce sums the one non-zero row of each."""

    def __init__(self, lookup: Callable[[torch.Tensor], torch.Tensor], bounds: tuple[int, int], group=None):
        self.lookup, (self.a, self.b), self.group = lookup, bounds, group

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.a
        inside = (local >= 0) & (local < self.b - self.a)
        x = self.lookup(local.clamp(0, self.b - self.a - 1))
        x = torch.where(inside[:, None], x, x.new_zeros(())).contiguous()
        dist.all_reduce(x, group=self.group)
        return x


class ParallelEmbedding:
    """Columns [a, b) of the embedding on this rank (fairscale's ParallelEmbedding, LLaMA-1/2's split):
    each rank looks up its columns of every id and the all-gather puts them side by side."""

    def __init__(self, table: torch.Tensor, bounds: list[tuple[int, int]], group=None):
        self.table, self.bounds, self.group = table, bounds, group

    def __getitem__(self, ids: torch.Tensor) -> torch.Tensor:
        mine = self.table[ids]
        width = max(b - a for a, b in self.bounds)  # gloo and NCCL gather equal sizes: pad to the widest
        padded = torch.zeros(mine.shape[0], width, dtype=mine.dtype, device=mine.device)
        padded[:, : mine.shape[1]] = mine
        out = [torch.empty_like(padded) for _ in self.bounds]
        dist.all_gather(out, padded, group=self.group)
        return torch.cat([o[:, : b - a] for o, (a, b) in zip(out, self.bounds)], dim=1)


class AllReduced:
    """A row-parallel Linear: this rank's partial product, summed over every rank (TorchModel.linear
    calls a non-tensor weight, so the forward pass itself is shared with one process)."""

    def __init__(self, model: TorchModel, w, group=None):
        self.model, self.w, self.group = model, w, group
        self.nbytes = w.nbytes

    # time in all-reduces on this rank (benchmarks/tp_decode.py reads it); on CUDA only the time to
    # queue them, since an NCCL collective returns before the GPU has run it
    seconds = 0.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model.linear(x, self.w).contiguous()
        t = time.perf_counter()
        dist.all_reduce(y, group=self.group)
        AllReduced.seconds += time.perf_counter() - t
        return y


def local_model(
    config: ModelConfig, weights: Mapping[str, Tensor], world: int, rank: int, placement: Placement = CPU
) -> tuple[TorchModel, Shard]:
    s = shard(config, world, rank)
    local, sub = shard_weights(config, weights, s, rank, world)
    model = TorchModel(local, sub, placement.device, placement.dtype)
    for layer in model.layers:
        layer["wo"] = AllReduced(model, layer["wo"], placement.group)
        layer["wdown"] = AllReduced(model, layer["wdown"], placement.group)
    model.embedding = _embedding(model, config, weights, world, s, placement.group)
    _return_freed_memory()
    return model, s


def _return_freed_memory() -> None:
    """Building the model frees float32 staging copies (a slice widened from bf16, then fused with its
    q/k/v or gate/up neighbours, then laid out per thread) that glibc keeps in its heap: 280 MB of a
    rank's 840 MB on the 207 M-weight shards of docs/benchmarks.md. malloc_trim hands them back (a
    no-op where the C library is not glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _embedding(model: TorchModel, config: ModelConfig, weights: Mapping[str, Tensor], world: int, s: Shard, group=None):
    """The rank's share of the embedding behind the lookup TorchModel.embed does (`embedding[ids]`)."""
    if embedding_axis(config, weights) == 1:
        return ParallelEmbedding(model.embedding, split(config.dim, world), group)
    if model.embedding is not None:
        return VocabParallelEmbedding(model.embedding.__getitem__, s.vocab, group)
    head = model.head  # tied: the head's own rows, one copy
    return VocabParallelEmbedding(head.rows if isinstance(head, SlicedLinear) else head.__getitem__, s.vocab, group)


# -- the command channel: rank 0 broadcasts, every rank executes ------------------------------------


def _broadcast(command: tuple | None = None) -> tuple:
    box = [command]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class Executor:
    """What every rank does with a command, rank 0 included: its own caches, by id."""

    def __init__(self, config: ModelConfig, model: TorchModel, s: Shard, world: int, group=None):
        self.config, self.model, self.shard, self.world = config, model, s, world
        self.group = group  # the forward pass's (placement.py); the cache states go over the default one
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

    @torch.inference_mode()
    def op_forward(self, cid: int, ids: list[int], all_logits: bool):
        # [T, V_r] on the rank's device, or [1, V_r]: a prompt's pass gathers its last row only
        logits = self.model.device_logits(ids, self.caches[cid], all_logits=all_logits)
        return self._gather_columns(logits, self.vocab)

    def _gather_columns(self, part: torch.Tensor, bounds: list[tuple[int, int]]):
        """Rank 0 gets the ranks' column blocks side by side, on the host (gloo and NCCL gather equal
        sizes: pad to the widest)."""
        width = max(b - a for a, b in bounds)
        padded = torch.zeros(part.shape[0], width, *part.shape[2:], dtype=part.dtype, device=part.device)
        padded[:, : part.shape[1]] = part
        rank = dist.get_rank()
        out = [torch.empty_like(padded) for _ in bounds] if rank == 0 else None
        dist.gather(padded, out, dst=0, group=self.group)
        if rank:
            return None
        return torch.cat([o[:, : b - a] for o, (a, b) in zip(out, bounds)], dim=1).cpu().numpy()

    def op_state(self, cid: int):
        """k and v [n_layers, n_kv_heads, n, Dh] on rank 0; replicated kv heads counted once."""
        cache = self.caches[cid]
        n = len(cache)
        result = []
        for t in (cache.k, cache.v):
            mine = t[:, :, :n].float().transpose(0, 1).contiguous().cpu()  # [K_r, L, n, Dh]: heads first to gather
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

    def __init__(
        self, config: ModelConfig, executor: Executor, on_close: Callable[[], None] = lambda: None, closing: threading.Event | None = None
    ):
        self.config, self.executor, self.on_close = config, executor, on_close
        self.closing = closing or threading.Event()  # set before the shutdown: a watch lets the ranks go
        self.world = executor.world
        self.dtype = executor.model.dtype
        self.weight_bytes = executor.model.weight_bytes  # rank 0's share: the decode roofline per rank
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
                _lost_a_rank(self.world)  # no watcher (a launcher's ranks), or it missed it

    @property
    def closed(self) -> bool:
        return self.closing.is_set()

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
            self.closing.set()
            _broadcast(("shutdown",))
            _leave_tensor_group(self.executor.group)
            self.on_close()


def _leave_tensor_group(group) -> None:
    """Every rank destroys the NCCL group as soon as the shutdown is out, before rank 0 waits for its
    workers to exit: since torch 2.6 the destroy flushes with ncclCommFinalize and waits for the other
    ranks to destroy theirs too (pytorch/pytorch#141510), so rank 0 waiting first would stall the exit
    until its join timed out. On the CPU there is none (the default group is the tensor group)."""
    if group is not None:
        dist.destroy_process_group(group)


# -- starting the group ------------------------------------------------------------------------------
#
# Two ways in, one handshake. `start` (--tp N on one machine) hosts a TCPStore on 127.0.0.1 and spawns
# ranks 1..N-1 with torch.multiprocessing; under torchrun (or any env:// launcher) every process is
# started by the launcher, rank 0 calls `start_launched` and the others `serve_launched`, meeting
# through torch's own env:// rendezvous. Then, on every rank: the llamachat versions are compared,
# rank 0 sends what to build (`Order`: its config, the weights factory, the thread count, the device
# kind and dtype), on CUDA each rank checks it has its GPU and every rank joins the NCCL group, each
# rank builds its share, and each says whether that worked; on any failure rank 0 raises one line
# naming the rank and every rank leaves with exit code 2.

WeightsFactory = Callable[[], tuple[ModelConfig, Mapping[str, Tensor]]]
Built = tuple[TorchModel, Shard]


@dataclass(frozen=True)
class Order:
    """What rank 0 tells every rank to build (broadcast once the versions agree)."""

    config: ModelConfig
    factory: WeightsFactory
    threads: int
    device: str = "cpu"  # "cpu", or "cuda": each rank on cuda:<its local rank>
    dtype: str = "float32"


def join(rank: int, world: int, host: str, port: int, store: dist.Store | None = None) -> None:
    """Join the gloo group through the TCPStore at host:port (rank 0 hosts it)."""
    store = store or dist.TCPStore(host, port, world, is_master=rank == 0, timeout=timedelta(seconds=60))
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=IDLE_TIMEOUT)


def join_launched(launch: Launch) -> None:
    """Join the group a launcher set up (env://: under torchrun its agent hosts the store). A rank that
    does not come within the rendezvous timeout is one line, not a hang: gloo's own connect would wait
    as long as the collective timeout, a day."""
    timeout = timedelta(seconds=launch.timeout_s)
    where = f"at {launch.address} within {launch.timeout_s:g} s (LLAMACHAT_RENDEZVOUS_TIMEOUT)"
    try:
        if not launch.hosts_store:
            _wait_for_listener(launch.host, launch.port, time.monotonic() + launch.timeout_s)
        store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # torchrun's agent store outlives a restart
        _arrive(dist.PrefixStore(f"llamachat/{attempt}/", store), launch.world, launch.timeout_s)
    except (RuntimeError, ValueError, TimeoutError) as e:  # torch's DistStoreError and DistNetworkError are RuntimeErrors
        raise LlamachatError(f"rank {launch.rank} of {launch.world} found no group {where}: {_first_line(e)}") from None
    dist.init_process_group("gloo", store=store, rank=launch.rank, world_size=launch.world, timeout=IDLE_TIMEOUT)


def _wait_for_listener(host: str, port: int, deadline: float) -> None:
    """Until something listens at host:port. torch's store client would wait too, but it logs each
    failed try with a C++ stack trace: this keeps a rank that finds no group to its one line."""
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError as e:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens ({e.strerror or e})") from None
            time.sleep(0.1)


def _arrive(store: dist.Store, world: int, timeout_s: float) -> None:
    """Count this rank in and wait until all `world` have been counted."""
    arrived, deadline = store.add("arrived", 1), time.monotonic() + timeout_s
    while arrived < world:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{arrived} of {world} ranks arrived")
        time.sleep(0.05)
        arrived = store.add("arrived", 0)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _agree(status: str | None) -> None:
    """Every rank's status (None: fine), seen by every rank. Rank 0 raises one line for the first
    problem; the others leave with exit code 2 (rank 0 prints the line)."""
    statuses: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(statuses, status)
    problems = [(rank, s) for rank, s in enumerate(statuses) if s]
    if not problems:
        return
    here = dist.get_rank()
    dist.destroy_process_group()
    if here == 0:
        rank, problem = problems[0]
        raise LlamachatError(f"rank {rank} of {len(statuses)}: {problem}")
    # rank 0 prints the line: let it exit first, since a launcher that sees this rank fail stops the
    # others at once (torchrun does), and rank 0 stopped before printing would leave no line at all
    time.sleep(FAILED_START_GRACE_S)
    sys.exit(2)


Build = Callable[[Order, Placement], Built]


def handshake(local_rank: int, order: Order | None = None, build: Build | None = None) -> tuple[Order, Placement, Built]:
    """The start every rank goes through once it has joined. Rank 0 passes `order` and `build` for
    its own share; the others receive the order and build from it. `local_rank` picks the GPU."""
    versions: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(versions, __version__)  # before anything else is unpickled: a plain string
    mine = versions[dist.get_rank()]
    _agree(None if mine == versions[0] else f"runs llamachat {mine}, rank 0 runs {versions[0]}: install the same version on every machine")
    order = _broadcast(order)
    placement = _place(order, local_rank)
    built, problem = None, None
    try:
        built = (build or _build_from)(order, placement)
    except (LlamachatError, ValueError, OSError, MemoryError, torch.OutOfMemoryError) as e:  # the last: a GPU's
        problem = f"could not build its share: {e}"
    _agree(problem)
    return order, placement, built


def _place(order: Order, local_rank: int) -> Placement:
    """This rank's device, dtype and tensor group. On CUDA every rank first says whether its GPU is
    there (a rank without one could not join the NCCL group, and the others would wait in it), then
    all create the NCCL group, bound to the rank's GPU so that NCCL connects now rather than at the
    first pass (new_group's `device_id`, torch 2.13): a failure is then a start-up error. On the CPU
    no collective at all: the default group carries everything, as it did before CUDA."""
    dtype = getattr(torch, order.dtype)
    backend = tensor_backend(order.device)
    if backend is None:
        return Placement(torch.device(order.device), dtype)
    device, problem = None, None
    try:
        device = rank_device(order.device, local_rank)
    except ValueError as e:
        problem = str(e)
    _agree(problem)
    torch.cuda.set_device(device)  # NCCL and the rank's allocations on its own GPU, never cuda:0
    try:
        group = dist.new_group(backend=backend, timeout=NCCL_TIMEOUT, device_id=device)
    except (RuntimeError, ValueError) as e:  # torch's DistBackendError is a RuntimeError
        _failed_alone(f"could not start {backend} on {device}: {_first_line(e)}")
    return Placement(device, dtype, group)


def _failed_alone(problem: str) -> NoReturn:
    """A start-up failure the other ranks cannot be told of (the group that would tell them is what
    failed): rank 0 raises its line; another rank prints its own, since rank 0 will not."""
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        raise LlamachatError(f"rank 0 of {world}: {problem}")
    print(f"llamachat: error: rank {rank} of {world}: {problem}", file=sys.stderr, flush=True)
    os._exit(2)


def _build_from(order: Order, placement: Placement) -> Built:
    """A worker's share: its own view of the checkpoint (memory-mapped: it materialises only the
    slices it keeps), with rank 0's config (the chat may have changed it: the context)."""
    torch.set_num_threads(order.threads)
    _, weights = order.factory()
    return local_model(order.config, weights, dist.get_world_size(), dist.get_rank(), placement)


def serve(world: int, local_rank: int) -> None:
    """A rank other than 0, joined: the handshake, then rank 0's commands until shutdown."""
    order, placement, (model, s) = handshake(local_rank)
    worker_loop(Executor(order.config, model, s, world, placement.group))
    _leave_tensor_group(placement.group)
    dist.destroy_process_group()


def _worker(rank: int, world: int, port: int) -> None:
    # Ctrl-C reaches every process of the terminal's group: only rank 0 acts on it, between passes
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    join(rank, world, "127.0.0.1", port)
    serve(world, local_rank=rank)  # a failed handshake exits 2 here: rank 0 prints the line


def serve_launched(launch: Launch) -> int:
    """A launched rank other than 0 (torchrun): it never reads the terminal, prints nothing rank 0
    prints, and leaves when rank 0 shuts the group down. Ctrl-C is the launcher's to handle."""
    # torchrun hands the user's Ctrl-C to every rank as it ends the job: leave without a traceback
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    join_launched(launch)
    serve(launch.world, launch.local_rank)
    return 0


def open_weights(path: str) -> tuple[ModelConfig, Mapping[str, Tensor]]:
    """A rank's own view of the checkpoint (memory-mapped: it materialises only the slices it keeps)."""
    from llamachat.checkpoints import open_checkpoint

    checkpoint = open_checkpoint(path)
    return checkpoint.config, checkpoint.weights


def _start_rank_0(
    world: int, order: Order, weights: Mapping[str, Tensor], local_rank: int, on_close: Callable[[], None], closing: threading.Event
) -> TPRunner:
    def build(order: Order, placement: Placement) -> Built:
        return local_model(order.config, weights, world, 0, placement)

    order, placement, (model, s) = handshake(local_rank, order, build)
    runner = TPRunner(order.config, Executor(order.config, model, s, world, placement.group), on_close=on_close, closing=closing)
    atexit.register(runner.close)  # the chat lets the model go at exit: the workers leave their loop
    return runner


def _check_world(world: int, config: ModelConfig) -> None:
    for r in range(world):
        shard(config, world, r)  # a world too large for the heads fails here, before anything starts


def start(
    world: int, factory: WeightsFactory, threads: int = 1, local: tuple | None = None, device: str = "cpu", dtype: str = "float32"
) -> TPRunner:
    """Rank 0 here, ranks 1..world-1 spawned (torch.multiprocessing, TCPStore on 127.0.0.1), rank r
    on `device` ("cpu", or "cuda": cuda:r). `factory` (picklable) gives each rank the config and the
    weights it slices its share from."""
    import torch.multiprocessing as mp

    local = local or factory()
    _check_world(world, local[0])
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(r, world, store.port), daemon=True) for r in range(1, world)]
    for p in procs:
        p.start()
    closing = threading.Event()  # set once rank 0 knows why its workers will exit: the watch lets them
    threading.Thread(target=_watch, args=(world, procs, closing), daemon=True, name="tp-watch").start()
    join(0, world, "127.0.0.1", store.port, store=store)

    def stop() -> None:
        for p in procs:
            p.join(timeout=30)
        dist.destroy_process_group()

    order = Order(local[0], factory, threads, device, dtype)
    try:
        runner = _start_rank_0(world, order, local[1], 0, on_close=stop, closing=closing)
    except LlamachatError:  # the handshake failed: every worker leaves with exit code 2
        closing.set()
        raise
    runner.procs = procs
    return runner


def start_launched(
    launch: Launch, factory: WeightsFactory, threads: int = 1, local: tuple | None = None, device: str = "cpu", dtype: str = "float32"
) -> TPRunner:
    """Rank 0 of a launched group (torchrun): the others are the launcher's; a rank that dies is the
    launcher's to notice, and it ends the job (torchrun stops every rank and prints its report)."""
    local = local or factory()
    _check_world(launch.world, local[0])
    join_launched(launch)
    order = Order(local[0], factory, threads, device, dtype)
    return _start_rank_0(launch.world, order, local[1], launch.local_rank, on_close=dist.destroy_process_group, closing=threading.Event())


def _lost_a_rank(world: int) -> None:
    """A collective failed because a peer's connection closed (gloo's message is a paragraph: the
    one line says what it means). Under torchrun, Ctrl-C lands here: torchrun ends every rank on it."""
    print(
        f"llamachat: error: a rank of {world} left mid-command (its connection closed); the chat cannot go on", file=sys.stderr, flush=True
    )
    os._exit(2)  # the group is broken: no collective (the shutdown at exit included) can complete


def _watch(world: int, procs: list, closing: threading.Event) -> None:
    """Rank 0's watch over its workers: a rank that stops ends the chat on every rank, in one line."""
    while not closing.is_set():
        for rank, p in enumerate(procs, 1):
            if not p.is_alive() and not closing.is_set():
                print(
                    f"llamachat: error: rank {rank} of --tp {world} stopped (exit code {p.exitcode}); the chat cannot go on",
                    file=sys.stderr,
                    flush=True,
                )
                for q in procs:
                    if q.is_alive():
                        q.kill()
                os._exit(2)  # the main thread may be inside a collective that never returns
        time.sleep(POLL_S)
