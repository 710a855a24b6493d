"""``generate_twin``: write a complete synthetic MIMIC-IV-ECG + MIMIC-IV ``hosp`` dataset."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from fedecg.data.leads import MIMIC_LEADS
from fedecg.data.progress import CountProgress, format_duration, say
from fedecg.data.synth.assemble import CONDITIONS, LAB_NAMES, build_world
from fedecg.data.synth.hosp_writer import write_hosp
from fedecg.data.synth.lab_filler import MIMIC_LABEVENT_ROWS
from fedecg.data.synth.literature_effects import LITERATURE_COLUMNS
from fedecg.data.synth.mimic_writer import (
    RECORD_LIST_COLUMNS,
    machine_measurements,
    v10_path,
    write_csv,
    write_wfdb,
)
from fedecg.data.synth.morphology import MORPHOLOGY_COLUMNS
from fedecg.data.synth.sites import SiteProfile, make_sites
from fedecg.data.synth.waveform import FS, synthesize_record
from fedecg.errors import ConfigError
from fedecg.io import OutputKind, atomic_directory, atomic_write_text, claim_output

SYNTH_VERSION = 2
"""The newest generator; bumped whenever the same seed would give different data. Part of any
twin cache key. Version 1: no ECG sign of nine conditions; 2: their literature effects
(``literature_effects``)."""
GENERATOR_VERSIONS = (1, 2)
"""Versions ``generate_twin`` can still write, each byte for byte as it first did."""
TABLES_STREAM = 1
WAVEFORM_STREAM = 3
RECORDS_PER_TASK = 256
TRUTH_FILE = Path("latent") / "ecg_truth.parquet"
README = """fedecg synthetic twin of MIMIC-IV-ECG v1.0 and MIMIC-IV hosp (NOT real patient data).

Made by `fedecg synth` (generator version {version}, seed {seed}, {patients} patients,
{n_sites} virtual hospitals).
Every value here was drawn from fedecg's latent-physiology model (fedecg/data/synth): patients
have conditions, conditions shift lab values and ECG morphology, and virtual hospitals differ in
population, coding habits, ECG carts and filtering.

  record_list.csv, machine_measurements.csv, files/   MIMIC-IV-ECG v1.0 layout (WFDB, 500 Hz)
  hosp/*.csv.gz                                       MIMIC-IV hosp tables, MIMIC's columns
  latent/ecg_truth.parquet                            the latent truth per study_id: hospital,
                                                      true conditions, latent labs, morphology
Hospitals: {site_lines}
The hospital of an ECG shows in machine_measurements.cart_id (each cart belongs to one
hospital) and in admissions.admit_provider_id; admission_location mixes differ by hospital.
Use the truth file only to validate models, never as a training input.
"""
TABLES_ONLY_NOTE = """
TABLES ONLY (`fedecg synth --tables-only`): every table above was written, but no waveform:
files/ does not exist and the paths in record_list.csv name records that were not written;
latent/ecg_truth.parquet has no nan_runs column. The tables are the ones a full twin of the
same seed, size and hospitals holds, byte for byte (unless --lab-fraction padded labevents).
labevents: {lab_rows:,} rows, {share:.1%} of MIMIC-IV v2.2's {mimic_rows:,}. Use it to test
the table path (reading, joining, memory) at MIMIC's size, not to train.
"""


@dataclass
class TwinSummary:
    """What ``generate_twin`` wrote."""

    out: Path
    patients: int
    ecgs: int
    admissions: int
    lab_events: int
    seconds: float
    sites: list[str] = field(default_factory=list)
    tables_only: bool = False


def check_generator_version(version: int) -> None:
    """A clear error for a generator version this fedecg cannot write."""
    if version not in GENERATOR_VERSIONS:
        raise ConfigError(f"synth: generator version {version}; expected one of "
                          f"{', '.join(map(str, GENERATOR_VERSIONS))} (1: the twin before the "
                          f"literature ECG effects, {SYNTH_VERSION}: the newest)")


def ecg_parameter_columns(ecgs: pd.DataFrame) -> list[str]:
    """The morphology columns of ``ecgs``: version 1's, and the literature's where drawn."""
    return [*MORPHOLOGY_COLUMNS, *(c for c in LITERATURE_COLUMNS if c in ecgs)]


def _record_job(args: tuple[Path, int, int, pd.DataFrame, list[SiteProfile]]) -> list[int]:
    """Synthesize and write one block of records, the first being record ``first`` of the
    twin; returns their NaN-run counts."""
    staging, seed, first, block, site_list = args
    counts = []
    for offset, row in enumerate(block.to_dict("records")):
        rng = np.random.default_rng([seed, WAVEFORM_STREAM, first + offset])
        sig, nan_runs = synthesize_record(row, site_list[row["hospital"]], rng)
        write_wfdb(staging / row["path"], sig, FS, MIMIC_LEADS, row["ecg_time"].to_pydatetime())
        counts.append(nan_runs)
    return counts


@contextmanager
def record_pool(workers: int) -> Iterator[Executor | None]:
    """Processes for ``write_waveforms``, forked now, while this process holds little memory
    (forked later, each would start as a copy of the whole latent world); None for 1 worker."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        pool.submit(int).result()  # a fork pool starts all its processes at the first task
        yield pool


def write_waveforms(staging: Path, ecgs: pd.DataFrame, sites: Sequence[SiteProfile], seed: int,
                    pool: Executor | None = None, console: Console | None = None) -> np.ndarray:
    """Synthesize and write every ECG's WFDB record; returns each record's NaN-run count.

    Each record has its own random stream, so the output does not depend on the ``pool``
    (``record_pool``). Tasks are blocks of ``RECORDS_PER_TASK`` rows of the few columns a
    record needs. With ``console`` the progress is shown there.
    """
    table = ecgs[[*ecg_parameter_columns(ecgs), "precordial_gain", "hospital", "path",
                  "ecg_time"]]
    tasks = ((staging, seed, first, table.iloc[first:first + RECORDS_PER_TASK], list(sites))
             for first in range(0, len(table), RECORDS_PER_TASK))
    counts: list[int] = []
    with CountProgress(console, "synth", len(table), unit="ECGs") as progress:
        for part in map(_record_job, tasks) if pool is None else pool.map(_record_job, tasks):
            counts.extend(part)
            progress.update(len(counts))
    return np.array(counts, dtype=int)


def truth_table(ecgs: pd.DataFrame, sites: Sequence[SiteProfile], coded: pd.DataFrame,
                nan_runs: np.ndarray | None) -> pd.DataFrame:
    """The latent truth per ECG (``latent/ecg_truth.parquet``); ``coded`` holds the coded
    conditions per ``hadm_id``; ``nan_runs`` is None when no waveforms were written."""
    e = ecgs  # short name for the many columns below
    truth = pd.DataFrame({
        "study_id": e["study_id"], "subject_id": e["subject_id"], "hospital": e["hospital"],
        "hospital_name": [sites[h].name for h in e["hospital"]],
        "hadm_id": e["hadm_id"].where(e["admitted"]).astype("Int64"),
        "ecg_time": e["ecg_time"], "age": e["age"], "gender": e["gender"],
        "cart_id": e["cart_id"], "in_admission": e["admitted"],
    })
    for name in CONDITIONS:
        truth[f"cond_{name}"] = e[name].to_numpy(dtype=bool)
    coded_rows = coded.reindex(truth["hadm_id"].fillna(-1).to_numpy())
    for name in CONDITIONS:
        truth[f"coded_{name}"] = pd.array(coded_rows[name].to_numpy(), dtype="boolean")
    for name in LAB_NAMES:
        truth[f"latent_{name}"] = e[name].to_numpy()
    for name in ecg_parameter_columns(e):
        truth[name] = e[name].to_numpy()
    if nan_runs is not None:
        truth["nan_runs"] = nan_runs
    return truth


def _check(patients: int, sites: int, workers: int, tables_only: bool,
           lab_fraction: float | None, generator_version: int) -> None:
    check_generator_version(generator_version)
    if patients < 1 or sites < 1 or workers < 1:
        raise ConfigError(f"synth: patients={patients}, sites={sites}, workers={workers}; "
                          "expected each to be at least 1")
    if lab_fraction is not None and not tables_only:
        raise ConfigError(f"synth: --lab-fraction {lab_fraction:g} without --tables-only; "
                          "filler lab rows are only for tables-only twins: add --tables-only")
    if lab_fraction is not None and not 0 < lab_fraction <= 1:
        raise ConfigError(f"synth: --lab-fraction {lab_fraction:g}; expected a fraction of "
                          f"MIMIC-IV's {MIMIC_LABEVENT_ROWS:,} labevents rows in (0, 1]")


def _write_ecg_tables(staging: Path, ecgs: pd.DataFrame, profiles: Sequence[SiteProfile],
                      coded: pd.DataFrame, nan_runs: np.ndarray | None) -> None:
    """``record_list.csv``, ``machine_measurements.csv`` and the latent truth."""
    record_list = ecgs.assign(file_name=ecgs["study_id"], ecg_time=ecgs["ecg_time_text"])
    write_csv(record_list[RECORD_LIST_COLUMNS], staging / "record_list.csv")
    del record_list
    write_csv(machine_measurements(
        ecgs, [profiles[h].bandwidth for h in ecgs["hospital"]],
        [profiles[h].filtering for h in ecgs["hospital"]]),
        staging / "machine_measurements.csv")
    (staging / TRUTH_FILE.parent).mkdir()
    truth_table(ecgs, profiles, coded, nan_runs).to_parquet(staging / TRUTH_FILE, index=False)


def _readme(profiles: Sequence[SiteProfile], seed: int, patients: int, tables_only: bool,
            lab_rows: int, version: int) -> str:
    site_lines = "; ".join(f"{s.hospital}={s.name} ({s.bandwidth}, carts "
                           f"{', '.join(map(str, s.cart_ids))})" for s in profiles)
    text = README.format(version=version, seed=seed, patients=patients,
                         n_sites=len(profiles), site_lines=site_lines)
    if tables_only:
        text += TABLES_ONLY_NOTE.format(lab_rows=lab_rows, mimic_rows=MIMIC_LABEVENT_ROWS,
                                        share=lab_rows / MIMIC_LABEVENT_ROWS)
    return text


def generate_twin(out: Path, patients: int = 1000, sites: int = 3, seed: int = 0,
                  overwrite: bool = False, workers: int = 1, tables_only: bool = False,
                  lab_fraction: float | None = None,
                  generator_version: int = SYNTH_VERSION,
                  console: Console | None = None) -> TwinSummary:
    """Write a synthetic MIMIC-IV-ECG v1.0 + MIMIC-IV ``hosp`` dataset into ``out`` atomically.

    ``tables_only`` writes every table but no waveform file; ``lab_fraction`` (tables only)
    pads ``labevents`` to that fraction of MIMIC-IV's rows with non-panel filler rows.
    ``generator_version`` (``GENERATOR_VERSIONS``) picks the generator; an older one gives
    exactly the bytes it gave. With ``console`` the phases and progress are shown there.
    """
    _check(patients, sites, workers, tables_only, lab_fraction, generator_version)
    claim_output(Path(out), OutputKind.TWIN, overwrite=overwrite)
    started = time.perf_counter()
    with (record_pool(1 if tables_only else workers) as pool,
          atomic_directory(Path(out), OutputKind.TWIN, overwrite=overwrite) as staging):
        profiles = make_sites(sites, seed)
        say(console, f"synth: {patients:,} patients at {sites} hospitals (generator version "
                     f"{generator_version}, seed {seed})")
        world = build_world(patients, profiles, seed, generator_version)
        ecgs = world.ecgs
        ecgs["path"] = [v10_path(s, t) for s, t in zip(ecgs["subject_id"], ecgs["study_id"],
                                                        strict=True)]
        ecgs["ecg_time_text"] = ecgs["ecg_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
        lab_rows, coded = write_hosp(staging / "hosp", world, np.random.default_rng(
            [seed, TABLES_STREAM]), seed, lab_fraction)
        say(console, f"synth: hosp/ written ({lab_rows:,} lab events) after "
                     f"{format_duration(time.perf_counter() - started)}"
                     + ("" if tables_only else f"; writing {len(ecgs):,} ECGs"))
        nan_runs = None if tables_only else write_waveforms(staging, ecgs, profiles, seed, pool,
                                                            console)
        _write_ecg_tables(staging, ecgs, profiles, coded, nan_runs)
        atomic_write_text(staging / "README.txt",
                          _readme(profiles, seed, patients, tables_only, lab_rows,
                                  generator_version))
    return TwinSummary(out=Path(out), patients=patients, ecgs=len(ecgs),
                       admissions=int(world.episodes["admitted"].sum()), lab_events=lab_rows,
                       seconds=time.perf_counter() - started, sites=[s.name for s in profiles],
                       tables_only=tables_only)
