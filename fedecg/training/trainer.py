"""The training loop: ``train_window`` runs a window of a stage's epochs, centralized or at a
federated site (one round), ``train_epoch`` one pass over a loader.

Typical use (centralized or at a federated site)::

    params = activate(model, stage)             # requires_grad follows stage.trainable
    optimizer = make_optimizer(params, lr, weight_decay)
    scheduler = warmup_cosine(optimizer, total_steps)
    # under sample-level DP the privacy hook (fedecg.privacy.sample_dp) replaces model, stage,
    # optimizer and loader by Opacus's; stages reach submodules by attribute, which Opacus's
    # GradSampleModule forwards.
    history = train_window(model, stage, lambda epoch: epoch_loader(train, 32, epoch, True),
                           optimizer, range(first, last), scheduler=scheduler, seed=seed,
                           extra_loss=proximal_term, max_steps=budget)

``extra_loss(model) -> tensor`` is added to every step's loss (a FedProx proximal term).
A non-finite loss raises ``TrainingError`` before the optimizer steps, so the weights stay the
last good ones.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from fedecg.config.train import Precision
from fedecg.errors import ConfigError, TrainingError
from fedecg.models.build import derive_seed
from fedecg.training.stages import Batch, Stage

ExtraLoss = Callable[[nn.Module], torch.Tensor]
LoaderFor = Callable[[int], Iterable[Batch]]
"""``epoch -> the epoch's batches``."""
OnStepOf = Callable[[int], Callable[[int], None] | None]
"""``epoch -> on_step(steps done)`` for ``train_epoch`` (progress), or None."""
OnEpoch = Callable[[int, dict[str, float], float], bool]
"""``(epoch, its logs, seconds) -> stop`` after each epoch (centralized: metrics, checkpoint
and early stopping); True ends the window there."""


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


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """The forward pass's mixed-precision context (``fp32``: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision 'fp16' needs a CUDA device (training on "
                          f"{device.type}); use bf16 there, or fp32")
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def train_epoch(model: nn.Module, stage: Stage, loader: Iterable[Batch],
                optimizer: torch.optim.Optimizer, *, scheduler: LambdaLR | None = None,
                extra_loss: ExtraLoss | None = None, max_grad_norm: float | None = None,
                max_steps: int | None = None, on_step: Callable[[int], None] | None = None,
                precision: Precision = "fp32") -> dict[str, float]:
    """One pass of ``stage`` over ``loader``; returns mean logs plus timing and counts.

    Batches are moved to the device of ``model``'s parameters; forward passes run at
    ``precision`` (fp16 with a loss scaler). Logs: the stage's logs averaged over steps,
    ``steps``, ``examples``, ``data_seconds`` (waiting for batches) and ``step_seconds``
    (forward, backward, update).
    """
    model.train()
    device = model_device(model)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    totals: dict[str, float] = {}
    steps = examples = 0
    data_seconds = step_seconds = 0.0
    tick = time.perf_counter()
    for batch in loader:
        start = time.perf_counter()
        data_seconds += start - tick
        batch = to_device(batch, device)
        with autocast(device, precision):
            loss, logs = stage.loss(model, batch)
        loss = loss.float()
        if extra_loss is not None:
            loss = loss + extra_loss(model)
        if not torch.isfinite(loss):
            value = float(loss.detach())
            raise TrainingError(
                f"stage {stage.name!r}: the loss became {value} at step {steps + 1}; "
                "training diverged. Lower this stage's lr or set max_grad_norm, then resume; "
                "the last good checkpoint is kept")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if max_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None],
                                     max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
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


def train_window(model: nn.Module, stage: Stage, loader_for: LoaderFor,
                 optimizer: torch.optim.Optimizer, epochs: Iterable[int], *,
                 scheduler: LambdaLR | None = None, extra_loss: ExtraLoss | None = None,
                 max_grad_norm: float | None = None, max_steps: int | None = None,
                 seed: int | None = None, on_step: OnStepOf | None = None,
                 on_epoch: OnEpoch | None = None,
                 precision: Precision = "fp32") -> list[dict[str, float]]:
    """Train ``stage`` over a window of its epochs: the one stage loop of fedecg.

    Centralized training runs a whole stage (``fedecg.training.runner``), a federated site
    one round's epochs of it (``fedecg.federated.site``), with ``scheduler`` already at the
    window's place in the stage's schedule. Per epoch: torch seeded by ``(seed, epoch)`` (when
    given), ``loader_for(epoch)`` (a privacy engine's Poisson loader under DP), one
    ``train_epoch`` capped so that the window takes at most ``max_steps`` steps, then
    ``on_epoch(epoch, logs, seconds)``, which ends the window by returning True (early
    stopping). Forward passes run at ``precision``. Returns each epoch's logs.
    """
    history: list[dict[str, float]] = []
    done = 0
    for epoch in epochs:
        if max_steps is not None and done >= max_steps:
            break
        if seed is not None:
            torch.manual_seed(derive_seed(seed, epoch))
        loader = loader_for(epoch)
        start = time.perf_counter()
        logs = train_epoch(model, stage, loader, optimizer, scheduler=scheduler,
                           extra_loss=extra_loss, max_grad_norm=max_grad_norm,
                           max_steps=None if max_steps is None else max_steps - done,
                           on_step=on_step(epoch) if on_step is not None else None,
                           precision=precision)
        done += int(logs["steps"])
        history.append(logs)
        if on_epoch is not None and on_epoch(epoch, logs, time.perf_counter() - start):
            break
    return history


def advance_schedule(scheduler: LambdaLR, steps: int) -> None:
    """Move a fresh LR schedule ``steps`` steps on (where a stage's earlier rounds left it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        for _ in range(steps):
            scheduler.step()
