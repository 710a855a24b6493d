"""The generic hospital layout (``--site-dir``): WFDB records plus small CSV tables.

The schema is documented for hospital staff in ``client/README.md``. Every table is mapped
to the canonical ``ClinicalTables`` so the one cohort builder links it. Only ``ecgs.csv``,
``patients.csv`` and ``diagnoses.csv`` are required; ECG times, labs and vitals are optional
(a site without them links no lab or vital). Diagnoses may be ICD-9/10, SNOMED CT or free
statement codes, tied to an encounter (by times or by id) or to one ECG; with
``cohort.header_diagnoses: snomed`` the ``# Dx:`` codes of each record's WFDB header are read
as that ECG's statements. An optional ``site.yaml`` declares what the site records
(``SITE_DECLARATION_KEYS``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.config.base import read_yaml, validate_config
from fedecg.config.data import SITE_DECLARATION_KEYS, CohortConfig, PrepareConfig
from fedecg.data.cohort import MEASUREMENT_NAMES, ClinicalTables
from fedecg.data.diagnoses import CODE_SYSTEMS
from fedecg.data.labs import LabDefinition
from fedecg.data.tables import (
    LINE,
    Rejects,
    drop_bad_rows,
    drop_duplicates,
    drop_reversed_spans,
    find_table,
    has_table,
    parse_numbers,
    parse_times,
    read_csv_checked,
)
from fedecg.errors import ConfigError, TableError

log = logging.getLogger(__name__)
US = "datetime64[us]"

ECGS_COLUMNS = ("ecg_id", "patient_id", "record_path")
ECGS_OPTIONAL = ("ecg_time", "encounter_id", "age", "source")
PATIENTS_COLUMNS = ("patient_id", "sex", "birth_date")
LABS_COLUMNS = ("patient_id", "time", "lab", "value", "unit")
LABS_OPTIONAL = ("ref_low", "ref_high", "flag")
DIAGNOSES_COLUMNS = ("patient_id",)
DIAGNOSES_OPTIONAL = ("code", "code_system", "icd_code", "icd_version", "ecg_id",
                      "encounter_id", "kind", "start_time", "end_time")
SITE_FILE = "site.yaml"
SYSTEM_NAMES = {**{name: name for name in CODE_SYSTEMS}, "9": "icd9", "10": "icd10",
                "icd-9": "icd9", "icd-10": "icd10", "sct": "snomed", "snomed ct": "snomed"}
VITALS_COLUMNS = ("patient_id", "time", "name", "value")
SEX_CODES = {"m": "M", "male": "M", "f": "F", "female": "F"}


def is_generic_site(folder: Path) -> bool:
    """True when ``folder`` looks like a generic site (it holds ``ecgs.csv``)."""
    return has_table(folder, "ecgs")


def read_site_declaration(site_dir: Path) -> dict[str, object]:
    """The ``cohort`` settings a generic site declares in ``site.yaml`` (empty without one)."""
    path = Path(site_dir) / SITE_FILE
    if not path.is_file():
        return {}
    declared = read_yaml(path)
    extra = sorted(set(declared) - set(SITE_DECLARATION_KEYS))
    if extra:
        raise ConfigError(f"{path}: unknown key(s) {extra}; a site declares only "
                          f"{list(SITE_DECLARATION_KEYS)}")
    validate_config(CohortConfig, declared, str(path))
    return declared


def with_site_declaration(config: PrepareConfig, site_dir: Path) -> PrepareConfig:
    """``config`` with the site's ``site.yaml`` filling the declaration keys it leaves null."""
    declared = read_site_declaration(site_dir)
    cohort = config.cohort.model_dump()
    filled = {k: v for k, v in declared.items() if cohort.get(k) is None}
    if not filled:
        return config
    return config.model_copy(update={"cohort": config.cohort.model_copy(update=filled)})


def read_site_ecgs(site_dir: Path, rejects: Rejects) -> pd.DataFrame:
    """``ecgs.csv`` as ``study_id, subject_id, ecg_time, record_path`` (ids as text) and the
    file's ``_line``, plus ``encounter_id`` (as a stay id), ``age`` and ``source`` when the
    file has them.

    ``ecg_time`` is optional: an empty cell (or no column) is an ECG without a time.
    """
    path = find_table(site_dir, "ecgs")
    frame = read_csv_checked(path, ECGS_COLUMNS, optional=ECGS_OPTIONAL)
    for column in ECGS_COLUMNS:
        frame = drop_bad_rows(frame, frame[column].isna().to_numpy(), path, column,
                              "a value", rejects, "ecg_id")
    frame = _optional_times(frame, "ecg_time", path, rejects, study_column="ecg_id")
    frame = drop_duplicates(frame, "ecg_id", path, rejects)
    records = [str(Path(site_dir) / p.strip().removesuffix(".hea")) for p in frame["record_path"]]
    out = pd.DataFrame({"study_id": frame["ecg_id"].str.strip(),
                        "subject_id": frame["patient_id"].str.strip(),
                        "ecg_time": frame["ecg_time"], "record_path": records,
                        LINE: frame[LINE]})
    if "encounter_id" in frame:
        out["encounter_id"] = "g" + frame["encounter_id"].str.strip()
    if "age" in frame:
        frame = parse_numbers(frame, "age", path, rejects, required=False,
                              study_column="ecg_id", what="an age in years")
        out = out[out["study_id"].isin(frame["ecg_id"].str.strip())].reset_index(drop=True)
        out["age"] = frame["age"].to_numpy(dtype=float)
    if "source" in frame:
        out["source"] = frame["source"].str.strip().to_numpy()
    return out


def _optional_times(frame: pd.DataFrame, column: str, path: Path, rejects: Rejects,
                    study_column: str | None = None) -> pd.DataFrame:
    """Parse ``column`` where it has a value; no column or an empty cell is NaT."""
    if column not in frame:
        return frame.assign(**{column: pd.Series(pd.NaT, index=frame.index, dtype=US)})
    given = frame[column].notna().to_numpy()
    parsed = parse_times(frame[given], column, path, rejects, study_column=study_column)
    empty = frame[~given].assign(**{column: pd.Series(pd.NaT, index=frame.index[~given],
                                                      dtype=US)})
    return pd.concat([parsed, empty]).sort_values("_line", kind="stable")


def header_statements(ecgs: pd.DataFrame, system: str = "snomed") -> pd.DataFrame:
    """``patient_id, ecg_id, code, code_system`` from the ``# Dx:`` line of each ECG's header.

    A header without a ``# Dx:`` line gives no row (unknown); ``# Dx:`` with no code gives one
    empty code (read, nothing found). Unreadable headers give no row: their records are
    reported when the waveforms are read.
    """
    rows = []
    for ecg, patient, record in ecgs[["study_id", "subject_id", "record_path"]].itertuples(
            index=False):
        try:
            lines = Path(f"{record}.hea").read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.lstrip("#").partition(":")
            if line.startswith("#") and key.strip().lower() == "dx":
                codes = [c.strip() for c in value.split(",") if c.strip()] or [""]
                rows += [(patient, ecg, code, system) for code in codes]
    return pd.DataFrame(rows, columns=["patient_id", "ecg_id", "code", "code_system"],
                        dtype="str")


def read_site_tables(site_dir: Path, panel: Sequence[LabDefinition], rejects: Rejects,
                     ecgs: pd.DataFrame | None = None,
                     header_diagnoses: str | None = None) -> ClinicalTables:
    """The generic site's tables as ``ClinicalTables``.

    With ``header_diagnoses`` (a code system, e.g. ``snomed``) the ``# Dx:`` codes in the
    headers of ``ecgs`` (``read_site_ecgs``) are added as statements of each ECG.
    """
    statements = (header_statements(ecgs, header_diagnoses)
                  if header_diagnoses is not None and ecgs is not None else None)
    stays, diagnoses = _diagnoses(site_dir, rejects, statements)
    sources = {name: str(find_table(site_dir, name)) for name in ("patients", "labs", "diagnoses",
                                                                   "vitals")
               if has_table(site_dir, name)}
    measurements = pd.DataFrame({"subject_id": pd.Series(dtype="str"),
                                 "time": pd.Series(dtype=US),
                                 "name": pd.Series(dtype="str"), "value": pd.Series(dtype=float)})
    if has_table(site_dir, "vitals"):
        measurements = _vitals(site_dir, rejects)
    return ClinicalTables(patients=_patients(site_dir, rejects),
                          labs=_labs(site_dir, panel, rejects), stays=stays,
                          diagnoses=diagnoses, measurements=measurements, sources=sources)


def _patients(site_dir: Path, rejects: Rejects) -> pd.DataFrame:
    path = find_table(site_dir, "patients")
    frame = read_csv_checked(path, PATIENTS_COLUMNS)
    frame["patient_id"] = frame["patient_id"].str.strip()
    sex = frame["sex"].str.strip().str.lower().map(SEX_CODES)
    frame = drop_bad_rows(frame, (sex.isna() & frame["sex"].notna()).to_numpy(), path, "sex",
                          "a sex code (M, F, male, female, or empty for unknown)", rejects)
    birth = pd.to_datetime(frame["birth_date"], format="ISO8601", errors="coerce")
    frame = drop_bad_rows(frame, (birth.isna() & frame["birth_date"].notna()).to_numpy(), path,
                          "birth_date", "a date like 1950-03-01 (or a year like 1950)", rejects)
    frame = drop_duplicates(frame, "patient_id", path, rejects)
    return pd.DataFrame({
        "subject_id": frame["patient_id"],
        "sex": frame["sex"].str.strip().str.lower().map(SEX_CODES),
        "birth_time": pd.to_datetime(frame["birth_date"], format="ISO8601").astype(
            "datetime64[us]")})


def _labs(site_dir: Path, panel: Sequence[LabDefinition], rejects: Rejects) -> pd.DataFrame:
    if not has_table(site_dir, "labs"):
        log.info("%s: no labs table; ECGs link no lab (lab features and labels unknown)",
                 site_dir)
        return pd.DataFrame({"subject_id": pd.Series(dtype="str"), "time": pd.Series(dtype=US),
                             "lab": pd.Series(dtype="str"),
                             **{c: pd.Series(dtype=float) for c in ("value", "ref_low",
                                                                   "ref_high", "flag")}})
    path = find_table(site_dir, "labs")
    frame = read_csv_checked(path, LABS_COLUMNS, optional=LABS_OPTIONAL)
    frame["lab"] = frame["lab"].str.strip().str.lower()
    units = {lab.name: lab.unit for lab in panel}
    unused = frame.loc[~frame["lab"].isin(units), "lab"]
    if len(unused):
        log.info("%s: %d rows of labs outside the panel left out: %s", path, len(unused),
                 sorted(set(unused.dropna()))[:20])
    frame = frame[frame["lab"].isin(units)].reset_index(drop=True)
    frame = parse_times(frame, "time", path, rejects)
    frame = parse_numbers(frame, "value", path, rejects, what="a numeric lab value")
    for column in ("ref_low", "ref_high"):
        frame = (parse_numbers(frame, column, path, rejects, required=False)
                 if column in frame else frame.assign(**{column: np.nan}))
    expected = frame["lab"].map(units)
    wrong = frame["unit"].fillna("").str.strip().str.lower() != expected.str.lower()
    reasons = ("unit " + frame["unit"].fillna("").map(repr) + " for " + frame["lab"]
               + "; expected " + expected.map(repr) + " (convert the value to that unit)")
    frame = drop_bad_rows(frame, wrong.to_numpy(), path, "unit", "", rejects, reasons=reasons)
    flag = frame["flag"].str.strip().str.lower() if "flag" in frame else None
    return pd.DataFrame({
        "subject_id": frame["patient_id"].str.strip(), "time": frame["time"],
        "lab": frame["lab"], "value": frame["value"], "ref_low": frame["ref_low"],
        "ref_high": frame["ref_high"],
        "flag": (np.nan if flag is None else
                 np.select([flag == "abnormal", flag == "normal"], [1.0, 0.0], np.nan))})


def _diagnoses(site_dir: Path, rejects: Rejects, statements: pd.DataFrame | None = None
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical ``stays`` and ``diagnoses`` from ``diagnoses.csv`` (plus header statements).

    A row belongs to the ECG it names (``ecg_id``), else to its ``encounter_id``, else to the
    encounter of its patient and ``start_time``/``end_time``.
    """
    path = find_table(site_dir, "diagnoses")
    frame = _diagnosis_rows(read_csv_checked(path, DIAGNOSES_COLUMNS,
                                             optional=DIAGNOSES_OPTIONAL), path, rejects)
    if statements is not None:
        frame = pd.concat([frame, statements], ignore_index=True)
    for column in ("ecg_id", "encounter_id", "kind", "start_time", "end_time"):
        if column not in frame:
            frame[column] = pd.Series(pd.NaT if column.endswith("time") else pd.NA,
                                      index=frame.index, dtype=US if column.endswith("time")
                                      else "object")
    frame["patient_id"] = frame["patient_id"].str.strip()
    of_ecg, named = frame["ecg_id"].notna(), frame["encounter_id"].notna()
    timed = frame["start_time"].notna() & frame["end_time"].notna()
    frame = drop_bad_rows(frame, (~of_ecg & ~named & ~timed).to_numpy(), path, "ecg_id",
                          "an ecg_id, an encounter_id, or start_time and end_time", rejects)
    of_ecg, named = frame["ecg_id"].notna(), frame["encounter_id"].notna()
    by_time = frame.groupby(["patient_id", "start_time", "end_time"]).ngroup().astype("str")
    keys = np.where(of_ecg, "s" + frame["ecg_id"].astype("str").str.strip(),
                    np.where(named, "g" + frame["encounter_id"].astype("str").str.strip(),
                             "t" + by_time))
    kind = np.where(of_ecg, "ecg", frame["kind"].fillna("admission").astype("str").str.strip()
                    .str.lower())
    frame = frame.assign(stay_id=keys, kind=kind)
    frame = drop_bad_rows(frame, ~frame["kind"].isin(["admission", "ed", "ecg"]).to_numpy(), path,
                          "kind", "'admission' or 'ed' (or empty for admission)", rejects)
    first = frame.drop_duplicates("stay_id")
    stays = pd.DataFrame({"subject_id": first["patient_id"], "stay_id": first["stay_id"],
                          "start": first["start_time"], "end": first["end_time"],
                          "kind": first["kind"],  # study_id: the ECG a statement stay belongs to
                          "study_id": first["ecg_id"].astype("str").str.strip().where(
                              first["ecg_id"].notna())}).reset_index(drop=True)
    diagnoses = pd.DataFrame({"stay_id": frame["stay_id"].to_numpy(),
                              "code": frame["code"].fillna("").to_numpy(),
                              "system": frame["code_system"].to_numpy()})
    return stays, diagnoses


def _diagnosis_rows(frame: pd.DataFrame, path: Path, rejects: Rejects) -> pd.DataFrame:
    """Rows with ``code`` and ``code_system`` (from ``icd_code``/``icd_version`` when given so),
    times parsed where given."""
    if "code" not in frame and "icd_code" not in frame:
        raise TableError(f"{path}: no code column; expected 'code' (with 'code_system') or "
                         "'icd_code' (with 'icd_version')")
    if "code" not in frame:
        frame = frame.rename(columns={"icd_code": "code"})
    if "code_system" not in frame:
        if "icd_version" not in frame:
            raise TableError(f"{path}: no code_system column; expected 'code_system' (icd9, "
                             "icd10, snomed or statement) or 'icd_version' (9 or 10)")
        frame = frame.rename(columns={"icd_version": "code_system"})
    system = frame["code_system"].fillna("").astype("str").str.strip().str.lower().map(
        SYSTEM_NAMES)
    frame = drop_bad_rows(frame, system.isna().to_numpy(), path, "code_system",
                          "icd9, icd10, snomed or statement (or 9 or 10 as icd_version)",
                          rejects)
    frame["code_system"] = system.dropna().to_numpy()
    for column in ("start_time", "end_time"):
        if column in frame:
            frame = _optional_times(frame, column, path, rejects)
    if "start_time" in frame and "end_time" in frame:
        frame = drop_reversed_spans(frame, "start_time", "end_time", path, rejects)
    return frame


def _vitals(site_dir: Path, rejects: Rejects) -> pd.DataFrame:
    path = find_table(site_dir, "vitals")
    frame = read_csv_checked(path, VITALS_COLUMNS)
    frame["name"] = frame["name"].str.strip().str.lower()
    frame = drop_bad_rows(frame, ~frame["name"].isin(MEASUREMENT_NAMES).to_numpy(), path, "name",
                          f"one of {list(MEASUREMENT_NAMES)}", rejects)
    frame = parse_times(frame, "time", path, rejects)
    frame = parse_numbers(frame, "value", path, rejects)
    return pd.DataFrame({"subject_id": frame["patient_id"].str.strip(), "time": frame["time"],
                         "name": frame["name"], "value": frame["value"]})
