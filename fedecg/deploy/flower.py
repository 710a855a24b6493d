"""Flower's processes and CLI, run with fedecg's environment hygiene.

Every process fedecg starts gets telemetry off, no update check, no runtime dependency
installation and a private ``FLWR_HOME`` (``fedecg.federated.flower_env``); its output goes to
a log file in a known place, and its identity (PID, start time, command line) to a file beside
it, so that ``stop`` ends exactly that process and never one that later got the same PID
(``Service``).
Flower's programs are taken from this Python's environment first (``flower_executable``).
``flwr_json`` runs a ``flwr`` CLI command and returns its JSON answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedecg.errors import DeploymentError
from fedecg.federated.flower_env import flower_env
from fedecg.io import atomic_write_json, atomic_write_text, pid_alive

log = logging.getLogger(__name__)

CONFIG_TOML = "config.toml"


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
    command = [flower_executable("flwr"), *args, "--format", "json"]
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
class ProcessIdentity:
    """A process as the kernel knows it: PID, start time (clock ticks after boot, field 22 of
    ``/proc/PID/stat``) and command line. A recycled PID has another start time."""

    pid: int
    start_time: int
    cmdline: list[str]

    @classmethod
    def of(cls, pid: int) -> ProcessIdentity | None:
        """The running process ``pid`` (None once it has ended)."""
        if not _alive(pid):
            return None
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        start_time = int(stat[stat.rindex(")") + 2:].split()[19])
        return cls(pid, start_time, [part.decode(errors="replace")
                                     for part in raw.split(b"\0") if part])

    def same_process(self, other: ProcessIdentity | None) -> bool:
        """Whether ``other`` is this process: same PID and start time. The command line is
        kept for people to read, not compared: it changes when the child execs its program,
        which may be after ``start`` recorded it."""
        return other is not None and (other.pid, other.start_time) == (self.pid,
                                                                        self.start_time)


@dataclass(frozen=True)
class Service:
    """A background Flower process: ``<folder>/<name>.pid`` and ``<folder>/logs/<name>.log``.

    The PID file records the process's identity (``ProcessIdentity`` as JSON); a PID whose
    process has ended, or now belongs to another process, is never signalled: its file is
    removed, and that is logged.
    """

    folder: Path
    name: str

    @property
    def pid_file(self) -> Path:
        """Where the running process's identity is kept."""
        return Path(self.folder) / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """Where the process writes its output."""
        return Path(self.folder) / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The PID of the process this service started, or None (no PID file; or the process
        ended or the PID is another process's now, and the stale file is removed)."""
        recorded = self._recorded()
        if recorded is None:
            return None
        if recorded.same_process(ProcessIdentity.of(recorded.pid)):
            return recorded.pid
        self.pid_file.unlink(missing_ok=True)
        if _alive(recorded.pid):
            log.warning("%s: PID %d now belongs to another process, not the %s fedecg started; "
                        "removed the stale PID file, stopped nothing", self.pid_file,
                        recorded.pid, self.name)
        else:
            log.info("%s: the %s (PID %d) has ended; removed its PID file", self.pid_file,
                     self.name, recorded.pid)
        return None

    def _recorded(self) -> ProcessIdentity | None:
        try:
            text = self.pid_file.read_text()
        except FileNotFoundError:
            return None
        try:
            fields = json.loads(text)
            recorded = ProcessIdentity(int(fields["pid"]), int(fields["start_time"]),
                                       [str(part) for part in fields["cmdline"]])
        except (ValueError, KeyError, TypeError):
            recorded = None  # reported below, with the file's content
        if recorded is None or recorded.pid <= 0:
            raise DeploymentError(
                f"{self.pid_file}: not a PID file fedecg wrote ({_one_line(text)[:60]!r}); "
                f"nothing was started or stopped. If a {self.name} still runs, stop it by "
                "hand, then delete the file")
        return recorded

    def start(self, command: Sequence[str], env: dict[str, str]) -> int:
        """Start ``command`` in its own session, output to the log; return its PID.

        A bare program name is looked up beside this Python first (``flower_executable``).
        """
        running = self.pid()
        if running is not None:
            raise DeploymentError(f"{self.name} already runs (PID {running}, "
                                  f"{self.pid_file}); stop it first")
        command = [flower_executable(command[0]), *command[1:]]
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log_handle:
            process = subprocess.Popen(command, stdout=log_handle, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env,
                                       start_new_session=True)
        running = ProcessIdentity.of(process.pid)
        if running is None:  # it ended at once: nothing to record, the log says why
            return process.pid
        # the command it was given, not /proc's, which may still be ours until it execs
        identity = ProcessIdentity(process.pid, running.start_time, list(command))
        atomic_write_json(self.pid_file, dataclasses.asdict(identity))
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


def flower_executable(name: str) -> str:
    """The path of Flower's program ``name``: beside this Python (its environment's ``bin``),
    else on ``PATH``. A path is returned as it is."""
    if os.sep in name:
        return name
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DeploymentError(f"`{name}` not found beside {sys.executable} nor on PATH; "
                              "activate the environment where fedecg is installed (e.g. "
                              "`. .venv/bin/activate`) and run the command again")
    return found


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
    return pid_alive(pid)
