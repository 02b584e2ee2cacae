"""The one exception type a user sees as a message, not a traceback."""


class LlamachatError(Exception):
    """A problem with what the user asked for or handed us, phrased for the user.

    The CLI prints `str(error)` as one line and exits 2 at start-up; mid-chat the message is shown
    and the chat goes on. Tracebacks only with --debug.
    """


def as_int(value: object, name: str, minimum: int = 0) -> int:
    """`value` as an integer >= `minimum`, or the one line saying what `name` takes."""
    try:
        n = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise LlamachatError(f"{name} takes an integer >= {minimum}, got {value!r}") from None
    if n < minimum:
        raise LlamachatError(f"{name} takes an integer >= {minimum}, got {value!r}")
    return n
