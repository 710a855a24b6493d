"""``fedecg validate``: a data report a hospital can act on, for a store or for raw inputs.

The report gives counts, ECG↔lab linkage per window, label prevalence, missingness per
clinical feature, rejected table rows and unreadable records with reasons, and lists fatal
problems (no ECGs, every record unreadable, no ECG linked to any lab...) that make the command
exit non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from fedecg.config.data import PrepareConfig
from fedecg.data.cohort import (
    NEAREST_LAB_HOURS,
    build_cohort,
    clinical_feature_names,
    resolve_diagnosis_set,
    resolve_panel,
)
from fedecg.data.generic import is_generic_site
from fedecg.data.labs import panel_label_names
from fedecg.data.prepare import MimicInput, PrepareInput, SiteInput, load_input, stream_records
from fedecg.data.store import (
    MANIFEST_FILE,
    REJECTS_FILE,
    SiteStore,
    label_prevalence,
    split_problems,
)
from fedecg.data.tables import Rejects, has_table
from fedecg.errors import InputFileError, RecordError

LINKAGE_WINDOWS_HOURS = (1.0, 6.0, 24.0)


@dataclass
class DataReport:
    """What ``fedecg validate`` found."""

    source: str
    kind: str
    counts: dict[str, int]
    linkage: dict[float, float | None]
    prevalence: dict[str, dict[str, float]]
    missingness: dict[str, float]
    rejects: pd.DataFrame
    fatal: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing fatal was found."""
        return not self.fatal


def detect_input(path: Path, mimic_root: Path | None = None) -> Path | PrepareInput:
    """A store folder (returned as its path), a generic site, or a MIMIC-IV-ECG root."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return path
    if is_generic_site(path):
        return SiteInput(path)
    if has_table(path, "record_list"):
        root = mimic_root or (path if (path / "hosp").is_dir() else None)
        if root is None:
            raise InputFileError(f"{path}: a MIMIC-IV-ECG folder, but no MIMIC-IV tables: pass "
                                 "--mimic-root DIR (the folder holding hosp/)")
        return MimicInput(path, Path(root))
    raise InputFileError(f"{path}: not a site store (no {MANIFEST_FILE}), a generic site (no "
                         "ecgs.csv) or a MIMIC-IV-ECG folder (no record_list.csv)")


def _linkage(cohort: pd.DataFrame, feature_window: float) -> dict[float, float | None]:
    hours = cohort[NEAREST_LAB_HOURS].to_numpy(dtype=float)
    return {w: (float(np.mean(hours <= w)) if w <= feature_window and len(hours) else None)
            for w in LINKAGE_WINDOWS_HOURS}


def _assess(report: DataReport, cohort: pd.DataFrame) -> None:
    n = report.counts.get("ecgs", 0)
    unreadable = report.counts.get("unreadable_records", 0)
    if n == 0:
        report.fatal.append("no ECGs: the ECG index lists no usable record")
    elif unreadable >= report.counts.get("records_checked", n) and unreadable:
        report.fatal.append(f"all {unreadable} records are unreadable or hold no usable ECG "
                            "(reasons below)")
    elif unreadable:
        report.warnings.append(f"{unreadable} of {n} records are unreadable or hold no usable "
                               "ECG (reasons below)")
    if n:
        _assess_links(report, cohort)
    unknown = [name for name, stats in report.prevalence.items() if not stats["known"]]
    if unknown:
        report.warnings.append(f"{len(unknown)} label(s) are unknown for every ECG (not recorded "
                               "here; never counted as negative): " + _names(unknown))
    empty = [name for name, stats in report.prevalence.items()
             if stats["known"] and not stats["positive"]]
    if empty:
        report.warnings.append(f"{len(empty)} label(s) have no positive ECG (they cannot be "
                               f"learned or evaluated here): {', '.join(empty)}")
    if n:
        report.warnings.extend(split_problems(cohort, list(report.prevalence), "this site"))
    if report.counts.get("rejected_rows", 0):
        report.warnings.append(f"{report.counts['rejected_rows']} table rows were rejected "
                               "(reasons below); `fedecg prepare` needs --on-error skip")


def _names(columns: list[str], shown: int = 8) -> str:
    more = f" and {len(columns) - shown} more" if len(columns) > shown else ""
    return ", ".join(columns[:shown]) + more


def _assess_links(report: DataReport, cohort: pd.DataFrame) -> None:
    """Linkage problems: fatal when tables exist but nothing links; a warning for a site
    without labs or ECG times (a supported mode: labs unknown, the lab stage skipped)."""
    if cohort["sex"].isna().all() and cohort["age"].isna().all():
        report.fatal.append("no ECG's patient is in the patients table: check patient ids")
    timed = int(cohort["ecg_time"].notna().sum())
    if not timed:
        report.warnings.append("no ECG has a time (ecg_time): labs and vitals cannot be linked, "
                               "labels come from the encounter each ECG names or from its own "
                               "statements")
    if not cohort[NEAREST_LAB_HOURS].isna().all():
        return
    if not report.counts.get("lab_rows", 0):
        report.warnings.append("no labs: lab features and lab-abnormality labels are unknown; "
                               "training skips the lab stage (pretraining and diagnosis run)")
    elif timed:
        report.fatal.append("no ECG has any panel lab within the feature window: check that labs "
                            "and ECGs share patient ids and the same timeline")


def _report(source: str, kind: str, cohort: pd.DataFrame, config: PrepareConfig,
            rejects: pd.DataFrame, counts: dict[str, int]) -> DataReport:
    panel, labels = resolve_panel(config.cohort), resolve_diagnosis_set(config.cohort)
    columns = [f"abn_{n}" for n in panel_label_names(panel)] + [f"dx_{d.name}" for d in labels]
    features = clinical_feature_names(panel)
    counts = {"ecgs": len(cohort), "patients": int(cohort["subject_id"].nunique()),
              "stays": int(cohort["stay_id"].nunique()),
              "ecgs_in_a_stay": int(cohort["stay_id"].notna().sum()), **counts}
    report = DataReport(source=source, kind=kind, counts=counts,
                        linkage=_linkage(cohort, config.cohort.feature_window_hours),
                        prevalence=label_prevalence(cohort, columns),
                        missingness={f: float(cohort[f].isna().mean()) if len(cohort) else 1.0
                                     for f in features}, rejects=rejects)
    _assess(report, cohort)
    return report


def report_store(path: Path) -> DataReport:
    """Report on a prepared store."""
    store = SiteStore.open(path)
    config = PrepareConfig.model_validate(store.manifest.provenance.get("config", {}))
    rejects = (pd.read_csv(Path(path) / REJECTS_FILE) if (Path(path) / REJECTS_FILE).is_file()
               else Rejects("skip").frame())
    record_rejects = int(rejects["line"].isna().sum())
    counts = {"lab_rows": store.manifest.counts.get("lab_rows", 1),
              "unreadable_records": record_rejects,
              "records_checked": len(store) + record_rejects,
              "rejected_rows": len(rejects) - record_rejects}
    return _report(str(path), "store", store.cohort, config, rejects, counts)


def report_input(inputs: PrepareInput, config: PrepareConfig,
                 check_records: bool = True) -> DataReport:
    """Report on raw inputs: read every table (collecting bad rows) and try every record."""
    rejects = Rejects("skip")
    loaded = load_input(inputs, config, rejects)
    config = loaded.config
    rejected_rows = len(rejects)
    cohort = build_cohort(loaded.ecgs, loaded.tables, config.cohort)
    unreadable = 0
    if check_records:
        paths = cohort["record_path"].astype("str").tolist()
        for index, _, _, error in stream_records(paths, config):
            if error is not None:
                unreadable += 1
                rejects.handle(RecordError(error), paths[index], None,
                               cohort["study_id"].iloc[index])
    counts = {"lab_rows": loaded.tables.lab_rows, "unreadable_records": unreadable,
              "rejected_rows": rejected_rows,
              "records_checked": len(cohort) if check_records else 0}
    return _report(str(inputs), loaded.layout, cohort, config, rejects.frame(), counts)


def render_report(report: DataReport, console: Console, max_rejects: int = 20) -> None:
    """Print the report as rich tables."""
    console.print(f"[bold]data report[/] {report.source} ({report.kind})")
    console.print(_table("counts", ["what", "n"], [(k, str(v)) for k, v in report.counts.items()]))
    console.print(_table("ECGs with a panel lab within", ["window", "ECGs"], [
        (f"±{w:g} h", "n/a (beyond feature window)" if r is None else f"{r:.1%}")
        for w, r in report.linkage.items()]))
    console.print(_table("label prevalence", ["label", "known", "positive", "prevalence"], [
        (k, str(v["known"]), str(v["positive"]),
         "-" if not v["known"] else f"{v['prevalence']:.1%}")
        for k, v in report.prevalence.items()]))
    console.print(_table("missing clinical features", ["feature", "missing"], [
        (k, f"{v:.1%}") for k, v in sorted(report.missingness.items(), key=lambda kv: -kv[1])]))
    if len(report.rejects):
        by_file = report.rejects.groupby("path", sort=False).size()
        console.print(_table("rejected inputs per file", ["path", "n"],
                             [(str(k), str(v)) for k, v in by_file.items()]))
        rows = report.rejects.head(max_rejects)
        console.print(_table(f"rejected inputs ({len(report.rejects)}, first {len(rows)})",
                             ["path", "line", "study_id", "reason"],
                             [tuple("" if pd.isna(v) else str(v) for v in row)
                              for row in rows.itertuples(index=False)]))
    for line in report.warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    for line in report.fatal:
        console.print(f"[bold red]fatal:[/] {line}", highlight=False)
    console.print("[green]ok[/]" if report.ok else "[red]not usable as it is[/]")


def _table(title: str, columns: list[str], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table
