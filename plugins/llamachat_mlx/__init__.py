"""The MLX backend: Metal on Apple silicon, CUDA where an mlx-cuda build is installed, else the CPU.

Options: `device` ("auto", "gpu", "cpu"; auto takes the GPU when MLX has one), `dtype` ("float32",
"float16", "bfloat16"; default float32 on the CPU, so parity with the NumPy reference holds out of the
box, float16 on a GPU). 4/8-bit weights stay packed whatever the dtype. `threads` is not taken: MLX
sizes its CPU thread pool itself, and has no setting for it. mlx is imported only when this backend
is used.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from llamachat.backends import float_dtype
from llamachat.hookspecs import hookimpl
from llamachat.protocols import ModelConfig, QuantizedTensor, Tensor

INSTALL = "pip install 'llamachat[mlx]'" + ("" if sys.platform == "darwin" else " (mlx[cpu] on Linux; mlx-cuda-12 or -13 for NVIDIA GPUs)")


def pick_device(requested: str | None) -> str:
    import mlx.core as mx

    gpu = mx.is_available(mx.gpu)
    requested = (requested or "auto").lower()
    if requested == "auto":
        return "gpu" if gpu else "cpu"
    if requested == "cpu" or (requested == "gpu" and gpu):
        return requested
    if requested in ("gpu", "mps", "metal", "cuda"):
        raise ValueError(f"device {requested!r}: this MLX build has no GPU here; available: cpu")
    raise ValueError(f"unknown device {requested!r} for mlx; accepted: auto, cpu, gpu")


def pick_dtype(requested: str | None, device: str) -> str:
    if requested in (None, "auto"):
        return "float32" if device == "cpu" else "float16"
    return float_dtype(requested)


def _packed(t: Tensor) -> bool:
    from .model import PACKABLE_GGUF

    return isinstance(t, QuantizedTensor) and (t.scheme == "affine" or t.scheme in PACKABLE_GGUF)


class MlxBackend:
    name = "mlx"
    description = "MLX: Metal, CUDA or CPU; 4/8-bit weights stay packed (mx.quantized_matmul)"

    def available(self) -> tuple[bool, str]:
        try:
            import mlx.core  # noqa: F401
        except ImportError:
            return False, f"mlx is not installed ({INSTALL})"
        return True, ""

    def memory_needed(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any) -> int:
        import numpy as np

        size = 4 if pick_dtype(options.get("dtype"), pick_device(options.get("device"))) == "float32" else 2
        total = 0
        for t in weights.values():
            n = int(np.prod(t.shape))
            total += int(n * (t.bits + 16 * size / t.group_size) / 8) if _packed(t) else n * size  # codes + a scale and a bias a group
        return total

    def load(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any):
        import mlx.core as mx

        from .model import MlxModel

        if options.get("quantize"):
            raise ValueError("the mlx backend has no quantize option: 4/8-bit models stay packed (make one with llamachat convert -q 4)")
        device = pick_device(options.get("device"))
        mx.set_default_device(mx.gpu if device == "gpu" else mx.cpu)
        return MlxModel(config, weights, getattr(mx, pick_dtype(options.get("dtype"), device)))


@hookimpl
def register_backends(register):
    register(MlxBackend())
