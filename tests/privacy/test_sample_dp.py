"""Sample-level DP-SGD with real Opacus on fedecg's own model and stages."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from builders.dp_records import BATCH, STAGES, N, TinyRecords, fixed_batches
from builders.tiny import TINY_TRAIN, tiny_joint_model
from opacus.accountants import RDPAccountant
from torch import nn
from torch.utils.data import DataLoader

from fedecg.config.privacy import DPConfig
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.errors import PrivacyError
from fedecg.models.joint import JointModel
from fedecg.privacy.accounting import Ledger, PrivacyPlan, plan_stage
from fedecg.privacy.grouped import GroupedContrastiveStage
from fedecg.privacy.normalization import apply_public_normalization, public_statistics
from fedecg.privacy.objectives import private_stage
from fedecg.privacy.sample_dp import EPSILON, STOPPED, SitePrivacy, secret_seed
from fedecg.privacy.validation import validate_model
from fedecg.training.trainer import activate, make_optimizer, train_window

torch.set_num_threads(1)


def site_privacy(noise: float | None = None, clip: float = 1.0, rounds: int = 2,
                 target: float = 3.0, objective: str = "align",
                 mode: str = "fast") -> SitePrivacy:
    config = DPConfig(mode="sample", target_epsilon=target,
                      sample={"max_grad_norm": clip, "pretrain_objective": objective,
                              "grad_sample_mode": mode})
    plan = PrivacyPlan(tuple(plan_stage(s.name, N, BATCH, rounds) for s in STAGES), N, "s0")
    if noise is None:
        return SitePrivacy.start(config, plan)  # calibrated for the plan
    return SitePrivacy(config, plan, noise, Ledger(delta=config.resolved_delta(N)), secret=7)


def proximal(anchor: JointModel, mu: float = 0.5):
    reference = {k: p.detach().clone() for k, p in anchor.named_parameters()}

    def term(model: nn.Module) -> torch.Tensor:
        return 0.5 * mu * sum((p - reference[k]).pow(2).sum()
                              for k, p in model.named_parameters() if p.requires_grad)
    return term


@pytest.mark.parametrize("mode", ["fast", "hooks"])
@pytest.mark.parametrize(("stage", "objective"),
                         [(STAGES[0], "align"), (STAGES[0], "features"), (STAGES[1], "align"),
                          (STAGES[2], "align")],
                         ids=["pretrain-align", "pretrain-features", "lab", "diagnosis"])
def test_zero_noise_and_infinite_clip_equals_plain_training(stage, objective, mode):
    """With σ = 0 and C = ∞, DP-SGD on the same batches is plain SGD on the same objective
    (here with a FedProx term, which the DP path adds after noising), with fedecg's own
    per-example clipping and with Opacus's hooks alike."""
    plain, private = tiny_joint_model(), tiny_joint_model()
    extra = proximal(tiny_joint_model(seed=1))
    site = site_privacy(noise=0.0, clip=1e9, objective=objective, mode=mode)
    objective = private_stage(stage, site.config.sample)
    optimizer = make_optimizer(activate(plain, objective), lr=1e-2)
    train_window(plain, objective, lambda _: fixed_batches(), optimizer, range(1),
                 extra_loss=extra)

    optimizer = make_optimizer(activate(private, stage), lr=1e-2)
    with site.private_round(private, stage, fixed_batches(), optimizer, seed=0,
                            extra_loss=extra) as dp:
        train_window(dp.model, dp.stage, lambda _: fixed_batches(), dp.optimizer, range(1))
    changed = 0
    for (key, a), b in zip(plain.state_dict().items(), private.state_dict().values(),
                           strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=key)
        changed += int(not torch.equal(a, tiny_joint_model().state_dict()[key]))
    assert changed > 0
    assert site.ledger.history == [(0.0, BATCH / N, N // BATCH)]


@pytest.mark.parametrize(("objective", "mode"),
                         [("align", "fast"), ("align", "hooks"), ("grouped", "fast")])
def test_private_rounds_account_every_noised_step_cumulatively(objective, mode):
    """fedecg's per-example clipping, Opacus's DP-SGD and grouped pretraining alike: every
    noised step in the ledger, whose ε is the independent replay's with Opacus's RDP
    accountant, and never above the target."""
    model, site = tiny_joint_model(), site_privacy(rounds=2, objective=objective, mode=mode)
    spent, independent = [], RDPAccountant()
    for round_index, stage in enumerate(s for s in STAGES for _ in range(2)):
        optimizer = make_optimizer(activate(model, stage), lr=1e-3)
        loader = DataLoader(TinyRecords(), batch_size=BATCH, shuffle=True)
        with site.private_round(model, stage, loader, optimizer, seed=round_index) as dp:
            grouped = isinstance(dp.stage, GroupedContrastiveStage)
            assert grouped == (objective == "grouped" and stage.name == "pretrain")
            steps = site.steps_allowed(stage.name, N // BATCH)
            logs = train_window(dp.model, dp.stage, lambda _: dp.loader, dp.optimizer, range(1),
                                max_steps=steps)
        assert logs[0]["steps"] == steps == N // BATCH
        for _ in range(steps):
            independent.step(noise_multiplier=site.noise_multiplier, sample_rate=BATCH / N)
        spent.append(site.metrics()[EPSILON])
    assert all(b > a for a, b in itertools.pairwise(spent)) and spent[-1] <= 3.0
    assert spent[-1] == pytest.approx(independent.get_epsilon(site.ledger.delta), rel=1e-12)
    assert list(model.state_dict()) == list(tiny_joint_model().state_dict())  # no "_module." prefix
    assert not any(hasattr(p, "grad_sample") for p in model.parameters())  # hooks removed
    assert site.steps_allowed("diagnosis", N // BATCH) == 0
    assert site.metrics()[STOPPED] == 1.0


def test_restored_site_continues_its_ledger():
    site = site_privacy()
    site.ledger.step(site.noise_multiplier, BATCH / N, 8)
    restored = SitePrivacy.start(site.config, site.plan, site.to_record())
    assert restored.noise_multiplier == site.noise_multiplier
    assert restored.metrics()[EPSILON] == site.metrics()[EPSILON] > 0


def test_batchnorm_model_is_rejected_naming_the_layers():
    model = tiny_joint_model(encoder={"norm_layer": nn.BatchNorm1d})
    with pytest.raises(PrivacyError) as error:
        validate_model(model, "site s0")
    message = str(error.value)
    batchnorms = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)]
    assert "classifier.encoder.stages.0.norm1" in batchnorms
    assert f"{len(batchnorms)} layer(s) cannot be trained" in message
    for name in batchnorms:
        assert f"{name} (BatchNorm1d)" in message
    assert "BatchNorm cannot support training with differential privacy" in message
    validate_model(tiny_joint_model())  # GroupNorm, LayerNorm: accepted
    with pytest.raises(PrivacyError, match=r"stages.0.norm1 \(BatchNorm1d\)"):
        site = site_privacy()
        optimizer = make_optimizer(activate(model, STAGES[1]), 1e-3)
        with site.private_round(model, STAGES[1], fixed_batches(), optimizer, seed=0):
            pass


def test_loader_that_does_not_match_the_plan_is_refused():
    site, model = site_privacy(), tiny_joint_model()
    optimizer = make_optimizer(activate(model, STAGES[1]), 1e-3)
    loader = DataLoader(TinyRecords(), batch_size=BATCH + 2)
    with (pytest.raises(PrivacyError, match=r"calibrated for rate 0\.25"),
          site.private_round(model, STAGES[1], loader, optimizer, seed=0)):
        pass


def test_public_normalization_uses_reference_ranges_and_refuses_unknown_features():
    potassium = DEFAULT_LAB_PANEL[0]
    mean, std = public_statistics(["age", "lab_potassium"], DEFAULT_LAB_PANEL)
    assert mean.tolist() == pytest.approx([60.0, 0.5 * (potassium.ref_low + potassium.ref_high)])
    assert std[1] == pytest.approx(0.5 * (potassium.ref_high - potassium.ref_low))
    model = tiny_joint_model(n_clinical=2)
    before = copy.deepcopy(model.clinical.mean)
    apply_public_normalization(model, ["age", "lab_potassium"], DEFAULT_LAB_PANEL)
    assert not torch.equal(before, model.clinical.mean)
    with pytest.raises(PrivacyError, match="clinical feature 'shoe_size'"):
        public_statistics(["shoe_size"], DEFAULT_LAB_PANEL)


@pytest.mark.parametrize("objective", ["align", "grouped"])
def test_site_hook_walks_a_federated_plan_and_resumes_from_disk(tmp_path, monkeypatch,
                                                               objective):
    """Every round of a real site store through ``PrivateSite``, with a restart that loses
    ``context.state`` before round 2: the ledger comes back from disk and ε keeps rising."""
    from builders.site_store import make_store
    from flwr.app import RecordDict

    from fedecg.config.federated import StudyConfig
    from fedecg.data.store import SiteStore
    from fedecg.federated import keys
    from fedecg.federated.orchestration import RunPlan, stages_for
    from fedecg.models.build import build_model
    from fedecg.privacy.accounting import epsilon_of
    from fedecg.privacy.normalization import PUBLIC_SCALES
    from fedecg.privacy.site_hook import PrivateSite
    from fedecg.training.data import TrainingData
    from fedecg.training.trainer import train_epoch

    store = SiteStore.open(make_store(tmp_path / "store", n_patients=14, n_samples=64))
    monkeypatch.setitem(PUBLIC_SCALES, "lab_potassium_missing", (0.5, 0.5))  # a fixture column
    data = TrainingData([store])
    config = StudyConfig.model_validate({
        "train": {**TINY_TRAIN, "batch_size": 4, "crop_samples": 32},
        "federation": {"rounds": {"pretrain": 1, "lab": 1, "diagnosis": 1}, "local_steps": 3}})
    plan = RunPlan(config=config, model="transfer", manifest=store.manifest,
                   out=str(tmp_path / "run"))
    dp_config = DPConfig(mode="sample", target_epsilon=6.0,
                         sample={"pretrain_objective": objective, "contrastive_group": 2})
    model = build_model("transfer", config.train, data.manifest, data.train_clinical())
    state, spent = RecordDict(), []
    for global_round, stage in enumerate(stages_for(plan), start=1):
        state = RecordDict() if global_round == 2 else state  # a restart: context.state is new
        saved = (tmp_path / "run", 0, global_round)
        site = PrivateSite.open(dp_config, plan, data, "s0", state, saved)
        site.prepare_model(model)
        train = data.dataset("train", stage.targets, config.train.crop_samples, True,
                             config.train, seed=global_round)
        planned = site.privacy.plan.stages[global_round - 1].steps_per_round
        optimizer = make_optimizer(activate(model, stage), 1e-3)
        with site.round(model, stage, train, optimizer, planned_steps=planned,
                        seed=global_round) as (dp, allowed):
            grouped = isinstance(dp.stage, GroupedContrastiveStage)
            assert grouped == (objective == "grouped" and stage.name == "pretrain")
            logs = train_epoch(dp.model, dp.stage, dp.loader, dp.optimizer, max_steps=allowed)
        assert logs["steps"] == allowed == planned == 3
        site.save(state, saved)
        spent.append(site.metrics()[EPSILON])
    assert spent[0] < spent[1] < spent[2] <= 6.0
    privacy = site.privacy
    planned = privacy.plan.history(privacy.noise_multiplier)
    assert spent[2] == epsilon_of(planned, privacy.ledger.delta)
    assert privacy.ledger.delta == pytest.approx(1e-3)  # 0.1 / (24 training records)
    mean, _ = public_statistics(store.manifest.clinical_features, store.manifest.lab_panel)
    assert torch.equal(model.clinical.mean, mean)
    assert math.isnan(site.metrics()[keys.TRAIN_LOSS])  # computed without noise: not released
    with site.round(model, stage, train, optimizer, planned_steps=3, seed=9) as (_, allowed):
        assert allowed == 0  # the budget is spent: this site stops training
    assert site.metrics()[keys.NUM_EXAMPLES] == 0.0 and site.metrics()[STOPPED] == 1.0


@pytest.mark.parametrize("objective", ["align", "grouped"])
def test_empty_poisson_batches_still_take_a_noised_accounted_step(objective):
    model, stage = tiny_joint_model(), STAGES[0]
    config = DPConfig(mode="sample", target_epsilon=50.0,
                      sample={"pretrain_objective": objective})
    plan = PrivacyPlan((plan_stage(stage.name, N, 1, rounds=1),), N, "s0")
    site = SitePrivacy.start(config, plan)
    optimizer = make_optimizer(activate(model, stage), 1e-3)
    with site.private_round(model, stage, DataLoader(TinyRecords(), batch_size=1), optimizer,
                            seed=0) as dp:
        sizes = [len(batch["ecg"]) for batch in dp.loader]
        logs = train_window(dp.model, dp.stage, lambda _: dp.loader, dp.optimizer, range(1))
    assert 0 in sizes and len(sizes) == N  # q = 1/24: some of the 24 draws are empty
    assert logs[0]["steps"] == N and site.ledger.steps == N


def test_the_noise_seed_is_the_sites_secret_not_the_studys():
    """Two sites starting the same study draw different secrets; the secret is kept in the
    site's saved state (so a resumed run draws the same noise) and never sent to the server."""
    first, second = site_privacy(), site_privacy()
    assert first.secret != second.secret and first.secret.bit_length() > 40
    assert "noise-secret" not in first.metrics() and all(
        not isinstance(v, int) or v != first.secret for v in first.metrics().values())
    again = SitePrivacy.start(first.config, first.plan, first.to_record())
    assert again.secret == first.secret
    assert secret_seed(first.secret, 3) != secret_seed(second.secret, 3)
