"""TOML profiles: which model, backend, template, sampler settings and system prompt to chat with,
and the `ChatSettings` a profile (with the command-line flags over it) decides.

Shipped profiles are package data (`llamachat_profiles`, the top-level profiles/ folder); a file of the same name in the user's config
directory (`<config dir>/profiles/NAME.toml`) overrides one. Command-line flags override the profile.
A profile is data only: it is parsed, checked against the schema below, and never executed.
"""

from __future__ import annotations

import difflib
import importlib.resources
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LlamachatError, as_int
from .lookup import parse_lookup

if TYPE_CHECKING:
    from .protocols import Param

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# section -> key -> accepted Python type(s); [sampler] also takes any sampler parameter.
SCHEMA: dict[str, dict[str, tuple[type, ...]]] = {
    "model": {"path": (str,), "template": (str,), "context": (int,)},
    "backend": {"name": (str,), "device": (str,), "dtype": (str,), "threads": (int,), "quantize": (str,), "context": (int,)},
    "sampler": {"chain": (list,), "seed": (int,)},
    "chat": {
        "system": (str,),
        "max_tokens": (int,),
        "stop": (list, str),
        "markdown": (bool,),
        "overflow": (str,),
        "lookup": (int,),
        "overflow_free": (float, int),
    },
}
OVERFLOW = ("drop-oldest", "stop")


def user_profile_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("llamachat")) / "profiles"


def shipped_profiles() -> dict[str, Any]:
    files = importlib.resources.files("llamachat_profiles")
    return {f.name[: -len(".toml")]: f for f in files.iterdir() if f.name.endswith(".toml")}


def available_profiles() -> dict[str, str]:
    """Profile name -> where it comes from ("shipped" or the user's file path)."""
    found = {name: "shipped" for name in shipped_profiles()}
    user_dir = user_profile_dir()
    if user_dir.is_dir():
        found |= {p.stem: str(p) for p in sorted(user_dir.glob("*.toml")) if p.is_file()}
    return dict(sorted(found.items()))


def load_profile(name_or_path: str, sampler_params: Mapping[str, Param] | None = None) -> dict[str, dict[str, Any]]:
    """A profile by name (user's first, then shipped) or by path, parsed and checked."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml") and path.is_file():
        text, source = _read_text(path, str(path)), str(path)
    elif (user_profile_dir() / f"{name_or_path}.toml").is_file():
        path = user_profile_dir() / f"{name_or_path}.toml"
        text, source = _read_text(path, str(path)), str(path)
    elif name_or_path in shipped_profiles():
        text, source = _read_text(shipped_profiles()[name_or_path], f"profile {name_or_path}"), f"profile {name_or_path}"
    elif name_or_path.endswith(".toml"):
        raise LlamachatError(f"profile file {name_or_path} does not exist (or is not a file)")
    else:
        names = list(available_profiles())
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LlamachatError(f"unknown profile {name_or_path!r} (available: {', '.join(names)}){hint}")
    return parse_profile(text, source, sampler_params)


def _read_text(path: Any, source: str) -> str:
    """A profile's text; one line naming the file if it cannot be read or is not UTF-8 (TOML is)."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LlamachatError(f"{source}: not UTF-8 text (byte {e.start}); a profile is a UTF-8 TOML file") from None
    except OSError as e:
        raise LlamachatError(f"{source}: cannot be read: {e.strerror or e}") from None


def parse_profile(text: str, source: str, sampler_params: Mapping[str, Param] | None = None) -> dict[str, dict[str, Any]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LlamachatError(f"{source}: malformed TOML: {e}") from None  # tomllib says "(at line L, column C)"
    for section, values in data.items():
        if section not in SCHEMA:
            raise LlamachatError(f"{source}: unknown section [{section}]{_closest(section, SCHEMA)} (sections: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise LlamachatError(f"{source}: {section} must be a [{section}] table")
        allowed = dict(SCHEMA[section])
        if section == "sampler" and sampler_params is not None:
            allowed |= {name: (int, float, bool, str) for name in sampler_params}
        for key, value in values.items():
            if key not in allowed:
                if section == "sampler" and sampler_params is None:
                    continue  # checked once the sampler plugins are known
                raise LlamachatError(f"{source}: unknown key {key!r} in [{section}]{_closest(key, allowed)}")
            if not isinstance(value, allowed[key]) or (isinstance(value, bool) and bool not in allowed[key] and int in allowed[key]):
                kinds = " or ".join(t.__name__ for t in allowed[key])
                raise LlamachatError(f"{source}: [{section}] {key} must be {kinds}, got {value!r}")
            if section == "sampler" and sampler_params is not None and key in sampler_params:
                try:
                    sampler_params[key].parse(value)  # the check /set makes, here naming the file
                except ValueError as e:
                    raise LlamachatError(f"{source}: [sampler] {e}") from None
    _check_values(data, source)
    return {section: dict(data.get(section, {})) for section in SCHEMA}


def _check_values(data: dict[str, Any], source: str) -> None:
    """The ranges the flags have (-t, --context, -n, --seed), here naming the file: the one check at
    start-up and for /profile alike."""
    model, backend, sampler, chat = (data.get(s, {}) for s in ("model", "backend", "sampler", "chat"))
    for section, values, key, minimum in (
        ("model", model, "context", 16),
        ("chat", chat, "max_tokens", 1),
        ("sampler", sampler, "seed", 0),
    ):
        if key in values:
            as_int(values[key], f"{source}: [{section}] {key}", minimum)
    if "threads" in backend:
        check_threads(backend["threads"], f"{source}: [backend] threads")
    for section, values, key in (("sampler", sampler, "chain"), ("chat", chat, "stop")):
        items = values.get(key, [])
        if isinstance(items, list) and not all(isinstance(item, str) for item in items):
            raise LlamachatError(f"{source}: [{section}] {key} must be a list of strings, got {items!r}")
    overflow = chat.get("overflow")
    if overflow is not None and overflow not in OVERFLOW:
        raise LlamachatError(f"{source}: [chat] overflow must be one of {', '.join(OVERFLOW)}, got {overflow!r}")
    if "overflow_free" in chat:
        from .session import check_overflow_free

        check_overflow_free(chat["overflow_free"], f"{source}: [chat] overflow_free")
    lookup = data.get("chat", {}).get("lookup")
    if lookup is not None:
        try:
            parse_lookup(lookup, "[chat] lookup")
        except LlamachatError as e:
            raise LlamachatError(f"{source}: {e}") from None
    return {section: dict(data.get(section, {})) for section in SCHEMA}


def check_threads(value: Any, name: str) -> int:
    """A thread count from 1 to the CPUs here: more only queue behind each other (`-t 100000` started
    100,000 threads and stalled the machine), so a larger one is refused, in one line."""
    n = as_int(value, name, 1)
    cpus = os.cpu_count() or 1
    if n > cpus:
        raise LlamachatError(f"{name} takes an integer from 1 to {cpus} (the CPUs here), got {value!r}")
    return n


def _closest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# -- what a profile decides for a chat -------------------------------------------------------------


@dataclass
class ChatSettings:
    """What a profile (and the flags over it) decide for a chat."""

    profile: str = "default"
    model: str | None = None
    backend: str = "numpy"
    template: str | None = None
    device: str | None = None
    dtype: str | None = None
    backend_extra: dict[str, Any] = field(default_factory=dict)  # the profile's threads, quantize, ...
    system: str | None = None
    max_tokens: int = 1024
    context: int | None = None
    overflow: str = "drop-oldest"
    overflow_free: float = 0.5  # drop-oldest frees this share of the context when it fills
    lookup: int | None = None  # lookup decoding's draft tokens; None: the backend's default
    markdown: bool = True
    stop: list[str] = field(default_factory=list)

    @property
    def backend_options(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype, **self.backend_extra}


def settings_from_profile(profile: dict[str, dict[str, Any]], name: str, args: Any = None) -> ChatSettings:
    """ChatSettings from a checked profile, with the command-line flags (an argparse Namespace) over it."""

    def flag(attr: str) -> Any:
        return getattr(args, attr, None) if args is not None else None

    chat, model, backend = profile["chat"], profile["model"], profile["backend"]
    stop = chat.get("stop", [])
    return ChatSettings(
        profile=name,
        model=flag("model") or model.get("path"),
        backend=flag("backend") or backend.get("name", "numpy"),
        template=flag("template") or model.get("template"),
        device=flag("device") or backend.get("device"),
        dtype=flag("dtype") or backend.get("dtype"),
        backend_extra=_backend_extra(backend, flag("threads"), flag("quantize"))
        | ({"tp": as_int(flag("tp"), "--tp", 1)} if flag("tp") is not None else {}),
        system=flag("system") if flag("system") is not None else chat.get("system"),
        max_tokens=as_int(flag("max_tokens") if flag("max_tokens") is not None else chat.get("max_tokens", 1024), "--max-tokens", 1),
        context=as_int(flag("context"), "--context", 16) if flag("context") is not None else model.get("context"),
        overflow=chat.get("overflow", "drop-oldest"),
        overflow_free=float(chat.get("overflow_free", 0.5)),
        lookup=parse_lookup(flag("lookup"), "--lookup") if flag("lookup") is not None else chat.get("lookup"),
        markdown=chat.get("markdown", True),
        stop=[stop] if isinstance(stop, str) else list(stop),
    )


def _backend_extra(backend: dict[str, Any], threads: Any, quantize: str | None) -> dict[str, Any]:
    """The profile's other [backend] options (threads, quantize, ...), with --threads/--quantize over them."""
    extra = {k: v for k, v in backend.items() if k not in ("name", "device", "dtype")}
    if threads is not None:
        extra["threads"] = check_threads(threads, "--threads")
    if quantize is not None:
        extra["quantize"] = quantize
    return extra


def check_profile_model(settings: ChatSettings) -> None:
    """A profile's model that is not on this machine (the shipped LLaMA-2 ones point at ~/models/...):
    one line naming the profile and the ways out, not a bare 'no such file'."""
    if settings.model and not Path(settings.model).expanduser().exists():
        raise LlamachatError(
            f"profile {settings.profile!r} names the model {settings.model}, which is not here: give one with -m PATH, "
            "or point [model] path at your copy in a profile of your own (`llamachat profiles` shows where they go)"
        )
