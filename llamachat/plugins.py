"""Finding plugins (entry-point group `llamachat`) and collecting what they register.

Built-in plugins are entry points of the llamachat distribution itself and always load first; outside
plugins follow, limited by LLAMACHAT_PLUGINS (a comma-separated list of distribution names; unset:
all installed; empty: none). A name registered twice keeps its first owner and the clash is reported;
a plugin that fails to import or to register is reported and skipped. Nothing a plugin does crashes
the chat. Plugins come only from installed distributions: a .dist-info in the working directory that
`python -m llamachat` put on sys.path is passed over (and reported), never imported.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

GROUP = "llamachat"
BUILTIN_DIST = "llamachat"
KINDS = ("backends", "samplers", "templates")


@dataclass
class PluginInfo:
    name: str  # the entry point's name
    distribution: str  # "name version"
    builtin: bool
    registered: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})


@dataclass
class Registry:
    """What every loaded plugin registered, by kind and name, and what went wrong on the way."""

    backends: dict[str, Any] = field(default_factory=dict)
    samplers: dict[str, Any] = field(default_factory=dict)
    templates: dict[str, Callable[[str | None], Any]] = field(default_factory=dict)
    plugins: list[PluginInfo] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    owner: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> plugin


def _entry_points(problems: list[str]) -> list[md.EntryPoint]:
    eps = _installed_entry_points(problems)
    builtin = [ep for ep in eps if ep.dist is not None and ep.dist.name == BUILTIN_DIST]
    outside = [ep for ep in eps if ep not in builtin]
    wanted = os.environ.get("LLAMACHAT_PLUGINS")
    if wanted is not None:
        names = {n.strip().lower() for n in wanted.split(",") if n.strip()}
        outside = [ep for ep in outside if ep.dist is not None and ep.dist.name.lower() in names]
    return builtin + sorted(outside, key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))


def _installed_entry_points(problems: list[str]) -> list[md.EntryPoint]:
    """The group's entry points of installed distributions, the first of each name on sys.path (as
    importlib.metadata picks), passing over the working directory where Python put it on the path by
    itself (`python -m llamachat`): a .dist-info planted there is not installed, and never runs."""
    planted_dir = _implicit_working_directory()
    seen: set[str] = set()
    found: list[md.EntryPoint] = []
    planted: dict[str, list[md.EntryPoint]] = {}
    for dist in md.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"] or "").lower()
        eps = [ep for ep in dist.entry_points if ep.group == GROUP]
        if planted_dir is not None and os.path.realpath(str(dist.locate_file(""))) == planted_dir:
            planted.setdefault(name, eps)
        elif name not in seen:
            seen.add(name)
            found += eps
    for name, eps in planted.items():  # a source checkout's own egg-info, also installed, is no news
        if eps and name not in seen:
            problems.append(
                f"plugin {name} in the working directory {planted_dir} was not loaded: plugins come only from installed distributions"
            )
    return found


def _implicit_working_directory() -> str | None:
    """The working directory, if Python put it first on sys.path by itself (`-m`, `-c`; not under -P)
    and nothing else put it there on purpose (PYTHONPATH=.)."""
    if getattr(sys.flags, "safe_path", False) or not sys.path:
        return None
    cwd = os.path.realpath(os.getcwd())
    if os.path.realpath(sys.path[0] or ".") != cwd or any(os.path.realpath(p or ".") == cwd for p in sys.path[1:]):
        return None
    return cwd


def load_registry() -> Registry:
    registry = Registry()
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    infos: dict[str, PluginInfo] = {}
    for ep in _entry_points(registry.problems):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown"
        builtin = ep.dist is not None and ep.dist.name == BUILTIN_DIST
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as e:  # a broken plugin must not take the chat down with it
            registry.problems.append(f"plugin {ep.name} ({dist}) failed to load and was skipped: {type(e).__name__}: {e}")
            continue
        infos[ep.name] = PluginInfo(ep.name, dist, builtin)
        registry.plugins.append(infos[ep.name])
    for kind in KINDS:
        caller = getattr(pm.hook, f"register_{kind}")
        for impl in caller.get_hookimpls():  # registration order: built-ins first
            plugin = impl.plugin_name
            try:
                impl.function(register=_registrar(registry, kind, plugin, infos[plugin]))
            except Exception as e:
                registry.problems.append(f"plugin {plugin} failed to register its {kind} and was skipped: {type(e).__name__}: {e}")
    return registry


def _registrar(registry: Registry, kind: str, plugin: str, info: PluginInfo) -> Callable[..., None]:
    table = getattr(registry, kind)

    def register(*args: Any) -> None:
        name, obj = (args[0].name, args[0]) if len(args) == 1 else args
        if name in table:
            first = registry.owner[(kind, name)]
            registry.problems.append(f"{kind[:-1]} {name!r} from plugin {plugin} ignored: plugin {first} registered it first")
            return
        table[name] = obj
        registry.owner[(kind, name)] = plugin
        info.registered[kind].append(name)

    return register


_registry: Registry | None = None


def registry() -> Registry:
    """The registry, loaded once per process."""
    global _registry
    if _registry is None:
        _registry = load_registry()
    return _registry


def reset() -> None:
    """Forget the loaded registry (tests change LLAMACHAT_PLUGINS and the installed plugins)."""
    global _registry
    _registry = None
