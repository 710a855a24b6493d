"""Deployment files: secrets are private, PID files never point ``stop`` at a stranger, and
mistakes with keys, lifetimes and environments are one line each.

Processes here are ``sleep``/``sh`` started by the test and stopped by their PID.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders.site_store import make_store
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.deploy.certs import CA_KEY, SERVER_KEY, create_ca, issue_server_cert
from fedecg.deploy.flower import ProcessIdentity, Service, flower_executable
from fedecg.deploy.node_keys import NODE_KEY, NODE_PUBLIC_KEY, create_node_keys
from fedecg.errors import DeploymentError, OutputExistsError
from fedecg.io import MARKER

runner = CliRunner()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _one_error_line(output: str) -> str:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), output
    return lines[0]


@pytest.fixture
def stranger():
    """A live process fedecg did not start (``sleep 60``); stopped by its PID afterwards."""
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_ca_server_and_node_keys_are_owner_only(tmp_path):
    tls = tmp_path / "center" / "tls"
    create_ca(tls)
    issue_server_cert(tls, ["127.0.0.1"])
    assert _mode(tls) == 0o700
    assert _mode(tls / CA_KEY) == 0o600 and _mode(tls / SERVER_KEY) == 0o600
    kit = tmp_path / "node"
    create_node_keys(kit)
    assert _mode(kit) == 0o700 and _mode(kit / NODE_KEY) == 0o600
    assert _mode(kit / NODE_PUBLIC_KEY) == 0o640  # meant to be sent away
    assert json.loads((kit / MARKER).read_text())["kind"] == "node kit"


def test_keygen_never_writes_into_a_store(tmp_path):
    store = make_store(tmp_path / "store", 10, ecgs_per_patient=1,
                       separable=True)
    before = sorted(p.name for p in store.iterdir())
    with pytest.raises(OutputExistsError, match="holds a fedecg store, not a node kit"):
        create_node_keys(store, overwrite=True)
    assert sorted(p.name for p in store.iterdir()) == before


@pytest.mark.parametrize("days", ["0", "-5"])
def test_server_init_refuses_a_lifetime_under_one_day(tmp_path, days):
    result = runner.invoke(app, ["server", "init", "--kit", str(tmp_path / "kit"), "--host",
                                 "127.0.0.1", "--days", days])
    assert result.exit_code == 1
    assert f"--days {days}: expected at least 1 day" in _one_error_line(result.output)
    assert not (tmp_path / "kit").exists()  # not even the CA was written


def test_registering_a_private_key_is_one_clear_line(tmp_path):
    create_node_keys(tmp_path / "node")
    result = runner.invoke(app, ["server", "register", str(tmp_path / "node" / NODE_KEY),
                                 "--kit", str(tmp_path / "center")])
    assert result.exit_code == 1
    line = _one_error_line(result.output)
    assert "this is a node's private key" in line and "node.pub" in line


def test_stop_never_signals_a_process_that_now_has_the_recorded_pid(tmp_path, stranger,
                                                                    caplog):
    service = Service(tmp_path, "superlink")
    foreign = ProcessIdentity.of(stranger.pid)
    recorded = {"pid": stranger.pid, "start_time": foreign.start_time - 1,  # an older process
                "cmdline": ["flower-superlink", "--port", "9092"]}
    service.pid_file.write_text(json.dumps(recorded))
    with caplog.at_level(logging.WARNING, logger="fedecg.deploy.flower"):
        assert service.stop(timeout=1) is False
    assert stranger.poll() is None  # still running
    assert not service.pid_file.exists()
    assert "now belongs to another process" in caplog.text and "stopped nothing" in caplog.text


def test_a_started_process_is_recognised_and_stopped(tmp_path):
    service = Service(tmp_path, "supernode")
    pid = service.start(["sleep", "60"], dict(os.environ))
    recorded = json.loads(service.pid_file.read_text())
    assert recorded == {"pid": pid, "start_time": ProcessIdentity.of(pid).start_time,
                        "cmdline": [shutil.which("sleep"), "60"]}
    assert service.pid() == pid
    assert service.stop(timeout=5) is True
    assert service.pid() is None and not service.pid_file.exists()


def test_a_process_is_recognised_by_its_start_time_whatever_its_command_line_shows(tmp_path):
    """/proc shows the parent's command line until the child execs: the identity must not
    depend on when it was read (this race once made a starting SuperNode look refused)."""
    service = Service(tmp_path, "supernode")
    pid = service.start(["sleep", "60"], dict(os.environ))
    recorded = json.loads(service.pid_file.read_text())
    service.pid_file.write_text(json.dumps({**recorded, "cmdline": ["python3", "-c", "..."]}))
    assert service.pid() == pid
    service.pid_file.write_text(json.dumps({**recorded, "start_time": recorded["start_time"] - 1}))
    assert service.pid() is None  # another start time: another process, not signalled
    assert ProcessIdentity.of(pid) is not None
    os.kill(pid, 9)


def test_a_process_that_ends_at_start_leaves_no_pid_file(tmp_path):
    service = Service(tmp_path, "supernode")
    service.start(["sh", "-c", "echo refused; exit 1"], dict(os.environ))
    deadline = time.monotonic() + 10
    while service.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.pid() is None and not service.pid_file.exists()
    assert "refused" in service.log_text()


@pytest.mark.parametrize("content", [
    "12ab\n", "4242\n",  # garbage; a bare PID (an older fedecg's file) cannot be verified
    '{"pid": 0, "start_time": 1, "cmdline": []}'])  # 0 would signal our own process group
def test_a_corrupt_pid_file_is_one_line(tmp_path, content):
    kit = tmp_path / "node"
    kit.mkdir()
    (kit / "supernode.pid").write_text(content)
    result = runner.invoke(app, ["node", "stop", "--kit", str(kit)])
    assert result.exit_code == 1
    line = _one_error_line(result.output)
    assert "supernode.pid: not a PID file fedecg wrote" in line and "nothing was" in line


def test_flower_programs_come_from_this_pythons_environment(monkeypatch):
    monkeypatch.setenv("PATH", "")
    beside = Path(sys.executable).parent / "flower-supernode"
    assert flower_executable("flower-supernode") == str(beside)
    with pytest.raises(DeploymentError, match="activate the environment where fedecg is "
                                              "installed"):
        flower_executable("flower-nonexistent")
