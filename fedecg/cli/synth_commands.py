"""``fedecg synth``: write a synthetic MIMIC twin, or waveforms for real clinical tables."""

from __future__ import annotations

from pathlib import Path

import typer

from fedecg.cli.common import console, friendly_errors
from fedecg.data.synth import SYNTH_VERSION, generate_twin, synthesize_from_clinical
from fedecg.errors import ConfigError


@friendly_errors
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write (must not exist unless "
                             "--overwrite)."),
    patients: int = typer.Option(1000, "--patients", help="Number of synthetic patients."),
    sites: int = typer.Option(4, "--sites", help="Number of hospitals the ECGs come from."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same data."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
    workers: int = typer.Option(1, "--workers", help="Processes writing waveforms."),
    tables_only: bool = typer.Option(
        False, "--tables-only", help="Write every table (hosp/, record_list.csv, "
        "machine_measurements.csv) but no waveform: tests the table path at MIMIC's size."),
    lab_fraction: float | None = typer.Option(
        None, "--lab-fraction", help="With --tables-only: pad labevents with non-panel rows "
        "to this fraction of MIMIC-IV v2.2's 118,171,367 rows."),
    clinical_from: Path | None = typer.Option(
        None, "--clinical-from", help="A MIMIC-IV root holding hosp/: keep its real tables and "
        "synthesize only waveforms."),
    generator_version: int = typer.Option(
        SYNTH_VERSION, "--generator-version", help="Generator version: 1 (before the "
        "literature ECG effects of nine conditions) or 2 (with them); an older version gives "
        "exactly the bytes it gave."),
    record_list: Path | None = typer.Option(
        None, "--record-list", help="With --clinical-from: the real record_list.csv whose "
        "ECG times and paths to keep."),
) -> None:
    """Write a synthetic MIMIC-IV-ECG + MIMIC-IV hosp dataset (or waveforms for real tables)."""
    if clinical_from is None:
        if record_list is not None:
            raise ConfigError("synth: --record-list was given without --clinical-from; "
                              "pass both, or neither for a fully synthetic twin")
        summary = generate_twin(out, patients=patients, sites=sites, seed=seed,
                                overwrite=overwrite, workers=workers, tables_only=tables_only,
                                lab_fraction=lab_fraction, generator_version=generator_version,
                                console=console)
        wrote = "wrote the tables (no waveforms) of" if summary.tables_only else "wrote"
        console.print(f"{wrote} {summary.ecgs} ECGs of "
                      f"{summary.patients} patients ({summary.admissions} admissions, "
                      f"{summary.lab_events} lab events, {len(summary.sites)} hospitals) to "
                      f"{summary.out} in {summary.seconds:.1f} s")
        return
    if tables_only or lab_fraction is not None:
        raise ConfigError("synth: --tables-only/--lab-fraction were given with "
                          "--clinical-from, which keeps real tables; drop one of them")
    if record_list is None:
        raise ConfigError("synth: --clinical-from needs --record-list RECORD_LIST (the real "
                          "MIMIC-IV-ECG record_list.csv)")
    summary = synthesize_from_clinical(clinical_from, record_list, out, seed=seed,
                                       overwrite=overwrite, workers=workers,
                                       generator_version=generator_version, console=console)
    console.print(f"wrote {summary.ecgs} synthetic waveforms for the real records of "
                  f"{summary.patients} patients to {summary.out} in {summary.seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add ``synth`` to the ``fedecg`` command."""
    app.command("synth")(synth)
