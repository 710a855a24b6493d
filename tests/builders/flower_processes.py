"""Run Flower's CLI with a private ``FLWR_HOME`` and wait for a run's result; find and stop, by
PID, the processes that a ``flwr run`` started (Linux ``/proc``).

``flwr run .`` starts a detached local SuperLink that outlives it; the SuperLink starts a
SuperExec, which starts the simulation and its Ray actors (re-parented to init, but still in the
SuperExec's process group). ``started_by(home)`` finds the SuperLink whose command line names
this test's private ``FLWR_HOME`` and everything below it; ``stop`` ends exactly those PIDs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from fedecg.federated.flower_env import FLOWER_ENV
from fedecg.federated.orchestration import read_result

PROC = Path("/proc")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def flwr_env(home: Path) -> dict[str, str]:
    """This process's environment for ``flwr``, with a private ``FLWR_HOME`` and free ports for
    the local SuperLink that ``flwr run`` starts there (which inherits this environment)."""
    return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(home),
            "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
            "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port())}


def flwr(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """``flwr ARGS`` (bounded to a minute; ``flwr run`` returns once the run is submitted)."""
    return subprocess.run(["flwr", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def wait_for_result(out: Path, home: Path, wait_s: float) -> dict:
    """``result.json`` once the ServerApp has finished (ok or failed), or a clear failure."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        result = read_result(out)
        if result["status"] in ("ok", "failed"):
            return result
        time.sleep(1.0)
    log = home / "local-superlink" / "superlink.log"
    tail = log.read_text()[-3000:] if log.is_file() else "(no SuperLink log)"
    pytest.fail(f"the run did not finish within {wait_s} s; SuperLink log:\n{tail}")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent PID, process group) of ``pid``, or None once it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    state, ppid, pgid = text[text.rindex(")") + 2:].split()[:3]
    return state, int(ppid), int(pgid)


def _cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]


def started_by(flwr_home: Path) -> list[int]:
    """The SuperLink started with ``flwr_home``, its descendants and their process groups."""
    stats = {pid: s for pid in _pids() if (s := _stat(pid)) is not None}
    family = {pid for pid in stats
              if "flower-superlink" in _cmdline(pid) and str(flwr_home) in _cmdline(pid)}
    grown = True
    while grown:
        groups = {stats[pid][2] for pid in family if stats[pid][2] in family}
        below = {pid for pid, (_, ppid, pgid) in stats.items()
                 if ppid in family or pgid in groups}
        grown = not below <= family
        family |= below
    return sorted(family)


def alive(pids: list[int]) -> list[int]:
    """The PIDs that still run (zombies count as ended)."""
    return [pid for pid in pids if (s := _stat(pid)) is not None and s[0] != "Z"]


def stop(pids: list[int], grace_s: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, SIGKILL what is left after ``grace_s``; return what still runs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while alive(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
    return alive(pids)
