"""Evaluation: test-time aggregation over crops, then metrics with bootstrap CIs.

``predict`` scores whole records: the ECG embedding is averaged over ``crops`` evenly spaced
windows of ``crop`` samples (the heads are linear, so this is the mean of the logits), then
turned into probabilities. ``evaluate`` returns, per task (``diagnosis``, ``lab``), the
``label_metrics`` dict plus ``macro_auroc_ci``/``macro_auprc_ci``, each label's ``auroc_ci`` and
its test ``positives``. ``flatten`` turns that into the ``summary.json`` keys
(``diagnosis_macro_auroc``, ``diagnosis_macro_auroc_ci``, per label ``diagnosis_auroc`` with
``diagnosis_auroc_low``/``_high`` and ``diagnosis_positives``, ...).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from fedecg.config.train import EvalConfig
from fedecg.models.classifier import crop_starts
from fedecg.models.joint import JointModel
from fedecg.training.data import CropDataset
from fedecg.training.metrics import bootstrap_macro, label_metrics
from fedecg.training.stages import Stage
from fedecg.training.trainer import model_device, to_device

TASKS = {"diagnosis": "dx", "lab": "lab"}


@torch.no_grad()
def predict(model: JointModel, dataset: CropDataset, crop: int, crops: int,
            batch_size: int = 256) -> dict[str, np.ndarray]:
    """Probabilities ``{"lab": [N, n_lab], "dx": [N, n_dx]}`` for every item of ``dataset``."""
    model.eval()
    device = model_device(model)
    outputs: dict[str, list[np.ndarray]] = {"lab": [], "dx": []}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = to_device(batch, device)
        ecg = batch["ecg"]  # [B, 12, T]
        starts = crop_starts(ecg.shape[-1], crop, crops)
        embedding = torch.stack([model.classifier.forward_features(ecg[..., s:s + crop])
                                 for s in starts]).mean(dim=0)  # [B, E]
        logits = model.predict_from_embedding(embedding, batch["clinical"])
        for key in outputs:
            outputs[key].append(torch.sigmoid(logits[key]).cpu().numpy())
    return {key: np.concatenate(parts) if parts else np.zeros((0, 0))
            for key, parts in outputs.items()}


def score(probabilities: dict[str, np.ndarray], dataset: CropDataset, names: dict[str, list[str]],
          config: EvalConfig, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Metrics of given probabilities against ``dataset``'s labels, with bootstrap CIs."""
    result = {}
    for task, key in TASKS.items():
        y_true = getattr(dataset, key).numpy().astype(np.float64)
        metrics = label_metrics(y_true, probabilities[key], names[task])
        cis = bootstrap_macro(y_true, probabilities[key], config.bootstrap, config.ci, seed)
        metrics["macro_auroc_ci"] = cis["auroc"]
        metrics["macro_auprc_ci"] = cis["auprc"]
        metrics["auroc_ci"] = label_auroc_cis(y_true, probabilities[key], names[task],
                                              metrics["auroc"], config, seed)
        metrics["positives"] = {name: int(np.nansum(y_true[:, j]))
                                for j, name in enumerate(names[task])}
        result[task] = metrics
    return result


def label_auroc_cis(y_true: np.ndarray, y_score: np.ndarray, names: list[str],
                    scored: dict[str, float], config: EvalConfig, seed: int = 0
                    ) -> dict[str, list[float] | None]:
    """Bootstrap CI of each scored label's AUROC (resamples keep both of its classes)."""
    return {name: bootstrap_macro(y_true[:, [j]], y_score[:, [j]], config.bootstrap,
                                  config.ci, seed)["auroc"]
            for j, name in enumerate(names) if name in scored}


def evaluate(model: JointModel, dataset: CropDataset, names: dict[str, list[str]], crop: int,
             config: EvalConfig, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Predict ``dataset`` with crop aggregation and score it (``names``: task → labels)."""
    probabilities = predict(model, dataset, crop, config.crops, config.batch_size)
    return score(probabilities, dataset, names, config, seed)


def flatten(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``{"diagnosis": {...}, "lab": {...}}`` → the flat ``summary.json`` entry of one model."""
    flat: dict[str, Any] = {}
    for task, values in metrics.items():
        for kind in ("auroc", "auprc"):
            flat[f"{task}_macro_{kind}"] = values[f"macro_{kind}"]
            flat[f"{task}_macro_{kind}_ci"] = values[f"macro_{kind}_ci"]
            flat[f"{task}_{kind}"] = values[kind]
        for end, side in (("low", 0), ("high", 1)):  # per-label CI bounds (label -> value)
            flat[f"{task}_auroc_{end}"] = {label: None if ci is None else ci[side]
                                           for label, ci in values["auroc_ci"].items()}
        flat[f"{task}_positives"] = values["positives"]
        flat[f"{task}_skipped"] = values["skipped"]
        flat["n_test"] = values["n"]
    return flat


@torch.no_grad()
def validate(model: JointModel, stage: Stage, dataset: CropDataset,
             names: dict[str, list[str]], batch_size: int = 256) -> dict[str, float | None]:
    """Validation loss of ``stage`` and (after pretraining) macro AUROCs, on centred crops."""
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    outputs: dict[str, list[np.ndarray]] = {"lab": [], "dx": []}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        batch = to_device(batch, device)
        if stage.name == "pretrain" and len(batch["ecg"]) < 2:
            continue
        loss, _ = stage.loss(model, batch)
        total += float(loss) * len(batch["ecg"])
        count += len(batch["ecg"])
        if stage.name != "pretrain":
            logits = model(batch["ecg"], batch["clinical"])
            for key in outputs:
                outputs[key].append(logits[key].cpu().numpy())
    result: dict[str, float | None] = {"val_loss": total / count if count else None}
    for task, key in TASKS.items():
        if outputs[key]:
            y_true = getattr(dataset, key).numpy().astype(np.float64)
            scores = np.concatenate(outputs[key])
            result[f"val_{task}_macro_auroc"] = label_metrics(y_true, scores,
                                                              names[task])["macro_auroc"]
    return result
