"""Where the ranks of --tp run (plugins/llamachat_torch/placement.py) and which group carries what:
on CUDA each rank on cuda:LOCAL_RANK with the forward pass's collectives over NCCL, the commands
over gloo; on the CPU everything over the one gloo group. No GPU here: torch.cuda's device count is
faked, and the routing is checked on gloo with a second group standing in for NCCL's."""

from __future__ import annotations

import functools
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from llamachat_torch import placement, tp
from llamachat_torch.model import TorchModel
from llamachat_torch.placement import Placement
from test_tp import SHAPES, config_kwargs, random_model
from test_tp_start import ARGS, llamachat_errors, run, torchrun

from llamachat import ranks
from llamachat.errors import LlamachatError

FAKE_CUDA = str(Path(__file__).parent / "fake_cuda.py")


@pytest.fixture
def visible(monkeypatch):
    """Set how many CUDA devices torch says this machine has."""

    def see(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)

    return see


def test_the_tensor_backend_is_nccl_on_cuda_and_the_default_group_elsewhere():
    assert placement.tensor_backend("cuda") == "nccl"
    assert placement.tensor_backend("cpu") is None


def test_each_rank_takes_the_gpu_of_its_local_rank(visible):
    visible(4)
    assert [placement.rank_device("cuda", r) for r in range(4)] == [torch.device("cuda", r) for r in range(4)]
    assert placement.rank_device("cpu", 3) == torch.device("cpu")


def test_a_rank_whose_machine_lacks_its_gpu_is_one_line(visible):
    visible(1)
    with pytest.raises(ValueError) as e:
        placement.rank_device("cuda", 1)
    assert str(e.value) == "has no cuda:1 for its local rank 1: 1 CUDA device is visible on its machine (CUDA_VISIBLE_DEVICES)"


@pytest.mark.parametrize("here", [1, 2, 4])
def test_rank_0_accepts_cuda_with_a_gpu_for_each_rank_here(visible, here):
    visible(4)
    placement.check_tp_device("cuda", "bfloat16", False, here)


def test_fewer_gpus_than_the_ranks_here_is_one_line(visible):
    visible(2)
    with pytest.raises(ValueError) as e:
        placement.check_tp_device("cuda", "bfloat16", False, 4)
    assert str(e.value) == "--tp runs 4 ranks on this machine, one CUDA device each: 2 CUDA devices are visible here (CUDA_VISIBLE_DEVICES)"


@pytest.mark.parametrize(
    ("device", "dtype", "int4", "message"),
    [
        (
            "mps",
            "float16",
            False,
            "--tp does not run on MPS (torch.distributed has no MPS backend); accepted: --device cpu, or --device cuda on NVIDIA GPUs",
        ),
        (
            "cuda:1",
            "bfloat16",
            False,
            "--tp puts each rank on cuda:<its local rank>, not 'cuda:1': give --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)",
        ),
        (
            "cpu",
            "bfloat16",
            False,
            "--tp runs float32 on the CPU (gloo); accepted: --dtype float32 and no quantize there, or --device cuda",
        ),
        ("cpu", "bfloat16", True, "--tp runs float32 on the CPU (gloo); accepted: --dtype float32 and no quantize there, or --device cuda"),
    ],
)
def test_what_tp_cannot_run_on_is_one_line(visible, device, dtype, int4, message):
    visible(2)
    with pytest.raises(ValueError) as e:
        placement.check_tp_device(device, dtype, int4, 2)
    assert str(e.value) == message


def test_the_cpu_stays_float32_on_the_default_group():
    placement.check_tp_device("cpu", "float32", False, 8)
    assert placement.CPU == Placement(torch.device("cpu"), torch.float32, None)


def test_cli_tp_with_fewer_gpus_than_ranks_is_one_line_before_any_rank_starts(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    r = run(
        [sys.executable, FAKE_CUDA, "--model", str(path), *ARGS, "--device", "cuda", "--tp", "2", "-p", "hi"],
        tmp_path,
        FAKE_CUDA_DEVICES="1",
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "llamachat: error: backend 'torch': --tp runs 2 ranks on this machine, one CUDA device each: 1 CUDA device is visible here (CUDA_VISIBLE_DEVICES)"
    ]


def test_torchrun_rank_without_its_gpu_is_one_line_and_every_rank_exits_2(tiny_gguf, tmp_path):
    """Rank 0's machine shows 2 GPUs, rank 1's only 1 (what a second machine with fewer looks like):
    the ranks agree before any of them joins NCCL, so nothing touches a GPU."""
    _, _, path = tiny_gguf
    r = torchrun("--model", str(path), *ARGS, "--device", "cuda", "-p", "hi", home=tmp_path, script=[FAKE_CUDA], FAKE_CUDA_DEVICES="2,1")
    assert r.stdout == ""
    assert llamachat_errors(r.stderr) == [
        "llamachat: error: rank 1 of 2: has no cuda:1 for its local rank 1: 1 CUDA device is visible on its machine (CUDA_VISIBLE_DEVICES)"
    ]
    assert r.returncode != 0 and "rank      : 0 (local_rank: 0)\n  exitcode  : 2" in r.stderr.split("Root Cause")[1], r.stderr


def out_of_gpu_memory_on_rank_1(kwargs: dict):
    """A weights factory whose rank 1 runs out of GPU memory (what torch raises there)."""
    if dist.get_rank() == 1:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 1 has a total capacity of 79.10 GiB")
    return random_model(kwargs)


def test_a_rank_out_of_gpu_memory_is_one_line_and_every_rank_exits_2():
    kwargs = config_kwargs(SHAPES["divisible"], False)
    with pytest.raises(LlamachatError) as e:
        tp.start(2, functools.partial(out_of_gpu_memory_on_rank_1, kwargs), local=random_model(kwargs))
    assert str(e.value).startswith("rank 1 of 2: could not build its share: CUDA out of memory. Tried to allocate 2.00 GiB.")
    [worker] = multiprocessing.active_children()
    worker.join(timeout=30)
    assert worker.exitcode == 2


LAUNCH = {"RANK": "3", "WORLD_SIZE": "4", "MASTER_ADDR": "h", "MASTER_PORT": "1"}


def test_the_local_rank_is_torchruns_and_else_the_rank_itself():
    torchrun_env = ranks.from_env(LAUNCH | {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (torchrun_env.local_rank, torchrun_env.local_world) == (1, 2)  # 2 machines of 2 ranks
    alone = ranks.from_env(LAUNCH)  # a launcher that says nothing of machines: all on one
    assert (alone.local_rank, alone.local_world) == (3, 4)


def test_a_local_rank_outside_its_machine_is_one_line():
    with pytest.raises(LlamachatError) as e:
        ranks.from_env(LAUNCH | {"LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"})
    assert str(e.value) == "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"


# -- which group each collective goes over -----------------------------------------------------------


class DimSplit(dict):
    """Weights whose embedding the checkpoint splits along the dimension (LLaMA-1/2's Meta shards)."""

    def split_axis(self, name: str) -> int | None:
        return 1 if name == "token_embd" else None


@pytest.fixture
def collectives(monkeypatch):
    """A one-rank gloo world in this process, with a second gloo group as the tensor group, and every
    collective tp.py calls recorded as (name, group)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    calls: list[tuple[str, object]] = []

    def recorded(name, real, *args, group=None, **kwargs):
        calls.append((name, group))
        return real(*args, group=group, **kwargs)

    for name in ("all_reduce", "all_gather", "gather", "broadcast_object_list", "all_gather_object"):
        monkeypatch.setattr(dist, name, functools.partial(recorded, name, getattr(dist, name)))
    try:
        yield dist.new_group(backend="gloo"), calls
    finally:
        if dist.is_initialized():  # a failed _agree destroys it itself
            dist.destroy_process_group()


@pytest.fixture
def cuda_calls(monkeypatch, visible):
    """torch.cuda.set_device and dist.new_group recorded instead of run (no GPU here), in order."""
    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))

    def new_group(**kwargs):
        calls.append(("new_group", kwargs))
        return "the NCCL group"

    monkeypatch.setattr(dist, "new_group", new_group)
    return calls


def test_on_cuda_a_rank_joins_an_nccl_group_bound_to_its_gpu(collectives, cuda_calls, visible):
    visible(2)
    order = tp.Order(None, None, 1, "cuda", "bfloat16")
    assert tp._place(order, local_rank=1) == Placement(torch.device("cuda", 1), torch.bfloat16, "the NCCL group")
    device = torch.device("cuda", 1)
    assert cuda_calls == [("set_device", device), ("new_group", {"backend": "nccl", "timeout": tp.NCCL_TIMEOUT, "device_id": device})]
    _, calls = collectives
    assert calls == [("all_gather_object", None)]  # the ranks agreed over gloo that each has its GPU first


def test_on_cuda_a_rank_without_its_gpu_stops_every_rank_before_nccl(collectives, cuda_calls, visible):
    visible(1)
    with pytest.raises(LlamachatError) as e:
        tp._place(tp.Order(None, None, 1, "cuda", "bfloat16"), local_rank=1)
    assert str(e.value) == "rank 0 of 1: has no cuda:1 for its local rank 1: 1 CUDA device is visible on its machine (CUDA_VISIBLE_DEVICES)"
    assert cuda_calls == []


def test_on_the_cpu_placing_a_rank_makes_no_collective(collectives):
    assert tp._place(tp.Order(None, None, 1), local_rank=1) == placement.CPU
    assert collectives[1] == []


@pytest.mark.parametrize("embedding", ["vocab", "dim", "tied"])
def test_a_pass_goes_over_the_tensor_group_and_a_state_export_over_the_default(collectives, embedding):
    group, calls = collectives
    config, weights = random_model(config_kwargs(SHAPES["divisible"], embedding == "tied"))
    weights = DimSplit(weights) if embedding == "dim" else weights
    model, s = tp.local_model(config, weights, 1, 0, Placement(torch.device("cpu"), torch.float32, group))
    executor = tp.Executor(config, model, s, 1, group)
    executor.run("new_cache", 0, 32)
    logits = executor.run("forward", 0, [3, 14, 15, 92], True)
    one = TorchModel(config, weights, torch.device("cpu"), torch.float32)
    np.testing.assert_allclose(logits, one.forward([3, 14, 15, 92], one.new_cache(32), all_logits=True), atol=1e-5, rtol=0)
    joined = "all_gather" if embedding == "dim" else "all_reduce"
    assert calls == [(joined, group)] + [("all_reduce", group)] * 2 * config.n_layers + [("gather", group)]
    calls.clear()
    executor.run("state", 0)
    assert calls == [("gather", None), ("gather", None)]  # k and v: host tensors, over gloo


def test_the_gpu_check_script_passes_on_gloo(tmp_path):
    """benchmarks/tp_gpu_check.py is what a session lent GPUs runs first (NCCL, 7B-shaped speed); here
    the same parity checks run over gloo on the CPU, with the tiny shape for the speed lines."""
    script = Path(__file__).parents[1] / "benchmarks" / "tp_gpu_check.py"
    argv = [sys.executable, str(script), "--device", "cpu", "--shape", "tiny", "--bandwidth-mib", "64", "--n-gen", "4"]
    r = run(argv, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [line.split(", ", 1)[1] for line in lines if line.startswith("--tp 2 over gloo")] == [
        "divisible: matches one process",
        "uneven kv heads, tied: matches one process",
        "replicated kv head: matches one process",
        "embedding split along the dim: matches one process",
    ]
    assert lines[-1] == "tp_gpu_check: PASS"
