"""Projection heads that map an encoder's embedding into the shared joint-embedding space."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Two-layer MLP ``[B, in_dim] → [B, out_dim]`` (SimCLR-style; used only in pretraining)."""

    def __init__(self, in_dim: int, out_dim: int = 128, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(in_dim, out_dim)
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Project ``embedding`` ``[B, in_dim]`` to ``[B, out_dim]`` (not normalized)."""
        return self.net(embedding)
