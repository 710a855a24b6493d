"""``fedecg partition`` and ``fedecg simulate``: virtual hospitals and federated studies."""

from __future__ import annotations

from pathlib import Path

import torch
import typer
from rich.table import Table

from fedecg.cli.common import console, friendly_errors
from fedecg.config.base import load_config, validate_config
from fedecg.config.federated import PartitionConfig, SimulationConfig
from fedecg.data.store import SiteStore
from fedecg.errors import ConfigError, FedecgError
from fedecg.federated.partition import (
    Partition,
    check_partition_out,
    partition_store,
    write_partition,
)


@friendly_errors
def partition(
    store: Path = typer.Argument(..., help="Site store folder made by `fedecg prepare`."),
    out: Path = typer.Option(..., "--out", help="Folder to write partition.json into."),
    method: str = typer.Option("iid", help="iid | dirichlet | quantity | natural."),
    sites: int = typer.Option(4, "--sites", help="Number of virtual sites."),
    alpha: float = typer.Option(0.5, help="Dirichlet concentration (dirichlet, quantity)."),
    column: str | None = typer.Option(None, help="Cohort column: sites (natural) or label."),
    seed: int = typer.Option(0, help="Seed of the deal."),
) -> None:
    """Split a store into patient-disjoint virtual sites (row indices only, no copies)."""
    config = validate_config(PartitionConfig, {
        "method": method, "num_sites": sites, "alpha": alpha, "column": column, "seed": seed},
        "fedecg partition")
    check_partition_out(out)
    result = partition_store(SiteStore.open(store), config)
    path = write_partition(result, out)
    console.print(partition_table(result))
    console.print(f"wrote {path}")


def partition_table(result: Partition) -> Table:
    """A rich table of the sites of a partition: patients, records per split, labels."""
    table = Table(title=f"{result.config.method} partition, label skew {result.label_skew:.3f}")
    for name in ("site", "patients", "records", "train", "val", "test", "top labels"):
        table.add_column(name)
    for site in result.sites:
        top = sorted(site.label_counts.items(), key=lambda kv: -kv[1])[:3]
        table.add_row(site.name if site.natural_id is None else f"{site.name} ({site.natural_id})",
                      str(site.n_patients), str(site.n_records),
                      *(str(site.split_counts[s]) for s in ("train", "val", "test")),
                      ", ".join(f"{k}:{v}" for k, v in top))
    return table


@friendly_errors
def simulate(
    config: Path | None = typer.Option(None, "--config",
                                       help="Study YAML (e.g. configs/quickstart.yaml)."),
    out: Path | None = typer.Option(None, "--out", help="Study folder to write (RUN)."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a setting, e.g. --set partition.method=dirichlet."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the study in RUN."),
    baselines: bool = typer.Option(False, "--baselines",
                                   help="Also train pooled and local-only baselines."),
    seeds: str | None = typer.Option(None, "--seeds", help="Repeat for seeds, e.g. 0,1,2."),
) -> None:
    """Run a federated study on virtual hospitals (Flower simulation) and write its report."""
    from fedecg.federated.simulate import CONFIG_FILE, run_study
    from fedecg.privacy.apps import client_app, client_level
    from fedecg.privacy.sweep import card_entry, site_budgets

    if (resume is None) == (out is None):
        raise ConfigError("give --out RUN for a new study, or --resume RUN to continue one")
    run_dir = resume if resume is not None else out
    extra = list(overrides or [])
    if baselines:
        extra.append("baselines=true")
    if seeds is not None:
        extra.append(f"seeds=[{seeds}]")
    source = config if resume is None else (config or Path(run_dir) / CONFIG_FILE)
    settings = load_config(SimulationConfig, source, extra)
    if settings.train.threads is None:
        torch.set_num_threads(1)
    summary = run_study(settings, Path(run_dir), resume=resume is not None,
                        say=lambda text: console.print(f"[bold]•[/] {text}", highlight=False),
                        progress=_progress, client_app=client_app, wrap_for=client_level,
                        console=console)
    card_entry(Path(run_dir), site_budgets(Path(run_dir)))  # privacy section of the model card
    console.print(results_table(summary))
    _report(Path(run_dir))


def _progress(event: dict) -> None:
    console.print(f"  {event['model']} · {event['stage']} round {event['round']}/"
                  f"{event['rounds']}", highlight=False)


def _report(run_dir: Path) -> None:
    try:
        from fedecg.report.run_report import write_run_report

        console.print(f"wrote {write_run_report(run_dir)}")
    except FedecgError as exc:  # the study is written; a report problem is reported, not fatal
        console.print(f"[yellow]report not written:[/] {exc}", highlight=False)


def results_table(summary: dict, title: str = "test macro AUROC (pooled test split)") -> Table:
    """Diagnosis/lab macro AUROC of each model: federated, and pooled and mean local-only
    when the study trained those baselines."""
    table = Table(title=title)
    baselines = bool(summary["pooled"])
    names = ("model", "federated dx", *(("pooled dx", "local-only dx") if baselines else ()),
             "federated lab")
    for name in names:
        table.add_column(name)
    for model, entry in summary["federated"].items():
        extra = [_fmt(summary[part].get(model, {}).get("diagnosis_macro_auroc"))
                 for part in ("pooled", "local_only")] if baselines else []
        table.add_row(model, _fmt(entry.get("diagnosis_macro_auroc")), *extra,
                      _fmt(entry.get("lab_macro_auroc")))
    return table


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    """Add the federated commands to ``app``."""
    app.command("partition")(partition)
    app.command("simulate")(simulate)


__all__ = ["register"]
