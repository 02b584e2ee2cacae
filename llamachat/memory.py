"""Will the model fit? The memory this machine has free, and the check made before loading."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .costs import GIB, dense_weight_bytes
from .errors import LlamachatError
from .protocols import ModelConfig, Tensor

LIMIT_VARIABLE = "LLAMACHAT_MEMORY_LIMIT"  # e.g. "8G": treat this much as available (containers, tests)


def available_memory() -> int | None:
    """Bytes free for a new model: LLAMACHAT_MEMORY_LIMIT if set, else MemAvailable (Linux) or the
    physical memory (elsewhere); None when unknown."""
    limit = os.environ.get(LIMIT_VARIABLE)
    if limit:
        m = re.fullmatch(r"\s*([\d.]+)\s*([kmgt]?)i?b?\s*", limit.lower())
        if not m:
            raise LlamachatError(f"{LIMIT_VARIABLE}={limit!r}: expected a size such as 8G or 512M")
        return int(float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2) or "_"))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(backend: object, config: ModelConfig, weights: Mapping[str, Tensor], options: Mapping[str, object]) -> None:
    """One clear line, before loading, when the weights will not fit as this backend holds them."""
    estimate = getattr(backend, "memory_needed", None)
    needed = estimate(config, weights, **options) if estimate else dense_weight_bytes(config, "float32")
    free = available_memory()
    if free is None or needed <= free:
        return
    name = getattr(backend, "name", "this backend")
    raise LlamachatError(
        f"the model needs about {needed / GIB:.1f} GiB on the {name} backend but only {free / GIB:.1f} GiB is available; "
        "use a quantized model (llamachat convert MODEL OUT -q 4, then --backend mlx) or a 16-bit dtype (--backend torch --dtype bf16)"
    )
