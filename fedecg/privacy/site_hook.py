"""The privacy side of a federated site's round: what the ClientApp's privacy hook calls.

``PrivateSite.open`` builds the site's ``PrivacyPlan`` from the run plan and its own data
(every stage's training rows with known targets, the batch size, each stage's rounds, local
epochs and steps, exactly as ``fedecg.federated.site.local_train`` will train), calibrates the
noise multiplier at the first round, or restores its ``SitePrivacy`` from ``context.state``
or, in a resumed simulation whose ``context.state`` is new, from the site's last saved ledger
``sites/site<i>/privacy-round-<r>.json`` beside its saved model (so ε never resets). Per
train message the ClientApp then calls::

    site_dp = PrivateSite.open(dp_config, plan, site.data, site.name, context.state,
                               saved=(site.state_dir, site.index, global_round))
    site_dp.prepare_model(model)               # public clinical standardization, layer check
    with site_dp.round(model, stage, train, optimizer, planned_steps=per_round,
                       seed=seed, extra_loss=extra) as (dp, allowed):
        ...train_window(dp.model, dp.stage, lambda epoch: dp.loader, dp.optimizer, epochs,
                        scheduler=scheduler, max_steps=allowed)...
    metrics.update(site_dp.metrics())
    site_dp.save(context.state, saved=(site.state_dir, site.index, global_round))

A site whose budget is spent gets ``allowed == 0``: it trains nothing, reports 0 examples (so
aggregation gives it no weight) and keeps evaluating. ``metrics`` also blanks the training
loss and the count of examples drawn, which are computed from the private batches without
noise and so are not covered by ε.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, RecordDict
from torch.utils.data import DataLoader, Dataset

from fedecg.config.privacy import DPConfig
from fedecg.federated import keys
from fedecg.federated.checkpoint import site_state_path
from fedecg.federated.orchestration import RunPlan, stages_for
from fedecg.federated.site import MIN_ROWS
from fedecg.io import atomic_write_json
from fedecg.models.joint import JointModel
from fedecg.privacy.accounting import PrivacyPlan, plan_stage
from fedecg.privacy.normalization import apply_public_normalization
from fedecg.privacy.sample_dp import STATE_PRIVACY, PrivateTraining, SitePrivacy
from fedecg.privacy.validation import validate_model
from fedecg.training.data import TrainingData, rows_with_targets
from fedecg.training.stages import Stage
from fedecg.training.trainer import ExtraLoss

SavedAt = tuple[Path | None, int, int]
"""(the run's site state folder or None, site index, global round being trained)."""


def ledger_path(out: Path, site_index: int, global_round: int) -> Path:
    """Where site ``site_index`` keeps its privacy state after ``global_round``."""
    return site_state_path(out, site_index, global_round).with_name(
        f"privacy-round-{global_round}.json")


def latest_saved(saved: SavedAt) -> dict[str, Any] | None:
    """The site's privacy state saved after the latest round before the one being trained."""
    out, index, global_round = saved
    if out is None:
        return None
    rounds = [r for r in range(global_round - 1, 0, -1) if ledger_path(out, index, r).is_file()]
    return json.loads(ledger_path(out, index, rounds[0]).read_text()) if rounds else None


def site_plan(plan: RunPlan, data: TrainingData, site: str) -> PrivacyPlan:
    """The site's whole planned DP training under ``plan`` (stages a site sits out: 0 steps)."""
    train, federation = plan.config.site_train(), plan.config.federation
    stages = []
    for stage in stages_for(plan):
        n = sum(len(rows_with_targets(store, "train", stage.targets)) for store in data.stores)
        if n < MIN_ROWS.get(stage.name, 1):
            n = 0
        stages.append(plan_stage(stage.name, n, train.batch_size, federation.rounds.of(stage.name),
                                 federation.local_epochs, federation.local_steps))
    records = sum(len(store.indices("train")) for store in data.stores)
    return PrivacyPlan(tuple(stages), records, site)


@dataclass
class PrivateSite:
    """A site's sample-level DP across rounds, bound to the run's data description."""

    privacy: SitePrivacy
    features: list[str]
    panel: list
    allowed: int | None = None

    @classmethod
    def open(cls, config: DPConfig, plan: RunPlan, data: TrainingData, site: str,
             state: RecordDict, saved: SavedAt = (None, 0, 0)) -> PrivateSite:
        """Start (calibrate) or continue this site's DP: from ``state[STATE_PRIVACY]``, else
        from its ledger saved on disk before this round, else fresh at the first round."""
        record = state.get(STATE_PRIVACY)
        record = dict(record) if record is not None else latest_saved(saved)
        privacy = SitePrivacy.start(config, site_plan(plan, data, site), record)
        return cls(privacy, list(data.manifest.clinical_features), list(data.manifest.lab_panel))

    def prepare_model(self, model: JointModel) -> None:
        """Public clinical standardization (never fit on the site's rows) and the layer check."""
        validate_model(model, f"site {self.privacy.plan.site}")
        apply_public_normalization(model, self.features, self.panel)

    @contextmanager
    def round(self, model: JointModel, stage: Stage, train: Dataset,
              optimizer: torch.optim.Optimizer, *, planned_steps: int, seed: int,
              extra_loss: ExtraLoss | None = None) -> Iterator[tuple[PrivateTraining, int]]:
        """Opacus around one round's training, and how many of its steps the budget allows
        (at most the plan's steps per round: Opacus draws ``int(1/q)`` batches an epoch)."""
        planned = next(s for s in self.privacy.plan.stages if s.stage == stage.name)
        loader = DataLoader(train, batch_size=planned.batch_size)
        steps = min(planned_steps, planned.steps_per_round)
        allowed = self.allowed = self.privacy.steps_allowed(stage.name, steps)
        with self.privacy.private_round(model, stage, loader, optimizer, seed=seed,
                                        extra_loss=extra_loss) as dp:
            yield dp, allowed

    def metrics(self) -> dict[str, float]:
        """ε spent so far and the mechanism's parameters, to update the round's reply with."""
        blank = {keys.TRAIN_LOSS: math.nan, keys.TRAIN_EXAMPLES_SEEN: math.nan}
        if self.allowed == 0:
            blank[keys.NUM_EXAMPLES] = 0.0
        return {**self.privacy.metrics(), **blank}

    def save(self, state: RecordDict, saved: SavedAt = (None, 0, 0)) -> None:
        """Keep the ledger in ``context.state`` and, with a state folder, on disk."""
        record = self.privacy.to_record()
        state[STATE_PRIVACY] = ConfigRecord(record)
        out, index, global_round = saved
        if out is not None:
            atomic_write_json(ledger_path(out, index, global_round), record)
