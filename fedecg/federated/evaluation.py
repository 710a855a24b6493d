"""Testing trained models on every site's test split and on the pooled test split.

A federated model is, at site ``k``, the global (aggregated) parameters over site ``k``'s own
layers: its clinical standardization and, with personal heads, its heads. Each site's test rows
are scored by its own model; the pooled test split is the union of the sites' test rows scored
the same way. A centralized model (pooled or local-only baseline) is one model at every site.
The inference model exported for a federated run with personal heads uses the sites' heads
averaged with their training-example weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedecg.errors import FederationError
from fedecg.federated.checkpoint import latest_site_state, load_checkpoint
from fedecg.federated.orchestration import RunPlan, initial_model, stages_for
from fedecg.models.joint import JointModel
from fedecg.training.data import TrainingData
from fedecg.training.evaluate import flatten, predict, score

TEST_TARGETS = ("dx", "lab")


def federated_keys(plan: RunPlan, model: JointModel) -> set[str]:
    """Keys the server aggregated in at least one stage."""
    return {key for stage in stages_for(plan) for key in stage.shared_keys(model)}


def site_models(plan: RunPlan, n_sites: int) -> list[JointModel]:
    """Each site's model at the end of a finished federated run."""
    checkpoint = load_checkpoint(Path(plan.out))
    if checkpoint is None or not checkpoint.position.done:
        raise FederationError(f"{plan.out}: no finished federated run to test; run "
                              "`fedecg simulate --resume` to finish it")
    models = []
    for index in range(n_sites):
        model = initial_model(plan)
        shared = federated_keys(plan, model)
        own = latest_site_state(Path(plan.out), index) or {}
        state = {k: (checkpoint.global_state[k] if k in shared or k not in own else own[k])
                 for k in model.state_dict()}
        model.load_state_dict(state)
        models.append(model)
    return models


def consensus_model(plan: RunPlan, models: list[JointModel], weights: list[float]) -> JointModel:
    """One model for export: global parameters, personal layers averaged by ``weights``."""
    model = initial_model(plan)
    shared = federated_keys(plan, model)
    total = float(sum(weights)) or 1.0
    state = {}
    for key, value in models[0].state_dict().items():
        if key in shared or not value.is_floating_point():
            state[key] = value
        else:
            state[key] = sum(m.state_dict()[key] * (w / total) for m, w in zip(
                models, weights, strict=True))
    model.load_state_dict(state)
    return model


def score_everywhere(models: list[JointModel], sites: TrainingData, config: Any,
                    seed: int = 0) -> dict[str, Any]:
    """Flat metrics on the pooled test split, plus ``per_store`` (one entry per site).

    ``models[k]`` scores site ``k``'s test rows; pass the same model K times for a centralized
    model. ``config`` is the ``TrainConfig`` (crop length, evaluation settings).
    """
    per_site, probabilities = {}, []
    for index, store in enumerate(sites.stores):
        dataset = sites.dataset("test", TEST_TARGETS, None, False, config, stores=[index])
        if len(dataset) == 0:
            per_site[store.manifest.site_name] = None
            continue
        with torch.no_grad():
            probs = predict(models[index], dataset, config.crop_samples, config.eval.crops,
                            config.eval.batch_size)
        probabilities.append(probs)
        per_site[store.manifest.site_name] = flatten(score(probs, dataset, sites.names,
                                                           config.eval, seed))
    pooled = sites.dataset("test", TEST_TARGETS, None, False, config)
    merged = {key: np.concatenate([p[key] for p in probabilities if len(p[key])])
              for key in ("lab", "dx")}
    entry = flatten(score(merged, pooled, sites.names, config.eval, seed))
    entry["per_store"] = per_site
    return entry
