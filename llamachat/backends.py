"""Choosing a backend plugin by name (or by the `auto` rule) and loading a model on it, with one
clear line when it cannot."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import LlamachatError
from .interrupts import sigint_held
from .protocols import Backend, ModelConfig, Runner, Tensor

# the float dtypes backends take, under the names people write them
FLOAT_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def float_dtype(requested: str) -> str:
    """The canonical name ("float32", "float16", "bfloat16") of a dtype a user asked for, or
    ValueError saying what is accepted (backend plugins share this spelling)."""
    if requested.lower() not in FLOAT_DTYPES:
        raise ValueError(f"unknown dtype {requested!r}; accepted: float32 (fp32), float16 (fp16), bfloat16 (bf16)")
    return FLOAT_DTYPES[requested.lower()]


def available_backends() -> list[str]:
    from .plugins import registry

    return sorted(registry().backends)


AUTO = "auto"


def choose_backend(checkpoint_format: str, tp: int = 1) -> tuple[str, str]:
    """The backend `auto` picks for a checkpoint of this format on this machine, and why, by the
    first rule that holds (docs/design.md): torch for tensor parallel (`tp` > 1: the only backend
    that runs it); mlx on Apple silicon; torch on an NVIDIA GPU; llamacpp for a GGUF file; else the
    numpy reference. A rule holds only where its plugin can run here."""
    from .plugins import registry

    backends = registry().backends

    def runs(name: str) -> bool:
        return name in backends and imported(backends[name])[0]

    if tp > 1 and runs("torch"):
        return "torch", f"tensor parallel (--tp {tp}), which the torch backend runs"
    if sys.platform == "darwin" and platform.machine() == "arm64" and runs("mlx"):
        return "mlx", "Apple silicon, where MLX runs on the GPU"
    if _nvidia_gpu() and runs("torch") and _torch_cuda():
        return "torch", "an NVIDIA GPU, which PyTorch runs with CUDA"
    if checkpoint_format == "gguf" and runs("llamacpp"):
        return "llamacpp", "a GGUF file on the CPU, and llama-cpp-python is installed"
    why = "llama-cpp-python is not installed" if checkpoint_format == "gguf" else f"a {checkpoint_format} checkpoint on the CPU"
    return "numpy", f"the reference backend: {why}"


def _nvidia_gpu() -> bool:
    """An NVIDIA driver with a GPU, looked up without importing torch (a second of start-up)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def find_backend(name: str) -> Backend:
    """The backend plugin called `name`, if it can run here; else one line saying why not. The only
    place a backend choice is checked (start-up calls it before anything heavy, /backend too)."""
    from .plugins import registry

    backends = registry().backends
    if name not in backends:
        raise LlamachatError(f"unknown backend {name!r} (available: {', '.join(sorted(backends))})")
    backend = backends[name]
    ok, reason = imported(backend)
    if not ok:
        raise LlamachatError(f"backend {name!r} cannot run here: {reason}")
    return backend


def imported(backend: Backend) -> tuple[bool, str]:
    """`backend.available()`, which imports its library (torch, mlx, llama_cpp), with Ctrl-C held
    off: an import stopped halfway cannot be undone (torch's operators stay half-registered and
    every later import fails), so a Ctrl-C waits for the import to end, then stops what asked."""
    try:
        with sigint_held():
            return backend.available()
    except KeyboardInterrupt:
        raise LlamachatError(
            f"stopped by Ctrl-C: backend {backend.name!r} was let finish importing its library (an import stopped "
            "halfway cannot be undone), and nothing was loaded on it"
        ) from None


def load_runner(backend: Backend, config: ModelConfig, weights: Mapping[str, Tensor], source: Path | None = None, **options: Any) -> Runner:
    """A Runner of `backend` (from `find_backend`) for these weights, once they are known to fit.
    `source` is the checkpoint's path, handed to a backend that reads the file itself (`reads_file =
    True`, as llamacpp: llama.cpp maps the GGUF on its own)."""
    from .memory import check_fits

    options = {k: v for k, v in options.items() if v is not None}
    tp = options.get("tp", 1)
    if tp > 1 and not getattr(backend, "tensor_parallel", False):
        raise LlamachatError(f"backend {backend.name!r} cannot run tensor parallel (--tp {tp}); accepted: --backend torch, or no --tp")
    if tp == 1:
        options.pop("tp", None)
    if getattr(backend, "reads_file", False) or tp > 1:  # tp: the other ranks open the checkpoint themselves
        options["source"] = source
    try:
        check_fits(backend, config, weights, options)
        return backend.load(config, weights, **options)
    except (ValueError, TypeError) as e:
        raise LlamachatError(f"backend {backend.name!r}: {e}") from None
