"""The generic hospital layout (``--site-dir``): WFDB records plus small CSV tables.

The schema is documented for hospital staff in ``client/README.md``. Every table is mapped
to the canonical ``ClinicalTables`` so the one cohort builder links it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fedecg.data.cohort import MEASUREMENT_NAMES, ClinicalTables
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

log = logging.getLogger(__name__)

ECGS_COLUMNS = ("ecg_id", "patient_id", "record_path", "ecg_time")
PATIENTS_COLUMNS = ("patient_id", "sex", "birth_date")
LABS_COLUMNS = ("patient_id", "time", "lab", "value", "unit")
LABS_OPTIONAL = ("ref_low", "ref_high", "flag")
DIAGNOSES_COLUMNS = ("patient_id", "start_time", "end_time", "icd_code", "icd_version")
DIAGNOSES_OPTIONAL = ("encounter_id", "kind")
VITALS_COLUMNS = ("patient_id", "time", "name", "value")
SEX_CODES = {"m": "M", "male": "M", "f": "F", "female": "F"}


def is_generic_site(folder: Path) -> bool:
    """True when ``folder`` looks like a generic site (it holds ``ecgs.csv``)."""
    return has_table(folder, "ecgs")


def read_site_ecgs(site_dir: Path, rejects: Rejects) -> pd.DataFrame:
    """``ecgs.csv`` as ``study_id, subject_id, ecg_time, record_path`` (ids as text) and the
    file's ``_line``."""
    path = find_table(site_dir, "ecgs")
    frame = read_csv_checked(path, ECGS_COLUMNS)
    for column in ("ecg_id", "patient_id", "record_path"):
        frame = drop_bad_rows(frame, frame[column].isna().to_numpy(), path, column,
                              "a value", rejects, "ecg_id")
    frame = parse_times(frame, "ecg_time", path, rejects, study_column="ecg_id")
    frame = drop_duplicates(frame, "ecg_id", path, rejects)
    records = [str(Path(site_dir) / p.strip().removesuffix(".hea")) for p in frame["record_path"]]
    return pd.DataFrame({"study_id": frame["ecg_id"].str.strip(),
                         "subject_id": frame["patient_id"].str.strip(),
                         "ecg_time": frame["ecg_time"], "record_path": records,
                         LINE: frame[LINE]})


def read_site_tables(site_dir: Path, panel: Sequence[LabDefinition],
                     rejects: Rejects) -> ClinicalTables:
    """The generic site's tables as ``ClinicalTables``."""
    stays, diagnoses = _diagnoses(site_dir, rejects)
    sources = {name: str(find_table(site_dir, name)) for name in ("patients", "labs", "diagnoses")}
    measurements = pd.DataFrame({"subject_id": pd.Series(dtype="str"),
                                 "time": pd.Series(dtype="datetime64[us]"),
                                 "name": pd.Series(dtype="str"), "value": pd.Series(dtype=float)})
    if has_table(site_dir, "vitals"):
        measurements = _vitals(site_dir, rejects)
        sources["vitals"] = str(find_table(site_dir, "vitals"))
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


def _diagnoses(site_dir: Path, rejects: Rejects) -> tuple[pd.DataFrame, pd.DataFrame]:
    path = find_table(site_dir, "diagnoses")
    frame = read_csv_checked(path, DIAGNOSES_COLUMNS, optional=DIAGNOSES_OPTIONAL)
    for column in ("start_time", "end_time"):
        frame = parse_times(frame, column, path, rejects)
    frame = drop_reversed_spans(frame, "start_time", "end_time", path, rejects)
    frame = parse_numbers(frame, "icd_version", path, rejects, what="9 or 10")
    frame = drop_bad_rows(frame, ~frame["icd_version"].isin([9, 10]).to_numpy(), path,
                          "icd_version", "9 or 10", rejects)
    frame["patient_id"] = frame["patient_id"].str.strip()
    keys = (frame["encounter_id"].str.strip() if "encounter_id" in frame else
            pd.Series(frame.groupby(["patient_id", "start_time", "end_time"]).ngroup(),
                      index=frame.index).astype("str"))
    kind = (frame["kind"].fillna("admission").str.strip().str.lower() if "kind" in frame
            else pd.Series("admission", index=frame.index))
    frame = drop_bad_rows(frame.assign(stay_id="g" + keys, kind=kind),
                          ~kind.isin(["admission", "ed"]).to_numpy(), path, "kind",
                          "'admission' or 'ed' (or empty for admission)", rejects)
    stays = frame.drop_duplicates("stay_id")[["patient_id", "stay_id", "start_time", "end_time",
                                              "kind"]]
    stays = stays.rename(columns={"patient_id": "subject_id", "start_time": "start",
                                  "end_time": "end"}).reset_index(drop=True)
    diagnoses = pd.DataFrame({"stay_id": frame["stay_id"], "icd_code": frame["icd_code"].fillna(""),
                              "icd_version": frame["icd_version"].astype("int64")})
    return stays, diagnoses


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
