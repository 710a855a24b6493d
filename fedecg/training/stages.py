"""The stage protocol and its three implementations, shared by centralized and federated training.

A ``Stage`` says, for a ``fedecg.models.joint.JointModel``:

* ``name``: ``"pretrain"``, ``"lab"`` or ``"diagnosis"``;
* ``targets``: the batch fields its loss reads (rows with none of them known are skipped);
* ``trainable(model)``: the parameters its optimizer updates (``activate`` in
  ``fedecg.training.trainer`` sets ``requires_grad`` to match, everything else frozen);
* ``shared_keys(model)``: the state-dict keys a federated round exchanges. The ECG encoder is
  always shared; the clinical encoder, projections and temperature while pretraining; the
  heads when ``share_heads`` (otherwise a site keeps them as personal layers). The clinical
  encoder's normalization buffers (``clinical.mean/std``) are never shared: each site
  standardizes its own features (fit on its training rows);
* ``loss(model, batch) -> (loss, logs)``: a scalar tensor to minimize and float logs.

A batch is a dict of tensors: ``ecg`` ``[B, 12, T]``, ``clinical`` ``[B, F]`` (NaN = missing),
``lab`` ``[B, n_lab]`` and ``dx`` ``[B, n_dx]`` (1, 0, NaN = unknown, masked).

Federated sites build the same stages with ``build_stages`` and train them through the same
stage loop (``fedecg.training.trainer.train_window``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from fedecg.config.train import LossName, TrainConfig
from fedecg.models.joint import JointModel
from fedecg.training.losses import infonce, masked_bce, siglip

Batch = dict[str, torch.Tensor]

ENCODER = "classifier.encoder."
PRETRAIN_MODULES = ("clinical.mlp.", "ecg_projection.", "clinical_projection.", "temperature.")


class Stage(Protocol):
    """One training stage: what it trains, what it shares, and its loss."""

    name: str
    targets: tuple[str, ...]

    def trainable(self, model: JointModel) -> list[nn.Parameter]: ...

    def shared_keys(self, model: JointModel) -> list[str]: ...

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]: ...


def keys_with_prefix(model: nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """State-dict keys of ``model`` that start with one of ``prefixes`` (model order)."""
    return [key for key in model.state_dict() if key.startswith(prefixes)]


def params_with_prefix(model: nn.Module, prefixes: tuple[str, ...]) -> list[nn.Parameter]:
    """Parameters of ``model`` whose names start with one of ``prefixes``."""
    return [param for name, param in model.named_parameters() if name.startswith(prefixes)]


class WrappedStage:
    """A stage built around ``self.inner``: its name, targets, trainable parameters and shared
    keys are the inner stage's (the private stages of ``fedecg.privacy`` change only the loss)."""

    inner: Stage

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def targets(self) -> tuple[str, ...]:
        return self.inner.targets

    def trainable(self, model: JointModel) -> list[nn.Parameter]:
        return self.inner.trainable(model)

    def shared_keys(self, model: JointModel) -> list[str]:
        return self.inner.shared_keys(model)


@dataclass
class PretrainStage:
    """Stage 1: align ECG and clinical embeddings (symmetric InfoNCE or SigLIP).

    ``feature_dropout`` hides that share of clinical values (as missing) in each training batch.
    """

    loss_name: LossName = "infonce"
    feature_dropout: float = 0.0
    name: str = "pretrain"
    targets: tuple[str, ...] = ("clinical",)

    def trainable(self, model: JointModel) -> list[nn.Parameter]:
        return params_with_prefix(model, (ENCODER, *PRETRAIN_MODULES))

    def shared_keys(self, model: JointModel) -> list[str]:
        return keys_with_prefix(model, (ENCODER, *PRETRAIN_MODULES))

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        clinical = batch["clinical"]  # [B, F]
        if model.training and self.feature_dropout > 0:  # hide measured values, as if missing
            hidden = torch.rand(clinical.shape, device=clinical.device) < self.feature_dropout
            clinical = torch.where(hidden, torch.full_like(clinical, float("nan")), clinical)
        z_ecg, z_clin = model.joint_embeddings(batch["ecg"], clinical)  # [B, P] x2
        scale = model.temperature.scale()
        if self.loss_name == "siglip":
            loss = siglip(z_ecg, z_clin, scale, model.temperature.bias)
        else:
            loss = infonce(z_ecg, z_clin, scale)
        with torch.no_grad():
            rows = torch.arange(len(z_ecg), device=z_ecg.device)
            hits = (z_ecg @ z_clin.T).argmax(dim=1) == rows
        return loss, {"loss": float(loss.detach()), "scale": float(scale.detach()),
                      "retrieval_top1": float(hits.float().mean())}


@dataclass
class HeadStage:
    """Shared logic of stages 2 and 3: heads on the ECG embedding, optionally frozen encoder."""

    freeze_encoder: bool = False
    share_heads: bool = True
    name: str = "head"

    def head_prefixes(self, model: JointModel) -> tuple[str, ...]:
        raise NotImplementedError

    def _fusion_prefixes(self, model: JointModel) -> tuple[str, ...]:
        return ("clinical.mlp.",) if model.fuse_clinical else ()

    def trainable(self, model: JointModel) -> list[nn.Parameter]:
        prefixes = self.head_prefixes(model) + self._fusion_prefixes(model)
        if not self.freeze_encoder:
            prefixes = (ENCODER, *prefixes)
        return params_with_prefix(model, prefixes)

    def shared_keys(self, model: JointModel) -> list[str]:
        prefixes: tuple[str, ...] = (ENCODER, *self._fusion_prefixes(model))
        if self.share_heads:
            prefixes += self.head_prefixes(model)
        return keys_with_prefix(model, prefixes)

    def logits(self, model: JointModel, batch: Batch) -> dict[str, torch.Tensor]:
        """Both heads' logits; the encoder runs without gradients when frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            embedding = model.classifier.forward_features(batch["ecg"])  # [B, E]
        return model.predict_from_embedding(embedding, batch["clinical"])


@dataclass
class LabHeadStage(HeadStage):
    """Stage 2: lab-abnormality head (masked BCE on ``lab``)."""

    name: str = "lab"
    targets: tuple[str, ...] = ("lab",)

    def head_prefixes(self, model: JointModel) -> tuple[str, ...]:
        return ("classifier.lab_head.", "clinical_lab_head.")

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        loss = masked_bce(self.logits(model, batch)["lab"], batch["lab"])
        return loss, {"loss": float(loss.detach())}


@dataclass
class DiagnosisStage(HeadStage):
    """Stage 3: diagnosis head (masked BCE on ``dx``) plus ``lab_loss_weight`` × lab loss."""

    lab_loss_weight: float = 0.5
    name: str = "diagnosis"
    targets: tuple[str, ...] = ("dx", "lab")

    def head_prefixes(self, model: JointModel) -> tuple[str, ...]:
        heads: tuple[str, ...] = ("classifier.dx_head.", "clinical_dx_head.")
        if self.lab_loss_weight > 0:
            heads += ("classifier.lab_head.", "clinical_lab_head.")
        return heads

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.logits(model, batch)
        dx_loss = masked_bce(logits["dx"], batch["dx"])
        lab_loss = masked_bce(logits["lab"], batch["lab"])
        loss = dx_loss + self.lab_loss_weight * lab_loss
        return loss, {"loss": float(loss.detach()), "dx_loss": float(dx_loss.detach()),
                      "lab_loss": float(lab_loss.detach())}


def build_stages(config: TrainConfig, pretrained: bool) -> list[Stage]:
    """The stages of one model: pretraining (if ``pretrained``), then lab, then diagnosis.

    Without pretraining the encoder starts random, so it is never frozen.
    """
    freeze_lab = config.lab.freeze_encoder and pretrained
    freeze_dx = config.diagnosis.freeze_encoder and pretrained
    stages: list[Stage] = [LabHeadStage(freeze_encoder=freeze_lab),
                           DiagnosisStage(freeze_encoder=freeze_dx,
                                          lab_loss_weight=config.diagnosis.lab_loss_weight)]
    if pretrained:
        stages.insert(0, PretrainStage(loss_name=config.pretrain.loss,
                                       feature_dropout=config.pretrain.feature_dropout))
    return stages
