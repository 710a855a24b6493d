"""``fedecg train``: the three models on one or more pooled stores, then the run report."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedecg.cli.common import console, friendly_errors, record_command
from fedecg.cli.progress import (
    LOG_JSON_HELP,
    QUIET_HELP,
    RESULT_KEYS,
    Output,
    RunProgress,
    output_mode,
)
from fedecg.config.base import load_config
from fedecg.config.train import TrainConfig
from fedecg.errors import FedecgError
from fedecg.run_folder import RunFolder
from fedecg.training.pipeline import train_models
from fedecg.training.runner import stage_config
from fedecg.training.stages import build_stages

logger = logging.getLogger(__name__)


def build_overrides(models: str | None, seed: int | None, overrides: list[str]) -> list[str]:
    """``--models``/``--seed`` as ``--set`` overrides (they win over the YAML file)."""
    result = list(overrides)
    if models is not None:
        names = [name.strip() for name in models.split(",") if name.strip()]
        result.append(f"models=[{', '.join(names)}]")
    if seed is not None:
        result.append(f"seed={seed}")
    return result


def write_report(out: Path) -> Path | None:
    """Write ``out/report.html`` if the report module is installed; None otherwise."""
    try:
        from fedecg.report.run_report import write_run_report
    except ModuleNotFoundError as exc:
        logger.warning("report module not available (%s); RUN/report.html not written", exc)
        return None
    try:
        return write_run_report(out)
    except (FedecgError, OSError) as exc:
        console.print(f"[yellow]warning:[/] report not written: {exc}")
        return None


def one_line(summary: dict[str, Any]) -> str:
    """``model dx AUROC x [lo, hi] · lab AUROC y`` for every model, on one line."""
    parts = []
    for name in [*summary.get("models", []), "naive"]:
        entry = summary.get(name, {})
        parts.append(f"{name}: dx {_fmt(entry.get('diagnosis_macro_auroc'))}"
                     f"{_ci(entry.get('diagnosis_macro_auroc_ci'))}, "
                     f"lab {_fmt(entry.get('lab_macro_auroc'))}")
    return " | ".join(parts)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


STAGE_METRICS = {"pretrain": (("train loss", "train_loss"), ("val loss", "val_loss")),
                 "lab": (("val loss", "val_loss"), ("val lab AUROC", "val_lab_macro_auroc")),
                 "diagnosis": (("val loss", "val_loss"),
                               ("val dx AUROC", "val_diagnosis_macro_auroc"))}
"""What each stage's progress line shows: ``(shown name, metrics.jsonl key)``."""


def epoch_plan(config: TrainConfig) -> tuple[dict[tuple[str, str], int], int]:
    """Epochs done before each ``(model, stage)`` starts, and the run's total epochs."""
    offsets: dict[tuple[str, str], int] = {}
    total = 0
    for name in config.models:
        for stage in build_stages(config, pretrained=name == "transfer"):
            offsets[(name, stage.name)] = total
            total += stage_config(config, stage).epochs
    return offsets, total


def epoch_reporter(config: TrainConfig, progress: RunProgress) -> Callable[[dict[str, Any]], None]:
    """The ``on_epoch`` hook of ``train_models`` that reports each epoch to ``progress``."""
    offsets, _ = epoch_plan(config)

    def on_epoch(record: dict[str, Any]) -> None:
        model, stage, epoch = record["model"], record["stage"], record["epoch"]
        metrics = {shown: record.get(key) for shown, key in STAGE_METRICS.get(stage, ())}
        progress.unit_done(offsets.get((model, stage), 0) + epoch,
                           f"{model} · {stage} {epoch}/{record['epochs']}", metrics,
                           {"model": model, "stage": stage, "epoch": epoch,
                            "epochs": record["epochs"],
                            **{key: record.get(key) for _, key in STAGE_METRICS.get(stage, ())}})

    return on_epoch


@friendly_errors
def train(
    store: list[Path] = typer.Option(..., "--store", help="Site store; repeat to pool several."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (resumes if unfinished)."),
    config: Path | None = typer.Option(None, "--config", help="YAML TrainConfig."),
    models: str | None = typer.Option(None, "--models",
                                      help="Comma-separated: signal-only,transfer,multimodal "
                                      "(default: the config's models, all three)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (overrides the config; "
                                    "default 0)."),
    overrides: list[str] = typer.Option([], "--set", help="KEY=VALUE config override."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    log_json: bool = typer.Option(False, "--log-json", help=LOG_JSON_HELP),
    cv: int | None = typer.Option(None, "--cv", min=3, help="K-fold patient-grouped cross-"
                                  "validation: out-of-fold per-label AUROC with CIs."),
) -> None:
    """Train signal-only, transfer and multimodal models; write metrics, model and report.

    Prints one line per epoch with the validation loss and AUROC and an ETA.
    """
    started = time.time()
    resumed = not overwrite and RunFolder(out).unfinished
    settings = load_config(TrainConfig, config, build_overrides(models, seed, overrides))
    progress = RunProgress(epoch_plan(settings)[1], "epoch", output_mode(quiet, log_json),
                           console)
    on_epoch = epoch_reporter(settings, progress)
    if progress.mode is Output.LINES and console.is_terminal:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("starting", total=None)

            def on_step(label: str, done: int, total: int) -> None:
                bar.update(task, description=label, completed=done, total=total)

            summary = _run(store, settings, out, cv, overwrite, on_step, on_epoch)
    else:
        summary = _run(store, settings, out, cv, overwrite, None, on_epoch)
    record_command(out, started, resumed)
    if cv is not None:
        for line in cv_lines(summary):
            console.print(line, highlight=False, soft_wrap=True)
        console.print(f"wrote {out}", highlight=False)
        return
    report = write_report(out)
    console.print(one_line(summary), highlight=False, soft_wrap=True)
    console.print(f"wrote {out}" + (f" (report {report})" if report else ""), highlight=False)
    progress.result({"out": str(out), "report": str(report) if report else None,
                     **{name: {k: summary.get(name, {}).get(k) for k in RESULT_KEYS}
                        for name in [*summary.get("models", []), "naive"]}})


def _run(store: list[Path], settings: TrainConfig, out: Path, cv: int | None, overwrite: bool,
         on_step: Callable[[str, int, int], None] | None,
         on_epoch: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Train the models, or cross-validate them with ``cv`` folds."""
    if cv is None:
        return train_models(store, settings, out, overwrite=overwrite, on_step=on_step,
                            on_epoch=on_epoch)
    from fedecg.training.crossval import cross_validate

    return cross_validate(store, settings, out, cv, overwrite, on_step)


def cv_lines(summary: dict[str, Any]) -> list[str]:
    """Per model: out-of-fold macro AUROC and each scored diagnosis label with its CI."""
    lines = []
    for name in [*summary["models"], "naive"]:
        dx = summary[name]["diagnosis"]
        labels = ", ".join(f"{label} {_fmt(v['auroc'])}{_ci(v['auroc_ci'])} ({v['positives']}+)"
                           for label, v in dx["labels"].items() if v["auroc"] is not None)
        lines.append(f"{name}: {summary['folds']}-fold out-of-fold dx macro AUROC "
                     f"{_fmt(dx['macro_auroc'])}{_ci(dx['macro_auroc_ci'])}; {labels}")
    return lines


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""
    app.command("train")(train)
