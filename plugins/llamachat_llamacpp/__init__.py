"""The llama.cpp backend: a GGUF file run by llama.cpp's engine (through llama-cpp-python's C API),
with llamachat's tokenizer, templates, sampler chain and sessions around it.

Options: `threads` (default: every core this process may use), `device` "cpu" (default, also
"auto") or "gpu" (every layer offloaded, where the library was built with CUDA, Metal or Vulkan),
`context` (the most tokens one cache holds, default 8192: llama.cpp allocates a cache's KV cells
when it is made). It reads the checkpoint's file itself (`reads_file`), so any GGUF llama.cpp
supports runs, K-quants and i-quants included; other formats are refused with the convert command.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llamachat.errors import LlamachatError
from llamachat.hookspecs import hookimpl
from llamachat.protocols import ModelConfig, Tensor

from . import library

DEFAULT_CONTEXT = 8192
ALL_LAYERS = 0x7FFFFFFF  # n_gpu_layers: llama.cpp clamps it to the model's layer count


class LlamaCppBackend:
    name = "llamacpp"
    description = "llama.cpp's engine on a GGUF file as it is (llama-cpp-python): CPU, or a CUDA/Metal/Vulkan build's GPU"
    reads_file = True  # load() gets `source`, the checkpoint's path (see docs/design.md)

    def available(self) -> tuple[bool, str]:
        return library.importable()

    def memory_needed(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any) -> int:
        """The file's tensors as stored: llama.cpp maps them as they are."""
        return sum(w.nbytes for w in weights.values())

    def load(self, config: ModelConfig, weights: Mapping[str, Tensor], *, source: Path | None = None, **options: Any):
        from .model import LlamaCppModel, default_threads

        path = _gguf_file(source)
        if options.pop("quantize", None):
            raise ValueError(
                "the llamacpp backend has no quantize option: it runs the GGUF's own types (llamachat convert SRC out.gguf -q 4)"
            )
        dtype = options.pop("dtype", None)
        if dtype not in (None, "auto"):
            raise ValueError(
                f"the llamacpp backend runs the file's own types (asked for dtype {dtype}; llamachat convert writes other ones)"
            )
        gpu_layers = _gpu_layers(options.pop("device", None))
        threads = int(options.pop("threads", None) or default_threads())
        context = int(options.pop("context", None) or DEFAULT_CONTEXT)
        if threads < 1 or context < 1:
            raise ValueError(f"threads and context take integers >= 1, got {threads} and {context}")
        if options:
            raise ValueError(f"the llamacpp backend has no option {', '.join(sorted(options))} (it takes threads, device, context)")
        return LlamaCppModel(config, path, threads=threads, gpu_layers=gpu_layers, context=context)


def _gguf_file(source: Path | None) -> Path:
    if source is None or not _is_gguf(Path(source)):
        src = source or "SRC"
        raise LlamachatError(
            f"the llamacpp backend runs GGUF files only, and {src} is not one: make one with `llamachat convert {src} out.gguf` (-q 4 or -q 8 to quantize)"
        )
    return Path(source)


def _is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _gpu_layers(device: str | None) -> int:
    if device in (None, "auto", "cpu"):
        return 0
    if device != "gpu":
        raise ValueError(f"the llamacpp backend takes device cpu or gpu, got {device!r}")
    if not library.library().llama_supports_gpu_offload():
        raise ValueError(
            "this llama-cpp-python was built for the CPU only, so device gpu cannot run; "
            "install a CUDA, Metal or Vulkan build (see README.md) or use device cpu"
        )
    return ALL_LAYERS


@hookimpl
def register_backends(register):
    register(LlamaCppBackend())
