"""Fuzz tests (issue 15): the session-file reader, the profile reader and the slash commands take any
input to a result or one LlamachatError line, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llamachat
from llamachat import commands, transcript
from llamachat.errors import LlamachatError
from llamachat.plugins import registry
from llamachat.profiles import SCHEMA, parse_profile
from llamachat.sampling import SamplerChain
from llamachat.session import Session

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def tiny(tiny_gguf):
    return llamachat.load(tiny_gguf[2])


def session(model) -> Session:
    return Session(model, SamplerChain(registry().samplers, ["greedy"]), max_tokens=4, context=128)


@pytest.fixture(scope="module")
def saved_record(tiny, tmp_path_factory):
    s = session(tiny)
    s.ask("hi")
    path = transcript.save(s, "fuzz-base", with_cache=False)
    return json.loads(path.read_text())


def mutations(record: dict):
    """A saved record with some fields (top level or inside a message) replaced, deleted or added."""
    keys = sorted(record)
    top = st.tuples(st.sampled_from(keys + ["extra"]), JSON | st.just("<delete>"))
    inner = st.tuples(st.sampled_from(["role", "content", "stats", "time", "interrupted"]), JSON | st.just("<delete>"))
    return st.tuples(st.lists(top, max_size=3), st.lists(inner, max_size=3))


def apply(record: dict, changes) -> dict:
    record = json.loads(json.dumps(record))
    top, inner = changes
    for key, value in top:
        record.pop(key, None) if value == "<delete>" else record.__setitem__(key, value)
    messages = record.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        for key, value in inner:
            messages[-1].pop(key, None) if value == "<delete>" else messages[-1].__setitem__(key, value)
    return record


@FUZZ
@given(data=st.data())
def test_the_session_reader_gives_a_session_or_one_line(tiny, saved_record, data):
    kind = data.draw(st.sampled_from(["bytes", "json", "mutated"]))
    if kind == "bytes":
        raw = data.draw(st.binary(max_size=200))
    elif kind == "json":
        raw = json.dumps(data.draw(JSON)).encode()
    else:
        raw = json.dumps(apply(saved_record, data.draw(mutations(saved_record)))).encode()
    path = transcript.sessions_dir() / "fuzz.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    try:
        transcript.restore(session(tiny), transcript.read(str(path)))
        transcript.list_sessions()
    except LlamachatError as e:
        assert "\n" not in str(e)


TOML_VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True).map(lambda f: repr(f).replace("inf", "inf").replace("nan", "nan")),
    st.text(max_size=10).map(json.dumps),
    st.booleans().map(lambda b: str(b).lower()),
    st.lists(st.text(max_size=5).map(json.dumps) | st.integers().map(str), max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
)


@st.composite
def profiles(draw) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from([*SCHEMA, "other"]), max_size=4)):
        lines.append(f"[{section}]")
        known = sorted(SCHEMA.get(section, {})) + ["temperature", "top_k", "bogus"]
        for key in draw(st.lists(st.sampled_from(known), max_size=4, unique=True)):
            lines.append(f"{key} = {draw(TOML_VALUES)}")
    return "\n".join(lines)


@FUZZ
@given(text=st.one_of(profiles(), st.text(max_size=80)))
def test_the_profile_reader_gives_a_profile_or_one_line(text):
    from llamachat.profiles import settings_from_profile

    params = {p.name: p for s in registry().samplers.values() for p in s.params}
    try:
        settings_from_profile(parse_profile(text, "fuzz.toml", params), "fuzz")
    except LlamachatError as e:
        assert "\n" not in str(e)


class FakeChat:
    """What the commands talk to (commands.ChatLike), over a real Session on the tiny model."""

    def __init__(self, s: Session):
        self.session, self.said = s, []

    def say(self, text: str, style: str = "") -> None:
        self.said.append(text)

    def reply(self, action) -> None:
        class Out:
            def write(self, _):
                pass

            think = write

        action(Out())

    def switch_backend(self, name: str) -> None: ...
    def switch_profile(self, name: str) -> None: ...
    def switch_template(self, name: str) -> None: ...
    def default_save_name(self) -> str:
        return "fuzz-save"


SAFE = sorted(set(commands.COMMANDS) - {"quit", "exit", "bye", "backend", "profile", "template", "load", "save", "info"})
ARGS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["0", "-1", "1e309", "nan", "inf", "2", "10**9", "\\", "\\x", "\\u12", ",,,", "temperature 0.5"]),
    st.lists(
        st.sampled_from(["top_k", "temperature", "min_p", "greedy", "overflow_free", "lookup", "max_tokens", "0.5", "-3", "x"]), max_size=3
    ).map(" ".join),
)


@FUZZ
@given(name=st.sampled_from(SAFE) | st.text(max_size=8), arg=ARGS)
def test_slash_commands_give_a_result_or_one_line(tiny, name, arg):
    line = f"/{name} {arg}"
    parsed = commands.parse(line)
    assert parsed is None or isinstance(parsed, tuple)
    if not parsed or parsed[0] not in SAFE and parsed[0] in commands.COMMANDS:
        return
    chat = FakeChat(session(tiny))
    chat.session.ask("hi")
    try:
        commands.run(chat, *parsed)
    except LlamachatError as e:
        assert "\n" not in str(e)
