"""What a site does with the server's messages (``fedecg.app.client_app`` calls these):
``handle_train`` trains the stage the server asks for, ``handle_evaluate`` tests it.

A site finds its data from ``node_config``: ``data-dir`` (a prepared store, in deployment; with
optional ``site-name``, ``site-index`` and ``state-dir``, where the site keeps its model between
rounds, per study) or ``partition-id`` (a virtual site of the run's partitioned store, in
simulation). It checks its
store against the run's reference manifest on every message, so a site with other labels, leads
or rate is rejected at the first round with the mismatch named. Its whole model lives in
``context.state`` between rounds (personal heads never leave it); in simulation it is also saved
to the run folder so that a resumed run restores it.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedecg.data.store import SiteStore
from fedecg.errors import FedecgError, FederationError
from fedecg.federated import keys
from fedecg.federated.checkpoint import fingerprint, latest_site_state, save_site_state
from fedecg.federated.orchestration import RunPlan, round_offsets, stages_for
from fedecg.federated.params import load_arrays, plain_state, to_arrays
from fedecg.federated.partition import open_site_rows
from fedecg.federated.screening import redact_paths
from fedecg.federated.site import RoundPlan, RoundPrivacy, local_evaluate, local_train
from fedecg.federated.site_test_metrics import site_final_metrics
from fedecg.models.build import build_model
from fedecg.models.joint import JointModel
from fedecg.training.data import TrainingData

log = logging.getLogger(__name__)


@dataclass
class Site:
    """A site's data and identity, opened once per process."""

    name: str
    index: int
    data: TrainingData
    state_dir: Path | None


_SITES: dict[tuple[str, ...], Site] = {}


def open_site(plan: RunPlan, node_config: dict) -> Site:
    """The site this node serves, checked against the run's reference manifest."""
    if keys.NODE_DATA_DIR in node_config:
        key = ("dir", str(node_config[keys.NODE_DATA_DIR]), plan.out)
    elif keys.NODE_PARTITION_ID in node_config:
        key = ("partition", str(plan.store), str(plan.partition),
               str(node_config[keys.NODE_PARTITION_ID]))
    else:
        raise FederationError(f"node_config {dict(node_config)}: expected {keys.NODE_DATA_DIR!r}"
                              f" (a prepared store) or {keys.NODE_PARTITION_ID!r} (simulation)")
    if key not in _SITES:
        _SITES.clear()  # a simulation's process serves its virtual sites in turn: hold one
        _SITES[key] = _open(plan, node_config)
    site = _SITES[key]
    problems = plan.manifest.incompatibilities(site.data.manifest)
    if problems:
        raise FederationError(f"site {site.name}: its store does not match the study "
                              f"({'; '.join(problems)}); prepare it again with the study's "
                              "prepare settings (labels, lab panel, sampling rate, duration)")
    return site


def _open(plan: RunPlan, node_config: dict) -> Site:
    if keys.NODE_DATA_DIR in node_config:
        store = SiteStore.open(Path(str(node_config[keys.NODE_DATA_DIR])))
        name = str(node_config.get(keys.NODE_SITE_NAME) or store.manifest.site_name)
        state = node_config.get(keys.NODE_STATE_DIR)
        run_state = Path(str(state)) / fingerprint(plan.to_json()) if state else None
        return Site(name, int(node_config.get(keys.NODE_SITE_INDEX, 0)),
                    TrainingData([store]), run_state)
    index = int(node_config[keys.NODE_PARTITION_ID])
    if plan.store is None or plan.partition is None:
        raise FederationError("simulation site: the run plan names no store/partition")
    view = open_site_rows(Path(plan.store), Path(plan.partition), index)
    return Site(view.manifest.site_name, index, TrainingData([view]), Path(plan.out))


def site_model(plan: RunPlan, site: Site, context: Context, global_round: int) -> JointModel:
    """The site's model: from ``context.state``, else its save before ``global_round``, else new."""
    model = build_model(plan.model, plan.config.train, site.data.manifest,
                        site.data.train_clinical())
    meta = context.state.get(keys.STATE_META)
    mine = meta is not None and meta[keys.META_MODEL] == plan.model
    if keys.STATE_MODEL in context.state and mine:
        load_arrays(model, context.state[keys.STATE_MODEL], expected=plain_state(model).keys(),
                    where="saved site state")
    elif global_round > 1 and site.state_dir is not None:
        state = latest_site_state(site.state_dir, site.index, up_to=global_round - 1)
        if state is not None:
            model.load_state_dict(state)
    return model


def _round(message: Message, plan: RunPlan) -> tuple[int, int, int]:
    """(stage index, stage round, global round) of a message."""
    config = message.content[keys.CONFIG]
    index, stage_round = int(config[keys.STAGE_INDEX]), int(config[keys.SERVER_ROUND])
    return index, stage_round, round_offsets(plan, stages_for(plan))[index] + stage_round


def _reply(message: Message, site: Site, metrics: dict[str, float],
           arrays: RecordDict | None = None) -> Message:
    content = RecordDict({keys.METRICS: MetricRecord(metrics),
                          keys.SITE: ConfigRecord({
                              keys.SITE_NAME: site.name, keys.SITE_INDEX: site.index,
                              keys.SITE_ECGS: sum(len(s) for s in site.data.stores)})})
    if arrays is not None:
        content[keys.ARRAYS] = arrays
    return Message(content, reply_to=message)


def reset_peak_rss() -> None:
    """Start a new peak of this process's resident set (Linux: ``/proc/self/clear_refs``),
    so that ``peak_rss_mb`` reports this message's peak, not that of every virtual site the
    process served before; elsewhere the process's lifetime peak stays."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mb() -> float:
    """Peak resident set (MiB) since ``reset_peak_rss`` (``VmHWM``), else the process's."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SitePrivacyHook(RoundPrivacy, Protocol):
    """What a privacy layer gives a site for one message (``fedecg.privacy.site_hook``)."""

    def prepare_model(self, model: JointModel) -> None: ...

    def metrics(self) -> dict[str, float]: ...

    def save(self, state: RecordDict, saved: tuple[Path | None, int, int]) -> None: ...


PrivacyFor = Callable[[RunPlan, Site, Context, int], SitePrivacyHook | None]
"""``(plan, site, context, global round) -> hook``; None when the run needs none at the site."""


def handle_train(message: Message, context: Context,
                 privacy_for: PrivacyFor | None = None) -> Message:
    """One local round of the stage: load the shared keys, train, return the shared keys."""
    torch.set_num_threads(1)
    reset_peak_rss()
    plan = RunPlan.from_json(str(message.content[keys.CONFIG][keys.RUN_PLAN]))
    site = open_site(plan, context.node_config)
    try:
        index, stage_round, global_round = _round(message, plan)
        hook = privacy_for(plan, site, context, global_round) if privacy_for else None
        privacy = plan.config.privacy
        if privacy.enabled and privacy.mode == "sample" and hook is None:
            raise FederationError(f"site {site.name}: the run asks for sample-level "
                                  f"differential privacy (ε={privacy.target_epsilon}) but this "
                                  "ClientApp has no privacy hook; refusing to train without "
                                  "it (run fedecg.app:client_app)")
        stage = stages_for(plan)[index]
        model = site_model(plan, site, context, global_round)
        if hook is not None:
            hook.prepare_model(model)
        shared = stage.shared_keys(model)
        load_arrays(model, message.content[keys.ARRAYS], expected=shared,
                    where="received parameters")
        federation = plan.config.federation
        mu = float(message.content[keys.CONFIG].get(keys.PROXIMAL_MU, 0.0))
        round_plan = RoundPlan(plan.model, index, stage_round, federation.rounds.of(stage.name),
                               mu)
        metrics = local_train(model, stage, site.data, plan.config.site_train(), federation,
                              round_plan, site.name, privacy=hook)
        if hook is not None:
            metrics.update(hook.metrics())
            hook.save(context.state, (site.state_dir, site.index, global_round))
        metrics[keys.PEAK_RSS_MB] = peak_rss_mb()
        _keep(model, plan, site, context, global_round)
        return _reply(message, site, metrics, to_arrays(model, shared))
    except FedecgError as exc:
        raise FederationError(f"site {site.name}: {exc}") from exc


def handle_evaluate(message: Message, context: Context,
                    privacy_for: PrivacyFor | None = None) -> Message:
    """Score the global model (with this site's personal layers) on the site's validation
    split (the server selects rounds by it) and test split.

    After the last round (``final`` in the config) the site sends its full test metrics with
    CIs and the naive baseline's (``site_final_metrics``), for a server that holds no data.
    """
    torch.set_num_threads(1)
    config = message.content[keys.CONFIG]
    plan = RunPlan.from_json(str(config[keys.RUN_PLAN]))
    site = open_site(plan, context.node_config)
    try:
        final = bool(config.get(keys.FINAL, 0))
        index, _, global_round = _round(message, plan)
        stages = stages_for(plan)
        model = site_model(plan, site, context, global_round + 1)
        hook = privacy_for(plan, site, context, global_round + 1) if privacy_for else None
        if hook is not None:
            hook.prepare_model(model)
        expected = ({k for stage in stages for k in stage.shared_keys(model)} if final
                    else stages[index].shared_keys(model))
        load_arrays(model, message.content[keys.ARRAYS], expected=expected,
                    where="received parameters")
        if final:
            return _reply(message, site, site_final_metrics(model, site.data, plan.config.train))
        metrics = local_evaluate(model, stages[index], site.data, plan.config.train,
                                 split="test")
        validation = local_evaluate(model, stages[index], site.data, plan.config.train,
                                    split="val")
        metrics.update({keys.VAL_PREFIX + k: v for k, v in validation.items()})
        return _reply(message, site, metrics)
    except FedecgError as exc:
        raise FederationError(f"site {site.name}: {exc}") from exc


def _keep(model: JointModel, plan: RunPlan, site: Site, context: Context,
          global_round: int) -> None:
    context.state[keys.STATE_MODEL] = to_arrays(model)
    context.state[keys.STATE_META] = ConfigRecord({keys.META_MODEL: plan.model,
                                                   keys.META_ROUND: global_round})
    if site.state_dir is not None:
        save_site_state(site.state_dir, site.index, global_round, plain_state(model))


@contextlib.contextmanager
def errors_without_paths() -> Iterator[None]:
    """A site's error leaves it as one line without its file paths (``redact_paths``)."""
    try:
        yield
    except FedecgError as exc:
        raise FederationError(redact_paths(str(exc))) from None

