"""The model card's privacy entry says which mechanism and pretraining objective a run used."""

from __future__ import annotations

import pytest

from fedecg.config.privacy import DPConfig, SampleDPConfig
from fedecg.privacy.card import mechanism


@pytest.mark.parametrize(("objective", "words"), [
    ("align", "aligns with a frozen embedding of its own clinical row"),
    ("features", "regresses its own standardized clinical values")])
def test_sample_dp_card_names_the_pretraining_objective_used(objective, words):
    config = DPConfig(mode="sample", target_epsilon=8.0,
                      sample=SampleDPConfig(pretrain_objective=objective))
    entry = mechanism(config)
    assert words in entry["mechanism"] and "instead of InfoNCE" in entry["mechanism"]
    assert entry["unit_protected"].startswith("one ECG record")


def test_grouped_card_states_the_group_clip_and_the_same_unit():
    config = DPConfig(mode="sample", target_epsilon=8.0, sample=SampleDPConfig(
        pretrain_objective="grouped", contrastive_group=16, max_grad_norm=2.0))
    entry = mechanism(config)
    assert "contrastive loss within random groups of about 16 records" in entry["mechanism"]
    assert "clipped to 1 (half the clipping norm)" in entry["mechanism"]
    assert "instead of InfoNCE" not in entry["mechanism"]
    assert entry["unit_protected"].startswith("one ECG record")


def test_client_dp_card_protects_a_whole_site():
    entry = mechanism(DPConfig(mode="client", target_epsilon=8.0))
    assert entry["unit_protected"] == "a whole site (all of its records)"
