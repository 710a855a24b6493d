"""Losses against hand-computed values: masked BCE, symmetric InfoNCE, SigLIP."""

from __future__ import annotations

import math

import pytest
import torch

from fedecg.training.losses import infonce, masked_bce, siglip

NAN = float("nan")


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_masked_bce_equals_the_hand_computed_mean_over_known_entries():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    targets = torch.tensor([[1.0, NAN], [0.0, 1.0]])
    expected = (_bce(0.0, 1) + _bce(1.0, 0) + _bce(-1.0, 1)) / 3
    assert masked_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_masked_bce_ignores_unknown_entries_and_gives_them_no_gradient():
    targets = torch.tensor([[1.0, NAN], [0.0, NAN]])
    logits = torch.tensor([[0.5, 3.0], [-0.5, -7.0]], requires_grad=True)
    loss = masked_bce(logits, targets)
    loss.backward()
    assert logits.grad[:, 1].abs().sum().item() == 0.0
    other = masked_bce(torch.tensor([[0.5, -100.0], [-0.5, 100.0]]), targets)
    assert other.item() == pytest.approx(loss.item())
    assert torch.isfinite(logits.grad).all()


def test_masked_bce_with_nothing_known_is_zero_not_nan():
    loss = masked_bce(torch.zeros(2, 3), torch.full((2, 3), NAN))
    assert loss.item() == 0.0


def test_infonce_on_orthonormal_pairs_matches_hand_value():
    z = torch.eye(2)
    # logits = scale * I; each row's cross-entropy is log(1 + e^{-scale}).
    assert infonce(z, z, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert infonce(z, z, 3.0).item() == pytest.approx(math.log(1 + math.exp(-3)), rel=1e-5)


def test_infonce_is_symmetric_and_invariant_to_batch_order():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    b = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    perm = torch.randperm(6)
    assert infonce(a, b, 5.0).item() == pytest.approx(infonce(b, a, 5.0).item(), rel=1e-6)
    assert infonce(a[perm], b[perm], 5.0).item() == pytest.approx(infonce(a, b, 5.0).item(),
                                                                  rel=1e-6)


def test_infonce_is_lower_for_matched_than_for_swapped_pairs():
    z = torch.eye(3)
    assert infonce(z, z, 5.0) < infonce(z, z[[1, 2, 0]], 5.0)


def test_siglip_on_orthonormal_pairs_matches_hand_value():
    z = torch.eye(2)
    # diagonal logits 1 (positive), off-diagonal 0 (negative); sum over 4 pairs / 2 rows.
    expected = (2 * math.log(1 + math.exp(-1)) + 2 * math.log(2)) / 2
    assert siglip(z, z, 1.0, 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_siglip_bias_shifts_every_pair():
    z = torch.eye(2)
    # scale 0: every logit is the bias b; diagonal -log σ(b), off-diagonal -log σ(-b).
    b = -2.0
    expected = (2 * math.log(1 + math.exp(-b)) + 2 * math.log(1 + math.exp(b))) / 2
    assert siglip(z, z, 0.0, b).item() == pytest.approx(expected, rel=1e-6)
