"""`llamachat info`: what a model costs before it is loaded.

The arithmetic (parameters, memory per storage format, KV bytes and FLOPs per token) lives in
llamachat/costs.py. Decoding reads every weight once per token, so tokens/s <= memory bandwidth /
weight bytes: the ceiling printed for this machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .costs import GB, GIB, STORAGE_FORMATS, flops_per_token, kv_bytes_per_token, param_counts, weight_bytes
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
