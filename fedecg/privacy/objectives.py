"""Per-example objectives: the three stages rewritten so that DP-SGD's accounting holds.

DP-SGD bounds one example's influence by clipping its own gradient. That bound holds only if
the batch loss is a mean of per-example losses, each depending on its own example alone.

* **Joint-embedding pretraining** (InfoNCE, SigLIP) breaks this: every example is a negative
  for every other, so one patient's record moves all the other examples' gradients. fedecg
  does not skip pretraining under DP (it reads private ECGs and labs, so skipping DP there
  would void the guarantee). It replaces the loss by one that reads **its own** clinical row
  only (``privacy.sample.pretrain_objective``), through the clinical encoder's public,
  data-independent standardization (``fedecg.privacy.normalization``):

  - ``align`` (the default; ``PrivatePretrainStage``): ``1 − cos(z_ecg, t)`` with ``t`` the
    L2-normalized output of the clinical encoder and projection, **frozen** at their seeded,
    data-independent initialization: a fixed random nonlinear view of the row.
  - ``features`` (``PrivateFeatureStage``): the ECG projection's first F outputs regress the
    row's F standardized clinical values (labs, vitals, demographics; clipped at ±5 as the
    clinical encoder clips them), a squared error averaged over the row's **known** values
    (missing ones are masked out, not imputed): the knowledge transfer made direct. At the
    quickstart scale it kept no more diagnosis AUROC than ``align``.

  Neither needs negatives. In the federated quickstart study both learn only the mean target
  (no per-example structure), and transfer gains nothing from them (simulation/README.md,
  "What was tried for the ε = 8 target"). Only the ECG encoder and ECG projection
  train; the stage shares the same keys as ``PretrainStage`` (the clinical ones come back
  unchanged), so a server needs no other stage.
  ``grouped`` keeps InfoNCE/SigLIP within random groups and clips each group's gradient
  instead (``fedecg.privacy.grouped``: its own stage and noisy optimizer step).
* **Lab and diagnosis heads** use masked BCE averaged over the known labels of the whole
  batch, so one example's missing labels change every other example's weight. The private
  versions average over each example's own known labels, then over the batch.

Each private stage keeps the wrapped stage's ``name`` and ``targets`` and exposes
``per_example_loss(model, batch) -> [B]``; ``loss`` is its batch mean (0 on an empty Poisson
batch). Logs carry only the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedecg.config.privacy import SampleDPConfig
from fedecg.errors import PrivacyError
from fedecg.models.joint import JointModel
from fedecg.privacy.grouped import GroupedContrastiveStage
from fedecg.training.stages import (
    ENCODER,
    Batch,
    DiagnosisStage,
    HeadStage,
    LabHeadStage,
    PretrainStage,
    Stage,
    WrappedStage,
    params_with_prefix,
)

PRIVATE_PRETRAIN_MODULES = (ENCODER, "ecg_projection.")


def per_example_masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[B]``: each row's BCE averaged over its own known (non-NaN) labels; 0 if none."""
    known = ~torch.isnan(targets)  # [B, L]
    safe = torch.where(known, targets, torch.zeros_like(targets))
    losses = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")  # [B, L]
    losses = torch.where(known, losses, torch.zeros_like(losses))
    return losses.sum(dim=1) / known.sum(dim=1).clamp(min=1)


def batch_mean(per_example: torch.Tensor) -> torch.Tensor:
    """Mean of ``[B]`` losses; 0 (still in the graph) for an empty batch."""
    return per_example.sum() / max(len(per_example), 1)


class PerExampleStage:
    """Shared part of the private stages: the batch loss is the mean of ``per_example_loss``."""

    name: str
    targets: tuple[str, ...]

    def per_example_loss(self, model: JointModel, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, model: JointModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Batch mean of the per-example losses, and its value as the only log."""
        loss = batch_mean(self.per_example_loss(model, batch))
        return loss, {"loss": float(loss.detach())}


@dataclass
class PrivatePretrainStage(PerExampleStage):
    """Stage 1 under DP: each ECG aligns with a frozen embedding of its own clinical row."""

    name: str = "pretrain"
    targets: tuple[str, ...] = ("clinical",)

    def trainable(self, model: JointModel) -> list[nn.Parameter]:
        return params_with_prefix(model, PRIVATE_PRETRAIN_MODULES)

    def shared_keys(self, model: JointModel) -> list[str]:
        return PretrainStage().shared_keys(model)

    @staticmethod
    @torch.no_grad()
    def clinical_targets(model: JointModel, clinical: torch.Tensor) -> torch.Tensor:
        """``[B, P]`` unit targets from the frozen clinical side (dropout off)."""
        modules = (model.clinical, model.clinical_projection)
        modes = [m.training for m in modules]
        for module in modules:
            module.eval()
        try:
            target = model.clinical_projection(model.clinical(clinical))  # [B, P]
        finally:
            for module, mode in zip(modules, modes, strict=True):
                module.train(mode)
        return F.normalize(target, dim=-1)

    def per_example_loss(self, model: JointModel, batch: Batch) -> torch.Tensor:
        z_ecg = model.ecg_projection(model.classifier.forward_features(batch["ecg"]))  # [B, P]
        target = self.clinical_targets(model, batch["clinical"])  # [B, P]
        return 1.0 - (F.normalize(z_ecg, dim=-1) * target).sum(dim=-1)  # [B]


@dataclass
class PrivateFeatureStage(PrivatePretrainStage):
    """Stage 1 under DP: each ECG regresses its own standardized clinical values (masked)."""

    def per_example_loss(self, model: JointModel, batch: Batch) -> torch.Tensor:
        z_ecg = model.ecg_projection(model.classifier.forward_features(batch["ecg"]))  # [B, P]
        n = model.clinical.n_features
        if z_ecg.shape[1] < n:
            raise PrivacyError(f"pretrain.projection_dim {z_ecg.shape[1]} with {n} clinical "
                               "features: privacy.sample.pretrain_objective 'features' regresses "
                               "each feature on one projection output; set "
                               f"pretrain.projection_dim to at least {n}, or use 'align'")
        inputs = model.clinical.inputs(batch["clinical"])  # [B, 2F]: values, missing mask
        values, known = inputs[:, :n], 1.0 - inputs[:, n:]  # [B, F] each
        errors = (z_ecg[:, :n] - values).pow(2) * known  # [B, F]
        return errors.sum(dim=1) / known.sum(dim=1).clamp(min=1)


@dataclass
class PrivateHeadStage(WrappedStage, PerExampleStage):
    """Stages 2 and 3 under DP: the wrapped head stage with per-example masked BCE."""

    inner: HeadStage

    def per_example_loss(self, model: JointModel, batch: Batch) -> torch.Tensor:
        logits = self.inner.logits(model, batch)
        lab = per_example_masked_bce(logits["lab"], batch["lab"])  # [B]
        if isinstance(self.inner, DiagnosisStage):
            dx = per_example_masked_bce(logits["dx"], batch["dx"])  # [B]
            return dx + self.inner.lab_loss_weight * lab
        return lab


PRETRAIN_OBJECTIVES = {"align": PrivatePretrainStage, "features": PrivateFeatureStage}


def private_stage(stage: Stage, settings: SampleDPConfig | None = None
                  ) -> PerExampleStage | GroupedContrastiveStage:
    """The private version of one of fedecg's stages (see the module docstring), with
    ``settings``' pretraining objective (default: ``SampleDPConfig``'s): per-example, or for
    ``grouped`` pretraining the grouped contrastive stage (``fedecg.privacy.grouped``)."""
    settings = settings or SampleDPConfig()
    if isinstance(stage, PretrainStage):
        if settings.pretrain_objective == "grouped":
            return GroupedContrastiveStage.from_settings(stage, settings)
        return PRETRAIN_OBJECTIVES[settings.pretrain_objective]()
    if isinstance(stage, LabHeadStage | DiagnosisStage):
        return PrivateHeadStage(stage)
    if isinstance(stage, PerExampleStage | GroupedContrastiveStage):
        return stage
    raise PrivacyError(f"stage {getattr(stage, 'name', stage)!r} ({type(stage).__name__}): no "
                       "per-example objective is known for it, so DP-SGD could not bound one "
                       "example's influence; expected PretrainStage, LabHeadStage or "
                       "DiagnosisStage")
