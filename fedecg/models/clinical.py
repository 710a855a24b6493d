"""The clinical encoder: an MLP over standardized features concatenated with missing masks.

The standardization statistics (``mean``, ``std``) are buffers fit on training rows only with
``fit_normalization``; they travel with the state dict. Missing values (NaN) become 0 after
standardization (the training mean) and set their mask bit to 1.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

Z_CLIP = 5.0


class ClinicalEncoder(nn.Module):
    """``clinical[B, F]`` (raw values, NaN where missing) → embedding ``[B, embedding_dim]``."""

    def __init__(self, n_features: int, hidden: int = 128, layers: int = 2,
                 embedding_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"n_features {n_features}: expected at least one clinical feature")
        self.n_features = n_features
        self.embedding_dim = embedding_dim
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        blocks: list[nn.Module] = []
        width = 2 * n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                       nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, embedding_dim))
        self.mlp = nn.Sequential(*blocks)

    @torch.no_grad()
    def fit_normalization(self, features: np.ndarray | torch.Tensor) -> None:
        """Set ``mean``/``std`` from training rows ``[N, F]`` (NaN ignored; unseen → 0/1)."""
        values = torch.as_tensor(np.asarray(features, dtype=np.float64))
        known = ~torch.isnan(values)
        count = known.sum(dim=0).clamp(min=1)
        filled = torch.where(known, values, torch.zeros_like(values))
        mean = filled.sum(dim=0) / count
        var = (torch.where(known, values - mean, torch.zeros_like(values)) ** 2).sum(0) / count
        std = var.sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)).float())

    def inputs(self, clinical: torch.Tensor) -> torch.Tensor:
        """Standardized, clipped features with missing masks: ``[B, 2F]``."""
        missing = torch.isnan(clinical)  # [B, F]
        z = ((clinical - self.mean) / self.std).clamp(-Z_CLIP, Z_CLIP)
        z = torch.where(missing, torch.zeros_like(z), z)  # [B, F]
        return torch.cat([z, missing.to(z.dtype)], dim=1)  # [B, 2F]

    def forward(self, clinical: torch.Tensor) -> torch.Tensor:
        """Embed raw clinical features ``[B, F]`` into ``[B, embedding_dim]``."""
        return self.mlp(self.inputs(clinical))
