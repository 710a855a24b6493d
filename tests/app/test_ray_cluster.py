"""A study run on an existing Ray cluster: two nodes on 127.0.0.1, one CPU each, started with
``ray start`` and stopped by PID (``builders/ray_cluster.py``), shared by this module's tests.

``fedecg simulate`` joins it through ``federation.ray_address``; ``flwr run .`` through
``RAY_ADDRESS`` in the environment of the local SuperLink it starts (Flower 1.42's
``options.backend.init-args`` carries no address). Either way two sites of one CPU each must run
on both nodes (Flower's actor pool holds one actor per one-CPU node), which the cluster's own
actor table shows, and the cluster must still be up afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from builders.flower_processes import flwr, flwr_env, started_by, stop, wait_for_result
from builders.ray_cluster import cluster_processes, cluster_state, two_node_cluster
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
SITE_ACTOR = "ClientAppActor"  # Flower's Ray actor that runs virtual sites' ClientApp
RUN_WAIT_S = 240


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[Path, str]]:
    """(the cluster's temporary folder, the head's address); every process stopped after."""
    folder = Path(f"/tmp/fedecg-cluster-{os.getpid()}")  # Ray's socket paths must stay short
    with two_node_cluster(folder) as address:
        raylets = [p for p in cluster_processes(folder, address) if p.name() == "raylet"]
        assert len(raylets) == 2
        yield folder, address
    assert cluster_processes(folder, address) == []


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-site study of a 40-patient store, one round per stage, the transfer model."""
    folder = tmp_path_factory.mktemp("cluster-study")
    config = folder / "study.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"store": str(make_store(folder / "store", n_patients=40))},
        "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}},
        "train": {**TINY_TRAIN, "models": ["transfer"]}, "baselines": False}))
    return config


def _sites_ran_on_every_node(address: str, earlier: dict) -> None:
    """The site actors created since ``earlier`` (a ``cluster_state``) ran on both nodes, and
    both nodes of then are still alive (the run did not stop the cluster)."""
    state = cluster_state(address)
    assert len(state["nodes"]) == 2 and state["nodes"] == earlier["nodes"], (earlier, state)
    site_nodes = {node for actor, (name, node) in state["actors"].items()
                  if name == SITE_ACTOR and actor not in earlier["actors"]}
    assert site_nodes == set(state["nodes"]), state


@pytest.mark.slow
def test_simulate_runs_on_an_existing_two_node_ray_cluster_and_leaves_it_running(
        cluster, study, tmp_path):
    _, address = cluster
    earlier = cluster_state(address)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    run = subprocess.run(
        [sys.executable, "-m", "fedecg.cli", "simulate", "--config", str(study), "--out",
         str(tmp_path / "run"), "--set", f"federation.ray_address={address}"],
        env=env, capture_output=True, text=True, timeout=RUN_WAIT_S)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = RunFolder(tmp_path / "run").read_summary()
    assert summary.federated["transfer"].diagnosis_macro_auroc is not None
    _sites_ran_on_every_node(address, earlier)


@pytest.mark.slow
def test_flwr_run_joins_the_cluster_named_by_ray_address(cluster, study, tmp_path):
    _, address = cluster
    earlier = cluster_state(address)
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    env = {**flwr_env(home), "RAY_ADDRESS": address}
    run_config = f'config="{study}" out="{out}" model="transfer"'
    try:
        started = flwr(["run", str(ROOT), "--run-config", run_config, "--federation-config",
                        "num-supernodes=2 client-resources-num-cpus=1", "--format", "json"],
                       env, tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        assert wait_for_result(out, home, RUN_WAIT_S)["status"] == "ok"
    finally:
        pids = started_by(home)
        assert stop(pids) == [], f"processes still running after SIGKILL: {pids}"
    assert RunFolder(out).summary.is_file()
    _sites_ran_on_every_node(address, earlier)
