"""Per-epoch checkpoints, written atomically, from which a killed run resumes exactly.

A checkpoint holds the model, optimizer and scheduler states, the stage's best epoch so far
(``fedecg.training.selection``), where training stands (a ``Position``: the stage, the epochs
finished in it, ``done`` once every stage is finished) and how many ``metrics.jsonl`` lines
belong to the run so far. ``Position`` is also where a federated run stands, in rounds
(``fedecg.federated.checkpoint``). All randomness is derived
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
    """Where a model's training stands: its stage, the epochs (centralized) or rounds
    (federated) of that stage finished, and ``done`` once every stage is."""

    stage_index: int = 0
    finished: int = 0
    done: bool = False


def save_checkpoint(path: Path, position: Position, model: torch.nn.Module, *,
                    metric_lines: int, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, best: BestSoFar | None = None) -> None:
    """Write a checkpoint atomically (the previous one stays valid until the rename);
    ``metric_lines`` of ``metrics.jsonl`` belong to the run so far; ``best`` is the current
    stage's model selection (``fedecg.training.selection``)."""
    payload = {"position": asdict(position), "metric_lines": metric_lines,
               "model": model.state_dict(),
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
