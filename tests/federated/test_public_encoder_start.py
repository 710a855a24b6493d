"""A federated run whose transfer model starts from a public encoder (``train.encoder_from``):
the server's first global model carries it and every site starts from it, without
pretraining rounds (in process, no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from builders.inference_models import saved_model
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN
from typer.testing import CliRunner

from fedecg.app import client_app
from fedecg.cli import app
from fedecg.config.federated import StudyConfig
from fedecg.federated import keys
from fedecg.federated.checkpoint import latest_site_state, load_checkpoint
from fedecg.federated.datasource import ensure_partition, make_plan
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import initial_model, read_result, run_server
from fedecg.models import load_inference_model
from fedecg.run_folder import RunFolder

ENCODER = "classifier.encoder."


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("fed") / "store", n_patients=40)


def test_every_site_starts_from_the_public_encoder_with_no_pretraining_rounds(store, tmp_path):
    """With the encoder frozen in both head stages, what each site trains and keeps is the
    encoder the server sent it: the public one, bit for bit up to FedAvg's rounding."""
    public_run = tmp_path / "public"
    saved_model(public_run / "model", seed=11)
    public, _ = load_inference_model(public_run / "model")
    config = StudyConfig.model_validate({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 0, "lab": 1, "diagnosis": 1}},
        "train": {**TINY_TRAIN, "encoder_from": str(public_run),
                  "lab": {"epochs": 1, "freeze_encoder": True},
                  "diagnosis": {"epochs": 1, "freeze_encoder": True}}})
    plan = make_plan(config, "transfer", tmp_path / "run", store,
                     ensure_partition(store, config.partition, tmp_path))
    run_server(InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i} for i in range(2)]), plan)
    assert read_result(Path(plan.out))["status"] == "ok"
    lines = [json.loads(x) for x in RunFolder(plan.out).metrics.read_text().splitlines()]
    trained = [(x["stage"], x["site"]) for x in lines if x["kind"] == "train"]
    assert trained == [(stage, site) for stage in ("lab", "diagnosis")
                       for site in ("site0", "site1")]
    expected = {ENCODER + k: v for k, v in public.encoder.state_dict().items()}
    global_state = load_checkpoint(Path(plan.out)).global_state
    sites = [latest_site_state(Path(plan.out), index) for index in range(2)]
    for key, value in expected.items():
        for state in (global_state, *sites):
            assert torch.allclose(state[key], value, atol=1e-6, rtol=0), key
    head = "classifier.dx_head.weight"  # while the head stages did train
    assert not torch.allclose(global_state[head], initial_model(plan).state_dict()[head])


def test_simulate_refuses_a_public_model_of_another_rate_in_one_line_before_any_round(
        store, tmp_path):
    public_run = tmp_path / "public"
    saved_model(public_run / "model", fs=250.0)
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 0, "lab": 1, "diagnosis": 1}},
        "train": {**TINY_TRAIN, "encoder_from": str(public_run)}}))
    result = CliRunner().invoke(app, ["simulate", "--config", str(study),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert f"{public_run}/model/model.pt" in lines[0]
    assert "sampling rate (Hz) is 250.0, the stores of this run have 100.0" in lines[0]
    assert not (tmp_path / "out").exists()
