"""Flower's strategies, built from config and wrapped for fedecg's needs (not rewritten).

``make_strategy`` returns Flower's own ``FedAvg`` / ``FedProx`` / ``FedAdam`` / ``FedYogi``,
example-weighted by ``num-examples``. ``StageRounds`` wraps any of them, the way Flower's DP
strategies wrap a strategy, and adds what a fedecg run needs on top:

* a failed site stops the run with the site's reason (Flower would silently drop it);
* replies are ordered by site before aggregation, so sums run in one order and resuming gives
  the same numbers;
* each site's train/evaluate metrics are handed to ``on_site_metrics``;
* rounds carry an offset, so a stage resumed at round ``k`` continues the server optimizer's
  schedule (FedAdam's bias correction uses the round number);
* the optimizer state of FedAdam/FedYogi can be saved and restored (``state`` / ``load_state``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedYogi, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fedecg.config.federated import StrategyConfig
from fedecg.errors import FederationError
from fedecg.federated import keys
from fedecg.federated.params import record_bytes

SiteMetrics = Callable[[str, int, int, str, dict[str, Any]], None]
"""``(kind, stage round, site index, site name, metrics)``, kind ``train`` or ``evaluate``."""
OPT_STATE = ("current_arrays", "m_t", "v_t")


def make_strategy(config: StrategyConfig, num_sites: int, min_sites: int) -> Strategy:
    """Flower's strategy named by ``config``, sampling ``fraction_train`` of the sites."""
    common: dict[str, Any] = dict(
        fraction_train=config.fraction_train, fraction_evaluate=1.0,
        min_train_nodes=min_sites, min_evaluate_nodes=min_sites,
        min_available_nodes=num_sites, weighted_by_key=keys.NUM_EXAMPLES,
        arrayrecord_key=keys.ARRAYS, configrecord_key=keys.CONFIG)
    if config.name == "fedprox":
        return FedProx(**common, proximal_mu=config.proximal_mu)
    if config.name in ("fedadam", "fedyogi"):
        kind = FedAdam if config.name == "fedadam" else FedYogi
        return kind(**common, eta=config.server_lr, beta_1=config.beta_1,
                    beta_2=config.beta_2, tau=config.tau)
    return FedAvg(**common)


class StageRounds(Strategy):
    """Wrap ``inner`` for one stage: round offset, strict failures, per-site metrics."""

    def __init__(self, inner: Strategy, offset: int, on_site_metrics: SiteMetrics) -> None:
        self.inner = inner
        self.offset = offset
        self.on_site_metrics = on_site_metrics
        self.bytes_down = 0

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Let the wrapped strategy configure round ``offset + server_round``."""
        self.bytes_down = record_bytes(arrays)
        return self.inner.configure_train(self.offset + server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Check and order replies, record each site's metrics, then aggregate."""
        ordered = self._checked(replies, "train", server_round)
        arrays, metrics = self.inner.aggregate_train(self.offset + server_round, ordered)
        if arrays is None:
            raise FederationError(f"round {self.offset + server_round}: no site returned "
                                  "parameters; nothing to aggregate")
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Let the wrapped strategy configure evaluation of round ``offset + server_round``."""
        return self.inner.configure_evaluate(self.offset + server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Check and order replies, record each site's metrics, then aggregate."""
        ordered = self._checked(replies, "evaluate", server_round)
        return self.inner.aggregate_evaluate(self.offset + server_round, ordered)

    def _checked(self, replies: Iterable[Message], kind: str, server_round: int) -> list[Message]:
        replies = list(replies)
        failed = [m for m in replies if m.has_error()]
        if failed:
            reasons = "; ".join(f"node {m.metadata.src_node_id}: {m.error.reason}"
                                for m in failed)
            raise FederationError(f"{kind} round {self.offset + server_round}: "
                                  f"{len(failed)} site(s) failed: {reasons}")
        ordered = sorted(replies, key=lambda m: int(m.content[keys.SITE][keys.SITE_INDEX]))
        total = 0.0
        for message in ordered:
            site = message.content[keys.SITE]
            metrics = dict(message.content[keys.METRICS])
            total += float(metrics[keys.NUM_EXAMPLES])
            if kind == "train":
                metrics[keys.BYTES_SENT] = record_bytes(message.content[keys.ARRAYS])
                metrics[keys.BYTES_RECEIVED] = self.bytes_down
            self.on_site_metrics(kind, self.offset + server_round, int(site[keys.SITE_INDEX]),
                                 str(site[keys.SITE_NAME]), metrics)
        if ordered and total <= 0:
            raise FederationError(f"{kind} round {self.offset + server_round}: every site "
                                  "reported 0 examples; the sites hold no labelled rows for "
                                  "this stage")
        return ordered

    def state(self) -> dict[str, Any]:
        """The server optimizer's state (FedAdam/FedYogi moments), for a checkpoint."""
        if not isinstance(self.inner, FedOpt):
            return {}
        return {name: getattr(self.inner, name) for name in OPT_STATE}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state`` returned."""
        for name, value in state.items():
            if name not in OPT_STATE:
                raise FederationError(f"checkpoint strategy state {name!r}: expected one of "
                                      f"{list(OPT_STATE)}")
            setattr(self.inner, name, None if value is None else
                    {k: np.asarray(v) for k, v in value.items()})
