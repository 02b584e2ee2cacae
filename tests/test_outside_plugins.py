"""An outside plugin (examples/llamachat-example-plugin), installed for real into a temporary target,
and a broken one: what `llamachat plugins`, --backend, -o and the chat make of them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

EXAMPLE = Path(__file__).parent.parent / "examples" / "llamachat-example-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> str:
    """The example plugin pip-installed into a folder, plus a plugin whose import fails."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        check=True,
        capture_output=True,
    )
    dist = target / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[llamachat]\nbroken = broken_plugin_module\n")
    (target / "broken_plugin_module.py").write_text("raise ImportError('this plugin needs a library that is not here')\n")
    return str(target)


def plugins(site: str, **env) -> dict:
    out = run_cli("plugins", "--json", env={"PYTHONPATH": site, **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_outside_plugin_is_listed_after_the_builtins(site):
    data = plugins(site)
    names = [p["name"] for p in data["plugins"]]
    assert names.index("example") > max(names.index(b) for b in ("numpy", "torch", "samplers", "templates"))
    example = next(p for p in data["plugins"] if p["name"] == "example")
    assert example["distribution"] == "llamachat-example-plugin 0.1.0" and not example["builtin"]
    assert example["backends"] == ["counting"] and list(example["samplers"]) == ["top_a"]


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(site):
    data = plugins(site)
    assert any("plugin broken (broken-plugin 0.1) failed to load and was skipped" in p and "ImportError" in p for p in data["problems"])
    out = run_cli("-p", "hi", "-n", "2", env={"PYTHONPATH": site})
    assert out.returncode == 0  # the chat does not crash because of a plugin
    assert "failed to load and was skipped" in out.stderr.decode()


def test_llamachat_plugins_selects_outside_plugins(site):
    assert {p["name"] for p in plugins(site, LLAMACHAT_PLUGINS="")["plugins"]} == {
        "numpy",
        "torch",
        "mlx",
        "llamacpp",
        "samplers",
        "templates",
    }
    only = plugins(site, LLAMACHAT_PLUGINS="llamachat-example-plugin")
    assert "example" in {p["name"] for p in only["plugins"]} and only["problems"] == []


def test_outside_backend_sampler_and_clashing_parameter(site, tiny_gguf):
    out = run_cli(
        "-p", "hi", "-m", str(tiny_gguf[2]), "--backend", "counting", "--samplers", "top_a,temperature",
        "-o", "top_a=0.2", "-o", "top_a.temperature=0.5", "-n", "3", env={"PYTHONPATH": site},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    bad = run_cli("-p", "hi", "-o", "top_a=7", env={"PYTHONPATH": site})
    assert bad.returncode == 2 and "top_a takes a number from 0 to 1" in bad.stderr.decode()


def test_clashing_parameter_in_process(site, monkeypatch):
    """A clashing parameter name is reachable as sampler.param; each sampler reads its own value."""
    import numpy as np

    monkeypatch.syspath_prepend(site)
    from llamachat import plugins as plugin_registry
    from llamachat.sampling import SamplerChain

    plugin_registry.reset()
    try:
        reg = plugin_registry.registry()
        chain = SamplerChain(reg.samplers, ["top_a", "temperature"])
        assert "top_a.temperature" in chain.params and chain.settings["temperature"] == 0.8
        chain.set("top_a.temperature", 2.0)
        assert chain.settings_for("top_a")["temperature"] == 2.0 and chain.settings_for("temperature")["temperature"] == 0.8
        assert "top_a(top_a=0.0, top_a.temperature=2.0)" in chain.describe()
        assert isinstance(chain.sample(np.zeros(8, np.float32), []), int)
    finally:
        plugin_registry.reset()


def test_a_plugin_planted_in_the_working_directory_never_runs(tmp_path):
    """Issue 15 case 15: under `python -m llamachat` Python puts the working directory on sys.path, and
    a .dist-info planted there was loaded as a plugin. Only installed distributions count."""
    dist = tmp_path / "planted_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: planted-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[llamachat]\nplanted = planted_module\n")
    ran = tmp_path / "ran"
    (tmp_path / "planted_module.py").write_text(f"open({str(ran)!r}, 'w').close()\n")
    out = subprocess.run([sys.executable, "-m", "llamachat", "plugins", "--json"], cwd=tmp_path, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert not ran.exists() and "planted" not in [p["name"] for p in data["plugins"]]
    assert "numpy" in [p["name"] for p in data["plugins"]]
    assert any("plugin planted-plugin in the working directory" in p and "only from installed distributions" in p for p in data["problems"])
