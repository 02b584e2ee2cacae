"""Choosing a backend plugin by name and loading a model on it, with one clear line when it cannot."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import LlamachatError
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


def find_backend(name: str) -> Backend:
    """The backend plugin called `name`, if it can run here; else one line saying why not. The only
    place a backend choice is checked (start-up calls it before anything heavy, /backend too)."""
    from .plugins import registry

    backends = registry().backends
    if name not in backends:
        raise LlamachatError(f"unknown backend {name!r} (available: {', '.join(sorted(backends))})")
    backend = backends[name]
    ok, reason = backend.available()
    if not ok:
        raise LlamachatError(f"backend {name!r} cannot run here: {reason}")
    return backend


def load_runner(backend: Backend, config: ModelConfig, weights: Mapping[str, Tensor], **options: Any) -> Runner:
    """A Runner of `backend` (from `find_backend`) for these weights, once they are known to fit."""
    from .memory import check_fits

    options = {k: v for k, v in options.items() if v is not None}
    try:
        check_fits(backend, config, weights, options)
        return backend.load(config, weights, **options)
    except (ValueError, TypeError) as e:
        raise LlamachatError(f"backend {backend.name!r}: {e}") from None
