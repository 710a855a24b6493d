"""Submit a study to the kit's SuperLink (``flwr run``) and follow it to the end.

``flwr run`` returns as soon as the SuperLink accepts the run, and a failed run still "ends":
so ``submit_study`` polls ``flwr ls`` until the run finishes, reports the rounds done as they
appear in the study folder, saves the run's log into the kit, and then trusts only the study
folder's ``result.json`` (written by fedecg's ServerApp): anything but ``ok`` is an error with
its reason.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fedecg
from fedecg.config.base import load_config
from fedecg.config.federated import StudyConfig
from fedecg.deploy.flower import flwr_json
from fedecg.deploy.superlink import CONNECTION, ServerKit
from fedecg.errors import DeploymentError
from fedecg.federated.datasource import run_models
from fedecg.federated.flower_env import flower_env
from fedecg.federated.orchestration import read_result
from fedecg.io import atomic_write_text
from fedecg.run_folder import RunFolder
from fedecg.training.stages import build_stages

Progress = Callable[[int, int], None]
"""``(rounds done, rounds in all)``."""


def default_app() -> Path:
    """The Flower app to submit: the fedecg project this package was installed from."""
    root = Path(fedecg.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise DeploymentError("fedecg is not installed from a project checkout; pass --app, "
                              "the folder whose pyproject.toml declares [tool.flwr.app]")
    return root


def total_rounds(config: StudyConfig, models: list[str]) -> int:
    """Rounds a study runs: every stage of every model, for every seed."""
    per_model = {name: sum(config.federation.rounds.of(stage.name)
                           for stage in build_stages(config.train, pretrained=name == "transfer"))
                 for name in models}
    return len(config.seeds) * sum(per_model.values())


def rounds_done(out: Path) -> int:
    """Rounds finished so far, counted from the study's per-run ``metrics.jsonl``."""
    done = set()
    for (seed, model), run in RunFolder(out).federated_runs().items():
        path = run.metrics
        for line in (path.read_text().splitlines() if path.is_file() else []):
            record = json.loads(line)
            if record.get("kind") == "evaluate" and record.get("site") == "all":
                done.add((seed, model, record["round"]))
    return len(done)


def submit_study(kit: ServerKit, study: Path, out: Path, *, app: Path | None = None,
                 model: str = "", overrides: list[str] | None = None,
                 progress: Progress | None = None, poll_s: float = 2.0,
                 timeout_s: float | None = None) -> dict[str, Any]:
    """Run ``study`` on the federation into ``out``; return its summary."""
    study, out = Path(study).resolve(), Path(out).resolve()
    config = load_config(StudyConfig, study, overrides or [])
    models = run_models({"model": model}, config)
    kit.address()  # a SuperLink was started from this kit
    run_config = Path(kit.folder) / "runs" / f"{out.name}.toml"
    atomic_write_text(run_config, "".join(f'{key} = {json.dumps(value)}\n' for key, value in {
        "config": str(study), "set": ";".join(overrides or []), "model": ",".join(models),
        "out": str(out)}.items()))
    answer = flwr_json(["run", str(app or default_app()), CONNECTION, "--run-config",
                        str(run_config)], kit.flwr_home, timeout=300)
    run_id = int(answer["run-id"])
    status = _follow(kit, run_id, out, total_rounds(config, models), progress, poll_s,
                     timeout_s)
    _save_log(kit, run_id)
    result = read_result(out)
    if result["status"] != "ok":
        reason = result.get("reason") or status.get("status-details") or status["status"]
        raise DeploymentError(f"run {run_id} ({status['status']}): {reason}")
    return RunFolder(out).read_summary().as_dict()


def _follow(kit: ServerKit, run_id: int, out: Path, total: int, progress: Progress | None,
            poll_s: float, timeout_s: float | None) -> dict[str, Any]:
    start = time.monotonic()
    while True:
        runs = flwr_json(["ls", CONNECTION, "--run-id", str(run_id)], kit.flwr_home)["runs"]
        if progress is not None:
            progress(rounds_done(out), total)
        if runs and str(runs[0]["status"]).startswith("finished"):
            return runs[0]
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            flwr_json(["stop", str(run_id), CONNECTION], kit.flwr_home)
            raise DeploymentError(f"run {run_id} did not finish within {timeout_s:g} s; "
                                  "it was stopped (resubmit to the same --out to resume)")
        time.sleep(poll_s)


def _save_log(kit: ServerKit, run_id: int) -> None:
    """Keep the run's ServerApp log in ``KIT/logs/run-<id>.log``."""
    done = subprocess.run(["flwr", "log", str(run_id), CONNECTION, "--show"],
                          capture_output=True, text=True, timeout=60, check=False,
                          env=flower_env(kit.flwr_home))
    atomic_write_text(Path(kit.folder) / "logs" / f"run-{run_id}.log", done.stdout + done.stderr)
