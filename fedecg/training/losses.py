"""Losses: masked BCE for labels with unknowns, and the two joint-embedding losses.

* ``masked_bce(logits, targets)``: targets hold 1, 0 or NaN; NaN entries are masked out (never
  counted as negatives); the mean is over known entries only (0 when none is known).
* ``infonce(z_a, z_b, scale)``: symmetric CLIP loss on L2-normalized ``[B, P]`` embeddings.
* ``siglip(z_a, z_b, scale, bias)``: pairwise sigmoid loss (Zhai et al. 2023), mean over rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over the entries of ``targets`` that are not NaN."""
    known = ~torch.isnan(targets)  # [B, L]
    safe = torch.where(known, targets, torch.zeros_like(targets))
    losses = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")  # [B, L]
    losses = torch.where(known, losses, torch.zeros_like(losses))
    return losses.sum() / known.sum().clamp(min=1)


def infonce(z_a: torch.Tensor, z_b: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``z_a`` should match row ``i`` of ``z_b`` among the batch."""
    logits = scale * z_a @ z_b.T  # [B, B]
    target = torch.arange(len(z_a), device=z_a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def siglip(z_a: torch.Tensor, z_b: torch.Tensor, scale: torch.Tensor | float,
           bias: torch.Tensor | float) -> torch.Tensor:
    """Sigmoid loss: each pair is a binary problem (diagonal positive); summed per row, averaged."""
    logits = scale * z_a @ z_b.T + bias  # [B, B]
    labels = 2.0 * torch.eye(len(z_a), device=z_a.device) - 1.0  # +1 diagonal, -1 elsewhere
    return -F.logsigmoid(labels * logits).sum() / len(z_a)
