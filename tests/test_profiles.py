"""TOML profiles: shipped ones, user overrides, and one clear line for every kind of bad profile."""

from __future__ import annotations

import pytest
from conftest import run_cli

from llamachat.errors import LlamachatError
from llamachat.plugins import registry
from llamachat.profiles import available_profiles, load_profile, parse_profile, user_profile_dir

PARAMS = {p.name: p for s in registry().samplers.values() for p in s.params}


@pytest.mark.parametrize("name", ["default", "llama2-7b-chat", "llama2-13b-chat", "torch", "torch-int4", "mlx", "numpy-reference"])
def test_shipped_profiles_parse(name):
    profile = load_profile(name, PARAMS)
    assert set(profile) == {"model", "backend", "sampler", "chat"}
    assert all(s in registry().samplers for s in profile["sampler"].get("chain", []))


def test_llama2_13b_profile_is_mlx_4bit_with_the_llama2_template():
    p = load_profile("llama2-13b-chat", PARAMS)
    assert p["backend"]["name"] == "mlx" and p["model"]["template"] == "llama-2" and p["model"]["context"] == 4096


def test_user_profile_overrides_a_shipped_one():
    user_profile_dir().mkdir(parents=True)
    (user_profile_dir() / "default.toml").write_text("[sampler]\ntemperature = 0.1\n")
    assert load_profile("default", PARAMS)["sampler"] == {"temperature": 0.1}
    assert available_profiles()["default"].endswith("default.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model\npath = 1", r"malformed TOML: .*line 1, column 7"),
        ("[chat]\nmax_tokens = \n", r"malformed TOML: .*line 2"),
        ("[sampler]\ntemprature = 0.5\n", r"unknown key 'temprature' in \[sampler\]; did you mean 'temperature'\?"),
        ("[chatt]\nsystem = 'x'\n", r"unknown section \[chatt\]; did you mean 'chat'\?"),
        ("[chat]\nmax_tokens = 'many'\n", r"\[chat\] max_tokens must be int, got 'many'"),
        ("[chat]\noverflow = 'wrap'\n", r"overflow must be one of drop-oldest, stop"),
        ("[backend]\nthreads = true\n", r"\[backend\] threads must be int, got True"),
        ("[sampler]\ntemperature = 'hot'\n", r"^my.toml: \[sampler\] temperature takes a number from 0 to 100, got 'hot'"),
        ("[sampler]\nseed = -5\n", r"^my.toml: \[sampler\] seed takes an integer >= 0, got -5"),
        ("[sampler]\ntop_p = 1.5\n", r"^my.toml: \[sampler\] top_p takes a number from 0 to 1, got 1.5"),
        # issue 15 case 9: the ranges the flags have, naming the file
        ("[model]\ncontext = -5\n", r"^my.toml: \[model\] context takes an integer >= 16, got -5"),
        ("[model]\ncontext = 0\n", r"^my.toml: \[model\] context takes an integer >= 16, got 0"),
        ("[backend]\nthreads = -1\n", r"^my.toml: \[backend\] threads takes an integer >= 1, got -1"),
        ("[chat]\nmax_tokens = 0\n", r"^my.toml: \[chat\] max_tokens takes an integer >= 1, got 0"),
        ("[chat]\nstop = [1, 2]\n", r"^my.toml: \[chat\] stop must be a list of strings, got \[1, 2\]"),
        ("[sampler]\nchain = ['top_k', {a = 1}]\n", r"^my.toml: \[sampler\] chain must be a list of strings"),
    ],
)
def test_bad_profiles(text, message):
    with pytest.raises(LlamachatError, match=message):
        parse_profile(text, "my.toml", PARAMS)


def test_a_profiles_thread_count_above_the_cpus_is_refused_naming_the_file(tmp_path):
    """Issue 15 case 4: `threads = 100000` started 100,000 threads; now one line at start-up."""
    many = tmp_path / "many.toml"
    many.write_text("[backend]\nthreads = 100000\n")
    out = run_cli("-p", "hi", "--profile", str(many))
    err = out.stderr.decode()
    assert out.returncode == 2 and err.count("\n") == 1, err
    assert f"{many}: [backend] threads takes an integer from 1 to" in err and "100000" in err


def test_a_profile_that_is_not_utf8_is_one_line_naming_it(tmp_path):
    """Issue 15 case 9: a profile that is not UTF-8 was `internal error: UnicodeDecodeError`."""
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"[chat]\nsystem = 'caf\xe9'\n")
    out = run_cli("-p", "hi", "--profile", str(latin))
    err = out.stderr.decode()
    assert out.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{latin}: not UTF-8 text" in err


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(LlamachatError, match=r"unknown profile 'defualt' .*did you mean 'default'\?"):
        load_profile("defualt", PARAMS)


def test_a_folder_is_no_profile_and_a_missing_file_is_said_so(tmp_path):
    """A folder named dirprof.toml was listed, then refused as "unknown profile 'dirprof' (available:
    ... dirprof ...)"; a missing path was an "unknown profile"."""
    (user_profile_dir() / "dirprof.toml").mkdir(parents=True)
    assert "dirprof" not in available_profiles()
    with pytest.raises(LlamachatError, match=r"unknown profile 'dirprof' \(available: (?!.*dirprof)"):
        load_profile("dirprof", PARAMS)
    with pytest.raises(LlamachatError, match=r"profile file .*none.toml does not exist"):
        load_profile(str(tmp_path / "none.toml"), PARAMS)


def test_cli_profile_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sampler]\ntemperature = 'hot'\n")
    out = run_cli("-p", "hi", "--profile", str(bad))
    assert out.returncode == 2 and out.stderr.decode().count("\n") == 1
    assert "temperature takes a number" in out.stderr.decode()


def test_a_profiles_missing_model_says_where_it_came_from(default_model_path):
    """llama2-7b-chat ships pointing at ~/models/...: without that file the line names the profile and
    the ways out; -m over it runs as usual."""
    out = run_cli("-p", "hi", "--profile", "llama2-7b-chat")
    err = out.stderr.decode()
    assert out.returncode == 2 and err.count("\n") == 1, err
    assert "profile 'llama2-7b-chat' names the model ~/models/llama-2-7b-chat.Q4_0.gguf, which is not here" in err and "-m PATH" in err
    out = run_cli("-p", "hi", "--profile", "llama2-7b-chat", "-m", str(default_model_path), "-n", "2")
    assert out.returncode == 0, out.stderr.decode()


def test_profiles_command_lists_them():
    out = run_cli("profiles")
    assert out.returncode == 0
    for name in ("default", "llama2-7b-chat", "llama2-13b-chat", "torch", "torch-int4", "mlx", "numpy-reference"):
        assert name in out.stdout.decode()


def test_backend_switches_reach_the_backend():
    """[backend] quantize = "int4" in a profile loads the torch backend with the int4 kernel."""
    out = run_cli("-p", "Hi", "--profile", "torch-int4", "--temp", "0", "-n", "4", "-v")
    assert out.returncode == 0, out.stderr.decode()
    assert "on torch (bfloat16+int4)" in out.stderr.decode()
    out = run_cli("-p", "Hi", "--backend", "torch", "--quantize", "int4", "-t", "1", "--temp", "0", "-n", "4", "-v")  # the same as flags
    assert out.returncode == 0 and "on torch (bfloat16+int4)" in out.stderr.decode(), out.stderr.decode()
    user_profile_dir().mkdir(parents=True)
    (user_profile_dir() / "bad.toml").write_text('[backend]\nname = "torch"\nquantize = "int3"\n')
    out = run_cli("-p", "Hi", "--profile", "bad")
    assert out.returncode == 2 and "unknown quantize 'int3'" in out.stderr.decode()
