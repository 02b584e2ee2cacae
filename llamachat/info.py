"""`llamachat info`: what a model costs before it is loaded.

The arithmetic (parameters, memory per storage format, KV bytes and FLOPs per token) lives in
llamachat/costs.py. Decoding reads every weight once per token, so tokens/s <= memory bandwidth /
weight bytes: the ceiling printed for this machine. With `--tp N` it prints what each of N ranks holds
and the bound with the all-reduces a token waits for on each link in costs.LINKS (arithmetic, not a
measurement: docs/benchmarks.md, "What `--tp N` needs per rank").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .costs import (
    GB,
    GIB,
    LINKS,
    STORAGE_FORMATS,
    allreduce_seconds_per_token,
    allreduces_per_token,
    decode_bound,
    flops_per_token,
    kv_bytes_per_token,
    param_counts,
    rank_kv_bytes_per_token,
    rank_param_counts,
    shards,
    weight_bytes,
)
from .printable import printable
from .protocols import ModelConfig


def rope_scaling(c: ModelConfig, llama3: dict[str, Any] | None) -> dict[str, Any] | None:
    """How positions are stretched: Llama-3.1-style (`llama3`, from the checkpoint) or linear."""
    if llama3 is not None:
        return {
            k: llama3[k]
            for k in ("rope_type", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
            if k in llama3
        }
    if c.rope_scaling is not None and c.rope_scaling.kind == "longrope":  # Phi-3: long past the original context
        s = c.rope_scaling
        return {
            "rope_type": "longrope",
            "factor": s.factor,
            "original_max_position_embeddings": s.original_context,
            "attention_factor": s.attention_factor,
        }
    if c.rope_scaling is not None:
        return {"rope_type": c.rope_scaling.kind, "factor": c.rope_scaling.factor}
    return None


def describe_rope_scaling(rope: dict[str, Any] | None) -> str:
    if rope is None:
        return "none"
    extra = [f"{k.removesuffix('_factor')} {rope[k]:g}" for k in ("low_freq_factor", "high_freq_factor", "attention_factor") if k in rope]
    if "original_max_position_embeddings" in rope:
        extra.append(f"original context {int(rope['original_max_position_embeddings']):,}")
    return f"{rope['rope_type']}, factor {rope['factor']:g}" + (f" ({', '.join(extra)})" if extra else "")


def report(c: ModelConfig, bandwidth: float | None = None, llama3_rope: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything `info` prints, as plain JSON-ready values (bytes and FLOPs as integers)."""
    counts = param_counts(c)
    total = counts.total
    memory = {}
    for name, bits in STORAGE_FORMATS:
        nbytes = weight_bytes(c, bits)
        memory[name] = {"bits_per_weight": bits, "bytes": nbytes, "GiB": round(nbytes / GIB, 3), "GB": round(nbytes / GB, 3)}
        if bandwidth:
            memory[name]["decode_ceiling_tok_s"] = round(bandwidth / nbytes, 2)
    kv16 = kv_bytes_per_token(c, 2)
    return {
        "name": c.name,
        "architecture": {
            "arch": c.arch,
            "dim": c.dim,
            "n_layers": c.n_layers,
            "n_heads": c.n_heads,
            "n_kv_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "ffn_dim": c.ffn_dim,
            "vocab_size": c.vocab_size,
            "context_length": c.context_length,
            "rope_theta": c.rope_theta,
            "rope_scaling": rope_scaling(c, llama3_rope),
            "norm_eps": c.norm_eps,
            "tied_embeddings": c.tied_embeddings,
            "sliding_window": c.sliding_window,
            "qkv_bias": c.qkv_bias,
            "qk_norm": c.qk_norm,
        },
        "params": {
            "embedding": counts.embedding,
            "attention": counts.attention,
            "ffn": counts.ffn,
            "norms": counts.norms,
            "output": counts.output,
        },
        "total_params": total,
        "memory": memory,
        "kv_cache": {
            "bytes_per_token_fp16": kv16,
            "bytes_per_token_fp32": 2 * kv16,
            "bytes_at_context_fp16": kv16 * c.context_length,
        },
        "flops_per_token": {"at_1": flops_per_token(c, 1), f"at_{c.context_length}": flops_per_token(c, c.context_length)},
        "bandwidth_GB_s": round(bandwidth / GB, 1) if bandwidth else None,
    }


ACT_BYTES = 2  # activations all-reduced in bf16/fp16, as NCCL tensor parallel runs them


def tp_report(c: ModelConfig, world: int, bandwidth: float | None = None) -> dict[str, Any]:
    """What each of `world` ranks holds and costs (ValueError when the heads do not allow `world`)."""
    ranks = []
    for rank, s in enumerate(shards(c, world)):
        ranks.append(
            {
                "rank": rank,
                "kv_heads": s.kv[1] - s.kv[0],
                "kv_replica": c.n_kv_heads < world,  # each of a head's ranks holds it whole
                "q_heads": s.q[1] - s.q[0],
                "ffn_rows": s.ffn[1] - s.ffn[0],
                "vocab_rows": s.vocab[1] - s.vocab[0],
                "params": rank_param_counts(c, s).total,
                "kv_bytes_per_token_fp16": rank_kv_bytes_per_token(c, s, 2),
            }
        )
    largest = max(r["params"] for r in ranks)  # the slowest rank sets the pace, the fullest one the memory
    allreduce = {
        link.name: {
            "GB_s": link.bandwidth / GB,
            "step_latency_us": link.step_latency * 1e6,
            "seconds_per_token": allreduce_seconds_per_token(c, world, link, ACT_BYTES),
        }
        for link in LINKS
    }
    memory = {}
    for name, bits in STORAGE_FORMATS:
        nbytes = round(largest * bits / 8)
        memory[name] = {"bits_per_weight": bits, "bytes": nbytes, "GiB": round(nbytes / GIB, 3), "GB": round(nbytes / GB, 3)}
        if bandwidth:
            memory[name]["decode_ceiling_tok_s"] = round(decode_bound(nbytes, bandwidth), 2)
            memory[name]["tok_s_bound"] = {
                link: round(decode_bound(nbytes, bandwidth, a["seconds_per_token"]), 2) for link, a in allreduce.items()
            }
    return {
        "world": world,
        "ranks": ranks,
        "largest_rank_params": largest,
        "memory_per_rank": memory,
        "kv_bytes_per_token_fp16_per_rank": max(r["kv_bytes_per_token_fp16"] for r in ranks),
        "allreduces_per_token": allreduces_per_token(c) if world > 1 else 0,
        "allreduce_bytes_each": c.dim * ACT_BYTES,
        "allreduce": allreduce,
    }


# -------------------------------------------------------------------------------------------------
# The command


def _size(nbytes: float) -> str:
    return (
        f"{nbytes / GIB:,.2f} GiB ({nbytes / GB:,.2f} GB)" if nbytes >= 1e8 else f"{nbytes / (1 << 20):,.2f} MiB ({nbytes / 1e6:,.2f} MB)"
    )


def print_report(r: dict[str, Any], source: str, fmt: str, notes: Sequence[str], on_disk: int | None, measured: bool) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{escape(printable(r['name']))}[/bold]  ({fmt}: {escape(printable(source))})", highlight=False, soft_wrap=True)
    arch = Table("architecture", "", show_header=False)
    for key, value in r["architecture"].items():
        if key == "rope_scaling":
            value = describe_rope_scaling(value)
        arch.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    console.print(arch)
    params = Table("parameters", "count", "share", title_justify="left")
    total = r["total_params"]
    for key, value in r["params"].items():
        params.add_row(key, f"{value:,}", f"{100 * value / total:.1f}%")
    params.add_row("total", f"{total:,}", "100%", style="bold")
    console.print(params)
    memory = Table("weights as", "bits/weight", "memory", *(["decode ceiling"] if r["bandwidth_GB_s"] else []), title_justify="left")
    for name, m in r["memory"].items():
        ceiling = [f"{m['decode_ceiling_tok_s']:,.1f} tok/s"] if r["bandwidth_GB_s"] else []
        memory.add_row(name, f"{m['bits_per_weight']:g}", _size(m["bytes"]), *ceiling)
    console.print(memory)
    kv, ctx = r["kv_cache"], r["architecture"]["context_length"]
    flops = r["flops_per_token"]
    console.print(
        f"KV cache: {kv['bytes_per_token_fp16'] / 1024:,.1f} KiB per token in fp16 (fp32: twice), {_size(kv['bytes_at_context_fp16'])} at {ctx:,} tokens"
    )
    console.print(
        f"FLOPs per generated token: {flops['at_1'] / 1e9:,.2f} GFLOP at position 1, {flops[f'at_{ctx}'] / 1e9:,.2f} GFLOP at {ctx:,}"
    )
    if r["bandwidth_GB_s"]:
        how = "measured on this machine" if measured else "as given"
        console.print(f"decode ceiling = memory bandwidth {r['bandwidth_GB_s']} GB/s ({how}) / weight bytes")
    if on_disk:
        console.print(f"weights on disk: {_size(on_disk)}, {8 * on_disk / r['total_params']:.2f} bits per weight")
    for note in notes:
        console.print(f"note: {note}", style="yellow")


def _rank_groups(ranks: Sequence[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Consecutive ranks with the same share, as one row ("0-3")."""

    def share(r: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in r.items() if k != "rank"}

    groups: list[list[dict[str, Any]]] = []
    for r in ranks:
        if groups and share(groups[-1][0]) == share(r):
            groups[-1].append(r)
        else:
            groups.append([r])
    return [(f"{g[0]['rank']}" + (f"-{g[-1]['rank']}" if len(g) > 1 else ""), g[0]) for g in groups]


def print_tp(t: dict[str, Any], bandwidth_GB_s: float | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    n = t["world"]
    shares = Table(
        "ranks",
        "kv heads",
        "q heads",
        "ffn rows",
        "vocab rows",
        "params",
        "KV/token",
        title=f"--tp {n}: each rank holds",
        title_justify="left",
    )
    for name, r in _rank_groups(t["ranks"]):
        kv = f"{r['kv_heads']}" + (" (replicated)" if r["kv_replica"] else "")
        shares.add_row(
            name,
            kv,
            f"{r['q_heads']}",
            f"{r['ffn_rows']:,}",
            f"{r['vocab_rows']:,}",
            f"{r['params'] / 1e6:,.1f} M",
            f"{r['kv_bytes_per_token_fp16'] / 1024:,.1f} KiB",
        )
    console.print(shares)
    links = list(t["allreduce"])
    ceiling = ["decode ceiling"] + [f"tok/s with {link}" for link in links] if bandwidth_GB_s else []
    memory = Table("weights as", "memory per rank", *ceiling, title=f"--tp {n}: the fullest rank", title_justify="left")
    for name, m in t["memory_per_rank"].items():
        bound = [f"{m['decode_ceiling_tok_s']:,.1f} tok/s"] + [f"{m['tok_s_bound'][link]:,.1f}" for link in links] if bandwidth_GB_s else []
        memory.add_row(name, _size(m["bytes"]), *bound)
    console.print(memory)
    for link, a in t["allreduce"].items():
        console.print(
            f"all-reduce on {link} ({a['GB_s']:g} GB/s each way, {a['step_latency_us']:g} us a ring step): "
            f"{a['seconds_per_token'] * 1e3:,.3f} ms per token ({t['allreduces_per_token']} of {t['allreduce_bytes_each']:,} bytes)"
        )
    console.print(
        "KV per token: the fullest rank's, fp16. Arithmetic, not a measurement: "
        "tok/s = 1 / (rank weight bytes / bandwidth + all-reduce time per token)"
        + ("" if bandwidth_GB_s else "; give --bandwidth for the decode ceiling")
    )
