"""The slash-command parser."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llamachat.commands import COMMANDS, message_text, parse


def test_parse_examples():
    assert parse("/temp 0.7") == ("temp", "0.7")
    assert parse("  /SET  top_k   20  ") == ("set", "top_k   20")
    assert parse("/quit") == ("quit", "")
    assert parse("hello /temp 1") is None
    assert parse("//temp is a message") is None and message_text("//temp is a message") == "/temp is a message"


@given(st.text())
def test_a_line_is_a_command_exactly_when_it_starts_with_one_slash(line):
    parsed = parse(line)
    stripped = line.strip()
    if stripped.startswith("/") and not stripped.startswith("//"):
        assert parsed is not None
        name, arg = parsed
        assert name == name.lower() and arg == arg.strip() and " " not in name
    else:
        assert parsed is None


@given(st.sampled_from(sorted(COMMANDS)), st.text(alphabet=st.characters(blacklist_categories=("Cc", "Zl", "Zp")), max_size=30))
def test_command_and_argument_round_trip(name, arg):
    parsed = parse(f"/{name} {arg}")
    assert parsed == (name, arg.strip())


def test_every_command_has_help():
    assert all(c.help and c.usage.startswith(c.name) for c in COMMANDS.values())
