"""Which outputs of a trained model are results: stages a site's data can train, and each
label's training support and validation AUROC (the model card's ``outputs``).

A site without labs has no known lab label: ``without_unlabelled_stages`` turns the lab stage
off (said once) instead of failing. ``output_quality`` records per task and label the training
positives, validation positives and AUROC, and a ``status``: ``learned`` (validation AUROC at
least ``eval.min_auroc``), ``below threshold``, ``unvalidated`` (fewer than
``MIN_POSITIVES`` validation positives or negatives: an AUROC on one or two positives says
nothing) or ``untrained`` (no training positive and negative). ``predict``/``explain`` and the
report use it so that an output that never learned is never shown as a result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from fedecg.config.train import TrainConfig
from fedecg.data.store import MIN_POSITIVES
from fedecg.models.io import LEARNED, OutputStatus
from fedecg.models.joint import JointModel
from fedecg.training.data import TrainingData, rows_with_targets
from fedecg.training.evaluate import TASKS, predict
from fedecg.training.metrics import label_metrics
from fedecg.training.runner import planned_passes

log = logging.getLogger(__name__)


def has_known(data: TrainingData, target: str, split: str = "train") -> bool:
    """True when some ``split`` row of ``data`` has a known value of ``target`` (lab, dx)."""
    return any(len(rows_with_targets(store, split, (target,)))  # type: ignore[arg-type]
               for store in data.stores)


def without_unlabelled_stages(config: TrainConfig, data: TrainingData) -> TrainConfig:
    """``config`` with the lab stage off when no training row has a known lab label (said once
    here); the lab head then stays untrained and is never shown as a result."""
    if config.lab.epochs == 0 or has_known(data, "lab"):
        return config
    log.warning("no training ECG has a known lab label (a site without labs): the lab stage is "
                "skipped; pretraining and diagnosis train as usual, lab outputs are untrained")
    return config.model_copy(update={"lab": config.lab.model_copy(update={"epochs": 0})})


def output_quality(model: JointModel, data: TrainingData, config: TrainConfig
                   ) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task (``diagnosis``, ``lab``) and label: support, validation AUROC and status."""
    train = data.dataset("train", ("dx", "lab"), None, False, config)
    val = data.dataset("val", ("dx", "lab"), None, False, config)
    scores = (predict(model, val, config.crop_samples, config.eval.crops, config.eval.batch_size)
              if len(val) else None)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for task, key in TASKS.items():
        names = data.names[task]
        y_train = getattr(train, key).numpy().astype(np.float64)
        y_val = getattr(val, key).numpy().astype(np.float64)
        auroc = (label_metrics(y_val, scores[key], names)["auroc"] if scores is not None
                 else {})
        result[task] = {name: _entry(y_train[:, j], y_val[:, j], auroc.get(name),
                                     config.eval.min_auroc) for j, name in enumerate(names)}
    return result


def _entry(y_train: np.ndarray, y_val: np.ndarray, auroc: float | None,
           threshold: float) -> dict[str, Any]:
    positives, known = int(np.nansum(y_train)), int(np.sum(~np.isnan(y_train)))
    status: OutputStatus
    if positives == 0 or positives == known:
        status = "untrained"
    elif auroc is None or min(int(np.nansum(y_val)),
                              int(np.sum(y_val == 0))) < MIN_POSITIVES:
        status = "unvalidated"
    else:
        status = LEARNED if auroc >= threshold else "below threshold"
    return {"status": status, "train_positives": positives, "train_known": known,
            "val_positives": int(np.nansum(y_val)), "val_known": int(np.sum(~np.isnan(y_val))),
            "val_auroc": None if auroc is None else round(float(auroc), 4)}


STAGE_TARGETS = {"pretrain": ("clinical",), "lab": ("lab",), "diagnosis": ("dx", "lab")}


def budget_warnings(config: TrainConfig, data: TrainingData,
                    epochs: dict[str, int] | None = None, test_split: bool = True) -> list[str]:
    """Lines warning of stages with fewer than ``warn_below_steps`` optimizer steps and (with
    ``test_split``) of labels with fewer than ``warn_below_test_positives`` test positives.

    ``epochs`` per stage replaces the config's (a federated site: rounds × local epochs).
    """
    lines = []
    for stage, targets in STAGE_TARGETS.items():
        if stage == "pretrain" and "transfer" not in config.models:
            continue
        settings = getattr(config, stage)
        rows = sum(len(rows_with_targets(s, "train", targets)) for s in data.stores)
        per_pass = rows // config.batch_size if rows > config.batch_size else int(rows > 0)
        count = (epochs or {}).get(stage, settings.epochs)
        passes = 1 if epochs else planned_passes(settings, rows, config.batch_size)
        steps = count * (rows * passes // config.batch_size if rows * passes > config.batch_size
                         else 1)
        fix = (f"federation.rounds.{stage} or federation.local_epochs, or lower "
               "federation.batch_size" if epochs else f"{stage}.epochs or set {stage}.min_steps")
        if count and rows and steps < config.warn_below_steps:
            lines.append(f"stage {stage}: {steps} optimizer steps ({count} epochs x {per_pass} "
                         f"of batch {config.batch_size} on {rows} training ECGs), fewer than "
                         f"{config.warn_below_steps}: results may stay near chance; raise {fix}")
    if not test_split:
        return lines
    test = data.dataset("test", ("dx",), None, False, config).dx.numpy()
    train = data.dataset("train", ("dx",), None, False, config).dx.numpy()
    few = [f"{name} ({int(np.nansum(test[:, j]))})"
           for j, name in enumerate(data.names["diagnosis"])
           if np.nansum(train[:, j]) > 0
           and np.nansum(test[:, j]) < config.warn_below_test_positives]
    if few:
        lines.append(f"{len(few)} diagnosis label(s) have fewer than "
                     f"{config.warn_below_test_positives} positives in the test split (their "
                     f"AUROC is noisy or missing; `fedecg train --cv K` uses every ECG): "
                     + ", ".join(few))
    return lines
