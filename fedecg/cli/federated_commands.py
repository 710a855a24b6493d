"""``fedecg partition`` and ``fedecg simulate``: virtual hospitals and federated studies."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import typer
from rich.table import Table

from fedecg.cli.common import console, friendly_errors, record_command
from fedecg.cli.progress import (
    LOG_JSON_HELP,
    QUIET_HELP,
    RESULT_KEYS,
    RunProgress,
    output_mode,
)
from fedecg.config.base import load_config, validate_config
from fedecg.config.federated import PartitionConfig, StudyConfig
from fedecg.data.store import SiteStore
from fedecg.errors import ConfigError, FedecgError
from fedecg.federated import keys
from fedecg.federated.orchestration import SELECTED
from fedecg.federated.partition import (
    Partition,
    check_partition_out,
    partition_store,
    write_partition,
)
from fedecg.training.stages import build_stages


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


ROUND_METRICS = {"pretrain": (("val loss", keys.VAL_PREFIX + keys.LOSS),),
                 "lab": (("val loss", keys.VAL_PREFIX + keys.LOSS),
                         ("val lab AUROC", keys.VAL_PREFIX + keys.LAB_AUROC)),
                 "diagnosis": (("val loss", keys.VAL_PREFIX + keys.LOSS),
                               ("val dx AUROC", keys.VAL_PREFIX + keys.DIAGNOSIS_AUROC))}
"""What each stage's round line shows: the sites' validation, weighted by their examples."""


@friendly_errors
def simulate(
    config: Path | None = typer.Option(
        None, "--config", help="Study YAML, e.g. configs/quickstart.yaml (default: the "
        "built-in defaults of fedecg/config/federated.py)."),
    out: Path | None = typer.Option(None, "--out", help="Study folder to write (RUN), e.g. "
                                    "runs/quickstart."),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a setting, e.g. --set partition.method=dirichlet."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the study in RUN."),
    baselines: bool = typer.Option(False, "--baselines",
                                   help="Also train pooled and local-only baselines (default: "
                                   "the config's baselines; quickstart: true)."),
    seeds: str | None = typer.Option(None, "--seeds", help="Repeat for seeds, e.g. 0,1,2 "
                                     "(default: the config's seeds, [0])."),
    quiet: bool = typer.Option(False, "--quiet", help=QUIET_HELP),
    log_json: bool = typer.Option(False, "--log-json", help=LOG_JSON_HELP),
) -> None:
    """Run a federated study on virtual hospitals (Flower simulation) and write its report.

    Prints one line per round with the sites' validation loss and AUROC and an ETA of the
    federated rounds (the pooled and local-only baselines come on top).
    """
    from fedecg.app import run_study
    from fedecg.run_folder import RunFolder

    started = time.time()
    if (resume is None) == (out is None):
        raise ConfigError("give --out RUN for a new study, or --resume RUN to continue one")
    run_dir = resume if resume is not None else out
    extra = list(overrides or [])
    if baselines:
        extra.append("baselines=true")
    if seeds is not None:
        extra.append(f"seeds=[{seeds}]")
    source = config if resume is None else (config or RunFolder(run_dir).config)
    settings = load_config(StudyConfig, source, extra)
    if settings.train.threads is None:
        torch.set_num_threads(1)
    progress = RunProgress(round_plan(settings)[1], "round", output_mode(quiet, log_json),
                           console)

    def say(text: str) -> None:
        progress.note(text)
        progress.restart_clock()

    summary = run_study(settings, Path(run_dir), resume=resume is not None, say=say,
                        progress=round_reporter(settings, progress), console=console)
    console.print(results_table(summary))
    record_command(Path(run_dir), started, resumed=resume is not None)
    report = _report(Path(run_dir))
    progress.result({"out": str(run_dir), "report": str(report) if report else None,
                     "federated": {model: {k: entry.get(k) for k in RESULT_KEYS}
                                   for model, entry in summary["federated"].items()}})


def round_plan(config: StudyConfig) -> tuple[dict[tuple[int, str], int], int]:
    """Rounds done before each ``(seed, model)`` starts, and the study's federated rounds."""
    offsets: dict[tuple[int, str], int] = {}
    total = 0
    for seed in config.seeds:
        for name in config.train.models:
            offsets[(seed, name)] = total
            total += sum(config.federation.rounds.of(stage.name) for stage in
                         build_stages(config.train, pretrained=name == "transfer"))
    return offsets, total


def round_reporter(config: StudyConfig, progress: RunProgress) -> Callable[[dict], None]:
    """The ``progress`` hook of ``run_study``: one line per round (see ``RunProgress``).

    Several studies may report through it one after the other (``fedecg sweep``): a round
    number lower than the last one starts the next study's share of ``progress.total``.
    """
    offsets, per_study = round_plan(config)
    last = {"done": 0, "base": 0}

    def on_round(event: dict) -> None:
        seed = event.get("seed", config.seeds[0])
        done = offsets.get((seed, event["model"]), 0) + event["global_round"]
        if done <= last["done"]:
            last["base"] += per_study
        last["done"] = done
        report_round(progress, last["base"] + done, {**event, "seed": seed},
                     several_seeds=len(config.seeds) > 1)

    return on_round


def report_round(progress: RunProgress, done: int, event: dict, several_seeds: bool) -> None:
    """One round's line: the sites' example-weighted validation metrics of the aggregated model;
    at a stage's end, the round it keeps (model selection) and whether it stopped early."""
    lines = event.get("lines", [])
    weighted = next((line for line in lines if line.get("kind") == "evaluate"
                     and line.get("site") == "all"), {})
    sites = [line for line in lines if line.get("kind") == "train"]
    selected = next((line for line in lines if line.get("kind") == SELECTED), None)
    shown = ROUND_METRICS.get(event["stage"], ())
    model, seed, stage = event["model"], event["seed"], event["stage"]
    prefix = f"seed {seed} · " if several_seeds else ""
    label = f"{prefix}{model} · {stage} round {event['round']}/{event['rounds']}"
    details = {"seed": seed, "model": model, "stage": stage, "round": event["round"],
               "rounds": event["rounds"], "sites": len(sites),
               **{key.replace("-", "_"): weighted.get(key) for _, key in shown}}
    if selected is not None:
        kept = selected["selected-stage-round"]
        stopped = selected["rounds-trained"] < selected["rounds-planned"]
        label += f" · {'stopped, ' if stopped else ''}keeps round {kept}"
        details.update(kept_round=kept, stopped_early=stopped)
    progress.unit_done(done, label, {name: weighted.get(key) for name, key in shown}, details)


def _report(run_dir: Path) -> Path | None:
    try:
        from fedecg.report.run_report import write_run_report

        path = write_run_report(run_dir)
    except FedecgError as exc:  # the study is written; a report problem is reported, not fatal
        console.print(f"[yellow]report not written:[/] {exc}", highlight=False)
        return None
    console.print(f"wrote {path}")
    return path


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
