"""Federated training in process (no Ray): equivalences, resume, and faults.

The ServerApp logic (``run_server``) and the real ClientApp talk through ``InProcessGrid``,
which hands Flower messages to the ClientApp the way Flower's simulation does.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders.killed_grid import KilledGrid
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.app import client_app
from fedecg.config.federated import StudyConfig
from fedecg.config.privacy import DPConfig
from fedecg.data.store import SiteStore
from fedecg.errors import FederationError
from fedecg.federated import keys
from fedecg.federated import site_handlers as client_module
from fedecg.federated.checkpoint import latest_site_state, load_checkpoint
from fedecg.federated.datasource import ensure_partition, make_plan
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import initial_model, read_result, run_server
from fedecg.federated.partition import site_view
from fedecg.federated.site import RoundPlan, local_train
from fedecg.models.build import build_model
from fedecg.run_folder import RunFolder
from fedecg.training.data import TrainingData
from fedecg.training.runner import MetricsLog, fit_model
from fedecg.training.stages import build_stages


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("fed") / "store", n_patients=40)


def _config(store: Path, **sections) -> StudyConfig:
    data = {"data": {"store": str(store)}, "partition": {"num_sites": 2},
            "federation": {"rounds": {"pretrain": 2, "lab": 1, "diagnosis": 2}},
            "train": TINY_TRAIN}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return StudyConfig.model_validate(data)


def _run(config: StudyConfig, out: Path, model: str = "transfer", grid=None,
         node_configs=None):
    store = Path(config.data.store)
    plan = make_plan(config, model, out / "run", store,
                     ensure_partition(store, config.partition, out))
    sites = config.partition.num_sites
    grid = grid or InProcessGrid(client_app, node_configs or
                                 [{keys.NODE_PARTITION_ID: i} for i in range(sites)])
    run_server(grid, plan)
    return plan


def test_one_site_federated_equals_centralized(store, tmp_path):
    """1 site, 1 round per stage of E local epochs == centralized training with E epochs
    (each keeping its last epoch: a round has no epochs to select among)."""
    config = _config(store, partition={"num_sites": 1},
                     federation={"min_sites": 1, "rounds": {"pretrain": 1, "lab": 1,
                                                            "diagnosis": 1}},
                     train={"early_stopping": {"keep_best": False}})
    epochs = {"pretrain": 2, "lab": 2, "diagnosis": 2}
    train = config.train.model_copy(update={
        name: getattr(config.train, name).model_copy(update={"epochs": e})
        for name, e in epochs.items()})
    config = config.model_copy(update={"train": train, "federation": config.federation
                                       .model_copy(update={"local_epochs": 2})})
    plan = _run(config, tmp_path)
    federated = latest_site_state(Path(plan.out), 0)
    central = fit_model("transfer", TrainingData([SiteStore.open(store)]), train,
                        tmp_path / "central.pt", MetricsLog(tmp_path / "central.jsonl"))
    global_state = load_checkpoint(Path(plan.out)).global_state
    for key, value in central.state_dict().items():
        assert torch.allclose(federated[key], value, atol=1e-6, rtol=0), key
        if key.startswith("classifier."):
            assert torch.allclose(global_state[key], value, atol=1e-6, rtol=0), key


def test_run_writes_metrics_per_round_site_and_stage(store, tmp_path):
    plan = _run(_config(store), tmp_path)
    assert read_result(Path(plan.out))["status"] == "ok"
    lines = [json.loads(x) for x in RunFolder(plan.out).metrics.read_text().splitlines()]
    train = [(x["stage"], x["round"], x["site"]) for x in lines if x["kind"] == "train"]
    assert train == [(stage, r, s) for stage, r in [("pretrain", 1), ("pretrain", 2), ("lab", 3),
                                                    ("diagnosis", 4), ("diagnosis", 5)]
                     for s in ("site0", "site1")]
    evaluated = {(x["round"], x["site"]) for x in lines if x["kind"] == "evaluate"}
    assert evaluated == {(r, s) for r in range(1, 6) for s in ("site0", "site1", "all")}
    diagnosis = [x for x in lines if x["kind"] == "evaluate" and x["stage"] == "diagnosis"]
    assert all(x["diagnosis-auroc"] is None or 0 <= x["diagnosis-auroc"] <= 1 for x in diagnosis)
    assert all(x["bytes-sent"] > 0 for x in lines if x["kind"] == "train")


@pytest.mark.parametrize("strategy,personal", [("fedadam", True), ("fedprox", False),
                                               ("fedavgm", False)])
def test_resume_equals_uninterrupted(store, tmp_path, strategy, personal):
    """Also with server momentum (FedAvgM's state travels in the checkpoint)."""
    config = _config(store, federation={"personal_heads": personal,
                                        "strategy": {"name": strategy, "proximal_mu": 0.1,
                                                     "server_momentum": 0.5}})
    whole = _run(config, tmp_path / "whole")
    nodes = [{keys.NODE_PARTITION_ID: i} for i in range(2)]
    with pytest.raises(KeyboardInterrupt):  # killed in round 4's training (diagnosis, 1 of 2)
        _run(config, tmp_path / "split", grid=KilledGrid(client_app, nodes, kill_at=7))
    assert load_checkpoint(tmp_path / "split" / "run").global_round == 3
    resumed = _run(config, tmp_path / "split")  # fresh grid: sites restore their saved state
    a, b = load_checkpoint(Path(whole.out)), load_checkpoint(Path(resumed.out))
    assert a.position == b.position and a.position.done
    for key, value in a.global_state.items():
        assert torch.equal(value, b.global_state[key]), key
    for site in (0, 1):
        mine, theirs = latest_site_state(Path(whole.out), site), latest_site_state(
            Path(resumed.out), site)
        assert all(torch.equal(v, theirs[k]) for k, v in mine.items())
    volatile = {keys.TRAIN_SECONDS, keys.PEAK_RSS_MB}
    assert [{k: v for k, v in line.items() if k not in volatile} for line in a.history] == [
        {k: v for k, v in line.items() if k not in volatile} for line in b.history]


def test_personal_heads_never_leave_the_site(store, tmp_path):
    plan = _run(_config(store, federation={"personal_heads": True}), tmp_path)
    shared = load_checkpoint(Path(plan.out)).global_state
    site0, site1 = (latest_site_state(Path(plan.out), i) for i in (0, 1))
    initial = initial_model(plan).state_dict()
    for head in ("classifier.dx_head.weight", "classifier.lab_head.weight"):
        assert not torch.equal(site0[head], site1[head])
        assert torch.equal(shared[head], initial[head])  # the server never saw a head
    encoder = next(k for k in shared if k.startswith("classifier.encoder.") and "weight" in k)
    assert not torch.equal(shared[encoder], initial[encoder])


def test_mismatched_store_is_rejected_at_the_first_round(store, tmp_path):
    other = make_store(tmp_path / "other", n_patients=10, fs=250.0, site_name="hospital-b")
    config = _config(store)
    nodes = [{keys.NODE_PARTITION_ID: 0}, {keys.NODE_DATA_DIR: str(other)}]
    with pytest.raises(FederationError, match=r"site hospital-b: .*fs: 100.0 vs 250.0"):
        _run(config, tmp_path, node_configs=nodes)
    result = read_result(tmp_path / "run")
    assert result["status"] == "failed" and "hospital-b" in result["reason"]
    assert "train round 1" in result["reason"]


def test_client_exception_fails_the_run_with_its_reason(store, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(client_module, "local_train", boom)
    with pytest.raises(FederationError, match="disk on fire"):
        _run(_config(store), tmp_path)
    assert "disk on fire" in read_result(tmp_path / "run")["reason"]


def test_site_smaller_than_a_batch_trains_one_batch_and_empty_site_sits_out(store, caplog):
    opened = SiteStore.open(store)
    config = _config(store)
    stage = build_stages(config.train, pretrained=True)[0]
    plan = RoundPlan("transfer", 0, 1, 1)
    train_rows = opened.indices("train")
    small = TrainingData([site_view(opened, train_rows[:5], name="tiny")])
    model = build_model("transfer", config.train, small.manifest, small.train_clinical())
    with caplog.at_level(logging.INFO):
        metrics = local_train(model, stage, small, config.train, config.federation, plan, "tiny")
    assert metrics[keys.NUM_EXAMPLES] == 5 and metrics[keys.TRAIN_STEPS] == 1
    assert "fewer than batch_size" in caplog.text
    lone = TrainingData([site_view(opened, train_rows[:1], name="lone")])
    metrics = local_train(build_model("transfer", config.train, lone.manifest,
                                      lone.train_clinical()), stage, lone, config.train,
                          config.federation, plan, "lone")
    assert metrics[keys.NUM_EXAMPLES] == 0 and np.isnan(metrics[keys.TRAIN_LOSS])


def test_a_private_run_is_refused_rather_than_trained_without_dp(store, tmp_path):
    """A site whose handlers get no privacy hook (not fedecg.app's ClientApp) refuses."""
    config = _config(store).model_copy(update={"privacy": DPConfig(mode="sample",
                                                                   target_epsilon=3.0)})
    nodes = [{keys.NODE_PARTITION_ID: i} for i in range(2)]
    with pytest.raises(FederationError, match="differential privacy"):
        _run(config, tmp_path, grid=InProcessGrid(client_module.handle_train, nodes))


def test_a_plan_with_unknown_prevalence_travels_to_the_sites(store, tmp_path):
    """A label no record knows has NaN prevalence; the plan's JSON must carry it back."""
    from fedecg.federated.orchestration import RunPlan

    plan = _run(_config(store, federation={"rounds": {"pretrain": 0, "lab": 0,
                                                      "diagnosis": 0}}), tmp_path)
    plan.manifest.prevalence["abn_x"] = {"known": 0, "positive": 0, "prevalence": float("nan")}
    back = RunPlan.from_json(plan.to_json())
    assert np.isnan(back.manifest.prevalence["abn_x"]["prevalence"])
    assert back.config.privacy.target_epsilon == float("inf")


@pytest.mark.parametrize("reason,expected", [
    ("<class 'fedecg.errors.FederationError'>:<'site b: fs: 100.0 vs 250.0'>",
     "FederationError: site b: fs: 100.0 vs 250.0"),
    ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run()\n"
     "  File \"x.py\", line 1\nException ClientAppException occurred. Message: disk\n full'>",
     "ClientAppException: disk full"),
    ("Error: Node Unavailable - no heartbeat", "Error: Node Unavailable - no heartbeat")])
def test_a_site_error_becomes_one_line(reason, expected):
    from flwr.app import Error

    from fedecg.federated.strategies import error_reason

    assert error_reason(Error(code=2, reason=reason)) == expected


def test_sites_without_labs_skip_the_lab_stage(tmp_path, caplog):
    """Deployed studies have no store at the server: when every site reports 0 lab examples in
    the first lab round, the server skips the stage (said once) and goes on to diagnosis."""
    store = make_store(tmp_path / "store", n_patients=20)
    cohort = pd.read_parquet(store / "cohort.parquet")
    cohort[[c for c in cohort if c.startswith(("abn_", "lab_"))]] = np.nan
    cohort.to_parquet(store / "cohort.parquet", index=False)
    with caplog.at_level(logging.WARNING, logger="fedecg"):
        plan = _run(_config(store), tmp_path, model="signal-only")
    assert read_result(Path(plan.out))["status"] == "ok"
    assert caplog.text.count("the lab stage is skipped") == 1
    lines = [json.loads(x) for x in RunFolder(plan.out).metrics.read_text().splitlines()]
    lab = [x for x in lines if x["stage"] == "lab" and x["kind"] == "train"]
    assert lab and all(x["num-examples"] == 0 for x in lab)
    assert {x["stage"] for x in lines if x["kind"] == "evaluate"} == {"diagnosis"}


def test_a_stalled_stage_stops_and_keeps_its_best_round(store, tmp_path, monkeypatch):
    """The sites' validation loss of the aggregated model per round is scripted 1.0, 0.8, 0.9,
    0.95 (then 0.1, never reached): with patience 2 the lab stage stops after round 4 and the
    run goes on with round 2's weights, on record as a ``selected`` line."""
    script = {1: 1.0, 2: 0.8, 3: 0.9, 4: 0.95, 5: 0.1}
    seen: dict[int, dict[str, torch.Tensor]] = {}
    real = client_module.local_evaluate

    def scripted(model, stage, data, config, split="test"):
        metrics = real(model, stage, data, config, split)
        if split == "val" and stage.name == "lab":
            stage_round = len(seen) + 1  # one site: one validation per round
            seen[stage_round] = {k: v.clone() for k, v in model.state_dict().items()}
            metrics[keys.LOSS] = script[stage_round]
        return metrics

    monkeypatch.setattr(client_module, "local_evaluate", scripted)
    config = _config(store, partition={"num_sites": 1},
                     federation={"min_sites": 1, "rounds": {"pretrain": 0, "lab": 5,
                                                            "diagnosis": 0}},
                     train={"early_stopping": {"patience": 2}, "lab": {"monitor": "loss"}})
    plan = _run(config, tmp_path, model="signal-only")
    lines = [json.loads(x) for x in RunFolder(plan.out).metrics.read_text().splitlines()]
    assert sorted({x["round"] for x in lines if x["kind"] == "train"}) == [1, 2, 3, 4]
    (selected,) = [x for x in lines if x["kind"] == "selected"]
    assert (selected["selected-stage-round"], selected["rounds-trained"],
            selected["rounds-planned"], selected["val-loss"]) == (2, 4, 5, 0.8)
    saved = load_checkpoint(Path(plan.out))
    assert saved.position.done and sorted(seen) == [1, 2, 3, 4]
    lab_keys = [k for k in saved.global_state if k.startswith("classifier.lab_head.")]
    assert lab_keys
    for key in lab_keys:
        assert torch.equal(saved.global_state[key], seen[2][key]), key
        assert not torch.equal(saved.global_state[key], seen[4][key]), key


def test_without_keep_best_the_last_round_is_kept_and_said(store, tmp_path):
    config = _config(store, train={"early_stopping": {"keep_best": False}})
    plan = _run(config, tmp_path, model="signal-only")
    lines = [json.loads(x) for x in RunFolder(plan.out).metrics.read_text().splitlines()]
    selected = {x["stage"]: x for x in lines if x["kind"] == "selected"}
    assert set(selected) == {"lab", "diagnosis"}
    for line in selected.values():
        assert line["selected-stage-round"] == line["rounds-trained"] == line["rounds-planned"]


def test_a_site_process_reports_the_peak_of_its_own_round():
    """A Ray actor serves virtual sites in turn: the peak a round reports starts at that round
    (VmHWM reset), so a big earlier site does not show in a small later one."""
    client_module.reset_peak_rss()
    start = client_module.peak_rss_mb()
    block = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
    grown = client_module.peak_rss_mb()
    del block
    client_module.reset_peak_rss()
    assert grown > start + 250
    assert client_module.peak_rss_mb() < grown - 250
