"""llama-cpp-python's low-level bindings, imported once, with llama.cpp's own log kept off stderr.

llama.cpp prints its loading report and every warning to stderr through a global log callback. A
chat's screen is not the place for it: the lines go to the Python logger `llamachat.llamacpp`
instead (shown by `llamachat -v` / `--debug`, which configure logging), and the last error lines
are kept, because when llama.cpp refuses a file or a saved state its reason is only in its log.
"""

from __future__ import annotations

import ctypes
import logging
from collections import deque
from types import ModuleType

from llamachat.errors import LlamachatError

INSTALL = "pip install 'llamachat[llamacpp]' (or llama-cpp-python==0.3.36 from its own wheel index: see README.md)"
VERSION = "0.3.36"  # the pinned llama-cpp-python, whose llama.cpp this plugin is written against

log = logging.getLogger("llamachat.llamacpp")
log.addHandler(logging.NullHandler())  # not Python's last-resort handler (stderr) when logging is not configured
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level (ggml.h); 5 continues a line
_errors: deque[str] = deque(maxlen=8)
_pending: list[str] = []  # llama.cpp sends a line in pieces; the level comes with the first
_pending_level = logging.INFO
_library: ModuleType | None = None
_callback = None  # the ctypes callback must outlive every call llama.cpp makes through it


def importable() -> tuple[bool, str]:
    """(True, "") when llama-cpp-python can be imported, else (False, the one line saying how to get it)."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        return False, f"llama-cpp-python is not installed: {INSTALL}"
    return True, ""


def library() -> ModuleType:
    """The `llama_cpp` module, its backends initialised and its log routed to `log`."""
    global _library, _callback
    if _library is not None:
        return _library
    ok, why = importable()
    if not ok:
        raise LlamachatError(why)
    try:
        import llama_cpp
    except (ImportError, OSError) as e:  # a wheel whose libllama.so does not load here
        raise LlamachatError(f"llama-cpp-python is installed but does not load: {e}") from None
    _callback = llama_cpp.llama_log_callback(_on_log)
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    llama_cpp.llama_backend_init()
    _library = llama_cpp
    return llama_cpp


def version() -> str:
    """What a saved llama.cpp state depends on besides the model: the engine's version."""
    import llama_cpp

    return f"llama-cpp-python {llama_cpp.__version__}"


def _on_log(level: int, text: bytes, _user_data) -> None:
    global _pending_level
    if level != 5:
        _flush()
        _pending_level = _LEVELS.get(level, logging.INFO)
    _pending.append(text.decode("utf-8", errors="replace"))
    if _pending[-1].endswith("\n"):
        _flush()


def _flush() -> None:
    line = " ".join("".join(_pending).split())  # one line: llama.cpp's messages may hold line breaks
    _pending.clear()
    if not line:
        return
    if _pending_level >= logging.ERROR:
        _errors.append(line)
    log.log(_pending_level, "%s", line)


def clear_errors() -> None:
    _flush()
    _errors.clear()


def first_error(default: str) -> str:
    """llama.cpp's first error line since `clear_errors()`, or `default`: the cause comes first
    ("error loading model: done_getting_tensors: wrong number of tensors"), then the lines of each
    caller that gave up ("failed to load model")."""
    _flush()
    return _errors[0] if _errors else default
