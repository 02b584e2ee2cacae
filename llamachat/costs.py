"""What a model costs, from its config alone: parameters, weight memory per storage format, KV cache
bytes and FLOPs per token. `info` prints these, `memory` checks them against the machine, and the
backends estimate their own memory with them (docs/design.md, "Model arithmetic").

Parameters are counted from the config (docs/formats.md 4.1):
    embedding   vocab * dim
    attention   n_layers * (dim * q_dim + 2 * dim * kv_dim + q_dim * dim)
                + n_layers * (q_dim + 2 * kv_dim) with q/k/v biases (qwen2)
    ffn         n_layers * 3 * dim * ffn_dim
    norms       n_layers * 2 * dim + dim, + n_layers * 2 * head_dim with q/k norms (qwen3)
    output      vocab * dim, unless tied to the embedding
Weight memory is parameters x bits per weight / 8 for each storage format (a block format's bits
include its scales: Q8_0 keeps one fp16 scale per 32 weights, 8.5 bits). The KV cache holds keys and
values of every layer: 2 * n_layers * kv_dim elements per token. FLOPs per generated token at context
n are 2 * params (one multiply-add per weight, as LLaMA write-ups count) plus attention's
4 * n_layers * n * q_dim (scores and weighted sum).

Tensor parallelism over N ranks (plugins/llamachat_torch/tp.py runs what `shard` says): each rank
holds its kv heads with their query heads (wq/wk/wv rows, wo columns, q/k/v bias rows), its ffn rows
(w1/w3 rows, w2 columns), its rows of the output head and its share of the embedding (1/N of the
vocabulary rows; LLaMA-2's Meta shards split it by columns instead, the same count when N divides
dim; a tied model looks tokens up in its head's rows, so it holds them once); every norm (q/k norms
included) and rope_freqs are replicated. Decoding a token on a rank reads its weights once and waits for 2 all-reduces a layer
(after wo and after w2), each of dim activations; a ring all-reduce sends 2(N-1)/N of the message per
rank in 2(N-1) steps, each step paying the link's latency (NCCL's own cost model, src/graph/tuning.cc).
So tok/s <= 1 / (rank weight bytes / memory bandwidth + all-reduce seconds per token). Not counted:
the logits gathered on rank 0 (one more collective a token) and any overlap of compute with transfer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .protocols import ModelConfig

GIB = 1 << 30
GB = 1e9

# (name, bits per weight): dense dtypes, then GGUF blocks, then MLX affine (fp16 scale + bias per group)
STORAGE_FORMATS: tuple[tuple[str, float], ...] = (
    ("fp32", 32.0),
    ("fp16/bf16", 16.0),
    ("Q8_0 (int8)", 8.5),
    ("MLX 8-bit g64", 8.5),
    ("Q4_1", 5.0),
    ("MLX 4-bit g32", 5.0),
    ("Q4_0", 4.5),
    ("MLX 4-bit g64", 4.5),
)

BYTES_PER_ELEMENT = {"float32": 4, "float16": 2, "bfloat16": 2}  # the dense dtypes the backends compute in


@dataclass(frozen=True)
class ParamCounts:
    embedding: int
    attention: int
    ffn: int
    norms: int
    output: int

    @property
    def total(self) -> int:
        return self.embedding + self.attention + self.ffn + self.norms + self.output


def param_counts(c: ModelConfig) -> ParamCounts:
    return ParamCounts(
        embedding=c.vocab_size * c.dim,
        attention=c.n_layers * (2 * c.dim * c.q_dim + 2 * c.dim * c.kv_dim + (c.q_dim + 2 * c.kv_dim if c.qkv_bias else 0)),
        ffn=c.n_layers * 3 * c.dim * c.ffn_dim,
        norms=c.n_layers * (2 * c.dim + (2 * c.head_dim if c.qk_norm else 0)) + c.dim,
        output=0 if c.tied_embeddings else c.vocab_size * c.dim,
    )


def weight_bytes(c: ModelConfig, bits_per_weight: float) -> int:
    """Bytes of every weight stored at `bits_per_weight` (see STORAGE_FORMATS)."""
    return round(param_counts(c).total * bits_per_weight / 8)


def dense_weight_bytes(c: ModelConfig, dtype: str) -> int:
    """Bytes of every weight held densely in `dtype` ("float32", "float16" or "bfloat16")."""
    return BYTES_PER_ELEMENT[dtype] * param_counts(c).total


def kv_bytes_per_token(c: ModelConfig, bytes_per_element: int = 2) -> int:
    return 2 * c.n_layers * c.kv_dim * bytes_per_element


def flops_per_token(c: ModelConfig, context: int) -> int:
    """FLOPs to generate one token with `context` tokens already in the cache."""
    return 2 * param_counts(c).total + 4 * c.n_layers * context * c.q_dim


# -- tensor parallelism --------------------------------------------------------------------------------


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


def max_world(config: ModelConfig) -> int:
    """The most ranks the model splits over: one query head each (kv heads are replicated past theirs)."""
    return config.n_heads


def shard(config: ModelConfig, world: int, rank: int) -> Shard:
    """Rank `rank`'s share, or ValueError when `world` is more ranks than the query heads allow."""
    H, K = config.n_heads, config.n_kv_heads
    if world > max_world(config):
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


def shards(config: ModelConfig, world: int) -> list[Shard]:
    """Every rank's share, or ValueError naming the world sizes the heads allow."""
    return [shard(config, world, r) for r in range(world)]


def rank_param_counts(c: ModelConfig, s: Shard) -> ParamCounts:
    """The parameters a rank holds with share `s` (see the module docstring)."""
    q, kv = (s.q[1] - s.q[0]) * c.head_dim, (s.kv[1] - s.kv[0]) * c.head_dim
    bias = q + 2 * kv if c.qkv_bias else 0
    rows = (s.vocab[1] - s.vocab[0]) * c.dim  # the rank's vocabulary rows of the embedding and of the head
    return ParamCounts(
        embedding=rows,
        attention=c.n_layers * (2 * c.dim * q + 2 * c.dim * kv + bias),
        ffn=c.n_layers * 3 * c.dim * (s.ffn[1] - s.ffn[0]),
        norms=param_counts(c).norms,  # replicated
        output=0 if c.tied_embeddings else rows,  # tied: the embedding's rows are the head's
    )


def rank_kv_bytes_per_token(c: ModelConfig, s: Shard, bytes_per_element: int = 2) -> int:
    """What a token adds to this rank's KV cache (a replicated kv head is held by each of its ranks)."""
    return 2 * c.n_layers * (s.kv[1] - s.kv[0]) * c.head_dim * bytes_per_element


@dataclass(frozen=True)
class Link:
    name: str
    bandwidth: float  # bytes/s one way per rank: a ring sends to one neighbour while it receives from the other
    step_latency: float  # seconds a ring step costs however small the message


# NVLink 4 on H100 SXM: 900 GB/s total per GPU, 450 GB/s each way (NVIDIA's H100 datasheet,
# nvidia.com/en-us/data-center/h100). NCCL's ring all-reduce reaches ~365-370 GB/s of it on 8 H100 SXM
# (NVIDIA/nccl#1455), so 450 is the ceiling, not the expectation. Step latency 0.6 us: NCCL's own
# model for Ring/LL over NVLink (hwLat in src/graph/tuning.cc), which also adds a 6.6 us base per
# call that CUDA graphs hide (NVIDIA/nccl#1984: 3.5 us without a graph, 0.5 us with one, 1 KiB on 4
# H800); measured small all-reduces on 2 H100 take ~6 us (NVIDIA/nccl#1259).
NVLINK4 = Link("NVLink 4", 450e9, 0.6e-6)
# 100 Gb Ethernet: 12.5 GB/s each way at line rate. Step latency 20 us: an assumption for NCCL's TCP
# socket transport (kernel TCP between two hosts costs 10-30 us a message); with RDMA (RoCE) NCCL
# models 2.7 us a step (hwLat NET, Ring/LL, src/graph/tuning.cc). One GPU a host, so every step crosses it.
ETHERNET_100G = Link("100 GbE", 12.5e9, 20e-6)
LINKS: tuple[Link, ...] = (NVLINK4, ETHERNET_100G)


def allreduce_seconds(nbytes: int, world: int, link: Link) -> float:
    """One ring all-reduce of `nbytes` over `world` ranks: 2(N-1)/N of it sent per rank, 2(N-1) steps."""
    if world == 1:
        return 0.0
    return 2 * (world - 1) / world * nbytes / link.bandwidth + 2 * (world - 1) * link.step_latency


def allreduces_per_token(c: ModelConfig) -> int:
    return 2 * c.n_layers  # after wo and after w2 in every layer


def allreduce_seconds_per_token(c: ModelConfig, world: int, link: Link, act_bytes: int = 2) -> float:
    """All-reduce time a decoded token waits for: 2 a layer, each of `dim` activations of `act_bytes`."""
    return allreduces_per_token(c) * allreduce_seconds(c.dim * act_bytes, world, link)


def decode_bound(weight_bytes_per_rank: float, bandwidth: float, allreduce_s: float = 0.0) -> float:
    """tok/s when every token reads a rank's weights at `bandwidth` (bytes/s) and then waits `allreduce_s`."""
    return 1 / (weight_bytes_per_rank / bandwidth + allreduce_s)
