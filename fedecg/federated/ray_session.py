"""fedecg's own Ray session for a simulation, stopped by PID however the run ends; or an
existing Ray cluster (``federation.ray_address``, else ``$RAY_ADDRESS``), left running.

``cluster_address`` picks the cluster and refuses, in one line, a ``host:port`` where nothing
answers (Ray itself would retry its GCS for minutes, printing warnings).

Flower's simulation engine calls ``ray.init``. ``ray_session`` hands it a private temporary
folder and starts a *reaper*: a small process of its own (``python -m
fedecg.federated.ray_session``, in a new session so a terminal's Ctrl-C does not reach it) that
every half second records the session's processes (those whose command line names the folder:
GCS server, raylet, monitors, and all their descendants: DashboardAgent, RuntimeEnvAgent and the
``ray::ClientAppActor`` workers, which rename themselves and which the agents' SIGTERM does not
stop). It reads a pipe from fedecg; when the pipe closes (the session ends, or fedecg exits in
any way: an exception, Ctrl-C, SIGTERM, Ray's own hard exit, even SIGKILL) it stops every
process it recorded (SIGTERM, then SIGKILL after a grace period) and removes the folder.

Recording matters because Ray's shutdown orphans the workers: once raylet has gone they can no
longer be found as its descendants. Ctrl-C and SIGTERM within the session first ask the reaper
to stop Ray (so Flower's threads fail at once instead of finishing their rounds), then raise
``KeyboardInterrupt`` or ``SystemExit`` as usual. (``ray.init`` replaces the SIGTERM handler
with its own ``sys.exit``; the reaper stops the session when that exit closes the pipe.)
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil

from fedecg.errors import ConfigError

GRACE_SECONDS = 3.0
POLL_SECONDS = 0.5
CONNECT_SECONDS = 10.0


def cluster_address(configured: str | None) -> str | None:
    """The Ray cluster a simulation joins: ``configured`` (``federation.ray_address``), else
    ``$RAY_ADDRESS``, else None (a private session). A ``host:port`` must accept a connection
    (``auto`` and ``ray://`` addresses are left to Ray)."""
    source, address = "federation.ray_address", configured
    if not address:
        source, address = "$RAY_ADDRESS", os.environ.get("RAY_ADDRESS")
    if not address:
        return None
    host, _, port = address.rpartition(":")
    if host and port.isdigit() and "://" not in address:
        try:
            socket.create_connection((host.strip("[]"), int(port)), CONNECT_SECONDS).close()
        except OSError as exc:
            raise ConfigError(
                f"{source} {address!r}: no Ray cluster answers there ({exc.strerror or exc}); "
                f"start its head there (`ray start --head --port={port}`) or give the head's "
                "host:port") from None
    return address


@contextlib.contextmanager
def ray_session(address: str | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``ray.init`` arguments: those of a private session on this machine, whose processes
    are all stopped on exit; or, given an ``address``, those joining that existing Ray cluster,
    which is left running (only this driver disconnects)."""
    if address:
        try:
            yield {"address": address}
        finally:
            _shutdown_ray()
        return
    folder = Path(tempfile.mkdtemp(prefix="fedecg-ray-"))
    reaper = subprocess.Popen([sys.executable, "-m", __name__, str(folder)],
                              stdin=subprocess.PIPE, start_new_session=True)
    assert reaper.stdin is not None
    with _signals_stop(reaper.stdin):
        try:
            yield {"_temp_dir": str(folder), "num_cpus": usable_cores(),
                   "num_gpus": 0, "object_store_memory": 128 * 1024 ** 2}
        finally:
            _shutdown_ray()
            reaper.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                reaper.wait(timeout=2 * GRACE_SECONDS + 10 * POLL_SECONDS)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container or ``taskset``
    narrows; ``os.cpu_count`` counts the machine's): what a private Ray session offers."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def session_processes(folder: Path) -> list[psutil.Process]:
    """Processes whose command line names ``folder``, and all their descendants."""
    roots = [proc for proc in psutil.process_iter(["cmdline"])
             if any(str(folder) in arg for arg in proc.info["cmdline"] or [])]
    found = {proc.pid: proc for proc in roots}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            found.update({child.pid: child for child in root.children(recursive=True)})
    return list(found.values())


def stop_processes(processes: list[psutil.Process], grace: float = GRACE_SECONDS) -> None:
    """SIGTERM each process, then SIGKILL those still alive after ``grace`` seconds."""
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)


def reap(folder: Path, pipe: IO[bytes]) -> None:
    """The reaper's loop: record ``folder``'s session until ``pipe`` closes, then stop it.

    ``psutil.Process`` objects remember each process's start time, so a PID reused after a
    process ended is never signalled.
    """
    recorded: dict[int, psutil.Process] = {}
    while not select.select([pipe], [], [], POLL_SECONDS)[0] or pipe.read(1):
        recorded.update({proc.pid: proc for proc in session_processes(folder)})
    recorded.update({proc.pid: proc for proc in session_processes(folder)})
    recorded.pop(os.getpid(), None)  # the reaper's own command line names the folder too
    stop_processes(list(recorded.values()))
    shutil.rmtree(folder, ignore_errors=True)


def _shutdown_ray() -> None:
    """Shut down the Ray runtime the simulation started (Flower normally does already)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def _signals_stop(reaper_pipe: IO[bytes]) -> Iterator[None]:
    """Within, Ctrl-C and SIGTERM close the reaper's pipe (it stops Ray) and then raise
    ``KeyboardInterrupt`` or ``SystemExit`` in the main thread, so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop_then_raise(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError, ValueError):
            reaper_pipe.close()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, stop_then_raise)
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reap(Path(sys.argv[1]), sys.stdin.buffer)
