"""Explanations: head-geometry support, captum attributions, preprocessing as the card says."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from builders.inference_models import DX, LABS, tiny_card, tiny_model

from fedecg.data.leads import CANONICAL_LEADS, MIMIC_LEADS
from fedecg.data.waveform import read_ecg
from fedecg.errors import StoreError
from fedecg.explain.attribution import attribute_diagnosis
from fedecg.explain.inference import (
    card_sampling,
    crop_count,
    predict_signal,
    prepare_record,
)
from fedecg.explain.support import head_cosines, supporting_labs
from fedecg.models import EcgClassifier

PTBXL = "wfdb-samples/ptb-xl/records100/00000/00001_lr"
CHAPMAN = "wfdb-samples/chapman-shaoxing/JS00001"


def _ecg(seed: int = 0, n_samples: int = 250) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.5, size=(12, n_samples)).astype(np.float32)


def _input_conv(model: EcgClassifier) -> torch.nn.Conv1d:
    """The encoder's first convolution, the only layer that reads the 12 leads."""
    return next(m for m in model.encoder.modules()
                if isinstance(m, torch.nn.Conv1d) and m.in_channels == 12)


def _geometry_model() -> EcgClassifier:
    """Heads set by hand; the encoder is silenced so every logit equals its head's bias.

    With every encoder parameter 0 (convolutions, biases, norm scales and shifts) every layer
    outputs 0, so the embedding is 0 for any input and p = sigmoid(bias) exactly.
    """
    model = tiny_model()
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.zero_()
        e = torch.eye(model.encoder.embedding_dim)
        model.dx_head.weight.copy_(torch.stack([e[0], e[1], e[2]]))
        model.dx_head.bias.copy_(torch.tensor([2.0, -1.0, 0.5]))  # p ≈ 0.88, 0.27, 0.62
        model.lab_head.weight.copy_(torch.stack([e[0], e[0] + e[1], -e[0], e[2]]))
        logit = math.log(0.9 / 0.1), math.log(0.6 / 0.4), math.log(0.95 / 0.05), 0.0
        model.lab_head.bias.copy_(torch.tensor(logit))  # p = 0.9, 0.6, 0.95, 0.5
    return model


def test_head_cosines_are_hand_computed():
    cosines = head_cosines(_geometry_model())
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(cosines, [[1, s, -1, 0], [0, s, 0, 0], [0, 0, 0, 1]], atol=1e-12)


def test_support_rule_keeps_predicted_and_aligned_labs_ranked_by_score():
    probabilities = dict(zip(LABS, [0.9, 0.6, 0.95, 0.99], strict=True))
    row = np.array([1.0, 1 / math.sqrt(2), -1.0, 0.0])
    supports = supporting_labs(row, probabilities)
    assert [s.label for s in supports] == ["potassium_high", "potassium_low"]
    assert supports[1].score == pytest.approx(0.6 / math.sqrt(2))
    assert supports[1].cosine == pytest.approx(1 / math.sqrt(2))
    assert [s.label for s in supporting_labs(row, probabilities, top_k=1)] == ["potassium_high"]
    low = dict(probabilities, potassium_high=0.3)
    assert [s.label for s in supporting_labs(row, low)] == ["potassium_low"]
    assert supporting_labs(row, probabilities, min_cosine=0.8)[0].label == "potassium_high"
    assert len(supporting_labs(row, probabilities, min_cosine=0.8)) == 1


def test_explain_record_on_a_hand_built_model(tmp_path: Path):
    from fedecg.explain.explanation import explain_record

    model, card = _geometry_model(), tiny_card()
    explanation = explain_record(model, card, _ecg(), top_diagnoses=2, method="saliency")
    assert explanation.diagnoses["atrial_fibrillation"] == pytest.approx(1 / (1 + math.exp(-2)))
    assert explanation.lab_abnormalities["potassium_low"] == pytest.approx(0.6)
    assert [d.label for d in explanation.top] == ["atrial_fibrillation", "hyperkalemia"]
    af, hyperk = explanation.top
    # AF = e0: potassium_high (cos 1, p .9) then potassium_low (cos .71, p .6); hemoglobin_low
    # (-e0) argues against it. Hyperkalemia = e2: only ntprobnp_high (e2, p .5) is aligned.
    assert [s.label for s in af.supporting_labs] == ["potassium_high", "potassium_low"]
    assert [(s.label, s.score) for s in hyperk.supporting_labs] == [
        ("ntprobnp_high", pytest.approx(0.5))]
    payload = explanation.to_json()
    assert "attribution_map" not in payload
    assert next(iter(payload["lab_abnormalities"])) == "hemoglobin_low"  # sorted, p = 0.95
    assert "cosine" in payload["support_rule"]
    json.dumps(payload)


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_attribution_shares_sum_to_one_and_a_disconnected_lead_gets_none(method: str):
    model, card = tiny_model(seed=1), tiny_card()
    v2 = CANONICAL_LEADS.index("V2")
    with torch.no_grad():
        _input_conv(model).weight[:, v2, :] = 0.0  # the model cannot see V2
    result = attribute_diagnosis(model, card, _ecg(n_samples=500), target=1, method=method,
                                 steps=16)
    assert sum(result.lead_shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert result.lead_shares["V2"] < 1e-12
    assert min(v for k, v in result.lead_shares.items() if k != "V2") > 0
    assert result.map.shape == (12, 500)
    assert result.map.min() >= 0 and result.map.max() == pytest.approx(1.0)
    assert result.map[v2].max() == 0
    assert result.target == DX[1]


def test_attribution_goes_entirely_to_the_only_connected_lead():
    model, card = tiny_model(seed=2), tiny_card()
    v5 = CANONICAL_LEADS.index("V5")
    with torch.no_grad():
        weight = _input_conv(model).weight
        keep = weight[:, v5, :].clone()
        weight.zero_()
        weight[:, v5, :] = keep
    shares = attribute_diagnosis(model, card, _ecg(), target=0, steps=8).lead_shares
    assert shares["V5"] == pytest.approx(1.0)


def test_crop_count_covers_the_record():
    card = tiny_card(crop_samples=250)
    assert [crop_count(card, n) for n in (100, 250, 251, 1000, 1001)] == [1, 1, 2, 4, 5]
    assert crop_count(tiny_card(crop_samples=250, eval_crops=6), 1000) == 6


def test_prediction_averages_logits_over_crops_by_hand():
    model, card = tiny_model(), tiny_card(crop_samples=250)
    signal = _ecg(n_samples=1000)
    prediction = predict_signal(model, card, signal)
    x = torch.from_numpy(signal)[None]
    with torch.no_grad():
        embedding = torch.stack([model.forward_features(x[..., s:s + 250])
                                 for s in (0, 250, 500, 750)]).mean(dim=0)
        expected = torch.sigmoid(model.dx_head(embedding))[0]
    assert prediction.n_crops == 4
    assert list(prediction.diagnoses) == DX and list(prediction.lab_abnormalities) == LABS
    np.testing.assert_allclose(list(prediction.diagnoses.values()), expected.numpy(), rtol=1e-5)


def test_prepare_record_follows_the_card(shared_data: Path):
    record = read_ecg(shared_data / PTBXL)
    prepared = prepare_record(record, tiny_card(fs=100.0, clip_mv=0.5))
    assert prepared.shape == (12, 1000) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, np.clip(record.signal, -0.5, 0.5))
    mimic_order = prepare_record(record, tiny_card(clip_mv=3.0, lead_order=list(MIMIC_LEADS)))
    np.testing.assert_array_equal(mimic_order[4], record.signal[CANONICAL_LEADS.index("aVF")])
    chapman = prepare_record(read_ecg(shared_data / CHAPMAN), tiny_card(fs=100.0))
    assert chapman.shape == (12, 1000)  # 500 Hz, 10 s → 100 Hz
    padded = prepare_record(record, tiny_card(fs=50.0, crop_samples=800))
    assert padded.shape == (12, 800) and not padded[:, 500:].any()  # 10 s at 50 Hz, zero-padded


def test_card_without_clip_or_with_two_rates_is_refused():
    card = tiny_card()
    with pytest.raises(StoreError, match=r"preprocessing\.clip_mv is None"):
        card_sampling(card.model_copy(update={"preprocessing": {"fs": 100.0}}))
    with pytest.raises(StoreError, match=r"preprocessing\.fs is 500"):
        card_sampling(card.model_copy(update={"preprocessing": {"fs": 500, "clip_mv": 3}}))
