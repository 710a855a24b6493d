"""``fedecg train --cv K``: patient-grouped K-fold cross-validation, out-of-fold predictions.

For fold ``k`` the test split is fold ``k``, the validation split fold ``k+1 (mod K)`` and the
rest trains; folds come from a seeded hash of the patient id (``patient_folds``), so all ECGs
of a patient stay in one fold. Each ECG is scored once, by the model that never saw it, and
per-label AUROC with bootstrap CIs is computed on these out-of-fold predictions: on a small
site every ECG counts instead of one test fold. ``cross_validate`` writes into ``out``:

* ``fold-<k>/``: that fold's ``metrics.jsonl`` and ``checkpoints/`` (rerunning resumes);
* ``oof_predictions.parquet``: per model, ECG and label the out-of-fold probability;
* ``cv_summary.json``: per model (and ``naive``, each label's prevalence) and task,
  per-label ``auroc``, ``auroc_ci``, ``positives``, ``known``, plus ``macro_auroc(_ci)``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedecg.config.train import TrainConfig
from fedecg.data.cohort import patient_folds
from fedecg.data.store import SiteStore
from fedecg.errors import OutputExistsError
from fedecg.io import SHARED, atomic_write_bytes, atomic_write_json
from fedecg.run_folder import RunFolder, prepare_training
from fedecg.training.data import TrainingData
from fedecg.training.evaluate import TASKS, label_auroc_cis, predict
from fedecg.training.metrics import bootstrap_macro, label_metrics, naive_scores
from fedecg.training.outputs import budget_warnings, without_unlabelled_stages
from fedecg.training.pipeline import open_stores
from fedecg.training.runner import MetricsLog, OnStep, fit_model

log = logging.getLogger(__name__)


def cv_view(store: SiteStore, k: int, fold: int, seed: int) -> SiteStore:
    """``store`` with its ``split`` column set for fold ``fold`` of ``k`` (see module)."""
    folds = patient_folds(store.cohort["subject_id"], k, seed)
    split = np.where(folds == fold, "test", np.where(folds == (fold + 1) % k, "val", "train"))
    cohort = store.cohort.assign(split=split, fold=folds)
    return SiteStore(store.path, store.manifest, cohort, store.waveforms)


def cross_validate(stores: list[Path], config: TrainConfig, out: Path, k: int,
                   overwrite: bool = False, on_step: OnStep | None = None) -> dict[str, Any]:
    """Cross-validate every model of ``config.models`` on the pooled ``stores`` (K folds)."""
    out = RunFolder(out)
    prepare_training(out, config, stores, overwrite)  # a marked run folder; never an input
    if out.cv_summary.is_file():
        raise OutputExistsError(f"{out.path}: holds a finished cross-validation; choose another "
                                "--out or pass --overwrite")
    data = open_stores(stores)
    config = without_unlabelled_stages(config, data)
    rows: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in config.models}
    for fold in range(k):
        views = TrainingData([cv_view(s, k, fold, config.seed) for s in data.stores])
        if fold == 0:
            for line in budget_warnings(config, views, test_split=False):
                log.warning("fold 1 of %d: %s", k, line)
        test = views.dataset("test", ("dx", "lab"), None, False, config)
        part = {"fold": np.full(len(test), fold), "store": test.source_of, "row": test.row_of,
                **{f"true_{key}": getattr(test, key).numpy().astype(np.float64)
                   for key in TASKS.values()}}
        folder = out.fold(fold)
        folder.checkpoints.mkdir(parents=True, exist_ok=True)
        metrics = MetricsLog(folder.metrics)
        for name in config.models:
            model = fit_model(name, views, config, folder.checkpoints / f"{name}.pt",
                              metrics, on_step)
            scores = predict(model, test, config.crop_samples, config.eval.crops,
                             config.eval.batch_size)
            rows[name].append({**part, **{f"score_{key}": scores[key] for key in TASKS.values()}})
    rows["naive"] = _naive(rows[config.models[0]])
    summary = {name: _scores(parts, data.names, config) for name, parts in rows.items()}
    summary.update(folds=k, seed=config.seed, models=list(config.models),
                   stores=[str(s.path) for s in data.stores])
    _write_predictions(out.oof_predictions, rows, data.names)
    atomic_write_json(out.cv_summary, summary, SHARED)
    return summary


def _naive(parts: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The naive baseline: every ECG scored with its label's prevalence, one constant (each
    fold's own training prevalence would be anti-correlated with its held-out fold and score
    below 0.5 when pooled)."""
    truth = {key: np.concatenate([p[f"true_{key}"] for p in parts]) for key in TASKS.values()}
    return [{**{k: v for k, v in part.items() if not k.startswith("score_")},
             **{f"score_{key}": naive_scores(truth[key], len(part["row"]))
                for key in TASKS.values()}} for part in parts]


def _scores(parts: list[dict[str, np.ndarray]], names: dict[str, list[str]],
            config: TrainConfig) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for task, key in TASKS.items():
        y_true = np.concatenate([p[f"true_{key}"] for p in parts])
        y_score = np.concatenate([p[f"score_{key}"] for p in parts])
        metrics = label_metrics(y_true, y_score, names[task])
        cis = label_auroc_cis(y_true, y_score, names[task], metrics["auroc"], config.eval,
                              config.seed)
        labels = {label: {"auroc": metrics["auroc"].get(label), "auroc_ci": cis.get(label),
                          "positives": int(np.nansum(y_true[:, j])),
                          "known": int(np.sum(~np.isnan(y_true[:, j])))}
                  for j, label in enumerate(names[task])}
        macro_ci = bootstrap_macro(y_true, y_score, config.eval.bootstrap, config.eval.ci,
                                   config.seed)["auroc"]
        result[task] = {"macro_auroc": metrics["macro_auroc"], "macro_auroc_ci": macro_ci,
                        "labels": labels, "n": len(y_true)}
    return result


def _write_predictions(path: Path, rows: dict[str, list[dict[str, np.ndarray]]],
                       names: dict[str, list[str]]) -> None:
    frames = []
    for model, parts in rows.items():
        for part in parts:
            columns = {"model": model, "fold": part["fold"], "store": part["store"],
                       "row": part["row"]}
            for task, key in TASKS.items():
                for j, label in enumerate(names[task]):
                    columns[f"{key}_{label}"] = part[f"true_{key}"][:, j]
                    columns[f"p_{key}_{label}"] = part[f"score_{key}"][:, j]
            frames.append(pd.DataFrame(columns))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    atomic_write_bytes(path, table.to_parquet(index=False))
