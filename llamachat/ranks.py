"""Which rank this process is, when a launcher (torchrun, or any env:// launcher) started it.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT in every
worker, the same names torch.distributed's `env://` rendezvous reads (the local pair says which GPU a
rank takes on its machine: cuda:LOCAL_RANK). Under torchrun the agent already hosts the
TCPStore at MASTER_ADDR:MASTER_PORT (TORCHELASTIC_USE_AGENT_STORE=True) and every rank joins it as a
client; torch's env:// handler knows that, so the torch backend rendezvous through it. This module
only reads the variables, without torch, so the command line can decide before anything loads: rank
0 runs the chat, every other rank goes straight to the backend's worker loop and never reads the
terminal.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import LlamachatError

RENDEZVOUS = ("MASTER_ADDR", "MASTER_PORT")
# How long the ranks wait for one another at start-up (a rank that never comes is a one-line error,
# not a hang). Loading a 70B shard from a network disk can take minutes, hence the override.
RENDEZVOUS_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Launch:
    """This process's place in a launched group."""

    rank: int
    world: int
    host: str  # MASTER_ADDR
    port: int  # MASTER_PORT
    timeout_s: float  # the rendezvous timeout
    agent_store: bool = False  # torchrun's agent hosts the store: rank 0 joins it as a client too
    local_rank: int = 0  # LOCAL_RANK: this rank's place among the ranks of its machine
    local_world: int = 1  # LOCAL_WORLD_SIZE: the ranks on this machine

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def hosts_store(self) -> bool:
        return self.rank == 0 and not self.agent_store


def _integer(env: Mapping[str, str], name: str, low: int) -> int:
    value = env[name]
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise LlamachatError(f"{name}={value!r} from the launcher is not an integer >= {low}")
    return number


def from_env(env: Mapping[str, str] = os.environ) -> Launch | None:
    """The launch this process is part of, or None when no launcher set RANK and WORLD_SIZE."""
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return None
    missing = [name for name in ("RANK", "WORLD_SIZE", *RENDEZVOUS) if not env.get(name)]
    if missing:
        raise LlamachatError(
            f"a launcher set {'RANK' if 'RANK' in env else 'WORLD_SIZE'} but not {', '.join(missing)}: "
            "start the ranks with torchrun (it sets all of them), or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT"
        )
    rank, world = _integer(env, "RANK", 0), _integer(env, "WORLD_SIZE", 1)
    if rank >= world:
        raise LlamachatError(f"RANK={rank} is not below WORLD_SIZE={world}")
    timeout = env.get("LLAMACHAT_RENDEZVOUS_TIMEOUT", str(RENDEZVOUS_TIMEOUT_S))
    try:
        timeout_s = float(timeout)
    except ValueError:
        timeout_s = 0.0
    if not timeout_s > 0:
        raise LlamachatError(f"LLAMACHAT_RENDEZVOUS_TIMEOUT={timeout!r} is not a positive number of seconds")
    port = _integer(env, "MASTER_PORT", 1)
    local_rank, local_world = _local(env, rank, world)
    agent_store = env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return Launch(rank, world, env["MASTER_ADDR"], port, timeout_s, agent_store, local_rank, local_world)


def _local(env: Mapping[str, str], rank: int, world: int) -> tuple[int, int]:
    """LOCAL_RANK and LOCAL_WORLD_SIZE (torchrun sets both); a launcher that sets neither is taken to
    run every rank on one machine, as `--tp N` does."""
    if not env.get("LOCAL_RANK") and not env.get("LOCAL_WORLD_SIZE"):
        return rank, world
    local_rank = _integer(env, "LOCAL_RANK", 0) if env.get("LOCAL_RANK") else 0
    local_world = _integer(env, "LOCAL_WORLD_SIZE", 1) if env.get("LOCAL_WORLD_SIZE") else local_rank + 1
    if local_rank >= local_world:
        raise LlamachatError(f"LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={local_world}")
    return local_rank, local_world
