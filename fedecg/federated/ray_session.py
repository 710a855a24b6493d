"""fedecg's own Ray session for a simulation, stopped by PID however the run ends.

Flower's simulation engine calls ``ray.init``. ``ray_session`` hands it a private temporary
folder, and on leaving (normally, on an exception, on Ctrl-C or on SIGTERM) shuts Ray down and
then stops every process of that session by PID: those whose command line names the folder (GCS
server, raylet, monitors) and all their descendants, listed before the shutdown orphans them.
The descendants matter: DashboardAgent, RuntimeEnvAgent and the workers rename themselves
(``ray::...``) and the agents ignore SIGTERM, so they outlived a killed ``fedecg simulate``;
what survives SIGTERM gets SIGKILL. Only a SIGKILL of fedecg itself leaves nothing to clean up
with.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

GRACE_SECONDS = 3.0


@contextlib.contextmanager
def ray_session() -> Iterator[dict[str, Any]]:
    """Yield ``ray.init`` arguments of a private session; stop all its processes on exit."""
    folder = Path(tempfile.mkdtemp(prefix="fedecg-ray-"))
    with _sigterm_raises():
        try:
            yield {"_temp_dir": str(folder)}
        finally:
            session = session_processes(folder)  # before the shutdown orphans the agents
            _shutdown_ray()
            stop_processes(session)
            shutil.rmtree(folder, ignore_errors=True)


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


def _shutdown_ray() -> None:
    """Shut down the Ray runtime the simulation started (Flower normally does already)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within, SIGTERM raises ``SystemExit`` in the main thread, so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
