"""The one exception type a user sees as a message, not a traceback."""


class LlamachatError(Exception):
    """A problem with what the user asked for or handed us, phrased for the user.

    The CLI prints `str(error)` as one line and exits 2 at start-up; mid-chat the message is shown
    and the chat goes on. Tracebacks only with --debug.
    """
