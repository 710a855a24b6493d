"""Per-epoch checkpoints, written atomically, from which a killed run resumes exactly.

A checkpoint holds the model, optimizer and scheduler states, the stage's best epoch so far
(``fedecg.training.selection``), where training stands
(``stage_index``, ``epoch`` = epochs finished in that stage), how many ``metrics.jsonl`` lines
belong to the run so far, and ``done`` once every stage is finished. All randomness is derived
from ``(seed, stage, epoch)``, so resuming from a checkpoint gives the same weights as never
stopping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fedecg.errors import TrainingError
from fedecg.io import load_weights, save_weights
from fedecg.training.selection import BestSoFar


@dataclass
class Position:
    """Where a model's training stands."""

    stage_index: int = 0
    epoch: int = 0
    metric_lines: int = 0
    done: bool = False


def save_checkpoint(path: Path, position: Position, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, best: BestSoFar | None = None) -> None:
    """Write a checkpoint atomically (the previous one stays valid until the rename); ``best``
    is the current stage's model selection (``fedecg.training.selection``)."""
    payload = {"position": asdict(position), "model": model.state_dict(),
               "optimizer": optimizer.state_dict() if optimizer is not None else None,
               "scheduler": scheduler.state_dict() if scheduler is not None else None,
               "best": best.meta() if best is not None else None,
               "best_state": best.state if best is not None else None}
    save_weights(Path(path), payload)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``position`` as a ``Position``, ``best`` as a ``BestSoFar``),
    or None if there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        payload = load_weights(path)
        payload["position"] = Position(**payload["position"])
        payload["best"] = BestSoFar.restore(payload.get("best"), payload.get("best_state"))
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingError(f"{path}: checkpoint is unreadable ({exc}); delete it to restart "
                            "this model, or pass --overwrite to restart the run") from None
    return payload
