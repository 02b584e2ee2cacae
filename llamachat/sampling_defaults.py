"""Where each sampler setting comes from, and the model's own recommendation.

Precedence, highest first: command-line flags and `/set`, the user's profile, the model's own
recommendation, llamachat's built-in values (each sampler plugin's `Param.default`, and
sampling.DEFAULT_CHAIN). `resolve_sampling` is the merge, as a pure function that returns the values
and, for each, the layer it came from; `/sampler` and `/info` show that provenance.

The model's recommendation is read the way llama.cpp reads it (common/common.cpp,
common_init_sampler_from_model; gguf-py/gguf/metadata.py for generation_config.json): a GGUF's
`general.sampling.*` keys, a Hugging Face `generation_config.json` (`temperature`, `top_p`, ...;
`do_sample` is ignored, as llama.cpp ignores it), and for the default model, which has neither, what
its model card samples with (default_model.RECOMMENDED_SAMPLING).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUILT_IN = "built-in"

# GGUF key (gguf.Keys.General.SAMPLING_*) -> llamachat sampler parameter, and its type
GGUF_SAMPLING_KEYS: dict[str, tuple[str, type]] = {
    "general.sampling.temp": ("temperature", float),
    "general.sampling.top_k": ("top_k", int),
    "general.sampling.top_p": ("top_p", float),
    "general.sampling.min_p": ("min_p", float),
    "general.sampling.xtc_probability": ("xtc_probability", float),
    "general.sampling.xtc_threshold": ("xtc_threshold", float),
    "general.sampling.penalty_last_n": ("repeat_last_n", int),
    "general.sampling.penalty_repeat": ("repeat_penalty", float),
    "general.sampling.mirostat": ("mirostat", int),
    "general.sampling.mirostat_tau": ("mirostat_tau", float),
    "general.sampling.mirostat_eta": ("mirostat_eta", float),
}

# generation_config.json key -> llamachat sampler parameter (the first key present wins)
GENERATION_CONFIG_KEYS: dict[str, tuple[tuple[str, ...], type]] = {
    "temperature": (("temperature",), float),
    "top_k": (("top_k",), int),
    "top_p": (("top_p",), float),
    "min_p": (("min_p",), float),
    "typical_p": (("typical_p",), float),
    "xtc_probability": (("xtc_probability",), float),
    "xtc_threshold": (("xtc_threshold",), float),
    "repeat_last_n": (("penalty_last_n",), int),
    "repeat_penalty": (("penalty_repeat", "repetition_penalty"), float),
    "mirostat": (("mirostat",), int),
    "mirostat_tau": (("mirostat_tau",), float),
    "mirostat_eta": (("mirostat_eta",), float),
}


def from_gguf_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler values a GGUF file's `general.sampling.*` keys recommend (none: {})."""
    found = {}
    for key, (param, kind) in GGUF_SAMPLING_KEYS.items():
        value = metadata.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[param] = kind(value)
    return found


def from_generation_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler values a Hugging Face generation_config.json recommends (none: {})."""
    found = {}
    for param, (keys, kind) in GENERATION_CONFIG_KEYS.items():
        value = next((config[k] for k in keys if k in config), None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[param] = kind(value)
    return found


def read_generation_config(directory: Path) -> dict[str, Any]:
    """from_generation_config of `directory`/generation_config.json; {} when there is none or it is
    not a JSON object (a recommendation is optional: a broken one does not stop the model loading)."""
    path = directory / "generation_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return from_generation_config(config) if isinstance(config, dict) else {}


def resolve_sampling(layers: Sequence[tuple[str, Mapping[str, Any]]]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge sampler settings given as (source, values) layers, lowest precedence first, e.g.
    [("built-in", ...), ("model", ...), ("profile default", ...), ("flag", ...)]: a layer's value
    (None means unset) replaces those below it. Returns (values, the source of each value)."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for name, value in layer.items():
            if value is not None:
                values[name], sources[name] = value, source
    return values, sources


def group_by_source(values: Mapping[str, Any], sources: Mapping[str, str]) -> list[str]:
    """`source: name=value, ...` per source, in the order the sources first appear (for /sampler, /info)."""
    groups: dict[str, list[str]] = {}
    for name, value in values.items():
        groups.setdefault(sources.get(name, BUILT_IN), []).append(f"{name}={value}")
    return [f"{source}: {', '.join(items)}" for source, items in groups.items()]
