"""``flwr run .`` as the README says: the app trains a tiny synthesized twin end to end and
writes the study folder (checkpoints, metrics, summary, model, report).

Flower's CLI starts a local SuperLink (simulation runtime) that outlives the command; this test
gives it a private ``FLWR_HOME`` and free ports, waits for the run (bounded), checks what the
ServerApp wrote, and stops the SuperLink and everything it started by PID, pass or fail.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from builders.flower_processes import flwr, flwr_env, started_by, stop, wait_for_result
from builders.tiny import TINY_TRAIN

from fedecg.federated.checkpoint import load_checkpoint
from fedecg.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[2]
RUN_WAIT_S = 180  # the run takes about a minute on 2 shared cores; room for a loaded machine


def _tiny_study(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"synthesize": {"patients": 30, "sites": 2, "seed": 0},
                 "cache_dir": str(folder / "cache")},
        "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}},
        "train": {**TINY_TRAIN, "models": ["transfer"]}}))
    return path


@pytest.mark.slow
def test_flwr_run_trains_the_app_and_writes_its_checkpoint(tmp_path: Path):
    home, out = tmp_path / "flwr-home", tmp_path / "out"
    env = flwr_env(home)
    run_config = f'config="{_tiny_study(tmp_path)}" out="{out}" model="transfer"'
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    try:
        started = flwr(["run", str(ROOT), "--run-config", run_config, "--federation-config",
                         "num-supernodes=2 client-resources-num-cpus=1", "--format", "json"],
                        env, tmp_path)
        assert started.returncode == 0, started.stdout + started.stderr
        run_id = json.loads(started.stdout)["run-id"]
        result = wait_for_result(out, home, RUN_WAIT_S)
        assert result["status"] == "ok", result
        checkpoint = load_checkpoint(RunFolder(out).federated_run(0, "transfer").path)
        assert checkpoint is not None and checkpoint.position.done
        lines = [json.loads(x) for x in RunFolder(out).metrics.read_text().splitlines()]
        assert {(x["stage"], x["site"]) for x in lines if x["kind"] == "train"} == {
            (s, f"site{i}") for s in ("pretrain", "lab", "diagnosis") for i in (0, 1)}
        deadline = time.monotonic() + 30
        while True:  # the SuperLink marks the run finished shortly after the ServerApp returns
            runs = json.loads(flwr(["ls", "--format", "json"], env, tmp_path).stdout)["runs"]
            status = next(r["status"] for r in runs if r["run-id"] == run_id)
            if status.startswith("finished") or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert status == "finished:completed"
        shown = flwr(["log", str(run_id), "--show"], env, tmp_path).stdout
        starts = [line for line in shown.splitlines() if "Starting StageRounds strategy" in line]
        assert len(starts) == 3, shown  # one per stage, each printed once
        configs = [line for line in shown.splitlines() if "ConfigRecord (train)" in line]
        assert configs and all("<run plan," in x and len(x) < 200 for x in configs), configs
        summary = json.loads(RunFolder(out).summary.read_text())
        assert set(summary["sites"]["transfer"]) == {"site0", "site1"}
        assert RunFolder(out).report.is_file() and RunFolder(out).model.is_dir()
    finally:
        pids = started_by(home)
        assert stop(pids) == [], f"processes still running after SIGKILL: {pids}"
    assert pids, "no SuperLink was found to stop: did `flwr run` start one under FLWR_HOME?"
    assert (ROOT / "pyproject.toml").read_bytes() == pyproject  # the source tree is untouched
