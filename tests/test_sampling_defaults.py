"""Where sampler settings come from: flags and /set over the profile over the model's own
recommendation over the built-in values; the model's recommendation as GGUF, Hugging Face and the
default model's card give it; and /sampler and /info saying which is which."""

from __future__ import annotations

import os
import sys

import pytest
from tiny_models import TinySpec, canonical_weights, hf_model, write_gguf, write_hf

from llamachat.checkpoints import open_checkpoint
from llamachat.cli import build_chain, chat_parser
from llamachat.plugins import registry
from llamachat.profiles import load_profile, parse_profile, user_profile_dir
from llamachat.sampling import DEFAULT_CHAIN, SamplerChain
from llamachat.sampling_defaults import resolve_sampling


def test_each_layer_overrides_the_one_below():
    layers = [
        ("built-in", {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05}),
        ("model", {"temperature": 0.2, "top_p": 0.9, "top_k": 20}),
        ("profile mine", {"top_p": 0.7, "top_k": 10}),
        ("flag", {"top_k": 5, "min_p": None}),  # None: the flag was not given
    ]
    values, sources = resolve_sampling(layers)
    assert values == {"temperature": 0.2, "top_k": 5, "top_p": 0.7, "min_p": 0.05}
    assert sources == {"temperature": "model", "top_k": "flag", "top_p": "profile mine", "min_p": "built-in"}


def _params():
    return SamplerChain(registry().samplers, []).params


def _chain(argv: list[str], profile_text: str, checkpoint):
    """The chain `llamachat ARGV` builds over a profile (as TOML text) and a checkpoint."""
    profile = parse_profile(profile_text, "profile mine", _params())
    return build_chain(chat_parser().parse_args(argv), profile, "mine", checkpoint)


@pytest.fixture(scope="module")
def gguf_with_sampling(tmp_path_factory):
    """A tiny GGUF whose general.sampling.* keys are written by the gguf package's own writer."""
    spec = TinySpec()

    def sampling(w) -> None:
        w.add_sampling_temp(0.6)
        w.add_sampling_top_k(20)
        w.add_sampling_penalty_repeat(1.1)
        w.add_sampling_penalty_last_n(32)

    path = tmp_path_factory.mktemp("gguf") / "tiny-chat.Q8_0.gguf"
    return write_gguf(path, spec, canonical_weights(hf_model(spec), spec), metadata=sampling)


def test_a_ggufs_general_sampling_keys_are_the_models_recommendation(gguf_with_sampling):
    checkpoint = open_checkpoint(gguf_with_sampling)
    assert checkpoint.sampling == {
        "temperature": pytest.approx(0.6),
        "top_k": 20,
        "repeat_penalty": pytest.approx(1.1),
        "repeat_last_n": 32,
    }
    chain = _chain([], "", checkpoint)
    assert chain.settings["top_k"] == 20 and chain.sources["top_k"] == "model (GGUF general.sampling)"
    assert chain.settings["repeat_last_n"] == 32 and chain.settings["min_p"] == 0.05 and chain.sources["min_p"] == "built-in"
    # the profile over the model, a flag over the profile
    chain = _chain(["--temp", "0.3"], "[sampler]\ntemperature = 0.5\ntop_k = 30\n", checkpoint)
    assert (chain.settings["temperature"], chain.sources["temperature"]) == (0.3, "flag")
    assert (chain.settings["top_k"], chain.sources["top_k"]) == (30, "profile mine")
    assert chain.settings["repeat_penalty"] == pytest.approx(1.1)


def test_a_generation_config_json_is_the_models_recommendation(tmp_path):
    """generation_config.json as transformers writes it; do_sample is ignored, as llama.cpp does."""
    from transformers import GenerationConfig

    model = hf_model(TinySpec())
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.7, top_p=0.8, top_k=30, repetition_penalty=1.2)
    directory = write_hf(tmp_path / "tiny-hf", model)
    assert (directory / "generation_config.json").is_file()
    checkpoint = open_checkpoint(directory)
    assert checkpoint.sampling == {"temperature": 0.7, "top_k": 30, "top_p": 0.8, "repeat_penalty": 1.2}
    chain = _chain(["-o", "repeat_penalty=1.0"], "[sampler]\ntop_p = 0.5\n", checkpoint)
    assert chain.sources == chain.sources | {
        "temperature": "model (generation_config.json)",
        "top_p": "profile mine",
        "repeat_penalty": "flag",
    }
    assert (chain.settings["temperature"], chain.settings["top_p"], chain.settings["repeat_penalty"]) == (0.7, 0.5, 1.0)


def test_the_default_profile_leaves_the_default_model_at_its_cards_values(default_model_path):
    chain = build_chain(chat_parser().parse_args([]), load_profile("default", _params()), "default", open_checkpoint(default_model_path))
    assert (chain.settings["temperature"], chain.settings["top_p"]) == (0.2, 0.9)
    assert chain.sources["temperature"] == chain.sources["top_p"] == "model (its model card)"
    assert (chain.settings["top_k"], chain.sources["top_k"]) == (40, "built-in") and chain.chain == list(DEFAULT_CHAIN)
    seeded = build_chain(chat_parser().parse_args(["--seed", "3", "--samplers", "top_k,temperature"]), load_profile("default"), "default")
    assert seeded.chain == ["top_k", "temperature"] and seeded.chain_source == "flag"


def test_sampler_and_info_say_where_each_value_came_from(default_model_path):
    """The real chat in a pseudo-terminal: built-in, the model's card, a user's profile, a flag, /set."""
    import pexpect

    user_profile_dir().mkdir(parents=True)
    (user_profile_dir() / "mine.toml").write_text('[sampler]\ntop_p = 0.7\ntop_k = 20\n[backend]\nname = "numpy"\n')
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    argv = ["-m", "llamachat", "--profile", "mine", "--top-k", "10", "--no-history"]
    child = pexpect.spawn(sys.executable, argv, env=env, timeout=180, encoding="utf-8", dimensions=(24, 250))
    child.expect(">>> ")
    child.sendline("/sampler")
    child.expect("built-in: repeat_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0, repeat_last_n=64, typical_p=1.0, min_p=0.05")
    child.expect("flag: top_k=10")
    child.expect("profile mine: top_p=0.7")
    child.expect(r"model \(its model card\): temperature=0.2")
    child.sendline("/temp 0.4")
    child.expect("temperature set to 0.4")
    child.sendline("/info")
    child.expect("sampler  chain: built-in")
    child.expect("sampler  flag: top_k=10")
    child.expect("sampler  /set: temperature=0.4")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
