"""Where the chat keeps what it writes on its own: the input history and the saved sessions.

The folder is LLAMACHAT_DATA_DIR where set, else the platform's user data folder (platformdirs:
~/.local/share/llamachat on Linux). A chat whose folder cannot be written still runs: it keeps the
conversation in memory, turns history and autosave off and says so once (`/save PATH` writes a
session to a file the user names).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

VARIABLE = "LLAMACHAT_DATA_DIR"


def data_dir() -> Path:
    value = os.environ.get(VARIABLE)
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("llamachat"))


def unwritable(folder: Path) -> str | None:
    """Why nothing can be written in `folder` (created if missing), or None if a file can: a probe is
    written, synced and removed, so a read-only or full file system shows here, not at the first Enter."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".probe-") as probe:
            probe.write(b"llamachat")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        return e.strerror or str(e)
    return None
