"""Meta's model-parallel shards under --tp (issue 20): each rank reads only its own
consolidated.0R.pth when the ranks are the shards, slices across them otherwise, never merges."""

from __future__ import annotations

import functools
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from llamachat_torch import tp
from llamachat_torch.model import TorchModel
from random_weights import random_weights
from test_tp import greedy
from tiny_models import TinySpec, write_meta

from llamachat.checkpoints import open_checkpoint
from llamachat.checkpoints.sharded import ShardedWeights, tensor_part
from llamachat.protocols import ModelConfig
from llamachat.quantize import affine_tensor, quantize_affine

LLAMA2 = TinySpec()  # 4 heads over 2 kv heads, dim 64, ffn 96: Meta's shards split all of it in two
LLAMA3 = TinySpec(vocab=128256, rope_theta=10000.0, llama3_rope_factor=8.0)
LAYOUTS = {  # name: (spec, llama3, tied)
    "llama2": (LLAMA2, False, False),  # the embedding cut along the dimension
    "llama3": (LLAMA3, True, False),  # along the vocabulary
    "llama3.2-tied": (LLAMA3, True, True),  # along the vocabulary, no output head (Llama-3.2 1B/3B)
}
PROMPT = [1, 450, 4996, 17354, 1701, 29916, 432, 17204]


def source_weights(spec: TinySpec, tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
    """Random canonical weights, what the writer cuts into Meta's shards."""
    config = ModelConfig(
        dim=spec.dim, n_layers=spec.n_layers, n_heads=spec.n_heads, n_kv_heads=spec.n_kv_heads, head_dim=spec.head_dim,
        ffn_dim=spec.ffn, vocab_size=spec.vocab, tied_embeddings=tied,
    )  # fmt: skip
    return random_weights(config, seed)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def meta2(request, tmp_path_factory):
    """(layout, directory, the source weights) of a 2-shard Meta download."""
    spec, llama3, tied = LAYOUTS[request.param]
    weights = source_weights(spec, tied)
    return request.param, write_meta(tmp_path_factory.mktemp(request.param), spec, weights, n_shards=2, llama3=llama3), weights


def reads_of_rank(directory, world: int, rank: int) -> tuple[set[int], int]:
    """(the shards whose data rank `rank` of `world` read to build its model, merges done), in a fresh open."""
    config, weights = tp.open_weights(str(directory))
    assert isinstance(weights, ShardedWeights)
    tp.local_model(config, weights, world, rank)  # builds the rank's model; no collective until a pass
    return weights.shards_read(), weights.merges


def test_each_rank_reads_only_its_own_shard(meta2):
    _, directory, _ = meta2
    for rank in range(2):
        assert reads_of_rank(directory, 2, rank) == ({rank}, 0)


def test_three_ranks_over_two_shards_slice_across_them_without_merging(meta2):
    _, directory, _ = meta2
    reads = [reads_of_rank(directory, 3, rank) for rank in range(3)]
    assert all(merges == 0 for _, merges in reads)
    assert reads[1][0] == {0, 1}  # the middle rank's ffn rows straddle the two files


def test_no_rank_keeps_more_than_its_slice(meta2, tmp_path):
    """bfloat16 shards: every float32 array a rank keeps owns a buffer of its own size (not a view of a
    whole tensor converted, as `as_float32(w)[a:b]` kept)."""
    layout, directory, weights = meta2
    spec, llama3, _ = LAYOUTS[layout]
    bf16 = write_meta(tmp_path / "bf16", spec, weights, n_shards=2, llama3=llama3, dtype=torch.bfloat16)
    config, opened = tp.open_weights(str(bf16))
    _, sub = tp.shard_weights(config, opened, tp.shard(config, 2, 1), rank=1, world=2)
    for name, a in sub.items():
        assert owns_its_slice(a), name
    assert opened.shards_read() == {1}


def owns_its_slice(a: np.ndarray) -> bool:
    """A rank's float32 array is a buffer of its own size, or a view of the file's memory map (pages the
    kernel can drop, not anonymous memory)."""
    root = a
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root.nbytes == a.nbytes or isinstance(root.base, mmap.mmap)


def test_a_gguf_rank_widens_only_its_slice(default_model_path):
    """Other formats are sliced from the memory map too: the default model's 8-bit GGUF weights."""
    config, weights = tp.open_weights(str(default_model_path))
    assert any(getattr(w, "scheme", "").startswith("gguf:") for w in weights.values())
    _, sub = tp.shard_weights(config, weights, tp.shard(config, 2, 1), rank=1, world=2)
    for name, a in sub.items():
        assert owns_its_slice(a), name


def one_process(directory, weights) -> TorchModel:
    """The writer's own float32 weights in one process (not read back through the Meta reader; Llama-3.1's
    RoPE divisors are params.json's, computed)."""
    checkpoint = open_checkpoint(directory)
    extra = {"rope_freqs": checkpoint.weights["rope_freqs"]} if "rope_freqs" in checkpoint.weights else {}
    return TorchModel(checkpoint.config, weights | extra, torch.device("cpu"), torch.float32)


def test_tp2_on_meta_shards_matches_one_process(meta2):
    _, directory, weights = meta2
    matches_one_process(directory, weights, 2)


def test_tp3_on_two_meta_shards_matches_one_process(tmp_path):
    """3 ranks over LLaMA-2's 2 shards: kv heads replicated, ffn rows and embedding columns straddling the files."""
    weights = source_weights(LLAMA2, False)
    matches_one_process(write_meta(tmp_path / "m", LLAMA2, weights, n_shards=2), weights, 3)


def matches_one_process(directory, weights, world: int) -> None:
    torch.set_num_threads(1)
    one = one_process(directory, weights)
    runner = tp.start(world, functools.partial(tp.open_weights, str(directory)))
    try:
        c1, c2 = one.new_cache(64), runner.new_cache(64)
        np.testing.assert_allclose(runner.forward(PROMPT, c2, all_logits=True), one.forward(PROMPT, c1, all_logits=True), atol=1e-5, rtol=0)
        assert greedy(runner, c2, [29892], 16) == greedy(one, c1, [29892], 16)
    finally:
        runner.close()


def test_columns_of_a_packed_weight_without_dequantizing_it_whole():
    w = np.random.default_rng(1).standard_normal((40, 128)).astype(np.float32)
    q = affine_tensor(*quantize_affine(w, 4, 32), bits=4, group_size=32)
    np.testing.assert_array_equal(tensor_part(q, (slice(3, 17), slice(40, 99))), q.dequantize()[3:17, 40:99])
    np.testing.assert_array_equal(tensor_part(q, (slice(None), slice(5, 70))), q.dequantize()[:, 5:70])
    rows = tensor_part(q, (slice(8, 20),))
    assert rows.scheme == "affine" and rows.shape == (12, 128)
    np.testing.assert_array_equal(rows.dequantize(), q.dequantize()[8:20])


# -- shards that do not fit together: one line, exit 2 ----------------------------------------------


def llamachat(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "llamachat", "--no-history", "--temp", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)


def test_cli_tp2_on_meta_shards_prints_the_one_process_reply(tmp_path):
    directory = write_meta(tmp_path / "m", LLAMA2, source_weights(LLAMA2, False), n_shards=2)
    args = ("--model", str(directory), "--backend", "torch", "-n", "12", "-p", "Hello there")
    one, two = llamachat(*args, home=tmp_path), llamachat(*args, "--tp", "2", home=tmp_path)
    assert one.returncode == two.returncode == 0, two.stderr
    assert two.stdout == one.stdout and one.stdout.strip()


@pytest.mark.parametrize(
    "tensor, cut, expected",
    [
        (
            "layers.1.attention.wq.weight",
            lambda t: t[:, :60],
            r"the 2 shards do not fit together: layers\.1\.attention\.wq\.weight has shapes \[32, 64\] and \[32, 60\] in the shards, "
            r"which are not cut along axis 0",
        ),
        (
            "layers.0.feed_forward.w2.weight",
            lambda t: t[:, :40],
            r"tensor layers\.0\.feed_forward\.w2\.weight has shape \[64, 88\], the config implies \[64, 96\] \(2 shards read\)",
        ),
    ],
)
def test_shards_that_do_not_fit_are_one_line_and_exit_2(tmp_path, tensor, cut, expected):
    import re

    directory = write_meta(tmp_path / "bad", LLAMA2, source_weights(LLAMA2, False), n_shards=2)
    state = torch.load(directory / "consolidated.01.pth", weights_only=True)
    state[tensor] = cut(state[tensor]).clone()
    torch.save(state, directory / "consolidated.01.pth")
    r = llamachat("--model", str(directory), "--tp", "2", "-n", "4", "-p", "hi", home=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(expected, lines[0]), r.stderr
