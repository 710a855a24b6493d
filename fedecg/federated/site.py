"""What one site does in a round, with the centralized training code (no Flower here).

``local_train`` runs one round's window of a stage's epochs through the stage loop that
centralized training runs (``fedecg.training.trainer.train_window``): the same seeded
datasets, loaders, optimizer and warm-up/cosine schedule (spread over all rounds of the stage),
so one site with one round of E local epochs trains exactly what centralized training does in
E epochs. The server's copy of the shared parameters anchors the
FedProx proximal term. ``local_evaluate`` scores the current model on the site's test split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from fedecg.config.federated import FederationConfig
from fedecg.config.train import MODEL_NAMES, TrainConfig
from fedecg.federated import keys
from fedecg.models.build import derive_seed
from fedecg.models.joint import JointModel
from fedecg.training.data import TrainingData, epoch_loader
from fedecg.training.evaluate import validate
from fedecg.training.runner import stage_config
from fedecg.training.stages import Stage
from fedecg.training.trainer import (
    activate,
    advance_schedule,
    make_optimizer,
    train_window,
    warmup_cosine,
)

log = logging.getLogger(__name__)

ProximalAnchor = dict[str, torch.Tensor]
NAN = float("nan")
MIN_ROWS = {"pretrain": 2}  # a contrastive batch needs two pairs


@dataclass
class RoundPlan:
    """Where a round stands: model, stage, and the round within the stage's schedule."""

    model_name: str
    stage_index: int
    stage_round: int  # 1-based
    stage_rounds: int
    proximal_mu: float = 0.0


def _seed(plan: RoundPlan, config: TrainConfig) -> int:
    return derive_seed(config.seed, MODEL_NAMES.index(plan.model_name), plan.stage_index)


def proximal_term(anchor: ProximalAnchor, mu: float) -> Callable[[nn.Module], torch.Tensor]:
    """FedProx: ``mu / 2 · Σ ‖w − w_global‖²`` over the anchored (shared, trainable) weights."""

    def term(model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros(())
        for key, reference in anchor.items():
            total = total + (params[key] - reference).pow(2).sum()
        return 0.5 * mu * total

    return term


class RoundPrivacy(Protocol):
    """A privacy layer's hook around one round (``fedecg.privacy.site_hook.PrivateSite``).

    ``round`` yields ``(dp, allowed)``: ``dp.model/stage/loader/optimizer`` replace the plain
    ones for the round, and ``allowed`` caps its steps (0 once the site's budget is spent).
    """

    def round(self, model: JointModel, stage: Stage, train: Any,
              optimizer: torch.optim.Optimizer, *, planned_steps: int, seed: int,
              extra_loss: Callable[[nn.Module], torch.Tensor] | None
              ) -> AbstractContextManager[tuple[Any, int]]: ...


def local_train(model: JointModel, stage: Stage, data: TrainingData, config: TrainConfig,
                federation: FederationConfig, plan: RoundPlan, site: str,
                privacy: RoundPrivacy | None = None) -> dict[str, float]:
    """Train ``model`` for one round of ``stage`` on the site's training rows; return metrics.

    A site without enough labelled rows for the stage trains nothing and reports 0 examples,
    so aggregation gives it no weight (logged, not an error). With ``privacy`` the round runs
    inside its hook (DP-SGD): no plain gradient clipping, the proximal term handed to the hook.
    """
    seed = _seed(plan, config)
    train = data.dataset("train", stage.targets, config.crop_samples, True, config, seed)
    if len(train) < MIN_ROWS.get(stage.name, 1):
        log.warning("%s: %d training row(s) with known %s; sitting out stage %s round %d",
                    site, len(train), "/".join(stage.targets), stage.name, plan.stage_round)
        return {keys.NUM_EXAMPLES: 0.0, keys.TRAIN_LOSS: NAN, keys.TRAIN_STEPS: 0.0,
                keys.TRAIN_EXAMPLES_SEEN: 0.0, keys.TRAIN_SECONDS: 0.0}
    if len(train) < config.batch_size:
        log.info("%s: %d training rows, fewer than batch_size %d; one batch of %d per epoch",
                 site, len(train), config.batch_size, len(train))
    settings = stage_config(config, stage)
    params = activate(model, stage)
    optimizer = make_optimizer(params, settings.lr, settings.weight_decay)
    per_epoch = len(epoch_loader(train, config.batch_size, 0, True, seed))
    per_round = per_epoch * federation.local_epochs
    if federation.local_steps is not None:
        per_round = min(per_round, federation.local_steps)
    scheduler = warmup_cosine(optimizer, per_round * plan.stage_rounds, settings.warmup_fraction)
    advance_schedule(scheduler, per_round * (plan.stage_round - 1))
    extra = None
    if plan.proximal_mu > 0:
        trainable = {id(p) for p in params}
        anchor = {k: p.detach().clone() for k, p in model.named_parameters()
                  if id(p) in trainable and k in set(stage.shared_keys(model))}
        extra = proximal_term(anchor, plan.proximal_mu)
    if privacy is None:
        return _epochs(model, stage, train, optimizer, scheduler, extra, config, federation,
                       plan, seed, per_round)
    with privacy.round(model, stage, train, optimizer, planned_steps=per_round,
                       seed=derive_seed(seed, plan.stage_round), extra_loss=extra) as (dp, allowed):
        return _epochs(dp.model, dp.stage, train, dp.optimizer, scheduler, None, config,
                       federation, plan, seed, allowed, dp_loader=dp.loader)


def _epochs(model: JointModel, stage: Stage, train: Any, optimizer: torch.optim.Optimizer,
            scheduler: Any, extra: Any, config: TrainConfig, federation: FederationConfig,
            plan: RoundPlan, seed: int, budget: int, dp_loader: Any = None) -> dict[str, float]:
    """This round's epochs of the stage (``train_window``), at most ``budget`` steps."""
    start = time.perf_counter()
    first = (plan.stage_round - 1) * federation.local_epochs

    def loader_for(epoch: int) -> Any:
        if dp_loader is None:
            return epoch_loader(train, config.batch_size, epoch, True, seed, config.num_workers)
        train.set_epoch(epoch)
        return dp_loader

    history = train_window(model, stage, loader_for, optimizer,
                           range(first, first + federation.local_epochs), scheduler=scheduler,
                           extra_loss=extra, max_steps=budget, seed=seed,
                           max_grad_norm=config.max_grad_norm if dp_loader is None else None,
                           precision=config.precision)
    steps = sum(int(logs["steps"]) for logs in history)
    examples = sum(int(logs["examples"]) for logs in history)
    loss = sum(float(logs.get("loss", 0.0)) * logs["steps"] for logs in history)
    return {keys.NUM_EXAMPLES: float(len(train)), keys.TRAIN_LOSS: loss / max(steps, 1),
            keys.TRAIN_STEPS: float(steps), keys.TRAIN_EXAMPLES_SEEN: float(examples),
            keys.TRAIN_SECONDS: time.perf_counter() - start}


def local_evaluate(model: JointModel, stage: Stage, data: TrainingData, config: TrainConfig,
                   split: str = "test") -> dict[str, float]:
    """The stage's loss and macro AUROCs of ``model`` on the site's ``split`` rows."""
    rows = data.dataset(split, stage.targets, config.crop_samples, False,  # type: ignore[arg-type]
                        config)
    if len(rows) < MIN_ROWS.get(stage.name, 1):
        return {keys.NUM_EXAMPLES: 0.0, **dict.fromkeys(keys.EVALUATION_KEYS, NAN)}
    result = validate(model, stage, rows, data.names, config.eval.batch_size)
    return {keys.NUM_EXAMPLES: float(len(rows)), keys.LOSS: _num(result.get("val_loss")),
            keys.DIAGNOSIS_AUROC: _num(result.get("val_diagnosis_macro_auroc")),
            keys.LAB_AUROC: _num(result.get("val_lab_macro_auroc"))}


def _num(value: float | None) -> float:
    return NAN if value is None else float(value)
