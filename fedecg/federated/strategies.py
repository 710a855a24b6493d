"""Flower's strategies, built from config and wrapped for fedecg's needs (not rewritten).

``make_strategy`` returns Flower's own ``FedAvg`` / ``FedProx`` / ``FedAdam`` / ``FedYogi``,
example-weighted by ``num-examples``. ``StageRounds`` wraps any of them, the way Flower's DP
strategies wrap a strategy, and adds what a fedecg run needs on top:

* every reply is screened before aggregation (``fedecg.federated.screening``): a site that
  failed or did not reply within the round's timeout is a *dropout*; a reply whose update has
  other keys or shapes than the global model, NaN/Inf values, a norm far above the round's
  median, an example count above what its site declared, or impossible scores is *rejected*;
  each is logged with its node id and handed to ``on_site_metrics`` as an event, and the round
  goes on with the rest. With fewer than ``min_sites`` usable updates the run stops with every
  site's reason;
* a round waits (up to its timeout) for ``min_sites`` connected sites instead of Flower's
  endless wait, and fails with the count when they do not come;
* replies are ordered by site before aggregation, so sums run in one order and resuming gives
  the same numbers;
* each site's train/evaluate metrics are handed to ``on_site_metrics``;
* rounds carry an offset, so a stage resumed at round ``k`` continues the server optimizer's
  schedule (FedAdam's bias correction uses the round number);
* the optimizer state of FedAdam/FedYogi can be saved and restored (``state`` / ``load_state``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedProx, FedYogi, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fedecg.config.federated import StrategyConfig
from fedecg.errors import FederationError
from fedecg.federated import keys
from fedecg.federated.params import record_bytes
from fedecg.federated.screening import (
    declared_ecgs,
    norm_outliers,
    redact_paths,
    screen_examples,
    screen_scores,
    screen_update,
    update_distance,
)
from fedecg.federated.waiting import wait_for_sites

log = logging.getLogger(__name__)

SiteMetrics = Callable[[str, int, int | None, str, dict[str, Any]], None]
"""``(kind, round, site index, site name, metrics)``: kind ``train`` or ``evaluate`` (a site's
metrics), or ``dropout`` / ``rejected`` (an event: ``node_id``, ``phase``, ``reason``)."""
OPT_STATE = ("current_arrays", "m_t", "v_t")
DROPOUT, REJECTED = "dropout", "rejected"
NODE_ID = "node_id"  # every metrics line names the Flower node that sent it
_FLOWER_REASON = re.compile(r"^<class '([^']+)'>:<'(.*)'>$", re.DOTALL)


def make_strategy(config: StrategyConfig, num_sites: int, min_sites: int) -> Strategy:
    """Flower's strategy named by ``config``, sampling ``fraction_train`` of the sites."""
    common: dict[str, Any] = dict(
        fraction_train=config.fraction_train, fraction_evaluate=1.0,
        min_train_nodes=min_sites, min_evaluate_nodes=min_sites,
        min_available_nodes=min(min_sites, num_sites), weighted_by_key=keys.NUM_EXAMPLES,
        arrayrecord_key=keys.ARRAYS, configrecord_key=keys.CONFIG)
    if config.name == "fedprox":
        return FedProx(**common, proximal_mu=config.proximal_mu)
    if config.name == "fedavgm":
        return FedAvgM(**common, server_learning_rate=config.server_lr or 1.0,
                       server_momentum=config.server_momentum)
    if config.name in ("fedadam", "fedyogi"):
        kind = FedAdam if config.name == "fedadam" else FedYogi
        return kind(**common, eta=config.server_lr or 0.01, beta_1=config.beta_1,
                    beta_2=config.beta_2, tau=config.tau)
    return FedAvg(**common)


def error_reason(error: Error, limit: int = 600) -> str:
    """A site's error in one line without file paths: ``FederationError: site b: ...`` out of
    Flower's wrapping (``<class '...'>:<'...'>``; in simulation a Ray traceback ending in
    ``Message: ...``)."""
    text = str(error.reason or f"error code {error.code}").strip()
    match = _FLOWER_REASON.match(text)
    if match:
        kind, text = match.group(1), match.group(2)
        text = text.rsplit("Message: ", 1)[-1]
        name = re.findall(r"\w+", kind)[-1]  # RayTaskError(ClientAppException) -> the inner
        text = f"{name}: {text}"
    text = redact_paths(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sender(reply: Message, asked: list[Message]) -> int:
    """The node a reply answers for: its source, or, for an error the SuperLink wrote itself
    (a node that went offline), the destination of the message it replies to."""
    nodes = {m.metadata.dst_node_id for m in asked}
    if reply.metadata.src_node_id in nodes:
        return reply.metadata.src_node_id
    by_id = {m.metadata.message_id: m.metadata.dst_node_id for m in asked}
    return by_id.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


@dataclass
class Roster:
    """The sites a run has heard from (node id -> site index and name, and the number of ECGs
    each declared the first time), across its stages, and which are no longer connected."""

    names: dict[int, tuple[int, str]] = field(default_factory=dict)
    declared: dict[int, int | None] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)

    def name(self, node: int) -> str:
        """The site a node named, or ``node <id>`` before it has answered."""
        return self.names[node][1] if node in self.names else f"node {node}"

    def newly_gone(self, online: Iterable[int]) -> list[int]:
        """Sites heard from before that are not connected now and were at the last look."""
        missing = set(self.names) - set(online)
        new = sorted(missing - self.gone)
        self.gone = missing
        return new


class Delegate(Strategy):
    """A strategy that forwards everything to ``inner`` (the base of fedecg's wrappers)."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Forward to ``inner``."""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Forward to ``inner``."""
        return self.inner.aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Forward to ``inner``."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Forward to ``inner``."""
        return self.inner.aggregate_evaluate(server_round, replies)


class StageRounds(Delegate):
    """Wrap ``inner`` for one stage: round offset, screened replies, per-site metrics.

    ``min_sites`` usable updates make a round; ``timeout`` (the round's reply timeout) also
    bounds the wait for connected sites; ``max_norm_ratio`` rejects updates that far from the
    global model, relative to the round's median (None: no bound); ``stage`` names the stage
    in errors.
    """

    def __init__(self, inner: Strategy, stage: str, offset: int, on_site_metrics: SiteMetrics,
                 min_sites: int, timeout: float, roster: Roster,
                 max_norm_ratio: float | None) -> None:
        super().__init__(inner)
        self.stage = stage
        self.offset = offset
        self.on_site_metrics = on_site_metrics
        self.min_sites = min_sites
        self.timeout = timeout
        self.max_norm_ratio = max_norm_ratio
        self.bytes_down = 0
        self.sent = ArrayRecord()
        self.asked: list[Message] = []
        self.roster = roster

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Let the wrapped strategy configure round ``offset + server_round``."""
        self._await_sites(grid, "train", server_round)
        self.bytes_down = record_bytes(arrays)
        self.sent = arrays
        return self._asked(self.inner.configure_train(self.offset + server_round, arrays,
                                                      config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen and order replies, record each site's metrics, then aggregate."""
        ordered = self._checked(replies, "train", server_round)
        arrays, metrics = self.inner.aggregate_train(self.offset + server_round, ordered)
        if arrays is None:
            raise FederationError(f"round {self.offset + server_round}: no site returned "
                                  "parameters; nothing to aggregate")
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Let the wrapped strategy configure evaluation of round ``offset + server_round``."""
        self._await_sites(grid, "evaluate", server_round)
        return self._asked(self.inner.configure_evaluate(self.offset + server_round, arrays,
                                                         config, grid))

    def aggregate_evaluate(self, server_round: int,
                           replies: Iterable[Message]) -> MetricRecord | None:
        """Screen and order replies, record each site's metrics, then aggregate."""
        ordered = self._checked(replies, "evaluate", server_round)
        return self.inner.aggregate_evaluate(self.offset + server_round, ordered)

    def _asked(self, messages: Iterable[Message]) -> list[Message]:
        self.asked = list(messages)
        return self.asked

    def _await_sites(self, grid: Grid, kind: str, server_round: int) -> None:
        """Wait up to ``timeout`` for ``min_sites`` connected sites; log who left."""
        online = wait_for_sites(grid, self.min_sites, self.timeout)
        if online < self.min_sites:
            raise FederationError(
                f"{kind} round {self.offset + server_round}: {online} site(s) connected "
                f"after {self.timeout:g} s, fewer than federation.min_sites="
                f"{self.min_sites}; the run stops here and resumes from its last "
                "finished round once enough sites are back")
        for node in self.roster.newly_gone(grid.get_node_ids()):
            self._event(DROPOUT, kind, self.offset + server_round, node,
                        "no longer connected to the SuperLink (left the federation)")

    def _checked(self, replies: Iterable[Message], kind: str, server_round: int) -> list[Message]:
        stage_round = self.offset + server_round
        usable, events = [], []
        replies = list(replies)
        for message in replies:
            node = sender(message, self.asked)
            if message.has_error():
                events.append((DROPOUT, node, error_reason(message.error)))
                continue
            problem = self._screen(message, node, kind)
            if problem is not None:
                events.append((REJECTED, node, problem))
                continue
            usable.append(message)
        distances: dict[int, float] = {}
        if kind == "train":
            distances = {sender(m, self.asked): update_distance(m.content[keys.ARRAYS],
                                                                self.sent) for m in usable}
            outliers = norm_outliers(distances, self.max_norm_ratio)
            events += [(REJECTED, node, reason) for node, reason in outliers.items()]
            usable = [m for m in usable if sender(m, self.asked) not in outliers]
        answered = {sender(m, self.asked) for m in replies}
        events += [(DROPOUT, node, f"no reply within the round timeout of {self.timeout:g} s")
                   for node in (m.metadata.dst_node_id for m in self.asked)
                   if node not in answered]
        for event, node, reason in events:
            self._event(event, kind, stage_round, node, reason)
        ordered = sorted(usable, key=lambda m: (*self.roster.names[sender(m, self.asked)],
                                                sender(m, self.asked)))
        if kind == "train" and len(ordered) < self.min_sites:
            reasons = "; ".join(f"{self.roster.name(node)}: {reason}"
                                for _, node, reason in events)
            raise FederationError(
                f"train round {stage_round}: {len(ordered)} usable update(s), fewer than "
                f"federation.min_sites={self.min_sites} ({reasons or 'no site answered'}); "
                "the run stops here and resumes from its last finished round")
        total = 0.0
        for message in ordered:
            metrics = dict(message.content[keys.METRICS])
            total += float(metrics[keys.NUM_EXAMPLES])
            node = sender(message, self.asked)
            if kind == "train":
                metrics[keys.BYTES_SENT] = record_bytes(message.content[keys.ARRAYS])
                metrics[keys.BYTES_RECEIVED] = self.bytes_down
                metrics[keys.UPDATE_NORM] = distances[node]
            index, name = self.roster.names[node]
            self.on_site_metrics(kind, stage_round, index, name, {**metrics, NODE_ID: node})
        if ordered and total <= 0:
            raise FederationError(f"{self.stage} stage, {kind} round {stage_round}: every "
                                  "site reported 0 examples; the sites hold no labelled rows "
                                  f"for the {self.stage} stage (set federation.rounds."
                                  f"{self.stage}=0 to skip it)")
        return ordered

    def _screen(self, message: Message, node: int, kind: str) -> str | None:
        """Why a reply cannot count (None when it can); remembers its site on first sight."""
        if keys.SITE not in message.content.config_records:
            return "the reply names no site"
        site = message.content[keys.SITE]
        self.roster.names[node] = (int(site[keys.SITE_INDEX]), str(site[keys.SITE_NAME]))
        declared = self.roster.declared.setdefault(node, declared_ecgs(message))
        problem = screen_examples(message, declared)
        if problem is None:
            problem = screen_update(message, self.sent) if kind == "train" else \
                screen_scores(message)
        return problem

    def _event(self, event: str, kind: str, stage_round: int, node: int, reason: str) -> None:
        index, name = self.roster.names.get(node, (None, f"node {node}"))
        log.warning("%s round %d: %s %s (node %d): %s", kind, stage_round, name, event,
                    node, reason)
        self.on_site_metrics(event, stage_round, index, name,
                             {NODE_ID: node, "phase": kind, "reason": reason})

    def state(self) -> dict[str, Any]:
        """The server optimizer's state (FedAdam/FedYogi moments, FedAvgM momentum), for a
        checkpoint: each entry a dict of arrays (or None)."""
        inner = self.inner
        if isinstance(inner, FedOpt):
            return {name: getattr(inner, name) for name in OPT_STATE}
        if isinstance(inner, FedAvgM):
            current, momentum = inner.current_arrays, inner.momentum_vector
            return {"current_arrays": None if current is None else
                    {key: array.numpy() for key, array in current.items()},
                    "momentum_vector": None if momentum is None else
                    {str(index): value for index, value in enumerate(momentum)}}
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state`` returned."""
        known = self.state()
        for name, value in state.items():
            if name not in known:
                raise FederationError(f"checkpoint strategy state {name!r}: expected one of "
                                      f"{sorted(known) or 'none (this strategy keeps none)'}")
            arrays = None if value is None else {k: np.asarray(v) for k, v in value.items()}
            if isinstance(self.inner, FedAvgM) and arrays is not None:
                if name == "current_arrays":
                    arrays = ArrayRecord({k: Array(v) for k, v in arrays.items()})
                else:
                    arrays = [arrays[str(index)] for index in range(len(arrays))]
            setattr(self.inner, name, arrays)
