"""Starting the ranks of --tp: the spawned ones (tp.start) and the launched ones (llamachat/ranks.py,
tp.start_launched / serve_launched: torchrun starts every process, rank 0 runs the chat, the others
serve it), the handshake both go through, and the launcher's bad input, in one line."""

from __future__ import annotations

import functools
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from llamachat_torch import tp
from test_tp import SHAPES, config_kwargs, random_model

from llamachat import ranks
from llamachat.errors import LlamachatError
from llamachat.version import __version__

ARGS = ("--no-history", "--temp", "0", "--backend", "torch", "-n", "16")
# what a launcher leaves in the environment of the test process itself must not leak into these runs
LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], home: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    full = {**clean, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, capture_output=True, text=True, env=full, stdin=subprocess.DEVNULL, timeout=300)


def torchrun(*args: str, home: Path, script: list[str] | None = None, **env: str) -> subprocess.CompletedProcess:
    """`torchrun --nnodes 1 --nproc-per-node 2 --rdzv-endpoint 127.0.0.1:PORT -m llamachat ARGS`, the
    README's several-machines command on one."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2"]
    launcher += ["--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    return run([*launcher, *(script or ["-m", "llamachat"]), *args], home, **env)


def llamachat_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("llamachat")]


def test_torchrun_prints_the_one_process_reply_once(default_model_path, tmp_path):
    args = ("--model", str(default_model_path), *ARGS, "-p", "Name three colours.")
    one = run([sys.executable, "-m", "llamachat", *args], tmp_path)
    launched = torchrun(*args, home=tmp_path)
    assert one.returncode == launched.returncode == 0, launched.stderr
    assert one.stdout.strip() and launched.stdout == one.stdout  # rank 1 printed nothing
    assert llamachat_errors(launched.stderr) == []


OTHER_VERSION = Path(__file__).parent / "rank_1_other_version.py"


def test_torchrun_ranks_of_other_versions_are_one_line_and_every_rank_exits_2(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    r = torchrun("--model", str(path), *ARGS, "-p", "hi", home=tmp_path, script=[str(OTHER_VERSION)])
    assert r.stdout == ""
    assert llamachat_errors(r.stderr) == [
        f"llamachat: error: rank 1 of 2: runs llamachat 0.0.0+other, rank 0 runs {__version__}: install the same version on every machine"
    ]
    # torchrun's own report below the line: rank 0 failed first, with exit code 2, and torchrun stopped
    # rank 1 (waiting, so that rank 0 could print) with SIGTERM
    assert r.returncode != 0, r.stderr
    assert "rank      : 0 (local_rank: 0)\n  exitcode  : 2" in r.stderr.split("Root Cause")[1], r.stderr


def test_a_rank_alone_waits_no_longer_than_the_rendezvous_timeout(tiny_gguf, tmp_path):
    """RANK and WORLD_SIZE of a group whose other rank never comes: one line, exit 2, not a hang."""
    _, _, path = tiny_gguf
    port = str(free_port())
    for rank in ("0", "1"):
        env = {"RANK": rank, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "LLAMACHAT_RENDEZVOUS_TIMEOUT": "3"}
        r = run([sys.executable, "-m", "llamachat", "--model", str(path), *ARGS, "-p", "hi"], tmp_path, **env)
        assert r.returncode == 2 and r.stdout == ""
        [line] = r.stderr.strip().splitlines()
        assert line.startswith(
            f"llamachat: error: rank {rank} of 2 found no group at 127.0.0.1:{port} within 3 s (LLAMACHAT_RENDEZVOUS_TIMEOUT)"
        ), line


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"RANK": "0", "WORLD_SIZE": "2"},
            "a launcher set RANK but not MASTER_ADDR, MASTER_PORT: start the ranks with torchrun (it sets all of them), "
            "or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT",
        ),
        ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}, "RANK=2 is not below WORLD_SIZE=2"),
        (
            {"RANK": "0", "WORLD_SIZE": "two", "MASTER_ADDR": "h", "MASTER_PORT": "1"},
            "WORLD_SIZE='two' from the launcher is not an integer >= 1",
        ),
        (
            {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1", "LLAMACHAT_RENDEZVOUS_TIMEOUT": "0"},
            "LLAMACHAT_RENDEZVOUS_TIMEOUT='0' is not a positive number of seconds",
        ),
    ],
)
def test_a_launcher_environment_that_cannot_meet_is_one_line(env, message):
    with pytest.raises(LlamachatError) as e:
        ranks.from_env(env)
    assert str(e.value) == message


def test_no_launcher_is_no_launch():
    assert ranks.from_env({"PATH": "/bin"}) is None


def test_a_tp_other_than_the_world_size_is_one_line_through_the_cli(tiny_gguf, tmp_path):
    _, _, path = tiny_gguf
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    r = run([sys.executable, "-m", "llamachat", "--model", str(path), *ARGS, "--tp", "3", "-p", "hi"], tmp_path, **env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "llamachat: error: --tp 3 differs from the launcher's WORLD_SIZE=2; accepted: --tp 2, or no --tp"
    ]


def fails_on_rank_1(kwargs: dict):
    """A weights factory that cannot open the checkpoint on rank 1 (a machine without the file)."""
    if dist.get_rank() == 1:
        raise FileNotFoundError(2, "No such file or directory", "/models/llama-2-13b-chat")
    return random_model(kwargs)


def test_a_rank_that_cannot_build_its_share_is_one_line_and_every_rank_exits_2():
    kwargs = config_kwargs(SHAPES["divisible"], False)
    with pytest.raises(LlamachatError) as e:
        tp.start(2, functools.partial(fails_on_rank_1, kwargs), local=random_model(kwargs))
    assert str(e.value) == "rank 1 of 2: could not build its share: [Errno 2] No such file or directory: '/models/llama-2-13b-chat'"
    [worker] = multiprocessing.active_children()
    worker.join(timeout=30)
    assert worker.exitcode == 2
