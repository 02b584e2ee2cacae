"""Tensor parallelism (plugins/llamachat_torch/tp.py): 2 gloo processes against one process."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from llamachat_torch import tp
from llamachat_torch.model import TorchModel
from random_weights import random_weights

from llamachat.protocols import ModelConfig


def random_model(kwargs: dict, seed: int = 0):
    """A random LLaMA with logits of order 1 (module-level: the spawned rank rebuilds the same one
    from the seed), q/k drawn 3x larger for sharp attention."""
    config = ModelConfig(**kwargs)
    return config, random_weights(config, seed, qk_gain=3)


SHAPES = {
    "divisible": dict(n_heads=4, n_kv_heads=2),
    "uneven": dict(n_heads=6, n_kv_heads=3),  # 2 + 1 kv heads, as the default model's 9 / 3 over 2 ranks
    "fewer-kv-than-ranks": dict(n_heads=4, n_kv_heads=1),  # the kv head replicated
}


def config_kwargs(heads: dict, tied: bool) -> dict:
    return dict(dim=48, n_layers=2, head_dim=8, ffn_dim=75, vocab_size=101, context_length=128, tied_embeddings=tied, **heads)


def greedy(runner, cache, prompt, n):
    out, logits = [], runner.forward(prompt, cache)
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = runner.forward([out[-1]], cache)
    return out


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("heads", list(SHAPES))
def test_tp2_matches_one_process(heads, tied):
    torch.set_num_threads(1)
    factory = functools.partial(random_model, config_kwargs(SHAPES[heads], tied))
    config, weights = factory()
    one = TorchModel(config, weights, torch.device("cpu"), torch.float32)
    runner = tp.start(2, factory)
    try:
        prompt = [3, 14, 15, 92, 65, 35, 89, 79]
        c1, c2 = one.new_cache(), runner.new_cache()
        np.testing.assert_allclose(runner.forward(prompt, c2, all_logits=True), one.forward(prompt, c1, all_logits=True), atol=1e-5, rtol=0)
        # the common layout: rank 0 gathers each rank's own kv heads (a replica once)
        s1, s2 = c1.state(), c2.state()
        assert s2["k"].shape == s1["k"].shape == (2, config.n_kv_heads, len(prompt), 8)
        np.testing.assert_allclose(s2["k"], s1["k"], atol=1e-5)
        np.testing.assert_allclose(s2["v"], s1["v"], atol=1e-5)
        c1.truncate(5), c2.truncate(5)
        assert greedy(runner, c2, [7], 32) == greedy(one, c1, [7], 32)
        # a one-process cache resumed by the group, and the reverse
        c3 = runner.new_cache()
        c3.load_state(c1.state())
        c4 = one.new_cache()
        c4.load_state(c2.state())
        # each side runs on the other's 37 cached tokens: float32 sums in another order, over a longer
        # history than the first check, so 1e-4 (seen: 1.1e-5 on logits of magnitude 5)
        np.testing.assert_allclose(runner.forward([42], c3), one.forward([42], c4), atol=1e-4, rtol=0)
    finally:
        runner.close()


def test_shards_cover_the_model():
    config = ModelConfig(**config_kwargs(SHAPES["uneven"], False))
    shards = [tp.shard(config, 2, r) for r in range(2)]
    assert [s.kv for s in shards] == [(0, 2), (2, 3)] and [s.q for s in shards] == [(0, 4), (4, 6)]
    assert [s.ffn for s in shards] == [(0, 38), (38, 75)] and [s.vocab for s in shards] == [(0, 51), (51, 101)]
    replicated = ModelConfig(**config_kwargs(SHAPES["fewer-kv-than-ranks"], False))
    shards = [tp.shard(replicated, 2, r) for r in range(2)]
    assert [s.kv for s in shards] == [(0, 1), (0, 1)] and [s.q for s in shards] == [(0, 2), (2, 4)]
    assert [s.owns_kv for s in shards] == [True, False]


def test_world_larger_than_the_heads_is_one_line():
    config = ModelConfig(**config_kwargs(SHAPES["divisible"], False))
    with pytest.raises(ValueError, match=r"--tp 5 is more ranks than the model's 4 attention heads \(accepted: 1 to 4\)"):
        tp.shard(config, 5, 0)


def llamachat(*args: str, home) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "llamachat", "--no-history", "--temp", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=300)


def test_cli_tp2_prints_the_one_process_reply_once(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    args = ("--model", str(path), "--backend", "torch", "-n", "16", "-p", "Hello there")
    one, two = llamachat(*args, "--tp", "1", home=tmp_path), llamachat(*args, "--tp", "2", home=tmp_path)
    assert one.returncode == two.returncode == 0, two.stderr
    assert two.stdout == one.stdout and one.stdout.strip()


def test_cli_tp_refused_by_a_backend_that_cannot(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    r = llamachat("--model", str(path), "--backend", "numpy", "--tp", "2", "-p", "hi", home=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "llamachat: error: backend 'numpy' cannot run tensor parallel (--tp 2); accepted: --backend torch, or no --tp"
    ]


KILL_SCRIPT = """
import functools, os, signal, sys, threading, time
sys.path.insert(0, {tests!r})
from test_tp import random_model, config_kwargs, SHAPES
from llamachat_torch import tp
runner = tp.start(2, functools.partial(random_model, config_kwargs(SHAPES["divisible"], False)))
cache = runner.new_cache()
print("started", flush=True)
threading.Timer(0.3, os.kill, (runner.procs[0].pid, signal.SIGKILL)).start()
while True:  # a reply: one token after another, until the cache is full
    if len(cache) == cache.capacity:
        cache.truncate(0)
    runner.forward([1], cache)
"""


def test_a_worker_killed_mid_reply_ends_rank_0_in_one_line_within_the_bound():
    script = KILL_SCRIPT.format(tests=os.path.dirname(__file__))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline() == "started\n"
    killed = time.monotonic()
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 0.3 + 3  # the kill's delay, then the bound (POLL_S and the shutdown) with room for load
    assert proc.returncode == 2
    assert err.strip().splitlines() == ["llamachat: error: rank 1 of --tp 2 stopped (exit code -9); the chat cannot go on"]


def test_default_model_tp2_matches_one_process(default_model_path):
    """9 heads over 3 kv heads: 2 + 1 kv heads over 2 ranks."""
    torch.set_num_threads(1)
    config, weights = tp.open_weights(str(default_model_path))
    one = TorchModel(config, weights, torch.device("cpu"), torch.float32)
    runner = tp.start(2, functools.partial(tp.open_weights, str(default_model_path)), local=(config, weights))
    try:
        prompt = [1, 9690, 198, 2683, 359, 253, 5356, 5646]
        c1, c2 = one.new_cache(256), runner.new_cache(256)
        # 30 layers, logits up to ~28: the sums of the split products and the all-reduces in another
        # order differ by up to 5.1e-5 (seen), above the 1e-5; the tiny models hold 1e-5
        np.testing.assert_allclose(runner.forward(prompt, c2, all_logits=True), one.forward(prompt, c1, all_logits=True), atol=1e-4, rtol=0)
        assert greedy(runner, c2, [28], 32) == greedy(one, c1, [28], 32)
    finally:
        runner.close()


def test_cli_tp2_with_backend_auto_runs_torch(tiny_gguf, tmp_path):
    """`auto` picks torch for --tp (the one backend that runs it), as `torchrun ... -m llamachat` needs."""
    _, _, path = tiny_gguf
    args = ("--model", str(path), "-n", "16", "-p", "Hello there")
    one, two = llamachat(*args, "--backend", "torch", home=tmp_path), llamachat(*args, "--tp", "2", home=tmp_path)
    assert one.returncode == two.returncode == 0, two.stderr
    assert two.stdout == one.stdout and one.stdout.strip()
