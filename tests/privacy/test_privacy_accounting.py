"""Privacy accounting: calibration, the cumulative ledger, resume, and the budget check."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
from flwr.app import ConfigRecord
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedecg.config.base import validate_config
from fedecg.config.privacy import DPConfig, default_delta
from fedecg.errors import ConfigError, PrivacyError
from fedecg.privacy.accounting import (
    Ledger,
    PrivacyPlan,
    affordable_steps,
    calibrate_noise,
    epsilon_of,
    plan_stage,
)

DELTA = 1e-4


def three_stage_plan(n: int = 800, batch: int = 32, rounds: int = 3) -> PrivacyPlan:
    """Pretrain on all rows, lab head on fewer, diagnosis on fewer still (different rates)."""
    return PrivacyPlan((plan_stage("pretrain", n, batch, rounds, local_epochs=1),
                        plan_stage("lab", n // 2, batch, rounds, local_epochs=2),
                        plan_stage("diagnosis", n // 4, batch, rounds, local_steps=5)),
                       n_records=n, site="s0")


def run_plan(plan: PrivacyPlan, noise: float, ledger: Ledger, target: float) -> list[float]:
    """Walk every round of every stage through the budget check; ε after each round."""
    spent = []
    for stage in plan.stages:
        for _ in range(stage.rounds):
            steps = affordable_steps(ledger, noise, stage.sample_rate, stage.steps_per_round,
                                     target)
            assert steps == stage.steps_per_round  # a calibrated plan always fits
            ledger.step(noise, stage.sample_rate, steps)
            spent.append(ledger.epsilon())
    return spent


def test_default_delta_is_0_1_over_n_rounded_down_to_a_power_of_ten():
    assert default_delta(1000) == pytest.approx(1e-4)
    assert default_delta(345) == pytest.approx(1e-4)  # 0.1/345 = 2.9e-4
    assert default_delta(40) == pytest.approx(1e-3)  # 0.1/40 = 2.5e-3
    assert default_delta(5) == pytest.approx(1e-2)
    for n in (1, 7, 99, 100, 12345):
        assert default_delta(n) < 1 / n


def test_plan_steps_follow_opacus_poisson_epochs():
    stage = plan_stage("lab", 400, 32, rounds=3, local_epochs=2)
    assert stage.sample_rate == pytest.approx(32 / 400)
    assert stage.steps_per_round == 2 * int(400 / 32)  # Opacus draws int(1/q) batches an epoch
    assert stage.steps == 3 * 24
    assert plan_stage("lab", 400, 32, 3, local_epochs=2, local_steps=5).steps_per_round == 5
    assert plan_stage("lab", 10, 32, 3).sample_rate == 1.0
    assert plan_stage("lab", 0, 32, 3).steps == 0


def test_calibrated_noise_is_the_smallest_that_meets_the_target():
    plan = three_stage_plan()
    noise = calibrate_noise(plan, 3.0, DELTA)
    assert epsilon_of(plan.history(noise), DELTA) <= 3.0
    assert epsilon_of(plan.history(noise * 0.995), DELTA) > 3.0


def test_calibration_agrees_with_opacus_get_noise_multiplier_on_one_stage():
    plan = PrivacyPlan((plan_stage("lab", 1000, 50, rounds=4, local_epochs=1),), 1000)
    ours = calibrate_noise(plan, 2.0, 1e-5)
    with warnings.catch_warnings():  # Opacus: "optimal order is the largest alpha"
        warnings.simplefilter("ignore")
        theirs = get_noise_multiplier(target_epsilon=2.0, target_delta=1e-5, sample_rate=0.05,
                                      steps=80, accountant="rdp", epsilon_tolerance=0.001)
    assert ours == pytest.approx(theirs, rel=5e-3)


def test_cumulative_epsilon_rises_stays_within_target_and_matches_an_independent_accountant():
    plan, target = three_stage_plan(), 4.0
    noise = calibrate_noise(plan, target, DELTA)
    ledger = Ledger(delta=DELTA)
    spent = run_plan(plan, noise, ledger, target)
    assert all(b > a for a, b in itertools.pairwise(spent))
    assert max(spent) <= target
    assert spent[-1] > 0.95 * target  # the budget is used, not wasted
    independent = RDPAccountant()  # steps one at a time, as Opacus's optimizer hook does
    for stage in plan.stages:
        for _ in range(stage.steps):
            independent.step(noise_multiplier=noise, sample_rate=stage.sample_rate)
    assert independent.history == ledger.history
    assert ledger.epsilon() == pytest.approx(independent.get_epsilon(DELTA), rel=1e-12)
    assert affordable_steps(ledger, noise, plan.stages[-1].sample_rate, 5, target) == 0


def test_prv_ledger_matches_opacus_prv_accountant():
    ledger = Ledger(delta=DELTA, accountant="prv")
    independent = PRVAccountant()
    for rate, steps in ((0.04, 30), (0.08, 20)):
        ledger.step(1.1, rate, steps)
        for _ in range(steps):
            independent.step(noise_multiplier=1.1, sample_rate=rate)
    assert ledger.epsilon() == pytest.approx(independent.get_epsilon(DELTA), rel=1e-9)


def test_restored_ledger_continues_and_never_resets():
    plan, target = three_stage_plan(), 3.0
    noise = calibrate_noise(plan, target, DELTA)
    straight = Ledger(delta=DELTA)
    run_plan(plan, noise, straight, target)
    first, rest = plan.stages[:1], plan.stages[1:]
    resumed = Ledger(delta=DELTA)
    run_plan(PrivacyPlan(first, plan.n_records), noise, resumed, target)
    before = resumed.epsilon()
    stored = dict(ConfigRecord(resumed.to_record()))  # through Flower's context.state type
    restored = Ledger.from_record(stored)
    assert restored.epsilon() == before
    run_plan(PrivacyPlan(rest, plan.n_records), noise, restored, target)
    assert restored.history == straight.history
    assert restored.epsilon() == straight.epsilon()


def test_budget_check_allows_a_shortened_last_round():
    ledger = Ledger(delta=DELTA, history=[(1.0, 0.05, 100)])
    target = ledger.epsilon() + 0.1
    allowed = affordable_steps(ledger, 1.0, 0.05, 1000, target)
    assert 0 < allowed < 1000
    assert epsilon_of([(1.0, 0.05, 100 + allowed)], DELTA) <= target
    assert epsilon_of([(1.0, 0.05, 101 + allowed)], DELTA) > target


def test_unreachable_target_names_the_smallest_reachable_epsilon():
    plan = PrivacyPlan((plan_stage("diagnosis", 60, 32, rounds=20, local_epochs=5),), 60)
    smallest = epsilon_of(plan.history(10.0), 1e-3)
    with pytest.raises(PrivacyError) as error:
        calibrate_noise(plan, 0.5, 1e-3, max_noise_multiplier=10.0)
    message = str(error.value)
    assert f"smallest reachable epsilon is {smallest:.4g}" in message
    assert "site site" in message and "max_noise_multiplier" in message
    assert smallest > 0.5


def test_delta_of_one_over_n_or_more_is_refused():
    plan = PrivacyPlan((plan_stage("lab", 50, 10, 1),), n_records=50)
    with pytest.raises(PrivacyError, match=r"delta 0.02 with 50 protected unit\(s\); expected"):
        calibrate_noise(plan, 3.0, 0.02)


def test_damaged_ledger_record_is_refused_with_its_source():
    with pytest.raises(PrivacyError, match=r"ckpt\.pt: not a privacy ledger"):
        Ledger.from_record({"noise": [1.0]}, "ckpt.pt")
    with pytest.raises(PrivacyError, match="lengths 2, 1, 1"):
        Ledger.from_record({"noise": [1.0, 2.0], "rate": [0.1], "steps": [3], "delta": 1e-5,
                            "accountant": "rdp"})


def test_config_rules():
    config = validate_config(DPConfig, {"mode": "sample", "target_epsilon": 8}, "cfg")
    assert config.enabled and config.resolved_delta(1000) == pytest.approx(1e-4)
    assert not validate_config(DPConfig, {"mode": "sample", "target_epsilon": math.inf},
                               "cfg").enabled
    with pytest.raises(ConfigError, match="poisson_sampling"):
        validate_config(DPConfig, {"mode": "sample", "sample": {"poisson_sampling": False}},
                        "cfg.yaml")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: mode"):
        validate_config(DPConfig, {"mode": "patient"}, "cfg.yaml")
    no_dp = DPConfig()  # ε = ∞ travels in a run plan's JSON and comes back
    assert DPConfig.model_validate_json(no_dp.model_dump_json()).target_epsilon == math.inf
