"""Client-level DP (DP-FedAvg) with Flower's fixed-clipping wrappers and fedecg's own accounting.

The unit protected is a whole site: each round, every sampled site's model update is clipped
to L2 norm ``clipping_norm`` C (on the server, or on the site by ``client_clipping_mod``) and the
server adds Gaussian noise of std σ·C to their sum (Flower adds σ·C/m to the mean of m). One
round is one Gaussian mechanism of noise multiplier σ; fedecg composes the rounds of every stage
with Opacus's RDP (or PRV) accountant in a ``Ledger`` kept by the server.

Accounting model (the one Flower's own accountant uses for these wrappers): add/remove-one-site
neighbours, **no sampling amplification** (sample rate 1; Flower samples a fixed-size subset
without replacement, for which the Poisson bound of DP-SGD does not hold) and **uniform
weights**: ``UniformWeights`` makes the inner FedAvg average sites equally, since example
weighting would let a large site exceed the sensitivity C/m. Only a plain average is wrapped
(FedAvg, FedProx: Flower's own accounted mode has the same rule): FedAvgM, FedAdam and FedYogi
rescale the aggregate and keep server state (momentum, moments, their own copy of the model)
built from the *un-noised* average, which later releases would carry beyond what σ·C/m covers.
The metrics the sites send (losses, AUROC, example counts) are not privatized.

Flower's optional ``RdpAccountant`` (the wrappers' ``accountant=``, ``flwr[dp]``) gives the same
ε for this model; the ``Ledger`` is kept because it also calibrates σ for the whole plan before
round 1, offers PRV, and is the accountant sample-level DP uses (README, "How ε is accounted").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)

from fedecg.config.privacy import DPConfig
from fedecg.errors import PrivacyError
from fedecg.federated.strategies import Delegate
from fedecg.io import atomic_write_json
from fedecg.privacy.accounting import (
    Ledger,
    PrivacyPlan,
    StagePlan,
    calibrate_noise,
    check_delta,
    epsilon_of,
)
from fedecg.privacy.sample_dp import DELTA, EPSILON, NOISE_MULTIPLIER

CLIENT_RATE = 1.0  # no amplification by site sampling (see the module docstring)
LEDGER_FILE = "client-dp-ledger.json"  # beside a run's checkpoint (the run plan's ``out``)
RELEASES = "dp-releases"


def client_plan(rounds: Mapping[str, int], num_sites: int) -> PrivacyPlan:
    """One Gaussian release per round of every stage, over ``num_sites`` protected sites."""
    stages = tuple(StagePlan(stage, num_sites, num_sites, count, 1)
                   for stage, count in rounds.items() if count > 0)
    return PrivacyPlan(stages, num_sites, site="server (client-level DP)")


def sampled_sites(strategy: FedAvg, num_sites: int) -> int:
    """Sites Flower's FedAvg samples per round: ``max(int(N·fraction), min_train_nodes)``."""
    return max(int(num_sites * strategy.fraction_train), strategy.min_train_nodes)


class UniformWeights(Delegate):
    """Make a FedAvg-family strategy average the sites' updates with equal weights."""

    inner: FedAvg

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Set every reply's weighting metric to 1, then aggregate."""
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                for record in reply.content.metric_records.values():
                    record[self.inner.weighted_by_key] = 1
        return self.inner.aggregate_train(server_round, replies)


class Accounted(Delegate):
    """Record each noised release in the ledger and add ε so far to the round's metrics.

    The noise is calibrated for the mean of ``expected`` updates; with fewer (a site dropped
    out or was rejected) the mean's sensitivity grows and the release would spend more than
    the ledger records, so such a round is refused instead of aggregated.
    """

    def __init__(self, inner: Strategy, owner: ClientLevelDP, expected: int) -> None:
        super().__init__(inner)
        self.owner = owner
        self.expected = expected

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate (clip + noise inside), then account the release."""
        replies = list(replies)
        usable = sum(not reply.has_error() for reply in replies)
        if usable < self.expected:
            raise PrivacyError(
                f"round {server_round}: {usable} of {self.expected} sites sent a usable update; "
                "client-level DP calibrates its noise for the mean of all sampled sites, so "
                "aggregating fewer would spend more epsilon than accounted. The run stops "
                "here; resume it when every site is back")
        arrays, metrics = self.inner.aggregate_train(server_round, replies)
        if arrays is not None:
            self.owner.record_release()
        metrics = metrics if metrics is not None else MetricRecord()
        for key, value in self.owner.metrics().items():
            metrics[key] = value
        return arrays, metrics


@dataclass
class ClientLevelDP:
    """The server's client-level DP state: σ, clipping, and the cumulative ledger.

    With ``save_to`` the ledger is rewritten (atomically) after every release; ``open``
    continues it, so a resumed run keeps what earlier rounds spent.
    """

    config: DPConfig
    plan: PrivacyPlan
    noise_multiplier: float
    ledger: Ledger
    save_to: Path | None = None

    @classmethod
    def open(cls, config: DPConfig, rounds: Mapping[str, int], num_sites: int,
             path: Path) -> ClientLevelDP:
        """``start`` from the ledger saved at ``path`` (if any); save there from now on."""
        path = Path(path)
        record = json.loads(path.read_text()) if path.is_file() else None
        dp = cls.start(config, rounds, num_sites, record)
        dp.save_to = path
        return dp

    def record_release(self) -> None:
        """Account one noised aggregate (and save the ledger when ``save_to`` is set)."""
        self.ledger.step(self.noise_multiplier, CLIENT_RATE)
        if self.save_to is not None:
            atomic_write_json(self.save_to, self.to_record())

    @classmethod
    def start(cls, config: DPConfig, rounds: Mapping[str, int], num_sites: int,
              record: Mapping[str, Any] | None = None) -> ClientLevelDP:
        """Fix σ (given, or calibrated for every planned round) and open or restore the ledger."""
        if config.mode != "client" or not config.enabled:
            raise PrivacyError(f"privacy.mode {config.mode!r} with target epsilon "
                               f"{config.target_epsilon}: client-level DP is not asked for")
        if num_sites < 2:
            raise PrivacyError(f"client-level DP with {num_sites} site(s): expected at least 2 "
                               "sites; use privacy.mode sample to protect records within a site")
        plan = client_plan(rounds, num_sites)
        delta = config.resolved_delta(num_sites)
        check_delta(delta, num_sites, "client-level DP")
        noise = config.client.noise_multiplier
        if noise is None:
            noise = calibrate_noise(plan, config.target_epsilon, delta, config.accountant)
        planned = epsilon_of(plan.history(noise), delta, config.accountant)
        if planned > config.target_epsilon:
            raise PrivacyError(
                f"privacy.client.noise_multiplier {noise:g}: the planned {plan.describe()} "
                f"spend epsilon {planned:.4g} > target {config.target_epsilon:g} at delta "
                f"{delta:g}; raise the noise multiplier, train fewer rounds, or leave "
                "privacy.client.noise_multiplier unset to calibrate it")
        ledger = (Ledger.from_record(record, "client-level DP state") if record is not None
                  else Ledger(delta=delta, accountant=config.accountant))
        return cls(config, plan, noise, ledger)

    def wrap(self, strategy: Strategy, num_sites: int) -> Strategy:
        """Flower's fixed-clipping wrapper (server or client side) around ``strategy``."""
        if (not isinstance(strategy, FedAvg)
                or type(strategy).aggregate_train is not FedAvg.aggregate_train):
            raise PrivacyError(
                f"strategy {type(strategy).__name__}: client-level DP needs FedAvg or FedProx "
                "(a plain average, the one the noise std sigma*C/m is calibrated for); "
                "FedAvgM/FedAdam/FedYogi keep server state built from the un-noised average. "
                "Set federation.strategy.name to fedavg or fedprox")
        wrapper = (DifferentialPrivacyServerSideFixedClipping
                   if self.config.client.clipping == "server"
                   else DifferentialPrivacyClientSideFixedClipping)
        sampled = sampled_sites(strategy, num_sites)
        private = wrapper(UniformWeights(strategy), self.noise_multiplier,
                          self.config.client.clipping_norm, sampled)
        return Accounted(private, self, sampled)

    def metrics(self) -> dict[str, float]:
        """ε spent so far, δ, σ and the number of noised releases."""
        return {EPSILON: self.ledger.epsilon(), DELTA: self.ledger.delta,
                NOISE_MULTIPLIER: self.noise_multiplier, RELEASES: float(self.ledger.steps)}

    def to_record(self) -> dict[str, Any]:
        """The ledger and σ as a flat dict (saved beside the server's checkpoint)."""
        return {**self.ledger.to_record(), "noise-multiplier": self.noise_multiplier}
