"""The per-example objectives of ``fedecg.privacy.objectives``: per-example, what Opacus
computes, and what each one regresses or aligns to."""

from __future__ import annotations

import pytest
import torch
from builders.dp_records import STAGES, fixed_batches
from builders.tiny import N_CLIN, tiny_joint_model
from opacus.grad_sample.utils import prepare_module
from torch import nn

from fedecg.config.privacy import SampleDPConfig
from fedecg.errors import PrivacyError
from fedecg.privacy.objectives import (
    PrivateFeatureStage,
    PrivatePretrainStage,
    per_example_masked_bce,
    private_stage,
)
from fedecg.training.losses import masked_bce
from fedecg.training.stages import PretrainStage
from fedecg.training.trainer import activate

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")
NAN = float("nan")
# (stage, pretrain objective, multimodal model): every objective a DP run can train
CASES = [(STAGES[0], "features", False), (STAGES[0], "align", False),
         (STAGES[1], "features", False), (STAGES[2], "features", False),
         (STAGES[1], "features", True), (STAGES[2], "features", True)]
IDS = ["pretrain-features", "pretrain-align", "lab", "diagnosis", "lab-multimodal",
       "diagnosis-multimodal"]


def batch_and_other() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A batch (with missing clinical values) and a copy whose rows 1.. are all different."""
    batch = next(iter(fixed_batches()))
    batch["clinical"][0, 1] = NAN
    batch["clinical"][2, :3] = NAN
    other = {k: v.clone() for k, v in batch.items()}
    for key in ("ecg", "clinical"):
        other[key][1:] = torch.randn_like(other[key][1:])
    other["clinical"][1:, 0] = NAN
    other["lab"][1:] = NAN
    other["dx"][1:] = 1.0
    return batch, other


@pytest.mark.parametrize(("stage", "objective", "fused"), CASES, ids=IDS)
def test_opacus_per_example_gradients_are_the_examples_own(stage, objective, fused):
    """Opacus's per-example gradient of row 0 is the gradient of row 0's own loss, and it does
    not change when every other row of the batch changes."""
    model = tiny_joint_model(fuse_clinical=fused)
    private = private_stage(stage, SampleDPConfig(pretrain_objective=objective))
    params = dict((n, p) for n, p in model.named_parameters() if p in set(activate(model, private)))
    hooks = prepare_module(model, "hooks", wrap_model=False, batch_first=True,
                           loss_reduction="mean")

    def row0(batch: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        for param in params.values():
            param.grad, param.grad_sample = None, None
        torch.manual_seed(0)  # the same dropout masks in every pass
        private.loss(model, batch)[0].backward()
        opacus = {n: p.grad_sample[0].clone() for n, p in params.items()}
        torch.manual_seed(0)
        own = torch.autograd.grad(private.per_example_loss(model, batch)[0],
                                  list(params.values()), allow_unused=True)
        return opacus, dict(zip(params, own, strict=True))

    try:
        batch, other = batch_and_other()
        (opacus, own), (opacus_other, own_other) = row0(batch), row0(other)
    finally:
        hooks.cleanup()
    assert params and any(float(g.abs().sum()) > 0 for g in opacus.values())
    for name in params:
        expected = own[name] if own[name] is not None else torch.zeros_like(opacus[name])
        torch.testing.assert_close(opacus[name], expected, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(opacus_other[name], opacus[name], rtol=1e-4, atol=1e-6,
                                   msg=name)
        if own_other[name] is not None:
            torch.testing.assert_close(own_other[name], own[name], rtol=1e-4, atol=1e-6)


class FixedProjection(nn.Module):
    """Stands in for the ECG projection: returns the given rows whatever the embedding."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = rows

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.rows[: len(embedding)]


def test_feature_objective_is_the_masked_squared_error_to_the_standardized_values():
    model = tiny_joint_model()
    with torch.no_grad():
        model.clinical.mean.fill_(1.0)
        model.clinical.std.fill_(2.0)
    projection = torch.arange(16, dtype=torch.float32).reshape(2, 8) / 10  # P = 8 ≥ F = 5
    model.ecg_projection = FixedProjection(projection)
    clinical = torch.tensor([[3.0, NAN, 1.0, 40.0, -1.0], [NAN] * N_CLIN])
    batch = {"ecg": torch.zeros(2, 12, 48), "clinical": clinical}
    loss = PrivateFeatureStage().per_example_loss(model, batch)
    standardized = [1.0, 0.0, 5.0, -1.0]  # (x - 1) / 2, 19.5 clipped at 5; feature 1 missing
    predicted = [0.0, 0.2, 0.3, 0.4]
    expected = sum((p - t) ** 2 for p, t in zip(predicted, standardized, strict=True)) / 4
    assert loss.tolist() == pytest.approx([expected, 0.0])  # no known value: no loss


def test_feature_objective_needs_one_projection_output_per_feature():
    model = tiny_joint_model()
    model.ecg_projection = FixedProjection(torch.zeros(6, N_CLIN - 1))
    with pytest.raises(PrivacyError, match=r"pretrain\.projection_dim 4 with 5 clinical features"):
        PrivateFeatureStage().per_example_loss(model, next(iter(fixed_batches())))


@pytest.mark.parametrize("objective", ["features", "align"])
def test_private_pretraining_trains_only_the_ecg_side_and_shares_the_usual_keys(objective):
    model = tiny_joint_model()
    stage = private_stage(PretrainStage(), SampleDPConfig(pretrain_objective=objective))
    assert isinstance(stage, PrivateFeatureStage if objective == "features"
                      else PrivatePretrainStage)
    names = {n for n, p in model.named_parameters() if any(p is q for q in stage.trainable(model))}
    assert names and all(n.startswith(("classifier.encoder.", "ecg_projection.")) for n in names)
    assert stage.shared_keys(model) == PretrainStage().shared_keys(model)


def test_plain_masked_bce_couples_examples_and_the_private_one_does_not():
    one_known = torch.tensor([[1.0, NAN, NAN], [0.0, 1.0, 0.0]])
    none_known = torch.tensor([[1.0, NAN, NAN], [NAN] * 3])

    def row0_grad(loss_of, targets: torch.Tensor) -> float:
        logits = torch.zeros(2, 3, requires_grad=True)
        return float(torch.autograd.grad(loss_of(logits, targets), logits)[0][0, 0])

    private = lambda logits, targets: per_example_masked_bce(logits, targets).mean()  # noqa: E731
    assert row0_grad(masked_bce, one_known) != row0_grad(masked_bce, none_known)
    assert row0_grad(private, one_known) == row0_grad(private, none_known)
