"""Waveforms for real clinical data: keep MIMIC-IV ``hosp`` and the real record list, synthesize
only each ECG's signal from its nearest real labs and its admission's real diagnoses.

Reading and linking reuse ``fedecg.data.mimic`` and ``fedecg.data.cohort`` (the same code
``fedecg prepare`` runs), so the conditioning sees what the cohort sees.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from fedecg.data.cohort import (
    ClinicalTables,
    containing_stay,
    diagnosis_matrix,
    nearest_lab_values,
)
from fedecg.data.diagnoses import DEFAULT_DIAGNOSIS_LABELS
from fedecg.data.labs import DEFAULT_LAB_PANEL
from fedecg.data.mimic import hosp_dir, read_mimic_tables
from fedecg.data.synth.assemble import CONDITIONS, LAB_NAMES
from fedecg.data.synth.literature_effects import (
    EFFECTS_VERSION,
    LITERATURE_STREAM,
    apply_literature_effects,
)
from fedecg.data.synth.mimic_writer import machine_measurements, write_csv
from fedecg.data.synth.morphology import compute_morphology
from fedecg.data.synth.physiology import LAB_CONDITIONS, episode_latent_labs, lab_conditions
from fedecg.data.synth.population import ACUTE, patient_effects
from fedecg.data.synth.sites import make_sites
from fedecg.data.synth.twin import (
    SYNTH_VERSION,
    TRUTH_FILE,
    TwinSummary,
    check_generator_version,
    record_pool,
    truth_table,
    write_waveforms,
)
from fedecg.data.tables import (
    Rejects,
    drop_duplicates,
    parse_numbers,
    parse_times,
    read_csv_checked,
)
from fedecg.errors import InputFileError
from fedecg.io import OutputKind, atomic_directory, atomic_write_text, claim_output

logger = logging.getLogger(__name__)
HOSP_TABLES = ("patients", "admissions", "labevents", "d_labitems", "omr", "diagnoses_icd",
               "d_icd_diagnoses")
CLINICAL_STREAM = 4
LAB_WINDOW_HOURS = 24.0
README = """fedecg waveforms for real clinical data (the ECG SIGNALS ARE SYNTHETIC).

Made by `fedecg synth --clinical-from {root} --record-list {record_list}` (seed {seed}{version}).
hosp/ and record_list.csv are copies of the real inputs. Each WFDB record under files/ was drawn
from fedecg's latent-physiology model, conditioned on that ECG's nearest real labs (within
±{window:g} h) and the real diagnoses of the admission holding it; machine_measurements.csv
describes the synthetic signals. latent/ecg_truth.parquet holds what each signal was drawn from.
"""


def read_ecg_list(path: Path) -> pd.DataFrame:
    """``study_id, subject_id, ecg_time, path`` of a MIMIC-IV-ECG record list, checked."""
    if not Path(path).is_file():
        raise InputFileError(f"{path}: record list not found; --record-list must name a "
                             "MIMIC-IV-ECG record_list.csv")
    rejects = Rejects("raise")
    frame = read_csv_checked(path, ["subject_id", "study_id", "ecg_time", "path"])
    for column in ("subject_id", "study_id"):
        frame = parse_numbers(frame, column, path, rejects, what="an integer id")
        frame[column] = frame[column].astype("int64")
    frame = parse_times(frame, "ecg_time", path, rejects, study_column="study_id")
    frame = drop_duplicates(frame, "study_id", path, rejects)
    return frame[["study_id", "subject_id", "ecg_time", "path"]]


def _conditions(ecgs: pd.DataFrame, tables: ClinicalTables) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Conditions per ECG from real codes, and the coded flags per ``hadm_id``.

    Acute and lab-defined conditions come from the stay holding the ECG; chronic ones from any
    of the patient's stays.
    """
    matrix = diagnosis_matrix(tables.diagnoses, DEFAULT_DIAGNOSIS_LABELS).astype(bool)
    matrix.columns = [c.removeprefix("dx_") for c in matrix.columns]
    stay = containing_stay(ecgs, tables.stays)
    current = matrix.reindex(stay["stay_id"].to_numpy()).fillna(False).astype(bool)
    owner = tables.stays.set_index("stay_id")["subject_id"]
    ever = matrix.assign(subject_id=owner.reindex(matrix.index).to_numpy()).groupby(
        "subject_id").max()
    chronic = ever.reindex(ecgs["subject_id"].to_numpy()).fillna(False).astype(bool)
    episodic = set(ACUTE) | set(LAB_CONDITIONS)
    out = pd.DataFrame({name: current[name].to_numpy() if name in episodic
                        else chronic[name].to_numpy() | current[name].to_numpy()
                        for name in CONDITIONS})
    out["hadm_id"] = pd.array([int(s[1:]) if isinstance(s, str) and s.startswith("h") else None
                               for s in stay["stay_id"]], dtype="Int64")
    admissions = matrix[matrix.index.str.startswith("h")]
    coded = admissions.set_axis([int(s[1:]) for s in admissions.index])[list(CONDITIONS)]
    return out, coded


def _latent_frame(rng: np.random.Generator, ecgs: pd.DataFrame,
                  tables: ClinicalTables) -> pd.DataFrame:
    """Conditions, latent labs (real where measured) and patient traits per ECG."""
    conditions, _ = _conditions(ecgs, tables)
    frame = pd.concat([ecgs.reset_index(drop=True), conditions], axis=1)
    patients = tables.patients.set_index("subject_id").reindex(frame["subject_id"])
    frame["gender"] = patients["sex"].fillna("F").to_numpy()
    frame["age"] = ((frame["ecg_time"].to_numpy() - patients["birth_time"].to_numpy())
                    / np.timedelta64(1, "D") / 365.25)
    frame["age"] = frame["age"].fillna(60.0)
    subjects, patient = np.unique(frame["subject_id"], return_inverse=True)
    frame["patient"] = patient
    bmi = tables.measurements[tables.measurements["name"] == "bmi"]
    frame["bmi"] = bmi.groupby("subject_id")["value"].median().reindex(
        frame["subject_id"]).fillna(27.5).clip(16, 55).to_numpy()
    traits = patient_effects(rng, np.zeros(len(subjects), bool), np.zeros(len(subjects), bool))
    frame = pd.concat([frame, traits.iloc[patient].reset_index(drop=True)], axis=1)
    frame["lvh"] = frame["lvh"] | (frame["hypertension"] & (rng.random(len(frame)) < 0.3))
    frame["old_mi"] = frame["chronic_ischemic"] & (rng.random(len(frame)) < 0.5)
    labs = episode_latent_labs(rng, frame, len(subjects))
    nearest = nearest_lab_values(frame, tables.labs, DEFAULT_LAB_PANEL, LAB_WINDOW_HOURS)
    for name in LAB_NAMES:
        real = nearest[name]["value"].to_numpy(dtype=float)
        frame[name] = np.where(np.isfinite(real), real, labs[name].to_numpy())
        frame[f"real_{name}"] = np.isfinite(real)
    for name, flags in lab_conditions(frame, frame["gender"]).items():
        frame[name] = frame[name].to_numpy(dtype=bool) | flags
    frame["mi_territory"] = rng.choice(["anterior", "inferior"], size=len(frame))
    frame["af_today"] = frame["atrial_fibrillation"] & (frame["af_persistent"]
                                                        | (rng.random(len(frame)) < 0.5))
    frame["admitted"] = frame["hadm_id"].notna()
    return frame


def _copy_clinical(mimic_root: Path, staging: Path) -> None:
    hosp = hosp_dir(mimic_root)
    (staging / "hosp").mkdir()
    for name in HOSP_TABLES:
        for candidate in (hosp / f"{name}.csv.gz", hosp / f"{name}.csv"):
            if candidate.is_file():
                shutil.copyfile(candidate, staging / "hosp" / candidate.name)
    if (Path(mimic_root) / "ed").is_dir():
        shutil.copytree(Path(mimic_root) / "ed", staging / "ed")


def synthesize_from_clinical(mimic_root: Path, record_list: Path, out: Path, seed: int = 0,
                             overwrite: bool = False, workers: int = 1,
                             generator_version: int = SYNTH_VERSION,
                             console: Console | None = None) -> TwinSummary:
    """Write ``out``: the real ``hosp/`` tables and record list plus synthetic WFDB records
    (``generator_version`` as ``generate_twin``'s; with ``console`` the progress is shown)."""
    check_generator_version(generator_version)
    sources = (mimic_root, record_list)
    claim_output(Path(out), OutputKind.TWIN, overwrite=overwrite, inputs=sources)
    started = time.perf_counter()
    ecgs = read_ecg_list(Path(record_list))
    skipped = Rejects("skip")  # rows the real tables cannot give (e.g. labs without a number)
    tables = read_mimic_tables(Path(mimic_root), set(ecgs["subject_id"]), DEFAULT_LAB_PANEL,
                               skipped)
    if len(skipped):
        logger.info("synth --clinical-from: %d clinical rows unusable for conditioning "
                    "(kept in the copied tables)", len(skipped))
    rng = np.random.default_rng([seed, CLINICAL_STREAM])
    site = make_sites(1, seed)[0]
    frame = _latent_frame(rng, ecgs, tables)
    morphology = compute_morphology(rng, frame)
    if generator_version >= EFFECTS_VERSION:
        morphology = apply_literature_effects(
            np.random.default_rng([seed, CLINICAL_STREAM, LITERATURE_STREAM]), frame, morphology)
    frame = pd.concat([frame, morphology], axis=1)
    frame["hospital"] = 0
    frame["cart_id"] = rng.choice(site.cart_ids, size=len(frame))
    frame["ecg_time_text"] = frame["ecg_time"].dt.strftime("%Y-%m-%d %H:%M:%S")
    with atomic_directory(Path(out), OutputKind.TWIN, overwrite=overwrite,
                          inputs=sources) as staging:
        _copy_clinical(Path(mimic_root), staging)
        shutil.copyfile(record_list, staging / "record_list.csv")
        with record_pool(workers) as pool:
            nan_runs = write_waveforms(staging, frame, [site], seed, pool, console)
        write_csv(machine_measurements(frame, [site.bandwidth] * len(frame),
                                       [site.filtering] * len(frame)),
                  staging / "machine_measurements.csv")
        truth = truth_table(frame, [site], _conditions(ecgs, tables)[1], nan_runs)
        for name in LAB_NAMES:
            truth[f"real_{name}"] = frame[f"real_{name}"].to_numpy()
        (staging / TRUTH_FILE.parent).mkdir()
        truth.to_parquet(staging / TRUTH_FILE, index=False)
        atomic_write_text(staging / "README.txt", README.format(
            root=mimic_root, record_list=record_list, seed=seed, window=LAB_WINDOW_HOURS,
            version="" if generator_version == 1 else f", generator version {generator_version}"))
    return TwinSummary(out=Path(out), patients=int(frame["subject_id"].nunique()),
                       ecgs=len(frame), admissions=int(frame["hadm_id"].nunique()),
                       lab_events=len(tables.labs), seconds=time.perf_counter() - started,
                       sites=[site.name])
