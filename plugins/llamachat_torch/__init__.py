"""The PyTorch backend: MPS on Apple silicon, else CUDA, else the CPU.

Options: `device` ("auto", "cpu", "mps", "cuda", "cuda:1"), `dtype` ("float32"/"fp32",
"float16"/"fp16", "bfloat16"/"bf16"; default: fp32 on the CPU, so parity with the NumPy reference holds
out of the box, fp16 on MPS, bf16 on CUDA) and `threads` (CPU threads). torch is imported only when
this backend is used; no fallback to another device unless asked for with "auto". `quantize = "int4"`
(a profile switch, off by default) runs the layers' matrices through PyTorch's weight-only int4 CPU
kernel with bfloat16 activations (int4.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from llamachat.backends import float_dtype
from llamachat.costs import dense_weight_bytes, param_counts
from llamachat.hookspecs import hookimpl
from llamachat.protocols import ModelConfig, Tensor

DEFAULT_DTYPE = {"cpu": "float32", "mps": "float16", "cuda": "bfloat16"}
INSTALL = "pip install 'llamachat[torch]'"


def pick_device(requested: str | None) -> str:
    """The device to run on, or ValueError saying what is available here."""
    import torch

    mps = torch.backends.mps.is_available()
    cuda = torch.cuda.is_available()
    here = ["cpu"] + (["mps"] if mps else []) + ([f"cuda (cuda:0..{torch.cuda.device_count() - 1})"] if cuda else [])
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "mps" if mps else "cuda" if cuda else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "mps":
        if not mps:
            raise ValueError(f"device 'mps' is not available here (it needs Apple silicon and macOS 12.3+); available: {', '.join(here)}")
        return "mps"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not cuda:
            raise ValueError(f"device {requested!r} is not available: no CUDA GPU is visible to PyTorch; available: {', '.join(here)}")
        index = requested.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device {requested!r} does not exist; available: {', '.join(here)}")
        return requested
    raise ValueError(f"unknown device {requested!r}; accepted: auto, cpu, mps, cuda, cuda:N")


def pick_dtype(requested: str | None, device: str) -> str:
    if requested in (None, "auto"):
        return DEFAULT_DTYPE[device.partition(":")[0]]
    dtype = float_dtype(requested)
    if device == "mps" and dtype == "bfloat16":
        import torch

        if not torch.backends.mps.is_macos_or_newer(14, 0):
            raise ValueError("bfloat16 on MPS needs macOS 14 or newer; use float16 or float32")
    return dtype


def pick_quantize(requested: str | None, device: str) -> bool:
    """Whether to run the layers' matrices as weight-only int4 (off unless asked for)."""
    if requested in (None, "", "none", "off"):
        return False
    if requested != "int4":
        raise ValueError(f"unknown quantize {requested!r}; accepted: none, int4")
    if device != "cpu":
        raise ValueError(f"quantize = 'int4' is implemented for the CPU kernel only (device {device!r}); use an unquantized dtype there")
    return True


class TorchBackend:
    name = "torch"
    tensor_parallel = True  # `tp = N`: tp.py, ranks 1..N-1 open `source` themselves
    description = "PyTorch: MPS, CUDA or CPU; float32, float16 or bfloat16"

    def available(self) -> tuple[bool, str]:
        try:
            import torch  # noqa: F401
        except ImportError:
            return False, f"PyTorch is not installed ({INSTALL})"
        return True, ""

    def memory_needed(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any) -> int:
        """Host memory for the weights at the chosen dtype (a CUDA GPU's own memory is not host memory)."""
        device = pick_device(options.get("device"))
        if device.startswith("cuda"):
            return 0
        if pick_quantize(options.get("quantize"), device):
            return param_counts(config).total  # well above: the embedding and head stay bf16, the rest 4.5-5 bits
        return dense_weight_bytes(config, pick_dtype(options.get("dtype"), device))

    def load(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any):
        import torch

        from .model import TorchModel

        device = pick_device(options.get("device"))
        int4 = pick_quantize(options.get("quantize"), device)
        dtype = pick_dtype(options.get("dtype") or ("bfloat16" if int4 else None), device)
        if int4 and dtype != "bfloat16":
            raise ValueError(f"quantize = 'int4' computes with bfloat16 activations (dtype {dtype!r} was asked for)")
        if options.get("threads"):
            torch.set_num_threads(int(options["threads"]))
        if options.get("tp", 1) > 1:
            from . import tp
            from .placement import check_tp_device

            launch = options.get("launch")  # torchrun started every rank: this is rank 0 of its group
            check_tp_device(device, dtype, int4, launch.local_world if launch else options["tp"])
            threads = int(options.get("threads") or 1)
            factory = functools.partial(tp.open_weights, str(options["source"]))
            where = {"device": device, "dtype": dtype}
            if launch:
                return tp.start_launched(launch, factory, threads, local=(config, weights), **where)
            return tp.start(options["tp"], factory, threads, local=(config, weights), **where)
        return TorchModel(config, weights, torch.device(device), getattr(torch, dtype), int4=int4)

    def serve(self, launch) -> int:
        """A launched rank above 0 (torchrun): rank 0's worker until it shuts the group down."""
        from . import tp

        return tp.serve_launched(launch)


@hookimpl
def register_backends(register):
    register(TorchBackend())
