"""The llamacpp backend (llama.cpp's engine through llama-cpp-python) against outside references:
transformers on tiny random GGUF files (F32, and Q5_0, a type llamachat's own reader refuses), and
the NumPy reference on the default model; its cache (truncate, several at once, Ctrl-C in the middle
of a prompt, the opaque saved state), `auto`, and the one-line refusals."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from conftest import run_cli
from llamachat_llamacpp import interrupt, library
from llamachat_llamacpp.model import N_BATCH
from tiny_models import TinySpec, canonical_weights, dequantized, hf_logits, hf_model, load_into_hf, write_gguf, write_hf

import llamachat
from llamachat import transcript
from llamachat.errors import LlamachatError
from llamachat.plugins import registry
from llamachat.sampling import SamplerChain
from llamachat.session import Session

SPEC = TinySpec(context=2048)
IDS = [1, 450, 4996, 17354, 1701, 432, 17204, 975, 278, 17366, 11203, 29889] * 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(HF model, F32 GGUF path, the model on llamacpp, the model on numpy)."""
    hf = hf_model(SPEC, seed=3)
    path = write_gguf(tmp_path_factory.mktemp("lcpp") / "tiny.gguf", SPEC, canonical_weights(hf, SPEC))
    return hf, path, llamachat.load(path, "llamacpp", threads=2), llamachat.load(path, "numpy")


@pytest.fixture(scope="module")
def default_llamacpp(default_model_path):
    return llamachat.load(default_model_path, "llamacpp", threads=2)


def fresh_logits(model, ids: list[int]) -> np.ndarray:
    return model.runner.forward(ids, model.runner.new_cache(len(ids) + 8))


# -- the forward pass against transformers -------------------------------------------------------------


def test_f32_prefill_matches_transformers_and_numpy(tiny):
    """F32 weights, but llama.cpp keeps the KV cache in float16: measured max |diff| 0.004 on
    logits of std ~1; bound 0.01 (a position or RoPE-layout slip gives differences of order 1)."""
    hf, _, lcpp, numpy = tiny
    logits = lcpp.logits(IDS)
    assert logits.dtype == np.float32 and logits.shape == (len(IDS), SPEC.vocab)
    assert np.abs(logits - hf_logits(hf, IDS)).max() < 1e-2
    assert np.abs(logits - numpy.logits(IDS)).max() < 1e-2


def test_prompt_longer_than_a_batch_then_cached_decode_steps(tiny):
    """600 ids go to llama_decode in two calls (N_BATCH 512); then steps of one and three tokens on
    the warm cache give what transformers gives for the whole sequence."""
    hf, _, lcpp, _ = tiny
    ids = [int(i) for i in np.random.default_rng(0).integers(3, SPEC.vocab, 606)]
    assert len(ids) > N_BATCH
    runner = lcpp.runner
    cache = runner.new_cache(1024)
    rows = [runner.forward(ids[:600], cache, all_logits=True)]
    rows.append(runner.forward(ids[600:603], cache, all_logits=True))
    rows += [runner.forward([t], cache)[None] for t in ids[603:]]
    assert len(cache) == 606
    np.testing.assert_allclose(np.concatenate(rows), hf_logits(hf, ids), atol=2e-2)  # measured 0.0104 (f16 cache)


def test_a_type_llamachat_does_not_read_runs_as_it_is(tmp_path):
    """Q5_0 (not among llamachat's own types): llamacpp runs the file, close to transformers on
    gguf's dequantization of the same blocks (ggml multiplies Q5_0 rows by 8-bit-quantized
    activations: measured max 0.02 here, bound 0.1); numpy refuses it in one line."""
    hf = hf_model(SPEC, seed=5)
    weights = canonical_weights(hf, SPEC)
    path = write_gguf(tmp_path / "tiny.Q5_0.gguf", SPEC, weights, qtype="Q5_0")
    load_into_hf(hf, dequantized(weights, "Q5_0"), SPEC)
    model = llamachat.load(path, "llamacpp", threads=2)
    assert model.runner.dtype == "Q5_0"
    assert np.abs(model.logits(IDS) - hf_logits(hf, IDS)).max() < 0.1
    with pytest.raises(LlamachatError, match=r"blk\.0\.attn_q\.weight is Q5_0, which llamachat does not read"):
        llamachat.load(path, "numpy")


# -- the cache ---------------------------------------------------------------------------------------


def test_truncate_drops_positions_from_n(tiny):
    _, _, lcpp, _ = tiny
    runner = lcpp.runner
    cache = runner.new_cache(64)
    runner.forward(IDS, cache)
    cache.truncate(10)
    assert len(cache) == 10
    np.testing.assert_allclose(runner.forward([999], cache), fresh_logits(lcpp, IDS[:10] + [999]), atol=2e-4)
    with pytest.raises(ValueError, match="cannot truncate a cache of 11 tokens to 12"):
        cache.truncate(12)


def test_caches_alive_at_once_do_not_share_cells(tiny):
    _, _, lcpp, _ = tiny
    runner = lcpp.runner
    a, b = runner.new_cache(64), runner.new_cache(64)
    runner.forward(IDS[:20], a)
    runner.forward(IDS[5:9], b)
    step_a = runner.forward([IDS[20]], a)
    step_b = runner.forward([IDS[9]], b)
    # against one batch of the same ids: other matrix shapes, float rounding of ~3e-5 (measured)
    np.testing.assert_allclose(step_a, fresh_logits(lcpp, IDS[:21]), atol=2e-4)
    np.testing.assert_allclose(step_b, fresh_logits(lcpp, IDS[5:10]), atol=2e-4)


def test_a_full_cache_refuses_more(tiny):
    _, _, lcpp, _ = tiny
    cache = lcpp.runner.new_cache(16)
    lcpp.runner.forward(IDS[:16], cache)
    with pytest.raises(ValueError, match="17 tokens do not fit the cache .16."):
        lcpp.runner.forward([5], cache)
    with pytest.raises(ValueError, match="token ids must be in 0..31999, got 32000"):
        lcpp.runner.forward([32000], lcpp.runner.new_cache(4))


def test_ctrl_c_in_the_middle_of_a_prompt_leaves_the_cache_as_it_was(tiny, monkeypatch):
    """A real SIGINT, raised from llama.cpp's abort callback after 40 graph nodes of a 600-token
    prompt: llama_decode stops, KeyboardInterrupt follows, and the cache (llama.cpp's cells too:
    the next positions must be free) holds exactly what it held before."""
    _, _, lcpp, _ = tiny
    runner = lcpp.runner
    cache = runner.new_cache(1024)
    runner.forward(IDS[:10], cache)
    calls = []
    should_abort = interrupt.AbortFlag._should_abort

    def counting(self, data):
        calls.append(1)
        if len(calls) == 40:
            signal.raise_signal(signal.SIGINT)
        return should_abort(self, data)

    monkeypatch.setattr(interrupt.AbortFlag, "_should_abort", counting)
    prompt = [int(i) for i in np.random.default_rng(1).integers(3, SPEC.vocab, 600)]
    with pytest.raises(KeyboardInterrupt):
        runner.forward(prompt, cache)
    assert 40 <= len(calls) < 60  # stopped within a few nodes of the signal, not at the end of the prompt
    assert len(cache) == 10 and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    np.testing.assert_allclose(runner.forward(IDS[10:12], cache), fresh_logits(lcpp, IDS[:12]), atol=2e-4)


def test_state_round_trip_and_a_state_of_another_model(tiny, default_llamacpp):
    _, _, lcpp, _ = tiny
    runner = lcpp.runner
    cache = runner.new_cache(64)
    runner.forward(IDS, cache)
    cache.truncate(10)
    state = cache.state()
    assert set(state) == {"blob"} and state["blob"].dtype == np.uint8
    restored = runner.new_cache(64)
    restored.load_state(state)
    assert len(restored) == 10
    np.testing.assert_allclose(runner.forward([999], restored), fresh_logits(lcpp, IDS[:10] + [999]), atol=2e-4)
    other = default_llamacpp.runner.new_cache(64)
    with pytest.raises(ValueError, match="llama.cpp refused the saved cache"):
        other.load_state(state)
    assert len(other) == 0
    with pytest.raises(ValueError, match="not llama.cpp's"):
        other.load_state({"k": np.zeros((1, 1, 1, 1), np.float32), "v": np.zeros((1, 1, 1, 1), np.float32)})


# -- the default model against the NumPy reference -----------------------------------------------------

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain what a CPU does in two sentences.",
    "List three primary colors.",
    "How many legs does a spider have?",
]


def test_default_model_logits_against_numpy_and_llama_cpp_s_own_api(default_model, default_llamacpp):
    """ggml multiplies the Q4_1 weights by activations it quantizes to 8 bits (Q8_1) and keeps the
    KV cache in float16, where numpy dequantizes the weights and computes in float32. Measured on
    these prompts: max |diff| 2.1 (llama-cpp-python's own `Llama` differs from numpy by as much)
    over logits spanning ~70, top-1 the same at ~95% of the positions: bounds 3.0 and 90%.
    Against `Llama` itself, on the same settings (flash attention on, as llama.cpp's default
    'auto' turns it on on the CPU): the same numbers, up to float rounding."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(default_model.path), n_ctx=512, n_threads=2, logits_all=True, flash_attn=True, verbose=False)
    for prompt in PROMPTS[:3]:
        ids = default_model.encode_prompt(prompt)
        ours, theirs = default_llamacpp.logits(ids), default_model.logits(ids)
        assert np.abs(ours - theirs).max() < 3.0
        assert (ours.argmax(-1) == theirs.argmax(-1)).mean() >= 0.9
        llm.reset()
        llm.eval(ids)
        assert np.abs(ours - np.asarray(llm.scores[: len(ids)])).max() < 1e-3


def greedy(model, prompt: str, n: int = 32) -> list[int]:
    ids = model.encode_prompt(prompt)
    runner, cache, out = model.runner, model.runner.new_cache(len(ids) + n), []
    logits = runner.forward(ids, cache)
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = runner.forward([out[-1]], cache)
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_replies_match_numpy_or_part_where_the_margin_is_thin(default_model, default_llamacpp, prompt):
    """32 greedy tokens on each backend. Where they part, numpy's own top-2 margin at that step
    must be within the logit difference bounded above (3.0): a near tie, not a wrong model (the
    first prompt parts at once: numpy's 'The' leads 'L' by 0.08, and llama.cpp's own `Llama`
    answers "L'Étoile" too)."""
    ours, theirs = greedy(default_llamacpp, prompt), greedy(default_model, prompt)
    if ours == theirs:
        return
    at = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    ids = default_model.encode_prompt(prompt) + theirs[:at]
    logits = default_model.runner.forward(ids, default_model.runner.new_cache(len(ids)))
    top2 = np.sort(logits)[-2:]
    assert top2[1] - top2[0] < 3.0, f"parted at token {at} with a margin of {top2[1] - top2[0]:.2f}"


# -- sessions ----------------------------------------------------------------------------------------


def chain() -> SamplerChain:
    c = SamplerChain(registry().samplers, ["greedy"], seed=0)
    c.set("temperature", 0)
    return c


def test_saved_session_resumes_with_its_llama_cpp_cache(default_model_path):
    model = llamachat.load(default_model_path, "llamacpp", threads=2)
    session = Session(model, chain(), max_tokens=16)
    session.ask("What is the capital of France?")
    transcript.save(session, "lcpp")
    saved = transcript.read("lcpp")
    assert set(saved.cache_state) == {"blob"}
    resumed = Session(model, chain(), max_tokens=16)
    assert transcript.restore(resumed, saved) == f"restored 2 messages and {len(session.ledger)} cached tokens (no re-evaluation)"
    follow_up = resumed.ask("And of Germany?")
    assert follow_up.stats.cached_tokens >= len(session.ledger) - 2
    assert follow_up.text == session.ask("And of Germany?").text


def test_saved_llama_cpp_state_of_another_engine_version_is_re_evaluated(default_model_path, monkeypatch):
    model = llamachat.load(default_model_path, "llamacpp", threads=2)
    session = Session(model, chain(), max_tokens=8)
    session.ask("Hi")
    transcript.save(session, "old")
    monkeypatch.setattr(model.runner, "engine", "llama-cpp-python 0.3.1")
    notice = transcript.restore(Session(model, chain(), max_tokens=8), transcript.read("old"))
    assert notice == "restored 2 messages; the conversation will be re-evaluated on the next turn (saved with a different engine)"


def test_saved_state_llama_cpp_refuses_is_re_evaluated_saying_why(default_model_path, tiny):
    """A cache file whose blob llama.cpp cannot read (here: another model's, under this session's
    name and ledger) costs a re-evaluation, with llama.cpp's reason."""
    model = llamachat.load(default_model_path, "llamacpp", threads=2)
    session = Session(model, chain(), max_tokens=8)
    session.ask("Hi")
    transcript.save(session, "swapped")
    _, _, tiny_lcpp, _ = tiny
    other = tiny_lcpp.runner.new_cache(64)
    tiny_lcpp.runner.forward(IDS[:5], other)
    saved = transcript.read("swapped")
    saved.cache_state = other.state()
    resumed = Session(model, chain(), max_tokens=8)
    notice = transcript.restore(resumed, saved)
    assert notice.startswith(
        "restored 2 messages; the conversation will be re-evaluated on the next turn (llama.cpp refused the saved cache"
    )
    assert len(resumed.cache) == 0 and resumed.ledger == []


# -- auto ------------------------------------------------------------------------------------------------


def test_auto_picks_llamacpp_for_a_gguf_and_numpy_otherwise(tmp_path, default_model_path, monkeypatch):
    from llamachat.backends import choose_backend

    assert choose_backend("gguf") == ("llamacpp", "a GGUF file on the CPU, and llama-cpp-python is installed")
    assert choose_backend("hf") == ("numpy", "the reference backend: a hf checkpoint on the CPU")
    model = llamachat.load(default_model_path, "auto")
    assert model.backend == "llamacpp" and model.backend_reason.startswith("a GGUF file")
    monkeypatch.setattr(library, "importable", lambda: (False, "llama-cpp-python is not installed"))
    assert choose_backend("gguf") == ("numpy", "the reference backend: llama-cpp-python is not installed")


def test_default_profile_chats_on_llamacpp_and_info_says_why(default_model_path):
    from test_repl import chat

    model = llamachat.load(default_model_path, "auto")
    code, out, _ = chat(model, "/info\r/quit\r")
    assert "backend  llamacpp (Q4_1, " in out and "chosen by auto: a GGUF file on the CPU, and llama-cpp-python is installed" in out
    done = run_cli("-p", "Name a primary color.", "--temp", "0", "-n", "8", "-v")
    assert done.returncode == 0 and b"on llamacpp (Q4_1)" in done.stderr and done.stdout.strip()
    assert b"llama_model_loader" not in done.stderr and b"llama_context" not in done.stderr  # llama.cpp's log stays off the screen
    debug = run_cli("-p", "Hi", "--temp", "0", "-n", "2", "--debug")
    assert b"llamachat.llamacpp: " in debug.stderr  # and --debug shows it


# -- bad input: one line each --------------------------------------------------------------------------


def one_line(out) -> str:
    err = out.stderr.decode()
    assert out.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_non_gguf_model_names_the_convert_command(tmp_path):
    hf_dir = write_hf(tmp_path / "hf", hf_model(TinySpec()))
    err = one_line(run_cli("-p", "hi", "-m", str(hf_dir), "--backend", "llamacpp"))
    assert f"the llamacpp backend runs GGUF files only, and {hf_dir} is not one: make one with `llamachat convert {hf_dir} out.gguf`" in err


def test_a_gguf_llama_cpp_refuses_gives_its_reason(tmp_path):
    """A file llamachat reads but llama.cpp refuses (a tensor more than the architecture has, which
    llamachat's reader passes over): llama.cpp's own reason, from its log, in the one line."""
    hf = hf_model(SPEC, seed=3)
    weights = canonical_weights(hf, SPEC) | {"blk.0.extra.weight": np.ones(8, np.float32)}
    path = write_gguf(tmp_path / "odd.gguf", SPEC, weights)
    err = one_line(run_cli("-p", "hi", "-m", str(path), "--backend", "llamacpp"))
    assert f"{path}: llama.cpp cannot load it (" in err and "wrong number of tensors" in err


def test_device_gpu_on_a_cpu_only_build(default_model_path):
    if library.library().llama_supports_gpu_offload():
        pytest.fail("this test expects the CPU-only build that make test compiles")
    err = one_line(run_cli("-p", "hi", "--backend", "llamacpp", "--device", "gpu"))
    assert "this llama-cpp-python was built for the CPU only, so device gpu cannot run" in err


def test_llama_cpp_python_missing_says_how_to_install(monkeypatch, capsys):
    from llamachat import cli

    monkeypatch.setattr(library, "importable", lambda: (False, f"llama-cpp-python is not installed: {library.INSTALL}"))
    monkeypatch.setattr("sys.stdin", None)  # -p alone: nothing piped
    assert cli.main(["-p", "hi", "--backend", "llamacpp"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "backend 'llamacpp' cannot run here: llama-cpp-python is not installed: pip install 'llamachat[llamacpp]'" in err
    )


def test_other_options_are_refused(default_model_path):
    for flags, message in (
        (("--dtype", "bf16"), "the llamacpp backend runs the file's own types (asked for dtype bf16"),
        (("--quantize", "int4"), "the llamacpp backend has no quantize option"),
        (("--device", "cuda"), "the llamacpp backend takes device cpu or gpu, got 'cuda'"),
    ):
        assert message in one_line(run_cli("-p", "hi", "--backend", "llamacpp", *flags))
