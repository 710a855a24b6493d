"""Models: shapes, no batch statistics (Opacus accepts them), clinical standardization, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from builders.tiny import TINY_ENCODER
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from fedecg.errors import StoreError
from fedecg.models import (
    ClinicalEncoder,
    EcgClassifier,
    JointModel,
    ModelCard,
    crop_starts,
    load_inference_model,
    save_inference_model,
)


def _card(model: EcgClassifier) -> ModelCard:
    return ModelCard(model_name="transfer",
                     diagnosis_labels=[f"dx{i}" for i in range(model.dx_head.out_features)],
                     lab_labels=[f"lab{i}" for i in range(model.lab_head.out_features)],
                     lead_order=["I"] * 12, fs=100.0, crop_samples=100,
                     preprocessing={"clip_mv": 3.0, "fs": 100.0}, seed=3)


def test_classifier_shapes_and_embedding():
    model = EcgClassifier(n_lab=5, n_dx=3, encoder=TINY_ENCODER)
    ecg = torch.randn(4, 12, 100)
    out = model(ecg)
    assert out["lab"].shape == (4, 5) and out["dx"].shape == (4, 3)
    assert model.forward_features(ecg).shape == (4, model.encoder.embedding_dim)
    assert model.encoder.embedding_dim == 2 * TINY_ENCODER["widths"][-1]
    assert model.lab_head.in_features == model.dx_head.in_features == 32


def test_default_encoder_has_no_batch_statistics_and_opacus_accepts_it():
    for module in (EcgClassifier(35, 17), ClinicalEncoder(30)):
        assert ModuleValidator.validate(module, strict=False) == []
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                       for m in module.modules())


def test_per_sample_gradients_sum_to_the_batch_gradient():
    torch.manual_seed(0)
    model = EcgClassifier(2, 2, TINY_ENCODER)
    wrapped = GradSampleModule(model, loss_reduction="sum")
    ecg = torch.randn(3, 12, 64, requires_grad=True)
    wrapped(ecg)["dx"].sum().backward()
    for param in (model.dx_head.weight, model.encoder.stem[0].weight):
        assert param.grad_sample.shape == (3, *param.shape)
        assert torch.allclose(param.grad_sample.sum(0), param.grad, atol=1e-4)


@pytest.mark.parametrize("norm", ["group", "layer", "instance"])
def test_norm_choices_are_group_norms(norm):
    encoder = EcgClassifier(1, 1, {**TINY_ENCODER, "norm": norm}).encoder
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms
    if norm == "layer":
        assert all(m.num_groups == 1 for m in norms)
    if norm == "instance":
        assert all(m.num_groups == m.num_channels for m in norms)


def test_amplitude_survives_the_stem():
    """A per-sample norm right after the first conv would make the output scale-invariant."""
    torch.manual_seed(0)
    encoder = EcgClassifier(1, 1, TINY_ENCODER).encoder.eval()
    ecg = torch.randn(1, 12, 100)
    assert not torch.allclose(encoder(ecg), encoder(2 * ecg), atol=1e-4)


def test_crop_starts_are_evenly_spaced_and_cover_the_record():
    assert crop_starts(1000, 250, 4) == [0, 250, 500, 750]
    assert crop_starts(1000, 250, 3) == [0, 375, 750]
    assert crop_starts(1000, 250, 1) == [375]
    assert crop_starts(200, 250, 4) == [0]


def test_forward_crops_is_the_mean_of_crop_logits():
    torch.manual_seed(0)
    model = EcgClassifier(3, 2, TINY_ENCODER).eval()
    ecg = torch.randn(2, 12, 300)
    pooled = model.forward_crops(ecg, 100, 3)
    logits = [model(ecg[..., s:s + 100])["dx"] for s in (0, 100, 200)]
    assert torch.allclose(pooled["dx"], torch.stack(logits).mean(0), atol=1e-5)


def test_clinical_standardization_is_fit_on_known_values_only():
    encoder = ClinicalEncoder(2, hidden=4, layers=1, embedding_dim=3)
    encoder.fit_normalization(np.array([[1.0, np.nan], [3.0, 10.0], [np.nan, np.nan]]))
    assert encoder.mean.tolist() == [2.0, 10.0]
    assert encoder.std.tolist() == [1.0, 1.0]  # the second has zero spread: kept at 1
    inputs = encoder.inputs(torch.tensor([[3.0, float("nan")]]))
    assert inputs.tolist() == [[1.0, 0.0, 0.0, 1.0]]  # z-scores then missing masks
    assert "mean" in encoder.state_dict() and "std" in encoder.state_dict()


def test_multimodal_prediction_is_linear_in_the_concatenated_embeddings():
    torch.manual_seed(0)
    model = JointModel(3, 2, 4, encoder=TINY_ENCODER, clinical={"hidden": 8, "embedding_dim": 6},
                       projection_dim=8, fuse_clinical=True).eval()
    ecg, clinical = torch.randn(2, 12, 100), torch.randn(2, 4)
    joined = torch.cat([model.classifier.forward_features(ecg), model.clinical(clinical)], 1)
    weight = torch.cat([model.classifier.dx_head.weight, model.clinical_dx_head.weight], 1)
    bias = model.classifier.dx_head.bias + model.clinical_dx_head.bias
    assert torch.allclose(model(ecg, clinical)["dx"], joined @ weight.T + bias, atol=1e-5)
    with pytest.raises(ValueError, match="clinical"):
        model(ecg)


def test_joint_embeddings_are_unit_vectors():
    model = JointModel(3, 2, 4, encoder=TINY_ENCODER, projection_dim=8)
    z_ecg, z_clin = model.joint_embeddings(torch.randn(5, 12, 100), torch.randn(5, 4))
    assert torch.allclose(z_ecg.norm(dim=1), torch.ones(5))
    assert z_clin.shape == (5, 8)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = EcgClassifier(4, 3, TINY_ENCODER).eval()
    save_inference_model(tmp_path / "model", model, _card(model))
    loaded, card = load_inference_model(tmp_path / "model")
    ecg = torch.randn(2, 12, 100)
    assert torch.equal(loaded(ecg)["dx"], model(ecg)["dx"])
    assert card.seed == 3 and card.architecture["encoder"] == TINY_ENCODER
    assert "dx2" in (tmp_path / "model" / "model_card.md").read_text()
    assert json.loads((tmp_path / "model" / "model_card.json").read_text())["fs"] == 100.0


def test_loading_a_missing_or_corrupt_model_names_the_path(tmp_path):
    with pytest.raises(StoreError, match=r"missing model\.pt"):
        load_inference_model(tmp_path / "nowhere")
    model = EcgClassifier(4, 3, TINY_ENCODER)
    save_inference_model(tmp_path / "m", model, _card(model))
    (tmp_path / "m" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match=r"m/model.pt: cannot load"):
        load_inference_model(tmp_path / "m")


def test_a_card_whose_labels_do_not_match_the_heads_is_refused(tmp_path):
    model = EcgClassifier(4, 3, TINY_ENCODER)
    card = _card(model).model_copy(update={"lab_labels": ["only_one"]})
    with pytest.raises(StoreError, match="lab_labels has 1 names"):
        save_inference_model(tmp_path / "m", model, card)
    assert not (tmp_path / "m").exists()
