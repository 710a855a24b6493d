"""Grouped contrastive pretraining under sample-level DP (``fedecg.privacy.grouped``): one
record moves the clipped group sum by at most C, each group's term is at most C/2, the noise
has std σ·C over the expected number of groups, and σ = 0, C = ∞ with one group is plain
InfoNCE pretraining. (The ledger's replay with Opacus's accountant and the resume from disk:
``test_sample_dp.py``, parametrized over the pretraining objective.)"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from builders.dp_records import BATCH, STAGES, N, TinyRecords, fixed_batches
from builders.tiny import tiny_joint_model
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from fedecg.cli import app
from fedecg.config.base import validate_config
from fedecg.config.federated import StudyConfig
from fedecg.config.privacy import DPConfig, SampleDPConfig
from fedecg.errors import ConfigError
from fedecg.privacy.accounting import Ledger, PrivacyPlan, plan_stage
from fedecg.privacy.grouped import GroupedContrastiveStage
from fedecg.privacy.objectives import private_stage
from fedecg.privacy.sample_dp import SitePrivacy
from fedecg.training.stages import PretrainStage
from fedecg.training.trainer import activate, make_optimizer, train_window

torch.set_num_threads(1)
CLIP = 0.05  # small enough that every group's gradient is clipped
GROUPED = {"pretrain_objective": "grouped", "contrastive_group": 3}


def grouped_stage(loss_name: str = "infonce", clip: float = CLIP) -> GroupedContrastiveStage:
    settings = SampleDPConfig(max_grad_norm=clip, **GROUPED)
    stage = private_stage(PretrainStage(loss_name=loss_name), settings)
    assert isinstance(stage, GroupedContrastiveStage)
    return stage


def clipped_sum(stage: GroupedContrastiveStage, model, batch, groups: list[list[int]]
                ) -> torch.Tensor:
    """The flat clipped group sum of ``groups`` (row lists) of ``batch``."""
    total, _ = stage.clipped_group_sum(model, batch, [torch.tensor(rows) for rows in groups])
    return torch.cat([g.flatten() for g in total])


def eval_model_and_batch():
    """The tiny model with dropout off (the bound holds for any fixed dropout masks: they do
    not depend on the data) and one batch of 6 records."""
    model = tiny_joint_model().eval()
    return model, next(iter(fixed_batches()))


@pytest.mark.parametrize("loss_name", ["infonce", "siglip"])
def test_one_record_moves_the_clipped_group_sum_by_at_most_c(loss_name):
    """Replace, remove (= add, read backwards) one record: the sum moves by at most C, and only
    through that record's group; a group left with one record contributes nothing."""
    stage, (model, batch) = grouped_stage(loss_name), eval_model_and_batch()
    activate(model, stage)
    groups = [[0, 3, 5], [1, 2], [4]]  # [4] alone: no negative, dropped
    before = clipped_sum(stage, model, batch, groups)
    unclipped = clipped_sum(replace(stage, group_clip=math.inf), model, batch, [[0, 3, 5]])
    assert float(unclipped.norm()) > 3 * CLIP  # the clip is active: the bound is not vacuous

    replaced = {key: value.clone() for key, value in batch.items()}
    replaced["ecg"][3], replaced["clinical"][3] = torch.randn(12, 48), torch.randn(5)
    after = clipped_sum(stage, model, replaced, groups)
    own_group = (clipped_sum(stage, model, batch, groups[:1])
                 - clipped_sum(stage, model, replaced, groups[:1]))
    torch.testing.assert_close(before - after, own_group, rtol=0, atol=1e-7)
    assert 0 < float((before - after).norm()) <= CLIP * (1 + 1e-5)

    without_3 = clipped_sum(stage, model, batch, [[0, 5], [1, 2], [4]])
    assert 0 < float((before - without_3).norm()) <= CLIP * (1 + 1e-5)
    without_2 = clipped_sum(stage, model, batch, [[0, 3, 5], [1], [4]])
    alone = clipped_sum(stage, model, batch, [[1, 2]])
    torch.testing.assert_close(before - without_2, alone, rtol=0, atol=1e-7)
    assert 0 < float(alone.norm()) <= 0.5 * CLIP * (1 + 1e-5)


def test_clipping_each_group_to_c_instead_of_half_would_break_the_bound():
    """Joining a group *replaces* its term, so a clip of C lets one record move the sum by up
    to 2C: here record 2 takes record 1's clinical row (same ECG group, no longer a clean
    negative) and the group's term turns by more than 60 degrees."""
    stage, (model, batch) = grouped_stage(), eval_model_and_batch()
    activate(model, stage)
    replaced = {key: value.clone() for key, value in batch.items()}
    replaced["clinical"][2] = batch["clinical"][1]

    def moved(group_clip: float) -> float:
        clipped = replace(stage, group_clip=group_clip)
        return float((clipped_sum(clipped, model, batch, [[1, 2]])
                      - clipped_sum(clipped, model, replaced, [[1, 2]])).norm())

    assert stage.group_clip == 0.5 * CLIP
    assert moved(stage.group_clip) <= CLIP < moved(CLIP)


def test_each_group_term_is_clipped_to_half_of_c_keeping_its_direction():
    stage, (model, batch) = grouped_stage(), eval_model_and_batch()
    activate(model, stage)
    for rows in ([0, 1], [2, 3, 4], [0, 1, 2, 3, 4, 5]):
        clipped = clipped_sum(stage, model, batch, [rows])
        raw = clipped_sum(replace(stage, group_clip=math.inf), model, batch, [rows])
        assert float(raw.norm()) > 0.5 * CLIP
        assert float(clipped.norm()) == pytest.approx(0.5 * CLIP, rel=1e-4)
        assert float(torch.nn.functional.cosine_similarity(clipped, raw, dim=0)) == (
            pytest.approx(1.0, abs=1e-5))


def test_groups_are_seeded_disjoint_and_cover_the_batch():
    stage = grouped_stage().for_round(expected_batch=24, seed=5)
    assert stage.n_groups == 8  # round(24 / 3)
    groups = stage.groups(24)
    assert [g.tolist() for g in groups] == [
        g.tolist() for g in grouped_stage().for_round(24, seed=5).groups(24)]
    rows = torch.cat(groups).tolist()
    assert len(groups) == 8 and sorted(rows) == list(range(24))  # disjoint, covering
    other = grouped_stage().for_round(24, seed=6).groups(24)
    assert [g.tolist() for g in groups] != [g.tolist() for g in other]
    assert grouped_stage().for_round(expected_batch=1, seed=0).n_groups == 1


def grouped_site(noise: float | None = None, clip: float = 1.0, group: int = 3) -> SitePrivacy:
    config = DPConfig(mode="sample", target_epsilon=3.0,
                      sample={**GROUPED, "max_grad_norm": clip, "contrastive_group": group})
    plan = PrivacyPlan((plan_stage("pretrain", N, BATCH, 2),), N, "s0")
    if noise is None:
        return SitePrivacy.start(config, plan)
    return SitePrivacy(config, plan, noise, Ledger(delta=config.resolved_delta(N)), secret=7)


def test_noise_has_std_sigma_c_over_the_expected_groups():
    site, model = grouped_site(clip=0.7), tiny_joint_model()
    optimizer = make_optimizer(activate(model, STAGES[0]), 1e-3)
    loader = DataLoader(TinyRecords(), batch_size=BATCH)
    draws = []
    with site.private_round(model, STAGES[0], loader, optimizer, seed=3) as dp:
        assert dp.optimizer.expected_count == dp.stage.n_groups == 2  # round(6 / 3)
        while sum(len(d) for d in draws) < 40_000:
            for param in dp.optimizer.params:
                param.grad = torch.full_like(param, 0.3)  # a clipped sum of 0.3 everywhere
            dp.optimizer.add_noise()
            draws.append(torch.cat([p.grad.flatten() for p in dp.optimizer.params]))
    values = torch.cat(draws)
    expected = site.noise_multiplier * 0.7 / 2
    assert site.noise_multiplier > 1.0
    assert float(values.std()) == pytest.approx(expected, rel=0.02)  # ~6 standard errors
    assert float(values.mean()) == pytest.approx(0.3 / 2, abs=4 * expected / len(values) ** 0.5)
    assert site.ledger.steps == 0  # noise alone is not a step; ``step`` records it


def test_zero_noise_infinite_clip_and_one_group_is_plain_infonce_pretraining():
    plain, private = tiny_joint_model(), tiny_joint_model()
    optimizer = make_optimizer(activate(plain, STAGES[0]), lr=1e-2)
    train_window(plain, STAGES[0], lambda _: fixed_batches(), optimizer, range(1), seed=0)

    site = grouped_site(noise=0.0, clip=1e9, group=BATCH)  # one group: the whole batch
    optimizer = make_optimizer(activate(private, STAGES[0]), lr=1e-2)
    with site.private_round(private, STAGES[0], fixed_batches(), optimizer, seed=0) as dp:
        assert dp.stage.n_groups == 1
        train_window(dp.model, dp.stage, lambda _: fixed_batches(), dp.optimizer, range(1),
                     seed=0)
    initial = tiny_joint_model().state_dict()
    changed = 0
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(private.state_dict()[key], value, rtol=1e-4, atol=1e-6,
                                   msg=key)
        changed += int(not torch.equal(value, initial[key]))
    assert changed > 0 and site.ledger.history == [(0.0, BATCH / N, N // BATCH)]


def test_grouped_pretraining_trains_the_clinical_side_and_shares_the_usual_keys():
    model, stage = tiny_joint_model(), grouped_stage()
    names = {n for n, p in model.named_parameters() if any(p is q for q in stage.trainable(model))}
    assert {"clinical.mlp.0.weight", "clinical_projection.net.0.weight",
            "ecg_projection.net.0.weight", "classifier.encoder.stem.0.weight"} <= names
    assert stage.shared_keys(model) == PretrainStage().shared_keys(model)
    assert (stage.name, stage.targets) == ("pretrain", ("clinical",))


def test_a_group_of_one_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as error:
        validate_config(StudyConfig, {"privacy": {"mode": "sample", "target_epsilon": 8,
                                                  "sample": {**GROUPED, "contrastive_group": 1}}},
                        "study.yaml")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("study.yaml: privacy.sample.contrastive_group: ")
    assert "a group of one has no negatives" in message and "(got 1)" in message
    result = CliRunner().invoke(app, ["sweep", "privacy", "--epsilons", "8", "--out", "o",
                                      "--set", "privacy.sample.pretrain_objective=grouped",
                                      "--set", "privacy.sample.contrastive_group=1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "privacy.sample.contrastive_group" in result.output
