"""Find and stop, by PID, the processes that a ``flwr run`` started (Linux ``/proc``).

``flwr run .`` starts a detached local SuperLink that outlives it; the SuperLink starts a
SuperExec, which starts the simulation and its Ray actors (re-parented to init, but still in the
SuperExec's process group). ``started_by(home)`` finds the SuperLink whose command line names
this test's private ``FLWR_HOME`` and everything below it; ``stop`` ends exactly those PIDs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

PROC = Path("/proc")


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
