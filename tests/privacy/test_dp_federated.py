"""Sample-level DP through the real ServerApp loop and ClientApp (in process, no Ray)."""

from __future__ import annotations

import itertools
import json
import zlib
from pathlib import Path

import pytest
import torch
from builders.site_store import make_store
from builders.tiny import TINY_TRAIN

from fedecg.app import client_app
from fedecg.config.federated import StudyConfig
from fedecg.federated import keys
from fedecg.federated.datasource import ensure_partition, make_plan
from fedecg.federated.inprocess import InProcessGrid
from fedecg.federated.orchestration import RunPlan, run_server
from fedecg.privacy import normalization, sample_dp
from fedecg.privacy.sample_dp import EPSILON, STOPPED
from fedecg.run_folder import RunFolder


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("fed") / "store", n_patients=40)


def dp_study(store: Path, objective: str = "align") -> StudyConfig:
    return StudyConfig.model_validate({
        "data": {"store": str(store)}, "partition": {"num_sites": 2},
        "federation": {"rounds": {"pretrain": 2, "lab": 1, "diagnosis": 2}},
        "train": TINY_TRAIN, "privacy": {"mode": "sample", "target_epsilon": 4.0, "sample": {
            "pretrain_objective": objective, "contrastive_group": 4}}})


def run(config: StudyConfig, model: str, out: Path, store: Path,
        grid_type=InProcessGrid) -> RunPlan:
    """Run ``model`` under ``config`` over two in-process sites (in ``out/run``)."""
    plan = make_plan(config, model, out / "run", store,
                     ensure_partition(store, config.partition, out))
    run_server(grid_type(client_app, [{keys.NODE_PARTITION_ID: i} for i in range(2)]), plan)
    return plan


def train_lines(run_dir: Path) -> list[dict]:
    """The run's ``metrics.jsonl`` lines of kind train."""
    text = RunFolder(run_dir).metrics.read_text()
    return [line for line in map(json.loads, text.splitlines()) if line["kind"] == "train"]


def site_epsilons(run_dir: Path) -> dict[int, list[float]]:
    """Each site's reported cumulative ε, round by round."""
    return {site: [line[EPSILON] for line in train_lines(run_dir) if line["site_index"] == site]
            for site in (0, 1)}


@pytest.mark.parametrize(("model", "rounds", "objective"),
                         [("transfer", 5, "align"), ("multimodal", 3, "align"),
                          ("transfer", 5, "grouped")])
def test_dp_run_reports_cumulative_epsilon_per_site_and_round(store, tmp_path, monkeypatch,
                                                              model, rounds, objective):
    """Every model of the privacy sweep trains under DP (multimodal: the clinical encoder too,
    on public standardization; transfer also with grouped contrastive pretraining), each round
    adding to each site's ε."""
    monkeypatch.setitem(normalization.PUBLIC_SCALES, "lab_potassium_missing", (0.5, 0.5))
    run_dir = Path(run(dp_study(store, objective), model, tmp_path, store).out)
    for spent in site_epsilons(run_dir).values():
        assert len(spent) == rounds and all(b > a for a, b in itertools.pairwise(spent))
        assert 3.5 < spent[-1] <= 4.0
    train = train_lines(run_dir)
    assert all(line.get(keys.TRAIN_LOSS) is None for line in train)  # not released under DP
    assert all(line[STOPPED] == 0 for line in train)


def test_grouped_dp_run_resumed_after_a_kill_equals_the_uninterrupted_run(store, tmp_path,
                                                                          monkeypatch):
    """Killed in pretraining's second round and resumed on a fresh grid (every site's
    ``context.state`` lost): each site's ε continues from its saved ledger, never reset, and
    the model ends bit-identical to the uninterrupted run's, its clinical encoder trained by
    the grouped contrastive loss (the per-example objectives keep it frozen)."""
    from builders.killed_grid import KilledGrid

    from fedecg.federated.checkpoint import load_checkpoint
    from fedecg.federated.orchestration import initial_model

    monkeypatch.setitem(normalization.PUBLIC_SCALES, "lab_potassium_missing", (0.5, 0.5))
    draws = {"n": 0}  # each site's secret noise seed, by site: the same in both runs
    fresh = sample_dp.SitePrivacy.start.__func__

    def start(cls, config, plan, record=None):
        site = fresh(cls, config, plan, record)
        if record is None:
            draws["n"] += 1
            site.secret = zlib.crc32(plan.site.encode())
        return site

    monkeypatch.setattr(sample_dp.SitePrivacy, "start", classmethod(start))
    config = dp_study(store, "grouped")
    plan = run(config, "transfer", tmp_path / "whole", store)
    whole = Path(plan.out)

    def killed_in_round_2(*args):
        return KilledGrid(*args, kill_at=3)

    with pytest.raises(KeyboardInterrupt):
        run(config, "transfer", tmp_path / "split", store, grid_type=killed_in_round_2)
    assert load_checkpoint(tmp_path / "split" / "run").global_round == 1
    resumed = Path(run(config, "transfer", tmp_path / "split", store).out)
    assert site_epsilons(resumed) == site_epsilons(whole)
    assert all(spent[-1] <= 4.0 for spent in site_epsilons(resumed).values())
    a, b = load_checkpoint(whole), load_checkpoint(resumed)
    for key, value in a.global_state.items():
        assert torch.equal(value, b.global_state[key]), key
    initial = initial_model(plan).state_dict()["clinical.mlp.0.weight"]
    trained = a.global_state["clinical.mlp.0.weight"]  # align: equal up to FedAvg's rounding
    assert float((trained - initial).abs().max()) > 1e-4
    assert draws["n"] == 4  # one per site in each run; the resumed sites restored theirs


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
