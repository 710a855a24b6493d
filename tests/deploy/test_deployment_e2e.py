"""A real federation on 127.0.0.1: a SuperLink with TLS and SuperNode authentication, and
SuperNodes over their own site stores, all real processes started and stopped by PID.

An outsider who can reach the address hospitals dial and holds only the public ``ca.crt`` cannot
list runs, register a node of their own or run an app: the address serves only the Fleet API,
while the center's own commands reach the SuperLink on loopback. One study runs across three
admitted hospitals. One of them sends NaN updates (the test app's
``faulty_client``), which the server rejects, and is killed (``kill``, SIGTERM) after the
first round; the study completes with the other two, its report shows the rejection
and the dropout, and the global model stays finite. Meanwhile a node whose key is not registered is
refused, and a node without the CA certificate cannot connect.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from builders.site_store import SCHEMA, make_store
from builders.tiny import TINY_TRAIN

from fedecg.deploy.flower import write_connection
from fedecg.deploy.node_keys import create_node_keys
from fedecg.deploy.submit import rounds_done, submit_study
from fedecg.deploy.superlink import (
    CONNECTION,
    init_server,
    list_nodes,
    register_node,
    start_superlink,
    stop_superlink,
)
from fedecg.deploy.supernode import NodeKit, start_supernode, stop_supernode
from fedecg.errors import DeploymentError
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.flower_env import flower_env
from fedecg.run_folder import RunFolder

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parents[1] / "deploy_app"
HOSPITALS = ["hospital-a", "hospital-b", "hospital-nan"]
KILLED = "hospital-nan"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """The center's kit with a running SuperLink, and three admitted hospital nodes."""
    root = tmp_path_factory.mktemp("federation")
    kit = init_server(root / "center", ["127.0.0.1", "localhost"])
    address = f"127.0.0.1:{free_port()}"
    nodes: dict[str, NodeKit] = {}
    try:
        start_superlink(kit, address)
        for index, name in enumerate(HOSPITALS):
            node = NodeKit(root / name)
            register_node(kit, create_node_keys(node.folder), name=name)
            store = make_store(root / f"{name}-store", n_patients=24, seed=20 + index,
                               site_name=name, schema=SCHEMA)
            start_supernode(node, address, kit.ca, store, port=free_port())
            nodes[name] = node
        yield kit, address, nodes, root
    finally:
        for node in nodes.values():
            stop_supernode(node)
        stop_superlink(kit)


ROGUE_APP = {
    "pyproject.toml": """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "rogue"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "rogue"

[tool.flwr.app.components]
serverapp = "rogue_app:server_app"
clientapp = "rogue_app:client_app"

[tool.flwr.app.config]
marker = ""
""",
    "rogue_app.py": """from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

server_app = ServerApp()
client_app = ClientApp()


@server_app.main()
def main(grid, context):
    Path(context.run_config["marker"]).write_text("the outsider's code ran")
""",
}


def outsider_flwr(home: Path, *args: str) -> subprocess.CompletedProcess:
    """A stock ``flwr`` command from a home that holds only the public ca.crt."""
    return subprocess.run(["flwr", *args], capture_output=True, text=True, timeout=120,
                          env=flower_env(home), check=False)


def refused(done: subprocess.CompletedProcess) -> bool:
    """The command failed (exit code) and said the gateway's refusal."""
    return done.returncode != 0 and "serves only the Fleet API" in done.stdout + done.stderr


def test_an_outsider_holding_the_ca_cannot_control_the_federation(federation):
    kit, address, _, root = federation
    home = root / "outsider"
    ca = home / "ca.crt"
    home.mkdir()
    ca.write_bytes(kit.ca.read_bytes())  # public: every hospital has it
    write_connection(home, "attack", address, ca)
    registered = {n["node-id"] for n in list_nodes(kit)}
    runs_before = center_runs(kit)

    listing = outsider_flwr(home, "ls", "attack")
    assert refused(listing), listing.stdout + listing.stderr

    rogue = create_node_keys(root / "rogue")
    registering = outsider_flwr(home, "supernode", "register", str(rogue), "attack")
    assert refused(registering), registering.stdout + registering.stderr

    app = root / "rogue-app"
    app.mkdir()
    for name, text in ROGUE_APP.items():
        (app / name).write_text(text)
    marker = root / "rogue-ran"
    running = outsider_flwr(home, "run", str(app), "attack", "--run-config",
                            f'marker="{marker}"')
    assert refused(running), running.stdout + running.stderr
    time.sleep(3)  # a run the SuperLink had accepted would start its ServerApp by now
    assert not marker.exists()
    # the center's own commands still work, and see no trace of the outsider
    assert {n["node-id"] for n in list_nodes(kit)} == registered
    assert center_runs(kit) == runs_before


def center_runs(kit) -> list[int]:
    done = subprocess.run(["flwr", "ls", CONNECTION, "--format", "json"], capture_output=True,
                          text=True, timeout=60, env=flower_env(kit.flwr_home), check=True)
    return sorted(int(run["run-id"]) for run in json.loads(done.stdout)["runs"])


def test_an_unregistered_node_is_refused(federation):
    kit, address, _, root = federation
    stranger = NodeKit(root / "stranger")
    create_node_keys(stranger.folder)
    store = make_store(root / "stranger-store", n_patients=6, site_name="stranger",
                       schema=SCHEMA)
    with pytest.raises(DeploymentError, match="does not know this node's public key"):
        start_supernode(stranger, address, kit.ca, store, port=free_port())
    assert stranger.supernode.pid() is None


def test_a_node_without_the_ca_certificate_cannot_connect(federation):
    _, address, nodes, root = federation
    node = nodes["hospital-a"]
    lost = NodeKit(root / "no-ca")
    lost.folder.mkdir()
    (lost.folder / "node.key").write_bytes(node.key.read_bytes())  # a registered identity
    with pytest.raises(DeploymentError, match="could not be verified"):
        start_supernode(lost, address, None, root / "hospital-a-store", port=free_port(),
                        preflight=False)
    with pytest.raises(DeploymentError, match=r"pass the ca\.crt"):  # what `node start` says
        start_supernode(lost, address, None, root / "hospital-a-store", port=free_port())


def test_a_study_completes_without_a_killed_node_and_rejects_nan_updates(federation):
    kit, _, nodes, root = federation
    study = root / "study.yaml"
    study.write_text(yaml.safe_dump({
        "data": {"deployed": {"sites": len(HOSPITALS), "prepare": SCHEMA.model_dump(
            mode="json")}},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}, "min_sites": 2,
                       "round_timeout_s": 120, "connect_timeout_s": 60},
        "train": {**TINY_TRAIN, "models": ["transfer"]}}))
    out = root / "study-run"
    outcome: dict = {}

    def submit() -> None:
        try:
            outcome["summary"] = submit_study(kit, study, out, app=APP, timeout_s=400)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    worker = threading.Thread(target=submit, daemon=True)
    worker.start()
    deadline = time.monotonic() + 300  # round 1 done: the server has seen its NaN update
    while rounds_done(out) < 1 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = nodes[KILLED].supernode.pid()
    assert pid is not None and worker.is_alive()
    # killed mid-study (`kill`): the SuperLink sees the node leave at once; a crash (SIGKILL)
    # is seen when its heartbeat lapses, about a minute later, and takes the same path
    os.killpg(pid, signal.SIGTERM)
    worker.join(timeout=420)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    events = summary["deployment"]["events"]
    dropped = {e["site"] for e in events if e["kind"] == "dropout"}
    rejected = [e for e in events if e["kind"] == "rejected"]
    assert dropped == {KILLED}
    assert {e["site"] for e in rejected} == {KILLED} and rejected[0]["round"] == 1
    assert all("NaN" in e["reason"] for e in rejected)
    state = load_checkpoint(RunFolder(out).federated_run(0, "transfer").path).global_state
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    lines = [json.loads(x) for x in RunFolder(out).metrics.read_text().splitlines()]
    last = max(x["round"] for x in lines)
    trained_last = {x["site"] for x in lines if x["kind"] == "train" and x["round"] == last}
    assert trained_last == {"hospital-a", "hospital-b"}  # the two healthy sites carried on
    assert set(summary["sites"]["transfer"]) >= {"hospital-a", "hospital-b"}
    report = RunFolder(out).report.read_text()
    assert "dropout" in report
    assert any(p.name.startswith("run-") for p in (kit.folder / "logs").iterdir())
