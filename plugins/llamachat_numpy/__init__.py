"""The NumPy reference backend: float32 on the CPU, the one every other backend is checked against.

Options: `threads` (the BLAS threads, through threadpoolctl); `dtype` float32 only; `device` "cpu"
or "auto" (the CPU is the only one; asking for a GPU here is refused, not silently ignored); `plain`
(true: the plain walk-through forward pass of plain.py instead of model.py's faster one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llamachat.hookspecs import hookimpl
from llamachat.protocols import ModelConfig, Tensor


class NumpyBackend:
    name = "numpy"
    description = "NumPy reference: float32 on the CPU, readable top to bottom"

    def available(self) -> tuple[bool, str]:
        return True, ""

    def load(self, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any):
        from .model import NumpyModel
        from .plain import PlainModel

        dtype = options.pop("dtype", None)
        if dtype not in (None, "auto", "float32", "fp32"):
            raise ValueError(f"the numpy backend computes in float32 only (asked for {dtype})")
        if options.get("quantize"):
            raise ValueError(
                "the numpy backend has no quantize option (the torch backend has quantize = 'int4'; mlx keeps packed weights packed)"
            )
        device = options.pop("device", None)
        if device not in (None, "auto", "cpu"):
            raise ValueError(f"the numpy backend runs on the CPU only (asked for device {device!r}; the torch backend takes cuda and mps)")
        if options.get("threads"):
            from threadpoolctl import threadpool_limits

            threadpool_limits(int(options["threads"]), user_api="blas")  # NumPy's BLAS does the heavy lifting
        return (PlainModel if options.get("plain") else NumpyModel)(config, weights)


@hookimpl
def register_backends(register):
    register(NumpyBackend())
