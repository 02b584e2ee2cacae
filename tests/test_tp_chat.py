"""Tensor parallelism in the real chat (issue 20): `llamachat --tp 2` on a pseudo-terminal against
the one-process chat, on the default model (9 heads over 3 kv heads: 2 + 1 kv heads over 2 ranks).

One scripted chat per world size (module fixtures: a chat costs a start-up and a model load): three
turns, /undo and a new message, /retry, /save, then a fourth turn (the uninterrupted reply the
resumed chats must give). Greedy (--temp 0) replies are compared as the screen shows them, with the
stats line's token counts; a resumed chat starts from the other world size's saved session.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pexpect
import pytest
from safetensors.numpy import load_file

ARGS = ["--backend", "torch", "--temp", "0", "--threads", "1", "-n", "16"]
TURNS = ["Write a haiku about autumn.", "Now one about winter.", "Which one do you prefer?"]
AFTER_UNDO = "Now one about spring."
LAST = "Give each poem a title."  # sent after /save: the reply a resumed chat must give
STATS = re.compile(r"(\d+) tokens, \S+ tok/s, first token \S+ s, prompt (\d+) new / (\d+) cached")


@dataclass(frozen=True)
class Turn:
    """A reply as the screen shows it (lines, trailing blanks dropped) and its stats line's counts."""

    text: list[str]
    generated: int
    new: int
    cached: int


def after_echo(screen: str, line: str) -> list[str]:
    """The lines of `screen` after the last echo of the typed `line` (prompt_toolkit may draw the
    line twice, and how often differs from run to run)."""
    lines = [x.rstrip() for x in screen.splitlines()]
    echoes = [i for i, x in enumerate(lines) if x.endswith(line)]
    assert echoes, f"{line!r} was not echoed: {screen!r}"
    return lines[echoes[-1] + 1 :]


class Chat:
    """The real `llamachat` on a pseudo-terminal, its sessions and profiles in `home`."""

    def __init__(self, home: Path, *args: str):
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "TERM": "dumb",  # rich's Live then draws a reply once, when it ends: the screen text is the reply
            "OMP_NUM_THREADS": "1",
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "HOME": str(home / "home"),
        }
        self.child = pexpect.spawn(sys.executable, ["-m", "llamachat", *ARGS, *args], env=env, timeout=240, encoding="utf-8")
        self.child.expect(">>> ")
        self.opening = self.child.before  # the banner and, resuming, restore's notice

    def command(self, line: str) -> str:
        """What a command printed (its lines after the echo of `line`)."""
        self.child.send(line + "\r")
        self.child.expect(">>> ")
        return "\n".join(after_echo(self.child.before, line))

    def reply(self, line: str) -> Turn:
        """Send a message (or /retry) and read the reply and its stats line."""
        self.child.send(line + "\r")
        self.child.expect(STATS)
        generated, new, cached = (int(g) for g in self.child.match.groups())
        text = [x for x in after_echo(self.child.before, line) if x and x != "loading the model ..."]
        self.child.expect(">>> ")
        return Turn(text, generated, new, cached)

    def quit(self) -> None:
        self.child.send("/quit\r")
        self.child.expect(pexpect.EOF)
        self.child.close()
        assert self.child.exitstatus == 0


@dataclass
class Run:
    """One scripted chat: its turns by name, what /undo said, the folder its session was saved in, and
    the processes it had spawned before and after its last command, /backend torch."""

    turns: dict[str, Turn]
    undo: str
    home: Path
    ranks: tuple[list[int], list[int]]


def scripted_chat(chat: Chat, home: Path) -> Run:
    turns = {f"turn {i}": chat.reply(message) for i, message in enumerate(TURNS, 1)}
    undo = chat.command("/undo")
    turns["after undo"] = chat.reply(AFTER_UNDO)
    turns["retry"] = chat.reply("/retry")
    assert "saved s -> " in chat.command("/save s")
    turns["last"] = chat.reply(LAST)
    before = spawned_ranks(chat.child.pid)
    assert "backend set to torch" in chat.command("/backend torch")  # one process: --tp does not carry over
    ranks = (before, spawned_ranks(chat.child.pid))
    turns["switched"] = chat.reply("Thanks!")  # the chat goes on
    chat.quit()
    return Run(turns, undo, home, ranks)


def spawned_ranks(pid: int) -> list[int]:
    """The processes `pid` started through torch.multiprocessing's spawn (its resource tracker aside)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, default_model_path) -> dict[int, Run]:
    homes = {tp: tmp_path_factory.mktemp(f"tp{tp}") for tp in (1, 2)}
    # both started at once: the prompt comes at once and the model loads behind it, so the --tp 2
    # chat's start-up overlaps the --tp 1 chat's turns
    chats = {tp: Chat(home, "--tp", str(tp)) for tp, home in homes.items()}
    return {tp: scripted_chat(chats[tp], homes[tp]) for tp in (1, 2)}


def test_three_turns_with_tp2_give_the_one_process_replies_and_reuse_the_cache(runs):
    one, two = runs[1].turns, runs[2].turns
    for name in ("turn 1", "turn 2", "turn 3"):
        assert two[name] == one[name], name  # the text and every count of the stats line
        assert two[name].text and two[name].generated > 0
    assert two["turn 1"].cached == 0
    # each later turn reuses the whole prompt of the turn before, and more (its reply)
    for before, now in (("turn 1", "turn 2"), ("turn 2", "turn 3")):
        assert two[now].cached > two[before].new + two[before].cached, now


def test_undo_and_retry_with_tp2_give_the_one_process_replies(runs):
    one, two = runs[1].turns, runs[2].turns
    assert runs[2].undo == runs[1].undo and "removed your message 'Which one do you prefer?' and its reply" in runs[2].undo
    assert two["after undo"] == one["after undo"]
    # /undo gave back turn 3 only: turn 2's prompt and reply stay cached, turn 3's are not
    assert two["turn 2"].new + two["turn 2"].cached < two["after undo"].cached < two["turn 3"].new + two["turn 3"].cached
    assert two["retry"] == one["retry"]
    assert two["retry"].text == two["after undo"].text  # greedy: the same reply again
    assert two["retry"].new == 1  # everything but the last prompt token (its logits start the reply) was cached


def test_the_session_saved_with_tp2_holds_the_one_process_cache(runs):
    """Gathered to rank 0 in the common layout [n_layers, n_kv_heads, tokens, head_dim]."""
    one, two = (load_file(runs[tp].home / "data" / "llamachat" / "sessions" / "s.kv.safetensors") for tp in (1, 2))
    assert one.keys() == two.keys() == {"k", "v"}
    for name in ("k", "v"):
        assert two[name].shape == one[name].shape and one[name].shape[:2] == (30, 3) and one[name].shape[2] > 100
        # 30 layers in float32, the split products summed in another order: 2.8e-5 apart seen (values up to ~20)
        np.testing.assert_allclose(two[name], one[name], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("saved_with", "resumed_with"), [(2, 1), (1, 2)])
def test_a_session_saved_with_one_world_size_resumes_with_the_other(runs, tmp_path, saved_with, resumed_with):
    home = tmp_path / "home"
    shutil.copytree(runs[saved_with].home, home)
    chat = Chat(home, "--tp", str(resumed_with), "--resume", "s")
    restored = re.search(r"restored 6 messages and (\d+) cached tokens \(no re-evaluation\)", chat.opening)
    assert restored, chat.opening
    last = chat.reply(LAST)
    chat.quit()
    uninterrupted = runs[1].turns["last"]
    assert runs[2].turns["last"] == uninterrupted  # the same turn in the --tp 2 chat that saved it
    assert last == uninterrupted  # the text, and the new and cached counts: nothing re-evaluated
    assert last.cached == int(restored.group(1)) and last.new < 20


def test_switching_backend_away_from_tp2_lets_the_other_rank_go(runs):
    """The chat lets the model go at /backend (protocols: `close()`): rank 1 stops then, not at exit
    (close() joins it before /backend answers), and the chat goes on in one process."""
    before, after = runs[2].ranks
    assert len(before) == 1 and after == []
    assert runs[2].turns["switched"].text
