"""`llamachat info --tp N` (llamachat/costs.py): each rank's counts against what tp.py's real shards
hold (the arrays `shard_weights` cuts, the KV cache a rank's model allocates), and the CLI with its
bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from llamachat_torch import tp
from llamachat_torch.model import TorchModel
from test_cli import assert_one_line_error
from test_tp import config_kwargs, random_model
from tiny_models import TinySpec, hf_model, write_hf

from llamachat.checkpoints import read_config_only
from llamachat.costs import (
    ETHERNET_100G,
    NVLINK4,
    allreduce_seconds_per_token,
    param_counts,
    rank_kv_bytes_per_token,
    rank_param_counts,
    shards,
)
from llamachat.protocols import ModelConfig

LLAMA31_8B = "tests/data/arch-configs/Llama-3.1-8B/config.json"

# (n_heads, n_kv_heads, switches): kv heads that divide, that do not (3 over 2), fewer than the ranks
# (1 or 2 over 3: replicated), and the switches that add sliced biases (qwen2) and replicated q/k norms (qwen3)
SHAPES = {
    "divisible": (4, 2, {}),
    "uneven": (6, 3, {}),
    "fewer-kv-than-ranks": (4, 1, {}),
    "qkv-bias": (6, 2, {"qkv_bias": True, "arch": "qwen2"}),
    "qk-norm": (6, 3, {"qk_norm": True, "arch": "qwen3"}),
}


def tiny(shape: str, tied: bool) -> dict:
    n_heads, n_kv_heads, switches = SHAPES[shape]
    return config_kwargs({"n_heads": n_heads, "n_kv_heads": n_kv_heads}, tied) | switches


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_rank_counts_are_what_the_real_shards_hold(shape, tied, world):
    config, weights = random_model(tiny(shape, tied))
    for rank, s in enumerate(shards(config, world)):
        local, sub = tp.shard_weights(config, weights, tp.shard(config, world, rank))
        assert rank_param_counts(config, s).total == sum(a.size for a in sub.values()), (rank, sorted(sub))
        cache = TorchModel(local, sub, torch.device("cpu"), torch.float32).new_cache(16)
        per_token = (cache.k.numel() + cache.v.numel()) * cache.k.element_size() // 16
        assert rank_kv_bytes_per_token(config, s, 4) == per_token


def test_one_rank_is_the_whole_model():
    for tied in (False, True):
        config = ModelConfig(**tiny("uneven", tied))
        assert rank_param_counts(config, shards(config, 1)[0]) == param_counts(config)


def test_allreduce_of_a_70b_is_latency_bound_on_ethernet():
    """160 all-reduces of 8,192 bf16 activations; a ring of 8 sends 2*7/8 of 16 KiB per rank in 14 steps."""
    c = ModelConfig(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, head_dim=128, ffn_dim=28672, vocab_size=32000)
    nvlink = allreduce_seconds_per_token(c, 8, NVLINK4)
    ethernet = allreduce_seconds_per_token(c, 8, ETHERNET_100G)
    assert nvlink == pytest.approx(160 * (1.75 * 16384 / 450e9 + 14 * 0.6e-6))  # 1.35 ms
    assert ethernet == pytest.approx(160 * (1.75 * 16384 / 12.5e9 + 14 * 20e-6))  # 45.2 ms
    assert 160 * 14 * 20e-6 / ethernet > 0.99
    assert allreduce_seconds_per_token(c, 1, ETHERNET_100G) == 0


def test_cli_tp_counts_the_checkpoints_real_shards(tmp_path):
    """`info config.json --tp 3` on a transformers checkpoint (4 heads over 2 kv heads: a kv head
    replicated on two ranks): each rank's parameters are the sizes tp.py cuts from the checkpoint."""
    write_hf(tmp_path, hf_model(TinySpec()))
    out = run_cli("info", str(tmp_path / "config.json"), "--tp", "3", "--json", "--bandwidth", "100")
    assert out.returncode == 0, out.stderr.decode()
    r = json.loads(out.stdout)["tp"]
    config, weights = tp.open_weights(str(tmp_path))
    held = [sum(a.size for a in tp.shard_weights(config, weights, tp.shard(config, 3, k))[1].values()) for k in range(3)]
    assert [rank["params"] for rank in r["ranks"]] == held
    assert [rank["kv_heads"] for rank in r["ranks"]] == [1, 1, 1] and all(rank["kv_replica"] for rank in r["ranks"])
    bf16 = r["memory_per_rank"]["fp16/bf16"]
    assert bf16["bytes"] == 2 * max(held)
    assert bf16["decode_ceiling_tok_s"] == round(100e9 / (2 * max(held)), 2)
    seconds = r["allreduce"]["100 GbE"]["seconds_per_token"]
    assert bf16["tok_s_bound"]["100 GbE"] == round(1 / (2 * max(held) / 100e9 + seconds), 2)


def test_cli_tp_table():
    out = run_cli("info", LLAMA31_8B, "--tp", "8", "--bandwidth", "3350", env={"COLUMNS": "200"})
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode()
    # 8 kv heads, 32 query heads, 14336 ffn rows and 128256 vocabulary rows over 8 ranks, all alike
    assert "--tp 8: each rank holds" in text and "│ 0-7   │ 1        │ 4       │ 1,792    │ 16,032     │" in text
    assert "all-reduce on NVLink 4" in text and "all-reduce on 100 GbE" in text and "64 of 8,192 bytes" in text


@pytest.mark.parametrize("value", ["0", "33", "two", "2.5", "-1"])
def test_cli_tp_out_of_range_is_one_line(value):
    assert_one_line_error(
        run_cli("info", LLAMA31_8B, "--tp", value, "--no-measure"),
        f"--tp takes a whole number of ranks from 1 to 32 (the model's attention heads), got {value!r}",
    )


BENCHMARK_CONFIGS = Path(__file__).parents[1] / "benchmarks" / "configs"


@pytest.mark.parametrize("model", sorted(p.name for p in BENCHMARK_CONFIGS.iterdir() if p.is_dir()))
def test_benchmark_configs_count_as_transformers_does(model):
    """docs/benchmarks.md's --tp table reads these config.json files: each one is the model
    transformers builds from it (on the meta device), parameter for parameter."""
    import transformers

    counted = read_config_only(BENCHMARK_CONFIGS / model).config
    with torch.device("meta"):
        built = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.from_pretrained(BENCHMARK_CONFIGS / model))
    assert param_counts(counted).total == sum(p.numel() for p in built.parameters())
