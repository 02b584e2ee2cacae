"""`python -m llamachat`, except that rank 1 says it runs another llamachat version: what a machine
with an older install looks like to the others (tests/test_tp_start.py starts it under torchrun)."""

import os
import sys

import llamachat.version

if os.environ.get("RANK") == "1":
    llamachat.version.__version__ = "0.0.0+other"  # before anything reads it

from llamachat.cli import main  # noqa: E402 - after the version is set

sys.exit(main())
