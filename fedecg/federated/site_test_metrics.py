"""The final federated evaluation: each site tests the finished model on its own test split.

In deployment the server holds no data, so it cannot score a pooled test split. After the last
round it sends the global parameters once more with ``final`` set; each site scores the model
(its own personal layers over the global ones) and the prevalence baseline on its test split
with crop aggregation and bootstrap CIs, and replies with **scalar metrics only**
(``encode_entry``). The server decodes them into the per-site entries of ``summary.json`` and
combines the sites (``combine_sites``): each metric is the test-example-weighted mean of the
sites that can score it; its CI is the normal interval of that mean from the sites' bootstrap
CIs (independent sites). It is not the pooled-split AUROC that simulation reports.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common import MessageType
from flwr.serverapp import Grid

from fedecg.config.train import TrainConfig
from fedecg.errors import FederationError
from fedecg.federated import keys
from fedecg.federated.checkpoint import load_checkpoint
from fedecg.federated.orchestration import RunPlan, initial_model, stages_for, write_metrics
from fedecg.federated.params import to_arrays
from fedecg.federated.screening import declared_ecgs, screen_final
from fedecg.federated.strategies import DROPOUT, NODE_ID, REJECTED, error_reason, sender
from fedecg.models.joint import JointModel
from fedecg.training.data import TrainingData
from fedecg.training.evaluate import TASKS, evaluate, flatten, score
from fedecg.training.metrics import naive_scores

log = logging.getLogger(__name__)

NAIVE_PREFIX = "naive:"
N_TRAIN = "n_train"
_CI = (".low", ".high")


def encode_entry(entry: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """A flat ``summary.json`` entry as scalars: CIs as ``key.low/.high``, labels as
    ``key/label``, None as NaN; the names of skipped labels are left out (they decode back)."""
    metrics: dict[str, float] = {}
    for key, value in entry.items():
        if key.endswith("_skipped"):
            continue
        if isinstance(value, Mapping):
            metrics.update({f"{prefix}{key}/{label}": _float(v) for label, v in value.items()})
        elif key.endswith("_ci"):
            bounds = value if value is not None else [None, None]
            metrics.update({f"{prefix}{key}{end}": _float(v) for end, v in zip(
                _CI, bounds, strict=True)})
        else:
            metrics[f"{prefix}{key}"] = _float(value)
    return metrics


def decode_entry(metrics: Mapping[str, float], prefix: str = "") -> dict[str, Any]:
    """Invert ``encode_entry`` (``*_skipped``: the labels without a score)."""
    entry: dict[str, Any] = {}
    for name, value in metrics.items():
        if not name.startswith(prefix):
            continue
        key, number = name[len(prefix):], _none(value)
        if "/" in key:
            base, label = key.split("/", 1)
            entry.setdefault(base, {})[label] = number
        elif key.endswith(_CI):
            base, end = key.rsplit(".", 1)
            entry.setdefault(base, [None, None])[_CI.index("." + end)] = number
        else:
            entry[key] = number
    for base, bounds in list(entry.items()):
        if base.endswith("_ci") and any(b is None for b in bounds):
            entry[base] = None
    for task in TASKS:
        if f"{task}_auroc" in entry:
            entry[f"{task}_skipped"] = [k for k, v in entry[f"{task}_auroc"].items() if v is None]
    if "n_test" in entry and entry["n_test"] is not None:
        entry["n_test"] = int(entry["n_test"])
    return entry


def site_final_metrics(model: JointModel, data: TrainingData,
                       config: TrainConfig) -> dict[str, float]:
    """What a site sends after the last round: the model's and the naive baseline's test
    metrics (encoded) and its training-row count."""
    test = data.dataset("test", ("dx", "lab"), None, False, config)
    train = data.dataset("train", ("dx", "lab"), None, False, config)
    metrics = {N_TRAIN: float(len(data.stores[0].indices("train")))}
    if len(test) == 0:
        return {**metrics, "n_test": 0.0}
    entry = flatten(evaluate(model, test, data.names, config.crop_samples, config.eval,
                             config.seed))
    naive = {key: naive_scores(getattr(train, key).numpy(), len(test)) for key in ("dx", "lab")}
    baseline = flatten(score(naive, test, data.names, config.eval, config.seed))
    return {**metrics, **encode_entry(entry), **encode_entry(baseline, NAIVE_PREFIX)}


def final_evaluation(grid: Grid, plan: RunPlan) -> dict[str, dict[str, Any]]:
    """Ask every connected site to test the finished model; ``{site: decoded reply}``.

    A site that fails or does not answer within the round timeout is logged as a dropout in
    the run's ``metrics.jsonl`` and left out; a report with impossible counts or scores
    (``screen_final``) is logged as rejected and left out.
    """
    out = Path(plan.out)
    checkpoint = load_checkpoint(out)
    if checkpoint is None or not checkpoint.position.done:
        raise FederationError(f"{out}: no finished run to evaluate")
    model = initial_model(plan)
    shared = sorted({k for stage in stages_for(plan) for k in stage.shared_keys(model)})
    arrays = to_arrays(checkpoint.global_state, shared)
    asked = _messages(grid, plan, arrays)
    replies = grid.send_and_receive(asked, timeout=plan.config.federation.round_timeout_s)
    sites: dict[str, dict[str, Any]] = {}
    events = []
    for reply in sorted(replies, key=_site_order):
        node = sender(reply, asked)
        if reply.has_error():
            events.append((DROPOUT, node, error_reason(reply.error)))
            continue
        site = reply.content[keys.SITE]
        metrics = dict(reply.content[keys.METRICS])
        problem = screen_final(metrics, declared_ecgs(reply), ("n_test", N_TRAIN))
        if problem is not None:
            events.append((REJECTED, node, problem))
            continue
        sites[str(site[keys.SITE_NAME])] = {
            **decode_entry(metrics), N_TRAIN: int(metrics.get(N_TRAIN, 0)),
            "naive": decode_entry(metrics, NAIVE_PREFIX)}
    names = {line[NODE_ID]: line["site"] for line in checkpoint.history if NODE_ID in line}
    history = checkpoint.history + [
        _event(plan, checkpoint.global_round, kind, node, names.get(node), reason)
        for kind, node, reason in events]
    write_metrics(out, history)
    for kind, node, reason in events:
        log.warning("final evaluation: node %d %s: %s", node,
                    "dropped out" if kind == DROPOUT else "was rejected", reason)
    return sites


def _messages(grid: Grid, plan: RunPlan, arrays: ArrayRecord) -> list[Message]:
    stages = stages_for(plan)
    last = len(stages) - 1
    config = ConfigRecord({keys.RUN_PLAN: plan.to_json(), keys.FINAL: 1, keys.STAGE_INDEX: last,
                           keys.SERVER_ROUND: plan.config.federation.rounds.of(
                               stages[last].name)})
    return [Message(RecordDict({keys.ARRAYS: arrays, keys.CONFIG: config}), dst_node_id=node,
                    message_type=MessageType.EVALUATE) for node in sorted(grid.get_node_ids())]


def _site_order(reply: Message) -> tuple[int, str, int]:
    if reply.has_error():
        return (-1, "", reply.metadata.src_node_id)
    site = reply.content[keys.SITE]
    return (int(site[keys.SITE_INDEX]), str(site[keys.SITE_NAME]), reply.metadata.src_node_id)


def _event(plan: RunPlan, global_round: int, kind: str, node: int, site: str | None,
           reason: str) -> dict[str, Any]:
    return {"model": plan.model, "stage": "final", "round": global_round, "stage_round": 0,
            "kind": kind, "site_index": None, "site": site or f"node {node}", NODE_ID: node,
            "phase": "final evaluation", "reason": reason}


def combine_sites(sites: Mapping[str, Mapping[str, Any]], ci: float) -> dict[str, Any]:
    """The example-weighted mean over sites of every metric, with a normal CI of the mean."""
    scored = {name: e for name, e in sites.items() if e.get("n_test")}
    z = NormalDist().inv_cdf(0.5 + ci / 2)
    combined: dict[str, Any] = {"n_test": sum(int(e["n_test"]) for e in scored.values()),
                                "sites_scored": len(scored)}
    keys_seen = list(dict.fromkeys(k for e in scored.values() for k in e))
    for key in keys_seen:
        values = [(e.get(key), e["n_test"], e.get(f"{key}_ci")) for e in scored.values()]
        if key.endswith("_macro_auroc") or key.endswith("_macro_auprc"):
            combined[key], combined[f"{key}_ci"] = _weighted(values, z)
        elif key.endswith("_auroc") or key.endswith("_auprc"):
            labels = list(dict.fromkeys(label for e in scored.values()
                                        for label in e.get(key) or {}))
            combined[key] = {label: _weighted([((e.get(key) or {}).get(label), e["n_test"], None)
                                               for e in scored.values()], z)[0]
                             for label in labels}
            combined[f"{key.rsplit('_', 1)[0]}_skipped"] = [
                label for label, value in combined[key].items() if value is None]
    return combined


def _weighted(values: list[tuple[Any, float, Any]], z: float
              ) -> tuple[float | None, list[float] | None]:
    usable = [(v, w, c) for v, w, c in values if v is not None]
    if not usable:
        return None, None
    total = float(sum(w for _, w, _ in usable))
    mean = float(sum(v * w for v, w, _ in usable) / total)
    if any(c is None for _, _, c in usable):
        return mean, None
    se = math.sqrt(sum((w / total) ** 2 * ((c[1] - c[0]) / (2 * z)) ** 2 for _, w, c in usable))
    return mean, [max(0.0, mean - z * se), min(1.0, mean + z * se)]


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def deployed_result(sites_by_model: Mapping[str, Mapping[str, Mapping[str, Any]]],
                    ci: float) -> dict[str, Any]:
    """One seed's results from the sites' final reports, in ``fedecg simulate``'s layout
    (``federated``, ``sites``, ``naive``; no pooled or local-only baselines in deployment)."""
    federated, per_site = {}, {}
    for model, sites in sites_by_model.items():
        per_site[model] = {name: {k: v for k, v in entry.items() if k != "naive"}
                           for name, entry in sites.items()}
        federated[model] = combine_sites(per_site[model], ci)
    first = next(iter(sites_by_model.values()), {})
    naive_sites = {name: entry["naive"] for name, entry in first.items() if entry.get("naive")}
    return {"federated": federated, "sites": per_site, "pooled": {}, "local_only": {},
            "naive": {**combine_sites(naive_sites, ci), "per_store": naive_sites}}
