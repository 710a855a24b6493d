"""The centralized baselines of a simulated study, for the same epochs per stage as its
federated run (rounds × local epochs): the model trained on all sites' training rows
(``pooled``) and on each site alone (``local_only``), each tested on every site.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fedecg.config.federated import StudyConfig
from fedecg.config.train import TrainConfig
from fedecg.errors import TrainingError
from fedecg.federated.evaluation import score_everywhere
from fedecg.federated.simulation import Say
from fedecg.training.data import TrainingData
from fedecg.training.runner import MetricsLog, fit_model

log = logging.getLogger(__name__)


def baseline_config(config: StudyConfig) -> TrainConfig:
    """The centralized config with the federated run's epochs per stage (and one pass per
    epoch: ``min_steps`` does not apply to federated rounds, so it does not to baselines)."""
    federation = config.federation
    train = config.train
    return train.model_copy(update={
        stage: getattr(train, stage).model_copy(update={
            "epochs": federation.rounds.of(stage) * federation.local_epochs, "min_steps": 0})
        for stage in ("pretrain", "lab", "diagnosis")})


def run_baselines(name: str, config: StudyConfig, sites: TrainingData,
                  pooled_data: TrainingData, folder: Path, say: Say,
                  local_only: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Pooled and (with ``local_only``; else None) local-only training of ``name``, each
    tested everywhere."""
    train = baseline_config(config)
    stores = sites.stores
    say(f"{name}: pooled baseline")
    pooled_model = fit_model(name, pooled_data, train, folder / "pooled.pt",
                             MetricsLog(folder / "pooled.jsonl"))
    pooled = score_everywhere([pooled_model] * len(stores), sites, train, train.seed)
    if not local_only:
        return pooled, None
    local: dict[str, Any] = {}
    for store in stores:
        site = store.manifest.site_name
        say(f"{name}: local-only baseline at {site}")
        try:
            model = fit_model(name, TrainingData([store]), train, folder / f"local-{site}.pt",
                              MetricsLog(folder / f"local-{site}.jsonl"))
        except TrainingError as exc:
            log.warning("local-only %s at %s not trained: %s", name, site, exc)
            local[site] = None
            continue
        local[site] = score_everywhere([model] * len(stores), sites, train, train.seed)
    return pooled, {"sites": local, **mean_local(local)}


def mean_local(local: dict[str, Any]) -> dict[str, Any]:
    """Mean over local-only models: on the pooled test split, and each on its own site."""
    entries = {site: e for site, e in local.items() if e is not None}
    result: dict[str, Any] = {}
    for key in ("diagnosis_macro_auroc", "lab_macro_auroc"):
        pooled = [e[key] for e in entries.values() if e.get(key) is not None]
        own = [e["per_store"][s][key] for s, e in entries.items()
               if (e["per_store"].get(s) or {}).get(key) is not None]
        result[key] = float(np.mean(pooled)) if pooled else None
        result[f"{key}_own_site"] = float(np.mean(own)) if own else None
    return result
