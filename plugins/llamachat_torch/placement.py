"""Where each rank of `--tp` runs, and over which torch.distributed backend its tensors travel.

Two kinds of traffic, two groups. The commands rank 0 broadcasts, the handshake's gathers and the
cache states (Python objects, and tensors gathered on the host) always go over gloo, the default
group: idle ranks wait in a broadcast for as long as the user types, and a CUDA collective waits no
longer than its timeout (10 minutes for NCCL by default) before the watchdog tears the process down
("This is the duration after which collectives will be aborted asynchronously and the process will
crash": init_process_group's `timeout`, torch 2.13); NCCL's object collectives would also stage every
pickle on the GPU. The tensors inside a forward pass (the two all-reduces a layer, the embedding's
all-reduce or all-gather, the logits gathered on rank 0) go over the tensor group: NCCL on CUDA, a
group of its own; on the CPU the default gloo group itself, so a CPU run is what it was before CUDA
existed here. Rank r takes cuda:LOCAL_RANK (the rank itself for `--tp N` on one machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

# Which device a `--tp` rank may run on, by the device the torch backend picked (pick_device).
ACCEPTED = "accepted: --device cpu, or --device cuda on NVIDIA GPUs"


@dataclass(frozen=True)
class Placement:
    """A rank's device and dtype, and the group its forward pass's collectives use (None: the default
    group, gloo)."""

    device: torch.device
    dtype: torch.dtype
    group: Any = None


CPU = Placement(torch.device("cpu"), torch.float32)


def tensor_backend(device_type: str) -> str | None:
    """The backend of the tensor group: NCCL on CUDA, else None (the default gloo group). NCCL runs
    every collective the forward pass uses on CUDA tensors (all_reduce, all_gather, gather: the
    backend table of torch.distributed's docs; gather over NCCL since pytorch/pytorch#66745)."""
    return "nccl" if device_type == "cuda" else None


def check_tp_device(device: str, dtype: str, int4: bool, ranks_here: int) -> None:
    """Rank 0, before any rank starts: the device the backend picked can run `ranks_here` ranks on
    this machine, or ValueError in one line (the CLI's exit 2)."""
    if device == "mps":
        raise ValueError(f"--tp does not run on MPS (torch.distributed has no MPS backend); {ACCEPTED}")
    if device == "cpu":
        if dtype != "float32" or int4:
            raise ValueError("--tp runs float32 on the CPU (gloo); accepted: --dtype float32 and no quantize there, or --device cuda")
        return
    if device != "cuda":  # cuda:N
        raise ValueError(
            f"--tp puts each rank on cuda:<its local rank>, not {device!r}: give --device cuda (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    visible = torch.cuda.device_count()
    if visible < ranks_here:
        raise ValueError(f"--tp runs {ranks_here} ranks on this machine, one CUDA device each: {_visible(visible, 'here')}")


def rank_device(kind: str, local_rank: int) -> torch.device:
    """The device of the rank that is `local_rank` on its machine, or ValueError when that machine has
    no such GPU (a rank on another machine than rank 0's: rank 0 checked its own)."""
    if kind != "cuda":
        return torch.device(kind)
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise ValueError(f"has no cuda:{local_rank} for its local rank {local_rank}: {_visible(visible, 'on its machine')}")
    return torch.device("cuda", local_rank)


def _visible(n: int, where: str) -> str:
    return f"{n} CUDA device{'' if n == 1 else 's'} {'is' if n == 1 else 'are'} visible {where} (CUDA_VISIBLE_DEVICES)"
