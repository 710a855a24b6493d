"""``fedecg prepare`` and ``fedecg validate``: a site's inputs into a store, and a data report."""

from __future__ import annotations

from pathlib import Path

import typer

from fedecg.cli.common import console, friendly_errors
from fedecg.config.base import apply_overrides, load_config, validate_config
from fedecg.config.data import PrepareConfig
from fedecg.config.federated import StudyConfig
from fedecg.data.prepare import MimicInput, PrepareInput, SiteInput, prepare_store
from fedecg.data.validate import detect_input, render_report, report_input, report_store
from fedecg.errors import ConfigError

CONFIG_HELP = "YAML preset (see configs/prepare.yaml)."
SET_HELP = "Override a setting, e.g. --set cohort.label_window_hours=12 (repeatable)."


def _config(config: Path | None, overrides: list[str] | None, study: Path | None = None,
            **flags: object) -> PrepareConfig:
    extra = [*(overrides or []),
             *(f"{key}={value}" for key, value in flags.items() if value is not None)]
    if study is None:
        return load_config(PrepareConfig, config, extra)
    if config is not None:
        raise ConfigError("give --config or --study, not both")
    deployed = load_config(StudyConfig, study, []).data.deployed
    if deployed is None:
        raise ConfigError(f"{study}: no data.deployed section, so it names no prepare settings "
                          "for the hospitals; pass --config instead")
    return validate_config(PrepareConfig, apply_overrides(deployed.prepare.model_dump(
        mode="json"), extra), f"{study}: data.deployed.prepare")


def _inputs(ecg_root: Path | None, mimic_root: Path | None, site_dir: Path | None
            ) -> PrepareInput:
    if site_dir is not None and (ecg_root or mimic_root):
        raise ConfigError("give either --site-dir (generic layout) or --ecg-root with "
                          "--mimic-root (MIMIC layout), not both")
    if site_dir is not None:
        return SiteInput(site_dir)
    if ecg_root is None or mimic_root is None:
        raise ConfigError("missing input: give --ecg-root DIR --mimic-root DIR (MIMIC layout) or "
                          "--site-dir DIR (generic layout, see client/README.md)")
    return MimicInput(ecg_root, mimic_root)


@friendly_errors
def prepare(
    out: Path = typer.Option(..., "--out", help="Store folder to write."),
    ecg_root: Path | None = typer.Option(None, help="MIMIC-IV-ECG folder (record_list.csv)."),
    mimic_root: Path | None = typer.Option(None, help="MIMIC-IV folder holding hosp/ (and ed/)."),
    site_dir: Path | None = typer.Option(None, help="Generic site folder (client/README.md)."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    study: Path | None = typer.Option(None, "--study", help="A deployed study's YAML: prepare "
                                      "with its data.deployed.prepare settings."),
    overrides: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    on_error: str | None = typer.Option(None, help="raise | skip (skip lists rejects.csv)."),
    workers: int | None = typer.Option(None, help="Waveform processes."),
    site_name: str | None = typer.Option(None, help="Site name in the manifest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted "
                                "prepare of the same inputs and settings, or start afresh."),
) -> None:
    """Convert a site's ECGs and clinical tables into a site store.

    A killed prepare continues where it stopped when the same command is run again."""
    settings = _config(config, overrides, study, on_error=on_error, workers=workers)
    if site_name is not None:
        settings.site_name = site_name
    result = prepare_store(_inputs(ecg_root, mimic_root, site_dir), out, settings,
                           overwrite=overwrite, console=console, resume=resume)
    console.print(result.summary(), highlight=False, soft_wrap=True)


@friendly_errors
def validate(
    path: Path = typer.Argument(..., help="A store, a generic site folder or a MIMIC-IV-ECG "
                                          "folder."),
    mimic_root: Path | None = typer.Option(None, help="MIMIC-IV folder (when PATH is ECGs)."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    overrides: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    workers: int | None = typer.Option(None, help="Processes to check records with."),
    records: bool = typer.Option(True, "--records/--no-records",
                                 help="Try to read every waveform record (raw inputs)."),
) -> None:
    """Print a data report; exit 1 when the data cannot be used as they are."""
    found = detect_input(path, mimic_root)
    if isinstance(found, Path):
        report = report_store(found)
    else:
        report = report_input(found, _config(config, overrides, workers=workers), records)
        report.source = describe_input(found)
    render_report(report, console)
    if not report.ok:
        raise typer.Exit(code=1)


def describe_input(found: PrepareInput) -> str:
    """The folders of a raw input, as a reader wants them in a report's header."""
    if isinstance(found, SiteInput):
        return f"{found.site_dir} (generic site folder)"
    return f"{found.ecg_root} (MIMIC-IV-ECG) with {found.mimic_root} (MIMIC-IV)"


def register(app: typer.Typer) -> None:
    """Add ``prepare`` and ``validate`` to ``app``."""
    app.command("prepare")(prepare)
    app.command("validate")(validate)
