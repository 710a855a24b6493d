"""Flower's processes and CLI, run with fedecg's environment hygiene.

Every process fedecg starts gets telemetry off, no update check, no runtime dependency
installation and a private ``FLWR_HOME`` (``flower_env``); its output goes to a log file in
a known place, and its PID to a file beside it, so that ``stop`` ends exactly that process
(``Service``). ``flwr_json`` runs a ``flwr`` CLI command and returns its JSON answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedecg.errors import DeploymentError
from fedecg.federated.simulate import FLOWER_ENV
from fedecg.io import atomic_write_text

CONFIG_TOML = "config.toml"


def flower_env(flwr_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with fedecg's Flower settings and ``FLWR_HOME``."""
    return {**os.environ, **FLOWER_ENV, "FLWR_HOME": str(Path(flwr_home).resolve()),
            **(extra or {})}


def write_connection(flwr_home: Path, name: str, address: str, ca: Path | None) -> Path:
    """``$FLWR_HOME/config.toml`` naming one SuperLink connection (the default one)."""
    lines = ["[superlink]", f'default = "{name}"', "", f"[superlink.{name}]",
             f'address = "{address}"']
    lines.append(f'root-certificates = "{Path(ca).resolve()}"' if ca else "insecure = true")
    path = Path(flwr_home) / CONFIG_TOML
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def flwr_json(args: Sequence[str], flwr_home: Path, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``flwr ARGS --format json``; its JSON answer, or a ``DeploymentError`` with its
    error message."""
    command = ["flwr", *args, "--format", "json"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=flower_env(flwr_home), check=False)
    except subprocess.TimeoutExpired:
        raise DeploymentError(f"`{' '.join(command)}` did not answer within {timeout:g} s; is "
                              "the SuperLink reachable?") from None
    try:
        answer = json.loads(done.stdout)
    except json.JSONDecodeError:
        answer = {"success": False, "error-message": (done.stdout + done.stderr).strip()}
    if done.returncode != 0 or not answer.get("success", False):
        message = answer.get("error-message") or (done.stdout + done.stderr).strip()
        raise DeploymentError(f"flwr {' '.join(args[:2])}: {_one_line(message)}")
    return answer


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:400]


@dataclass(frozen=True)
class Service:
    """A background Flower process: ``<folder>/<name>.pid`` and ``<folder>/logs/<name>.log``."""

    folder: Path
    name: str

    @property
    def pid_file(self) -> Path:
        """Where the running process's PID is kept."""
        return Path(self.folder) / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """Where the process writes its output."""
        return Path(self.folder) / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of the running process, or None (no PID file, or the process is gone)."""
        if not self.pid_file.is_file():
            return None
        pid = int(self.pid_file.read_text().strip() or 0)
        return pid if pid > 0 and _alive(pid) else None

    def start(self, command: Sequence[str], env: dict[str, str]) -> int:
        """Start ``command`` in its own session, output to the log; return its PID."""
        running = self.pid()
        if running is not None:
            raise DeploymentError(f"{self.name} already runs (PID {running}, "
                                  f"{self.pid_file}); stop it first")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        atomic_write_text(self.pid_file, f"{process.pid}\n")
        return process.pid

    def log_text(self) -> str:
        """Everything the process has logged so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.is_file() else ""

    def stop(self, timeout: float = 15.0) -> bool:
        """End the process (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        return stop_pid(pid, timeout)


def stop_pid(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM the process group of ``pid``, SIGKILL it after ``timeout``; wait for it."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.1)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished == pid:
            return False
    except ChildProcessError:
        pass  # not our child: ask the kernel instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    state = Path(f"/proc/{pid}/stat")
    return not (state.is_file() and state.read_text().split(") ")[-1].startswith("Z"))
