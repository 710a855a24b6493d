"""Model selection within a stage: keep the best weights on validation, stop when it stalls.

Centralized training calls ``BestSoFar.observe`` after each epoch, the federated server after
each round (with the aggregated model's validation scores at the sites), both with
``stage_score`` (the stage's ``monitor``: its loss, or its head's macro AUROC); both follow
``train.early_stopping`` (``fedecg.config.train.EarlyStoppingConfig``). The tracker travels in
checkpoints (``meta`` + ``state``), so a resumed stage keeps its best so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fedecg.config.train import EarlyStoppingConfig, TrainConfig

Weights = dict[str, torch.Tensor]


@dataclass
class BestSoFar:
    """A stage's best validation score so far (lower is better: a loss, or a negated AUROC),
    when it came (epoch or round, 1-based; 0 before any) and, with ``keep_best``, a copy of the
    weights it came with."""

    step: int = 0
    loss: float = math.inf
    state: Weights = field(default_factory=dict)

    def observe(self, step: int, loss: float | None, weights: Callable[[], Mapping[str, Any]],
                config: EarlyStoppingConfig) -> bool:
        """Record the score ``loss`` after ``step``; True when it is the best so far (weights
        copied). A missing or non-finite score never counts as an improvement.
        """
        if loss is None or not math.isfinite(loss) or loss >= self.loss - config.min_delta:
            return False
        self.step, self.loss = step, float(loss)
        if config.keep_best:
            self.state = {key: torch.as_tensor(value).detach().clone()
                          for key, value in weights().items()}
        return True

    def stalled(self, step: int, patience: int | None) -> bool:
        """True when ``patience`` steps have passed since the best (never without patience or
        before a first finite loss)."""
        return patience is not None and self.step > 0 and step - self.step >= patience

    def best_weights(self, last_step: int) -> Weights | None:
        """The weights to end the stage with when they are not the last step's (else None)."""
        if not self.state or self.step in (0, last_step):
            return None
        return self.state

    def meta(self) -> dict[str, Any]:
        """JSON-able ``step`` and ``loss`` (the weights go in a checkpoint's tensors)."""
        return {"step": self.step, "loss": None if math.isinf(self.loss) else self.loss}

    @classmethod
    def restore(cls, meta: Mapping[str, Any] | None, state: Weights | None) -> BestSoFar:
        """The tracker that ``meta()`` and ``state`` describe (a fresh one for None)."""
        if not meta:
            return cls()
        loss = meta.get("loss")
        return cls(int(meta["step"]), math.inf if loss is None else float(loss), state or {})


def stage_score(stage: str, config: TrainConfig, loss: float | None,
                lab_auroc: float | None, diagnosis_auroc: float | None) -> float | None:
    """What ``BestSoFar`` minimizes for ``stage``: its validation loss, or with the stage's
    ``monitor: auroc`` its head's negated macro AUROC (lab for the lab stage, diagnosis for the
    diagnosis stage). None when that score is missing (no validation rows or positives)."""
    if stage == "pretrain" or getattr(config, stage).monitor == "loss":
        return loss
    auroc = lab_auroc if stage == "lab" else diagnosis_auroc
    return None if auroc is None else -auroc


def patience_in_rounds(config: EarlyStoppingConfig, local_epochs: int) -> int | None:
    """``patience`` (epochs) as federated rounds of ``local_epochs`` epochs (at least one)."""
    if config.patience is None:
        return None
    return max(1, math.ceil(config.patience / local_epochs))
