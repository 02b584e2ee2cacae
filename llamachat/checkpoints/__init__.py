"""Opening a model from whatever shape it comes in. Each format lives in its own module and yields the
same `Checkpoint`: a ModelConfig, canonical weights (see llamachat.protocols) and a tokenizer.

    gguf.py     llama.cpp's GGUF (one file)
    meta.py     Meta's consolidated.NN.pth + params.json (+ tokenizer.model here or one level up)
    hf.py       Hugging Face config.json + safetensors, and mlx-lm's (4/8-bit) variant of it
    mlx.py      mlx-examples' weights.npz + config.json (fp16/fp32 or 4/8-bit)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import default_model, sampling_defaults
from ..errors import LlamachatError
from ..protocols import ConfigError, ModelConfig, Tensor, Tokenizer

FORMATS = (
    "a GGUF file, or a directory with Meta's params.json + consolidated.NN.pth, "
    "Hugging Face / mlx-lm config.json + *.safetensors, or mlx-examples config.json + weights.npz"
)
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


@dataclass
class Checkpoint:
    path: Path
    format: str  # gguf, meta, hf, mlx
    config: ModelConfig
    weights: Mapping[str, Tensor]
    load_tokenizer: Callable[[], Tokenizer] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    # the sampler values the model itself recommends, and where they were read (sampling_defaults.py)
    sampling: dict[str, Any] = field(default_factory=dict)
    sampling_source: str = "model"

    @cached_property
    def tokenizer(self) -> Tokenizer:
        tokenizer = self.load_tokenizer()
        if tokenizer.vocab_size > self.config.vocab_size:
            raise LlamachatError(
                f"{self.path}: the tokenizer has {tokenizer.vocab_size} tokens but the embedding only {self.config.vocab_size} rows"
            )
        return tokenizer


def detect_format(path: Path) -> tuple[str, Path]:
    """(format, the file or directory to read) for a user-given path."""
    if not path.exists():
        raise LlamachatError(f"{path}: no such file or directory (expected {FORMATS})")
    if path.is_file():
        if path.suffix.lower() == ".gguf" or _magic(path) == b"GGUF":
            return "gguf", path
        if path.suffix == ".pth" or path.name == "params.json":
            return "meta", path.parent
        if path.suffix == ".npz":
            return "mlx", path.parent
        if path.suffix == ".safetensors" or path.name in ("config.json", "model.safetensors.index.json"):
            return detect_format(path.parent)
        raise LlamachatError(f"{path}: not a model file llamachat reads (expected {FORMATS})")
    if (path / "params.json").is_file() and any(path.glob("*.pth")):
        return "meta", path
    if (path / "config.json").is_file():
        if any(path.glob("weights*.npz")):
            return "mlx", path
        if any(path.glob("*.safetensors")) or (path / "model.safetensors.index.json").is_file():
            return "hf", path
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return "gguf", ggufs[0]
    if ggufs:
        raise LlamachatError(f"{path}: holds {len(ggufs)} GGUF files; name one of them ({', '.join(g.name for g in ggufs)})")
    raise LlamachatError(f"{path}: no model in this directory (expected {FORMATS})")


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def open_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at `path` (a file or a model directory); LlamachatError if there is none."""
    kind, path = detect_format(Path(path).expanduser())
    with _config_named(path):
        if kind == "gguf":
            checkpoint = _open_gguf(path)
        elif kind == "hf":
            checkpoint = _open_hf(path)
        else:
            checkpoint = _open_meta_style(path, kind)
    return _with_recommended_sampling(checkpoint)


@contextmanager
def _config_named(path: Path) -> Iterator[None]:
    """A configuration that describes no model (ModelConfig's ConfigError) as one line naming the file."""
    try:
        yield
    except ConfigError as e:
        raise LlamachatError(f"{path}: {e}") from None


def _with_recommended_sampling(checkpoint: Checkpoint) -> Checkpoint:
    """The model's own sampler recommendation: a GGUF's general.sampling.* keys, a directory's
    generation_config.json, or, for the default model, which has neither, its model card's values."""
    if checkpoint.format == "gguf":
        found, source = checkpoint.sampling, "model (GGUF general.sampling)"
    else:
        found, source = sampling_defaults.read_generation_config(checkpoint.path), "model (generation_config.json)"
    if not found and default_model.is_default_model(checkpoint.path):
        found, source = dict(default_model.RECOMMENDED_SAMPLING), "model (its model card)"
    checkpoint.sampling, checkpoint.sampling_source = found, source
    return checkpoint


def _open_gguf(path: Path) -> Checkpoint:
    from .gguf import GGUFFile, read_config, read_weights

    gf = GGUFFile(path)
    config = read_config(gf)
    weights = read_weights(gf, config)

    def load_tokenizer() -> Tokenizer:
        from ..tokenizer import tokenizer_from_gguf

        return tokenizer_from_gguf(gf.metadata, str(path))

    sampling = sampling_defaults.from_gguf_metadata(gf.metadata)
    return Checkpoint(path, "gguf", config, weights, load_tokenizer, sampling=sampling)


def find_tokenizer(directory: Path, look_up: bool = True) -> Path | None:
    """tokenizer.model / tokenizer.json beside the weights, or (`look_up`) one level up, where Meta's
    download keeps tokenizer.model beside its llama-2-7b-chat/ directories."""
    for d in (directory, directory.parent) if look_up else (directory,):
        for name in TOKENIZER_FILES:
            if (d / name).is_file():
                return d / name
    return None


def _tokenizer_loader(directory: Path, look_up: bool = True) -> Callable[[], Tokenizer]:
    def load() -> Tokenizer:
        from ..tokenizer import load_tokenizer

        found = find_tokenizer(directory, look_up)
        if found is None:
            raise LlamachatError(f"{directory}: no tokenizer (put tokenizer.model or tokenizer.json beside the weights)")
        return load_tokenizer(found)

    return load


def _open_hf(directory: Path) -> Checkpoint:
    from .hf import read_hf

    config, weights = read_hf(directory)
    config = replace(config, chat_template=_hf_chat_template(directory))
    return Checkpoint(directory, "hf", config, weights, _tokenizer_loader(directory, look_up=False))


def _hf_chat_template(directory: Path) -> str | None:
    from .hf import read_json

    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if (directory / "tokenizer_config.json").is_file():
        template = read_json(directory / "tokenizer_config.json").get("chat_template")
        return template if isinstance(template, str) else None
    return None


def _open_meta_style(directory: Path, kind: str) -> Checkpoint:
    """Meta and mlx-examples directories: params.json-style configs whose vocabulary size and special
    ids come from the tokenizer."""
    from .meta import read_meta
    from .mlx import read_mlx

    load_tokenizer = _tokenizer_loader(directory)
    tokenizer = load_tokenizer() if find_tokenizer(directory) else None
    vocab = tokenizer.vocab_size if tokenizer else None
    config, weights, notes = (read_meta if kind == "meta" else read_mlx)(directory, vocab)
    if tokenizer is not None:
        config = replace(config, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, eot_ids=tuple(tokenizer.eot_ids))
        if tokenizer.vocab_size != config.vocab_size:
            raise LlamachatError(
                f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the embedding {config.vocab_size} rows; they must match"
            )
    return Checkpoint(directory, kind, config, weights, (lambda: tokenizer) if tokenizer else load_tokenizer, notes)


# -------------------------------------------------------------------------------------------------
# The config alone (for `llamachat info`): no weights read, a params.json or config.json is enough


@dataclass
class ConfigOnly:
    config: ModelConfig
    format: str
    notes: list[str]
    weight_files: list[Path]
    rope_scaling: dict | None = None  # Llama-3.1-style scaling in HF's rope_scaling terms (llama3 divisors)


def read_config_only(path: str | Path) -> ConfigOnly:
    """A model's ModelConfig from its config file (or GGUF header), without reading weights."""
    with _config_named(Path(path).expanduser()):
        return _read_config_only(path)


def _read_config_only(path: str | Path) -> ConfigOnly:
    from .hf import read_hf_config, read_json
    from .meta import config_from_params, llama3_rope

    path = Path(path).expanduser()
    if path.is_dir() and not any(path.glob("*.gguf")):  # a directory with only a config file is enough
        path = next((path / n for n in ("params.json", "config.json") if (path / n).is_file()), path)
    if path.is_file() and path.suffix == ".json" and path.name != "model.safetensors.index.json":
        directory, config_file = path.parent, path
    else:
        kind, target = detect_format(path)
        if kind == "gguf":
            from .gguf import GGUFFile, read_config

            gf = GGUFFile(target)
            return ConfigOnly(read_config(gf), "gguf", [], [target], _gguf_rope(gf))
        directory = target
        config_file = directory / ("params.json" if kind == "meta" else "config.json")
    raw = read_json(config_file)
    weight_files = [p for p in directory.iterdir() if p.suffix in (".pth", ".safetensors", ".npz")] if directory.is_dir() else []
    if "hidden_size" in raw:
        config, extras = read_hf_config(config_file)
        fmt = "mlx-lm" if extras.get("quantization") else "hf"
        return ConfigOnly(config, fmt, [], weight_files, extras.get("llama3_rope"))
    tokenizer_file = find_tokenizer(directory)
    vocab = None
    if int(raw.get("vocab_size", -1)) <= 0 and tokenizer_file is not None:
        from ..tokenizer import load_tokenizer

        vocab = load_tokenizer(tokenizer_file).vocab_size
    config, notes = config_from_params(raw, str(config_file), vocab, directory.name)
    if "hidden_dim" not in raw and "multiple_of" not in raw:
        notes.append("no multiple_of or hidden_dim: the FFN size assumes multiple_of 256")
    return ConfigOnly(config, "meta" if config_file.name == "params.json" else "mlx", notes, weight_files, llama3_rope(raw))


def _gguf_rope(gf) -> dict | None:
    """GGUF stores Llama-3.1's scaling only as per-frequency divisors (`rope_freqs`); the lowest
    frequencies are divided by the factor itself."""
    if "rope_freqs.weight" not in gf.tensors:
        return None
    return {"rope_type": "llama3 (rope_freqs)", "factor": float(gf.tensor("rope_freqs.weight").max())}
