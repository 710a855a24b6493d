"""``fedecg simulate``: the study end to end (Ray), failure detection, resume and CLI errors."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import flwr.simulation
import psutil
import pytest
import yaml
from builders.run_history import metrics_history
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN
from flwr.app import Context, RecordDict
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.federated import keys
from fedecg.federated import site as site_module
from fedecg.federated.inprocess import InProcessGrid
from fedecg.models.io import load_inference_model
from fedecg.run_folder import RunFolder

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("sim") / "store", n_patients=40)


def _study(folder: Path, store: Path, **extra) -> Path:
    config = {"data": {"store": str(store)}, "partition": {"num_sites": 2},
              "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}},
              "train": {**TINY_TRAIN, "models": ["transfer"]}, **extra}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fake_simulation(monkeypatch) -> None:
    """Flower's run_simulation, in process: the ServerApp over an InProcessGrid; like Flower it
    returns normally when the ServerApp fails."""

    def run_simulation(server_app, client_app, num_supernodes, backend_config=None, **_):
        grid = InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i}
                                          for i in range(num_supernodes)])
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
        with contextlib.suppress(Exception):
            server_app(grid, context)

    monkeypatch.setattr(flwr.simulation, "run_simulation", run_simulation)


@pytest.mark.slow
def test_simulate_end_to_end_with_ray(store, tmp_path):
    """The real Flower simulation engine: 2 virtual sites, 3 stages, baselines, report."""
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", "--config", str(_study(tmp_path, store)),
                                 "--out", str(out), "--baselines"])
    assert result.exit_code == 0, result.output
    summary = json.loads(RunFolder(out).summary.read_text())
    for section in ("federated", "pooled", "local_only", "sites"):
        assert "transfer" in summary[section]
    assert set(summary["sites"]["transfer"]) == {"site0", "site1"}
    assert 0 <= summary["federated"]["transfer"]["diagnosis_macro_auroc"] <= 1
    assert set(summary["local_only"]["transfer"]["sites"]) == {"site0", "site1"}
    lines = [json.loads(x) for x in RunFolder(out).metrics.read_text().splitlines()]
    assert {(x["stage"], x["site"]) for x in lines if x["kind"] == "train"} == {
        (s, f"site{i}") for s in ("pretrain", "lab", "diagnosis") for i in (0, 1)}
    _model, card = load_inference_model(RunFolder(out).model)
    assert card.diagnosis_labels == ["atrial_fibrillation", "heart_failure", "ckd"]
    assert RunFolder(out).config.is_file()
    page = RunFolder(out).report.read_text()
    federated = summary["federated"]["transfer"]["diagnosis_macro_auroc"]
    assert re.search(rf"<tr><td>transfer</td><td[^>]*>{federated:.3f}[^<]*</td>", page)
    for section in ("Per site", "Curves per round and stage", "Site events", "Privacy"):
        assert f"<h2>{section}</h2>" in page


def test_pooled_baseline_alone(store, tmp_path, monkeypatch):
    """``baselines: pooled`` trains the pooled baseline and not the local-only ones (which cost
    as much again); the summary, the CLI table and the report show pooled beside federated."""
    _fake_simulation(monkeypatch)
    out = tmp_path / "run"
    result = runner.invoke(app, ["simulate", "--config",
                                 str(_study(tmp_path, store, baselines="pooled")),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(RunFolder(out).summary.read_text())
    assert 0 <= summary["pooled"]["transfer"]["diagnosis_macro_auroc"] <= 1
    assert summary["local_only"] == {}
    assert not list(out.glob("seed-0/transfer/local-*"))
    assert list(out.glob("seed-0/transfer/pooled*"))
    pooled = summary["pooled"]["transfer"]["diagnosis_macro_auroc"]
    row = re.search(r"<tr><td>transfer</td>(.*?)</tr>", RunFolder(out).report.read_text())
    pooled_cell, gap_cell = re.findall(r"<td[^>]*>([^<]*)</td>", row[1])[1:3]
    assert pooled_cell.startswith(f"{pooled:.3f}") and gap_cell.startswith(("-", "0", "+"))
    page = RunFolder(out).report.read_text()
    assert "local-only macro" not in page  # no empty local-only columns
    assert "with the pooled baseline (no local-only)" in page
    assert "<h2>Results: federated vs pooled</h2>" in page
    bad = runner.invoke(app, ["simulate", "--config", str(_study(tmp_path, store)),
                              "--out", str(tmp_path / "bad"), "--set", "baselines=local"])
    assert bad.exit_code == 1 and "baselines" in bad.output


def test_failed_site_makes_simulate_exit_1_with_the_reason(store, tmp_path, monkeypatch):
    _fake_simulation(monkeypatch)

    def broken(*args, **kwargs):
        raise RuntimeError("out of disk at the site")

    monkeypatch.setattr(site_module, "train_window", broken)  # every site's training fails
    result = runner.invoke(app, ["simulate", "--config", str(_study(tmp_path, store)),
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "failed" in result.output and "out of disk at the site" in result.output
    status = json.loads((tmp_path / "run/seed-0/transfer/federated/result.json").read_text())
    assert status["status"] == "failed"


def test_resume_finishes_a_study_and_refuses_another_config(store, tmp_path, monkeypatch):
    _fake_simulation(monkeypatch)
    config = _study(tmp_path, store)
    out = tmp_path / "run"
    calls = {"n": 0}
    real = site_module.validate

    def flaky(*args, **kwargs):  # the first study dies in its third round
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(site_module, "validate", flaky)
    killed = runner.invoke(app, ["simulate", "--config", str(config), "--out", str(out)])
    assert killed.exit_code != 0 and not RunFolder(out).summary.exists()
    changed = runner.invoke(app, ["simulate", "--resume", str(out), "--set", "seeds=[1]"])
    assert changed.exit_code == 1 and "differs from this config" in changed.output
    resumed = runner.invoke(app, ["simulate", "--resume", str(out)])
    assert resumed.exit_code == 0, resumed.output
    assert "this command resumed an interrupted run" in RunFolder(out).report.read_text()
    monkeypatch.setattr(site_module, "validate", real)
    whole = tmp_path / "whole"
    assert runner.invoke(app, ["simulate", "--config", str(config), "--out", str(whole)]
                         ).exit_code == 0
    assert metrics_history(out) == metrics_history(whole) and len(metrics_history(whole)) > 5
    assert _summary(out) == _summary(whole)


def _summary(run: Path) -> dict:
    """RUN/summary.json without its paths (which name the run folder)."""
    summary = json.loads(RunFolder(run).summary.read_text())
    return {k: v for k, v in summary.items() if k != "partition"}


def test_simulate_refuses_a_non_empty_out_and_a_bad_key(store, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("x")
    config = _study(tmp_path, store)
    busy = runner.invoke(app, ["simulate", "--config", str(config), "--out",
                               str(tmp_path / "run")])
    assert busy.exit_code == 1 and "not written by fedecg" in busy.output
    bad = runner.invoke(app, ["simulate", "--config", str(config), "--out",
                              str(tmp_path / "new"), "--set", "federation.roundz=3"])
    assert bad.exit_code == 1 and "federation.roundz" in bad.output
    neither = runner.invoke(app, ["simulate", "--config", str(config)])
    assert neither.exit_code == 1 and "--out" in neither.output


def test_simulate_prints_a_line_per_round_with_validation_metric_and_eta(store, tmp_path,
                                                                          monkeypatch):
    _fake_simulation(monkeypatch)
    config = _study(tmp_path, store)
    result = runner.invoke(app, ["simulate", "--config", str(config), "--out",
                                 str(tmp_path / "run"), "--set", "federation.rounds.lab=2"])
    assert result.exit_code == 0, result.output
    rounds = [line for line in result.output.splitlines() if line.startswith("transfer · ")]
    assert [line.split(" · ")[1] for line in rounds] == [
        "pretrain round 1/1", "lab round 1/2", "lab round 2/2", "diagnosis round 1/1"]
    assert "val loss" in rounds[0] and "ETA" in rounds[0] and "s/round" in rounds[0]
    assert "val lab AUROC" in rounds[1] and "val dx AUROC" in rounds[-1]
    assert rounds[-1].endswith("done")
    machine = runner.invoke(app, ["simulate", "--config", str(config), "--out",
                                  str(tmp_path / "json"), "--log-json"])
    assert machine.exit_code == 0, machine.output
    records = [json.loads(x) for x in machine.stdout.splitlines() if x.startswith("{")]
    done = [(r["stage"], r["done"], r["total"]) for r in records if r["event"] == "round"]
    assert done == [("pretrain", 1, 3), ("lab", 2, 3), ("diagnosis", 3, 3)]
    assert records[-1]["event"] == "result" and "transfer" in records[-1]["federated"]


def test_simulate_refuses_a_crop_longer_than_the_records(store, tmp_path):
    result = runner.invoke(app, ["simulate", "--config", str(_study(tmp_path, store)), "--out",
                                 str(tmp_path / "run"), "--set", "train.crop_samples=400"])
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert "crop_samples 400 is longer than the records" in result.output
    assert "Set crop_samples to at most 200" in result.output


def _names(processes: list[psutil.Process]) -> set[str]:
    """Names (``ray::DashboardAgent``, ``raylet``...) of the live, non-zombie ``processes``."""
    names = set()
    for proc in processes:
        with contextlib.suppress(psutil.Error):
            if proc.status() != psutil.STATUS_ZOMBIE:
                names.add(Path(proc.cmdline()[0].split()[0]).name if proc.cmdline()
                          else proc.name())
    return names


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_killed_simulate_leaves_no_ray_process(store, tmp_path, signum):
    """Ctrl-C, SIGTERM or even SIGKILL mid-run: fedecg ends, and within seconds every process of
    its Ray session is gone, the orphaned workers too (the agents ignore SIGTERM and used to
    outlive fedecg; Ray's shutdown orphans the workers, which raylet's descendants then miss)."""
    config = _study(tmp_path, store)
    study = yaml.safe_load(config.read_text())
    study["federation"]["rounds"] = {"pretrain": 200, "lab": 1, "diagnosis": 1}
    config.write_text(yaml.safe_dump(study))
    command = [sys.executable, "-m", "fedecg.cli", "simulate", "--config", str(config), "--out",
               str(tmp_path / "run")]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 180
        while "ray::ClientAppActor" not in _names(session):  # the workers have started
            assert run.poll() is None and time.monotonic() < deadline, "Ray never started"
            time.sleep(0.5)
            session = psutil.Process(run.pid).children(recursive=True)
        session = psutil.Process(run.pid).children(recursive=True)
        assert {"ray::DashboardAgent", "ray::RuntimeEnvAgent", "raylet"} <= _names(session)
        run.send_signal(signum)
        assert run.wait(timeout=60) != 0
        _, alive = psutil.wait_procs(session, timeout=15)
        assert _names(alive) == set()
    finally:
        for proc in session:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if run.poll() is None:
            run.kill()


@pytest.mark.parametrize("mode", ["client", "sample"])
def test_the_python_study_api_runs_a_private_config_private(store, tmp_path, monkeypatch, mode):
    """`run_study` called from Python with a private config (no apps passed) trains with DP:
    client level, every round is in the server's ledger; sample level, every site reports ε."""
    from fedecg.app import run_study
    from fedecg.config.base import load_config
    from fedecg.config.federated import StudyConfig
    from fedecg.privacy import normalization
    from fedecg.privacy.accounting import Ledger
    from fedecg.privacy.client_dp import LEDGER_FILE
    from fedecg.privacy.sample_dp import EPSILON

    _fake_simulation(monkeypatch)
    monkeypatch.setitem(normalization.PUBLIC_SCALES, "lab_potassium_missing", (0.5, 0.5))
    config = load_config(StudyConfig, _study(tmp_path, store), [
        f"privacy.mode={mode}", "privacy.target_epsilon=50"])
    run_study(config, tmp_path / "private")
    if mode == "client":
        ledger = RunFolder(tmp_path / "private").federated_run(0, "transfer").path / LEDGER_FILE
        released = Ledger.from_record(json.loads(ledger.read_text()))
        assert sum(steps for _, _, steps in released.history) == 3  # a round of each stage
        assert 0 < released.epsilon() <= 50
    else:
        lines = [json.loads(x) for x in
                 RunFolder(tmp_path / "private").metrics.read_text().splitlines()]
        train = [x for x in lines if x["kind"] == "train"]
        assert train and all(0 < x[EPSILON] <= 50 for x in train)


def test_a_server_without_client_level_dp_refuses_a_private_plan(store, tmp_path):
    """The low-level ``run_server`` refuses a client-level DP plan without its wrapper."""
    from fedecg.app import client_app
    from fedecg.config.base import load_config
    from fedecg.config.federated import StudyConfig
    from fedecg.errors import FederationError
    from fedecg.federated.datasource import ensure_partition, make_plan
    from fedecg.federated.orchestration import run_server

    config = load_config(StudyConfig, _study(tmp_path, store), [
        "privacy.mode=client", "privacy.target_epsilon=50"])
    partition = ensure_partition(store, config.partition, tmp_path)
    plan = make_plan(config, "transfer", tmp_path / "run", store, partition)
    grid = InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i} for i in range(2)])
    with pytest.raises(FederationError, match="without differential privacy"):
        run_server(grid, plan)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_eight_natural_sites_never_oversubscribe_the_cores_and_report_their_memory(tmp_path):
    """The real engine over 8 natural sites (11 hospitals grouped), one round per stage: Ray
    never runs more ClientApp actors (each one site at a time) than usable cores, and every
    site's peak memory reaches summary.json."""
    from fedecg.federated.ray_session import usable_cores

    store = make_store(tmp_path / "store", n_patients=64, ecgs_per_patient=2, hospitals=11)
    config = _study(tmp_path, store, partition={"method": "natural", "num_sites": 8,
                                                "column": "hospital"})
    log = tmp_path / "simulate.log"
    with log.open("w") as sink:
        run = subprocess.Popen([sys.executable, "-m", "fedecg.cli", "simulate", "--config",
                                str(config), "--out", str(tmp_path / "run")],
                               stdout=sink, stderr=subprocess.STDOUT)
    most = 0
    try:
        while run.poll() is None:
            actors = [p for p in psutil.Process(run.pid).children(recursive=True)
                      if _names([p]) == {"ray::ClientAppActor"}]
            most = max(most, len(actors))
            time.sleep(0.3)
    except psutil.NoSuchProcess:
        pass
    assert run.wait(timeout=300) == 0, log.read_text()[-2000:]
    assert 1 <= most <= usable_cores()
    sites = json.loads(RunFolder(tmp_path / "run").summary.read_text())["partition"]["sites"]
    assert len(sites) == 8
    memory = psutil.virtual_memory().total / 2**20
    assert all(50 < site[keys.PEAK_RSS_MB] < memory for site in sites.values()), sites


def test_a_fraction_of_a_cpu_per_site_is_refused_in_one_line(store, tmp_path):
    result = runner.invoke(app, ["simulate", "--config", str(_study(tmp_path, store)), "--out",
                                 str(tmp_path / "run"), "--set", "federation.client_cpus=0.5"])
    assert result.exit_code == 1 and "client_cpus" in result.output
    assert "Traceback" not in result.output


def test_a_ray_address_where_no_cluster_answers_is_refused_in_one_line(store, tmp_path):
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    result = runner.invoke(app, ["simulate", "--config",
                                 str(_study(tmp_path, store, baselines=False)), "--out",
                                 str(tmp_path / "run"), "--set",
                                 f"federation.ray_address={address}"])
    assert result.exit_code == 1, result.output
    assert f"federation.ray_address '{address}': no Ray cluster answers there" in result.output
    assert "Traceback" not in result.output and time.monotonic() - started < 60
