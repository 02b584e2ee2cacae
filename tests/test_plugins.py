"""Plugins come from the `llamachat` entry-point group, built-ins included."""

from __future__ import annotations

import json

from conftest import run_cli

from llamachat.plugins import registry


def test_builtins_register_through_entry_points():
    reg = registry()
    builtins = [p for p in reg.plugins if p.builtin]
    assert {p.name for p in builtins} == {"numpy", "torch", "mlx", "llamacpp", "samplers", "templates"}
    assert reg.plugins[: len(builtins)] == builtins  # built-ins load and register first
    assert all(p.distribution.startswith("llamachat ") for p in builtins)
    assert (
        {"numpy", "torch", "mlx", "llamacpp"} <= set(reg.backends)
        and {"greedy", "temperature"} <= set(reg.samplers)
        and "jinja" in reg.templates
    )
    assert reg.owner[("backends", "numpy")] == "numpy"
    assert reg.problems == []


def test_plugins_command_lists_everything():
    out = run_cli("plugins", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    by_name = {p["name"]: p for p in data["plugins"]}
    assert by_name["numpy"]["backends"] == ["numpy"]
    assert by_name["numpy"]["distribution"].startswith("llamachat ")
    temperature = by_name["samplers"]["samplers"]["temperature"]
    assert temperature == [{"name": "temperature", "default": 0.8, "range": "a number from 0 to 100", "help": temperature[0]["help"]}]
    assert "llama-2" in by_name["templates"]["templates"]
    text = run_cli("plugins").stdout.decode()
    assert "numpy (llamachat" in text and "backend  numpy" in text and "temperature = 0.8" in text


def test_outside_plugins_can_be_switched_off():
    out = run_cli("plugins", "--json", env={"LLAMACHAT_PLUGINS": ""})
    plugins = json.loads(out.stdout)["plugins"]
    assert {p["name"] for p in plugins} == {"numpy", "torch", "mlx", "llamacpp", "samplers", "templates"} and all(
        p["builtin"] for p in plugins
    )
