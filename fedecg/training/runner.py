"""Training one model through its stages, with per-epoch metrics and resumable checkpoints.

``fit_model`` trains one model on ``TrainingData`` (``fedecg.training.data``): it builds the
``JointModel`` of a model name (``signal-only``, ``transfer``, ``multimodal``;
``fedecg.models.build``) with the clinical standardization fit on training rows (the
transfer model's ECG encoder from ``train.encoder_from`` when set), runs its
stages (``build_stages``) through the stage loop (``train_window``), appends one
``metrics.jsonl`` record per epoch and writes a checkpoint after each, resuming from the last.
Each stage ends with its best epoch on validation and may stop early
(``train.early_stopping``, ``fedecg.training.selection``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from fedecg.config.train import MODEL_NAMES, StageConfig, TrainConfig
from fedecg.data.store import split_problems
from fedecg.errors import TrainingError
from fedecg.io import atomic_write_text
from fedecg.models.build import build_model, derive_seed
from fedecg.models.joint import JointModel
from fedecg.models.public_encoder import start_from_public_encoder
from fedecg.training.checkpoint import Position, load_checkpoint, save_checkpoint
from fedecg.training.data import TrainingData, epoch_loader
from fedecg.training.evaluate import validate
from fedecg.training.selection import BestSoFar, stage_score
from fedecg.training.stages import Stage, build_stages
from fedecg.training.trainer import (
    activate,
    make_optimizer,
    train_window,
    warmup_cosine,
)

logger = logging.getLogger(__name__)

OnStep = Callable[[str, int, int], None]
"""Progress callback ``(description, steps done, steps total)``."""


def check_crop(data: TrainingData, config: TrainConfig) -> None:
    """Raise ``TrainingError`` when ``crop_samples`` is longer than the stored records."""
    manifest = data.manifest
    if config.crop_samples > manifest.n_samples:
        raise TrainingError(
            f"crop_samples {config.crop_samples} is longer than the records of "
            f"{data.stores[0].path} ({manifest.n_samples} samples, "
            f"{manifest.n_samples / manifest.fs:g} s at {manifest.fs:g} Hz): every crop would "
            f"be the whole record. Set crop_samples to at most {manifest.n_samples} (e.g. "
            f"{manifest.n_samples // 4})")


def warn_of_small_splits(data: TrainingData) -> None:
    """Log a warning per store for an empty split or labels with too few positives in a split
    (``fedecg.data.store.split_problems``)."""
    labels = data.manifest.diagnosis_columns + data.manifest.lab_label_columns
    for store in data.stores:
        for problem in split_problems(store.cohort, labels, store.manifest.site_name):
            logger.warning(problem)


class MetricsLog:
    """``metrics.jsonl``: one JSON record per line; on resume each model's records past its
    checkpoint are dropped, every other model's are kept."""

    def __init__(self, path: Path, on_append: Callable[[dict[str, Any]], None] | None = None,
                 ) -> None:
        self.path = Path(path)
        self.lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self.on_append = on_append

    def keep_model_until(self, name: str, count: int) -> None:
        """Drop the records of model ``name`` after the first ``count`` lines (written after
        its checkpoint, which vouches for ``count`` lines); other models' records stay."""
        self._write([line for index, line in enumerate(self.lines)
                     if index < count or json.loads(line).get("model") != name])

    def append(self, record: dict[str, Any]) -> None:
        """Add a record, rewrite the file atomically, then tell ``on_append`` (progress)."""
        self._write([*self.lines, json.dumps(record, default=float)])
        if self.on_append is not None:
            self.on_append(record)

    def _write(self, lines: list[str]) -> None:
        self.lines = lines
        atomic_write_text(self.path, "".join(line + "\n" for line in lines))


def stage_config(config: TrainConfig, stage: Stage) -> StageConfig:
    """The config section of ``stage`` (``pretrain``, ``lab`` or ``diagnosis``)."""
    return getattr(config, stage.name)


def fit_model(name: str, data: TrainingData, config: TrainConfig, checkpoint: Path,
              log: MetricsLog, on_step: OnStep | None = None) -> JointModel:
    """Train model ``name`` through its stages, resuming from ``checkpoint`` if it exists."""
    model = build_model(name, config, data.manifest, data.train_clinical())
    start_from_public_encoder(model, name, config, data.manifest)
    stages = build_stages(config, pretrained=name == "transfer")
    saved = load_checkpoint(checkpoint)
    if saved is None:
        log.keep_model_until(name, 0)
    position = Position()
    if saved is not None:
        try:
            model.load_state_dict(saved["model"])
        except RuntimeError as exc:  # shapes differ: labels or features changed since
            raise TrainingError(
                f"{checkpoint}: does not fit model {name!r} built for the store(s) "
                f"{[str(s.path) for s in data.stores]} ({str(exc).splitlines()[-1].strip()}); "
                "their labels or features changed since; pass --overwrite to start again"
            ) from None
        position = saved["position"]
        log.keep_model_until(name, saved["metric_lines"])
    if position.done:
        return model
    for index in range(position.stage_index, len(stages)):
        resume = saved if index == position.stage_index and position.finished > 0 else None
        _run_stage(name, index, stages[index], model, data, config, checkpoint, log,
                   resume, on_step)
    save_checkpoint(checkpoint, Position(len(stages), 0, done=True), model,
                    metric_lines=len(log.lines))
    return model


def _run_stage(name: str, index: int, stage: Stage, model: JointModel, data: TrainingData,
               config: TrainConfig, checkpoint: Path, log: MetricsLog,
               resume: dict[str, Any] | None, on_step: OnStep | None) -> None:
    settings = stage_config(config, stage)
    if settings.epochs == 0:
        return
    seed = derive_seed(config.seed, MODEL_NAMES.index(name), index)
    train = data.dataset("train", stage.targets, config.crop_samples, True, config, seed)
    if len(train) < 2:
        raise TrainingError(f"model {name!r}, stage {stage.name!r}: {len(train)} training "
                            f"row(s) with known {'/'.join(stage.targets)} in the store(s) "
                            f"{[str(s.path) for s in data.stores]}; expected at least 2")
    val = data.dataset("val", stage.targets, config.crop_samples, False, config)
    optimizer = make_optimizer(activate(model, stage), settings.lr, settings.weight_decay)
    epochs = settings.epochs
    passes = planned_passes(settings, len(train), config.batch_size)
    steps = len(epoch_loader(train, config.batch_size, 0, True, seed, passes=passes))
    scheduler = warmup_cosine(optimizer, epochs * steps, settings.warmup_fraction)
    first, best = 0, BestSoFar()
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        first, best = resume["position"].finished, resume["best"]
    last = first
    selection = config.early_stopping

    def loader_for(epoch: int) -> DataLoader:
        return epoch_loader(train, config.batch_size, epoch, True, seed, config.num_workers,
                            passes)

    def on_step_of(epoch: int) -> Callable[[int], None] | None:
        return _bind(on_step, f"{name} · {stage.name} {epoch + 1}/{epochs}", steps)

    def on_epoch(epoch: int, logs: dict[str, float], seconds: float) -> bool:
        nonlocal last
        last = epoch + 1
        record = {"model": name, "stage": stage.name, "epoch": epoch + 1,
                  "epochs": epochs, "lr": scheduler.get_last_lr()[0],
                  **{f"train_{k}": v for k, v in logs.items()}, "seconds": seconds,
                  "examples_per_second": logs["examples"] / max(seconds, 1e-9)}
        record.update(validate(model, stage, val, data.names, config.eval.batch_size))
        score = stage_score(stage.name, config, record.get("val_loss"),
                            record.get("val_lab_macro_auroc"),
                            record.get("val_diagnosis_macro_auroc"))
        best.observe(epoch + 1, score, model.state_dict, selection)
        record["best_epoch"] = best.step or None
        log.append(record)
        save_checkpoint(checkpoint, Position(index, epoch + 1), model,
                        metric_lines=len(log.lines), optimizer=optimizer, scheduler=scheduler,
                        best=best)
        return best.stalled(epoch + 1, selection.patience)

    train_window(model, stage, loader_for, optimizer, range(first, epochs),
                 scheduler=scheduler, max_grad_norm=config.max_grad_norm, seed=seed,
                 on_step=on_step_of, on_epoch=on_epoch, precision=config.precision)
    _end_stage(name, index, stage, model, best, last, epochs, checkpoint, log)


def _end_stage(name: str, index: int, stage: Stage, model: JointModel, best: BestSoFar,
               last: int, epochs: int, checkpoint: Path, log: MetricsLog) -> None:
    """Keep the stage's best epoch (``keep_best``) and checkpoint the stage as finished."""
    weights = best.best_weights(last)
    if weights is not None:
        model.load_state_dict(weights)
    if weights is not None or last < epochs:
        logger.info("model %s, stage %s: %s after epoch %d of %d; keeping epoch %d", name,
                    stage.name, "stopped" if last < epochs else "finished", last, epochs,
                    best.step if weights is not None else last)
    save_checkpoint(checkpoint, Position(index + 1, 0), model, metric_lines=len(log.lines))


def planned_passes(settings: StageConfig, rows: int, batch_size: int) -> int:
    """Passes through ``rows`` training rows per epoch: enough that the stage takes at least
    ``settings.min_steps`` optimizer steps of ``batch_size`` (1 on a site large enough)."""
    if settings.epochs == 0 or rows == 0:
        return 1
    if settings.epochs * max(rows // batch_size, 1) >= settings.min_steps:
        return 1
    return math.ceil(settings.min_steps * batch_size / (settings.epochs * rows))


def _bind(on_step: OnStep | None, label: str, total: int) -> Callable[[int], None] | None:
    """``on_step`` with its description and total fixed, or None."""
    if on_step is None:
        return None
    return lambda done: on_step(label, done, total)
