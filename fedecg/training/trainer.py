"""The training loop: one function that runs a stage over a loader, reused by federated clients.

Typical use (centralized or in a federated client)::

    params = activate(model, stage)             # requires_grad follows stage.trainable
    optimizer = make_optimizer(params, lr, weight_decay)
    # privacy hook: a DP wrapper may replace (model, optimizer, loader) here, e.g. Opacus
    # ``PrivacyEngine.make_private(module=model, optimizer=optimizer, data_loader=loader, ...)``;
    # stages reach submodules by attribute, which Opacus's GradSampleModule forwards.
    logs = train_epoch(model, stage, loader, optimizer, extra_loss=proximal_term)

``extra_loss(model) -> tensor`` is added to every step's loss (a FedProx proximal term).
A non-finite loss raises ``TrainingError`` before the optimizer steps, so the weights stay the
last good ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from fedecg.errors import TrainingError
from fedecg.training.stages import Batch, Stage

ExtraLoss = Callable[[nn.Module], torch.Tensor]


def activate(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Make exactly ``stage.trainable(model)`` require gradients; return those parameters."""
    params = stage.trainable(model)
    chosen = {id(p) for p in params}
    for param in model.parameters():
        param.requires_grad_(id(param) in chosen)
    return params


def make_optimizer(params: list[nn.Parameter], lr: float,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW over ``params`` (no weight decay on biases, norm weights and scalars)."""
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup_fraction: float = 0.05) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of ``total_steps``, then cosine decay to 0."""
    warmup = max(1, int(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with every tensor on ``device`` (a no-op on the same device)."""
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def train_epoch(model: nn.Module, stage: Stage, loader: Iterable[Batch],
                optimizer: torch.optim.Optimizer, *, scheduler: LambdaLR | None = None,
                extra_loss: ExtraLoss | None = None, max_grad_norm: float | None = None,
                max_steps: int | None = None,
                on_step: Callable[[int], None] | None = None) -> dict[str, float]:
    """One pass of ``stage`` over ``loader``; returns mean logs plus timing and counts.

    Batches are moved to the device of ``model``'s parameters.
    Logs: the stage's logs averaged over steps, ``steps``, ``examples``, ``data_seconds``
    (waiting for batches) and ``step_seconds`` (forward, backward, update).
    """
    model.train()
    device = model_device(model)
    totals: dict[str, float] = {}
    steps = examples = 0
    data_seconds = step_seconds = 0.0
    tick = time.perf_counter()
    for batch in loader:
        start = time.perf_counter()
        data_seconds += start - tick
        batch = to_device(batch, device)
        loss, logs = stage.loss(model, batch)
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        if not torch.isfinite(loss):
            value = float(loss.detach())
            raise TrainingError(
                f"stage {stage.name!r}: the loss became {value} at step {steps + 1}; "
                "training diverged. Lower this stage's lr or set max_grad_norm, then resume; "
                "the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                     max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for key, value in logs.items():
            totals[key] = totals.get(key, 0.0) + value
        steps += 1
        examples += len(batch["ecg"])
        tick = time.perf_counter()
        step_seconds += tick - start
        if on_step is not None:
            on_step(steps)
        if max_steps is not None and steps >= max_steps:
            break
    result = {key: value / max(steps, 1) for key, value in totals.items()}
    result.update(steps=steps, examples=examples, data_seconds=data_seconds,
                  step_seconds=step_seconds)
    return result


def train_epochs(model: nn.Module, stage: Stage, loader: Iterable[Batch],
                 optimizer: torch.optim.Optimizer, epochs: int = 1, *,
                 extra_loss: ExtraLoss | None = None, max_steps: int | None = None,
                 **kwargs) -> list[dict[str, float]]:
    """``epochs`` passes of ``train_epoch`` (``set_epoch`` on the dataset when it has one).

    ``max_steps`` caps the total steps over all epochs (a federated round's local budget).
    """
    history = []
    done = 0
    dataset = getattr(loader, "dataset", None)
    for epoch in range(epochs):
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        left = None if max_steps is None else max_steps - done
        if left is not None and left <= 0:
            break
        logs = train_epoch(model, stage, loader, optimizer, extra_loss=extra_loss,
                           max_steps=left, **kwargs)
        done += int(logs["steps"])
        history.append(logs)
    return history
