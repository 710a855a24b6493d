"""``fedecg train``: the three models on one or more pooled stores, then the run report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedecg.cli.common import console, friendly_errors
from fedecg.config.base import load_config
from fedecg.config.train import TrainConfig
from fedecg.errors import FedecgError
from fedecg.training.pipeline import train_models

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


@friendly_errors
def train(
    store: list[Path] = typer.Option(..., "--store", help="Site store; repeat to pool several."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (resumes if unfinished)."),
    config: Path | None = typer.Option(None, "--config", help="YAML TrainConfig."),
    models: str | None = typer.Option(None, "--models",
                                      help="Comma-separated: signal-only,transfer,multimodal."),
    seed: int | None = typer.Option(None, "--seed", help="Seed (overrides the config)."),
    overrides: list[str] = typer.Option([], "--set", help="KEY=VALUE config override."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    cv: int | None = typer.Option(None, "--cv", min=3, help="K-fold patient-grouped cross-"
                                  "validation: out-of-fold per-label AUROC with CIs."),
) -> None:
    """Train signal-only, transfer and multimodal models; write metrics, model and report."""
    settings = load_config(TrainConfig, config, build_overrides(models, seed, overrides))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None)

        def on_step(label: str, done: int, total: int) -> None:
            progress.update(task, description=label, completed=done, total=total)

        if cv is not None:
            from fedecg.training.crossval import cross_validate

            summary = cross_validate(store, settings, out, cv, overwrite, on_step)
        else:
            summary = train_models(store, settings, out, overwrite=overwrite, on_step=on_step)
    if cv is not None:
        for line in cv_lines(summary):
            console.print(line, highlight=False, soft_wrap=True)
        console.print(f"wrote {out}", highlight=False)
        return
    report = write_report(out)
    console.print(one_line(summary), highlight=False, soft_wrap=True)
    console.print(f"wrote {out}" + (f" (report {report})" if report else ""), highlight=False)


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
