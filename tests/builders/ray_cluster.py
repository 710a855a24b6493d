"""A real two-node Ray cluster on 127.0.0.1 (``ray start --head``, then ``ray start --address``),
one CPU per node, on ports of its own; stopped by PID, never with ``ray stop`` (which stops every
Ray session on the machine, a study running beside the tests included).

Every port either node listens on is named on its command line, taken below Linux's ephemeral
range (32768 and up), where the random ports of other Ray sessions on this machine never land.
``cluster_state`` asks the cluster's GCS (a short driver in a process of its own) which nodes
are alive and where each actor ran.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

from fedecg.federated.ray_session import session_processes, stop_processes

RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
NODE_PORTS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port")
HEAD_PORTS = ("--ray-client-server-port", "--dashboard-port")
WORKER_PORTS = 16  # per node: its workers (one CPU: a couple at a time) take one port each
LOW, HIGH = 20000, 32000  # below the ephemeral range

# ``ray._private.state.actors`` reads the GCS actor table directly (the public
# ``ray.util.state`` API needs the dashboard, which this cluster does not run).
STATE_SCRIPT = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
actors = state.actors()
print(json.dumps({
    "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
    "actors": {i: [a["ActorClassName"], a["Address"]["NodeID"]] for i, a in actors.items()},
}))
"""


def free_ports(count: int) -> Iterator[int]:
    """``count`` ports that no process holds now, from ``LOW``-``HIGH``."""
    start = LOW + os.getpid() % (HIGH - LOW)
    found = 0
    for port in itertools.chain(range(start, HIGH), range(LOW, start)):
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
            except OSError:
                continue
        yield port
        found += 1
        if found == count:
            return
    raise RuntimeError(f"fewer than {count} free ports in {LOW}-{HIGH}")


def _node_args(ports: Iterator[int], head: bool) -> list[str]:
    names = NODE_PORTS + (HEAD_PORTS if head else ())
    workers = ",".join(str(next(ports)) for _ in range(WORKER_PORTS))
    return [*(f"{name}={next(ports)}" for name in names), f"--worker-port-list={workers}"]


def cluster_processes(folder: Path, address: str) -> list[psutil.Process]:
    """The cluster's processes: those naming its temporary folder or the head's address (the
    client server names only the address), and their descendants (workers, agents)."""
    found = {proc.pid: proc for proc in session_processes(folder)}
    for proc in psutil.process_iter(["cmdline"]):
        if any(address in arg for arg in proc.info["cmdline"] or []):
            found[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                found.update({c.pid: c for c in proc.children(recursive=True)})
    found.pop(os.getpid(), None)
    return list(found.values())


@contextlib.contextmanager
def two_node_cluster(folder: Path) -> Iterator[str]:
    """Yield the head's ``host:port`` of a head and a second node, one CPU each, whose sessions
    live in ``folder`` (short: Ray's socket paths have a length limit); afterwards every
    process of the cluster is stopped by PID and ``folder`` removed."""
    ports = free_ports(1 + 2 * len(NODE_PORTS) + len(HEAD_PORTS) + 2 * WORKER_PORTS)
    address = f"127.0.0.1:{next(ports)}"
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
              f"--temp-dir={folder}", "--disable-usage-stats"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        for args in (["--head", f"--port={address.split(':')[1]}", "--include-dashboard=false",
                      *_node_args(ports, head=True)],
                     [f"--address={address}", *_node_args(ports, head=False)]):
            started = subprocess.run([RAY, "start", *args, *common], env=env,
                                     capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        yield address
    finally:
        stop_processes(cluster_processes(folder, address))
        shutil.rmtree(folder, ignore_errors=True)


def cluster_state(address: str) -> dict:
    """``{"nodes": [alive node ID, ...], "actors": {actor ID: [class name, node ID]}}``, every
    actor the cluster ever ran (the GCS keeps those that ended), from the cluster's GCS."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    asked = subprocess.run([sys.executable, "-c", STATE_SCRIPT, address], env=env,
                           capture_output=True, text=True, timeout=120)
    assert asked.returncode == 0, asked.stderr[-2000:]
    return json.loads(asked.stdout.strip().splitlines()[-1])
