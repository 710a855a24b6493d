"""The inference model: ECG encoder plus two linear heads on one embedding.

``EcgClassifier.forward(ecg[B, 12, T])`` returns ``{"lab": [B, n_lab], "dx": [B, n_dx]}`` logits.
Both heads are ``nn.Linear(E, ·)`` on the same embedding, so explanations may compare their
weight directions (``lab_head.weight`` ``[n_lab, E]`` against ``dx_head.weight`` ``[n_dx, E]``).

Whole records longer than the training crop are scored with ``forward_crops``: the mean of the
logits over evenly spaced crops, which (the heads being linear) equals the heads applied to the
mean embedding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fedecg.models.encoders import EcgEncoder


def crop_starts(total: int, crop: int, count: int) -> list[int]:
    """``count`` evenly spaced start samples of ``crop``-long windows covering ``total`` samples."""
    if crop >= total or count <= 1:
        return [max(0, (total - crop) // 2)]
    span = total - crop
    return sorted({round(i * span / (count - 1)) for i in range(count)})


class EcgClassifier(nn.Module):
    """``encoder`` (``forward_features`` → ``[B, E]``), ``lab_head`` and ``dx_head`` (linear)."""

    def __init__(self, n_lab: int, n_dx: int, encoder: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.encoder_kwargs = dict(encoder or {})
        self.encoder = EcgEncoder(**self.encoder_kwargs)
        self.lab_head = nn.Linear(self.encoder.embedding_dim, n_lab)
        self.dx_head = nn.Linear(self.encoder.embedding_dim, n_dx)

    @property
    def architecture(self) -> dict[str, Any]:
        """Constructor kwargs that rebuild this model: ``EcgClassifier(**architecture)``."""
        return {"n_lab": self.lab_head.out_features, "n_dx": self.dx_head.out_features,
                "encoder": dict(self.encoder_kwargs)}

    def forward_features(self, ecg: torch.Tensor) -> torch.Tensor:
        """Embedding ``[B, E]`` of ``ecg`` ``[B, 12, T]``."""
        return self.encoder.forward_features(ecg)

    def forward_head(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of both heads from an embedding ``[B, E]``."""
        return {"lab": self.lab_head(embedding), "dx": self.dx_head(embedding)}

    def forward(self, ecg: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits ``{"lab": [B, n_lab], "dx": [B, n_dx]}``."""
        return self.forward_head(self.forward_features(ecg))

    def forward_crops(self, ecg: torch.Tensor, crop: int, count: int) -> dict[str, torch.Tensor]:
        """Logits averaged over ``count`` evenly spaced ``crop``-long windows of ``ecg``."""
        starts = crop_starts(ecg.shape[-1], crop, count)
        embedding = torch.stack(
            [self.forward_features(ecg[..., s:s + crop]) for s in starts]).mean(dim=0)  # [B, E]
        return self.forward_head(embedding)
