"""fedecg's own per-example clipping (``grad_sample_mode: fast``, ``fedecg.privacy.per_example``):
the clipped sum is each example's own gradient clipped to C and summed, one example moves it by
at most C, and a layer it cannot handle is refused by name. (The ledger's replay with Opacus's
accountant and σ = 0, C = ∞ being plain training: ``test_sample_dp.py``, parametrized over the
mode; the noise of ``NoisySumOptimizer``: ``test_grouped_contrastive.py``.)"""

from __future__ import annotations

import pytest
import torch
from builders.dp_records import BATCH, STAGES, N, TinyRecords, fixed_batches
from builders.tiny import tiny_joint_model
from torch import nn
from torch.utils.data import DataLoader

from fedecg.config.privacy import DPConfig, SampleDPConfig
from fedecg.errors import PrivacyError
from fedecg.privacy.accounting import PrivacyPlan, plan_stage
from fedecg.privacy.grouped import NoisySumOptimizer
from fedecg.privacy.objectives import private_stage
from fedecg.privacy.per_example import (
    GhostConv1dGrad,
    PerExampleClippedStage,
    PerExampleGrad,
    conv1d_grads,
    ghost_is_cheaper,
    recording,
)
from fedecg.privacy.sample_dp import SitePrivacy
from fedecg.training.stages import LabHeadStage
from fedecg.training.trainer import activate, make_optimizer

torch.set_num_threads(1)
CLIP = 0.05  # small enough that every example's gradient is clipped
# (stage, pretrain objective, multimodal model): every per-example objective a DP run trains
CASES = [(STAGES[0], "align", False), (STAGES[0], "features", False), (STAGES[1], "align", False),
         (STAGES[2], "align", False), (STAGES[1], "align", True), (STAGES[2], "align", True),
         (LabHeadStage(freeze_encoder=True), "align", False)]
IDS = ["pretrain-align", "pretrain-features", "lab", "diagnosis", "lab-multimodal",
       "diagnosis-multimodal", "lab-frozen-encoder"]


def clipped(stage, model, clip: float = CLIP) -> tuple[PerExampleClippedStage, list]:
    private = private_stage(stage, SampleDPConfig(pretrain_objective="features"))
    params = activate(model, private)
    return PerExampleClippedStage.for_model(private, model, clip), params


def fast_sum(fast: PerExampleClippedStage, model, params, batch) -> torch.Tensor:
    """The flat clipped sum that ``fast.loss`` carries as its gradient."""
    loss, _ = fast.loss(model, batch)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def explicit_sum(fast: PerExampleClippedStage, model, params, batch, clip: float) -> torch.Tensor:
    """Independently: each row's own loss differentiated alone, clipped to ``clip``, summed."""
    losses = fast.per_example_loss(model, batch)
    total = torch.zeros(sum(p.numel() for p in params))
    for loss in losses:
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        flat = torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                          for p, g in zip(params, grads, strict=True)])
        total += flat * min(1.0, clip / (float(flat.norm()) + 1e-6))
    return total


@pytest.mark.parametrize(("stage", "objective", "fused"), CASES, ids=IDS)
@pytest.mark.parametrize("clip", [CLIP, 1e9], ids=["clipped", "unclipped"])
def test_clipped_sum_is_each_examples_own_gradient_clipped_and_summed(stage, objective, fused,
                                                                       clip):
    model = tiny_joint_model(fuse_clinical=fused)
    private = private_stage(stage, SampleDPConfig(pretrain_objective=objective))
    params = activate(model, private)
    fast = PerExampleClippedStage.for_model(private, model, clip)
    batch = next(iter(fixed_batches()))
    torch.manual_seed(0)  # the same dropout masks in both passes
    got = fast_sum(fast, model, params, batch)
    torch.manual_seed(0)
    expected = explicit_sum(fast, model, params, batch, clip)
    assert float(expected.abs().sum()) > 0
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    assert not any(p.grad is not None for p in model.parameters())  # no batch gradient made


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_one_example_moves_the_clipped_sum_by_at_most_c(stage):
    """Remove row 0 (the accountant's add/remove neighbour): the clipped sum moves by at most
    C; replace it by another record: by at most 2C (its old and new terms, each within C).
    The same changes move the unclipped sum by more, so the bounds are the clipping's."""
    model = tiny_joint_model().eval()  # dropout off: the bound holds for any fixed masks
    batch = next(iter(fixed_batches()))
    replaced = {k: v.clone() for k, v in batch.items()}
    for key, value in TinyRecords(seed=1)[0].items():
        replaced[key][0] = value
    removed = {k: v[1:] for k, v in batch.items()}
    for clip in (CLIP, 1e9):
        fast, params = clipped(stage, model, clip)
        base = fast_sum(fast, model, params, batch)
        for neighbour, bound in ((removed, CLIP), (replaced, 2 * CLIP)):
            moved = float((fast_sum(fast, model, params, neighbour) - base).norm())
            assert moved <= bound * (1 + 1e-5) if clip == CLIP else moved > bound, moved


def test_fast_is_the_default_and_noises_the_sum_over_the_expected_batch():
    config = DPConfig(mode="sample", target_epsilon=3.0)
    plan = PrivacyPlan((plan_stage("lab", N, BATCH, 1),), N, "s0")
    site, model = SitePrivacy.start(config, plan), tiny_joint_model()
    optimizer = make_optimizer(activate(model, STAGES[1]), 1e-3)
    with site.private_round(model, STAGES[1], DataLoader(TinyRecords(), batch_size=BATCH),
                            optimizer, seed=0) as dp:
        assert isinstance(dp.stage, PerExampleClippedStage)
        assert isinstance(dp.optimizer, NoisySumOptimizer)
        assert dp.optimizer.expected_count == BATCH
        assert dp.optimizer.max_grad_norm == config.sample.max_grad_norm
        assert dp.optimizer.noise_multiplier == site.noise_multiplier


def test_a_layer_it_cannot_handle_is_refused_naming_it():
    model = tiny_joint_model()
    stem = model.classifier.encoder.stem[0]
    model.classifier.encoder.stem[0] = nn.Conv1d(stem.in_channels, stem.out_channels, 5,
                                                 stride=2, padding=4, dilation=2)
    activate(model, private_stage(STAGES[1]))
    with pytest.raises(PrivacyError) as error:
        PerExampleClippedStage.for_model(private_stage(STAGES[1]), model, 1.0)
    message = str(error.value)
    assert "classifier.encoder.stem.0" in message and "dilation" in message
    assert "grad_sample_mode to 'hooks'" in message and "\n" not in message


def test_a_layer_output_changed_in_place_is_refused():
    """An in-place ReLU after a GroupNorm would make the recorded output's gradient the
    ReLU's: refused rather than clipped wrongly."""
    model = tiny_joint_model()
    model.classifier.encoder.stages[0].act = nn.ReLU(inplace=True)
    fast, _ = clipped(STAGES[1], model)
    with pytest.raises(PrivacyError, match="GroupNorm was changed in place"):
        fast.loss(model, next(iter(fixed_batches())))


@pytest.mark.parametrize("stride", [1, 2])
def test_ghost_clipping_of_a_convolution_matches_its_built_per_example_gradients(stride):
    """The Gram-matrix norms and the reweighted weight gradient of ``GhostConv1dGrad`` equal
    the norms and weighted sum of the per-example gradients built tap by tap."""
    torch.manual_seed(0)
    layer = nn.Conv1d(16, 16, 5, stride=stride, padding=2, bias=False)  # short: ghost pays
    a = torch.randn(4, 16, 8)
    g = torch.randn(4, 16, layer(a).shape[-1])
    weights = torch.rand(4)
    ghost, = conv1d_grads(layer, a, g, ghost=True).values()
    built, = conv1d_grads(layer, a, g, ghost=False).values()
    assert isinstance(ghost, GhostConv1dGrad) and isinstance(built, PerExampleGrad)
    torch.testing.assert_close(ghost.squared_norms(), built.squared_norms(), rtol=1e-4, atol=0)
    torch.testing.assert_close(ghost.weighted_sum(weights), built.weighted_sum(weights))
    explicit = torch.stack([torch.autograd.grad((layer(a[i:i + 1]) * g[i:i + 1]).sum(),
                                                layer.weight)[0] for i in range(4)])
    torch.testing.assert_close(built.squared_norms(), explicit.flatten(1).pow(2).sum(1))


def test_the_tiny_encoder_clips_some_convolutions_by_ghost_and_some_built():
    """So the clipped-sum tests above cover both ways (the default encoder: its last stages)."""
    model = tiny_joint_model()
    fast, _ = clipped(STAGES[1], model)
    with recording(fast.layers) as calls:
        fast.per_example_loss(model, next(iter(fixed_batches())))
    ghost = [ghost_is_cheaper(c.layer, c.output.shape[-1]) for c in calls
             if isinstance(c.layer, nn.Conv1d)]
    assert any(ghost) and not all(ghost)
