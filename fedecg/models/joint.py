"""Everything the three stages train, in one module: the ``JointModel``.

Submodules (their names are the state-dict prefixes a federated round exchanges):

* ``classifier`` (``EcgClassifier``): ``classifier.encoder``, ``classifier.lab_head``,
  ``classifier.dx_head`` — the inference model, exported alone;
* ``clinical`` (``ClinicalEncoder``) with its normalization buffers ``clinical.mean/std``;
* ``ecg_projection``, ``clinical_projection`` (``ProjectionHead``): into the joint space;
* ``temperature`` (``LogitScale``): the contrastive loss's learnable log-scale and bias;
* ``clinical_lab_head``, ``clinical_dx_head`` (only when ``fuse_clinical``, the multimodal
  baseline): linear heads on the clinical embedding whose logits add to the ECG heads', so the
  prediction is linear on the concatenated ``[ECG, clinical]`` embedding.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedecg.models.classifier import EcgClassifier
from fedecg.models.clinical import ClinicalEncoder
from fedecg.models.heads import ProjectionHead


class LogitScale(nn.Module):
    """``scale = exp(log_scale)`` (1 / temperature) and ``bias`` of a contrastive loss.

    Parameters when ``learnable``, else buffers (same state-dict keys either way).
    """

    def __init__(self, temperature: float = 0.07, bias: float = -10.0,
                 learnable: bool = True) -> None:
        super().__init__()
        log_scale = torch.tensor(math.log(1.0 / temperature))
        bias_value = torch.tensor(float(bias))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
            self.bias = nn.Parameter(bias_value)
        else:
            self.register_buffer("log_scale", log_scale)
            self.register_buffer("bias", bias_value)

    def scale(self, max_scale: float = 100.0) -> torch.Tensor:
        """The current scale, clamped at ``max_scale`` as CLIP does."""
        return self.log_scale.exp().clamp(max=max_scale)


class JointModel(nn.Module):
    """ECG classifier + clinical encoder + projections (+ fusion heads for ``multimodal``)."""

    def __init__(self, n_lab: int, n_dx: int, n_clinical: int,
                 encoder: dict[str, Any] | None = None, clinical: dict[str, Any] | None = None,
                 projection_dim: int = 128, temperature: float = 0.07,
                 learnable_temperature: bool = True, fuse_clinical: bool = False) -> None:
        super().__init__()
        self.classifier = EcgClassifier(n_lab, n_dx, encoder)
        self.clinical = ClinicalEncoder(n_clinical, **(clinical or {}))
        ecg_dim, clin_dim = self.classifier.encoder.embedding_dim, self.clinical.embedding_dim
        self.ecg_projection = ProjectionHead(ecg_dim, projection_dim)
        self.clinical_projection = ProjectionHead(clin_dim, projection_dim)
        self.temperature = LogitScale(temperature, learnable=learnable_temperature)
        self.fuse_clinical = fuse_clinical
        if fuse_clinical:
            self.clinical_lab_head = nn.Linear(clin_dim, n_lab)
            self.clinical_dx_head = nn.Linear(clin_dim, n_dx)

    def joint_embeddings(self, ecg: torch.Tensor,
                         clinical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalized projections ``([B, P], [B, P])`` of an ECG batch and its clinical rows."""
        z_ecg = self.ecg_projection(self.classifier.forward_features(ecg))  # [B, P]
        z_clin = self.clinical_projection(self.clinical(clinical))  # [B, P]
        return F.normalize(z_ecg, dim=-1), F.normalize(z_clin, dim=-1)

    def predict_from_embedding(self, embedding: torch.Tensor,
                               clinical: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits from an ECG embedding ``[B, E]`` (plus clinical rows when fused)."""
        logits = self.classifier.forward_head(embedding)
        if self.fuse_clinical:
            if clinical is None:
                raise ValueError("the multimodal model needs clinical features at inference")
            c = self.clinical(clinical)  # [B, C]
            logits = {"lab": logits["lab"] + self.clinical_lab_head(c),
                      "dx": logits["dx"] + self.clinical_dx_head(c)}
        return logits

    def forward(self, ecg: torch.Tensor,
                clinical: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Logits ``{"lab", "dx"}`` for an ECG batch (and clinical rows if multimodal)."""
        return self.predict_from_embedding(self.classifier.forward_features(ecg), clinical)
