"""Opening a model from whatever shape it comes in. Each format lives in its own module and yields the
same `Checkpoint`: a ModelConfig, canonical weights (see llamachat.protocols) and a tokenizer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..errors import LlamachatError
from ..protocols import ModelConfig, Tensor, Tokenizer

FORMATS = "a GGUF file (.gguf) or a directory holding one"


@dataclass
class Checkpoint:
    path: Path
    format: str
    config: ModelConfig
    weights: Mapping[str, Tensor]
    load_tokenizer: Callable[[], Tokenizer] = field(repr=False)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = self.load_tokenizer()
        if tokenizer.vocab_size > self.config.vocab_size:
            raise LlamachatError(
                f"{self.path}: the tokenizer has {tokenizer.vocab_size} tokens but the embedding only {self.config.vocab_size} rows"
            )
        return tokenizer


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at `path` (a file or a model directory); LlamachatError if there is none."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LlamachatError(f"{path}: no such file or directory (expected {FORMATS})")
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            path = ggufs[0]
        elif ggufs:
            raise LlamachatError(f"{path}: holds {len(ggufs)} GGUF files; name one of them ({', '.join(g.name for g in ggufs)})")
        else:
            raise LlamachatError(f"{path}: no model in this directory (expected {FORMATS})")
    if path.suffix.lower() == ".gguf":
        return _open_gguf(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _open_gguf(path)
    raise LlamachatError(f"{path}: not a model file llamachat reads (expected {FORMATS})")


def _open_gguf(path: Path) -> Checkpoint:
    from .gguf import GGUFFile, read_config, read_weights

    gf = GGUFFile(path)
    config = read_config(gf)
    weights = read_weights(gf, config)

    def load_tokenizer() -> Tokenizer:
        from ..tokenizer import tokenizer_from_gguf

        return tokenizer_from_gguf(gf.metadata, str(path))

    return Checkpoint(path, "gguf", config, weights, load_tokenizer)
