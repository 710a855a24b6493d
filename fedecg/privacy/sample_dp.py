"""Sample-level DP-SGD at one site with Opacus, accounted across every round and stage.

The unit protected is one ECG record of the site's training split (a patient with k records is
protected only as a group, at about k·ε). ``SitePrivacy`` is what a site keeps across rounds
(in ``context.state`` and checkpoints): its plan, the calibrated noise multiplier and the
cumulative ``Ledger``. ``SitePrivacy.private_round`` plugs into the training loop's privacy
hook (``fedecg.training.trainer``)::

    with site.private_round(model, stage, loader, optimizer, seed=...) as dp:
        history = train_window(dp.model, dp.stage, lambda epoch: dp.loader, dp.optimizer,
                               range(epochs), max_steps=site.steps_allowed(stage, planned))
    # metrics |= site.metrics(); state[STATE_PRIVACY] = ConfigRecord(site.to_record())

Inside, the stage becomes its per-example version (``fedecg.privacy.objectives``) and is
re-activated, and the loader draws Poisson batches at rate ``batch_size / n``. With
``grad_sample_mode: fast`` (the default) the stage's loss carries the sum of each example's
gradient clipped to ``max_grad_norm`` (``fedecg.privacy.per_example``, no Opacus hooks) and a
``NoisySumOptimizer`` adds Gaussian noise; with ``hooks`` or ``functorch`` Opacus's
per-example gradient hooks are attached to the model in place (no ``_module.`` wrapper) and
its ``DPOptimizer`` clips and adds the noise. Under
``pretrain_objective: grouped`` the pretraining stage instead clips each contrastive group's
gradient itself and a ``NoisySumOptimizer`` adds the noise (``fedecg.privacy.grouped``; no
Opacus hooks, the same loader and ledger). Every noised step is recorded in the ledger. A
data-independent ``extra_loss`` (FedProx's proximal term) is added to the gradient after
noising, as post-processing: passed to ``train_window`` it would be dropped silently, since
Opacus replaces the gradient by the noised per-example sum.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus.data_loader import DPDataLoader
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import DPOptimizer
from torch import nn
from torch.utils.data import DataLoader, default_collate

from fedecg.config.privacy import DPConfig
from fedecg.errors import PrivacyError
from fedecg.privacy.accounting import (
    Ledger,
    PrivacyPlan,
    affordable_steps,
    calibrate_noise,
    check_delta,
    sample_rate,
)
from fedecg.privacy.grouped import GroupedContrastiveStage, NoisySumOptimizer
from fedecg.privacy.objectives import PerExampleStage, private_stage
from fedecg.privacy.per_example import PerExampleClippedStage
from fedecg.privacy.validation import validate_model
from fedecg.training.stages import Stage
from fedecg.training.trainer import ExtraLoss, activate

STATE_PRIVACY = "privacy"  # context.state ConfigRecord holding ``SitePrivacy.to_record()``
EPSILON = "dp-epsilon"
DELTA = "dp-delta"
NOISE_MULTIPLIER = "dp-noise-multiplier"
DP_STEPS = "dp-steps"
STOPPED = "dp-stopped"
SECRET = "noise-secret"  # in the site's saved privacy state only


def secret_seed(secret: int, seed: int) -> int:
    """A 62-bit seed mixing a site's ``secret`` with a round's public ``seed`` (too many
    values to search for the noise that was added)."""
    state = np.random.SeedSequence([secret, seed]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(2))


@dataclass
class PrivateTraining:
    """What the training loop uses instead of its plain objects during one private round."""

    model: nn.Module
    stage: PerExampleStage | PerExampleClippedStage | GroupedContrastiveStage
    loader: DataLoader
    optimizer: DPOptimizer | NoisySumOptimizer


@dataclass
class SitePrivacy:
    """One site's sample-level DP state: config, plan, noise multiplier, cumulative ledger, and
    the site's secret seed.

    The noise and the Poisson draws are seeded from ``secret`` (drawn from the OS's CSPRNG at the
    site's first private round, kept in its state, never sent) mixed with the round's seed: a
    resumed run draws the same noise, but a server that knows the study's config and seeds cannot
    reproduce the noise and subtract it from an update.
    """

    config: DPConfig
    plan: PrivacyPlan
    noise_multiplier: float
    ledger: Ledger
    secret: int
    stopped: bool = False

    @classmethod
    def start(cls, config: DPConfig, plan: PrivacyPlan,
              record: Mapping[str, Any] | None = None) -> SitePrivacy:
        """Calibrate for ``plan`` at the first round, or continue a saved ``record``."""
        if config.mode != "sample" or not config.enabled:
            raise PrivacyError(f"privacy.mode {config.mode!r} with target epsilon "
                               f"{config.target_epsilon}: sample-level DP is not asked for")
        if record is not None:
            where = f"site {plan.site} privacy state"
            ledger = Ledger.from_record(record, where)
            check_delta(ledger.delta, plan.n_records, f"site {plan.site}")
            for key in ("noise-multiplier", SECRET):
                if key not in record:
                    raise PrivacyError(f"{where}: no {key!r} (written by an older fedecg); "
                                       "restart the run")
            return cls(config, plan, float(record["noise-multiplier"]), ledger,
                       int(record[SECRET]), bool(record.get("stopped", False)))
        delta = config.resolved_delta(plan.n_records)
        noise = calibrate_noise(plan, config.target_epsilon, delta, config.accountant,
                                config.sample.max_noise_multiplier)
        return cls(config, plan, noise, Ledger(delta=delta, accountant=config.accountant),
                   secrets.randbits(62))

    def to_record(self) -> dict[str, Any]:
        """The ledger plus the noise multiplier, the secret seed and the stop flag (a
        ``ConfigRecord`` the site keeps; ``metrics`` is what it sends)."""
        return {**self.ledger.to_record(), "noise-multiplier": float(self.noise_multiplier),
                SECRET: self.secret, "stopped": self.stopped}

    def stage_rate(self, stage: str) -> float:
        """The planned sampling rate of ``stage``."""
        for planned in self.plan.stages:
            if planned.stage == stage:
                return planned.sample_rate
        raise PrivacyError(f"site {self.plan.site}: stage {stage!r} is not in the privacy plan "
                           f"({[s.stage for s in self.plan.stages]})")

    def steps_allowed(self, stage: str, planned: int) -> int:
        """Steps of the next round that fit the budget; 0 marks the site stopped for good."""
        allowed = 0 if self.stopped else affordable_steps(
            self.ledger, self.noise_multiplier, self.stage_rate(stage), planned,
            self.config.target_epsilon)
        self.stopped = self.stopped or allowed < planned
        return allowed

    def metrics(self) -> dict[str, float]:
        """ε spent so far (cumulative from round 1) and the mechanism's parameters."""
        return {EPSILON: self.ledger.epsilon(), DELTA: self.ledger.delta,
                NOISE_MULTIPLIER: self.noise_multiplier, DP_STEPS: float(self.ledger.steps),
                STOPPED: float(self.stopped)}

    @contextmanager
    def private_round(self, model: nn.Module, stage: Stage, loader: DataLoader,
                      optimizer: torch.optim.Optimizer, *, seed: int,
                      extra_loss: ExtraLoss | None = None) -> Iterator[PrivateTraining]:
        """Opacus around ``model``/``optimizer``/``loader`` for one round (see module doc)."""
        validate_model(model, f"site {self.plan.site}")
        private = private_stage(stage, self.config.sample)
        activate(model, private)
        rate = self.stage_rate(private.name)
        n = len(loader.dataset)
        if abs(rate - sample_rate(n, loader.batch_size)) > 1e-12:
            raise PrivacyError(
                f"site {self.plan.site}, stage {private.name!r}: the loader has {n} examples "
                f"in batches of {loader.batch_size} (rate {sample_rate(n, loader.batch_size):.4g})"
                f" but the privacy plan was calibrated for rate {rate:.4g}; build the plan "
                "from the same rows and batch size as the training loader")
        seed = secret_seed(self.secret, seed)  # the server knows ``seed``, not the secret
        noise_generator = torch.Generator().manual_seed(seed + 1)
        hooks = None
        settings = self.config.sample
        if isinstance(private, GroupedContrastiveStage):  # no Opacus hooks: it clips groups
            private = private.for_round(rate * n, seed + 2)
            dp_optimizer: DPOptimizer | NoisySumOptimizer = NoisySumOptimizer(
                optimizer, noise_multiplier=self.noise_multiplier,
                max_grad_norm=settings.max_grad_norm,
                expected_count=private.n_groups, generator=noise_generator)
        elif settings.grad_sample_mode == "fast":  # no Opacus hooks: it clips each example
            private = PerExampleClippedStage.for_model(private, model, settings.max_grad_norm)
            dp_optimizer = NoisySumOptimizer(
                optimizer, noise_multiplier=self.noise_multiplier,
                max_grad_norm=settings.max_grad_norm,
                expected_count=max(1, round(rate * n)), generator=noise_generator)
        else:
            hooks = prepare_module(model, settings.grad_sample_mode,
                                   wrap_model=False, batch_first=True, loss_reduction="mean")
            dp_optimizer = DPOptimizer(
                optimizer, noise_multiplier=self.noise_multiplier,
                max_grad_norm=settings.max_grad_norm,
                expected_batch_size=max(1, round(rate * n)), loss_reduction="mean",
                generator=noise_generator)
        dp_optimizer.attach_step_hook(self._step_hook(model, rate, extra_loss))
        poisson = DPDataLoader(loader.dataset, sample_rate=rate, collate_fn=loader.collate_fn,
                               num_workers=loader.num_workers,
                               generator=torch.Generator().manual_seed(seed))
        # Opacus builds an empty draw from the first non-empty batch; when the very first draw
        # is empty it fails on dict batches, so it gets the structure (never the values) of one
        poisson.collate_fn.first_batch = (loader.collate_fn or default_collate)([
            loader.dataset[0]])
        try:
            with warnings.catch_warnings():  # Opacus's hooks on the input layer; harmless
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                yield PrivateTraining(model, private, poisson, dp_optimizer)
        finally:
            if hooks is not None:
                hooks.cleanup()

    def _step_hook(self, model: nn.Module, rate: float, extra_loss: ExtraLoss | None
                   ) -> Callable[[DPOptimizer | NoisySumOptimizer], None]:
        def hook(optimizer: DPOptimizer | NoisySumOptimizer) -> None:
            self.ledger.step(optimizer.noise_multiplier, rate)
            if extra_loss is not None:
                params = optimizer.params
                with torch.enable_grad():
                    grads = torch.autograd.grad(extra_loss(model), params, allow_unused=True)
                for param, grad in zip(params, grads, strict=True):
                    if grad is not None:
                        param.grad = param.grad + grad
        return hook
