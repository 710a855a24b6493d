"""Sample-level DP through the real ServerApp loop and ClientApp (in process, no Ray)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.app import client_app
from fedecg.config.federated import StudyConfig
from fedecg.federated import keys
from fedecg.federated.datasource import ensure_partition, make_plan
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import run_server
from fedecg.privacy import normalization
from fedecg.privacy.sample_dp import EPSILON, STOPPED
from fedecg.run_folder import RunFolder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("fed") / "store", n_patients=40)


@pytest.mark.parametrize(("model", "rounds"), [("transfer", 5), ("multimodal", 3)])
def test_dp_run_reports_cumulative_epsilon_per_site_and_round(store, tmp_path, monkeypatch,
                                                              model, rounds):
    """Every model of the privacy sweep trains under DP (multimodal: the clinical encoder too,
    on public standardization), each round adding to each site's ε."""
    monkeypatch.setitem(normalization.PUBLIC_SCALES, "lab_potassium_missing", (0.5, 0.5))
    config = StudyConfig.model_validate({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 2, "lab": 1, "diagnosis": 2}},
        "train": TINY_TRAIN, "privacy": {"mode": "sample", "target_epsilon": 4.0}})
    plan = make_plan(config, model, tmp_path / "run", store,
                     ensure_partition(store, config.partition, tmp_path))
    grid = InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i} for i in range(2)])
    run_server(grid, plan)
    text = RunFolder(tmp_path / "run").metrics.read_text()
    train = [line for line in map(json.loads, text.splitlines()) if line["kind"] == "train"]
    for site in (0, 1):
        spent = [line[EPSILON] for line in train if line["site_index"] == site]
        assert len(spent) == rounds and all(b > a for a, b in itertools.pairwise(spent))
        assert 3.5 < spent[-1] <= 4.0
    assert all(line.get(keys.TRAIN_LOSS) is None for line in train)  # not released under DP
    assert all(line[STOPPED] == 0 for line in train)


@pytest.mark.parametrize("clipping", ["server", "client"])
def test_client_level_run_accounts_every_round_in_the_server_ledger(store, tmp_path, clipping):
    from fedecg.app import client_level
    from fedecg.privacy.accounting import Ledger, epsilon_of

    config = StudyConfig.model_validate({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 2, "lab": 1, "diagnosis": 2}},
        "train": TINY_TRAIN, "privacy": {"mode": "client", "target_epsilon": 50.0,
                                         "client": {"noise_multiplier": 0.8,
                                                    "clipping_norm": 5.0,
                                                    "clipping": clipping}}})
    plan = make_plan(config, "transfer", tmp_path / "run", store,
                     ensure_partition(store, config.partition, tmp_path))
    grid = InProcessGrid(client_app, [{keys.NODE_PARTITION_ID: i} for i in range(2)])
    run_server(grid, plan, wrap=client_level(plan))
    record = json.loads((tmp_path / "run" / "client-dp-ledger.json").read_text())
    ledger = Ledger.from_record(record)
    assert ledger.history == [(0.8, 1.0, 5)]  # one release per round of every stage
    assert ledger.epsilon() == epsilon_of([(0.8, 1.0, 5)], 0.01) <= 50.0
