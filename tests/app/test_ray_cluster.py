"""A study run on an existing Ray cluster (`federation.ray_address`): two nodes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.federated.ray_session import session_processes, stop_processes
from fedecg.run_folder import RunFolder

RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cluster_processes(folder: Path, address: str) -> list[psutil.Process]:
    """The cluster's processes: by its temporary folder, or by the head's address."""
    found = {proc.pid: proc for proc in session_processes(folder)}
    for proc in psutil.process_iter(["cmdline"]):
        if any(address in arg for arg in proc.info["cmdline"] or []):
            found[proc.pid] = proc
    found.pop(os.getpid(), None)
    return list(found.values())


@contextlib.contextmanager
def two_node_cluster(folder: Path) -> Iterator[str]:
    """A Ray head and a second node on 127.0.0.1, one CPU each; stopped by PID afterwards."""
    address = f"127.0.0.1:{_free_port()}"
    common = ["--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={folder}",
              "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        subprocess.run([RAY, "start", "--head", f"--port={address.split(':')[1]}",
                        "--include-dashboard=false", *common], check=True, env=env,
                       capture_output=True, timeout=120)
        subprocess.run([RAY, "start", f"--address={address}", *common], check=True, env=env,
                       capture_output=True, timeout=120)
        yield address
    finally:
        stop_processes(_cluster_processes(folder, address))


@pytest.mark.slow
def test_a_study_runs_on_an_existing_two_node_ray_cluster_and_leaves_it_running(tmp_path):
    """Two sites of one CPU each on two one-CPU nodes: Flower's actor pool has one actor per
    node, so both machines of the cluster train. fedecg joins the cluster and leaves it up."""
    store = make_store(tmp_path / "store", n_patients=40)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}},
        "train": {**TINY_TRAIN, "models": ["transfer"]}, "baselines": False}))
    folder = Path(f"/tmp/fedecg-cluster-{os.getpid()}")  # Ray's socket paths must stay short
    shutil.rmtree(folder, ignore_errors=True)
    with two_node_cluster(folder) as address:
        before = {proc.pid for proc in _cluster_processes(folder, address)}
        raylets = [p for p in _cluster_processes(folder, address) if p.name() == "raylet"]
        assert len(raylets) == 2
        run = subprocess.run(
            [sys.executable, "-m", "fedecg.cli", "simulate", "--config", str(config), "--out",
             str(tmp_path / "run"), "--set", f"federation.ray_address={address}"],
            capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        summary = RunFolder(tmp_path / "run").read_summary()
        assert summary.federated["transfer"].diagnosis_macro_auroc is not None
        still_up = {proc.pid for proc in _cluster_processes(folder, address)}
        assert before <= still_up  # the cluster was not stopped
    shutil.rmtree(folder, ignore_errors=True)
