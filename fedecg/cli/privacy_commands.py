"""``fedecg sweep privacy``: the federated study at several privacy budgets, table and plot."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
import typer
from rich.table import Table

from fedecg.cli.common import console, friendly_errors
from fedecg.cli.progress import LOG_JSON_HELP, QUIET_HELP, RunProgress, output_mode
from fedecg.config.base import load_config
from fedecg.config.federated import StudyConfig
from fedecg.io import SHARED, atomic_write_bytes

PLOT_FILE = "privacy_utility.png"
sweep_app = typer.Typer(help="Repeat a federated study over a range of settings.",
                        no_args_is_help=True)


@friendly_errors
def privacy(
    config: Path | None = typer.Option(None, "--config", help="Study YAML (as for simulate)."),
    epsilons: str = typer.Option("1,3,8,inf", "--epsilons",
                                 help="Budgets to run, comma-separated; inf = no DP."),
    seeds: str | None = typer.Option(None, "--seeds", help="Repeat for seeds, e.g. 0,1,2."),
    out: Path = typer.Option(..., "--out", help="Sweep folder (rerun to continue it)."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a setting, e.g. --set privacy.mode=client."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    log_json: bool = typer.Option(False, "--log-json", help=LOG_JSON_HELP),
) -> None:
    """Run the federated study at each privacy budget; write a table, a plot and summaries.

    Prints one line per round (validation loss and AUROC, ETA of the sweep's rounds).
    """
    from fedecg.app import run_sweep
    from fedecg.cli.federated_commands import round_plan, round_reporter
    from fedecg.privacy.sweep import parse_epsilons
    from fedecg.report.privacy_plot import utility_figure

    budgets = parse_epsilons(epsilons)
    extra = list(overrides or [])
    if seeds is not None:
        extra.append(f"seeds=[{seeds}]")
    settings = load_config(StudyConfig, config, extra)
    if settings.train.threads is None:
        torch.set_num_threads(1)
    progress = RunProgress(round_plan(settings)[1] * len(budgets), "round",
                           output_mode(quiet, log_json), console)

    def say(text: str) -> None:
        progress.note(text)
        progress.restart_clock()

    rows = run_sweep(settings, budgets, out, say=say,
                     progress=round_reporter(settings, progress))
    console.print(sweep_table(rows))
    plot_path = Path(out) / PLOT_FILE
    png = io.BytesIO()
    utility_figure(rows).savefig(png, format="png", dpi=120)
    atomic_write_bytes(plot_path, png.getvalue(), SHARED)
    console.print(f"wrote {Path(out) / 'privacy_utility.csv'} and {plot_path}")


def sweep_table(rows: list[dict[str, Any]]) -> Table:
    """A rich table of the sweep: AUROCs, the share kept, and the largest site ε."""
    table = Table(title="privacy-utility (pooled test split, federated)")
    for name in ("ε", "model", "diagnosis AUROC", "lab AUROC", "dx kept", "max site ε"):
        table.add_column(name)
    for row in rows:
        table.add_row(row["epsilon"], row["model"], _fmt(row["diagnosis_macro_auroc"]),
                      _fmt(row["lab_macro_auroc"]), _fmt(row["dx_auroc_kept"]),
                      _fmt(row["max_site_epsilon"]))
    return table


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def register(app: typer.Typer) -> None:
    """Add ``fedecg sweep privacy`` to ``app``."""
    sweep_app.command("privacy")(privacy)
    app.add_typer(sweep_app, name="sweep")


__all__ = ["register"]
