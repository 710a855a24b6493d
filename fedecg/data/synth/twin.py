"""``generate_twin``: write a complete synthetic MIMIC-IV-ECG + MIMIC-IV ``hosp`` dataset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.data.leads import MIMIC_LEADS
from fedecg.data.synth.assemble import CONDITIONS, LAB_NAMES, World, build_world, lab_draws
from fedecg.data.synth.hosp_tables import (
    admission_frame,
    admissions_table,
    diagnoses_table,
    omr_table,
    patients_table,
)
from fedecg.data.synth.icd import icd_dictionary
from fedecg.data.synth.labevents import build_labevents, d_labitems
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

SYNTH_VERSION = 1
"""Bumped whenever the same seed would give different data; part of any twin cache key."""
TABLES_STREAM = 1
WAVEFORM_STREAM = 3
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


def _record_job(args: tuple[Path, int, list[dict], list[SiteProfile]]) -> list[int]:
    """Synthesize and write ``rows`` (one process's share); returns their NaN-run counts."""
    staging, seed, rows, site_list = args
    counts = []
    for row in rows:
        rng = np.random.default_rng([seed, WAVEFORM_STREAM, int(row["index"])])
        sig, nan_runs = synthesize_record(row, site_list[row["hospital"]], rng)
        write_wfdb(staging / row["path"], sig, FS, MIMIC_LEADS, row["ecg_time"].to_pydatetime())
        counts.append(nan_runs)
    return counts


def write_waveforms(staging: Path, ecgs: pd.DataFrame, sites: Sequence[SiteProfile], seed: int,
                    workers: int = 1) -> np.ndarray:
    """Synthesize and write every ECG's WFDB record; returns each record's NaN-run count.

    Each record has its own random stream, so the output does not depend on ``workers``.
    """
    columns = [*MORPHOLOGY_COLUMNS, "precordial_gain", "hospital", "path", "ecg_time", "index"]
    rows = ecgs.assign(index=np.arange(len(ecgs)))[columns].to_dict("records")
    if workers <= 1:
        return np.array(_record_job((staging, seed, rows, list(sites))), dtype=int)
    chunks = [rows[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(_record_job, [(staging, seed, c, list(sites)) for c in chunks]))
    counts = np.zeros(len(rows), dtype=int)
    for i, part in enumerate(parts):
        counts[i::workers] = part
    return counts


def truth_table(ecgs: pd.DataFrame, sites: Sequence[SiteProfile], coded: pd.DataFrame,
                nan_runs: np.ndarray) -> pd.DataFrame:
    """The latent truth per ECG (``latent/ecg_truth.parquet``); ``coded`` holds the coded
    conditions per ``hadm_id``."""
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
    for name in MORPHOLOGY_COLUMNS:
        truth[name] = e[name].to_numpy()
    truth["nan_runs"] = nan_runs
    return truth


def _write_hosp(hosp: Path, world: World, rng: np.random.Generator) -> tuple[int, pd.DataFrame]:
    hosp.mkdir()
    admissions = admission_frame(rng, world)
    diagnoses, coded = diagnoses_table(rng, world, admissions)
    draws, values = lab_draws(rng, world)
    labevents = build_labevents(rng, draws, values)
    for charttime in ("charttime", "storetime"):
        labevents[charttime] = labevents[charttime].dt.strftime("%Y-%m-%d %H:%M:%S")
    tables = {
        "patients": patients_table(world, admissions),
        "admissions": admissions_table(rng, world, admissions),
        "labevents": labevents, "d_labitems": d_labitems(), "omr": omr_table(rng, world),
        "diagnoses_icd": diagnoses, "d_icd_diagnoses": icd_dictionary(diagnoses),
    }
    for name, table in tables.items():
        write_csv(table, hosp / f"{name}.csv.gz")
    return len(labevents), coded


def generate_twin(out: Path, patients: int = 1000, sites: int = 3, seed: int = 0,
                  overwrite: bool = False, workers: int = 1) -> TwinSummary:
    """Write a synthetic MIMIC-IV-ECG v1.0 + MIMIC-IV ``hosp`` dataset into ``out`` atomically."""
    if patients < 1 or sites < 1 or workers < 1:
        raise ConfigError(f"synth: patients={patients}, sites={sites}, workers={workers}; "
                          "expected each to be at least 1")
    claim_output(Path(out), OutputKind.TWIN, overwrite=overwrite)
    started = time.perf_counter()
    profiles = make_sites(sites, seed)
    world = build_world(patients, profiles, seed)
    ecgs = world.ecgs
    ecgs["path"] = [v10_path(s, t) for s, t in zip(ecgs["subject_id"], ecgs["study_id"],
                                                    strict=True)]
    ecgs["ecg_time_text"] = ecgs["ecg_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    with atomic_directory(Path(out), OutputKind.TWIN, overwrite=overwrite) as staging:
        lab_rows, coded = _write_hosp(staging / "hosp", world, np.random.default_rng(
            [seed, TABLES_STREAM]))
        nan_runs = write_waveforms(staging, ecgs, profiles, seed, workers)
        record_list = ecgs.assign(file_name=ecgs["study_id"], ecg_time=ecgs["ecg_time_text"])
        write_csv(record_list[RECORD_LIST_COLUMNS], staging / "record_list.csv")
        write_csv(machine_measurements(
            ecgs, [profiles[h].bandwidth for h in ecgs["hospital"]],
            [profiles[h].filtering for h in ecgs["hospital"]]),
            staging / "machine_measurements.csv")
        (staging / TRUTH_FILE.parent).mkdir()
        truth_table(ecgs, profiles, coded, nan_runs).to_parquet(staging / TRUTH_FILE, index=False)
        site_lines = "; ".join(f"{s.hospital}={s.name} ({s.bandwidth}, carts "
                               f"{', '.join(map(str, s.cart_ids))})" for s in profiles)
        atomic_write_text(staging / "README.txt", README.format(
            version=SYNTH_VERSION, seed=seed, patients=patients, n_sites=sites,
            site_lines=site_lines))
    return TwinSummary(out=Path(out), patients=patients, ecgs=len(ecgs),
                       admissions=int(world.episodes["admitted"].sum()), lab_events=lab_rows,
                       seconds=time.perf_counter() - started, sites=[s.name for s in profiles])
