"""The public-pretraining arm under sample-level DP: the transfer model starts from a public
encoder, trains no pretraining rounds, spends at most its ε on the head stages, and its model
card says the encoder is outside the guarantee (the study driver, sites in process)."""

from __future__ import annotations

import json

from builders.inference_models import saved_model
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.app import client_app, run_study
from fedecg.config.federated import StudyConfig
from fedecg.federated import keys
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import RunPlan, run_server
from fedecg.models import load_inference_model
from fedecg.privacy import normalization
from fedecg.privacy.sample_dp import EPSILON
from fedecg.run_folder import RunFolder
from fedecg.study import Simulated

TARGET = 4.0


def _in_process(plan: RunPlan, progress) -> None:
    run_server(InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i} for i in range(2)]), plan,
               progress)


def test_public_encoder_with_no_pretraining_rounds_under_sample_dp(tmp_path, monkeypatch):
    monkeypatch.setitem(normalization.PUBLIC_SCALES, "lab_potassium_missing", (0.5, 0.5))
    store = make_store(tmp_path / "store", n_patients=40)
    saved_model(tmp_path / "public" / "model", seed=3)
    config = StudyConfig.model_validate({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 0, "lab": 1, "diagnosis": 2}},
        "train": {**TINY_TRAIN, "models": ["transfer"],
                  "encoder_from": str(tmp_path / "public")},
        "privacy": {"mode": "sample", "target_epsilon": TARGET}})
    run_study(config, tmp_path / "study", sites=Simulated(_in_process))
    folder = RunFolder(tmp_path / "study")
    train = [line for line in map(json.loads, folder.metrics.read_text().splitlines())
             if line["kind"] == "train"]
    assert sorted({line["stage"] for line in train}) == ["diagnosis", "lab"]
    assert len(train) == 2 * 3  # two sites, three rounds: the accountant's steps
    last = {line["site"]: line[EPSILON] for line in train}
    assert set(last) == {"site0", "site1"}
    assert all(0.85 * TARGET < spent <= TARGET for spent in last.values())  # all on lab, dx
    _, card = load_inference_model(folder.model)
    assert card.initialization["encoder_from"] == str(tmp_path / "public")
    assert card.initialization["stages_trained_after"] == ["lab", "diagnosis"]
    statement = card.privacy["public_encoder"]
    assert str(tmp_path / "public") in statement and "outside this guarantee" in statement
    assert "(lab, diagnosis)" in statement
    assert "Pretraining" not in card.privacy["mechanism"]  # no pretraining ran here
    assert card.privacy["mechanism"].startswith("DP-SGD at each site")
    assert "## Initialization\nECG encoder from the public model" in (
        folder.model / "model_card.md").read_text()
