"""Centralized training of several models on pooled stores: what ``fedecg train`` runs.

``train_models(stores, config, out)`` writes into ``out``:

* ``config.yaml``: the resolved ``TrainConfig``; ``run.json``: the stores and models;
* ``metrics.jsonl``: one record per model, stage and epoch (train and validation metrics);
* ``checkpoints/``: ``MODEL.pt`` after every epoch and ``MODEL.test.json`` once tested; rerunning
  the same command on an unfinished ``out`` resumes from them;
* ``summary.json``: per model name (and ``naive``, the prevalence baseline) the flat metrics of
  ``fedecg.training.evaluate.flatten`` on the pooled test split, plus ``per_store``;
  top-level ``seed``, ``stores``, ``models``;
* ``model/``: the inference-only ECG model (``transfer``, else ``signal-only``) and its card
  (with ``initialization`` when its encoder started from ``train.encoder_from``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedecg.config.base import validate_config
from fedecg.config.train import STAGE_NAMES, TrainConfig
from fedecg.data.store import SiteStore, StoreManifest
from fedecg.errors import StoreError
from fedecg.io import atomic_write_json
from fedecg.models.io import ModelCard, save_inference_model
from fedecg.models.joint import JointModel
from fedecg.models.public_encoder import (
    STARTS_FROM_PUBLIC,
    check_public_encoder,
    public_encoder_record,
)
from fedecg.run_folder import RunFolder, prepare_training
from fedecg.training.data import TrainingData
from fedecg.training.evaluate import evaluate, flatten, score
from fedecg.training.metrics import naive_scores
from fedecg.training.outputs import budget_warnings, output_quality, without_unlabelled_stages
from fedecg.training.runner import (
    MetricsLog,
    OnStep,
    check_crop,
    fit_model,
    warn_of_small_splits,
)

logger = logging.getLogger(__name__)
EXPORT_ORDER = ("transfer", "signal-only")


def open_stores(paths: list[Path]) -> TrainingData:
    """Open stores and check that they can train one model together."""
    if not paths:
        raise StoreError("no store given; pass --store STORE (one or more)")
    stores = [SiteStore.open(Path(p)) for p in paths]
    first = stores[0]
    for other in stores[1:]:
        problems = first.manifest.incompatibilities(other.manifest)
        if problems:
            raise StoreError(f"stores {first.path} and {other.path} cannot train one model: "
                             + "; ".join(problems) + ". Prepare them with the same settings")
    return TrainingData(stores)


def evaluate_on_test(name: str, model: JointModel, data: TrainingData, config: TrainConfig,
                     cache: Path) -> dict[str, Any]:
    """Pooled and per-store test metrics of a trained model (cached in ``cache``)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    targets = ("dx", "lab")
    pooled = data.dataset("test", targets, None, False, config)
    entry = flatten(evaluate(model, pooled, data.names, config.crop_samples, config.eval,
                             config.seed))
    entry["per_store"] = _per_store(data, config, lambda ds: flatten(evaluate(
        model, ds, data.names, config.crop_samples, config.eval, config.seed)), entry)
    atomic_write_json(cache, entry)
    return entry


def _per_store(data: TrainingData, config: TrainConfig, scorer, pooled: dict[str, Any]
               ) -> dict[str, Any]:
    if len(data.stores) == 1:
        return {data.manifest.site_name: {k: v for k, v in pooled.items() if k != "per_store"}}
    return {store.manifest.site_name: scorer(data.dataset("test", ("dx", "lab"), None, False,
                                                          config, stores=[k]))
            for k, store in enumerate(data.stores)}


def naive_results(data: TrainingData, config: TrainConfig) -> dict[str, Any]:
    """The prevalence baseline: every test row scored with the training prevalence."""
    train = data.dataset("train", ("dx", "lab"), None, False, config)

    def scorer(dataset) -> dict[str, Any]:
        probabilities = {key: naive_scores(getattr(train, key).numpy(), len(dataset))
                         for key in ("dx", "lab")}
        return flatten(score(probabilities, dataset, data.names, config.eval, config.seed))

    entry = scorer(data.dataset("test", ("dx", "lab"), None, False, config))
    entry["per_store"] = _per_store(data, config, scorer, entry)
    return entry


def data_summary(data: TrainingData) -> dict[str, Any]:
    """The model card's training-data summary of pooled stores."""
    return {"stores": [s.manifest.site_name for s in data.stores],
            "records": sum(s.manifest.n_records for s in data.stores),
            "train_records": sum(len(s.indices("train")) for s in data.stores)}


def trained_stages(config: TrainConfig) -> list[str]:
    """The stages a centralized run trains (epochs > 0), in order."""
    return [stage for stage in STAGE_NAMES if getattr(config, stage).epochs > 0]


def initialization(name: str, config: TrainConfig, manifest: StoreManifest,
                   stages: list[str]) -> dict[str, Any] | None:
    """The card's ``initialization`` of model ``name``: the public encoder it started from
    (``public_encoder_record``) and the ``stages`` trained after it; None from a random start."""
    if config.encoder_from is None or name != STARTS_FROM_PUBLIC:
        return None
    return {**public_encoder_record(config, manifest), "stages_trained_after": stages}


def export_model(out: Path, name: str, model: JointModel, manifest: StoreManifest,
                 summary: dict[str, Any], config: TrainConfig, results: dict[str, Any],
                 outputs: dict[str, Any] | None = None,
                 stages: list[str] | None = None) -> None:
    """Write ``out/model``: the inference-only ECG classifier of ``name`` and its card
    (``summary``: what it was trained on, e.g. ``data_summary``; ``outputs``: each label's
    status, ``fedecg.training.outputs.output_quality``; ``stages``: those that trained, by
    default ``trained_stages``)."""
    keys = ("diagnosis_macro_auroc", "diagnosis_macro_auroc_ci", "lab_macro_auroc",
            "lab_macro_auroc_ci", "diagnosis_macro_auprc", "lab_macro_auprc", "n_test")
    card = ModelCard(
        model_name=name, diagnosis_labels=manifest.diagnosis_labels,
        lab_labels=manifest.lab_labels,
        lab_panel=[lab.model_dump(mode="json") for lab in manifest.lab_panel],
        lead_order=manifest.lead_order, fs=manifest.fs, crop_samples=config.crop_samples,
        eval_crops=config.eval.crops,
        preprocessing={"fs": manifest.fs, **manifest.preprocessing},
        data_summary=summary, seed=config.seed, metrics={k: results.get(k) for k in keys},
        outputs=outputs or {}, min_auroc=config.eval.min_auroc if outputs else None,
        initialization=initialization(name, config, manifest,
                                      trained_stages(config) if stages is None else stages))
    save_inference_model(RunFolder(out).model, model.classifier, card)


def train_models(stores: list[Path], config: TrainConfig, out: Path,
                 models: list[str] | None = None, seed: int | None = None,
                 overwrite: bool = False, on_step: OnStep | None = None,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train every model of ``config.models`` on the pooled ``stores``; return the summary.

    ``models`` and ``seed``, when given, replace the config's (as ``--models``/``--seed`` do).
    ``on_step`` hears of every batch, ``on_epoch`` gets each epoch's ``metrics.jsonl`` record.
    """
    changes = {k: v for k, v in (("models", models), ("seed", seed)) if v is not None}
    if changes:
        config = validate_config(TrainConfig, {**config.model_dump(), **changes}, "arguments")
    data = open_stores(stores)
    check_crop(data, config)
    check_public_encoder(config, data.manifest)
    warn_of_small_splits(data)  # empty splits, labels with few positives in a split
    config = without_unlabelled_stages(config, data)
    for line in budget_warnings(config, data, test_split=False):
        logger.warning(line)
    folder = RunFolder(out)
    prepare_training(folder, config, stores, overwrite)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    log = MetricsLog(folder.metrics, on_append=on_epoch)
    summary: dict[str, Any] = {}
    exported = False
    for name in config.models:
        model = fit_model(name, data, config, folder.checkpoints / f"{name}.pt", log, on_step)
        summary[name] = evaluate_on_test(name, model, data, config,
                                         folder.checkpoints / f"{name}.test.json")
        export = next((m for m in EXPORT_ORDER if m in config.models), None)
        if name == export and not exported:
            export_model(folder.path, name, model, data.manifest, data_summary(data), config,
                         summary[name], output_quality(model, data, config))
            exported = True
    summary["naive"] = naive_results(data, config)
    summary.update(seed=config.seed, models=list(config.models),
                   stores=[{"path": str(s.path), "site": s.manifest.site_name}
                           for s in data.stores])
    folder.write_summary(summary)
    return summary
